//! `cargo xtask bench <name>`: benchmarks that print ratios measured side by side in one run.
//! The machine is noisy: runs are interleaved and repeated, and medians are reported.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    cluster::{self, Layout},
    sh::{self, info, step},
};

// Declared here rather than in main.rs, whose wiring another change owns.
#[path = "bench_tracer.rs"]
mod bench_tracer;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// One-node API-side diagnosis on the local cluster: time beyond the observation window
    /// (bar: <= 300 ms), next to `kubectl get node` as a baseline of one API round trip.
    Api {
        /// Interleaved rounds.
        #[arg(long, default_value_t = 15)]
        rounds: usize,
    },
    /// `kubectl nodehealth scan` of many nodes (Node + Lease objects created on the local API
    /// server, removed after): time and API calls (bar: <= 5 s for 5,000 nodes).
    Scan {
        /// Node objects to create.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Interleaved rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// What the eBPF tracer costs non-target workloads: per-program cost (bpf_stats run time x
    /// event rate, share of a CPU) and interleaved `perf bench sched pipe` baseline / ours /
    /// runqlat (bar: <= 1%).
    Tracer {
        /// Interleaved rounds.
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        /// Pipe round trips per run.
        #[arg(long, default_value_t = 100_000)]
        loops: u32,
    },
    /// The flight recorder on the local cluster's idle node: its process's peak RSS and CPU share
    /// (from the kernel's own accounting of the process) and its API writes per minute (bars:
    /// <= 32 MiB, <= 0.5% of a core, <= 6 writes a minute).
    Recorder {
        /// How long to watch it, e.g. 180 (seconds).
        #[arg(long, default_value_t = 180)]
        seconds: u64,
    },
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Api { rounds } => api(rounds),
        Bench::Tracer { rounds, loops } => bench_tracer::tracer(rounds, loops),
        Bench::Scan { nodes, rounds } => scan(nodes, rounds),
        Bench::Recorder { seconds } => recorder(seconds),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(cmd: &mut Command) -> Result<(Duration, i32)> {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    Ok((start.elapsed(), status.code().unwrap_or(-1)))
}

/// The local cluster up, the plugin built (release): the plugin's and kubectl's paths.
fn cluster_and_plugin() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    cluster::up(cluster::Settings::fast(), None)?;
    let root = sh::workspace_root();
    sh::run(
        "building kubectl-nodehealth (release)",
        sh::cargo().current_dir(&root).args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "kubectl-nodehealth",
        ]),
    )?;
    Ok((
        root.join("target/release/kubectl-nodehealth"),
        cluster::binaries_dir()?.join("kubectl"),
    ))
}

fn api(rounds: usize) -> Result<()> {
    let (plugin, kubectl) = cluster_and_plugin()?;
    let l = Layout::new();
    let kubeconfig = l.admin_kubeconfig();
    let node = cluster::node_name();
    let window = Duration::from_secs(1);
    step(format!(
        "bench api: {rounds} interleaved rounds of `kubectl nodehealth {node} --api-only \
         --duration 1s -o json` and `kubectl get node {node}`"
    ));
    let (mut diag, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (d, code) = timed(
            Command::new(&plugin)
                .arg(&node)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--api-only", "--duration", "1s", "-o", "json"]),
        )?;
        if code != 0 && code != 1 {
            bail!("the plugin could not diagnose the local node (exit {code})");
        }
        diag.push(d.saturating_sub(window));
        let (b, code) = timed(
            Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "node", &node]),
        )?;
        if code != 0 {
            bail!("kubectl get node failed (exit {code})");
        }
        baseline.push(b);
        if round == 0 {
            info(format!(
                "first round: diagnosis {:.0} ms beyond the window, kubectl get node {:.0} ms",
                diag[0].as_secs_f64() * 1e3,
                baseline[0].as_secs_f64() * 1e3
            ));
        }
    }
    let d = median(diag.clone());
    let b = median(baseline);
    let worst = diag.iter().max().copied().unwrap_or_default();
    info(format!(
        "diagnosis beyond the 1 s window: median {:.0} ms, worst {:.0} ms (bar 300 ms: median is {:.2}x the bar)",
        d.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        d.as_secs_f64() / 0.300
    ));
    info(format!(
        "baseline `kubectl get node`: median {:.0} ms; diagnosis overhead / baseline = {:.2}",
        b.as_secs_f64() * 1e3,
        d.as_secs_f64() / b.as_secs_f64()
    ));
    if d > Duration::from_millis(300) {
        bail!(
            "one-node diagnosis takes {:.0} ms beyond the window: over the 300 ms bar",
            d.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Label of the bench's Node and Lease objects (removed with one collection DELETE each).
const SCAN_LABEL: &str = "nodehealth-bench=scan";

/// Removes the bench's Node and Lease objects, also when the bench fails.
struct ScanObjects {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl ScanObjects {
    fn delete(&self) -> Result<()> {
        let label = SCAN_LABEL.replace('=', "%3D");
        for path in [
            format!("/api/v1/nodes?labelSelector={label}"),
            format!(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases?labelSelector={label}"
            ),
        ] {
            let (_, code) = timed(
                Command::new(&self.kubectl)
                    .arg("--kubeconfig")
                    .arg(&self.kubeconfig)
                    .args(["delete", "--raw", &path]),
            )?;
            if code != 0 {
                bail!("deleting the bench objects ({path}) failed (exit {code})");
            }
        }
        Ok(())
    }
}

impl Drop for ScanObjects {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// `kubectl create -f -` of `objects` (a List), in `parallel` concurrent kubectl processes.
fn create_all(
    kubectl: &Path,
    kubeconfig: &Path,
    objects: Vec<Value>,
    parallel: usize,
) -> Result<()> {
    let chunk = objects.len().div_ceil(parallel).max(1);
    let mut children = Vec::new();
    for part in objects.chunks(chunk) {
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": part });
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["create", "-f", "-", "-o", "name"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl create")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(list.to_string().as_bytes())?;
        children.push(child);
    }
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

fn scan(nodes: usize, rounds: usize) -> Result<()> {
    let (plugin, kubectl) = cluster_and_plugin()?;
    let kubeconfig = Layout::new().admin_kubeconfig();
    let objects = ScanObjects {
        kubectl: kubectl.clone(),
        kubeconfig: kubeconfig.clone(),
    };
    // Leftovers of an interrupted run first.
    objects.delete()?;
    step(format!(
        "bench scan: creating {nodes} Node objects and their Leases on the local API server"
    ));
    // A Lease's renewTime is a MicroTime.
    let now = sh::output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]))
        .context("date")?
        .trim()
        .to_string();
    let (label_key, label_value) = SCAN_LABEL.split_once('=').expect("key=value");
    let names: Vec<String> = (0..nodes).map(|i| format!("bench-node-{i:05}")).collect();
    let started = Instant::now();
    create_all(
        &kubectl,
        &kubeconfig,
        names
            .iter()
            .map(|n| {
                json!({ "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": n, "labels": { label_key: label_value } } })
            })
            .collect(),
        8,
    )?;
    create_all(
        &kubectl,
        &kubeconfig,
        names
            .iter()
            .map(|n| {
                json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": { "name": n, "namespace": "kube-node-lease",
                                  "labels": { label_key: label_value } },
                    "spec": { "holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": now } })
            })
            .collect(),
        8,
    )?;
    info(format!(
        "created in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    step(format!(
        "bench scan: {rounds} interleaved rounds of `kubectl nodehealth scan -o json` and \
         `kubectl get nodes -o json` (one LIST of the same nodes)"
    ));
    let (mut scans, mut lists) = (Vec::new(), Vec::new());
    let mut calls = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let out = Command::new(&plugin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["scan", "-o", "json"])
            .stderr(Stdio::inherit())
            .output()
            .context("running kubectl-nodehealth scan")?;
        scans.push(start.elapsed());
        if !matches!(out.status.code(), Some(0 | 1)) {
            bail!("scan failed ({})", out.status);
        }
        let report: Value = serde_json::from_slice(&out.stdout).context("scan's JSON")?;
        let seen = report["nodes"].as_array().map_or(0, Vec::len);
        if seen < nodes {
            bail!("scan reported {seen} nodes, expected at least {nodes}");
        }
        calls = report["apiCalls"].as_u64().unwrap_or(0);
        let (b, code) = timed(
            Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "nodes", "-o", "json"]),
        )?;
        if code != 0 {
            bail!("kubectl get nodes failed (exit {code})");
        }
        lists.push(b);
    }
    let (s, b) = (median(scans), median(lists));
    info(format!(
        "scan of {nodes}+ nodes: median {:.2} s in {calls} API calls (bar: 5 s, calls not growing \
         per node); `kubectl get nodes -o json` {:.2} s; scan / list = {:.2}",
        s.as_secs_f64(),
        b.as_secs_f64(),
        s.as_secs_f64() / b.as_secs_f64()
    ));
    drop(objects);
    if s > Duration::from_secs(5) {
        bail!(
            "scan of {nodes} nodes takes {:.2} s: over the 5 s bar",
            s.as_secs_f64()
        );
    }
    Ok(())
}

/// `/proc/<pid>/stat`'s utime + stime, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// `VmRSS` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The pid of the recorder's process on this node (its container runs `tracer-user record`).
fn recorder_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is = args.first().is_some_and(|a| a.ends_with(b"tracer-user"))
            && args.get(1) == Some(&&b"record"[..]);
        is.then_some(pid)
    })
}

fn recorder(seconds: u64) -> Result<()> {
    let (plugin, kubectl) = cluster_and_plugin()?;
    crate::agent_image::run()?;
    let kubeconfig = Layout::new().admin_kubeconfig();
    let node = cluster::node_name();
    let nodehealth = |args: &[&str]| -> Result<()> {
        let status = Command::new(&plugin)
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .status()
            .context("running the plugin")?;
        if !status.success() {
            bail!("kubectl nodehealth {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    step("bench recorder: installing the recorder on the local cluster");
    nodehealth(&["recorder", "install", "--image-pull-policy", "Never"])?;
    let result = (|| -> Result<()> {
        let report = || -> Option<Value> {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "noderecorderreports", &node, "-o", "json"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            serde_json::from_slice(&out.stdout).ok()
        };
        let start = Instant::now();
        let (pid, first) = loop {
            if let (Some(pid), Some(r)) = (recorder_pid(), report()) {
                break (pid, r);
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("no recorder process or report within 120 s");
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        // Past its start (the first probe, the ring filling): the steady state.
        std::thread::sleep(Duration::from_secs(15));
        let writes = |r: &Value| r["status"]["publisher"]["writes"].as_u64().unwrap_or(0);
        let first_writes = writes(&report().unwrap_or(first));
        let ticks0 = cpu_ticks(pid).context("the recorder's stat")?;
        let t0 = Instant::now();
        step(format!(
            "bench recorder: watching pid {pid} for {seconds} s on the idle node {node}"
        ));
        let mut peak_rss = 0;
        while t0.elapsed() < Duration::from_secs(seconds) {
            peak_rss = peak_rss.max(rss_kib(pid).context("the recorder exited")?);
            std::thread::sleep(Duration::from_secs(2));
        }
        let ticks = cpu_ticks(pid).context("the recorder exited")? - ticks0;
        let wall = t0.elapsed().as_secs_f64();
        let hz = sh::output(Command::new("getconf").arg("CLK_TCK"))
            .and_then(|t| t.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        let cpu_pct = ticks as f64 / hz / wall * 100.0;
        let last = report().context("the report")?;
        let per_min = (writes(&last).saturating_sub(first_writes)) as f64 / wall * 60.0;
        let rss_mib = peak_rss as f64 / 1024.0;
        info(format!(
            "peak RSS {rss_mib:.1} MiB (bar 32), CPU {cpu_pct:.2}% of a core (bar 0.5; {ticks} ticks \
             in {wall:.0} s), {per_min:.1} writes/min (bar 6), report {} bytes",
            last["status"].to_string().len()
        ));
        println!(
            "RESULT recorder rss_mib={rss_mib:.1} cpu_pct={cpu_pct:.2} writes_per_min={per_min:.1}"
        );
        Ok(())
    })();
    step("bench recorder: uninstalling");
    nodehealth(&["recorder", "uninstall"])?;
    result
}
