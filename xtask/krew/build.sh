#!/usr/bin/env bash
# Build krew (the kubectl plugin manager) from its published Go module into a cache outside the
# repo; print the binary's path last. The end-to-end tier installs `cargo xtask dist`'s manifest
# with it.
#
# Usage:  xtask/krew/build.sh     # build if needed
# Result: ~/.cache/kubectl-nodehealth/krew-$KREW_VERSION/krew   (~15 s cold, 18 MB)
set -euo pipefail

KREW_VERSION=v0.4.3
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
DIR="${CACHE:-$HOME/.cache/kubectl-nodehealth/krew-$KREW_VERSION}"
BIN="$DIR/krew"
log() { echo "[krew-build $(date +%H:%M:%S)] $*" >&2; }

# krew creates its root on any command: point it at a throwaway one for the version check.
krew_version() {
  local root; root="$(mktemp -d)"
  KREW_ROOT="$root" "$BIN" version 2>/dev/null || true
  rm -rf "$root"
}

if [[ -x "$BIN" ]] && krew_version | grep -q "GitTag *$KREW_VERSION"; then
  log "krew $KREW_VERSION: up to date in $DIR"
else
  mkdir -p "$DIR"
  log "krew $KREW_VERSION: go install sigs.k8s.io/krew/cmd/krew@$KREW_VERSION -> $DIR"
  # The version stamped into `krew version`.
  GOBIN="$DIR" CGO_ENABLED=0 "$GO" install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION" \
    "sigs.k8s.io/krew/cmd/krew@$KREW_VERSION"
  krew_version | grep -q "GitTag *$KREW_VERSION" || { log "krew: the built binary does not run"; exit 1; }
fi
echo "$BIN"
