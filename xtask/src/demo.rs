//! `cargo xtask demo`: the main job on a fresh machine — set up, start the local cluster (which
//! builds and imports the agent image), and run `kubectl nodehealth <node>` against its node, as an
//! operator would: API-side checks plus the probe pod's node evidence.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{
    cluster::{self, Layout},
    sh::{self, info, step},
};

pub fn run() -> Result<()> {
    let root = sh::workspace_root();
    sh::require_free_space(&root, sh::need_free_gib(false), "`cargo xtask demo`")?;
    cluster::up(cluster::Settings::fast(), None)?;
    step("building kubectl-nodehealth");
    sh::run(
        "cargo build -p kubectl-nodehealth",
        sh::cargo()
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "kubectl-nodehealth"]),
    )?;
    let layout = Layout::new();
    let node = cluster::node_name();
    // kubectl (built with the cluster) finds the plugin on PATH as `kubectl-nodehealth`.
    let bin_dir = cluster::binaries_dir()?;
    let path = format!(
        "{}:{}:{}",
        root.join("target/debug").display(),
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    step(format!("kubectl nodehealth {node}"));
    info(
        "(API-side checks and the probe pod's node agent, side by side; the pod is deleted after)",
    );
    let status = Command::new(bin_dir.join("kubectl"))
        .args(["nodehealth", &node])
        .env("PATH", path)
        .env("KUBECONFIG", layout.admin_kubeconfig())
        .status()
        .context("running kubectl")?;
    info(format!(
        "exit {} (0 healthy, 1 problems found, 2 could not diagnose)",
        status.code().unwrap_or(-1)
    ));
    step(format!(
        "the cluster stays up: try `cargo xtask fault api-partition`, then run the plugin again \
         (KUBECONFIG={}); `cargo xtask heal`; `cargo xtask cluster down` when done",
        layout.admin_kubeconfig().display()
    ));
    Ok(())
}
