//! Thread-state accounting and block-I/O attribution loaded into the real kernel, each against
//! the kernel's own ground truth. Needs root; fails if the programs do not load or attach.
//!
//! - a target writing with O_DIRECT to a loop device throttled by a blkio cgroup (cgroup v1
//!   throttles direct I/O in child groups) → I/O wait within 10% of the kernel's own I/O-wait
//!   accounting: delay accounting (`delayacct_blkio_ticks`, field 42 of
//!   /proc/<pid>/task/<tid>/stat) or the I/O pressure of a cgroup holding only the writer (see
//!   [`IoWaitTruth`] for why there are two);
//! - a target writing with O_DIRECT to an unthrottled loop device → its bios in the histogram of
//!   that device, as many as it wrote; a non-target writer on the same device → nothing;
//! - an idle target → asleep the whole time: no run-queue or I/O stall;
//! - through a whole tracing window (per-second summaries): a CPU-starved target → run-queue wait
//!   within 10% of schedstat and `cpu-starvation`; the throttled writer → `disk-iowait` on its
//!   loop device; slow calls while the target only sleeps → `cri-socket-stall`.
//!
//! Everything the tests create (loop devices, the cgroup, the backing files, the sysctl value) is
//! removed or restored by guards, also when an assertion fails.

use std::{
    fs,
    io::Write,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::Duration,
};

use kubectl_nodehealth::checks::trace::{Attribution, runtime_slow_because};
use nodehealth_proto::node::{Trace, TraceStall};
use tracer_user::{
    trace::{ThreadSample, Tracer},
    trace_session::TraceSession,
};

/// Restores a sysctl to the value it had.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).expect("read sysctl");
        fs::write(path, value).expect("write sysctl");
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(self.path, self.old.trim());
    }
}

/// A loop device over a sparse file in a temp dir; detached on drop.
struct LoopDev {
    dev: String,
    _dir: tempfile::TempDir,
}

impl LoopDev {
    fn new(size: u64) -> LoopDev {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("backing.img");
        fs::File::create(&file).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        LoopDev { dev, _dir: dir }
    }

    /// (major, minor) of the device.
    fn numbers(&self) -> (u32, u32) {
        let rdev = fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev), libc::minor(rdev))
    }

    /// The kernel's internal dev_t (major << 20 | minor), as the tracer reports it.
    fn kdev(&self) -> u32 {
        let (major, minor) = self.numbers();
        (major << 20) | minor
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A blkio (cgroup v1) child group created by the test; removed on drop once empty.
struct BlkioGroup(PathBuf);

impl BlkioGroup {
    fn new(write_bps: &str) -> BlkioGroup {
        let path = PathBuf::from(format!(
            "/sys/fs/cgroup/blkio/nodehealth-trace-test-{}",
            std::process::id()
        ));
        fs::create_dir(&path).expect("create blkio cgroup (cgroup v1 blkio mounted?)");
        let g = BlkioGroup(path);
        fs::write(g.0.join("blkio.throttle.write_bps_device"), write_bps)
            .expect("set blkio.throttle.write_bps_device");
        g
    }

    fn add(&self, pid: u32) {
        fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move into blkio cgroup");
    }
}

impl Drop for BlkioGroup {
    fn drop(&mut self) {
        // The writer is killed (and reaped) before this guard drops; retry while the kernel
        // finishes removing it from the group.
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A shell that waits for a line on stdin, then execs `cmd` (same pid): the test can register it
/// as a target (and move it into a cgroup) before it does anything.
struct Gated {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Gated {
    fn spawn(cmd: &str) -> Gated {
        let mut child = Command::new("sh")
            .args(["-c", &format!("read go; exec {cmd}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let stdin = child.stdin.take();
        Gated { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) {
        let mut s = self.stdin.take().unwrap();
        s.write_all(b"go\n").unwrap();
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `delayacct_blkio_ticks` (field 42 of /proc/<pid>/task/<tid>/stat), in ns.
fn delayacct_blkio_ns(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces) start at field 3.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let ticks: u64 = rest
        .split_whitespace()
        .nth(42 - 3)
        .unwrap()
        .parse()
        .unwrap();
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1_000_000_000 / hz
}

/// A cgroup v2 group (the unified hierarchy of this hybrid machine) holding only the writer: its
/// `io.pressure` "some" total is the time the writer spent waiting for I/O. Removed on drop.
struct PressureGroup(PathBuf);

impl PressureGroup {
    fn new() -> PressureGroup {
        let path = PathBuf::from(format!(
            "/sys/fs/cgroup/unified/nodehealth-trace-test-{}",
            std::process::id()
        ));
        fs::create_dir(&path).expect("create a cgroup in the unified hierarchy");
        PressureGroup(path)
    }

    fn add(&self, pid: u32) {
        fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move into v2 cgroup");
    }

    /// `some total=` of io.pressure (µs), in ns.
    fn io_some_ns(&self) -> u64 {
        let s = fs::read_to_string(self.0.join("io.pressure")).expect("read io.pressure");
        let us: u64 = s
            .lines()
            .find(|l| l.starts_with("some "))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
            .expect("io.pressure has a some total")
            .parse()
            .unwrap();
        us * 1000
    }
}

impl Drop for PressureGroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The kernel's own account of the writer's I/O wait, two ways, in ns.
///
/// Two because neither is reliable alone on kernels with EEVDF's delayed dequeue (6.12+): when a
/// sleeping task's dequeue is finished late by another CPU's pick, `__block_task()` calls
/// `delayacct_blkio_start()`, which stamps `current` — not the sleeping task — so the task's next
/// wake-up charges it from a stale start. A CI run saw delay accounting report 13.85 s of I/O
/// wait for one thread in 4 s of wall time. The writer runs SCHED_FIFO (no delayed dequeue for
/// RT tasks) pinned to CPU 0 (so the group's pressure, a non-idle-weighted average over CPUs, is
/// that one CPU's stall time), and the tracer must agree with at least one of the two.
#[derive(Debug, Clone, Copy)]
struct IoWaitTruth {
    delayacct_ns: u64,
    pressure_ns: u64,
}

impl IoWaitTruth {
    fn since(self, earlier: IoWaitTruth) -> IoWaitTruth {
        IoWaitTruth {
            delayacct_ns: self.delayacct_ns - earlier.delayacct_ns,
            pressure_ns: self.pressure_ns - earlier.pressure_ns,
        }
    }

    /// Asserts `ours` is within 10% of either account and that the kernel saw real waiting.
    fn assert_matches(self, ours: u64, interval_ns: u64, what: &str) {
        let ratio = |k: u64| ours as f64 / k.max(1) as f64;
        eprintln!(
            "{what}: ours {ours} ns over {interval_ns} ns; delayacct {} ns (ratio {:.4}), \
             io.pressure {} ns (ratio {:.4})",
            self.delayacct_ns,
            ratio(self.delayacct_ns),
            self.pressure_ns,
            ratio(self.pressure_ns)
        );
        let best = self.delayacct_ns.max(self.pressure_ns);
        assert!(
            best > interval_ns / 2,
            "test setup: the writer hardly waited for I/O ({self:?} in {interval_ns} ns) — throttling off?"
        );
        let close = |k: u64| (0.9..1.1).contains(&ratio(k));
        assert!(
            close(self.delayacct_ns) || close(self.pressure_ns),
            "{what}: ours {ours} ns agrees with neither kernel account {self:?}"
        );
    }
}

/// `dd` writing 16 KiB O_DIRECT blocks to a fresh loop device throttled to 1 MiB/s (~64 I/O
/// waits a second, each ~16 ms), gated until `go`, with both kernel I/O-wait accounts on.
struct ThrottledWriter {
    // Dropped in this order: the writer first, then its groups, then the device.
    writer: Gated,
    pressure: PressureGroup,
    _blkio: BlkioGroup,
    dev: LoopDev,
    _delayacct: Sysctl,
}

impl ThrottledWriter {
    fn new() -> ThrottledWriter {
        let delayacct = Sysctl::set("/proc/sys/kernel/task_delayacct", "1");
        let dev = LoopDev::new(256 << 20);
        let (major, minor) = dev.numbers();
        let blkio = BlkioGroup::new(&format!("{major}:{minor} 1048576"));
        let pressure = PressureGroup::new();
        let writer = Gated::spawn(&format!(
            "taskset -c 0 chrt -f 1 dd if=/dev/zero of={} bs=16k count=100000 oflag=direct",
            dev.dev
        ));
        blkio.add(writer.pid());
        pressure.add(writer.pid());
        ThrottledWriter {
            writer,
            pressure,
            _blkio: blkio,
            dev,
            _delayacct: delayacct,
        }
    }

    fn pid(&self) -> u32 {
        self.writer.pid()
    }

    fn truth(&self) -> IoWaitTruth {
        IoWaitTruth {
            delayacct_ns: delayacct_blkio_ns(self.pid()),
            pressure_ns: self.pressure.io_some_ns(),
        }
    }
}

fn thread_of(tracer: &Tracer, tid: u32) -> ThreadSample {
    let threads = tracer.threads().expect("read THREADS");
    *threads
        .iter()
        .find(|t| t.tid == tid)
        .unwrap_or_else(|| panic!("thread {tid} not recorded: {threads:?}"))
}

#[test]
fn io_wait_of_a_throttled_direct_writer_matches_the_kernels_accounting() {
    let mut w = ThrottledWriter::new();
    let pid = w.pid();
    let mut tracer = Tracer::attach().expect("load and attach the tracer");
    tracer.add_target(pid).expect("add target");
    w.writer.go();
    thread::sleep(Duration::from_millis(1000));

    let (a, ka, ta) = (
        thread_of(&tracer, pid),
        w.truth(),
        std::time::Instant::now(),
    );
    thread::sleep(Duration::from_secs(4));
    let (b, kb) = (thread_of(&tracer, pid), w.truth());
    let interval = ta.elapsed().as_nanos() as u64;

    let ours = b.iowait_ns - a.iowait_ns;
    eprintln!(
        "{} waits; on-CPU {} ns, run-queue {} ns, other sleep {} ns; bio hook {:?}",
        b.iowait_count - a.iowait_count,
        b.on_cpu_ns - a.on_cpu_ns,
        b.runq_ns - a.runq_ns,
        b.sleep_ns - a.sleep_ns,
        tracer.bio_hook()
    );
    kb.since(ka).assert_matches(ours, interval, "I/O wait");
    // The four states cover the interval (4 s, give or take the sampling instants).
    let total = (b.on_cpu_ns + b.runq_ns + b.iowait_ns + b.sleep_ns)
        - (a.on_cpu_ns + a.runq_ns + a.iowait_ns + a.sleep_ns);
    assert!(
        (3_900_000_000..4_300_000_000).contains(&total),
        "states sum to {total} ns over ~4 s"
    );
    // The device: with fentry on submit_bio every bio is the writer's; with the block_bio_queue
    // fallback, throttled bios are re-issued by a kernel worker and only unthrottled ones count.
    let hist = tracer.bio_latency().expect("read BIO_LATENCY");
    // Exec'ing taskset, chrt and dd may read them from the root disk on a cold page cache: only
    // the writer's bios on the loop device are its writes.
    let mine: Vec<_> = hist.iter().filter(|(k, _)| k.tgid == pid).collect();
    eprintln!("writer's bios: {mine:?}");
    if let Some((_, h)) = mine.iter().find(|(k, _)| k.dev == w.dev.kdev()) {
        assert!(
            h.bytes >= 16 * 1024,
            "the writer's bios on its device: {h:?}"
        );
    } else {
        assert_ne!(
            *tracer.bio_hook(),
            tracer_user::trace::BioSubmitHook::SubmitBio,
            "fentry on submit_bio sees every bio"
        );
    }
    drop(tracer);
}

#[test]
fn direct_writes_land_in_the_devices_histogram_and_non_targets_are_not_recorded() {
    let dev = LoopDev::new(64 << 20);
    let mut target = Gated::spawn(&format!(
        "dd if=/dev/zero of={} bs=64k count=200 oflag=direct",
        dev.dev
    ));
    let mut other = Gated::spawn(&format!(
        "dd if=/dev/zero of={} bs=64k count=200 seek=400 oflag=direct",
        dev.dev
    ));
    let mut tracer = Tracer::attach().expect("load and attach the tracer");
    tracer.add_target(target.pid()).expect("add target");
    target.go();
    other.go();
    let _ = target.child.wait();
    let _ = other.child.wait();

    let hist = tracer.bio_latency().expect("read BIO_LATENCY");
    // The target may also cause a little I/O elsewhere (e.g. reading `dd` from the root disk on a
    // cold page cache): look at its bios on the loop device.
    let mine = hist
        .iter()
        .find(|(k, _)| k.tgid == target.pid() && k.dev == dev.kdev())
        .unwrap_or_else(|| panic!("no bios recorded for the target on {}: {hist:?}", dev.dev));
    assert_eq!(mine.1.bytes, 200 * 64 * 1024, "bytes the target wrote");
    assert_eq!(mine.1.slots.iter().sum::<u64>(), mine.1.count);
    assert!(
        hist.keys().all(|k| k.tgid == target.pid()),
        "non-target bios recorded: {hist:?}"
    );
    let threads = tracer.threads().unwrap();
    assert!(
        threads.iter().all(|t| t.tgid == target.pid()),
        "non-target threads recorded: {threads:?}"
    );
    eprintln!(
        "target bios on {}: {} bios, {} bytes, max {} ns",
        dev.dev, mine.1.count, mine.1.bytes, mine.1.max_ns
    );
}

#[test]
fn an_idle_target_is_asleep_without_stalls() {
    let mut idle = Gated::spawn("sleep 3");
    let mut tracer = Tracer::attach().expect("load and attach the tracer");
    tracer.add_target(idle.pid()).expect("add target");
    idle.go();
    thread::sleep(Duration::from_millis(2500));
    let t = thread_of(&tracer, idle.pid());
    // exec() may read the `sleep` binary in (a short I/O wait); a stall is something else.
    assert!(t.iowait_max_ns < 50_000_000, "an I/O stall: {t:?}");
    assert!(t.runq_max_ns < 50_000_000, "a run-queue stall: {t:?}");
    assert!(t.sleep_ns > 2_000_000_000, "asleep most of the time: {t:?}");
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `run_delay` (ns spent waiting on a run queue) from /proc/<pid>/task/<pid>/schedstat.
fn schedstat_run_delay(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).expect("schedstat");
    s.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs a tracing window of `secs` over `pid` (as the runtime) and returns the trace section with
/// the window's node-clock bounds; `truth` is read right after the window starts and right after
/// it ends, and `since(after, before)` makes the kernel's account of the window.
fn window<T: Copy>(
    pid: u32,
    secs: u64,
    truth: impl Fn() -> T,
    since: impl Fn(T, T) -> T,
) -> (Trace, (i64, i64), T) {
    let session = TraceSession::start(vec![("runtime", pid)]).expect("load and attach the tracer");
    let before = truth();
    let start = now_unix_ms();
    thread::sleep(Duration::from_secs(secs));
    let end = now_unix_ms();
    let stopped = session.stop();
    let kernel = since(truth(), before);
    let (_, trace) = stopped.collect();
    assert!(trace.attached && trace.error.is_none(), "{trace:?}");
    (trace, (start, end), kernel)
}

/// A stall's kernel stack is recorded, symbolised (`function+0xoffset` or `?`, never an address),
/// and passes through a frame containing `frame`.
fn assert_symbolised_stack_through(stall: &TraceStall, frame: &str) {
    assert!(!stall.kernel_stack.is_empty(), "{stall:?}");
    assert!(
        stall
            .kernel_stack
            .iter()
            .all(|f| f == "?" || (f.contains("+0x") && !f.starts_with("ffff"))),
        "{stall:?}"
    );
    assert!(
        stall.kernel_stack.iter().any(|f| f.contains(frame)),
        "no {frame} frame: {stall:?}"
    );
}

#[test]
fn window_of_a_cpu_starved_target_matches_schedstat_and_attributes_cpu_starvation() {
    let spin = |cpu: &str| {
        Command::new("taskset")
            .args(["-c", cpu, "sh", "-c", "while :; do :; done"])
            .spawn()
            .expect("taskset")
    };
    let target = Gated {
        child: spin("0"),
        stdin: None,
    };
    let _hog = Gated {
        child: spin("0"),
        stdin: None,
    };
    thread::sleep(Duration::from_millis(200));
    let pid = target.pid();
    let (trace, slow, kernel) = window(pid, 3, || schedstat_run_delay(pid), |a, b| a - b);
    let ours: u64 = trace.seconds.iter().map(|s| s.times.run_queue_ns).sum();
    let ratio = ours as f64 / kernel as f64;
    eprintln!(
        "window run-queue wait: ours {ours} ns over {} seconds, schedstat {kernel} ns, ratio {ratio:.4}",
        trace.seconds.len()
    );
    assert!(
        kernel > 1_000_000_000,
        "test setup: hardly waited ({kernel} ns)"
    );
    assert!(
        (0.9..1.1).contains(&ratio),
        "run-queue wait {ours} ns vs schedstat {kernel} ns (ratio {ratio:.3})"
    );
    assert_eq!(trace.processes[0].times.run_queue_ns, ours);
    assert!(
        trace.stalls.iter().all(|s| s.kind == "runQueue"),
        "{:?}",
        trace.stalls
    );
    // The spinner never sleeps: each of its waits began with a preemption, whose kernel stack
    // (symbolised, never an address) says where — the scheduler, entered from an interrupt or
    // a return to user mode.
    let longest = &trace.stalls[0];
    eprintln!("longest run-queue wait: {longest:?}");
    assert_symbolised_stack_through(longest, "schedule");
    // The plugin's judgement of what the agent measured.
    assert_eq!(
        runtime_slow_because(&trace, &[slow]),
        Attribution::CpuStarvation
    );
}

#[test]
fn window_of_a_throttled_writer_attributes_disk_iowait_on_its_device() {
    let mut w = ThrottledWriter::new();
    let (major, minor) = w.dev.numbers();
    let pid = w.pid();
    w.writer.go();
    thread::sleep(Duration::from_millis(300));
    let (trace, slow, kernel) = window(pid, 3, || w.truth(), IoWaitTruth::since);
    let ours: u64 = trace.seconds.iter().map(|s| s.times.io_wait_ns).sum();
    eprintln!("devices {:?}", trace.devices);
    kernel.assert_matches(
        ours,
        ((slow.1 - slow.0) * 1_000_000) as u64,
        "window I/O wait",
    );
    // The longest waits are I/O waits with a symbolised kernel stack (never an address).
    let io = trace
        .stalls
        .iter()
        .find(|s| s.kind == "ioWait")
        .unwrap_or_else(|| panic!("no I/O-wait stall: {:?}", trace.stalls));
    eprintln!("longest I/O wait: {io:?}");
    assert!(io.duration_ns > 1_000_000, "{io:?}");
    assert_symbolised_stack_through(io, "io_schedule");
    // What the writer was blocked in, sampled every 100 ms: its writes to the loop device.
    eprintln!("I/O waits {:?}", trace.io_waits);
    let blocked = trace
        .io_waits
        .first()
        .unwrap_or_else(|| panic!("no I/O wait sampled: {:?}", trace.io_waits));
    assert_eq!(
        blocked.device,
        Some(format!("{major}:{minor}")),
        "{blocked:?}"
    );
    assert!(blocked.syscall.contains("write"), "{blocked:?}");
    assert!(blocked.samples >= 5, "{blocked:?}");
    assert_eq!(
        runtime_slow_because(&trace, &[slow]),
        Attribution::DiskIowait {
            device: Some(format!("{major}:{minor}"))
        }
    );
}

#[test]
fn slow_calls_while_the_target_only_sleeps_attribute_a_socket_stall() {
    let mut idle = Gated::spawn("sleep 5");
    idle.go();
    thread::sleep(Duration::from_millis(100));
    let (trace, slow, _) = window(idle.pid(), 2, || 0, |_, _| 0);
    assert!(trace.stalls.is_empty(), "{:?}", trace.stalls);
    assert_eq!(
        runtime_slow_because(&trace, &[slow]),
        Attribution::CriSocketStall
    );
}

/// The calling thread's id (`/proc/thread-self` is `<pid>/task/<tid>`).
fn gettid() -> u32 {
    let link = fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Where CPU time of the calling thread is spent: a busy loop of about `d`.
fn spin(d: Duration) {
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

#[test]
fn threads_a_target_creates_later_are_recorded_and_its_child_processes_are_not() {
    // The target is this test process: the thread and the child it makes after tracing began
    // get the per-thread switch event by inheritance only.
    let me = std::process::id();
    let mut tracer = Tracer::attach().expect("load and attach the tracer");
    tracer.add_target(me).expect("add target");
    let worker = thread::spawn(|| {
        let tid = gettid();
        for _ in 0..20 {
            spin(Duration::from_millis(5));
            thread::sleep(Duration::from_millis(20));
        }
        tid
    });
    // A child process (fork inherits the event too): busy, then asleep, never recorded.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.3",
        ])
        .spawn()
        .expect("spawn sh");
    let tid = worker.join().unwrap();
    let _ = child.wait();

    let t = thread_of(&tracer, tid);
    assert_eq!(t.tgid, me);
    // 20 rounds of 5 ms on the CPU and 20 ms asleep.
    assert!(
        (50_000_000..400_000_000).contains(&t.on_cpu_ns),
        "on-CPU of the new thread: {t:?}"
    );
    assert!(t.sleep_ns >= 300_000_000, "asleep of the new thread: {t:?}");
    let threads = tracer.threads().unwrap();
    assert!(
        threads.iter().all(|t| t.tgid == me),
        "the child process (pid {}) was recorded: {threads:?}",
        child.id()
    );
    eprintln!(
        "new thread {tid}: on-CPU {} ns, asleep {} ns, run queue {} ns",
        t.on_cpu_ns, t.sleep_ns, t.runq_ns
    );
}
