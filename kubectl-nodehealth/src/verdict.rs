//! The verdict: ranked probable causes from a fixed vocabulary, each with the evidence chain
//! behind it, the safe fix and what not to do.
//!
//! The decision tree is the operator guide's: Ready=False with "PLEG is not healthy" points at
//! runtime or kubelet slowness; Ready=Unknown with 401s points at the certificate; Ready=Unknown
//! with a stale lease and no certificate signal is a dead kubelet or a partition — and the two
//! need different fixes (never restart the kubelet during a partition). Never "reboot the node"
//! as the answer.

use serde::{Deserialize, Serialize};

use crate::checks::node::{paused_kubelet, resume_command};
use crate::checks::{DialError, Finding, Severity, dial_error, ids, parse_ready_message};
use crate::checks::{ReadyMessage, runtime_service, says_runtime_down};
use crate::evidence::{CsrState, Evidence, FailureKind, Layer, SIGNER_CLIENT, Step};

/// The cause vocabulary (a contract: scripts key on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

impl From<&nodehealth_proto::node::Attribution> for Attribution {
    /// The trace's answer in the verdict's vocabulary (a disk's device goes into the evidence).
    fn from(a: &nodehealth_proto::node::Attribution) -> Self {
        use nodehealth_proto::node::Attribution as Node;
        match a {
            Node::CpuStarvation => Attribution::CpuStarvation,
            Node::DiskIowait { .. } => Attribution::DiskIowait,
            Node::CriSocketStall => Attribution::CriSocketStall,
            Node::KubeletInternal => Attribution::KubeletInternal,
            Node::Unknown => Attribution::Unknown,
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
    /// For `pleg-slow` only.
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
}

/// Scores at or above this are reported as causes.
const REPORT_SCORE: u8 = 30;

fn confidence(score: u8) -> Confidence {
    match score {
        70.. => Confidence::High,
        45..=69 => Confidence::Medium,
        _ => Confidence::Low,
    }
}

struct Signals<'a> {
    findings: &'a [Finding],
}

impl Signals<'_> {
    /// Worst severity among findings whose id is `id` or starts with `id-`.
    fn sev(&self, id: &str) -> Severity {
        self.findings
            .iter()
            .filter(|f| f.id == id || f.id.starts_with(&format!("{id}-")))
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }

    fn at_least(&self, id: &str, s: Severity) -> bool {
        self.sev(id) >= s
    }

    fn summary(&self, id: &str) -> Option<String> {
        self.findings
            .iter()
            .filter(|f| f.id == id || f.id.starts_with(&format!("{id}-")))
            .max_by_key(|f| f.severity)
            .filter(|f| f.severity.is_problem())
            .map(|f| format!("{}: {}", f.id, f.summary))
    }
}

struct Builder {
    id: CauseId,
    score: u8,
    evidence: Vec<String>,
}

impl Builder {
    fn new(id: CauseId) -> Self {
        Builder {
            id,
            score: 0,
            evidence: Vec::new(),
        }
    }

    /// Raise the score to at least `score` and record why.
    fn because(&mut self, score: u8, why: impl Into<String>) {
        self.score = self.score.max(score);
        self.evidence.push(why.into());
    }

    /// Add supporting evidence: +`bonus`, capped at 99.
    fn support(&mut self, bonus: u8, why: impl Into<String>) {
        if self.score > 0 {
            self.score = (self.score + bonus).min(99);
        }
        self.evidence.push(why.into());
    }
}

/// Decide the verdict from the evidence and the findings.
pub fn decide(e: &Evidence, findings: &[Finding]) -> Verdict {
    let s = Signals { findings };
    let node = e.node.data();
    let ready = node.and_then(|n| n.condition("Ready"));
    let ready_status = ready.map(|c| c.status.as_str());
    let ready_msg = ready
        .and_then(|c| c.message.as_deref())
        .map(parse_ready_message)
        .unwrap_or(ReadyMessage::Other);
    let ready_line = ready
        .map(|c| {
            format!(
                "Ready={} ({}): {}",
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let unknown = ready_status == Some("Unknown");
    let lease_stale = s.at_least(ids::LEASE, Severity::Critical);
    let not_reporting = unknown || lease_stale;
    let service = runtime_service(e);

    // The node-proxy failure, if any: it separates "kubelet down" from "partition".
    let proxy_failure = [
        e.healthz.failure(),
        e.metrics_end.failure(),
        e.configz.failure(),
    ]
    .into_iter()
    .flatten()
    .find(|f| f.kind == FailureKind::KubeletUnreachable)
    .cloned();
    let dial = proxy_failure.as_ref().map(|f| dial_error(&f.message));
    let kubelet_answers = e.healthz.data().is_some() || e.metrics_end.data().is_some();

    let pending_client: Vec<String> = e
        .csrs
        .data()
        .map(|c| {
            c.iter()
                .filter(|c| c.state == CsrState::Pending && c.signer_name == SIGNER_CLIENT)
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();

    // --- certificate -------------------------------------------------------------------------
    let mut cert = Builder::new(CauseId::Certificate);
    if let Some(w) = s.summary(ids::KUBELET_AUTH) {
        if s.at_least(ids::KUBELET_AUTH, Severity::Critical) {
            cert.because(90, w);
        } else {
            cert.because(50, w);
        }
    }
    if let Some(w) = s.summary(ids::CERT_CLIENT_TTL) {
        if s.at_least(ids::CERT_CLIENT_TTL, Severity::Critical) {
            cert.because(if not_reporting { 90 } else { 75 }, w);
        } else {
            cert.because(35, w);
        }
    }
    if !pending_client.is_empty() {
        let why = format!("client CSR pending: {}", pending_client.join(", "));
        if not_reporting {
            cert.because(70, why);
        } else {
            cert.because(40, why);
        }
    }
    if let Some(w) = s.summary(ids::CERT_CLIENT_RENEW) {
        cert.because(45, w);
    }
    if let Some(w) = s.summary(ids::CSR_APPROVER) {
        cert.support(5, w);
    }
    if cert.score > 0 && unknown {
        cert.support(5, ready_line.clone());
    }
    let cert_signal = cert.score >= 45;

    // --- PLEG and runtime -------------------------------------------------------------------
    let mut pleg = Builder::new(CauseId::PlegSlow);
    let mut runtime = Builder::new(CauseId::RuntimeUnresponsive);
    if let ReadyMessage::PlegUnhealthy { .. } = ready_msg
        && ready_status == Some("False")
    {
        pleg.because(85, ready_line.clone());
    }
    // Past the PLEG threshold a down runtime's Ready message says both: "[container runtime is
    // down, PLEG is not healthy: ...]".
    let runtime_down_msg = ready_status == Some("False") && says_runtime_down(&ready_line);
    if runtime_down_msg {
        runtime.because(85, ready_line.clone());
    }
    if ready_msg == ReadyMessage::NetworkNotReady && ready_status == Some("False") {
        runtime.because(60, ready_line.clone());
        runtime.support(
            0,
            "the runtime reports its network not ready (NetworkReady=false): the CNI plugin is not ready — check its pods and /etc/cni/net.d on the node",
        );
    }
    let stuck = s.at_least(ids::PLEG_LAST_SEEN, Severity::Critical);
    if let Some(w) = s.summary(ids::PLEG_LAST_SEEN) {
        pleg.because(if stuck { 80 } else { 55 }, w);
    }
    if let Some(w) = s.summary(ids::PLEG_DURATION) {
        let critical = s.at_least(ids::PLEG_DURATION, Severity::Critical);
        pleg.because(if critical { 70 } else { 45 }, w);
    }
    if let Some(w) = s.summary(ids::PLEG_INTERVAL) {
        pleg.because(45, w);
    }
    if let Some(w) = s.summary(ids::PLEG_DISCARDS) {
        pleg.support(5, w);
    }
    let runtime_slow = s.summary(ids::RUNTIME_LIST_LATENCY);
    let runtime_errors = s.summary(ids::RUNTIME_ERRORS);
    if let Some(w) = &runtime_slow {
        let critical = s.at_least(ids::RUNTIME_LIST_LATENCY, Severity::Critical);
        runtime.because(if critical { 70 } else { 45 }, w.clone());
    }
    if let Some(w) = &runtime_errors {
        runtime.because(if stuck { 80 } else { 40 }, w.clone());
    }
    if pleg.score >= 80 && runtime.score == 0 {
        runtime.because(
            45,
            "a relist that never finishes is most often a runtime list call that never returns (the kubelet's runtime metrics only record finished calls)",
        );
    }
    if pleg.score > 0 && (runtime_slow.is_some() || runtime_errors.is_some()) {
        pleg.support(
            0,
            "the kubelet's runtime calls are slow or failing: the relists wait on the runtime",
        );
        // The runtime explains the slow relists: it is the cause, PLEG the symptom.
        runtime.support(
            5,
            "relists are slow while these runtime calls are: the runtime explains the PLEG symptom",
        );
    } else if pleg.score > 0 && runtime.score > 0 {
        pleg.support(
            0,
            "no finished runtime call was slow, but a call that hangs shows in the metrics only when it returns: check `time crictl ps` on the node",
        );
    } else if pleg.score > 0 && runtime_slow.is_none() && !stuck && e.metrics_end.data().is_some() {
        pleg.support(
            0,
            "the kubelet's own runtime list calls are fast while relists are slow: points inside the kubelet (CPU starvation or kubelet-internal); confirm with the node probe",
        );
    }

    // --- kubelet down / partition / starved --------------------------------------------------
    let mut down = Builder::new(CauseId::KubeletDown);
    let mut partition = Builder::new(CauseId::ApiPartition);
    let mut starved = Builder::new(CauseId::KubeletStarved);
    let many_stale = s.at_least(ids::CLUSTER_LEASES, Severity::Warning);
    if let Some(f) = &proxy_failure {
        let line = format!("{} -> {}", f.request, f.message);
        match dial {
            Some(DialError::Refused) => {
                down.because(if not_reporting { 85 } else { 60 }, line);
                down.support(
                    0,
                    "connection refused: the node is up, nothing listens on the kubelet port",
                );
            }
            // A dial that times out never reached a listening socket: the node or the path
            // is down. A dead kubelet on a live node answers "connection refused".
            Some(DialError::Timeout | DialError::NoRoute) if not_reporting && !cert_signal => {
                partition.because(50, line.clone());
                down.because(40, line);
            }
            Some(DialError::Other) if not_reporting && !cert_signal => {
                down.because(45, line.clone());
                partition.because(45, line);
            }
            // The process exists (the kernel accepts on its port) but does not run: a stopped
            // or frozen kubelet is down in all but name. Starvation to a standstill stays open.
            Some(DialError::NoHandshake) => {
                down.because(if not_reporting { 65 } else { 55 }, line.clone());
                down.support(
                    0,
                    "the kubelet's port accepts connections but the process never completes a TLS handshake: stopped (SIGSTOP), in a frozen cgroup, or starved to a standstill — not a partition (a cut-off kubelet still shakes hands); the node side tells which",
                );
                starved.because(45, line);
            }
            Some(DialError::NoResponse) => {
                starved.because(60, line);
                starved.support(
                    0,
                    "the kubelet holds its port but does not answer: frozen, deadlocked or starved",
                );
            }
            _ => {}
        }
    }
    if not_reporting && !cert_signal {
        if many_stale {
            partition.because(80, s.summary(ids::CLUSTER_LEASES).unwrap_or_default());
        }
        if kubelet_answers {
            partition.because(
                60,
                "the kubelet answers the API server through the node proxy, yet does not renew its lease: its own path to the API server is broken",
            );
        }
        if ready_line.contains("Unknown") {
            down.support(0, ready_line.clone());
            partition.support(0, ready_line.clone());
        }
        if let Some(w) = s.summary(ids::LEASE) {
            down.support(0, w.clone());
            partition.support(0, w);
        }
    }
    if let Some(w) = s.summary(ids::REST_ERRORS) {
        if w.contains("no answer") {
            partition.because(60, w);
        } else {
            partition.because(35, w);
        }
    }
    if let Some(w) = s.summary(ids::REST_LATENCY) {
        partition.because(35, w);
    }
    if s.at_least(ids::HEALTHZ, Severity::Critical) {
        starved.because(70, s.summary(ids::HEALTHZ).unwrap_or_default());
    }
    if let Some(w) = s.summary(ids::KUBELET_SLOW) {
        starved.because(55, w.clone());
        // A kubelet that cannot reach the API server cannot authorize the API server's requests
        // either (webhook authorization asks the API server), so it holds them unanswered: from
        // the API side, cut off and stuck look alike — unless the kubelet did not even shake
        // hands, which needs nothing from the API server.
        if not_reporting && !cert_signal && dial != Some(DialError::NoHandshake) {
            partition.because(
                55,
                format!("{w}, while it does not report: a kubelet cut off from the API server hangs the API server's requests too (it cannot authorize them)"),
            );
            starved.support(
                0,
                "from the API side a stuck kubelet and one cut off from the API server look alike; the node side separates them: `tracer-user probe --host-root /` (or --node-evidence)",
            );
            // So does one that does not run at all, while the API server still holds an HTTP/2
            // connection to it from before (its requests hang there instead of failing the
            // handshake).
            down.because(
                50,
                format!("{w}, while it does not report: a stopped or frozen kubelet answers nothing either"),
            );
        }
    }
    if let Some(w) = s.summary(ids::KUBELET_MEMORY) {
        starved.because(40, w);
    }
    // A kubelet that keeps starting over: its fresh-start symptoms (PLEG "has yet to be
    // successful", not ready, metrics gone) follow from the restarts.
    let restart_loop = s.at_least(ids::KUBELET_RESTARTS, Severity::Critical);
    if s.at_least(ids::KUBELET_RESTARTS, Severity::Warning)
        && let Some(w) = s.summary(ids::KUBELET_RESTARTS)
    {
        starved.because(if restart_loop { 90 } else { 50 }, w);
    }
    if let Some(w) = s.summary(ids::KUBELET_GOROUTINES) {
        starved.because(40, w);
    }
    if let Some(w) = s.summary(ids::PLEG_DISCARDS) {
        starved.support(5, w);
    }
    if let Some(w) = s.summary(ids::RESERVED)
        && starved.score > 0
    {
        starved.support(5, w);
    }

    // The kubelet answers, but cannot authorize the API server's requests because its own
    // calls to the API server fail: its credentials, or its path to the API server.
    if let Some(w) = s.summary(ids::KUBELET_AUTHZ) {
        if cert.score >= 45 {
            cert.support(5, w);
        } else {
            cert.because(50, w.clone());
            if not_reporting {
                partition.because(50, w);
                partition.support(
                    0,
                    "no 401s, expired TTL or pending CSR seen: the kubelet's path to the API server is as likely as its certificate",
                );
            }
        }
    }

    // Not reporting, nothing that tells a dead kubelet from a partition (e.g. no permission to
    // use the node proxy): both stay on the table, at low confidence.
    if not_reporting
        && !cert_signal
        && down.score == 0
        && partition.score == 0
        && starved.score < 45
    {
        for b in [&mut down, &mut partition] {
            b.because(35, "the kubelet stopped reporting and nothing here separates a dead kubelet from a partition");
        }
    }

    // --- node pressure -----------------------------------------------------------------------
    let mut pressure = Builder::new(CauseId::NodePressure);
    for id in [
        "node-pressure-memory",
        "node-pressure-disk",
        "node-pressure-pid",
    ] {
        if let Some(w) = s.summary(id) {
            pressure.because(if id.ends_with("memory") { 75 } else { 70 }, w);
        }
    }
    if let Some(w) = s.summary(ids::FS) {
        let critical = s.at_least(ids::FS, Severity::Critical);
        pressure.because(if critical { 55 } else { 30 }, w);
    }

    // --- the node layer (probe pod): what only the node can see -----------------------------
    use crate::checks::node::ids as node_ids;
    if let Some(w) = s.summary(node_ids::KUBELET_GONE) {
        down.because(85, w);
    }
    if let Some(w) = s.summary(node_ids::KUBELET_PAUSED) {
        down.because(90, w);
    }
    if let Some(w) = s.summary(node_ids::KUBELET_UNRESPONSIVE) {
        starved.because(80, w);
    }
    let oom_loop = s.at_least(node_ids::OOM, Severity::Critical);
    if oom_loop {
        starved.because(90, s.summary(node_ids::OOM).unwrap_or_default());
    } else if let Some(w) = s.summary(node_ids::OOM)
        && starved.score > 0
    {
        starved.support(5, w);
    }
    if let Some(w) = s.summary(node_ids::CRI) {
        let critical = s.at_least(node_ids::CRI, Severity::Critical);
        runtime.because(if critical { 85 } else { 55 }, w);
    }
    if let Some(w) = s.summary(node_ids::KUBELET_CRI_SLOW) {
        runtime.because(55, w);
    }
    // Starved of CPU, measured on the node: a runtime that gets no CPU answers late or not at
    // all; a kubelet that gets none relists and heartbeats late.
    let runtime_starved = format!("{}-runtime", node_ids::CPU_STARVED);
    let kubelet_starved = format!("{}-kubelet", node_ids::CPU_STARVED);
    if let Some(w) = s.summary(&runtime_starved) {
        let critical = s.at_least(&runtime_starved, Severity::Critical);
        runtime.because(if critical { 70 } else { 45 }, w);
    }
    if let Some(w) = s.summary(&kubelet_starved) {
        let critical = s.at_least(&kubelet_starved, Severity::Critical);
        starved.because(if critical { 70 } else { 45 }, w);
    }
    // Down because the OOM killer keeps killing it: starved of memory is the cause.
    if oom_loop && down.score >= starved.score {
        down.score = starved.score.saturating_sub(1);
        down.support(0, "it is being OOM-killed: see kubelet-starved");
    }
    if let Some(w) = s.summary(node_ids::CERT_EXPIRED) {
        cert.because(85, w);
    }
    if let Some(w) = s.summary(node_ids::API_UNREACHABLE) {
        partition.because(85, w);
    }
    // --- logs: the kubelet's and runtime's own words, as supporting evidence ----------------
    // A recent known message adds to a cause something else already raised (at most +10 from
    // logs per cause); on its own a log line raises nothing: a healed fault leaves lines behind.
    // Before the caps below: what the node layer and the trace settle, log lines do not undo.
    let mut from_logs: Vec<(CauseId, String)> = Vec::new();
    for f in findings
        .iter()
        .filter(|f| f.is_log_evidence() && f.severity.is_problem())
    {
        let Some(id) = crate::checks::logs::cause_of(&f.id).and_then(CauseId::named) else {
            continue;
        };
        from_logs.push((id, format!("{}: {}", f.id, f.summary)));
    }
    for b in [
        &mut cert,
        &mut pleg,
        &mut runtime,
        &mut down,
        &mut partition,
        &mut starved,
        &mut pressure,
    ] {
        let (before, cause) = (b.score, b.id);
        for (_, line) in from_logs.iter().filter(|(id, _)| *id == cause) {
            if b.score > 0 {
                b.support(5, line.clone());
                b.score = b.score.min(before.saturating_add(10)).min(99);
            }
        }
    }
    use crate::checks::logs::UNIT;
    if let Some(w) = s.summary(&format!("{UNIT}-kubelet")) {
        if s.at_least(&format!("{UNIT}-kubelet"), Severity::Critical) {
            down.because(80, w);
        } else {
            starved.support(5, w);
        }
    }
    if let Some(w) = s.summary(&format!("{UNIT}-runtime"))
        && runtime.score > 0
    {
        runtime.support(5, w);
    }

    if let Some(probe) = e.node_probe.data() {
        let n = &probe.evidence;
        // A live kubelet process (one that runs: not stopped, not frozen) is not "down"; a node that reaches the API server is not
        // partitioned from it: the node layer settles what the API side could not separate.
        let kubelet_alive = n
            .processes
            .as_ref()
            .and_then(|p| p.kubelet.as_ref())
            .is_some_and(|k| k.liveness != nodehealth_proto::node::Liveness::Gone)
            && paused_kubelet(n).is_none();
        if kubelet_alive && down.score > 0 {
            down.score = down.score.min(REPORT_SCORE - 1);
        }
        let api_reachable = n
            .api_server
            .as_ref()
            .and_then(|a| a.healthz.as_ref())
            .is_some_and(|h| h.status.is_some());
        if api_reachable && partition.score > 0 {
            partition.score = partition.score.min(REPORT_SCORE - 1);
        }
    }
    // --- eBPF attribution: why relists or CRI calls were slow -------------------------------
    let relists_slow = pleg.score > 0;
    let cpu_starved = s.at_least(&runtime_starved, Severity::Warning)
        || s.at_least(&kubelet_starved, Severity::Warning);
    let attribution = e
        .node_probe
        .data()
        .and_then(|p| {
            crate::checks::node::attribution(&p.evidence, relists_slow)
                // Nothing measured slow in the window, yet the node shows the kubelet or the
                // runtime starved of CPU: what the trace says of the whole window.
                .or_else(|| {
                    cpu_starved
                        .then(|| crate::checks::node::window_attribution(&p.evidence))
                        .flatten()
                })
        })
        .map(|(a, line)| (Attribution::from(&a), line));
    if let Some((a, line)) = &attribution {
        let runtime_hung = s.at_least(node_ids::CRI, Severity::Critical)
            || runtime_errors.is_some()
            || runtime_down_msg;
        if pleg.score > 0 {
            pleg.support(10, line.clone());
            // A runtime that answers, only slowly, is why relists are slow: PLEG is what the
            // operator meets and the attribution says where the time goes.
            if !runtime_hung && *a != Attribution::Unknown && runtime.score >= pleg.score {
                runtime.score = pleg.score.saturating_sub(1);
            }
        }
        if runtime.score > 0 {
            runtime.support(0, line.clone());
        }
    }

    if let Some(w) = s.summary(node_ids::POD_NOT_STARTED) {
        for b in [
            &mut pleg,
            &mut runtime,
            &mut cert,
            &mut partition,
            &mut down,
            &mut starved,
        ] {
            if b.score > 0 {
                b.support(10, w.clone());
            }
        }
    }

    // A restart loop explains a PLEG that "has yet to be successful" and a runtime the fresh
    // kubelet has not reached yet: the loop is the cause.
    if restart_loop {
        for b in [&mut pleg, &mut runtime] {
            if b.score >= starved.score {
                b.score = starved.score.saturating_sub(1);
                b.support(
                    0,
                    "the kubelet keeps restarting: a kubelet minutes or seconds old has not relisted or reached its runtime yet",
                );
            }
        }
    }

    // A runtime known to be down stops the relists and hangs the kubelet's metrics and stats
    // too (their collectors ask the runtime): there those are its symptoms, not causes of their
    // own — unless the node shows the kubelet itself starved or restarting.
    let runtime_down = runtime_down_msg || s.at_least(node_ids::CRI, Severity::Critical);
    if runtime_down && runtime.score > 0 {
        let kubelet_itself = restart_loop
            || oom_loop
            || s.summary(node_ids::KUBELET_UNRESPONSIVE).is_some()
            || s.at_least(&kubelet_starved, Severity::Warning);
        let top = runtime.score;
        if pleg.score >= top {
            pleg.score = top.saturating_sub(1);
            pleg.support(
                0,
                "the runtime is down: relists wait on it (PLEG is the symptom)",
            );
        }
        if starved.score >= top && !kubelet_itself {
            starved.score = top.saturating_sub(1);
            starved.support(
                0,
                "the runtime is down: the kubelet's metrics and stats wait on it too",
            );
        }
    }

    // --- assemble ----------------------------------------------------------------------------
    let partition_or_down = down.score > 0 && partition.score > 0;
    let separation = "from the API side a dead kubelet and a partition look alike (no lease renewals, the API server cannot reach the kubelet). What separates them: `connection refused` from the node proxy = kubelet not running; timeouts = node or network; many nodes stale at once = control plane or network; a node that is powered off looks like a partition too. On the node (SSH): `systemctl is-active kubelet`, and `curl -k https://<apiserver>:6443/healthz` (200 or 401 = reachable); or `tracer-user probe`";
    let mut causes = Vec::new();
    for b in [cert, pleg, runtime, down, partition, starved, pressure] {
        if b.score < REPORT_SCORE {
            continue;
        }
        let mut evidence = b.evidence;
        if partition_or_down && matches!(b.id, CauseId::KubeletDown | CauseId::ApiPartition) {
            evidence.push(separation.to_string());
        }
        evidence.retain(|line| !line.is_empty());
        let (summary, fix, avoid) = texts(b.id, service, &pending_client, e);
        causes.push(Cause {
            id: b.id,
            confidence: confidence(b.score),
            score: b.score,
            summary,
            evidence,
            fix,
            avoid,
            // Why relists or runtime calls are slow: the trace's answer, or "unknown" without one.
            attribution: matches!(b.id, CauseId::PlegSlow | CauseId::RuntimeUnresponsive).then(
                || {
                    attribution
                        .as_ref()
                        .map(|(a, _)| *a)
                        .unwrap_or(Attribution::Unknown)
                },
            ),
        });
    }
    causes.sort_by_key(|c| std::cmp::Reverse(c.score));

    let ready_true = ready_status == Some("True");
    let top = causes.first().map_or(0, |c| c.score);
    if ready_true && !lease_stale && top < 60 {
        let unchecked = findings
            .iter()
            .filter(|f| f.severity == Severity::Unknown)
            .count();
        let problems = findings.iter().filter(|f| f.is_real_problem()).count();
        let advisories = findings
            .iter()
            .filter(|f| f.severity.is_problem() && f.is_advisory())
            .count();
        // Real problems let any supported cause outrank "healthy".
        let score = if problems > 0 {
            35
        } else if unchecked > 0 || advisories > 0 {
            60
        } else {
            90
        };
        let mut evidence = vec![ready_line.clone()];
        if let Some(l) = findings
            .iter()
            .find(|f| f.id == ids::LEASE)
            .map(|f| f.summary.clone())
        {
            evidence.push(l);
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
        causes.push(Cause {
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
        });
        // Stable: on a tie, "healthy" stays after the causes found.
        causes.sort_by_key(|c| std::cmp::Reverse(c.score));
    }

    let mut limitations = Vec::new();
    match &e.node_probe {
        Step::Collected { data } if data.partial => limitations.push(format!(
            "node evidence is partial ({}): missing sections were not judged",
            data.stream_error.as_deref().unwrap_or("stream ended early")
        )),
        Step::Collected { .. } => {}
        _ => limitations.push(
            "API-side only: no node probe evidence (process liveness, CRI timing, certificates on disk)".to_string(),
        ),
    }
    if !e.layers.contains(&Layer::Ebpf) {
        limitations.push("no eBPF attribution in this run".to_string());
    }
    if matches!(e.node, Step::Failed { .. }) {
        limitations
            .push("the Node object could not be read: the verdict has no Ready condition".into());
    }
    if e.metrics_end.data().is_none() {
        limitations.push(
            "no kubelet metrics: PLEG, runtime, certificate and rest-client checks did not run"
                .into(),
        );
    }
    Verdict {
        causes,
        layers: e.layers.clone(),
        limitations,
    }
}

/// Summary, fix and what-not-to-do for a cause, with the real names filled in.
fn texts(
    id: CauseId,
    service: &str,
    pending_client: &[String],
    e: &Evidence,
) -> (String, String, String) {
    let node = &e.node_name;
    match id {
        CauseId::Healthy => (String::new(), String::new(), String::new()),
        CauseId::Certificate => {
            let approve = if pending_client.is_empty() {
                String::new()
            } else {
                format!(
                    "approve the pending client CSR: {}; ",
                    pending_client
                        .iter()
                        .map(|n| format!("`kubectl certificate approve {n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            (
                "the kubelet's client certificate is expired, unrotated or rejected".into(),
                format!(
                    "{approve}make sure kube-controller-manager runs (it auto-approves kubelet client CSRs); on {node}: `openssl x509 -in /var/lib/kubelet/pki/kubelet-client-current.pem -noout -dates` and check NTP sync (skew breaks validation); if the certificate expired and a bootstrap kubeconfig exists, restarting the kubelet requests a new one — approve that CSR. If the API server was unreachable when it expired, restore connectivity first"
                ),
                "do not reboot the node or delete /var/lib/kubelet/pki blindly: neither renews the certificate".into(),
            )
        }
        CauseId::PlegSlow => (
            "PLEG relists are slow or stuck: the kubelet cannot see container state changes".into(),
            format!(
                "find where relist time goes before restarting anything: on {node} `time crictl ps` (slow = runtime, fast = inside the kubelet), disk iowait (`iostat -x 1`), the runtime's and kubelet's CPU; if the runtime is hung, `systemctl restart {service}` (containers survive through their shims; check workload tolerance); reduce pod density or churn if overloaded"
            ),
            "do not reboot the node or restart the kubelet first: that destroys the evidence (goroutine dump) and fixes neither a slow runtime nor a slow disk".into(),
        ),
        CauseId::RuntimeUnresponsive => (
            format!("the container runtime ({service}) is hung or failing"),
            format!(
                "on {node}: `timeout 10 crictl info`, `systemctl status {service}`, `journalctl -u {service} --since -15m`; if it is hung, `systemctl restart {service}` — running containers keep running through their shims, but check workload tolerance first; if orphaned shims block state queries, drain the node, then restart {service}"
            ),
            "do not kill containerd-shim processes by hand (leaves defunct containers); do not reboot the node as a first step".into(),
        ),
        CauseId::KubeletDown => match e.node_probe.data().and_then(|p| paused_kubelet(&p.evidence)) {
            Some((pid, stopped)) => (
                format!(
                    "the kubelet is not running: its process (pid {pid}) is {}",
                    if stopped { "stopped" } else { "in a frozen cgroup" }
                ),
                format!(
                    "on {node}: resume it — {}; then find who paused it (a checkpoint or backup agent, `systemctl freeze`, a debugger) so it does not happen again",
                    resume_command(pid, stopped)
                ),
                "do not restart or kill the kubelet: resuming it loses nothing, a restart loses its state and adds a burst of CRI and API calls; do not reboot the node".into(),
            ),
            None => (
                "the kubelet is not running (exited, or its process stopped or frozen)".into(),
                format!(
                    "on {node}: `systemctl status kubelet`, `journalctl -u kubelet -b | tail -100`, `dmesg | grep -i -e oom -e 'hung task'`; if its state is T (`ps -o stat= -C kubelet`) or its cgroup is frozen, resume it (`kill -CONT`, or thaw the cgroup); otherwise `systemctl start kubelet`"
                ),
                "do not reboot the node: its containers are still running; do not restart anything if this is a partition (see evidence)".into(),
            ),
        },
        CauseId::KubeletStarved => (
            "the kubelet is alive but starved or stuck".into(),
            format!(
                "keep the goroutine dump (captured before any restart); `kubectl cordon {node}`, relieve pressure by draining pods, raise kubeReserved/systemReserved; only then restart: `systemctl restart kubelet` (expect a burst of CRI and API calls)"
            ),
            "do not restart the kubelet before the goroutine dump is saved: the restart destroys the evidence; do not reboot the node".into(),
        ),
        CauseId::ApiPartition => (
            "the node and the API server cannot talk (partition)".into(),
            "restore the network path or the control plane: load balancer, DNS, firewall, routes, API server health; from the node `curl -k https://<apiserver>:6443/healthz` (200 or 401 = reachable)".into(),
            "do NOT restart the kubelet: it keeps pods running while disconnected, and a restart adds a reconciliation storm when the path returns; do not reboot the node".into(),
        ),
        CauseId::NodePressure => (
            "the node is under resource pressure".into(),
            format!(
                "`kubectl cordon {node}`; free the resource under pressure (see findings): evictable pods, images (`crictl rmi --prune`), logs; raise kubeReserved/systemReserved so the kubelet is protected"
            ),
            "do not reboot the node: pressure returns with the same workload".into(),
        ),
    }
}

#[cfg(test)]
mod tests;
