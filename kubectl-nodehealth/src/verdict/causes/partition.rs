//! `api-partition`: the node and the API server cannot talk.
//!
//! The kubelet keeps its pods running while cut off (its sync loop needs nothing from the API
//! server), stops renewing its Lease, and the node lifecycle controller marks it Unknown after
//! node-monitor-grace-period (pkg/controller/nodelifecycle). What separates it from a dead
//! kubelet: a kubelet that still answers the API server's node proxy, its own requests that get
//! no answer (`rest_client_requests_total{code="<error>"}`), many nodes stale at once, and from the
//! node side an API server it cannot reach. Restarting the kubelet is exactly the wrong fix.

use super::{CauseId, Inputs, Score};
use crate::checks::FindingId;
use crate::checks::collection::DialError;

/// Score the partition cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::ApiPartition);
    let not_reporting = i.not_reporting();
    let open = not_reporting && !i.certificate_signal();
    if let Some(p) = &i.facts.proxy {
        match p.dial {
            DialError::Timeout | DialError::NoRoute if open => s.because(50, p.line.clone()),
            DialError::Other if open => s.because(45, p.line.clone()),
            _ => {}
        }
    }
    if open {
        if let Some(w) = i.problem(&FindingId::ClusterLeases) {
            s.because(80, w);
        }
        if i.facts.kubelet_answers && !i.fresh_kubelet_not_yet_heartbeating() {
            s.because(
                60,
                "the kubelet answers the API server through the node proxy, yet does not renew its lease: its own path to the API server is broken",
            );
        }
    }
    if let Some(w) = i.problem(&FindingId::RestErrors) {
        s.because(
            if i.facts.kubelet_requests_unanswered {
                60
            } else {
                35
            },
            w,
        );
    }
    if let Some(w) = i.problem(&FindingId::RestLatency) {
        s.because(35, w);
    }
    // A kubelet that cannot reach the API server cannot authorize the API server's requests either
    // (webhook authorization asks the API server), so it holds them unanswered: from the API side,
    // cut off and stuck look alike — unless it did not even shake hands, which needs nothing from
    // the API server.
    if let Some(w) = i.problem(&FindingId::KubeletSlow)
        && open
        && i.dial() != Some(DialError::NoHandshake)
    {
        s.because(
            55,
            format!("{w}, while it does not report: a kubelet cut off from the API server hangs the API server's requests too (it cannot authorize them)"),
        );
    }
    if let Some(w) = i.problem(&FindingId::KubeletAuthz)
        && not_reporting
        && !i.certificate_signal()
    {
        s.because(50, w);
        s.support(
            0,
            "no 401s, expired TTL or pending CSR seen: the kubelet's path to the API server is as likely as its certificate",
        );
    }
    if let Some(w) = i.problem(&FindingId::NodeApiUnreachable) {
        s.because(85, w);
    }
    if s.raised() && open {
        s.support(0, i.facts.ready.line.clone());
        if let Some(w) = i.problem(&FindingId::Lease) {
            s.support(0, w);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::checks::Severity;

    #[test]
    fn many_stale_leases_on_a_silent_node_are_a_partition() {
        let facts = silent();
        let f = [finding(FindingId::ClusterLeases, Severity::Warning)];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 80);
    }

    #[test]
    fn a_kubelet_that_answers_but_does_not_renew_its_lease_has_lost_its_path() {
        let mut facts = silent();
        facts.kubelet_answers = true;
        assert_eq!(score(&Inputs::new(&[], &facts)).score, 60);
    }

    /// Seen with runtime-slow-list at 3 s: the fault restarts the kubelet onto the CRI proxy, and
    /// the new kubelet renews its lease only a minute later. The stale lease was the previous
    /// process's.
    #[test]
    fn a_restarted_kubelet_that_has_not_renewed_its_lease_yet_is_not_cut_off() {
        let mut facts = silent();
        facts.kubelet_answers = true;
        facts.lease_predates_kubelet = true;
        assert_eq!(score(&Inputs::new(&[], &facts)).score, 0);
    }

    #[test]
    fn the_node_not_reaching_the_api_server_is_high() {
        let facts = facts();
        let f = [finding(FindingId::NodeApiUnreachable, Severity::Critical)];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 85);
    }
}
