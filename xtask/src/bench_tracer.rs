//! `cargo xtask bench tracer`: what the eBPF tracer costs workloads it does not trace.
//!
//! Primary figure (DESIGN.md "Bars"): per-program cost from the kernel's own BPF statistics
//! (`kernel.bpf_stats_enabled`: run_time_ns / run_cnt per program) times the measured event rate,
//! as a share of one CPU, while a CPU-pinned `perf bench sched pipe` (a non-target, switch-heavy
//! workload) runs. Secondary: the same pipe benchmark's µs/op with no tracer, with ours (attached
//! to one idle target), and with libbpf-tools `runqlat`, interleaved rounds, medians and ratios.
//! The sysctl is restored on every exit path.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::sh::{self, info, step};

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Restores a sysctl to the value it had.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Result<Sysctl> {
        let old = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        fs::write(path, value).with_context(|| format!("setting {path} (needs root)"))?;
        Ok(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(self.path, self.old.trim());
    }
}

/// A child process killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Result<Guard> {
    Ok(Guard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?,
    ))
}

/// One `perf bench sched pipe` run pinned to CPU 1: µs per operation.
fn pipe(loops: u32) -> Result<f64> {
    pipe_run(loops, &[])
}

/// The same in threaded mode (`-T`: both ends are threads of one process).
fn pipe_threads(loops: u32) -> Result<f64> {
    pipe_run(loops, &["-T"])
}

fn pipe_run(loops: u32, mode: &[&str]) -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", "1", "perf", "bench", "sched", "pipe"])
        .args(mode)
        .arg("-l")
        .arg(loops.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running `perf bench sched pipe` (linux-perf installed?)")?;
    usecs_per_op(&String::from_utf8_lossy(&out.stdout))
}

fn usecs_per_op(text: &str) -> Result<f64> {
    text.lines()
        .find(|l| l.contains("usecs/op"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no usecs/op in perf's output: {text}"))
}

/// The target path: the threaded pipe benchmark traced as a target, so every switch of its
/// threads runs `switched_out`. The shell that becomes the benchmark (`exec` keeps the pid; the
/// threads it creates inherit the per-thread event) waits until the tracer watches it.
fn traced_pipe(agent: &Path, rounds: usize, loops: u32) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    step(format!(
        "bench tracer: {rounds} interleaved rounds of `perf bench sched pipe -T -l {loops}` on \
         CPU 1, untraced and traced as a target"
    ));
    let (mut base, mut traced, mut per_event) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(pipe_threads(loops)?);
        let mut child = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo $$ >&2; read go; exec taskset -c 1 perf bench sched pipe -T -l {loops} \
                     2>/dev/null"
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the traced pipe benchmark")?;
        let mut pid = String::new();
        BufReader::new(child.stderr.take().context("the shell's stderr")?).read_line(&mut pid)?;
        let pid = pid.trim().to_string();
        let t = spawn(Command::new(agent).args(["runq", "--pid", &pid, "--seconds", "3600"]))?;
        wait_programs(t.0.id(), 4, Duration::from_secs(20))?;
        let s0 = prog_stats(t.0.id());
        child
            .stdin
            .take()
            .context("the shell's stdin")?
            .write_all(b"go\n")?;
        let out = child.wait_with_output()?;
        let s1 = prog_stats(t.0.id());
        let names: BTreeMap<u64, String> = s1.keys().map(|id| (*id, prog_name(*id))).collect();
        drop(t);
        traced.push(usecs_per_op(&String::from_utf8_lossy(&out.stdout))?);
        let (ns, cnt) = s1
            .iter()
            .filter(|(id, _)| names[*id] == "switched_out")
            .map(|(id, (ns1, cnt1))| {
                let (ns0, cnt0) = s0.get(id).copied().unwrap_or_default();
                (ns1 - ns0, cnt1 - cnt0)
            })
            .next()
            .unwrap_or_default();
        if cnt == 0 {
            bail!("switched_out never ran while the traced benchmark (pid {pid}) ran");
        }
        per_event.push(ns as f64 / cnt as f64);
    }
    let (b, t, e) = (median(base), median(traced), median(per_event));
    info(format!(
        "target path: switched_out {e:.1} ns per target switch-out; pipe -T untraced {b:.2} \
         µs/op, traced {t:.2} (x{:.3})",
        t / b
    ));
    Ok(())
}

/// ns per syscall of a CPU-pinned `dd bs=1` (one read and one write per byte: a syscall-heavy
/// non-target workload).
fn dd_ns_per_syscall(bytes: u32) -> Result<f64> {
    let start = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", "1", "dd", "if=/dev/zero", "of=/dev/null", "bs=1"])
        .arg(format!("count={bytes}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running dd")?;
    if !out.success() {
        bail!("dd failed: {out}");
    }
    Ok(start.elapsed().as_nanos() as f64 / (2.0 * bytes as f64))
}

/// An idle grpc-go CRI client, connected to a CRI server that never gets a call: a stand-in
/// kubelet whose binary has grpc-go's `(*ClientConn).Invoke`, so the tracer can take the uprobe
/// path on it (`xtask/cri-sim`, built with the Go that setup installs).
struct GoClient {
    client: Guard,
    _server: Guard,
    dir: PathBuf,
}

impl Drop for GoClient {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn go_client(target_dir: &Path) -> Result<GoClient> {
    let bin = target_dir.join("cri-sim");
    let src = sh::workspace_root().join("xtask/cri-sim");
    sh::run(
        "go build xtask/cri-sim",
        Command::new(crate::prometheus::go())
            .args(["build", "-trimpath", "-buildvcs=false", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("CGO_ENABLED", "0"),
    )?;
    let dir = target_dir.join(format!("bench-cri-sim-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let sock = dir.join("cri.sock");
    let mut server = Command::new(&bin)
        .args(["serve", "-delay", "1ms", "-listen"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cri-sim serve")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().context("cri-sim stdout")?),
        &mut line,
    )?;
    let server = Guard(server);
    let mut client = Command::new(&bin)
        .args(["call", "-endpoint"])
        .arg(format!("unix://{}", sock.display()))
        .args(["-calls", "1", "-timeout", "10s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cri-sim call")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.take().context("cri-sim stdout")?),
        &mut line,
    )?;
    if line.trim() != "connected" {
        bail!("cri-sim call did not connect: {line:?}");
    }
    Ok(GoClient {
        client: Guard(client),
        _server: server,
        dir,
    })
}

/// The CRI programs on a non-target, syscall-heavy workload: baseline; the tracer without CRI
/// tracing; with the kubelet's CRI calls traced on its socket (the raw syscall tracepoints: every
/// task's syscalls enter a program); and traced through uprobes on its gRPC client (only the
/// kubelet's `Invoke` runs a program) — the kubelet a stand-in grpc-go client, idle; interleaved.
/// Returns the median per-round ratios to the baseline (socket path, uprobe path).
fn syscalls(agent: &Path, idle: u32, rounds: usize, target_dir: &Path) -> Result<(f64, f64)> {
    const BYTES: u32 = 1_000_000;
    let go = go_client(target_dir)?;
    let kubelet = go.client.0.id().to_string();
    step(format!(
        "bench tracer: {rounds} interleaved rounds of `dd bs=1 count={BYTES}` on CPU 1: baseline, \
         tracer without CRI tracing, with it on the socket (syscall tracepoints), with it through \
         uprobes on the (stand-in) kubelet's gRPC client"
    ));
    let (mut base, mut sched, mut cri, mut uprobe) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut r_cri, mut r_uprobe) = (Vec::new(), Vec::new());
    let idle = idle.to_string();
    let traced = |hook: &str| -> Result<Guard> {
        let t = spawn(
            Command::new(agent)
                .args(["runq", "--pid", &idle, "--seconds", "3600"])
                .args(["--cri-kubelet", &kubelet])
                .env("NODEHEALTH_CRI_HOOK", hook),
        )?;
        // The uprobe path loads two programs where the socket path loads sys_enter/sys_exit.
        wait_programs(t.0.id(), 6, Duration::from_secs(20))?;
        Ok(t)
    };
    for _ in 0..rounds {
        base.push(dd_ns_per_syscall(BYTES)?);
        let t = spawn(Command::new(agent).args(["runq", "--pid", &idle, "--seconds", "3600"]))?;
        wait_programs(t.0.id(), 4, Duration::from_secs(20))?;
        sched.push(dd_ns_per_syscall(BYTES)?);
        drop(t);
        for (hook, out) in [("syscalls", &mut cri), ("uprobe", &mut uprobe)] {
            let t = traced(hook)?;
            let names: Vec<String> = prog_stats(t.0.id())
                .keys()
                .map(|id| prog_name(*id))
                .collect();
            let want = if hook == "uprobe" {
                "cri_invoke"
            } else {
                "sys_enter"
            };
            if !names.iter().any(|n| n.starts_with(want)) {
                bail!("the {hook} path did not load {want}: programs {names:?}");
            }
            let s0 = prog_stats(t.0.id());
            out.push(dd_ns_per_syscall(BYTES)?);
            let s1 = prog_stats(t.0.id());
            for (id, (ns1, cnt1)) in &s1 {
                let name = prog_name(*id);
                if name.starts_with("sys_") || name.starts_with("cri_") {
                    let (ns0, cnt0) = s0.get(id).copied().unwrap_or_default();
                    if cnt1 > &cnt0 {
                        info(format!(
                            "{name:<16} {:>7.1} ns/event over {} events",
                            (ns1 - ns0) as f64 / (cnt1 - cnt0) as f64,
                            cnt1 - cnt0
                        ));
                    }
                }
            }
            drop(t);
        }
        let b = (base.last().copied().unwrap_or(0.0) + dd_ns_per_syscall(BYTES)?) / 2.0;
        r_cri.push(cri.last().copied().unwrap_or(0.0) / b);
        r_uprobe.push(uprobe.last().copied().unwrap_or(0.0) / b);
    }
    let (b, s, c, u) = (median(base), median(sched), median(cri), median(uprobe));
    let (rc, ru) = (median(r_cri), median(r_uprobe));
    info(format!(
        "dd bs=1: baseline {b:.0} ns/syscall, tracer {s:.0} (x{:.3}), CRI on the socket {c:.0}, \
         CRI through uprobes {u:.0}; median of per-round ratios: socket x{rc:.3}, uprobes x{ru:.3}",
        s / b,
    ));
    Ok((rc, ru))
}

/// A loop device over a sparse file the bench made; detached and removed on drop.
struct Loop {
    dev: String,
    file: PathBuf,
}

impl Loop {
    fn new(file: PathBuf, size: u64) -> Result<Loop> {
        fs::File::create(&file)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("creating {}", file.display()))?;
        let dev = sh::output(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&file),
        )
        .context("losetup --find --show")?
        .trim()
        .to_string();
        Ok(Loop { dev, file })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = fs::remove_file(&self.file);
    }
}

/// µs per 4 KiB O_DIRECT write of a CPU-pinned dd on `dev`.
fn dd_direct_us(dev: &str, count: u32) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new("taskset")
        .args(["-c", "1", "dd", "if=/dev/zero", "bs=4k", "oflag=direct"])
        .arg(format!("of={dev}"))
        .arg(format!("count={count}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running dd")?;
    if !status.success() {
        bail!("dd to {dev} failed: {status}");
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / count as f64)
}
/// A non-target O_DIRECT writer on a loop device the bench creates: baseline, our tracer and
/// libbpf-tools biolatency, interleaved.
fn direct_io(agent: &Path, idle: u32, rounds: usize, target_dir: &Path) -> Result<()> {
    const COUNT: u32 = 20_000;
    let lo = Loop::new(target_dir.join("bench-direct-io.img"), 256 << 20)?;
    step(format!(
        "bench tracer: {rounds} interleaved rounds of `dd bs=4k oflag=direct count={COUNT}` to {} \
         on CPU 1: baseline, our tracer, libbpf-tools biolatency",
        lo.dev
    ));
    let (mut base, mut ours, mut bio) = (Vec::new(), Vec::new(), Vec::new());
    let mut costs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let idle = idle.to_string();
    for _ in 0..rounds {
        base.push(dd_direct_us(&lo.dev, COUNT)?);
        let t = spawn(Command::new(agent).args(["runq", "--pid", &idle, "--seconds", "3600"]))?;
        wait_programs(t.0.id(), 4, Duration::from_secs(20))?;
        let s0 = prog_stats(t.0.id());
        ours.push(dd_direct_us(&lo.dev, COUNT)?);
        for (id, (ns1, cnt1)) in prog_stats(t.0.id()) {
            let (ns0, cnt0) = s0.get(&id).copied().unwrap_or_default();
            let e = costs.entry(prog_name(id)).or_default();
            e.0 += ns1 - ns0;
            e.1 += cnt1 - cnt0;
        }
        drop(t);
        let b = spawn(Command::new("biolatency").args(["1", "1000"]))?;
        wait_programs(b.0.id(), 2, Duration::from_secs(20))?;
        bio.push(dd_direct_us(&lo.dev, COUNT)?);
        drop(b);
    }
    for (name, (ns, cnt)) in costs.iter().filter(|(n, _)| n.starts_with("block")) {
        if *cnt > 0 {
            info(format!(
                "{name:<18} {:>7.1} ns/event over {cnt} events",
                *ns as f64 / *cnt as f64
            ));
        }
    }
    let (b, o, l) = (median(base), median(ours), median(bio));
    info(format!(
        "dd O_DIRECT 4k: baseline {b:.1} µs/write, ours {o:.1} (x{:.3}), biolatency {l:.1} (x{:.3})",
        o / b,
        l / b
    ));
    Ok(())
}

/// Per-program (run_time_ns, run_cnt) of the BPF programs a process holds, from its fdinfo.
fn prog_stats(pid: u32) -> BTreeMap<u64, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(ns), Some(cnt)) =
            (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        {
            out.insert(id, (ns, cnt));
        }
    }
    out
}

fn prog_name(id: u64) -> String {
    sh::output(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]))
        .and_then(|s| {
            let after = s.split(" name ").nth(1)?;
            Some(after.split_whitespace().next()?.to_string())
        })
        .unwrap_or_else(|| format!("prog {id}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Waits until `pid` holds at least `n` BPF programs (attached), or fails after `limit`.
fn wait_programs(pid: u32, n: usize, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while prog_stats(pid).len() < n {
        if start.elapsed() > limit {
            bail!("the tracer (pid {pid}) did not load its programs within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Loaded programs are attached right after; leave a moment for the last attach.
    thread::sleep(Duration::from_millis(300));
    Ok(())
}

pub fn tracer(rounds: usize, loops: u32) -> Result<()> {
    let root = sh::workspace_root();
    sh::run(
        "building tracer-user (release)",
        sh::cargo()
            .current_dir(&root)
            .args(["build", "--quiet", "--release", "-p", "tracer-user"]),
    )?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let agent = target_dir.join("release/tracer-user");
    if !Path::new(&agent).exists() {
        bail!("{} was not built", agent.display());
    }
    let _stats = Sysctl::set(BPF_STATS, "1")?;
    // The tracer's one target: an idle process, so everything the benchmark does is non-target.
    let idle = spawn(Command::new("sleep").arg("3600"))?;
    step(format!(
        "bench tracer: {rounds} interleaved rounds of `perf bench sched pipe -l {loops}` on CPU 1: \
         baseline, our tracer, `perf stat -e context-switches` on the same idle process (the \
         kernel's per-task switch hooks without any program), libbpf-tools runqlat, baseline"
    ));
    let (mut base, mut ours, mut runqlat) = (Vec::new(), Vec::new(), Vec::new());
    // Per round, each variant over the mean of the round's two baselines (the VM drifts).
    let (mut r_ours, mut r_stat, mut r_runqlat) = (Vec::new(), Vec::new(), Vec::new());
    let mut cost: BTreeMap<u64, (u64, u64, f64)> = BTreeMap::new();
    let mut cpu_share = Vec::new();
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..rounds {
        base.push(pipe(loops)?);

        let t = spawn(
            Command::new(&agent)
                .args(["runq", "--pid", &idle.0.id().to_string()])
                .args(["--seconds", "3600"]),
        )?;
        wait_programs(t.0.id(), 4, Duration::from_secs(20))?;
        let (s0, w0) = (prog_stats(t.0.id()), Instant::now());
        ours.push(pipe(loops)?);
        let (s1, wall) = (prog_stats(t.0.id()), w0.elapsed().as_secs_f64());
        // Names while the programs exist (ids differ between rounds).
        for id in s1.keys() {
            names.entry(*id).or_insert_with(|| prog_name(*id));
        }
        drop(t);
        let mut total_ns = 0u64;
        for (id, (ns1, cnt1)) in &s1 {
            let (ns0, cnt0) = s0.get(id).copied().unwrap_or_default();
            let (dns, dcnt) = (ns1 - ns0, cnt1 - cnt0);
            total_ns += dns;
            let e = cost.entry(*id).or_default();
            e.0 += dns;
            e.1 += dcnt;
            e.2 += wall;
        }
        cpu_share.push(total_ns as f64 / (wall * 1e9) * 100.0);

        let p = spawn(
            Command::new("perf")
                .args(["stat", "-e", "context-switches", "-o", "/dev/null", "-p"])
                .arg(idle.0.id().to_string()),
        )?;
        thread::sleep(Duration::from_millis(400));
        let stat = pipe(loops)?;
        drop(p);

        let r = spawn(Command::new("runqlat").args(["10", "1000"]))?;
        wait_programs(r.0.id(), 3, Duration::from_secs(20))?;
        runqlat.push(pipe(loops)?);
        drop(r);
        let b = (base[round] + pipe(loops)?) / 2.0;
        r_ours.push(ours[round] / b);
        r_stat.push(stat / b);
        r_runqlat.push(runqlat[round] / b);
        if round == 0 {
            info(format!(
                "first round: baseline {:.2} µs/op, ours {:.2}, runqlat {:.2}",
                base[0], ours[0], runqlat[0]
            ));
        }
    }
    // Programs of different rounds have different ids: group by name.
    let mut by_name: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for (id, (ns, cnt, wall)) in cost {
        let name = names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("prog {id}"));
        let e = by_name.entry(name).or_default();
        // One program of each name per round: their walls add up to the measured time.
        e.0 += ns;
        e.1 += cnt;
        e.2 += wall;
    }
    for (name, (ns, cnt, wall)) in &by_name {
        let per_event = if *cnt > 0 {
            *ns as f64 / *cnt as f64
        } else {
            0.0
        };
        let rate = *cnt as f64 / wall;
        info(format!(
            "{name:<16} {per_event:>7.1} ns/event x {rate:>9.0} events/s = {:.3}% of a CPU",
            per_event * rate / 1e7
        ));
    }
    info(
        "(switched_out runs only when a target thread switches out: the benchmark's switches run \
         no program; what they pay is the perf core's per-task switch hooks, in the wall ratios)",
    );
    traced_pipe(&agent, rounds, loops)?;
    let (_socket, uprobes) = syscalls(&agent, idle.0.id(), rounds, &target_dir)?;
    direct_io(&agent, idle.0.id(), rounds, &target_dir)?;
    let share = median(cpu_share);
    let pipe_ratio = median(r_ours.clone());
    let (b, o, r) = (median(base), median(ours), median(runqlat));
    info(format!(
        "tracer programs during the pipe benchmark: median {share:.3}% of one CPU (goal <= 1%)"
    ));
    info(format!(
        "perf bench sched pipe: baseline {b:.2} µs/op, ours {o:.2}, runqlat {r:.2} (medians)"
    ));
    info(format!(
        "perf bench sched pipe, median of per-round ratios to the round's baseline: ours x{:.3}, \
         perf stat -e context-switches on the idle process x{:.3}, runqlat x{:.3}",
        median(r_ours),
        median(r_stat),
        median(r_runqlat)
    ));
    // One machine-readable line: this kernel, the attach path the agent takes for the kubelet's
    // CRI calls where its binary allows (uprobes), the two storms' ratios with it.
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "RESULT kernel={} path=uprobe pipe={pipe_ratio:.3} syscall={uprobes:.3}",
        release.trim(),
    );
    drop(idle);
    Ok(())
}
