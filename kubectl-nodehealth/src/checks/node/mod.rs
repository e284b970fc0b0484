//! Checks over the node agent's evidence (the probe pod layer): what only the node can see —
//! whether the kubelet process exists, whether the runtime answers its socket, the certificate
//! on disk, the API server as the node reaches it, OOM kills in the kernel log.

use nodehealth_proto::node::{
    CallOutcome, CriState, KernelEventKind, Liveness, NodeEvidence, TraceCriCall,
};

use super::trace::CRI_SLOW_CALL_MS;
use super::{Component, Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, FailureKind, Step};

mod host;

/// Share of CFS periods throttled over the window: a warning from here on (with real time lost).
const THROTTLED_WARNING: f64 = 0.2;
/// ... and critical from here on.
const THROTTLED_CRITICAL: f64 = 0.5;
/// Run-queue wait of a process's threads, summed, as a share of the window: a warning from here
/// on when they waited longer than they ran (one thread always runnable and never running = 1.0).
const RUNQ_WARNING: f64 = 0.5;
/// ... and critical from here on.
const RUNQ_CRITICAL: f64 = 1.0;

/// A CRI call's median above this is slow (ms).
const CRI_SLOW_P50_MS: f64 = 1000.0;
/// Any CRI call above this is slow (ms).
const CRI_SLOW_MAX_MS: f64 = 3000.0;

/// OOM kills newer than this (node clock) count as happening now.
const OOM_RECENT_MS: i64 = 10 * 60 * 1000;
/// A process up this long after its last OOM kill is not in a kill loop.
const OOM_STEADY_SECONDS: f64 = 120.0;
/// A process started this long after the last OOM kill was not restarted by the kill.
const OOM_RESTART_GAP_MS: i64 = 60_000;
/// A process using this share of its memory cgroup's limit is held at the edge where the kernel
/// kills it: between two kills of a loop (16 MiB: 15.6 MiB used, killed 3-32 s after each start).
const OOM_HELD_SHARE: f64 = 0.9;
/// After a cgroup-limit kill, a process using less than this share of its limit, once past its
/// start, is not near the next kill (the limit was raised).
const OOM_RELEASED_SHARE: f64 = 0.5;
/// How long a restarted process runs before its memory use says anything (a kubelet grows to
/// its working set within seconds of starting).
const OOM_SETTLE_SECONDS: f64 = 30.0;

const STANDALONE: &str = "run the agent on the node over SSH for the node-side half: tracer-user probe --host-root / \
     --duration 10s -o json";

/// All node-layer checks.
pub fn run(e: &Evidence) -> Vec<Finding> {
    match &e.node_probe {
        Step::Skipped { .. } => Vec::new(),
        Step::Failed { failure } if failure.kind == FailureKind::Timeout => vec![
            Finding::new(
                FindingId::PodNotStarted,
                Domain::Kubelet,
                Severity::Critical,
                failure.message.clone(),
            )
            .with(format!("{} was created with nodeName set", failure.request))
            .fix(format!(
                "the kubelet or the runtime cannot start pods (PLEG, runtime, certificate or \
                 partition: see the API-side findings); {STANDALONE}"
            )),
        ],
        Step::Failed { failure } => vec![
            Finding::new(
                FindingId::NodeProbe,
                Domain::Collection,
                Severity::Unknown,
                format!("no node-side evidence: {}", failure.message),
            )
            .with(failure.request.clone())
            .fix(STANDALONE),
        ],
        Step::Collected { data } => {
            let mut out = Vec::new();
            if data.partial {
                out.push(
                    Finding::new(
                        FindingId::NodePartial,
                        Domain::Collection,
                        Severity::Info,
                        format!(
                            "node evidence is partial: {}",
                            data.stream_error.as_deref().unwrap_or("stream ended early")
                        ),
                    )
                    .with(format!("probe pod {}", data.pod)),
                );
            }
            if data.host_root_recursive_read_only == Some(false) {
                out.push(
                    Finding::new(
                        FindingId::ProbeHostMount,
                        Domain::Collection,
                        Severity::Info,
                        "the node could not mount the host root recursively read-only in the probe pod: its submounts were read-only only where the host made them so",
                    )
                    .with("recursiveReadOnly: IfPossible fell back to a plain read-only bind mount (the runtime does not support recursive read-only mounts: containerd before 2.0, or a kernel before 5.12)")
                    .fix("nothing to do for this run (the agent writes nothing); upgrade the runtime for the stronger mount"),
                );
            }
            out.extend(node_findings(&data.evidence));
            out
        }
    }
}

/// What the runtime's own cgroup (v2) says about its I/O over the window.
#[derive(Debug, Default)]
struct CgroupIo {
    /// `io.pressure` "some" stall time over the window's wall time.
    stall_share: Option<f64>,
    /// Evidence lines: the stall, the cgroup's io.max limits.
    lines: Vec<String>,
    /// The systemd unit whose cgroup limits the I/O (from its path), when io.max limits it.
    limited_unit: Option<String>,
}

fn runtime_cgroup_io(n: &NodeEvidence) -> CgroupIo {
    let mut io = CgroupIo::default();
    let Some(cg) = n
        .pressure
        .as_ref()
        .and_then(|p| p.cgroups.iter().find(|c| c.owner == "runtime"))
    else {
        return io;
    };
    if let Some(stall_us) = cg
        .psi
        .as_ref()
        .and_then(|p| p.io.as_ref())
        .and_then(|r| r.some.as_ref())
        .and_then(|l| l.window_delta_us)
        && n.window_ms > 0
    {
        let share = stall_us as f64 / (n.window_ms as f64 * 1e3);
        io.stall_share = Some(share);
        io.lines.push(format!(
            "its cgroup {} was stalled on I/O {:.1} s of the {:.1} s window (io.pressure, some)",
            cg.path,
            stall_us as f64 / 1e6,
            n.window_ms as f64 / 1e3
        ));
    }
    if !cg.io_max.is_empty() {
        io.lines.push(format!(
            "its cgroup {} limits its I/O: io.max {}",
            cg.path,
            cg.io_max.join("; ")
        ));
        io.limited_unit = cg
            .path
            .rsplit('/')
            .next()
            .filter(|u| u.ends_with(".service"))
            .map(str::to_string);
    }
    io
}

/// The kubelet or the runtime starved of CPU over the window: its cgroup's CFS throttling and,
/// when traced, its threads' run-queue wait against their on-CPU time.
fn cpu_starved(n: &NodeEvidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for component in [Component::Kubelet, Component::Runtime] {
        let owner = component.name();
        let mut lines = Vec::new();
        let mut severity = Severity::Ok;
        if let Some(cg) = n
            .pressure
            .as_ref()
            .and_then(|p| p.cgroups.iter().find(|c| c.owner == owner))
            && let (Some(periods), Some(throttled)) = (cg.window_nr_periods, cg.window_nr_throttled)
            && periods > 0
            && throttled > 0
        {
            let share = throttled as f64 / periods as f64;
            let lost_ms = cg.window_throttled_ns.unwrap_or(0) / 1_000_000;
            let real = lost_ms as f64 >= 0.1 * n.window_ms as f64;
            if real && share >= THROTTLED_CRITICAL {
                severity = Severity::Critical;
            } else if real && share >= THROTTLED_WARNING {
                severity = severity.max(Severity::Warning);
            }
            lines.push(format!(
                "CFS throttled in {throttled} of {periods} periods over the window ({lost_ms} ms held back; quota {} per {} µs, cgroup {})",
                cg.quota_us.map_or("unlimited".into(), |q| format!("{q} µs")),
                cg.period_us.map_or("?".into(), |p| p.to_string()),
                cg.path
            ));
        }
        if let Some(t) = n.trace.as_ref().filter(|t| t.attached && t.window_ms > 0)
            && let Some(p) = t.processes.iter().find(|p| p.owner == owner)
        {
            let share = p.times.run_queue_ns as f64 / (t.window_ms as f64 * 1e6);
            let waits_more = p.times.run_queue_ns > p.times.on_cpu_ns;
            if waits_more && share >= RUNQ_CRITICAL {
                severity = Severity::Critical;
            } else if waits_more && share >= RUNQ_WARNING {
                severity = severity.max(Severity::Warning);
            }
            if share >= RUNQ_WARNING {
                lines.push(format!(
                    "its {} threads waited {:.1} s for a CPU and ran {:.1} s in the {:.1} s window (eBPF)",
                    p.threads,
                    p.times.run_queue_ns as f64 / 1e9,
                    p.times.on_cpu_ns as f64 / 1e9,
                    t.window_ms as f64 / 1e3
                ));
            }
        }
        // cgroup v2: the cgroup's own CPU stall beside its CPU time (evidence for what the
        // other signals found; not yet a signal of its own — see the README's guest node notes).
        if let Some(cg) = n
            .pressure
            .as_ref()
            .and_then(|p| p.cgroups.iter().find(|c| c.owner == owner))
            && let Some(psi) = &cg.psi
            && let Some(stall_us) = psi
                .cpu
                .as_ref()
                .and_then(|r| r.some.as_ref())
                .and_then(|l| l.window_delta_us)
            && stall_us > 0
        {
            lines.push(format!(
                "its cgroup {} had a task waiting for a CPU {:.1} s of the {:.1} s window and used {} of CPU (cpu.pressure, some)",
                cg.path,
                stall_us as f64 / 1e6,
                n.window_ms as f64 / 1e3,
                psi.window_usage_us
                    .map_or("?".into(), |u| format!("{:.1} s", u as f64 / 1e6))
            ));
        }
        if !severity.is_problem() {
            continue;
        }
        let mut f = Finding::new(
            FindingId::CpuStarved(component),
            if component == Component::Kubelet {
                Domain::Kubelet
            } else {
                Domain::Runtime
            },
            severity,
            format!("the {owner} is starved of CPU"),
        );
        for l in lines {
            f = f.with(l);
        }
        out.push(f.fix(format!(
            "give the {owner} CPU: raise or remove the CPU limit (CFS quota) of its cgroup, reserve CPU for system daemons (kubeReserved/systemReserved), find what saturates the node's CPUs"
        )));
    }
    out
}

/// How to resume a paused process: SIGCONT for a stopped one, a thaw for a frozen cgroup.
pub fn resume_command(pid: u32, stopped: bool) -> String {
    if stopped {
        format!("`kill -CONT {pid}`")
    } else {
        format!(
            "thaw its cgroup (`grep -e freezer -e ^0:: /proc/{pid}/cgroup` for the path; v1: `echo THAWED > <freezer path>/freezer.state`, v2: `echo 0 > <path>/cgroup.freeze`)"
        )
    }
}

/// The kubelet process, when the agent saw it exist but not run (stopped, or in a frozen
/// cgroup): its pid and whether it is stopped (else frozen).
pub fn paused_kubelet(n: &NodeEvidence) -> Option<(u32, bool)> {
    let k = n.processes.as_ref()?.kubelet.as_ref()?;
    let stopped = k.liveness == Liveness::Stopped;
    (stopped || (k.liveness != Liveness::Gone && k.cgroup_frozen == Some(true)))
        .then_some((k.pid, stopped))
}

/// Findings from the agent's evidence (pure).
pub fn node_findings(n: &NodeEvidence) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(p) = &n.processes {
        match &p.kubelet {
            None => out.push(
                Finding::new(
                    FindingId::KubeletGone,
                    Domain::Kubelet,
                    Severity::Critical,
                    "no kubelet process on the node",
                )
                .fix("start the kubelet (systemctl start kubelet) and read why it exited (journalctl -u kubelet)"),
            ),
            Some(k) if k.liveness == Liveness::Gone => out.push(
                Finding::new(
                    FindingId::KubeletGone,
                    Domain::Kubelet,
                    Severity::Critical,
                    format!("the kubelet process (pid {}) exited during the window", k.pid),
                )
                .fix("read why it exited (journalctl -u kubelet); it may be restart-looping"),
            ),
            Some(_) if let Some((pid, stopped)) = paused_kubelet(n) => out.push(
                Finding::new(
                    FindingId::KubeletPaused,
                    Domain::Kubelet,
                    Severity::Critical,
                    format!(
                        "the kubelet process (pid {pid}) exists but does not run: {}",
                        if stopped {
                            "stopped (SIGSTOP or a tracer)"
                        } else {
                            "in a frozen cgroup"
                        }
                    ),
                )
                .fix(format!(
                    "resume it: {}; then find who paused it (a checkpoint or backup agent, \
                     `systemctl freeze`, a debugger)",
                    resume_command(pid, stopped)
                )),
            ),
            Some(k) => {
                let timeouts = n
                    .kubelet_healthz
                    .as_ref()
                    .map(|h| {
                        (
                            h.attempts.iter().filter(|a| a.timed_out).count(),
                            h.attempts.len(),
                        )
                    })
                    .unwrap_or((0, 0));
                if timeouts.1 > 0 && timeouts.0 == timeouts.1 {
                    out.push(
                        Finding::new(
                            FindingId::KubeletUnresponsive,
                            Domain::Kubelet,
                            Severity::Critical,
                            format!(
                                "the kubelet process (pid {}) is alive but its healthz did not \
                                 answer ({} of {} attempts timed out)",
                                k.pid, timeouts.0, timeouts.1
                            ),
                        )
                        .fix("look at its goroutines and CPU (starved? blocked on the runtime?)"),
                    );
                }
            }
        }
    }
    if let Some(cri) = &n.cri {
        let timeouts: u32 = cri.operations.iter().map(|o| o.timeouts).sum();
        // A relist makes both list calls: a median above 1 s each puts relists above 2 s, the
        // degraded tier (DESIGN.md, Thresholds); a single call above 3 s is the runtime-operations
        // degraded bucket.
        let slow = cri
            .operations
            .iter()
            .filter(|o| {
                o.p50_ms.is_some_and(|m| m > CRI_SLOW_P50_MS)
                    || o.max_ms.is_some_and(|m| m > CRI_SLOW_MAX_MS)
            })
            .map(|o| {
                format!(
                    "{} p50 {:.1} s, max {:.1} s",
                    o.name,
                    o.p50_ms.unwrap_or(0.0) / 1000.0,
                    o.max_ms.unwrap_or(0.0) / 1000.0
                )
            })
            .collect::<Vec<_>>();
        let (severity, summary) = match cri.state {
            CriState::Hung => (
                Severity::Critical,
                format!(
                    "the runtime does not answer CRI calls on {} ({timeouts} calls timed out \
                     after {} ms)",
                    cri.endpoint, cri.timeout_ms
                ),
            ),
            CriState::Unreachable => (
                Severity::Critical,
                format!("the runtime socket {} cannot be connected to", cri.endpoint),
            ),
            CriState::Degraded => (
                Severity::Warning,
                format!("some CRI calls failed or timed out ({timeouts} timeouts)"),
            ),
            CriState::Responding if !slow.is_empty() => (
                Severity::Warning,
                format!("CRI calls are slow: {}", slow.join(", ")),
            ),
            _ => (Severity::Ok, String::new()),
        };
        if severity != Severity::Ok {
            let last = cri
                .operations
                .iter()
                .filter_map(|o| {
                    o.samples
                        .iter()
                        .any(|s| s.outcome != CallOutcome::Ok)
                        .then_some(o.last_error.as_ref())
                        .flatten()
                        .map(|e| format!("{}: {e}", o.name))
                })
                .next();
            let kind = super::runtime::node_runtime(n);
            let unit = kind.unit_or_placeholder();
            let fix = if matches!(cri.state, CriState::Hung | CriState::Unreachable) {
                format!(
                    "the runtime is hung: capture its goroutine stacks first (containerd and CRI-O dump them on SIGUSR1), then `systemctl restart {unit}` — running containers keep running through their {} processes; do not restart the kubelet for this",
                    kind.shim()
                )
            } else {
                format!(
                    "the runtime answers, slowly: find why (its CPU, its disk: `journalctl -u {unit}`, the trace with --trace) — a slow runtime is not restarted; do not restart the kubelet for this"
                )
            };
            let mut f =
                Finding::new(FindingId::NodeCri, Domain::Runtime, severity, summary).fix(fix);
            if let Some(l) = last {
                f = f.with(l);
            }
            out.push(f);
        }
    }
    // The kubelet's own CRI calls, seen on its socket by the tracer: slow ones are the runtime
    // making the kubelet wait, whatever the agent's own calls saw.
    if let Some(trace) = n.trace.as_ref().filter(|t| t.cri.traced) {
        let said = |c: &TraceCriCall| {
            format!(
                "{} {:.1} s{}",
                c.method
                    .as_deref()
                    .and_then(|m| m.rsplit('/').next())
                    .unwrap_or("(method not decoded)"),
                c.duration_ns as f64 / 1e9,
                if c.end == "inFlight" {
                    " (still waiting)"
                } else {
                    ""
                }
            )
        };
        let (slow, excused) = super::trace::runtime_slow_calls(trace, CRI_SLOW_CALL_MS * 1_000_000);
        let slow: Vec<String> = slow.into_iter().map(said).collect();
        if let Some(c) = excused {
            out.push(Finding::new(
                FindingId::NodeKubeletCriSlow,
                Domain::Runtime,
                Severity::Info,
                format!(
                    "one CRI call of the kubelet's was held, {}, while the runtime answered the calls after it promptly: an image pull, a stop waiting out a grace period or an exec probe looks like this, so it is not counted as the runtime being slow",
                    said(c)
                ),
            ));
        }
        if !slow.is_empty() {
            out.push(
                Finding::new(
                    FindingId::NodeKubeletCriSlow,
                    Domain::Runtime,
                    Severity::Warning,
                    format!(
                        "the kubelet's own CRI calls were slow (seen on its socket): {}",
                        slow.join(", ")
                    ),
                )
                .fix(
                    "see the attribution: CPU starvation, disk I/O wait or a runtime holding calls",
                ),
            );
        }
    }
    let io = runtime_cgroup_io(n);
    let traced = n
        .trace
        .as_ref()
        .and_then(super::trace::runtime_disk_bound)
        .map(|b| {
            format!(
                "the runtime's threads {}{}: its calls that write (create, start, stop, remove) wait on the disk",
                b.words(),
                b.device
                    .as_ref()
                    .map(|d| format!(" (device {d})"))
                    .unwrap_or_default()
            )
        });
    // Without a trace, cgroup v2 says it too: the runtime's own cgroup stalled on I/O.
    let summary = traced.or_else(|| {
        io.stall_share
            .filter(|s| *s >= super::trace::RUNTIME_DISK_BOUND_SHARE)
            .map(|s| {
                format!(
                    "the runtime's cgroup was stalled on block I/O for {:.0}% of the window (its io.pressure): its calls that write (create, start, stop, remove) wait on the disk",
                    s * 100.0
                )
            })
    });
    if let Some(summary) = summary {
        let mut f = Finding::new(
            FindingId::NodeRuntimeDiskBound,
            Domain::Runtime,
            Severity::Warning,
            summary,
        );
        for l in &io.lines {
            f = f.with(l.clone());
        }
        out.push(f.fix(match &io.limited_unit {
            Some(unit) => format!(
                "the runtime's own cgroup limits its I/O (io.max above): lift the limit — `systemctl set-property --runtime {unit} IOReadIOPSMax= IOWriteIOPSMax= IOReadBandwidthMax= IOWriteBandwidthMax=` (and remove it from the unit's drop-ins), then find who set it; a disk-bound runtime is not restarted"
            ),
            None => "find what limits the runtime's disk: `iostat -x 1` on the node (await, %util of that device), a throttle or a noisy neighbour on it, the volume's IOPS limit; a disk-bound runtime is not restarted".to_string(),
        }));
    }
    out.extend(cpu_starved(n));
    out.extend(host::runtime_socket(n));
    out.extend(host::orphaned_shims(n));
    out.extend(host::zombies(n));
    out.extend(host::hung_tasks(n));
    out.extend(host::certificates_expiring(n));
    out.extend(host::agent_access(n));
    out.extend(host::clock(n));
    if let Some(client) = n.certificates.as_ref().and_then(|c| c.client.as_ref())
        && let Some(leaf) = client.certificates.first()
        && leaf.expired
    {
        out.push(
            Finding::new(
                FindingId::NodeCertExpired,
                Domain::Certificates,
                Severity::Critical,
                format!(
                    "the kubelet's client certificate on disk expired {} h ago ({})",
                    -leaf.seconds_left / 3600,
                    client.path
                ),
            )
            .fix(super::certificates::REBOOTSTRAP),
        );
    }
    if let Some(api) = &n.api_server
        && api.skipped.is_none()
    {
        let answered = api.healthz.as_ref().is_some_and(|h| h.status.is_some());
        let problem = api
            .tcp_error
            .as_ref()
            .map(|e| format!("TCP: {e}"))
            // A handshake that never completes (a path that accepts and then drops) is no
            // answer either; a certificate the agent could not verify still got one (its
            // unverified retry reaches healthz).
            .or_else(|| {
                api.tls_error
                    .as_ref()
                    .filter(|_| !answered)
                    .map(|e| format!("TLS: {e}"))
            })
            .or_else(|| {
                api.healthz
                    .as_ref()
                    .filter(|h| h.timed_out || (h.status.is_none() && h.error.is_some()))
                    .map(|h| format!("healthz: {}", h.error.as_deref().unwrap_or("timed out")))
            });
        if let Some(p) = problem {
            out.push(
                Finding::new(
                    FindingId::NodeApiUnreachable,
                    Domain::ApiConnectivity,
                    Severity::Critical,
                    format!(
                        "the node cannot reach the API server {}",
                        api.server.as_deref().unwrap_or("?")
                    ),
                )
                .with(p)
                .fix("fix the network path from the node to the API server (routes, firewall, load balancer); do not restart the kubelet"),
            );
        }
    }
    if let Some(log) = &n.kernel_log {
        // The ring buffer keeps old records: only recent kills say the kubelet is being starved
        // now (a restart loop); older ones are history.
        let now = n.finished_at_unix_ms.max(n.started_at_unix_ms);
        let kills: Vec<_> = log
            .events
            .iter()
            .filter(|e| e.kind == KernelEventKind::OomKill)
            .filter(|e| matches!(e.subject.as_deref(), Some("kubelet" | "runtime")))
            .collect();
        let recent = kills
            .iter()
            .filter(|e| now - e.at_unix_ms <= OOM_RECENT_MS)
            .count();
        if let Some(latest) = kills.iter().max_by_key(|e| e.at_unix_ms) {
            let ago_min = (now - latest.at_unix_ms) / 60_000;
            // Killed, then running steadily for minutes since: the kills are history, not
            // what is wrong now (someone gave it memory, or the pressure passed).
            let subject = latest.subject.as_deref().unwrap_or("kubelet");
            let process = n.processes.as_ref().and_then(|p| match subject {
                "runtime" => p.runtime.as_ref(),
                _ => p.kubelet.as_ref(),
            });
            // History, not a loop: the process now running was started long after the kill
            // (someone restarted it) or has run steadily for minutes since, or the memory cgroup
            // limit that killed it is gone (or far above what it uses after a while) — unless a
            // limit still holds it at the edge, which is the loop between two kills.
            let memcg_kill = latest.message.contains("Memory cgroup out of memory");
            let steady_since = process
                .filter(|p| {
                    let mem = p.memory_cgroup.as_ref();
                    let held = mem
                        .and_then(|m| m.used_share())
                        .is_some_and(|s| s >= OOM_HELD_SHARE);
                    let released = memcg_kill
                        && p.started_at_unix_ms >= latest.at_unix_ms
                        && mem.is_some_and(|m| match m.used_share() {
                            None => true,
                            Some(share) => {
                                share < OOM_RELEASED_SHARE && p.uptime_seconds >= OOM_SETTLE_SECONDS
                            }
                        });
                    p.liveness != Liveness::Gone
                        && !held
                        && (released
                            || p.uptime_seconds >= OOM_STEADY_SECONDS
                            || p.started_at_unix_ms - latest.at_unix_ms >= OOM_RESTART_GAP_MS)
                })
                .map(|p| p.uptime_seconds);
            let (severity, summary) = if let Some(up) = steady_since.filter(|_| recent > 0) {
                let limit = process
                    .and_then(|p| p.memory_cgroup.as_ref())
                    .map(|m| match m.limit_bytes {
                        None => "; its memory cgroup has no limit now".to_string(),
                        Some(l) => format!(
                            "; it uses {} of its {} MiB memory limit",
                            m.usage_bytes >> 20,
                            l >> 20
                        ),
                    })
                    .unwrap_or_default();
                (
                    Severity::Warning,
                    format!(
                        "the kernel OOM-killed the {subject} {recent} time(s) in the last 10 min, \
                         but the one running now is not in that loop (up {up:.0} s{limit})"
                    ),
                )
            } else if recent > 0 {
                (
                    Severity::Critical,
                    format!(
                        "the kernel OOM-killed the {} {recent} time(s) in the last 10 min",
                        latest.subject.as_deref().unwrap_or("kubelet")
                    ),
                )
            } else {
                (
                    Severity::Info,
                    format!(
                        "{} earlier OOM kill(s) of the {} in the kernel log (latest {ago_min} min ago)",
                        kills.len(),
                        latest.subject.as_deref().unwrap_or("kubelet")
                    ),
                )
            };
            out.push(
                Finding::new(FindingId::NodeOom, Domain::Kubelet, severity, summary)
                    .with(latest.message.clone())
                    .fix("give the kubelet and runtime memory (kubeReserved/systemReserved, evictionHard) so workloads cannot starve them"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use nodehealth_proto::node::{CriOperation, CriProbe, ProcessState, Processes};

    use super::*;

    fn kubelet(liveness: Liveness) -> ProcessState {
        ProcessState {
            pid: 42,
            comm: "kubelet".into(),
            exe: None,
            identified_by: nodehealth_proto::node::Identification::Kubelet,
            liveness,
            liveness_at_start: None,
            cgroup_frozen: Some(false),
            parent_pid: 1,
            parent_comm: None,
            started_at_unix_ms: 0,
            uptime_seconds: 10.0,
            started_after_boot_seconds: 5.0,
            rss_bytes: 1,
            threads: 1,
            cpu_seconds_total: 1.0,
            cpu_percent_window: None,
            oom_kills_in_kernel_log: 0,
            memory_cgroup: None,
        }
    }

    /// cgroup v2 without a trace: the runtime's own cgroup stalled on I/O for most of the window
    /// is the disk-bound runtime, and a limit in its own io.max is named with the systemd way to
    /// lift it; below half the window it is not.
    #[test]
    fn a_runtime_cgroup_stalled_on_io_is_disk_bound_and_its_own_limit_is_named() {
        use nodehealth_proto::node::{CgroupCpu, CgroupPsi, Pressure, PsiLine, PsiResource};
        let with = |stall_us: u64, io_max: &[&str]| NodeEvidence {
            window_ms: 10_000,
            pressure: Some(Pressure {
                cgroups: vec![CgroupCpu {
                    owner: "runtime".into(),
                    cgroup_version: 2,
                    path: "/system.slice/containerd.service".into(),
                    psi: Some(CgroupPsi {
                        io: Some(PsiResource {
                            some: Some(PsiLine {
                                window_delta_us: Some(stall_us),
                                ..Default::default()
                            }),
                            full: None,
                        }),
                        ..Default::default()
                    }),
                    io_max: io_max.iter().map(|l| l.to_string()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..NodeEvidence::default()
        };
        let bound = |n: &NodeEvidence| {
            node_findings(n)
                .into_iter()
                .find(|f| f.id == FindingId::NodeRuntimeDiskBound)
        };
        let limit = "254:0 rbps=max wbps=max riops=max wiops=10";
        let f = bound(&with(8_000_000, &[limit])).expect("disk-bound");
        assert!(f.summary.contains("80%"), "{}", f.summary);
        assert!(f.evidence.iter().any(|e| e.contains(limit)), "{f:?}");
        assert!(
            f.remediation
                .as_deref()
                .unwrap()
                .contains("systemctl set-property --runtime containerd.service IOReadIOPSMax="),
            "{f:?}"
        );
        let f = bound(&with(6_000_000, &[])).expect("disk-bound");
        assert!(
            f.remediation.as_deref().unwrap().contains("iostat"),
            "{f:?}"
        );
        assert!(bound(&with(4_000_000, &[limit])).is_none());
    }

    #[test]
    fn kubelet_gone_vs_stopped() {
        let mut n = NodeEvidence {
            processes: Some(Processes::default()),
            ..NodeEvidence::default()
        };
        assert_eq!(node_findings(&n)[0].id, FindingId::KubeletGone);
        n.processes.as_mut().unwrap().kubelet = Some(kubelet(Liveness::Stopped));
        assert_eq!(node_findings(&n)[0].id, FindingId::KubeletPaused);
        assert!(
            node_findings(&n)[0]
                .remediation
                .as_deref()
                .unwrap()
                .contains("kill -CONT")
        );
        n.processes.as_mut().unwrap().kubelet = Some(kubelet(Liveness::Sleeping));
        assert!(node_findings(&n).is_empty());
    }

    #[test]
    fn hung_runtime_is_critical() {
        let n = NodeEvidence {
            cri: Some(CriProbe {
                endpoint: "unix:///run/containerd/containerd.sock".into(),
                state: CriState::Hung,
                timeout_ms: 2000,
                interval_ms: 1000,
                window_ms: 5000,
                elapsed_ms: 7000,
                operations: vec![CriOperation {
                    name: "ListPodSandbox".into(),
                    calls: 2,
                    timeouts: 2,
                    ..CriOperation::default()
                }],
                runtime_name: None,
                runtime_version: None,
                runtime_api_version: None,
                conditions: vec![],
                sandboxes: None,
                containers: None,
            }),
            ..NodeEvidence::default()
        };
        let f = node_findings(&n);
        assert_eq!(f[0].id, FindingId::NodeCri);
        assert_eq!(f[0].severity, Severity::Critical);
    }

    #[test]
    fn list_calls_of_a_second_and_a_half_are_slow() {
        // Measured on the local cluster with runtime-slow-list --delay 1500ms.
        let op = |name: &str, p50: f64| CriOperation {
            name: name.into(),
            calls: 4,
            ok: 4,
            p50_ms: Some(p50),
            max_ms: Some(p50 + 5.0),
            ..CriOperation::default()
        };
        let n = NodeEvidence {
            cri: Some(CriProbe {
                endpoint: "unix:///run/containerd/containerd.sock".into(),
                state: CriState::Responding,
                timeout_ms: 2000,
                interval_ms: 1000,
                window_ms: 5000,
                elapsed_ms: 7000,
                operations: vec![op("Version", 3.0), op("ListPodSandbox", 1504.9)],
                runtime_name: None,
                runtime_version: None,
                runtime_api_version: None,
                conditions: vec![],
                sandboxes: None,
                containers: None,
            }),
            ..NodeEvidence::default()
        };
        let f = node_findings(&n);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].summary.contains("ListPodSandbox p50 1.5 s"),
            "{}",
            f[0].summary
        );
    }

    /// A node whose kernel log holds two memory-cgroup kills of the kubelet (20 s apart),
    /// the last `last_kill_ago_s` before the end; the kubelet now running started `up_s` ago
    /// in a memory cgroup of `limit_mib` (None: no limit) using `used_mib`.
    fn after_kills(
        last_kill_ago_s: i64,
        up_s: f64,
        limit_mib: Option<u64>,
        used_mib: u64,
    ) -> Vec<Finding> {
        let end = 1_000_000_000;
        let kill = |ago_s: i64| nodehealth_proto::node::KernelEvent {
            kind: KernelEventKind::OomKill,
            at_unix_ms: end - ago_s * 1000,
            usec_since_boot: 0,
            process: Some("kubelet".into()),
            pid: Some(7),
            subject: Some("kubelet".into()),
            device: None,
            message: "Memory cgroup out of memory: Killed process 7 (kubelet)".into(),
        };
        let mut k = kubelet(Liveness::Sleeping);
        k.uptime_seconds = up_s;
        k.started_at_unix_ms = end - (up_s * 1000.0) as i64;
        k.memory_cgroup = Some(nodehealth_proto::node::CgroupMemory {
            path: "/kubelet".into(),
            version: 1,
            limit_bytes: limit_mib.map(|m| m << 20),
            usage_bytes: used_mib << 20,
        });
        let n = NodeEvidence {
            started_at_unix_ms: end - 5000,
            finished_at_unix_ms: end,
            processes: Some(Processes {
                kubelet: Some(k),
                ..Processes::default()
            }),
            kernel_log: Some(nodehealth_proto::node::KernelLog {
                readable: true,
                events: vec![kill(last_kill_ago_s + 20), kill(last_kill_ago_s)],
                ..Default::default()
            }),
            ..NodeEvidence::default()
        };
        node_findings(&n)
            .into_iter()
            .filter(|f| f.id == FindingId::NodeOom)
            .collect()
    }

    #[test]
    fn a_kubelet_held_at_its_memory_limit_is_in_the_loop_however_long_it_has_run() {
        // 16 MiB: 15.6 MiB used between two kills; 0.9 of the limit is the edge.
        let f = after_kills(20, 18.0, Some(16), 15);
        assert_eq!(f[0].severity, Severity::Critical, "{f:#?}");
        let f = after_kills(200, 190.0, Some(16), 15);
        assert_eq!(f[0].severity, Severity::Critical, "{f:#?}");
        // Below the edge, minutes up: history.
        let f = after_kills(200, 190.0, Some(16), 13);
        assert_eq!(f[0].severity, Severity::Warning, "{f:#?}");
    }

    #[test]
    fn a_kubelet_restarted_without_the_limit_that_killed_it_is_history_at_once() {
        let f = after_kills(12, 10.0, None, 60);
        assert_eq!(f[0].severity, Severity::Warning, "{f:#?}");
        assert!(f[0].summary.contains("no limit now"), "{}", f[0].summary);
        // Started before the last kill (it is not the one that came back): still the loop.
        let f = after_kills(5, 10.0, None, 60);
        assert_eq!(f[0].severity, Severity::Critical, "{f:#?}");
    }

    #[test]
    fn a_raised_limit_counts_once_the_kubelet_has_settled_below_half_of_it() {
        // 512 MiB, 60 used: settled after 30 s, not before (a fresh kubelet is still growing).
        let f = after_kills(40, 31.0, Some(512), 60);
        assert_eq!(f[0].severity, Severity::Warning, "{f:#?}");
        let f = after_kills(40, 29.0, Some(512), 60);
        assert_eq!(f[0].severity, Severity::Critical, "{f:#?}");
        // Over half of the limit after 30 s: may still be growing into it.
        let f = after_kills(40, 31.0, Some(100), 60);
        assert_eq!(f[0].severity, Severity::Critical, "{f:#?}");
    }
}
