//! Kernel side of the node tracer: where the threads of target processes spend their time, and the
//! latency of the block I/O those processes submit.
//!
//! Thread states (per target thread, totals in the kernel):
//! - run-queue wait, after libbpf-tools `runqlat`: a thread becomes runnable when it is woken
//!   (`sched_wakeup`, `sched_wakeup_new`) or preempted while still runnable (`sched_switch` with
//!   `prev_state == TASK_RUNNING`); the time until `sched_switch` switches it in is its wait;
//! - on-CPU: from being switched in to being switched out;
//! - I/O wait: switched out with `task_struct.in_iowait` set (io_schedule()), until woken — the
//!   same interval the kernel's delay accounting counts as blkio delay (kernel/sched/core.c:
//!   `delayacct_blkio_start()` in `__schedule()`, `delayacct_blkio_end()` in `try_to_wake_up()`);
//! - other sleep: switched out in any other state, until woken.
//!
//! Block I/O: the submitter is recorded at `submit_bio` (fentry: bios throttled by blk-throttle are
//! re-issued later from a kernel worker, so `current` at `block_bio_queue` is often not the
//! submitter), keyed by the bio pointer; `block_rq_complete` (blk-mq) or `block_bio_complete`
//! (bio-based devices) turns it into a log2 latency
//! histogram per (device, process).
//!
//! Only threads of processes in `TARGETS` are recorded: everyone else leaves after one map lookup.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
        macros::{btf_tracepoint, fentry, map},
        maps::{HashMap, StackTrace},
        programs::{BtfTracePointContext, FEntryContext, tracing::StackIdContext},
    };
    use tracer_ebpf::{
        BIO_SLOTS, BioKey, BioLatency, BioStart, MAX_BIO_KEYS, MAX_BIOS, MAX_STACKS, MAX_TARGETS,
        MAX_THREADS, NO_STACK, ThreadTimes, state,
    };

    /// `task_struct.pid` offset, written by user space from BTF before load.
    #[unsafe(no_mangle)]
    static TASK_PID_OFFSET: u32 = 0;
    /// `task_struct.tgid` offset, written by user space from BTF before load.
    #[unsafe(no_mangle)]
    static TASK_TGID_OFFSET: u32 = 0;
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

    /// Target processes (tgid -> role, set by user space).
    #[map]
    static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);
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
    /// include/linux/sched.h: the state of a task's last switch-out.
    const TASK_DEAD: u32 = 0x80;

    #[inline(always)]
    fn global(value: &u32) -> u32 {
        // Volatile so the compiler does not fold the placeholder 0 into the code: user space
        // rewrites the value in .rodata at load time.
        unsafe { core::ptr::read_volatile(value) }
    }

    /// tgid of a task, read through the BTF-derived offset.
    #[inline(always)]
    fn task_tgid(task: *const u8) -> Result<u32, i32> {
        let tgid = unsafe {
            bpf_probe_read_kernel(task.add(global(&TASK_TGID_OFFSET) as usize) as *const i32)?
        };
        Ok(tgid as u32)
    }

    /// tid of a task, read through the BTF-derived offset. Read only for targets: the common
    /// (non-target) path pays for one read.
    #[inline(always)]
    fn task_tid(task: *const u8) -> Result<u32, i32> {
        let pid = unsafe {
            bpf_probe_read_kernel(task.add(global(&TASK_PID_OFFSET) as usize) as *const i32)?
        };
        Ok(pid as u32)
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
        unsafe { TARGETS.get(&tgid).is_some() }
    }

    /// Moves thread `tid` of `tgid` to state `to` at `now`, adding the time spent in its previous
    /// state to that state's total. A thread seen for the first time starts in `to` (the time
    /// before the tracer saw it is unknown and not counted).
    #[inline(always)]
    fn transition(tid: u32, tgid: u32, to: u32, now: u64, stack: u32) -> Result<(), i32> {
        let Some(t) = THREADS.get_ptr_mut(&tid) else {
            let fresh = ThreadTimes {
                since_ns: now,
                tgid,
                state: to,
                off_cpu_stack: stack,
                iowait_max_stack: NO_STACK,
                ..Default::default()
            };
            return THREADS.insert(&tid, &fresh, 0);
        };
        let t = unsafe { &mut *t };
        // Skip negative deltas (timestamps taken on different CPUs race).
        let spent = now.saturating_sub(t.since_ns);
        match t.state {
            state::RUNNING => t.on_cpu_ns += spent,
            state::RUNNABLE => {
                t.runq_ns += spent;
                t.runq_count += 1;
                if spent > t.runq_max_ns {
                    t.runq_max_ns = spent;
                    t.runq_max_at_ns = now;
                }
            }
            state::IOWAIT => {
                t.iowait_ns += spent;
                t.iowait_count += 1;
                if spent > t.iowait_max_ns {
                    t.iowait_max_ns = spent;
                    t.iowait_max_at_ns = now;
                    t.iowait_max_stack = t.off_cpu_stack;
                }
            }
            state::SLEEPING => t.sleep_ns += spent,
            _ => {}
        }
        t.state = to;
        t.since_ns = now;
        t.off_cpu_stack = stack;
        Ok(())
    }

    #[inline(always)]
    fn woken(task: *const u8) -> Result<(), i32> {
        let tgid = task_tgid(task)?;
        // The idle task (pid 0) is one slot shared by every CPU: never record it.
        if tgid == 0 || !is_target(tgid) {
            return Ok(());
        }
        let tid = task_tid(task)?;
        // try_to_wake_up() also fires sched_wakeup for a task that set its state but has not
        // switched out yet (ttwu_runnable): it never left the CPU, so it stays on-CPU.
        if let Some(t) = unsafe { THREADS.get(&tid) }
            && t.state == state::RUNNING
        {
            return Ok(());
        }
        transition(
            tid,
            tgid,
            state::RUNNABLE,
            unsafe { bpf_ktime_get_ns() },
            NO_STACK,
        )
    }

    #[btf_tracepoint(function = "sched_wakeup")]
    pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
        let task: *const u8 = ctx.arg(0);
        let _ = woken(task);
        0
    }

    #[btf_tracepoint(function = "sched_wakeup_new")]
    pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
        let task: *const u8 = ctx.arg(0);
        let _ = woken(task);
        0
    }

    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
    //          unsigned int prev_state) — the prev_state argument exists since Linux 5.18
    // (commit fa2c3254d7cf "sched/tracing: Don't re-read p->state when emitting sched_switch").
    #[btf_tracepoint(function = "sched_switch")]
    pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
        let _ = try_sched_switch(&ctx);
        0
    }

    fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), i32> {
        let prev: *const u8 = ctx.arg(1);
        let next: *const u8 = ctx.arg(2);
        let prev_state: u32 = ctx.arg(3);
        // The tracepoint runs in prev's context (`current` is still prev): its ids come from a
        // helper instead of memory reads. The clock is read only when a target is involved.
        let id = bpf_get_current_pid_tgid();
        let (tid, tgid) = (id as u32, (id >> 32) as u32);
        let mut now = 0;
        if tid != 0 && is_target(tgid) {
            now = unsafe { bpf_ktime_get_ns() };
            let to = if prev_state == TASK_RUNNING {
                // Preempted while runnable: it waits in the run queue from now on.
                state::RUNNABLE
            } else if prev_state & TASK_DEAD != 0 {
                state::DEAD
            } else if in_iowait(prev) {
                state::IOWAIT
            } else {
                state::SLEEPING
            };
            // `current` is still prev here: its kernel stack says what it waits for. Only I/O
            // waits pay for the stack walk (sleeps are the normal state of idle Go threads).
            let stack = if to == state::IOWAIT {
                ctx.get_stackid(&STACKS, 0)
                    .map(|id| id as u32)
                    .unwrap_or(NO_STACK)
            } else {
                NO_STACK
            };
            transition(tid, tgid, to, now, stack)?;
        }
        let tgid = task_tgid(next)?;
        if tgid != 0 && is_target(tgid) {
            if now == 0 {
                now = unsafe { bpf_ktime_get_ns() };
            }
            let tid = task_tid(next)?;
            transition(tid, tgid, state::RUNNING, now, NO_STACK)?;
        }
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
