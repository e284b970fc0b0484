//! The local cluster itself: a real node that is Ready, renews its lease, serves kubelet metrics
//! and logs through the API server's node proxy, runs pods, and reacts to the harness's faults the
//! way a real node does.

use std::{thread, time::Duration};

use nodehealth_e2e::{
    Cluster, Healer, finding, json_of, last_oom_kill_at, run_agent_standalone, run_plugin,
    run_plugin_with_node_evidence, wait_until,
};
use serde_json::{Value, json};

/// The healthy scenario: a node with nothing wrong, seen through every layer — the API side, the
/// probe pod with the eBPF trace, and the agent run on the node (`--node-evidence`) — is
/// `healthy` with exit 0. First in the end-to-end tier (test binaries and tests run in name
/// order), before any fault leaves its traces. One trace outlives `cluster down`: the kernel log.
/// A kubelet OOM-killed in the last 10 minutes (an earlier run's kubelet-memory-limited) is a
/// real warning the tool must give, so then that warning, and only it, is expected.
#[test]
fn a_healthy_node_is_healthy_on_every_layer() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    // No recent trouble either: an earlier test's fault leaves Warning events the events rule
    // rightly reports for minutes.
    c.clear_node_events();
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let last_oom = last_oom_kill_at("kubelet");
    let oom_history = last_oom > 0.0 && uptime - last_oom < 10.0 * 60.0;
    let check = |out: std::process::Output, took: Duration, layers: &[&str]| {
        let report = json_of(&out);
        let top = &report["verdict"]["causes"][0];
        let problems: Vec<&Value> = report["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| !matches!(f["severity"].as_str(), Some("ok" | "info")))
            // Configuration risks and log lines are shown, never problems on their own.
            .filter(|f| f["domain"] != "configuration")
            .filter(|f| !f["id"].as_str().is_some_and(|id| id.starts_with("logs-")))
            .collect();
        eprintln!(
            "SCENARIO healthy | {} | {} ({}) | exit {:?} | {:.1} s",
            report["verdict"]["layers"],
            top["id"],
            top["confidence"],
            out.status.code(),
            took.as_secs_f64()
        );
        assert_eq!(top["id"], "healthy", "{:#}", report["verdict"]);
        for layer in layers {
            assert!(
                report["verdict"]["layers"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|v| v == layer)),
                "{layer}: {:#}",
                report["verdict"]
            );
        }
        if oom_history {
            eprintln!(
                "the kernel log holds a kubelet OOM kill {:.0} s ago",
                uptime - last_oom
            );
            let ids: Vec<&Value> = problems.iter().map(|f| &f["id"]).collect();
            assert!(
                ids.iter().all(|id| *id == "node-oom-kills"),
                "{problems:#?}"
            );
        } else {
            assert_eq!(out.status.code(), Some(0), "{problems:#?}");
        }
    };
    let (out, took) = run_plugin(&c, &["--duration", "3s", "--trace", "-o", "json"]);
    check(out, took, &["api", "node-probe", "ebpf"]);
    // The operator's SSH fallback on the same node agrees.
    let agent = run_agent_standalone(&["--duration", "3s"]);
    let (out, took) = run_plugin_with_node_evidence(&c, &agent, "3s");
    check(out, took, &["api", "node-agent"]);
}

/// A window longer than the lease's 40 s duration on a healthy node: the lease is aged when it was
/// read, not at the end of the collection. Read at the window's start and aged at its end, every
/// such run found the lease stale and the node partitioned (first seen as api-partition at
/// runtime-slow-list's 3 s strength, whose window is 25 s).
#[test]
fn a_long_window_does_not_age_the_heartbeat() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let (out, took) = run_plugin(&c, &["--duration", "42s", "-o", "json"]);
    let report = json_of(&out);
    let lease = finding(&report, "lease-age")
        .cloned()
        .unwrap_or(Value::Null);
    eprintln!(
        "SCENARIO healthy, 42 s window | {} | {} | lease {} | {:.1} s",
        report["verdict"]["layers"],
        report["verdict"]["causes"][0]["id"],
        lease["summary"],
        took.as_secs_f64()
    );
    assert_eq!(lease["severity"], "ok", "{lease:#}");
    assert_eq!(
        report["verdict"]["causes"][0]["id"], "healthy",
        "{:#}",
        report["verdict"]
    );
}

#[test]
fn node_is_ready_and_its_lease_renews() {
    let c = Cluster::get();
    let (status, reason, _) = c.ready_condition();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "KubeletReady"));
    let node = c.get_json(&format!("/api/v1/nodes/{}", c.node));
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.35.4");
    let lease_path = format!(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
        c.node
    );
    let first = c.get_json(&lease_path)["spec"]["renewTime"].clone();
    // The kubelet renews every 10 s (a quarter of leaseDurationSeconds 40, ±4% jitter).
    wait_until("the lease renewed", Duration::from_secs(12), || {
        (c.get_json(&lease_path)["spec"]["renewTime"] != first).then_some(())
    });
}

#[test]
fn node_proxy_serves_kubelet_metrics_healthz_and_logs() {
    let c = Cluster::get();
    let (code, metrics) = c.request(
        "GET",
        &format!("/api/v1/nodes/{}/proxy/metrics", c.node),
        None,
    );
    assert_eq!(code, 200);
    assert!(metrics.contains("kubelet_pleg_relist_duration_seconds_bucket"));
    assert!(metrics.contains("kubelet_pleg_last_seen_seconds"));
    let (code, healthz) = c.request(
        "GET",
        &format!("/api/v1/nodes/{}/proxy/healthz?verbose", c.node),
        None,
    );
    assert_eq!(code, 200, "{healthz}");
    assert!(healthz.contains("[+]syncloop ok"), "{healthz}");
    // The node log query (NodeLogQuery + enableSystemLogQuery): the kubelet serves its own log
    // file from /var/log.
    let (code, logs) = c.request(
        "GET",
        &format!("/api/v1/nodes/{}/proxy/logs/?query=kubelet", c.node),
        None,
    );
    assert_eq!(code, 200, "{logs}");
    assert!(
        logs.contains("kubelet"),
        "log query answered without kubelet lines"
    );
}

#[test]
fn host_network_pod_runs_to_completion() {
    let c = Cluster::get();
    let name = "e2e-hello";
    let _ = c.request(
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/{name}?gracePeriodSeconds=0"),
        None,
    );
    wait_until("the old pod gone", Duration::from_secs(60), || {
        (c.request(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        )
        .0 == 404)
            .then_some(())
    });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": c.node, "hostNetwork": true, "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "hello", "image": "nodehealth.local/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c", "echo hello from the node; exit 0"],
            }],
        },
    });
    // The default service account appears shortly after the controller manager starts.
    let mut created = false;
    for _ in 0..30 {
        let (code, body) = c.request("POST", "/api/v1/namespaces/default/pods", Some(&pod));
        if code == 201 {
            created = true;
            break;
        }
        assert!(
            code == 403 || code == 500,
            "creating the pod: {code} {body}"
        );
        thread::sleep(Duration::from_secs(1));
    }
    assert!(created, "the pod was never admitted");
    let mut phase = String::new();
    for _ in 0..60 {
        let p = c.get_json(&format!("/api/v1/namespaces/default/pods/{name}"));
        phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(phase, "Succeeded");
    let (code, log) = c.request(
        "GET",
        &format!("/api/v1/namespaces/default/pods/{name}/log"),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(log.trim(), "hello from the node");
    let (code, _) = c.request(
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/{name}"),
        None,
    );
    assert_eq!(code, 200);
}

#[test]
fn runtime_frozen_makes_ready_false_and_heals() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    // The process the kubelet's CRI calls reach is containerd itself (no proxy in between), so
    // freezing containerd's cgroup hangs the kubelet's runtime calls.
    let containerd = c.assert_kubelet_on_containerd();
    let healer = Healer(&c);
    c.xtask(&["fault", "runtime-frozen"]);
    let cgroup = std::fs::read_to_string(format!("/proc/{containerd}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_string()))
        .expect("containerd's freezer cgroup");
    let state =
        std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{cgroup}/freezer.state")).unwrap();
    assert_eq!(state.trim(), "FROZEN", "containerd's cgroup {cgroup}");
    // The kubelet's runtime status check blocks for runtimeRequestTimeout (30 s in the fast
    // settings) before it reports the runtime down; allow the node-status period on top.
    let took = c.wait_ready("False", Duration::from_secs(120));
    let (_, reason, message) = c.ready_condition();
    assert_eq!(reason, "KubeletNotReady");
    assert!(message.contains("container runtime is down"), "{message}");
    eprintln!("runtime-frozen: Ready=False after {took:?}");
    drop(healer);
    assert_eq!(c.ready_condition().0, "True");
}

#[test]
fn api_partition_makes_ready_unknown_and_heals() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "api-partition"]);
    // node-monitor-grace-period is 20 s in the fast settings.
    let took = c.wait_ready("Unknown", Duration::from_secs(90));
    let (_, reason, _) = c.ready_condition();
    assert_eq!(reason, "NodeStatusUnknown");
    eprintln!("api-partition: Ready=Unknown after {took:?}");
    drop(healer);
    assert_eq!(c.ready_condition().0, "True");
}
