//! `kubelet-down`: the kubelet process is not running — exited, stopped or frozen.
//!
//! From the API side: the node proxy's dial says it (pkg/registry/core/node/rest proxies to the
//! kubelet port): "connection refused" = nothing listens on the kubelet port; a TLS handshake
//! timeout = the port accepts but the process does not run. From the node side: no kubelet
//! process, or one stopped (state T) or in a frozen cgroup; its systemd unit not active.

use super::{CauseId, Inputs, Score};
use crate::checks::collection::DialError;
use crate::checks::{Component, FindingId, Severity};

/// Score the kubelet-down cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::KubeletDown);
    let not_reporting = i.not_reporting();
    let open = not_reporting && !i.certificate_signal();
    if let Some(p) = &i.facts.proxy {
        match p.dial {
            DialError::Refused => {
                s.because(if not_reporting { 85 } else { 60 }, p.line.clone());
                s.support(
                    0,
                    "connection refused: the node is up, nothing listens on the kubelet port",
                );
            }
            // A dial that times out never reached a listening socket: the node or the path is
            // down. A dead kubelet on a live node answers "connection refused".
            DialError::Timeout | DialError::NoRoute if open => s.because(40, p.line.clone()),
            DialError::Other if open => s.because(45, p.line.clone()),
            // The process exists (the kernel accepts on its port) but does not run.
            DialError::NoHandshake => {
                s.because(if not_reporting { 65 } else { 55 }, p.line.clone());
                s.support(
                    0,
                    "the kubelet's port accepts connections but the process never completes a TLS handshake: stopped (SIGSTOP), in a frozen cgroup, or starved to a standstill — not a partition (a cut-off kubelet still shakes hands); the node side tells which",
                );
            }
            _ => {}
        }
    }
    // A kubelet that answers nothing while it does not report: a stopped or frozen one answers
    // nothing either — until the API server drops an HTTP/2 connection it held to it, requests
    // hang there and no handshake timeout comes.
    if let Some(w) = i.problem(&FindingId::KubeletSlow)
        && open
        && i.dial() != Some(DialError::NoHandshake)
    {
        s.because(
            50,
            format!(
                "{w}, while it does not report: a stopped or frozen kubelet answers nothing either"
            ),
        );
    }
    if let Some(w) = i.problem(&FindingId::KubeletGone) {
        s.because(85, w);
    }
    if let Some(w) = i.problem(&FindingId::KubeletPaused) {
        s.because(90, w);
    }
    let unit = FindingId::Unit(Component::Kubelet);
    if let Some(w) = i.problem(&unit)
        && i.at_least(&unit, Severity::Critical)
    {
        s.because(80, w);
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
    use crate::checks::facts::ProxyFailure;

    fn proxy(dial: DialError) -> Option<ProxyFailure> {
        Some(ProxyFailure {
            dial,
            line: "GET /api/v1/nodes/node-a/proxy/healthz -> test".into(),
        })
    }

    #[test]
    fn refused_on_a_silent_node_is_down() {
        let mut facts = silent();
        facts.proxy = proxy(DialError::Refused);
        assert_eq!(score(&Inputs::new(&[], &facts)).score, 85);
    }

    #[test]
    fn a_dial_timeout_is_only_plausibly_down() {
        let mut facts = silent();
        facts.proxy = proxy(DialError::Timeout);
        assert_eq!(score(&Inputs::new(&[], &facts)).score, 40);
        // ... and not at all when the certificate explains the silence.
        let f = [finding(FindingId::KubeletAuth, Severity::Critical)];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 0);
    }

    #[test]
    fn a_paused_process_on_the_node_is_down_with_high_confidence() {
        let facts = facts();
        let f = [finding(FindingId::KubeletPaused, Severity::Critical)];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 90);
    }
}
