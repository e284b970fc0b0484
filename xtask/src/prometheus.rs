//! A real Prometheus for the alert-rule tests: Debian's `prometheus` package, its two binaries
//! unpacked into the cache (`apt-get download` + `dpkg-deb -x`: no maintainer scripts, so no
//! service is started and no user is created). Keyed by the package's file name.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::sh::{self, info, step};

/// Where the binaries are (`prometheus`, `promtool`); the e2e tests look here too.
pub fn bin_dir() -> PathBuf {
    sh::cache_dir().join("prometheus/bin")
}

/// Unpacks Debian's prometheus into [`bin_dir`] unless the same package is there already.
pub fn ensure() -> Result<PathBuf> {
    let dir = bin_dir();
    let want =
        sh::output(Command::new("apt-cache").args(["show", "--no-all-versions", "prometheus"]))
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Filename: "))
                    .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
            })
            .context("apt-cache knows no prometheus package: `apt-get update` first")?;
    let stamp = dir.join("package");
    if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want)
        && dir.join("prometheus").exists()
        && dir.join("promtool").exists()
    {
        return Ok(dir);
    }
    step(format!(
        "Prometheus for the alert tests ({want}, unpacked, not installed)"
    ));
    let tmp = sh::cache_dir().join("prometheus/tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    sh::run(
        "apt-get download prometheus",
        Command::new("apt-get")
            .args([
                "download",
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                "prometheus",
            ])
            .current_dir(&tmp),
    )?;
    let deb = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = tmp.join("x");
    sh::run(
        "dpkg-deb -x",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
    )?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    for bin in ["prometheus", "promtool"] {
        fs::copy(unpacked.join("usr/bin").join(bin), dir.join(bin))
            .with_context(|| format!("{bin} not in {}", deb.display()))?;
    }
    fs::write(&stamp, &want)?;
    fs::remove_dir_all(&tmp)?;
    info(format!("prometheus and promtool in {}", dir.display()));
    Ok(dir)
}

/// The kube-state-metrics the long tier's history test scrapes (Ready and the node's lease as the
/// control plane sees them), built from its Go module: `go install` into the cache, keyed by the
/// version (about two minutes cold, most of it module downloads; nothing when cached).
pub const KUBE_STATE_METRICS: &str = "v2.20.0";

/// Builds kube-state-metrics [`KUBE_STATE_METRICS`] unless the cache has it; returns the binary.
pub fn ensure_kube_state_metrics() -> Result<PathBuf> {
    let dir = sh::cache_dir().join(format!("kube-state-metrics-{KUBE_STATE_METRICS}"));
    let bin = dir.join("bin/kube-state-metrics");
    let answers = |b: &PathBuf| {
        Command::new(b)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if answers(&bin) {
        return Ok(bin);
    }
    step(format!(
        "kube-state-metrics {KUBE_STATE_METRICS} for the history test (go install from its \
         module, cached; about two minutes cold)"
    ));
    let tmp = dir.join("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    sh::run(
        "go install k8s.io/kube-state-metrics/v2",
        Command::new(go())
            .args([
                "install",
                "-trimpath",
                &format!("k8s.io/kube-state-metrics/v2@{KUBE_STATE_METRICS}"),
            ])
            .env("GOBIN", &tmp)
            .env("CGO_ENABLED", "0"),
    )?;
    fs::create_dir_all(dir.join("bin"))?;
    fs::rename(tmp.join("kube-state-metrics"), &bin)
        .context("go install left no kube-state-metrics")?;
    fs::remove_dir_all(&tmp)?;
    if !answers(&bin) {
        anyhow::bail!("{} does not answer `version`", bin.display());
    }
    info(format!("kube-state-metrics in {}", bin.display()));
    Ok(bin)
}

/// Go, from PATH or where Go's tarball installs it (as `xtask/k8s/build.sh` finds it).
pub(crate) fn go() -> PathBuf {
    let local = PathBuf::from("/usr/local/go/bin/go");
    if sh::output(Command::new("sh").args(["-c", "command -v go"])).is_none() && local.exists() {
        local
    } else {
        PathBuf::from("go")
    }
}
