#!/usr/bin/env bash
# Build Kubernetes v1.35.4 (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl)
# and etcd v3.6.x from the published Go modules, into a cache outside the repo.
#
# Usage:  xtask/k8s/build.sh            # build if needed, print the bin dir last
#         CACHE=/some/dir xtask/k8s/build.sh
#         FORCE=1 xtask/k8s/build.sh    # rebuild even if the binaries answer --version
#
# Result ($CACHE/bin/, CACHE defaults to
#   ~/.cache/kubectl-nodehealth/k8s-v1.35.4-etcd-<etcd version from ../etcd/go.mod>):
#   k8sbin                  one multi-call binary (./main.go)
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl -> k8sbin (symlinks; it
#                           dispatches on argv[0], or on its first argument)
#   etcd                    upstream etcd main (../etcd/main.go)
#
# The exact commands (run from xtask/k8s and xtask/etcd respectively):
#   CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags selinux,notest,grpcnotrace \
#     -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v1.35.4 \
#               -X k8s.io/component-base/version.gitMajor=1 -X ...gitMinor=35 \
#               -X ...gitTreeState=clean -X ...buildDate=<UTC now>   (same 5 for k8s.io/client-go/pkg/version)" \
#     -o $CACHE/bin/k8sbin .
#   CGO_ENABLED=0 go build -trimpath -buildvcs=false \
#     -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=go-module-v3.6.x" -o $CACHE/bin/etcd .
# (tags/ldflags/-trimpath/-s -w mirror k8s hack/lib/golang.sh for release builds; upstream
#  builds apiserver/controller-manager static; the kubelet is pure Go too and runs static.)
#
# GOCACHE and GOMODCACHE stay at Go's defaults (under $HOME), so a rebuild after the
# binaries were deleted only relinks (~10 s); a cold build took ~9 min (k8s) + 40 s (etcd)
# on 2 shared cores here, after ~30 s of module downloads (~830 MB in GOMODCACHE).
# Needs: Go >= 1.26 (etcd 3.6.16 declares go 1.26.0), network access to the Go module proxy
# on first run. Progress: one line every ~30 s with the number of packages compiled.
set -euo pipefail

K8S_VERSION=v1.35.4
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ETCD_DIR="$HERE/../etcd"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
ETCD_VERSION="$(sed -n 's|^require go.etcd.io/etcd/server/v3 \(v[0-9.]*\)$|\1|p' "$ETCD_DIR/go.mod")"
[[ -n "$ETCD_VERSION" ]] || { echo "build.sh: cannot read the etcd version from $ETCD_DIR/go.mod" >&2; exit 1; }
CACHE="${CACHE:-$HOME/.cache/kubectl-nodehealth/k8s-$K8S_VERSION-etcd-$ETCD_VERSION}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { echo "[k8s-build $(date +%H:%M:%S)] $*" >&2; }

# go build -v with a heartbeat: prints "<what>: N packages compiled" every ~30 s.
build() { # build <what> <module dir> <output> <go build args...>
  local what=$1 dir=$2 out=$3; shift 3
  local blog="$CACHE/build-$what.log" start=$SECONDS n i=0 rc=0 total
  # Upper bound for the heartbeat (std and cached packages are not rebuilt, so "done" is lower).
  total=$(cd "$dir" && CGO_ENABLED="${CGO_ENABLED:-0}" "$GO" list -buildvcs=false -deps "$@" . 2>/dev/null | wc -l) || total="?"
  log "$what: go build -> $out (log: $blog)"
  ( cd "$dir" && exec env CGO_ENABLED="${CGO_ENABLED:-0}" "$GO" build -v -trimpath -buildvcs=false \
      -o "$out.tmp" "$@" . ) >"$blog" 2>&1 &
  local pid=$!
  # Background jobs of a non-interactive shell ignore SIGINT: stop go build ourselves.
  trap 'kill "$pid" 2>/dev/null; rm -f "$out.tmp"' EXIT
  trap 'exit 130' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1; i=$((i + 1))
    if (( i % 30 == 0 )); then
      n=$(grep -c '^[A-Za-z0-9._~/-]*$' "$blog" || true)
      log "$what: $n/~$total packages compiled, $((SECONDS - start)) s"
    fi
  done
  wait "$pid" || rc=$?
  trap - EXIT INT TERM
  if (( rc != 0 )); then
    log "$what: go build FAILED (exit $rc); last lines of $blog:"
    tail -n 40 "$blog" >&2
    rm -f "$out.tmp"
    exit "$rc"
  fi
  mv -f "$out.tmp" "$out"
  n=$(grep -c '^[A-Za-z0-9._~/-]*$' "$blog" || true)
  log "$what: done, $n packages compiled, $((SECONDS - start)) s, $(du -h "$out" | cut -f1)"
}

k8s_ok() {
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    [[ -x "$BIN/$c" ]] && [[ "$("$BIN/$c" --version 2>/dev/null)" == "Kubernetes $K8S_VERSION" ]] || return 1
  done
  [[ -x "$BIN/kubectl" ]] && [[ "$("$BIN/kubectl" version --client 2>/dev/null)" == *"Client Version: $K8S_VERSION"* ]] || return 1
}
etcd_ok() {
  # (no "| grep -q": with pipefail, etcd's SIGPIPE would fail the check)
  [[ -x "$BIN/etcd" ]] && [[ "$("$BIN/etcd" --version 2>/dev/null)" == "etcd Version: ${ETCD_VERSION#v}"$'\n'* ]]
}

if [[ -z "${FORCE:-}" ]] && k8s_ok; then
  log "kubernetes $K8S_VERSION: up to date in $BIN"
else
  build_date="$(date -u ${SOURCE_DATE_EPOCH:+--date=@$SOURCE_DATE_EPOCH} +%Y-%m-%dT%H:%M:%SZ)"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=35"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  build kubernetes "$HERE" "$BIN/k8sbin" -tags selinux,notest,grpcnotrace -ldflags "$ldflags"
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do ln -sfn k8sbin "$BIN/$c"; done
  k8s_ok || { log "kubernetes: built binaries do not report Kubernetes $K8S_VERSION"; exit 1; }
fi

if [[ -z "${FORCE:-}" ]] && etcd_ok; then
  log "etcd $ETCD_VERSION: up to date in $BIN"
else
  build etcd "$ETCD_DIR" "$BIN/etcd" -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=go-module-$ETCD_VERSION"
  etcd_ok || { log "etcd: built binary does not report $ETCD_VERSION"; exit 1; }
fi

echo "$BIN"
