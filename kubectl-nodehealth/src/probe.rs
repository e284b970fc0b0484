//! The probe pod: the node agent (`tracer-user serve`) run as a privileged pod on the node, reached
//! through the API server's pod port-forward, its evidence streamed back over gRPC.
//!
//! This is I/O like [`crate::collect`]. The pod runs as a Job whose name is chosen before the
//! request, so [`delete`] works on every exit path (success, error, Ctrl-C, SIGHUP) whether or not
//! the create got through. When the plugin cannot delete it (SIGKILL, a lost laptop, a dead
//! kubelet) the cluster does: the Job's `activeDeadlineSeconds` fails it and its pod is deleted, and
//! `ttlSecondsAfterFinished` removes the Job and its pod once it finished. A pod a recovered
//! kubelet starts after the run expired exits at once (`--not-after`); the agent also exits on its
//! own deadline whatever the plugin does.
//!
//! What the pod can show depends on the node (DESIGN.md, "What each layer can see"): a kubelet
//! that never starts the pod is itself evidence ([`NotStarted`]), never a hang.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use nodehealth_proto::node::NodeEvidence;
use nodehealth_proto::v1::{RunEvent, RunRequest, agent_client::AgentClient, run_event};
use serde_json::json;

use crate::evidence::NodeProbe;

/// The label every probe pod carries (`kubectl nodehealth cleanup` selects on it).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Its value.
pub const NAME_VALUE: &str = "nodehealth-probe";
/// The per-run id label.
pub const RUN_LABEL: &str = "nodehealth.io/run";

/// The agent image the probe pod runs unless `--image` says otherwise: set when the plugin is
/// built, from `NODEHEALTH_DEFAULT_IMAGE` (`cargo xtask dist --image REF` bakes the reference it
/// pushed, ideally pinned by digest); without it, the name `cargo xtask image` imports into the
/// local cluster.
pub const DEFAULT_IMAGE: &str = match option_env!("NODEHEALTH_DEFAULT_IMAGE") {
    Some(image) => image,
    None => concat!("nodehealth.local/tracer-user:", env!("CARGO_PKG_VERSION")),
};

/// How to run the probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The node.
    pub node: String,
    /// Namespace of the pod.
    pub namespace: String,
    /// Agent image reference.
    pub image: String,
    /// `imagePullPolicy`.
    pub pull_policy: String,
    /// `imagePullSecrets` (Secrets in the probe's namespace) for a private registry.
    pub pull_secrets: Vec<String>,
    /// How long the kubelet gets to start the pod.
    pub pod_timeout: Duration,
    /// `priorityClassName` (only on request).
    pub priority_class: Option<String>,
    /// Observation window of the agent.
    pub window: Duration,
    /// Attach the eBPF tracer over the window.
    pub trace: bool,
    /// Give the agent CAP_SYS_ADMIN so that it can trace the kubelet's CRI calls through uprobes.
    pub uprobes: bool,
    /// How far back the agent reads the kubelet's and runtime's logs.
    pub log_since: Duration,
    /// Progress on stderr (the pod's start, the agent's steps).
    pub progress: crate::progress::Progress,
}

/// One run's identity: pod name, token, the agent's port.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// Short random id (pod name suffix, label value).
    pub run_id: String,
    /// The per-run secret sent in the gRPC request (never in the pod spec).
    pub token: String,
    /// The agent's loopback port on the node (host network: chosen per run to avoid clashes).
    pub port: u16,
    /// The pod's name once known (the Job controller names it).
    pod: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl RunIdentity {
    /// A fresh identity from the OS's random source.
    pub fn new() -> Result<RunIdentity, ProbeError> {
        let mut bytes = [0u8; 34];
        getrandom::fill(&mut bytes)
            .map_err(|e| ProbeError::Other(format!("no random source for the run token: {e}")))?;
        let hex = nodehealth_proto::proof::hex;
        Ok(RunIdentity {
            run_id: hex(&bytes[..4]),
            token: hex(&bytes[4..32]),
            // 40000..=47999: above the usual node ports and below the ephemeral range.
            port: 40000 + u16::from_le_bytes([bytes[32], bytes[33]]) % 8000,
            pod: Default::default(),
        })
    }

    /// The Job's name (chosen before the request).
    pub fn job_name(&self) -> String {
        format!("nodehealth-probe-{}", self.run_id)
    }

    /// The pod's name: the one the Job controller gave it once it exists, else the Job's.
    pub fn pod_name(&self) -> String {
        self.pod
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_else(|| self.job_name())
    }

    fn set_pod_name(&self, name: &str) {
        if let Ok(mut p) = self.pod.lock() {
            *p = Some(name.to_string());
        }
    }
}

/// SHA-256 of the token in hex: the only form of it the pod spec holds.
pub fn token_sha256(token: &str) -> String {
    nodehealth_proto::proof::token_sha256_hex(token)
}

/// Bound on one port-forward connection to the agent: the kubelet lists the pods through the
/// runtime before it forwards (measured: over 6 s with list calls held 3 s each).
const PORT_FORWARD_CONNECT: Duration = Duration::from_secs(15);

/// The agent's bound on each of its own CRI calls.
const AGENT_CRI_TIMEOUT: Duration = Duration::from_secs(10);

/// Seconds the agent may live: the connection (three port-forward bounds, or as long as the pod
/// may take to start: the plugin waits that long on a slow node), the window, and slack for the
/// stream.
fn agent_deadline(o: &ProbeOptions) -> u64 {
    o.window.as_secs()
        + (3 * PORT_FORWARD_CONNECT.as_secs()).max(o.pod_timeout.as_secs())
        + AGENT_CRI_TIMEOUT.as_secs()
        + 30
}

/// The run's server-side bound, seconds from its start: the longest the pod may wait to start
/// (three times the bound when slow relists widen it), the agent's deadline, and slack. The
/// kubelet enforces it on a running pod, the Job controller on a pod that never ran.
pub fn run_deadline_seconds(o: &ProbeOptions) -> u64 {
    3 * o.pod_timeout.as_secs() + agent_deadline(o) + 30
}

/// Finished Jobs (and their pods) live this long before the cluster removes them.
const TTL_AFTER_FINISHED_SECONDS: u64 = 30;

/// The probe Job (pure): one pod, never retried, failed by the cluster at the run's deadline and
/// removed with its pod soon after it finished.
pub fn job_spec(o: &ProbeOptions, id: &RunIdentity, now_unix: i64) -> Job {
    let pod = serde_json::to_value(pod_spec(o, id, now_unix)).expect("pod spec serializes");
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": id.job_name(),
            "namespace": o.namespace,
            "labels": { NAME_LABEL: NAME_VALUE, RUN_LABEL: id.run_id },
            "annotations": { EXPIRES_ANNOTATION: (now_unix + run_deadline_seconds(o) as i64).to_string() },
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": run_deadline_seconds(o),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
            "template": {
                "metadata": { "labels": pod["metadata"]["labels"] },
                "spec": pod["spec"],
            },
        },
    });
    serde_json::from_value(job).expect("the probe job spec is a valid Job")
}

/// When a run expires (Unix seconds), on its Job: `cleanup` removes only expired runs.
pub const EXPIRES_ANNOTATION: &str = "nodehealth.io/expires";

/// The capabilities the agent needs, each for one thing it reads (everything else is dropped;
/// README, Security):
/// - `SYS_PTRACE`: another process's /proc entries behind ptrace access — its fds (which process
///   listens on the runtime socket, the kubelet's connections to it), its executable, the syscall
///   a thread is blocked in — for processes with more capabilities than the agent (the kubelet,
///   the runtime);
/// - `DAC_READ_SEARCH`: host files and directories not readable by root's owner bits alone
///   (journal files of another group, a certificate directory of another owner);
/// - `SYSLOG`: the kernel log through syslog(2) (a container's device cgroup refuses /dev/kmsg)
///   and kernel symbol addresses for the trace's stacks (kptr_restrict);
/// - `SYS_CHROOT`: the host's own `journalctl` and `systemctl`, run chrooted into the host root;
/// - with `--trace` only: `BPF` (load the programs, read their maps) and `PERFMON` (attach them,
///   per-thread perf events on the kubelet's and the runtime's threads);
/// - with `--trace-uprobes` only: `SYS_ADMIN`, which Linux requires for uprobes (since the 2025
///   fix "perf: Require CAP_SYS_ADMIN for uprobes", in the stable kernels too): the kubelet's CRI
///   calls seen through uprobes on its gRPC client instead of on its socket.
pub fn capabilities(trace: bool, uprobes: bool) -> Vec<&'static str> {
    let mut caps = vec!["SYS_PTRACE", "DAC_READ_SEARCH", "SYSLOG", "SYS_CHROOT"];
    if trace || uprobes {
        caps.extend(["BPF", "PERFMON"]);
    }
    if uprobes {
        caps.push("SYS_ADMIN");
    }
    caps
}

/// The probe pod (pure; see DESIGN.md's probe-pod paragraph for each choice).
pub fn pod_spec(o: &ProbeOptions, id: &RunIdentity, now_unix: i64) -> Pod {
    let deadline = agent_deadline(o);
    let mut spec = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": id.pod_name(),
            "namespace": o.namespace,
            "labels": { NAME_LABEL: NAME_VALUE, RUN_LABEL: id.run_id },
        },
        "spec": {
            // Bound to the node directly: no scheduler involved (it may be the broken part).
            "nodeName": o.node,
            "restartPolicy": "Never",
            // Every taint, whatever its effect (a NotReady node is tainted NoExecute).
            "tolerations": [{ "operator": "Exists" }],
            "hostPID": true,
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 2,
            // The kubelet kills the pod after this even if the plugin is gone; the agent's own
            // --deadline comes first.
            "activeDeadlineSeconds": run_deadline_seconds(o),
            "containers": [{
                "name": "agent",
                "image": o.image,
                "imagePullPolicy": o.pull_policy,
                "args": [
                    "serve", "--host-root", "/host",
                    "--port", id.port.to_string(),
                    "--deadline", format!("{deadline}s"),
                    "--not-after", (now_unix + run_deadline_seconds(o) as i64).to_string(),
                ],
                "env": [
                    { "name": "NODEHEALTH_TOKEN_SHA256", "value": token_sha256(&id.token) },
                    // What the agent proves itself with before it is sent the token.
                    {
                        "name": nodehealth_proto::proof::RUN_KEY_ENV,
                        "value": nodehealth_proto::proof::hex(&nodehealth_proto::proof::run_key(&id.token)),
                    },
                ],
                // Not privileged: exactly the capabilities the agent uses (README, Security).
                "securityContext": {
                    "privileged": false,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"], "add": capabilities(o.trace, o.uprobes) },
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
                // Burstable, not BestEffort: the kubelet's eviction admission rejects BestEffort
                // pods under memory pressure (pkg/kubelet/eviction/eviction_manager.go Admit).
                "resources": {
                    "requests": { "cpu": "10m", "memory": "32Mi" },
                    "limits": { "memory": "256Mi" },
                },
                // Read-only down through every submount where the runtime can (containerd 2.0+,
                // kernel 5.12+); the pod's status says whether it did.
                "volumeMounts": [{
                    "name": "host", "mountPath": "/host", "readOnly": true,
                    "recursiveReadOnly": "IfPossible", "mountPropagation": "None",
                }],
            }],
            "volumes": [{ "name": "host", "hostPath": { "path": "/", "type": "Directory" } }],
        },
    });
    if let Some(pc) = &o.priority_class {
        spec["spec"]["priorityClassName"] = json!(pc);
    }
    if !o.pull_secrets.is_empty() {
        let secrets: Vec<_> = o
            .pull_secrets
            .iter()
            .map(|n| json!({ "name": n }))
            .collect();
        spec["spec"]["imagePullSecrets"] = json!(secrets);
    }
    serde_json::from_value(spec).expect("the probe pod spec is a valid Pod")
}

/// Why the probe produced no node evidence.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    /// Pod Security admission refused the privileged pod.
    #[error(
        "Pod Security admission refused the probe pod in namespace {namespace:?}: {message}. Fix: \
         run it in a namespace that allows privileged pods (`-n kube-system`, or label the \
         namespace pod-security.kubernetes.io/enforce=privileged), or use --api-only"
    )]
    PodSecurity {
        /// The namespace.
        namespace: String,
        /// The server's message.
        message: String,
    },
    /// An admission policy other than Pod Security refused the pod: OpenShift's security context
    /// constraints, Kyverno, Gatekeeper, another validating webhook.
    #[error(
        "{by} refused the probe pod in namespace {namespace:?}: {message}. Fix: {fix}; or use \
         --api-only (no pod)"
    )]
    AdmissionPolicy {
        /// Which admission: "OpenShift's security context constraints", "the Kyverno policy …".
        by: String,
        /// The namespace.
        namespace: String,
        /// The server's message.
        message: String,
        /// What lets the probe pod in.
        fix: String,
    },
    /// RBAC refused creating the pod (or port-forwarding to it).
    #[error(
        "not allowed to {verb} in namespace {namespace:?}: {message}. Fix: grant your user \
         `{verb}` there (RBAC), choose another namespace with -n, or use --api-only"
    )]
    Forbidden {
        /// The permission needed, e.g. `create pods`.
        verb: String,
        /// The namespace.
        namespace: String,
        /// The server's message.
        message: String,
    },
    /// The image cannot be used on the node (not present with pull policy Never, pull failed).
    #[error(
        "the node cannot use the agent image {image:?}: {reason}: {message}. Fix: import or push \
         the image (`cargo xtask image` for the local cluster), pass --image, or use --api-only"
    )]
    Image {
        /// The reference.
        image: String,
        /// ErrImageNeverPull, ImagePullBackOff, ...
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// The kubelet's admission refused the pod (eviction admission under pressure, ...).
    #[error(
        "the kubelet refused the probe pod ({reason}): {message}. A refusal under node pressure is \
         evidence; --priority-class system-node-critical gets past it (with care)"
    )]
    Admission {
        /// Pod status reason.
        reason: String,
        /// Pod status message.
        message: String,
    },
    /// The kubelet did not start the pod within the bound — evidence, not an error of the tool.
    #[error("{}", .0.summary())]
    NotStarted(NotStarted),
    /// The agent exited or could not be reached.
    #[error("the agent {0}")]
    Agent(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A pod the kubelet did not start in time, and what the API showed about it.
#[derive(Debug, Clone)]
pub struct NotStarted {
    /// The bound that passed.
    pub timeout: Duration,
    /// Pod phase when we gave up.
    pub phase: String,
    /// Container waiting reason, if any.
    pub waiting: Option<String>,
}

impl NotStarted {
    /// The evidence line.
    pub fn summary(&self) -> String {
        format!(
            "the kubelet did not start a pod bound to it within {} s (phase {}{})",
            self.timeout.as_secs(),
            self.phase,
            self.waiting
                .as_ref()
                .map(|w| format!(", container waiting: {w}"))
                .unwrap_or_default()
        )
    }
}

fn api_message(e: &kube::Error) -> (Option<u16>, String) {
    match e {
        kube::Error::Api(s) => (Some(s.code), s.message.clone()),
        other => (None, other.to_string()),
    }
}

/// Map a refused create to the cause and the fix. `verb` is the permission the request needed.
/// The Job controller's FailedCreate events carry the pod's admission error without a code.
pub fn classify_create_error(
    namespace: &str,
    code: Option<u16>,
    message: &str,
    verb: &str,
) -> ProbeError {
    let forbidden = code == Some(403) || message.contains(" is forbidden");
    if let Some((by, fix)) = admission_policy(namespace, message) {
        ProbeError::AdmissionPolicy {
            by,
            namespace: namespace.to_string(),
            message: message.to_string(),
            fix,
        }
    } else if forbidden && message.contains("PodSecurity") {
        ProbeError::PodSecurity {
            namespace: namespace.to_string(),
            message: message.to_string(),
        }
    } else if forbidden {
        ProbeError::Forbidden {
            verb: verb.into(),
            namespace: namespace.to_string(),
            message: message.to_string(),
        }
    } else {
        ProbeError::Other(format!("cannot create the probe: {message}"))
    }
}

/// Which admission policy other than Pod Security refused the pod, told from the server's
/// message, and what lets the probe pod in. The probe pod needs hostPID, hostNetwork, the host root
/// as a hostPath volume and added capabilities, and runs as the namespace's `default` service
/// account.
fn admission_policy(namespace: &str, message: &str) -> Option<(String, String)> {
    // OpenShift: "unable to validate against any security context constraint: [provider …]".
    if message.contains("security context constraint") {
        return Some((
            "OpenShift's security context constraints".into(),
            format!(
                "let the probe's service account use the `privileged` SCC, the only built-in one \
                 that allows host namespaces, a hostPath volume and added capabilities: `oc adm \
                 policy add-scc-to-user privileged -z default -n {namespace}` (better in a \
                 namespace of its own, -n)"
            ),
        ));
    }
    let webhook = message
        .split("admission webhook \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())?;
    if webhook.contains("kyverno") {
        // "…blocked due to the following policies\n\n<policy>:\n  <rule>: …"
        let policies: Vec<&str> = message
            .split("following policies")
            .nth(1)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.starts_with(' ') && l.trim_end().ends_with(':'))
            .map(|l| l.trim_end().trim_end_matches(':'))
            .collect();
        let named = if policies.is_empty() {
            "the policies named above".to_string()
        } else {
            policies.join(", ")
        };
        return Some((
            format!("Kyverno (webhook {webhook})"),
            format!(
                "a Kyverno PolicyException for {named}, matching Pods labelled \
                 app.kubernetes.io/name={NAME_VALUE} in namespace {namespace} (and the Jobs that \
                 create them)"
            ),
        ));
    }
    if webhook.contains("gatekeeper") {
        // "denied the request: [<constraint>] <message>"
        let constraints: Vec<&str> = message
            .split('[')
            .skip(1)
            .filter_map(|c| c.split(']').next())
            .collect();
        let named = if constraints.is_empty() {
            "the constraints".to_string()
        } else {
            constraints.join(", ")
        };
        return Some((
            format!("Gatekeeper (webhook {webhook})"),
            format!(
                "exclude namespace {namespace} from {named} (the constraint's \
                 spec.match.excludedNamespaces), or run the probe in a namespace already excluded \
                 (-n)"
            ),
        ));
    }
    Some((
        format!("the admission webhook {webhook}"),
        format!(
            "ask its owner to admit Pods labelled app.kubernetes.io/name={NAME_VALUE} in \
             namespace {namespace}, or use a namespace it does not apply to (-n)"
        ),
    ))
}

/// The Job controller made no pod within [`JOB_POD_GRACE`] (kube-controller-manager down?): the
/// plugin creates the pod itself, owned by the Job, so the cluster's garbage collector still
/// removes it with the Job. Idempotent (a pod already there is fine).
async fn create_owned_pod(
    pods: &Api<Pod>,
    o: &ProbeOptions,
    id: &RunIdentity,
    job: &Job,
    now_unix: i64,
) -> Result<(), ProbeError> {
    let mut pod = pod_spec(o, id, now_unix);
    pod.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: id.job_name(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        },
    ]);
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let (code, message) = api_message(&e);
            if code == Some(409) {
                return Ok(());
            }
            Err(classify_create_error(
                &o.namespace,
                code,
                &message,
                "create pods",
            ))
        }
    }
}

/// Waiting reasons that will not resolve by waiting (no retries within our bound help).
const IMAGE_REASONS: &[&str] = &[
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ImageInspectError",
];

/// What the pod's status says right now.
#[derive(Debug, PartialEq)]
pub enum PodState {
    /// Not yet running; the container's waiting reason when there is one.
    Pending(Option<String>),
    /// The agent container is running.
    Running,
    /// A final answer that is not "running".
    Refused(String, String),
    /// The agent container ended.
    Exited(String),
}

/// Read a pod's status (pure).
pub fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Pending(None);
    };
    let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|c| c.state.clone());
    if let Some(state) = &container {
        if let Some(t) = &state.terminated {
            return PodState::Exited(format!(
                "exited with code {}{}{}",
                t.exit_code,
                t.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                t.message
                    .as_ref()
                    .map(|m| format!(": {}", m.trim()))
                    .unwrap_or_default()
            ));
        }
        if state.running.is_some() {
            return PodState::Running;
        }
    }
    if phase == "Failed" {
        return PodState::Refused(
            status.reason.clone().unwrap_or_else(|| "Failed".into()),
            status.message.clone().unwrap_or_default(),
        );
    }
    let waiting = container.and_then(|s| s.waiting).map(|w| {
        format!(
            "{}{}",
            w.reason.unwrap_or_default(),
            w.message.map(|m| format!(": {m}")).unwrap_or_default()
        )
    });
    PodState::Pending(waiting)
}

/// How long the Job controller gets to create the Job's pod before the plugin creates it itself
/// (owned by the Job, so the cluster still removes it with the Job): kube-controller-manager may be
/// the broken part.
const JOB_POD_GRACE: Duration = Duration::from_secs(10);

/// Whether the pod's host root mount is recursively read-only, as its status reports.
fn recursive_read_only(pod: &Pod) -> Option<bool> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .volume_mounts
        .as_ref()?
        .iter()
        .find(|m| m.mount_path == "/host")?
        .recursive_read_only
        .as_deref()
        .map(|v| v == "Enabled")
}

/// What one look for the run's pod found.
#[derive(Debug)]
enum Look {
    /// The API server answered: no pod of this run exists.
    Absent,
    /// The pod: its name, state, and whether its host root is recursively read-only.
    Found(String, PodState, Option<bool>),
    /// The list timed out or failed: nothing is known (a loaded API server is not a deleted pod).
    Unknown,
}

/// Looks for the run's pod. A refusal to list pods is an error naming the permission (without it
/// the run could never see its pod). With two (the Job controller's and the plugin's own, when the
/// controller was late), the one already followed is kept.
async fn job_pod(
    pods: &Api<Pod>,
    o: &ProbeOptions,
    id: &RunIdentity,
    following: Option<&str>,
) -> Result<Look, ProbeError> {
    let list = match tokio::time::timeout(
        Duration::from_secs(5),
        pods.list(&ListParams::default().labels(&format!("{RUN_LABEL}={}", id.run_id))),
    )
    .await
    {
        Err(_) => return Ok(Look::Unknown),
        Ok(Err(e)) => {
            let (code, message) = api_message(&e);
            if code == Some(403) {
                return Err(ProbeError::Forbidden {
                    verb: "list pods".into(),
                    namespace: o.namespace.clone(),
                    message,
                });
            }
            return Ok(Look::Unknown);
        }
        Ok(Ok(list)) => list,
    };
    let mut items = list.items;
    if let Some(name) = following {
        items.retain(|p| p.metadata.name.as_deref() == Some(name));
    }
    // Two pods before one is followed: the one that runs (the other cannot bind the agent's port
    // on the host network and exits).
    items.sort_by_key(|p| pod_state(p) != PodState::Running);
    Ok(items
        .into_iter()
        .find_map(|pod| {
            let name = pod.metadata.name.clone()?;
            Some(Look::Found(
                name,
                pod_state(&pod),
                recursive_read_only(&pod),
            ))
        })
        .unwrap_or(Look::Absent))
}

/// Why the Job controller could not create the pod (its FailedCreate event: Pod Security, a
/// policy engine, quota), when it said so.
async fn job_create_failure(client: &Client, o: &ProbeOptions, id: &RunIdentity) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), &o.namespace);
    let fields = format!(
        "involvedObject.kind=Job,involvedObject.name={}",
        id.job_name()
    );
    let list = tokio::time::timeout(
        Duration::from_secs(5),
        events.list(&ListParams::default().fields(&fields)),
    )
    .await
    .ok()?
    .ok()?;
    list.items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("FailedCreate"))
        .and_then(|e| e.message)
}

/// A probe pod that runs.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// How long it took from creating the Job.
    pub after: Duration,
    /// Whether the host root is mounted recursively read-only (the pod's status).
    pub host_root_recursive_read_only: Option<bool>,
}

/// Create the Job and wait for its agent container to run, within `pod_timeout` (which `widen`
/// may extend once while waiting: slow PLEG shown by the API evidence).
pub async fn start(
    client: &Client,
    o: &ProbeOptions,
    id: &RunIdentity,
    mut widen: tokio::sync::watch::Receiver<Option<Duration>>,
) -> Result<Started, ProbeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &o.namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &o.namespace);
    let started = Instant::now();
    let now_unix = jiff::Timestamp::now().as_second();
    let job = match jobs
        .create(&PostParams::default(), &job_spec(o, id, now_unix))
        .await
    {
        Ok(job) => job,
        Err(e) => {
            let (code, message) = api_message(&e);
            return Err(classify_create_error(
                &o.namespace,
                code,
                &message,
                "create jobs",
            ));
        }
    };
    let mut bound = o.pod_timeout;
    let mut last = PodState::Pending(None);
    let mut have_pod = false;
    let mut rro_seen = None;
    let mut next_event_check = Instant::now() + Duration::from_secs(1);
    loop {
        if let Some(wider) = *widen.borrow_and_update()
            && wider > bound
        {
            bound = wider;
        }
        let elapsed = started.elapsed();
        if elapsed >= bound {
            let (phase, waiting) = match last {
                PodState::Pending(w) => ("Pending".to_string(), w),
                other => (format!("{other:?}"), None),
            };
            return Err(ProbeError::NotStarted(NotStarted {
                timeout: bound,
                phase,
                waiting,
            }));
        }
        o.progress.step(format!(
            "waiting for the probe pod {}/{} ({:.0}/{} s)",
            o.namespace,
            id.pod_name(),
            elapsed.as_secs_f64(),
            bound.as_secs()
        ));
        let following = have_pod.then(|| id.pod_name());
        match job_pod(&pods, o, id, following.as_deref()).await? {
            Look::Found(name, state, rro) => {
                if !have_pod {
                    id.set_pod_name(&name);
                    have_pod = true;
                }
                last = state;
                rro_seen = rro;
            }
            Look::Absent if have_pod => {
                return Err(ProbeError::Other(
                    "the probe pod was deleted while starting".into(),
                ));
            }
            Look::Unknown => {}
            Look::Absent => {
                // Refused at the pod's admission (Pod Security, a policy engine): the Job
                // controller says so in an event, not to us.
                if Instant::now() >= next_event_check {
                    next_event_check = Instant::now() + Duration::from_secs(2);
                    if let Some(message) = job_create_failure(client, o, id).await {
                        return Err(classify_create_error(
                            &o.namespace,
                            None,
                            &message,
                            "create pods (the Job controller creates the probe pod)",
                        ));
                    }
                }
                if started.elapsed() >= JOB_POD_GRACE {
                    create_owned_pod(&pods, o, id, &job, now_unix).await?;
                }
            }
        }
        match &last {
            PodState::Running => {
                return Ok(Started {
                    after: started.elapsed(),
                    host_root_recursive_read_only: rro_seen,
                });
            }
            PodState::Exited(how) => {
                return Err(ProbeError::Agent(format!(
                    "{how} before it could be reached"
                )));
            }
            PodState::Refused(reason, message) => {
                return Err(ProbeError::Admission {
                    reason: reason.clone(),
                    message: message.clone(),
                });
            }
            PodState::Pending(Some(w)) => {
                if let Some(reason) = IMAGE_REASONS.iter().find(|r| w.starts_with(**r)) {
                    return Err(ProbeError::Image {
                        image: o.image.clone(),
                        reason: reason.to_string(),
                        message: w[reason.len()..].trim_start_matches(": ").to_string(),
                    });
                }
            }
            PodState::Pending(None) => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A gRPC channel to the agent through a fresh API-server port-forward per connection.
async fn channel(
    client: &Client,
    o: &ProbeOptions,
    id: &RunIdentity,
    bound: Duration,
) -> Result<tonic::transport::Channel, ProbeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &o.namespace);
    let name = id.pod_name();
    let port = id.port;
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let pods = pods.clone();
        let name = name.clone();
        async move {
            let mut forwarder = pods.portforward(&name, &[port]).await?;
            let stream = forwarder
                .take_stream(port)
                .ok_or_else(|| std::io::Error::other("port-forward gave no stream"))?;
            // The forwarder drives the WebSocket; it ends when the stream is dropped.
            tokio::spawn(async move {
                let _ = forwarder.join().await;
            });
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_static("http://agent.nodehealth.invalid")
        .connect_timeout(bound)
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            let text = format!("{e:?}");
            if text.contains("code: 403") || text.contains("forbidden") {
                ProbeError::Forbidden {
                    verb: "get, create pods/portforward".into(),
                    namespace: o.namespace.clone(),
                    message: text,
                }
            } else {
                ProbeError::Agent(format!("cannot be reached through port-forward: {text}"))
            }
        })
}

/// The largest message the plugin takes from the agent (tonic's default, made explicit): a
/// section above it breaks the stream with a clear message and the sections before it are kept.
pub const AGENT_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// The agent's first message (its discovery step) comes as the run starts: silence this long after
/// connecting is an agent that hangs, not one that measures.
const AGENT_FIRST_MESSAGE: Duration = Duration::from_secs(20);

/// How long the plugin waits on the agent's stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamBounds {
    /// For the first message.
    pub first: Duration,
    /// For the whole stream, up to the final report.
    pub total: Duration,
}

/// Reads the agent's stream into its evidence until the final report, the stream's end, an error
/// or a bound: (evidence, why it ended early, whether the report came).
pub async fn read_stream(
    stream: &mut tonic::Streaming<RunEvent>,
    window: Duration,
    bounds: StreamBounds,
    progress: &crate::progress::Progress,
) -> (NodeEvidence, Option<String>, bool) {
    let mut node = NodeEvidence {
        schema: nodehealth_proto::SCHEMA.to_string(),
        host_root: "/host".into(),
        window_ms: window.as_millis() as u64,
        ..NodeEvidence::default()
    };
    let mut stream_error = None;
    let mut finished = false;
    let start = tokio::time::Instant::now();
    let until = start + bounds.total;
    let mut first = true;
    loop {
        let wait = if first {
            until.min(start + bounds.first)
        } else {
            until
        };
        let event = match tokio::time::timeout_at(wait, stream.message()).await {
            Err(_) if first && wait < until => {
                stream_error = Some(format!(
                    "the agent sent nothing for {} s after the run started: it hangs",
                    bounds.first.as_secs()
                ));
                break;
            }
            Err(_) => {
                stream_error = Some(format!(
                    "no final report within {} s",
                    bounds.total.as_secs()
                ));
                break;
            }
            Ok(Err(status)) if status.message().contains("message length too large") => {
                stream_error = Some(format!(
                    "the agent sent a message over the {} MiB cap ({}): the sections before it are kept",
                    AGENT_MAX_MESSAGE >> 20,
                    status.message()
                ));
                break;
            }
            Ok(Err(status)) => {
                stream_error = Some(format!("stream broke: {}", status.message()));
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(ev))) => ev,
        };
        first = false;
        match receive(&mut node, event) {
            Received::Progress(line) => progress.step(line),
            Received::Finished => finished = true,
            Received::Evidence | Received::Nothing => {}
        }
    }
    if !finished && stream_error.is_none() {
        stream_error = Some("the stream ended without the agent's final report".into());
    }
    (node, stream_error, finished)
}

/// How the message of an agent that did not prove itself begins (a reason to stop, not retry).
const NOT_PROVEN: &str = "did not prove it was started for this run";

/// Asks whoever answers on the agent's port to prove it holds this run's key before the token is
/// sent: another process on the node that took the port first gets nothing (proof.rs). An answer
/// that is not a proof stops the run; a connection that fails is retried by the caller.
async fn prove<T>(agent: &mut AgentClient<T>, id: &RunIdentity) -> Result<(), ProbeError>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| {
        ProbeError::Other(format!("no random source for the agent's challenge: {e}"))
    })?;
    let not_proven = |why: String| {
        ProbeError::Agent(format!(
            "{NOT_PROVEN} ({why}); the token was not sent. Either the agent image is older than \
             this plugin (match --image to the plugin's version), or another process on the node \
             listens on the agent's port {}",
            id.port
        ))
    };
    match agent
        .prove(nodehealth_proto::v1::ProveRequest {
            nonce: nonce.to_vec(),
        })
        .await
    {
        Ok(reply) if nodehealth_proto::proof::verify(&id.token, &nonce, &reply.get_ref().proof) => {
            Ok(())
        }
        Ok(_) => Err(not_proven("a wrong proof".into())),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unimplemented
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
            ) =>
        {
            Err(not_proven(format!("{:?}: {}", s.code(), s.message())))
        }
        Err(s) => Err(ProbeError::Agent(format!(
            "cannot be reached: {}",
            s.message()
        ))),
    }
}

/// Run the agent's probe over the port-forward and gather its evidence. A stream that breaks
/// after some sections keeps them, labelled partial.
pub async fn run_agent(
    client: &Client,
    o: &ProbeOptions,
    id: &RunIdentity,
    pod_start: Started,
) -> Result<NodeProbe, ProbeError> {
    // The container runs before the agent listens: retry the connection for a while. Each
    // port-forward makes the kubelet list pods through the runtime first (kubelet_pods.go
    // GetPortForward → GetPods: ListPodSandbox + ListContainers), so a slow runtime slows it.
    // A node where the pod itself took long to start (a throttled disk under the runtime) is as
    // slow to forward: the kubelet asks the same runtime. Give the connection as long as the
    // pod's start took, at least three port-forward bounds.
    // Each port-forward, too: 10.4 s measured under disk-slow where the pod took 43 s to start.
    let connecting = Instant::now();
    // Never past the share of the agent's own lifetime given to connecting (`agent_deadline`).
    let connect_deadline = connecting
        + (PORT_FORWARD_CONNECT * 3)
            .max(pod_start.after)
            .min((PORT_FORWARD_CONNECT * 3).max(o.pod_timeout));
    let per_attempt = PORT_FORWARD_CONNECT
        .max(pod_start.after / 2)
        .min(PORT_FORWARD_CONNECT * 4);
    let mut attempts = 0u32;
    let mut agent = loop {
        let attempt = async {
            let ch = channel(client, o, id, per_attempt).await?;
            let mut agent = AgentClient::new(ch).max_decoding_message_size(AGENT_MAX_MESSAGE);
            prove(&mut agent, id).await?;
            let stream = agent
                .run(RunRequest {
                    token: id.token.clone(),
                    window_ms: o.window.as_millis() as u64,
                    trace: o.trace,
                    // As the standalone agent: a list call of a few seconds is a slow runtime, not a
                    // hung one (the kubelet waits runtimeRequestTimeout, 2 min by default).
                    cri_timeout_ms: AGENT_CRI_TIMEOUT.as_millis() as u64,
                    log_since_ms: o.log_since.as_millis() as u64,
                })
                .await
                .map_err(|s| ProbeError::Agent(format!("refused the run: {}", s.message())))?;
            Ok::<_, ProbeError>(stream.into_inner())
        };
        attempts += 1;
        match attempt.await {
            Ok(s) => break s,
            Err(ProbeError::Agent(m)) if Instant::now() >= connect_deadline => {
                return Err(ProbeError::Agent(format!(
                    "{m} (after {attempts} attempts over {:.0} s; the pod had taken {:.0} s to start)",
                    connecting.elapsed().as_secs_f64(),
                    pod_start.after.as_secs_f64()
                )));
            }
            Err(e) if Instant::now() >= connect_deadline => return Err(e),
            Err(e) if matches!(&e, ProbeError::Agent(m) if m.starts_with("refused") || m.starts_with(NOT_PROVEN)) =>
            {
                return Err(e);
            }
            Err(e @ ProbeError::Forbidden { .. }) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let bounds = StreamBounds {
        first: AGENT_FIRST_MESSAGE,
        total: o.window + Duration::from_secs(45),
    };
    let (node, stream_error, finished) =
        read_stream(&mut agent, o.window, bounds, &o.progress).await;
    Ok(NodeProbe {
        pod: format!("{}/{}", o.namespace, id.pod_name()),
        pod_start_seconds: pod_start.after.as_secs_f64(),
        connect_seconds: Some(connecting.elapsed().as_secs_f64()),
        host_root_recursive_read_only: pod_start.host_root_recursive_read_only,
        partial: !finished,
        stream_error,
        evidence: node,
    })
}

/// What one event of the agent's stream did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A progress line to show.
    Progress(String),
    /// An evidence section: stored, or its failure recorded in the evidence's `errors`.
    Evidence,
    /// The agent's final report: the run is complete.
    Finished,
    /// An event without a payload this build knows (a newer agent's).
    Nothing,
}

/// Applies one event of the agent's stream to the evidence received so far (pure: the
/// `agent_evidence` fuzz target feeds it arbitrary messages).
pub fn receive(node: &mut NodeEvidence, event: RunEvent) -> Received {
    match event.event {
        Some(run_event::Event::Progress(p)) => {
            // Saturating: the agent's numbers are input (u64::MAX overflowed the multiply).
            let bar = p
                .elapsed_ms
                .saturating_mul(20)
                .checked_div(p.total_ms)
                .map(|filled| {
                    let filled = filled.min(20) as usize;
                    format!(" [{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
                })
                .unwrap_or_default();
            Received::Progress(format!("agent: {}{bar} {}", p.step, p.detail))
        }
        Some(run_event::Event::Evidence(ev)) => {
            if node.started_at_unix_ms == 0 {
                node.started_at_unix_ms = ev.collected_at_unix_ms;
            }
            if let Err(e) = node.insert_section(&ev.section, &ev.json) {
                node.errors.push(nodehealth_proto::node::SectionFailure {
                    section: ev.section.clone(),
                    message: e.to_string(),
                });
            }
            Received::Evidence
        }
        Some(run_event::Event::Report(r)) => {
            node.finished_at_unix_ms = r.finished_at_unix_ms;
            node.agent_version = r.agent_version;
            for e in r.errors {
                node.errors.push(nodehealth_proto::node::SectionFailure {
                    section: e.section,
                    message: e.message,
                });
            }
            Received::Finished
        }
        None => Received::Nothing,
    }
}

/// Delete the run's Job and its pod (idempotent: a Job never created is fine). A pod that never
/// ran is removed at once (grace 0: nothing to stop, and a kubelet that cannot start it will not
/// confirm a graceful delete either); a running one gets the agent's short grace period. Returns a
/// warning when the pod is still there after `wait` (stuck Terminating).
pub async fn delete(
    client: &Client,
    namespace: &str,
    id: &RunIdentity,
    ran: bool,
    wait: Duration,
) -> Option<String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let job = id.job_name();
    let grace = Some(if ran { 2 } else { 0 });
    // The Job first (background propagation: its pods go with it), then the pod itself with the
    // grace that fits, so the agent stops now rather than when the garbage collector gets to it.
    let job_params = DeleteParams {
        grace_period_seconds: grace,
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match tokio::time::timeout(Duration::from_secs(10), jobs.delete(&job, &job_params)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if api_message(&e).0 == Some(404) => {}
        Ok(Err(e)) => {
            return Some(format!(
                "could not delete the probe Job {namespace}/{job}: {}; the cluster removes it at \
                 its deadline, or run `kubectl nodehealth cleanup`",
                api_message(&e).1
            ));
        }
        Err(_) => {
            return Some(format!(
                "deleting the probe Job {namespace}/{job} timed out; the cluster removes it at its \
                 deadline, or run `kubectl nodehealth cleanup`"
            ));
        }
    }
    let pod_params = DeleteParams {
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    let selector = format!("{RUN_LABEL}={}", id.run_id);
    if let Ok(Ok(list)) = tokio::time::timeout(
        Duration::from_secs(10),
        pods.list(&ListParams::default().labels(&selector)),
    )
    .await
    {
        for pod in list.items {
            if let Some(name) = pod.metadata.name {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), pods.delete(&name, &pod_params))
                        .await;
            }
        }
    }
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) if list.items.is_empty() => return None,
            Err(e) if api_message(&e).0 == Some(403) => {
                return Some(format!(
                    "the probe Job {namespace}/{job} is deleted, but whether its pod is gone is \
                     unknown: not allowed to list pods there (`kubectl nodehealth rbac` prints \
                     the permissions)"
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    Some(format!(
        "the probe pod {namespace}/{} is still Terminating after {} s (the kubelet has not \
         confirmed it); the agent exits on its own deadline and the cluster removes the Job at \
         its deadline",
        id.pod_name(),
        wait.as_secs()
    ))
}

/// One run `cleanup` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Leftover {
    /// `namespace/name` (a Job, or a bare pod of an older version).
    pub object: String,
    /// Past its deadline (removed) or live (kept: another operator's run).
    pub expired: bool,
    /// Seconds past (positive) or before (negative) its expiry.
    pub past_expiry_seconds: i64,
}

/// Whether a run expired: its Job's expiry annotation; for a bare pod (older versions) its
/// creation plus its own `activeDeadlineSeconds` (pure).
pub fn expiry_of(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    created_unix: Option<i64>,
    active_deadline: Option<i64>,
) -> Option<i64> {
    annotations
        .and_then(|a| a.get(EXPIRES_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .or_else(|| Some(created_unix? + active_deadline.unwrap_or(0)))
}

/// `kubectl nodehealth cleanup`: the runs of this tool in `namespace` (all namespaces when
/// `None`) — Jobs, and bare probe pods of older versions. Expired ones are deleted (unless
/// `dry_run`); live ones — another operator's run in progress — are kept and listed.
pub async fn cleanup(
    client: &Client,
    namespace: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Leftover>, ProbeError> {
    let selector = format!("{NAME_LABEL}={NAME_VALUE}");
    let params = ListParams::default().labels(&selector);
    let (jobs, pods): (Api<Job>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let list_error = |what: &str, e: kube::Error| {
        ProbeError::Other(format!("cannot list probe {what}: {}", api_message(&e).1))
    };
    let now = jiff::Timestamp::now().as_second();
    let mut out = Vec::new();
    let job_list = jobs
        .list(&params)
        .await
        .map_err(|e| list_error("jobs", e))?;
    for job in job_list.items {
        let (Some(ns), Some(name)) = (job.metadata.namespace.clone(), job.metadata.name.clone())
        else {
            continue;
        };
        let expiry = expiry_of(
            job.metadata.annotations.as_ref(),
            job.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            job.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        )
        .unwrap_or(now);
        let expired = now >= expiry;
        if expired && !dry_run {
            let api: Api<Job> = Api::namespaced(client.clone(), &ns);
            let p = DeleteParams {
                grace_period_seconds: Some(0),
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            if let Err(e) = api.delete(&name, &p).await
                && api_message(&e).0 != Some(404)
            {
                return Err(ProbeError::Other(format!(
                    "cannot delete job {ns}/{name}: {}",
                    api_message(&e).1
                )));
            }
        }
        out.push(Leftover {
            object: format!("job {ns}/{name}"),
            expired,
            past_expiry_seconds: now - expiry,
        });
    }
    // Bare pods: older versions' probes, and pods whose Job is already gone.
    let pod_list = pods
        .list(&params)
        .await
        .map_err(|e| list_error("pods", e))?;
    for pod in pod_list.items {
        let owned = pod
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "Job"));
        let job_listed = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .is_some_and(|run| {
                out.iter()
                    .any(|l| l.object.ends_with(&format!("nodehealth-probe-{run}")))
            });
        if owned && job_listed {
            continue;
        }
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone())
        else {
            continue;
        };
        let expiry = expiry_of(
            None,
            pod.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            pod.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        )
        .unwrap_or(now);
        let expired = now >= expiry || owned;
        if expired && !dry_run {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let p = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            if let Err(e) = api.delete(&name, &p).await
                && api_message(&e).0 != Some(404)
            {
                return Err(ProbeError::Other(format!(
                    "cannot delete pod {ns}/{name}: {}",
                    api_message(&e).1
                )));
            }
        }
        out.push(Leftover {
            object: format!("pod {ns}/{name}"),
            expired,
            past_expiry_seconds: now - expiry,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A progress event with an absurd elapsed time draws a full bar, not an overflow panic
    /// (a hand-made stream fed to the agent_evidence fuzz target; kept in fuzz/seeds/).
    #[test]
    fn a_progress_past_the_u64_range_draws_a_full_bar() {
        let event = RunEvent {
            event: Some(run_event::Event::Progress(nodehealth_proto::v1::Progress {
                step: "observe".into(),
                elapsed_ms: u64::MAX,
                total_ms: 1,
                detail: String::new(),
            })),
        };
        let mut node = NodeEvidence::default();
        assert_eq!(
            receive(&mut node, event),
            Received::Progress(format!("agent: observe [{}] ", "#".repeat(20)))
        );
    }

    fn options() -> ProbeOptions {
        ProbeOptions {
            node: "node-a".into(),
            namespace: "kube-system".into(),
            image: DEFAULT_IMAGE.into(),
            pull_policy: "IfNotPresent".into(),
            pull_secrets: Vec::new(),
            pod_timeout: Duration::from_secs(30),
            priority_class: None,
            window: Duration::from_secs(5),
            trace: false,
            uprobes: false,
            log_since: Duration::from_secs(900),
            progress: crate::progress::Progress::hidden(),
        }
    }

    #[test]
    fn pull_secrets_are_named_in_the_pod_only_when_given() {
        let id = RunIdentity::new().unwrap();
        let plain = serde_json::to_value(pod_spec(&options(), &id, 0)).unwrap();
        assert!(plain["spec"].get("imagePullSecrets").is_none());
        let o = ProbeOptions {
            pull_secrets: vec!["regcred".into(), "mirror".into()],
            ..options()
        };
        let v = serde_json::to_value(pod_spec(&o, &id, 0)).unwrap();
        assert_eq!(
            v["spec"]["imagePullSecrets"],
            json!([{ "name": "regcred" }, { "name": "mirror" }])
        );
    }

    #[test]
    fn pod_spec_follows_the_design() {
        let id = RunIdentity::new().unwrap();
        let pod = pod_spec(&options(), &id, 1_700_000_000);
        let v = serde_json::to_value(&pod).unwrap();
        let spec = &v["spec"];
        assert_eq!(spec["nodeName"], "node-a");
        assert_eq!(spec["tolerations"], json!([{ "operator": "Exists" }]));
        assert_eq!(spec["hostPID"], true);
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert!(spec["activeDeadlineSeconds"].as_i64().unwrap() > 30);
        assert!(spec.get("priorityClassName").is_none());
        let c = &spec["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(
            sc["capabilities"]["add"],
            json!(["SYS_PTRACE", "DAC_READ_SEARCH", "SYSLOG", "SYS_CHROOT"]),
            "no BPF or PERFMON without --trace"
        );
        for (trace, uprobes, added) in [
            (true, false, json!(["BPF", "PERFMON"])),
            (true, true, json!(["BPF", "PERFMON", "SYS_ADMIN"])),
        ] {
            let o = ProbeOptions {
                trace,
                uprobes,
                ..options()
            };
            let v = serde_json::to_value(pod_spec(&o, &id, 0)).unwrap();
            let add = &v["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
            assert_eq!(
                add.as_array().unwrap()[4..],
                added.as_array().unwrap()[..],
                "SYS_ADMIN only with --trace-uprobes"
            );
        }
        assert_eq!(c["volumeMounts"][0]["readOnly"], true);
        assert_eq!(c["volumeMounts"][0]["recursiveReadOnly"], "IfPossible");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/host");
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert_eq!(v["metadata"]["labels"][NAME_LABEL], NAME_VALUE);
        assert_eq!(v["metadata"]["labels"][RUN_LABEL], id.run_id);
        // Only the hash of the token is in the spec.
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains(&id.token));
        assert!(text.contains(&token_sha256(&id.token)));
        assert!(text.contains(&id.port.to_string()));
        let mut o = options();
        o.priority_class = Some("system-node-critical".into());
        let v = serde_json::to_value(pod_spec(&o, &id, 1_700_000_000)).unwrap();
        assert_eq!(v["spec"]["priorityClassName"], "system-node-critical");
    }

    /// The server-side guarantee: a pod never outlives its run, also when the plugin cannot delete
    /// it — the Job controller fails the Job at its deadline (deleting a pod that never ran), the
    /// TTL controller removes a finished Job with its pod, and an agent started late exits.
    #[test]
    fn the_probe_runs_as_a_job_the_cluster_removes_at_its_deadline() {
        let id = RunIdentity::new().unwrap();
        let o = options();
        let v = serde_json::to_value(job_spec(&o, &id, 1_700_000_000)).unwrap();
        assert_eq!(v["metadata"]["name"], id.job_name());
        let deadline = run_deadline_seconds(&o);
        assert_eq!(v["spec"]["activeDeadlineSeconds"], deadline);
        assert_eq!(v["spec"]["backoffLimit"], 0);
        assert!(v["spec"]["ttlSecondsAfterFinished"].as_u64().unwrap() <= 60);
        assert_eq!(
            v["metadata"]["annotations"][EXPIRES_ANNOTATION],
            (1_700_000_000 + deadline as i64).to_string()
        );
        let template = &v["spec"]["template"];
        assert_eq!(template["metadata"]["labels"][RUN_LABEL], id.run_id);
        assert_eq!(template["spec"]["restartPolicy"], "Never");
        let args = template["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains(&format!(
                "\"--not-after\",\"{}\"",
                1_700_000_000 + deadline as i64
            )),
            "{args}"
        );
        // The deadline covers the widest pod wait, the agent's own deadline and slack.
        assert!(deadline > 3 * o.pod_timeout.as_secs() + o.window.as_secs());
        // cleanup's view: an annotation, else a bare pod's creation + its deadline.
        let mut a = std::collections::BTreeMap::new();
        a.insert(EXPIRES_ANNOTATION.to_string(), "100".to_string());
        assert_eq!(expiry_of(Some(&a), Some(5), Some(10)), Some(100));
        assert_eq!(expiry_of(None, Some(5), Some(10)), Some(15));
    }

    #[test]
    fn refusals_name_cause_and_fix() {
        let psa = classify_create_error(
            "ns",
            Some(403),
            "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": privileged",
            "create pods",
        );
        assert!(matches!(psa, ProbeError::PodSecurity { .. }));
        assert!(
            psa.to_string()
                .contains("pod-security.kubernetes.io/enforce=privileged")
        );
        let rbac = classify_create_error(
            "ns",
            Some(403),
            "User \"u\" cannot create resource",
            "create jobs",
        );
        assert!(rbac.to_string().contains("create jobs"));
        // The Job controller's FailedCreate event: the pod's admission error, no HTTP code.
        let event = classify_create_error(
            "ns",
            None,
            "Error creating: pods \"nodehealth-probe-1-abcde\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces",
            "create pods",
        );
        assert!(matches!(event, ProbeError::PodSecurity { .. }), "{event}");
    }

    /// Refusals by admission other than Pod Security, in the shapes the servers return them
    /// (OpenShift's SCC admission plugin, Kyverno's and Gatekeeper's webhook responses).
    #[test]
    fn admission_denials_are_named_with_the_fix_that_fits() {
        let scc = classify_create_error(
            "kube-system",
            Some(403),
            "pods \"nodehealth-probe-1-abcde\" is forbidden: unable to validate against any security context constraint: [provider \"anyuid\": Forbidden: not usable by user or serviceaccount, spec.volumes[0]: Invalid value: \"hostPath\": hostPath volumes are not allowed to be used, spec.containers[0].securityContext.hostPID: Invalid value: true: Host PID is not allowed to be used]",
            "create pods",
        )
        .to_string();
        assert!(scc.contains("security context constraints"), "{scc}");
        assert!(
            scc.contains("oc adm policy add-scc-to-user privileged -z default -n kube-system"),
            "{scc}"
        );
        assert!(!scc.contains("RBAC"), "{scc}");
        let kyverno = classify_create_error(
            "kube-system",
            Some(400),
            "admission webhook \"validate.kyverno.svc-fail\" denied the request: \n\nresource Pod/kube-system/nodehealth-probe-1-abcde was blocked due to the following policies\n\ndisallow-host-namespaces:\n  host-namespaces: 'validation error: Sharing the host namespaces is disallowed.'\ndisallow-host-path:\n  host-path: 'validation error: HostPath volumes are forbidden.'",
            "create pods",
        )
        .to_string();
        assert!(
            kyverno.contains("Kyverno (webhook validate.kyverno.svc-fail)"),
            "{kyverno}"
        );
        assert!(
            kyverno.contains("PolicyException for disallow-host-namespaces, disallow-host-path"),
            "{kyverno}"
        );
        let gatekeeper = classify_create_error(
            "kube-system",
            Some(403),
            "admission webhook \"validation.gatekeeper.sh\" denied the request: [psp-host-namespace] Sharing the host namespace is not allowed: nodehealth-probe-1-abcde",
            "create pods",
        )
        .to_string();
        assert!(gatekeeper.contains("Gatekeeper"), "{gatekeeper}");
        assert!(
            gatekeeper.contains("from psp-host-namespace"),
            "{gatekeeper}"
        );
        let other = classify_create_error(
            "ns",
            Some(403),
            "admission webhook \"deny.example.com\" denied the request: no host access",
            "create pods",
        )
        .to_string();
        assert!(
            other.contains("the admission webhook deny.example.com"),
            "{other}"
        );
        // Plain RBAC stays RBAC.
        let rbac = classify_create_error(
            "ns",
            Some(403),
            "User \"u\" cannot create resource \"jobs\"",
            "create jobs",
        );
        assert!(matches!(rbac, ProbeError::Forbidden { .. }), "{rbac}");
    }

    #[test]
    fn pod_states() {
        let pod: Pod = serde_json::from_value(json!({
            "status": { "phase": "Pending", "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ErrImageNeverPull", "message": "not present" } }
            }]}
        }))
        .unwrap();
        assert_eq!(
            pod_state(&pod),
            PodState::Pending(Some("ErrImageNeverPull: not present".into()))
        );
        let failed: Pod = serde_json::from_value(json!({
            "status": { "phase": "Failed", "reason": "Evicted", "message": "The node had condition: [MemoryPressure]." }
        }))
        .unwrap();
        assert!(matches!(pod_state(&failed), PodState::Refused(r, _) if r == "Evicted"));
    }

    #[test]
    fn identities_differ() {
        let a = RunIdentity::new().unwrap();
        let b = RunIdentity::new().unwrap();
        assert_ne!(a.token, b.token);
        assert!((40000..48000).contains(&a.port));
        assert_eq!(a.token.len(), 56);
    }
}

#[cfg(test)]
#[path = "probe_agent_tests.rs"]
mod agent_tests;
