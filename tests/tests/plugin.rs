//! `kubectl nodehealth <node>` (API side) against the real local cluster: a healthy node, a node
//! name that does not exist, and a user without `nodes/proxy`.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nodehealth_e2e::{Cluster, bundle_listing, finding, json_of, plugin, workspace_root};
use serde_json::Value;

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The plugin runs on a laptop whose clock is not the cluster's. With this machine's clock 90 s
/// ahead (libfaketime, the wall clock only), a healthy node's lease is aged on the API server's
/// clock (its Date header) and stays fresh; on the local clock it was 90 s stale and the node was
/// called cut off.
#[test]
fn a_laptop_clock_ahead_of_the_cluster_does_not_make_the_node_stale() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let faketime = ["x86_64", "aarch64"]
        .iter()
        .map(|a| format!("/usr/lib/{a}-linux-gnu/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime (cargo xtask setup installs it)");
    let out = Command::new(workspace_root().join("target/debug/kubectl-nodehealth"))
        .arg(&c.node)
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .args(["--duration", "2s", "--api-only", "-o", "json"])
        .env_remove("KUBECONFIG")
        .env("LD_PRELOAD", &faketime)
        .env("FAKETIME", "+90s")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("kubectl-nodehealth");
    let report = json_of(&out);
    let lease = finding(&report, "lease-age")
        .cloned()
        .unwrap_or(Value::Null);
    eprintln!("clock +90 s: {lease:#}");
    assert_eq!(lease["severity"], "ok", "{lease:#}");
    assert!(
        lease["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("ahead of the API server")))),
        "{lease:#}"
    );
    assert_eq!(
        report["verdict"]["causes"][0]["id"], "healthy",
        "{:#}",
        report["verdict"]
    );
}

#[test]
fn healthy_node_exits_0_with_a_healthy_verdict_and_all_api_evidence() {
    let c = Cluster::get();
    c.wait_ready("True", std::time::Duration::from_secs(60));
    // Healthy means no recent trouble either: run after a fault (cluster.rs's runtime-frozen
    // left a ContainerGCFailed Warning), the events rule rightly warns for 5 minutes.
    c.clear_node_events();
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
    // The Ready check needs only `get nodes`: its finding is in the report, judged.
    let ready: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["id"] == "node-ready")
        .collect();
    assert_eq!(ready.len(), 1, "the Ready check ran: {text}");
    assert_eq!(ready[0]["severity"], "ok", "{:#}", ready[0]);
    // The checks behind nodes/proxy did not: each says which permission it lacks.
    let access: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["id"].as_str().is_some_and(|i| i.starts_with("access-")))
        .collect();
    assert!(
        access.iter().any(|f| f["severity"] == "unknown"
            && f["summary"]
                .as_str()
                .unwrap_or("")
                .contains("get nodes/proxy")),
        "{access:#?}"
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
        // Node conditions and leases come from kube-state-metrics, not the kubelet; a scrape's
        // duration from Prometheus itself (tests/alerts.rs reads it in a real Prometheus).
        if name.starts_with("kube_") || name == "scrape_duration_seconds" {
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

    // The alerts' texts name the node: every `{{ $labels.x }}` survives its expression over the
    // real kubelet's series, labelled as a kube-prometheus scrape labels them (`node` from the
    // endpoint's Node). The kube-state-metrics series are not on this cluster: their labels are
    // kube-state-metrics' documented ones.
    let series = |name: &str| -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = match name {
            "kube_lease_renew_time" => ["lease", "namespace"].as_slice(),
            "kube_node_status_condition" => ["node", "condition", "status"].as_slice(),
            _ => [].as_slice(),
        }
        .iter()
        .map(|l| l.to_string())
        .collect();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if let Some(inside) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
                for pair in inside.0.split(',') {
                    if let Some((label, _)) = pair.split_once('=') {
                        labels.insert(label.trim().to_string());
                    }
                }
            }
        }
        labels.extend(
            [
                "instance",
                "job",
                "node",
                "metrics_path",
                "namespace",
                "service",
                "endpoint",
            ]
            .iter()
            .map(|l| l.to_string()),
        );
        labels
    };
    let file = kubectl_nodehealth::alerts::rules(kubectl_nodehealth::alerts::DEFAULT_SELECTOR)
        .expect("rules");
    for rule in file.groups.iter().flat_map(|g| &g.rules) {
        let kept = kubectl_nodehealth::alerts::output_labels(&rule.expr, &series)
            .expect("PromQL")
            .expect("a vector");
        let used = kubectl_nodehealth::alerts::annotation_labels(rule);
        let lost: Vec<&String> = used.difference(&kept).collect();
        assert!(
            lost.is_empty(),
            "{}: its text uses {lost:?}, its expression keeps {kept:?}",
            rule.alert
        );
        assert!(
            rules.contains(&rule.alert),
            "the printed rules hold {}",
            rule.alert
        );
    }

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
    // kube-prometheus-stack's Prometheus picks rules by label.
    let out = plugin(&[
        "alerts",
        "--prometheus-rule",
        "nodehealth",
        "--label",
        "release=kube-prometheus-stack",
    ]);
    let cr = String::from_utf8(out.stdout).unwrap();
    assert!(cr.contains("release: kube-prometheus-stack"), "{cr}");
    // Bad input: a selector with braces is refused with exit 2 and says what to give.
    let out = plugin(&["alerts", "--kubelet-selector", "{job=\"kubelet\"}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without braces"));
}

/// A Node object with no kubelet behind it, deleted on drop.
struct GhostNode<'a>(&'a Cluster, &'static str);

impl Drop for GhostNode<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .request("DELETE", &format!("/api/v1/nodes/{}", self.1), None);
    }
}

#[test]
fn scan_ranks_a_node_whose_pleg_is_unhealthy_first_in_six_api_calls() {
    let c = Cluster::get();
    c.wait_ready("True", std::time::Duration::from_secs(60));
    let name = "nodehealth-scan-ghost";
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": { "nodehealth-e2e": "scan" } },
    });
    let (code, body) = c.request("POST", "/api/v1/nodes", Some(&node));
    assert_eq!(code, 201, "{body}");
    let _ghost = GhostNode(&c, name);
    // What a kubelet whose PLEG stalled reports (status subresource, as the kubelet writes it).
    // The node lifecycle controller writes a new Node too (taints, its own conditions): on a
    // conflict, read it again and write again, as the kubelet does.
    let now = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut last = (0, String::new());
    for _ in 0..10 {
        let mut obj = c.get_json(&format!("/api/v1/nodes/{name}"));
        obj["status"]["conditions"] = serde_json::json!([{
            "type": "Ready", "status": "False", "reason": "KubeletNotReady",
            "message": "PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s",
            "lastHeartbeatTime": now.trim(), "lastTransitionTime": now.trim(),
        }]);
        last = c.request("PUT", &format!("/api/v1/nodes/{name}/status"), Some(&obj));
        if last.0 != 409 {
            break;
        }
    }
    assert_eq!(last.0, 200, "{}", last.1);

    let out = plugin(&[
        "scan",
        "--kubeconfig",
        c.admin_kubeconfig().to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["apiVersion"], "nodehealth/v1");
    assert_eq!(report["apiCalls"], 6, "{report:#}");
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["node"], name, "worst first: {report:#}");
    assert_eq!(nodes[0]["ready"], "False");
    assert_eq!(nodes[0]["cause"]["id"], "pleg-slow", "{:#}", nodes[0]);
    let real = nodes
        .iter()
        .find(|n| n["node"] == nodehealth_e2e::node_name().as_str())
        .expect("the cluster's node is scanned");
    assert_eq!(real["ready"], "True");
    assert!(real["cause"].is_null(), "{real:#}");

    // A label selector narrows the scan; the table names the next step.
    let out = plugin(&[
        "scan",
        "--kubeconfig",
        c.admin_kubeconfig().to_str().unwrap(),
        "-l",
        "nodehealth-e2e=scan",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(name) && !table.contains(&format!("\n{} ", nodehealth_e2e::node_name())),
        "{table}"
    );
    assert!(
        table.contains("1 node, 1 with problems (6 API calls)"),
        "{table}"
    );
}

#[test]
fn pleg_timeline_of_a_healthy_node_is_a_relist_a_second() {
    let c = Cluster::get();
    c.wait_ready("True", std::time::Duration::from_secs(60));
    let kubeconfig = c.admin_kubeconfig();
    let node = nodehealth_e2e::node_name();
    let out = plugin(&[
        "pleg",
        &node,
        "--duration",
        "5s",
        "-o",
        "json",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ticks: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!((4..=6).contains(&ticks.len()), "{ticks:#?}");
    // The kubelet relists every second: about one per tick, each with its duration bucket.
    let relists: f64 = ticks.iter().map(|t| t["relists"].as_f64().unwrap()).sum();
    assert!((3.0..=7.0).contains(&relists), "{ticks:#?}");
    for t in &ticks {
        assert_eq!(t["state"], "ok", "{t:#}");
        // The gauge holds whole seconds of the node clock: a few seconds, far from the 60 s of a stuck relist.
        assert!(t["lastSeenAgeSeconds"].as_f64().unwrap() < 10.0, "{t:#}");
    }
    // The table says what it shows and ends with a summary.
    let out = plugin(&[
        "pleg",
        &node,
        "--duration",
        "2s",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("LAST SEEN") && table.contains("worst: ok"),
        "{table}"
    );
    // A node that does not exist: exit 2, named.
    let out = plugin(&[
        "pleg",
        "no-such-node",
        "--duration",
        "2s",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-node"));
}

#[test]
fn a_bundle_holds_the_raw_answers_and_replays_to_the_same_verdict() {
    let c = Cluster::get();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("run.tar.gz");
    let kubeconfig = c.admin_kubeconfig();
    let node = nodehealth_e2e::node_name();
    let out = plugin(&[
        &node,
        "--api-only",
        "--duration",
        "1s",
        "-o",
        "json",
        "--bundle",
        bundle.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = json(&out);
    let live_code = out.status.code();
    let listing = bundle_listing(&bundle);
    for f in [
        "nodehealth/MANIFEST.json",
        "nodehealth/report.json",
        "nodehealth/raw/metrics-start.txt",
        "nodehealth/raw/metrics-end.txt",
        "nodehealth/raw/configz.json",
    ] {
        assert!(listing.lines().any(|l| l == f), "{f} not in {listing}");
    }
    // Only the bundle is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // Replayed without the cluster (no kubeconfig at all): the same verdict.
    let out = plugin(&["--from-bundle", bundle.to_str().unwrap(), "-o", "json"]);
    assert_eq!(
        out.status.code(),
        live_code,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = json(&out);
    assert_eq!(replay["verdict"]["causes"], live["verdict"]["causes"]);
    assert_eq!(replay["node"], node.as_str());

    // A path that cannot be written: exit 2 before anything runs.
    let out = plugin(&[
        &node,
        "--api-only",
        "--bundle",
        "/no/such/dir/run.tar.gz",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// `--as` sends kubectl's impersonation headers: the admin impersonating the restricted viewer
/// gets the viewer's missing permission, as the viewer itself does.
#[test]
fn as_impersonates_the_user_like_kubectl() {
    let c = Cluster::get();
    let admin = c.admin_kubeconfig();
    let out = plugin(&[
        &c.node,
        "--kubeconfig",
        admin.to_str().unwrap(),
        "--as",
        "nodehealth-viewer",
        "--api-only",
        "--duration",
        "1s",
        "-o",
        "json",
    ]);
    let report = json(&out);
    assert_eq!(report["kind"], "NodeHealthReport");
    let denied = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| {
            f["summary"]
                .as_str()
                .unwrap_or("")
                .contains("get nodes/proxy")
        });
    assert!(denied, "impersonated: {:#}", report["findings"]);
    // A user that does not exist has no permissions at all: a clear error, exit 2.
    let out = plugin(&[
        &c.node,
        "--kubeconfig",
        admin.to_str().unwrap(),
        "--as",
        "nobody-at-all",
        "--api-only",
        "--duration",
        "1s",
    ]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
}

/// The directory of the cluster's own kubectl (a cached build: fast once built).
fn kubectl_bin_dir() -> std::path::PathBuf {
    let out = Command::new("bash")
        .arg(workspace_root().join("xtask/k8s/build.sh"))
        .stderr(std::process::Stdio::null())
        .output()
        .expect("xtask/k8s/build.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = std::path::PathBuf::from(text.lines().last().expect("bin dir").trim());
    assert!(dir.join("kubectl").exists(), "{dir:?}");
    dir
}

/// kubectl (≥ 1.26) completes a plugin through `kubectl_complete-<plugin>` on PATH: the helper
/// `completion kubectl` prints, run by the real kubectl, offers the cluster's node, the
/// subcommands, the flags and the kubeconfig's contexts.
#[test]
fn kubectl_completes_node_names_through_the_plugin_helper() {
    let c = Cluster::get();
    let dir = tempfile::tempdir().expect("temp dir");
    let helper = dir.path().join("kubectl_complete-nodehealth");
    let script = plugin(&["completion", "kubectl"]);
    assert_eq!(script.status.code(), Some(0));
    std::fs::write(&helper, &script.stdout).expect("write the helper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let kubectl_dir = kubectl_bin_dir();
    let path = format!(
        "{}:{}:{}:{}",
        dir.path().display(),
        workspace_root().join("target/debug").display(),
        kubectl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let complete = |words: &[&str]| -> Vec<String> {
        let out = Command::new(kubectl_dir.join("kubectl"))
            .arg("__complete")
            .arg("nodehealth")
            .args(words)
            .env("PATH", &path)
            .env("KUBECONFIG", c.admin_kubeconfig())
            .output()
            .expect("kubectl __complete");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.lines().any(|l| l.starts_with(':')),
            "a cobra directive line: {text} / {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .filter(|l| !l.starts_with(':'))
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    let first = complete(&[""]);
    assert!(
        first.contains(&c.node),
        "the node from the cluster: {first:?}"
    );
    assert!(first.contains(&"scan".to_string()), "{first:?}");
    let prefix = &c.node[..2];
    assert!(complete(&[prefix]).contains(&c.node));
    assert!(complete(&["pleg", ""]).contains(&c.node));
    assert!(complete(&[&c.node, "--tr"]).contains(&"--trace".to_string()));
    let contexts = complete(&["--context", ""]);
    assert!(!contexts.is_empty(), "the kubeconfig's contexts");
    assert!(complete(&[&c.node, "-o", ""]).contains(&"json".to_string()));
}

/// JSON documents say what they are; `version` without a node needs no cluster.
#[test]
fn version_and_documents_carry_api_version_and_kind() {
    let out = plugin(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let out = plugin(&["version", "-o", "json"]);
    let v = json(&out);
    assert_eq!(
        (v["apiVersion"].as_str(), v["kind"].as_str()),
        (Some("nodehealth/v1"), Some("Version"))
    );
    let c = Cluster::get();
    let out = plugin(&[
        "scan",
        "--kubeconfig",
        c.admin_kubeconfig().to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(json(&out)["kind"], "ScanReport");
    let wide = plugin(&[
        "scan",
        "--kubeconfig",
        c.admin_kubeconfig().to_str().unwrap(),
        "-o",
        "wide",
    ]);
    let text = String::from_utf8_lossy(&wide.stdout);
    assert!(text.contains("KUBELET") && text.contains("v1.35"), "{text}");
}

/// A person at a terminal sees a spinner with the step while the window runs (a pty from
/// `script`); a script piping `-o json` sees none, and neither does `TERM=dumb`.
#[test]
fn progress_shows_on_a_terminal_and_never_to_a_script() {
    let c = Cluster::get();
    let bin = workspace_root().join("target/debug/kubectl-nodehealth");
    let command = format!(
        "{} {} --kubeconfig {} --api-only --duration 3s",
        bin.display(),
        c.node,
        c.admin_kubeconfig().display()
    );
    let on_tty = |term: &str| {
        let out = Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .env("TERM", term)
            .env_remove("NO_COLOR")
            .env_remove("KUBECONFIG")
            .output()
            .expect("script(1)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let seen = on_tty("xterm");
    assert!(
        seen.contains("the API side and the kubelet's metrics over a 3s window"),
        "the step on the terminal: {seen}"
    );
    assert!(seen.contains("NODE"), "then the report: {seen}");
    let dumb = on_tty("dumb");
    assert!(!dumb.contains("kubelet's metrics over"), "{dumb}");
    assert!(dumb.contains("NODE"), "{dumb}");
    // JSON to a pipe: stderr holds no progress.
    let out = plugin(&[
        &c.node,
        "--kubeconfig",
        c.admin_kubeconfig().to_str().unwrap(),
        "--api-only",
        "--duration",
        "2s",
        "-o",
        "json",
    ]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("kubelet's metrics over"),
        "{out:?}"
    );
}

// --- release archives through the real krew -------------------------------------------------

/// The `uri:` and `sha256:` of each platform in a krew manifest, in order.
fn manifest_platforms(manifest: &str) -> Vec<(String, String)> {
    let field = |prefix: &str| -> Vec<String> {
        manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .collect()
    };
    field("uri:").into_iter().zip(field("sha256:")).collect()
}

fn sha256_hex(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The agent image `dist --image` bakes into the released plugin in the test below.
const BAKED_IMAGE: &str = "registry.example.invalid/nodehealth/tracer-user:e2e";

/// `cargo xtask dist --image REF` (every platform; this machine's alone when run by name without
/// NODEHEALTH_LONG_TESTS):
/// the manifest's hashes are the archives', SHA256SUMS agrees, the real krew (built from its Go
/// module) installs the manifest into a throwaway krew root, and kubectl finds and runs the
/// plugin. A manifest whose hash does not match is refused by krew: the hash is what it checks.
#[test]
#[ignore = "long tier (cargo xtask test --long): release builds of the plugin for every platform"]
fn krew_installs_the_dist_manifest_and_kubectl_runs_the_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("dist");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let host = format!("linux/{arch}");
    let mut dist = Command::new(workspace_root().join("target/debug/xtask"));
    dist.arg("dist")
        .arg("--out")
        .arg(&out_dir)
        .args(["--base-url", "https://example.invalid/nodehealth"])
        .args(["--image", BAKED_IMAGE]);
    if std::env::var_os("NODEHEALTH_LONG_TESTS").is_none() {
        dist.args(["--platform", &host]);
    }
    let status = dist
        .stdin(std::process::Stdio::null())
        .status()
        .expect("xtask dist");
    assert!(status.success(), "cargo xtask dist failed");

    let manifest_path = out_dir.join("nodehealth.yaml");
    let manifest = std::fs::read_to_string(&manifest_path).expect("nodehealth.yaml");
    let platforms = manifest_platforms(&manifest);
    assert!(!platforms.is_empty(), "{manifest}");
    let sums = std::fs::read_to_string(out_dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut host_archive = None;
    for (uri, sha) in &platforms {
        let name = uri
            .strip_prefix("https://example.invalid/nodehealth/")
            .unwrap_or_else(|| panic!("{uri} is not under --base-url"));
        let archive = out_dir.join(name);
        assert_eq!(&sha256_hex(&archive), sha, "{name}: manifest hash");
        assert!(sums.contains(&format!("{sha}  {name}\n")), "{sums}");
        if name.contains(&format!("-linux-{arch}.")) {
            host_archive = Some(archive);
        }
    }
    let archive = host_archive.unwrap_or_else(|| panic!("no {host} archive in {manifest}"));

    let krew = Command::new("bash")
        .arg(workspace_root().join("xtask/krew/build.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("xtask/krew/build.sh");
    assert!(krew.status.success(), "building krew failed");
    let krew = std::path::PathBuf::from(
        String::from_utf8_lossy(&krew.stdout)
            .lines()
            .last()
            .unwrap()
            .trim(),
    );
    let krew_root = dir.path().join("krew");
    let install = |manifest: &std::path::Path| {
        Command::new(&krew)
            .args(["install"])
            .arg(format!("--manifest={}", manifest.display()))
            .arg(format!("--archive={}", archive.display()))
            .env("KREW_ROOT", &krew_root)
            .output()
            .expect("krew install")
    };

    // A wrong hash first: krew must refuse it and install nothing.
    let tampered = dir.path().join("tampered/nodehealth.yaml");
    std::fs::create_dir_all(tampered.parent().unwrap()).unwrap();
    let (_, good) = platforms
        .iter()
        .find(|(u, _)| u.contains(&format!("-linux-{arch}.")))
        .unwrap();
    std::fs::write(&tampered, manifest.replace(good.as_str(), &"0".repeat(64))).unwrap();
    let refused = install(&tampered);
    assert!(
        !refused.status.success(),
        "krew installed an archive whose hash is not the manifest's"
    );
    assert!(!krew_root.join("bin/kubectl-nodehealth").exists());

    let installed = install(&manifest_path);
    assert!(
        installed.status.success(),
        "krew install: {}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let kubectl_dir = kubectl_bin_dir();
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        krew_root.join("bin").display(),
        kubectl_dir.display()
    );
    let kubectl = |args: &[&str]| {
        Command::new(kubectl_dir.join("kubectl"))
            .args(args)
            .env("PATH", &path)
            .env_remove("KUBECONFIG")
            .output()
            .expect("kubectl")
    };
    let list = kubectl(&["plugin", "list", "--name-only"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.lines().any(|l| l.trim() == "kubectl-nodehealth"),
        "kubectl plugin list: {list}"
    );
    let help = kubectl(&["nodehealth", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&help.stderr)
    );
    assert!(text.contains("kubectl nodehealth"), "{text}");
    // The image given to dist is the released plugin's default.
    assert!(
        text.contains(&format!("[default: {BAKED_IMAGE}]")),
        "{text}"
    );
    let version = kubectl(&["nodehealth", "version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
}
