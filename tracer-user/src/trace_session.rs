//! One tracing window: the [`Tracer`] attached to the kubelet and the runtime, sampled once a
//! second on its own thread (and every 100 ms for what its threads in I/O wait are blocked in), turned into the `trace` and `runQueue` evidence sections when the
//! window ends. Samples are kernel aggregates (per-thread totals, per-device histograms); the
//! per-second figures are differences of consecutive samples.

use std::{
    collections::HashMap,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nodehealth_proto::node::{
    RunQueue, RunQueueProcess, ThreadStateTimes, Trace, TraceCri, TraceCriCall, TraceCriMethod,
    TraceDevice, TraceProcess, TraceSecond, TraceStall,
};
use tracer_ebpf::{CriCall, CriStream, CriStreamKey, GO_CALL_FD, cri_end, state};

use crate::hpack;
use crate::io_waits::{IO_WAIT_EVERY, IoWaitSampler};
use crate::ksyms::KernelSymbols;
use crate::trace::{
    BioSubmitHook, CriCounters, CriHook, CriTarget, GO_INVOKE, SwitchHook, ThreadSample,
    TraceError, Tracer, dev_name, monotonic_ns,
};

/// CRI calls listed as the slowest, and in flight, at most.
pub const MAX_CRI_CALLS_LISTED: usize = 10;

/// Longest waits kept in the evidence.
pub const MAX_STALLS: usize = 10;
/// Waits shorter than this are not stalls.
pub const MIN_STALL_NS: u64 = 1_000_000;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Converts CLOCK_MONOTONIC ns to Unix ms on the node's clock.
#[derive(Clone, Copy)]
struct Clocks {
    unix_ms: i64,
    mono_ns: u64,
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            mono_ns: monotonic_ns(),
            unix_ms: unix_ms(),
        }
    }

    fn to_unix_ms(self, mono_ns: u64) -> i64 {
        self.unix_ms + (mono_ns as i64 - self.mono_ns as i64) / 1_000_000
    }
}

fn times(t: &ThreadSample) -> ThreadStateTimes {
    ThreadStateTimes {
        on_cpu_ns: t.on_cpu_ns,
        run_queue_ns: t.runq_ns,
        io_wait_ns: t.iowait_ns,
        sleep_ns: t.sleep_ns,
    }
}

fn minus(a: ThreadStateTimes, b: ThreadStateTimes) -> ThreadStateTimes {
    ThreadStateTimes {
        on_cpu_ns: a.on_cpu_ns.saturating_sub(b.on_cpu_ns),
        run_queue_ns: a.run_queue_ns.saturating_sub(b.run_queue_ns),
        io_wait_ns: a.io_wait_ns.saturating_sub(b.io_wait_ns),
        sleep_ns: a.sleep_ns.saturating_sub(b.sleep_ns),
    }
}

/// Per-thread samples keyed by tid.
type Sample = HashMap<u32, ThreadSample>;

fn take(tracer: &Tracer) -> Result<Sample, TraceError> {
    Ok(tracer.threads()?.into_iter().map(|t| (t.tid, t)).collect())
}

/// `(tid, tgid)` of the threads in I/O wait now.
fn in_io_wait<'a>(threads: impl Iterator<Item = &'a ThreadSample>) -> Vec<(u32, u32)> {
    threads
        .filter(|t| t.state == state::IOWAIT)
        .map(|t| (t.tid, t.tgid))
        .collect()
}

/// Sum of per-thread differences `b - a` for the threads of `pid`.
fn process_delta(a: &Sample, b: &Sample, pid: u32) -> (ThreadStateTimes, u32) {
    let mut sum = ThreadStateTimes::default();
    let mut threads = 0;
    for t in b.values().filter(|t| t.tgid == pid) {
        threads += 1;
        let before = a.get(&t.tid).map(times).unwrap_or_default();
        sum.add(&minus(times(t), before));
    }
    (sum, threads)
}

/// A running tracing window.
pub struct TraceSession {
    stop: mpsc::Sender<()>,
    last_sample: mpsc::Receiver<()>,
    handle: JoinHandle<(RunQueue, Trace)>,
}

/// A window whose last sample is taken; the sections are being assembled.
pub struct StoppedSession {
    handle: JoinHandle<(RunQueue, Trace)>,
}

impl StoppedSession {
    /// The `runQueue` and `trace` sections (the tracer is detached once they are built).
    pub fn collect(self) -> (RunQueue, Trace) {
        self.handle.join().unwrap_or_else(|_| {
            unavailable("the trace sampler thread panicked".into(), Duration::ZERO)
        })
    }
}

impl TraceSession {
    /// Attaches the tracer to `targets` (owner, pid) and starts sampling once a second. The
    /// window starts with the first sample, taken before this returns.
    pub fn start(targets: Vec<(&'static str, u32)>) -> Result<TraceSession, TraceError> {
        Self::start_with_cri(
            targets,
            Err("no kubelet given to trace".into()),
            "/proc".into(),
        )
    }

    /// [`TraceSession::start`], also tracing the kubelet's CRI calls on its socket — or saying
    /// why not (`Err(note)`).
    /// `proc` is the host's /proc (where the I/O-wait sampler reads the target threads).
    pub fn start_with_cri(
        targets: Vec<(&'static str, u32)>,
        cri: Result<CriTarget, String>,
        proc: std::path::PathBuf,
    ) -> Result<TraceSession, TraceError> {
        let mut tracer = Tracer::attach_with(cri.as_ref().ok())?;
        for (_, pid) in &targets {
            tracer.add_target(*pid)?;
        }
        let first = take(&tracer)?;
        let (stop, stopped) = mpsc::channel();
        let (sampled, last_sample) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("trace-sampler".into())
            .spawn(move || {
                let io = IoWaitSampler::new(proc);
                sample_until_stopped(tracer, targets, cri, io, first, stopped, sampled)
            })
            .expect("spawn the trace sampler thread");
        Ok(TraceSession {
            stop,
            last_sample,
            handle,
        })
    }

    /// Ends the window: returns once the last sample is taken (before stacks are symbolised and
    /// histograms read), so the window's end is known to the caller.
    pub fn stop(self) -> StoppedSession {
        let _ = self.stop.send(());
        let _ = self.last_sample.recv();
        StoppedSession {
            handle: self.handle,
        }
    }

    /// Ends the window: a last sample, the histograms, and the tracer detached.
    pub fn finish(self) -> (RunQueue, Trace) {
        self.stop().collect()
    }
}

/// The sections when tracing could not start: `trace unavailable: <why>`.
pub fn unavailable(why: String, window: Duration) -> (RunQueue, Trace) {
    let error = format!("trace unavailable: {why}");
    (
        RunQueue {
            error: Some(error.clone()),
            window_ms: window.as_millis() as u64,
            ..Default::default()
        },
        Trace {
            error: Some(error),
            window_ms: window.as_millis() as u64,
            ..Default::default()
        },
    )
}

fn sample_until_stopped(
    mut tracer: Tracer,
    targets: Vec<(&'static str, u32)>,
    cri: Result<CriTarget, String>,
    mut io: IoWaitSampler,
    first: Sample,
    stopped: mpsc::Receiver<()>,
    sampled: mpsc::Sender<()>,
) -> (RunQueue, Trace) {
    let started = Instant::now();
    let mut trace = Trace {
        attached: true,
        ..Default::default()
    };
    match tracer.bio_hook() {
        BioSubmitHook::SubmitBio => trace.bio_submit_hook = "submit_bio".into(),
        BioSubmitHook::BlockBioQueue { fentry_error } => {
            trace.bio_submit_hook = "block_bio_queue".into();
            trace.bio_submit_hook_note = Some(format!(
                "fentry refused ({fentry_error}): bios delayed by blk-throttle count from their \
                 re-issue"
            ));
        }
    }
    match tracer.switch_hook() {
        SwitchHook::PerThreadEvent => trace.switch_hook = "perf-event".into(),
        SwitchHook::SchedSwitch { perf_error } => {
            trace.switch_hook = "sched_switch".into();
            trace.switch_hook_note = Some(format!(
                "{perf_error}: the sched_switch tracepoint (tp_btf) instead, which every task's \
                 switch on the node passes through"
            ));
        }
    }
    let fail = |trace: Trace, e: TraceError| {
        let e = format!("reading the tracer's maps failed: {e}");
        let window = started.elapsed();
        let mut t = trace;
        t.error = Some(e.clone());
        t.window_ms = window.as_millis() as u64;
        (
            RunQueue {
                attached: true,
                error: Some(e),
                window_ms: t.window_ms,
                ..Default::default()
            },
            t,
        )
    };
    let mut cri_calls: Vec<CriCall> = Vec::new();
    let mut prev = first.clone();
    let mut prev_at = (Instant::now(), unix_ms());
    let mut tick = Instant::now() + Duration::from_secs(1);
    loop {
        // Between the per-second samples, a look at what the threads in I/O wait are blocked in.
        let wait = tick
            .saturating_duration_since(Instant::now())
            .min(IO_WAIT_EVERY);
        let last = !matches!(
            stopped.recv_timeout(wait),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if !last && Instant::now() < tick {
            if let Ok(threads) = tracer.threads() {
                io.sample(&in_io_wait(threads.iter()), &targets);
            }
            continue;
        }
        let now = match take(&tracer) {
            Ok(s) => s,
            Err(e) => return fail(trace, e),
        };
        io.sample(&in_io_wait(now.values()), &targets);
        let at = (Instant::now(), unix_ms());
        cri_calls.extend(tracer.cri_calls());
        for (owner, pid) in &targets {
            let (times, _) = process_delta(&prev, &now, *pid);
            trace.seconds.push(TraceSecond {
                owner: owner.to_string(),
                pid: *pid,
                start_unix_ms: prev_at.1,
                duration_ms: at.0.duration_since(prev_at.0).as_millis() as u64,
                times,
            });
        }
        prev = now;
        prev_at = at;
        tick += Duration::from_secs(1);
        if last {
            let _ = sampled.send(());
            break;
        }
    }
    let clocks = Clocks::now();
    trace.window_ms = started.elapsed().as_millis() as u64;
    let mut run_queue = RunQueue {
        attached: true,
        window_ms: trace.window_ms,
        ..Default::default()
    };
    for (owner, pid) in &targets {
        let (times, threads) = process_delta(&first, &prev, *pid);
        trace.processes.push(TraceProcess {
            owner: owner.to_string(),
            pid: *pid,
            threads,
            times,
        });
        let mut rq = RunQueueProcess {
            owner: owner.to_string(),
            pid: *pid,
            ..Default::default()
        };
        for t in prev.values().filter(|t| t.tgid == *pid && t.runq_count > 0) {
            rq.threads += 1;
            rq.waits += t.runq_count;
            rq.run_queue_wait_ns += t.runq_ns;
            rq.max_wait_ns = rq.max_wait_ns.max(t.runq_max_ns);
        }
        run_queue.processes.push(rq);
    }
    trace.stalls = stalls(&prev, &targets, clocks);
    trace.io_waits = io.finish();
    let symbols = KernelSymbols::load();
    let stacks = stall_stacks(&prev, &trace.stalls);
    for (stall, stack) in trace.stalls.iter_mut().zip(stacks) {
        if let Some(id) = stack {
            stall.kernel_stack = tracer.kernel_stack(id, symbols.as_ref());
        }
    }
    match tracer.bio_latency() {
        Ok(hist) => {
            for (key, h) in hist {
                let Some((owner, _)) = targets.iter().find(|(_, p)| *p == key.tgid) else {
                    continue;
                };
                trace.devices.push(TraceDevice {
                    owner: owner.to_string(),
                    pid: key.tgid,
                    device: dev_name(key.dev),
                    bios: h.count,
                    bytes: h.bytes,
                    total_latency_ns: h.total_ns,
                    max_latency_ns: h.max_ns,
                    latency_us_log2: h
                        .slots
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .map(|(i, c)| (if i == 0 { 0 } else { 1u64 << i }, *c))
                        .collect(),
                });
            }
            trace
                .devices
                .sort_by_key(|d| std::cmp::Reverse(d.total_latency_ns));
        }
        Err(e) => trace.error = Some(format!("reading the bio histograms failed: {e}")),
    }
    trace.cri = match &cri {
        Ok(target) => {
            cri_calls.extend(tracer.cri_calls());
            let now_ns = monotonic_ns();
            match (tracer.cri_in_flight(), tracer.cri_counters()) {
                (Ok(in_flight), Ok(counters)) => {
                    let mut section = cri_section(
                        target,
                        &cri_calls,
                        &in_flight,
                        counters,
                        |ns| clocks.to_unix_ms(ns),
                        now_ns,
                    );
                    match tracer.cri_hook() {
                        Some(CriHook::Uprobe { returns }) => {
                            section.hook = "uprobe".into();
                            section.hook_note = Some(format!(
                                "{GO_INVOKE}: its entry and {returns} return instruction(s)"
                            ));
                        }
                        Some(CriHook::Syscalls { uprobe_error }) => {
                            section.hook = "syscalls".into();
                            section.hook_note = Some(format!("uprobes not used: {uprobe_error}"));
                        }
                        None => {}
                    }
                    section
                }
                (Err(e), _) | (_, Err(e)) => TraceCri {
                    traced: true,
                    note: Some(format!("reading the CRI call maps failed: {e}")),
                    ..Default::default()
                },
            }
        }
        Err(note) => TraceCri {
            note: Some(note.clone()),
            ..Default::default()
        },
    };
    drop(tracer);
    (run_queue, trace)
}

/// The `trace.cri` section from the calls the kernel reported: methods decoded per connection in
/// the order the requests were written (HPACK state builds up in that order), totals per method,
/// the slowest calls and those still in flight.
pub fn cri_section(
    target: &CriTarget,
    finished: &[CriCall],
    in_flight: &[(CriStreamKey, CriStream)],
    counters: CriCounters,
    to_unix_ms: impl Fn(u64) -> i64,
    now_ns: u64,
) -> TraceCri {
    let end_name = |e: u32| match e {
        cri_end::RESPONSE => "response",
        cri_end::RESET_BY_RUNTIME => "resetByRuntime",
        cri_end::CANCELLED => "cancelled",
        cri_end::ERROR => "error",
        _ => "unknown",
    };
    // (key, stream, end) for every call, in the order its request was written on its fd.
    type Seen<'a> = (CriStreamKey, CriStream, Option<(u64, &'a str)>);
    let mut all: Vec<Seen> = finished
        .iter()
        .map(|c| (c.key, c.stream, Some((c.end_ns, end_name(c.end)))))
        .chain(in_flight.iter().map(|(k, s)| (*k, *s, None)))
        .collect();
    all.sort_by_key(|(k, s, _)| (k.fd, s.start_ns, k.stream));
    let mut connections: HashMap<u32, hpack::Connection> = HashMap::new();
    let mut calls = Vec::with_capacity(all.len());
    for (key, stream, end) in &all {
        let len = (stream.hdr_len as usize).min(stream.hdr.len());
        let method = if key.fd == GO_CALL_FD {
            // Seen by the uprobes: the method name itself.
            std::str::from_utf8(&stream.hdr[..len])
                .ok()
                .map(str::to_string)
        } else {
            connections
                .entry(key.fd)
                .or_default()
                .request_path(&stream.hdr[..len], stream.hdr_total <= stream.hdr_len)
        };
        let (end_ns, end) = end.unwrap_or((now_ns, "inFlight"));
        // The uprobe path has no socket and no HTTP/2 stream: 0 for both.
        let (fd, stream_id) = if key.fd == GO_CALL_FD {
            (0, 0)
        } else {
            (key.fd, key.stream)
        };
        calls.push(TraceCriCall {
            method,
            fd,
            stream: stream_id,
            tid: stream.tid,
            start_unix_ms: to_unix_ms(stream.start_ns),
            duration_ns: end_ns.saturating_sub(stream.start_ns),
            end: end.to_string(),
        });
    }
    let mut methods: Vec<TraceCriMethod> = Vec::new();
    for c in calls.iter().filter(|c| c.end != "inFlight") {
        let m = match methods.iter_mut().find(|m| m.method == c.method) {
            Some(m) => m,
            None => {
                methods.push(TraceCriMethod {
                    method: c.method.clone(),
                    ..Default::default()
                });
                methods.last_mut().expect("just pushed")
            }
        };
        m.calls += 1;
        m.total_ns += c.duration_ns;
        m.max_ns = m.max_ns.max(c.duration_ns);
        m.failed += (c.end != "response") as u64;
    }
    methods.sort_by_key(|m| std::cmp::Reverse(m.total_ns));
    let mut in_flight: Vec<TraceCriCall> = calls
        .iter()
        .filter(|c| c.end == "inFlight")
        .cloned()
        .collect();
    in_flight.sort_by_key(|c| c.start_unix_ms);
    in_flight.truncate(MAX_CRI_CALLS_LISTED);
    let finished_count = calls.iter().filter(|c| c.end != "inFlight").count() as u64;
    let mut slowest = calls;
    slowest.sort_by_key(|c| std::cmp::Reverse(c.duration_ns));
    slowest.truncate(MAX_CRI_CALLS_LISTED);
    TraceCri {
        traced: true,
        note: None,
        kubelet_pid: target.kubelet,
        hook: String::new(),
        hook_note: None,
        fds: target.fds.clone(),
        calls: finished_count,
        methods,
        slowest,
        in_flight,
        desyncs: counters.desyncs,
        unmatched: counters.unmatched,
        lost: counters.lost,
    }
}

/// The stack id recorded for each stall: where an I/O wait switched out, where a run-queue wait
/// was preempted (none for one that began with a wake-up).
fn stall_stacks(sample: &Sample, stalls: &[TraceStall]) -> Vec<Option<u32>> {
    stalls
        .iter()
        .map(|s| {
            let t = sample.get(&s.tid)?;
            let id = match s.kind.as_str() {
                "ioWait" => t.iowait_max_stack,
                "runQueue" => t.runq_max_stack,
                _ => tracer_ebpf::NO_STACK,
            };
            (id != tracer_ebpf::NO_STACK).then_some(id)
        })
        .collect()
}

/// Each thread's longest run-queue and I/O wait, longest first.
fn stalls(sample: &Sample, targets: &[(&'static str, u32)], clocks: Clocks) -> Vec<TraceStall> {
    let mut out = Vec::new();
    for t in sample.values() {
        let Some((owner, _)) = targets.iter().find(|(_, p)| *p == t.tgid) else {
            continue;
        };
        for (kind, ns, at, st) in [
            ("runQueue", t.runq_max_ns, t.runq_max_at_ns, state::RUNNABLE),
            ("ioWait", t.iowait_max_ns, t.iowait_max_at_ns, state::IOWAIT),
        ] {
            if ns < MIN_STALL_NS {
                continue;
            }
            out.push(TraceStall {
                kind: kind.into(),
                owner: owner.to_string(),
                pid: t.tgid,
                tid: t.tid,
                duration_ns: ns,
                ended_at_unix_ms: clocks.to_unix_ms(at),
                ongoing: t.state == st && t.state_for_ns == ns,
                kernel_stack: Vec::new(),
            });
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.duration_ns));
    out.truncate(MAX_STALLS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tid: u32, tgid: u32, runq: u64, io: u64) -> ThreadSample {
        ThreadSample {
            tid,
            tgid,
            runq_ns: runq,
            iowait_ns: io,
            runq_max_ns: runq,
            iowait_max_ns: io,
            runq_max_at_ns: 2_000_000_000,
            iowait_max_at_ns: 3_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_tracer_that_cannot_start_says_why_in_both_sections() {
        let (rq, trace) = unavailable(TraceError::NotBuilt.to_string(), Duration::from_secs(2));
        let why = "trace unavailable: this build has no eBPF object (built with AYA_BUILD_SKIP=1)";
        assert_eq!(trace.error.as_deref(), Some(why));
        assert_eq!(rq.error.as_deref(), Some(why));
        assert!(!trace.attached && !rq.attached);
        assert_eq!(trace.window_ms, 2000);
    }

    #[test]
    fn per_process_deltas_and_longest_stalls() {
        let a: Sample = [(1, sample(1, 100, 10, 0))].into_iter().collect();
        let b: Sample = [
            (1, sample(1, 100, 30, 5)),
            (2, sample(2, 100, 7, 0)),
            (3, sample(3, 200, 50_000_000, 9_000_000)),
        ]
        .into_iter()
        .collect();
        let (d, threads) = process_delta(&a, &b, 100);
        assert_eq!((d.run_queue_ns, d.io_wait_ns, threads), (27, 5, 2));
        let clocks = Clocks {
            unix_ms: 10_000,
            mono_ns: 1_000_000_000,
        };
        let s = stalls(&b, &[("kubelet", 100), ("runtime", 200)], clocks);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            (s[0].kind.as_str(), s[0].tid, s[0].ended_at_unix_ms),
            ("runQueue", 3, 11_000)
        );
        assert_eq!(
            (s[1].kind.as_str(), s[1].owner.as_str()),
            ("ioWait", "runtime")
        );
    }
}
