//! `cargo xtask test`: setup, formatting, lints, then every test tier.
//!
//! Unit tests run in parallel. Integration tests load eBPF into the running kernel and start
//! processes, so they run one at a time (one test binary after another, one test thread each).

use anyhow::Result;

use crate::{
    setup,
    sh::{self, step},
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
        .args(["test", "--workspace", "--test", "*"])
        .args(["--", "--test-threads=1"]);
    if long {
        integration.env("NODEHEALTH_LONG_TESTS", "1");
    }
    sh::run("integration tests", &mut integration)?;

    step("all tests passed");
    Ok(())
}
