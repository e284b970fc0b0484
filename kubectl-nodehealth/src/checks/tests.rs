//! One or more tests per check, on hand-built snapshots (see `tests_support`).

use super::api_connectivity::*;
use super::certificates::*;
use super::collection::*;
use super::conditions::*;
use super::configuration::*;
use super::events::*;
use super::filesystems::*;
use super::heartbeat::*;
use super::kubelet::*;
use super::pleg::*;
use super::runtime::*;
use super::tests_support::*;
use super::*;
use crate::evidence::{
    Csr, CsrState, FailureKind, MetricsSnapshot, NodeEvent, SIGNER_CLIENT, SIGNER_SERVING,
};

/// The one finding with this id (typed, or as the report writes it).
fn only(findings: &[Finding], id: impl std::fmt::Display) -> &Finding {
    let id = id.to_string();
    let matching: Vec<&Finding> = findings.iter().filter(|f| f.id.to_string() == id).collect();
    assert_eq!(matching.len(), 1, "expected one {id} in {findings:#?}");
    matching[0]
}

#[test]
fn healthy_snapshot_has_no_problem() {
    let findings = run_all(&healthy_evidence());
    let problems: Vec<_> = findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // Every API-side domain was checked.
    for id in [
        FindingId::Ready,
        FindingId::Lease,
        FindingId::PlegDuration,
        FindingId::PlegInterval,
        FindingId::PlegLastSeen,
        FindingId::RuntimeListLatency,
        FindingId::RuntimeErrors,
        FindingId::CertClientTtl,
        FindingId::CertServerTtl,
        FindingId::KubeletAuth,
        FindingId::Csrs,
        FindingId::KubeletMemory,
        FindingId::KubeletGoroutines,
        FindingId::Healthz,
        FindingId::GoroutineDump,
        FindingId::RestLatency,
        FindingId::RestErrors,
        FindingId::ImageGc,
        FindingId::LogRotation,
        FindingId::Reserved,
        FindingId::Events,
    ] {
        assert!(findings.iter().any(|f| f.id == id), "no {id} finding");
    }
}

#[test]
fn ready_false_with_pleg_message_is_parsed() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "PLEG is not healthy: pleg was last seen active 3m5.2s ago; threshold is 3m0s",
    );
    let f = ready(&e);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(
        f[0].summary.contains("PLEG is not healthy"),
        "{}",
        f[0].summary
    );
    assert!(f[0].summary.contains("3m05s"), "{}", f[0].summary);
    assert_eq!(
        parse_ready_message(
            "[container runtime is down, PLEG is not healthy: pleg was last seen active 4m0s ago; threshold is 3m0s]"
        ),
        ReadyMessage::PlegUnhealthy {
            last_seen_seconds: Some(240.0)
        }
    );
    assert_eq!(
        parse_ready_message("PLEG is not healthy: pleg has yet to be successful"),
        ReadyMessage::PlegUnhealthy {
            last_seen_seconds: None
        }
    );
    assert_eq!(
        parse_ready_message("container runtime is down"),
        ReadyMessage::RuntimeDown
    );
    assert_eq!(
        parse_ready_message("Kubelet stopped posting node status."),
        ReadyMessage::StoppedPosting
    );
}

#[test]
fn ready_unknown_says_the_kubelet_stopped_reporting() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    );
    let f = ready(&e);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.starts_with("Ready=Unknown"));
}

#[test]
fn pressure_conditions() {
    let mut e = healthy_evidence();
    let node = data(&mut e.node);
    node.conditions[1] = condition(
        "DiskPressure",
        "True",
        "KubeletHasDiskPressure",
        "kubelet has disk pressure",
    );
    node.unschedulable = true;
    let f = pressure(&e);
    assert_eq!(only(&f, "node-pressure-disk").severity, Severity::Warning);
    assert_eq!(only(&f, "node-pressure-memory").severity, Severity::Ok);
    assert_eq!(only(&f, FindingId::Cordoned).severity, Severity::Info);
}

#[test]
fn lease_age_tiers() {
    let mut e = healthy_evidence();
    assert_eq!(lease(&e)[0].severity, Severity::Ok);
    set_lease_age(&mut e, 25.0);
    assert_eq!(lease(&e)[0].severity, Severity::Warning);
    set_lease_age(&mut e, 40.0);
    assert_eq!(lease(&e)[0].severity, Severity::Critical);
    e.lease = failed(FailureKind::NotFound, "GET lease", Some(404), "not found");
    assert_eq!(lease(&e)[0].severity, Severity::Warning);
}

/// A lease is aged at the moment it was read, not at the end of the collection: read 12 s after
/// its renewal and judged after a 30 s window, it is 12 s old (runtime-slow-list's 25 s window
/// made a healthy kubelet's lease look 43.8 s old, and the node partitioned). On both sides of
/// the 40 s duration, and a bundle without the read time ages it at the collection's end.
#[test]
fn a_lease_is_aged_when_it_was_read() {
    let mut e = healthy_evidence();
    e.collected_at = now();
    let l = data(&mut e.lease);
    l.renew_time = Some(ago(42.0));
    l.observed_at = Some(ago(30.0));
    assert_eq!(lease(&e)[0].severity, Severity::Ok, "{:?}", lease(&e));
    data(&mut e.lease).observed_at = Some(ago(1.0));
    assert_eq!(lease(&e)[0].severity, Severity::Critical);
    data(&mut e.lease).observed_at = None;
    assert_eq!(lease(&e)[0].severity, Severity::Critical);
}

/// The plugin runs on a laptop: its clock says nothing about the node. Behind a laptop clock 60 s
/// ahead of the API server's, a lease renewed 10 s ago (server time) is 10 s old, not 70; within
/// the Date header's resolution the local clock is kept. A renewal seen while the window lasted
/// is a heartbeat whatever the clocks (a node clock 100 s behind).
#[test]
fn a_lease_is_aged_on_the_api_servers_clock_and_a_renewal_seen_is_a_heartbeat() {
    let mut e = healthy_evidence();
    e.collected_at = now();
    let l = data(&mut e.lease);
    l.observed_at = Some(now());
    l.server_time = Some(ago(60.0));
    l.renew_time = Some(ago(70.0));
    let f = lease(&e);
    assert_eq!(f[0].severity, Severity::Ok, "{f:?}");
    assert!(
        f[0].evidence
            .iter()
            .any(|w| w.contains("ahead of the API server")),
        "{f:?}"
    );
    data(&mut e.lease).server_time = Some(ago(1.5));
    assert_eq!(lease(&e)[0].severity, Severity::Critical);
    data(&mut e.lease).server_time = None;
    assert_eq!(lease(&e)[0].severity, Severity::Critical);
    let l = data(&mut e.lease);
    l.renew_time = Some(ago(100.0));
    l.renew_time_before = Some(ago(110.0));
    let f = lease(&e);
    assert_eq!(f[0].severity, Severity::Ok, "{f:?}");
    assert!(f[0].summary.contains("while the window lasted"), "{f:?}");
    // Unchanged at both ends: judged by its age.
    data(&mut e.lease).renew_time_before = Some(ago(100.0));
    assert_eq!(lease(&e)[0].severity, Severity::Critical);
}

#[test]
fn many_stale_leases_point_away_from_this_node() {
    let mut e = healthy_evidence();
    *data(&mut e.node_leases) = LeaseOverviewFixture::stale(10, 6);
    assert_eq!(cluster_leases(&e)[0].severity, Severity::Warning);
    *data(&mut e.node_leases) = LeaseOverviewFixture::stale(100, 1);
    assert_eq!(cluster_leases(&e)[0].severity, Severity::Info);
    // Only this node's lease is stale: nothing to say about the cluster.
    set_lease_age(&mut e, 300.0);
    assert_eq!(cluster_leases(&e)[0].severity, Severity::Ok);
}

struct LeaseOverviewFixture;
impl LeaseOverviewFixture {
    fn stale(total: usize, stale: usize) -> crate::evidence::LeaseOverview {
        crate::evidence::LeaseOverview {
            total,
            stale,
            stale_examples: (0..stale.min(10)).map(|i| format!("n{i}")).collect(),
        }
    }
}

#[test]
fn recent_warning_events() {
    let mut e = healthy_evidence();
    *data(&mut e.events) = vec![
        NodeEvent {
            type_: "Warning".into(),
            reason: "ContainerGCFailed".into(),
            message: "rpc error: code = DeadlineExceeded".into(),
            count: 3,
            last_seen: Some(ago(120.0)),
            source: Some("kubelet".into()),
        },
        NodeEvent {
            type_: "Warning".into(),
            reason: "Rebooted".into(),
            message: "old".into(),
            count: 1,
            last_seen: Some(ago(86400.0)),
            source: Some("kubelet".into()),
        },
    ];
    let f = events(&e);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].summary.contains("ContainerGCFailed"));
    assert!(
        !f[0].summary.contains("Rebooted"),
        "day-old event is not recent"
    );
    let mut repeated = e.clone();
    let first = data(&mut repeated.events)[0].clone();
    data(&mut repeated.events).push(first);
    let f = events(&repeated);
    assert!(
        f[0].summary.contains("ContainerGCFailed x2"),
        "{}",
        f[0].summary
    );
    assert_eq!(f[0].evidence.len(), 1, "one example per reason");
    // A deprecation warning is information, not trouble.
    let ev = &mut data(&mut e.events)[0];
    ev.reason = "CgroupV1".into();
    ev.message = "cgroup v1 support is deprecated".into();
    assert_eq!(events(&e)[0].severity, Severity::Info);
}

#[test]
fn pleg_degraded_tier_p50_above_one_second() {
    let mut e = healthy_evidence();
    // 5 relists in the window in the fixture; add 20 slow ones (1-2.5 s bucket).
    observe(
        end(&mut e),
        "kubelet_pleg_relist_duration_seconds",
        &[],
        2.0,
        20.0,
    );
    let f = pleg_duration(&e);
    assert_eq!(f[0].severity, Severity::Warning, "{:#?}", f);
    assert!(f[0].summary.contains("p50 above 1 s"));
}

#[test]
fn one_slow_relist_in_a_short_window_is_not_yet_degraded() {
    let mut e = healthy_evidence();
    // A window with a single relist (2 s) on a kubelet whose relists are fast since start.
    e.metrics_end = e.metrics_start.clone();
    data(&mut e.metrics_end).scraped_at = Some(now());
    observe(
        end(&mut e),
        "kubelet_pleg_relist_duration_seconds",
        &[],
        2.0,
        1.0,
    );
    observe(
        end(&mut e),
        "kubelet_pleg_relist_interval_seconds",
        &[],
        4.0,
        1.0,
    );
    let f = pleg_duration(&e);
    assert_eq!(f[0].severity, Severity::Info, "{:#?}", f);
    assert!(f[0].summary.contains("too few"));
    // Too few to judge the node, enough to give the probe pod more time to start.
    assert!(crate::relists::slows_pod_starts(&e));
    assert_eq!(pleg_interval(&e)[0].severity, Severity::Info);
    // Slow since start too (added to both scrapes: the window still holds one relist): degraded.
    for m in [&mut e.metrics_start, &mut e.metrics_end] {
        observe(
            data(m),
            "kubelet_pleg_relist_duration_seconds",
            &[],
            2.0,
            20000.0,
        );
    }
    let f = pleg_duration(&e);
    assert!(f[0].evidence[0].contains("1 observation,"), "{:#?}", f);
    assert_eq!(f[0].severity, Severity::Warning);
}

#[test]
fn pleg_p99_at_the_top_bucket_is_critical() {
    let mut e = healthy_evidence();
    observe(
        end(&mut e),
        "kubelet_pleg_relist_duration_seconds",
        &[],
        30.0,
        1.0,
    );
    let f = pleg_duration(&e);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.contains("> 10 s"));
}

#[test]
fn no_relist_in_the_window_is_a_warning() {
    let mut e = healthy_evidence();
    e.metrics_end = e.metrics_start.clone();
    data(&mut e.metrics_end).scraped_at = Some(now());
    let f = pleg_duration(&e);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].summary.contains("no relist completed"));
}

#[test]
fn pleg_counters_reset_uses_the_end_scrape() {
    let mut e = healthy_evidence();
    // Kubelet restarted between the scrapes: the end histogram has fewer observations.
    let h = end(&mut e)
        .histograms
        .get_mut("kubelet_pleg_relist_duration_seconds")
        .unwrap();
    for b in &mut h[0].buckets {
        b.cumulative = b.cumulative.min(3.0);
    }
    h[0].count = 3.0;
    h[0].sum = 0.04;
    let f = pleg_duration(&e);
    assert_eq!(f[0].severity, Severity::Ok);
    assert!(
        f[0].evidence.iter().any(|l| l.contains("counters reset")),
        "{:#?}",
        f[0].evidence
    );
}

#[test]
fn pleg_interval_degraded() {
    let mut e = healthy_evidence();
    observe(
        end(&mut e),
        "kubelet_pleg_relist_interval_seconds",
        &[],
        4.0,
        20.0,
    );
    let f = pleg_interval(&e);
    assert_eq!(f[0].severity, Severity::Warning);
    let healthy = pleg_interval(&healthy_evidence());
    assert_eq!(healthy[0].severity, Severity::Ok);
}

#[test]
fn pleg_last_seen_tiers() {
    let mut e = healthy_evidence();
    assert_eq!(pleg_last_seen(&e)[0].severity, Severity::Ok);
    let ts = |age: f64| now().as_second() as f64 - age;
    set_scalar(end(&mut e), "kubelet_pleg_last_seen_seconds", &[], ts(90.0));
    assert_eq!(pleg_last_seen(&e)[0].severity, Severity::Warning);
    set_scalar(
        end(&mut e),
        "kubelet_pleg_last_seen_seconds",
        &[],
        ts(180.0),
    );
    assert_eq!(pleg_last_seen(&e)[0].severity, Severity::Critical);
    end(&mut e).scalars.remove("kubelet_pleg_last_seen_seconds");
    assert_eq!(
        pleg_last_seen(&e)[0].severity,
        Severity::Info,
        "missing metric on another version"
    );
}

#[test]
fn pleg_last_seen_that_advanced_in_the_window_is_not_stuck_whatever_the_clocks() {
    let mut e = healthy_evidence();
    // The node's clock is 10 minutes behind: both gauges read old on our clock, but the relist
    // timestamp moved between the scrapes.
    let node_now = now().as_second() as f64 - 600.0;
    set_scalar(
        data(&mut e.metrics_start),
        "kubelet_pleg_last_seen_seconds",
        &[],
        node_now - 5.0,
    );
    set_scalar(end(&mut e), "kubelet_pleg_last_seen_seconds", &[], node_now);
    let f = pleg_last_seen(&e);
    assert_eq!(f[0].severity, Severity::Ok, "{:#?}", f);
    assert!(f[0].evidence.iter().any(|l| l.contains("behind")));
    // Unchanged across the window and old: stuck.
    set_scalar(
        data(&mut e.metrics_start),
        "kubelet_pleg_last_seen_seconds",
        &[],
        node_now,
    );
    assert_eq!(pleg_last_seen(&e)[0].severity, Severity::Critical);
}

#[test]
fn pleg_never_successful_since_start() {
    let mut e = healthy_evidence();
    set_scalar(end(&mut e), "kubelet_pleg_last_seen_seconds", &[], 0.0);
    let f = pleg_last_seen(&e);
    assert_eq!(
        f[0].severity,
        Severity::Critical,
        "the fixture kubelet started 2h ago"
    );
    assert!(
        f[0].summary.contains("no relist has succeeded"),
        "{}",
        f[0].summary
    );
    set_scalar(
        end(&mut e),
        "process_start_time_seconds",
        &[],
        now().as_second() as f64 - 30.0,
    );
    assert_eq!(pleg_last_seen(&e)[0].severity, Severity::Warning);
}

#[test]
fn pleg_discards_in_window() {
    let mut e = healthy_evidence();
    assert!(pleg_discards(&e).is_empty());
    set_scalar(end(&mut e), "kubelet_pleg_discard_events", &[], 7.0);
    assert_eq!(pleg_discards(&e)[0].severity, Severity::Warning);
}

#[test]
fn runtime_list_calls_above_the_3s_bucket() {
    let mut e = healthy_evidence();
    let name = "kubelet_runtime_operations_duration_seconds";
    observe(
        end(&mut e),
        name,
        &[("operation_type", "list_containers")],
        5.0,
        1.0,
    );
    let f = runtime_list_latency(&e);
    assert_eq!(f[0].severity, Severity::Warning, "{:#?}", f);
    // A slow runtime is not restarted: the fix is to find why, with its own unit's log.
    let fix = f[0].remediation.as_deref().unwrap();
    assert!(fix.contains("journalctl -u containerd"), "{fix}");
    assert!(!fix.contains("systemctl restart"), "{fix}");
    observe(
        end(&mut e),
        name,
        &[("operation_type", "list_podsandbox")],
        20.0,
        5.0,
    );
    assert_eq!(runtime_list_latency(&e)[0].severity, Severity::Critical);
}

#[test]
fn runtime_errors_rising() {
    let mut e = healthy_evidence();
    assert_eq!(
        runtime_errors(&e)[0].severity,
        Severity::Ok,
        "errors since start only"
    );
    set_scalar(
        end(&mut e),
        "kubelet_runtime_operations_errors_total",
        &[("operation_type", "list_podsandbox")],
        4.0,
    );
    let f = runtime_errors(&e);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].summary.contains("list_podsandbox +4"));
}

#[test]
fn certificate_ttl_tiers_and_inf() {
    let mut e = healthy_evidence();
    let name = "kubelet_certificate_manager_client_ttl_seconds";
    assert_eq!(certificate_ttl(&e, true)[0].severity, Severity::Ok);
    set_scalar(end(&mut e), name, &[], 3.0 * 86400.0);
    assert_eq!(certificate_ttl(&e, true)[0].severity, Severity::Warning);
    set_scalar(end(&mut e), name, &[], 3600.0);
    assert_eq!(certificate_ttl(&e, true)[0].severity, Severity::Critical);
    set_scalar(end(&mut e), name, &[], -60.0);
    assert!(certificate_ttl(&e, true)[0].summary.contains("EXPIRED"));
    set_scalar(end(&mut e), name, &[], f64::INFINITY);
    assert_eq!(certificate_ttl(&e, true)[0].severity, Severity::Info);
    set_scalar(
        end(&mut e),
        "kubelet_certificate_manager_server_ttl_seconds",
        &[],
        100.0,
    );
    assert_eq!(certificate_ttl(&e, false)[0].severity, Severity::Critical);
    end(&mut e).scalars.remove(name);
    assert_eq!(certificate_ttl(&e, true)[0].severity, Severity::Info);
    end(&mut e)
        .scalars
        .remove("kubelet_certificate_manager_server_ttl_seconds");
    assert!(
        certificate_ttl(&e, false)[0]
            .summary
            .contains("serverTLSBootstrap off")
    );
}

#[test]
fn certificate_renew_errors_in_window() {
    let mut e = healthy_evidence();
    assert_eq!(certificate_renew_errors(&e, true)[0].severity, Severity::Ok);
    set_scalar(
        end(&mut e),
        "kubelet_certificate_manager_client_expiration_renew_errors",
        &[],
        2.0,
    );
    assert_eq!(
        certificate_renew_errors(&e, true)[0].severity,
        Severity::Warning
    );
    set_scalar(
        end(&mut e),
        "kubelet_server_expiration_renew_errors",
        &[],
        1.0,
    );
    assert_eq!(
        certificate_renew_errors(&e, false)[0].severity,
        Severity::Warning
    );
}

#[test]
fn kubelet_401_is_the_certificate_signal() {
    let mut e = healthy_evidence();
    // The fixture has 4 old 403s: historical only.
    assert_eq!(kubelet_auth_errors(&e)[0].severity, Severity::Info);
    let labels = [
        ("code", "401"),
        ("host", "10.0.0.1:6443"),
        ("method", "PATCH"),
    ];
    set_scalar(end(&mut e), "rest_client_requests_total", &labels, 12.0);
    let f = kubelet_auth_errors(&e);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.contains("12"));
}

/// A few 403s follow any pod deletion (the status manager reads the gone pod; the Node authorizer
/// refuses it): routine while the kubelet's identity is accepted — its writes succeed in the
/// window, or its Lease was renewed within the renewal interval and margin (10 + 5 s). A refused
/// identity (everything 403, the Lease going stale) is the certificate signal.
#[test]
fn kubelet_403_is_a_problem_only_when_its_identity_is_refused() {
    let mut e = healthy_evidence();
    let get403 = [("code", "403"), ("host", "h"), ("method", "GET")];
    set_scalar(end(&mut e), "rest_client_requests_total", &get403, 8.0);
    // The fixture's window has successful PATCH/PUT writes.
    let f = kubelet_auth_errors(&e);
    assert_eq!(f[0].severity, Severity::Info, "{}", f[0].summary);
    assert!(
        f[0].summary.contains("writes succeeded"),
        "{}",
        f[0].summary
    );
    // No write in the window: the Lease decides, on both sides of 15 s.
    for (method, code) in [("PATCH", "200"), ("PUT", "200"), ("POST", "201")] {
        let labels = [
            ("code", code),
            ("host", "10.0.0.1:6443"),
            ("method", method),
        ];
        let before = data(&mut e.metrics_start)
            .sum_where("rest_client_requests_total", |l| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap();
        set_scalar(end(&mut e), "rest_client_requests_total", &labels, before);
    }
    set_lease_age(&mut e, 14.0);
    let f = kubelet_auth_errors(&e);
    assert_eq!(f[0].severity, Severity::Info, "{}", f[0].summary);
    assert!(
        f[0].summary.contains("Lease was renewed"),
        "{}",
        f[0].summary
    );
    set_lease_age(&mut e, 16.0);
    let f = kubelet_auth_errors(&e);
    assert_eq!(f[0].severity, Severity::Warning, "{}", f[0].summary);
    // Its writes refused too (an expired certificate with rotation on: anonymous, 403 on all).
    set_lease_age(&mut e, 3.0);
    let put403 = [("code", "403"), ("host", "h"), ("method", "PUT")];
    set_scalar(end(&mut e), "rest_client_requests_total", &put403, 2.0);
    e.lease = crate::evidence::Step::Skipped {
        reason: "not read".into(),
    };
    assert_eq!(kubelet_auth_errors(&e)[0].severity, Severity::Warning);
}

#[test]
fn pending_csrs_name_the_command() {
    let mut e = healthy_evidence();
    let csr = |name: &str, signer: &str| Csr {
        name: name.into(),
        signer_name: signer.into(),
        username: "system:node:node-a".into(),
        created: Some(ago(600.0)),
        state: CsrState::Pending,
    };
    data(&mut e.csrs).push(csr("csr-client1", SIGNER_CLIENT));
    data(&mut e.csrs).push(csr("csr-serving1", SIGNER_SERVING));
    let f = csrs(&e);
    let client = only(&f, FindingId::CsrClientPending);
    assert_eq!(
        client.remediation.as_deref(),
        Some("kubectl certificate approve csr-client1")
    );
    let serving = only(&f, FindingId::CsrServingPending);
    assert!(
        serving
            .remediation
            .as_deref()
            .unwrap()
            .contains("openssl req -noout -text")
    );
    assert!(serving.summary.contains("never auto-approved"));
    assert!(f.iter().all(|x| x.id != FindingId::Csrs));
}

#[test]
fn pending_csrs_with_stale_approver() {
    let mut e = healthy_evidence();
    assert!(
        csr_approver(&e).is_empty(),
        "no pending CSR: nothing to say"
    );
    data(&mut e.csrs)[0].state = CsrState::Pending;
    assert_eq!(csr_approver(&e)[0].severity, Severity::Info);
    data(&mut e.controller_manager_lease).renew_time = Some(ago(600.0));
    let f = csr_approver(&e);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.contains("approver is down"));
}

#[test]
fn kubelet_memory_absolute_and_per_pod() {
    let mut e = healthy_evidence();
    assert_eq!(kubelet_memory(&e)[0].severity, Severity::Ok);
    set_scalar(
        end(&mut e),
        "process_resident_memory_bytes",
        &[],
        900.0 * 1024.0 * 1024.0,
    );
    let f = kubelet_memory(&e);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].evidence[0].contains("per running pod (12 pods)"));
    set_scalar(end(&mut e), "kubelet_running_pods", &[], 150.0);
    assert_eq!(
        kubelet_memory(&e)[0].severity,
        Severity::Info,
        "explained by density"
    );
}

#[test]
fn kubelet_goroutines_absolute_and_per_pod() {
    let mut e = healthy_evidence();
    assert_eq!(kubelet_goroutines(&e)[0].severity, Severity::Ok);
    set_scalar(end(&mut e), "go_goroutines", &[], 2400.0);
    assert_eq!(kubelet_goroutines(&e)[0].severity, Severity::Warning);
    set_scalar(end(&mut e), "kubelet_running_pods", &[], 300.0);
    assert_eq!(kubelet_goroutines(&e)[0].severity, Severity::Info);
}

#[test]
fn healthz_failing_syncloop_and_no_pleg_check_note() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "PLEG is not healthy: pleg was last seen active 3m1s ago; threshold is 3m0s",
    );
    let f = healthz(&e);
    assert_eq!(f[0].severity, Severity::Ok);
    assert!(
        f[0].evidence
            .iter()
            .any(|l| l.contains("expected during a PLEG stall"))
    );
    e.healthz = crate::evidence::Step::Collected {
        data: crate::evidence::parse_healthz(
            500,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\n",
        ),
    };
    let f = healthz(&e);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.contains("syncloop"));
}

#[test]
fn goroutine_dump_missing_handler() {
    let mut e = healthy_evidence();
    assert_eq!(goroutine_dump(&e)[0].severity, Severity::Ok);
    e.goroutine_dump = failed(
        FailureKind::NotFound,
        "GET pprof",
        Some(404),
        "404 page not found",
    );
    let f = goroutine_dump(&e);
    assert_eq!(f[0].severity, Severity::Info);
    assert!(f[0].summary.contains("profiling handler is disabled"));
    assert!(
        collection_failures(&e).is_empty(),
        "a disabled handler is not a collection failure"
    );
}

#[test]
fn rest_client_slow_requests() {
    let mut e = healthy_evidence();
    assert_eq!(rest_client_latency(&e)[0].severity, Severity::Ok);
    let name = "rest_client_request_duration_seconds";
    observe(end(&mut e), name, &[("verb", "PUT")], 12.0, 5.0);
    let f = rest_client_latency(&e);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].summary.contains("> 8 s"), "{}", f[0].summary);
}

#[test]
fn rest_client_5xx_and_unanswered() {
    let mut e = healthy_evidence();
    assert_eq!(rest_client_errors(&e)[0].severity, Severity::Ok);
    set_scalar(
        end(&mut e),
        "rest_client_requests_total",
        &[("code", "503"), ("host", "h"), ("method", "PUT")],
        3.0,
    );
    assert!(rest_client_errors(&e)[0].summary.contains("5xx"));
    set_scalar(
        end(&mut e),
        "rest_client_requests_total",
        &[("code", "<error>"), ("host", "h"), ("method", "PUT")],
        9.0,
    );
    assert!(rest_client_errors(&e)[0].summary.contains("no answer"));
}

#[test]
fn filesystem_bytes_and_inodes() {
    let mut e = healthy_evidence();
    let f = filesystems(&e);
    assert_eq!(f.len(), 1, "imagefs equal to nodefs is not repeated");
    assert_eq!(f[0].severity, Severity::Ok);
    let s = data(&mut e.stats_summary);
    s.node_fs.as_mut().unwrap().inodes_used = Some(4_500_000);
    s.image_fs.as_mut().unwrap().used_bytes = Some(90_000_000_000);
    let f = filesystems(&e);
    assert_eq!(
        only(&f, "filesystem-usage-nodefs").severity,
        Severity::Warning
    );
    assert_eq!(
        only(&f, "filesystem-usage-imagefs").severity,
        Severity::Critical
    );
}

#[test]
fn image_gc_after_eviction() {
    let mut e = healthy_evidence();
    assert_eq!(image_gc(&e)[0].severity, Severity::Ok);
    let c = data(&mut e.configz);
    c.image_gc_high_threshold_percent = Some(95);
    assert_eq!(image_gc(&e)[0].severity, Severity::Warning);
    let c = data(&mut e.configz);
    c.image_gc_high_threshold_percent = Some(85);
    c.eviction_hard
        .insert("imagefs.available".into(), "20%".into());
    let f = image_gc(&e);
    assert!(f[0].summary.contains("after eviction"), "{}", f[0].summary);
}

#[test]
fn log_rotation_budget() {
    let mut e = healthy_evidence();
    assert_eq!(log_rotation(&e)[0].severity, Severity::Ok);
    let c = data(&mut e.configz);
    c.container_log_max_size = Some("500Mi".into());
    c.container_log_max_files = Some(5);
    assert_eq!(log_rotation(&e)[0].severity, Severity::Warning);
}

#[test]
fn no_reservations() {
    let mut e = healthy_evidence();
    assert_eq!(reserved(&e)[0].severity, Severity::Ok);
    let c = data(&mut e.configz);
    c.kube_reserved.clear();
    c.system_reserved.clear();
    assert_eq!(reserved(&e)[0].severity, Severity::Warning);
}

#[test]
fn rbac_denials_name_the_permission_and_others_still_run() {
    let mut e = healthy_evidence();
    e.healthz = failed(
        FailureKind::Forbidden,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        Some(403),
        "forbidden",
    );
    e.metrics_start = failed(
        FailureKind::Forbidden,
        "GET /api/v1/nodes/node-a/proxy/metrics",
        Some(403),
        "forbidden",
    );
    e.metrics_end = failed(
        FailureKind::Forbidden,
        "GET /api/v1/nodes/node-a/proxy/metrics",
        Some(403),
        "forbidden",
    );
    let f = run_all(&e);
    let access: Vec<_> = f
        .iter()
        .filter(|x| matches!(x.id, FindingId::Access(_)))
        .collect();
    assert_eq!(
        access.len(),
        1,
        "one finding per missing permission: {access:#?}"
    );
    assert_eq!(access[0].severity, Severity::Unknown);
    assert!(access[0].summary.contains("needs get nodes/proxy"));
    assert!(access[0].summary.contains("healthz"));
    assert_eq!(
        only(&f, FindingId::Ready).severity,
        Severity::Ok,
        "the rest still ran"
    );
    assert_eq!(only(&f, FindingId::Lease).severity, Severity::Ok);
}

#[test]
fn proxy_503_means_the_api_server_cannot_reach_the_kubelet() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    );
    let msg = "error trying to reach service: dial tcp 10.0.0.5:10250: connect: connection refused";
    e.healthz = failed(
        FailureKind::KubeletUnreachable,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        Some(503),
        msg,
    );
    e.metrics_end = failed(
        FailureKind::KubeletUnreachable,
        "GET /api/v1/nodes/node-a/proxy/metrics",
        Some(503),
        msg,
    );
    let f = collection_failures(&e);
    let u = only(&f, FindingId::KubeletUnreachable);
    assert_eq!(u.severity, Severity::Critical);
    assert!(u.summary.contains("connection refused"));
    assert_eq!(
        dial_error("dial tcp 10.0.0.5:10250: i/o timeout"),
        DialError::Timeout
    );
    assert_eq!(
        dial_error("dial tcp: connect: no route to host"),
        DialError::NoRoute
    );
    assert_eq!(
        dial_error("error trying to reach service: net/http: TLS handshake timeout"),
        DialError::NoHandshake
    );
    assert_eq!(
        dial_error("error trying to reach service: net/http: timeout awaiting response headers"),
        DialError::NoResponse
    );
    assert_eq!(
        dial_error("read tcp 10.0.0.1:443->10.0.0.5:10250: read: connection reset by peer"),
        DialError::NoResponse
    );
}

#[test]
fn malformed_metrics_are_reported() {
    let mut e = healthy_evidence();
    end(&mut e).malformed_lines = 2;
    end(&mut e).malformed_examples = vec!["line 7: value is not a number: x y".into()];
    let f = collection_failures(&e);
    assert_eq!(
        only(&f, FindingId::MetricsMalformed).severity,
        Severity::Warning
    );
}

#[test]
fn metrics_missing_on_another_kubelet_version_are_info_not_errors() {
    let mut e = healthy_evidence();
    for m in [&mut e.metrics_start, &mut e.metrics_end] {
        let m = data(m);
        m.histograms.clear();
        m.scalars.clear();
    }
    let f = run_all(&e);
    for id in [
        FindingId::PlegDuration,
        FindingId::PlegInterval,
        FindingId::PlegLastSeen,
        FindingId::RuntimeListLatency,
        FindingId::RestLatency,
        FindingId::KubeletMemory,
    ] {
        assert_eq!(only(&f, &id).severity, Severity::Info, "{id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Real captures from the local cluster's kubelet v1.35.4 (fixtures/metrics/README.md).

const CAPTURED_START: &str =
    include_str!("../../fixtures/metrics/kubelet-v1.35.4-captured-start.prom");
const CAPTURED_END: &str = include_str!("../../fixtures/metrics/kubelet-v1.35.4-captured-end.prom");

fn captured_evidence() -> Evidence {
    let end_scrape = crate::metrics::parse(CAPTURED_END);
    let start_scrape = crate::metrics::parse(CAPTURED_START);
    // The scrape time is not in the text; the PLEG gauge (whole seconds) bounds it from below.
    let last_seen = end_scrape
        .series("kubelet_pleg_last_seen_seconds")
        .next()
        .unwrap()
        .value;
    let end_at = jiff::Timestamp::from_second(last_seen as i64 + 1).unwrap();
    let start_at = end_at - jiff::SignedDuration::from_secs(5);
    let mut e = healthy_evidence();
    e.collected_at = end_at;
    e.metrics_start = crate::evidence::Step::Collected {
        data: MetricsSnapshot::from_scrape(&start_scrape, CAPTURED_START.len(), start_at),
    };
    e.metrics_end = crate::evidence::Step::Collected {
        data: MetricsSnapshot::from_scrape(&end_scrape, CAPTURED_END.len(), end_at),
    };
    data(&mut e.lease).renew_time = Some(end_at - jiff::SignedDuration::from_secs(3));
    e
}

#[test]
fn captured_kubelet_metrics_parse_completely() {
    for text in [CAPTURED_START, CAPTURED_END] {
        let scrape = crate::metrics::parse(text);
        assert_eq!(scrape.malformed_count, 0, "{:?}", scrape.malformed);
        assert!(scrape.samples.len() > 1000, "{}", scrape.samples.len());
        let snapshot = MetricsSnapshot::from_scrape(&scrape, text.len(), now());
        let absent: Vec<&str> = crate::evidence::SCALAR_FAMILIES
            .iter()
            .chain(crate::evidence::HISTOGRAM_FAMILIES)
            .copied()
            .filter(|n| !snapshot.scalars.contains_key(*n) && !snapshot.histograms.contains_key(*n))
            .collect();
        // Without serverTLSBootstrap the kubelet does not manage its serving certificate.
        assert_eq!(
            absent,
            vec![
                "kubelet_certificate_manager_server_ttl_seconds",
                "kubelet_server_expiration_renew_errors"
            ]
        );
        // The real runtime-operation buckets are the ones the thresholds name.
        let list = snapshot
            .histogram_where("kubelet_runtime_operations_duration_seconds", |l| {
                l.get("operation_type").map(String::as_str) == Some("list_podsandbox")
            })
            .unwrap();
        assert!(list.count_above(RUNTIME_BUCKET_3S).is_some());
        assert!(list.count_above(RUNTIME_BUCKET_7S).is_some());
        assert_eq!(list.buckets.len(), 14);
    }
}

#[test]
fn captured_kubelet_metrics_through_the_checks() {
    let e = captured_evidence();
    let findings = run_all(&e);
    let pleg = only(&findings, FindingId::PlegDuration);
    assert!(
        pleg.evidence
            .iter()
            .any(|l| l.contains("2 relists") && l.contains("> 10 s")),
        "{:#?}",
        pleg.evidence
    );
    let runtime = only(&findings, FindingId::RuntimeListLatency);
    assert!(
        runtime
            .evidence
            .iter()
            .any(|l| l.contains("since kubelet start") && l.contains("> 3.05 s")),
        "{:#?}",
        runtime.evidence
    );
    assert_eq!(
        only(&findings, FindingId::CertClientTtl).severity,
        Severity::Ok
    );
    assert_eq!(
        only(&findings, FindingId::CertServerTtl).severity,
        Severity::Info
    );
    // The capture's window caught the injected stall: one of five relists above 10 s, slow
    // list_podsandbox calls and rising runtime errors.
    assert_eq!(pleg.severity, Severity::Critical);
    assert_eq!(runtime.severity, Severity::Critical);
    let errors = only(&findings, FindingId::RuntimeErrors);
    assert!(
        errors.summary.contains("list_podsandbox +2"),
        "{}",
        errors.summary
    );
    let auth = only(&findings, FindingId::KubeletAuth);
    assert!(!auth.evidence[0].contains("-0"), "{}", auth.evidence[0]);
    let verdict = crate::verdict::judge(&assess_with(&e, findings.clone()));
    let top = &verdict.causes[0];
    assert_eq!(
        top.id,
        crate::verdict::CauseId::RuntimeUnresponsive,
        "{:#?}",
        verdict.causes
    );
    assert!(
        verdict
            .causes
            .iter()
            .any(|c| c.id == crate::verdict::CauseId::PlegSlow)
    );
}

#[test]
fn slow_pleg_widens_the_probe_pod_bound() {
    let mut e = healthy_evidence();
    assert!(!crate::relists::slows_pod_starts(&e));
    observe(
        end(&mut e),
        "kubelet_pleg_relist_duration_seconds",
        &[],
        2.0,
        20.0,
    );
    assert!(crate::relists::slows_pod_starts(&e));
}

/// disk-slow from the API side: the list calls read and stay fast, the writes wait on the disk.
#[test]
fn runtime_writes_over_a_second_are_slow_writes_but_one_slow_call_is_not() {
    let name = "kubelet_runtime_operations_duration_seconds";
    let mut e = healthy_evidence();
    observe(
        end(&mut e),
        name,
        &[("operation_type", "create_container")],
        2.0,
        4.0,
    );
    let f = runtime_write_latency(&e);
    assert_eq!(f[0].severity, Severity::Warning, "{f:#?}");
    assert!(f[0].evidence[0].starts_with("create_container"), "{f:#?}");
    assert_eq!(runtime_list_latency(&e)[0].severity, Severity::Ok);
    let mut e = healthy_evidence();
    observe(
        end(&mut e),
        name,
        &[("operation_type", "create_container")],
        2.0,
        1.0,
    );
    let f = runtime_write_latency(&e);
    assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:#?}");
}

/// Round 1 called the first seconds of a runtime freeze kubelet starvation: /metrics and
/// /stats/summary hung (their collectors ask the runtime) while healthz and configz answered.
#[test]
fn endpoints_that_ask_the_runtime_hanging_while_healthz_answers_is_the_runtime() {
    let mut e = healthy_evidence();
    for step in [&mut e.metrics_start, &mut e.metrics_end] {
        *step = failed(
            FailureKind::Timeout,
            "GET /api/v1/nodes/node-a/proxy/metrics",
            None,
            "no answer within 10s",
        );
    }
    let f = collection_failures(&e);
    assert!(
        f.iter().any(|f| f.id == FindingId::KubeletWaitsOnRuntime),
        "{f:#?}"
    );
    assert!(!f.iter().any(|f| f.id == FindingId::KubeletSlow), "{f:#?}");
    // healthz hanging too: the kubelet itself does not answer.
    e.healthz = failed(
        FailureKind::Timeout,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        None,
        "no answer within 10s",
    );
    let f = collection_failures(&e);
    assert!(f.iter().any(|f| f.id == FindingId::KubeletSlow), "{f:#?}");
    assert!(
        !f.iter().any(|f| f.id == FindingId::KubeletWaitsOnRuntime),
        "{f:#?}"
    );
}
