//! Node evidence: what the agent (`tracer-user`) measures on the node, as the plugin reads it.
//!
//! Each top-level field of [`NodeEvidence`] is one evidence *section*. Over gRPC every section
//! travels as its own `Evidence { section, schema, json }` message (section names in
//! [`section`]); standalone, `tracer-user probe -o json` prints the whole [`NodeEvidence`]. The
//! JSON is camelCase. Times are Unix milliseconds on the node's clock (`...UnixMs`), durations
//! carry their unit in the name. The agent only measures: fields state facts (a call timed out,
//! a process is stopped), never a diagnosis.
//!
//! Secrets never appear here: certificates are described from their CERTIFICATE blocks only
//! (never the private key in the same file), and from the kubeconfig only the server address and
//! where the CA came from.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Section names, as sent in `Evidence.section`.
pub mod section {
    /// [`super::Discovery`]
    pub const DISCOVERY: &str = "discovery";
    /// [`super::Processes`]
    pub const PROCESSES: &str = "processes";
    /// [`super::RuntimeSocket`]
    pub const RUNTIME_SOCKET: &str = "runtimeSocket";
    /// [`super::KubeletHealthz`]
    pub const KUBELET_HEALTHZ: &str = "kubeletHealthz";
    /// [`super::CriProbe`]
    pub const CRI: &str = "cri";
    /// [`super::Certificates`]
    pub const CERTIFICATES: &str = "certificates";
    /// [`super::ApiServerProbe`]
    pub const API_SERVER: &str = "apiServer";
    /// [`super::Clock`]
    pub const CLOCK: &str = "clock";
    /// [`super::KernelLog`]
    pub const KERNEL_LOG: &str = "kernelLog";
    /// [`super::Pressure`]
    pub const PRESSURE: &str = "pressure";
    /// [`super::Logs`]
    pub const LOGS: &str = "logs";
    /// [`super::RunQueue`] (only when tracing was requested)
    pub const RUN_QUEUE: &str = "runQueue";
    /// [`super::Trace`] (only when tracing was requested)
    pub const TRACE: &str = "trace";
}

/// Everything the node probe collected in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvidence {
    /// Always [`crate::SCHEMA`].
    pub schema: String,
    /// Where the host's file system was read from (`/host` in the probe pod, `/` standalone).
    pub host_root: String,
    pub agent_version: String,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
    /// Observation window: CRI calls were repeated and CPU/throttling deltas taken over it.
    pub window_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Processes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_socket: Option<RuntimeSocket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_healthz: Option<KubeletHealthz>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri: Option<CriProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Certificates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_log: Option<KernelLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Logs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_queue: Option<RunQueue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// Sections that could not be collected (or timed out), with the reason.
    #[serde(default)]
    pub errors: Vec<SectionFailure>,
}

/// A section the agent could not collect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SectionFailure {
    pub section: String,
    pub message: String,
}

/// An unknown section name in [`NodeEvidence::insert_section`].
#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    /// The agent sent a section this build does not know (newer agent): kept out, not fatal.
    #[error("unknown evidence section {0:?}")]
    Unknown(String),
    /// The section's JSON does not match its type.
    #[error("evidence section {section:?} is malformed: {source}")]
    Malformed {
        section: String,
        source: serde_json::Error,
    },
}

impl NodeEvidence {
    /// Stores one section received as `Evidence { section, json }`.
    pub fn insert_section(&mut self, section: &str, json: &[u8]) -> Result<(), SectionError> {
        fn parse<T: serde::de::DeserializeOwned>(
            section: &str,
            json: &[u8],
        ) -> Result<Option<T>, SectionError> {
            serde_json::from_slice(json)
                .map(Some)
                .map_err(|source| SectionError::Malformed {
                    section: section.to_string(),
                    source,
                })
        }
        match section {
            section::DISCOVERY => self.discovery = parse(section, json)?,
            section::PROCESSES => self.processes = parse(section, json)?,
            section::RUNTIME_SOCKET => self.runtime_socket = parse(section, json)?,
            section::KUBELET_HEALTHZ => self.kubelet_healthz = parse(section, json)?,
            section::CRI => self.cri = parse(section, json)?,
            section::CERTIFICATES => self.certificates = parse(section, json)?,
            section::API_SERVER => self.api_server = parse(section, json)?,
            section::CLOCK => self.clock = parse(section, json)?,
            section::KERNEL_LOG => self.kernel_log = parse(section, json)?,
            section::PRESSURE => self.pressure = parse(section, json)?,
            section::LOGS => self.logs = parse(section, json)?,
            section::RUN_QUEUE => self.run_queue = parse(section, json)?,
            section::TRACE => self.trace = parse(section, json)?,
            other => return Err(SectionError::Unknown(other.to_string())),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// discovery

/// Where a discovered setting came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The kubelet's command line.
    Flag,
    /// The kubelet's `--config` file (KubeletConfiguration).
    Config,
    /// Not set anywhere: the kubelet's own compiled-in default applies.
    KubeletDefault,
    /// Given to the agent explicitly (e.g. `--runtime-endpoint`).
    Override,
    /// Not from the kubelet: a well-known runtime socket that exists on the node.
    WellKnown,
}

/// A discovered value with its origin. Paths are the host's paths (not prefixed by the host root).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The kubelet's real paths and endpoints, from `/proc/<pid>/cmdline` and its config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    /// The kubelet process the settings were read from, if one was found.
    pub kubelet_pid: Option<u32>,
    /// Every process that looked like a kubelet (more than one is itself worth knowing).
    pub kubelet_candidates: Vec<u32>,
    /// The kubelet flags that matter here (a fixed allow-list; nothing else is copied).
    /// (Defaulted: the API server stores an empty map in a recorder report as null, dropped.)
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
    /// `--config`, resolved against the kubelet's working directory.
    pub config_file: Option<String>,
    /// Why the config file could not be read or parsed.
    pub config_error: Option<String>,
    /// `--config-dir` drop-ins read, in the order applied.
    #[serde(default)]
    pub config_drop_ins: Vec<String>,
    pub root_dir: Option<Sourced<String>>,
    pub cert_dir: Option<Sourced<String>>,
    pub kubeconfig: Option<Sourced<String>>,
    pub bootstrap_kubeconfig: Option<Sourced<String>>,
    pub runtime_endpoint: Option<Sourced<String>>,
    pub static_pod_path: Option<Sourced<String>>,
    /// `healthzBindAddress:healthzPort`; port 0 means the endpoint is disabled.
    pub healthz_bind_address: Option<Sourced<String>>,
    pub healthz_port: Option<Sourced<u16>>,
    /// Serving certificate file (`tlsCertFile`), when configured.
    pub tls_cert_file: Option<Sourced<String>>,
    pub rotate_certificates: Option<bool>,
    pub server_tls_bootstrap: Option<bool>,
    /// Anything surprising found while discovering.
    #[serde(default)]
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// processes

/// The scheduler state of a process (`/proc/<pid>/stat` field 3), or that it is gone.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Liveness {
    /// R
    Running,
    /// S
    Sleeping,
    /// D: uninterruptible (usually I/O) sleep.
    DiskSleep,
    /// T/t: stopped by a signal or a tracer — alive but cannot respond.
    Stopped,
    /// Z: exited, not reaped.
    Zombie,
    /// X/I or anything else the kernel reports.
    Other,
    /// No such process (never found, or exited during the window).
    Gone,
}

/// How the agent decided which process is the container runtime.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Identification {
    /// It holds the listening socket of the runtime endpoint (the reliable way).
    SocketListener,
    /// The kubelet's own cmdline/argv0 or pid given explicitly.
    Kubelet,
    /// By process name only (no listener found).
    Name,
}

/// One process as seen through /proc, sampled at the start and the end of the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessState {
    pub pid: u32,
    pub comm: String,
    /// `/proc/<pid>/exe` target, when readable.
    pub exe: Option<String>,
    pub identified_by: Identification,
    /// At the end of the window.
    pub liveness: Liveness,
    /// Liveness at the start of the window, if it differs.
    pub liveness_at_start: Option<Liveness>,
    /// Whether its cgroup is frozen (v1 freezer.state FROZEN/FREEZING, v2 cgroup.events frozen 1).
    pub cgroup_frozen: Option<bool>,
    pub parent_pid: u32,
    pub parent_comm: Option<String>,
    pub started_at_unix_ms: i64,
    pub uptime_seconds: f64,
    /// Seconds between node boot and this process's start: a kubelet started long after boot
    /// was (re)started — with OOM kills in the kernel log, a restart loop.
    pub started_after_boot_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    /// utime+stime since start.
    pub cpu_seconds_total: f64,
    /// CPU used during the window, as a percentage of one core.
    pub cpu_percent_window: Option<f64>,
    /// Kernel-log OOM kills of a process with this name (see `kernelLog`).
    pub oom_kills_in_kernel_log: u32,
    /// Its memory cgroup at the end of the window: whether a limit still holds it near the
    /// point where the kernel kills it. Absent from older agents and where no memory controller
    /// is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_cgroup: Option<CgroupMemory>,
}

/// A process's memory cgroup (v1 memory.limit_in_bytes/usage_in_bytes, v2 memory.max/current).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CgroupMemory {
    /// The cgroup's path in its hierarchy.
    pub path: String,
    /// 1 or 2.
    pub version: u8,
    /// None: no limit (v2 `max`, v1 the page-rounded maximum).
    pub limit_bytes: Option<u64>,
    pub usage_bytes: u64,
}

impl CgroupMemory {
    /// Usage as a share of the limit; None without a limit.
    pub fn used_share(&self) -> Option<f64> {
        self.limit_bytes
            .filter(|l| *l > 0)
            .map(|l| self.usage_bytes as f64 / l as f64)
    }
}

/// A containerd shim (`containerd-shim-runc-v2 -id <id>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Shim {
    pub pid: u32,
    pub comm: String,
    /// Task id from `-id` (the sandbox id for CRI pods).
    pub id: Option<String>,
    pub namespace: Option<String>,
    /// containerd socket it reports to (`-address`).
    pub address: Option<String>,
    /// Live (non-zombie) children: 0 means no container process left under it.
    pub live_children: u32,
    pub zombie_children: u32,
    /// Whether the CRI listed a sandbox or container with this id (None: CRI not answered).
    pub known_to_cri: Option<bool>,
    pub started_at_unix_ms: i64,
}

/// Zombie children of a process of interest (kubelet, runtime, shim).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZombieGroup {
    pub parent_pid: u32,
    pub parent_comm: String,
    pub count: u32,
    /// Up to a few of their names.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Processes {
    pub node_uptime_seconds: f64,
    pub kubelet: Option<ProcessState>,
    /// The process that listens on the runtime socket, whatever its name.
    pub runtime: Option<ProcessState>,
    #[serde(default)]
    pub shims: Vec<Shim>,
    #[serde(default)]
    pub zombies: Vec<ZombieGroup>,
    #[serde(default)]
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// runtime socket

/// A process holding a socket open.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SocketHolder {
    pub pid: u32,
    pub comm: String,
}

/// The CRI unix socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSocket {
    /// As configured, e.g. `unix:///run/containerd/containerd.sock`.
    pub endpoint: String,
    /// The socket's host path.
    pub path: String,
    pub exists: bool,
    pub is_socket: bool,
    /// Permission bits in octal, e.g. "0660".
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Inode of the listening socket bound to this path (/proc/net/unix).
    pub listener_inode: Option<u64>,
    /// Processes holding the listening socket (from /proc/<pid>/fd).
    pub listeners: Vec<SocketHolder>,
    /// Connected sockets bound to the path (the runtime's side of its clients' connections).
    pub connections: u32,
    #[serde(default)]
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// kubelet healthz

/// One HTTP request and its outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpAttempt {
    pub at_unix_ms: i64,
    pub latency_ms: f64,
    pub status: Option<u16>,
    /// Start of the body (at most 256 bytes).
    pub body: Option<String>,
    pub error: Option<String>,
    pub timed_out: bool,
}

/// The kubelet's local `/healthz` (`healthzBindAddress:healthzPort`, default 127.0.0.1:10248).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeletHealthz {
    pub url: Option<String>,
    /// Why it was not probed (port 0 = disabled).
    pub skipped: Option<String>,
    pub attempts: Vec<HttpAttempt>,
}

// ---------------------------------------------------------------------------------------------
// CRI

/// How one CRI call ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CallOutcome {
    Ok,
    /// The runtime answered with a gRPC error (or the connection failed).
    Error,
    /// No answer within the timeout.
    Timeout,
}

/// One timed CRI call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallSample {
    pub at_unix_ms: i64,
    pub latency_ms: f64,
    pub outcome: CallOutcome,
}

/// Repeated calls of one CRI operation over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CriOperation {
    /// `connect`, `Version`, `Status`, `ListPodSandbox`, `ListContainers`.
    pub name: String,
    pub calls: u32,
    pub ok: u32,
    pub errors: u32,
    pub timeouts: u32,
    /// Median and maximum over the calls that returned (ok or error); timed-out calls are
    /// counted in `timeouts`, they have no latency (it is at least `timeoutMs`).
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub last_error: Option<String>,
    pub samples: Vec<CallSample>,
}

/// Overall responsiveness of the runtime over the window (facts, not a verdict).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CriState {
    /// Every call answered without error.
    Responding,
    /// Calls answered, some with errors or timeouts.
    Degraded,
    /// No call answered within the timeout: the socket accepts (or not) but nothing replies.
    Hung,
    /// The socket could not be connected to at all.
    Unreachable,
    /// No runtime endpoint to probe.
    NotProbed,
}

/// A runtime condition from CRI Status (RuntimeReady, NetworkReady).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCondition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Counts from the last answered ListPodSandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxCounts {
    pub total: u32,
    pub ready: u32,
    pub not_ready: u32,
}

/// Counts from the last answered ListContainers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCounts {
    pub total: u32,
    pub created: u32,
    pub running: u32,
    pub exited: u32,
    pub unknown: u32,
}

/// The agent's own timed CRI calls — the `time crictl ps` of the guide.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CriProbe {
    pub endpoint: String,
    pub state: CriState,
    pub timeout_ms: u64,
    pub interval_ms: u64,
    pub window_ms: u64,
    /// Wall time the probe took; bounded by window + timeout.
    pub elapsed_ms: u64,
    pub operations: Vec<CriOperation>,
    pub runtime_name: Option<String>,
    pub runtime_version: Option<String>,
    pub runtime_api_version: Option<String>,
    pub conditions: Vec<RuntimeCondition>,
    pub sandboxes: Option<SandboxCounts>,
    pub containers: Option<ContainerCounts>,
}

// ---------------------------------------------------------------------------------------------
// certificates

/// One X.509 certificate (from a CERTIFICATE PEM block).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub sans: Vec<String>,
    pub not_before_unix_ms: i64,
    pub not_after_unix_ms: i64,
    /// notAfter - now; negative once expired.
    pub seconds_left: i64,
    pub expired: bool,
    pub not_yet_valid: bool,
    pub is_ca: bool,
}

/// A certificate file on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFile {
    /// `client` (kubelet-client-current.pem) or `serving`.
    pub role: String,
    /// Host path.
    pub path: String,
    /// Where the symlink chain ends (kubelet-client-current.pem -> kubelet-client-<ts>.pem).
    pub resolved_path: Option<String>,
    pub exists: bool,
    pub modified_at_unix_ms: Option<i64>,
    /// The certificate chain, leaf first.
    pub certificates: Vec<CertificateInfo>,
    /// PEM blocks that are not certificates (e.g. the private key): counted, never decoded.
    pub other_pem_blocks: u32,
    pub error: Option<String>,
}

/// Whether a file exists (no content read).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FilePresence {
    pub path: String,
    pub exists: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Certificates {
    pub client: Option<CertificateFile>,
    pub serving: Option<CertificateFile>,
    pub bootstrap_kubeconfig: Option<FilePresence>,
    #[serde(default)]
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// API server from the node

/// Reachability of the API server from the node, using only the kubelet kubeconfig's server
/// address and CA. The request is anonymous: its status code says the server answers, nothing
/// about the kubelet's credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerProbe {
    pub kubeconfig: Option<String>,
    pub server: Option<String>,
    /// `file:<path>`, `inline`, or `none` (then the handshake cannot verify the server).
    pub ca_source: Option<String>,
    pub tcp_connect_ms: Option<f64>,
    pub tcp_error: Option<String>,
    pub tls_handshake_ms: Option<f64>,
    pub tls_error: Option<String>,
    /// The server's certificate chained to the kubeconfig's CA and matched the host name.
    pub tls_verified: bool,
    pub healthz: Option<HttpAttempt>,
    /// The server's `Date` header (1 s resolution).
    pub server_date_unix_ms: Option<i64>,
    /// Node clock minus server clock at the response, in ms (±1000 from the Date resolution).
    pub clock_skew_ms: Option<i64>,
    pub skipped: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// clock

/// NTP discipline state from adjtimex(2) (read-only call).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Clock {
    pub node_unix_ms: i64,
    /// The kernel's clock is disciplined (STA_UNSYNC clear and state != TIME_ERROR).
    pub ntp_synchronized: bool,
    /// adjtimex return value: TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR.
    pub clock_state: String,
    /// Set STA_* flags.
    pub status_flags: Vec<String>,
    pub offset_us: i64,
    pub max_error_us: i64,
    pub est_error_us: i64,
    /// Copied from `apiServer.clockSkewMs` when the API server answered.
    pub api_server_skew_ms: Option<i64>,
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// kernel log

/// What a kernel-log record reports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum KernelEventKind {
    OomKill,
    HungTask,
    IoError,
}

/// One relevant kernel-log record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KernelEvent {
    pub kind: KernelEventKind,
    /// Kernel timestamp (µs since boot) converted to the node's wall clock.
    pub at_unix_ms: i64,
    pub usec_since_boot: u64,
    /// Process named in the record (OOM victim, hung task).
    pub process: Option<String>,
    pub pid: Option<u32>,
    /// `kubelet` or `runtime` when the process is one of them.
    pub subject: Option<String>,
    /// Block device for I/O errors.
    pub device: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KernelLog {
    pub readable: bool,
    pub error: Option<String>,
    /// Where it was read: `/dev/kmsg`, or `syslog(2)` where the device is refused (a container's
    /// device cgroup does not allow it; CAP_SYSLOG reads the same ring without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Records read from the ring buffer (it holds only the most recent ones).
    pub records_read: u32,
    /// Records overwritten while reading.
    pub records_lost: u32,
    pub oldest_record_unix_ms: Option<i64>,
    /// (Defaulted: the API server stores an empty map in a recorder report as null, dropped.)
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
    /// The most recent events of each kind (at most 20 each).
    pub events: Vec<KernelEvent>,
}

// ---------------------------------------------------------------------------------------------
// logs

/// The kubelet's and the runtime's logs as read on the node, digested with the catalogue in
/// [`crate::logs`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Logs {
    /// The host runs systemd (`/run/systemd/system` exists): logs are in its journal and the
    /// units' state is known to it.
    pub systemd: bool,
    pub kubelet: ComponentLog,
    pub runtime: ComponentLog,
}

/// One component's log and, under systemd, its unit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentLog {
    /// Where the agent looked, in order, with what it found there (`/proc/42/fd/2 -> pipe`, ...).
    pub tried: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::logs::LogDigest>,
    /// Why there is no digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitState>,
}

/// A systemd unit as `systemctl show` reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnitState {
    /// `kubelet.service`, ...
    pub name: String,
    /// `active`, `activating`, `failed`, `inactive`, ... (`systemctl is-active`).
    pub active_state: Option<String>,
    /// `running`, `auto-restart`, `dead`, ...
    pub sub_state: Option<String>,
    /// `NRestarts`: automatic restarts since the unit was last started by hand.
    pub restarts: Option<u32>,
    /// `Result`: `success`, `exit-code`, `signal`, `oom-kill`, `timeout`, ...
    pub result: Option<String>,
    /// `KillMode`: `control-group` (the default: stopping the unit kills every process in its
    /// cgroup), `mixed`, `process` (only the main process), `none`. Whether restarting the
    /// runtime's unit kills the containers' shims with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_mode: Option<String>,
    /// Why the state could not be read.
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// pressure

/// One PSI line: `some|full avg10= avg60= avg300= total=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
    /// Stall time accumulated during the window, in µs.
    pub window_delta_us: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PsiResource {
    pub some: Option<PsiLine>,
    pub full: Option<PsiLine>,
}

/// CPU bandwidth throttling of a process's cgroup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CgroupCpu {
    /// `kubelet` or `runtime`.
    pub owner: String,
    pub pid: u32,
    /// 1 or 2.
    pub cgroup_version: u8,
    /// The cgroup path from /proc/<pid>/cgroup.
    pub path: String,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_ns: u64,
    /// Deltas over the window.
    pub window_nr_periods: Option<u64>,
    pub window_nr_throttled: Option<u64>,
    pub window_throttled_ns: Option<u64>,
    /// CFS quota/period in µs (None: unlimited or unreadable).
    pub quota_us: Option<i64>,
    pub period_us: Option<u64>,
    pub error: Option<String>,
    /// The cgroup's own pressure stall information (cgroup v2: `cpu.pressure`, `io.pressure`,
    /// `memory.pressure` of the unit or pod's cgroup), with deltas over the window. None on v1
    /// or when the cgroup is the root (whose PSI is the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<CgroupPsi>,
    /// The cgroup's own I/O limits (v2 `io.max` lines other than unlimited), e.g.
    /// `254:0 rbps=max wbps=max riops=max wiops=10`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_max: Vec<String>,
}

/// One cgroup's pressure stall information.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CgroupPsi {
    pub cpu: Option<PsiResource>,
    pub io: Option<PsiResource>,
    pub memory: Option<PsiResource>,
    /// On-CPU time of the cgroup over the window in µs (v2 `cpu.stat` usage_usec), to set the
    /// CPU stall beside.
    pub window_usage_us: Option<u64>,
    /// `usage_usec` when sampled.
    pub usage_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    /// Node-wide PSI from /proc/pressure/*, None when the kernel has PSI off.
    pub cpu: Option<PsiResource>,
    pub io: Option<PsiResource>,
    pub memory: Option<PsiResource>,
    pub psi_error: Option<String>,
    pub cgroups: Vec<CgroupCpu>,
}

// ---------------------------------------------------------------------------------------------
// eBPF run-queue wait

/// Run-queue wait of one process's threads during the window, measured in the kernel
/// (`sched_info.run_delay` at each switch-out): time its threads were runnable but not running.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunQueueProcess {
    /// `kubelet` or `runtime`.
    pub owner: String,
    pub pid: u32,
    /// Threads that waited at least once.
    pub threads: u32,
    pub waits: u64,
    pub run_queue_wait_ns: u64,
    /// The longest single wait of any thread.
    pub max_wait_ns: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunQueue {
    /// The eBPF programs were loaded and attached for the window.
    pub attached: bool,
    /// Why not (no BTF, no privileges, build without eBPF).
    pub error: Option<String>,
    pub window_ms: u64,
    pub processes: Vec<RunQueueProcess>,
}

// ---------------------------------------------------------------------------------------------
// eBPF thread states and block I/O

/// Where threads' time went, summed over threads: thread-nanoseconds (two threads each waiting
/// 1 s on a run queue make 2 s of `run_queue_ns`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStateTimes {
    pub on_cpu_ns: u64,
    /// Runnable but not running (woken or preempted, waiting for a CPU).
    pub run_queue_ns: u64,
    /// Switched out in I/O wait (the kernel's `in_iowait`, as delay accounting counts blkio).
    pub io_wait_ns: u64,
    /// Any other sleep (futex, epoll, timers): Go threads park here when idle.
    pub sleep_ns: u64,
}

impl ThreadStateTimes {
    pub fn add(&mut self, o: &ThreadStateTimes) {
        self.on_cpu_ns += o.on_cpu_ns;
        self.run_queue_ns += o.run_queue_ns;
        self.io_wait_ns += o.io_wait_ns;
        self.sleep_ns += o.sleep_ns;
    }
}

/// One target process over the whole window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceProcess {
    /// `kubelet` or `runtime`.
    pub owner: String,
    pub pid: u32,
    /// Threads seen during the window.
    pub threads: u32,
    #[serde(flatten)]
    pub times: ThreadStateTimes,
}

/// One target process during one second of the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceSecond {
    pub owner: String,
    pub pid: u32,
    /// Start of the interval (node clock) and its length (about 1 s; the last may be shorter).
    pub start_unix_ms: i64,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub times: ThreadStateTimes,
}

/// Block I/O one target process submitted to one device during the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceDevice {
    pub owner: String,
    pub pid: u32,
    /// `major:minor`.
    pub device: String,
    pub bios: u64,
    pub bytes: u64,
    pub total_latency_ns: u64,
    pub max_latency_ns: u64,
    /// log2 latency histogram: `[lower bound in µs, count]` for the non-empty buckets (a bucket
    /// holds [bound, 2 × bound) µs; bound 0 holds < 2 µs).
    pub latency_us_log2: Vec<(u64, u64)>,
}

/// What target threads in I/O wait were blocked in, sampled from user space every
/// [`IO_WAIT_SAMPLE_MS`] through `/proc/<pid>/task/<tid>/syscall`: the syscall and the file of its
/// fd argument, with the device that file lives on. It names the device even when the bios that
/// the thread waits for were not submitted by it (writeback, the journal, blk-throttle
/// re-issuing them from a kernel worker).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TraceIoWait {
    pub owner: String,
    pub pid: u32,
    /// `fsync`, `write`, ... (or `syscall <nr>`).
    pub syscall: String,
    /// The file (as the process sees it); `None` for a syscall without an fd argument.
    pub path: Option<String>,
    /// `major:minor` of the file's file system; `None` when not known.
    pub device: Option<String>,
    /// The block device's name (`loop0`, `nvme0n1p1`) when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Samples that found a thread of this process blocked so.
    pub samples: u32,
}

/// How often the I/O-wait sampler looks at the target threads (ms).
pub const IO_WAIT_SAMPLE_MS: u64 = 100;

/// One long wait of one thread.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceStall {
    /// `runQueue` or `ioWait`.
    pub kind: String,
    pub owner: String,
    pub pid: u32,
    pub tid: u32,
    pub duration_ns: u64,
    /// When it ended (node clock); still going at the end of the window when `ongoing`.
    pub ended_at_unix_ms: i64,
    pub ongoing: bool,
    /// The kernel stack it switched out with (`function+0xoffset`, innermost first; never
    /// addresses): for an I/O wait, what it waits in; for a run-queue wait, where it was
    /// preempted. Empty when not recorded (a run-queue wait that began with a wake-up: the
    /// thread was asleep, and sleeps are not walked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack: Vec<String>,
}

/// One CRI call of the kubelet seen on its socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TraceCriCall {
    /// The gRPC method (`/runtime.v1.RuntimeService/ListPodSandbox`) when the connection's HPACK
    /// state allowed decoding it; `None` when it referred to a header sent before tracing began.
    pub method: Option<String>,
    /// The kubelet's socket fd (0 when seen through the uprobes).
    pub fd: u32,
    /// HTTP/2 stream id (0 when seen through the uprobes).
    pub stream: u32,
    /// The kubelet thread that wrote the request.
    pub tid: u32,
    /// When the kubelet wrote the request (node clock).
    pub start_unix_ms: i64,
    /// Until the end, or until the window ended for a call in flight.
    pub duration_ns: u64,
    /// `response`, `resetByRuntime`, `cancelled` (the kubelet gave up: its deadline), `error`
    /// (uprobe path: the call returned an error) or `inFlight`.
    pub end: String,
}

impl TraceCriCall {
    /// When it ended, or the window did for a call in flight (node clock, Unix ms).
    pub fn end_unix_ms(&self) -> i64 {
        self.start_unix_ms + (self.duration_ns / 1_000_000) as i64
    }
}

/// Per-method totals of the kubelet's CRI calls finished in the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TraceCriMethod {
    /// `None`: calls whose method could not be decoded.
    pub method: Option<String>,
    pub calls: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Calls reset by either side (not answered).
    pub failed: u64,
}

/// The kubelet's CRI calls as the tracer saw them on the kubelet's socket: HTTP/2 stream ids of
/// its reads and writes on its connections to the runtime.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TraceCri {
    pub traced: bool,
    /// Why not traced, or what limits what was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub kubelet_pid: u32,
    /// How the calls were seen: `uprobe` (on the kubelet's gRPC client: `Invoke`'s entry and
    /// returns; only the kubelet pays, every method named) or `syscalls` (its reads and writes on
    /// the socket, HTTP/2 parsed in the kernel; methods decoded where HPACK allows).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook: String,
    /// Why the cheaper hook was not used, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_note: Option<String>,
    /// The kubelet's fds connected to the runtime's socket.
    pub fds: Vec<u32>,
    /// Calls finished in the window.
    pub calls: u64,
    pub methods: Vec<TraceCriMethod>,
    /// The longest calls (finished or not), longest first.
    pub slowest: Vec<TraceCriCall>,
    /// Calls still unanswered when the window ended, oldest first.
    pub in_flight: Vec<TraceCriCall>,
    /// Reads/writes where the HTTP/2 framing was lost and found again.
    pub desyncs: u64,
    /// Finished calls whose request was written before tracing began.
    pub unmatched: u64,
    /// Finished calls lost because the kernel's ring buffer was full.
    pub lost: u64,
}

impl TraceCri {
    /// Node-clock intervals `[start, end)` (Unix ms) of the calls that took at least
    /// `threshold_ns`, in-flight ones included.
    pub fn slow_intervals(&self, threshold_ns: u64) -> Vec<(i64, i64)> {
        self.slowest
            .iter()
            .chain(&self.in_flight)
            .filter(|c| c.duration_ns >= threshold_ns)
            .map(|c| (c.start_unix_ms, c.end_unix_ms()))
            .collect()
    }
}

/// Thread-state accounting of the kubelet's and the runtime's threads and the latency of the
/// block I/O they submit, measured in the kernel by eBPF over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The eBPF programs were loaded and attached for the window.
    pub attached: bool,
    /// `trace unavailable: <why>` (no BTF, a missing tracepoint, BPF refused, build without eBPF).
    pub error: Option<String>,
    pub window_ms: u64,
    /// Where bio submitters are recorded: `submit_bio` (fentry) or `block_bio_queue` (the
    /// tracepoint; bios delayed by blk-throttle then count from their re-issue).
    pub bio_submit_hook: String,
    /// Why the preferred hook was not used, if it was not.
    pub bio_submit_hook_note: Option<String>,
    /// How target threads' switch-outs are seen: `perf-event` (one per target thread: only the
    /// targets run the program) or `sched_switch` (tp_btf: where perf events are refused).
    #[serde(default)]
    pub switch_hook: String,
    /// Why the per-thread perf event was not used, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_hook_note: Option<String>,
    pub processes: Vec<TraceProcess>,
    pub seconds: Vec<TraceSecond>,
    pub devices: Vec<TraceDevice>,
    /// The longest waits, longest first (each thread's longest run-queue and I/O wait).
    pub stalls: Vec<TraceStall>,
    /// What the threads in I/O wait were blocked in, most samples first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_waits: Vec<TraceIoWait>,
    /// The kubelet's CRI calls on its socket.
    #[serde(default)]
    pub cri: TraceCri,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(owner: &str, start: i64, runq_ms: u64, io_ms: u64) -> TraceSecond {
        TraceSecond {
            owner: owner.into(),
            pid: if owner == "kubelet" { 10 } else { 20 },
            start_unix_ms: start,
            duration_ms: 1000,
            times: ThreadStateTimes {
                on_cpu_ns: 5_000_000,
                run_queue_ns: runq_ms * 1_000_000,
                io_wait_ns: io_ms * 1_000_000,
                sleep_ns: 30_000_000_000,
            },
        }
    }

    fn trace(seconds: Vec<TraceSecond>) -> Trace {
        Trace {
            attached: true,
            seconds,
            devices: vec![
                TraceDevice {
                    device: "7:1".into(),
                    total_latency_ns: 9,
                    ..Default::default()
                },
                TraceDevice {
                    device: "8:0".into(),
                    total_latency_ns: 3,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn trace_section_round_trips() {
        let mut ev = NodeEvidence::default();
        let t = trace(vec![second("runtime", 0, 1, 2)]);
        let json = serde_json::to_vec(&t).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"runQueueNs\":1000000"), "{text}");
        ev.insert_section(section::TRACE, &json).unwrap();
        assert_eq!(ev.trace, Some(t));
    }

    #[test]
    fn sections_round_trip_through_insert_section() {
        let mut ev = NodeEvidence {
            schema: crate::SCHEMA.into(),
            ..Default::default()
        };
        let cri = CriProbe {
            endpoint: "unix:///run/containerd/containerd.sock".into(),
            state: CriState::Hung,
            timeout_ms: 10_000,
            interval_ms: 1_000,
            window_ms: 10_000,
            elapsed_ms: 20_000,
            operations: vec![],
            runtime_name: None,
            runtime_version: None,
            runtime_api_version: None,
            conditions: vec![],
            sandboxes: None,
            containers: None,
        };
        let json = serde_json::to_vec(&cri).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"timeoutMs\":10000"), "{text}");
        assert!(text.contains("\"state\":\"hung\""), "{text}");
        ev.insert_section(section::CRI, &json).unwrap();
        assert_eq!(ev.cri, Some(cri));
        let logs = Logs {
            systemd: false,
            kubelet: ComponentLog {
                tried: vec!["/proc/1/fd/2 -> /var/log/kubelet.log".into()],
                ..Default::default()
            },
            runtime: ComponentLog::default(),
        };
        ev.insert_section(section::LOGS, &serde_json::to_vec(&logs).unwrap())
            .unwrap();
        assert_eq!(ev.logs, Some(logs));
        assert!(matches!(
            ev.insert_section("future", b"{}"),
            Err(SectionError::Unknown(_))
        ));
        assert!(matches!(
            ev.insert_section(section::CLOCK, b"[]"),
            Err(SectionError::Malformed { .. })
        ));
    }
}
