//! The evidence snapshot: everything collection observed, and nothing judged.
//!
//! It is serializable both ways: it is the `evidence` of the JSON report and will be the
//! replayable content of a bundle. Each collection step is a [`Step`]: what it saw, or why it
//! could not see it (a failure is evidence too: a 503 from the node proxy says the API server
//! cannot reach the kubelet). Raw texts too large for a report (metrics, the goroutine dump) are
//! in [`RawCaptures`], kept for the bundle.
//!
//! Later layers (the node probe, eBPF attribution) add their own fields here; the API-side
//! fields keep their names.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One observation layer. The verdict says which ones it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// Kubernetes API objects and the kubelet through the API server's node proxy.
    Api,
    /// The privileged probe pod on the node (the agent's node-side evidence).
    NodeProbe,
    /// The agent run standalone on the node by the operator (`--node-evidence`): the node-side
    /// evidence when no probe pod can start.
    NodeAgent,
    /// eBPF attribution in the node agent (`--trace`).
    Ebpf,
    /// The node's flight recorder report (`kubectl nodehealth recorder install`): its node
    /// evidence when no probe pod can start, and always its timeline.
    Recorder,
}

/// Everything observed about one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Node name as asked.
    pub node_name: String,
    /// When collection finished (local clock); ages are computed against it.
    pub collected_at: Timestamp,
    /// The observation window between the two metrics scrapes.
    pub window: Window,
    /// Layers that contributed.
    pub layers: Vec<Layer>,
    /// The Node object.
    pub node: Step<NodeInfo>,
    /// The node's Lease in kube-node-lease.
    pub lease: Step<LeaseInfo>,
    /// How many node leases are stale cluster-wide (separates a partition from one dead kubelet).
    pub node_leases: Step<LeaseOverview>,
    /// Kubelet CSRs that belong to this node.
    pub csrs: Step<Vec<Csr>>,
    /// Events about the node, newest first.
    pub events: Step<Vec<NodeEvent>>,
    /// Kubelet `/healthz?verbose` through the node proxy.
    pub healthz: Step<Healthz>,
    /// Kubelet `/configz` (the fields the checks use).
    pub configz: Step<KubeletConfig>,
    /// Kubelet `/metrics` at the start of the window.
    pub metrics_start: Step<MetricsSnapshot>,
    /// Kubelet `/metrics` at the end of the window.
    pub metrics_end: Step<MetricsSnapshot>,
    /// Kubelet `/stats/summary` (node filesystems).
    pub stats_summary: Step<StatsSummary>,
    /// Kubelet `/debug/pprof/goroutine?debug=2`, summarised (raw text in [`RawCaptures`]).
    pub goroutine_dump: Step<GoroutineDump>,
    /// kube-controller-manager's Lease in kube-system: is the CSR approver alive?
    pub controller_manager_lease: Step<LeaseInfo>,
    /// The kubelet's own log through its node log query (`/logs/?query=kubelet`).
    #[serde(default = "not_queried")]
    pub kubelet_log: Step<LogQuery>,
    /// The container runtime's log through the same query (`query=containerd`, ...).
    #[serde(default = "not_queried")]
    pub runtime_log: Step<LogQuery>,
    /// The node agent in the probe pod: its node-side evidence, or why there is none (`--api-only`,
    /// the pod refused, or not started within `--pod-timeout` — itself evidence).
    #[serde(default = "not_probed")]
    pub node_probe: Step<NodeProbe>,
    /// This node's series in the user's Prometheus before the run (`--prometheus`).
    #[serde(default = "no_history")]
    pub history: Step<crate::history::History>,
    /// The node's flight-recorder report, when a recorder runs there.
    #[serde(default = "no_recorder")]
    pub recorder: Step<crate::recorder::RecorderView>,
}

/// The recorder step of evidence that predates it (older bundles).
pub fn no_recorder() -> Step<crate::recorder::RecorderView> {
    Step::Skipped {
        reason: "the recorder's report was not read".to_string(),
    }
}

/// The history step when `--prometheus` was not given.
pub fn no_history() -> Step<crate::history::History> {
    Step::Skipped {
        reason: "no --prometheus given".to_string(),
    }
}

fn not_queried() -> Step<LogQuery> {
    Step::Skipped {
        reason: "the log query was not run".to_string(),
    }
}

/// A log read through the kubelet's node log query, digested with the shared catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// The service queried (`kubelet`, `containerd`).
    pub service: String,
    /// What it said.
    pub digest: nodehealth_proto::logs::LogDigest,
}

fn not_probed() -> Step<NodeProbe> {
    Step::Skipped {
        reason: "the node probe was not run".to_string(),
    }
}

/// What the probe pod's agent streamed back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProbe {
    /// `namespace/name` of the probe pod, or `standalone: <file>` for `--node-evidence`.
    pub pod: String,
    /// Seconds from creating the pod to the agent running.
    pub pod_start_seconds: f64,
    /// Seconds from the agent's container running to the plugin connected to it (port-forward
    /// through the kubelet, which lists pods through the runtime first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_seconds: Option<f64>,
    /// The stream broke before the agent's final report: the sections present are real, the
    /// missing ones were never received.
    pub partial: bool,
    /// Why the stream ended early, when `partial`.
    pub stream_error: Option<String>,
    /// Whether the node mounted the host root recursively read-only in the probe pod (the pod's
    /// status; `false`: submounts stay writable — the runtime cannot, e.g. containerd before 2.0).
    /// `None` for the standalone agent, or a kubelet that does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_root_recursive_read_only: Option<bool>,
    /// The node evidence, in the agent's own schema (`nodehealth_proto::node`).
    pub evidence: nodehealth_proto::node::NodeEvidence,
}

impl NodeProbe {
    /// Node evidence that came without a probe pod (the agent's file, a recorder's report):
    /// `source` says where from.
    pub fn without_pod(source: String, evidence: nodehealth_proto::node::NodeEvidence) -> Self {
        NodeProbe {
            pod: source,
            pod_start_seconds: 0.0,
            connect_seconds: None,
            host_root_recursive_read_only: None,
            partial: false,
            stream_error: None,
            evidence,
        }
    }
}

/// Why a probe produced no node evidence: a failed [`Step`] of the node probe carries one of
/// these in its message; the pod-not-started case is evidence for the verdict.
pub const POD_NOT_STARTED: &str = "pod-not-started";

/// Raw texts kept for the bundle, not put in the report.
#[derive(Debug, Clone, Default)]
pub struct RawCaptures {
    /// `/metrics` at window start.
    pub metrics_start: Option<String>,
    /// `/metrics` at window end.
    pub metrics_end: Option<String>,
    /// `/debug/pprof/goroutine?debug=2`.
    pub goroutine_dump: Option<String>,
    /// `/configz` JSON.
    pub configz: Option<String>,
    /// `/stats/summary` JSON.
    pub stats_summary: Option<String>,
    /// `/healthz?verbose` body.
    pub healthz: Option<String>,
    /// The Prometheus range answers, by signal id (`--prometheus`).
    pub history: Vec<(String, String)>,
}

/// The observation window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// The requested duration (`--duration`).
    pub requested_seconds: f64,
    /// When the first scrape was taken.
    pub started_at: Timestamp,
    /// When the last scrape was taken.
    pub ended_at: Timestamp,
}

/// The outcome of one collection step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Step<T> {
    /// The step saw this.
    Collected {
        /// What was seen.
        data: T,
    },
    /// The step failed; the failure is evidence.
    Failed {
        /// Why.
        failure: Failure,
    },
    /// The step was not attempted.
    Skipped {
        /// Why not.
        reason: String,
    },
}

impl<T> Step<T> {
    /// The same outcome with the data, when collected, passed through `f`.
    pub fn map_ref<U>(&self, f: impl FnOnce(&T) -> U) -> Step<U> {
        match self {
            Step::Collected { data } => Step::Collected { data: f(data) },
            Step::Failed { failure } => Step::Failed {
                failure: failure.clone(),
            },
            Step::Skipped { reason } => Step::Skipped {
                reason: reason.clone(),
            },
        }
    }

    /// The data, when collected.
    pub fn data(&self) -> Option<&T> {
        match self {
            Step::Collected { data } => Some(data),
            _ => None,
        }
    }

    /// The failure, when failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Step::Failed { failure } => Some(failure),
            _ => None,
        }
    }
}

/// What kind of failure a step met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// 401 from the API server: our own credentials were rejected.
    Unauthorized,
    /// 403 from the API server: RBAC denial; `needs` names the permission.
    Forbidden,
    /// 404: object or endpoint does not exist.
    NotFound,
    /// 502/503 from the node proxy: the API server could not reach the kubelet.
    KubeletUnreachable,
    /// Another non-2xx answer (from the API server or the kubelet).
    HttpError,
    /// No answer within `--timeout`.
    Timeout,
    /// Transport failure talking to the API server (connection, TLS).
    Transport,
    /// The answer could not be parsed.
    Malformed,
    /// The endpoint is turned off on the kubelet (a feature gate or a config field); the message
    /// says how to turn it on.
    Disabled,
}

/// A failed step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Category.
    pub kind: FailureKind,
    /// The request, e.g. `GET /api/v1/nodes/n1/proxy/metrics`.
    pub request: String,
    /// HTTP status when there was one.
    pub http_status: Option<u16>,
    /// The permission this step needs, e.g. `get nodes/proxy` (for RBAC denials).
    pub needs: Option<String>,
    /// The message as received.
    pub message: String,
}

/// One node condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `MemoryPressure`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: Option<String>,
    /// Human message.
    pub message: Option<String>,
    /// Last time the kubelet posted this condition.
    pub last_heartbeat_time: Option<Timestamp>,
    /// Last status change.
    pub last_transition_time: Option<Timestamp>,
}

/// The parts of the Node object the checks use.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Status conditions.
    pub conditions: Vec<Condition>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Taints as `key:effect`.
    pub taints: Vec<String>,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: Option<String>,
    /// `status.nodeInfo.containerRuntimeVersion`, e.g. `containerd://2.1.4`.
    pub container_runtime_version: Option<String>,
    /// `status.capacity.pods`.
    pub pod_capacity: Option<String>,
    /// First InternalIP.
    pub internal_ip: Option<String>,
    /// `spec.providerID`, e.g. `aws:///us-west-2a/i-…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// `status.nodeInfo.osImage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    /// The labels that say which platform runs the node (checks::platform::keep_key).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The annotations that say which platform runs the node.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl NodeInfo {
    /// The condition of this type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// A coordination.k8s.io Lease.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.holderIdentity`.
    pub holder_identity: Option<String>,
    /// `spec.renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `spec.leaseDurationSeconds`.
    pub lease_duration_seconds: Option<i32>,
    /// When the API server's answer arrived: ages are measured from here, not from the end of
    /// the collection (a 25 s window made a lease read at its start look 25 s staler). Absent in
    /// bundles written before it existed: then the collection's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    /// `spec.renewTime` read at the window's start: a later `renew_time` is a renewal seen while
    /// the window lasted, whatever the clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time_before: Option<Timestamp>,
    /// The API server's clock (its `Date` header, 1 s resolution) when the lease was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<Timestamp>,
}

impl LeaseInfo {
    /// The holder renewed the lease while the window lasted (read at both ends).
    pub fn renewed_during_window(&self) -> bool {
        matches!((self.renew_time_before, self.renew_time), (Some(b), Some(a)) if a > b)
    }
}

/// Node leases cluster-wide: how many are stale right now.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseOverview {
    /// Leases in kube-node-lease.
    pub total: usize,
    /// Leases whose renewTime is older than their duration.
    pub stale: usize,
    /// Up to 10 names of stale leases (other than this node's).
    pub stale_examples: Vec<String>,
}

/// State of a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsrState {
    /// Neither approved nor denied.
    Pending,
    /// Approved, certificate not yet issued.
    Approved,
    /// Approved and the certificate is in status.
    Issued,
    /// Denied.
    Denied,
    /// Signing failed.
    Failed,
}

/// A kubelet CertificateSigningRequest of this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Csr {
    /// Object name (what `kubectl certificate approve` takes).
    pub name: String,
    /// `kubernetes.io/kube-apiserver-client-kubelet` or `kubernetes.io/kubelet-serving`.
    pub signer_name: String,
    /// Requestor (`spec.username`).
    pub username: String,
    /// Creation time.
    pub created: Option<Timestamp>,
    /// State.
    pub state: CsrState,
}

/// The kubelet client-certificate signer (auto-approved by kube-controller-manager).
pub const SIGNER_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The kubelet serving-certificate signer (never auto-approved).
pub const SIGNER_SERVING: &str = "kubernetes.io/kubelet-serving";

/// An Event about the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvent {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason, e.g. `NodeNotReady`.
    pub reason: String,
    /// Message.
    pub message: String,
    /// How many times it happened.
    pub count: i32,
    /// Last time it happened.
    pub last_seen: Option<Timestamp>,
    /// Reporting component.
    pub source: Option<String>,
}

/// Kubelet `/healthz?verbose`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Healthz {
    /// HTTP status of the kubelet's answer (200 healthy, 500 failing).
    pub http_status: u16,
    /// Sub-checks (`ping`, `log`, `syncloop`).
    pub checks: Vec<HealthzCheck>,
}

/// One `[+]name ok` / `[-]name failed: reason` line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthzCheck {
    /// Check name.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Text after the name.
    pub detail: String,
}

/// Parse a verbose healthz body.
pub fn parse_healthz(http_status: u16, body: &str) -> Healthz {
    let checks = body
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (ok, rest) = if let Some(rest) = line.strip_prefix("[+]") {
                (true, rest)
            } else {
                (false, line.strip_prefix("[-]")?)
            };
            let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(HealthzCheck {
                name: name.to_string(),
                ok,
                detail: detail.trim().to_string(),
            })
        })
        .collect();
    Healthz {
        http_status,
        checks,
    }
}

/// The `/configz` fields the checks use (`None` = not set in the answer).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfig {
    /// `imageGCHighThresholdPercent` (default 85).
    pub image_gc_high_threshold_percent: Option<i64>,
    /// `imageGCLowThresholdPercent` (default 80).
    pub image_gc_low_threshold_percent: Option<i64>,
    /// `containerLogMaxSize` (default 10Mi).
    pub container_log_max_size: Option<String>,
    /// `containerLogMaxFiles` (default 5).
    pub container_log_max_files: Option<i64>,
    /// `kubeReserved`.
    pub kube_reserved: BTreeMap<String, String>,
    /// `systemReserved`.
    pub system_reserved: BTreeMap<String, String>,
    /// `evictionHard`.
    pub eviction_hard: BTreeMap<String, String>,
    /// `containerRuntimeEndpoint`.
    pub container_runtime_endpoint: Option<String>,
    /// `enableProfilingHandler`.
    pub enable_profiling_handler: Option<bool>,
    /// `rotateCertificates`.
    pub rotate_certificates: Option<bool>,
    /// `serverTLSBootstrap`.
    pub server_tls_bootstrap: Option<bool>,
    /// `authentication.webhook.enabled`: the kubelet asks the API server who a bearer token is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_webhook: Option<bool>,
    /// `authentication.anonymous.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_auth: Option<bool>,
    /// `authorization.mode` (`Webhook`: a SubjectAccessReview per request; `AlwaysAllow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_mode: Option<String>,
    /// `maxPods`.
    pub max_pods: Option<i64>,
    /// `runtimeRequestTimeout`.
    pub runtime_request_timeout: Option<String>,
    /// `featureGates` as the kubelet runs with them (e.g. `EventedPLEG: true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
}

/// Parse the `/configz` answer (`{"kubeletconfig": {...}}`).
/// The kubelet's `/configz` answer as the bundle keeps it: the same document, without its
/// credentials — `staticPodURLHeader` (headers the kubelet sends to fetch static pods, often an
/// `Authorization`) and any string that holds one ([`nodehealth_proto::redact::secrets`]).
/// Text that is not JSON is redacted as text.
pub fn redact_configz(text: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if k == "staticPodURLHeader" {
                        redact_all(v);
                    } else {
                        walk(v);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::String(s) => {
                if let std::borrow::Cow::Owned(r) = nodehealth_proto::redact::secrets(s) {
                    *s = r;
                }
            }
            _ => {}
        }
    }
    fn redact_all(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => m.values_mut().for_each(redact_all),
            serde_json::Value::Array(a) => a.iter_mut().for_each(redact_all),
            serde_json::Value::String(s) => *s = nodehealth_proto::redact::REDACTED.into(),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut doc) => {
            walk(&mut doc);
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        }
        Err(_) => nodehealth_proto::redact::secrets(text).into_owned(),
    }
}

pub fn parse_configz(text: &str) -> Result<KubeletConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("configz is not JSON: {e}"))?;
    let config = value
        .get("kubeletconfig")
        .ok_or("configz has no \"kubeletconfig\" object")?;
    let int = |key: &str| config.get(key).and_then(serde_json::Value::as_i64);
    let string = |key: &str| {
        config
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let boolean = |key: &str| config.get(key).and_then(serde_json::Value::as_bool);
    let map = |key: &str| -> BTreeMap<String, String> {
        config
            .get(key)
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(KubeletConfig {
        image_gc_high_threshold_percent: int("imageGCHighThresholdPercent"),
        image_gc_low_threshold_percent: int("imageGCLowThresholdPercent"),
        container_log_max_size: string("containerLogMaxSize"),
        container_log_max_files: int("containerLogMaxFiles"),
        kube_reserved: map("kubeReserved"),
        system_reserved: map("systemReserved"),
        eviction_hard: map("evictionHard"),
        container_runtime_endpoint: string("containerRuntimeEndpoint"),
        enable_profiling_handler: boolean("enableProfilingHandler"),
        rotate_certificates: boolean("rotateCertificates"),
        server_tls_bootstrap: boolean("serverTLSBootstrap"),
        authentication_webhook: config
            .pointer("/authentication/webhook/enabled")
            .and_then(serde_json::Value::as_bool),
        anonymous_auth: config
            .pointer("/authentication/anonymous/enabled")
            .and_then(serde_json::Value::as_bool),
        authorization_mode: config
            .pointer("/authorization/mode")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        max_pods: int("maxPods"),
        runtime_request_timeout: string("runtimeRequestTimeout"),
        feature_gates: config
            .get("featureGates")
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_bool()?)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Usage of one filesystem from `/stats/summary`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FsUsage {
    /// Capacity in bytes.
    pub capacity_bytes: Option<u64>,
    /// Used bytes.
    pub used_bytes: Option<u64>,
    /// Available bytes.
    pub available_bytes: Option<u64>,
    /// Total inodes.
    pub inodes: Option<u64>,
    /// Used inodes.
    pub inodes_used: Option<u64>,
    /// Free inodes.
    pub inodes_free: Option<u64>,
}

/// The `/stats/summary` fields the checks use.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatsSummary {
    /// `node.fs`: the kubelet's root filesystem (nodefs).
    pub node_fs: Option<FsUsage>,
    /// `node.runtime.imageFs`.
    pub image_fs: Option<FsUsage>,
    /// `node.runtime.containerFs` (split image filesystem, 1.31+).
    pub container_fs: Option<FsUsage>,
    /// Pods the kubelet reports stats for.
    pub pods: usize,
}

/// Parse `/stats/summary` JSON.
pub fn parse_stats_summary(text: &str) -> Result<StatsSummary, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("stats/summary is not JSON: {e}"))?;
    let fs = |v: Option<&serde_json::Value>| -> Option<FsUsage> {
        let v = v?.as_object()?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Some(FsUsage {
            capacity_bytes: n("capacityBytes"),
            used_bytes: n("usedBytes"),
            available_bytes: n("availableBytes"),
            inodes: n("inodes"),
            inodes_used: n("inodesUsed"),
            inodes_free: n("inodesFree"),
        })
    };
    let node = value.get("node").ok_or("stats/summary has no \"node\"")?;
    let runtime = node.get("runtime");
    Ok(StatsSummary {
        node_fs: fs(node.get("fs")),
        image_fs: fs(runtime.and_then(|r| r.get("imageFs"))),
        container_fs: fs(runtime.and_then(|r| r.get("containerFs"))),
        pods: value
            .get("pods")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len),
    })
}

/// Summary of the kubelet's goroutine dump (the text itself is in [`RawCaptures`]).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GoroutineDump {
    /// Number of goroutines in the dump.
    pub goroutines: usize,
    /// Size of the dump in bytes.
    pub bytes: usize,
    /// Goroutines blocked for at least a minute (`[select, 12 minutes]`).
    pub blocked_over_a_minute: usize,
    /// Count per wait state (`select`, `chan receive`, `IO wait`, ...), top 8.
    pub top_states: BTreeMap<String, usize>,
}

/// Summarise a `debug=2` goroutine dump: headers look like `goroutine 42 [select, 3 minutes]:`.
pub fn summarise_goroutines(text: &str) -> GoroutineDump {
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut goroutines = 0;
    let mut blocked = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("goroutine ") else {
            continue;
        };
        let Some(open) = rest.find('[') else { continue };
        let Some(close) = rest.rfind("]:") else {
            continue;
        };
        if close < open {
            continue;
        }
        goroutines += 1;
        let inside = &rest[open + 1..close];
        let state = inside.split(',').next().unwrap_or(inside).trim();
        *states.entry(state.to_string()).or_default() += 1;
        if inside.contains(" minutes") || inside.contains(" minute") {
            blocked += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = states.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(8);
    GoroutineDump {
        goroutines,
        bytes: text.len(),
        blocked_over_a_minute: blocked,
        top_states: ranked.into_iter().collect(),
    }
}

pub use nodehealth_proto::metrics::{HISTOGRAM_FAMILIES, MetricsSnapshot, SCALAR_FAMILIES, Series};

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundle's configz keeps every setting and loses the static-pod URL headers' values and
    /// credentials inside strings; what the checks read is unchanged.
    #[test]
    fn configz_in_the_bundle_has_no_credentials() {
        let raw = r#"{"kubeletconfig":{"staticPodURL":"https://cfg:pa55@10.0.0.9/pods","staticPodURLHeader":{"Authorization":["Bearer abcdefgh12345"],"X-Key":["k1","k2"]},"imageGCHighThresholdPercent":85,"containerRuntimeEndpoint":"unix:///run/containerd/containerd.sock"}}"#;
        let clean = redact_configz(raw);
        for secret in ["pa55", "abcdefgh12345", "k1", "k2"] {
            assert!(!clean.contains(secret), "{secret} in {clean}");
        }
        assert!(
            clean.contains("https://cfg:[REDACTED]@10.0.0.9/pods"),
            "{clean}"
        );
        assert!(clean.contains("X-Key") && clean.contains("unix:///run/containerd"));
        let (a, b) = (parse_configz(raw).unwrap(), parse_configz(&clean).unwrap());
        assert_eq!(
            a.image_gc_high_threshold_percent,
            b.image_gc_high_threshold_percent
        );
        assert_eq!(a.container_runtime_endpoint, b.container_runtime_endpoint);
        assert_eq!(
            redact_configz("not json password=x"),
            "not json password=[REDACTED]"
        );
    }

    #[test]
    fn healthz_verbose_lines() {
        let h = parse_healthz(
            500,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n",
        );
        assert_eq!(h.checks.len(), 3);
        assert_eq!(
            h.checks[2],
            HealthzCheck {
                name: "syncloop".into(),
                ok: false,
                detail: "failed: reason withheld".into()
            }
        );
        assert!(h.checks[0].ok);
    }

    #[test]
    fn configz_fields_and_defaults_absent() {
        let c = parse_configz(
            r#"{"kubeletconfig":{"imageGCHighThresholdPercent":85,"imageGCLowThresholdPercent":80,
            "containerLogMaxSize":"10Mi","containerLogMaxFiles":5,"kubeReserved":{"cpu":"100m"},
            "containerRuntimeEndpoint":"unix:///run/containerd/containerd.sock","enableProfilingHandler":true}}"#,
        )
        .unwrap();
        assert_eq!(c.image_gc_high_threshold_percent, Some(85));
        assert_eq!(c.kube_reserved["cpu"], "100m");
        assert!(c.system_reserved.is_empty());
        assert_eq!(c.enable_profiling_handler, Some(true));
        assert_eq!(c.max_pods, None);
        assert!(parse_configz("{}").is_err());
        assert!(parse_configz("<html>").is_err());
    }

    #[test]
    fn stats_summary_filesystems() {
        let s = parse_stats_summary(
            r#"{"node":{"nodeName":"n1","fs":{"capacityBytes":100,"usedBytes":75,"availableBytes":25,
            "inodes":1000,"inodesUsed":100,"inodesFree":900},"runtime":{"imageFs":{"capacityBytes":100,"usedBytes":10}}},
            "pods":[{},{}]}"#,
        )
        .unwrap();
        assert_eq!(s.node_fs.unwrap().used_bytes, Some(75));
        assert_eq!(s.image_fs.unwrap().used_bytes, Some(10));
        assert!(s.container_fs.is_none());
        assert_eq!(s.pods, 2);
    }

    #[test]
    fn goroutine_dump_summary() {
        let text = "goroutine 1 [select, 12 minutes]:\nmain.main()\n\ngoroutine 7 [chan receive]:\nx()\n\ngoroutine 9 [select]:\ny()\n\ngoroutine 10 [running]:\n";
        let d = summarise_goroutines(text);
        assert_eq!(d.goroutines, 4);
        assert_eq!(d.blocked_over_a_minute, 1);
        assert_eq!(d.top_states["select"], 2);
        assert_eq!(d.bytes, text.len());
    }

    #[test]
    fn step_serializes_with_outcome_tag() {
        let step: Step<LeaseInfo> = Step::Failed {
            failure: Failure {
                kind: FailureKind::Forbidden,
                request: "GET x".into(),
                http_status: Some(403),
                needs: Some("get leases".into()),
                message: "denied".into(),
            },
        };
        let json = serde_json::to_value(&step).unwrap();
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["failure"]["kind"], "forbidden");
        let back: Step<LeaseInfo> = serde_json::from_value(json).unwrap();
        assert!(back.failure().is_some());
    }
}
