//! The eBPF tracer (`tracer-ebpf`) loaded into the kernel: per-thread state accounting (on-CPU,
//! run-queue wait, I/O wait, other sleep) of target processes, and the latency of the block I/O
//! they submit, per device.
//!
//! The kernel keeps per-thread totals (updated each time a target thread switches out) and
//! per-(device, process) log2 histograms; user space reads only those aggregates.
//! [`Tracer::threads`] closes the interval since each thread's last switch-out at read time with
//! the thread's schedstat (`/proc/<pid>/task/<tid>/schedstat`: on-CPU and run-queue totals, the
//! same counters the kernel side reads), so sampling once a second gives per-second figures even
//! for a thread that has been asleep, stuck in I/O or running for the whole second.

use std::collections::{HashMap, HashSet};

use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap},
    programs::{
        BtfTracePoint, FEntry, PerfEvent, ProgramError, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use tracer_ebpf::{
    BioKey, BioLatency, CriCall, CriStream, CriStreamKey, RunqWait, TargetSet, ThreadTimes,
    cri_counter, state,
};

use crate::{
    btf::{Btf, BtfError},
    gosym::{GoBinary, MappedFile},
    ksyms::KernelSymbols,
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// The block tracepoints (tp_btf: no tracefs needed).
const TRACEPOINTS: [&str; 2] = ["block_rq_complete", "block_bio_complete"];
/// The program run when a target thread switches out (a per-thread software perf event).
const SWITCH_PROGRAM: &str = "switched_out";
/// The same program on the sched_switch tracepoint (tp_btf), where perf events are refused.
const SWITCH_TRACEPOINT: &str = "sched_switch";
/// Set in the environment, the tracer uses the sched_switch tracepoint even where perf events are
/// allowed: the accuracy tests run both ways on each kernel.
pub const FORCE_SCHED_SWITCH: &str = "NODEHEALTH_TRACE_SCHED_SWITCH";
/// Where the submitter of a bio is recorded: fentry on submit_bio (the submitter's context, before
/// blk-throttle), or — where the kernel refuses fentry programs, as on this project's VMs — the
/// block_bio_queue tracepoint, which sees throttled bios only when a kernel worker re-issues them.
const SUBMIT_FENTRY: &str = "submit_bio";
/// Every syscall's entry and exit (raw_syscalls, tp_btf): the kubelet's reads and writes on its
/// CRI socket. Attached only when a kubelet is traced.
const SYSCALL_TRACEPOINTS: [&str; 2] = ["sys_enter", "sys_exit"];

/// The kubelet whose CRI calls are traced: its pid and its fds connected to the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriTarget {
    pub kubelet: u32,
    pub fds: Vec<u32>,
    /// Trace on the socket even where the uprobes are possible (tests and benchmarks compare the
    /// two; `NODEHEALTH_CRI_HOOK=syscalls` sets it in the agent).
    pub syscalls_only: bool,
}

impl CriTarget {
    /// The kubelet `kubelet` with its runtime-socket fds `fds`, traced the cheapest way the
    /// kernel and its binary allow unless `NODEHEALTH_CRI_HOOK=syscalls`.
    pub fn new(kubelet: u32, fds: Vec<u32>) -> CriTarget {
        CriTarget {
            kubelet,
            fds,
            syscalls_only: std::env::var("NODEHEALTH_CRI_HOOK").as_deref() == Ok("syscalls"),
        }
    }
}

/// The CRI tracer's counters since attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CriCounters {
    pub frames: u64,
    pub desyncs: u64,
    pub lost: u64,
    pub unmatched: u64,
}
const SUBMIT_TRACEPOINT: &str = "block_bio_queue";

/// The syscall ABI the CRI tracer needs, for the architecture this agent was built for (the eBPF
/// object is the same on every architecture; these values are written into it at load).
struct SyscallAbi {
    read: u32,
    write: u32,
    /// Offsets in `struct pt_regs` of the first two syscall arguments.
    arg0_offset: u32,
    arg1_offset: u32,
}

/// x86_64: read 0, write 1 (arch/x86/entry/syscalls/syscall_64.tbl); arguments in di and si,
/// the 15th and 14th words of `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
const SYSCALL_ABI: SyscallAbi = SyscallAbi {
    read: 0,
    write: 1,
    arg0_offset: 14 * 8,
    arg1_offset: 13 * 8,
};

/// arm64: read 63, write 64 (the generic syscall table); arguments in x0 and x1, the first two
/// words of `struct pt_regs` (`regs[31]` comes first; x0 still holds the first argument at
/// sys_enter, orig_x0 keeps it past the return).
#[cfg(target_arch = "aarch64")]
const SYSCALL_ABI: SyscallAbi = SyscallAbi {
    read: 63,
    write: 64,
    arg0_offset: 0,
    arg1_offset: 8,
};

/// The kubelet's gRPC client function every unary CRI call goes through: the uprobe path hooks
/// its entry and its return instructions.
pub const GO_INVOKE: &str = "google.golang.org/grpc.(*ClientConn).Invoke";
/// The uprobe programs at `Invoke`'s entry and at its returns.
const INVOKE_ENTRY: &str = "cri_invoke";
const INVOKE_RETURN: &str = "cri_invoke_return";

/// Where Go's register ABI (ABIInternal, go/src/cmd/compile/abi-internal.md) puts what the uprobe
/// programs read, as offsets in the uprobe context's `struct pt_regs`: `Invoke(cc, ctx, method,
/// args, reply, opts...)` — the receiver, the context interface's two words, then the method
/// string's pointer and length; the error interface's type word returned first; the goroutine in
/// its fixed register.
struct GoRegs {
    method_ptr: u32,
    method_len: u32,
    g: u32,
    err: u32,
}

/// amd64: integer registers RAX, RBX, RCX, RDI, RSI, ...; g in R14. `struct pt_regs` words: r15,
/// r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, ...
#[cfg(target_arch = "x86_64")]
const GO_REGS: GoRegs = GoRegs {
    method_ptr: 14 * 8,
    method_len: 13 * 8,
    g: 8,
    err: 10 * 8,
};

/// arm64: integer registers R0-R15; g in R28. `struct user_pt_regs`: regs[31] first.
#[cfg(target_arch = "aarch64")]
const GO_REGS: GoRegs = GoRegs {
    method_ptr: 3 * 8,
    method_len: 4 * 8,
    g: 28 * 8,
    err: 0,
};

/// How the kubelet's CRI calls are seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CriHook {
    /// uprobes on the kubelet's gRPC client (`Invoke`'s entry and `returns` return
    /// instructions): only the kubelet's calls run a program, and every method is named.
    Uprobe { returns: usize },
    /// The raw syscall tracepoints on the kubelet's socket fds (the uprobes were not possible,
    /// with the reason): every task's syscalls pass the program's first comparison.
    Syscalls { uprobe_error: String },
}

/// Attaches the uprobe programs to `kubelet`'s `Invoke`, found through its binary's function
/// table; returns how many return instructions were hooked. On failure nothing stays attached.
fn attach_cri_uprobes(ebpf: &mut Ebpf, target: &CriTarget) -> Result<usize, String> {
    if target.syscalls_only {
        return Err("the socket path was asked for (NODEHEALTH_CRI_HOOK=syscalls)".into());
    }
    let kubelet = target.kubelet;
    let exe = format!("/proc/{kubelet}/exe");
    let file = MappedFile::open(std::path::Path::new(&exe)).map_err(|e| format!("{exe}: {e}"))?;
    let binary = GoBinary::parse(&file).map_err(|e| format!("the kubelet's binary: {e}"))?;
    let points = binary
        .probe_points(GO_INVOKE)
        .map_err(|e| format!("the kubelet's binary: {e}"))?;
    if points.return_offsets.is_empty() {
        return Err(format!("no return instruction found in {GO_INVOKE}"));
    }
    let pid = std::num::NonZeroU32::new(kubelet).ok_or("no kubelet pid")?;
    let attached = (|| -> Result<(), TraceError> {
        let p: &mut UProbe = program(ebpf, INVOKE_ENTRY)?
            .try_into()
            .map_err(attach_err(INVOKE_ENTRY))?;
        p.load().map_err(attach_err(INVOKE_ENTRY))?;
        p.attach(
            UProbeAttachLocation::AbsoluteOffset(points.entry_offset),
            &exe,
            UProbeScope::OneProcess(pid),
        )
        .map_err(attach_err(INVOKE_ENTRY))?;
        let p: &mut UProbe = program(ebpf, INVOKE_RETURN)?
            .try_into()
            .map_err(attach_err(INVOKE_RETURN))?;
        p.load().map_err(attach_err(INVOKE_RETURN))?;
        for offset in &points.return_offsets {
            p.attach(
                UProbeAttachLocation::AbsoluteOffset(*offset),
                &exe,
                UProbeScope::OneProcess(pid),
            )
            .map_err(attach_err(INVOKE_RETURN))?;
        }
        Ok(())
    })();
    if let Err(e) = attached {
        for name in [INVOKE_ENTRY, INVOKE_RETURN] {
            if let Some(p) = ebpf.program_mut(name)
                && let Ok(p) = <&mut UProbe>::try_from(p)
            {
                let _ = p.unload();
            }
        }
        // The kernel's reason (an errno) is at the end of the error's source chain.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let said = s.to_string();
            if !why.ends_with(&said) {
                why.push_str(&format!(": {said}"));
            }
            source = s.source();
        }
        if matches!(&e, TraceError::Attach { source, .. } if perf_refused(source)) {
            why.push_str(
                " — Linux allows uprobes only with CAP_SYS_ADMIN (kubectl nodehealth \
                 --trace-uprobes gives it to the probe pod)",
            );
        }
        return Err(why);
    }
    Ok(points.return_offsets.len())
}

/// How the bio submitter is recorded on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BioSubmitHook {
    /// fentry on submit_bio: every bio in its submitter's context.
    SubmitBio,
    /// The block_bio_queue tracepoint (fentry refused, with the reason): bios that blk-throttle
    /// delays are re-issued by a kernel worker and not attributed to their submitter.
    BlockBioQueue { fentry_error: String },
}

/// How thread switch-outs are seen on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchHook {
    /// A context-switch perf event on each target thread: only the targets run the program.
    PerThreadEvent,
    /// The sched_switch tracepoint (the perf event refused, with the reason): every task's
    /// switch runs the program, which leaves at its first comparison for non-targets.
    SchedSwitch { perf_error: String },
}

/// perf_event_open refused for lack of privilege (not a missing process or feature).
fn perf_refused(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::EACCES | libc::EPERM)))
}

/// Why a perf event is refused, from `kernel.perf_event_paranoid`: above 2 is Debian's and
/// Ubuntu's patch, which lets only CAP_SYS_ADMIN call perf_event_open.
fn perf_refusal_reason(e: &ProgramError) -> String {
    match std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
    {
        Some(level) if level > 2 => format!(
            "perf_event_open refused ({e}): kernel.perf_event_paranoid is {level}, which \
             (Debian's and Ubuntu's kernels) allows perf events to CAP_SYS_ADMIN only"
        ),
        Some(level) => {
            format!("perf_event_open refused ({e}); kernel.perf_event_paranoid is {level}")
        }
        None => format!("perf_event_open refused ({e})"),
    }
}

/// Why the tracer could not start. Each variant says what is missing on this kernel or build.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The agent was built without its eBPF object.
    #[error("this build has no eBPF object (built with AYA_BUILD_SKIP=1)")]
    NotBuilt,
    /// Kernel BTF missing or unreadable: offsets cannot be resolved.
    #[error("kernel type information unavailable: {0}")]
    Btf(#[from] BtfError),
    /// aya could not parse the kernel BTF for program loading.
    #[error("kernel BTF unusable for tp_btf programs: {0}")]
    AyaBtf(String),
    /// The kernel refused the object, a program or a map.
    #[error("loading the eBPF object failed: {0} (needs root / CAP_BPF and CAP_PERFMON)")]
    Load(#[source] aya::EbpfError),
    /// A program failed to verify, load or attach (for a tracepoint: missing on this kernel).
    #[error("attaching {program} failed: {source}")]
    Attach {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// A target process's threads could not be listed.
    #[error("listing the threads of process {0}: {1}")]
    NoProcess(u32, #[source] std::io::Error),
    /// More target processes than the programs look at.
    #[error("at most {} target processes can be traced", tracer_ebpf::MAX_TARGETS)]
    TooManyTargets,
    /// A map operation failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
}

fn attach_err(program: &'static str) -> impl Fn(aya::programs::ProgramError) -> TraceError {
    move |source| TraceError::Attach { program, source }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, TraceError> {
    ebpf.program_mut(name).ok_or(TraceError::Attach {
        program: name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })
}

/// Loads and attaches the tp_btf program `name` (named after its tracepoint).
fn attach_tp_btf(ebpf: &mut Ebpf, name: &'static str, btf: &AyaBtf) -> Result<(), TraceError> {
    let p: &mut BtfTracePoint = program(ebpf, name)?.try_into().map_err(attach_err(name))?;
    p.load(name, btf).map_err(attach_err(name))?;
    p.attach().map_err(attach_err(name))?;
    Ok(())
}

/// Loads and attaches the fentry program `name` (named after the kernel function).
fn attach_fentry(ebpf: &mut Ebpf, name: &'static str, btf: &AyaBtf) -> Result<(), TraceError> {
    let p: &mut FEntry = program(ebpf, name)?.try_into().map_err(attach_err(name))?;
    p.load(name, btf).map_err(attach_err(name))?;
    p.attach().map_err(attach_err(name))?;
    Ok(())
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> TraceError {
    move |source| TraceError::Map { map, source }
}

/// The offsets the programs need, resolved from kernel BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.__state`, `task_struct.sched_info.run_delay`, `task_struct.se.sum_exec_runtime`.
    pub task_state: u32,
    pub task_run_delay: u32,
    pub task_exec: u32,
    /// Byte of `task_struct` holding the `in_iowait` bit, and the bit's mask in it.
    pub task_iowait_byte: u32,
    pub task_iowait_mask: u32,
    pub bio_bdev: u32,
    pub bdev_dev: u32,
    pub bio_size: u32,
    pub rq_bio: u32,
    pub bio_next: u32,
}

impl KernelOffsets {
    /// Resolves every offset from `btf`; fails naming the first missing member.
    pub fn resolve(btf: &Btf) -> Result<Self, BtfError> {
        let iowait = btf.member_offset("task_struct", "in_iowait")?;
        let iter = btf.member_offset("bio", "bi_iter")?.byte_offset();
        Ok(KernelOffsets {
            task_state: btf.member_offset("task_struct", "__state")?.byte_offset(),
            task_run_delay: btf
                .member_offset("task_struct", "sched_info")?
                .byte_offset()
                + btf.member_offset("sched_info", "run_delay")?.byte_offset(),
            task_exec: btf.member_offset("task_struct", "se")?.byte_offset()
                + btf
                    .member_offset("sched_entity", "sum_exec_runtime")?
                    .byte_offset(),
            task_iowait_byte: iowait.byte_offset(),
            // Little-endian bitfields: bit n of the struct is bit n % 8 of byte n / 8.
            task_iowait_mask: 1 << (iowait.bit_offset % 8),
            bio_bdev: btf.member_offset("bio", "bi_bdev")?.byte_offset(),
            bdev_dev: btf.member_offset("block_device", "bd_dev")?.byte_offset(),
            bio_size: iter + btf.member_offset("bvec_iter", "bi_size")?.byte_offset(),
            rq_bio: btf.member_offset("request", "bio")?.byte_offset(),
            bio_next: btf.member_offset("bio", "bi_next")?.byte_offset(),
        })
    }
}

/// Where one thread's time went since the tracer first saw it, with its current state's interval
/// closed at the time of reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSample {
    pub tid: u32,
    pub tgid: u32,
    pub on_cpu_ns: u64,
    pub runq_ns: u64,
    pub iowait_ns: u64,
    pub sleep_ns: u64,
    pub runq_count: u64,
    pub iowait_count: u64,
    pub runq_max_ns: u64,
    pub iowait_max_ns: u64,
    /// When the longest waits ended (CLOCK_MONOTONIC ns); for an ongoing wait that is longer,
    /// the time of reading.
    pub runq_max_at_ns: u64,
    pub iowait_max_at_ns: u64,
    /// Stack id (STACKS map) of the longest I/O wait, [`tracer_ebpf::NO_STACK`] if none.
    pub iowait_max_stack: u32,
    /// Stack id of the longest run-queue wait (where it was preempted), or NO_STACK.
    pub runq_max_stack: u32,
    /// The state the thread is in now ([`tracer_ebpf::state`]) and for how long.
    pub state: u32,
    pub state_for_ns: u64,
}

/// A thread's schedstat now: `se.sum_exec_runtime` and `sched_info.run_delay`, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub exec_ns: u64,
    pub run_delay_ns: u64,
}

impl SchedStat {
    /// `/proc/<pid>/task/<tid>/schedstat`: "sum_exec_runtime run_delay pcount".
    pub fn read(tgid: u32, tid: u32) -> Option<SchedStat> {
        let text = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/schedstat")).ok()?;
        let mut v = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some(SchedStat {
            exec_ns: v.next()??,
            run_delay_ns: v.next()??,
        })
    }
}

impl ThreadSample {
    /// Closes the interval since the thread's last switch-out at `now_ns` (CLOCK_MONOTONIC),
    /// with its schedstat read now (`None`: the thread is gone, or unreadable — the whole
    /// interval is then the state it switched out in).
    pub fn from_kernel(tid: u32, t: &ThreadTimes, now_ns: u64, now: Option<SchedStat>) -> Self {
        let open = now_ns.saturating_sub(t.since_ns);
        let mut s = ThreadSample {
            tid,
            tgid: t.tgid,
            on_cpu_ns: t.on_cpu_ns,
            runq_ns: t.runq_ns,
            iowait_ns: t.iowait_ns,
            sleep_ns: t.sleep_ns,
            runq_count: t.runq_count,
            iowait_count: t.iowait_count,
            runq_max_ns: t.runq_max_ns,
            iowait_max_ns: t.iowait_max_ns,
            runq_max_at_ns: t.runq_max_at_ns,
            iowait_max_at_ns: t.iowait_max_at_ns,
            iowait_max_stack: t.iowait_max_stack,
            runq_max_stack: t.runq_max_stack,
            state: t.state,
            state_for_ns: open,
        };
        if t.state == state::DEAD {
            s.state_for_ns = 0;
            return s;
        }
        // Switched in since (a finished run-queue wait, or CPU time): the interval splits as in
        // the kernel program. Else the thread is still in the state it switched out in (one
        // woken but not yet run counts as asleep until it runs).
        let (waited, ran) = match now {
            Some(n) => (
                n.run_delay_ns.saturating_sub(t.run_delay_ns).min(open),
                n.exec_ns.saturating_sub(t.exec_ns),
            ),
            None => (0, 0),
        };
        let switched_in = waited > 0 || ran > 0;
        let (waited, off) = if switched_in {
            let ran = if t.state == state::RUNNABLE {
                open - waited
            } else {
                ran.min(open - waited)
            };
            s.on_cpu_ns += ran;
            (s.state, s.state_for_ns) = (state::RUNNING, ran);
            (waited, open - waited - ran)
        } else if t.state == state::RUNNABLE {
            (open, 0)
        } else {
            (0, open)
        };
        if t.state == state::IOWAIT {
            s.iowait_ns += off;
            if off > s.iowait_max_ns {
                (s.iowait_max_ns, s.iowait_max_at_ns) = (off, now_ns);
                s.iowait_max_stack = t.off_cpu_stack;
            }
        } else {
            s.sleep_ns += off;
        }
        s.runq_ns += waited;
        if waited > s.runq_max_ns {
            (s.runq_max_ns, s.runq_max_at_ns) = (waited, now_ns);
            // Only a wait that began with a preemption has a stack.
            s.runq_max_stack = if t.state == state::RUNNABLE {
                t.off_cpu_stack
            } else {
                tracer_ebpf::NO_STACK
            };
        }
        s
    }
}

/// Each watched thread holds a perf event and a link (two fds): a runtime with hundreds of
/// threads would pass a login shell's soft limit of 1024. Raise the soft limit to the hard one
/// (for this process only).
fn raise_fd_limit() {
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: clock_gettime writes one timespec into the zeroed value it is given.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Loaded and attached tracer. Dropping it detaches every program and frees the maps.
pub struct Tracer {
    ebpf: Ebpf,
    bio_hook: BioSubmitHook,
    cri_calls: Option<RingBuf<MapData>>,
    cri_hook: Option<CriHook>,
    /// Threads with a context-switch event of their own (threads created later inherit one).
    switch_events: HashSet<u32>,
    switch_hook: SwitchHook,
}

impl Tracer {
    /// Resolves kernel offsets from BTF, loads the programs and attaches them.
    pub fn attach() -> Result<Self, TraceError> {
        Self::attach_with(None)
    }

    /// [`Tracer::attach`], also tracing the CRI calls of `cri`'s kubelet on its fds.
    pub fn attach_with(cri: Option<&CriTarget>) -> Result<Self, TraceError> {
        if EBPF_OBJECT.is_empty() {
            return Err(TraceError::NotBuilt);
        }
        let btf = Btf::from_kernel()?;
        let o = KernelOffsets::resolve(&btf)?;
        let aya_btf = AyaBtf::from_sys_fs().map_err(|e| TraceError::AyaBtf(e.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("TASK_STATE_OFFSET", &o.task_state, true)
            .override_global("TASK_RUN_DELAY_OFFSET", &o.task_run_delay, true)
            .override_global("TASK_EXEC_OFFSET", &o.task_exec, true)
            .override_global("TASK_IOWAIT_BYTE", &o.task_iowait_byte, true)
            .override_global("TASK_IOWAIT_MASK", &o.task_iowait_mask, true)
            .override_global("BIO_BDEV_OFFSET", &o.bio_bdev, true)
            .override_global("BDEV_DEV_OFFSET", &o.bdev_dev, true)
            .override_global("BIO_SIZE_OFFSET", &o.bio_size, true)
            .override_global("RQ_BIO_OFFSET", &o.rq_bio, true)
            .override_global("BIO_NEXT_OFFSET", &o.bio_next, true)
            .override_global("KUBELET_TGID", &cri.map(|c| c.kubelet).unwrap_or(0), true)
            .override_global("SYS_READ_NR", &SYSCALL_ABI.read, true)
            .override_global("SYS_WRITE_NR", &SYSCALL_ABI.write, true)
            .override_global("REGS_ARG0_OFFSET", &SYSCALL_ABI.arg0_offset, true)
            .override_global("REGS_ARG1_OFFSET", &SYSCALL_ABI.arg1_offset, true)
            .override_global("GO_METHOD_PTR_OFFSET", &GO_REGS.method_ptr, true)
            .override_global("GO_METHOD_LEN_OFFSET", &GO_REGS.method_len, true)
            .override_global("GO_G_OFFSET", &GO_REGS.g, true)
            .override_global("GO_ERR_OFFSET", &GO_REGS.err, true)
            .load(EBPF_OBJECT)
            .map_err(TraceError::Load)?;
        for name in TRACEPOINTS {
            attach_tp_btf(&mut ebpf, name, &aya_btf)?;
        }
        {
            let p: &mut PerfEvent = program(&mut ebpf, SWITCH_PROGRAM)?
                .try_into()
                .map_err(attach_err(SWITCH_PROGRAM))?;
            p.load().map_err(attach_err(SWITCH_PROGRAM))?;
        }
        let fentry = attach_fentry(&mut ebpf, SUBMIT_FENTRY, &aya_btf);
        let bio_hook = match fentry {
            Ok(()) => BioSubmitHook::SubmitBio,
            Err(e) => {
                attach_tp_btf(&mut ebpf, SUBMIT_TRACEPOINT, &aya_btf)?;
                BioSubmitHook::BlockBioQueue {
                    fentry_error: e.to_string(),
                }
            }
        };
        let mut cri_calls = None;
        let mut cri_hook = None;
        if let Some(cri) = cri {
            {
                let mut fds: BpfHashMap<_, u32, u32> =
                    BpfHashMap::try_from(ebpf.map_mut("CRI_FDS").expect("CRI_FDS map in object"))
                        .map_err(map_err("CRI_FDS"))?;
                for fd in &cri.fds {
                    fds.insert(*fd, 1, 0).map_err(map_err("CRI_FDS"))?;
                }
            }
            cri_hook = Some(match attach_cri_uprobes(&mut ebpf, cri) {
                Ok(returns) => CriHook::Uprobe { returns },
                Err(uprobe_error) => {
                    for name in SYSCALL_TRACEPOINTS {
                        attach_tp_btf(&mut ebpf, name, &aya_btf)?;
                    }
                    CriHook::Syscalls { uprobe_error }
                }
            });
            let ring = ebpf.take_map("CRI_CALLS").expect("CRI_CALLS map in object");
            cri_calls = Some(RingBuf::try_from(ring).map_err(map_err("CRI_CALLS"))?);
        }
        Ok(Tracer {
            ebpf,
            bio_hook,
            cri_calls,
            cri_hook,
            switch_events: HashSet::new(),
            switch_hook: SwitchHook::PerThreadEvent,
        })
    }

    /// CRI calls finished since the last call (empty when CRI calls are not traced).
    pub fn cri_calls(&mut self) -> Vec<CriCall> {
        let Some(ring) = self.cri_calls.as_mut() else {
            return Vec::new();
        };
        let mut calls = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<CriCall>() {
                #[allow(unsafe_code)]
                // SAFETY: the kernel wrote a whole CriCall (#[repr(C)], integers and bytes only)
                // into this record; read_unaligned copes with the ring's 8-byte alignment.
                calls.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const CriCall) });
            }
        }
        calls
    }

    /// CRI calls in flight now (started, not finished).
    pub fn cri_in_flight(&self) -> Result<Vec<(CriStreamKey, CriStream)>, TraceError> {
        let map: BpfHashMap<_, CriStreamKey, CriStream> = BpfHashMap::try_from(
            self.ebpf
                .map("CRI_STREAMS")
                .expect("CRI_STREAMS map in object"),
        )
        .map_err(map_err("CRI_STREAMS"))?;
        map.iter()
            .map(|e| e.map_err(map_err("CRI_STREAMS")))
            .collect()
    }

    /// The CRI tracer's counters.
    pub fn cri_counters(&self) -> Result<CriCounters, TraceError> {
        let a: Array<_, u64> = Array::try_from(
            self.ebpf
                .map("CRI_COUNTERS")
                .expect("CRI_COUNTERS map in object"),
        )
        .map_err(map_err("CRI_COUNTERS"))?;
        let get = |i: u32| a.get(&i, 0).unwrap_or(0);
        Ok(CriCounters {
            frames: get(cri_counter::FRAMES),
            desyncs: get(cri_counter::DESYNCS),
            lost: get(cri_counter::LOST),
            unmatched: get(cri_counter::UNMATCHED),
        })
    }

    /// How the kubelet's CRI calls are seen (`None`: not traced).
    pub fn cri_hook(&self) -> Option<&CriHook> {
        self.cri_hook.as_ref()
    }

    /// How bio submitters are recorded on this kernel.
    pub fn bio_hook(&self) -> &BioSubmitHook {
        &self.bio_hook
    }

    /// How thread switch-outs are seen on this kernel.
    pub fn switch_hook(&self) -> &SwitchHook {
        &self.switch_hook
    }

    /// Starts recording the threads of process `tgid` (and any thread it creates later); at most
    /// [`tracer_ebpf::MAX_TARGETS`] processes.
    pub fn add_target(&mut self, tgid: u32) -> Result<(), TraceError> {
        let mut set: Array<_, TargetSet> = Array::try_from(
            self.ebpf
                .map_mut("TARGET_SET")
                .expect("TARGET_SET map in object"),
        )
        .map_err(map_err("TARGET_SET"))?;
        let mut value = set.get(&0, 0).map_err(map_err("TARGET_SET"))?;
        if value.tgids.contains(&tgid) {
            return Ok(());
        }
        let Some(slot) = value.tgids.iter_mut().find(|t| **t == 0) else {
            return Err(TraceError::TooManyTargets);
        };
        *slot = tgid;
        set.set(0, value, 0).map_err(map_err("TARGET_SET"))?;
        self.watch_switches(tgid)
    }

    /// Opens a context-switch event on each thread of `tgid`, with `inherit` so threads it
    /// creates later carry one too. A thread created while the list is read inherits from its
    /// creator only if that one already had its event, so the list is read again until no
    /// thread is new.
    ///
    /// Where the kernel refuses the first perf event for lack of privilege, the sched_switch
    /// tracepoint takes over for every target (see [`SwitchHook::SchedSwitch`]).
    fn watch_switches(&mut self, tgid: u32) -> Result<(), TraceError> {
        if matches!(self.switch_hook, SwitchHook::SchedSwitch { .. }) {
            return Ok(());
        }
        if std::env::var_os(FORCE_SCHED_SWITCH).is_some() {
            let btf = AyaBtf::from_sys_fs().map_err(|e| TraceError::AyaBtf(e.to_string()))?;
            attach_tp_btf(&mut self.ebpf, SWITCH_TRACEPOINT, &btf)?;
            self.switch_hook = SwitchHook::SchedSwitch {
                perf_error: format!("{FORCE_SCHED_SWITCH} is set"),
            };
            return Ok(());
        }
        raise_fd_limit();
        let p: &mut PerfEvent = program(&mut self.ebpf, SWITCH_PROGRAM)?
            .try_into()
            .map_err(attach_err(SWITCH_PROGRAM))?;
        let mut refused = None;
        'rounds: for _ in 0..4 {
            let tasks = match std::fs::read_dir(format!("/proc/{tgid}/task")) {
                Ok(tasks) => tasks,
                // Exited (a kubelet in a restart loop): nothing to watch; the processes section
                // says it is gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(TraceError::NoProcess(tgid, e)),
            };
            let tids: Vec<u32> = tasks
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|tid| !self.switch_events.contains(tid))
                .collect();
            if tids.is_empty() {
                break;
            }
            for tid in tids {
                match p.attach(
                    PerfEventConfig::Software(SoftwareEvent::ContextSwitches),
                    PerfEventScope::OneProcess {
                        pid: tid,
                        cpu: None,
                    },
                    SamplePolicy::Period(1),
                    true,
                ) {
                    Ok(_) => {}
                    // Exited since the list was read.
                    Err(ProgramError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) if self.switch_events.is_empty() && perf_refused(&e) => {
                        refused = Some(perf_refusal_reason(&e));
                        break 'rounds;
                    }
                    Err(e) => return Err(attach_err(SWITCH_PROGRAM)(e)),
                }
                self.switch_events.insert(tid);
            }
        }
        if let Some(perf_error) = refused {
            let btf = AyaBtf::from_sys_fs().map_err(|e| TraceError::AyaBtf(e.to_string()))?;
            attach_tp_btf(&mut self.ebpf, SWITCH_TRACEPOINT, &btf)?;
            self.switch_hook = SwitchHook::SchedSwitch { perf_error };
        }
        Ok(())
    }

    /// Every recorded thread's times, the open interval closed now.
    pub fn threads(&self) -> Result<Vec<ThreadSample>, TraceError> {
        let map: BpfHashMap<_, u32, ThreadTimes> =
            BpfHashMap::try_from(self.ebpf.map("THREADS").expect("THREADS map in object"))
                .map_err(map_err("THREADS"))?;
        let mut raw = Vec::new();
        for entry in map.iter() {
            raw.push(entry.map_err(map_err("THREADS"))?);
        }
        // schedstat first: the clock is read after it, so no time it counts is in the future.
        let sched: Vec<_> = raw
            .iter()
            .map(|(tid, t)| SchedStat::read(t.tgid, *tid))
            .collect();
        let now = monotonic_ns();
        Ok(raw
            .iter()
            .zip(sched)
            .map(|((tid, t), sched)| ThreadSample::from_kernel(*tid, t, now, sched))
            .collect())
    }

    /// Run-queue wait per thread id since attach (the runqlat view of [`Tracer::threads`]).
    pub fn thread_waits(&self) -> Result<HashMap<u32, RunqWait>, TraceError> {
        Ok(self
            .threads()?
            .into_iter()
            .filter(|t| t.runq_ns > 0 || t.runq_count > 0)
            .map(|t| {
                (
                    t.tid,
                    RunqWait {
                        total_ns: t.runq_ns,
                        count: t.runq_count,
                        max_ns: t.runq_max_ns,
                        tgid: t.tgid,
                        _pad: 0,
                    },
                )
            })
            .collect())
    }

    /// The kernel stack with id `id`, symbolised (`function+0xoffset`, innermost first); empty
    /// when the id is unknown or kallsyms is unreadable. Never raw addresses.
    pub fn kernel_stack(&self, id: u32, symbols: Option<&KernelSymbols>) -> Vec<String> {
        let (Some(symbols), Some(map)) = (symbols, self.ebpf.map("STACKS")) else {
            return Vec::new();
        };
        let Ok(stacks) = StackTraceMap::try_from(map) else {
            return Vec::new();
        };
        match stacks.get(&id, 0) {
            // The innermost frames are the tracer itself (the program and bpf_trace_run*).
            Ok(stack) => stack
                .frames()
                .iter()
                .map(|f| symbols.name(f.ip))
                .skip_while(|f| f.starts_with("bpf_prog_") || f.starts_with("bpf_trace_run"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Block-I/O latency per (device, submitting process) since attach.
    pub fn bio_latency(&self) -> Result<HashMap<BioKey, BioLatency>, TraceError> {
        let map: BpfHashMap<_, BioKey, BioLatency> = BpfHashMap::try_from(
            self.ebpf
                .map("BIO_LATENCY")
                .expect("BIO_LATENCY map in object"),
        )
        .map_err(map_err("BIO_LATENCY"))?;
        map.iter()
            .map(|e| e.map_err(map_err("BIO_LATENCY")))
            .collect()
    }
}

/// The kernel's dev_t (major << 20 | minor) as "major:minor".
pub fn dev_name(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

#[cfg(test)]
mod tests {
    use tracer_ebpf::NO_STACK;

    use super::*;

    #[test]
    fn open_interval_is_closed_into_the_state_the_thread_left_in() {
        let t = ThreadTimes {
            iowait_ns: 10,
            iowait_max_ns: 10,
            since_ns: 1_000,
            run_delay_ns: 50,
            exec_ns: 70,
            state: state::IOWAIT,
            tgid: 7,
            ..Default::default()
        };
        // Not switched in since: schedstat unchanged (or unreadable).
        let same = SchedStat {
            exec_ns: 70,
            run_delay_ns: 50,
        };
        for now in [Some(same), None] {
            let s = ThreadSample::from_kernel(8, &t, 1_500, now);
            assert_eq!(
                (s.iowait_ns, s.iowait_max_ns, s.state, s.state_for_ns),
                (510, 500, state::IOWAIT, 500)
            );
        }
        let dead = ThreadTimes {
            state: state::DEAD,
            since_ns: 0,
            ..t
        };
        let s = ThreadSample::from_kernel(8, &dead, 1_500, None);
        assert_eq!((s.iowait_ns, s.state_for_ns), (10, 0));
    }

    #[test]
    fn a_thread_switched_in_since_splits_its_open_interval() {
        let t = ThreadTimes {
            since_ns: 1_000,
            run_delay_ns: 50,
            exec_ns: 70,
            state: state::IOWAIT,
            off_cpu_stack: 3,
            ..Default::default()
        };
        // 500 ns since the switch-out: 100 waited in the run queue, 150 on the CPU so far.
        let now = SchedStat {
            exec_ns: 220,
            run_delay_ns: 150,
        };
        let s = ThreadSample::from_kernel(8, &t, 1_500, Some(now));
        assert_eq!(
            (s.iowait_ns, s.runq_ns, s.on_cpu_ns, s.state, s.state_for_ns),
            (250, 100, 150, state::RUNNING, 150)
        );
        assert_eq!((s.iowait_max_stack, s.runq_max_stack), (3, NO_STACK));
        // Preempted: queued from the switch-out, so the rest of the interval it ran.
        let preempted = ThreadTimes {
            state: state::RUNNABLE,
            ..t
        };
        let s = ThreadSample::from_kernel(8, &preempted, 1_500, Some(now));
        assert_eq!(
            (s.runq_ns, s.on_cpu_ns, s.sleep_ns, s.runq_max_stack),
            (100, 400, 0, 3)
        );
        // Still waiting: the open wait counts as run-queue wait.
        let s = ThreadSample::from_kernel(8, &preempted, 1_500, None);
        assert_eq!(
            (s.runq_ns, s.runq_max_ns, s.state),
            (500, 500, state::RUNNABLE)
        );
    }

    #[test]
    fn kernel_offsets_resolve_on_the_running_kernel() {
        let o = KernelOffsets::resolve(&Btf::from_kernel().expect("kernel BTF")).unwrap();
        assert!(o.task_exec > 0 && o.task_run_delay > 0 && o.task_exec != o.task_run_delay);
        assert_eq!(o.task_iowait_mask.count_ones(), 1);
        assert!(o.bio_bdev > 0 && o.bio_size > 0);
    }

    #[test]
    fn dev_names() {
        assert_eq!(dev_name((7 << 20) | 3), "7:3");
    }
}
