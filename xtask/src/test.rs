//! `cargo xtask test`: setup, formatting, lints, then every test tier.
//!
//! Unit tests run in parallel. Integration tests load eBPF into the running kernel and start
//! processes, so they run one at a time (one test binary after another, one test thread each).

use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    cluster::{self, Layout, host::Fingerprint},
    setup,
    sh::{self, info, step},
};

pub fn run(long: bool) -> Result<()> {
    setup::run()?;
    let root = sh::workspace_root();

    step("cargo fmt --check");
    sh::run(
        "formatting (run `cargo fmt --all`)",
        sh::cargo()
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;

    step("cargo clippy --all-targets -- -D warnings");
    sh::run(
        "clippy",
        sh::cargo().current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    step("unit tests");
    sh::run(
        "unit tests",
        sh::cargo()
            .current_dir(&root)
            .args(["test", "--workspace", "--lib", "--bins"]),
    )?;

    step("integration tests (real kernel; serial)");
    let mut integration = sh::cargo();
    integration
        .current_dir(&root)
        // The end-to-end tests need the cluster: they run in their own tier below.
        .args([
            "test",
            "--workspace",
            "--exclude",
            "nodehealth-e2e",
            "--test",
            "*",
        ])
        .args(["--", "--test-threads=1"]);
    if long {
        integration.env("NODEHEALTH_LONG_TESTS", "1");
    }
    sh::run("integration tests", &mut integration)?;

    end_to_end(&root, long)?;

    step("all tests passed");
    Ok(())
}

/// The end-to-end tier: a real cluster up, the tests in `tests/` against it, the cluster down, and
/// the machine compared with how it was before `up`.
fn end_to_end(root: &Path, long: bool) -> Result<()> {
    step("end-to-end tests against the local cluster");
    // The tier runs the real binaries, as an operator would.
    sh::run(
        "building the plugin and the agent",
        sh::cargo().current_dir(root).args([
            "build",
            "-p",
            "kubectl-nodehealth",
            "-p",
            "tracer-user",
        ]),
    )?;
    sh::run(
        "building the end-to-end tests",
        sh::cargo()
            .current_dir(root)
            .args(["test", "-p", "nodehealth-e2e", "--no-run"]),
    )?;
    let layout = Layout::new();
    if std::fs::metadata("/run/kubectl-nodehealth-cluster").is_ok() {
        info("a cluster is already registered; taking it down for a clean start");
        cluster::down()?;
    }
    let before = Fingerprint::take(&layout.dir);
    cluster::up(if long {
        cluster::Settings::defaults()
    } else {
        cluster::Settings::fast()
    })?;
    let mut e2e = sh::cargo();
    e2e.current_dir(root)
        .args(["test", "-p", "nodehealth-e2e", "--", "--test-threads=1"]);
    if long {
        // The long scenarios are #[ignore]d (reported as such) in the fast tier.
        e2e.env("NODEHEALTH_LONG_TESTS", "1")
            .arg("--include-ignored");
    }
    let tests = sh::run("end-to-end tests", &mut e2e);
    let down = cluster::down();
    let after = Fingerprint::take(&layout.dir);
    let leftovers = after.diff(&before);
    for l in &leftovers {
        eprintln!("    left behind: {l}");
    }
    tests?;
    down?;
    if !leftovers.is_empty() {
        bail!(
            "`cluster down` did not leave the machine as it found it ({} differences)",
            leftovers.len()
        );
    }
    info("cluster down left the machine as it was found");
    Ok(())
}
