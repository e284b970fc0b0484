//! Checks: pure functions from the evidence snapshot to findings.
//!
//! Thresholds come from the kubelet itself and kubernetes-mixin (see FACTS in the design notes),
//! plus the degraded tier of the design: relist p50 > 1 s, relist interval p50 > 2 s, runtime
//! list operations above the 3.05 s bucket. Histogram answers are bucket intervals and
//! fractions above a real bucket bound — never an interpolated number.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::evidence::{
    CsrState, Evidence, Failure, FailureKind, FsUsage, LeaseInfo, MetricsSnapshot, SIGNER_CLIENT,
    SIGNER_SERVING, Step,
};
use crate::metrics::{Histogram, Labels, WindowDelta, counter_delta};
use crate::units::{human_bytes, human_duration, parse_go_duration, parse_quantity_bytes};

/// How bad a finding is. Ordered from harmless to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Worth knowing, not a problem.
    Info,
    /// Could not be checked (permission, endpoint missing).
    Unknown,
    /// A problem or a degradation that precedes one.
    Warning,
    /// The node is failing or about to.
    Critical,
}

impl Severity {
    /// Whether this is a problem (warning or critical).
    pub fn is_problem(self) -> bool {
        self >= Severity::Warning
    }
}

/// The failure domain a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// Node conditions and taints.
    Node,
    /// Lease heartbeat.
    Heartbeat,
    /// Pod lifecycle event generator relists.
    Pleg,
    /// The container runtime as the kubelet sees it.
    Runtime,
    /// Kubelet client/serving certificates and CSRs.
    Certificates,
    /// The kubelet's own health: healthz, memory, goroutines.
    Kubelet,
    /// The kubelet's requests to the API server.
    ApiConnectivity,
    /// Node filesystems.
    Filesystem,
    /// Kubelet configuration.
    Configuration,
    /// What the collection itself could not do.
    Collection,
}

impl Domain {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Node => "node",
            Domain::Heartbeat => "heartbeat",
            Domain::Pleg => "pleg",
            Domain::Runtime => "runtime",
            Domain::Certificates => "certificates",
            Domain::Kubelet => "kubelet",
            Domain::ApiConnectivity => "api-connectivity",
            Domain::Filesystem => "filesystem",
            Domain::Configuration => "configuration",
            Domain::Collection => "collection",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Stable identifier (see [`ids`]).
    pub id: String,
    /// Failure domain.
    pub domain: Domain,
    /// Severity.
    pub severity: Severity,
    /// One line for a person.
    pub summary: String,
    /// The observations behind it.
    pub evidence: Vec<String>,
    /// What to do, with real names filled in.
    pub remediation: Option<String>,
}

impl Finding {
    /// A problem that does not make the node unhealthy now: configuration risks. They are
    /// shown as warnings but do not set exit code 1 on their own.
    pub fn is_advisory(&self) -> bool {
        self.domain == Domain::Configuration
    }

    /// Known messages in the kubelet's or runtime's logs: supporting evidence for a cause, never
    /// a problem on their own — a fault healed minutes ago leaves its lines behind.
    pub fn is_log_evidence(&self) -> bool {
        self.id.starts_with(logs::PREFIX)
    }

    /// A problem that counts for the exit code and the verdict.
    pub fn is_real_problem(&self) -> bool {
        self.severity.is_problem() && !self.is_advisory() && !self.is_log_evidence()
    }

    fn new(id: &str, domain: Domain, severity: Severity, summary: impl Into<String>) -> Self {
        Finding {
            id: id.to_string(),
            domain,
            severity,
            summary: summary.into(),
            evidence: Vec::new(),
            remediation: None,
        }
    }

    fn with(mut self, evidence: impl Into<String>) -> Self {
        self.evidence.push(evidence.into());
        self
    }

    fn fix(mut self, remediation: impl Into<String>) -> Self {
        self.remediation = Some(remediation.into());
        self
    }
}

pub mod logs;
pub mod node;

/// Finding identifiers (API side; the node layer's are in [`node::ids`]).
pub mod ids {
    /// Ready condition.
    pub const READY: &str = "node-ready";
    /// Memory/Disk/PID pressure (suffix: `-memory`, `-disk`, `-pid`).
    pub const PRESSURE: &str = "node-pressure";
    /// Cordoned.
    pub const CORDONED: &str = "node-cordoned";
    /// Lease renewTime age.
    pub const LEASE: &str = "lease-age";
    /// Cluster-wide stale leases.
    pub const CLUSTER_LEASES: &str = "cluster-node-leases";
    /// Warning events.
    pub const EVENTS: &str = "node-events";
    /// The kubelet started again and again (its "Starting kubelet." events).
    pub const KUBELET_RESTARTS: &str = "kubelet-restarts";
    /// PLEG relist duration.
    pub const PLEG_DURATION: &str = "pleg-relist-duration";
    /// PLEG relist interval.
    pub const PLEG_INTERVAL: &str = "pleg-relist-interval";
    /// Age of the last successful relist.
    pub const PLEG_LAST_SEEN: &str = "pleg-last-seen";
    /// Discarded PLEG events.
    pub const PLEG_DISCARDS: &str = "pleg-discarded-events";
    /// Runtime list operation latency.
    pub const RUNTIME_LIST_LATENCY: &str = "runtime-list-latency";
    /// Runtime operation errors.
    pub const RUNTIME_ERRORS: &str = "runtime-errors";
    /// Client certificate TTL.
    pub const CERT_CLIENT_TTL: &str = "cert-client-ttl";
    /// Serving certificate TTL.
    pub const CERT_SERVER_TTL: &str = "cert-server-ttl";
    /// Client certificate renew errors.
    pub const CERT_CLIENT_RENEW: &str = "cert-client-renew-errors";
    /// Serving certificate renew errors.
    pub const CERT_SERVER_RENEW: &str = "cert-server-renew-errors";
    /// The kubelet's own 401/403 answers.
    pub const KUBELET_AUTH: &str = "kubelet-auth-errors";
    /// Pending client CSR (one finding per CSR).
    pub const CSR_CLIENT_PENDING: &str = "csr-client-pending";
    /// Pending serving CSR.
    pub const CSR_SERVING_PENDING: &str = "csr-serving-pending";
    /// Denied or failed CSR.
    pub const CSR_REJECTED: &str = "csr-denied-or-failed";
    /// CSR summary when nothing is pending.
    pub const CSRS: &str = "csrs";
    /// The CSR approver (kube-controller-manager) lease.
    pub const CSR_APPROVER: &str = "csr-approver";
    /// Kubelet RSS.
    pub const KUBELET_MEMORY: &str = "kubelet-memory";
    /// Kubelet goroutines.
    pub const KUBELET_GOROUTINES: &str = "kubelet-goroutines";
    /// Kubelet healthz.
    pub const HEALTHZ: &str = "kubelet-healthz";
    /// Goroutine dump captured.
    pub const GOROUTINE_DUMP: &str = "goroutine-dump";
    /// Kubelet -> API server latency.
    pub const REST_LATENCY: &str = "rest-client-latency";
    /// Kubelet -> API server 5xx and transport errors.
    pub const REST_ERRORS: &str = "rest-client-errors";
    /// Filesystem usage (suffix: filesystem name).
    pub const FS: &str = "filesystem-usage";
    /// Image GC thresholds.
    pub const IMAGE_GC: &str = "image-gc-thresholds";
    /// Container log rotation.
    pub const LOG_ROTATION: &str = "container-log-rotation";
    /// kube/system-reserved.
    pub const RESERVED: &str = "reserved-resources";
    /// The API server cannot reach the kubelet through the node proxy.
    pub const KUBELET_UNREACHABLE: &str = "kubelet-unreachable";
    /// The kubelet answers but cannot authorize requests (its own API calls fail).
    pub const KUBELET_AUTHZ: &str = "kubelet-cannot-authorize";
    /// The kubelet answers through the proxy too slowly.
    pub const KUBELET_SLOW: &str = "kubelet-slow-to-answer";
    /// Missing permission (suffix: step).
    pub const ACCESS: &str = "access";
    /// Other collection failure (suffix: step).
    pub const COLLECTION: &str = "collection";
    /// Malformed metrics text.
    pub const METRICS_MALFORMED: &str = "metrics-malformed";
}

/// Stuck relist: kubelet_pleg_last_seen_seconds age for a warning (FACTS: our own, well below
/// the kubelet's 3 m).
pub const PLEG_LAST_SEEN_WARN_SECONDS: f64 = 60.0;
/// The kubelet's PLEG health threshold (pkg/kubelet/pleg/generic.go relistThreshold = 3m).
pub const PLEG_UNHEALTHY_SECONDS: f64 = 180.0;
/// kubernetes-mixin KubeletPlegDurationHigh: p99 >= 10 s (the top finite bucket).
pub const PLEG_P99_SECONDS: f64 = 10.0;
/// Degraded tier: relist duration p50 > 1 s (a DefBuckets bound).
pub const PLEG_DEGRADED_P50_SECONDS: f64 = 1.0;
/// Degraded tier: relist interval p50 > 2 s. 2 s is not a bucket bound (1 and 2.5 are), so it is
/// decided on the exact window mean or on p50 above the 2.5 s bucket.
pub const PLEG_INTERVAL_DEGRADED_SECONDS: f64 = 2.0;
/// Fewer relists than this in the window are too few for a median: the degraded tier then also
/// needs the since-start histogram to agree (a single slow relist on a busy machine is not a
/// degraded PLEG). The p99 >= 10 s and stuck-relist tiers do not need it.
pub const MIN_WINDOW_RELISTS: f64 = 3.0;
/// Runtime operation buckets: ExponentialBuckets(.005, 2.5, 14) -> 3.0517578125 s ...
pub const RUNTIME_BUCKET_3S: f64 = 0.005 * 610.3515625;
/// ... and 7.62939453125 s.
pub const RUNTIME_BUCKET_7S: f64 = 0.005 * 1525.87890625;
/// Certificate TTL warning (kubernetes-mixin: 7 days).
pub const CERT_WARN_SECONDS: f64 = 7.0 * 86400.0;
/// Certificate TTL critical (kubernetes-mixin: 1 day).
pub const CERT_CRITICAL_SECONDS: f64 = 86400.0;
/// Kubelet RSS warning (the guide: sustained above 500 MB).
pub const RSS_WARN_BYTES: f64 = 500.0 * 1024.0 * 1024.0;
/// Below this RSS per running pod a big RSS is explained by pod density (our heuristic).
pub const RSS_PER_POD_EXPLAINED_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Goroutine warning (the guide: above 500).
pub const GOROUTINES_WARN: f64 = 500.0;
/// Below this many goroutines per running pod a high count is explained by density (heuristic).
pub const GOROUTINES_PER_POD_EXPLAINED: f64 = 10.0;
/// Rest client: "p99 above 5 s" is visible at the 4 s and 8 s bucket bounds.
pub const REST_BUCKET_4S: f64 = 4.0;
/// Rest client bucket above 5 s.
pub const REST_BUCKET_8S: f64 = 8.0;
/// Filesystem warning (the guide keeps usage under 70%).
pub const FS_WARN_PERCENT: f64 = 70.0;
/// Filesystem critical: the default image GC high threshold and imagefs eviction (85% used).
pub const FS_CRITICAL_PERCENT: f64 = 85.0;
/// Goroutines summary count window.
const EVENTS_RECENT_SECONDS: f64 = 3600.0;

/// Run every check.
pub fn run_all(e: &Evidence) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(ready(e));
    findings.extend(pressure(e));
    findings.extend(lease(e));
    findings.extend(cluster_leases(e));
    findings.extend(events(e));
    findings.extend(kubelet_restarts(e));
    findings.extend(pleg_duration(e));
    findings.extend(pleg_interval(e));
    findings.extend(pleg_last_seen(e));
    findings.extend(pleg_discards(e));
    findings.extend(runtime_list_latency(e));
    findings.extend(runtime_errors(e));
    findings.extend(certificate_ttl(e, true));
    findings.extend(certificate_ttl(e, false));
    findings.extend(certificate_renew_errors(e, true));
    findings.extend(certificate_renew_errors(e, false));
    findings.extend(kubelet_auth_errors(e));
    findings.extend(csrs(e));
    findings.extend(csr_approver(e));
    findings.extend(kubelet_memory(e));
    findings.extend(kubelet_goroutines(e));
    findings.extend(healthz(e));
    findings.extend(goroutine_dump(e));
    findings.extend(rest_client_latency(e));
    findings.extend(rest_client_errors(e));
    findings.extend(filesystems(e));
    findings.extend(image_gc(e));
    findings.extend(log_rotation(e));
    findings.extend(reserved(e));
    findings.extend(collection_failures(e));
    findings.extend(node::run(e));
    findings.extend(logs::run(e));
    findings
}

// ---------------------------------------------------------------------------------------------
// helpers

fn seconds_since(e: &Evidence, t: jiff::Timestamp) -> f64 {
    e.collected_at.duration_since(t).as_secs_f64()
}

fn metrics_end(e: &Evidence) -> Option<&MetricsSnapshot> {
    e.metrics_end.data()
}

/// Both scrapes, when both were taken.
fn metrics_pair(e: &Evidence) -> Option<(&MetricsSnapshot, &MetricsSnapshot)> {
    Some((e.metrics_start.data()?, e.metrics_end.data()?))
}

fn window_seconds(e: &Evidence) -> f64 {
    match metrics_pair(e) {
        Some((s, t)) => match (s.scraped_at, t.scraped_at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => e.window.requested_seconds,
        },
        None => e.window.requested_seconds,
    }
}

fn window_histogram(
    e: &Evidence,
    name: &str,
    filter: impl Fn(&Labels) -> bool + Copy,
) -> Option<WindowDelta> {
    let (start, end) = metrics_pair(e)?;
    let end_h = end.histogram_where(name, filter)?;
    let start_h = start.histogram_where(name, filter)?;
    Some(Histogram::window(&start_h, &end_h))
}

fn window_counter(
    e: &Evidence,
    name: &str,
    filter: impl Fn(&Labels) -> bool + Copy,
) -> Option<f64> {
    let (start, end) = metrics_pair(e)?;
    Some(counter_delta(
        start.sum_where(name, filter)?,
        end.sum_where(name, filter)?,
    ))
}

fn all(_: &Labels) -> bool {
    true
}

fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p > 0.0 && p < 0.1 {
        "<0.1%".to_string()
    } else {
        format!("{p:.1}%")
    }
}

/// One line describing a histogram: count, p50/p99 buckets and the exact mean.
fn describe(label: &str, h: &Histogram) -> String {
    if h.count <= 0.0 {
        return format!("{label}: no observations");
    }
    let noun = if h.count == 1.0 {
        "observation"
    } else {
        "observations"
    };
    let mut s = format!("{label}: {} {noun}", h.count);
    if let Some(q) = h.quantile(0.5) {
        let _ = write!(s, ", p50 {q}");
    }
    if let Some(q) = h.quantile(0.99) {
        let _ = write!(s, ", p99 {q}");
    }
    if let Some(mean) = h.mean() {
        let _ = write!(s, ", mean {}", human_duration(mean));
    }
    s
}

fn window_label(delta: &WindowDelta, window: f64) -> String {
    if delta.reset {
        "window (counters reset: kubelet restarted; since restart)".to_string()
    } else {
        format!("window ({})", human_duration(window))
    }
}

/// The kubelet's runtime, as a systemd unit name, from the CRI endpoint (or the Node's
/// runtime version). Defaults to containerd (the most common).
pub fn runtime_service(e: &Evidence) -> &'static str {
    let endpoint = e
        .configz
        .data()
        .and_then(|c| c.container_runtime_endpoint.clone())
        .or_else(|| {
            e.node
                .data()
                .and_then(|n| n.container_runtime_version.clone())
        })
        .unwrap_or_default();
    if endpoint.contains("crio") || endpoint.contains("cri-o") {
        "crio"
    } else if endpoint.contains("cri-dockerd") || endpoint.contains("docker") {
        "cri-docker"
    } else {
        "containerd"
    }
}

// ---------------------------------------------------------------------------------------------
// node conditions

/// What the Ready message says, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadyMessage {
    /// "PLEG is not healthy: pleg was last seen active X ago; threshold is Y".
    PlegUnhealthy {
        /// Seconds since the last successful relist, when stated.
        last_seen_seconds: Option<f64>,
    },
    /// "container runtime is down" / "container runtime status check may not have completed".
    RuntimeDown,
    /// "container runtime network not ready".
    NetworkNotReady,
    /// The node lifecycle controller: "Kubelet stopped posting node status." / never updated.
    StoppedPosting,
    /// Anything else.
    Other,
}

/// Whether a Ready message says the runtime is down — alone, or next to PLEG ("[container
/// runtime is down, PLEG is not healthy: ...]", which [`parse_ready_message`] reads as PLEG).
pub fn says_runtime_down(message: &str) -> bool {
    message.contains("container runtime is down")
        || message.contains("container runtime status check may not have completed")
}

/// Parse a Ready condition message (pkg/kubelet/pleg/generic.go Healthy(); kubelet
/// runtimeState errors; node lifecycle controller).
pub fn parse_ready_message(message: &str) -> ReadyMessage {
    if let Some(pos) = message.find("pleg was last seen active ") {
        let rest = &message[pos + "pleg was last seen active ".len()..];
        let seen = rest.split(" ago").next().and_then(parse_go_duration);
        return ReadyMessage::PlegUnhealthy {
            last_seen_seconds: seen,
        };
    }
    if message.contains("PLEG is not healthy") || message.contains("pleg has yet to be successful")
    {
        return ReadyMessage::PlegUnhealthy {
            last_seen_seconds: None,
        };
    }
    if says_runtime_down(message) {
        return ReadyMessage::RuntimeDown;
    }
    if message.contains("network not ready") || message.contains("NetworkPluginNotReady") {
        return ReadyMessage::NetworkNotReady;
    }
    if message.contains("stopped posting node status") || message.contains("never posted") {
        return ReadyMessage::StoppedPosting;
    }
    ReadyMessage::Other
}

/// Ready: True / False (the kubelet says why) / Unknown (the kubelet stopped reporting).
pub fn ready(e: &Evidence) -> Vec<Finding> {
    let Some(node) = e.node.data() else {
        return vec![];
    };
    let Some(cond) = node.condition("Ready") else {
        return vec![Finding::new(
            ids::READY,
            Domain::Node,
            Severity::Unknown,
            "node has no Ready condition (kubelet never reported)",
        )];
    };
    let reason = cond.reason.clone().unwrap_or_default();
    let message = cond.message.clone().unwrap_or_default();
    let since = cond
        .last_transition_time
        .map(|t| format!(" for {}", human_duration(seconds_since(e, t))))
        .unwrap_or_default();
    let heartbeat = cond
        .last_heartbeat_time
        .map(|t| {
            format!(
                "last status heartbeat {} ago",
                human_duration(seconds_since(e, t))
            )
        })
        .unwrap_or_else(|| "no status heartbeat time".to_string());
    let basis = format!("Ready={} reason={reason} message={message:?}", cond.status);
    match cond.status.as_str() {
        "True" => vec![
            Finding::new(
                ids::READY,
                Domain::Node,
                Severity::Ok,
                format!("Ready{since}"),
            )
            .with(basis),
        ],
        "False" => {
            let parsed = parse_ready_message(&message);
            let (summary, fix) = match &parsed {
                ReadyMessage::PlegUnhealthy { last_seen_seconds } => (
                    format!(
                        "NotReady{since}: PLEG is not healthy{}",
                        last_seen_seconds
                            .map(|s| format!(
                                " (last successful relist {} ago; the kubelet's threshold is 3m)",
                                human_duration(s)
                            ))
                            .unwrap_or_default()
                    ),
                    "the kubelet cannot relist pods from the runtime: look at runtime latency (runtime findings) and, on the node, `time crictl ps`",
                ),
                ReadyMessage::RuntimeDown => (
                    format!("NotReady{since}: the kubelet reports the container runtime down"),
                    "check the runtime service and its socket on the node",
                ),
                ReadyMessage::NetworkNotReady => (
                    format!("NotReady{since}: container network (CNI) not ready"),
                    "check the CNI plugin's pods and config on the node",
                ),
                _ => (
                    format!("NotReady{since}: {reason}"),
                    "read the message and the kubelet log",
                ),
            };
            vec![
                Finding::new(ids::READY, Domain::Node, Severity::Critical, summary)
                    .with(basis)
                    .with(heartbeat)
                    .fix(fix),
            ]
        }
        _ => vec![
            Finding::new(
                ids::READY,
                Domain::Node,
                Severity::Critical,
                format!("Ready=Unknown{since}: the kubelet stopped posting node status"),
            )
            .with(basis)
            .with(heartbeat)
            .fix("find out whether the kubelet is down, cannot authenticate, or cannot reach the API server (see the verdict)"),
        ],
    }
}

/// Memory/Disk/PID pressure conditions that are True; cordon status.
pub fn pressure(e: &Evidence) -> Vec<Finding> {
    let Some(node) = e.node.data() else {
        return vec![];
    };
    let mut findings = Vec::new();
    for (type_, suffix, fix) in [
        (
            "MemoryPressure",
            "memory",
            "the kubelet is evicting pods for memory: find the largest consumers, cordon and drain if it persists",
        ),
        (
            "DiskPressure",
            "disk",
            "free nodefs/imagefs space: image GC, container logs, emptyDir volumes",
        ),
        (
            "PIDPressure",
            "pid",
            "a process is forking without bound: find it (ps -eLf | wc -l per cgroup)",
        ),
    ] {
        let id = format!("{}-{suffix}", ids::PRESSURE);
        match node.condition(type_) {
            Some(c) if c.status == "True" => findings.push(
                Finding::new(
                    &id,
                    Domain::Node,
                    Severity::Warning,
                    format!("{type_}: {}", c.message.clone().unwrap_or_default()),
                )
                .with(format!(
                    "{type_}=True reason={}",
                    c.reason.clone().unwrap_or_default()
                ))
                .fix(fix),
            ),
            Some(c) if c.status == "False" => findings.push(Finding::new(
                &id,
                Domain::Node,
                Severity::Ok,
                format!("no {type_}"),
            )),
            // Unknown pressure accompanies Ready=Unknown and says nothing new.
            _ => {}
        }
    }
    if node.unschedulable {
        findings.push(
            Finding::new(
                ids::CORDONED,
                Domain::Node,
                Severity::Info,
                "node is cordoned (unschedulable)",
            )
            .with(format!("taints: {}", node.taints.join(", "))),
        );
    }
    findings
}

// ---------------------------------------------------------------------------------------------
// heartbeat

fn lease_age(e: &Evidence, lease: &LeaseInfo) -> Option<(f64, f64)> {
    let renew = lease.renew_time?;
    let duration = f64::from(lease.lease_duration_seconds.unwrap_or(40));
    Some((seconds_since(e, renew), duration))
}

/// The node Lease: renewed every 10 s, valid for leaseDurationSeconds (40 s).
pub fn lease(e: &Evidence) -> Vec<Finding> {
    match &e.lease {
        Step::Collected { data } => {
            let Some((age, duration)) = lease_age(e, data) else {
                return vec![Finding::new(
                    ids::LEASE,
                    Domain::Heartbeat,
                    Severity::Warning,
                    "node lease has never been renewed",
                )];
            };
            let evidence = format!(
                "kube-node-lease/{} renewTime {} ago, leaseDurationSeconds {duration}, holder {}",
                data.name,
                human_duration(age),
                data.holder_identity.clone().unwrap_or_default()
            );
            let (severity, summary) = if age >= duration {
                (
                    Severity::Critical,
                    format!(
                        "lease stale: last renewed {} ago (duration {}s): the kubelet is not heartbeating",
                        human_duration(age),
                        duration
                    ),
                )
            } else if age > duration / 2.0 {
                (
                    Severity::Warning,
                    format!(
                        "lease renewal late: {} ago, approaching its {}s duration (renewals every {}s)",
                        human_duration(age),
                        duration,
                        duration / 4.0
                    ),
                )
            } else {
                (
                    Severity::Ok,
                    format!("lease renewed {} ago", human_duration(age.max(0.0))),
                )
            };
            let mut f = Finding::new(ids::LEASE, Domain::Heartbeat, severity, summary)
                .with(evidence)
                .with("ages use this machine's clock against the kubelet's renewTime: clock skew shifts them");
            if severity.is_problem() {
                f = f.fix("see the verdict: a stale lease is kubelet-down, kubelet-starved, a partition or an auth failure");
            }
            vec![f]
        }
        Step::Failed { failure } if failure.kind == FailureKind::NotFound => vec![
            Finding::new(
                ids::LEASE,
                Domain::Heartbeat,
                Severity::Warning,
                "node has no Lease in kube-node-lease",
            )
            .with(failure.message.clone())
            .fix("the kubelet creates its lease on start: check that it is running and registered"),
        ],
        _ => vec![],
    }
}

/// Stale node leases cluster-wide: many at once point at the control plane or the network.
pub fn cluster_leases(e: &Evidence) -> Vec<Finding> {
    let Some(o) = e.node_leases.data() else {
        return vec![];
    };
    if o.total == 0 {
        return vec![];
    }
    let this_stale = e
        .lease
        .data()
        .and_then(|l| lease_age(e, l))
        .is_some_and(|(age, d)| age >= d);
    let others = o.stale.saturating_sub(usize::from(this_stale));
    let severity = if others >= 2 && others * 5 >= o.total {
        Severity::Warning
    } else if others > 0 {
        Severity::Info
    } else {
        Severity::Ok
    };
    let mut f = Finding::new(
        ids::CLUSTER_LEASES,
        Domain::Heartbeat,
        severity,
        format!(
            "{} of {} node leases are stale ({} besides this node)",
            o.stale, o.total, others
        ),
    );
    if !o.stale_examples.is_empty() {
        f = f.with(format!("stale: {}", o.stale_examples.join(", ")));
    }
    if severity == Severity::Warning {
        f = f.fix("many nodes stopped heartbeating together: suspect the API server, its load balancer or the network, not this kubelet");
    }
    vec![f]
}

/// Event reasons that say the node itself is in trouble (kubelet events.go, node lifecycle
/// controller, eviction manager).
pub const TROUBLE_EVENT_REASONS: &[&str] = &[
    "NodeNotReady",
    "SystemOOM",
    "Rebooted",
    "ContainerGCFailed",
    "ImageGCFailed",
    "FreeDiskSpaceFailed",
    "EvictionThresholdMet",
    "KubeletSetupFailed",
    "InvalidDiskCapacity",
    "NodeHasDiskPressure",
    "NodeHasInsufficientMemory",
    "NodeHasInsufficientPID",
];

/// `Reason` or `Reason x3`, in order of first appearance.
fn reasons_counted(events: &[&crate::evidence::NodeEvent]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for ev in events {
        match counted.iter_mut().find(|(r, _)| *r == ev.reason) {
            Some((_, n)) => *n += 1,
            None => counted.push((&ev.reason, 1)),
        }
    }
    counted
        .iter()
        .map(|(r, n)| {
            if *n > 1 {
                format!("{r} x{n}")
            } else {
                r.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kubelet starts counted from the node's events within this many seconds.
const RESTARTS_RECENT_SECONDS: f64 = 180.0;
/// Starts within that time that make a restart loop.
const RESTART_LOOP_STARTS: i32 = 4;

/// The kubelet's own "Starting kubelet." events (reason `Starting`, one per process start): a
/// kubelet that starts over and over is being killed (OOM) or crashing — the PLEG and readiness
/// symptoms of a fresh kubelet follow from that. On a Ready, heartbeating node recent restarts
/// are history (someone restarted it), not a cause.
pub fn kubelet_restarts(e: &Evidence) -> Vec<Finding> {
    let Some(events) = e.events.data() else {
        return vec![];
    };
    let starts: i32 = events
        .iter()
        .filter(|ev| ev.reason == "Starting" && ev.message.starts_with("Starting kubelet"))
        .filter(|ev| {
            ev.last_seen
                .is_none_or(|t| seconds_since(e, t) <= RESTARTS_RECENT_SECONDS)
        })
        .map(|ev| ev.count.max(1))
        .sum();
    if starts < 2 {
        return vec![];
    }
    let ready = e
        .node
        .data()
        .and_then(|n| n.condition("Ready"))
        .is_some_and(|c| c.status == "True");
    let severity = if ready {
        Severity::Info
    } else if starts >= RESTART_LOOP_STARTS {
        Severity::Critical
    } else {
        Severity::Warning
    };
    vec![
        Finding::new(
            ids::KUBELET_RESTARTS,
            Domain::Kubelet,
            severity,
            format!(
                "the kubelet started {starts} times in the last {} minutes{}",
                RESTARTS_RECENT_SECONDS as u64 / 60,
                if ready {
                    " (it is Ready now)"
                } else {
                    ": it is being killed or crashing"
                }
            ),
        )
        .with("node events with reason Starting, \"Starting kubelet.\"")
        .fix("on the node: `dmesg | grep -i -e oom -e 'killed process'` (OOM kills: raise the kubelet's memory limit or kubeReserved) and `journalctl -u kubelet -b | tail -100` (a crash or a bad flag); fix that before anything else — restarting it again changes nothing"),
    ]
}

/// Warning events about the node in the last hour.
pub fn events(e: &Evidence) -> Vec<Finding> {
    let Some(events) = e.events.data() else {
        return vec![];
    };
    let recent: Vec<_> = events
        .iter()
        .filter(|ev| ev.type_ == "Warning")
        .filter(|ev| {
            ev.last_seen
                .is_none_or(|t| seconds_since(e, t) <= EVENTS_RECENT_SECONDS)
        })
        .collect();
    if recent.is_empty() {
        return vec![Finding::new(
            ids::EVENTS,
            Domain::Node,
            Severity::Ok,
            format!(
                "no Warning events in the last hour ({} events seen)",
                events.len()
            ),
        )];
    }
    // Warning events the kubelet and node controllers raise when the node is in trouble; other
    // Warning events (deprecations, image pulls of one pod) are information.
    let troubled = recent
        .iter()
        .any(|ev| TROUBLE_EVENT_REASONS.contains(&ev.reason.as_str()));
    let mut f = Finding::new(
        ids::EVENTS,
        Domain::Node,
        if troubled {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!(
            "{} Warning event(s) in the last hour: {}",
            recent.len(),
            reasons_counted(&recent)
        ),
    );
    // One example per reason: repeats of one event say nothing new.
    let mut shown: Vec<&str> = Vec::new();
    for ev in &recent {
        if shown.contains(&ev.reason.as_str()) || shown.len() >= 5 {
            continue;
        }
        shown.push(&ev.reason);
        f = f.with(format!(
            "{} x{} ({}): {}",
            ev.reason,
            ev.count,
            ev.source.clone().unwrap_or_default(),
            ev.message
        ));
    }
    vec![f]
}

// ---------------------------------------------------------------------------------------------
// PLEG

fn missing_metric(id: &str, domain: Domain, name: &str) -> Finding {
    Finding::new(
        id,
        domain,
        Severity::Info,
        format!("this kubelet does not export {name}"),
    )
    .with("metric names are ALPHA and change between kubelet versions")
}

/// Relist duration: degraded p50 > 1 s; kubernetes-mixin p99 >= 10 s.
pub fn pleg_duration(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_relist_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(since_start) = end.histogram_where(NAME, all) else {
        return vec![missing_metric(ids::PLEG_DURATION, Domain::Pleg, NAME)];
    };
    let window = window_histogram(e, NAME, all);
    let since_line = describe("since kubelet start", &since_start);
    let Some(window) = window else {
        // Only one scrape: judge on since-start, but say so.
        let severity = if since_start.fraction_above(PLEG_P99_SECONDS).unwrap_or(0.0) >= 0.01 {
            Severity::Warning
        } else {
            Severity::Info
        };
        return vec![
            Finding::new(
                ids::PLEG_DURATION,
                Domain::Pleg,
                severity,
                "relist duration known only since kubelet start (no window scrape)",
            )
            .with(since_line),
        ];
    };
    let w = &window.histogram;
    let wsecs = window_seconds(e);
    let label = window_label(&window, wsecs);
    let mut f = if w.count <= 0.0 {
        Finding::new(
            ids::PLEG_DURATION,
            Domain::Pleg,
            if wsecs >= 2.0 {
                Severity::Warning
            } else {
                Severity::Info
            },
            format!(
                "no relist completed during the {} window (relists run every 1 s)",
                human_duration(wsecs)
            ),
        )
        .fix("a relist is stuck or very slow: see pleg-last-seen and the runtime findings")
    } else if w.fraction_above(PLEG_P99_SECONDS).unwrap_or(0.0) >= 0.01 {
        Finding::new(
            ids::PLEG_DURATION,
            Domain::Pleg,
            Severity::Critical,
            format!(
                "relist p99 above 10 s (the top bucket): {} of relists in the window took > 10 s",
                percent(w.fraction_above(PLEG_P99_SECONDS).unwrap_or(0.0))
            ),
        )
        .fix("the runtime's list calls or the kubelet are slow: attribution needs the node probe")
    } else if w.fraction_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0) > 0.5
        && w.count < MIN_WINDOW_RELISTS
        && since_start
            .fraction_above(PLEG_DEGRADED_P50_SECONDS)
            .unwrap_or(0.0)
            <= 0.5
    {
        Finding::new(
            ids::PLEG_DURATION,
            Domain::Pleg,
            Severity::Info,
            format!(
                "{} of {} relists in the window took > 1 s: too few to judge the median (widen --duration)",
                w.count_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0),
                w.count
            ),
        )
    } else if w.fraction_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0) > 0.5 {
        Finding::new(
            ids::PLEG_DURATION,
            Domain::Pleg,
            Severity::Warning,
            format!(
                "degraded: relist p50 above 1 s ({} of relists in the window took > 1 s)",
                percent(w.fraction_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0))
            ),
        )
        .fix("relists are slow before the node flips: attribute it (disk iowait, runtime socket, CPU starvation or the kubelet) with the node probe")
    } else {
        Finding::new(
            ids::PLEG_DURATION,
            Domain::Pleg,
            Severity::Ok,
            format!(
                "relists fast: p50 {}",
                w.quantile(0.5).map(|q| q.to_string()).unwrap_or_default()
            ),
        )
    };
    f = f.with(describe(&label, w)).with(since_line);
    if let Some(frac) = since_start.fraction_above(PLEG_P99_SECONDS)
        && frac > 0.0
    {
        f = f.with(format!(
            "since kubelet start {} relists ({}) took > 10 s",
            since_start.count_above(PLEG_P99_SECONDS).unwrap_or(0.0),
            percent(frac)
        ));
    }
    vec![f]
}

/// Relist interval: degraded when p50 > 2 s.
pub fn pleg_interval(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_relist_interval_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(since_start) = end.histogram_where(NAME, all) else {
        return vec![missing_metric(ids::PLEG_INTERVAL, Domain::Pleg, NAME)];
    };
    let Some(window) = window_histogram(e, NAME, all) else {
        return vec![
            Finding::new(
                ids::PLEG_INTERVAL,
                Domain::Pleg,
                Severity::Info,
                "relist interval known only since kubelet start",
            )
            .with(describe("since kubelet start", &since_start)),
        ];
    };
    let w = &window.histogram;
    if w.count <= 0.0 {
        // No relist finished: pleg-relist-duration already says so.
        return vec![];
    }
    let above_25 = w.fraction_above(2.5).unwrap_or(0.0);
    let mean = w.mean().unwrap_or(0.0);
    let label = window_label(&window, window_seconds(e));
    let since_mean = since_start.mean().unwrap_or(0.0);
    let degraded = above_25 > 0.5 || mean > PLEG_INTERVAL_DEGRADED_SECONDS;
    let f = if degraded
        && w.count < MIN_WINDOW_RELISTS
        && since_mean <= PLEG_INTERVAL_DEGRADED_SECONDS
    {
        Finding::new(
            ids::PLEG_INTERVAL,
            Domain::Pleg,
            Severity::Info,
            format!(
                "relist interval {} in the window, but only {} intervals: too few to judge (widen --duration)",
                human_duration(mean),
                w.count
            ),
        )
    } else if degraded {
        Finding::new(
            ids::PLEG_INTERVAL,
            Domain::Pleg,
            Severity::Warning,
            format!(
                "degraded: relists run every {} on average (should be ~1 s); {} of intervals > 2.5 s",
                human_duration(mean),
                percent(above_25)
            ),
        )
        .fix("relists are delayed: the relist goroutine is starved or each relist is slow; attribute it with the node probe")
    } else {
        Finding::new(
            ids::PLEG_INTERVAL,
            Domain::Pleg,
            Severity::Ok,
            format!("relist interval mean {}", human_duration(mean)),
        )
    };
    vec![
        f.with(describe(&label, w))
            .with(describe("since kubelet start", &since_start)),
    ]
}

/// Stuck relist: age of kubelet_pleg_last_seen_seconds (set when a relist starts successfully).
pub fn pleg_last_seen(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_last_seen_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(last_seen) = end.scalar(NAME) else {
        return vec![missing_metric(ids::PLEG_LAST_SEEN, Domain::Pleg, NAME)];
    };
    let scraped = end.scraped_at.unwrap_or(e.collected_at);
    if last_seen <= 0.0 {
        // The gauge is still at its zero value: no relist has succeeded since the kubelet
        // started ("pleg has yet to be successful").
        let up = end
            .scalar("process_start_time_seconds")
            .map(|start| scraped.as_second() as f64 - start);
        let severity = if up.is_some_and(|u| u >= PLEG_UNHEALTHY_SECONDS) {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut f = Finding::new(
            ids::PLEG_LAST_SEEN,
            Domain::Pleg,
            severity,
            format!(
                "no relist has succeeded since the kubelet started{}",
                up.map(|u| format!(" {} ago", human_duration(u)))
                    .unwrap_or_default()
            ),
        )
        .with(format!("{NAME} = 0"));
        if severity == Severity::Critical {
            f = f.fix(
                "the first relist never returned: check the runtime on the node (`time crictl ps`)",
            );
        }
        return vec![f];
    }
    let clock_age =
        scraped.as_second() as f64 + f64::from(scraped.subsec_nanosecond()) / 1e9 - last_seen;
    // The gauge is on the node's clock, the scrape time on ours. If the gauge moved between the
    // two scrapes, a relist succeeded inside the window, whatever the clocks say: the age is at
    // most the window, and a larger clock age is skew.
    let window = window_seconds(e);
    let advanced = e
        .metrics_start
        .data()
        .and_then(|m| m.scalar(NAME))
        .is_some_and(|start| last_seen > start);
    let skewed = advanced && clock_age > window + 5.0;
    let age = if skewed {
        clock_age.min(window)
    } else {
        clock_age
    };
    let shown = human_duration(age.max(0.0));
    let (severity, summary, fix) = if age >= PLEG_UNHEALTHY_SECONDS {
        (
            Severity::Critical,
            format!(
                "relist stuck: last successful relist {shown} ago (kubelet threshold 3m: PLEG unhealthy)"
            ),
            Some(
                "a relist call is hanging: the runtime's ListPodSandbox/ListContainers do not return; check the runtime on the node",
            ),
        )
    } else if age > PLEG_LAST_SEEN_WARN_SECONDS {
        (
            Severity::Warning,
            format!(
                "relist stalling: last successful relist {shown} ago (node flips NotReady at 3m)"
            ),
            Some("capture the goroutine dump now and check runtime latency before the node flips"),
        )
    } else {
        (
            Severity::Ok,
            format!("last successful relist {shown} ago"),
            None,
        )
    };
    let mut f = Finding::new(ids::PLEG_LAST_SEEN, Domain::Pleg, severity, summary).with(format!(
        "{NAME} = {last_seen:.3} (node clock), scraped at {scraped}"
    ));
    if age < -5.0 {
        f = f.with(format!(
            "the node's clock is {} ahead of this machine's",
            human_duration(-age)
        ));
    }
    if skewed {
        f = f.with(format!(
            "the gauge advanced during the window, yet reads {} old on this machine's clock: the node's clock is about {} behind",
            human_duration(clock_age),
            human_duration(clock_age - window)
        ));
    }
    if let Some(fix) = fix {
        f = f.fix(fix);
    }
    vec![f]
}

/// Discarded PLEG events (the event channel was full).
pub fn pleg_discards(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_discard_events";
    let Some(delta) = window_counter(e, NAME, all) else {
        return vec![];
    };
    if delta > 0.0 {
        vec![
            Finding::new(
                ids::PLEG_DISCARDS,
                Domain::Pleg,
                Severity::Warning,
                format!(
                    "{delta} PLEG events discarded in the window: the sync loop cannot keep up"
                ),
            )
            .fix("the kubelet's sync loop is behind: look for CPU starvation of the kubelet"),
        ]
    } else {
        vec![]
    }
}

// ---------------------------------------------------------------------------------------------
// runtime

const LIST_OPERATIONS: &[&str] = &["list_podsandbox", "list_containers"];

/// Runtime list operations above the 3.05 s bucket (degraded) or p99 above 7.63 s (critical).
pub fn runtime_list_latency(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_runtime_operations_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    if !end.histograms.contains_key(NAME) {
        return vec![missing_metric(
            ids::RUNTIME_LIST_LATENCY,
            Domain::Runtime,
            NAME,
        )];
    }
    let service = runtime_service(e);
    let mut worst = Severity::Ok;
    let mut lines = Vec::new();
    for op in LIST_OPERATIONS {
        let filter = |l: &Labels| l.get("operation_type").map(String::as_str) == Some(*op);
        let since = end.histogram_where(NAME, filter);
        if let Some(window) = window_histogram(e, NAME, filter) {
            let w = &window.histogram;
            let above3 = w.count_above(RUNTIME_BUCKET_3S).unwrap_or(0.0);
            let frac7 = w.fraction_above(RUNTIME_BUCKET_7S).unwrap_or(0.0);
            if frac7 >= 0.01 {
                worst = worst.max(Severity::Critical);
                lines.push(format!(
                    "{op}: {} of calls in the window took > 7.63 s (p99 above the 7.63 s bucket)",
                    percent(frac7)
                ));
            } else if above3 > 0.0 {
                worst = worst.max(Severity::Warning);
                lines.push(format!(
                    "{op}: {above3} of {} calls in the window took > 3.05 s",
                    w.count
                ));
            }
            lines.push(describe(
                &format!("{op} {}", window_label(&window, window_seconds(e))),
                w,
            ));
        }
        if let Some(since) = since
            && let Some(n) = since.count_above(RUNTIME_BUCKET_3S)
            && n > 0.0
        {
            lines.push(format!(
                "{op}: {n} calls took > 3.05 s since kubelet start ({})",
                percent(n / since.count)
            ));
        }
    }
    let summary = match worst {
        Severity::Critical => "runtime list calls very slow (p99 above 7.63 s)".to_string(),
        Severity::Warning => "degraded: runtime list calls above the 3.05 s bucket".to_string(),
        _ => "runtime list calls fast".to_string(),
    };
    let mut f = Finding::new(ids::RUNTIME_LIST_LATENCY, Domain::Runtime, worst, summary);
    f.evidence = lines;
    if worst.is_problem() {
        f = f.fix(format!(
            "on the node: `time crictl ps` and `journalctl -u {service}`; if the runtime is hung, `systemctl restart {service}` (running containers survive through their shims; check workload tolerance first)"
        ));
    }
    vec![f]
}

/// Runtime operation errors that rose during the window.
pub fn runtime_errors(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_runtime_operations_errors_total";
    let Some((start, end)) = metrics_pair(e) else {
        return vec![];
    };
    let Some(end_series) = end.scalars.get(NAME) else {
        // The family only appears once an error happened: absence means none since start.
        return vec![Finding::new(
            ids::RUNTIME_ERRORS,
            Domain::Runtime,
            Severity::Ok,
            "no runtime operation errors since kubelet start",
        )];
    };
    let mut rising = Vec::new();
    let mut total_since = 0.0;
    for s in end_series {
        total_since += s.value;
        let op = s.labels.get("operation_type").cloned().unwrap_or_default();
        let before = start
            .scalars
            .get(NAME)
            .and_then(|v| v.iter().find(|x| x.labels == s.labels))
            .map_or(0.0, |x| x.value);
        let delta = counter_delta(before, s.value);
        if delta > 0.0 {
            rising.push((op, delta));
        }
    }
    if rising.is_empty() {
        return vec![
            Finding::new(
                ids::RUNTIME_ERRORS,
                Domain::Runtime,
                Severity::Ok,
                "no runtime operation errors during the window",
            )
            .with(format!("{total_since} errors since kubelet start")),
        ];
    }
    let service = runtime_service(e);
    let list: Vec<String> = rising.iter().map(|(op, d)| format!("{op} +{d}")).collect();
    vec![
        Finding::new(
            ids::RUNTIME_ERRORS,
            Domain::Runtime,
            Severity::Warning,
            format!("runtime operation errors rising: {}", list.join(", ")),
        )
        .with(format!("{total_since} errors since kubelet start"))
        .fix(format!(
            "on the node: `crictl info` and `journalctl -u {service}` for the failing calls"
        )),
    ]
}

// ---------------------------------------------------------------------------------------------
// certificates

/// Client or serving certificate TTL (kubernetes-mixin: < 7 d warning, < 1 d critical).
pub fn certificate_ttl(e: &Evidence, client: bool) -> Vec<Finding> {
    let (id, name, what) = if client {
        (
            ids::CERT_CLIENT_TTL,
            "kubelet_certificate_manager_client_ttl_seconds",
            "client",
        )
    } else {
        (
            ids::CERT_SERVER_TTL,
            "kubelet_certificate_manager_server_ttl_seconds",
            "serving",
        )
    };
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(ttl) = end.scalar(name) else {
        let config = e.configz.data();
        let why = if !client && config.and_then(|c| c.server_tls_bootstrap) != Some(true) {
            "serving certificate is self-signed or provided (serverTLSBootstrap off): the kubelet does not rotate it".to_string()
        } else if client && config.and_then(|c| c.rotate_certificates) == Some(false) {
            "client certificate rotation is off (rotateCertificates: false): its TTL is not exported".to_string()
        } else {
            format!("{what} certificate TTL not exported by this kubelet")
        };
        return vec![
            Finding::new(id, Domain::Certificates, Severity::Info, why)
                .with(format!("{name} absent")),
        ];
    };
    if ttl.is_infinite() {
        return vec![
            Finding::new(
                id,
                Domain::Certificates,
                Severity::Info,
                format!("the kubelet's certificate manager holds no {what} certificate"),
            )
            .with(format!("{name} = +Inf")),
        ];
    }
    let evidence = format!("{name} = {ttl:.0}");
    let renew = if client {
        "check `kubectl get csr` for this node's pending CSRs and that kube-controller-manager approves them; on the node, check NTP sync (clock skew breaks validation)"
    } else {
        "serving certificates are not auto-approved: approve this node's kubelet-serving CSR after checking its SANs"
    };
    let f = if ttl <= 0.0 {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Critical,
            format!("{what} certificate EXPIRED {} ago", human_duration(-ttl)),
        )
        .fix(renew)
    } else if ttl < CERT_CRITICAL_SECONDS {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Critical,
            format!("{what} certificate expires in {}", human_duration(ttl)),
        )
        .fix(renew)
    } else if ttl < CERT_WARN_SECONDS {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Warning,
            format!(
                "{what} certificate expires in {} (rotation should have happened at 70-90% of its life)",
                human_duration(ttl)
            ),
        )
        .fix(renew)
    } else {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Ok,
            format!("{what} certificate valid for {}", human_duration(ttl)),
        )
    };
    vec![f.with(evidence)]
}

/// Certificate renew errors (kubernetes-mixin: any increase).
pub fn certificate_renew_errors(e: &Evidence, client: bool) -> Vec<Finding> {
    let (id, name, what) = if client {
        (
            ids::CERT_CLIENT_RENEW,
            "kubelet_certificate_manager_client_expiration_renew_errors",
            "client",
        )
    } else {
        (
            ids::CERT_SERVER_RENEW,
            "kubelet_server_expiration_renew_errors",
            "serving",
        )
    };
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(total) = end.sum_where(name, all) else {
        return vec![];
    };
    let delta = window_counter(e, name, all).unwrap_or(0.0);
    let f = if delta > 0.0 {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Warning,
            format!("{what} certificate renewal failing: {delta} errors in the window"),
        )
        .fix("the kubelet cannot get a new certificate: look for its pending CSR and the approver")
    } else if total > 0.0 {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Info,
            format!(
                "{total} {what} certificate renew errors since kubelet start, none in the window"
            ),
        )
    } else {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Ok,
            format!("no {what} certificate renew errors"),
        )
    };
    vec![f.with(format!("{name} = {total}"))]
}

/// The kubelet's own requests answered 401/403: the certificate signal.
pub fn kubelet_auth_errors(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "rest_client_requests_total";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let code = |c: &'static str| move |l: &Labels| l.get("code").map(String::as_str) == Some(c);
    let Some(since_401) = end.sum_where(NAME, code("401")) else {
        return vec![missing_metric(
            ids::KUBELET_AUTH,
            Domain::Certificates,
            NAME,
        )];
    };
    let since_403 = end.sum_where(NAME, code("403")).unwrap_or(0.0);
    let w401 = window_counter(e, NAME, code("401")).unwrap_or(0.0);
    let w403 = window_counter(e, NAME, code("403")).unwrap_or(0.0);
    let evidence = format!(
        "rest_client_requests_total: code 401 +{w401} / 403 +{w403} in the window; {since_401} / {since_403} since kubelet start"
    );
    let f = if w401 > 0.0 {
        Finding::new(
            ids::KUBELET_AUTH,
            Domain::Certificates,
            Severity::Critical,
            format!("the API server rejects the kubelet's credentials: {w401} requests answered 401 in the window"),
        )
        .fix("the kubelet's client certificate is expired or not trusted: check cert-client-ttl and pending CSRs; on the node `openssl x509 -in /var/lib/kubelet/pki/kubelet-client-current.pem -noout -dates`")
    } else if w403 > 0.0 {
        Finding::new(
            ids::KUBELET_AUTH,
            Domain::Certificates,
            Severity::Warning,
            format!("{w403} of the kubelet's requests were forbidden (403) in the window"),
        )
        .fix("the Node authorizer refuses it: the certificate's CN must be system:node:<node> in group system:nodes")
    } else if since_401 + since_403 > 0.0 {
        Finding::new(
            ids::KUBELET_AUTH,
            Domain::Certificates,
            Severity::Info,
            "the kubelet had 401/403 answers since it started, none in the window",
        )
    } else {
        Finding::new(
            ids::KUBELET_AUTH,
            Domain::Certificates,
            Severity::Ok,
            "the API server accepts the kubelet's credentials",
        )
    };
    vec![f.with(evidence)]
}

/// Pending, denied and failed CSRs of this node.
pub fn csrs(e: &Evidence) -> Vec<Finding> {
    let Some(csrs) = e.csrs.data() else {
        return vec![];
    };
    let mut findings = Vec::new();
    for csr in csrs {
        let age = csr
            .created
            .map(|t| human_duration(seconds_since(e, t)))
            .unwrap_or_else(|| "?".into());
        let basis = format!(
            "{} signer={} requestor={} age={age} state={:?}",
            csr.name, csr.signer_name, csr.username, csr.state
        );
        match (csr.state, csr.signer_name.as_str()) {
            (CsrState::Pending, SIGNER_CLIENT) => findings.push(
                Finding::new(
                    ids::CSR_CLIENT_PENDING,
                    Domain::Certificates,
                    Severity::Warning,
                    format!("client CSR {} pending for {age}", csr.name),
                )
                .with(basis)
                .with("kubelet client CSRs are normally auto-approved within seconds by kube-controller-manager")
                .fix(format!("kubectl certificate approve {}", csr.name)),
            ),
            (CsrState::Pending, SIGNER_SERVING) => findings.push(
                Finding::new(
                    ids::CSR_SERVING_PENDING,
                    Domain::Certificates,
                    Severity::Warning,
                    format!("serving CSR {} pending for {age} (never auto-approved)", csr.name),
                )
                .with(basis)
                .fix(format!(
                    "check its SANs are this node's names/IPs first: kubectl get csr {0} -o jsonpath='{{.spec.request}}' | base64 -d | openssl req -noout -text ; then kubectl certificate approve {0}",
                    csr.name
                )),
            ),
            (CsrState::Denied | CsrState::Failed, _) => findings.push(
                Finding::new(
                    ids::CSR_REJECTED,
                    Domain::Certificates,
                    Severity::Warning,
                    format!("CSR {} {:?}", csr.name, csr.state).to_lowercase(),
                )
                .with(basis),
            ),
            _ => {}
        }
    }
    if findings.is_empty() {
        let issued = csrs
            .iter()
            .filter(|c| matches!(c.state, CsrState::Issued | CsrState::Approved))
            .count();
        findings.push(Finding::new(
            ids::CSRS,
            Domain::Certificates,
            Severity::Ok,
            format!("no pending kubelet CSRs ({issued} approved/issued on record)"),
        ));
    }
    findings
}

/// With CSRs pending: is the approver (kube-controller-manager) alive?
pub fn csr_approver(e: &Evidence) -> Vec<Finding> {
    let pending = e.csrs.data().map_or(0, |c| {
        c.iter().filter(|c| c.state == CsrState::Pending).count()
    });
    if pending == 0 {
        return vec![];
    }
    match &e.controller_manager_lease {
        Step::Collected { data } => {
            let Some((age, duration)) = lease_age(e, data) else {
                return vec![];
            };
            let basis = format!(
                "kube-system/{} renewTime {} ago (duration {duration}s), holder {}",
                data.name,
                human_duration(age),
                data.holder_identity.clone().unwrap_or_default()
            );
            if age >= duration {
                vec![
                    Finding::new(
                        ids::CSR_APPROVER,
                        Domain::Certificates,
                        Severity::Critical,
                        format!(
                            "{pending} CSR(s) pending and the CSR approver is down: kube-controller-manager's lease is {} old",
                            human_duration(age)
                        ),
                    )
                    .with(basis)
                    .fix("restore kube-controller-manager (it approves kubelet client CSRs); meanwhile approve the pending CSR by hand"),
                ]
            } else {
                vec![
                    Finding::new(
                        ids::CSR_APPROVER,
                        Domain::Certificates,
                        Severity::Info,
                        "kube-controller-manager is alive, yet CSRs are pending",
                    )
                    .with(basis)
                    .fix("client CSRs stay pending when the requestor lacks the nodeclient/selfnodeclient ClusterRoleBindings; serving CSRs always wait for a person or an approver you run"),
                ]
            }
        }
        Step::Failed { failure } if failure.kind == FailureKind::NotFound => vec![Finding::new(
            ids::CSR_APPROVER,
            Domain::Certificates,
            Severity::Info,
            "kube-controller-manager's lease is not visible (managed control plane?): cannot tell whether the CSR approver runs",
        )],
        _ => vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// kubelet resources and health

fn running_pods(e: &Evidence) -> Option<f64> {
    metrics_end(e)
        .and_then(|m| m.scalar("kubelet_running_pods"))
        .or_else(|| e.stats_summary.data().map(|s| s.pods as f64))
}

/// Kubelet RSS, also per running pod.
pub fn kubelet_memory(e: &Evidence) -> Vec<Finding> {
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(rss) = end.scalar("process_resident_memory_bytes") else {
        return vec![missing_metric(
            ids::KUBELET_MEMORY,
            Domain::Kubelet,
            "process_resident_memory_bytes",
        )];
    };
    let pods = running_pods(e).unwrap_or(0.0);
    let per_pod = (pods > 0.0).then(|| rss / pods);
    let mut f = if rss > RSS_WARN_BYTES {
        if per_pod.is_some_and(|p| p <= RSS_PER_POD_EXPLAINED_BYTES) {
            Finding::new(
                ids::KUBELET_MEMORY,
                Domain::Kubelet,
                Severity::Info,
                format!(
                    "kubelet RSS {} is above 500 MB but explained by {pods} running pods",
                    human_bytes(rss)
                ),
            )
        } else {
            Finding::new(
                ids::KUBELET_MEMORY,
                Domain::Kubelet,
                Severity::Warning,
                format!("kubelet RSS {} (above 500 MB)", human_bytes(rss)),
            )
            .fix("growth without more pods suggests a leak: capture the goroutine dump and a heap profile before restarting; raise kubeReserved memory")
        }
    } else {
        Finding::new(
            ids::KUBELET_MEMORY,
            Domain::Kubelet,
            Severity::Ok,
            format!("kubelet RSS {}", human_bytes(rss)),
        )
    };
    if let Some(p) = per_pod {
        f = f.with(format!("{} per running pod ({pods} pods)", human_bytes(p)));
    }
    if let Some(start) = e
        .metrics_start
        .data()
        .and_then(|m| m.scalar("process_resident_memory_bytes"))
    {
        f = f.with(format!(
            "window change {:+.1} MiB",
            (rss - start) / (1024.0 * 1024.0)
        ));
    }
    vec![f]
}

/// Kubelet goroutines, also per running pod.
pub fn kubelet_goroutines(e: &Evidence) -> Vec<Finding> {
    let count = metrics_end(e)
        .and_then(|m| m.scalar("go_goroutines"))
        .or_else(|| e.goroutine_dump.data().map(|d| d.goroutines as f64));
    let Some(count) = count else {
        return vec![];
    };
    let pods = running_pods(e).unwrap_or(0.0);
    let per_pod = (pods > 0.0).then(|| count / pods);
    let mut f = if count > GOROUTINES_WARN {
        if per_pod.is_some_and(|p| p <= GOROUTINES_PER_POD_EXPLAINED) {
            Finding::new(
                ids::KUBELET_GOROUTINES,
                Domain::Kubelet,
                Severity::Info,
                format!(
                    "{count} kubelet goroutines, above 500 but explained by {pods} running pods"
                ),
            )
        } else {
            Finding::new(
                ids::KUBELET_GOROUTINES,
                Domain::Kubelet,
                Severity::Warning,
                format!("{count} kubelet goroutines (above 500): possible leak or pile-up"),
            )
            .fix("keep the goroutine dump (it shows where they wait) before anyone restarts the kubelet")
        }
    } else {
        Finding::new(
            ids::KUBELET_GOROUTINES,
            Domain::Kubelet,
            Severity::Ok,
            format!("{count} kubelet goroutines"),
        )
    };
    if let Some(p) = per_pod {
        f = f.with(format!("{p:.1} per running pod ({pods} pods)"));
    }
    vec![f]
}

/// Kubelet healthz sub-checks. Healthz has no PLEG check.
pub fn healthz(e: &Evidence) -> Vec<Finding> {
    let Some(h) = e.healthz.data() else {
        return vec![];
    };
    let failing: Vec<_> = h.checks.iter().filter(|c| !c.ok).collect();
    let names: Vec<&str> = h.checks.iter().map(|c| c.name.as_str()).collect();
    if failing.is_empty() && h.http_status == 200 {
        let ready_false = e
            .node
            .data()
            .and_then(|n| n.condition("Ready"))
            .is_some_and(|c| c.status == "False");
        let mut f = Finding::new(
            ids::HEALTHZ,
            Domain::Kubelet,
            Severity::Ok,
            format!("kubelet healthz ok ({})", names.join(", ")),
        )
        .with("healthz has no PLEG check");
        if ready_false {
            f = f.with("healthz 200 while Ready=False is expected during a PLEG stall");
        }
        return vec![f];
    }
    let syncloop = failing.iter().any(|c| c.name == "syncloop");
    let mut f = Finding::new(
        ids::HEALTHZ,
        Domain::Kubelet,
        if syncloop {
            Severity::Critical
        } else {
            Severity::Warning
        },
        format!(
            "kubelet healthz failing (HTTP {}): {}",
            h.http_status,
            failing
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    for c in &failing {
        f = f.with(format!("[-]{} {}", c.name, c.detail));
    }
    if syncloop {
        f = f
            .with("syncloop fails only after max(2 x resync, 5 min) without a sync: the kubelet's main loop is stuck")
            .fix("capture the goroutine dump first (it is in the bundle); then restart the kubelet: `systemctl restart kubelet` (expect a burst of CRI and API calls)");
    }
    vec![f]
}

/// The goroutine dump was captured (kept for the bundle) or why not.
pub fn goroutine_dump(e: &Evidence) -> Vec<Finding> {
    match &e.goroutine_dump {
        Step::Collected { data } => {
            let mut f = Finding::new(
                ids::GOROUTINE_DUMP,
                Domain::Kubelet,
                Severity::Ok,
                format!(
                    "goroutine dump captured: {} goroutines, {} blocked over a minute",
                    data.goroutines, data.blocked_over_a_minute
                ),
            );
            let states: Vec<String> = data
                .top_states
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            f = f.with(format!("states: {}", states.join(", ")));
            vec![f]
        }
        Step::Failed { failure } if failure.kind == FailureKind::NotFound => vec![
            Finding::new(
                ids::GOROUTINE_DUMP,
                Domain::Kubelet,
                Severity::Info,
                "no goroutine dump: the kubelet's profiling handler is disabled (enableProfilingHandler: false)",
            )
            .with(failure.message.clone())
            .fix("nothing to do now; enable the profiling handler to get dumps before restarts"),
        ],
        _ => vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// API connectivity (the kubelet's requests)

/// Kubelet -> API server latency: "p99 above 5 s" is only visible at the 4 s / 8 s buckets.
pub fn rest_client_latency(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "rest_client_request_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(since) = end.histogram_where(NAME, all) else {
        return vec![missing_metric(
            ids::REST_LATENCY,
            Domain::ApiConnectivity,
            NAME,
        )];
    };
    let Some(window) = window_histogram(e, NAME, all) else {
        return vec![];
    };
    let w = &window.histogram;
    let above4 = w.fraction_above(REST_BUCKET_4S).unwrap_or(0.0);
    let above8 = w.fraction_above(REST_BUCKET_8S).unwrap_or(0.0);
    let f = if above8 >= 0.01 {
        Finding::new(
            ids::REST_LATENCY,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!(
                "the kubelet's API requests are slow: {} took > 8 s (p99 above 5 s)",
                percent(above8)
            ),
        )
    } else if above4 >= 0.01 {
        Finding::new(
            ids::REST_LATENCY,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!(
                "the kubelet's API requests are slow: {} took > 4 s (p99 above 4 s; 5 s is not a bucket bound)",
                percent(above4)
            ),
        )
    } else {
        Finding::new(
            ids::REST_LATENCY,
            Domain::ApiConnectivity,
            Severity::Ok,
            "the kubelet's API requests are fast",
        )
    };
    let label = window_label(&window, window_seconds(e));
    let mut f = f
        .with(describe(&label, w))
        .with(describe("since kubelet start", &since));
    if f.severity.is_problem() {
        f = f.fix("lease renewals and status updates ride on these requests: check the API server's load and the network path from the node");
    }
    vec![f]
}

/// Kubelet -> API server 5xx answers and requests with no answer (`code="<error>"`).
pub fn rest_client_errors(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "rest_client_requests_total";
    let five = |l: &Labels| l.get("code").is_some_and(|c| c.starts_with('5'));
    let transport = |l: &Labels| l.get("code").map(String::as_str) == Some("<error>");
    let Some(w5) = window_counter(e, NAME, five) else {
        return vec![];
    };
    let wt = window_counter(e, NAME, transport).unwrap_or(0.0);
    let since5 = metrics_end(e)
        .and_then(|m| m.sum_where(NAME, five))
        .unwrap_or(0.0);
    let evidence = format!(
        "rest_client_requests_total: 5xx +{w5}, <error> +{wt} in the window; 5xx {since5} since kubelet start"
    );
    let f = if wt > 0.0 {
        Finding::new(
            ids::REST_ERRORS,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!("{wt} of the kubelet's API requests got no answer in the window (network path or API server)"),
        )
        .fix("fix the path from the node to the API server (load balancer, DNS, firewall); do not restart the kubelet for this")
    } else if w5 > 0.0 {
        Finding::new(
            ids::REST_ERRORS,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!(
                "the API server answered {w5} of the kubelet's requests with 5xx in the window"
            ),
        )
        .fix("the API server is failing: check its health and etcd")
    } else {
        Finding::new(
            ids::REST_ERRORS,
            Domain::ApiConnectivity,
            Severity::Ok,
            "no 5xx or unanswered kubelet API requests in the window",
        )
    };
    vec![f.with(evidence)]
}

// ---------------------------------------------------------------------------------------------
// filesystems and configuration

fn fs_finding(name: &str, fs: &FsUsage) -> Option<Finding> {
    let bytes = match (fs.used_bytes, fs.capacity_bytes) {
        (Some(u), Some(c)) if c > 0 => Some(u as f64 * 100.0 / c as f64),
        _ => None,
    };
    let inodes = match (fs.inodes_used, fs.inodes) {
        (Some(u), Some(c)) if c > 0 => Some(u as f64 * 100.0 / c as f64),
        _ => None,
    };
    if bytes.is_none() && inodes.is_none() {
        return None;
    }
    let worst = bytes.unwrap_or(0.0).max(inodes.unwrap_or(0.0));
    let severity = if worst >= FS_CRITICAL_PERCENT {
        Severity::Critical
    } else if worst > FS_WARN_PERCENT {
        Severity::Warning
    } else {
        Severity::Ok
    };
    let text = |p: Option<f64>| p.map_or("?".to_string(), |p| format!("{p:.0}%"));
    let mut f = Finding::new(
        &format!("{}-{name}", ids::FS),
        Domain::Filesystem,
        severity,
        format!(
            "{name}: {} space, {} inodes used",
            text(bytes),
            text(inodes)
        ),
    )
    .with(format!(
        "used {:?} of {:?} bytes; inodes used {:?} of {:?}",
        fs.used_bytes, fs.capacity_bytes, fs.inodes_used, fs.inodes
    ));
    if severity.is_problem() {
        f = f.fix("keep node filesystems under 70%: `crictl rmi --prune`, check container log rotation and emptyDir usage; inodes separately (many small files)");
    }
    Some(f)
}

/// Node filesystem and inode usage from /stats/summary.
pub fn filesystems(e: &Evidence) -> Vec<Finding> {
    let Some(s) = e.stats_summary.data() else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Some(fs) = &s.node_fs {
        out.extend(fs_finding("nodefs", fs));
    }
    // imagefs is often the same filesystem as nodefs; report it only when it differs.
    if let Some(fs) = &s.image_fs
        && Some(fs) != s.node_fs.as_ref()
    {
        out.extend(fs_finding("imagefs", fs));
    }
    if let Some(fs) = &s.container_fs
        && Some(fs) != s.node_fs.as_ref()
        && Some(fs) != s.image_fs.as_ref()
    {
        out.extend(fs_finding("containerfs", fs));
    }
    out
}

fn percent_value(text: &str) -> Option<f64> {
    text.strip_suffix('%')?.parse().ok()
}

/// Image GC thresholds against the imagefs eviction threshold.
pub fn image_gc(e: &Evidence) -> Vec<Finding> {
    let Some(c) = e.configz.data() else {
        return vec![];
    };
    // Defaults: pkg/kubelet/apis/config/v1beta1/defaults.go (85 / 80); eviction imagefs.available<15%.
    let high = c.image_gc_high_threshold_percent.unwrap_or(85);
    let low = c.image_gc_low_threshold_percent.unwrap_or(80);
    let eviction_used = c
        .eviction_hard
        .get("imagefs.available")
        .and_then(|v| percent_value(v))
        .map(|avail| 100.0 - avail);
    let basis = format!(
        "imageGCHighThresholdPercent={high} imageGCLowThresholdPercent={low} evictionHard imagefs.available={}",
        c.eviction_hard
            .get("imagefs.available")
            .cloned()
            .unwrap_or_else(|| "(default 15%)".into())
    );
    let f = if low >= high {
        Finding::new(
            ids::IMAGE_GC,
            Domain::Configuration,
            Severity::Warning,
            format!("image GC low threshold {low}% is not below the high threshold {high}%"),
        )
        .fix("set imageGCLowThresholdPercent below imageGCHighThresholdPercent")
    } else if eviction_used.is_some_and(|used| f64::from(high as i32) > used) {
        Finding::new(
            ids::IMAGE_GC,
            Domain::Configuration,
            Severity::Warning,
            format!(
                "image GC starts at {high}% used, after eviction starts at {:.0}% used",
                eviction_used.unwrap_or(0.0)
            ),
        )
        .fix("lower imageGCHighThresholdPercent below the imagefs eviction threshold")
    } else if high >= 90 {
        Finding::new(
            ids::IMAGE_GC,
            Domain::Configuration,
            Severity::Warning,
            format!("image GC starts late, at {high}% used"),
        )
        .fix("lower imageGCHighThresholdPercent (default 85) so GC runs before DiskPressure")
    } else {
        Finding::new(
            ids::IMAGE_GC,
            Domain::Configuration,
            Severity::Ok,
            format!("image GC at {high}% -> {low}%"),
        )
    };
    vec![f.with(basis)]
}

/// Container log rotation: per-container log budget.
pub fn log_rotation(e: &Evidence) -> Vec<Finding> {
    let Some(c) = e.configz.data() else {
        return vec![];
    };
    let size_text = c
        .container_log_max_size
        .clone()
        .unwrap_or_else(|| "10Mi".into());
    let files = c.container_log_max_files.unwrap_or(5);
    let basis = format!("containerLogMaxSize={size_text} containerLogMaxFiles={files}");
    let Some(size) = parse_quantity_bytes(&size_text) else {
        return vec![
            Finding::new(
                ids::LOG_ROTATION,
                Domain::Configuration,
                Severity::Info,
                format!("container log size {size_text:?} not understood"),
            )
            .with(basis),
        ];
    };
    let budget = size * files as f64;
    let f = if budget > 1024.0 * 1024.0 * 1024.0 {
        Finding::new(
            ids::LOG_ROTATION,
            Domain::Configuration,
            Severity::Warning,
            format!(
                "each container may keep {} of logs: a few chatty containers can fill nodefs",
                human_bytes(budget)
            ),
        )
        .fix("lower containerLogMaxSize or containerLogMaxFiles")
    } else {
        Finding::new(
            ids::LOG_ROTATION,
            Domain::Configuration,
            Severity::Ok,
            format!("container logs rotate at {size_text} x {files} files"),
        )
    };
    vec![f.with(basis)]
}

/// kube-reserved / system-reserved.
pub fn reserved(e: &Evidence) -> Vec<Finding> {
    let Some(c) = e.configz.data() else {
        return vec![];
    };
    let show = |m: &std::collections::BTreeMap<String, String>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let basis = format!(
        "kubeReserved {} systemReserved {}",
        show(&c.kube_reserved),
        show(&c.system_reserved)
    );
    let f = if c.kube_reserved.is_empty() && c.system_reserved.is_empty() {
        Finding::new(
            ids::RESERVED,
            Domain::Configuration,
            Severity::Warning,
            "no kubeReserved or systemReserved: workloads can starve the kubelet and the runtime",
        )
        .fix("set kubeReserved and systemReserved (cpu, memory) in the kubelet config")
    } else {
        Finding::new(
            ids::RESERVED,
            Domain::Configuration,
            Severity::Ok,
            "resources reserved for the kubelet/system",
        )
    };
    vec![f.with(basis)]
}

// ---------------------------------------------------------------------------------------------
// collection failures

/// Collection steps by name, for failure reporting.
fn steps(e: &Evidence) -> Vec<(&'static str, Option<&Failure>)> {
    vec![
        ("node", e.node.failure()),
        ("lease", e.lease.failure()),
        ("node-leases", e.node_leases.failure()),
        ("csrs", e.csrs.failure()),
        ("events", e.events.failure()),
        ("healthz", e.healthz.failure()),
        ("configz", e.configz.failure()),
        ("metrics-start", e.metrics_start.failure()),
        ("metrics-end", e.metrics_end.failure()),
        ("stats-summary", e.stats_summary.failure()),
        ("goroutine-dump", e.goroutine_dump.failure()),
        (
            "controller-manager-lease",
            e.controller_manager_lease.failure(),
        ),
        ("kubelet-log", e.kubelet_log.failure()),
        ("runtime-log", e.runtime_log.failure()),
    ]
}

/// How a dial from the API server to the kubelet failed, from the proxy's error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialError {
    /// The node answered but nothing listens on the kubelet port: the kubelet is not running.
    Refused,
    /// The dial timed out: the node or the path to it is down.
    Timeout,
    /// Connected, but the TLS handshake timed out (the API server's proxy gives up at 10 s): the
    /// kernel accepts on the kubelet's port, yet the process does not run at all — stopped,
    /// frozen, or starved to a standstill. (A kubelet cut off from the API server still shakes
    /// hands: its TLS needs nothing from the API server.)
    NoHandshake,
    /// Connected and shook hands, but no answer (response headers timed out, reset, EOF): the
    /// kubelet serves its port but its handlers hang — stuck, starved, or unable to authorize.
    NoResponse,
    /// No route to the node.
    NoRoute,
    /// Something else.
    Other,
}

/// Classify a node-proxy failure message.
pub fn dial_error(message: &str) -> DialError {
    let m = message.to_lowercase();
    if m.contains("connection refused") {
        DialError::Refused
    } else if m.contains("tls handshake timeout") {
        DialError::NoHandshake
    } else if m.contains("awaiting response headers")
        || m.contains("connection reset")
        || m.ends_with("eof")
    {
        DialError::NoResponse
    } else if m.contains("no route to host") || m.contains("network is unreachable") {
        DialError::NoRoute
    } else if m.contains("timeout") || m.contains("timed out") || m.contains("deadline exceeded") {
        DialError::Timeout
    } else {
        DialError::Other
    }
}

/// The kubelet's own answer when its webhook authorization cannot ask the API server:
/// "Authorization error (user=kube-apiserver-kubelet-client, verb=get, resource=nodes,
/// subresource=healthz)" with HTTP 500 (seen on v1.35.4 with a rejected client certificate).
pub fn is_kubelet_authz_failure(f: &Failure) -> bool {
    f.request.contains("/proxy/")
        && f.http_status == Some(500)
        && f.message.contains("Authorization error (user=")
}

/// One finding per kind of collection failure (RBAC denials name the permission).
pub fn collection_failures(e: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    let ready_true = e
        .node
        .data()
        .and_then(|n| n.condition("Ready"))
        .is_some_and(|c| c.status == "True");
    let failed = steps(e);
    // RBAC: group by the permission needed.
    let mut needs: Vec<(String, Vec<&str>)> = Vec::new();
    for (step, failure) in &failed {
        let Some(f) = failure else { continue };
        if matches!(f.kind, FailureKind::Forbidden | FailureKind::Unauthorized) {
            let need = f.needs.clone().unwrap_or_else(|| "credentials".into());
            match needs.iter_mut().find(|(n, _)| *n == need) {
                Some((_, list)) => list.push(step),
                None => needs.push((need, vec![step])),
            }
        }
    }
    for (need, list) in needs {
        out.push(
            Finding::new(
                &format!("{}-{}", ids::ACCESS, list[0]),
                Domain::Collection,
                Severity::Unknown,
                format!("not checked ({}): needs {need}", list.join(", ")),
            )
            .fix(format!(
                "grant your user `{need}` (RBAC) to run these checks"
            )),
        );
    }
    let proxy: Vec<(&str, &Failure)> = failed
        .iter()
        .filter_map(|(s, f)| f.map(|f| (*s, f)))
        .filter(|(_, f)| f.request.contains("/proxy/"))
        .collect();
    let unreachable: Vec<_> = proxy
        .iter()
        .filter(|(_, f)| f.kind == FailureKind::KubeletUnreachable)
        .collect();
    if let Some((_, first)) = unreachable.first() {
        let dial = dial_error(&first.message);
        let meaning = match dial {
            DialError::Refused => {
                "connection refused: the node answers but nothing listens on the kubelet port (kubelet not running)"
            }
            DialError::Timeout => "dial timed out: the node or the network path to it is down",
            DialError::NoHandshake => {
                "its port accepts connections but the process never completes a TLS handshake (stopped, frozen, or starved to a standstill)"
            }
            DialError::NoResponse => {
                "the kubelet accepts connections but does not answer (stuck or starved)"
            }
            DialError::NoRoute => "no route to the node: network partition or node down",
            DialError::Other => "the API server cannot reach the kubelet",
        };
        out.push(
            Finding::new(
                ids::KUBELET_UNREACHABLE,
                Domain::Kubelet,
                if ready_true {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                format!("API server cannot reach the kubelet: {meaning}"),
            )
            .with(format!(
                "{} (HTTP {}): {}",
                first.request,
                first.http_status.unwrap_or(0),
                first.message
            ))
            .with(format!(
                "failed the same way: {}",
                unreachable
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
    }
    // A log query over a big file may take long on a healthy kubelet: not a slow kubelet.
    let slow: Vec<_> = proxy
        .iter()
        .filter(|(s, f)| f.kind == FailureKind::Timeout && !s.ends_with("-log"))
        .collect();
    if !slow.is_empty() {
        out.push(
            Finding::new(
                ids::KUBELET_SLOW,
                Domain::Kubelet,
                Severity::Warning,
                format!(
                    "the kubelet did not answer in time through the API server ({})",
                    slow.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
                ),
            )
            .with(slow[0].1.message.clone())
            .fix("an alive but unresponsive kubelet is starved or deadlocked: keep the goroutine dump if one was captured"),
        );
    }
    let authz: Vec<_> = proxy
        .iter()
        .filter(|(_, f)| is_kubelet_authz_failure(f))
        .collect();
    if let Some((_, first)) = authz.first() {
        out.push(
            Finding::new(
                ids::KUBELET_AUTHZ,
                Domain::Certificates,
                if ready_true { Severity::Warning } else { Severity::Critical },
                "the kubelet answers but cannot authorize the API server's requests: its own calls to the API server (SubjectAccessReview) fail — its credentials are rejected or it cannot reach the API server",
            )
            .with(format!(
                "{} (HTTP {}): {}",
                first.request,
                first.http_status.unwrap_or(0),
                first.message
            ))
            .with(format!(
                "failed the same way: {}",
                authz.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
            )),
        );
    }
    for (step, failure) in &failed {
        let Some(f) = failure else { continue };
        let handled = is_kubelet_authz_failure(f)
            || f.kind == FailureKind::Disabled
            || matches!(
                f.kind,
                FailureKind::Forbidden
                    | FailureKind::Unauthorized
                    | FailureKind::KubeletUnreachable
            )
            || (f.kind == FailureKind::Timeout
                && f.request.contains("/proxy/")
                && !step.ends_with("-log"))
            || (f.kind == FailureKind::NotFound
                && matches!(
                    *step,
                    "lease" | "goroutine-dump" | "controller-manager-lease"
                ));
        if handled {
            continue;
        }
        let severity = if f.kind == FailureKind::Malformed {
            Severity::Warning
        } else {
            Severity::Unknown
        };
        out.push(
            Finding::new(
                &format!("{}-{step}", ids::COLLECTION),
                Domain::Collection,
                severity,
                format!("{step} not collected: {:?}", f.kind).to_lowercase(),
            )
            .with(format!(
                "{} (HTTP {}): {}",
                f.request,
                f.http_status.map_or("-".into(), |s| s.to_string()),
                f.message
            )),
        );
    }
    for (label, m) in [
        ("start", e.metrics_start.data()),
        ("end", e.metrics_end.data()),
    ] {
        if let Some(m) = m
            && m.malformed_lines > 0
        {
            let mut f = Finding::new(
                ids::METRICS_MALFORMED,
                Domain::Collection,
                Severity::Warning,
                format!(
                    "{} malformed lines in the kubelet's /metrics ({label} scrape); they were skipped",
                    m.malformed_lines
                ),
            );
            for ex in &m.malformed_examples {
                f = f.with(ex.clone());
            }
            out.push(f);
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;
