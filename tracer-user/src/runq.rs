//! Run-queue wait of target processes' threads, measured in the kernel by `tracer-ebpf`.

use std::collections::HashMap;

use aya::{Btf as AyaBtf, Ebpf, EbpfLoader, maps::HashMap as BpfHashMap, programs::BtfTracePoint};
use tracer_ebpf::RunqWait;

use crate::btf::{Btf, BtfError};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// The scheduler tracepoints the run-queue accounting attaches to (tp_btf: no tracefs needed).
const PROGRAMS: [&str; 3] = ["sched_wakeup", "sched_wakeup_new", "sched_switch"];

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
    /// A program failed to verify, load or attach.
    #[error("attaching {program} failed: {source}")]
    Attach {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
}

/// Loaded and attached run-queue accounting. Dropping it detaches every program and frees the maps.
pub struct RunqTracer {
    ebpf: Ebpf,
}

impl RunqTracer {
    /// Resolves `task_struct` offsets from kernel BTF, loads the programs and attaches them.
    pub fn attach() -> Result<Self, TraceError> {
        if EBPF_OBJECT.is_empty() {
            return Err(TraceError::NotBuilt);
        }
        let btf = Btf::from_kernel()?;
        let pid = btf.member_offset("task_struct", "pid")?.byte_offset();
        let tgid = btf.member_offset("task_struct", "tgid")?.byte_offset();
        let aya_btf = AyaBtf::from_sys_fs().map_err(|e| TraceError::AyaBtf(e.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("TASK_PID_OFFSET", &pid, true)
            .override_global("TASK_TGID_OFFSET", &tgid, true)
            .load(EBPF_OBJECT)
            .map_err(TraceError::Load)?;
        for name in PROGRAMS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(TraceError::Attach {
                    program: name,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(|source| TraceError::Attach {
                    program: name,
                    source,
                })?;
            program
                .load(name, &aya_btf)
                .map_err(|source| TraceError::Attach {
                    program: name,
                    source,
                })?;
            program.attach().map_err(|source| TraceError::Attach {
                program: name,
                source,
            })?;
        }
        Ok(RunqTracer { ebpf })
    }

    /// Starts recording the threads of process `tgid` (and any thread it creates later).
    pub fn add_target(&mut self, tgid: u32) -> Result<(), TraceError> {
        let mut targets: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(self.ebpf.map_mut("TARGETS").expect("TARGETS map in object"))
                .map_err(|source| TraceError::Map {
                    map: "TARGETS",
                    source,
                })?;
        targets
            .insert(tgid, 1, 0)
            .map_err(|source| TraceError::Map {
                map: "TARGETS",
                source,
            })
    }

    /// Run-queue wait per thread id since attach, for every thread recorded so far.
    pub fn thread_waits(&self) -> Result<HashMap<u32, RunqWait>, TraceError> {
        let waits: BpfHashMap<_, u32, RunqWait> =
            BpfHashMap::try_from(self.ebpf.map("RUNQ_WAIT").expect("RUNQ_WAIT map in object"))
                .map_err(|source| TraceError::Map {
                    map: "RUNQ_WAIT",
                    source,
                })?;
        waits
            .iter()
            .map(|entry| {
                entry.map_err(|source| TraceError::Map {
                    map: "RUNQ_WAIT",
                    source,
                })
            })
            .collect()
    }
}
