//! The run-queue accounting loaded into the real kernel: a target process competing for one CPU
//! with a non-target hog must show run-queue wait close to the kernel's own schedstat figure, and
//! the hog must not appear at all. Needs root (CAP_BPF, CAP_PERFMON). Fails if the programs do not
//! load or attach.

use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use tracer_user::runq::RunqTracer;

/// A child process killed when the guard drops, so a failing assertion leaves nothing running.
struct Spinner(Child);

impl Spinner {
    /// A shell busy loop pinned to `cpu`.
    fn pinned(cpu: u32) -> Spinner {
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn taskset (util-linux)");
        Spinner(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `run_delay` (ns spent waiting on a run queue) of a thread, from /proc/<pid>/task/<tid>/schedstat.
fn schedstat_run_delay(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).expect("schedstat");
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("schedstat run_delay")
}

#[test]
fn target_run_queue_wait_matches_schedstat_and_hog_is_not_recorded() {
    let target = Spinner::pinned(0);
    let hog = Spinner::pinned(0);
    // Let both settle on CPU 0 before measuring.
    thread::sleep(Duration::from_millis(200));

    let mut tracer = RunqTracer::attach().expect("load and attach the run-queue programs");
    tracer.add_target(target.pid()).expect("add target");
    let hook = tracer.switch_hook().clone();
    eprintln!("switch hook: {hook:?}");
    if std::env::var_os(tracer_user::trace::FORCE_SCHED_SWITCH).is_some() {
        assert!(
            matches!(hook, tracer_user::trace::SwitchHook::SchedSwitch { .. }),
            "{} is set but the hook is {hook:?}",
            tracer_user::trace::FORCE_SCHED_SWITCH
        );
    }
    let before = schedstat_run_delay(target.pid());
    thread::sleep(Duration::from_secs(2));
    let waits = tracer.thread_waits().expect("read RUNQ_WAIT");
    let after = schedstat_run_delay(target.pid());

    let kernel_ns = after - before;
    let ours = waits.get(&target.pid()).unwrap_or_else(|| {
        panic!(
            "no run-queue wait recorded for target {}: {waits:?}",
            target.pid()
        )
    });
    assert_eq!(ours.tgid, target.pid());
    assert!(ours.count > 10, "expected many preemptions, got {ours:?}");
    // Two spinners on one CPU: each waits roughly half the time.
    assert!(
        kernel_ns > 500_000_000,
        "test setup: the target hardly waited ({kernel_ns} ns) — is CPU 0 usable?"
    );
    let ratio = ours.total_ns as f64 / kernel_ns as f64;
    assert!(
        (0.8..1.2).contains(&ratio),
        "run-queue wait {} ns vs schedstat {} ns (ratio {ratio:.3})",
        ours.total_ns,
        kernel_ns
    );
    assert!(
        waits.values().all(|w| w.tgid == target.pid()),
        "non-target threads recorded: {waits:?}"
    );
    assert!(!waits.contains_key(&hog.pid()), "the hog was recorded");
    eprintln!(
        "target run-queue wait: ours {} ns in {} waits, schedstat {} ns, ratio {ratio:.4}",
        ours.total_ns, ours.count, kernel_ns
    );
}

#[test]
fn detaching_on_drop_leaves_no_program_attached() {
    let count_progs = || {
        fs::read_dir("/proc/self/fdinfo")
            .unwrap()
            .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
            .filter(|s| s.contains("prog_type:"))
            .count()
    };
    let before = count_progs();
    let tracer = RunqTracer::attach().expect("load and attach");
    assert!(count_progs() >= before + 3, "three programs loaded");
    drop(tracer);
    assert_eq!(count_progs(), before, "programs released on drop");
}
