//! `kubectl nodehealth <node>` (API side) against the real local cluster: a healthy node, a node
//! name that does not exist, and a user without `nodes/proxy`.

use std::process::{Command, Output};

use nodehealth_e2e::{Cluster, workspace_root};
use serde_json::Value;

/// Runs the plugin binary (built by `cargo xtask test` before this tier) with `args`.
fn plugin(args: &[&str]) -> Output {
    let bin = workspace_root().join("target/debug/kubectl-nodehealth");
    assert!(
        bin.exists(),
        "{bin:?} missing: `cargo build -p kubectl-nodehealth`"
    );
    Command::new(bin)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl-nodehealth")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn healthy_node_exits_0_with_a_healthy_verdict_and_all_api_evidence() {
    let c = Cluster::get();
    c.wait_ready("True", std::time::Duration::from_secs(60));
    let kubeconfig = c.admin_kubeconfig();
    let out = plugin(&[
        &c.node,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--api-only",
        "--duration",
        "2s",
        "-o",
        "json",
    ]);
    let report = json(&out);
    assert_eq!(report["apiVersion"], "nodehealth/v1");
    assert_eq!(report["node"], c.node.as_str());
    assert_eq!(
        report["verdict"]["causes"][0]["id"], "healthy",
        "verdict: {:#}",
        report["verdict"]
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evidence = &report["evidence"];
    for section in [
        "node",
        "lease",
        "csrs",
        "events",
        "healthz",
        "configz",
        "metricsStart",
        "metricsEnd",
        "statsSummary",
        "goroutineDump",
        "controllerManagerLease",
    ] {
        assert!(
            !evidence[section].is_null(),
            "evidence section {section} missing: {:#}",
            evidence[section]
        );
    }
    // No step refused (the report may quote "forbidden" in a kubelet log line it found, e.g. the
    // kubelet's own watches refused before its RBAC existed at cluster start).
    for (section, step) in evidence.as_object().unwrap() {
        assert_ne!(
            step["failure"]["kind"], "forbidden",
            "the admin user should not be denied {section}: {step:#}"
        );
    }
    let findings = report["findings"].as_array().unwrap();
    assert!(
        !findings
            .iter()
            .any(|f| f["id"].as_str().is_some_and(|i| i.starts_with("access-"))),
        "the admin user should not be denied anything: {findings:#?}"
    );
}

#[test]
fn unknown_node_exits_2_and_suggests_close_names() {
    let c = Cluster::get();
    let kubeconfig = c.admin_kubeconfig();
    let typo = format!("{}x", c.node);
    let out = plugin(&[
        &typo,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--api-only",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&typo),
        "names the node it could not find: {stderr}"
    );
    assert!(stderr.contains(&c.node), "suggests the real node: {stderr}");
}

#[test]
fn user_without_nodes_proxy_gets_the_missing_permission_and_the_rest_still_runs() {
    let c = Cluster::get();
    let viewer = c.dir.join("viewer.kubeconfig");
    let out = plugin(&[
        &c.node,
        "--kubeconfig",
        viewer.to_str().unwrap(),
        "--api-only",
        "--duration",
        "1s",
        "-o",
        "json",
    ]);
    let report = json(&out);
    let text = report.to_string();
    assert!(
        text.contains("nodes/proxy"),
        "the report names the missing nodes/proxy permission: {text}"
    );
    // The checks that need only get on nodes and leases still ran.
    assert!(
        !report["evidence"]["node"].is_null(),
        "node evidence collected"
    );
    assert!(
        !report["evidence"]["lease"].is_null(),
        "lease evidence collected"
    );
    let ready = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["passed"].as_array().into_iter().flatten())
        .any(|f| f["id"] == "node-ready" || f == "node-ready");
    assert!(
        ready || text.contains("Ready=True"),
        "the Ready check ran: {text}"
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "missing permissions are not a clean bill of health"
    );
}
