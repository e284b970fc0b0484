//! Kernel side of the node tracer: where the threads of target processes spend their time, and the
//! latency of the block I/O those processes submit.
//!
//! Thread states (per target thread, totals in the kernel), taken each time a target thread
//! switches out — a software perf event (context switches) on each target thread runs
//! `switched_out`, so no other task's switch runs a program (tracepoints run for everyone). Between
//! two switch-outs a thread was off the CPU in the state it left in, waited on a run queue, then
//! ran; the kernel's own per-task counters split that interval:
//! - run-queue wait: the growth of `task_struct.sched_info.run_delay` (the figure schedstat shows;
//!   a thread preempted while runnable waits from its switch-out on, a woken one from its wake-up);
//! - on-CPU: the growth of `task_struct.se.sum_exec_runtime`;
//! - I/O wait: the rest, when it switched out with `task_struct.in_iowait` set (io_schedule()) —
//!   the interval until its wake-up, which the kernel's delay accounting counts as blkio delay
//!   (kernel/sched/core.c: `delayacct_blkio_start()` in `__schedule()`, `delayacct_blkio_end()`
//!   in `try_to_wake_up()`);
//! - other sleep: the rest, for any other state it switched out in.
//!
//! Block I/O: the submitter is recorded at `submit_bio` (fentry: bios throttled by blk-throttle are
//! re-issued later from a kernel worker, so `current` at `block_bio_queue` is often not the
//! submitter), keyed by the bio pointer; `block_rq_complete` (blk-mq) or `block_bio_complete`
//! (bio-based devices) turns it into a log2 latency
//! histogram per (device, process).
//!
//! Only threads of processes in `TARGET_SET` are recorded (the perf event is inherited by child
//! processes too, which leave after comparing their tgid with a few values in one array slot).
//!
//! CRI calls of the kubelet (`KUBELET_TGID`, a load-time constant; 0 = not traced): its reads and
//! writes on the CRI socket fds user space put in `CRI_FDS` (raw `sys_enter`/`sys_exit`: every
//! other process leaves after comparing its tgid). The bytes are HTTP/2: frame headers give the
//! stream id of each call — HEADERS written by the kubelet start a call, a frame with END_STREAM
//! read back (or RST_STREAM either way) ends it. Go reads whatever the socket holds, so frames
//! span reads: the parser keeps, per fd and direction, how much of the current frame is still to
//! come, and after losing track (a header cut by a read) waits for a read that starts on a frame
//! boundary — one whose frame chain is plausible and ends exactly where the read ends.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::generated::{
            bpf_get_current_task, bpf_probe_read_kernel as probe_read_kernel_raw,
            bpf_probe_read_user as probe_read_user_raw,
        },
        maps::Array,
    };
    use aya_ebpf::{
        helpers::{
            bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        },
        macros::{btf_tracepoint, fentry, map, perf_event, uprobe},
        maps::{HashMap, StackTrace},
        programs::{
            BtfTracePointContext, FEntryContext, PerfEventContext, ProbeContext,
            tracing::StackIdContext,
        },
    };
    use aya_ebpf::{
        maps::{PerCpuArray, RingBuf},
        programs::BtfTracePointContext as RawCtx,
    };
    use tracer_ebpf::{
        BIO_SLOTS, BioKey, BioLatency, BioStart, CRI_HDR_BYTES, CRI_METHOD_PREFIX, CriCall,
        CriFraming, CriStream, CriStreamKey, CriSyscall, GO_CALL_FD, MAX_BIO_KEYS, MAX_BIOS,
        MAX_CRI_FDS, MAX_CRI_STREAMS, MAX_FRAMES_PER_SYSCALL, MAX_STACKS, MAX_THREADS, NO_STACK,
        TargetSet, ThreadTimes, cri_counter, cri_end, state,
    };

    /// `task_struct.__state`, `task_struct.sched_info.run_delay` and
    /// `task_struct.se.sum_exec_runtime` offsets, written by user space from BTF before load.
    #[unsafe(no_mangle)]
    static TASK_STATE_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static TASK_RUN_DELAY_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static TASK_EXEC_OFFSET: u32 = 0;
    /// Byte of `task_struct` holding the `in_iowait` bitfield, and the bit's mask in that byte.
    #[unsafe(no_mangle)]
    static TASK_IOWAIT_BYTE: u32 = 0;
    #[unsafe(no_mangle)]
    static TASK_IOWAIT_MASK: u32 = 0;
    /// `bio.bi_bdev`, `block_device.bd_dev` and `bio.bi_iter.bi_size` offsets.
    #[unsafe(no_mangle)]
    static BIO_BDEV_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static BDEV_DEV_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static BIO_SIZE_OFFSET: u32 = 0;
    /// `request.bio` and `bio.bi_next` offsets.
    #[unsafe(no_mangle)]
    static RQ_BIO_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static BIO_NEXT_OFFSET: u32 = 0;

    /// Target processes (set by user space).
    #[map]
    static TARGET_SET: Array<TargetSet> = Array::with_max_entries(1, 0);
    /// Where each target thread's time went (tid -> totals and current state).
    #[map]
    static THREADS: HashMap<u32, ThreadTimes> = HashMap::with_max_entries(MAX_THREADS, 0);
    /// Bios of target processes in flight (bio pointer -> submitter and start).
    #[map]
    static BIO_START: HashMap<u64, BioStart> = HashMap::with_max_entries(MAX_BIOS, 0);
    /// Kernel stacks of target threads switching out into I/O wait (symbolised in user space).
    #[map]
    static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);
    /// Block-I/O latency per (device, submitting process).
    #[map]
    static BIO_LATENCY: HashMap<BioKey, BioLatency> = HashMap::with_max_entries(MAX_BIO_KEYS, 0);

    const TASK_RUNNING: u32 = 0;
    /// At most one preemption stack per thread in this long (see `try_switched_out`).
    const PREEMPT_STACK_INTERVAL_NS: u64 = 1_000_000;
    /// include/linux/sched.h: the state of a task's last switch-out (exit).
    const TASK_DEAD: u32 = 0x80;

    #[inline(always)]
    fn global(value: &u32) -> u32 {
        // Volatile so the compiler does not fold the placeholder 0 into the code: user space
        // rewrites the value in .rodata at load time.
        unsafe { core::ptr::read_volatile(value) }
    }

    #[inline(always)]
    fn in_iowait(task: *const u8) -> bool {
        let byte = unsafe {
            bpf_probe_read_kernel(task.add(global(&TASK_IOWAIT_BYTE) as usize)).unwrap_or(0)
        };
        byte as u32 & global(&TASK_IOWAIT_MASK) != 0
    }

    #[inline(always)]
    fn is_target(tgid: u32) -> bool {
        let Some(set) = TARGET_SET.get(0) else {
            return false;
        };
        for t in set.tgids {
            if t == 0 {
                return false;
            }
            if t == tgid {
                return true;
            }
        }
        false
    }

    /// `task_struct.__state`, `sched_info.run_delay` and `se.sum_exec_runtime` of `task`.
    #[inline(always)]
    fn sched_counters(task: *const u8) -> (u32, u64, u64) {
        unsafe {
            (
                bpf_probe_read_kernel(task.add(global(&TASK_STATE_OFFSET) as usize) as *const u32)
                    .unwrap_or(0),
                bpf_probe_read_kernel(
                    task.add(global(&TASK_RUN_DELAY_OFFSET) as usize) as *const u64
                )
                .unwrap_or(0),
                bpf_probe_read_kernel(task.add(global(&TASK_EXEC_OFFSET) as usize) as *const u64)
                    .unwrap_or(0),
            )
        }
    }

    /// The kernel stack of the thread switching out, for an I/O wait or a preemption.
    #[inline(always)]
    fn walk_stack<C: StackIdContext>(ctx: &C, to: u32) -> u32 {
        if to == state::IOWAIT || to == state::RUNNABLE {
            ctx.get_stackid(&STACKS, 0)
                .map(|id| id as u32)
                .unwrap_or(NO_STACK)
        } else {
            NO_STACK
        }
    }

    /// Runs each time a target thread switches out: a software perf event
    /// (PERF_COUNT_SW_CONTEXT_SWITCHES) opened by user space on each target thread, with
    /// `inherit` so threads created later carry it too. The event fires in
    /// `perf_event_task_sched_out()`, in the switching-out thread's context (after
    /// `sched_info_switch()`), so other tasks never run this program: their switches only pass
    /// the perf core's per-task context check.
    #[perf_event]
    pub fn switched_out(ctx: PerfEventContext) -> u32 {
        let _ = try_switched_out(&ctx);
        0
    }

    /// The same accounting from the `sched_switch` tracepoint (tp_btf), for kernels that refuse
    /// the agent a perf event: Debian's and Ubuntu's `kernel.perf_event_paranoid` 3 (and above)
    /// lets only CAP_SYS_ADMIN call perf_event_open, while BPF links need CAP_BPF and CAP_PERFMON
    /// only. It fires in `__schedule()` with `current` still the task switching out, after
    /// `pick_next_task()` has charged its runtime; `sched_info_switch()`, which runs after it,
    /// does not change the switching-out task's run_delay. Every task's switch runs it (it leaves
    /// at the tgid check), so it is used only when the per-thread event is refused.
    #[btf_tracepoint(function = "sched_switch")]
    pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
        let _ = try_switched_out(&ctx);
        0
    }

    #[inline(always)]
    fn try_switched_out<C: StackIdContext>(ctx: &C) -> Result<(), i32> {
        let id = bpf_get_current_pid_tgid();
        let (tgid, tid) = ((id >> 32) as u32, id as u32);
        // `inherit` also hands the event to child processes a target forks (the runtime's
        // shims, the kubelet's mount helpers): record the target processes' threads only.
        if !is_target(tgid) {
            return Ok(());
        }
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let (task_state, run_delay, exec) = sched_counters(task);
        let now = unsafe { bpf_ktime_get_ns() };
        let to = if task_state == TASK_RUNNING {
            // Preempted while runnable: it waits in the run queue from now on.
            state::RUNNABLE
        } else if task_state & TASK_DEAD != 0 {
            state::DEAD
        } else if in_iowait(task) {
            state::IOWAIT
        } else {
            state::SLEEPING
        };
        let Some(t) = THREADS.get_ptr_mut(&tid) else {
            let stack = walk_stack(ctx, to);
            // First switch-out seen: the time before it is unknown and not counted.
            let fresh = ThreadTimes {
                since_ns: now,
                run_delay_ns: run_delay,
                exec_ns: exec,
                tgid,
                state: to,
                off_cpu_stack: stack,
                preempt_stack_ns: if to == state::RUNNABLE { now } else { 0 },
                iowait_max_stack: NO_STACK,
                runq_max_stack: NO_STACK,
                ..Default::default()
            };
            return THREADS.insert(&tid, &fresh, 0);
        };
        let t = unsafe { &mut *t };
        // The stack says what an I/O wait waits in, or where a thread was preempted. Sleeps do
        // not pay for the walk (the normal state of idle Go threads), and a thread preempted
        // again within PREEMPT_STACK_INTERVAL_NS of its last preemption stack gets none: a walk
        // costs ~1 µs here, and only long waits are reported — which leave that much time.
        let stack = if to == state::RUNNABLE
            && now.saturating_sub(t.preempt_stack_ns) < PREEMPT_STACK_INTERVAL_NS
        {
            NO_STACK
        } else {
            walk_stack(ctx, to)
        };
        if to == state::RUNNABLE && stack != NO_STACK {
            t.preempt_stack_ns = now;
        }
        // Since the last switch-out: off the CPU in `t.state`, then `waited` in a run queue,
        // then `ran` on a CPU. Skip negative deltas (timestamps of different CPUs race).
        let elapsed = now.saturating_sub(t.since_ns);
        let waited = run_delay.saturating_sub(t.run_delay_ns).min(elapsed);
        let ran = if t.state == state::RUNNABLE {
            // Queued from the switch-out on: the rest of the interval it ran.
            elapsed - waited
        } else {
            exec.saturating_sub(t.exec_ns).min(elapsed - waited)
        };
        let off = elapsed - waited - ran;
        t.on_cpu_ns += ran;
        if t.state == state::IOWAIT {
            if off > 0 {
                t.iowait_ns += off;
                t.iowait_count += 1;
                if off > t.iowait_max_ns {
                    t.iowait_max_ns = off;
                    // It ended with the wake-up.
                    t.iowait_max_at_ns = now - ran - waited;
                    t.iowait_max_stack = t.off_cpu_stack;
                }
            }
        } else {
            t.sleep_ns += off;
        }
        if waited > 0 {
            t.runq_ns += waited;
            t.runq_count += 1;
            if waited > t.runq_max_ns {
                t.runq_max_ns = waited;
                t.runq_max_at_ns = now - ran;
                // A wait that began with a wake-up has no preemption stack.
                t.runq_max_stack = if t.state == state::RUNNABLE {
                    t.off_cpu_stack
                } else {
                    NO_STACK
                };
            }
        }
        t.state = to;
        t.since_ns = now;
        t.run_delay_ns = run_delay;
        t.exec_ns = exec;
        t.off_cpu_stack = stack;
        Ok(())
    }

    /// log2 of `v` (0 for 0), without loops (libbpf-tools bits.bpf.h `log2l`).
    #[inline(always)]
    fn log2(mut v: u64) -> u64 {
        let mut r = 0;
        let mut shift;
        shift = ((v > 0xffff_ffff) as u64) << 5;
        v >>= shift;
        r |= shift;
        shift = ((v > 0xffff) as u64) << 4;
        v >>= shift;
        r |= shift;
        shift = ((v > 0xff) as u64) << 3;
        v >>= shift;
        r |= shift;
        shift = ((v > 0xf) as u64) << 2;
        v >>= shift;
        r |= shift;
        shift = ((v > 0x3) as u64) << 1;
        v >>= shift;
        r |= shift;
        r | (v >> 1)
    }

    // void submit_bio(struct bio *bio) — runs in the submitter's context.
    #[fentry(function = "submit_bio")]
    pub fn submit_bio(ctx: FEntryContext) -> i32 {
        let _ = try_submit_bio(&ctx);
        0
    }

    fn try_submit_bio(ctx: &FEntryContext) -> Result<(), i32> {
        record_submitter(ctx.arg(0))
    }

    // TP_PROTO(struct bio *bio). The fallback where fentry is refused: it fires in
    // submit_bio_noacct_nocheck(), after blk-throttle, so a throttled bio is seen only when a
    // kernel worker re-issues it — and is then not attributed to the target.
    #[btf_tracepoint(function = "block_bio_queue")]
    pub fn block_bio_queue(ctx: BtfTracePointContext) -> i32 {
        let _ = record_submitter(ctx.arg(0));
        0
    }

    #[inline(always)]
    fn record_submitter(bio: *const u8) -> Result<(), i32> {
        let id = bpf_get_current_pid_tgid();
        let (tgid, tid) = ((id >> 32) as u32, id as u32);
        if !is_target(tgid) {
            return Ok(());
        }
        let bytes: u32 = unsafe {
            bpf_probe_read_kernel(bio.add(global(&BIO_SIZE_OFFSET) as usize) as *const u32)?
        };
        let start = BioStart {
            start_ns: unsafe { bpf_ktime_get_ns() },
            bytes: bytes as u64,
            tgid,
            tid,
        };
        BIO_START.insert(&(bio as u64), &start, 0)
    }

    // TP_PROTO(struct request_queue *q, struct bio *bio) — fired from bio_endio() for bios of
    // bio-based devices (device mapper, md). Request-based (blk-mq) devices clear
    // BIO_TRACE_COMPLETION in blk_update_request() ("Completion has already been traced") and
    // report through block_rq_complete instead.
    #[btf_tracepoint(function = "block_bio_complete")]
    pub fn block_bio_complete(ctx: BtfTracePointContext) -> i32 {
        let bio: *const u8 = ctx.arg(1);
        let _ = complete_bio(bio, unsafe { bpf_ktime_get_ns() });
        0
    }

    /// Bios of one request looked at on completion (merged bios beyond this are not counted).
    const MAX_BIOS_PER_REQUEST: usize = 8;

    // TP_PROTO(struct request *rq, blk_status_t error, unsigned int nr_bytes) — fired at the
    // start of blk_update_request(), while rq->bio still chains the request's bios (bi_next).
    #[btf_tracepoint(function = "block_rq_complete")]
    pub fn block_rq_complete(ctx: BtfTracePointContext) -> i32 {
        let rq: *const u8 = ctx.arg(0);
        let now = unsafe { bpf_ktime_get_ns() };
        let mut bio: *const u8 = unsafe {
            bpf_probe_read_kernel(rq.add(global(&RQ_BIO_OFFSET) as usize) as *const *const u8)
                .unwrap_or(core::ptr::null())
        };
        for _ in 0..MAX_BIOS_PER_REQUEST {
            if bio.is_null() {
                break;
            }
            let _ = complete_bio(bio, now);
            bio = unsafe {
                bpf_probe_read_kernel(
                    bio.add(global(&BIO_NEXT_OFFSET) as usize) as *const *const u8
                )
                .unwrap_or(core::ptr::null())
            };
        }
        0
    }

    #[inline(always)]
    fn complete_bio(bio: *const u8, now: u64) -> Result<(), i32> {
        let key = bio as u64;
        let Some(&start) = (unsafe { BIO_START.get(&key) }) else {
            return Ok(());
        };
        let _ = BIO_START.remove(&key);
        if now < start.start_ns {
            return Ok(());
        }
        let latency = now - start.start_ns;
        let bdev: *const u8 = unsafe {
            bpf_probe_read_kernel(bio.add(global(&BIO_BDEV_OFFSET) as usize) as *const *const u8)?
        };
        let dev: u32 = unsafe {
            bpf_probe_read_kernel(bdev.add(global(&BDEV_DEV_OFFSET) as usize) as *const u32)?
        };
        let hkey = BioKey {
            dev,
            tgid: start.tgid,
        };
        let h = match BIO_LATENCY.get_ptr_mut(&hkey) {
            Some(h) => h,
            None => {
                BIO_LATENCY.insert(&hkey, &BioLatency::default(), 0)?;
                BIO_LATENCY.get_ptr_mut(&hkey).ok_or(0i32)?
            }
        };
        let h = unsafe { &mut *h };
        let slot = log2(latency / 1000) as usize;
        let slot = if slot < BIO_SLOTS {
            slot
        } else {
            BIO_SLOTS - 1
        };
        h.slots[slot & (BIO_SLOTS - 1)] += 1;
        h.count += 1;
        h.total_ns += latency;
        h.bytes += start.bytes;
        if latency > h.max_ns {
            h.max_ns = latency;
        }
        Ok(())
    }

    // ---- CRI calls on the kubelet's socket ----

    /// The kubelet's tgid, written by user space before load (0: CRI tracing off).
    #[unsafe(no_mangle)]
    static KUBELET_TGID: u32 = 0;

    /// The kubelet's fds connected to the runtime's CRI socket (fd -> 1).
    #[map]
    static CRI_FDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_CRI_FDS, 0);
    /// Reads/writes of kubelet threads on those fds between sys_enter and sys_exit (tid -> call).
    #[map]
    static CRI_SYSCALLS: HashMap<u32, CriSyscall> = HashMap::with_max_entries(1024, 0);
    /// Framing state per (fd << 1 | direction).
    #[map]
    static CRI_FRAMING: HashMap<u32, CriFraming> = HashMap::with_max_entries(MAX_CRI_FDS * 2, 0);
    /// Calls in flight.
    #[map]
    static CRI_STREAMS: HashMap<CriStreamKey, CriStream> =
        HashMap::with_max_entries(MAX_CRI_STREAMS, 0);
    /// Finished calls, to user space.
    #[map]
    static CRI_CALLS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
    /// Scratch space for building a [`CriStream`] (too big for the 512-byte BPF stack).
    #[map]
    static CRI_SCRATCH: PerCpuArray<CriStream> = PerCpuArray::with_max_entries(1, 0);
    /// See `cri_counter`.
    #[map]
    static CRI_COUNTERS: Array<u64> = Array::with_max_entries(cri_counter::COUNT, 0);

    // The syscall ABI of the machine, written by user space before load (the object itself is
    // the same for x86_64 and arm64): the numbers of read(2) and write(2), and where the first
    // two syscall arguments sit in `struct pt_regs` (x86_64: di, si; arm64: regs[0], regs[1]).
    #[unsafe(no_mangle)]
    static SYS_READ_NR: u32 = 0;
    #[unsafe(no_mangle)]
    static SYS_WRITE_NR: u32 = 0;
    #[unsafe(no_mangle)]
    static REGS_ARG0_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static REGS_ARG1_OFFSET: u32 = 0;

    const FRAME_DATA: u8 = 0;
    const FRAME_HEADERS: u8 = 1;
    const FRAME_RST_STREAM: u8 = 3;
    const FLAG_END_STREAM: u8 = 0x1;
    const FLAG_PADDED: u8 = 0x8;
    const FLAG_PRIORITY: u8 = 0x20;
    /// Largest frame the parser believes in (grpc-go's and HTTP/2's default max frame size is
    /// 16 KiB; peers may raise it — a larger frame costs a resynchronisation, never a wrong call).
    const MAX_PLAUSIBLE_FRAME: u32 = 1 << 20;

    #[inline(always)]
    fn count(index: u32) {
        if let Some(c) = CRI_COUNTERS.get_ptr_mut(index) {
            unsafe { *c += 1 };
        }
    }

    // TP_PROTO(struct pt_regs *regs, long id) — every syscall of every task: leave at once
    // unless it is the kubelet's.
    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter(ctx: RawCtx) -> i32 {
        let id = bpf_get_current_pid_tgid();
        if (id >> 32) as u32 != global(&KUBELET_TGID) {
            return 0;
        }
        let nr: i64 = ctx.arg(1);
        let (read, write) = (global(&SYS_READ_NR) as i64, global(&SYS_WRITE_NR) as i64);
        if nr != read && nr != write {
            return 0;
        }
        let regs: *const u8 = ctx.arg(0);
        let _ = cri_enter(regs, id as u32, (nr == write) as u32);
        0
    }

    #[inline(always)]
    fn cri_enter(regs: *const u8, tid: u32, dir: u32) -> Result<(), i32> {
        let arg0 = global(&REGS_ARG0_OFFSET) as usize;
        let fd = unsafe { bpf_probe_read_kernel(regs.add(arg0) as *const u64)? } as u32;
        if unsafe { CRI_FDS.get(&fd).is_none() } {
            return Ok(());
        }
        let arg1 = global(&REGS_ARG1_OFFSET) as usize;
        let buf = unsafe { bpf_probe_read_kernel(regs.add(arg1) as *const u64)? };
        CRI_SYSCALLS.insert(&tid, &CriSyscall { buf, fd, dir }, 0)
    }

    // TP_PROTO(struct pt_regs *regs, long ret).
    #[btf_tracepoint(function = "sys_exit")]
    pub fn sys_exit(ctx: RawCtx) -> i32 {
        let id = bpf_get_current_pid_tgid();
        if (id >> 32) as u32 != global(&KUBELET_TGID) {
            return 0;
        }
        let tid = id as u32;
        let Some(&call) = (unsafe { CRI_SYSCALLS.get(&tid) }) else {
            return 0;
        };
        let _ = CRI_SYSCALLS.remove(&tid);
        let ret: i64 = ctx.arg(1);
        if ret > 0 {
            let _ = cri_frames(&call, ret as u32, tid);
        }
        0
    }

    // ---- CRI calls through the kubelet's gRPC client (uprobes) ----
    //
    // Where the kubelet's binary allows it, user space attaches `cri_invoke` at the entry of
    // `google.golang.org/grpc.(*ClientConn).Invoke` and `cri_invoke_return` at each of its return
    // instructions (no uretprobe: Go moves goroutine stacks, and a uretprobe rewrites the return
    // address on the stack), for the kubelet only, instead of the syscall tracepoints above: only
    // the kubelet's gRPC calls run a program, and the method is an argument, so every call is
    // named. Go's register ABI (ABIInternal) passes the method string in the 4th and 5th integer
    // registers and returns the error interface in the first two; the goroutine (`g`) lives in a
    // fixed register throughout. Their offsets in `struct pt_regs` are written by user space.

    /// Offsets in `struct pt_regs` (the uprobe's context) of: the method string's pointer and
    /// length at `Invoke`'s entry, the current goroutine's `g`, and the returned error's type word
    /// at a return.
    #[unsafe(no_mangle)]
    static GO_METHOD_PTR_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static GO_METHOD_LEN_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static GO_G_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static GO_ERR_OFFSET: u32 = 0;

    #[inline(always)]
    fn go_reg(ctx: &ProbeContext, offset: &u32) -> Result<u64, i32> {
        let regs = ctx.regs as *const u8;
        unsafe {
            Ok(bpf_probe_read_kernel(
                regs.add(global(offset) as usize) as *const u64
            )?)
        }
    }

    /// The key of the goroutine's call in flight: one unary call per goroutine at a time.
    #[inline(always)]
    fn go_call_key(g: u64) -> CriStreamKey {
        CriStreamKey {
            fd: GO_CALL_FD,
            // `g` is heap memory, 8-aligned, and never moves; the fold keeps 35 of its bits.
            stream: ((g >> 3) ^ (g >> 35)) as u32,
        }
    }

    #[uprobe]
    pub fn cri_invoke(ctx: ProbeContext) -> u32 {
        let _ = try_cri_invoke(&ctx);
        0
    }

    #[inline(always)]
    fn try_cri_invoke(ctx: &ProbeContext) -> Result<(), i32> {
        let id = bpf_get_current_pid_tgid();
        if (id >> 32) as u32 != global(&KUBELET_TGID) {
            return Ok(());
        }
        let len = go_reg(ctx, &GO_METHOD_LEN_OFFSET)?;
        if len < CRI_METHOD_PREFIX.len() as u64 || len > CRI_HDR_BYTES as u64 {
            return Ok(());
        }
        let key = go_call_key(go_reg(ctx, &GO_G_OFFSET)?);
        // The entry runs twice when the goroutine's stack must grow first (the prologue calls
        // runtime.morestack, which restarts the function): the first entry is the call's start.
        if unsafe { CRI_STREAMS.get(&key).is_some() } {
            return Ok(());
        }
        let ptr = go_reg(ctx, &GO_METHOD_PTR_OFFSET)?;
        let s = CRI_SCRATCH.get_ptr_mut(0).ok_or(0i32)?;
        let s = unsafe { &mut *s };
        let want = (len as u32) & 0x1ff;
        if want == 0 || want > CRI_HDR_BYTES as u32 {
            return Ok(());
        }
        let rc =
            unsafe { probe_read_user_raw(s.hdr.as_mut_ptr() as *mut _, want, ptr as *const _) };
        if rc != 0 {
            return Ok(());
        }
        // Byte by byte: no memcmp in BPF.
        let mut i = 0;
        while i < CRI_METHOD_PREFIX.len() {
            if s.hdr[i] != CRI_METHOD_PREFIX[i] {
                return Ok(());
            }
            i += 1;
        }
        s.start_ns = unsafe { bpf_ktime_get_ns() };
        s.tid = id as u32;
        s.hdr_len = want;
        s.hdr_total = want;
        CRI_STREAMS.insert(&key, s, 0)
    }

    #[uprobe]
    pub fn cri_invoke_return(ctx: ProbeContext) -> u32 {
        let _ = try_cri_invoke_return(&ctx);
        0
    }

    #[inline(always)]
    fn try_cri_invoke_return(ctx: &ProbeContext) -> Result<(), i32> {
        let id = bpf_get_current_pid_tgid();
        if (id >> 32) as u32 != global(&KUBELET_TGID) {
            return Ok(());
        }
        let key = go_call_key(go_reg(ctx, &GO_G_OFFSET)?);
        // Calls of other gRPC clients were never started: not counted as unmatched.
        if unsafe { CRI_STREAMS.get(&key).is_none() } {
            return Ok(());
        }
        let end = if go_reg(ctx, &GO_ERR_OFFSET)? != 0 {
            cri_end::ERROR
        } else {
            cri_end::RESPONSE
        };
        end_call(&key, unsafe { bpf_ktime_get_ns() }, end);
        Ok(())
    }

    /// One HTTP/2 frame header (RFC 9113 §4.1), read from user memory.
    #[inline(always)]
    fn frame_header(at: u64) -> Result<(u32, u8, u8, u32), i32> {
        let h: [u8; 9] = unsafe { bpf_probe_read_user(at as *const [u8; 9])? };
        let len = ((h[0] as u32) << 16) | ((h[1] as u32) << 8) | h[2] as u32;
        let stream =
            (((h[5] as u32) << 24) | ((h[6] as u32) << 16) | ((h[7] as u32) << 8) | h[8] as u32)
                & 0x7fff_ffff;
        Ok((len, h[3], h[4], stream))
    }

    /// Could these be the fields of a real frame header? (Used only to find a frame boundary
    /// again after losing track.)
    #[inline(always)]
    fn plausible(len: u32, kind: u8, stream: u32) -> bool {
        len <= MAX_PLAUSIBLE_FRAME
            && kind <= 9
            && match kind {
                // DATA, HEADERS, PRIORITY, RST_STREAM, CONTINUATION: on a client stream.
                0 | 1 | 2 | 3 | 9 => stream != 0 && stream & 1 == 1,
                // SETTINGS, PING, GOAWAY: connection-level.
                4 | 6 | 7 => stream == 0,
                _ => true,
            }
    }

    /// Parses the frames of `n` bytes read or written at `call.buf`.
    fn cri_frames(call: &CriSyscall, n: u32, tid: u32) -> Result<(), i32> {
        let fkey = (call.fd << 1) | call.dir;
        let framing = match CRI_FRAMING.get_ptr_mut(&fkey) {
            Some(f) => f,
            None => {
                CRI_FRAMING.insert(&fkey, &CriFraming::default(), 0)?;
                CRI_FRAMING.get_ptr_mut(&fkey).ok_or(0i32)?
            }
        };
        let framing = unsafe { &mut *framing };
        let now = unsafe { bpf_ktime_get_ns() };
        let mut off: u32;
        if framing.synced == 1 {
            if framing.skip >= n {
                framing.skip -= n;
                return Ok(());
            }
            off = framing.skip;
        } else {
            // Looking for a boundary: this read/write must start on one, and its chain of
            // plausible frames must end exactly at its end.
            off = 0;
            let mut ok = false;
            for _ in 0..MAX_FRAMES_PER_SYSCALL {
                if off + 9 > n {
                    break;
                }
                let (len, kind, _, stream) = frame_header(call.buf + off as u64)?;
                if !plausible(len, kind, stream) {
                    break;
                }
                off += 9 + len;
                if off == n {
                    ok = true;
                    break;
                }
                if off > n {
                    break;
                }
            }
            if !ok {
                return Ok(());
            }
            framing.synced = 1;
            off = 0;
        }
        for _ in 0..MAX_FRAMES_PER_SYSCALL {
            if off >= n {
                break;
            }
            if off + 9 > n {
                // A frame header cut by the end of this read/write.
                framing.synced = 0;
                count(cri_counter::DESYNCS);
                return Ok(());
            }
            let at = call.buf + off as u64;
            let (len, kind, flags, stream) = frame_header(at)?;
            count(cri_counter::FRAMES);
            if stream != 0 {
                let key = CriStreamKey {
                    fd: call.fd,
                    stream,
                };
                if call.dir == 1 && kind == FRAME_HEADERS {
                    // A request starts (a kubelet HEADERS on a stream it has not used yet).
                    if unsafe { CRI_STREAMS.get(&key).is_none() } {
                        let _ = start_call(&key, at, len, flags, n - off, now, tid);
                    }
                } else if kind == FRAME_RST_STREAM {
                    let end = if call.dir == 1 {
                        cri_end::CANCELLED
                    } else {
                        cri_end::RESET_BY_RUNTIME
                    };
                    end_call(&key, now, end);
                } else if call.dir == 0
                    && (kind == FRAME_HEADERS || kind == FRAME_DATA)
                    && flags & FLAG_END_STREAM != 0
                {
                    end_call(&key, now, cri_end::RESPONSE);
                }
            }
            off += 9 + len;
        }
        if off > n {
            framing.skip = off - n;
        } else if off < n {
            // More frames than one pass looks at: find a boundary again later.
            framing.synced = 0;
            count(cri_counter::DESYNCS);
        } else {
            framing.skip = 0;
        }
        Ok(())
    }

    #[inline(always)]
    fn start_call(
        key: &CriStreamKey,
        at: u64,
        len: u32,
        flags: u8,
        avail: u32,
        now: u64,
        tid: u32,
    ) -> Result<(), i32> {
        // The header block fragment starts after the pad length and priority fields.
        let mut skip = 9u32;
        if flags & FLAG_PADDED != 0 {
            skip += 1;
        }
        if flags & FLAG_PRIORITY != 0 {
            skip += 5;
        }
        let s = CRI_SCRATCH.get_ptr_mut(0).ok_or(0i32)?;
        let s = unsafe { &mut *s };
        s.start_ns = now;
        s.tid = tid;
        s.hdr_len = 0;
        s.hdr_total = len.saturating_sub(skip - 9);
        let have = core::cmp::min(avail, len + 9);
        if have > skip {
            let mut want = have - skip;
            if want > CRI_HDR_BYTES as u32 {
                want = CRI_HDR_BYTES as u32;
            }
            let want = want & 0x1ff;
            if want > 0 && want <= CRI_HDR_BYTES as u32 {
                let rc = unsafe {
                    probe_read_user_raw(
                        s.hdr.as_mut_ptr() as *mut _,
                        want,
                        (at + skip as u64) as *const _,
                    )
                };
                if rc == 0 {
                    s.hdr_len = want;
                }
            }
        }
        CRI_STREAMS.insert(key, s, 0)
    }

    #[inline(always)]
    fn end_call(key: &CriStreamKey, now: u64, end: u32) {
        let Some(s) = (unsafe { CRI_STREAMS.get(key) }) else {
            count(cri_counter::UNMATCHED);
            return;
        };
        match CRI_CALLS.reserve::<CriCall>(0) {
            Some(mut e) => {
                let c = e.as_mut_ptr();
                unsafe {
                    (*c).key = *key;
                    (*c).end_ns = now;
                    (*c).end = end;
                    (*c)._pad = 0;
                    // Map value to ring record, kernel memory to kernel memory: a helper copy
                    // keeps the 280-byte record off the BPF stack.
                    let rc = probe_read_kernel_raw(
                        core::ptr::addr_of_mut!((*c).stream) as *mut _,
                        core::mem::size_of::<CriStream>() as u32,
                        s as *const CriStream as *const _,
                    );
                    if rc != 0 {
                        e.discard(0);
                        count(cri_counter::LOST);
                        let _ = CRI_STREAMS.remove(key);
                        return;
                    }
                }
                // The end of a stream can be seen twice at once: the kubelet writing its reset on
                // one CPU while reading the runtime's on another (both ends of grpc-go enforce the
                // deadline). Only the program whose delete succeeds reports the call.
                if CRI_STREAMS.remove(key).is_ok() {
                    e.submit(0);
                } else {
                    e.discard(0);
                    count(cri_counter::UNMATCHED);
                }
            }
            None => {
                count(cri_counter::LOST);
                let _ = CRI_STREAMS.remove(key);
            }
        }
    }

    #[cfg(not(test))]
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}

/// On the host this binary is only a placeholder: the real target is bpfel-unknown-none, built by
/// tracer-user's build.rs.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("tracer-ebpf is an eBPF object; it is loaded by tracer-user, not run");
    std::process::exit(2);
}
