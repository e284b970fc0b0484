//! Finding identifiers, typed: the verdict matches on these variants, never on prefixes or on
//! summary prose. Each serializes to the stable kebab-case string of the JSON report
//! (`findings[].id`), which scripts and the end-to-end tests key on.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which of the two node daemons a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// The kubelet.
    Kubelet,
    /// The container runtime (the process listening on the CRI socket).
    Runtime,
}

impl Component {
    /// `kubelet` or `runtime`, as in the agent's evidence (`owner`) and in finding ids.
    pub fn name(self) -> &'static str {
        match self {
            Component::Kubelet => "kubelet",
            Component::Runtime => "runtime",
        }
    }

    fn named(s: &str) -> Option<Self> {
        match s {
            "kubelet" => Some(Component::Kubelet),
            "runtime" => Some(Component::Runtime),
            _ => None,
        }
    }
}

/// A node condition that reports resource pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PressureKind {
    /// MemoryPressure.
    Memory,
    /// DiskPressure.
    Disk,
    /// PIDPressure.
    Pid,
}

impl PressureKind {
    /// Every kind, in the order the conditions are reported.
    pub const ALL: [PressureKind; 3] =
        [PressureKind::Memory, PressureKind::Disk, PressureKind::Pid];

    /// `memory`, `disk`, `pid`.
    pub fn name(self) -> &'static str {
        match self {
            PressureKind::Memory => "memory",
            PressureKind::Disk => "disk",
            PressureKind::Pid => "pid",
        }
    }

    /// The node condition's type.
    pub fn condition(self) -> &'static str {
        match self {
            PressureKind::Memory => "MemoryPressure",
            PressureKind::Disk => "DiskPressure",
            PressureKind::Pid => "PIDPressure",
        }
    }
}

/// The kubelet certificate a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertRole {
    /// The client certificate the kubelet authenticates to the API server with.
    Client,
    /// The serving certificate of the kubelet's own HTTPS port.
    Serving,
}

impl CertRole {
    /// `client` or `serving`, as in the agent's evidence.
    pub fn name(self) -> &'static str {
        match self {
            CertRole::Client => "client",
            CertRole::Serving => "serving",
        }
    }
}

/// Every finding's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingId {
    // --- node conditions and events (API side)
    /// The Ready condition.
    Ready,
    /// A pressure condition.
    Pressure(PressureKind),
    /// The node is cordoned.
    Cordoned,
    /// Warning events about the node.
    Events,
    /// The kubelet's "Starting kubelet." events: restarts.
    KubeletRestarts,
    // --- heartbeat
    /// The node's Lease.
    Lease,
    /// Stale leases cluster-wide.
    ClusterLeases,
    // --- PLEG
    /// Relist duration.
    PlegDuration,
    /// Relist interval.
    PlegInterval,
    /// Age of the last successful relist.
    PlegLastSeen,
    /// Discarded PLEG events.
    PlegDiscards,
    /// The share of relist time spent in the runtime's list calls.
    PlegRuntimeShare,
    /// Which PLEG the kubelet runs (generic or evented) and its thresholds.
    PlegMode,
    // --- runtime as the kubelet sees it
    /// Runtime list operation latency.
    RuntimeListLatency,
    /// Runtime operation errors.
    RuntimeErrors,
    /// The runtime's write operations (create, start, stop, remove).
    RuntimeWriteLatency,
    /// The kubelet's endpoints that ask the runtime hang while the others answer.
    KubeletWaitsOnRuntime,
    // --- certificates
    /// Client certificate TTL (kubelet metrics).
    CertClientTtl,
    /// Serving certificate TTL (kubelet metrics).
    CertServerTtl,
    /// Client certificate renew errors.
    CertClientRenew,
    /// Serving certificate renew errors.
    CertServerRenew,
    /// The kubelet's own requests answered 401/403.
    KubeletAuth,
    /// A pending client CSR of this node.
    CsrClientPending,
    /// A pending serving CSR of this node.
    CsrServingPending,
    /// A denied or failed CSR of this node.
    CsrRejected,
    /// No CSR problem.
    Csrs,
    /// The CSR approver's health.
    CsrApprover,
    // --- the kubelet's own health
    /// Kubelet RSS.
    KubeletMemory,
    /// Kubelet goroutines.
    KubeletGoroutines,
    /// Running pods against the node's capacity.
    PodDensity,
    /// Container starts over the window.
    PodChurn,
    /// Kubelet /healthz.
    Healthz,
    /// The goroutine dump.
    GoroutineDump,
    // --- the kubelet's requests to the API server
    /// Their latency.
    RestLatency,
    /// 5xx answers and requests with no answer.
    RestErrors,
    // --- filesystems and configuration
    /// A node filesystem (`nodefs`, `imagefs`, `containerfs`).
    Filesystem(String),
    /// Image GC thresholds.
    ImageGc,
    /// Container log rotation.
    LogRotation,
    /// kube/system-reserved.
    Reserved,
    // --- collection
    /// The API server cannot reach the kubelet.
    KubeletUnreachable,
    /// The kubelet cannot authorize the API server's requests.
    KubeletAuthz,
    /// The kubelet did not answer in time.
    KubeletSlow,
    /// A permission is missing (the first step that needed it).
    Access(String),
    /// A collection step failed otherwise.
    Collection(String),
    /// Malformed lines in /metrics.
    MetricsMalformed,
    // --- the node layer (the agent)
    /// No node-side evidence.
    NodeProbe,
    /// The probe pod was not started within the bound.
    PodNotStarted,
    /// The node evidence is partial.
    NodePartial,
    /// How the probe pod's host root was mounted.
    ProbeHostMount,
    /// What the agent could not read (a capability it lacks, a section that failed).
    AgentAccess,
    /// No kubelet process.
    KubeletGone,
    /// A kubelet process that exists but does not run.
    KubeletPaused,
    /// A kubelet process that runs but does not answer its healthz.
    KubeletUnresponsive,
    /// The agent's own CRI calls.
    NodeCri,
    /// The runtime socket: exists, is a socket, who listens.
    NodeRuntimeSocket,
    /// The kubelet's CRI calls, traced on its socket.
    NodeKubeletCriSlow,
    /// The runtime's threads waiting on block I/O for much of the traced window.
    NodeRuntimeDiskBound,
    /// The kubelet or the runtime starved of CPU.
    CpuStarved(Component),
    /// The client certificate on disk expired.
    NodeCertExpired,
    /// A certificate on disk near expiry.
    NodeCertExpiring(CertRole),
    /// The node cannot reach the API server.
    NodeApiUnreachable,
    /// The node's clock: NTP sync and skew against the API server.
    NodeClock,
    /// OOM kills of the kubelet or the runtime.
    NodeOom,
    /// Hung tasks in the kernel log.
    NodeHungTasks,
    /// Shims whose containers are gone or unknown to the runtime.
    NodeOrphanedShims,
    /// Zombie children of the kubelet, the runtime or its shims.
    NodeZombies,
    /// The systemd unit of the kubelet or the runtime.
    Unit(Component),
    // --- logs
    /// A known log message (catalogue id).
    Log(String),
    /// The kubelet's node log query is off.
    LogQueryDisabled,
    /// No log could be read.
    LogUnreadable,
    // --- history
    /// The node's series in the user's Prometheus (`--prometheus`).
    History,
    // --- the flight recorder
    /// The node's recorder timeline: the minutes before the run, in spans of state.
    RecorderTimeline,
    /// The recorder's report is older than two heartbeats: it is not writing.
    RecorderStale,
    /// The recorder's writes to the API server failed for a while (said once the path is back).
    RecorderWritesFailed,
}

const SIMPLE: &[(FindingId, &str)] = &[
    (FindingId::Ready, "node-ready"),
    (FindingId::Cordoned, "node-cordoned"),
    (FindingId::Events, "node-events"),
    (FindingId::KubeletRestarts, "kubelet-restarts"),
    (FindingId::Lease, "lease-age"),
    (FindingId::ClusterLeases, "cluster-node-leases"),
    (FindingId::PlegDuration, "pleg-relist-duration"),
    (FindingId::PlegInterval, "pleg-relist-interval"),
    (FindingId::PlegLastSeen, "pleg-last-seen"),
    (FindingId::PlegDiscards, "pleg-discarded-events"),
    (FindingId::PlegRuntimeShare, "pleg-runtime-share"),
    (FindingId::PlegMode, "pleg-mode"),
    (FindingId::RuntimeListLatency, "runtime-list-latency"),
    (FindingId::RuntimeErrors, "runtime-errors"),
    (FindingId::RuntimeWriteLatency, "runtime-write-latency"),
    (FindingId::KubeletWaitsOnRuntime, "kubelet-waits-on-runtime"),
    (FindingId::CertClientTtl, "cert-client-ttl"),
    (FindingId::CertServerTtl, "cert-server-ttl"),
    (FindingId::CertClientRenew, "cert-client-renew-errors"),
    (FindingId::CertServerRenew, "cert-server-renew-errors"),
    (FindingId::KubeletAuth, "kubelet-auth-errors"),
    (FindingId::CsrClientPending, "csr-client-pending"),
    (FindingId::CsrServingPending, "csr-serving-pending"),
    (FindingId::CsrRejected, "csr-denied-or-failed"),
    (FindingId::Csrs, "csrs"),
    (FindingId::CsrApprover, "csr-approver"),
    (FindingId::KubeletMemory, "kubelet-memory"),
    (FindingId::KubeletGoroutines, "kubelet-goroutines"),
    (FindingId::PodDensity, "pod-density"),
    (FindingId::PodChurn, "pod-churn"),
    (FindingId::Healthz, "kubelet-healthz"),
    (FindingId::GoroutineDump, "goroutine-dump"),
    (FindingId::RestLatency, "rest-client-latency"),
    (FindingId::RestErrors, "rest-client-errors"),
    (FindingId::ImageGc, "image-gc-thresholds"),
    (FindingId::LogRotation, "container-log-rotation"),
    (FindingId::Reserved, "reserved-resources"),
    (FindingId::KubeletUnreachable, "kubelet-unreachable"),
    (FindingId::KubeletAuthz, "kubelet-cannot-authorize"),
    (FindingId::KubeletSlow, "kubelet-slow-to-answer"),
    (FindingId::MetricsMalformed, "metrics-malformed"),
    (FindingId::NodeProbe, "node-probe"),
    (FindingId::PodNotStarted, "node-probe-pod-not-started"),
    (FindingId::NodePartial, "node-probe-partial"),
    (FindingId::ProbeHostMount, "node-probe-host-mount"),
    (FindingId::AgentAccess, "node-agent-access"),
    (FindingId::KubeletGone, "node-kubelet-process-gone"),
    (FindingId::KubeletPaused, "node-kubelet-paused"),
    (FindingId::KubeletUnresponsive, "node-kubelet-unresponsive"),
    (FindingId::NodeCri, "node-cri"),
    (FindingId::NodeRuntimeSocket, "node-runtime-socket"),
    (FindingId::NodeKubeletCriSlow, "node-kubelet-cri-slow"),
    (FindingId::NodeRuntimeDiskBound, "node-runtime-disk-bound"),
    (FindingId::NodeCertExpired, "node-certificate-expired"),
    (FindingId::NodeApiUnreachable, "node-api-unreachable"),
    (FindingId::NodeClock, "node-clock"),
    (FindingId::NodeOom, "node-oom-kills"),
    (FindingId::NodeHungTasks, "node-hung-tasks"),
    (FindingId::NodeOrphanedShims, "node-orphaned-shims"),
    (FindingId::NodeZombies, "node-zombies"),
    (FindingId::LogQueryDisabled, "logs-query-disabled"),
    (FindingId::LogUnreadable, "logs-unreadable"),
    (FindingId::History, "history"),
    (FindingId::RecorderTimeline, "recorder-timeline"),
    (FindingId::RecorderStale, "recorder-stale"),
    (FindingId::RecorderWritesFailed, "recorder-writes-failed"),
];

/// Ids made of a prefix and a part: `node-pressure-memory`, `logs-pleg-not-healthy`, ...
const PREFIXES: &[&str] = &[
    "node-pressure-",
    "filesystem-usage-",
    "access-",
    "collection-",
    "node-cpu-starved-",
    "node-certificate-expiring-",
    "node-unit-",
    "logs-",
];

impl FindingId {
    /// A known log message's finding.
    pub fn log(catalogue_id: &str) -> Self {
        FindingId::Log(catalogue_id.to_string())
    }

    /// Known log messages and the log readers' own findings: supporting evidence, never a
    /// problem on their own.
    pub fn is_log(&self) -> bool {
        matches!(
            self,
            FindingId::Log(_) | FindingId::LogQueryDisabled | FindingId::LogUnreadable
        )
    }

    fn parse_prefixed(prefix: &str, rest: &str) -> Option<Self> {
        Some(match prefix {
            "node-pressure-" => {
                FindingId::Pressure(PressureKind::ALL.into_iter().find(|k| k.name() == rest)?)
            }
            "filesystem-usage-" => FindingId::Filesystem(rest.to_string()),
            "access-" => FindingId::Access(rest.to_string()),
            "collection-" => FindingId::Collection(rest.to_string()),
            "node-cpu-starved-" => FindingId::CpuStarved(Component::named(rest)?),
            "node-certificate-expiring-" => FindingId::NodeCertExpiring(match rest {
                "client" => CertRole::Client,
                "serving" => CertRole::Serving,
                _ => return None,
            }),
            "node-unit-" => FindingId::Unit(Component::named(rest)?),
            "logs-" => FindingId::Log(rest.to_string()),
            _ => return None,
        })
    }
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((_, s)) = SIMPLE.iter().find(|(id, _)| id == self) {
            return f.write_str(s);
        }
        match self {
            FindingId::Pressure(k) => write!(f, "node-pressure-{}", k.name()),
            FindingId::Filesystem(name) => write!(f, "filesystem-usage-{name}"),
            FindingId::Access(step) => write!(f, "access-{step}"),
            FindingId::Collection(step) => write!(f, "collection-{step}"),
            FindingId::CpuStarved(c) => write!(f, "node-cpu-starved-{}", c.name()),
            FindingId::NodeCertExpiring(r) => write!(f, "node-certificate-expiring-{}", r.name()),
            FindingId::Unit(c) => write!(f, "node-unit-{}", c.name()),
            FindingId::Log(id) => write!(f, "logs-{id}"),
            // Every other variant is in SIMPLE (a unit test checks it).
            other => write!(f, "{other:?}"),
        }
    }
}

/// A string that is no finding id.
#[derive(Debug, thiserror::Error)]
#[error("unknown finding id {0:?}")]
pub struct UnknownFindingId(String);

impl FromStr for FindingId {
    type Err = UnknownFindingId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((id, _)) = SIMPLE.iter().find(|(_, name)| *name == s) {
            return Ok(id.clone());
        }
        PREFIXES
            .iter()
            .find_map(|p| {
                s.strip_prefix(p)
                    .filter(|rest| !rest.is_empty())
                    .and_then(|rest| FindingId::parse_prefixed(p, rest))
            })
            .ok_or_else(|| UnknownFindingId(s.to_string()))
    }
}

impl Serialize for FindingId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FindingId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_round_trips_through_its_report_string() {
        let mut all: Vec<FindingId> = SIMPLE.iter().map(|(id, _)| id.clone()).collect();
        all.extend(PressureKind::ALL.map(FindingId::Pressure));
        all.extend([
            FindingId::Filesystem("nodefs".into()),
            FindingId::Access("healthz".into()),
            FindingId::Collection("metrics-end".into()),
            FindingId::CpuStarved(Component::Kubelet),
            FindingId::CpuStarved(Component::Runtime),
            FindingId::NodeCertExpiring(CertRole::Client),
            FindingId::NodeCertExpiring(CertRole::Serving),
            FindingId::Unit(Component::Kubelet),
            FindingId::Log("pleg-not-healthy".into()),
        ]);
        for id in all {
            let s = id.to_string();
            assert!(
                !s.chars().any(|c| c.is_uppercase()),
                "{id:?} has no report string: {s}"
            );
            assert_eq!(s.parse::<FindingId>().unwrap(), id, "{s}");
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<FindingId>(&json).unwrap(), id);
        }
        // The strings the report has always used.
        assert_eq!(FindingId::Ready.to_string(), "node-ready");
        assert_eq!(
            FindingId::Pressure(PressureKind::Memory).to_string(),
            "node-pressure-memory"
        );
        assert_eq!(
            FindingId::CpuStarved(Component::Runtime).to_string(),
            "node-cpu-starved-runtime"
        );
        assert_eq!(
            "logs-query-disabled".parse::<FindingId>().unwrap(),
            FindingId::LogQueryDisabled
        );
        assert!("no-such-thing".parse::<FindingId>().is_err());
        assert!("logs-".parse::<FindingId>().is_err());
    }
}
