//! `cargo xtask test`: setup, formatting, lints, then every test tier.
//!
//! Unit tests run in parallel. Integration tests load eBPF into the running kernel and start
//! processes, so they run one at a time (one test binary after another, one test thread each).
//!
//! When it runs everything, every fuzz target then runs briefly (`fuzz::SMOKE_SECONDS` each: a
//! smoke, not a campaign — `cargo xtask fuzz` is that); `--only fuzz` runs only the smoke.
//!
//! `--repeat N [--only X]` is the flake hunt: the selected tests run N times (the end-to-end ones
//! against one cluster) and each test's pass count is printed — a test that passes four runs in
//! five is a failing test. `X` is a tier (`unit`, `integration`, `e2e`, `fuzz`), a test binary (`scenarios`,
//! `cri_calls`, ...) or a test name filter.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{
    cluster::{self, Layout, host::Fingerprint},
    fuzz, setup,
    sh::{self, info, step},
};

/// What `cargo xtask test` runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The long tier too (default kubelet timings; minutes per scenario).
    pub long: bool,
    /// Run the selected tests this many times and report each one's pass count.
    pub repeat: u32,
    /// Only this tier, test binary or test name filter.
    pub only: Option<String>,
}

/// The end-to-end test binaries (tests/tests/*.rs), in the order they run.
const E2E_BINARIES: &[&str] = &[
    "cluster",
    "faults",
    "guest",
    "logs",
    "plugin",
    "alerts",
    "probe",
    "scenarios",
];
/// The integration test binaries (real kernel, no cluster).
const INTEGRATION_BINARIES: &[&str] = &[
    "agent_grpc",
    "apiserver",
    "certificates",
    "containerd_cri",
    "cri_calls",
    "discovery",
    "frozen_kubelet",
    "gosym",
    "logs",
    "node_state",
    "runq_wait",
    "sandboxes",
    "thread_states",
];

/// What one selection runs.
#[derive(Debug, Clone, PartialEq)]
struct Selection {
    unit: bool,
    integration: Option<Target>,
    e2e: Option<Target>,
    /// The fuzz smoke.
    fuzz: bool,
}

/// Within a tier: every binary, one binary, or a name filter.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    All,
    Binary(String),
    Filter(String),
}

fn select(only: Option<&str>) -> Selection {
    match only {
        None => Selection {
            unit: true,
            integration: Some(Target::All),
            e2e: Some(Target::All),
            fuzz: true,
        },
        Some("unit") => Selection {
            unit: true,
            integration: None,
            e2e: None,
            fuzz: false,
        },
        Some("integration") => Selection {
            unit: false,
            integration: Some(Target::All),
            e2e: None,
            fuzz: false,
        },
        Some("e2e") => Selection {
            unit: false,
            integration: None,
            e2e: Some(Target::All),
            fuzz: false,
        },
        Some("fuzz") => Selection {
            unit: false,
            integration: None,
            e2e: None,
            fuzz: true,
        },
        Some(b) if E2E_BINARIES.contains(&b) => Selection {
            unit: false,
            integration: None,
            e2e: Some(Target::Binary(b.into())),
            fuzz: false,
        },
        Some(b) if INTEGRATION_BINARIES.contains(&b) => Selection {
            unit: false,
            integration: Some(Target::Binary(b.into())),
            e2e: None,
            fuzz: false,
        },
        // A test name: looked for in both tiers that need the real machine.
        Some(f) => Selection {
            unit: false,
            integration: Some(Target::Filter(f.into())),
            e2e: Some(Target::Filter(f.into())),
            fuzz: false,
        },
    }
}

pub fn run(o: Options) -> Result<()> {
    let root = sh::workspace_root();
    sh::require_free_space(&root, sh::need_free_gib(true), "`cargo xtask test`")?;
    setup::run()?;
    let repeat = o.repeat.max(1);
    let sel = select(o.only.as_deref());

    if o.only.is_none() {
        step("cargo fmt --check");
        sh::run(
            "formatting (run `cargo fmt --all`)",
            sh::cargo()
                .current_dir(&root)
                .args(["fmt", "--all", "--check"]),
        )?;

        step("cargo clippy --all-targets -- -D warnings");
        sh::run(
            "clippy",
            sh::cargo().current_dir(&root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }

    let mut tally = Tally::default();
    for round in 1..=repeat {
        if repeat > 1 {
            step(format!("round {round} of {repeat}"));
        }
        if sel.unit {
            step("unit tests");
            let mut cmd = sh::cargo();
            cmd.current_dir(&root)
                .args(["test", "--workspace", "--lib", "--bins"]);
            tally.run("unit tests", &mut cmd)?;
        }
        if let Some(target) = &sel.integration {
            step("integration tests (real kernel; serial)");
            let mut cmd = sh::cargo();
            // The end-to-end tests need the cluster: they run in their own tier below.
            cmd.current_dir(&root)
                .args(["test", "--workspace", "--exclude", "nodehealth-e2e"]);
            match target {
                Target::All | Target::Filter(_) => cmd.args(["--test", "*"]),
                Target::Binary(b) => cmd.args(["--test", b]),
            };
            cmd.args(["--", "--test-threads=1"]);
            if let Target::Filter(f) = target {
                cmd.arg(f);
            }
            if o.long {
                cmd.env("NODEHEALTH_LONG_TESTS", "1");
            }
            tally.run("integration tests", &mut cmd)?;
        }
    }
    if sel.fuzz {
        // Once, whatever --repeat says: the fuzzer draws new inputs on every run anyway. A finding
        // fails the command at the end; the end-to-end tier still runs.
        step(format!(
            "fuzz smoke: every target for {} s",
            fuzz::SMOKE_SECONDS
        ));
        let smoke = fuzz::Options {
            seconds: fuzz::SMOKE_SECONDS,
            target: None,
        };
        if let Err(e) = fuzz::run(&smoke) {
            tally.broken.push(format!("fuzz smoke: {e:#}"));
        }
    }
    if let Some(target) = &sel.e2e {
        end_to_end(&root, o.long, target, repeat, &mut tally)?;
    }
    if repeat > 1 || o.only.is_some() {
        tally.report(repeat);
    }
    tally.verdict()?;
    step("all tests passed");
    Ok(())
}

/// Each test's outcomes over the rounds.
#[derive(Default)]
struct Tally {
    /// test name -> (passed, failed, ignored)
    tests: BTreeMap<String, (u32, u32, u32)>,
    /// Test commands that failed without a failing test (a build error, a crash).
    broken: Vec<String>,
}

impl Tally {
    /// Runs a libtest command, its output shown as it comes, and counts each test's result.
    fn run(&mut self, what: &str, cmd: &mut Command) -> Result<()> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut failed_here = false;
        let mut results = ResultLines::default();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            println!("{line}");
            if let Some((name, outcome)) = results.feed(&line) {
                let name = name.as_str();
                let e = self.tests.entry(name.to_string()).or_default();
                match outcome {
                    Outcome::Ok => e.0 += 1,
                    Outcome::Failed => {
                        e.1 += 1;
                        failed_here = true;
                    }
                    Outcome::Ignored => e.2 += 1,
                }
            }
        }
        let status = child.wait().context("waiting for cargo test")?;
        if !status.success() && !failed_here {
            self.broken
                .push(format!("{what}: {cmd:?} failed ({status})"));
        }
        Ok(())
    }

    fn report(&self, repeat: u32) {
        step(format!("pass counts over {repeat} run(s)"));
        for (name, (ok, failed, ignored)) in &self.tests {
            if *ignored > 0 && ok + failed == 0 {
                info(format!("REPEAT test={name} ignored"));
            } else {
                info(format!(
                    "REPEAT test={name} passed={ok}/{}{}",
                    ok + failed,
                    if *failed > 0 {
                        "  <-- FLAKY OR FAILING"
                    } else {
                        ""
                    }
                ));
            }
        }
    }

    fn verdict(&self) -> Result<()> {
        let failing: Vec<&String> = self
            .tests
            .iter()
            .filter(|(_, (_, failed, _))| *failed > 0)
            .map(|(n, _)| n)
            .collect();
        if !self.broken.is_empty() {
            bail!("{}", self.broken.join("; "));
        }
        if !failing.is_empty() {
            bail!(
                "{} test(s) failed at least once: {}",
                failing.len(),
                failing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    Failed,
    Ignored,
}

/// libtest's `test <name> ... ok|FAILED|ignored[, reason]`. A test that prints to stderr before
/// its result still ends the line with the result (stdout carries only libtest's lines).
fn parse_result(line: &str) -> Option<(&str, Outcome)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let outcome = match result.trim() {
        "ok" => Outcome::Ok,
        "FAILED" => Outcome::Failed,
        r if r.starts_with("ignored") => Outcome::Ignored,
        _ => return None,
    };
    Some((name.trim(), outcome))
}

/// libtest's result lines in a stream of stdout lines. A test whose result did not end its line
/// (something else wrote to the test's stdout after `test <name> ... `) gets the next line that
/// is only a result.
#[derive(Default)]
struct ResultLines {
    pending: Option<String>,
}

impl ResultLines {
    fn feed(&mut self, line: &str) -> Option<(String, Outcome)> {
        let parsed = match (parse_result(line), &self.pending) {
            (Some((n, o)), _) => Some((n.to_string(), o)),
            (None, Some(name)) => parse_result(&format!("test {name} ... {}", line.trim()))
                .map(|(n, o)| (n.to_string(), o)),
            (None, None) => None,
        };
        if parsed.is_some() {
            self.pending = None;
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, _)) = rest.split_once(" ... ")
            && !name.contains(' ')
        {
            self.pending = Some(name.to_string());
        }
        parsed
    }
}

/// The end-to-end tier: a real cluster up, the tests in `tests/` against it (`repeat` times), the
/// cluster down, and the machine compared with how it was before `up`.
fn end_to_end(
    root: &Path,
    long: bool,
    target: &Target,
    repeat: u32,
    tally: &mut Tally,
) -> Result<()> {
    step("end-to-end tests against the local cluster");
    // The tier runs the real binaries, as an operator would.
    sh::run(
        "building the plugin and the agent",
        sh::cargo().current_dir(root).args([
            "build",
            "-p",
            "kubectl-nodehealth",
            "-p",
            "tracer-user",
        ]),
    )?;
    sh::run(
        "building the end-to-end tests",
        sh::cargo()
            .current_dir(root)
            .args(["test", "-p", "nodehealth-e2e", "--no-run"]),
    )?;
    // The alert tests load the rules into a real Prometheus (before the cluster's fingerprint:
    // the cache is not the cluster's).
    let prometheus = crate::prometheus::ensure()?;
    let kube_state_metrics = if long {
        Some(crate::prometheus::ensure_kube_state_metrics()?)
    } else {
        None
    };
    let layout = Layout::new();
    if std::fs::metadata("/run/kubectl-nodehealth-cluster").is_ok() {
        info("a cluster is already registered; taking it down for a clean start");
        cluster::down()?;
    }
    let before = Fingerprint::take(&layout.dir);
    cluster::up(
        if long {
            cluster::Settings::defaults()
        } else {
            cluster::Settings::fast()
        },
        None,
    )?;
    let mut result = Ok(());
    for round in 1..=repeat {
        if repeat > 1 {
            step(format!("end-to-end round {round} of {repeat}"));
        }
        let mut e2e = sh::cargo();
        e2e.current_dir(root)
            .args(["test", "-p", "nodehealth-e2e"])
            .env("NODEHEALTH_PROMETHEUS_DIR", &prometheus);
        if let Some(k) = &kube_state_metrics {
            e2e.env("NODEHEALTH_KUBE_STATE_METRICS", k);
        }
        if let Target::Binary(b) = target {
            e2e.args(["--test", b]);
        }
        e2e.args(["--", "--test-threads=1"]);
        if let Target::Filter(f) = target {
            e2e.arg(f);
        }
        if long {
            // The long scenarios are #[ignore]d (reported as such) in the fast tier.
            e2e.env("NODEHEALTH_LONG_TESTS", "1")
                .arg("--include-ignored");
        }
        if let Err(e) = tally.run("end-to-end tests", &mut e2e) {
            result = Err(e);
            break;
        }
    }
    let down = cluster::down();
    let after = Fingerprint::take(&layout.dir);
    let leftovers = after.diff(&before);
    for l in &leftovers {
        eprintln!("    left behind: {l}");
    }
    result?;
    down?;
    if !leftovers.is_empty() {
        bail!(
            "`cluster down` did not leave the machine as it found it ({} differences)",
            leftovers.len()
        );
    }
    info("cluster down left the machine as it was found");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_result_lines_are_counted() {
        assert_eq!(
            parse_result("test scenarios_x ... ok"),
            Some(("scenarios_x", Outcome::Ok))
        );
        assert_eq!(
            parse_result("test a::b ... FAILED"),
            Some(("a::b", Outcome::Failed))
        );
        assert_eq!(
            parse_result("test long_one ... ignored, long tier (3+ minutes)"),
            Some(("long_one", Outcome::Ignored))
        );
        assert_eq!(parse_result("test result: ok. 3 passed"), None);
        assert_eq!(parse_result("running 3 tests"), None);
    }

    #[test]
    fn a_result_split_from_its_test_line_is_counted() {
        // As the flake hunt of 2026-12-07 saw it: a fault command's stdout line after the name.
        let mut r = ResultLines::default();
        let lines = [
            "test frozen_runtime ... FAULT runtime-frozen took hold at 1796669099.692",
            "FAULT api-partition took hold at 1.0",
            "ok",
            "test plain ... ok",
            "test broken ... FAULT x took hold at 2.0",
            "FAILED",
            "ok",
        ];
        let got: Vec<(String, Outcome)> = lines.iter().filter_map(|l| r.feed(l)).collect();
        assert_eq!(
            got,
            [
                ("frozen_runtime".to_string(), Outcome::Ok),
                ("plain".to_string(), Outcome::Ok),
                ("broken".to_string(), Outcome::Failed),
            ],
            "a lone result after the one that resolved its test counts nothing"
        );
    }

    #[test]
    fn only_picks_a_tier_a_binary_or_a_filter() {
        assert_eq!(
            select(Some("scenarios")).e2e,
            Some(Target::Binary("scenarios".into()))
        );
        assert!(!select(Some("scenarios")).unit);
        assert_eq!(
            select(Some("cri_calls")).integration,
            Some(Target::Binary("cri_calls".into()))
        );
        let f = select(Some("disk_slow"));
        assert_eq!(f.e2e, Some(Target::Filter("disk_slow".into())));
        assert_eq!(f.integration, Some(Target::Filter("disk_slow".into())));
        assert!(select(None).unit && select(None).e2e == Some(Target::All));
        assert!(select(None).fuzz && !select(Some("unit")).fuzz);
        let fuzz = select(Some("fuzz"));
        assert!(fuzz.fuzz && !fuzz.unit && fuzz.integration.is_none() && fuzz.e2e.is_none());
    }
}
