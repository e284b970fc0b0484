//! The eBPF tracer (`tracer-ebpf`) loaded into the kernel: per-thread state accounting (on-CPU,
//! run-queue wait, I/O wait, other sleep) of target processes, and the latency of the block I/O
//! they submit, per device.
//!
//! The kernel keeps per-thread totals (updated at every state change) and per-(device, process)
//! log2 histograms; user space reads only those aggregates. [`Tracer::threads`] closes the interval
//! of each thread's current state at read time, so sampling once a second gives exact per-second
//! figures even for a thread that has been asleep (or stuck in I/O) for the whole second.

use std::collections::HashMap;

use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap},
    programs::{BtfTracePoint, FEntry},
};
use tracer_ebpf::{
    BioKey, BioLatency, CriCall, CriStream, CriStreamKey, RunqWait, TargetSet, ThreadTimes,
    cri_counter, state,
};

use crate::{
    btf::{Btf, BtfError},
    ksyms::KernelSymbols,
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// The scheduler and block tracepoints (tp_btf: no tracefs needed).
const TRACEPOINTS: [&str; 5] = [
    "sched_wakeup",
    "sched_wakeup_new",
    "sched_switch",
    "block_rq_complete",
    "block_bio_complete",
];
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

/// How the bio submitter is recorded on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BioSubmitHook {
    /// fentry on submit_bio: every bio in its submitter's context.
    SubmitBio,
    /// The block_bio_queue tracepoint (fentry refused, with the reason): bios that blk-throttle
    /// delays are re-issued by a kernel worker and not attributed to their submitter.
    BlockBioQueue { fentry_error: String },
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
    pub task_pid: u32,
    pub task_tgid: u32,
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
            task_pid: btf.member_offset("task_struct", "pid")?.byte_offset(),
            task_tgid: btf.member_offset("task_struct", "tgid")?.byte_offset(),
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

impl ThreadSample {
    /// Closes the open interval of `t` at `now_ns` (CLOCK_MONOTONIC).
    pub fn from_kernel(tid: u32, t: &ThreadTimes, now_ns: u64) -> Self {
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
        match t.state {
            state::RUNNING => s.on_cpu_ns += open,
            state::RUNNABLE => {
                s.runq_ns += open;
                if open > s.runq_max_ns {
                    (s.runq_max_ns, s.runq_max_at_ns) = (open, now_ns);
                    s.runq_max_stack = t.off_cpu_stack;
                }
            }
            state::IOWAIT => {
                s.iowait_ns += open;
                if open > s.iowait_max_ns {
                    (s.iowait_max_ns, s.iowait_max_at_ns) = (open, now_ns);
                    s.iowait_max_stack = t.off_cpu_stack;
                }
            }
            state::SLEEPING => s.sleep_ns += open,
            _ => s.state_for_ns = 0,
        }
        s
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
            .override_global("TASK_PID_OFFSET", &o.task_pid, true)
            .override_global("TASK_TGID_OFFSET", &o.task_tgid, true)
            .override_global("TASK_IOWAIT_BYTE", &o.task_iowait_byte, true)
            .override_global("TASK_IOWAIT_MASK", &o.task_iowait_mask, true)
            .override_global("BIO_BDEV_OFFSET", &o.bio_bdev, true)
            .override_global("BDEV_DEV_OFFSET", &o.bdev_dev, true)
            .override_global("BIO_SIZE_OFFSET", &o.bio_size, true)
            .override_global("RQ_BIO_OFFSET", &o.rq_bio, true)
            .override_global("BIO_NEXT_OFFSET", &o.bio_next, true)
            .override_global("KUBELET_TGID", &cri.map(|c| c.kubelet).unwrap_or(0), true)
            .load(EBPF_OBJECT)
            .map_err(TraceError::Load)?;
        for name in TRACEPOINTS {
            attach_tp_btf(&mut ebpf, name, &aya_btf)?;
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
        if let Some(cri) = cri {
            {
                let mut fds: BpfHashMap<_, u32, u32> =
                    BpfHashMap::try_from(ebpf.map_mut("CRI_FDS").expect("CRI_FDS map in object"))
                        .map_err(map_err("CRI_FDS"))?;
                for fd in &cri.fds {
                    fds.insert(*fd, 1, 0).map_err(map_err("CRI_FDS"))?;
                }
            }
            for name in SYSCALL_TRACEPOINTS {
                attach_tp_btf(&mut ebpf, name, &aya_btf)?;
            }
            let ring = ebpf.take_map("CRI_CALLS").expect("CRI_CALLS map in object");
            cri_calls = Some(RingBuf::try_from(ring).map_err(map_err("CRI_CALLS"))?);
        }
        Ok(Tracer {
            ebpf,
            bio_hook,
            cri_calls,
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

    /// How bio submitters are recorded on this kernel.
    pub fn bio_hook(&self) -> &BioSubmitHook {
        &self.bio_hook
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
        set.set(0, value, 0).map_err(map_err("TARGET_SET"))
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
        let now = monotonic_ns();
        Ok(raw
            .iter()
            .map(|(tid, t)| ThreadSample::from_kernel(*tid, t, now))
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
    use super::*;

    #[test]
    fn open_interval_is_closed_into_the_current_state() {
        let t = ThreadTimes {
            iowait_ns: 10,
            iowait_max_ns: 10,
            since_ns: 1_000,
            state: state::IOWAIT,
            tgid: 7,
            ..Default::default()
        };
        let s = ThreadSample::from_kernel(8, &t, 1_500);
        assert_eq!(
            (s.iowait_ns, s.iowait_max_ns, s.state_for_ns),
            (510, 500, 500)
        );
        let dead = ThreadTimes {
            state: state::DEAD,
            since_ns: 0,
            ..t
        };
        let s = ThreadSample::from_kernel(8, &dead, 1_500);
        assert_eq!((s.iowait_ns, s.state_for_ns), (10, 0));
    }

    #[test]
    fn kernel_offsets_resolve_on_the_running_kernel() {
        let o = KernelOffsets::resolve(&Btf::from_kernel().expect("kernel BTF")).unwrap();
        assert_eq!(o.task_tgid, o.task_pid + 4);
        assert_eq!(o.task_iowait_mask.count_ones(), 1);
        assert!(o.bio_bdev > 0 && o.bio_size > 0);
    }

    #[test]
    fn dev_names() {
        assert_eq!(dev_name((7 << 20) | 3), "7:3");
    }
}
