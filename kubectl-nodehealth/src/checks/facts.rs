//! Typed facts the verdict needs beside the findings: not judgements (those are findings), but
//! the names and states the rules and the advice are written with — which runtime runs, which
//! CSR is pending, how the API server's dial to the kubelet failed, whether the node agent saw a
//! live kubelet. Gathered once from the evidence, so the verdict never reads raw evidence or
//! finding prose.

use nodehealth_proto::node::Liveness;

use super::collection::{DialError, dial_error};
use super::conditions::{ReadyMessage, parse_ready_message, says_runtime_down};
use super::node::paused_kubelet;
use super::runtime::{RuntimeIdentity, identity};
use super::trace::{self, Attributed};
use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{CsrState, Evidence, FailureKind, Layer, SIGNER_CLIENT, Step};
use crate::relists::{PlegMode, RelistWindow, pleg_mode, relist_window};

/// The Ready condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyStatus {
    /// Ready.
    True,
    /// NotReady: the kubelet says why.
    False,
    /// The kubelet stopped reporting.
    Unknown,
    /// No Ready condition, or no Node object.
    Missing,
}

/// The Ready condition, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// Status.
    pub status: ReadyStatus,
    /// The message, parsed.
    pub message: ReadyMessage,
    /// The message says the runtime is down (also next to PLEG: "[container runtime is down,
    /// PLEG is not healthy: ...]").
    pub runtime_down: bool,
    /// `Ready=<status> (<reason>): <message>`, for evidence.
    pub line: String,
}

/// How the API server's node proxy failed to reach the kubelet.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyFailure {
    /// The dial's failure, classified.
    pub dial: DialError,
    /// `<request> -> <message>`.
    pub line: String,
}

/// The goroutine dump: whether it is in hand.
#[derive(Debug, Clone, PartialEq)]
pub enum GoroutineDump {
    /// Captured (kept in the bundle).
    Captured,
    /// The kubelet's profiling handler is off.
    Disabled,
    /// Not taken, and why.
    NotTaken(String),
}

/// What the node side showed (the probe pod's or the standalone agent's evidence).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSide {
    /// Node evidence was collected.
    pub collected: bool,
    /// Why it is partial, when it is.
    pub partial: Option<String>,
    /// A kubelet process exists and runs (not gone, not stopped, not frozen).
    pub kubelet_running: bool,
    /// How long the running kubelet process has been up (with `kubelet_running`).
    pub kubelet_uptime_seconds: Option<f64>,
    /// A kubelet process that exists but does not run: its pid and whether it is stopped (else
    /// frozen).
    pub paused_kubelet: Option<(u32, bool)>,
    /// The node reached the API server (an anonymous healthz got an HTTP answer).
    pub api_reachable: bool,
    /// The node runs systemd, when the agent could tell.
    pub systemd: Option<bool>,
    /// The runtime's systemd unit and its `KillMode`, when the agent read them.
    pub runtime_unit: Option<(String, String)>,
    /// Why the agent's eBPF tracer did not attach, when it was asked to and did not.
    pub trace_error: Option<String>,
}

/// Everything typed the verdict reads besides the findings.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The node's name.
    pub node_name: String,
    /// Layers that contributed.
    pub layers: Vec<Layer>,
    /// The Node object was read.
    pub node_read: bool,
    /// The Ready condition.
    pub ready: Ready,
    /// The first node-proxy failure that says the API server could not reach the kubelet.
    pub proxy: Option<ProxyFailure>,
    /// The kubelet answered healthz or metrics through the API server.
    pub kubelet_answers: bool,
    /// Names of this node's pending client CSRs.
    pub pending_client_csrs: Vec<String>,
    /// The runtime and what said so.
    pub runtime: RuntimeIdentity,
    /// The platform and what said so.
    pub platform: super::platform::Platform,
    /// The node side.
    pub node: NodeSide,
    /// The trace's attribution of slow relists or calls, when there was a trace.
    pub attribution: Option<Attributed>,
    /// The kubelet's metrics were scraped at the end of the window.
    pub metrics: bool,
    /// The goroutine dump.
    pub goroutine_dump: GoroutineDump,
    /// The kubelet's PLEG.
    pub pleg: PlegMode,
    /// The window's relists and list calls.
    pub relists: Option<RelistWindow>,
    /// Some of the kubelet's own requests to the API server got no answer at all in the window
    /// (`rest_client_requests_total{code="<error>"}` rose): its path to the API server.
    pub kubelet_requests_unanswered: bool,
    /// The lease was last renewed before the running kubelet process started: a kubelet that was
    /// (re)started and has not renewed it yet — not one that stopped renewing.
    pub lease_predates_kubelet: bool,
    /// The API server's address as the node knows it (the kubelet's kubeconfig), when the agent
    /// read it.
    pub api_server_from_node: Option<String>,
    /// The signals of the Prometheus history that came back, oldest onset first, those that never
    /// degraded last (`--prometheus`; empty without it).
    pub history: Vec<HistoryOnset>,
    /// The node's flight recorder fell silent with the kubelet, having last seen the kubelet
    /// running and answering its healthz: why, in words ([`recorder_silent_with_kubelet`]).
    pub recorder_silent_with_kubelet: Option<String>,
}

/// The recorder writes at least once a heartbeat (its fallback: 1.5 heartbeats) and within
/// seconds of a kubelet that dies or freezes (a changed state held 2 s, a 3 s probe, a write at
/// most 10 s after the one before). So a report that is older than 1.5 heartbeats plus 10 s,
/// whose last write came no later than 10 s after the kubelet's last lease renewal (the kubelet
/// renews every 10 s) and no earlier than 1.5 heartbeats plus 10 s before it (a recorder gone
/// long before says nothing of this silence), and whose last sample saw the kubelet running with
/// its healthz ok, means
/// the recorder could not write when the kubelet went silent — and a dead or frozen kubelet would
/// have made it write. The node lost its path to the API server, or the node itself is down.
pub fn recorder_silent_with_kubelet(e: &Evidence) -> Option<String> {
    let v = e.recorder.data()?;
    let lease = e.lease.data()?;
    let (lease_age, _) = super::heartbeat::lease_age(e, lease)?;
    let report_age = v.age_seconds?;
    let beat = v.report.publisher.heartbeat_seconds.max(10) as f64;
    let now = &v.report.now;
    let saw_healthy = now.kubelet == "running" && now.healthz == "ok";
    // Silent since about when the kubelet went silent: not later than 10 s after its last
    // renewal, and not a recorder that had stopped long before (gone, or evicted) — its last
    // write within its heartbeat's reach of that renewal.
    let reach = 1.5 * beat + 10.0;
    let together = report_age + 10.0 >= lease_age && report_age <= lease_age + reach;
    (saw_healthy && report_age > reach && together).then(|| {
        format!(
            "the node's recorder, which writes to the API server on its own, fell silent with the \
             kubelet: its last report is {report_age:.0} s old (it writes every {beat:.0} s, and \
             within seconds of a kubelet that dies or freezes), the lease was last renewed \
             {lease_age:.0} s ago, and its last sample saw the kubelet running with its healthz ok"
        )
    })
}

/// A signal of the Prometheus history: whether and when it degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryOnset {
    /// The signal's id (`runtime-list-seconds`, `relist-seconds`, `lease-age-seconds`, ...).
    pub signal: String,
    /// When its latest degraded episode began, if it degraded.
    pub at: Option<jiff::Timestamp>,
    /// Still degraded at the range's end.
    pub ongoing: bool,
    /// Degraded from the range's first point: the real onset is earlier, and unknown.
    pub from_start: bool,
    /// Its series still had points near the range's end (not silent).
    pub current: bool,
}

impl HistoryOnset {
    /// An onset the order can use: inside the range and still degraded at its end.
    pub fn ordered_onset(&self) -> Option<jiff::Timestamp> {
        self.at.filter(|_| self.ongoing && !self.from_start)
    }
}

impl Facts {
    /// Gather the facts; `findings` are the checks' findings over the same evidence (the trace's
    /// attribution needs to know whether relists were slow).
    pub fn gather(e: &Evidence, findings: &[Finding]) -> Facts {
        let relists = relist_window(e);
        let relists_slow = findings.iter().any(|f| {
            f.domain == Domain::Pleg
                && f.severity.is_problem()
                && !matches!(f.id, FindingId::PlegMode)
        });
        let node = node_side(e);
        let attribution = e.node_probe.data().and_then(|p| {
            let slow = relists.as_ref().filter(|_| relists_slow);
            trace::attribute(&p.evidence, slow, relists_slow).or_else(|| {
                // Nothing measured slow, yet the node shows the kubelet or the runtime starved
                // of CPU: what the trace says of the whole window.
                findings
                    .iter()
                    .any(|f| matches!(f.id, FindingId::CpuStarved(_)) && f.severity.is_problem())
                    .then(|| trace::window_attribution(&p.evidence))
                    .flatten()
            })
        });
        Facts {
            node_name: e.node_name.clone(),
            layers: e.layers.clone(),
            node_read: e.node.data().is_some(),
            ready: ready(e),
            proxy: proxy_failure(e),
            kubelet_answers: e.healthz.data().is_some() || e.metrics_end.data().is_some(),
            pending_client_csrs: e
                .csrs
                .data()
                .map(|c| {
                    c.iter()
                        .filter(|c| c.state == CsrState::Pending && c.signer_name == SIGNER_CLIENT)
                        .map(|c| c.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            runtime: identity(e),
            platform: e
                .node
                .data()
                .map(super::platform::detect)
                .unwrap_or_default()
                .with_config(e.configz.data())
                .with_discovery(
                    e.node_probe
                        .data()
                        .and_then(|p| p.evidence.discovery.as_ref()),
                ),
            node,
            attribution,
            metrics: e.metrics_end.data().is_some(),
            goroutine_dump: match &e.goroutine_dump {
                Step::Collected { .. } => GoroutineDump::Captured,
                Step::Failed { failure } if failure.kind == FailureKind::NotFound => {
                    GoroutineDump::Disabled
                }
                Step::Failed { failure } => GoroutineDump::NotTaken(failure.message.clone()),
                Step::Skipped { reason } => GoroutineDump::NotTaken(reason.clone()),
            },
            pleg: pleg_mode(e),
            relists,
            kubelet_requests_unanswered: crate::checks::window::window_counter(
                e,
                "rest_client_requests_total",
                |l| l.get("code").map(String::as_str) == Some("<error>"),
            )
            .is_some_and(|d| d > 0.0),
            lease_predates_kubelet: super::heartbeat::lease_predates_kubelet(e).is_some(),
            api_server_from_node: e
                .node_probe
                .data()
                .and_then(|p| p.evidence.api_server.as_ref())
                .and_then(|a| a.server.clone()),
            history: e
                .history
                .data()
                .map(|h| {
                    let mut v: Vec<HistoryOnset> = h
                        .signals
                        .iter()
                        .filter(|s| s.status == crate::history::SeriesStatus::Found)
                        .map(|s| HistoryOnset {
                            signal: s.id.clone(),
                            at: s.timeline.onset,
                            ongoing: s.timeline.ongoing(),
                            from_start: s.timeline.degraded_from_start,
                            current: s.timeline.silent_since.is_none(),
                        })
                        .collect();
                    v.sort_by_key(|o| o.at.map_or(i64::MAX, |t| t.as_second()));
                    v
                })
                .unwrap_or_default(),
            recorder_silent_with_kubelet: recorder_silent_with_kubelet(e),
        }
    }

    /// Whether findings of this id have at least this severity (a convenience for tests).
    pub fn severity_of(findings: &[Finding], id: &FindingId) -> Severity {
        findings
            .iter()
            .filter(|f| &f.id == id)
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }
}

fn ready(e: &Evidence) -> Ready {
    let Some(c) = e.node.data().and_then(|n| n.condition("Ready")) else {
        return Ready {
            status: ReadyStatus::Missing,
            message: ReadyMessage::Other,
            runtime_down: false,
            line: String::new(),
        };
    };
    let message = c.message.clone().unwrap_or_default();
    let status = match c.status.as_str() {
        "True" => ReadyStatus::True,
        "False" => ReadyStatus::False,
        _ => ReadyStatus::Unknown,
    };
    Ready {
        status,
        message: parse_ready_message(&message),
        runtime_down: status == ReadyStatus::False && says_runtime_down(&message),
        line: format!(
            "Ready={} ({}): {message}",
            c.status,
            c.reason.clone().unwrap_or_default()
        ),
    }
}

/// The node-proxy failure that separates "kubelet down" from "partition": the first of healthz,
/// metrics and configz that the API server could not deliver.
fn proxy_failure(e: &Evidence) -> Option<ProxyFailure> {
    [
        e.healthz.failure(),
        e.metrics_end.failure(),
        e.configz.failure(),
    ]
    .into_iter()
    .flatten()
    .find(|f| f.kind == FailureKind::KubeletUnreachable)
    // A hang of /metrics while healthz answered is the kubelet waiting on its runtime
    // (kubelet-waits-on-runtime), not a kubelet the API server cannot reach.
    .filter(|f| !(e.healthz.data().is_some() && dial_error(&f.message) == DialError::NoResponse))
    .map(|f| ProxyFailure {
        dial: dial_error(&f.message),
        line: format!("{} -> {}", f.request, f.message),
    })
}

fn node_side(e: &Evidence) -> NodeSide {
    let Some(p) = e.node_probe.data() else {
        return NodeSide::default();
    };
    let n = &p.evidence;
    let paused = paused_kubelet(n);
    let kubelet = n
        .processes
        .as_ref()
        .and_then(|p| p.kubelet.as_ref())
        .filter(|k| k.liveness != Liveness::Gone);
    NodeSide {
        collected: true,
        partial: p.partial.then(|| {
            p.stream_error
                .clone()
                .unwrap_or_else(|| "stream ended early".into())
        }),
        kubelet_running: kubelet.is_some() && paused.is_none(),
        kubelet_uptime_seconds: kubelet.map(|k| k.uptime_seconds),
        paused_kubelet: paused,
        api_reachable: n
            .api_server
            .as_ref()
            .and_then(|a| a.healthz.as_ref())
            .is_some_and(|h| h.status.is_some()),
        systemd: n.logs.as_ref().map(|l| l.systemd),
        runtime_unit: n
            .logs
            .as_ref()
            .and_then(|l| l.runtime.unit.as_ref())
            .and_then(|u| Some((u.name.clone(), u.kill_mode.clone()?))),
        trace_error: n
            .trace
            .as_ref()
            .filter(|t| !t.attached)
            .and_then(|t| t.error.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::recorder_silent_with_kubelet;
    use crate::checks::tests_support::{healthy_evidence, set_lease_age};
    use crate::evidence::Step;
    use crate::recorder::RecorderView;
    use nodehealth_proto::recorder::{Publisher, RecorderReport, Sample};

    fn with_report(age: f64, kubelet: &str, healthz: &str, lease_age: f64) -> Option<String> {
        let mut e = healthy_evidence();
        set_lease_age(&mut e, lease_age);
        e.recorder = Step::Collected {
            data: RecorderView {
                object: "noderecorderreports/n".into(),
                age_seconds: Some(age),
                stale: false,
                report: RecorderReport {
                    now: Sample {
                        kubelet: kubelet.into(),
                        healthz: healthz.into(),
                        ..Default::default()
                    },
                    publisher: Publisher {
                        heartbeat_seconds: 60,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
        };
        recorder_silent_with_kubelet(&e)
    }

    /// Silent past its heartbeat's fallback (100 s at 60 s), its last write no later than 10 s
    /// after the lease's last renewal, the kubelet healthy in its last sample: each condition
    /// tried on both sides.
    #[test]
    fn a_recorder_silent_with_a_healthy_kubelet() {
        assert!(with_report(120.0, "running", "ok", 125.0).is_some());
        // Within its heartbeat's reach: a live recorder may simply not have written yet.
        assert!(with_report(99.0, "running", "ok", 105.0).is_none());
        assert!(with_report(101.0, "running", "ok", 105.0).is_some());
        // It wrote well after the kubelet went silent: it was not cut off then.
        assert!(with_report(120.0, "running", "ok", 131.0).is_none());
        assert!(with_report(120.0, "running", "ok", 129.0).is_some());
        // A recorder silent long before the kubelet (gone, evicted): nothing about this silence.
        assert!(with_report(600.0, "running", "ok", 125.0).is_none());
        assert!(with_report(226.0, "running", "ok", 125.0).is_none());
        assert!(with_report(224.0, "running", "ok", 125.0).is_some());
        // Its last sample saw the kubelet in trouble: no claim.
        assert!(with_report(120.0, "absent", "refused", 125.0).is_none());
        assert!(with_report(120.0, "frozen", "no-answer", 125.0).is_none());
        assert!(with_report(120.0, "running", "no-answer", 125.0).is_none());
    }
}
