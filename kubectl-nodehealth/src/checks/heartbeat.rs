//! The heartbeat: this node's Lease and the cluster's stale leases.

use super::{Domain, Finding, FindingId, Severity, seconds_since};
use crate::evidence::{Evidence, FailureKind, LeaseInfo, Step};
use crate::units::human_duration;

/// Clocks further apart than this are off: the `Date` header has 1 s resolution.
const CLOCK_OFFSET_TOLERANCE_SECONDS: f64 = 2.0;

/// How far this machine's clock is ahead of the API server's when the lease was read, when they
/// differ by more than the `Date` header's resolution.
pub(crate) fn clock_offset(lease: &LeaseInfo) -> Option<f64> {
    let local = lease.observed_at?;
    let server = lease.server_time?;
    let offset = local.duration_since(server).as_secs_f64();
    (offset.abs() > CLOCK_OFFSET_TOLERANCE_SECONDS).then_some(offset)
}

/// The lease's age and duration, in seconds. Aged at the moment it was read, on the API server's
/// clock when this machine's is off (the plugin runs on a laptop; its clock says nothing about
/// the node's heartbeat).
pub(crate) fn lease_age(e: &Evidence, lease: &LeaseInfo) -> Option<(f64, f64)> {
    let renew = lease.renew_time?;
    let duration = f64::from(lease.lease_duration_seconds.unwrap_or(40));
    let age = match (clock_offset(lease), lease.server_time, lease.observed_at) {
        (Some(_), Some(server), _) => server.duration_since(renew).as_secs_f64(),
        (_, _, Some(at)) => at.duration_since(renew).as_secs_f64(),
        _ => seconds_since(e, renew),
    };
    Some((age, duration))
}

/// The lease is stale: past its duration and not renewed while the window lasted.
pub(crate) fn lease_stale(e: &Evidence, lease: &LeaseInfo) -> bool {
    !lease.renewed_during_window() && lease_age(e, lease).is_some_and(|(age, d)| age >= d)
}

/// The node Lease: renewed every 10 s, valid for leaseDurationSeconds (40 s).
pub fn lease(e: &Evidence) -> Vec<Finding> {
    match &e.lease {
        Step::Collected { data } => {
            let Some((age, duration)) = lease_age(e, data) else {
                return vec![Finding::new(
                    FindingId::Lease,
                    Domain::Heartbeat,
                    Severity::Warning,
                    "node lease has never been renewed",
                )];
            };
            let evidence = format!(
                "kube-node-lease/{} renewTime {} ago, leaseDurationSeconds {duration}, holder {}",
                data.name,
                human_duration(age),
                data.holder_identity.clone().unwrap_or_default()
            );
            let (severity, summary) = if data.renewed_during_window() {
                (
                    Severity::Ok,
                    format!(
                        "lease renewed while the window lasted (now {} old)",
                        human_duration(age.max(0.0))
                    ),
                )
            } else if age >= duration {
                (
                    Severity::Critical,
                    format!(
                        "lease stale: last renewed {} ago (duration {}s): the kubelet is not heartbeating",
                        human_duration(age),
                        duration
                    ),
                )
            } else if age > duration / 2.0 {
                (
                    Severity::Warning,
                    format!(
                        "lease renewal late: {} ago, approaching its {}s duration (renewals every {}s)",
                        human_duration(age),
                        duration,
                        duration / 4.0
                    ),
                )
            } else {
                (
                    Severity::Ok,
                    format!("lease renewed {} ago", human_duration(age.max(0.0))),
                )
            };
            let mut f =
                Finding::new(FindingId::Lease, Domain::Heartbeat, severity, summary).with(evidence);
            if let Some(before) = lease_predates_kubelet(e) {
                f = f.with(format!(
                    "renewed last by the previous kubelet process: the running one started {} later and has not renewed it yet",
                    human_duration(before)
                ));
            }
            let mut f = match clock_offset(data) {
                Some(offset) => f.with(format!(
                    "this machine's clock is {} {} the API server's: ages use the API server's clock (its Date header)",
                    human_duration(offset.abs()),
                    if offset > 0.0 { "ahead of" } else { "behind" }
                )),
                None => f,
            };
            f = f.with("renewTime is stamped by the node's clock: a node clock off the API server's shifts the age (a renewal seen while the window lasts does not depend on it)");
            if severity.is_problem() {
                f = f.fix("see the verdict: a stale lease is kubelet-down, kubelet-starved, a partition or an auth failure");
            }
            vec![f]
        }
        Step::Failed { failure } if failure.kind == FailureKind::NotFound => vec![
            Finding::new(
                FindingId::Lease,
                Domain::Heartbeat,
                Severity::Warning,
                "node has no Lease in kube-node-lease",
            )
            .with(failure.message.clone())
            .fix("the kubelet creates its lease on start: check that it is running and registered"),
        ],
        _ => vec![],
    }
}

/// Stale node leases cluster-wide: many at once point at the control plane or the network.
pub fn cluster_leases(e: &Evidence) -> Vec<Finding> {
    let Some(o) = e.node_leases.data() else {
        return vec![];
    };
    if o.total == 0 {
        return vec![];
    }
    let this_stale = e.lease.data().is_some_and(|l| lease_stale(e, l));
    let others = o.stale.saturating_sub(usize::from(this_stale));
    let severity = if others >= 2 && others * 5 >= o.total {
        Severity::Warning
    } else if others > 0 {
        Severity::Info
    } else {
        Severity::Ok
    };
    let mut f = Finding::new(
        FindingId::ClusterLeases,
        Domain::Heartbeat,
        severity,
        format!(
            "{} of {} node leases are stale ({} besides this node)",
            o.stale, o.total, others
        ),
    );
    if !o.stale_examples.is_empty() {
        f = f.with(format!("stale: {}", o.stale_examples.join(", ")));
    }
    if severity == Severity::Warning {
        f = f.fix("many nodes stopped heartbeating together: suspect the API server, its load balancer or the network, not this kubelet");
    }
    vec![f]
}

/// When the lease was last renewed before the running kubelet started (both times are the node's
/// clock: `renewTime` is written by the kubelet, `process_start_time_seconds` is its own): how long
/// before, in seconds. A restarted kubelet renews its lease only once it is up.
pub fn lease_predates_kubelet(e: &Evidence) -> Option<f64> {
    let renew = e.lease.data()?.renew_time?;
    let started = e
        .metrics_end
        .data()
        .and_then(|m| m.scalar("process_start_time_seconds"))?;
    let renewed = renew.as_second() as f64 + f64::from(renew.subsec_nanosecond()) / 1e9;
    (renewed < started).then_some(started - renewed)
}
