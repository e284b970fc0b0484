//! Process and cgroup evidence from real processes and cgroups the test creates itself:
//! zombie children of a kubelet-like process, CPU throttling counted over the window in a cpu
//! cgroup with a CFS quota (v1, else v2 cpu.max), a frozen cgroup (every freezer the host has: v1
//! freezer.state and v2 cgroup.freeze), and a kubelet healthz endpoint that accepts but never
//! answers (alive but unresponsive). Needs root. Nothing is skipped: a host without the cgroup a
//! test needs fails it, saying which.
mod common;

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::ChildGuard;
use nodehealth_proto::node::Liveness;
use tracer_user::{
    host::HostRoot,
    http, pressure,
    processes::{self, Sample},
    procfs,
};

/// A v1 cgroup of our own under one controller hierarchy; its tasks are killed and the
/// directory removed on drop.
struct OwnCgroup(PathBuf);

impl OwnCgroup {
    fn new(controller: &str, tag: &str) -> Option<OwnCgroup> {
        let base = PathBuf::from("/sys/fs/cgroup").join(controller);
        if !base.join("cgroup.procs").exists() {
            return None;
        }
        let dir = base.join(format!("nodehealth-test-{}-{tag}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        Some(OwnCgroup(dir))
    }

    fn write(&self, file: &str, value: &str) {
        fs::write(self.0.join(file), value).unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("freezer.state"), "THAWED");
        let _ = fs::write(self.0.join("cgroup.freeze"), "0");
        for pid in fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A shell busy loop, moved into `cg`; killed on drop.
fn busy_loop_in(cg: &OwnCgroup) -> ChildGuard {
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let busy = ChildGuard(child);
    cg.add(busy.0.id());
    busy
}

#[test]
fn zombie_children_of_the_kubelet_are_reported() {
    // sh forks a short sleep, then execs a long one that never reaps it.
    let child = Command::new("sh")
        .args(["-c", "sleep 0.05 & exec sleep 30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let pid = guard.0.id();
    thread::sleep(Duration::from_millis(400));
    let host = HostRoot::new("/");
    let s = Sample::take(&host);
    let p = processes::collect(&host, Some(pid), None, &s, &s, Duration::ZERO, None);
    let z = p
        .zombies
        .iter()
        .find(|z| z.parent_pid == pid)
        .expect("zombie group");
    assert_eq!(z.count, 1);
    assert_eq!(z.examples, vec!["sleep"]);
    assert_eq!(p.kubelet.unwrap().liveness, Liveness::Sleeping);
}

#[test]
fn cfs_throttling_is_counted_over_the_window() {
    // 1% of one CPU (the smallest quota, 1 ms per 100 ms) for a busy loop: throttled in nearly
    // every period even when the machine is busy with other work. A v1 cpu hierarchy where there
    // is one, else v2's cpu.max.
    let (cg, version) = match OwnCgroup::new("cpu", "throttle") {
        Some(cg) => {
            cg.write("cpu.cfs_period_us", "100000");
            cg.write("cpu.cfs_quota_us", "1000");
            (cg, 1)
        }
        None => {
            let cg = own_v2_cgroup("throttle")
                .expect("no cpu cgroup: neither a v1 cpu hierarchy nor a cgroup2 mount");
            assert!(
                fs::read_to_string(cg.0.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .any(|c| c == "cpu"),
                "cgroup v2 without the cpu controller delegated to {:?}",
                cg.0
            );
            cg.write("cpu.max", "1000 100000");
            (cg, 2)
        }
    };
    let busy = busy_loop_in(&cg);
    let host = HostRoot::new("/");
    let targets = [("kubelet", busy.0.id())];
    let a = pressure::Sample::take(&host, &targets);
    thread::sleep(Duration::from_millis(1_000));
    let b = pressure::Sample::take(&host, &targets);
    let p = pressure::evidence(&a, b);
    let c = &p.cgroups[0];
    eprintln!("throttling over 1 s: {c:?}");
    assert!(c.error.is_none(), "{c:?}");
    assert_eq!(c.cgroup_version, version);
    assert!(c.path.ends_with("throttle"), "{c:?}");
    assert_eq!((c.quota_us, c.period_us), (Some(1_000), Some(100_000)));
    let periods = c.window_nr_periods.unwrap();
    let throttled = c.window_nr_throttled.unwrap();
    assert!(periods >= 5, "{c:?}");
    assert!(throttled * 2 >= periods, "{c:?}");
    assert!(c.window_throttled_ns.unwrap() > 100_000_000, "{c:?}");
}

/// cgroup v2's own pressure stall information: two busy loops per CPU in a cgroup of our own, so
/// on every CPU one of them waits — its `cpu.pressure` grows by most of the window (the kernel
/// weighs each CPU's stall by its busy time: one loop more than CPUs showed only ~50% on two
/// CPUs), and its `cpu.stat` counts the CPU time they got. On a hybrid host the unified hierarchy
/// keeps per-cgroup PSI too (no controller needed).
#[test]
fn a_cgroups_own_cpu_stall_is_measured_over_the_window() {
    let cg = own_v2_cgroup("psi").expect("no cgroup2 mount to make a cgroup in");
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let loops: Vec<ChildGuard> = (0..2 * cpus).map(|_| busy_loop_in(&cg)).collect();
    let host = HostRoot::new("/");
    let targets = [("runtime", loops[0].0.id())];
    let a = pressure::Sample::take(&host, &targets);
    thread::sleep(Duration::from_millis(1_000));
    let b = pressure::Sample::take(&host, &targets);
    let p = pressure::evidence(&a, b);
    let c = &p.cgroups[0];
    eprintln!("{} busy loops over 1 s: {:?}", loops.len(), c.psi);
    let psi = c.psi.as_ref().expect("no PSI read from the cgroup");
    let stall_us = psi
        .cpu
        .as_ref()
        .and_then(|r| r.some.as_ref())
        .and_then(|l| l.window_delta_us)
        .expect("no cpu.pressure delta");
    assert!(stall_us >= 300_000, "{stall_us} µs stalled in 1 s: {psi:?}");
    assert!(psi.window_usage_us.unwrap_or(0) >= 300_000, "{psi:?}");
    assert!(c.io_max.is_empty(), "{:?}", c.io_max);
}

/// The v2 (unified) hierarchy's mount point, when there is one: `/sys/fs/cgroup` on a cgroup-v2
/// host, `/sys/fs/cgroup/unified` on a hybrid one.
fn unified_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (_, after) = l.split_once(" - ")?;
        if !after.starts_with("cgroup2 ") {
            return None;
        }
        l.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A cgroup of our own in the v2 hierarchy (the freezer is built into v2: no controller needed).
fn own_v2_cgroup(tag: &str) -> Option<OwnCgroup> {
    let base = unified_mount()?;
    let dir = base.join(format!("nodehealth-test-{}-{tag}", std::process::id()));
    fs::create_dir(&dir).ok()?;
    Some(OwnCgroup(dir))
}

/// Freezes a sleeping process through `freeze` (writes to the cgroup `cg` it was added to),
/// checks the agent reports it frozen, and thaws it with `thaw` — before the child's guard kills
/// and reaps it (a frozen process cannot die).
fn frozen_is_reported(
    cg: &OwnCgroup,
    freeze: (&str, &str),
    thaw: (&str, &str),
    settled: impl Fn() -> bool,
) {
    let child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let pid = guard.0.id();
    cg.add(pid);
    let host = HostRoot::new("/");
    assert_eq!(procfs::cgroup_frozen(&host, pid), Some(false));
    /// Thaws on every way out, panics included: dropped before the child's guard, which could
    /// not kill and reap a frozen child.
    struct Thaw<'a>(&'a OwnCgroup, (&'a str, &'a str));
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            let _ = fs::write(self.0.0.join(self.1.0), self.1.1);
        }
    }
    let _thaw = Thaw(cg, thaw);
    cg.write(freeze.0, freeze.1);
    let until = Instant::now() + Duration::from_secs(5);
    while !settled() {
        assert!(Instant::now() < until, "the freezer did not settle");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(procfs::cgroup_frozen(&host, pid), Some(true));
    let s = Sample::take(&host);
    let p = processes::collect(&host, Some(pid), None, &s, &s, Duration::ZERO, None);
    let k = p.kubelet.unwrap();
    eprintln!("frozen task state: {:?}", k.liveness);
    assert_eq!(k.cgroup_frozen, Some(true));
}

/// Every freezer this host has is tried: the v1 freezer hierarchy and the v2 `cgroup.freeze`
/// (a hybrid host has both; a v2 host only the second). A host with neither fails the test.
#[test]
fn a_process_in_a_frozen_cgroup_is_reported_frozen() {
    let mut tried = Vec::new();
    if let Some(cg) = OwnCgroup::new("freezer", "frozen") {
        let state = cg.0.join("freezer.state");
        frozen_is_reported(
            &cg,
            ("freezer.state", "FROZEN"),
            ("freezer.state", "THAWED"),
            || fs::read_to_string(&state).unwrap_or_default().trim() == "FROZEN",
        );
        tried.push("v1 freezer.state");
    }
    if let Some(cg) = own_v2_cgroup("frozen") {
        let events = cg.0.join("cgroup.events");
        frozen_is_reported(&cg, ("cgroup.freeze", "1"), ("cgroup.freeze", "0"), || {
            fs::read_to_string(&events)
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == "frozen 1")
        });
        tried.push("v2 cgroup.freeze");
    }
    eprintln!("freezers tried: {tried:?}");
    assert!(
        !tried.is_empty(),
        "no freezer on this host: neither a v1 freezer hierarchy nor a cgroup2 mount"
    );
}

#[tokio::test]
async fn a_healthz_that_accepts_but_never_answers_times_out_in_its_bound() {
    // The listen backlog accepts the connection; nobody ever reads or answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let a = http::get_plain(&addr, "/healthz", Duration::from_millis(500)).await;
    let took = started.elapsed();
    assert!(a.timed_out && a.status.is_none(), "{a:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");

    // A healthy one.
    let ok = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ok.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = ok.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
    });
    let a = http::get_plain(&addr, "/healthz", Duration::from_secs(2)).await;
    assert_eq!(
        (a.status, a.body.as_deref()),
        (Some(200), Some("ok")),
        "{a:?}"
    );

    // Nobody listening: refused, at once.
    drop(silent);
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let a = http::get_plain(&addr, "/healthz", Duration::from_secs(2)).await;
    assert!(
        a.error
            .as_deref()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{a:?}"
    );
}
