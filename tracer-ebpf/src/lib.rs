//! Types shared between the kernel programs (`src/main.rs`, built for the bpfel target) and the
//! user-space agent (`tracer-user`, with the `user` feature).
//!
//! Every type is `#[repr(C)]` and `Copy`, with integer fields only (no `bool`), so kernel and user
//! space agree on the layout without padding surprises.
#![no_std]

/// Offsets of the `task_struct` fields the programs read. Rust eBPF gets no CO-RE relocations, so
/// user space reads these from the kernel's BTF (`/sys/kernel/btf/vmlinux`) and writes them into the
/// program's globals before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid` (the thread id).
    pub pid: u32,
    /// `task_struct.tgid` (the process id).
    pub tgid: u32,
}

/// Run-queue wait of one thread, accumulated in the kernel since the tracer attached: the time
/// between the thread becoming runnable (woken, or preempted while still runnable) and it being
/// switched in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunqWait {
    /// Sum of run-queue waits, nanoseconds.
    pub total_ns: u64,
    /// Number of waits measured.
    pub count: u64,
    /// Longest single wait, nanoseconds.
    pub max_ns: u64,
    /// The thread's process id (tgid), so user space can group threads without asking /proc
    /// (the thread may have exited by the time it reads).
    pub tgid: u32,
    pub _pad: u32,
}

/// Thread states of the accounting, as stored in [`ThreadTimes::state`].
pub mod state {
    /// On a CPU.
    pub const RUNNING: u32 = 0;
    /// Runnable, waiting in a run queue (preempted while runnable).
    pub const RUNNABLE: u32 = 1;
    /// Switched out with `task_struct.in_iowait` set (io_schedule(): block I/O, page-cache
    /// writeback throttling, ...), until woken — the interval delay accounting calls blkio delay.
    pub const IOWAIT: u32 = 2;
    /// Any other sleep (futex, epoll, nanosleep, stopped, ...).
    pub const SLEEPING: u32 = 3;
    /// Switched out for the last time (TASK_DEAD): nothing more to account.
    pub const DEAD: u32 = 4;
}

/// Where one target thread's time went since the tracer first saw it, accumulated in the kernel
/// each time the thread switches out (a per-thread software perf event, so no other task pays).
/// Between two switch-outs a thread was off the CPU in the state it left in, then waited on a run
/// queue, then ran: the kernel's own per-task counters split that interval —
/// `sched_info.run_delay` (run-queue wait, the schedstat figure) and `se.sum_exec_runtime`
/// (on-CPU); the rest is the state it left in. The interval since the last switch-out (`state`
/// since `since_ns`) is not yet in the totals: user space closes it at read time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    pub on_cpu_ns: u64,
    pub runq_ns: u64,
    pub iowait_ns: u64,
    pub sleep_ns: u64,
    /// Number of run-queue waits and I/O waits that ended.
    pub runq_count: u64,
    pub iowait_count: u64,
    /// Longest single run-queue wait / I/O wait and when it ended (bpf_ktime_get_ns, i.e.
    /// CLOCK_MONOTONIC).
    pub runq_max_ns: u64,
    pub runq_max_at_ns: u64,
    pub iowait_max_ns: u64,
    pub iowait_max_at_ns: u64,
    /// When the thread last switched out (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    /// The kernel's `sched_info.run_delay` and `se.sum_exec_runtime` of the thread then.
    pub run_delay_ns: u64,
    pub exec_ns: u64,
    /// When its last preemption stack was walked (at most one per millisecond).
    pub preempt_stack_ns: u64,
    /// The thread's process id (tgid), so user space can group threads that already exited.
    pub tgid: u32,
    /// One of [`state`]: the state the thread switched out in.
    pub state: u32,
    /// Kernel stack (id in the STACKS map, [`NO_STACK`] if none) where the thread last switched
    /// out — into I/O wait, or preempted into the run queue — and the ones of its longest I/O
    /// wait and longest run-queue wait (none for a run-queue wait that began with a wake-up:
    /// the thread was asleep, not preempted).
    pub off_cpu_stack: u32,
    pub iowait_max_stack: u32,
    pub runq_max_stack: u32,
    pub _pad: u32,
}

/// No stack recorded.
pub const NO_STACK: u32 = u32::MAX;
/// Distinct kernel stacks kept.
pub const MAX_STACKS: u32 = 1024;

/// Key of the block-I/O latency histograms: device and submitting process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BioKey {
    /// The kernel's dev_t of the bio's block device (major << 20 | minor).
    pub dev: u32,
    /// The process that submitted the bio (recorded at submit_bio, not at completion).
    pub tgid: u32,
}

/// Number of log2 buckets of [`BioLatency::slots`] (microseconds: slot i holds [2^i, 2^(i+1)) µs,
/// slot 0 holds < 2 µs).
pub const BIO_SLOTS: usize = 32;

/// Latency of the bios one process submitted to one device, from submit_bio to bio completion
/// (so time spent in blk-throttle queues counts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BioLatency {
    pub slots: [u64; BIO_SLOTS],
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub bytes: u64,
}

impl Default for BioLatency {
    fn default() -> Self {
        BioLatency {
            slots: [0; BIO_SLOTS],
            count: 0,
            total_ns: 0,
            max_ns: 0,
            bytes: 0,
        }
    }
}

/// A bio in flight, recorded when its submitter called submit_bio.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioStart {
    pub start_ns: u64,
    pub bytes: u64,
    pub tgid: u32,
    pub tid: u32,
}

/// Maximum number of bios in flight tracked at once.
pub const MAX_BIOS: u32 = 16384;
/// Maximum number of (device, process) histograms.
pub const MAX_BIO_KEYS: u32 = 1024;

/// Maximum number of threads whose run-queue wait is kept at once.
pub const MAX_THREADS: u32 = 16384;
/// Maximum number of target processes (the kubelet and the runtime, with room to spare).
pub const MAX_TARGETS: usize = 8;

/// The target processes, packed from the front; 0 ends the list. One array slot the programs
/// read without a hash lookup: every context switch on the node asks "is this a target?".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSet {
    pub tgids: [u32; MAX_TARGETS],
}

/// Bytes of a request's HPACK header block kept for user space: a whole grpc-go request block
/// even when every field is a literal (user space follows the connection's dynamic table, so it
/// needs each block whole).
pub const CRI_HDR_BYTES: usize = 256;
/// Kubelet CRI socket fds traced at once.
pub const MAX_CRI_FDS: u32 = 64;
/// CRI calls in flight tracked at once.
pub const MAX_CRI_STREAMS: u32 = 4096;
/// HTTP/2 frames looked at in one read or write (more → the parser resynchronises later).
pub const MAX_FRAMES_PER_SYSCALL: u32 = 32;

/// How a traced CRI call ended.
pub mod cri_end {
    /// The runtime's response ended the stream (HEADERS or DATA with END_STREAM).
    pub const RESPONSE: u32 = 0;
    /// The runtime reset the stream (RST_STREAM read by the kubelet).
    pub const RESET_BY_RUNTIME: u32 = 1;
    /// The kubelet reset the stream (RST_STREAM written: its deadline passed or it gave up).
    pub const CANCELLED: u32 = 2;
    /// The call returned an error (uprobe path: `Invoke` returned a non-nil error — a status
    /// from the runtime, the kubelet's deadline, or a broken connection).
    pub const ERROR: u32 = 3;
}

/// A read or write of a kubelet thread on a traced CRI socket, between sys_enter and sys_exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CriSyscall {
    pub buf: u64,
    pub fd: u32,
    /// 0 = read (runtime → kubelet), 1 = write (kubelet → runtime).
    pub dir: u32,
}

/// HTTP/2 framing state of one direction of one traced socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CriFraming {
    /// Bytes of the current frame still to come in later reads/writes.
    pub skip: u32,
    /// 1 once a read/write was seen to start on a frame boundary.
    pub synced: u32,
}

/// A CRI call (HTTP/2 stream) in flight: keyed by (fd, stream id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriStream {
    /// When the kubelet wrote the request's HEADERS frame.
    pub start_ns: u64,
    pub tid: u32,
    /// Bytes of `hdr` filled (the start of the request's HPACK header block).
    pub hdr_len: u32,
    /// Length of the whole header block fragment in the HEADERS frame (> `hdr_len`: truncated).
    pub hdr_total: u32,
    pub _pad: u32,
    pub hdr: [u8; CRI_HDR_BYTES],
}

/// Key of [`CriStream`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CriStreamKey {
    pub fd: u32,
    pub stream: u32,
}

/// A finished CRI call, sent to user space through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriCall {
    pub key: CriStreamKey,
    pub stream: CriStream,
    pub end_ns: u64,
    /// One of [`cri_end`].
    pub end: u32,
    pub _pad: u32,
}

/// The `fd` of the [`CriStreamKey`] of a call seen through the uprobes on the kubelet's gRPC
/// client (`grpc.(*ClientConn).Invoke`), not on a socket: its `stream` is a fold of the calling
/// goroutine's `g` pointer (one unary call per goroutine at a time), and its [`CriStream::hdr`]
/// holds the method name itself (`/runtime.v1.RuntimeService/ListContainers`), not HPACK.
pub const GO_CALL_FD: u32 = u32::MAX;
/// The method names the uprobe path keeps (the CRI services); other gRPC clients of the kubelet
/// (device plugins, DRA, CSI) pass through `Invoke` too.
pub const CRI_METHOD_PREFIX: &[u8; 12] = b"/runtime.v1.";

/// Indexes of the CRI tracer's counters (an array map).
pub mod cri_counter {
    /// HTTP/2 frames parsed.
    pub const FRAMES: u32 = 0;
    /// Reads/writes where the framing was lost (resynchronised later).
    pub const DESYNCS: u32 = 1;
    /// Finished calls dropped because the ring buffer was full.
    pub const LOST: u32 = 2;
    /// Calls whose start was not seen (begun before tracing, or the stream table was full).
    pub const UNMATCHED: u32 = 3;
    pub const COUNT: u32 = 4;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], integer fields only, no padding.
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::RunqWait {}
    unsafe impl aya::Pod for super::ThreadTimes {}
    unsafe impl aya::Pod for super::BioKey {}
    unsafe impl aya::Pod for super::BioLatency {}
    unsafe impl aya::Pod for super::BioStart {}
    unsafe impl aya::Pod for super::TargetSet {}
    unsafe impl aya::Pod for super::CriStreamKey {}
    unsafe impl aya::Pod for super::CriStream {}
    unsafe impl aya::Pod for super::CriCall {}
}
