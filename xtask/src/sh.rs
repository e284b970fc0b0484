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

/// Fails, before any work, when the filesystem holding `path` has less than `need_gib` GiB free:
/// a build that runs out of disk half-way fails with a compiler's I/O error many minutes in and
/// leaves a half-written target directory; this names the shortfall and what to remove instead.
pub fn require_free_space(path: &Path, need_gib: u64, what: &str) -> Result<()> {
    let Some(out) = output(Command::new("df").args(["-B1", "--output=avail"]).arg(path)) else {
        info(format!(
            "cannot read the free space of {} (df failed); going on",
            path.display()
        ));
        return Ok(());
    };
    let Some(avail) = df_avail(&out) else {
        info(format!(
            "cannot parse df's answer for {}; going on",
            path.display()
        ));
        return Ok(());
    };
    let have = avail as f64 / (1u64 << 30) as f64;
    if avail < need_gib << 30 {
        bail!(
            "{what} needs about {need_gib} GiB free on the filesystem of {} and it has {have:.1} GiB: \
             free space (e.g. `cargo clean` in other clones of this project, old `target/` \
             directories, `{}`) and run it again",
            path.display(),
            cache_dir().join("fuzz-target").display()
        );
    }
    info(format!(
        "{have:.1} GiB free on the filesystem of {} (needs ~{need_gib})",
        path.display()
    ));
    Ok(())
}

/// Free disk the build needs, in GiB, from what is already built. Measured on 2026-12-07: the
/// clone's target/ 3.3 GiB (with margin: 6), the fuzz build 6 GiB (`cargo xtask test` only) and
/// the Go build cache 5 GiB (both kept outside the clone, so only a first run writes them), the
/// agent's static build 1.6 GiB.
pub fn need_free_gib(fuzz: bool) -> u64 {
    let cache = cache_dir();
    let go_cache = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/go-build"))
        .unwrap_or_default();
    let missing = |p: &Path, gib: u64| if p.exists() { 0 } else { gib };
    6 + if fuzz {
        missing(&cache.join("fuzz-target"), 6)
    } else {
        0
    } + missing(&go_cache, 5)
        + missing(&cache.join("static-target"), 2)
}

/// The byte count in `df -B1 --output=avail`'s answer (a header line, then the number).
fn df_avail(out: &str) -> Option<u64> {
    out.lines().nth(1)?.trim().parse().ok()
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

#[cfg(test)]
mod tests {
    use super::df_avail;

    #[test]
    fn df_avail_reads_the_number_under_the_header() {
        assert_eq!(df_avail("   Avail\n13958643712\n"), Some(13_958_643_712));
        assert_eq!(df_avail("Avail\n"), None);
        assert_eq!(df_avail("Avail\n12G\n"), None);
    }
}
