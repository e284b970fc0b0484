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

/// Tokens of the rules' expressions that read a metric: `name{` (folded YAML lines break only at
/// spaces, so a name and its opening brace stay together), with the `le` bound that follows.
fn metric_reads(rules: &str) -> Vec<(String, Option<String>)> {
    rules
        .split([' ', '(', '\n'])
        .filter_map(|t| {
            let (name, rest) = t.split_once('{')?;
            let name = name.trim_start_matches('-');
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return None;
            }
            let le = rest
                .split_once("le=\"")
                .and_then(|(_, v)| Some(v.split_once('"')?.0.to_string()));
            Some((name.to_string(), le))
        })
        .collect()
}

#[test]
fn alert_rules_read_metrics_and_buckets_the_real_kubelet_exports() {
    let c = Cluster::get();
    let out = plugin(&["alerts"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = String::from_utf8(out.stdout).unwrap();
    assert!(rules.starts_with("groups:"), "{rules}");
    let metrics = c.kubelet_metrics();
    let reads = metric_reads(&rules);
    assert!(reads.len() > 15, "{reads:?}");
    let mut checked = 0;
    for (name, le) in &reads {
        // Node conditions and leases come from kube-state-metrics, not the kubelet.
        if name.starts_with("kube_") {
            continue;
        }
        // A labelled counter is exported from its first increment: a kubelet whose runtime
        // calls never failed has no errors series (the name was checked on one that had).
        if name == "kubelet_runtime_operations_errors_total"
            && !metrics.contains("kubelet_runtime_operations_errors_total")
        {
            continue;
        }
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .collect();
        assert!(!series.is_empty(), "the kubelet exports no {name}");
        if let Some(le) = le {
            assert!(
                series.iter().any(|l| l.contains(&format!("le=\"{le}\""))),
                "{name} has no bucket le=\"{le}\": {series:?}"
            );
        }
        checked += 1;
    }
    for op in ["list_podsandbox", "list_containers"] {
        assert!(
            metrics.contains(&format!(
                "kubelet_runtime_operations_duration_seconds_count{{operation_type=\"{op}\"}}"
            )),
            "no runtime operation {op}"
        );
    }
    eprintln!("{checked} metric reads of the rules found in the kubelet's /metrics");

    // A PrometheusRule for the operator, in the namespace given.
    let out = plugin(&[
        "alerts",
        "--prometheus-rule",
        "nodehealth",
        "-n",
        "monitoring",
    ]);
    let cr = String::from_utf8(out.stdout).unwrap();
    assert!(
        cr.contains("kind: PrometheusRule") && cr.contains("namespace: monitoring"),
        "{cr}"
    );
    // Bad input: a selector with braces is refused with exit 2 and says what to give.
    let out = plugin(&["alerts", "--kubelet-selector", "{job=\"kubelet\"}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without braces"));
}
