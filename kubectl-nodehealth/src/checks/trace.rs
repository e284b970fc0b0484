//! eBPF attribution: where slow relists and slow CRI calls spend their time, judged from what the
//! agent's trace measured (its per-second thread states, the kubelet's CRI calls on its socket)
//! and from the kubelet's own metrics. The agent only measures; this is the judgement, and it is
//! pure, so `--from-bundle` replays it.
//!
//! The decision, in the seed's order: does the runtime explain the relists' time (the share of a
//! relist spent in the runtime's list calls)? If so, why is the runtime slow — its threads
//! waiting for a CPU, for block I/O, or neither (it holds the calls: a lock, a proxy, a hung
//! peer)? If not, the time is the kubelet's: starved of CPU, or spent inside it.

use std::collections::{BTreeMap, BTreeSet};

use nodehealth_proto::node::{
    CallOutcome, NodeEvidence, ThreadStateTimes, Trace, TraceCriCall, TraceSecond,
};
use serde::{Deserialize, Serialize};

use super::pleg::{RelistTime, relist_time};
use crate::relists::RelistWindow;

/// Run-queue or I/O wait, in thread-time per wall time, from which it counts as a cause: 10% of
/// one thread's time, i.e. 100 ms of waiting per second of slow calls.
pub const DOMINANT_WAIT_SHARE: f64 = 0.10;

/// The runtime's threads waiting on block I/O for this much thread-time per wall time of the
/// traced window make it disk-bound, whether or not one of the kubelet's calls crossed the slow
/// floor inside the window: half a thread blocked all the time. A healthy runtime's I/O wait in a
/// window is ~0 (its writes are bolt commits of a few ms, when pods change); on the local
/// cluster's disk-slow fault (10 write IOPS) it measured 1.2 (12 s in a 10 s window, fdatasync of
/// meta.db) while the kubelet's slowest call in the window ranged from 0.2 s to 7.7 s.
pub const RUNTIME_DISK_BOUND_SHARE: f64 = 0.5;

/// One uninterrupted wait of a runtime thread on block I/O this long says its disk is slow: a
/// healthy disk commits the runtime's bolt transactions (an fdatasync or two) in milliseconds, a
/// busy spinning disk in tens; etcd calls an fdatasync of a second slow. Measured on the local
/// cluster's disk-slow fault (10 write IOPS), 8 windows of 10 s: the longest 0.2-5.6 s, 0.5 s or
/// more in 7 (the one at 0.2 s had the runtime in I/O wait for the whole window), while the
/// runtime's I/O-wait share ranged from 25% to 150%; the flake hunt's failed window had 20% and
/// no call past the floor, which the share alone missed.
pub const RUNTIME_LONG_IO_WAIT_MS: u64 = 500;

/// Why the runtime counts as disk-bound over the traced window.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskBound {
    /// The runtime's I/O wait, thread-time per wall time.
    pub share: f64,
    /// The device its threads waited on.
    pub device: Option<String>,
    /// Its threads' longest single I/O wait, when that is part of the reason (below
    /// [`RUNTIME_DISK_BOUND_SHARE`]).
    pub longest_wait_ns: Option<u64>,
}

impl DiskBound {
    /// "waited on block I/O for 20% of the traced window (one wait 1.9 s long)".
    pub fn words(&self) -> String {
        format!(
            "waited on block I/O for {:.0}% of the traced window{}",
            self.share * 100.0,
            self.longest_wait_ns
                .map(|ns| format!(" (one wait {:.1} s long)", ns as f64 / 1e9))
                .unwrap_or_default()
        )
    }
}

/// The runtime is disk-bound over the window: its threads waited on block I/O for half of it or
/// more ([`RUNTIME_DISK_BOUND_SHARE`]), or for a tenth of it or more ([`DOMINANT_WAIT_SHARE`])
/// with one wait of [`RUNTIME_LONG_IO_WAIT_MS`] or longer (a slow disk the window's few writes
/// met: many short waits are busy, one long one is slow).
pub fn runtime_disk_bound(trace: &Trace) -> Option<DiskBound> {
    if !trace.attached {
        return None;
    }
    let (_, share) = wait_shares(trace, &[], Some("runtime"))?;
    let longest = trace
        .stalls
        .iter()
        .filter(|s| s.kind == "ioWait" && s.owner == "runtime")
        .map(|s| s.duration_ns)
        .max()
        .unwrap_or(0);
    let longest_wait_ns = if share >= RUNTIME_DISK_BOUND_SHARE {
        None
    } else if share >= DOMINANT_WAIT_SHARE && longest >= RUNTIME_LONG_IO_WAIT_MS * 1_000_000 {
        Some(longest)
    } else {
        return None;
    };
    Some(DiskBound {
        share,
        device: io_wait_device(trace),
        longest_wait_ns,
    })
}

/// A call to the runtime this long is slow whatever the relists do (the runtime's answer to the
/// `time crictl ps` of the guide: a healthy runtime lists in milliseconds; a second is far past
/// anything a healthy node shows, and below the 3.05 s bucket the kubelet's metrics can show).
pub const CRI_SLOW_CALL_MS: u64 = 1000;

/// CRI methods whose calls last as long as the work they ask for, not as long as the runtime
/// takes to answer: an image pull, a stop that waits out the container's grace period, an exec
/// probe that runs the probe's command, the kubelet's container-event stream. Their length says
/// nothing about the runtime's health.
const HELD_BY_DESIGN: [&str; 5] = [
    "PullImage",
    "StopContainer",
    "StopPodSandbox",
    "ExecSync",
    "GetContainerEvents",
];

/// A lone slow call whose method is not decoded is only the runtime's slowness if the runtime
/// was slow to answer others too: this many calls that started after it and were answered under
/// the floor before it ended say the runtime was answering.
const PROMPT_LATER_CALLS: usize = 2;

/// The kubelet's traced CRI calls that took at least `threshold_ns` because the runtime was slow
/// to answer (in-flight ones included, each once), longest first; and the one call left out
/// because it was alone in being slow while the runtime answered the calls after it promptly
/// (its method not decoded: pulls, stops and exec probes look like that).
pub fn runtime_slow_calls(
    trace: &Trace,
    threshold_ns: u64,
) -> (Vec<&TraceCriCall>, Option<&TraceCriCall>) {
    let mut seen = BTreeSet::new();
    let slow: Vec<&TraceCriCall> = trace
        .cri
        .slowest
        .iter()
        .chain(&trace.cri.in_flight)
        .filter(|c| c.duration_ns >= threshold_ns)
        .filter(|c| seen.insert((c.fd, c.stream, c.tid, c.start_unix_ms)))
        .filter(|c| {
            !c.method
                .as_deref()
                .and_then(|m| m.rsplit('/').next())
                .is_some_and(|m| HELD_BY_DESIGN.contains(&m))
        })
        .collect();
    if let [lone] = slow[..]
        && lone.method.is_none()
    {
        let end = lone.end_unix_ms();
        // The runtime waiting on the disk while it lasted: plausibly a write (create, stop,
        // remove) waiting on a slow disk, the runtime's slowness after all.
        let runtime_io = wait_shares(trace, &[(lone.start_unix_ms, end)], Some("runtime"))
            .is_some_and(|(_, io)| io >= DOMINANT_WAIT_SHARE);
        if runtime_io || runtime_disk_bound(trace).is_some() {
            return (slow, None);
        }
        let prompt = trace
            .cri
            .slowest
            .iter()
            .filter(|c| {
                c.end == "response"
                    && c.start_unix_ms > lone.start_unix_ms
                    && c.duration_ns < threshold_ns
                    && c.end_unix_ms() <= end
            })
            .count();
        if prompt >= PROMPT_LATER_CALLS {
            return (Vec::new(), Some(lone));
        }
    }
    (slow, None)
}

/// A traced call counts as part of a relist's slowness from this share of a relist's mean
/// duration on: one of the two calls a relist makes, taking a real part of it.
const CALL_SHARE_OF_RELIST: f64 = 0.25;

/// Where the time went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
pub enum Attribution {
    /// The threads waited for a CPU more than anything else.
    CpuStarvation,
    /// The threads waited for block I/O more than anything else; the device they waited on most.
    DiskIowait {
        /// `major:minor`.
        device: Option<String>,
    },
    /// The runtime held the calls while its threads were neither runnable nor in I/O wait.
    CriSocketStall,
    /// Relists slow while the runtime answered fast, with no CPU or I/O wait to explain it.
    KubeletInternal,
    /// Nothing measured explains it (or there was no trace).
    Unknown,
}

impl Attribution {
    /// The cause vocabulary's name (`verdict.causes[].attribution`).
    pub fn id(&self) -> &'static str {
        match self {
            Attribution::CpuStarvation => "cpu-starvation",
            Attribution::DiskIowait { .. } => "disk-iowait",
            Attribution::CriSocketStall => "cri-socket-stall",
            Attribution::KubeletInternal => "kubelet-internal",
            Attribution::Unknown => "unknown",
        }
    }
}

/// The answer with the sentence that says why.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed {
    /// The attribution.
    pub attribution: Attribution,
    /// One evidence line.
    pub why: String,
}

/// Node-clock intervals `[start, end)` (Unix ms).
type Intervals = Vec<(i64, i64)>;

/// The runtime's and the kubelet's waits over the seconds that overlap `slow` (all seconds when
/// `slow` is empty), as shares of the wall time: `(run-queue, I/O wait)`.
fn wait_shares(trace: &Trace, slow: &[(i64, i64)], owner: Option<&str>) -> Option<(f64, f64)> {
    let overlaps = |sec: &TraceSecond| {
        let end = sec.start_unix_ms + sec.duration_ms as i64;
        slow.is_empty() || slow.iter().any(|(a, b)| sec.start_unix_ms < *b && *a < end)
    };
    let mut wall_ms = 0u64;
    let mut seen = BTreeSet::new();
    let mut times = ThreadStateTimes::default();
    for sec in trace.seconds.iter().filter(|s| overlaps(s)) {
        if owner.is_some_and(|o| o != sec.owner) {
            continue;
        }
        times.add(&sec.times);
        // Wall time counts once per second, however many processes share it.
        if seen.insert(sec.start_unix_ms) {
            wall_ms += sec.duration_ms;
        }
    }
    let wall_ns = (wall_ms * 1_000_000) as f64;
    (wall_ns > 0.0).then(|| {
        (
            times.run_queue_ns as f64 / wall_ns,
            times.io_wait_ns as f64 / wall_ns,
        )
    })
}

/// The device the threads waited on: the one the files of the sampled I/O waits live on (most
/// samples), else the one with the most bio time among the bios they submitted.
pub fn io_wait_device(trace: &Trace) -> Option<String> {
    let mut by_device: BTreeMap<&str, u32> = BTreeMap::new();
    for w in &trace.io_waits {
        if let Some(d) = &w.device {
            *by_device.entry(d).or_default() += w.samples;
        }
    }
    by_device
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d.to_string())
        .or_else(|| {
            trace
                .devices
                .iter()
                .max_by_key(|d| d.total_latency_ns)
                .map(|d| d.device.clone())
        })
}

/// What dominated the waits over `slow`: CPU, disk, or nothing measured (`None`).
fn dominant_wait(trace: &Trace, slow: &[(i64, i64)], owner: Option<&str>) -> Option<Attribution> {
    let (runq, io) = wait_shares(trace, slow, owner)?;
    if runq >= DOMINANT_WAIT_SHARE && runq >= io {
        Some(Attribution::CpuStarvation)
    } else if io >= DOMINANT_WAIT_SHARE {
        Some(Attribution::DiskIowait {
            device: io_wait_device(trace),
        })
    } else {
        None
    }
}

/// Why the runtime was slow over these node-clock intervals: its threads (and the kubelet's)
/// waited for a CPU, for block I/O, or for neither — then the runtime held the calls. `Unknown`
/// without an attached trace.
pub fn runtime_slow_because(trace: &Trace, slow: &[(i64, i64)]) -> Attribution {
    if !trace.attached {
        return Attribution::Unknown;
    }
    dominant_wait(trace, slow, None).unwrap_or(Attribution::CriSocketStall)
}

/// The kubelet's traced list calls per relist: mean ListPodSandbox + mean ListContainers over
/// the window, seconds.
pub fn traced_runtime_seconds_per_relist(trace: &Trace) -> Option<f64> {
    let mean = |name: &str| {
        trace
            .cri
            .methods
            .iter()
            .filter(|m| m.method.as_deref().is_some_and(|s| s.ends_with(name)))
            .filter(|m| m.calls > 0)
            .map(|m| m.total_ns as f64 / m.calls as f64 / 1e9)
            .next()
    };
    Some(mean("/ListPodSandbox")? + mean("/ListContainers")?)
}

/// The agent's own list calls per relist (the `time crictl ps` of the guide): the two calls'
/// medians, seconds.
fn agent_runtime_seconds_per_relist(n: &NodeEvidence) -> Option<f64> {
    let cri = n.cri.as_ref()?;
    let p50 = |name: &str| {
        cri.operations
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.p50_ms)
            .map(|ms| ms / 1e3)
    };
    Some(p50("ListPodSandbox")? + p50("ListContainers")?)
}

/// The runtime's share of a relist, from the best measurement available: the kubelet's own calls
/// traced on its socket, its runtime-operation metrics, or the agent's timed calls. With where it
/// came from.
pub fn runtime_share(n: &NodeEvidence, relists: &RelistWindow) -> Option<(f64, &'static str)> {
    let relist = relists.mean_relist_seconds;
    if relist <= 0.0 {
        return None;
    }
    let traced = n
        .trace
        .as_ref()
        .filter(|t| t.cri.traced)
        .and_then(traced_runtime_seconds_per_relist)
        .map(|s| (s / relist, "the kubelet's list calls traced on its socket"));
    traced
        .or_else(|| {
            relists
                .runtime_share()
                .map(|s| (s, "the kubelet's runtime-operation metrics"))
        })
        .or_else(|| {
            agent_runtime_seconds_per_relist(n)
                .map(|s| (s / relist, "the agent's timed list calls"))
        })
}

/// The intervals of the runtime's slow answers: the kubelet's traced calls that took a real part
/// of a relist (relative to the mean relist when relists are measured, else the fixed floor) and
/// the agent's own calls that timed out or took past the floor.
fn slow_calls(n: &NodeEvidence, relists: Option<&RelistWindow>) -> Intervals {
    let floor_ns = CRI_SLOW_CALL_MS * 1_000_000;
    let relative_ns = relists
        .filter(|w| crate::checks::pleg::relists_degraded(w))
        .map(|w| (w.mean_relist_seconds * CALL_SHARE_OF_RELIST * 1e9) as u64);
    let threshold_ns = relative_ns.map_or(floor_ns, |r| r.min(floor_ns));
    let mut slow: Intervals = Vec::new();
    if let Some(t) = &n.trace {
        for c in runtime_slow_calls(t, threshold_ns).0 {
            slow.push((c.start_unix_ms, c.end_unix_ms()));
        }
    }
    if let Some(cri) = &n.cri {
        let threshold_ms = threshold_ns as f64 / 1e6;
        for s in cri.operations.iter().flat_map(|o| &o.samples) {
            if s.outcome == CallOutcome::Timeout || s.latency_ms >= threshold_ms {
                slow.push((s.at_unix_ms, s.at_unix_ms + s.latency_ms as i64));
            }
        }
    }
    slow
}

/// Why relists or CRI calls were slow. `relists` is the window's relists when they were slow
/// (the degraded tier or worse); `relists_stuck` is a relist that has not finished. `None` when
/// nothing was slow or there is no trace.
pub fn attribute(
    n: &NodeEvidence,
    relists: Option<&RelistWindow>,
    relists_slow: bool,
) -> Option<Attributed> {
    let trace = n.trace.as_ref()?;
    let slow = slow_calls(n, relists);
    if slow.is_empty() && !relists_slow {
        // No call crossed the floor in the window, but the runtime sat in I/O wait: its calls
        // that write wait on the disk (the window caught none of the slow ones, or they were
        // just under the floor).
        let bound = runtime_disk_bound(trace)?;
        let words = bound.words();
        let a = Attribution::DiskIowait {
            device: bound.device,
        };
        return Some(Attributed {
            why: format!(
                "eBPF attribution {}: no call of the kubelet's crossed {CRI_SLOW_CALL_MS} ms in the window, but the runtime's threads {words}; {}",
                a.id(),
                disk_words(trace, &a)
            ),
            attribution: a,
        });
    }
    if !trace.attached {
        return Some(Attributed {
            attribution: Attribution::Unknown,
            why: format!(
                "eBPF attribution unknown: {}",
                trace
                    .error
                    .as_deref()
                    .unwrap_or("the tracer was not attached")
            ),
        });
    }
    let share = relists.and_then(|w| runtime_share(n, w));
    let share_line = share.map(|(s, from)| {
        format!(
            "the runtime's list calls take {:.0}% of a relist (from {from})",
            (s * 100.0).min(100.0)
        )
    });
    let runtime_explains = match share {
        Some((s, _)) => relist_time(s) != RelistTime::Kubelet,
        // No relist measured (stuck, or not slow): the calls themselves are the question.
        None => !slow.is_empty(),
    };
    let (attribution, why) = if runtime_explains {
        match runtime_slow_because(trace, &slow) {
            a @ Attribution::CpuStarvation => (
                a,
                "the kubelet's and the runtime's threads waited for a CPU (run-queue wait) while the runtime's calls were slow".to_string(),
            ),
            a @ Attribution::DiskIowait { .. } => {
                let why = disk_words(trace, &a);
                (a, why)
            }
            _ => (
                Attribution::CriSocketStall,
                "the runtime's calls were slow while its threads were neither waiting for a CPU nor for I/O: the runtime holds the calls (a lock, a slow list inside it, or a proxy in the path)".to_string(),
            ),
        }
    } else {
        match dominant_wait(trace, &slow, Some("kubelet")) {
            Some(a @ Attribution::CpuStarvation) => (
                a,
                "relists were slow while the runtime answered fast, and the kubelet's threads waited for a CPU: the kubelet is starved".to_string(),
            ),
            Some(a @ Attribution::DiskIowait { .. }) => {
                let why = disk_words(trace, &a);
                (a, why)
            }
            _ => (
                Attribution::KubeletInternal,
                "relists were slow while the runtime answered fast and no CPU or I/O wait explains it: the time goes inside the kubelet".to_string(),
            ),
        }
    };
    let excused = runtime_slow_calls(trace, CRI_SLOW_CALL_MS * 1_000_000).1;
    let kubelet_call = runtime_slow_calls(trace, 0)
        .0
        .into_iter()
        .find(|c| Some(*c) != excused)
        .filter(|c| !slow.is_empty() && c.duration_ns > 0)
        .map(|c| {
            format!(
                "the kubelet's slowest CRI call on its socket: {} {:.2} s ({})",
                c.method.as_deref().unwrap_or("(method not decoded)"),
                c.duration_ns as f64 / 1e9,
                c.end
            )
        });
    let mut line = format!("eBPF attribution {}: {why}", attribution.id());
    for extra in [share_line, kubelet_call].into_iter().flatten() {
        line.push_str("; ");
        line.push_str(&extra);
    }
    Some(Attributed {
        attribution,
        why: line,
    })
}

fn disk_words(trace: &Trace, a: &Attribution) -> String {
    let Attribution::DiskIowait { device } = a else {
        return String::new();
    };
    // What the waiting threads were blocked in, on that device (the sampler's commonest).
    let on_device = trace
        .io_waits
        .iter()
        .find(|w| w.device.is_some() && w.device == *device);
    let name = on_device
        .and_then(|w| w.device_name.as_deref())
        .map(|n| format!(", {n}"))
        .unwrap_or_default();
    let blocked = on_device
        .map(|w| {
            format!(
                "; the {} blocked in {}({}) in {} samples",
                w.owner,
                w.syscall,
                w.path.as_deref().unwrap_or("?"),
                w.samples
            )
        })
        .unwrap_or_default();
    format!(
        "the kubelet's and the runtime's threads waited for block I/O{}{blocked} while calls were slow",
        device
            .as_deref()
            .map(|d| format!(" (most on device {d}{name})"))
            .unwrap_or_default()
    )
}

/// The trace's attribution over its whole window, when it names CPU starvation: for a kubelet or
/// runtime starved of CPU while no single call or relist was measured slow.
pub fn window_attribution(n: &NodeEvidence) -> Option<Attributed> {
    let t = n.trace.as_ref().filter(|t| t.attached)?;
    (dominant_wait(t, &[], None)? == Attribution::CpuStarvation).then(|| Attributed {
        attribution: Attribution::CpuStarvation,
        why: "eBPF attribution cpu-starvation: over the whole window the kubelet's and the runtime's threads waited for a CPU more than for anything else (no single call was measured slow)".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use nodehealth_proto::node::{
        TraceCriCall, TraceCriMethod, TraceDevice, TraceIoWait, TraceStall,
    };

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

    fn call(start: i64, ms: u64, method: &str) -> TraceCriCall {
        TraceCriCall {
            method: Some(format!("/runtime.v1.RuntimeService/{method}")),
            start_unix_ms: start,
            duration_ns: ms * 1_000_000,
            end: "response".into(),
            ..Default::default()
        }
    }

    fn node(t: Trace) -> NodeEvidence {
        NodeEvidence {
            trace: Some(t),
            ..Default::default()
        }
    }

    fn relists(mean: f64) -> RelistWindow {
        RelistWindow {
            relists: 5.0,
            mean_relist_seconds: mean,
            fraction_over_1s: if mean > 1.0 { 1.0 } else { 0.0 },
            list_calls: vec![],
            reset: false,
        }
    }

    /// A runtime in I/O wait for half of the window or more is disk-bound even when no call of
    /// the kubelet's crossed the floor: attributed to the disk, with the share and the device;
    /// below half, and with the tracer not attached, nothing is said.
    #[test]
    fn a_runtime_in_io_wait_for_half_the_window_is_disk_bound_without_a_slow_call() {
        let window = |io_ms: u64| {
            let mut t = trace(
                (0..10)
                    .flat_map(|i| {
                        [
                            second("runtime", i * 1000, 1, io_ms),
                            second("kubelet", i * 1000, 1, 0),
                        ]
                    })
                    .collect(),
            );
            // The kubelet's calls in the window: all under the 1 s floor.
            t.cri.slowest = vec![
                call(2000, 880, "CreateContainer"),
                call(5000, 300, "StopPodSandbox"),
            ];
            t
        };
        for (io_ms, disk_bound) in [
            (0, false),
            (200, false),
            (490, false),
            (510, true),
            (1200, true),
        ] {
            let t = window(io_ms);
            assert_eq!(runtime_disk_bound(&t).is_some(), disk_bound, "{io_ms} ms/s");
            let a = attribute(&node(t), None, false);
            assert_eq!(a.is_some(), disk_bound, "{io_ms} ms/s: {a:?}");
            if let Some(a) = a {
                assert!(matches!(a.attribution, Attribution::DiskIowait { .. }));
                assert!(
                    a.why.contains("no call of the kubelet's crossed"),
                    "{}",
                    a.why
                );
            }
        }
        let mut detached = window(1200);
        detached.attached = false;
        assert!(runtime_disk_bound(&detached).is_none());
    }

    /// Under half the window, one long wait decides: a runtime thread blocked on the disk for
    /// half a second or more in one wait, with a tenth of the window in I/O wait, is disk-bound
    /// (the disk-slow windows the share alone missed: 20% of the window, waits of 0.9-3.4 s); many
    /// short waits are a busy runtime, and one long wait in a window otherwise free of I/O wait
    /// is not enough.
    #[test]
    fn one_long_io_wait_makes_a_runtime_disk_bound_under_half_the_window() {
        let window = |io_ms: u64, longest_ms: u64| {
            let mut t = trace(
                (0..10)
                    .map(|i| second("runtime", i * 1000, 1, io_ms))
                    .collect(),
            );
            t.stalls = vec![
                TraceStall {
                    kind: "ioWait".into(),
                    owner: "runtime".into(),
                    duration_ns: longest_ms * 1_000_000,
                    ..Default::default()
                },
                // The kubelet's waits are not the runtime's.
                TraceStall {
                    kind: "ioWait".into(),
                    owner: "kubelet".into(),
                    duration_ns: 9_000_000_000,
                    ..Default::default()
                },
                TraceStall {
                    kind: "runQueue".into(),
                    owner: "runtime".into(),
                    duration_ns: 9_000_000_000,
                    ..Default::default()
                },
            ];
            t
        };
        for (io_ms, longest_ms, bound) in [
            (205, 1900, true),
            (205, 500, true),
            (205, 490, false),
            (205, 120, false),
            (110, 2000, true),
            (90, 2000, false),
            (40, 3000, false),
            (600, 0, true),
        ] {
            let t = window(io_ms, longest_ms);
            let b = runtime_disk_bound(&t);
            assert_eq!(b.is_some(), bound, "{io_ms} ms/s, longest {longest_ms} ms");
            let a = attribute(&node(t), None, false);
            assert_eq!(a.is_some(), bound, "{io_ms} ms/s, longest {longest_ms} ms");
            if let (Some(b), Some(a)) = (b, a) {
                let said = format!("one wait {:.1} s long", longest_ms as f64 / 1e3);
                assert_eq!(a.why.contains(&said), io_ms < 500, "{}", a.why);
                assert_eq!(b.longest_wait_ns.is_some(), io_ms < 500);
            }
        }
    }

    /// Calls that last as long as their work (a pull, a stop's grace period, an exec probe) are
    /// not the runtime being slow; a lone undecoded slow call is not either while the runtime
    /// answered the calls after it promptly (measured: a 5.8 s call in flight on a healthy guest
    /// node, method not decoded, with 30 calls answered in milliseconds around it) — but it is
    /// when the calls after it hang too (a frozen runtime), when it is not alone, or when the
    /// runtime is disk-bound.
    #[test]
    fn calls_held_by_design_and_a_lone_held_call_are_not_the_runtime_being_slow() {
        let floor = CRI_SLOW_CALL_MS * 1_000_000;
        let undecoded = |start: i64, ms: u64, end: &str| TraceCriCall {
            method: None,
            stream: start as u32,
            start_unix_ms: start,
            duration_ns: ms * 1_000_000,
            end: end.into(),
            ..Default::default()
        };
        let quiet = || trace((0..10).map(|i| second("runtime", i * 1000, 1, 0)).collect());
        let slow_ids = |t: &Trace| {
            let (slow, excused) = runtime_slow_calls(t, floor);
            (
                slow.iter().map(|c| c.start_unix_ms).collect::<Vec<_>>(),
                excused.map(|c| c.start_unix_ms),
            )
        };

        for held in ["PullImage", "StopContainer", "StopPodSandbox", "ExecSync"] {
            let mut t = quiet();
            let mut pull = call(1000, 5800, held);
            pull.end = "inFlight".into();
            t.cri.slowest = vec![pull.clone(), call(2000, 20, "ListContainers")];
            t.cri.in_flight = vec![pull];
            assert_eq!(slow_ids(&t), (vec![], None), "{held}");
            assert_eq!(attribute(&node(t), None, false), None, "{held}");
        }
        // A decoded list call that long is the runtime's; so is an Exec (it only returns the
        // streaming URL).
        for method in ["ListPodSandbox", "Exec"] {
            let mut t = quiet();
            t.cri.slowest = vec![call(1000, 5800, method)];
            assert_eq!(slow_ids(&t).0, vec![1000], "{method}");
        }

        let lone = |later: Vec<TraceCriCall>| {
            let mut t = quiet();
            let held = undecoded(1000, 5800, "inFlight");
            t.cri.slowest = [vec![held.clone()], later].concat();
            t.cri.in_flight = vec![held];
            t
        };
        let prompt = vec![
            undecoded(500, 30, "response"),
            undecoded(2000, 20, "response"),
            undecoded(5000, 120, "response"),
        ];
        let t = lone(prompt.clone());
        assert_eq!(slow_ids(&t), (vec![], Some(1000)));
        assert_eq!(attribute(&node(t.clone()), None, false), None);
        let mut ev = node(t);
        ev.trace.as_mut().unwrap().cri.traced = true;
        let out = crate::checks::node::node_findings(&ev);
        let f = out
            .iter()
            .find(|f| f.id == crate::checks::FindingId::NodeKubeletCriSlow)
            .expect("the held call is said");
        assert_eq!(f.severity, crate::checks::Severity::Info, "{}", f.summary);
        assert!(f.summary.contains("5.8 s (still waiting)"), "{}", f.summary);

        // One prompt call after it is not enough to say the runtime was answering.
        assert_eq!(slow_ids(&lone(prompt[..2].to_vec())).0, vec![1000]);
        // A frozen runtime: the calls after it hang too.
        let frozen = lone(vec![
            undecoded(500, 30, "response"),
            undecoded(2000, 4800, "inFlight"),
            undecoded(3000, 3800, "inFlight"),
        ]);
        assert_eq!(slow_ids(&frozen).0, vec![1000, 2000, 3000]);
        // Two slow calls are not a lone one.
        let mut two = prompt.clone();
        two.push(undecoded(6000, 1500, "response"));
        assert_eq!(slow_ids(&lone(two)).0, vec![1000, 6000]);
        // A disk-bound runtime's lone slow call is plausibly a write waiting on the disk; so is
        // one while the runtime waited on the disk for a tenth of its length, not below.
        let mut disk = lone(prompt.clone());
        disk.seconds = (0..10)
            .map(|i| second("runtime", i * 1000, 1, 800))
            .collect();
        assert_eq!(slow_ids(&disk).0, vec![1000]);
        for (io_ms, counted) in [(0, false), (90, false), (110, true)] {
            let mut t = lone(prompt.clone());
            t.seconds = (0..10)
                .map(|i| second("runtime", i * 1000, 1, if i == 3 { io_ms * 6 } else { 0 }))
                .collect();
            assert_eq!(slow_ids(&t).0.len(), usize::from(counted), "{io_ms} ms/s");
        }
    }

    #[test]
    fn the_dominant_wait_over_the_slow_calls_names_the_cause() {
        // Seconds 0-1 quiet, 2-3 starved, 4-5 in I/O wait.
        let mut t = trace(vec![
            second("runtime", 0, 1, 0),
            second("runtime", 1000, 1, 0),
            second("runtime", 2000, 400, 10),
            second("kubelet", 2000, 300, 0),
            second("runtime", 3000, 500, 0),
            second("runtime", 4000, 5, 700),
            second("runtime", 5000, 5, 900),
        ]);
        assert_eq!(
            attribute(&node(t.clone()), None, false),
            None,
            "nothing slow"
        );
        t.cri.slowest = vec![call(2100, 1800, "ListPodSandbox")];
        assert_eq!(
            attribute(&node(t.clone()), None, false)
                .unwrap()
                .attribution,
            Attribution::CpuStarvation
        );
        t.cri.slowest = vec![call(4000, 1500, "ListPodSandbox")];
        assert_eq!(
            attribute(&node(t.clone()), None, false)
                .unwrap()
                .attribution,
            Attribution::DiskIowait {
                device: Some("7:1".into())
            }
        );
        // The sampled I/O waits name the device the waiting files live on, over bio time (the
        // bios a thread waits for are often not its own: writeback, the journal, blk-throttle).
        t.io_waits = vec![
            TraceIoWait {
                owner: "runtime".into(),
                syscall: "fsync".into(),
                path: Some("/var/lib/containerd/meta.db".into()),
                device: Some("8:0".into()),
                samples: 7,
                ..Default::default()
            },
            TraceIoWait {
                owner: "kubelet".into(),
                syscall: "write".into(),
                device: Some("7:1".into()),
                samples: 2,
                ..Default::default()
            },
        ];
        let a = attribute(&node(t.clone()), None, false).unwrap();
        assert_eq!(
            a.attribution,
            Attribution::DiskIowait {
                device: Some("8:0".into())
            }
        );
        assert!(
            a.why.contains("fsync(/var/lib/containerd/meta.db)"),
            "{}",
            a.why
        );
        // Slow calls while the runtime neither waited for CPU nor for I/O.
        t.cri.slowest = vec![call(0, 1999, "ListPodSandbox")];
        assert_eq!(
            attribute(&node(t), None, false).unwrap().attribution,
            Attribution::CriSocketStall
        );
        assert_eq!(Attribution::CriSocketStall.id(), "cri-socket-stall");
    }

    /// The case: `runtime-slow-list --delay 800ms` makes relists of 1.6 s out of two
    /// 0.8 s calls. No call crosses a second, yet the runtime holds most of every relist.
    #[test]
    fn sub_second_calls_that_fill_the_relist_are_the_runtime_not_the_kubelet() {
        let mut t = trace((0..5).map(|i| second("runtime", i * 1000, 2, 0)).collect());
        t.cri.traced = true;
        t.cri.slowest = vec![
            call(0, 800, "ListPodSandbox"),
            call(800, 800, "ListContainers"),
            call(2600, 800, "ListPodSandbox"),
        ];
        t.cri.methods = vec![
            TraceCriMethod {
                method: Some("/runtime.v1.RuntimeService/ListPodSandbox".into()),
                calls: 3,
                total_ns: 2_400_000_000,
                ..Default::default()
            },
            TraceCriMethod {
                method: Some("/runtime.v1.RuntimeService/ListContainers".into()),
                calls: 3,
                total_ns: 2_400_000_000,
                ..Default::default()
            },
        ];
        let a = attribute(&node(t.clone()), Some(&relists(1.6)), true).unwrap();
        assert_eq!(a.attribution, Attribution::CriSocketStall, "{}", a.why);
        assert!(a.why.contains("100% of a relist"), "{}", a.why);
        // The same relists with calls of a few ms: the time is the kubelet's.
        t.cri.slowest = vec![call(0, 3, "ListPodSandbox")];
        for m in &mut t.cri.methods {
            m.total_ns = 9_000_000;
        }
        let a = attribute(&node(t), Some(&relists(1.6)), true).unwrap();
        assert_eq!(a.attribution, Attribution::KubeletInternal, "{}", a.why);
    }

    #[test]
    fn fast_calls_with_slow_relists_are_kubelet_internal_unless_the_kubelet_is_starved() {
        let quiet = trace(vec![second("kubelet", 0, 2, 0), second("runtime", 0, 1, 0)]);
        assert_eq!(
            attribute(&node(quiet), None, true).unwrap().attribution,
            Attribution::KubeletInternal
        );
        let starved = trace(vec![second("kubelet", 0, 800, 0)]);
        assert_eq!(
            attribute(&node(starved), None, true).unwrap().attribution,
            Attribution::CpuStarvation
        );
        let mut untraced = node(Trace::default());
        untraced.trace.as_mut().unwrap().error = Some("trace unavailable: no BTF".into());
        let a = attribute(&untraced, None, true).unwrap();
        assert_eq!(a.attribution, Attribution::Unknown);
        assert!(a.why.contains("no BTF"));
    }
}
