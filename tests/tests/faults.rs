//! The harness's node faults (issue 3), each applied to the real local cluster: the test waits for
//! the fault's real symptom — in the kubelet's own metrics, the kernel log, the API server's
//! answers — heals, and checks that the node recovers. Numbers are printed for the record.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use nodehealth_e2e::{
    Cluster, Healer, histogram_sum_count, last_oom_kill_at, oom_kills_since, socket_listeners,
    wait_until, window,
};
use serde_json::json;

const RUNTIME_OPS: &str = "kubelet_runtime_operations_duration_seconds";

fn long_tests() -> bool {
    std::env::var_os("NODEHEALTH_LONG_TESTS").is_some()
}

/// Waits for the node to be Ready and for relists to have settled (a relist slowed by an earlier
/// test may still be in flight).
fn settled(c: &Cluster) {
    c.wait_ready("True", Duration::from_secs(120));
    c.wait_relists_fast(Duration::from_secs(60));
}

/// A long-running hostNetwork pod; returns its container id once it runs.
fn sleeping_pod(c: &Cluster, name: &str) -> String {
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    let _ = c.request("DELETE", &format!("{path}?gracePeriodSeconds=0"), None);
    wait_until("the old pod gone", Duration::from_secs(60), || {
        (c.request("GET", &path, None).0 == 404).then_some(())
    });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": c.node, "hostNetwork": true, "restartPolicy": "Always",
            "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "sleep", "image": "nodehealth.local/busybox:1.35",
                "imagePullPolicy": "Never", "command": ["/bin/busybox", "sleep", "3600"],
            }],
        },
    });
    wait_until("the pod admitted", Duration::from_secs(30), || {
        let (code, _) = c.request("POST", "/api/v1/namespaces/default/pods", Some(&pod));
        (code == 201).then_some(())
    });
    let (id, restarts) = running_container(c, name, Duration::from_secs(60));
    assert_eq!(restarts, 0);
    id
}

/// Waits until the pod's container runs; returns its id and restart count.
fn running_container(c: &Cluster, name: &str, timeout: Duration) -> (String, u64) {
    wait_until(&format!("pod {name} running"), timeout, || {
        let p = c.get_json(&format!("/api/v1/namespaces/default/pods/{name}"));
        let s = &p["status"]["containerStatuses"][0];
        (p["status"]["phase"] == "Running" && s["state"]["running"].is_object()).then(|| {
            (
                s["containerID"].as_str().unwrap_or("").to_string(),
                s["restartCount"].as_u64().unwrap_or(0),
            )
        })
    })
}

#[test]
fn runtime_slow_list_puts_the_proxy_in_the_path_delays_every_relist_and_heal_removes_it() {
    let c = Cluster::get();
    settled(&c);
    // By default the kubelet talks to containerd itself: the runtime the agent must find.
    let containerd = c.assert_kubelet_on_containerd();
    let survivor = "e2e-slow-list-survivor";
    let container = sleeping_pod(&c, survivor);
    let healer = Healer(&c);
    let applied = Instant::now();
    c.xtask(&["fault", "runtime-slow-list", "--delay", "1500ms"]);
    let apply_took = applied.elapsed();
    let proxy = c.assert_kubelet_talks_to("criproxy", &c.criproxy_socket(), &c.containerd_socket());
    assert_eq!(
        socket_listeners(&c.criproxy_socket()),
        vec![("xtask".to_string(), proxy)],
        "the proxy listens on the kubelet's runtime socket"
    );
    assert_eq!(
        c.component_pid("containerd"),
        Some(containerd),
        "containerd was not restarted"
    );
    // The fault returns once a relist showed both held calls: every relist from here on is slow.
    // A relist calls ListPodSandbox and ListContainers, each held 1.5 s: ~3 s per relist.
    let before = c.relist_histogram();
    thread::sleep(Duration::from_secs(20));
    let (count, mean) = window(before, c.relist_histogram());
    eprintln!(
        "runtime-slow-list 1.5 s: applied in {:.1} s (kubelet restarted onto the proxy); \
         {count} relists in 20 s, mean {mean:.2} s",
        apply_took.as_secs_f64()
    );
    assert!(count >= 2.0, "only {count} relists in 20 s");
    assert!(
        mean >= 2.5,
        "relists took {mean:.2} s on average with 1.5 s per list call"
    );
    let healing = Instant::now();
    drop(healer);
    let heal_took = healing.elapsed();
    assert_eq!(c.assert_kubelet_on_containerd(), containerd);
    assert!(
        !c.criproxy_socket().exists(),
        "heal left the proxy's socket"
    );
    let lease = c.lease_renew_time();
    let before = c.relist_histogram();
    thread::sleep(Duration::from_secs(10));
    let (count, mean) = window(before, c.relist_histogram());
    eprintln!(
        "heal: kubelet back on containerd and Ready in {:.1} s; {count} relists in 10 s, \
         mean {mean:.3} s",
        heal_took.as_secs_f64()
    );
    assert!(mean < 0.5, "relists still take {mean:.2} s after heal");
    // The kubelet renews every 10 s (a quarter of leaseDurationSeconds 40).
    wait_until(
        "the lease renewed after heal",
        Duration::from_secs(15),
        || (c.lease_renew_time() != lease).then_some(()),
    );
    // Two kubelet restarts later the pod is the same: same container, never restarted.
    let (after, restarts) = running_container(&c, survivor, Duration::from_secs(10));
    assert_eq!(after, container, "the pod's container was replaced");
    assert_eq!(restarts, 0, "the pod's container restarted");
    let (code, body) = c.request(
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/{survivor}?gracePeriodSeconds=0"),
        None,
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn runtime_cpu_starved_slows_relists_and_throttles_containerd() {
    let c = Cluster::get();
    settled(&c);
    let before = c.relist_histogram();
    thread::sleep(Duration::from_secs(10));
    let (_, baseline) = window(before, c.relist_histogram());

    let cpu_stat = "/sys/fs/cgroup/cpu/nodehealth-harness/containerd/cpu.stat";
    let throttled = || -> u64 {
        fs::read_to_string(cpu_stat)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled ")?.trim().parse().ok())
            .unwrap_or(0)
    };
    let healer = Healer(&c);
    let throttled_before = throttled();
    c.xtask(&["fault", "runtime-cpu-starved"]);
    // The quota bites as soon as containerd wants more CPU than it allows.
    wait_until("containerd throttled", Duration::from_secs(30), || {
        (throttled() > throttled_before).then_some(())
    });
    let before = c.relist_histogram();
    thread::sleep(Duration::from_secs(15));
    let (count, starved) = window(before, c.relist_histogram());
    let periods_throttled = throttled() - throttled_before;
    eprintln!(
        "runtime-cpu-starved: relist mean {:.1} ms before, {:.1} ms starved ({count} relists); \
         containerd throttled in {periods_throttled} CFS periods",
        baseline * 1e3,
        starved * 1e3
    );
    assert!(periods_throttled > 0, "containerd was never throttled");
    assert!(
        starved >= 0.1 && starved >= 5.0 * baseline,
        "relists did not slow: {baseline:.3} s before, {starved:.3} s starved"
    );
    drop(healer);
    c.wait_relists_fast(Duration::from_secs(60));
    let before = c.relist_histogram();
    thread::sleep(Duration::from_secs(10));
    let (_, healed) = window(before, c.relist_histogram());
    eprintln!("after heal: relist mean {:.1} ms", healed * 1e3);
    assert!(healed < starved / 5.0, "relists still slow after heal");
}

#[test]
fn kubelet_memory_limited_is_oom_killed_and_restarted() {
    let c = Cluster::get();
    settled(&c);
    let last_kill_before = last_oom_kill_at("kubelet");
    let healer = Healer(&c);
    c.xtask(&["fault", "kubelet-memory-limited", "--limit-mib", "12"]);
    let start = std::time::Instant::now();
    let restarts = wait_until("two kubelet restarts", Duration::from_secs(60), || {
        let r = c.restarts("kubelet");
        (r >= 2).then_some(r)
    });
    // The restarts are counted by the fault's new supervisor; the kills by kernel timestamp.
    let kills = wait_until(
        "two new OOM kills in the kernel log",
        Duration::from_secs(30),
        || {
            let k = oom_kills_since("kubelet", last_kill_before);
            (k.len() >= 2).then_some(k)
        },
    );
    eprintln!(
        "kubelet-memory-limited: {restarts} restarts after {:.1} s; kernel log: {}",
        start.elapsed().as_secs_f64(),
        kills.last().map(String::as_str).unwrap_or("-")
    );
    assert!(
        kills
            .last()
            .unwrap()
            .contains("Memory cgroup out of memory")
    );
    drop(healer);
    let restarts = c.restarts("kubelet");
    thread::sleep(Duration::from_secs(10));
    assert_eq!(
        c.restarts("kubelet"),
        restarts,
        "the kubelet still restarts"
    );
}

#[test]
fn disk_slow_makes_container_operations_wait_for_the_device() {
    let c = Cluster::get();
    settled(&c);
    let dev = fs::read_to_string(c.dir.join("run/containerd-root.dev"))
        .expect("containerd's root device (cluster up records it)")
        .trim()
        .to_string();
    let writes = |group: &str| -> u64 {
        fs::read_to_string(format!(
            "/sys/fs/cgroup/blkio{group}/blkio.throttle.io_serviced"
        ))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{dev} Write "))?.parse().ok())
        .unwrap_or(0)
    };
    let ops = |c: &Cluster, op: &str| {
        histogram_sum_count(
            &c.kubelet_metrics(),
            RUNTIME_OPS,
            &format!("operation_type=\"{op}\""),
        )
    };
    let healer = Healer(&c);
    let writes_before = writes("");
    let create_before = ops(&c, "create_container");
    let remove_before = ops(&c, "remove_container");
    c.xtask(&["fault", "disk-slow"]);
    let rules =
        fs::read_to_string("/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device").unwrap();
    assert!(
        rules.contains(&format!("{dev} 10")),
        "root group rules: {rules}"
    );
    // The fault's pod churn creates and removes containers steadily while it is in place (the
    // fault returned only once writes were measurably slow).
    wait_until("four container creations", Duration::from_secs(90), || {
        (ops(&c, "create_container").1 - create_before.1 >= 4.0).then_some(())
    });
    let (created, create_mean) = window(create_before, ops(&c, "create_container"));
    let (removed, remove_mean) = window(remove_before, ops(&c, "remove_container"));
    let root_writes = writes("") - writes_before;
    eprintln!(
        "disk-slow: {created} CreateContainer, mean {create_mean:.2} s; {removed} \
         RemoveContainer, mean {remove_mean:.2} s; {root_writes} writes throttled in the root group"
    );
    assert!(
        root_writes > 0,
        "no writes to {dev} went through the root group"
    );
    assert!(
        create_mean >= 1.0,
        "CreateContainer took {create_mean:.2} s on a 10-IOPS device"
    );
    drop(healer);
    let rules =
        fs::read_to_string("/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device").unwrap();
    assert!(!rules.contains(&dev), "rules left after heal: {rules}");
    wait_until("the fault's pods gone", Duration::from_secs(60), || {
        let (code, body) = c.request(
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=nodehealth.local%2Ffault%3Ddisk-slow",
            None,
        );
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (code == 200 && list["items"].as_array().is_some_and(|i| i.is_empty())).then_some(())
    });
}

#[test]
fn cert_expired_static_gets_401_and_the_node_goes_unknown() {
    let c = Cluster::get();
    settled(&c);
    let log = c.kubelet_log_len();
    let healer = Healer(&c);
    c.xtask(&["fault", "cert-expired-static", "--expires-in", "20s"]);
    let cert = c.dir.join("faults/kubelet-static-client.pem");
    let node_path = format!("/api/v1/nodes/{}", c.node);
    assert_eq!(c.status_as(&cert, &node_path), 200, "before expiry");
    let start = std::time::Instant::now();
    let line = wait_until(
        "the kubelet's requests rejected",
        Duration::from_secs(60),
        || {
            c.kubelet_log_since(log)
                .lines()
                .find(|l| l.contains("Unauthorized"))
                .map(str::to_string)
        },
    );
    eprintln!(
        "cert-expired-static: 401 after {:.0} s: {line}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        c.status_as(&cert, &node_path),
        401,
        "the expired certificate"
    );
    let took = c.wait_ready("Unknown", Duration::from_secs(60));
    eprintln!("Ready=Unknown {took:?} after the first 401");
    drop(healer);
    assert_eq!(c.ready_condition().0, "True");
}

#[test]
fn cert_rotation_stuck_leaves_a_pending_csr_and_an_expired_kubelet() {
    let c = Cluster::get();
    settled(&c);
    let log = c.kubelet_log_len();
    let healer = Healer(&c);
    c.xtask(&["fault", "cert-rotation-stuck", "--lifetime", "30s"]);
    let pending_csrs = || c.pending_node_csrs();
    // Rotation starts at 70-90% of the certificate's life (21-27 s).
    let start = std::time::Instant::now();
    let csrs = wait_until(
        "a pending CSR from the node",
        Duration::from_secs(45),
        || Some(pending_csrs()).filter(|v| !v.is_empty()),
    );
    eprintln!(
        "cert-rotation-stuck: CSR {csrs:?} Pending after {:.0} s",
        start.elapsed().as_secs_f64()
    );
    // After expiry the kubelet has no certificate to send: the API server sees an anonymous
    // client and refuses it; the lease stops and the node goes Unknown.
    wait_until(
        "anonymous kubelet requests",
        Duration::from_secs(60),
        || {
            c.kubelet_log_since(log)
                .contains("User \\\"system:anonymous\\\"")
                .then_some(())
        },
    );
    let took = c.wait_ready("Unknown", Duration::from_secs(60));
    eprintln!(
        "Ready=Unknown at {:.0} s",
        (start.elapsed()).as_secs_f64().max(took.as_secs_f64())
    );
    assert!(!pending_csrs().is_empty(), "the CSR did not stay Pending");
    if long_tests() {
        // Not at expiry: the kubelet exits 5 minutes after it last had a valid certificate
        // (cmd/kubelet/app/server.go passes exitAfter = 5m to certificate.UpdateTransport), and
        // only once its certificate manager thinks the server is healthy — not while it waits for
        // its Pending CSR (client-go certificateWaitTimeout, 15 minutes). README, "Local cluster".
        let restarts = wait_until("a kubelet restart", Duration::from_secs(20 * 60), || {
            let r = c.restarts("kubelet");
            (r >= 1).then_some(r)
        });
        assert!(c.kubelet_log_since(log).contains(
            "No valid client certificate is found and the server is responsive, exiting."
        ));
        eprintln!("kubelet exited and was restarted ({restarts} restarts)");
    }
    drop(healer);
    assert_eq!(c.ready_condition().0, "True");
    assert!(pending_csrs().is_empty(), "heal left pending CSRs");
}
