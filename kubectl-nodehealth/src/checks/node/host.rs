//! Node-side checks of what the agent collects beside the processes and the CRI calls: the
//! runtime socket, the shims and zombies under the runtime, hung tasks in the kernel log, the
//! certificates on disk, the node's clock.

use nodehealth_proto::node::{KernelEventKind, NodeEvidence};

use super::super::{CertRole, Domain, Finding, FindingId, Severity, thresholds::*};

/// Kernel-log events newer than this (node clock) count as happening now.
const RECENT_MS: i64 = 10 * 60 * 1000;
/// Zombies from this many on are a leak, not a child between its exit and its reaping.
const ZOMBIES_WARN: u32 = 10;
/// Node clock against the API server's: beyond this, ages computed from the node's timestamps
/// (lease renewals, relists) are shifted by that much (the server's Date has 1 s resolution).
const SKEW_WARN_MS: i64 = 5_000;
/// Beyond this, certificates the cluster signs are not yet valid on the node or already expired
/// on the server: the kubernetes.io signers backdate notBefore by 5 minutes
/// (pkg/controller/certificates/signer: backdate).
const SKEW_CRITICAL_MS: i64 = 5 * 60 * 1000;

/// The CRI socket: present, a socket, with a listener — the guide's "verify the socket file
/// exists at the configured path". A socket writable by everyone is a configuration risk (whoever
/// can write it controls every container).
pub fn runtime_socket(n: &NodeEvidence) -> Vec<Finding> {
    let Some(s) = &n.runtime_socket else {
        return vec![];
    };
    let listener = s
        .listeners
        .iter()
        .map(|l| format!("{} (pid {})", l.comm, l.pid))
        .collect::<Vec<_>>()
        .join(", ");
    let basis = format!(
        "{} -> {}: mode {} uid {} gid {}, listener {}, {} connections",
        s.endpoint,
        s.path,
        s.mode.as_deref().unwrap_or("?"),
        s.uid.map_or("?".into(), |u| u.to_string()),
        s.gid.map_or("?".into(), |g| g.to_string()),
        if listener.is_empty() {
            "none"
        } else {
            &listener
        },
        s.connections
    );
    let unit = super::super::runtime::node_runtime(n).unit_or_placeholder();
    let (severity, domain, summary, fix) = if !s.exists {
        (
            Severity::Critical,
            Domain::Runtime,
            format!("the runtime socket {} does not exist", s.path),
            Some(format!(
                "the runtime is not running or listens elsewhere: `systemctl status {unit}`, and compare its socket with the kubelet's containerRuntimeEndpoint"
            )),
        )
    } else if !s.is_socket {
        (
            Severity::Critical,
            Domain::Runtime,
            format!("{} exists but is not a socket", s.path),
            Some("something replaced the runtime's socket with a file: find what wrote it, remove it, and start the runtime again".to_string()),
        )
    } else if s.listeners.is_empty() && s.listener_inode.is_none() {
        (
            Severity::Critical,
            Domain::Runtime,
            format!(
                "nothing listens on the runtime socket {}: a stale socket file",
                s.path
            ),
            Some(format!(
                "the runtime exited and left its socket behind: `systemctl status {unit}`, `journalctl -u {unit} -n 200`"
            )),
        )
    } else if s
        .mode
        .as_deref()
        .and_then(|m| u32::from_str_radix(m.trim_start_matches('0'), 8).ok())
        .is_some_and(|m| m & 0o002 != 0)
    {
        (
            Severity::Warning,
            Domain::Configuration,
            format!(
                "the runtime socket {} is writable by every user (mode {})",
                s.path,
                s.mode.as_deref().unwrap_or("?")
            ),
            Some("whoever can write the CRI socket controls every container: restrict it to root (0660 root:root)".to_string()),
        )
    } else {
        (
            Severity::Ok,
            Domain::Runtime,
            format!("the runtime socket {} is served by {listener}", s.path),
            None,
        )
    };
    let mut f = Finding::new(FindingId::NodeRuntimeSocket, domain, severity, summary).with(basis);
    if let Some(fix) = fix {
        f = f.fix(fix);
    }
    vec![f]
}

/// Shims with no container process left under them, or whose task the runtime does not know:
/// the guide's "orphaned shims block state queries".
pub fn orphaned_shims(n: &NodeEvidence) -> Vec<Finding> {
    let Some(p) = &n.processes else {
        return vec![];
    };
    let orphaned: Vec<_> = p
        .shims
        .iter()
        .filter(|s| s.known_to_cri == Some(false) || s.live_children == 0)
        .collect();
    if orphaned.is_empty() {
        return vec![];
    }
    let kind = super::super::runtime::node_runtime(n);
    let mut f = Finding::new(
        FindingId::NodeOrphanedShims,
        Domain::Runtime,
        Severity::Warning,
        format!(
            "{} of {} shims are orphaned (no container left under them, or a task the runtime does not list)",
            orphaned.len(),
            p.shims.len()
        ),
    );
    for s in orphaned.iter().take(5) {
        f = f.with(format!(
            "{} pid {} id {}: {} live / {} zombie children, known to the runtime: {}",
            s.comm,
            s.pid,
            s.id.as_deref().unwrap_or("?"),
            s.live_children,
            s.zombie_children,
            s.known_to_cri.map_or("not asked".into(), |k| k.to_string())
        ));
    }
    vec![f.fix(format!(
        "if they block state queries (CRI calls hang), drain the node and then restart {} (`systemctl restart {}`); never kill {} processes by hand — that leaves defunct containers",
        kind.name(),
        kind.unit_or_placeholder(),
        kind.shim()
    ))]
}

/// Zombie children piling up under the kubelet, the runtime or a shim: a parent that does not
/// reap (exec probes that leave zombies, a stuck shim).
pub fn zombies(n: &NodeEvidence) -> Vec<Finding> {
    let Some(p) = &n.processes else {
        return vec![];
    };
    let total: u32 = p.zombies.iter().map(|z| z.count).sum();
    if total == 0 {
        return vec![];
    }
    let mut f = Finding::new(
        FindingId::NodeZombies,
        Domain::Node,
        if total >= ZOMBIES_WARN {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!("{total} zombie processes under the kubelet, the runtime or its shims"),
    );
    for z in &p.zombies {
        f = f.with(format!(
            "{} (pid {}): {} zombies ({})",
            z.parent_comm,
            z.parent_pid,
            z.count,
            z.examples.join(", ")
        ));
    }
    if total >= ZOMBIES_WARN {
        f = f.fix("a parent that does not reap its children: exec probes of a workload (fix the probe's command) or a stuck shim; the node's PID limit fills over time");
    }
    vec![f]
}

/// Tasks the kernel reported blocked for over 120 s (`hung_task_timeout_secs`), in the last
/// minutes: almost always a wait on storage or a filesystem lock. The kubelet's or the runtime's
/// own threads among them is critical.
pub fn hung_tasks(n: &NodeEvidence) -> Vec<Finding> {
    let Some(log) = &n.kernel_log else {
        return vec![];
    };
    let now = n.finished_at_unix_ms.max(n.started_at_unix_ms);
    let hung: Vec<_> = log
        .events
        .iter()
        .filter(|e| e.kind == KernelEventKind::HungTask)
        .filter(|e| now - e.at_unix_ms <= RECENT_MS)
        .collect();
    if hung.is_empty() {
        return vec![];
    }
    let ours = hung.iter().any(|e| e.subject.is_some());
    let mut names: Vec<String> = hung
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e.process.as_deref().unwrap_or("?"),
                e.pid.map(|p| format!(":{p}")).unwrap_or_default()
            )
        })
        .collect();
    names.dedup();
    let mut f = Finding::new(
        FindingId::NodeHungTasks,
        Domain::Node,
        if ours {
            Severity::Critical
        } else {
            Severity::Warning
        },
        format!(
            "{} task(s) blocked for more than 120 s in the last 10 min: {}",
            hung.len(),
            names.join(", ")
        ),
    );
    if let Some(e) = hung.first() {
        f = f.with(e.message.clone());
    }
    vec![f.fix("tasks stuck in the kernel wait on storage or a filesystem lock: check the disk (`iostat -x 1`, `dmesg` for I/O errors) before anything else; restarting a process stuck in D state does not free it")]
}

/// The kubelet's client and serving certificates on disk near expiry (kubernetes-mixin: 7 days
/// warning, 1 day critical), or not yet valid (the node's clock behind the signer's). An expired
/// client certificate is its own finding.
pub fn certificates_expiring(n: &NodeEvidence) -> Vec<Finding> {
    let Some(c) = &n.certificates else {
        return vec![];
    };
    let mut out = Vec::new();
    for (role, file) in [
        (CertRole::Client, &c.client),
        (CertRole::Serving, &c.serving),
    ] {
        let Some(file) = file else { continue };
        let Some(leaf) = file.certificates.first() else {
            continue;
        };
        let left = leaf.seconds_left as f64;
        let (severity, summary) = if leaf.not_yet_valid {
            (
                Severity::Critical,
                format!(
                    "the kubelet's {} certificate on disk is not valid yet: the node's clock is behind the signer's",
                    role.name()
                ),
            )
        } else if leaf.expired {
            if role == CertRole::Client {
                // node-certificate-expired says it.
                continue;
            }
            (
                Severity::Critical,
                format!(
                    "the kubelet's serving certificate on disk expired {} h ago: the API server cannot verify it (logs, exec, metrics through the proxy fail)",
                    -leaf.seconds_left / 3600
                ),
            )
        } else if left < CERT_CRITICAL_SECONDS {
            (
                Severity::Critical,
                format!(
                    "the kubelet's {} certificate on disk expires in {} h",
                    role.name(),
                    leaf.seconds_left / 3600
                ),
            )
        } else if left < CERT_WARN_SECONDS {
            (
                Severity::Warning,
                format!(
                    "the kubelet's {} certificate on disk expires in {} days (rotation should have renewed it at 70-90% of its life)",
                    role.name(),
                    leaf.seconds_left / 86400
                ),
            )
        } else {
            continue;
        };
        out.push(
            Finding::new(
                FindingId::NodeCertExpiring(role),
                Domain::Certificates,
                severity,
                summary,
            )
            .with(format!(
                "{} (subject {}, notAfter in {} s)",
                file.resolved_path.as_deref().unwrap_or(&file.path),
                leaf.subject,
                leaf.seconds_left
            ))
            .fix(match role {
                CertRole::Client => "look for this node's pending client CSR and approve it (`kubectl get csr`); check the node's NTP sync",
                CertRole::Serving => "serving certificates are not auto-approved: approve this node's kubelet-serving CSR after checking its SANs (`kubectl get csr`)",
            }),
        );
    }
    out
}

/// The node's clock: NTP discipline (adjtimex) and the skew against the API server's Date.
pub fn clock(n: &NodeEvidence) -> Vec<Finding> {
    let Some(c) = &n.clock else {
        return vec![];
    };
    if c.error.is_some() {
        return vec![];
    }
    let skew = c
        .api_server_skew_ms
        .or_else(|| n.api_server.as_ref().and_then(|a| a.clock_skew_ms));
    let basis = format!(
        "adjtimex: {} ({}), offset {} µs, max error {} µs{}",
        c.clock_state,
        c.status_flags.join(","),
        c.offset_us,
        c.max_error_us,
        skew.map(|s| format!("; node minus API server {s} ms (±1000: Date has 1 s resolution)"))
            .unwrap_or_default()
    );
    let abs = skew.map(i64::abs);
    let (severity, summary) = if abs.is_some_and(|s| s > SKEW_CRITICAL_MS) {
        (
            Severity::Critical,
            format!(
                "the node's clock is {} s off the API server's: certificates the cluster signs are not yet valid, or already expired, on one side",
                skew.unwrap_or(0) / 1000
            ),
        )
    } else if abs.is_some_and(|s| s > SKEW_WARN_MS) {
        (
            Severity::Warning,
            format!(
                "the node's clock is {} s off the API server's",
                skew.unwrap_or(0) / 1000
            ),
        )
    } else if !c.ntp_synchronized && skew.is_some() {
        // Agrees with the API server now: worth knowing, not a problem (yet).
        (
            Severity::Info,
            "the node's clock is not NTP-synchronized, but agrees with the API server's for now"
                .to_string(),
        )
    } else if !c.ntp_synchronized {
        (
            Severity::Warning,
            "the node's clock is not NTP-synchronized and its skew against the API server is unknown (it drifts: skew breaks certificate validation)".to_string(),
        )
    } else {
        (
            Severity::Ok,
            "the node's clock is NTP-synchronized and agrees with the API server's".to_string(),
        )
    };
    let mut f = Finding::new(FindingId::NodeClock, Domain::Node, severity, summary).with(basis);
    if severity.is_problem() {
        f = f.fix("synchronize the node's clock (`timedatectl`, chrony/systemd-timesyncd status) before judging certificate or lease ages");
    }
    vec![f]
}

/// What the agent could not read: sections that failed, the kernel log refused — never a silent
/// gap; the capability it names is the one to grant (README, Security).
pub fn agent_access(n: &NodeEvidence) -> Vec<Finding> {
    let mut lines: Vec<String> = n
        .errors
        .iter()
        .map(|e| format!("section {}: {}", e.section, e.message))
        .collect();
    if let Some(k) = &n.kernel_log
        && !k.readable
        && let Some(e) = &k.error
    {
        lines.push(format!("kernel log: {e}"));
    }
    if lines.is_empty() {
        return vec![];
    }
    let mut f = Finding::new(
        FindingId::AgentAccess,
        Domain::Collection,
        Severity::Unknown,
        format!(
            "the agent could not read {} part(s) of the node: those checks did not run",
            lines.len()
        ),
    );
    for l in lines {
        f = f.with(l);
    }
    vec![f.fix("give the probe the capability each line names (README, Security), or run the agent on the node as root: tracer-user probe --host-root /")]
}

#[cfg(test)]
mod tests {
    use nodehealth_proto::node::{
        CertificateFile, CertificateInfo, Certificates, Clock, KernelEvent, KernelLog, Processes,
        RuntimeSocket, Shim, SocketHolder,
    };

    use super::*;

    fn socket(exists: bool, is_socket: bool, listener: bool, mode: &str) -> NodeEvidence {
        NodeEvidence {
            runtime_socket: Some(RuntimeSocket {
                endpoint: "unix:///run/containerd/containerd.sock".into(),
                path: "/run/containerd/containerd.sock".into(),
                exists,
                is_socket,
                mode: Some(mode.into()),
                uid: Some(0),
                gid: Some(0),
                listener_inode: listener.then_some(7),
                listeners: if listener {
                    vec![SocketHolder {
                        pid: 9,
                        comm: "containerd".into(),
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_socket_must_exist_be_a_socket_and_have_a_listener() {
        let sev = |n: &NodeEvidence| runtime_socket(n)[0].severity;
        assert_eq!(sev(&socket(true, true, true, "0660")), Severity::Ok);
        assert_eq!(
            sev(&socket(false, false, false, "0660")),
            Severity::Critical
        );
        assert_eq!(sev(&socket(true, false, false, "0644")), Severity::Critical);
        let stale = runtime_socket(&socket(true, true, false, "0660"));
        assert_eq!(stale[0].severity, Severity::Critical);
        assert!(stale[0].summary.contains("stale"), "{}", stale[0].summary);
        let open = runtime_socket(&socket(true, true, true, "0666"));
        assert_eq!(open[0].severity, Severity::Warning);
        assert_eq!(open[0].domain, Domain::Configuration);
        // The runtime named from the listener, in the fix.
        let missing = runtime_socket(&socket(false, false, false, "0660"));
        assert!(
            missing[0]
                .remediation
                .as_deref()
                .unwrap()
                .contains("systemctl status containerd"),
            "{:?}",
            missing[0].remediation
        );
    }

    #[test]
    fn orphaned_shims_say_not_to_kill_them() {
        let shim = |live, known| Shim {
            pid: 5,
            comm: "containerd-shim".into(),
            id: Some("abc".into()),
            namespace: Some("k8s.io".into()),
            address: None,
            live_children: live,
            zombie_children: 0,
            known_to_cri: known,
            started_at_unix_ms: 0,
        };
        let mut n = NodeEvidence {
            processes: Some(Processes {
                shims: vec![shim(1, Some(true)), shim(1, Some(true))],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(orphaned_shims(&n).is_empty());
        n.processes
            .as_mut()
            .unwrap()
            .shims
            .push(shim(0, Some(false)));
        let f = orphaned_shims(&n);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].summary.starts_with("1 of 3"), "{}", f[0].summary);
        assert!(f[0].remediation.as_deref().unwrap().contains("never kill"));
    }

    #[test]
    fn recent_hung_tasks_of_the_runtime_are_critical_old_ones_are_history() {
        let event = |at, subject: Option<&str>| KernelEvent {
            kind: KernelEventKind::HungTask,
            at_unix_ms: at,
            usec_since_boot: 0,
            process: Some("containerd".into()),
            pid: Some(77),
            subject: subject.map(String::from),
            device: None,
            message: "INFO: task containerd:77 blocked for more than 120 seconds.".into(),
        };
        let mut n = NodeEvidence {
            finished_at_unix_ms: 3_600_000,
            kernel_log: Some(KernelLog {
                readable: true,
                events: vec![event(0, Some("runtime"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(hung_tasks(&n).is_empty(), "an hour old");
        n.kernel_log.as_mut().unwrap().events = vec![event(3_500_000, Some("runtime"))];
        let f = hung_tasks(&n);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].summary.contains("containerd:77"), "{}", f[0].summary);
        n.kernel_log.as_mut().unwrap().events = vec![event(3_500_000, None)];
        assert_eq!(hung_tasks(&n)[0].severity, Severity::Warning);
    }

    #[test]
    fn certificates_on_disk_near_expiry_follow_the_mixin_thresholds() {
        let cert = |seconds_left: i64| CertificateFile {
            role: "serving".into(),
            path: "/var/lib/kubelet/pki/kubelet-server-current.pem".into(),
            exists: true,
            certificates: vec![CertificateInfo {
                subject: "CN=system:node:a".into(),
                issuer: "CN=kubernetes".into(),
                serial_hex: "01".into(),
                sans: vec![],
                not_before_unix_ms: 0,
                not_after_unix_ms: 0,
                seconds_left,
                expired: seconds_left < 0,
                not_yet_valid: false,
                is_ca: false,
            }],
            ..Default::default()
        };
        let with = |client: i64, serving: i64| NodeEvidence {
            certificates: Some(Certificates {
                client: Some(cert(client)),
                serving: Some(cert(serving)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(certificates_expiring(&with(30 * 86400, 30 * 86400)).is_empty());
        let f = certificates_expiring(&with(3 * 86400, 3600));
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].id, FindingId::NodeCertExpiring(CertRole::Client));
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[1].severity, Severity::Critical);
        // An expired client certificate is node-certificate-expired's; an expired serving one is
        // here.
        let f = certificates_expiring(&with(-10, -10));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, FindingId::NodeCertExpiring(CertRole::Serving));
    }

    #[test]
    fn a_kernel_log_the_agent_could_not_read_names_the_capability() {
        let n = NodeEvidence {
            kernel_log: Some(KernelLog {
                readable: false,
                error: Some("cannot open /host/dev/kmsg: Operation not permitted; syslog(2) refused too: Operation not permitted (the agent needs CAP_SYSLOG)".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = agent_access(&n);
        assert_eq!(f[0].severity, Severity::Unknown);
        assert!(f[0].evidence[0].contains("CAP_SYSLOG"), "{f:#?}");
        assert!(agent_access(&NodeEvidence::default()).is_empty());
    }

    #[test]
    fn clock_skew_beyond_the_signers_backdate_is_critical() {
        let node = |sync, skew| NodeEvidence {
            clock: Some(Clock {
                ntp_synchronized: sync,
                clock_state: "TIME_OK".into(),
                api_server_skew_ms: skew,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(clock(&node(true, Some(800)))[0].severity, Severity::Ok);
        // Not disciplined, but agreeing with the API server now (this machine: no NTP daemon).
        assert_eq!(clock(&node(false, Some(800)))[0].severity, Severity::Info);
        assert_eq!(clock(&node(false, None))[0].severity, Severity::Warning);
        assert_eq!(
            clock(&node(true, Some(-30_000)))[0].severity,
            Severity::Warning
        );
        assert_eq!(
            clock(&node(true, Some(600_000)))[0].severity,
            Severity::Critical
        );
    }
}
