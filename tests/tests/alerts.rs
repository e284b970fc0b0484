//! The generated alert rules in a real Prometheus (Debian's package, unpacked by `cargo xtask
//! test` into the cache) that scrapes the local cluster's kubelet through the API server's node
//! proxy, labelled as kube-prometheus labels its kubelet scrape (`job="kubelet"`,
//! `metrics_path="/metrics"`, `node`). `promtool check rules` passes on the output; on the
//! healthy node no rule is pending or firing after many evaluations; under runtime-slow-list the
//! runtime and relist-interval rules go active with the node named in their rendered text.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nodehealth_e2e::{Cluster, Healer, plugin, wait_until, workspace_root};
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
        let dir = tempfile::tempdir_in(workspace_root().join("target")).expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
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
      - targets: ["127.0.0.1:{port}"]
"#,
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
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn get(&self, path: &str, query: Option<&str>) -> Option<Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port));
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
    let want = [
        "KubeletRuntimeListSlow",
        "KubeletPLEGRelistIntervalHigh",
        "KubeletMetricsSlow",
    ];
    let active = wait_until(
        "the runtime and relist-interval rules active",
        Duration::from_secs(240),
        || {
            let a = p.alerts();
            want.iter()
                .all(|w| a.iter().any(|x| x["labels"]["alertname"] == *w))
                .then_some(a)
        },
    );
    for a in &active {
        eprintln!(
            "ALERT {} {} node={} | {}",
            a["labels"]["alertname"], a["state"], a["labels"]["node"], a["annotations"]["summary"]
        );
        // Every active alert names the node, in its labels and in its text.
        assert_eq!(a["labels"]["node"], c.node.as_str(), "{a:#}");
        let summary = a["annotations"]["summary"].as_str().unwrap_or("");
        assert!(
            summary.contains(&format!("on {}", c.node)) && !summary.contains("<no value>"),
            "{a:#}"
        );
        let description = a["annotations"]["description"].as_str().unwrap_or("");
        assert!(!description.contains("<no value>"), "{a:#}");
    }
    drop(healer);
}
