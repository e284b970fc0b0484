//! `cargo xtask campaign`: diagnostic accuracy measured over the space of faults.
//!
//! Each trial draws, from the seed, a fault (every harness fault), a strength that spans its
//! thresholds, a moment to look (seconds to minutes after the fault is in place) and a way to run
//! the tool (API side only, with the probe pod, with `--trace`, or with the agent's evidence
//! handed over). It applies the fault, waits for the moment, runs `kubectl nodehealth` as an
//! operator would (keeping the report and the bundle), heals, and waits until the node is healthy
//! again. The answer is scored against the truth written down in [`truth`]: top-cause accuracy,
//! attribution where traced, a confusion matrix, unsafe advice (must be zero) and the time to
//! the right answer. Everything goes to `target/campaign/`; the command ends with
//! `CAMPAIGN trials=N correct=K unsafe=U accuracy=R seed=S`.

mod score;
pub mod truth;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;

use crate::{
    cluster::{self, Layout, fault::Fault},
    sh::{self, info, step},
};
use truth::{Expected, FaultTruth, Mode};

/// `cargo xtask campaign` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// How many trials.
    #[arg(long, default_value_t = 10)]
    pub trials: u32,
    /// The seed (a fresh one, printed, when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip this many draws first (to re-run one trial: `--seed S --skip K --trials 1`).
    #[arg(long, default_value_t = 0)]
    pub skip: u32,
    /// Which node: `vm` (this machine's node) or `guest` (the guest node of `cluster up
    /// --guest-node`: faults done the systemd / cgroup-v2 way, the agent run over SSH).
    #[arg(long, default_value = "vm", value_parser = ["vm", "guest"])]
    pub node: String,
    /// Only these faults (comma-separated harness names).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Where the results go.
    #[arg(long, default_value = "target/campaign")]
    pub out: PathBuf,
}

/// One trial's draw.
#[derive(Debug, Clone, Serialize)]
pub struct Draw {
    /// Index in the seeded sequence.
    pub index: u32,
    /// The harness fault.
    pub fault: &'static str,
    /// The strength flag and value, when the fault has one.
    pub strength: Option<(String, String)>,
    /// The strength as a number (in the truth table's unit).
    pub strength_value: f64,
    /// Seconds after the fault is in place.
    pub moment_seconds: f64,
    /// How the tool runs.
    pub mode: Mode,
}

/// One trial's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// What was drawn.
    pub draw: Draw,
    /// What is right.
    pub expected: Expected,
    /// The tool's top cause (`none` when it gave none).
    pub answer: String,
    /// Its confidence.
    pub confidence: String,
    /// The top cause's attribution, when it had one.
    pub attribution: Option<String>,
    /// The exit code.
    pub exit: Option<i32>,
    /// The top cause is one of the right ones.
    pub correct: bool,
    /// The attribution matched where the trial traced and the truth names one (`None`: not
    /// judged).
    pub attribution_correct: Option<bool>,
    /// Unsafe advice found, one line each.
    pub unsafe_advice: Vec<String>,
    /// Seconds from the fault in place to the tool's run.
    pub observed_after_seconds: f64,
    /// How long the tool ran.
    pub took_seconds: f64,
    /// The report and the bundle.
    pub report: PathBuf,
    /// The bundle (replay with `--from-bundle`).
    pub bundle: Option<PathBuf>,
}

/// splitmix64: a small, well-known generator — the draws only need to be reproducible from the
/// seed, not cryptographic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Log-uniform in [lo, hi] (uniform when lo is 0).
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        if lo <= 0.0 || hi <= lo {
            return lo + (hi - lo) * self.unit();
        }
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }
}

/// The draws of a seed, in order.
fn draws(seed: u64, faults: &[&'static FaultTruth], n: u32) -> Vec<Draw> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|index| {
            let f = faults[rng.below(faults.len())];
            let value = rng.log_uniform(f.strength.range.0, f.strength.range.1);
            let strength = f
                .strength
                .flag
                .map(|flag| (flag.to_string(), f.strength.unit.format(value)));
            // Moments: log-uniform, so the first seconds are drawn as often as the later minutes
            // (each decade alike).
            let moment = rng.log_uniform(f.moment.0, f.moment.1);
            let mode = f.modes[rng.below(f.modes.len())];
            Draw {
                index,
                fault: f.fault,
                strength,
                strength_value: value,
                moment_seconds: moment.round(),
                mode,
            }
        })
        .collect()
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct FaultArgs {
    #[command(subcommand)]
    fault: Fault,
}

/// The node a campaign breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// This machine's node.
    Host,
    /// The guest node (`cluster up --guest-node`).
    Guest,
}

impl Target {
    fn node(self) -> String {
        match self {
            Target::Host => cluster::node_name(),
            Target::Guest => cluster::guest_node::NODE.to_string(),
        }
    }

    fn apply(self, l: &Layout, fault: Fault) -> Result<()> {
        match self {
            Target::Host => cluster::fault::apply(fault),
            Target::Guest => cluster::guest_node::apply_fault(l, &fault),
        }
    }

    /// The agent on the node, as an operator runs it where no pod can start: its JSON.
    fn agent(self, root: &Path, l: &Layout) -> Result<Vec<u8>> {
        let probe = "tracer-user probe --host-root / --duration 5s --trace -o json";
        let mut cmd = match self {
            Target::Host => {
                let mut c = Command::new(root.join("target/debug/tracer-user"));
                c.args(probe.split(' ').skip(1));
                c
            }
            Target::Guest => cluster::guest_node::ssh(l)?.command(probe),
        };
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("running the agent on the node")?;
        Ok(out.stdout)
    }
}

pub fn run(args: Args) -> Result<()> {
    let target = if args.node == "guest" {
        Target::Guest
    } else {
        Target::Host
    };
    let root = sh::workspace_root();
    let out = root.join(&args.out);
    fs::create_dir_all(&out)?;
    let faults: Vec<&'static FaultTruth> = if args.faults.is_empty() {
        truth::FAULTS.iter().collect()
    } else {
        args.faults
            .iter()
            .map(|n| {
                truth::fault(n).with_context(|| {
                    format!(
                        "unknown fault {n:?}; the campaign knows: {}",
                        truth::FAULTS
                            .iter()
                            .map(|f| f.fault)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    step(format!(
        "campaign: {} trial(s), seed {seed} (re-run one: --seed {seed} --skip K --trials 1)",
        args.trials
    ));
    sh::run(
        "building the plugin and the agent",
        sh::cargo().current_dir(&root).args([
            "build",
            "-p",
            "kubectl-nodehealth",
            "-p",
            "tracer-user",
        ]),
    )?;
    let l = Layout::new();
    if !cluster::api::ready(&l) {
        bail!("the local cluster is not running: `cargo xtask cluster up` first");
    }
    if target == Target::Guest && !cluster::guest_node::running(&l) {
        bail!(
            "--node guest: no guest node in the running cluster: `cargo xtask cluster up --guest-node` first"
        );
    }
    let all = draws(seed, &faults, args.skip + args.trials);
    let mut trials = Vec::new();
    for draw in all.into_iter().skip(args.skip as usize) {
        let dir = out.join(format!("trial-{seed}-{:03}", draw.index));
        fs::create_dir_all(&dir)?;
        let trial = run_trial(&root, &l, target, draw, &dir)?;
        info(format!(
            "TRIAL {} {} {} at +{:.0}s via {:?}: {} ({}) — expected {:?}{}{}",
            trial.draw.index,
            trial.draw.fault,
            trial
                .draw
                .strength
                .as_ref()
                .map(|(f, v)| format!("{f} {v}"))
                .unwrap_or_default(),
            trial.observed_after_seconds,
            trial.draw.mode,
            trial.answer,
            trial.confidence,
            trial.expected.causes,
            if trial.correct { "" } else { "  <-- MISS" },
            if trial.unsafe_advice.is_empty() {
                String::new()
            } else {
                format!("  <-- UNSAFE: {}", trial.unsafe_advice.join("; "))
            }
        ));
        trials.push(trial);
        // Written after every trial: a campaign stopped half-way keeps what it measured.
        score::write(&out, seed, &trials)?;
    }
    let s = score::summary(&trials);
    score::write(&out, seed, &trials)?;
    println!(
        "CAMPAIGN trials={} correct={} unsafe={} accuracy={:.3} seed={seed}",
        s.trials, s.correct, s.unsafe_trials, s.accuracy
    );
    Ok(())
}

fn run_trial(root: &Path, l: &Layout, target: Target, draw: Draw, dir: &Path) -> Result<Trial> {
    let f = truth::fault(draw.fault).expect("drawn from the table");
    let expected = (f.judge)(draw.strength_value, draw.moment_seconds, draw.mode);
    step(format!(
        "trial {}: {} {} observed {:.0} s in, {:?}",
        draw.index,
        draw.fault,
        draw.strength
            .as_ref()
            .map(|(f, v)| format!("{f} {v}"))
            .unwrap_or_default(),
        draw.moment_seconds,
        draw.mode
    ));
    let mut argv = vec![draw.fault.to_string()];
    if let Some((flag, value)) = &draw.strength {
        argv.push(flag.clone());
        argv.push(value.clone());
    }
    let fault = FaultArgs::try_parse_from(&argv)
        .with_context(|| format!("the fault's command line {argv:?}"))?
        .fault;
    let result = (|| -> Result<Trial> {
        target.apply(l, fault)?;
        let in_place = Instant::now();
        // The moment is the experiment: waiting for it is what the trial measures.
        let wait = Duration::from_secs_f64(draw.moment_seconds);
        thread::sleep(wait.saturating_sub(in_place.elapsed()));
        let observed = in_place.elapsed().as_secs_f64();
        let (report, bundle, took) = run_tool(root, l, target, draw.mode, dir)?;
        Ok(score::judge(
            draw.clone(),
            expected.clone(),
            &report,
            observed,
            took,
            dir,
            bundle,
        ))
    })();
    let healed = cluster::fault::heal();
    let trial = result?;
    healed.context("the trial's fault did not heal: stopping the campaign")?;
    wait_healthy(root, l, &target.node())
        .context("the node did not come back healthy after the trial")?;
    Ok(trial)
}

/// Runs the tool as the mode says; returns the report, the bundle and how long it took.
fn run_tool(
    root: &Path,
    l: &Layout,
    target: Target,
    mode: Mode,
    dir: &Path,
) -> Result<(Value, Option<PathBuf>, f64)> {
    let plugin = root.join("target/debug/kubectl-nodehealth");
    let node = target.node();
    let bundle = dir.join("bundle.tar.gz");
    let mut cmd = Command::new(&plugin);
    cmd.arg(&node)
        .arg("--kubeconfig")
        .arg(Layout::new().dir.join("admin.kubeconfig"))
        .args(["-o", "json", "--bundle"])
        .arg(&bundle)
        .env_remove("KUBECONFIG");
    match mode {
        Mode::ApiOnly => {
            cmd.arg("--api-only");
        }
        Mode::Probe => {}
        Mode::Trace => {
            cmd.arg("--trace");
        }
        Mode::Agent => {
            let evidence = dir.join("agent.json");
            fs::write(&evidence, target.agent(root, l)?)?;
            cmd.arg("--node-evidence").arg(&evidence);
        }
    }
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running kubectl-nodehealth")?;
    let took = started.elapsed().as_secs_f64();
    fs::write(dir.join("stderr.txt"), &out.stderr)?;
    let mut report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("no JSON report ({e})"), "stderr": String::from_utf8_lossy(&out.stderr) })
    });
    report["exitCode"] = out.status.code().into();
    fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok((report, bundle.exists().then_some(bundle), took))
}

/// Waits until the node is Ready and the tool, from the API side, finds it healthy (the top
/// cause; leftover events of the trial may keep the exit code at 1 for minutes, which the next
/// trial's truth tolerates).
fn wait_healthy(root: &Path, l: &Layout, node: &str) -> Result<()> {
    let plugin = root.join("target/debug/kubectl-nodehealth");
    let since = Instant::now();
    let mut last = String::new();
    while since.elapsed() < Duration::from_secs(300) {
        if cluster::api::node_ready(l, node)?.as_deref() == Some("True") {
            let out = Command::new(&plugin)
                .arg(node)
                .arg("--kubeconfig")
                .arg(l.dir.join("admin.kubeconfig"))
                .args(["--api-only", "--duration", "2s", "-o", "json"])
                .env_remove("KUBECONFIG")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()?;
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let top = report["verdict"]["causes"][0]["id"]
                .as_str()
                .unwrap_or("none")
                .to_string();
            if top == "healthy" {
                info(format!(
                    "healthy again after {:.0} s",
                    since.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            last = top;
        }
        thread::sleep(Duration::from_secs(3));
    }
    bail!("not healthy 300 s after the heal (last top cause: {last})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_trials_and_spans_modes_faults_and_moments() {
        let faults: Vec<&FaultTruth> = truth::FAULTS.iter().collect();
        let a = draws(42, &faults, 200);
        let b = draws(42, &faults, 200);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        for f in truth::FAULTS {
            assert!(
                a.iter().any(|d| d.fault == f.fault),
                "{} never drawn",
                f.fault
            );
        }
        for m in Mode::ALL {
            assert!(a.iter().any(|d| d.mode == m), "{m:?} never drawn");
        }
        let slow: Vec<&Draw> = a
            .iter()
            .filter(|d| d.fault == "runtime-slow-list")
            .collect();
        assert!(slow.iter().any(|d| d.strength_value < 400.0));
        assert!(slow.iter().any(|d| d.strength_value > 600.0));
        // Skipping draws replays the same later trials.
        let skipped = draws(42, &faults, 200);
        assert_eq!(skipped[7].fault, a[7].fault);
        let parsed = FaultArgs::try_parse_from(["runtime-slow-list", "--delay", "800ms"]);
        assert!(parsed.is_ok());
    }
}
