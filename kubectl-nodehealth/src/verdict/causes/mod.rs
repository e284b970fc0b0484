//! One scorer per cause: how well the findings and facts support it, on its own. Scorers never
//! read another cause's score; weighing causes against each other is the reconcile rules' job.
//!
//! Score bands: 70+ high (the kubelet or the kernel says so, or the node side shows it), 45-69
//! medium (supported), 30-44 low (plausible), below 30 not reported.

use super::{CauseId, Inputs, Score};

mod certificate;
mod kubelet_down;
mod partition;
mod pleg;
mod pressure;
mod runtime;
mod starved;

/// A scorer: one cause, one function.
pub struct Scorer {
    /// The cause it scores.
    pub cause: CauseId,
    /// The scorer.
    pub score: fn(&Inputs) -> Score,
}

/// Every cause's scorer.
pub const SCORERS: &[Scorer] = &[
    Scorer {
        cause: CauseId::Certificate,
        score: certificate::score,
    },
    Scorer {
        cause: CauseId::PlegSlow,
        score: pleg::score,
    },
    Scorer {
        cause: CauseId::RuntimeUnresponsive,
        score: runtime::score,
    },
    Scorer {
        cause: CauseId::KubeletDown,
        score: kubelet_down::score,
    },
    Scorer {
        cause: CauseId::ApiPartition,
        score: partition::score,
    },
    Scorer {
        cause: CauseId::KubeletStarved,
        score: starved::score,
    },
    Scorer {
        cause: CauseId::NodePressure,
        score: pressure::score,
    },
];

#[cfg(test)]
pub(crate) mod test_support {
    //! Inputs for the scorer and rule tests: findings by id and severity, facts of a Ready node.
    use crate::checks::facts::{Facts, GoroutineDump, NodeSide, Ready, ReadyStatus};
    use crate::checks::runtime::{RuntimeIdentity, RuntimeKind};
    use crate::checks::{Domain, Finding, FindingId, Severity};
    use crate::relists::PlegMode;

    /// A finding with this id and severity (domain irrelevant to the verdict).
    pub fn finding(id: FindingId, severity: Severity) -> Finding {
        Finding {
            summary: format!("{id} test"),
            id,
            domain: Domain::Node,
            severity,
            evidence: vec![],
            remediation: None,
        }
    }

    /// The facts of a Ready node seen from the API side, containerd.
    pub fn facts() -> Facts {
        Facts {
            node_name: "node-a".into(),
            layers: vec![crate::evidence::Layer::Api],
            node_read: true,
            ready: Ready {
                status: ReadyStatus::True,
                message: crate::checks::conditions::ReadyMessage::Other,
                runtime_down: false,
                line: "Ready=True (KubeletReady): kubelet is posting ready status".into(),
            },
            proxy: None,
            kubelet_answers: true,
            pending_client_csrs: vec![],
            runtime: RuntimeIdentity {
                kind: RuntimeKind::Containerd,
                from: "test".into(),
            },
            platform: Default::default(),
            node: NodeSide::default(),
            attribution: None,
            metrics: true,
            goroutine_dump: GoroutineDump::Captured,
            pleg: PlegMode {
                evented: false,
                relist_period_seconds: 1.0,
                unhealthy_after_seconds: 180.0,
                from: "test".into(),
            },
            relists: None,
            kubelet_requests_unanswered: false,
            lease_predates_kubelet: false,
            api_server_from_node: None,
            history: Vec::new(),
            recorder_silent_with_kubelet: None,
        }
    }

    /// Facts of a node that stopped reporting.
    pub fn silent() -> Facts {
        let mut f = facts();
        f.ready = Ready {
            status: ReadyStatus::Unknown,
            message: crate::checks::conditions::ReadyMessage::StoppedPosting,
            runtime_down: false,
            line: "Ready=Unknown (NodeStatusUnknown): Kubelet stopped posting node status.".into(),
        };
        f.kubelet_answers = false;
        f
    }
}
