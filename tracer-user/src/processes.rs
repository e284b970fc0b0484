//! Kubelet and runtime processes through /proc: alive, stopped, zombie or gone; uptime, RSS,
//! CPU over the window, threads; containerd shims left without containers; zombie children.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use nodehealth_proto::node::{
    Identification, Liveness, ProcessState, Processes, RuntimeSocket, Shim, ZombieGroup,
};

use crate::{
    host::{HostRoot, USER_HZ, now_unix_ms},
    procfs::{self, Stat},
};

/// Names runtimes are known by, used only when no process listens on the socket.
const RUNTIME_NAMES: &[&str] = &["containerd", "crio", "cri-dockerd", "dockerd"];

/// All processes at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    pub stats: HashMap<u32, Stat>,
    pub uptime_seconds: f64,
    pub at_unix_ms: i64,
}

impl Sample {
    pub fn take(host: &HostRoot) -> Sample {
        Sample {
            stats: procfs::snapshot(host),
            uptime_seconds: procfs::uptime_seconds(host).unwrap_or(0.0),
            at_unix_ms: now_unix_ms(),
        }
    }
}

/// Which process is the runtime: the socket's listener, else a process with a runtime's name.
pub fn runtime_pid(
    socket: Option<&RuntimeSocket>,
    sample: &Sample,
) -> Option<(u32, Identification)> {
    if let Some(h) = socket.and_then(|s| s.listeners.first()) {
        return Some((h.pid, Identification::SocketListener));
    }
    let mut named: Vec<&Stat> = sample
        .stats
        .values()
        .filter(|s| s.state != 'Z' && RUNTIME_NAMES.contains(&s.comm.as_str()))
        .collect();
    named.sort_by_key(|s| s.start_ticks);
    named.first().map(|s| (s.pid, Identification::Name))
}

fn state(
    host: &HostRoot,
    pid: u32,
    identified_by: Identification,
    start: &Sample,
    end: &Sample,
    window: Duration,
) -> Option<ProcessState> {
    let first = start.stats.get(&pid);
    // The same process only if its start time did not change (pids are reused).
    let last = end
        .stats
        .get(&pid)
        .filter(|e| first.is_none_or(|f| f.start_ticks == e.start_ticks));
    let any = last.or(first)?;
    let liveness = last.map(Stat::liveness).unwrap_or(Liveness::Gone);
    let liveness_at_start = first.map(Stat::liveness).filter(|l| *l != liveness);
    let cpu_percent_window = match (first, last) {
        (Some(f), Some(l)) if window.as_secs_f64() > 0.0 => Some(
            (l.cpu_ticks.saturating_sub(f.cpu_ticks) as f64 / USER_HZ) / window.as_secs_f64()
                * 100.0,
        ),
        _ => None,
    };
    let started_after_boot = any.started_after_boot_seconds();
    let uptime = (end.uptime_seconds - started_after_boot).max(0.0);
    let parent_comm = end
        .stats
        .get(&any.ppid)
        .or_else(|| start.stats.get(&any.ppid))
        .map(|p| p.comm.clone());
    Some(ProcessState {
        pid,
        comm: any.comm.clone(),
        exe: procfs::readlink(host, pid, "exe"),
        identified_by,
        liveness,
        liveness_at_start,
        cgroup_frozen: procfs::cgroup_frozen(host, pid),
        parent_pid: any.ppid,
        parent_comm,
        started_at_unix_ms: end.at_unix_ms - (uptime * 1000.0) as i64,
        uptime_seconds: uptime,
        started_after_boot_seconds: started_after_boot,
        rss_bytes: procfs::rss_bytes(host, pid).unwrap_or(0),
        threads: any.threads,
        cpu_seconds_total: any.cpu_seconds(),
        cpu_percent_window,
        oom_kills_in_kernel_log: 0,
        memory_cgroup: procfs::cgroup_memory(host, pid),
    })
}

/// `-flag value` from a shim's command line.
fn arg_value(args: &[String], flag: &str) -> Option<String> {
    let pos = args
        .iter()
        .position(|a| a == flag || a.trim_start_matches('-') == flag.trim_start_matches('-'))?;
    args.get(pos + 1).cloned()
}

/// Collects the process evidence from two samples taken `window` apart.
/// `cri_ids` are the sandbox and container ids the CRI listed (None when it did not answer).
pub fn collect(
    host: &HostRoot,
    kubelet_pid: Option<u32>,
    socket: Option<&RuntimeSocket>,
    start: &Sample,
    end: &Sample,
    window: Duration,
    cri_ids: Option<&HashSet<String>>,
) -> Processes {
    let mut p = Processes {
        node_uptime_seconds: end.uptime_seconds,
        ..Default::default()
    };
    if let Some(pid) = kubelet_pid {
        p.kubelet = state(host, pid, Identification::Kubelet, start, end, window);
        if p.kubelet.is_none() {
            p.notes
                .push(format!("kubelet pid {pid} not found in /proc"));
        }
    }
    let runtime = runtime_pid(socket, end).or_else(|| runtime_pid(socket, start));
    if let Some((pid, how)) = runtime {
        p.runtime = state(host, pid, how, start, end, window);
    }
    if let Some(r) = &p.runtime
        && r.identified_by == Identification::SocketListener
        && !RUNTIME_NAMES.contains(&r.comm.as_str())
    {
        p.notes.push(format!(
            "the runtime socket's listener is {:?} (pid {}), not a known runtime: \
             a CRI proxy or shim in front of the runtime?",
            r.comm, r.pid
        ));
    }
    if let Some(s) = socket
        && s.listeners.len() > 1
    {
        p.notes.push(format!(
            "{} processes hold the runtime's listening socket: {:?}",
            s.listeners.len(),
            s.listeners
        ));
    }

    let mut children: HashMap<u32, Vec<&Stat>> = HashMap::new();
    for s in end.stats.values() {
        children.entry(s.ppid).or_default().push(s);
    }
    let mut shims: Vec<Shim> = end
        .stats
        .values()
        .filter(|s| s.comm.starts_with("containerd-shim") && s.state != 'Z')
        .map(|s| {
            let args = procfs::cmdline(host, s.pid).unwrap_or_default();
            let kids = children.get(&s.pid).map(Vec::as_slice).unwrap_or(&[]);
            let zombies = kids.iter().filter(|k| k.state == 'Z').count() as u32;
            let id = arg_value(&args, "-id");
            Shim {
                pid: s.pid,
                comm: s.comm.clone(),
                known_to_cri: cri_ids.map(|ids| id.as_ref().is_some_and(|i| ids.contains(i))),
                id,
                namespace: arg_value(&args, "-namespace"),
                address: arg_value(&args, "-address"),
                live_children: kids.len() as u32 - zombies,
                zombie_children: zombies,
                started_at_unix_ms: end.at_unix_ms
                    - ((end.uptime_seconds - s.started_after_boot_seconds()).max(0.0) * 1000.0)
                        as i64,
            }
        })
        .collect();
    shims.sort_by_key(|s| s.pid);

    let mut parents: Vec<u32> = shims.iter().map(|s| s.pid).collect();
    parents.extend(p.kubelet.as_ref().map(|k| k.pid));
    parents.extend(p.runtime.as_ref().map(|r| r.pid));
    for parent in parents {
        let zombies: Vec<&&Stat> = children
            .get(&parent)
            .map(|k| k.iter().filter(|k| k.state == 'Z').collect())
            .unwrap_or_default();
        if zombies.is_empty() {
            continue;
        }
        p.zombies.push(ZombieGroup {
            parent_pid: parent,
            parent_comm: end
                .stats
                .get(&parent)
                .map(|s| s.comm.clone())
                .unwrap_or_default(),
            count: zombies.len() as u32,
            examples: zombies.iter().take(5).map(|z| z.comm.clone()).collect(),
        });
    }
    p.shims = shims;
    p
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use nodehealth_proto::node::SocketHolder;

    use super::*;

    #[test]
    fn a_listener_that_is_not_a_known_runtime_is_named_in_a_note() {
        let host = HostRoot::new("/");
        let me = std::process::id();
        let socket = RuntimeSocket {
            listeners: vec![SocketHolder {
                pid: me,
                comm: "cri-proxy".into(),
            }],
            ..Default::default()
        };
        let s = Sample::take(&host);
        let p = collect(&host, None, Some(&socket), &s, &s, Duration::ZERO, None);
        let rt = p.runtime.unwrap();
        assert_eq!(
            (rt.pid, rt.identified_by),
            (me, Identification::SocketListener)
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("not a known runtime: a CRI proxy")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn a_stopped_process_is_alive_but_stopped_and_an_exited_one_is_gone() {
        let host = HostRoot::new("/");
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        // Right after spawn the child may still be exec'ing (reading `sleep` from disk: state D);
        // wait until it is the sleeping `sleep` the test means.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let start = loop {
            let s = Sample::take(&host);
            let settled = s
                .stats
                .get(&pid)
                .is_some_and(|st| st.comm == "sleep" && st.liveness() == Liveness::Sleeping);
            if settled || std::time::Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(100));
        let end = Sample::take(&host);
        let s = state(
            &host,
            pid,
            Identification::Kubelet,
            &start,
            &end,
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(s.liveness, Liveness::Stopped);
        assert_eq!(s.liveness_at_start, Some(Liveness::Sleeping));
        assert_eq!(s.parent_pid, std::process::id());
        assert!(s.rss_bytes > 0);
        child.kill().unwrap();
        child.wait().unwrap();
        let gone = Sample::take(&host);
        let s = state(
            &host,
            pid,
            Identification::Kubelet,
            &start,
            &gone,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(s.liveness, Liveness::Gone);
    }
}
