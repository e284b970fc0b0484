//! What the rules read and write: [`Inputs`] (typed findings and facts, with the questions the
//! rules ask of them) and [`Scores`] (one [`Score`] per cause).

use super::CauseId;
use crate::checks::collection::DialError;
use crate::checks::conditions::ReadyMessage;
use crate::checks::facts::ReadyStatus;
use crate::checks::{Component, Facts, Finding, FindingId, Severity};

/// A kubelet process up this long is out of a restart loop: the loops the kubelet meets restart
/// it within seconds (systemd's RestartSec, an OOM kill at its memory limit — 3-32 s measured at
/// 16 MiB, where the OOM rule still sees it held), and a partition starts no restarts at all.
pub const LOOP_OVER_SECONDS: f64 = 30.0;

/// The typed findings and facts, read-only.
pub struct Inputs<'a> {
    /// Findings.
    pub findings: &'a [Finding],
    /// Facts.
    pub facts: &'a Facts,
}

impl<'a> Inputs<'a> {
    /// Wrap findings and facts.
    pub fn new(findings: &'a [Finding], facts: &'a Facts) -> Self {
        Inputs { findings, facts }
    }

    /// Worst severity among the findings with this id (`ok` when there is none).
    pub fn sev(&self, id: &FindingId) -> Severity {
        self.findings
            .iter()
            .filter(|f| &f.id == id)
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }

    /// Whether a finding with this id has at least this severity.
    pub fn at_least(&self, id: &FindingId, s: Severity) -> bool {
        self.sev(id) >= s
    }

    /// The worst problem (warning or critical) with this id, as `id: summary`.
    pub fn problem(&self, id: &FindingId) -> Option<String> {
        self.findings
            .iter()
            .filter(|f| &f.id == id)
            .max_by_key(|f| f.severity)
            .filter(|f| f.severity.is_problem())
            .map(|f| format!("{}: {}", f.id, f.summary))
    }

    /// The Ready condition says NotReady with a PLEG message.
    pub fn ready_pleg(&self) -> bool {
        self.facts.ready.status == ReadyStatus::False
            && matches!(self.facts.ready.message, ReadyMessage::PlegUnhealthy { .. })
    }

    /// Ready is Unknown: the kubelet stopped reporting.
    pub fn unknown(&self) -> bool {
        self.facts.ready.status == ReadyStatus::Unknown
    }

    /// The lease is stale.
    pub fn lease_stale(&self) -> bool {
        self.at_least(&FindingId::Lease, Severity::Critical)
    }

    /// The kubelet does not report: Ready Unknown or a stale lease.
    pub fn not_reporting(&self) -> bool {
        self.unknown() || self.lease_stale()
    }

    /// The kubelet was (re)started, answers, and has not renewed its lease yet: its silence is
    /// its start, not a cut path or a death.
    pub fn fresh_kubelet_not_yet_heartbeating(&self) -> bool {
        self.facts.lease_predates_kubelet && self.facts.kubelet_answers
    }

    /// A relist that has not finished past the kubelet's threshold, or NotReady for PLEG.
    pub fn relist_stuck(&self) -> bool {
        self.ready_pleg() || self.at_least(&FindingId::PlegLastSeen, Severity::Critical)
    }

    /// The certificate explains a silent kubelet: the API server rejects its credentials, its
    /// client certificate is critical or expired on disk, its renewal fails, or its client CSR is
    /// pending while it does not report. Then "down" and "partition" are not raised from the
    /// same silence.
    pub fn certificate_signal(&self) -> bool {
        self.at_least(&FindingId::KubeletAuth, Severity::Warning)
            || self.at_least(&FindingId::CertClientTtl, Severity::Critical)
            || self.at_least(&FindingId::CertClientRenew, Severity::Warning)
            || self.at_least(&FindingId::NodeCertExpired, Severity::Critical)
            || (self.not_reporting() && !self.facts.pending_client_csrs.is_empty())
    }

    /// How the API server's dial to the kubelet failed, if it did.
    pub fn dial(&self) -> Option<DialError> {
        self.facts.proxy.as_ref().map(|p| p.dial)
    }

    /// The runtime is known to be down or hung (not merely slow): the kubelet says so, the
    /// agent's own calls hang or cannot connect, its socket has no listener, or the kubelet's
    /// runtime-backed endpoints hang while the others answer.
    pub fn runtime_down(&self) -> bool {
        self.facts.ready.runtime_down
            || self.at_least(&FindingId::NodeCri, Severity::Critical)
            || self.at_least(&FindingId::NodeRuntimeSocket, Severity::Critical)
            || self.at_least(&FindingId::KubeletWaitsOnRuntime, Severity::Warning)
    }

    /// The runtime answers with errors.
    pub fn runtime_failing(&self) -> bool {
        self.at_least(&FindingId::RuntimeErrors, Severity::Warning)
    }

    /// The kubelet keeps starting over — as the API server's start events say, unless the node
    /// side shows the loop has ended (see [`Self::kubelet_loop_over`]).
    pub fn restart_loop(&self) -> bool {
        self.at_least(&FindingId::KubeletRestarts, Severity::Critical) && !self.kubelet_loop_over()
    }

    /// The node side shows the kubelet now running out of any loop: up for
    /// [`LOOP_OVER_SECONDS`] and not held in an OOM loop. The API server's start events of the
    /// last minutes are then history (a loop healed, or a memory limit raised), not why the
    /// kubelet is silent now.
    pub fn kubelet_loop_over(&self) -> bool {
        let node = &self.facts.node;
        node.collected
            && node.kubelet_running
            && node
                .kubelet_uptime_seconds
                .is_some_and(|up| up >= LOOP_OVER_SECONDS)
            && !self.oom_loop()
    }

    /// The kernel keeps OOM-killing the kubelet or the runtime.
    pub fn oom_loop(&self) -> bool {
        self.at_least(&FindingId::NodeOom, Severity::Critical)
    }

    /// The node side shows the kubelet itself in trouble (not waiting on something else): a
    /// restart or OOM loop, a local healthz that times out, or its threads starved of CPU.
    pub fn kubelet_itself(&self) -> bool {
        self.restart_loop()
            || self.oom_loop()
            || self.at_least(&FindingId::KubeletUnresponsive, Severity::Warning)
            || self.at_least(
                &FindingId::CpuStarved(Component::Kubelet),
                Severity::Warning,
            )
    }

    /// The kubelet's healthz fails its `syncloop` check.
    pub fn syncloop_failing(&self) -> bool {
        self.at_least(&FindingId::Healthz, Severity::Critical)
    }
}

/// One cause's score and the evidence for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The cause.
    pub id: CauseId,
    /// 0-99.
    pub score: u8,
    /// Why, one line each.
    pub evidence: Vec<String>,
}

impl Score {
    /// A cause with nothing for it yet.
    pub fn new(id: CauseId) -> Self {
        Score {
            id,
            score: 0,
            evidence: Vec::new(),
        }
    }

    /// Raise the score to at least `score` and record why.
    pub fn because(&mut self, score: u8, why: impl Into<String>) {
        self.score = self.score.max(score);
        self.evidence.push(why.into());
    }

    /// Add supporting evidence: +`bonus` (capped at 99) when the cause is already raised.
    pub fn support(&mut self, bonus: u8, why: impl Into<String>) {
        if self.score > 0 {
            self.score = (self.score + bonus).min(99);
        }
        self.evidence.push(why.into());
    }

    /// Hold the score below `ceiling` (when it is at or above it), saying why.
    pub fn cap_below(&mut self, ceiling: u8, why: impl Into<String>) {
        if self.score >= ceiling {
            self.score = ceiling.saturating_sub(1);
            self.evidence.push(why.into());
        }
    }

    /// Whether the cause has any support.
    pub fn raised(&self) -> bool {
        self.score > 0
    }
}

/// Every cause's score.
#[derive(Debug, Clone)]
pub struct Scores(Vec<Score>);

impl Scores {
    /// From the scorers' results.
    pub fn new(scores: impl IntoIterator<Item = Score>) -> Self {
        Scores(scores.into_iter().collect())
    }

    /// A cause's score (created empty if no scorer made one).
    pub fn get(&mut self, id: CauseId) -> &mut Score {
        if let Some(i) = self.0.iter().position(|s| s.id == id) {
            return &mut self.0[i];
        }
        self.0.push(Score::new(id));
        self.0.last_mut().expect("just pushed")
    }

    /// A cause's score value.
    pub fn of(&self, id: CauseId) -> u8 {
        self.0.iter().find(|s| s.id == id).map_or(0, |s| s.score)
    }

    /// All scores.
    pub fn iter(&self) -> impl Iterator<Item = &Score> {
        self.0.iter()
    }

    /// All scores, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Score> {
        self.0.iter_mut()
    }
}

impl IntoIterator for Scores {
    type Item = Score;
    type IntoIter = std::vec::IntoIter<Score>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
