//! The verdict: ranked probable causes from a fixed vocabulary, each with the evidence chain
//! behind it, the safe fix and what not to do.
//!
//! It is an engine over named rules, not one function: one scorer per cause ([`causes`]) reads
//! the typed findings and facts and says how well they support its cause; then the reconcile
//! rules ([`reconcile`]), in a fixed and documented order, settle causes against their symptoms
//! (a runtime outage explains PLEG, a stuck sync loop and the endpoints that hang on it; an OOM
//! loop explains a kubelet that is "down"; the node side settles what the API side could not).
//! Last, [`advice`] writes the fix and the avoid for the node in front of it: its runtime, its
//! pending CSRs, and never a kubelet restart while a partition, a runtime outage or a
//! certificate problem explains the symptoms. Never "reboot the node" as the answer.
//!
//! The verdict reads only [`crate::checks::Assessment`]: typed findings and facts.

use serde::{Deserialize, Serialize};

use crate::checks::{Assessment, Facts, Finding, Severity, trace};
use crate::evidence::Layer;

pub mod advice;
pub mod causes;
pub mod reconcile;
mod signals;

pub use signals::{Inputs, Score, Scores};

/// The cause vocabulary (a contract: scripts key on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CauseId {
    /// Nothing wrong found.
    Healthy,
    /// PLEG relists slow or stuck.
    PlegSlow,
    /// The container runtime is hung or failing.
    RuntimeUnresponsive,
    /// Client certificate expired, not rotated, or not trusted.
    Certificate,
    /// The kubelet process is not running.
    KubeletDown,
    /// The kubelet is alive but starved or stuck.
    KubeletStarved,
    /// The node and the API server cannot talk.
    ApiPartition,
    /// Memory/disk/PID pressure.
    NodePressure,
}

impl CauseId {
    /// The cause with this vocabulary name (`pleg-slow`, ...), as the log catalogue names them.
    pub fn named(name: &str) -> Option<CauseId> {
        serde_json::from_value(serde_json::Value::from(name)).ok()
    }

    /// Every cause but `healthy`, in the order the verdict weighs ties: a cause whose advice is
    /// safe whatever the truth comes first (restoring a network path harms nothing; restarting
    /// a kubelet that was only cut off adds a reconciliation storm).
    pub const BY_SAFETY: [CauseId; 7] = [
        CauseId::ApiPartition,
        CauseId::Certificate,
        CauseId::RuntimeUnresponsive,
        CauseId::PlegSlow,
        CauseId::NodePressure,
        CauseId::KubeletDown,
        CauseId::KubeletStarved,
    ];
}

/// Where slow relists spend their time (needs the node probe; `unknown` API-side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attribution {
    /// I/O wait dominates.
    DiskIowait,
    /// CRI calls slow while the runtime is neither runnable nor in I/O wait.
    CriSocketStall,
    /// Run-queue wait dominates.
    CpuStarvation,
    /// CRI fast, relists slow.
    KubeletInternal,
    /// Not attributed (API-side only).
    Unknown,
}

impl From<&trace::Attribution> for Attribution {
    /// The trace's answer in the verdict's vocabulary (a disk's device goes into the evidence).
    fn from(a: &trace::Attribution) -> Self {
        match a {
            trace::Attribution::CpuStarvation => Attribution::CpuStarvation,
            trace::Attribution::DiskIowait { .. } => Attribution::DiskIowait,
            trace::Attribution::CriSocketStall => Attribution::CriSocketStall,
            trace::Attribution::KubeletInternal => Attribution::KubeletInternal,
            trace::Attribution::Unknown => Attribution::Unknown,
        }
    }
}

/// How sure the verdict is about a cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Plausible.
    Low,
    /// Supported.
    Medium,
    /// Strongly supported.
    High,
}

/// One probable cause.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cause {
    /// Vocabulary id.
    pub id: CauseId,
    /// Confidence.
    pub confidence: Confidence,
    /// Ranking score 0-100 (higher first).
    pub score: u8,
    /// One line.
    pub summary: String,
    /// The evidence chain.
    pub evidence: Vec<String>,
    /// The safe fix, with names filled in.
    pub fix: String,
    /// What not to do.
    pub avoid: String,
    /// For `pleg-slow` and `runtime-unresponsive`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attribution: Option<Attribution>,
}

/// The verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Ranked causes, most probable first. Empty when nothing could be diagnosed.
    pub causes: Vec<Cause>,
    /// Layers the verdict had.
    pub layers: Vec<Layer>,
    /// What the verdict did not have.
    pub limitations: Vec<String>,
    /// The platform the advice is written for, and what said so (absent in bundles recorded
    /// before it was added).
    #[serde(default)]
    pub platform: crate::checks::platform::Platform,
}

/// Scores at or above this are reported as causes.
pub const REPORT_SCORE: u8 = 30;

/// A score's confidence.
pub fn confidence(score: u8) -> Confidence {
    match score {
        70.. => Confidence::High,
        45..=69 => Confidence::Medium,
        _ => Confidence::Low,
    }
}

/// The verdict over an assessment.
pub fn judge(a: &Assessment) -> Verdict {
    judge_with(&a.findings, &a.facts)
}

/// The verdict over findings and facts: every scorer, then every reconcile rule in order, then
/// the report.
pub fn judge_with(findings: &[Finding], facts: &Facts) -> Verdict {
    let inputs = Inputs::new(findings, facts);
    let mut scores = Scores::new(causes::SCORERS.iter().map(|s| (s.score)(&inputs)));
    for rule in reconcile::RULES {
        (rule.apply)(&mut scores, &inputs);
    }
    assemble(scores, &inputs)
}

/// The reported causes, ranked, with their texts; `healthy` when nothing outranks it; what the
/// verdict lacked.
fn assemble(scores: Scores, inputs: &Inputs) -> Verdict {
    let facts = inputs.facts;
    let reported: Vec<CauseId> = scores
        .iter()
        .filter(|s| s.score >= REPORT_SCORE)
        .map(|s| s.id)
        .collect();
    let context = advice::Context::new(inputs, &reported);
    let attribution = facts
        .attribution
        .as_ref()
        .map(|a| Attribution::from(&a.attribution));
    let both_down_and_partition =
        reported.contains(&CauseId::KubeletDown) && reported.contains(&CauseId::ApiPartition);
    let mut causes = Vec::new();
    for s in scores.into_iter().filter(|s| s.score >= REPORT_SCORE) {
        let mut evidence = s.evidence;
        if both_down_and_partition && matches!(s.id, CauseId::KubeletDown | CauseId::ApiPartition) {
            evidence.push(advice::separation(&context));
        }
        evidence.retain(|line| !line.is_empty());
        evidence.dedup();
        let texts = advice::texts(s.id, &context);
        causes.push(Cause {
            id: s.id,
            confidence: confidence(s.score),
            score: s.score,
            summary: texts.summary,
            evidence,
            fix: texts.fix,
            avoid: texts.avoid,
            // Why relists or runtime calls are slow: the trace's answer, or "unknown" without one.
            attribution: matches!(s.id, CauseId::PlegSlow | CauseId::RuntimeUnresponsive)
                .then(|| attribution.unwrap_or(Attribution::Unknown)),
        });
    }
    let safety = |id: CauseId| CauseId::BY_SAFETY.iter().position(|c| *c == id);
    causes.sort_by_key(|c| (std::cmp::Reverse(c.score), safety(c.id)));

    if let Some(healthy) = healthy(inputs, causes.first().map_or(0, |c| c.score)) {
        causes.push(healthy);
        // Stable: on a tie, "healthy" stays after the causes found.
        causes.sort_by_key(|c| std::cmp::Reverse(c.score));
    }
    Verdict {
        causes,
        layers: facts.layers.clone(),
        limitations: limitations(inputs),
        platform: facts.platform.clone(),
    }
}

/// `healthy`, when the node is Ready and heartbeating and no cause reaches 60: high with nothing
/// found, medium with configuration risks or unchecked parts, low with real problems (which then
/// let any supported cause outrank it).
fn healthy(inputs: &Inputs, top: u8) -> Option<Cause> {
    use crate::checks::FindingId;
    use crate::checks::facts::ReadyStatus;
    let findings = inputs.findings;
    if inputs.facts.ready.status != ReadyStatus::True || inputs.lease_stale() || top >= 60 {
        return None;
    }
    let unchecked = findings
        .iter()
        .filter(|f| f.severity == Severity::Unknown)
        .count();
    let problems = findings.iter().filter(|f| f.is_real_problem()).count();
    let advisories = findings
        .iter()
        .filter(|f| f.severity.is_problem() && f.is_advisory())
        .count();
    let score = if problems > 0 {
        35
    } else if unchecked > 0 || advisories > 0 {
        60
    } else {
        90
    };
    let mut evidence = vec![inputs.facts.ready.line.clone()];
    if let Some(l) = findings.iter().find(|f| f.id == FindingId::Lease) {
        evidence.push(l.summary.clone());
    }
    if problems > 0 {
        evidence.push(format!(
            "{problems} finding(s) need attention but do not make the node unhealthy now"
        ));
    }
    if advisories > 0 {
        evidence.push(format!(
            "{advisories} configuration risk(s): see the configuration findings"
        ));
    }
    if unchecked > 0 {
        evidence.push(format!("{unchecked} check(s) could not run (see findings)"));
    }
    Some(Cause {
        id: CauseId::Healthy,
        confidence: confidence(score),
        score,
        summary: "the kubelet is Ready and heartbeating".to_string(),
        evidence,
        fix: if problems + advisories > 0 {
            "nothing urgent; review the findings below".to_string()
        } else {
            "nothing to do".to_string()
        },
        avoid: "do not restart or reboot a healthy node".to_string(),
        attribution: None,
    })
}

fn limitations(inputs: &Inputs) -> Vec<String> {
    let facts = inputs.facts;
    let mut out = Vec::new();
    match &facts.node.partial {
        Some(why) => out.push(format!(
            "node evidence is partial ({why}): missing sections were not judged"
        )),
        None if facts.node.collected => {}
        None => out.push(
            "API-side only: no node probe evidence (process liveness, CRI timing, certificates on disk)".to_string(),
        ),
    }
    if !facts.layers.contains(&Layer::Ebpf) {
        out.push(match &facts.node.trace_error {
            // Asked for with --trace and refused: say why, or the operator cannot fix it.
            Some(why) => format!("no eBPF attribution in this run: {why}"),
            None => "no eBPF attribution in this run".to_string(),
        });
    }
    if !facts.node_read {
        out.push("the Node object could not be read: the verdict has no Ready condition".into());
    }
    if !facts.metrics {
        out.push(
            "no kubelet metrics: PLEG, runtime, certificate and rest-client checks did not run"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests;
