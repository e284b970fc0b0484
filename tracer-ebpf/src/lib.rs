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

/// Maximum number of threads whose run-queue wait is kept at once.
pub const MAX_THREADS: u32 = 16384;
/// Maximum number of target processes.
pub const MAX_TARGETS: u32 = 256;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], integer fields only, no padding.
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::RunqWait {}
}
