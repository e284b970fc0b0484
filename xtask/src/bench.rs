//! `cargo xtask bench <name>`: benchmarks that print ratios measured side by side in one run.
//! The machine is noisy: runs are interleaved and repeated, and medians are reported.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

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
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Api { rounds } => api(rounds),
        Bench::Tracer { rounds, loops } => bench_tracer::tracer(rounds, loops),
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

fn api(rounds: usize) -> Result<()> {
    cluster::up(cluster::Settings::fast())?;
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
    let plugin = root.join("target/release/kubectl-nodehealth");
    let kubectl = cluster::binaries_dir()?.join("kubectl");
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
