//! Hand-built evidence snapshots for the unit tests of checks, verdict and rendering.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::evidence::*;
use crate::metrics::{self, Labels};

/// The fixed "now" of the tests (the metrics fixtures are relative to it).
pub fn now() -> Timestamp {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

/// `now - seconds`.
pub fn ago(seconds: f64) -> Timestamp {
    now() - SignedDuration::from_secs_f64(seconds)
}

pub const METRICS_START: &str = include_str!("../../fixtures/metrics/healthy-start.prom");
pub const METRICS_END: &str = include_str!("../../fixtures/metrics/healthy-end.prom");

fn snapshot(text: &str, at: Timestamp) -> MetricsSnapshot {
    let scrape = metrics::parse(text);
    assert_eq!(scrape.malformed_count, 0, "fixture: {:?}", scrape.malformed);
    MetricsSnapshot::from_scrape(&scrape, text.len(), at)
}

pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(ago(8.0)),
        last_transition_time: Some(ago(7200.0)),
    }
}

pub fn failed<T>(kind: FailureKind, request: &str, status: Option<u16>, message: &str) -> Step<T> {
    Step::Failed {
        failure: Failure {
            kind,
            request: request.into(),
            http_status: status,
            needs: (kind == FailureKind::Forbidden).then(|| "get nodes/proxy".to_string()),
            message: message.into(),
        },
    }
}

/// A healthy node with every step collected.
pub fn healthy_evidence() -> Evidence {
    let node = NodeInfo {
        conditions: vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
        ],
        unschedulable: false,
        taints: vec![],
        kubelet_version: Some("v1.35.4".into()),
        container_runtime_version: Some("containerd://2.1.4".into()),
        pod_capacity: Some("110".into()),
        internal_ip: Some("10.0.0.5".into()),
        ..Default::default()
    };
    let mut reserved = BTreeMap::new();
    reserved.insert("cpu".to_string(), "100m".to_string());
    reserved.insert("memory".to_string(), "256Mi".to_string());
    let fs = |used: u64| FsUsage {
        capacity_bytes: Some(100_000_000_000),
        used_bytes: Some(used),
        available_bytes: Some(100_000_000_000 - used),
        inodes: Some(6_000_000),
        inodes_used: Some(400_000),
        inodes_free: Some(5_600_000),
    };
    Evidence {
        node_name: "node-a".into(),
        collected_at: now(),
        window: Window {
            requested_seconds: 5.0,
            started_at: ago(5.0),
            ended_at: now(),
        },
        layers: vec![Layer::Api],
        node: Step::Collected { data: node },
        lease: Step::Collected {
            data: LeaseInfo {
                namespace: "kube-node-lease".into(),
                name: "node-a".into(),
                holder_identity: Some("node-a".into()),
                renew_time: Some(ago(3.0)),
                lease_duration_seconds: Some(40),
                ..Default::default()
            },
        },
        node_leases: Step::Collected {
            data: LeaseOverview {
                total: 3,
                stale: 0,
                stale_examples: vec![],
            },
        },
        csrs: Step::Collected {
            data: vec![Csr {
                name: "csr-7x2kq".into(),
                signer_name: SIGNER_CLIENT.into(),
                username: "system:node:node-a".into(),
                created: Some(ago(86400.0 * 200.0)),
                state: CsrState::Issued,
            }],
        },
        events: Step::Collected { data: vec![] },
        healthz: Step::Collected {
            data: parse_healthz(
                200,
                "[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n",
            ),
        },
        configz: Step::Collected {
            data: KubeletConfig {
                image_gc_high_threshold_percent: Some(85),
                image_gc_low_threshold_percent: Some(80),
                container_log_max_size: Some("10Mi".into()),
                container_log_max_files: Some(5),
                kube_reserved: reserved.clone(),
                system_reserved: reserved,
                container_runtime_endpoint: Some("unix:///run/containerd/containerd.sock".into()),
                enable_profiling_handler: Some(true),
                ..KubeletConfig::default()
            },
        },
        metrics_start: Step::Collected {
            data: snapshot(METRICS_START, ago(5.0)),
        },
        metrics_end: Step::Collected {
            data: snapshot(METRICS_END, now()),
        },
        stats_summary: Step::Collected {
            data: StatsSummary {
                node_fs: Some(fs(40_000_000_000)),
                image_fs: Some(fs(40_000_000_000)),
                container_fs: None,
                pods: 12,
            },
        },
        goroutine_dump: Step::Collected {
            data: summarise_goroutines("goroutine 1 [running]:\n\ngoroutine 2 [select]:\n"),
        },
        controller_manager_lease: Step::Collected {
            data: LeaseInfo {
                namespace: "kube-system".into(),
                name: "kube-controller-manager".into(),
                holder_identity: Some("cp_1234".into()),
                renew_time: Some(ago(1.0)),
                lease_duration_seconds: Some(15),
                ..Default::default()
            },
        },
        kubelet_log: Step::Skipped {
            reason: "not queried".into(),
        },
        runtime_log: Step::Skipped {
            reason: "not queried".into(),
        },
        node_probe: Step::Skipped {
            reason: "--api-only".into(),
        },
        history: crate::evidence::no_history(),
        recorder: crate::evidence::no_recorder(),
    }
}

/// Mutable access to a collected step.
pub fn data<T>(step: &mut Step<T>) -> &mut T {
    match step {
        Step::Collected { data } => data,
        _ => panic!("step not collected"),
    }
}

/// Set (or add) the series of `name` with `labels` in a snapshot.
pub fn set_scalar(m: &mut MetricsSnapshot, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let series = m.scalars.entry(name.to_string()).or_default();
    match series.iter_mut().find(|s| s.labels == labels) {
        Some(s) => s.value = value,
        None => series.push(Series { labels, value }),
    }
}

/// Record `n` observations of `value` seconds in the histograms of `name` whose labels contain
/// `labels`.
pub fn observe(m: &mut MetricsSnapshot, name: &str, labels: &[(&str, &str)], value: f64, n: f64) {
    let histograms = m
        .histograms
        .get_mut(name)
        .expect("histogram family in fixture");
    let mut touched = false;
    for h in histograms.iter_mut() {
        if !labels
            .iter()
            .all(|(k, v)| h.labels.get(*k).map(String::as_str) == Some(*v))
        {
            continue;
        }
        for b in &mut h.buckets {
            if value <= b.le {
                b.cumulative += n;
            }
        }
        h.count += n;
        h.sum += value * n;
        touched = true;
        break;
    }
    assert!(touched, "no {name} series with {labels:?}");
}

/// The end scrape, mutable.
pub fn end(e: &mut Evidence) -> &mut MetricsSnapshot {
    data(&mut e.metrics_end)
}

/// Set the Ready condition.
pub fn set_ready(e: &mut Evidence, status: &str, reason: &str, message: &str) {
    let node = data(&mut e.node);
    let c = node
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message.into());
    c.last_transition_time = Some(ago(240.0));
}

/// Make the node lease `age` seconds old.
pub fn set_lease_age(e: &mut Evidence, age: f64) {
    data(&mut e.lease).renew_time = Some(ago(age));
}
