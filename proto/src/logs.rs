//! Kubelet and container-runtime log messages that name a failure domain: the catalogue, and a
//! digest of a log (which known messages occurred, how often, first and last time, one example).
//!
//! Both halves of the tool read logs — the plugin through the kubelet's log query on the node
//! proxy, the agent from the node's journal or log files — and both digest them with this one
//! catalogue, so a message means the same thing whichever layer saw it.
//!
//! Matching is on fixed substrings of the messages as the upstream code writes them (each entry
//! cites where). A line counts for the first entry that matches it, so specific entries come
//! before general ones ("Skipping pod synchronization" carries the runtime state error that made
//! the kubelet skip; that error's own entry wins).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whose log a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Kubelet,
    Runtime,
}

/// One known message.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    /// Stable id (findings are `logs-<id>`).
    pub id: &'static str,
    /// Whose log it is looked for in.
    pub component: Component,
    /// The failure domain it points at, in the plugin's vocabulary (`pleg`, `runtime`,
    /// `certificates`, `api-connectivity`, `kubelet`, `node`, `filesystem`).
    pub domain: &'static str,
    /// The verdict cause it supports, when it names one (`pleg-slow`, `runtime-unresponsive`,
    /// `certificate`, `api-partition`, `kubelet-starved`, `kubelet-down`, `node-pressure`).
    pub cause: Option<&'static str>,
    /// Every group must match: a line matches a group when it contains any of its strings.
    pub all_of: &'static [&'static [&'static str]],
    /// A line that contains any of these is not this message (look-alikes from other code).
    pub none_of: &'static [&'static str],
    /// What it means, for a person.
    pub meaning: &'static str,
    /// Where upstream writes it.
    pub source: &'static str,
}

/// A containerd (logrus) line at warning level or worse.
const RUNTIME_ERROR_LEVEL: &[&str] =
    &["level=error", "level=fatal", "level=warning", "level=panic"];

/// The catalogue, in matching order (specific before general).
pub const CATALOGUE: &[Message] = &[
    // --- kubelet: PLEG and the runtime as the kubelet sees it ---------------------------------
    Message {
        id: "pleg-not-healthy",
        component: Component::Kubelet,
        domain: "pleg",
        cause: Some("pleg-slow"),
        all_of: &[&["pleg was last seen active"]],
        none_of: &[],
        meaning: "the kubelet's last relist finished longer ago than the 3-minute threshold: the node goes NotReady",
        source: "kubernetes pkg/kubelet/pleg/generic.go (GenericPLEG.Healthy: \"pleg was last seen active %v ago; threshold is %v\"), reported by pkg/kubelet/kubelet.go (syncLoop, runtimeState)",
    },
    Message {
        id: "kubelet-starting",
        component: Component::Kubelet,
        domain: "kubelet",
        cause: None,
        all_of: &[&[
            "pleg has yet to be successful",
            "container runtime status check may not have completed yet",
        ]],
        none_of: &[],
        meaning: "the kubelet has just started: no relist and no runtime status yet (many of these in a short time are a restart loop)",
        source: "kubernetes pkg/kubelet/pleg/generic.go (GenericPLEG.Healthy: \"pleg has yet to be successful\") and pkg/kubelet/runtime.go (runtimeState.runtimeErrors)",
    },
    Message {
        id: "runtime-down",
        component: Component::Kubelet,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        all_of: &[&[
            "container runtime is down",
            "container runtime not ready",
            "Container runtime not ready",
            "Container runtime sanity check failed",
        ]],
        none_of: &[],
        meaning: "the kubelet's runtime status check failed or the runtime reports RuntimeReady=false",
        source: "kubernetes pkg/kubelet/runtime.go (runtimeState.runtimeErrors: \"container runtime is down\" once the last good status is 30 s old) and pkg/kubelet/kubelet.go (updateRuntimeUp: \"Container runtime not ready\", \"Container runtime sanity check failed\")",
    },
    Message {
        id: "crio-retrying-under-load",
        component: Component::Kubelet,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        all_of: &[&["timing out in CRI-O due to system load"]],
        none_of: &[],
        meaning: "CRI-O could not create a pod or container within the kubelet's request timeout, and the kubelet keeps retrying the same request: the runtime (or the node under it) is overloaded",
        source: "cri-o server/utils.go (\"kubelet may be retrying requests that are timing out in CRI-O due to system load. Currently at stage %v\") and server/container_restore.go, returned to the kubelet's CreateContainer/RunPodSandbox calls",
    },
    Message {
        id: "cri-deadline-exceeded",
        component: Component::Kubelet,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        // Deadline errors of the kubelet's gRPC calls: the CRI (runtime and image services) in
        // all but rare cases (device plugins and CSI are gRPC too). An API call's timeout is
        // "context deadline exceeded" without the gRPC status.
        all_of: &[&["rpc error: code = DeadlineExceeded"]],
        none_of: &[],
        meaning: "CRI calls do not return within runtimeRequestTimeout: the runtime is hung or very slow",
        source: "kubernetes staging/src/k8s.io/cri-client/pkg/remote_runtime.go (listPodSandboxV1, listContainersV1, statusV1: \"... from runtime service failed\"; logged through its log.go), pkg/kubelet/kuberuntime/kuberuntime_sandbox.go (\"Failed to list pod sandboxes\"), pkg/kubelet/pleg/generic.go (Relist: \"GenericPLEG: Unable to retrieve pods\"); the error text is grpc's \"rpc error: code = DeadlineExceeded desc = context deadline exceeded\"",
    },
    Message {
        id: "cri-unreachable",
        component: Component::Kubelet,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        all_of: &[
            &[
                "connect: connection refused",
                "connect: no such file or directory",
            ],
            &["dial unix", ".sock"],
        ],
        // cAdvisor probes the default containerd and CRI-O sockets for its own container
        // factories at start, whatever runtime the kubelet uses.
        none_of: &["container factory"],
        meaning: "nothing answers on the CRI socket: the runtime is not running or listens elsewhere",
        source: "grpc internal/transport/http2_client.go (\"transport: Error while dialing: dial unix ...: connect: connection refused\") inside the cri-client errors of staging/src/k8s.io/cri-client/pkg/remote_runtime.go",
    },
    // --- kubelet: certificates -----------------------------------------------------------------
    Message {
        id: "rotation-backoff",
        component: Component::Kubelet,
        domain: "certificates",
        cause: Some("certificate"),
        all_of: &[&["Reached backoff limit, still unable to rotate certs"]],
        none_of: &[],
        meaning: "five renewals in a row failed; the kubelet keeps trying every 32 s",
        source: "kubernetes staging/src/k8s.io/client-go/util/certificate/certificate_manager.go (manager.run, through utilruntime.HandleErrorWithContext)",
    },
    Message {
        id: "csr-not-signed",
        component: Component::Kubelet,
        domain: "certificates",
        cause: Some("certificate"),
        all_of: &[&[
            "Certificate request was not signed",
            "certificate request was not signed",
        ]],
        none_of: &[],
        meaning: "the kubelet's CSR was not approved and signed within 15 minutes (or was denied): look for it Pending",
        source: "kubernetes staging/src/k8s.io/client-go/util/certificate/certificate_manager.go (manager.rotateCerts after csr.WaitForCertificate; capitalised from 1.33, \"<signer>: certificate request was not signed\" before)",
    },
    Message {
        id: "csr-request-failed",
        component: Component::Kubelet,
        domain: "certificates",
        cause: Some("certificate"),
        all_of: &[&["Failed while requesting a signed certificate from the control plane"]],
        none_of: &[],
        meaning: "the kubelet could not get a new certificate through a CSR",
        source: "kubernetes staging/src/k8s.io/client-go/util/certificate/certificate_manager.go (manager.rotateCerts; the err is e.g. \"cannot create certificate signing request: Unauthorized\" from csr/csr.go)",
    },
    Message {
        id: "client-cert-expired",
        component: Component::Kubelet,
        domain: "certificates",
        cause: Some("certificate"),
        all_of: &[&[
            "The currently active client certificate has expired",
            "No valid client certificate is found",
        ]],
        none_of: &[],
        meaning: "the kubelet's own client certificate expired (it exits when the API server answers, to bootstrap again)",
        source: "kubernetes pkg/kubelet/certificate/transport.go (addCertRotation)",
    },
    Message {
        id: "x509-expired",
        component: Component::Kubelet,
        domain: "certificates",
        cause: Some("certificate"),
        all_of: &[&["certificate has expired or is not yet valid"]],
        none_of: &[],
        meaning: "the kubelet rejected a server's certificate (the API server's, or its CA) as outside its validity: expired, or the node clock is off. An expired kubelet client certificate shows as Unauthorized instead",
        source: "Go crypto/x509/verify.go (CertificateInvalidError.Error, Expired), behind crypto/tls \"tls: failed to verify certificate\", inside the err of the kubelet's API calls",
    },
    Message {
        id: "unauthorized",
        component: Component::Kubelet,
        domain: "certificates",
        cause: Some("certificate"),
        all_of: &[&["Unauthorized"]],
        none_of: &[],
        meaning: "the API server rejected the kubelet's credentials (401): its client certificate is expired, revoked or not trusted",
        source: "the API server's 401 Status message as staging/src/k8s.io/apimachinery/pkg/api/errors returns it; logged by pkg/kubelet/kubelet_node_status.go (\"Unable to register node with API server\", \"Error updating node status, will retry\"), the lease controller and reflectors",
    },
    // --- kubelet: the path to the API server ----------------------------------------------------
    Message {
        id: "api-unreachable",
        component: Component::Kubelet,
        domain: "api-connectivity",
        cause: Some("api-partition"),
        all_of: &[&[
            "dial tcp",
            "http2: client connection lost",
            "TLS handshake timeout",
            "Client.Timeout exceeded",
            "connection reset by peer",
            "use of closed network connection",
            "net/http: request canceled",
        ]],
        none_of: &[],
        meaning: "the kubelet's connections to the API server fail or time out",
        source: "Go net, net/http and x/net/http2 errors as client-go returns them, e.g. staging/src/k8s.io/client-go/tools/cache/reflector.go (DefaultWatchErrorHandler: \"Failed to watch\" err=\"failed to list ...: dial tcp ...\")",
    },
    Message {
        id: "lease-update-failed",
        component: Component::Kubelet,
        domain: "api-connectivity",
        cause: Some("api-partition"),
        all_of: &[&[
            "Failed to update lease",
            "failed to update lease",
            "Failed to ensure lease exists",
        ]],
        none_of: &[],
        // Credential refusals are classified as `unauthorized` before this entry, network errors
        // as `api-unreachable`: what is left (timeouts) points at the path to the API server or
        // an overloaded API server.
        meaning: "the kubelet could not renew its node lease: the control plane soon marks the node Unknown",
        source: "kubernetes staging/src/k8s.io/component-helpers/apimachinery/lease/controller.go (retryUpdateLease: \"Failed to update lease\"; backoffEnsureLease: \"Failed to ensure lease exists, will retry\")",
    },
    Message {
        id: "node-status-failed",
        component: Component::Kubelet,
        domain: "api-connectivity",
        cause: Some("api-partition"),
        all_of: &[&["Error updating node status", "Unable to update node status"]],
        none_of: &[],
        meaning: "the kubelet could not post its node status",
        source: "kubernetes pkg/kubelet/kubelet_node_status.go (updateNodeStatus: \"Error updating node status, will retry\"; syncNodeStatus: \"Unable to update node status\")",
    },
    // --- kubelet: the process itself and the node ----------------------------------------------
    Message {
        id: "kubelet-panic",
        component: Component::Kubelet,
        domain: "kubelet",
        cause: Some("kubelet-down"),
        all_of: &[&["panic: ", "Observed a panic", "fatal error: "]],
        none_of: &[],
        meaning: "the kubelet panicked (it exits, and its supervisor restarts it)",
        source: "staging/src/k8s.io/apimachinery/pkg/util/runtime/runtime.go (logPanic: \"Observed a panic\"), then the Go runtime's own \"panic: ...\" / \"fatal error: ...\" on stderr",
    },
    Message {
        id: "system-oom",
        component: Component::Kubelet,
        domain: "node",
        cause: None,
        all_of: &[&["System OOM encountered", "reason=\"SystemOOM\""]],
        none_of: &[],
        meaning: "the kernel OOM killer killed a process on the node (the victim is named); a node Event, in the log only at -v=3",
        source: "kubernetes pkg/kubelet/oom/oom_watcher_linux.go (realWatcher.Start), logged by client-go tools/record/event.go structured logging at V(3)",
    },
    Message {
        id: "eviction",
        component: Component::Kubelet,
        domain: "node",
        cause: Some("node-pressure"),
        all_of: &[&[
            "Eviction manager: attempting to reclaim",
            "Eviction manager: must evict pod",
        ]],
        none_of: &[],
        meaning: "the node is under resource pressure and the kubelet evicts pods",
        source: "kubernetes pkg/kubelet/eviction/eviction_manager.go (managerImpl.synchronize)",
    },
    Message {
        id: "node-not-ready",
        component: Component::Kubelet,
        domain: "node",
        cause: None,
        all_of: &[&["Node became not ready"]],
        none_of: &[],
        meaning: "the kubelet set Ready=False itself (the condition's message says why)",
        source: "kubernetes pkg/kubelet/nodestatus/setters.go (ReadyCondition)",
    },
    Message {
        id: "skipping-pod-sync",
        component: Component::Kubelet,
        domain: "pleg",
        cause: None,
        all_of: &[&["Skipping pod synchronization"]],
        none_of: &[],
        meaning: "the kubelet skips pod syncs while the runtime or PLEG is unhealthy (the line names which)",
        source: "kubernetes pkg/kubelet/kubelet.go (syncLoop)",
    },
    Message {
        id: "no-space",
        component: Component::Kubelet,
        domain: "filesystem",
        cause: Some("node-pressure"),
        all_of: &[&["no space left on device"]],
        none_of: &[],
        meaning: "a write failed on a full file system",
        source: "Linux ENOSPC as Go reports it",
    },
    // --- the container runtime (containerd logs in logrus text format) ------------------------
    Message {
        id: "runtime-no-space",
        component: Component::Runtime,
        domain: "filesystem",
        cause: Some("node-pressure"),
        all_of: &[&["no space left on device"]],
        none_of: &[],
        meaning: "the runtime could not write: its file system (snapshots, content) is full",
        source: "Linux ENOSPC as containerd reports it",
    },
    Message {
        id: "runtime-thin-pool",
        component: Component::Runtime,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        all_of: &[
            RUNTIME_ERROR_LEVEL,
            &[
                "failed to create thin device",
                "failed to activate new thin device",
                "failed to initialize thin device",
                "failed to create new thin device",
                "thin-pool",
            ],
        ],
        none_of: &[],
        meaning: "the devmapper snapshotter cannot create thin devices: its thin pool is full or failing (the kernel log says \"switching pool to out-of-data-space\")",
        source: "containerd plugins/snapshots/devmapper/snapshotter.go (createSnapshot: \"failed to create thin device for snapshot\") and pool_device.go (createDevice, activateDevice)",
    },
    Message {
        id: "runtime-snapshotter",
        component: Component::Runtime,
        domain: "runtime",
        cause: None,
        all_of: &[
            RUNTIME_ERROR_LEVEL,
            &[
                "failed to prepare extraction snapshot",
                "failed to create snapshot",
                "failed to mount",
                "failed to extract layer",
                "failed to mount rootfs component",
                "failed to mount overlay",
            ],
        ],
        none_of: &[],
        meaning: "the snapshotter failed: images cannot be unpacked or container root file systems mounted",
        source: "containerd core/unpack/unpacker.go (\"failed to prepare extraction snapshot\", \"failed to extract layer\"), plugins/snapshots/overlay/overlay.go (\"failed to create snapshot\"), cmd/containerd-shim-runc-v2/runc/container.go (\"failed to mount rootfs component\"), surfacing through internal/cri/instrument (PullImage/CreateContainer ... failed)",
    },
    Message {
        id: "runtime-shim",
        component: Component::Runtime,
        domain: "runtime",
        cause: None,
        all_of: &[
            RUNTIME_ERROR_LEVEL,
            &[
                "failed to start shim",
                "failed to create shim task",
                "failed to delete shim",
                "failed to shutdown shim task",
                "failed to clean up after shim disconnected",
                "ttrpc: closed",
            ],
        ],
        none_of: &[],
        meaning: "container shims fail to start, die or cannot be cleaned up",
        source: "containerd core/runtime/v2: task_manager.go (\"failed to start shim\", \"failed to create shim task\"), shim.go (\"failed to delete shim\", cleanupAfterDeadShim: \"failed to clean up after shim disconnected\"), ttrpc errors.go (\"ttrpc: closed\"). Not \"cleaning up after shim disconnected\": containerd 1.6/1.7 log it as a warning whenever a pod's shim exits",
    },
    // --- CRI-O (logrus text format too: `time="…" level=error msg="…"`) --------------------
    Message {
        id: "crio-create-timeout",
        component: Component::Runtime,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        all_of: &[RUNTIME_ERROR_LEVEL, &["Container creation timeout"]],
        none_of: &[],
        meaning: "CRI-O's conmon did not report a container created within the timeout: the OCI runtime below it (runc, crun) or the node is too slow",
        source: "cri-o internal/oci/runtime_oci.go (CreateContainer: \"Container creation timeout (%v)\")",
    },
    Message {
        id: "crio-conmon-gone",
        component: Component::Runtime,
        domain: "runtime",
        cause: None,
        all_of: &[
            RUNTIME_ERROR_LEVEL,
            &[
                "is stopped, although the container is running",
                "Failed to load conmon process",
            ],
        ],
        none_of: &[],
        meaning: "a container's conmon (CRI-O's per-container monitor, its shim) died while the container runs: its exit will not be seen",
        source: "cri-o internal/oci/runtime_oci.go (\"Conmon for container %s is stopped, although the container is running\") and internal/oci/container.go (\"Failed to load conmon process for container %s\")",
    },
    Message {
        id: "crio-kill-stuck",
        component: Component::Runtime,
        domain: "runtime",
        cause: None,
        all_of: &[
            RUNTIME_ERROR_LEVEL,
            &["timed out. Killing...", "Killing container"],
        ],
        none_of: &[],
        meaning: "CRI-O cannot stop containers in time (their stop signal times out, or the kill fails): draining this node, or restarting the runtime, may hang on them",
        source: "cri-o internal/oci/runtime_oci.go (StopContainer: \"Stopping container %s with stop signal(%s) timed out. Killing...\", \"Killing container %v failed: %v\")",
    },
    Message {
        id: "crio-storage-unclean",
        component: Component::Runtime,
        domain: "filesystem",
        cause: None,
        all_of: &[RUNTIME_ERROR_LEVEL, &["because of unclean shutdown"]],
        none_of: &[],
        meaning: "CRI-O found its storage dirty after an unclean shutdown and checked, repaired or wiped it (a wipe removes every image and container on the node)",
        source: "cri-o internal/lib/container_server.go (\"Checking storage directory %s for errors because of unclean shutdown\", \"Attempting to repair …\", \"Wiping storage directory …\")",
    },
    Message {
        id: "runtime-panic",
        component: Component::Runtime,
        domain: "runtime",
        cause: Some("runtime-unresponsive"),
        all_of: &[&["panic: ", "level=fatal", "fatal error: "]],
        none_of: &[],
        meaning: "the runtime crashed",
        source: "Go runtime panics; logrus fatal level",
    },
];

/// The catalogue entry with this id.
pub fn message(id: &str) -> Option<&'static Message> {
    CATALOGUE.iter().find(|m| m.id == id)
}

/// The first catalogue entry of `component` that `line` matches.
pub fn classify(component: Component, line: &str) -> Option<&'static Message> {
    CATALOGUE.iter().find(|m| {
        m.component == component
            && !m.none_of.iter().any(|s| line.contains(s))
            && m.all_of
                .iter()
                .all(|group| group.iter().any(|s| line.contains(s)))
    })
}

/// One known message found in a log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogMatch {
    /// Catalogue id.
    pub id: String,
    pub count: u32,
    pub first_unix_ms: Option<i64>,
    pub last_unix_ms: Option<i64>,
    /// The most recent matching line (at most [`EXAMPLE_CHARS`] characters).
    pub example: String,
}

/// What one log said.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogDigest {
    /// Where the lines came from (`file /var/log/kubelet.log`, `journal kubelet.service`,
    /// `node log query ...`).
    pub source: String,
    /// Lines examined (those at or after `since_unix_ms` when their time is known).
    pub lines_scanned: u32,
    /// Only lines from this time on were examined.
    pub since_unix_ms: Option<i64>,
    pub oldest_line_unix_ms: Option<i64>,
    pub newest_line_unix_ms: Option<i64>,
    /// Known messages, most frequent first.
    pub matches: Vec<LogMatch>,
}

/// The longest example line kept.
pub const EXAMPLE_CHARS: usize = 400;

/// Digests `lines` (oldest first) of `component`'s log. A line's time is its own when it has one
/// (`explicit`, or parsed from a klog/logrus header), else the time of the line before it (a
/// panic's stack has none of its own). Lines older than `since_unix_ms` are skipped; `now_unix_ms`
/// supplies the year that klog headers leave out.
pub fn digest<'a>(
    component: Component,
    source: impl Into<String>,
    lines: impl IntoIterator<Item = (Option<i64>, &'a str)>,
    since_unix_ms: Option<i64>,
    now_unix_ms: i64,
) -> LogDigest {
    let mut d = LogDigest {
        source: source.into(),
        since_unix_ms,
        ..LogDigest::default()
    };
    let mut by_id: BTreeMap<&'static str, LogMatch> = BTreeMap::new();
    let mut last_time = None;
    for (explicit, line) in lines {
        let t = explicit
            .or_else(|| line_time(line, now_unix_ms))
            .or(last_time);
        last_time = t;
        if let (Some(t), Some(since)) = (t, since_unix_ms)
            && t < since
        {
            continue;
        }
        d.lines_scanned += 1;
        if let Some(t) = t {
            d.oldest_line_unix_ms.get_or_insert(t);
            d.newest_line_unix_ms = Some(t);
        }
        let Some(m) = classify(component, line) else {
            continue;
        };
        let e = by_id.entry(m.id).or_insert_with(|| LogMatch {
            id: m.id.to_string(),
            first_unix_ms: t,
            ..LogMatch::default()
        });
        e.count += 1;
        e.last_unix_ms = t.or(e.last_unix_ms);
        e.example = truncate(&crate::redact::secrets(line.trim_end()), EXAMPLE_CHARS);
    }
    d.matches = by_id.into_values().collect();
    d.matches
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    d
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The time a log line carries: a logrus `time="..."` field, an RFC 3339 time at the start (the
/// journal's short-iso output), or a klog header (`E1202 13:40:01.123456 ...`, at the start or
/// after a journal/syslog prefix's `]: `). klog headers have no year or zone: the year is the one
/// that puts the time at or before `now_unix_ms` (plus a day of slack), the zone UTC.
pub fn line_time(line: &str, now_unix_ms: i64) -> Option<i64> {
    if let Some(rest) = line.split_once("time=\"").map(|(_, r)| r)
        && let Some((value, _)) = rest.split_once('"')
        && let Some(t) = rfc3339_ms(value)
    {
        return Some(t);
    }
    if let Some(first) = line.split_whitespace().next()
        && first.len() >= 20
        && let Some(t) = rfc3339_ms(first)
    {
        return Some(t);
    }
    let klog = match line.find("]: ") {
        Some(i) if !looks_like_klog(line) => &line[i + 3..],
        _ => line,
    };
    klog_time(klog, now_unix_ms)
}

fn looks_like_klog(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 21
        && matches!(b[0], b'I' | b'W' | b'E' | b'F')
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' '
        && b[8] == b':'
}

fn klog_time(s: &str, now_unix_ms: i64) -> Option<i64> {
    if !looks_like_klog(s) {
        return None;
    }
    let month: i8 = s.get(1..3)?.parse().ok()?;
    let day: i8 = s.get(3..5)?.parse().ok()?;
    let clock = s.get(6..)?.split_whitespace().next()?;
    let time: jiff::civil::Time = clock.parse().ok()?;
    let now = jiff::Timestamp::from_millisecond(now_unix_ms).ok()?;
    let year = now.to_zoned(jiff::tz::TimeZone::UTC).year();
    let slack = 86_400_000;
    for y in [year, year - 1] {
        let date = jiff::civil::Date::new(y, month, day).ok()?;
        let ms = date
            .to_datetime(time)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_millisecond();
        if ms <= now_unix_ms + slack {
            return Some(ms);
        }
    }
    None
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    // The journal's short-iso writes `+0000` offsets.
    // Checked: the last five bytes may start inside a multi-byte character.
    let (head, zone) = s.split_at_checked(s.len().checked_sub(5)?)?;
    if zone.starts_with(['+', '-']) && zone[1..].bytes().all(|b| b.is_ascii_digit()) {
        let fixed = format!("{head}{}:{}", &zone[..3], &zone[3..]);
        return fixed
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_217_600_000; // 2026-12-02T13:20:00Z

    /// Found by the log_lines fuzz target: a time whose fifth-last byte is inside a multi-byte
    /// character panicked (the journal's `+0000` zone was split off by byte index).
    #[test]
    fn a_time_ending_inside_a_multibyte_character_is_no_time_not_a_panic() {
        let journal = "2026-12-06T11:5\u{e9}\u{e9}\u{e9}00 vm kubelet[42]: x";
        assert_eq!(line_time(journal, NOW), None);
        assert_eq!(line_time("time=\"\u{e9}1234\" level=error", NOW), None);
    }

    #[test]
    fn times_of_klog_logrus_and_journal_lines() {
        let klog = "E1202 13:10:01.500000   42 generic.go:1] \"x\"";
        assert_eq!(line_time(klog, NOW), Some(1_796_217_001_500));
        let logrus = "time=\"2026-12-02T13:10:01.500000000Z\" level=error msg=\"x\"";
        assert_eq!(line_time(logrus, NOW), Some(1_796_217_001_500));
        let journal =
            "2026-12-02T13:10:01.500000+0000 vm kubelet[42]: E1202 13:10:01.500000   42 x.go:1] y";
        assert_eq!(line_time(journal, NOW), Some(1_796_217_001_500));
        // New Year: a December line read on the 1st of January belongs to the year before.
        let jan1 = 1_798_761_600_000 + 3_600_000; // 2027-01-01T01:00:00Z
        let dec31 = "I1231 23:59:00.000000 1 x.go:1] y";
        assert_eq!(line_time(dec31, jan1), Some(1_798_761_540_000));
        assert_eq!(line_time("goroutine 1 [running]:", NOW), None);
    }

    #[test]
    fn specific_entries_win_over_general_ones() {
        let l = "E1202 13:10:01.000000 42 kubelet.go:2 \"Skipping pod synchronization\" err=\"PLEG is not healthy: pleg was last seen active 3m1s ago; threshold is 3m0s\"";
        assert_eq!(
            classify(Component::Kubelet, l).unwrap().id,
            "pleg-not-healthy"
        );
        let l = "E1202 13:53:19.143538    7879 kubelet.go:2525] \"Skipping pod synchronization\" err=\"[container runtime status check may not have completed yet, PLEG is not healthy: pleg has yet to be successful]\"";
        assert_eq!(
            classify(Component::Kubelet, l).unwrap().id,
            "kubelet-starting"
        );
        let l = "I1202 13:53:19.128825    7879 factory.go:221] Registration of the containerd container factory failed: unable to create containerd client: containerd: cannot unix dial containerd api service: dial unix /run/containerd/containerd.sock: connect: no such file or directory";
        assert!(classify(Component::Kubelet, l).is_none());
        let l = "E1202 13:10:01.000000 42 kubelet.go:2 \"Skipping pod synchronization\" err=\"something new\"";
        assert_eq!(
            classify(Component::Kubelet, l).unwrap().id,
            "skipping-pod-sync"
        );
        // Runtime entries want an error level: informational lines naming a snapshotter are not errors.
        let info = "time=\"2026-12-02T13:10:01Z\" level=info msg=\"loading plugin\" id=io.containerd.snapshotter.v1.overlayfs";
        assert!(classify(Component::Runtime, info).is_none());
    }

    /// CRI-O's lines, written as its logrus text formatter prints the format strings the
    /// entries cite (no CRI-O node here to capture them from).
    #[test]
    fn cri_o_lines_are_named() {
        let runtime = [
            (
                "time=\"2026-12-06T10:00:00Z\" level=error msg=\"Container creation timeout (4m0s)\"",
                "crio-create-timeout",
            ),
            (
                "time=\"2026-12-06T10:00:00Z\" level=error msg=\"Conmon for container 0123abc is stopped, although the container is running\"",
                "crio-conmon-gone",
            ),
            (
                "time=\"2026-12-06T10:00:00Z\" level=warning msg=\"Stopping container 0123abc with stop signal(SIGTERM) timed out. Killing...\"",
                "crio-kill-stuck",
            ),
            (
                "time=\"2026-12-06T10:00:00Z\" level=error msg=\"Killing container 0123abc failed: timeout\"",
                "crio-kill-stuck",
            ),
            (
                "time=\"2026-12-06T10:00:00Z\" level=warning msg=\"Wiping storage directory /var/lib/containers/storage because of unclean shutdown\"",
                "crio-storage-unclean",
            ),
        ];
        for (line, id) in runtime {
            assert_eq!(
                classify(Component::Runtime, line).map(|m| m.id),
                Some(id),
                "{line}"
            );
        }
        // An informational line with the same words is not an error.
        let info = "time=\"2026-12-06T10:00:00Z\" level=info msg=\"Killing container 0123abc\"";
        assert!(classify(Component::Runtime, info).is_none());
        let kubelet = "E1206 10:00:00.000000 42 log.go:32] \"CreateContainer in sandbox from runtime service failed\" err=\"rpc error: code = Unknown desc = kubelet may be retrying requests that are timing out in CRI-O due to system load. Currently at stage container runtime creation: context deadline exceeded: error reserving ctr name k8s_app_p_ns_1 for id 0123abc: name is reserved\"";
        assert_eq!(
            classify(Component::Kubelet, kubelet).map(|m| m.id),
            Some("crio-retrying-under-load")
        );
    }

    #[test]
    fn digest_counts_first_last_and_skips_old_lines() {
        let lines = [
            "E1202 12:00:00.000000 42 a.go:1] \"Failed to update lease\" err=\"old\"",
            "E1202 13:10:00.000000 42 a.go:1] \"Failed to update lease\" err=\"x\"",
            "panic: boom",
            "goroutine 1 [running]:",
            "E1202 13:11:00.000000 42 a.go:1] \"Failed to update lease\" err=\"context deadline exceeded\"",
        ];
        let since = NOW - 30 * 60_000;
        let d = digest(
            Component::Kubelet,
            "test",
            lines.iter().map(|l| (None, *l)),
            Some(since),
            NOW,
        );
        assert_eq!(d.lines_scanned, 4);
        let lease = d
            .matches
            .iter()
            .find(|m| m.id == "lease-update-failed")
            .unwrap();
        assert_eq!(lease.count, 2);
        assert_eq!(lease.first_unix_ms, Some(1_796_217_000_000));
        assert_eq!(lease.last_unix_ms, Some(1_796_217_060_000));
        assert!(lease.example.contains("context deadline exceeded"));
        // A quoted example keeps no credential of the line.
        let quoted = digest(
            Component::Kubelet,
            "test",
            [(
                None,
                "E1202 13:11:00.000000 42 a.go:1] \"Failed to update lease\" err=\"Put https://k:hunter2@api/x\"",
            )],
            None,
            NOW,
        );
        let example = &quoted.matches[0].example;
        assert!(
            !example.contains("hunter2") && example.contains("k:[REDACTED]@api"),
            "{example}"
        );
        // The panic line has no time of its own: it takes its predecessor's.
        let panic = d.matches.iter().find(|m| m.id == "kubelet-panic").unwrap();
        assert_eq!(panic.first_unix_ms, Some(1_796_217_000_000));
    }

    #[test]
    fn every_entry_is_well_formed() {
        let mut ids = std::collections::HashSet::new();
        for m in CATALOGUE {
            assert!(ids.insert(m.id), "duplicate id {}", m.id);
            assert!(!m.all_of.is_empty() && m.all_of.iter().all(|g| !g.is_empty()));
            assert!(!m.source.is_empty() && !m.meaning.is_empty());
        }
    }
}
