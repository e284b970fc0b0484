//! The generated alert rules in a real Prometheus (Debian's package, unpacked by `cargo xtask
//! test` into the cache) that scrapes the local cluster's kubelet through the API server's node
//! proxy, labelled as kube-prometheus labels its kubelet scrape (`job="kubelet"`,
//! `metrics_path="/metrics"`, `node`). `promtool check rules` passes on the output; on the
//! healthy node no rule is pending or firing after many evaluations; under runtime-slow-list the
//! runtime and relist-interval rules go active with the node named in their rendered text.
//!
//! The same Prometheus is the history `--prometheus` reads: found by `auto` among the cluster's
//! services (kube-prometheus' `monitoring/prometheus-k8s`, read through the API server's service
//! proxy) and by URL, it orders the runtime's slowdown no later than the relists', each onset
//! within one scrape of the moment the fault took hold, and the failed scrape of the stopped
//! kubelet within one scrape of its stop.
//!
//! The long tier adds kube-state-metrics (built from its Go module by `cargo xtask test --long`):
//! under a partition the lease and Ready fail while the kubelet's own series stay within their
//! lines, the history says so and the verdict cites it, and the kube-state-metrics rules go
//! active naming the node (none on the healthy node).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nodehealth_e2e::{
    Cluster, Healer, bundle_listing, plugin, run_plugin, wait_until, workspace_root,
};
use serde_json::Value;

fn prometheus_dir() -> PathBuf {
    let dir = std::env::var_os("NODEHEALTH_PROMETHEUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/var/cache"))
                .join("kubectl-nodehealth/prometheus/bin")
        });
    assert!(
        dir.join("prometheus").exists(),
        "no Prometheus in {dir:?}: `cargo xtask test --only alerts` unpacks Debian's package there"
    );
    dir
}

/// A Prometheus on loopback, killed (and its data removed) on drop.
struct Prometheus {
    child: Child,
    address: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(c: &Cluster, rules: &Path) -> Prometheus {
        Prometheus::start_on(c, rules, "127.0.0.1", "")
    }

    /// A Prometheus listening on `address` (loopback, or the node's own address where the API
    /// server's service proxy must reach it), with `extra` scrape configs.
    fn start_on(c: &Cluster, rules: &Path, address: &str, extra: &str) -> Prometheus {
        let dir = tempfile::tempdir_in(workspace_root().join("target")).expect("temp dir");
        let port = TcpListener::bind(format!("{address}:0"))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pki = |name: &str| c.pki(name).display().to_string();
        // 10 s scrapes (the kubelet's /metrics waits on the runtime's list calls: 7 s with them
        // held 3.5 s) and 2 s evaluations: the rules' windows fill in seconds, not minutes.
        let config = format!(
            r#"global:
  scrape_interval: 10s
  scrape_timeout: 10s
  evaluation_interval: 2s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: kubelet
    scheme: https
    metrics_path: /api/v1/nodes/{node}/proxy/metrics
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
    static_configs:
      - targets: ["127.0.0.1:6443"]
        labels:
          node: {node}
          metrics_path: /metrics
  - job_name: prometheus
    static_configs:
      - targets: ["{address}:{port}"]
{extra}"#,
            rules = rules.display(),
            node = c.node,
            ca = pki("ca.crt"),
            cert = pki("admin.crt"),
            key = pki("admin.key"),
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(prometheus_dir().join("prometheus"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            address: address.to_string(),
            port,
            _dir: dir,
        }
    }

    fn get(&self, path: &str, query: Option<&str>) -> Option<Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "--max-time", "10"])
            .arg(format!("http://{}:{}{path}", self.address, self.port));
        if let Some(q) = query {
            cmd.args(["-G", "--data-urlencode"])
                .arg(format!("query={q}"));
        }
        let out = cmd.stdin(Stdio::null()).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// An instant query's result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        self.get("/api/v1/query", Some(q))
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The alerts pending or firing, as the API renders them (labels and annotations).
    fn alerts(&self) -> Vec<Value> {
        self.get("/api/v1/alerts", None)
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until every alert in `want` is pending or firing; returns all the active ones, each
    /// printed.
    fn wait_for_alerts(&self, what: &str, want: &[&str], timeout: Duration) -> Vec<Value> {
        let active = wait_until(what, timeout, || {
            let a = self.alerts();
            want.iter()
                .all(|w| a.iter().any(|x| x["labels"]["alertname"] == *w))
                .then_some(a)
        });
        for a in &active {
            eprintln!(
                "ALERT {} {} | {}",
                a["labels"]["alertname"], a["state"], a["annotations"]["summary"]
            );
        }
        active
    }

    /// The least number of evaluations any rule group has had.
    fn evaluations(&self) -> f64 {
        let groups = self.query(r#"prometheus_rule_group_iterations_total{job="prometheus"}"#);
        if groups.len() < 6 {
            return 0.0;
        }
        groups
            .iter()
            .filter_map(|g| g["value"][1].as_str()?.parse::<f64>().ok())
            .fold(f64::MAX, f64::min)
    }
}

#[test]
fn the_rules_pass_promtool_stay_quiet_on_a_healthy_node_and_name_the_node_under_a_fault() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let dir = tempfile::tempdir_in(workspace_root().join("target")).expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    let out = plugin(&["alerts"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::write(&rules, &out.stdout).expect("rules.yaml");
    let check = Command::new(prometheus_dir().join("promtool"))
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let p = Prometheus::start(&c, &rules);
    wait_until("the kubelet scraped", Duration::from_secs(60), || {
        let up = p.query(r#"up{job="kubelet"}"#);
        (up.first().is_some_and(|u| u["value"][1] == "1")).then_some(())
    });
    // Healthy: 15 evaluations of every group (30 s, three scrapes), nothing pending or firing.
    wait_until(
        "15 evaluations of every rule group",
        Duration::from_secs(120),
        || (p.evaluations() >= 15.0).then_some(()),
    );
    let active = p.alerts();
    assert!(active.is_empty(), "alerts on the healthy node: {active:#?}");

    // Runtime list calls held 3.5 s: past the 3.05 s bucket the runtime rule reads, relists
    // 8 s apart (1 s period + two held calls) past the 2 s interval rule, and the kubelet's
    // /metrics waiting 7 s on them past the 5 s scrape rule.
    let healer = Healer(&c);
    c.xtask(&["fault", "runtime-slow-list", "--delay", "3500ms"]);
    let active = p.wait_for_alerts(
        "the runtime and relist-interval rules active",
        &[
            "KubeletRuntimeListSlow",
            "KubeletPLEGRelistIntervalHigh",
            "KubeletMetricsSlow",
        ],
        Duration::from_secs(240),
    );
    for a in &active {
        // Every active alert names the node, in its labels and in its text.
        names_the_node(a, "node", &c.node, &[format!("on {}", c.node)]);
    }
    drop(healer);
}

/// An active alert names the node: in its `label`, and in its summary in one of `forms`; no
/// template of it renders `<no value>`.
fn names_the_node(a: &Value, label: &str, node: &str, forms: &[String]) {
    assert_eq!(a["labels"][label], node, "{a:#}");
    let summary = a["annotations"]["summary"].as_str().unwrap_or("");
    assert!(
        forms.iter().any(|f| summary.contains(f.as_str())) && !summary.contains("<no value>"),
        "{a:#}"
    );
    let description = a["annotations"]["description"].as_str().unwrap_or("");
    assert!(!description.contains("<no value>"), "{a:#}");
}

/// kube-prometheus' service for a Prometheus on the node's address: `monitoring/prometheus-k8s`
/// port `web`. The API server's service proxy goes only to endpoints that are pods with that
/// address, so a host-network pod on the node stands for it (Prometheus itself runs beside it on
/// the host). Deleted, with its namespace, on drop.
struct PrometheusService<'a> {
    c: &'a Cluster,
}

impl<'a> PrometheusService<'a> {
    fn create(c: &'a Cluster, address: &str, port: u16) -> PrometheusService<'a> {
        // What an earlier, interrupted run left is removed first (its namespace may also still
        // be terminating).
        wait_until("no namespace monitoring", Duration::from_secs(120), || {
            let (code, body) = c.request("GET", "/api/v1/namespaces/monitoring", None);
            let terminating = serde_json::from_str::<Value>(&body)
                .is_ok_and(|n| !n["metadata"]["deletionTimestamp"].is_null());
            if code == 200 && !terminating {
                let _ = c.request("DELETE", "/api/v1/namespaces/monitoring", None);
            }
            (code == 404).then_some(())
        });
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}});
        let (code, body) = c.request("POST", "/api/v1/namespaces", Some(&ns));
        assert!(
            code == 201 || code == 409,
            "namespace monitoring: {code} {body}"
        );
        let service = PrometheusService { c };
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "prometheus-k8s-0", "namespace": "monitoring"},
            "spec": {
                "nodeName": c.node, "hostNetwork": true, "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "standin", "image": "nodehealth.local/busybox:1.35",
                    "imagePullPolicy": "Never", "command": ["/bin/busybox", "sleep", "3600"]}],
            },
        });
        let (code, body) = c.request("POST", "/api/v1/namespaces/monitoring/pods", Some(&pod));
        assert_eq!(code, 201, "{body}");
        let uid = wait_until("the stand-in pod running", Duration::from_secs(120), || {
            let p = c.get_json("/api/v1/namespaces/monitoring/pods/prometheus-k8s-0");
            (p["status"]["podIP"] == address).then(|| p["metadata"]["uid"].clone())
        });
        let svc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "prometheus-k8s", "namespace": "monitoring",
                "labels": {"app.kubernetes.io/name": "prometheus"}},
            "spec": {"ports": [{"name": "web", "port": 9090, "targetPort": port}]},
        });
        let (code, body) = c.request("POST", "/api/v1/namespaces/monitoring/services", Some(&svc));
        assert_eq!(code, 201, "{body}");
        let eps = serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "prometheus-k8s", "namespace": "monitoring"},
            "subsets": [{
                "addresses": [{"ip": address, "nodeName": c.node, "targetRef": {
                    "kind": "Pod", "namespace": "monitoring", "name": "prometheus-k8s-0", "uid": uid}}],
                "ports": [{"name": "web", "port": port}],
            }],
        });
        let (code, body) = c.request(
            "POST",
            "/api/v1/namespaces/monitoring/endpoints",
            Some(&eps),
        );
        assert_eq!(code, 201, "{body}");
        service
    }
}

impl Drop for PrometheusService<'_> {
    fn drop(&mut self) {
        let _ = self
            .c
            .request("DELETE", "/api/v1/namespaces/monitoring", None);
    }
}

/// The onset of a signal in the report's history, unix seconds.
fn onset(report: &Value, signal: &str) -> Option<i64> {
    let s = report["evidence"]["history"]["data"]["signals"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == signal)?;
    let text = s["timeline"]["onset"].as_str()?;
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[test]
fn history_from_prometheus_orders_the_runtime_before_the_relists() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let node = c.get_json(&format!("/api/v1/nodes/{}", c.node));
    let address = node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .expect("the node's InternalIP")
        .to_string();
    let dir = tempfile::tempdir_in(workspace_root().join("target")).expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "groups: []\n").expect("rules.yaml");
    let p = Prometheus::start_on(&c, &rules, &address, "");
    let _service = PrometheusService::create(&c, &address, p.port);
    // The kubelet onto the CRI proxy first, passing calls straight through (the move restarts
    // the kubelet), then a healthy stretch: three good scrapes in a row.
    let healer = Healer(&c);
    c.xtask(&["fault", "runtime-slow-list", "--delay", "1ms"]);
    wait_until(
        "three good scrapes of the kubelet in a row",
        Duration::from_secs(90),
        || {
            let n = p.query(r#"count_over_time(up{job="kubelet"}[35s]) >= 3 and min_over_time(up{job="kubelet"}[35s]) == 1"#);
            (!n.is_empty()).then_some(())
        },
    );
    // Then its list calls held 1.5 s from a known moment (the kubelet is on the proxy already,
    // so nothing restarts), relists of 3 s follow.
    let fault_at = c.fault(&["runtime-slow-list", "--delay", "1500ms"]).round() as i64;
    let relists_slow = r#"sum(rate(kubelet_pleg_relist_duration_seconds_sum{node="NODE"}[2m])) / sum(rate(kubelet_pleg_relist_duration_seconds_count{node="NODE"}[2m])) > 1"#
        .replace("NODE", &c.node);
    wait_until(
        "Prometheus sees the relists past 1 s",
        Duration::from_secs(240),
        || (!p.query(&relists_slow).is_empty()).then_some(()),
    );

    let args = |prometheus: &str| -> Vec<String> {
        [
            "--api-only",
            "--prometheus",
            prometheus,
            "--since",
            "10m",
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // `auto`: found among the cluster's services, read through the API server.
    let auto = args("auto");
    let auto: Vec<&str> = auto.iter().map(String::as_str).collect();
    let (out, _) = run_plugin(&c, &auto);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let history = &report["evidence"]["history"];
    assert_eq!(history["outcome"], "collected", "{history:#}");
    let data = &history["data"];
    assert!(
        data["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("service monitoring/prometheus-k8s:web")),
        "{data:#}"
    );
    assert!(
        data["foundBy"]
            .as_str()
            .is_some_and(|s| s.contains("kube-prometheus")),
        "{data:#}"
    );
    assert!(
        data["matcher"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("node=\"{}\",job=~", c.node))),
        "{data:#}"
    );
    let runtime = onset(&report, "runtime-list-seconds").expect("the runtime's onset");
    let relists = onset(&report, "relist-seconds").expect("the relists' onset");
    eprintln!(
        "HISTORY calls held from {fault_at}: runtime list calls degraded at {runtime} ({:+} s), relists at {relists} ({:+} s)",
        runtime - fault_at,
        relists - fault_at
    );
    assert!(runtime <= relists, "{data:#}");
    // Each onset within one scrape (10 s) of the fault's moment, found again at one point a
    // second (and a second for rounding).
    let scrape = data["scrapeSeconds"]
        .as_f64()
        .expect("the scrape interval read") as i64;
    assert_eq!(scrape, 10, "{data:#}");
    for (what, at) in [("runtime", runtime), ("relists", relists)] {
        assert!(
            (fault_at - scrape - 1..=fault_at + scrape + 1).contains(&at),
            "{what} onset {at}, the fault's at {fault_at}: {data:#}"
        );
    }
    // The verdict cites the order.
    let cited = report["verdict"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["evidence"].as_array().cloned().unwrap_or_default())
        .any(|e| {
            e.as_str()
                .is_some_and(|e| e.starts_with("history: the runtime's calls degraded at"))
        });
    assert!(cited, "{:#}", report["verdict"]);
    let finding = report["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == "history"))
        .expect("the history finding");
    assert_eq!(finding["severity"], "info", "{finding:#}");

    // By URL, with the raw answers in the bundle.
    let bundle = dir.path().join("history.tar.gz");
    let url = format!("http://{address}:{}", p.port);
    let mut by_url = args(&url);
    by_url.extend(["--bundle".to_string(), bundle.display().to_string()]);
    let by_url: Vec<&str> = by_url.iter().map(String::as_str).collect();
    let (out, _) = run_plugin(&c, &by_url);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report["evidence"]["history"]["data"]["source"],
        url.as_str()
    );
    assert!(onset(&report, "runtime-list-seconds").is_some());
    // The table, as an operator sees it (the README shows one).
    let mut table = by_url.clone();
    table.retain(|a| !matches!(*a, "-o" | "json" | "--bundle") && !a.ends_with(".tar.gz"));
    table.push("--no-color");
    let (out, _) = run_plugin(&c, &table);
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(i) = text.find("\nHistory") {
        eprintln!(
            "TABLE{}",
            &text[i..text.find("\nPassed").unwrap_or(text.len())]
        );
    }
    let listing = bundle_listing(&bundle);
    assert!(
        listing.contains("raw/prometheus/relist-seconds.json"),
        "{listing}"
    );

    // The fleet view: the node, still Ready, has relists degrading, and says since when.
    let out = plugin(&[
        "scan",
        "--kubeconfig",
        c.admin_kubeconfig().to_str().unwrap(),
        "--prometheus",
        "auto",
        "--since",
        "10m",
        "-o",
        "json",
    ]);
    let scan: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let row = scan["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node"] == c.node.as_str()))
        .expect("the node's row");
    eprintln!("SCAN {:#}", row["history"]);
    assert_eq!(row["ready"], "True", "{row:#}");
    assert_eq!(row["history"]["relistsDegrading"], true, "{row:#}");
    assert!(row["history"]["degradedSince"].is_string(), "{row:#}");

    // Then the kubelet stops: its scrape fails after the runtime and the relists degraded, within
    // one scrape of the stop (a sample is stamped when its scrape began: one in flight at the stop
    // fails too).
    let stopped_at = c.fault(&["kubelet-stopped"]).round() as i64;
    let down = format!(r#"up{{job="kubelet",node="{}"}} == 0"#, c.node);
    wait_until(
        "Prometheus sees the kubelet down",
        Duration::from_secs(90),
        || (!p.query(&down).is_empty()).then_some(()),
    );
    let plain = args(&url);
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let (out, _) = run_plugin(&c, &plain);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let up = onset(&report, "kubelet-up").expect("the scrape's onset");
    eprintln!(
        "HISTORY the kubelet stopped at {stopped_at}, its scrape failed at {up} ({:+} s)",
        up - stopped_at
    );
    assert!(relists <= up, "{:#}", report["evidence"]["history"]);
    assert!(
        (stopped_at - scrape - 1..=stopped_at + scrape + 1).contains(&up),
        "the scrape's onset {up}, the kubelet stopped at {stopped_at}: {:#}",
        report["evidence"]["history"]
    );
    drop(healer);
}

/// kube-state-metrics on loopback, watching nodes and leases with the admin's kubeconfig (`cargo
/// xtask test --long` builds it from its Go module). Killed on drop.
struct KubeStateMetrics {
    child: Child,
    port: u16,
}

impl KubeStateMetrics {
    fn start(c: &Cluster) -> KubeStateMetrics {
        let bin = std::env::var_os("NODEHEALTH_KUBE_STATE_METRICS")
            .map(PathBuf::from)
            .filter(|b| b.exists())
            .expect("NODEHEALTH_KUBE_STATE_METRICS: `cargo xtask test --long` builds it");
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (port, telemetry) = (free(), free());
        let child = Command::new(bin)
            .arg(format!("--kubeconfig={}", c.admin_kubeconfig().display()))
            .args(["--resources=nodes,leases", "--host=127.0.0.1"])
            .arg(format!("--port={port}"))
            .args(["--telemetry-host=127.0.0.1"])
            .arg(format!("--telemetry-port={telemetry}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting kube-state-metrics");
        KubeStateMetrics { child, port }
    }
}

impl Drop for KubeStateMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "long tier (cargo xtask test --long): kube-state-metrics built from its Go module"]
fn history_puts_the_lease_and_ready_before_the_node_under_a_partition() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let ksm = KubeStateMetrics::start(&c);
    let dir = tempfile::tempdir_in(workspace_root().join("target")).expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    let out = plugin(&["alerts"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::write(&rules, &out.stdout).expect("rules.yaml");
    // As kube-prometheus scrapes it: its own `node`, `lease` and `namespace` labels kept.
    let extra = format!(
        r#"  - job_name: kube-state-metrics
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{}"]
"#,
        ksm.port
    );
    let p = Prometheus::start_on(&c, &rules, "127.0.0.1", &extra);
    // A healthy stretch: three good scrapes of both, the node Ready and its lease renewed.
    let healthy = format!(
        r#"count_over_time(up{{job="kube-state-metrics"}}[35s]) >= 3 and on() min_over_time(up{{job="kubelet"}}[35s]) == 1 and on() kube_node_status_condition{{node="{n}",condition="Ready",status="true"}} == 1 and on() (time() - kube_lease_renew_time{{lease="{n}",namespace="kube-node-lease"}}) < 30"#,
        n = c.node
    );
    wait_until(
        "three good scrapes of the kubelet and kube-state-metrics, the node Ready",
        Duration::from_secs(120),
        || (!p.query(&healthy).is_empty()).then_some(()),
    );
    // The kube-state-metrics rules stay quiet on the healthy node too.
    wait_until(
        "15 evaluations of every rule group",
        Duration::from_secs(120),
        || (p.evaluations() >= 15.0).then_some(()),
    );
    let active = p.alerts();
    assert!(active.is_empty(), "alerts on the healthy node: {active:#?}");
    let healer = Healer(&c);
    let cut_at = c.fault(&["api-partition"]).round() as i64;
    // The lease past the history's 40 s line and Ready no longer True, while the API server still
    // scrapes the kubelet (its path to the kubelet is not cut).
    let cut_off = format!(
        r#"(time() - kube_lease_renew_time{{lease="{n}",namespace="kube-node-lease"}}) > 40 and on() kube_node_status_condition{{node="{n}",condition="Ready",status="true"}} == 0"#,
        n = c.node
    );
    wait_until(
        "Prometheus sees the lease stale and the node not Ready",
        Duration::from_secs(180),
        || (!p.query(&cut_off).is_empty()).then_some(()),
    );
    let url = format!("http://127.0.0.1:{}", p.port);
    let (out, _) = run_plugin(
        &c,
        &[
            "--api-only",
            "--prometheus",
            &url,
            "--since",
            "10m",
            "-o",
            "json",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let history = &report["evidence"]["history"]["data"];
    let lease = onset(&report, "lease-age-seconds").expect("the lease's onset");
    let ready = onset(&report, "node-ready").expect("Ready's onset");
    eprintln!(
        "HISTORY partition at {cut_at}: the lease past 40 s at +{} s, Ready lost at +{} s",
        lease - cut_at,
        ready - cut_at
    );
    // The last renewal came at most one renew interval (10 s) before the cut: the lease's age
    // passes 40 s between 30 and 40 s after it (and rounding).
    assert!(
        (cut_at + 29..=cut_at + 42).contains(&lease),
        "the lease's onset {lease}, the cut at {cut_at}: {history:#}"
    );
    assert!(ready >= cut_at, "{history:#}");
    // Nothing on the node degraded: the runtime's calls and the relists stay within their lines.
    // (The scrape itself may fail: the kubelet cannot ask the API server to authorize it once its
    // cached answer expires — seen 14 s after the cut.)
    for id in ["runtime-list-seconds", "relist-seconds"] {
        assert!(onset(&report, id).is_none(), "{id}: {history:#}");
    }
    if let Some(up) = onset(&report, "kubelet-up") {
        eprintln!("HISTORY the kubelet's scrape failed at +{} s", up - cut_at);
    }
    assert_eq!(
        report["verdict"]["causes"][0]["id"], "api-partition",
        "{:#}",
        report["verdict"]
    );
    let cited = report["verdict"]["causes"][0]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| {
            e.as_str().is_some_and(|e| {
                e.starts_with("history: the lease or Ready failed at")
                    && e.ends_with("before anything on the node degraded")
            })
        });
    assert!(cited, "{:#}", report["verdict"]);
    // The table, as an operator sees it.
    let (out, _) = run_plugin(
        &c,
        &[
            "--api-only",
            "--prometheus",
            &url,
            "--since",
            "10m",
            "--no-color",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(i) = text.find("\nHistory") {
        eprintln!(
            "TABLE{}",
            &text[i..text.find("\nPassed").unwrap_or(text.len())]
        );
    }
    // The kube-state-metrics rules go active, each naming the node: the lease past 90 s, and
    // Ready not True (pending: it fires only after 15 minutes).
    let active = p.wait_for_alerts(
        "the lease and Ready rules active",
        &["NodeLeaseStale", "NodeNotReadySustained"],
        Duration::from_secs(180),
    );
    for a in &active {
        // NodeLeaseStale's series name the node in `lease` (kube_lease_renew_time has no `node`);
        // its text and NodeNotReadySustained's say "Node vm ...", the kubelet's rules "... on vm."
        // (under a partition its requests to the API server time out: KubeletAPIRequestsSlow).
        let label = if a["labels"]["alertname"] == "NodeLeaseStale" {
            "lease"
        } else {
            "node"
        };
        names_the_node(
            a,
            label,
            &c.node,
            &[format!("Node {} ", c.node), format!("on {}.", c.node)],
        );
    }
    drop(healer);
}
