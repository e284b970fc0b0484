//! Minimal /proc readers: just the fields the probe reports, from the host's /proc.
//!
//! Only files that do not take the target's mmap lock are read for every process (`stat`,
//! `comm`); `cmdline` (which can hang behind a task stuck in a page fault) is read only for the
//! few processes of interest, and all of it runs on a blocking thread under a timeout.
use std::{collections::HashMap, fs, path::Path};

use nodehealth_proto::node::Liveness;

use crate::host::{HostRoot, USER_HZ};

/// The fields of `/proc/<pid>/stat` the probe uses (proc_pid_stat(5)).
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// utime + stime, in USER_HZ ticks.
    pub cpu_ticks: u64,
    pub threads: u32,
    /// Start time after boot, in USER_HZ ticks.
    pub start_ticks: u64,
}

impl Stat {
    pub fn parse(text: &str) -> Option<Stat> {
        // comm may hold spaces and parentheses: it ends at the last ')'.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let pid = text[..open].trim().parse().ok()?;
        let comm = text[open + 1..close].to_string();
        let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
        // rest[0] is field 3 (state).
        let field = |n: usize| rest.get(n - 3).copied();
        let num = |n: usize| field(n).and_then(|v| v.parse::<u64>().ok());
        Some(Stat {
            pid,
            comm,
            state: field(3)?.chars().next()?,
            ppid: num(4)? as u32,
            cpu_ticks: num(14)? + num(15)?,
            threads: num(20)? as u32,
            start_ticks: num(22)?,
        })
    }

    pub fn liveness(&self) -> Liveness {
        liveness_of(self.state)
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / USER_HZ
    }

    pub fn started_after_boot_seconds(&self) -> f64 {
        self.start_ticks as f64 / USER_HZ
    }
}

pub fn liveness_of(state: char) -> Liveness {
    match state {
        'R' => Liveness::Running,
        'S' => Liveness::Sleeping,
        'D' => Liveness::DiskSleep,
        'T' | 't' => Liveness::Stopped,
        'Z' => Liveness::Zombie,
        _ => Liveness::Other,
    }
}

pub fn read_stat(host: &HostRoot, pid: u32) -> Option<Stat> {
    fs::read_to_string(host.proc_file(pid, "stat"))
        .ok()
        .and_then(|s| Stat::parse(&s))
}

/// Every numeric entry of /proc.
pub fn pids(host: &HostRoot) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(host.proc()) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// A snapshot of every process's stat.
pub fn snapshot(host: &HostRoot) -> HashMap<u32, Stat> {
    pids(host)
        .into_iter()
        .filter_map(|pid| read_stat(host, pid).map(|s| (pid, s)))
        .collect()
}

pub fn cmdline(host: &HostRoot, pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(host.proc_file(pid, "cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// VmRSS from /proc/<pid>/status, in bytes.
pub fn rss_bytes(host: &HostRoot, pid: u32) -> Option<u64> {
    let status = fs::read_to_string(host.proc_file(pid, "status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

pub fn readlink(host: &HostRoot, pid: u32, file: &str) -> Option<String> {
    fs::read_link(host.proc_file(pid, file))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Seconds since boot (/proc/uptime).
pub fn uptime_seconds(host: &HostRoot) -> Option<f64> {
    fs::read_to_string(host.proc().join("uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Socket inodes a process holds open (`socket:[N]` links in /proc/<pid>/fd).
pub fn socket_inodes(proc_dir: &Path) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
        return Vec::new();
    };
    fds.filter_map(|e| {
        let target = fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// One line of /proc/<pid>/cgroup: hierarchy id, controllers, path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_cgroup_file(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let hierarchy = it.next()?.parse().ok()?;
            let controllers = it
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some(CgroupLine {
                hierarchy,
                controllers,
                path: it.next()?.to_string(),
            })
        })
        .collect()
}

pub fn cgroups(host: &HostRoot, pid: u32) -> Vec<CgroupLine> {
    fs::read_to_string(host.proc_file(pid, "cgroup"))
        .map(|t| parse_cgroup_file(&t))
        .unwrap_or_default()
}

/// A cgroup file system mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: String,
    pub version: u8,
    /// v1 controllers from the super options (`rw,cpu,cpuacct`), or `name=` hierarchies.
    pub controllers: Vec<String>,
    /// mountinfo field 4: the cgroup path mounted at the mount point (`/` on the host).
    pub root: String,
}

/// cgroup mounts from a mountinfo file (proc_pid_mountinfo(5)).
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let fstype = *post.first()?;
            let version = match fstype {
                "cgroup" => 1,
                "cgroup2" => 2,
                _ => return None,
            };
            let controllers = if version == 1 {
                post.get(2)?
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("relatime"))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            Some(CgroupMount {
                mount_point: unescape_mount(pre.get(4)?),
                version,
                controllers,
                root: unescape_mount(pre.get(3)?),
            })
        })
        .collect()
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

/// The directory of a process's cgroup for a v1 controller (or the v2 unified hierarchy when
/// `controller` is None or the controller is not mounted as v1), mapped under the host root.
/// Mounts come from the host's PID 1 mountinfo, so the agent's own mount namespace does not
/// matter. Returns the cgroup version, the cgroup path and the agent-side directory.
pub fn cgroup_dir(
    host: &HostRoot,
    pid: u32,
    controller: Option<&str>,
) -> Option<(u8, String, std::path::PathBuf)> {
    let mountinfo = fs::read_to_string(host.proc().join("1/mountinfo")).ok()?;
    let mounts = parse_cgroup_mounts(&mountinfo);
    let lines = cgroups(host, pid);
    let under = |mount: &CgroupMount, path: &str| {
        let rel = path
            .strip_prefix(mount.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        let dir = host.lexical(&mount.mount_point);
        if rel.is_empty() { dir } else { dir.join(rel) }
    };
    if let Some(c) = controller {
        let v1 = lines
            .iter()
            .find(|l| l.hierarchy != 0 && l.controllers.iter().any(|x| x == c));
        if let Some(line) = v1 {
            let mount = mounts
                .iter()
                .find(|m| m.version == 1 && m.controllers.iter().any(|x| x == c))?;
            return Some((1, line.path.clone(), under(mount, &line.path)));
        }
    }
    let line = lines.iter().find(|l| l.hierarchy == 0)?;
    let mount = mounts.iter().find(|m| m.version == 2)?;
    let dir = under(mount, &line.path);
    // A v2 hierarchy without the controller enabled (e.g. the empty unified mount beside v1).
    if let Some(c) = controller {
        let enabled = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        if !enabled.split_whitespace().any(|x| x == c) && c != "freezer" {
            return None;
        }
    }
    Some((2, line.path.clone(), dir))
}

/// Whether the process's cgroup is frozen: v1 freezer.state FROZEN/FREEZING, v2 cgroup.events
/// `frozen 1`. On a hybrid host both are asked (the v2 freezer needs no controller, so a process
/// can be frozen through the unified hierarchy beside a thawed v1 freezer). None when there is no
/// freezer to ask.
pub fn cgroup_frozen(host: &HostRoot, pid: u32) -> Option<bool> {
    let v1 = cgroup_dir(host, pid, Some("freezer"))
        .filter(|(version, _, _)| *version == 1)
        .and_then(|(_, _, dir)| fs::read_to_string(dir.join("freezer.state")).ok())
        .map(|state| matches!(state.trim(), "FROZEN" | "FREEZING"));
    let v2 = cgroup_dir(host, pid, None)
        .filter(|(version, _, _)| *version == 2)
        .and_then(|(_, _, dir)| fs::read_to_string(dir.join("cgroup.events")).ok())
        .map(|events| events.lines().any(|l| l.trim() == "frozen 1"));
    match (v1, v2) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
    }
}

/// A process's memory cgroup: the limit that holds it (None when unlimited) and its usage. The
/// limit is the tightest on the way up: v1's `hierarchical_memory_limit` (memory.stat), v2 the
/// smallest `memory.max` of the cgroup and its ancestors — a kubelet in a cgroup of its own
/// under a limited slice is held by the slice. v1 reports "no limit" as the largest page-aligned
/// value (about 2^63), so anything above 2^62 is no limit.
pub fn cgroup_memory(host: &HostRoot, pid: u32) -> Option<nodehealth_proto::node::CgroupMemory> {
    let (version, path, dir) = cgroup_dir(host, pid, Some("memory"))?;
    let read = |dir: &std::path::Path, name: &str| fs::read_to_string(dir.join(name)).ok();
    let (limit, usage) = if version == 1 {
        let stat = read(&dir, "memory.stat").unwrap_or_default();
        let hierarchical = stat
            .lines()
            .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))
            .map(str::to_string);
        (
            hierarchical.or_else(|| read(&dir, "memory.limit_in_bytes"))?,
            read(&dir, "memory.usage_in_bytes")?,
        )
    } else {
        // memory.max exists in every non-root cgroup with the controller enabled; the walk stops
        // at the first directory without it (the hierarchy's root).
        let mut tightest: Option<u64> = None;
        let mut at = Some(dir.as_path());
        while let Some(d) = at {
            let Some(text) = read(d, "memory.max") else {
                break;
            };
            if let Some(l) = parse_memory_limit(&text) {
                tightest = Some(tightest.map_or(l, |t| t.min(l)));
            }
            at = d.parent();
        }
        (
            tightest
                .map(|l| l.to_string())
                .unwrap_or_else(|| "max".into()),
            read(&dir, "memory.current")?,
        )
    };
    Some(nodehealth_proto::node::CgroupMemory {
        path,
        version,
        limit_bytes: parse_memory_limit(&limit),
        usage_bytes: usage.trim().parse().ok()?,
    })
}

/// OOM kills counted in a process's memory cgroup: v2 `memory.events` `oom_kill`, v1
/// `memory.oom_control` `oom_kill` (kernel 4.13+). Cumulative for the cgroup's life, so a process
/// killed and restarted in the same cgroup (a kubelet under systemd or a supervisor) adds up.
pub fn cgroup_oom_kills(host: &HostRoot, pid: u32) -> Option<u64> {
    let (version, _, dir) = cgroup_dir(host, pid, Some("memory"))?;
    let file = if version == 1 {
        "memory.oom_control"
    } else {
        "memory.events"
    };
    let text = fs::read_to_string(dir.join(file)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

fn parse_memory_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|l| *l < 1 << 62)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_v1_and_v2() {
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("16777216\n"), Some(16 << 20));
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "4242 (kube let) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 \
                    37 0 123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let s = Stat::parse(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "kube let) (x)");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks, 200);
        assert_eq!(s.threads, 37);
        assert_eq!(s.start_ticks, 123456);
    }

    #[test]
    fn own_stat_is_readable() {
        let host = HostRoot::new("/");
        let me = read_stat(&host, std::process::id()).unwrap();
        assert!(me.threads >= 1);
        assert!(rss_bytes(&host, std::process::id()).unwrap() > 0);
    }

    #[test]
    fn cgroup_lines_and_mounts() {
        let lines = parse_cgroup_file("4:cpu:/kubelet\n3:cpu,cpuacct:/x\n0::/system.slice/k\n");
        assert_eq!(lines[0].controllers, vec!["cpu"]);
        assert_eq!(lines[2].hierarchy, 0);
        assert_eq!(lines[2].path, "/system.slice/k");
        let mounts = parse_cgroup_mounts(
            "30 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cpu rw,cpu\n\
             31 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
             32 25 0:29 / /tmp rw - tmpfs tmpfs rw\n",
        );
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].controllers, vec!["cpu"]);
        assert_eq!(mounts[1].version, 2);
        assert_eq!(mounts[1].mount_point, "/sys/fs/cgroup/unified");
    }
}
