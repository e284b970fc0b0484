//! The verdict on hand-built snapshots: the guide's decision tree.

use super::*;
use crate::checks::FindingId;
use crate::checks::tests_support::*;
use crate::evidence::{Csr, CsrState, Evidence, FailureKind, Layer, SIGNER_CLIENT, Step};

fn verdict(e: &Evidence) -> Verdict {
    crate::diagnose(e.clone()).verdict
}

fn top(v: &Verdict) -> &Cause {
    v.causes.first().expect("a cause")
}

fn has(v: &Verdict, id: CauseId) -> Option<&Cause> {
    v.causes.iter().find(|c| c.id == id)
}

fn unreachable(e: &mut Evidence, message: &str) {
    for step in [&mut e.metrics_start, &mut e.metrics_end] {
        *step = failed(
            FailureKind::KubeletUnreachable,
            "GET /api/v1/nodes/node-a/proxy/metrics",
            Some(503),
            message,
        );
    }
    e.healthz = failed(
        FailureKind::KubeletUnreachable,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        Some(503),
        message,
    );
    e.configz = failed(
        FailureKind::KubeletUnreachable,
        "GET /api/v1/nodes/node-a/proxy/configz",
        Some(503),
        message,
    );
    e.stats_summary = failed(
        FailureKind::KubeletUnreachable,
        "GET /api/v1/nodes/node-a/proxy/stats/summary",
        Some(503),
        message,
    );
    e.goroutine_dump = failed(
        FailureKind::KubeletUnreachable,
        "GET /api/v1/nodes/node-a/proxy/debug/pprof/goroutine?debug=2",
        Some(503),
        message,
    );
}

fn node_unknown(e: &mut Evidence) {
    set_ready(
        e,
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    );
    set_lease_age(e, 300.0);
}

fn no_reboot(v: &Verdict) {
    for c in &v.causes {
        assert!(
            !c.fix.to_lowercase().contains("reboot"),
            "{:?} fix suggests a reboot: {}",
            c.id,
            c.fix
        );
    }
}

#[test]
fn healthy_node() {
    let e = healthy_evidence();
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::Healthy);
    assert_eq!(top(&v).confidence, Confidence::High);
    assert_eq!(v.layers, vec![Layer::Api]);
    assert!(v.limitations[0].contains("API-side only"));
    assert_eq!(crate::diagnose(e).exit_code(), crate::exit::HEALTHY);
}

#[test]
fn ready_false_pleg_is_pleg_slow_with_unknown_attribution() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "PLEG is not healthy: pleg was last seen active 3m5.2s ago; threshold is 3m0s",
    );
    set_scalar(
        end(&mut e),
        "kubelet_pleg_last_seen_seconds",
        &[],
        now().as_second() as f64 - 185.0,
    );
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::PlegSlow);
    assert_eq!(c.confidence, Confidence::High);
    assert_eq!(c.attribution, Some(Attribution::Unknown));
    assert!(c.evidence.iter().any(|l| l.contains("PLEG is not healthy")));
    assert!(c.avoid.contains("do not reboot"));
    // A stuck relist also makes a hung runtime call plausible.
    assert!(has(&v, CauseId::RuntimeUnresponsive).is_some());
    assert!(has(&v, CauseId::Healthy).is_none());
    no_reboot(&v);
    assert_eq!(crate::diagnose(e).exit_code(), crate::exit::PROBLEMS);
}

#[test]
fn stuck_relist_with_rising_list_errors_is_the_runtime() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "PLEG is not healthy: pleg was last seen active 4m0s ago; threshold is 3m0s",
    );
    set_scalar(
        end(&mut e),
        "kubelet_pleg_last_seen_seconds",
        &[],
        now().as_second() as f64 - 240.0,
    );
    set_scalar(
        end(&mut e),
        "kubelet_runtime_operations_errors_total",
        &[("operation_type", "list_podsandbox")],
        3.0,
    );
    let v = verdict(&e);
    let runtime = has(&v, CauseId::RuntimeUnresponsive).unwrap();
    assert_eq!(runtime.confidence, Confidence::High);
    assert!(runtime.fix.contains("systemctl restart containerd"));
    assert!(runtime.avoid.contains("shim"));
}

#[test]
fn degraded_relists_on_a_ready_node_ask_for_attribution() {
    let mut e = healthy_evidence();
    observe(
        end(&mut e),
        "kubelet_pleg_relist_duration_seconds",
        &[],
        2.0,
        20.0,
    );
    let v = verdict(&e);
    let pleg = top(&v);
    assert_eq!(
        pleg.id,
        CauseId::PlegSlow,
        "degraded relists outrank 'healthy'"
    );
    assert_eq!(pleg.confidence, Confidence::Medium);
    assert!(has(&v, CauseId::Healthy).is_some_and(|h| h.confidence == Confidence::Low));
    assert_eq!(pleg.attribution, Some(Attribution::Unknown));
    // The kubelet's own runtime list calls are fast: the seed's "inside the kubelet" branch.
    assert!(
        pleg.evidence
            .iter()
            .any(|l| l.contains("inside the kubelet")),
        "{:#?}",
        pleg.evidence
    );
    assert_eq!(crate::diagnose(e).exit_code(), crate::exit::PROBLEMS);
}

#[test]
fn unknown_with_401_is_the_certificate() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    set_scalar(
        end(&mut e),
        "rest_client_requests_total",
        &[
            ("code", "401"),
            ("host", "10.0.0.1:6443"),
            ("method", "PUT"),
        ],
        30.0,
    );
    set_scalar(
        end(&mut e),
        "kubelet_certificate_manager_client_ttl_seconds",
        &[],
        -3600.0,
    );
    data(&mut e.csrs).push(Csr {
        name: "csr-abcde".into(),
        signer_name: SIGNER_CLIENT.into(),
        username: "system:node:node-a".into(),
        created: Some(ago(900.0)),
        state: CsrState::Pending,
    });
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::Certificate);
    assert_eq!(c.confidence, Confidence::High);
    assert!(
        c.fix.contains("kubectl certificate approve csr-abcde"),
        "{}",
        c.fix
    );
    assert!(
        has(&v, CauseId::ApiPartition).is_none(),
        "a certificate signal rules out the partition branch"
    );
    no_reboot(&v);
}

#[test]
fn unknown_and_connection_refused_is_kubelet_down() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: dial tcp 10.0.0.5:10250: connect: connection refused",
    );
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::KubeletDown);
    assert_eq!(c.confidence, Confidence::High);
    assert!(c.fix.contains("systemctl is-active kubelet"), "{}", c.fix);
    assert!(c.fix.contains("systemctl start kubelet"), "{}", c.fix);
    no_reboot(&v);
    assert_eq!(crate::diagnose(e).exit_code(), crate::exit::PROBLEMS);
}

#[test]
fn unknown_and_dial_timeout_leans_to_partition_and_says_what_separates() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: dial tcp 10.0.0.5:10250: i/o timeout",
    );
    let v = verdict(&e);
    let partition = has(&v, CauseId::ApiPartition).expect("api-partition");
    let down = has(&v, CauseId::KubeletDown).expect("kubelet-down");
    assert_eq!(top(&v).id, CauseId::ApiPartition);
    assert!(partition.score > down.score);
    assert!(partition.avoid.contains("do NOT restart the kubelet"));
    for c in [partition, down] {
        assert!(
            c.evidence.iter().any(|l| l.contains("What separates them")),
            "{:#?}",
            c.evidence
        );
    }
}

#[test]
fn many_stale_leases_make_it_a_partition() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: dial tcp 10.0.0.5:10250: i/o timeout",
    );
    *data(&mut e.node_leases) = crate::evidence::LeaseOverview {
        total: 20,
        stale: 12,
        stale_examples: vec!["node-b".into(), "node-c".into()],
    };
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::ApiPartition);
    assert_eq!(c.confidence, Confidence::High);
    assert!(c.avoid.contains("do NOT restart the kubelet"));
}

#[test]
fn kubelet_answers_but_does_not_heartbeat_is_its_path_to_the_api() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    set_scalar(
        end(&mut e),
        "rest_client_requests_total",
        &[
            ("code", "<error>"),
            ("host", "10.0.0.1:6443"),
            ("method", "PUT"),
        ],
        40.0,
    );
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::ApiPartition);
}

#[test]
fn stuck_sync_loop_is_kubelet_starved() {
    let mut e = healthy_evidence();
    e.healthz = crate::evidence::Step::Collected {
        data: crate::evidence::parse_healthz(
            500,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\n",
        ),
    };
    set_scalar(end(&mut e), "go_goroutines", &[], 5000.0);
    let v = verdict(&e);
    let c = has(&v, CauseId::KubeletStarved).expect("kubelet-starved");
    assert_eq!(c.confidence, Confidence::High);
    assert!(c.avoid.contains("goroutine dump"));
}

#[test]
fn memory_pressure_is_node_pressure() {
    let mut e = healthy_evidence();
    data(&mut e.node).conditions[0] = condition(
        "MemoryPressure",
        "True",
        "KubeletHasInsufficientMemory",
        "kubelet has insufficient memory available",
    );
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::NodePressure);
    assert!(top(&v).fix.contains("kubectl cordon node-a"));
}

#[test]
fn healthy_with_unchecked_parts_is_medium_and_not_a_clean_exit() {
    let mut e = healthy_evidence();
    for step in [&mut e.metrics_start, &mut e.metrics_end] {
        *step = failed(
            FailureKind::Forbidden,
            "GET /api/v1/nodes/node-a/proxy/metrics",
            Some(403),
            "forbidden",
        );
    }
    let report = crate::diagnose(e);
    let c = top(&report.verdict);
    assert_eq!(c.id, CauseId::Healthy);
    assert_eq!(c.confidence, Confidence::Medium);
    assert!(
        report
            .verdict
            .limitations
            .iter()
            .any(|l| l.contains("no kubelet metrics"))
    );
    // Checks that could not run: not a clean bill of health.
    assert_eq!(report.exit_code(), crate::exit::UNDIAGNOSED);
}

#[test]
fn no_node_object_and_nothing_found_cannot_diagnose() {
    let mut e = healthy_evidence();
    e.node = failed(
        FailureKind::Forbidden,
        "GET /api/v1/nodes/node-a",
        Some(403),
        "forbidden",
    );
    let report = crate::diagnose(e);
    assert_eq!(report.exit_code(), crate::exit::UNDIAGNOSED);
}

#[test]
fn cause_ids_serialize_to_the_vocabulary() {
    let ids = [
        (CauseId::Healthy, "healthy"),
        (CauseId::PlegSlow, "pleg-slow"),
        (CauseId::RuntimeUnresponsive, "runtime-unresponsive"),
        (CauseId::Certificate, "certificate"),
        (CauseId::KubeletDown, "kubelet-down"),
        (CauseId::KubeletStarved, "kubelet-starved"),
        (CauseId::ApiPartition, "api-partition"),
        (CauseId::NodePressure, "node-pressure"),
    ];
    for (id, text) in ids {
        assert_eq!(serde_json::to_value(id).unwrap(), text);
    }
    for (a, text) in [
        (Attribution::DiskIowait, "disk-iowait"),
        (Attribution::CriSocketStall, "cri-socket-stall"),
        (Attribution::CpuStarvation, "cpu-starvation"),
        (Attribution::KubeletInternal, "kubelet-internal"),
        (Attribution::Unknown, "unknown"),
    ] {
        assert_eq!(serde_json::to_value(a).unwrap(), text);
    }
}

#[test]
fn configuration_risks_alone_keep_the_node_healthy_and_exit_zero() {
    let mut e = healthy_evidence();
    let c = data(&mut e.configz);
    c.kube_reserved.clear();
    c.system_reserved.clear();
    c.image_gc_high_threshold_percent = Some(100);
    c.image_gc_low_threshold_percent = Some(99);
    let report = crate::diagnose(e);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warning)
    );
    let c = top(&report.verdict);
    assert_eq!(c.id, CauseId::Healthy);
    assert_eq!(c.confidence, Confidence::Medium);
    assert!(c.evidence.iter().any(|l| l.contains("configuration risk")));
    assert_eq!(report.exit_code(), crate::exit::HEALTHY);
}

#[test]
fn kubelet_that_accepts_but_does_not_answer_is_starved() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: net/http: timeout awaiting response headers",
    );
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::KubeletStarved, "{:#?}", v.causes);
    assert!(c.evidence.iter().any(|l| l.contains("holds its port")));
}

/// What the kubelet's node proxy requests give when nothing answers within the step timeout.
fn no_answer(what: &str) -> crate::evidence::Failure {
    crate::evidence::Failure {
        kind: FailureKind::Timeout,
        request: format!("GET /api/v1/nodes/n1/proxy/{what}"),
        http_status: None,
        needs: None,
        message: "no answer within 10s".into(),
    }
}

#[test]
fn runtime_down_past_the_pleg_threshold_is_still_the_runtime() {
    // Past 3 minutes the Ready message names both; the kubelet's metrics and stats hang on the
    // runtime too (their collectors ask it).
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "[container runtime is down, PLEG is not healthy: pleg was last seen active 3m24.07s ago; threshold is 3m0s]",
    );
    e.metrics_start = Step::Failed {
        failure: no_answer("metrics"),
    };
    e.metrics_end = Step::Failed {
        failure: no_answer("metrics"),
    };
    e.stats_summary = Step::Failed {
        failure: no_answer("stats/summary"),
    };
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::RuntimeUnresponsive, "{v:#?}");
    let pleg = has(&v, CauseId::PlegSlow).expect("PLEG listed as the symptom");
    assert!(
        pleg.evidence
            .iter()
            .any(|l| l.contains("PLEG is the symptom"))
    );
    if let Some(starved) = has(&v, CauseId::KubeletStarved) {
        assert!(starved.score < top(&v).score, "{v:#?}");
    }
}

#[test]
fn kubelet_that_answers_nothing_keeps_partition_stuck_and_down_open() {
    // Not reporting, and every kubelet request through the proxy hangs without a word from the
    // API server: cut off, stuck, or not running — the API side cannot tell.
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    e.healthz = Step::Failed {
        failure: no_answer("healthz?verbose"),
    };
    e.configz = Step::Failed {
        failure: no_answer("configz"),
    };
    let v = verdict(&e);
    for id in [
        CauseId::ApiPartition,
        CauseId::KubeletStarved,
        CauseId::KubeletDown,
    ] {
        assert!(has(&v, id).is_some(), "{id:?} missing: {v:#?}");
    }
}

#[test]
fn kubelet_that_does_not_even_shake_hands_is_down_not_cut_off() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: net/http: TLS handshake timeout",
    );
    // Every other kubelet request timed out too (what a frozen kubelet gives).
    e.configz = Step::Failed {
        failure: no_answer("configz"),
    };
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::KubeletDown, "{:#?}", v.causes);
    assert!(c.evidence.iter().any(|l| l.contains("TLS handshake")));
    assert!(c.fix.contains("kill -CONT"), "{}", c.fix);
    let partition = has(&v, CauseId::ApiPartition).map(|p| p.confidence);
    assert!(
        partition.is_none_or(|p| p < c.confidence),
        "{:#?}",
        v.causes
    );
}

#[test]
fn inferred_runtime_cause_does_not_claim_slow_runtime_calls() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "PLEG is not healthy: pleg was last seen active 3m5.2s ago; threshold is 3m0s",
    );
    let v = verdict(&e);
    let pleg = has(&v, CauseId::PlegSlow).unwrap();
    assert!(
        !pleg
            .evidence
            .iter()
            .any(|l| l.contains("calls are slow or failing")),
        "{:#?}",
        pleg.evidence
    );
}

#[test]
fn unknown_without_proxy_access_keeps_both_down_and_partition_open() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    for step in [&mut e.metrics_start, &mut e.metrics_end] {
        *step = failed(
            FailureKind::Forbidden,
            "GET /api/v1/nodes/node-a/proxy/metrics",
            Some(403),
            "forbidden",
        );
    }
    e.healthz = failed(
        FailureKind::Forbidden,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        Some(403),
        "forbidden",
    );
    let v = verdict(&e);
    let down = has(&v, CauseId::KubeletDown).expect("kubelet-down");
    let partition = has(&v, CauseId::ApiPartition).expect("api-partition");
    assert_eq!(down.confidence, Confidence::Low);
    assert_eq!(partition.confidence, Confidence::Low);
    assert!(
        partition
            .evidence
            .iter()
            .any(|l| l.contains("What separates them"))
    );
}

#[test]
fn cni_not_ready_is_the_runtime_network() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
    );
    let v = verdict(&e);
    let c = top(&v);
    assert_eq!(c.id, CauseId::RuntimeUnresponsive);
    assert!(c.evidence.iter().any(|l| l.contains("CNI")));
}

/// Seen on the local cluster (kubelet v1.35.4) with the kubelet's client certificate rejected:
/// the proxy reaches the kubelet, whose webhook authorizer cannot ask the API server.
const KUBELET_AUTHZ_ERROR: &str = "Authorization error (user=kube-apiserver-kubelet-client, verb=get, resource=nodes, subresource=healthz)";

fn kubelet_cannot_authorize(e: &mut Evidence) {
    for step in [&mut e.metrics_start, &mut e.metrics_end] {
        *step = failed(
            FailureKind::HttpError,
            "GET /api/v1/nodes/node-a/proxy/metrics",
            Some(500),
            KUBELET_AUTHZ_ERROR,
        );
    }
    e.healthz = failed(
        FailureKind::HttpError,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        Some(500),
        KUBELET_AUTHZ_ERROR,
    );
    e.configz = failed(
        FailureKind::HttpError,
        "GET /api/v1/nodes/node-a/proxy/configz",
        Some(500),
        KUBELET_AUTHZ_ERROR,
    );
}

#[test]
fn kubelet_authz_failure_with_a_pending_client_csr_is_the_certificate() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    kubelet_cannot_authorize(&mut e);
    data(&mut e.csrs).push(Csr {
        name: "csr-cmfxk".into(),
        signer_name: SIGNER_CLIENT.into(),
        username: "system:node:node-a".into(),
        created: Some(ago(259.0)),
        state: CsrState::Pending,
    });
    let report = crate::diagnose(e);
    let c = top(&report.verdict);
    assert_eq!(c.id, CauseId::Certificate);
    assert_eq!(c.confidence, Confidence::High);
    assert!(c.fix.contains("kubectl certificate approve csr-cmfxk"));
    // One finding for the authorization failure, not one "not collected" per endpoint.
    let authz: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.id == FindingId::KubeletAuthz)
        .collect();
    assert_eq!(authz.len(), 1);
    assert!(
        !report
            .findings
            .iter()
            .any(|f| matches!(f.id, FindingId::Collection(_))),
        "{:#?}",
        report.findings
    );
}

#[test]
fn kubelet_authz_failure_alone_is_certificate_or_partition() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    kubelet_cannot_authorize(&mut e);
    let v = verdict(&e);
    let cert = has(&v, CauseId::Certificate).expect("certificate");
    let partition = has(&v, CauseId::ApiPartition).expect("api-partition");
    // A quick authorization error: the kubelet's own call got an answer (a rejection) — the
    // credentials a little more likely than the path, which hangs requests instead.
    assert!(cert.score > partition.score, "{v:#?}");
    assert!(
        has(&v, CauseId::KubeletDown).is_none(),
        "the kubelet answered: it is not down"
    );
}

// --- the node layer (probe pod) -------------------------------------------------------------

fn with_node(e: &mut Evidence, node: nodehealth_proto::node::NodeEvidence) {
    e.node_probe = Step::Collected {
        data: crate::evidence::NodeProbe {
            pod: "kube-system/nodehealth-probe-1".into(),
            pod_start_seconds: 1.0,
            connect_seconds: None,
            partial: false,
            stream_error: None,
            host_root_recursive_read_only: None,
            evidence: node,
        },
    };
    e.layers.push(Layer::NodeProbe);
}

fn kubelet_process(
    liveness: nodehealth_proto::node::Liveness,
) -> nodehealth_proto::node::ProcessState {
    nodehealth_proto::node::ProcessState {
        pid: 42,
        comm: "kubelet".into(),
        exe: None,
        identified_by: nodehealth_proto::node::Identification::Kubelet,
        liveness,
        liveness_at_start: None,
        cgroup_frozen: Some(false),
        parent_pid: 1,
        parent_comm: None,
        started_at_unix_ms: 0,
        uptime_seconds: 100.0,
        started_after_boot_seconds: 5.0,
        rss_bytes: 1,
        threads: 10,
        cpu_seconds_total: 1.0,
        cpu_percent_window: None,
        oom_kills_in_kernel_log: 0,
        memory_cgroup: None,
    }
}

#[test]
fn node_layer_kubelet_process_gone_is_kubelet_down_with_high_confidence() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: dial tcp 10.0.0.5:10250: i/o timeout",
    );
    with_node(
        &mut e,
        nodehealth_proto::node::NodeEvidence {
            processes: Some(nodehealth_proto::node::Processes::default()),
            ..Default::default()
        },
    );
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::KubeletDown, "{v:#?}");
    assert_eq!(top(&v).confidence, Confidence::High);
    assert!(v.layers.contains(&Layer::NodeProbe));
    assert!(!v.limitations.iter().any(|l| l.contains("API-side only")));
}

#[test]
fn node_layer_live_kubelet_rules_out_down_and_a_stopped_one_is_down() {
    let mut e = healthy_evidence();
    node_unknown(&mut e);
    unreachable(
        &mut e,
        "error trying to reach service: dial tcp 10.0.0.5:10250: connect: connection refused",
    );
    let with_kubelet = |liveness| {
        let mut e = e.clone();
        with_node(
            &mut e,
            nodehealth_proto::node::NodeEvidence {
                processes: Some(nodehealth_proto::node::Processes {
                    kubelet: Some(kubelet_process(liveness)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        verdict(&e)
    };
    let v = with_kubelet(nodehealth_proto::node::Liveness::Sleeping);
    assert!(has(&v, CauseId::KubeletDown).is_none(), "{v:#?}");
    // Stopped (SIGSTOP): the process exists but does not run — down, and the fix resumes it.
    let v = with_kubelet(nodehealth_proto::node::Liveness::Stopped);
    let c = top(&v);
    assert_eq!(c.id, CauseId::KubeletDown, "{v:#?}");
    assert!(c.summary.contains("stopped"), "{}", c.summary);
    assert!(c.fix.contains("kill -CONT"), "{}", c.fix);
    assert!(c.avoid.contains("do not restart"), "{}", c.avoid);
}

#[test]
fn pod_not_started_is_evidence_next_to_the_api_findings() {
    let mut e = healthy_evidence();
    e.node_probe = Step::Failed {
        failure: crate::evidence::Failure {
            kind: FailureKind::Timeout,
            request: "probe pod kube-system/nodehealth-probe-1".into(),
            http_status: None,
            needs: None,
            message: "the kubelet did not start a pod bound to it within 30 s (phase Pending)"
                .into(),
        },
    };
    let report = crate::diagnose(e);
    let f = report
        .findings
        .iter()
        .find(|f| f.id == FindingId::PodNotStarted)
        .expect("pod-not-started finding");
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.remediation
            .as_deref()
            .unwrap()
            .contains("tracer-user probe --host-root /")
    );
    assert_eq!(report.exit_code(), crate::exit::PROBLEMS);
}

// --- eBPF attribution -------------------------------------------------------------------------

/// Node evidence with a trace: 3 seconds of the runtime's thread states (ms of run-queue and I/O
/// wait per second) and the kubelet's slowest CRI call on its socket.
fn traced_node(
    runq_ms: u64,
    io_ms: u64,
    slow_call_ms: u64,
) -> nodehealth_proto::node::NodeEvidence {
    use nodehealth_proto::node::{
        ThreadStateTimes, Trace, TraceCri, TraceCriCall, TraceCriMethod, TraceSecond,
    };
    let start = 1_700_000_000_000;
    let seconds = (0..3)
        .map(|i| TraceSecond {
            owner: "runtime".into(),
            pid: 20,
            start_unix_ms: start + i * 1000,
            duration_ms: 1000,
            times: ThreadStateTimes {
                run_queue_ns: runq_ms * 1_000_000,
                io_wait_ns: io_ms * 1_000_000,
                sleep_ns: 900_000_000,
                on_cpu_ns: 1_000_000,
            },
        })
        .collect();
    nodehealth_proto::node::NodeEvidence {
        trace: Some(Trace {
            attached: true,
            window_ms: 3000,
            seconds,
            cri: TraceCri {
                traced: true,
                slowest: vec![TraceCriCall {
                    method: Some("/runtime.v1.RuntimeService/ListPodSandbox".into()),
                    start_unix_ms: start + 500,
                    duration_ns: slow_call_ms * 1_000_000,
                    end: "response".into(),
                    ..Default::default()
                }],
                // Every relist's two list calls took about as long as the slowest one.
                methods: ["ListPodSandbox", "ListContainers"]
                    .map(|m| TraceCriMethod {
                        method: Some(format!("/runtime.v1.RuntimeService/{m}")),
                        calls: 3,
                        total_ns: 3 * slow_call_ms * 1_000_000,
                        max_ns: slow_call_ms * 1_000_000,
                        failed: 0,
                    })
                    .to_vec(),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn degraded_relists_with_slow_list_calls() -> Evidence {
    let mut e = healthy_evidence();
    observe(
        end(&mut e),
        "kubelet_pleg_relist_duration_seconds",
        &[],
        3.0,
        20.0,
    );
    e
}

#[test]
fn slow_calls_while_the_runtime_idles_are_a_socket_stall_behind_slow_relists() {
    let mut e = degraded_relists_with_slow_list_calls();
    with_node(&mut e, traced_node(0, 0, 1500));
    e.layers.push(Layer::Ebpf);
    let v = verdict(&e);
    let pleg = top(&v);
    assert_eq!(pleg.id, CauseId::PlegSlow, "{v:#?}");
    assert_eq!(pleg.attribution, Some(Attribution::CriSocketStall));
    assert!(
        pleg.evidence
            .iter()
            .any(|l| l.contains("cri-socket-stall") && l.contains("ListPodSandbox 1.50 s")),
        "{:#?}",
        pleg.evidence
    );
    assert!(!v.limitations.iter().any(|l| l.contains("no eBPF")));
}

#[test]
fn a_tracer_that_did_not_attach_is_named_in_the_limitation() {
    let mut e = degraded_relists_with_slow_list_calls();
    let mut node = traced_node(0, 0, 1500);
    let trace = node.trace.as_mut().expect("a trace section");
    trace.attached = false;
    trace.error =
        Some("trace unavailable: attaching switched_out failed: `perf_event_open` failed".into());
    with_node(&mut e, node);
    let v = verdict(&e);
    assert!(
        v.limitations
            .iter()
            .any(|l| l.starts_with("no eBPF attribution in this run: ")
                && l.contains("perf_event_open")),
        "{:#?}",
        v.limitations
    );
}

#[test]
fn run_queue_wait_while_calls_are_slow_is_cpu_starvation_and_io_wait_is_the_disk() {
    let mut e = degraded_relists_with_slow_list_calls();
    with_node(&mut e, traced_node(400, 0, 1500));
    let v = verdict(&e);
    assert_eq!(top(&v).attribution, Some(Attribution::CpuStarvation));

    let mut e = degraded_relists_with_slow_list_calls();
    with_node(&mut e, traced_node(0, 600, 1500));
    let v = verdict(&e);
    assert_eq!(top(&v).attribution, Some(Attribution::DiskIowait));
}

#[test]
fn slow_relists_with_fast_calls_and_no_waits_are_kubelet_internal() {
    let mut e = degraded_relists_with_slow_list_calls();
    with_node(&mut e, traced_node(0, 0, 20));
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::PlegSlow);
    assert_eq!(top(&v).attribution, Some(Attribution::KubeletInternal));
}

#[test]
fn a_throttled_runtime_with_no_call_measured_slow_is_the_runtime_starved_of_cpu() {
    use nodehealth_proto::node::{CgroupCpu, Pressure, TraceProcess};
    // A healthy API side; on the node the runtime's cgroup is throttled in every period and its
    // threads wait for a CPU far more than they run, while no call happened to be slow.
    let mut e = healthy_evidence();
    let mut node = traced_node(2500, 0, 20);
    let t = node.trace.as_mut().unwrap();
    t.processes = vec![TraceProcess {
        owner: "runtime".into(),
        pid: 20,
        threads: 12,
        times: nodehealth_proto::node::ThreadStateTimes {
            run_queue_ns: 7_500_000_000,
            on_cpu_ns: 3_000_000,
            ..Default::default()
        },
    }];
    node.window_ms = 3000;
    node.pressure = Some(Pressure {
        cgroups: vec![CgroupCpu {
            owner: "runtime".into(),
            pid: 20,
            cgroup_version: 1,
            path: "/nodehealth-harness/containerd".into(),
            window_nr_periods: Some(3),
            window_nr_throttled: Some(3),
            window_throttled_ns: Some(2_900_000_000),
            quota_us: Some(1000),
            period_us: Some(1_000_000),
            ..Default::default()
        }],
        ..Default::default()
    });
    with_node(&mut e, node);
    let v = verdict(&e);
    let runtime = top(&v);
    assert_eq!(runtime.id, CauseId::RuntimeUnresponsive, "{v:#?}");
    assert_eq!(runtime.attribution, Some(Attribution::CpuStarvation));
    assert!(
        runtime
            .evidence
            .iter()
            .any(|l| l.contains("node-cpu-starved-runtime")),
        "{:#?}",
        runtime.evidence
    );
}

#[test]
fn without_a_trace_attribution_stays_unknown() {
    let mut e = degraded_relists_with_slow_list_calls();
    with_node(&mut e, nodehealth_proto::node::NodeEvidence::default());
    let v = verdict(&e);
    assert_eq!(top(&v).attribution, Some(Attribution::Unknown));
}

// --- restart loop --------------------------------------------------------------------------

fn kubelet_started(e: &mut Evidence, times: i32) {
    let Step::Collected { data } = &mut e.events else {
        panic!("events collected in the fixture");
    };
    for _ in 0..times {
        data.push(crate::evidence::NodeEvent {
            type_: "Normal".into(),
            reason: "Starting".into(),
            message: "Starting kubelet.".into(),
            count: 1,
            last_seen: Some(now()),
            source: Some("kubelet".into()),
        });
    }
}

#[test]
fn a_kubelet_restarting_over_and_over_is_starved_not_pleg() {
    let mut e = healthy_evidence();
    set_ready(
        &mut e,
        "False",
        "KubeletNotReady",
        "PLEG is not healthy: pleg has yet to be successful",
    );
    kubelet_started(&mut e, 5);
    let v = verdict(&e);
    assert_eq!(top(&v).id, CauseId::KubeletStarved, "{v:#?}");
    assert!(
        top(&v)
            .evidence
            .iter()
            .any(|l| l.contains("started 5 times")),
        "{:#?}",
        top(&v).evidence
    );
    let pleg = has(&v, CauseId::PlegSlow).expect("PLEG still listed");
    assert!(pleg.score < top(&v).score);
    // One start is a restart, not a loop; restarts of a kubelet that is Ready again are history.
    for starts in [1, 5] {
        let mut e = healthy_evidence();
        kubelet_started(&mut e, starts);
        let v = verdict(&e);
        assert_eq!(top(&v).id, CauseId::Healthy, "{starts} starts: {v:#?}");
        assert_eq!(crate::diagnose(e).exit_code(), crate::exit::HEALTHY);
    }
}

// --- a kubelet that does not answer and does not report ----------------------------------------

fn silent_kubelet(e: &mut Evidence) {
    node_unknown(e);
    for step in [&mut e.metrics_start, &mut e.metrics_end] {
        *step = failed(
            FailureKind::Timeout,
            "GET /api/v1/nodes/node-a/proxy/metrics",
            None,
            "no answer within 10s",
        );
    }
    e.healthz = failed(
        FailureKind::Timeout,
        "GET /api/v1/nodes/node-a/proxy/healthz?verbose",
        None,
        "no answer within 10s",
    );
}

#[test]
fn a_silent_kubelet_that_does_not_report_is_stuck_or_cut_off_and_the_node_side_decides() {
    let mut e = healthy_evidence();
    silent_kubelet(&mut e);
    let v = verdict(&e);
    let (starved, partition) = (
        has(&v, CauseId::KubeletStarved).expect("stuck kubelet on the table"),
        has(&v, CauseId::ApiPartition).expect("partition on the table"),
    );
    assert!(starved.score >= partition.score);
    assert!(
        starved
            .evidence
            .iter()
            .any(|l| l.contains("the node side separates them")),
        "{:#?}",
        starved.evidence
    );

    // The node cannot reach the API server (agent evidence): a partition.
    let mut cut = e.clone();
    with_node(
        &mut cut,
        nodehealth_proto::node::NodeEvidence {
            processes: Some(nodehealth_proto::node::Processes {
                kubelet: Some(kubelet_process(nodehealth_proto::node::Liveness::Sleeping)),
                ..Default::default()
            }),
            api_server: Some(nodehealth_proto::node::ApiServerProbe {
                server: Some("https://api.example.test:6443".into()),
                tcp_error: Some("connection timed out".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let v = verdict(&cut);
    assert_eq!(top(&v).id, CauseId::ApiPartition, "{v:#?}");
    assert!(top(&v).avoid.contains("do NOT restart the kubelet"));

    // The kubelet is frozen (agent evidence): not running, not cut off.
    let mut frozen = e.clone();
    let mut k = kubelet_process(nodehealth_proto::node::Liveness::Sleeping);
    k.cgroup_frozen = Some(true);
    with_node(
        &mut frozen,
        nodehealth_proto::node::NodeEvidence {
            processes: Some(nodehealth_proto::node::Processes {
                kubelet: Some(k),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let v = verdict(&frozen);
    assert_eq!(top(&v).id, CauseId::KubeletDown, "{v:#?}");
    assert!(top(&v).fix.contains("freezer.state"), "{}", top(&v).fix);
}

#[test]
fn every_cause_the_log_catalogue_names_is_in_the_vocabulary() {
    for m in nodehealth_proto::logs::CATALOGUE {
        if let Some(cause) = m.cause {
            assert!(CauseId::named(cause).is_some(), "{}: {cause}", m.id);
        }
    }
    assert_eq!(CauseId::named("pleg-slow"), Some(CauseId::PlegSlow));
    assert_eq!(CauseId::named("nonsense"), None);
}
