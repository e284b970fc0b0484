//! `certificate`: the kubelet's client certificate is expired, unrotated or rejected.
//!
//! The guide's branch "Unknown + 401 → certificate": the API server answers the kubelet 401 when
//! its certificate expired or is not trusted (with rotation on, an expired certificate makes the
//! kubelet send none: 403 as anonymous — kubelet_auth_errors counts both); the certificate
//! manager's TTL gauge and renew-error counter (pkg/kubelet/certificate/kubelet.go); the client
//! CSR the kubelet files for a new certificate and that kube-controller-manager's csrapproving
//! controller approves; the certificate on disk as the agent reads it.

use super::{CauseId, Inputs, Score};
use crate::checks::{CertRole, FindingId, Severity};

/// Score the certificate cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::Certificate);
    let not_reporting = i.not_reporting();
    if let Some(w) = i.problem(&FindingId::KubeletAuth) {
        let critical = i.at_least(&FindingId::KubeletAuth, Severity::Critical);
        s.because(if critical { 90 } else { 50 }, w);
    }
    if let Some(w) = i.problem(&FindingId::CertClientTtl) {
        if i.at_least(&FindingId::CertClientTtl, Severity::Critical) {
            s.because(if not_reporting { 90 } else { 75 }, w);
        } else {
            s.because(35, w);
        }
    }
    if !i.facts.pending_client_csrs.is_empty() {
        let why = format!(
            "client CSR pending: {}",
            i.facts.pending_client_csrs.join(", ")
        );
        s.because(if not_reporting { 70 } else { 40 }, why);
    }
    if let Some(w) = i.problem(&FindingId::CertClientRenew) {
        s.because(45, w);
    }
    if let Some(w) = i.problem(&FindingId::NodeCertExpired) {
        s.because(85, w);
    }
    if let Some(w) = i.problem(&FindingId::NodeCertExpiring(CertRole::Client)) {
        let critical = i.at_least(
            &FindingId::NodeCertExpiring(CertRole::Client),
            Severity::Critical,
        );
        s.because(if critical { 60 } else { 35 }, w);
    }
    if s.raised() && i.unknown() {
        s.support(5, i.facts.ready.line.clone());
    }
    // The kubelet answers, but cannot authorize the API server's requests: its own calls to the
    // API server fail — its credentials, or its path (the partition scorer weighs the path). The
    // answer came within the plugin's timeout, so the kubelet's SubjectAccessReview got a quick
    // answer (a rejection) more often than it hung on a cut path: a cut-off kubelet hangs the
    // requests instead (kubelet-slow-to-answer). Hence a little above the partition's 50.
    if let Some(w) = i.problem(&FindingId::KubeletAuthz) {
        if s.score >= 45 {
            s.support(5, w);
        } else {
            s.because(55, w);
        }
    }
    if let Some(w) = i.problem(&FindingId::CsrApprover) {
        s.support(5, w);
    }
    // A clock off the signer's makes valid certificates look expired or not yet valid.
    if let Some(w) = i.problem(&FindingId::NodeClock) {
        s.support(5, w);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn a_401_on_a_silent_node_is_the_certificate_with_high_confidence() {
        let f = [finding(FindingId::KubeletAuth, Severity::Critical)];
        let facts = silent();
        let s = score(&Inputs::new(&f, &facts));
        assert!(s.score >= 90, "{s:?}");
    }

    #[test]
    fn a_pending_client_csr_weighs_more_when_the_kubelet_stopped_reporting() {
        let mut facts = facts();
        facts.pending_client_csrs = vec!["csr-1".into()];
        let reporting = score(&Inputs::new(&[], &facts)).score;
        facts.ready = silent().ready;
        let silent = score(&Inputs::new(&[], &facts)).score;
        assert_eq!((reporting, silent), (40, 75));
    }

    #[test]
    fn an_authorization_failure_alone_is_medium() {
        let f = [finding(FindingId::KubeletAuthz, Severity::Critical)];
        let facts = facts();
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 55);
    }
}
