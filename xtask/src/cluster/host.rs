//! What the local cluster changes on the machine, recorded before `up` and undone by `down`:
//! kernel tunables the kubelet rewrites, cgroups, mounts, iptables chains, and files outside
//! `target/cluster/` (log files, directories components create at fixed paths).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::sh::{self, info};

/// Tunables the kubelet sets at start (pkg/kubelet/cm/container_manager_linux.go,
/// setupKernelTunables) plus those the harness and tests set.
pub const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "kernel/task_delayacct",
    "kernel/bpf_stats_enabled",
];

/// Paths components create at fixed locations whatever their configuration: removed on `down`
/// when they did not exist before `up`.
pub const FIXED_PATHS: &[&str] = &[
    "/var/log/kubelet.log",
    "/var/log/containerd.log",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/run/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
];

/// cgroup v1 controllers the harness creates its own groups in.
pub const CGROUP_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
];

/// The machine as found before `up`.
#[derive(Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub sysctls: BTreeMap<String, String>,
    pub absent_paths: Vec<String>,
    pub iptables_chains: Vec<String>,
    /// `nft list tables` lines ("table ip mangle") before `up`.
    #[serde(default)]
    pub nft_tables: Vec<String>,
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name)
}

pub fn take_snapshot() -> Snapshot {
    let sysctls = SYSCTLS
        .iter()
        .filter_map(|s| {
            let v = fs::read_to_string(sysctl_path(s)).ok()?;
            Some((s.to_string(), v.trim().to_string()))
        })
        .collect();
    let absent_paths = FIXED_PATHS
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_err())
        .map(|p| p.to_string())
        .collect();
    Snapshot {
        sysctls,
        absent_paths,
        iptables_chains: iptables_chains(),
        nft_tables: nft_tables(),
    }
}

fn nft_tables() -> Vec<String> {
    sh::output(Command::new("nft").args(["list", "tables"]))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.starts_with("table "))
        .collect()
}

/// Restores tunables, removes fixed paths that were absent, and deletes iptables chains that
/// appeared. Reports what it changed; errors are reported and the rest still runs.
pub fn restore(snapshot: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in &snapshot.sysctls {
        let path = sysctl_path(name);
        match fs::read_to_string(&path) {
            Ok(now) if now.trim() == value => {}
            Ok(now) => {
                info(format!("restoring {name}: {} -> {value}", now.trim()));
                if let Err(e) = fs::write(&path, value) {
                    problems.push(format!("restoring {name}={value}: {e}"));
                }
            }
            Err(e) => problems.push(format!("reading {name}: {e}")),
        }
    }
    for p in &snapshot.absent_paths {
        let path = Path::new(p);
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        info(format!("removing {p} (created while the cluster ran)"));
        let r = if meta.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        if let Err(e) = r {
            problems.push(format!("removing {p}: {e}"));
        }
    }
    let before: Vec<&String> = snapshot.iptables_chains.iter().collect();
    for chain in iptables_chains() {
        if before.contains(&&chain) {
            continue;
        }
        let (bin, table, name) = split_chain(&chain);
        info(format!("removing {bin} chain {table}/{name}"));
        // References first (rules in built-in chains jumping to it), then the chain itself.
        remove_jumps(bin, table, name);
        for args in [["-F", name], ["-X", name]] {
            let ok = Command::new(bin)
                .args(["-w", "-t", table])
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                problems.push(format!("{bin} -t {table} {} {name} failed", args[0]));
            }
        }
    }
    // The kubelet's iptables calls create the (iptables-nft) tables themselves when the machine had
    // none; delete the tables that appeared, now that our chains are gone.
    for table in nft_tables() {
        if snapshot.nft_tables.contains(&table) {
            continue;
        }
        info(format!(
            "removing nft {table} (created while the cluster ran)"
        ));
        let words: Vec<&str> = table.split_whitespace().collect();
        let ok = Command::new("nft")
            .arg("delete")
            .args(&words)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            problems.push(format!("nft delete {table} failed"));
        }
    }
    problems
}

fn split_chain(chain: &str) -> (&str, &str, &str) {
    let mut it = chain.splitn(3, ' ');
    (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    )
}

/// `"<binary> <table> <chain>"` for every KUBE-* chain (the kubelet's namespace) in v4 and v6.
fn iptables_chains() -> Vec<String> {
    let mut chains = Vec::new();
    for bin in ["iptables", "ip6tables"] {
        let Some(dump) = sh::output(&mut Command::new(format!("{bin}-save"))) else {
            continue;
        };
        let mut table = "";
        for line in dump.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t;
            } else if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split_whitespace().next().unwrap_or("");
                if name.starts_with("KUBE-") {
                    chains.push(format!("{bin} {table} {name}"));
                }
            }
        }
    }
    chains
}

fn remove_jumps(bin: &str, table: &str, chain: &str) {
    let Some(dump) = sh::output(Command::new(format!("{bin}-save")).args(["-t", table])) else {
        return;
    };
    for line in dump.lines() {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        if !rule.contains(&format!("-j {chain}")) || rule.starts_with(&format!("{chain} ")) {
            continue;
        }
        let args: Vec<&str> = rule.split_whitespace().collect();
        let _ = Command::new(bin)
            .args(["-w", "-t", table, "-D"])
            .args(&args)
            .status();
    }
}

/// The node's address. The API server refuses to proxy to a node (node proxy, port-forward, logs)
/// whose address is not global unicast, so neither loopback nor a name resolving to it works.
/// 198.18.0.1 (RFC 2544 benchmarking range, not a private range) on a veth pair of our own is
/// routed through the local table — traffic to it never leaves the machine.
pub const NODE_IP: &str = "198.18.0.1";
/// The veth pair carrying NODE_IP (created by `up`, deleted by `down`).
pub const NODE_LINK: &str = "nodehealth0";
const NODE_LINK_PEER: &str = "nodehealth1";

pub fn ip(args: &[&str]) -> Result<()> {
    sh::run(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
}

/// Creates the node's veth pair with NODE_IP (idempotent).
pub fn create_node_link() -> Result<()> {
    if Path::new("/sys/class/net").join(NODE_LINK).exists() {
        return Ok(());
    }
    ip(&[
        "link",
        "add",
        NODE_LINK,
        "type",
        "veth",
        "peer",
        "name",
        NODE_LINK_PEER,
    ])?;
    // No IPv6 link-local chatter on our links.
    for link in [NODE_LINK, NODE_LINK_PEER] {
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "1");
    }
    ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", NODE_LINK])?;
    ip(&["link", "set", NODE_LINK, "up"])?;
    ip(&["link", "set", NODE_LINK_PEER, "up"])
}

/// Deletes the node's veth pair if it exists.
pub fn remove_node_link() -> Vec<String> {
    remove_link(NODE_LINK)
}

/// Deletes a link the harness created, if it exists (a veth pair goes with either end).
pub fn remove_link(name: &str) -> Vec<String> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Vec::new();
    }
    match ip(&["link", "del", name]) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!("{e:#}")],
    }
}

/// Every mount point at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mount_path(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.by_ref().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&oct, 8) {
                out.push(v as char);
                continue;
            }
            out.push_str(&oct);
        } else {
            out.push(c);
        }
    }
    PathBuf::from(out)
}

/// Unmounts everything under `dir` (pod volumes, container rootfs overlays, shm).
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for m in mounts_under(dir) {
        let ok = Command::new("umount")
            .arg(&m)
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("umount")
                .arg("-l")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            problems.push(format!("cannot unmount {m:?}"));
        }
    }
    problems
}

/// The harness's own cgroup directory in `controller` (components are placed in children).
pub fn cgroup_dir(controller: &str, name: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(name)
}

/// Removes a cgroup tree we created, children first. Processes must be gone already.
pub fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut children: Vec<PathBuf> = Vec::new();
    collect_dirs(dir, &mut children);
    children.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in children {
        fs::remove_dir(&d).with_context(|| format!("removing cgroup {d:?}"))?;
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Processes whose command line mentions `dir` (every component of the cluster and containerd's
/// shims name a path under the cluster directory), except this process.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(&needle)
            })
        })
        .collect()
}

/// Pids in a cgroup tree (to find what is still running in it).
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut dirs = Vec::new();
    if dir.exists() {
        collect_dirs(dir, &mut dirs);
    }
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), PathBuf::from("/a b/c"));
    }

    #[test]
    fn chain_names_split() {
        assert_eq!(
            split_chain("iptables mangle KUBE-KUBELET-CANARY"),
            ("iptables", "mangle", "KUBE-KUBELET-CANARY")
        );
    }
}

/// What `down` must leave exactly as `up` found it, compared by `cargo xtask test`.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    entries: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn take(cluster_dir: &Path) -> Fingerprint {
        let mut entries = BTreeMap::new();
        for s in SYSCTLS {
            let v = fs::read_to_string(sysctl_path(s)).unwrap_or_default();
            entries.insert(format!("sysctl {s}"), v.trim().to_string());
        }
        for p in FIXED_PATHS {
            entries.insert(format!("path {p}"), Path::new(p).exists().to_string());
        }
        let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect();
        entries.insert("mounts".into(), mounts.join(" "));
        for ctrl in CGROUP_CONTROLLERS {
            let mut groups: Vec<String> = fs::read_dir(Path::new("/sys/fs/cgroup").join(ctrl))
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            groups.sort();
            entries.insert(format!("cgroups {ctrl}"), groups.join(" "));
        }
        let mut links: Vec<String> = fs::read_dir("/sys/class/net")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        links.sort();
        entries.insert("links".into(), links.join(" "));
        for bin in ["iptables-save", "ip6tables-save"] {
            let rules: Vec<String> = sh::output(&mut Command::new(bin))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            entries.insert(bin.into(), rules.join("\n"));
        }
        entries.insert("nft tables".into(), nft_tables().join(", "));
        // The disk-slow fault's rules in the root blkio group (see disk.rs).
        for file in super::disk::THROTTLE_FILES {
            let rules = fs::read_to_string(Path::new("/sys/fs/cgroup/blkio").join(file))
                .unwrap_or_default();
            entries.insert(format!("root blkio {file}"), rules.trim().to_string());
        }
        entries.insert(
            "loop devices".into(),
            sh::output(Command::new("losetup").args(["-n", "-O", "NAME,BACK-FILE"]))
                .unwrap_or_default()
                .trim()
                .to_string(),
        );
        let procs = processes_mentioning(cluster_dir);
        entries.insert(
            "processes naming the cluster dir".into(),
            format!("{}", procs.len()),
        );
        Fingerprint { entries }
    }

    /// Human-readable differences from `before`.
    pub fn diff(&self, before: &Fingerprint) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(k, v)| before.entries.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: before {:?}, after {v:?}",
                    before.entries.get(k).map(String::as_str).unwrap_or("")
                )
            })
            .collect()
    }
}
