//! The guest node (issue 17): `cargo xtask guest boot` on each Debian cloud kernel gives a node
//! with that kernel, systemd as PID 1, cgroup v2 only, containerd running, and kprobes and BTF for
//! the tracer. Needs no cluster: the guest is booted, asked and powered off by the test itself.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
};

use nodehealth_e2e::workspace_root;

/// What the guest reports about itself, one `key=value` per line (and `failed=<unit>` lines).
const PROBE: &str = r#"
echo "release=$(uname -r)"
echo "pid1=$(cat /proc/1/comm)"
echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup)"
test -f /sys/fs/cgroup/cgroup.controllers && echo cgroup2_controllers=yes
test -e /sys/fs/cgroup/cpu,cpuacct && echo cgroup1_cpuacct=yes
echo "system=$(systemctl is-system-running)"
systemctl --failed --no-legend --plain | while read -r unit _; do echo "failed=$unit"; done
echo "containerd=$(systemctl is-active containerd)"
test -e /sys/kernel/btf/vmlinux && echo btf=yes
test -d /sys/bus/event_source/devices/kprobe && echo kprobe_pmu=yes
grep -q ' register_kprobe$' /proc/kallsyms && echo register_kprobe=yes
exit 0
"#;

fn xtask_bin() -> std::path::PathBuf {
    let root = workspace_root();
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "-q", "-p", "xtask"])
        .current_dir(&root)
        .status()
        .expect("cargo build -p xtask");
    assert!(status.success(), "building xtask failed");
    root.join("target/debug/xtask")
}

/// Boots the guest on `kernel`, runs PROBE, returns its key=value lines.
fn probe(kernel: &str) -> BTreeMap<String, Vec<String>> {
    let out = Command::new(xtask_bin())
        .args(["guest", "boot", "--kernel", kernel, "--", "sh", "-c", PROBE])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running xtask guest boot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("kernel {kernel}:\n{stdout}");
    assert!(
        out.status.success(),
        "xtask guest boot failed: {}",
        out.status
    );
    let mut facts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((k, v)) = line.split_once('=') {
            facts.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    facts
}

fn one<'a>(facts: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    facts
        .get(key)
        .and_then(|v| v.first())
        .map_or("", String::as_str)
}

/// Both kernels, one after the other (one QEMU at a time: TCG takes both of this machine's cores).
#[test]
#[ignore = "long tier (cargo xtask test --long): builds the guest images and boots each under TCG"]
fn the_guest_boots_each_debian_cloud_kernel_with_systemd_and_cgroup_v2() {
    for (kernel, release_prefix) in [("6.12", "6.12."), ("6.1", "6.1.0-")] {
        let facts = probe(kernel);
        let release = one(&facts, "release");
        assert!(
            release.starts_with(release_prefix) && release.ends_with("-cloud-amd64"),
            "kernel {kernel}: uname -r is {release:?}, not a Debian {kernel} cloud kernel"
        );
        assert_eq!(one(&facts, "pid1"), "systemd", "kernel {kernel}: PID 1");
        assert_eq!(
            one(&facts, "cgroup_fs"),
            "cgroup2fs",
            "kernel {kernel}: /sys/fs/cgroup is not the unified hierarchy"
        );
        assert_eq!(one(&facts, "cgroup2_controllers"), "yes", "kernel {kernel}");
        assert_eq!(
            one(&facts, "cgroup1_cpuacct"),
            "",
            "kernel {kernel}: a cgroup v1 cpu,cpuacct hierarchy is mounted"
        );
        let system = one(&facts, "system");
        let failed = facts.get("failed").cloned().unwrap_or_default();
        if system == "degraded" {
            println!("kernel {kernel}: degraded; failed units: {failed:?}");
        }
        assert!(
            system == "running" || system == "degraded",
            "kernel {kernel}: systemctl is-system-running says {system:?} (failed units: {failed:?})"
        );
        assert_eq!(one(&facts, "containerd"), "active", "kernel {kernel}");
        assert_eq!(
            one(&facts, "btf"),
            "yes",
            "kernel {kernel}: no /sys/kernel/btf/vmlinux"
        );
        assert_eq!(
            one(&facts, "kprobe_pmu"),
            "yes",
            "kernel {kernel}: no kprobe PMU (perf_event kprobes, what aya attaches through)"
        );
        assert_eq!(one(&facts, "register_kprobe"), "yes", "kernel {kernel}");
    }
}
