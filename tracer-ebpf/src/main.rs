//! Kernel side of the node tracer: run-queue wait of target processes' threads.
//!
//! Method (after libbpf-tools `runqlat`): a thread becomes runnable when it is woken
//! (`sched_wakeup`, `sched_wakeup_new`) or preempted while still runnable (`sched_switch` with
//! `prev_state == TASK_RUNNING`); the time until `sched_switch` switches it in is its run-queue wait.
//! Only threads of processes in `TARGETS` are recorded: everyone else leaves after one map lookup.
//! The sums live in the kernel; user space reads per-thread totals.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
        macros::{btf_tracepoint, map},
        maps::HashMap,
        programs::BtfTracePointContext,
    };
    use tracer_ebpf::{MAX_TARGETS, MAX_THREADS, RunqWait};

    /// `task_struct.pid` offset, written by user space from BTF before load.
    #[unsafe(no_mangle)]
    static TASK_PID_OFFSET: u32 = 0;
    /// `task_struct.tgid` offset, written by user space from BTF before load.
    #[unsafe(no_mangle)]
    static TASK_TGID_OFFSET: u32 = 0;

    /// Target processes (tgid -> role, set by user space).
    #[map]
    static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);
    /// When each runnable target thread was enqueued (tid -> ktime ns).
    #[map]
    static ENQUEUED_AT: HashMap<u32, u64> = HashMap::with_max_entries(MAX_THREADS, 0);
    /// Accumulated run-queue wait per target thread (tid -> totals).
    #[map]
    static RUNQ_WAIT: HashMap<u32, RunqWait> = HashMap::with_max_entries(MAX_THREADS, 0);

    const TASK_RUNNING: u32 = 0;

    #[inline(always)]
    fn offset(global: &u32) -> usize {
        // Volatile so the compiler does not fold the placeholder 0 into the code: user space
        // rewrites the value in .rodata at load time.
        unsafe { core::ptr::read_volatile(global) as usize }
    }

    /// (tid, tgid) of a task, read through the BTF-derived offsets.
    #[inline(always)]
    fn task_ids(task: *const u8) -> Result<(u32, u32), i64> {
        let pid = unsafe {
            bpf_probe_read_kernel(task.add(offset(&TASK_PID_OFFSET)) as *const i32)
                .map_err(|e| e as i64)?
        };
        let tgid = unsafe {
            bpf_probe_read_kernel(task.add(offset(&TASK_TGID_OFFSET)) as *const i32)
                .map_err(|e| e as i64)?
        };
        Ok((pid as u32, tgid as u32))
    }

    #[inline(always)]
    fn is_target(tgid: u32) -> bool {
        unsafe { TARGETS.get(&tgid).is_some() }
    }

    #[inline(always)]
    fn mark_enqueued(task: *const u8) -> Result<(), i64> {
        let (tid, tgid) = task_ids(task)?;
        // The idle task (pid 0) is one slot shared by every CPU: never record it.
        if tid == 0 || !is_target(tgid) {
            return Ok(());
        }
        let now = unsafe { bpf_ktime_get_ns() };
        ENQUEUED_AT.insert(&tid, &now, 0).map_err(|e| e as i64)
    }

    #[btf_tracepoint(function = "sched_wakeup")]
    pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
        let task: *const u8 = ctx.arg(0);
        let _ = mark_enqueued(task);
        0
    }

    #[btf_tracepoint(function = "sched_wakeup_new")]
    pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
        let task: *const u8 = ctx.arg(0);
        let _ = mark_enqueued(task);
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

    fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), i64> {
        let prev: *const u8 = ctx.arg(1);
        let next: *const u8 = ctx.arg(2);
        let prev_state: u32 = ctx.arg(3);
        if prev_state == TASK_RUNNING {
            // Preempted while runnable: it waits in the run queue from now on.
            mark_enqueued(prev)?;
        }
        let (tid, tgid) = task_ids(next)?;
        if tid == 0 {
            return Ok(());
        }
        let Some(&enqueued_at) = (unsafe { ENQUEUED_AT.get(&tid) }) else {
            return Ok(());
        };
        let _ = ENQUEUED_AT.remove(&tid);
        let now = unsafe { bpf_ktime_get_ns() };
        if now < enqueued_at {
            return Ok(());
        }
        let waited = now - enqueued_at;
        match RUNQ_WAIT.get_ptr_mut(&tid) {
            Some(stats) => unsafe {
                (*stats).total_ns += waited;
                (*stats).count += 1;
                if waited > (*stats).max_ns {
                    (*stats).max_ns = waited;
                }
            },
            None => {
                let stats = RunqWait {
                    total_ns: waited,
                    count: 1,
                    max_ns: waited,
                    tgid,
                    _pad: 0,
                };
                RUNQ_WAIT.insert(&tid, &stats, 0).map_err(|e| e as i64)?;
            }
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
