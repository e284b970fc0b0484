//! `kubelet-starved`: the kubelet is alive but starved or stuck.
//!
//! Its healthz `syncloop` check fails when the sync loop has not completed an iteration for
//! max(2 × resync, 5 min) (pkg/kubelet/kubelet.go syncLoop / healthz); it holds its port but does
//! not answer; it restarts over and over (OOM kills: the guide's "kubelet OOM or resource
//! starvation"); its memory and goroutines pile up; on the node its threads wait for a CPU or its
//! local healthz times out.

use super::{CauseId, Inputs, Score};
use crate::checks::collection::DialError;
use crate::checks::{Component, FindingId, Severity};

/// Score the starved cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::KubeletStarved);
    match (i.dial(), &i.facts.proxy) {
        (Some(DialError::NoHandshake), Some(p)) => s.because(45, p.line.clone()),
        (Some(DialError::NoResponse), Some(p)) => {
            s.because(60, p.line.clone());
            s.support(
                0,
                "the kubelet holds its port but does not answer: frozen, deadlocked or starved",
            );
        }
        _ => {}
    }
    if i.syncloop_failing()
        && let Some(w) = i.problem(&FindingId::Healthz)
    {
        s.because(70, w);
    }
    if let Some(w) = i.problem(&FindingId::KubeletSlow) {
        s.because(55, w);
        if i.not_reporting()
            && !i.certificate_signal()
            && i.dial() != Some(DialError::NoHandshake)
            && !i.facts.node.collected
        {
            s.support(
                0,
                "from the API side a stuck kubelet and one cut off from the API server look alike; the node side separates them: `tracer-user probe --host-root /` (or --node-evidence)",
            );
        }
    }
    if let Some(w) = i.problem(&FindingId::KubeletMemory) {
        s.because(40, w);
    }
    // A kubelet that keeps starting over: its fresh-start symptoms follow from the restarts.
    if let Some(w) = i.problem(&FindingId::KubeletRestarts) {
        s.because(if i.restart_loop() { 90 } else { 50 }, w);
    }
    if let Some(w) = i.problem(&FindingId::KubeletGoroutines) {
        s.because(40, w);
    }
    if let Some(w) = i.problem(&FindingId::KubeletUnresponsive) {
        s.because(80, w);
    }
    if i.oom_loop() {
        s.because(90, i.problem(&FindingId::NodeOom).unwrap_or_default());
    } else if let Some(w) = i.problem(&FindingId::NodeOom) {
        s.support(5, w);
    }
    let cpu = FindingId::CpuStarved(Component::Kubelet);
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
    if !s.raised() {
        return s;
    }
    for id in [
        FindingId::PlegDiscards,
        FindingId::Reserved,
        FindingId::Unit(Component::Kubelet),
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

    #[test]
    fn a_failing_syncloop_is_high_on_its_own() {
        let facts = facts();
        let f = [finding(FindingId::Healthz, Severity::Critical)];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 70);
    }

    #[test]
    fn an_oom_loop_is_the_strongest_starvation() {
        let facts = facts();
        let f = [finding(FindingId::NodeOom, Severity::Critical)];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 90);
        let old = [finding(FindingId::NodeOom, Severity::Warning)];
        assert_eq!(score(&Inputs::new(&old, &facts)).score, 0);
    }

    /// Measured on the local cluster: an OOM loop healed (the limit removed), then the API
    /// server cut off. The API server's start events (12 in 3 minutes) still said "restart loop"
    /// and tied kubelet-starved with the partition at 95; the node side shows a kubelet up for
    /// 41 s, out of any OOM loop.
    #[test]
    fn start_events_of_a_loop_the_node_side_shows_over_are_history() {
        let f = [finding(FindingId::KubeletRestarts, Severity::Critical)];
        let mut facts = facts();
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 90);
        facts.node.collected = true;
        facts.node.kubelet_running = true;
        for (up, loop_score) in [(29.0, 90), (30.0, 50), (41.0, 50)] {
            facts.node.kubelet_uptime_seconds = Some(up);
            assert_eq!(
                score(&Inputs::new(&f, &facts)).score,
                loop_score,
                "up {up} s"
            );
        }
        // Held in an OOM loop: the loop goes on however long this kubelet has run.
        let held = [
            finding(FindingId::KubeletRestarts, Severity::Critical),
            finding(FindingId::NodeOom, Severity::Critical),
        ];
        assert_eq!(score(&Inputs::new(&held, &facts)).score, 90);
        assert!(Inputs::new(&held, &facts).restart_loop());
        // Not running: nothing says the loop ended.
        facts.node.kubelet_running = false;
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 90);
    }
}
