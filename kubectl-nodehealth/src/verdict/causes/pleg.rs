//! `pleg-slow`: relists slow or stuck — the kubelet cannot see container state changes.
//!
//! The kubelet's PLEG relists every second (pkg/kubelet/pleg/generic.go relist: ListPodSandbox +
//! ListContainers, then each changed pod's status); Healthy() fails when no relist succeeded for
//! 3 minutes ("PLEG is not healthy: pleg was last seen active ..."), and the node goes NotReady.
//! Below that: the degraded tier (relist p50 > 1 s, interval p50 > 2 s) and a stalled
//! `kubelet_pleg_last_seen_seconds`.

use super::{CauseId, Inputs, Score};
use crate::checks::{FindingId, Severity};

/// Score the PLEG cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::PlegSlow);
    if i.ready_pleg() {
        s.because(85, i.facts.ready.line.clone());
    }
    if let Some(w) = i.problem(&FindingId::PlegLastSeen) {
        let stuck = i.at_least(&FindingId::PlegLastSeen, Severity::Critical);
        s.because(if stuck { 80 } else { 55 }, w);
    }
    if let Some(w) = i.problem(&FindingId::PlegDuration) {
        let critical = i.at_least(&FindingId::PlegDuration, Severity::Critical);
        s.because(if critical { 70 } else { 45 }, w);
    }
    if let Some(w) = i.problem(&FindingId::PlegInterval) {
        s.because(45, w);
    }
    if let Some(w) = i.problem(&FindingId::PlegDiscards) {
        s.support(5, w);
    }
    if !s.raised() {
        return s;
    }
    // Where the relists' time goes, as far as the API side knows: the share of it the runtime's
    // list calls take (pleg-runtime-share), the pods every relist lists, the churn it re-reads.
    for id in [
        FindingId::PlegRuntimeShare,
        FindingId::PodDensity,
        FindingId::PodChurn,
    ] {
        if let Some(w) = i.problem(&id) {
            s.support(0, w);
        }
    }
    if i.at_least(&FindingId::RuntimeListLatency, Severity::Warning) || i.runtime_failing() {
        s.support(
            0,
            "the kubelet's runtime calls are slow or failing: the relists wait on the runtime",
        );
    } else if i.relist_stuck() {
        s.support(
            0,
            "no finished runtime call was slow, but a call that hangs shows in the metrics only when it returns: check `time crictl ps` on the node",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn a_stuck_relist_is_high_and_a_degraded_one_medium() {
        let facts = facts();
        let stuck = [finding(FindingId::PlegLastSeen, Severity::Critical)];
        assert_eq!(score(&Inputs::new(&stuck, &facts)).score, 80);
        let degraded = [finding(FindingId::PlegDuration, Severity::Warning)];
        assert_eq!(score(&Inputs::new(&degraded, &facts)).score, 45);
        assert_eq!(score(&Inputs::new(&[], &facts)).score, 0);
    }

    #[test]
    fn the_runtime_share_of_slow_relists_is_in_the_evidence() {
        let facts = facts();
        let f = [
            finding(FindingId::PlegDuration, Severity::Warning),
            finding(FindingId::PlegRuntimeShare, Severity::Warning),
        ];
        let s = score(&Inputs::new(&f, &facts));
        assert!(
            s.evidence
                .iter()
                .any(|l| l.starts_with("pleg-runtime-share")),
            "{s:?}"
        );
    }
}
