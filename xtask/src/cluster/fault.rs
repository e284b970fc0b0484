//! `cargo xtask fault <name>` and `cargo xtask heal`: failures injected into the local cluster,
//! each touching only what the harness created. Active faults are listed in
//! `target/cluster/faults/`; `heal` undoes all of them.

use std::{fs, path::PathBuf, thread, time::Duration};

use anyhow::{Context, Result, bail};

use super::{Layout, component_cgroup, supervise};
use crate::sh::{info, step};

#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Freeze the harness's containerd (cgroup freezer): the runtime socket stops answering.
    RuntimeFrozen,
    /// Cut the kubelet's path to the API server (the admin path stays up).
    ApiPartition,
    /// Stop the kubelet (like `systemctl stop kubelet`).
    KubeletStopped,
    /// Freeze the kubelet (cgroup freezer): alive but unresponsive.
    KubeletFrozen,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::RuntimeFrozen => "runtime-frozen",
            Fault::ApiPartition => "api-partition",
            Fault::KubeletStopped => "kubelet-stopped",
            Fault::KubeletFrozen => "kubelet-frozen",
        }
    }

    const ALL: [Fault; 4] = [
        Fault::RuntimeFrozen,
        Fault::ApiPartition,
        Fault::KubeletStopped,
        Fault::KubeletFrozen,
    ];
}

fn marker(l: &Layout, f: Fault) -> PathBuf {
    l.dir.join("faults").join(f.name())
}

/// The file whose existence cuts the kubelet's API path (read by `xtask lb`).
pub fn cut_file(l: &Layout) -> PathBuf {
    l.run_dir().join("api-partition.cut")
}

fn freeze(component: &str, state: &str) -> Result<()> {
    let path = component_cgroup("freezer", component).join("freezer.state");
    fs::write(&path, state).with_context(|| format!("writing {state} to {path:?}"))?;
    // FREEZING -> FROZEN takes a moment; wait so the fault is in place when we return.
    for _ in 0..100 {
        if fs::read_to_string(&path)?.trim() == state {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("{component} did not reach {state}")
}

pub fn apply(f: Fault) -> Result<()> {
    let l = Layout::new();
    if !super::api::ready(&l) {
        bail!("the local cluster is not running: `cargo xtask cluster up` first");
    }
    step(format!("fault {}", f.name()));
    match f {
        Fault::RuntimeFrozen => freeze("containerd", "FROZEN")?,
        Fault::KubeletFrozen => freeze("kubelet", "FROZEN")?,
        Fault::ApiPartition => fs::write(cut_file(&l), "")?,
        Fault::KubeletStopped => {
            let files = supervise::files(&l.run_dir(), "kubelet");
            fs::write(&files.stop, "")?;
            for _ in 0..150 {
                if !files.supervisor_pid.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    fs::create_dir_all(l.dir.join("faults"))?;
    fs::write(marker(&l, f), "")?;
    info("applied; `cargo xtask heal` undoes it");
    Ok(())
}

pub fn heal() -> Result<()> {
    let l = Layout::new();
    for f in Fault::ALL {
        if !marker(&l, f).exists() {
            continue;
        }
        step(format!("healing {}", f.name()));
        match f {
            Fault::RuntimeFrozen => freeze("containerd", "THAWED")?,
            Fault::KubeletFrozen => freeze("kubelet", "THAWED")?,
            Fault::ApiPartition => {
                let _ = fs::remove_file(cut_file(&l));
            }
            Fault::KubeletStopped => super::restart_component(&l, "kubelet")?,
        }
        fs::remove_file(marker(&l, f))?;
    }
    Ok(())
}
