//! The container runtime as the kubelet sees it: list-call latency and operation errors.

use super::thresholds::*;
use super::window::*;
use super::{Domain, Finding, FindingId, Severity};
use serde::{Deserialize, Serialize};

use crate::evidence::Evidence;
use crate::metrics::{Labels, counter_delta};
use crate::units::human_duration;

/// The two calls of every relist (pkg/kubelet/kuberuntime/kuberuntime_manager.go GetPods:
/// ListPodSandbox, then ListContainers), as `operation_type` labels.
pub const LIST_OPERATIONS: &[&str] = &["list_podsandbox", "list_containers"];

/// Which container runtime serves the kubelet's CRI socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// containerd (its CRI plugin).
    Containerd,
    /// CRI-O.
    CriO,
    /// Docker Engine behind cri-dockerd.
    CriDockerd,
    /// Not known from anything collected.
    Unknown,
}

impl RuntimeKind {
    /// The systemd unit that runs it, when known.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            RuntimeKind::Containerd => Some("containerd"),
            RuntimeKind::CriO => Some("crio"),
            RuntimeKind::CriDockerd => Some("cri-docker"),
            RuntimeKind::Unknown => None,
        }
    }

    /// Its name for a person.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::CriO => "CRI-O",
            RuntimeKind::CriDockerd => "cri-dockerd (Docker Engine)",
            RuntimeKind::Unknown => "the container runtime",
        }
    }

    /// The unit in a command: the real name, or a placeholder that says what to put there.
    pub fn unit_or_placeholder(self) -> &'static str {
        self.unit().unwrap_or("<runtime unit: containerd or crio>")
    }

    /// The per-container helper processes that keep containers running while the runtime
    /// restarts.
    pub fn shim(self) -> &'static str {
        match self {
            RuntimeKind::CriO => "conmon",
            RuntimeKind::CriDockerd => "containerd-shim (under dockerd)",
            _ => "containerd-shim",
        }
    }

    /// Recognise a runtime from a name, a version string (`containerd://1.7.2`, `cri-o://1.30`), a
    /// process name or a socket path.
    pub fn recognise(text: &str) -> Option<Self> {
        let t = text.to_ascii_lowercase();
        if t.contains("cri-dockerd") || t.contains("docker") {
            Some(RuntimeKind::CriDockerd)
        } else if t.contains("cri-o") || t.contains("crio") {
            Some(RuntimeKind::CriO)
        } else if t.contains("containerd") {
            Some(RuntimeKind::Containerd)
        } else {
            None
        }
    }
}

/// The runtime and what it was inferred from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeIdentity {
    /// Which runtime.
    pub kind: RuntimeKind,
    /// What said so.
    pub from: String,
}

/// Which runtime runs on the node, from the best source collected: the runtime's own answer to
/// CRI Version (through the socket the kubelet uses), the Node's `containerRuntimeVersion`, the
/// process the node agent found listening on the socket, then the configured endpoint's path.
pub fn identity(e: &Evidence) -> RuntimeIdentity {
    let node = e.node_probe.data().map(|p| &p.evidence);
    let candidates = [
        (
            "the runtime's CRI Version answer",
            node.and_then(|n| n.cri.as_ref())
                .and_then(|c| c.runtime_name.clone()),
        ),
        (
            "the Node's containerRuntimeVersion",
            e.node
                .data()
                .and_then(|n| n.container_runtime_version.clone()),
        ),
        (
            "the process listening on the runtime socket",
            node.and_then(|n| n.runtime_socket.as_ref())
                .and_then(|s| s.listeners.first())
                .map(|l| l.comm.clone()),
        ),
        (
            "the kubelet's containerRuntimeEndpoint",
            e.configz
                .data()
                .and_then(|c| c.container_runtime_endpoint.clone()),
        ),
    ];
    candidates
        .into_iter()
        .find_map(|(source, value)| {
            let value = value?;
            RuntimeKind::recognise(&value).map(|kind| RuntimeIdentity {
                kind,
                from: format!("{source} ({value})"),
            })
        })
        .unwrap_or(RuntimeIdentity {
            kind: RuntimeKind::Unknown,
            from: "nothing collected names it".into(),
        })
}

/// Runtime list operations above the 3.05 s bucket (degraded) or p99 above 7.63 s (critical).
pub fn runtime_list_latency(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_runtime_operations_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    if !end.histograms.contains_key(NAME) {
        return vec![missing_metric(
            FindingId::RuntimeListLatency,
            Domain::Runtime,
            NAME,
        )];
    }
    let unit = identity(e).kind.unit_or_placeholder();
    let mut worst = Severity::Ok;
    let mut means = Vec::new();
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
            if let Some(m) = w.mean() {
                means.push(format!("{op} {}", human_duration(m)));
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
        _ if means.is_empty() => {
            "runtime list calls: none in the window above the 3.05 s bucket".to_string()
        }
        _ => format!(
            "runtime list calls below the 3.05 s bucket (window means: {}); pleg-runtime-share weighs them against the relists",
            means.join(", ")
        ),
    };
    let mut f = Finding::new(
        FindingId::RuntimeListLatency,
        Domain::Runtime,
        worst,
        summary,
    );
    f.evidence = lines;
    if worst.is_problem() {
        f = f.fix(format!(
            "on the node: `time crictl ps` and `journalctl -u {unit}` — find why the runtime is slow (its CPU, its disk, a lock) before anything else; a slow runtime is not restarted"
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
            FindingId::RuntimeErrors,
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
                FindingId::RuntimeErrors,
                Domain::Runtime,
                Severity::Ok,
                "no runtime operation errors during the window",
            )
            .with(format!("{total_since} errors since kubelet start")),
        ];
    }
    let unit = identity(e).kind.unit_or_placeholder();
    let list: Vec<String> = rising.iter().map(|(op, d)| format!("{op} +{d}")).collect();
    vec![
        Finding::new(
            FindingId::RuntimeErrors,
            Domain::Runtime,
            Severity::Warning,
            format!("runtime operation errors rising: {}", list.join(", ")),
        )
        .with(format!("{total_since} errors since kubelet start"))
        .fix(format!(
            "on the node: `crictl info` and `journalctl -u {unit}` for the failing calls"
        )),
    ]
}

/// The runtime as the node agent saw it alone (no API evidence): its CRI Version answer, else the
/// process listening on its socket, else the socket path.
pub fn node_runtime(n: &nodehealth_proto::node::NodeEvidence) -> RuntimeKind {
    [
        n.cri.as_ref().and_then(|c| c.runtime_name.clone()),
        n.runtime_socket
            .as_ref()
            .and_then(|s| s.listeners.first())
            .map(|l| l.comm.clone()),
        n.runtime_socket.as_ref().map(|s| s.path.clone()),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| RuntimeKind::recognise(&v))
    .unwrap_or(RuntimeKind::Unknown)
}

/// The runtime calls that write its metadata and snapshots (a bolt commit with fsync, an overlay
/// snapshot): slow when the runtime's disk is — the list calls above do not show it, as they only
/// read.
const WRITE_OPERATIONS: &[&str] = &[
    "create_container",
    "start_container",
    "stop_container",
    "remove_container",
    "stop_podsandbox",
    "remove_podsandbox",
];
/// RunPodSandbox also sets up the pod's network (CNI): seconds are normal there, only the 7.63 s
/// bucket says something.
const SANDBOX_CREATE: &str = "run_podsandbox";
/// A runtime-operations bucket bound: 0.005 × 2.5^6 s.
const RUNTIME_BUCKET_1S: f64 = 0.005 * 244.140625;

/// The runtime's write calls over the window, all write types together (under a slow disk each
/// type may finish only once in a window: a pod takes tens of seconds to start): at least two of
/// them, most above the 1.22 s bucket (a healthy runtime creates or removes a container in a
/// fraction of a second); or any above 7.63 s, RunPodSandbox included.
pub fn runtime_write_latency(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_runtime_operations_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    if !end.histograms.contains_key(NAME) {
        return vec![];
    }
    let mut seen = Vec::new();
    let mut lines = Vec::new();
    let (mut writes, mut writes_above_1, mut above_7) = (0.0, 0.0, 0.0);
    for op in WRITE_OPERATIONS.iter().chain([&SANDBOX_CREATE]) {
        let filter = |l: &Labels| l.get("operation_type").map(String::as_str) == Some(*op);
        let Some(window) = window_histogram(e, NAME, filter) else {
            continue;
        };
        let w = &window.histogram;
        if w.count <= 0.0 {
            continue;
        }
        seen.push(format!(
            "{op} {} call(s), mean {}",
            w.count,
            human_duration(w.mean().unwrap_or(0.0))
        ));
        above_7 += w.count_above(RUNTIME_BUCKET_7S).unwrap_or(0.0);
        if *op != SANDBOX_CREATE {
            writes += w.count;
            writes_above_1 += w.count_above(RUNTIME_BUCKET_1S).unwrap_or(0.0);
        }
        lines.push(describe(
            &format!("{op} {}", window_label(&window, window_seconds(e))),
            w,
        ));
    }
    if seen.is_empty() {
        return vec![];
    }
    let slow = (writes >= 2.0 && writes_above_1 * 2.0 > writes) || above_7 > 0.0;
    let unit = identity(e).kind.unit_or_placeholder();
    let mut f = if slow {
        Finding::new(
            FindingId::RuntimeWriteLatency,
            Domain::Runtime,
            Severity::Warning,
            format!(
                "the runtime's writes are slow: {writes_above_1} of {writes} container create/start/stop/remove calls in the window took over 1.22 s"
            ),
        )
        .fix(format!(
            "writes wait on the runtime's disk far more often than on anything else: on the node `iostat -x 1` for the device under the runtime's root, `journalctl -u {unit}`; --trace names the device its threads wait on"
        ))
    } else {
        Finding::new(
            FindingId::RuntimeWriteLatency,
            Domain::Runtime,
            Severity::Ok,
            format!("runtime writes in the window: {}", seen.join(", ")),
        )
    };
    for line in lines {
        f = f.with(line);
    }
    vec![f]
}
