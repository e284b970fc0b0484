//! `runtime-unresponsive`: the container runtime is hung, failing or slow.
//!
//! The kubelet reports a down runtime in Ready ("container runtime is down", pkg/kubelet/
//! kubelet.go updateRuntimeUp); its runtime-operation metrics time the calls it finished and count
//! their errors; the agent times its own calls (the guide's `time crictl ps`) and looks at the
//! socket; the kubelet's endpoints that gather data through CRI (/metrics, /stats/summary) hang
//! with the runtime while /healthz and /configz answer. A relist that never finishes is most
//! often a list call that never returns (the metrics only record finished calls).

use super::{CauseId, Inputs, Score};
use crate::checks::conditions::ReadyMessage;
use crate::checks::facts::ReadyStatus;
use crate::checks::pleg::{RelistTime, relist_time, relists_degraded};
use crate::checks::{Component, FindingId, Severity};

/// Score the runtime cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::RuntimeUnresponsive);
    let facts = i.facts;
    if facts.ready.runtime_down {
        s.because(85, facts.ready.line.clone());
    }
    if facts.ready.message == ReadyMessage::NetworkNotReady
        && facts.ready.status == ReadyStatus::False
    {
        s.because(60, facts.ready.line.clone());
        s.support(
            0,
            "the runtime reports its network not ready (NetworkReady=false): the CNI plugin is not ready — check its pods and /etc/cni/net.d on the node",
        );
    }
    if let Some(w) = i.problem(&FindingId::RuntimeListLatency) {
        let critical = i.at_least(&FindingId::RuntimeListLatency, Severity::Critical);
        s.because(if critical { 70 } else { 45 }, w);
    }
    // Writes slow while reads are not: the runtime's disk, most often.
    if let Some(w) = i.problem(&FindingId::RuntimeWriteLatency) {
        s.because(50, w);
    }
    if let Some(w) = i.problem(&FindingId::RuntimeErrors) {
        s.because(if i.relist_stuck() { 80 } else { 40 }, w);
    }
    if let Some(w) = i.problem(&FindingId::KubeletWaitsOnRuntime) {
        s.because(65, w);
    }
    if let Some(w) = i.problem(&FindingId::NodeCri) {
        let critical = i.at_least(&FindingId::NodeCri, Severity::Critical);
        s.because(if critical { 85 } else { 55 }, w);
    }
    if let Some(w) = i.problem(&FindingId::NodeRuntimeSocket)
        && i.at_least(&FindingId::NodeRuntimeSocket, Severity::Critical)
    {
        s.because(85, w);
    }
    if let Some(w) = i.problem(&FindingId::NodeKubeletCriSlow) {
        s.because(55, w);
    }
    // Measured on the node: the runtime blocked on its disk for much of the window, whether or
    // not the window caught one of its slow calls.
    if let Some(w) = i.problem(&FindingId::NodeRuntimeDiskBound) {
        s.because(45, w);
    }
    // Starved of CPU, measured on the node: a runtime that gets no CPU answers late or not at all.
    let cpu = FindingId::CpuStarved(Component::Runtime);
    if let Some(w) = i.problem(&cpu) {
        s.because(
            if i.at_least(&cpu, Severity::Critical) {
                70
            } else {
                45
            },
            w,
        );
    }
    // Slow relists whose time is mostly the runtime's list calls: the runtime is why.
    if let Some(w) = &facts.relists
        && relists_degraded(w)
        && let Some(share) = w.runtime_share()
        && relist_time(share) == RelistTime::Runtime
        && let Some(line) = i.problem(&FindingId::PlegRuntimeShare)
    {
        s.because(45, line);
    }
    if !s.raised() && i.relist_stuck() {
        s.because(
            45,
            "a relist that never finishes is most often a runtime list call that never returns (the kubelet's runtime metrics only record finished calls)",
        );
    }
    if !s.raised() {
        return s;
    }
    s.support(
        0,
        format!(
            "runtime: {} (from {})",
            facts.runtime.kind.name(),
            facts.runtime.from
        ),
    );
    for id in [
        FindingId::NodeOrphanedShims,
        FindingId::Unit(Component::Runtime),
    ] {
        if let Some(w) = i.problem(&id) {
            s.support(5, w);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::relists::{ListCalls, RelistWindow};

    fn slow_relists(call_seconds: f64) -> RelistWindow {
        RelistWindow {
            relists: 6.0,
            mean_relist_seconds: 1.62,
            fraction_over_1s: 1.0,
            list_calls: ["list_podsandbox", "list_containers"]
                .map(|operation| ListCalls {
                    operation,
                    calls: 6.0,
                    mean_seconds: call_seconds,
                })
                .to_vec(),
            reset: false,
        }
    }

    /// `runtime-slow-list --delay 800ms`: no call reaches a bucket bound that the fixed thresholds
    /// knew, yet the calls are the relist.
    #[test]
    fn sub_second_list_calls_that_make_up_the_relists_raise_the_runtime() {
        let mut facts = facts();
        facts.relists = Some(slow_relists(0.8));
        let f = [
            finding(FindingId::PlegDuration, Severity::Warning),
            finding(FindingId::PlegRuntimeShare, Severity::Warning),
        ];
        let s = score(&Inputs::new(&f, &facts));
        assert_eq!(s.score, 45, "{s:?}");
        // Calls of a millisecond inside the same relists: not the runtime.
        facts.relists = Some(slow_relists(0.001));
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 0);
    }

    #[test]
    fn hung_runtime_endpoints_while_healthz_answers_are_the_runtime() {
        let facts = facts();
        let f = [finding(FindingId::KubeletWaitsOnRuntime, Severity::Warning)];
        let s = score(&Inputs::new(&f, &facts));
        assert_eq!(s.score, 65);
        assert!(s.evidence.iter().any(|l| l.contains("containerd")), "{s:?}");
    }
}
