//! Log evidence on the real cluster: the kubelet's node log query through the API server's node
//! proxy (the harness's kubelet logs to /var/log/kubelet.log with NodeLogQuery and
//! enableSystemLogQuery on), the same logs read on the node by the standalone agent, and the
//! message when the query is turned off (`fault log-query-off` restarts the kubelet with
//! `enableSystemLogQuery: false`).

use std::time::Duration;

use nodehealth_e2e::{Cluster, Healer, finding, json_of, run_agent_standalone, run_plugin};
use serde_json::Value;

fn api_report(c: &Cluster) -> Value {
    let (out, _) = run_plugin(c, &["--api-only", "--duration", "1s", "-o", "json"]);
    json_of(&out)
}

#[test]
fn the_node_log_query_reads_the_kubelet_and_runtime_logs() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let r = api_report(&c);
    let kubelet = &r["evidence"]["kubeletLog"];
    assert_eq!(kubelet["outcome"], "collected", "{kubelet:#}");
    let d = &kubelet["data"]["digest"];
    // The harness's kubelet logs to a file: the kubelet applies no options to files, so the
    // plugin asks again without and keeps the window itself.
    assert_eq!(
        d["source"], "node log query kubelet (a file under /var/log)",
        "{d:#}"
    );
    assert!(d["linesScanned"].as_u64().unwrap() > 0, "{d:#}");
    let newest = d["newestLineUnixMs"].as_i64().expect("line times");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The kubelet logs at least every few seconds at -v=2 (relists, housekeeping).
    assert!(now - newest < 120_000, "newest line {newest} vs now {now}");
    let runtime = &r["evidence"]["runtimeLog"];
    assert_eq!(runtime["outcome"], "collected", "{runtime:#}");
    assert_eq!(runtime["data"]["service"], "containerd");
    assert!(finding(&r, "logs-query-disabled").is_none());

    // The node side reads the same logs where the processes write them.
    let agent = run_agent_standalone(&["--duration", "1s"]);
    let logs = &agent["logs"];
    assert_eq!(logs["systemd"], false, "{logs:#}");
    assert_eq!(
        logs["kubelet"]["digest"]["source"], "file /var/log/kubelet.log",
        "{logs:#}"
    );
    let tried = logs["kubelet"]["tried"].to_string();
    assert!(tried.contains("/fd/2 -> /var/log/kubelet.log"), "{tried}");
    assert_eq!(
        logs["runtime"]["digest"]["source"], "file /var/log/containerd.log",
        "{logs:#}"
    );
}

#[test]
fn a_disabled_log_query_says_so_and_how_to_turn_it_on() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "log-query-off"]);
    let r = api_report(&c);
    let kubelet = &r["evidence"]["kubeletLog"];
    assert_eq!(kubelet["outcome"], "failed", "{kubelet:#}");
    assert_eq!(kubelet["failure"]["kind"], "disabled", "{kubelet:#}");
    let f = finding(&r, "logs-query-disabled").expect("the disabled-query finding");
    assert_eq!(f["severity"], "info", "{f:#}");
    let fix = f["remediation"].as_str().unwrap_or("");
    assert!(
        fix.contains("enableSystemLogQuery: true") && fix.contains("NodeLogQuery"),
        "{fix}"
    );
    // Not a collection failure on top: the query is off, nothing failed.
    assert!(
        finding(&r, "collection-kubelet-log").is_none(),
        "{:#}",
        r["findings"]
    );
    drop(healer);
    c.wait_ready("True", Duration::from_secs(120));
    let r = api_report(&c);
    assert_eq!(r["evidence"]["kubeletLog"]["outcome"], "collected");
}
