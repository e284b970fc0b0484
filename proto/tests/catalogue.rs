//! The log catalogue on real lines: captured from the local cluster's kubelet (v1.35.4) and
//! containerd (Debian 1.6.20) — at start-up, and under the harness faults runtime-frozen,
//! api-partition and cert-expired-static (`tests/logs/*.log`, each the log from the fault's
//! application on; README "Log evidence" says how they were captured).

use std::collections::BTreeMap;

use nodehealth_proto::logs::{Component, LogDigest, digest};

fn read(name: &str) -> String {
    let path = format!("{}/tests/logs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Digests a captured log as of its own capture time (the newest line), with no lower bound.
fn digest_of(component: Component, name: &str) -> LogDigest {
    let text = read(name);
    // The captures are from December 2026; "now" is the end of that day, so klog's year-less
    // headers resolve to 2026.
    let now = 1_798_761_599_000; // 2026-12-31T23:59:59Z
    digest(component, name, text.lines().map(|l| (None, l)), None, now)
}

fn counts(d: &LogDigest) -> BTreeMap<&str, u32> {
    d.matches.iter().map(|m| (m.id.as_str(), m.count)).collect()
}

#[test]
fn a_healthy_start_names_only_the_start() {
    // The start-up log holds look-alikes: cAdvisor dialling the default containerd and CRI-O
    // sockets, "PLEG is not healthy: pleg has yet to be successful".
    let d = digest_of(Component::Kubelet, "startup.kubelet.log");
    assert!(d.lines_scanned > 200);
    let c = counts(&d);
    assert!(c.contains_key("kubelet-starting"), "{c:?}");
    for id in c.keys() {
        assert!(
            ["kubelet-starting", "node-not-ready"].contains(id),
            "a healthy start matched {id}: {d:#?}"
        );
    }
    let r = digest_of(Component::Runtime, "startup.containerd.log");
    assert!(r.matches.is_empty(), "{r:#?}");
}

#[test]
fn a_frozen_runtime_reads_as_runtime_down_and_cri_deadlines() {
    let d = digest_of(Component::Kubelet, "runtime-frozen.kubelet.log");
    let c = counts(&d);
    assert!(
        c.get("cri-deadline-exceeded").is_some_and(|n| *n >= 5),
        "{c:?}"
    );
    assert!(c.contains_key("runtime-down"), "{c:?}");
    let deadline = d
        .matches
        .iter()
        .find(|m| m.id == "cri-deadline-exceeded")
        .unwrap();
    // First and last from the klog headers, in order.
    assert!(deadline.first_unix_ms.unwrap() <= deadline.last_unix_ms.unwrap());
    assert!(deadline.example.contains("DeadlineExceeded"));
    for id in c.keys() {
        assert!(
            ![
                "unauthorized",
                "x509-expired",
                "api-unreachable",
                "lease-update-failed"
            ]
            .contains(id),
            "a runtime fault matched {id}"
        );
    }
}

#[test]
fn a_cut_path_to_the_api_server_reads_as_unreachable_not_as_certificates() {
    let d = digest_of(Component::Kubelet, "api-partition.kubelet.log");
    let c = counts(&d);
    // The lease renewals time out: TLS handshake / client timeouts name the network path.
    assert!(c.get("api-unreachable").is_some_and(|n| *n >= 4), "{c:?}");
    for id in [
        "unauthorized",
        "x509-expired",
        "cri-deadline-exceeded",
        "runtime-down",
    ] {
        assert!(!c.contains_key(id), "a partition matched {id}: {c:?}");
    }
}

#[test]
fn an_expired_client_certificate_reads_as_unauthorized() {
    // The kubelet restarted with a certificate expiring 20 s later: a clean start, then 401s on
    // every node status patch, lease renewal and event.
    let d = digest_of(Component::Kubelet, "cert-expired-static.kubelet.log");
    let c = counts(&d);
    assert!(c.get("unauthorized").is_some_and(|n| *n >= 10), "{c:?}");
    assert!(c.contains_key("kubelet-starting"), "{c:?}");
    for id in [
        "api-unreachable",
        "cri-deadline-exceeded",
        "runtime-down",
        "x509-expired",
    ] {
        assert!(
            !c.contains_key(id),
            "an expired client certificate matched {id}: {c:?}"
        );
    }
    let u = d.matches.iter().find(|m| m.id == "unauthorized").unwrap();
    assert!(u.first_unix_ms < u.last_unix_ms);
}
