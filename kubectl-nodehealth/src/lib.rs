//! kubectl-nodehealth: why is this node's kubelet not responding, and what is the safe fix?
//!
//! Data flows one way: [`collect`] (the only module doing I/O) builds an [`evidence::Evidence`]
//! snapshot; [`checks`] turn it into findings; [`verdict`] ranks probable causes; [`render`]
//! prints the [`Report`]. Everything after collection is a pure function of the snapshot.

pub mod alerts;
pub mod bundle;
pub mod checks;
pub mod cli;
pub mod collect;
pub mod complete;
pub mod error;
pub mod evidence;
pub mod history;
pub use nodehealth_proto::metrics;
#[cfg(test)]
mod platform_tests;
pub mod pleg;
pub mod probe;
pub mod progress;
pub mod rbac;
pub mod recorder;
pub mod relists;
pub mod render;
pub mod scan;
pub mod units;
pub mod verdict;

use serde::{Deserialize, Serialize};

pub use error::Error;

/// Exit codes scripts can rely on.
pub mod exit {
    /// The node is healthy.
    pub const HEALTHY: u8 = 0;
    /// Problems were found.
    pub const PROBLEMS: u8 = 1;
    /// The tool could not diagnose (bad input, API unreachable, ...).
    pub const UNDIAGNOSED: u8 = 2;
}

/// The report's `apiVersion` (a contract).
pub const API_VERSION: &str = "nodehealth/v1";

/// The report's `kind`.
pub const REPORT_KIND: &str = "NodeHealthReport";

fn report_kind() -> String {
    REPORT_KIND.to_string()
}

/// The whole report: the JSON/YAML contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`REPORT_KIND`] (absent in bundles recorded before it was added).
    #[serde(default = "report_kind")]
    pub kind: String,
    /// Node name.
    pub node: String,
    /// When the evidence was collected.
    pub observed_at: jiff::Timestamp,
    /// The verdict (ranked causes).
    pub verdict: verdict::Verdict,
    /// Findings, worst first.
    pub findings: Vec<checks::Finding>,
    /// The evidence snapshot.
    pub evidence: evidence::Evidence,
}

/// Checks and verdict over a snapshot: pure.
pub fn diagnose(evidence: evidence::Evidence) -> Report {
    let checks::Assessment { findings, facts } = checks::assess(&evidence);
    let verdict = verdict::judge_with(&findings, &facts);
    Report {
        api_version: API_VERSION.to_string(),
        kind: REPORT_KIND.to_string(),
        node: evidence.node_name.clone(),
        observed_at: evidence.collected_at,
        verdict,
        findings,
        evidence,
    }
}

impl Report {
    /// 0 healthy, 1 problems found, 2 could not diagnose.
    ///
    /// Problems found win (1), even from partial evidence. Without problems, a report in which
    /// some checks could not run (`unknown`: a permission missing, an endpoint failing) is not a
    /// clean bill of health: 2, like a report without the Node object. Configuration risks alone
    /// keep 0.
    pub fn exit_code(&self) -> u8 {
        let problems = self.findings.iter().any(checks::Finding::is_real_problem)
            || self
                .verdict
                .causes
                .first()
                .is_some_and(|c| c.id != verdict::CauseId::Healthy);
        if problems {
            exit::PROBLEMS
        } else if self.evidence.node.data().is_none()
            || self.verdict.causes.is_empty()
            || self
                .findings
                .iter()
                .any(|f| f.severity == checks::Severity::Unknown)
        {
            exit::UNDIAGNOSED
        } else {
            exit::HEALTHY
        }
    }
}
