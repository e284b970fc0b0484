//! Running commands with their output visible, and small helpers around it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Prints a progress line that stands out from command output.
pub fn step(msg: impl AsRef<str>) {
    eprintln!("==> {}  [{}]", msg.as_ref(), clock());
}

/// The time of day (UTC, `HH:MM:SS`) a step began: a long log then says where the time went.
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Prints a detail line under a step.
pub fn info(msg: impl AsRef<str>) {
    eprintln!("    {}", msg.as_ref());
}

/// Runs `cmd` with inherited stdio; fails naming `what` when it does not exit 0.
pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what}: {cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout when it exits 0, None otherwise (also when it cannot start).
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cache kept outside the clone: CI clones afresh on the same machine, so downloads and
/// builds that live here survive between runs.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("kubectl-nodehealth")
}

/// `cargo` of the toolchain this xtask runs under (rustup passes it down through the environment).
///
/// Without the variables cargo sets for the crate it runs (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …):
/// xtask runs under `cargo run` (`cargo xtask`), under `cargo test` (the end-to-end tests call
/// it) and from a shell, and a build script that tracks one of them (ring's tracks
/// `CARGO_MANIFEST_DIR`) would otherwise rebuild its crate and everything above it whenever the
/// caller changes — a minute of the agent image's release build each time.
pub fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            cargo.env_remove(key);
        }
    }
    cargo
}

/// SHA-256 of `data`, lower-case hex (cache keys, OCI digests).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(data))
}
