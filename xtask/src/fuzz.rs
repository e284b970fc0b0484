//! `cargo xtask fuzz [--minutes N] [--target NAME]`: the fuzz targets of `fuzz/` (cargo-fuzz,
//! libFuzzer), each run for N minutes against its corpus; `cargo xtask test` runs each for
//! seconds (the smoke, [`SMOKE_SECONDS`]).
//!
//! The build is cargo-fuzz's (libFuzzer's coverage instrumentation, debug assertions and overflow
//! checks) with three changes that make it fit CI: no sanitizer, 16 codegen units and
//! `opt-level = 1` (fuzz/Cargo.toml). A cold build then takes about 5 minutes on this 2-core
//! machine instead of about 15, and the targets run about 3 times faster. AddressSanitizer has
//! little to find here: every target is safe Rust (the workspace denies `unsafe_code`); what is
//! looked for is a panic, an overflow, a hang or unbounded memory. Without a sanitizer no nightly
//! flag is used, so the pinned stable builds it. `AYA_BUILD_SKIP=1` leaves the eBPF object out (no
//! target touches it). The build, the corpora and the findings live in the cache outside the clone
//! (`fuzz-target/`, `fuzz-corpus/<target>/`, `fuzz-artifacts/<target>/`): corpora grow from run to
//! run and CI's fresh clone finds the build warm. A corpus is seeded from the repository's
//! fixtures (metrics captures, round-1 bundles and the agent evidence in them) and from
//! `fuzz/seeds/<target>/`: hand-made inputs, and each fixed finding's input (`regression-*`), so
//! every run tries it again.
//!
//! A crash, an input that runs longer than [`INPUT_TIMEOUT_S`] or one that takes more than
//! [`RSS_LIMIT_MB`] is a finding: the artifact's path and the command that reproduces it are
//! printed, every other target still runs, and the command fails.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    setup,
    sh::{self, info, step},
};

/// cargo-fuzz, pinned (installed with `--locked`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// `cargo fuzz build` and `cargo fuzz run` options (see the module docs).
const BUILD_OPTIONS: &[&str] = &["--sanitizer", "none", "--codegen-units", "16"];

/// The targets (`fuzz/fuzz_targets/<name>.rs`) and what each covers.
pub const TARGETS: &[(&str, &str)] = &[
    (
        "prom_text",
        "the kubelet's /metrics text (`metrics::parse`) and the histogram arithmetic",
    ),
    (
        "hpack",
        "the HPACK blocks of the kubelet's CRI calls (the trace's method names)",
    ),
    (
        "http_response",
        "the agent's HTTP/1.1 reader for health endpoints",
    ),
    ("kmsg", "/dev/kmsg records and syslog(2) lines, classified"),
    (
        "log_lines",
        "klog, logrus and CRI-O lines: time, catalogue entry, digest",
    ),
    (
        "bundle",
        "`--from-bundle`: a tar.gz replayed and judged again",
    ),
    (
        "agent_evidence",
        "the agent's gRPC stream (protobuf) and JSON evidence, judged and rendered",
    ),
];

/// Seconds per target in `cargo xtask test` (the smoke).
pub const SMOKE_SECONDS: u64 = 5;
/// Memory the fuzzed process may reach (`-rss_limit_mb`): more is a finding.
const RSS_LIMIT_MB: u32 = 1024;
/// Seconds one input may take (`-timeout`): longer is a finding (a hang).
const INPUT_TIMEOUT_S: u32 = 10;

/// What `cargo xtask fuzz` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per target.
    pub seconds: u64,
    /// Only this target.
    pub target: Option<String>,
}

pub fn run(o: &Options) -> Result<()> {
    let targets = selected(o.target.as_deref())?;
    let root = sh::workspace_root();
    cargo_fuzz().context("fuzz step 'cargo-fuzz' failed")?;
    let binaries = build(&root).context("fuzz step 'build' failed")?;
    let started = Instant::now();
    let mut findings = Vec::new();
    for target in &targets {
        step(format!("fuzz {target} for {} s", o.seconds));
        let corpus = seed(&root, target).with_context(|| format!("seeding {target}'s corpus"))?;
        let outcome = fuzz_one(&binaries.join(target), target, &corpus, o.seconds)?;
        if outcome.finding.is_none() {
            minimize(&binaries.join(target), target, &corpus)?;
        }
        info(format!(
            "FUZZ target={target} runs={} seconds={:.0} corpus={} result={}",
            outcome.runs.map_or("?".into(), |r| r.to_string()),
            outcome.seconds,
            files_in(&corpus),
            if outcome.finding.is_some() {
                "FINDING"
            } else {
                "ok"
            },
        ));
        if let Some(finding) = outcome.finding {
            let artifact = finding.artifact.as_deref().map(Path::display);
            let artifact = artifact.map_or("(none written)".into(), |a| a.to_string());
            info(format!("{}; log: {}", finding.what, finding.log.display()));
            info(format!("artifact: {artifact}"));
            info(format!(
                "reproduce: AYA_BUILD_SKIP=1 cargo fuzz run --fuzz-dir fuzz --target-dir {} {} \
                 {target} {artifact}",
                target_dir().display(),
                BUILD_OPTIONS.join(" ")
            ));
            findings.push(target.to_string());
        }
    }
    step(format!(
        "fuzzed {} target(s) in {:.0} s",
        targets.len(),
        started.elapsed().as_secs_f64()
    ));
    if !findings.is_empty() {
        bail!(
            "fuzzing found a crash, hang or memory blow-up in: {}",
            findings.join(", ")
        );
    }
    Ok(())
}

/// The targets to run: all, or the one named.
fn selected(only: Option<&str>) -> Result<Vec<&'static str>> {
    let all = TARGETS.iter().map(|(name, _)| *name);
    match only {
        None => Ok(all.collect()),
        Some(name) => match all.clone().find(|t| *t == name) {
            Some(t) => Ok(vec![t]),
            None => bail!(
                "no fuzz target {name:?}; the targets are {}",
                all.collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

fn target_dir() -> PathBuf {
    sh::cache_dir().join("fuzz-target")
}

fn cargo_fuzz() -> Result<()> {
    step("cargo-fuzz (builds and runs the libFuzzer targets)");
    if let Some(v) = sh::output(sh::cargo().args(["fuzz", "--version"])) {
        info(format!("present: {}", v.trim()));
        return Ok(());
    }
    info(format!("installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
    sh::run(
        "cargo install cargo-fuzz",
        sh::cargo().args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]),
    )
}

/// Builds every target; returns the directory of the binaries.
fn build(root: &Path) -> Result<PathBuf> {
    step("cargo fuzz build (every target)");
    // libFuzzer itself is C++, built by libfuzzer-sys.
    setup::apt_install(&[(
        "g++",
        "libFuzzer's runtime is C++ (libfuzzer-sys builds it)",
    )])?;
    let started = Instant::now();
    sh::run(
        "cargo fuzz build",
        sh::cargo()
            .current_dir(root)
            .args(["fuzz", "build", "--fuzz-dir", "fuzz", "--target-dir"])
            .arg(target_dir())
            .args(BUILD_OPTIONS)
            .env("AYA_BUILD_SKIP", "1"),
    )?;
    info(format!("built in {:.0} s", started.elapsed().as_secs_f64()));
    let host = sh::output(Command::new("rustc").current_dir(root).arg("-vV"))
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        })
        .context("rustc -vV names no host triple")?;
    Ok(target_dir().join(host).join("release"))
}

/// How one target's run ended.
struct Outcome {
    runs: Option<u64>,
    seconds: f64,
    finding: Option<Finding>,
}

struct Finding {
    /// libFuzzer's words for it (the `==ERROR` / `SUMMARY` line, or the exit status).
    what: String,
    artifact: Option<PathBuf>,
    log: PathBuf,
}

fn fuzz_one(binary: &Path, target: &str, corpus: &Path, seconds: u64) -> Result<Outcome> {
    let artifacts = sh::cache_dir().join("fuzz-artifacts").join(target);
    let logs = sh::cache_dir().join("fuzz-logs");
    fs::create_dir_all(&artifacts)?;
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{target}.log"));
    let started = Instant::now();
    let status = Command::new(binary)
        .arg(corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .status()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let stats = Stats::of(&text);
    let finding = (!status.success()).then(|| Finding {
        what: stats
            .error
            .clone()
            .unwrap_or_else(|| format!("the fuzzer exited with {status}")),
        artifact: stats.artifact.clone(),
        log: log.clone(),
    });
    Ok(Outcome {
        runs: stats.runs,
        seconds,
        finding,
    })
}

/// Keeps of the corpus only inputs that each add coverage (libFuzzer's `-merge=1` into a new
/// directory, which then replaces it): a corpus that only grew would make every later run, the
/// CI smoke's too, begin by re-running thousands of inputs that add nothing. Seeds are added
/// again by name on the next run.
fn minimize(binary: &Path, target: &str, corpus: &Path) -> Result<()> {
    let merged = corpus.with_extension("merging");
    let _ = fs::remove_dir_all(&merged);
    fs::create_dir_all(&merged)?;
    let log = sh::cache_dir()
        .join("fuzz-logs")
        .join(format!("{target}.merge.log"));
    let merge = Command::new(binary)
        .arg("-merge=1")
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(&merged)
        .arg(corpus)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .status();
    if !merge.is_ok_and(|s| s.success()) || files_in(&merged) == 0 {
        // The corpus stays as it was; the merge's log says why.
        info(format!("corpus not minimized (see {})", log.display()));
        return Ok(fs::remove_dir_all(&merged)?);
    }
    fs::remove_dir_all(corpus)?;
    fs::rename(&merged, corpus)?;
    Ok(())
}

/// What libFuzzer's output says.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    runs: Option<u64>,
    artifact: Option<PathBuf>,
    error: Option<String>,
}

impl Stats {
    fn of(text: &str) -> Stats {
        let mut s = Stats::default();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                s.runs = n.trim().parse().ok().or(s.runs);
            } else if let Some(n) = line.strip_prefix("Done ") {
                // `Done 123 runs in 10 second(s)`
                s.runs = s
                    .runs
                    .or(n.split_whitespace().next().and_then(|n| n.parse().ok()));
            } else if let Some(path) = line.split("Test unit written to ").nth(1) {
                s.artifact = Some(PathBuf::from(path.trim()));
            } else if s.error.is_none()
                && (line.starts_with("==") && line.contains("ERROR:")
                    || line.starts_with("SUMMARY: "))
            {
                s.error = Some(line.trim().to_string());
            }
        }
        s
    }
}

fn files_in(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

/// The target's corpus in the cache, with the seeds added (those it lacks).
fn seed(root: &Path, target: &str) -> Result<PathBuf> {
    let corpus = sh::cache_dir().join("fuzz-corpus").join(target);
    fs::create_dir_all(&corpus)?;
    let mut seeds = seeds(root, target)?;
    if let Ok(dir) = fs::read_dir(root.join("fuzz/seeds").join(target)) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            seeds.push((name, fs::read(entry.path())?));
        }
    }
    for (name, bytes) in &seeds {
        let path = corpus.join(format!("seed-{name}"));
        if !path.exists() {
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    info(format!(
        "corpus {} ({} seeds, {} inputs)",
        corpus.display(),
        seeds.len(),
        files_in(&corpus)
    ));
    Ok(corpus)
}

/// Seeds made from the repository's fixtures: (file name, bytes).
fn seeds(root: &Path, target: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let fixtures = root.join("kubectl-nodehealth/fixtures");
    let mut out = Vec::new();
    match target {
        "prom_text" => {
            for path in sorted_files(&fixtures.join("metrics"), "prom")? {
                let text = fs::read_to_string(&path)?;
                let stem = file_stem(&path);
                for (i, chunk) in families(&text, 8 * 1024).into_iter().enumerate() {
                    out.push((format!("{stem}-{i}.prom"), chunk.into_bytes()));
                }
            }
        }
        "bundle" | "agent_evidence" => {
            for path in sorted_files(&fixtures.join("bundles/round1"), "gz")? {
                let stem = file_stem(&path);
                let gz = fs::read(&path)?;
                if target == "bundle" {
                    // Small bundles also as the bare tar (the target gzips what is not gzip).
                    if gz.len() < 8 * 1024 {
                        let mut tar = Vec::new();
                        flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut tar)?;
                        out.push((format!("{stem}.tar"), tar));
                    }
                    out.push((format!("{stem}.tar.gz"), gz));
                } else if let Some(json) = bundle_entry(&gz, "nodehealth/node/evidence.json")? {
                    out.push((format!("{stem}-stream.pb"), run_events(&json)?));
                    out.push((format!("{stem}-evidence.json"), json));
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    Ok(files)
}

fn file_stem(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.split('.').next().unwrap_or_default().to_string()
}

/// A metrics text cut into pieces of about `size` bytes, each starting at a family's `# HELP`
/// (small inputs mutate faster; whole families keep the histograms whole).
fn families(text: &str, size: usize) -> Vec<String> {
    let mut pieces = vec![String::new()];
    for line in text.lines() {
        let current = pieces.last_mut().expect("never empty");
        if line.starts_with("# HELP ") && current.len() >= size {
            pieces.push(String::new());
        }
        let current = pieces.last_mut().expect("never empty");
        current.push_str(line);
        current.push('\n');
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// One entry of a tar.gz.
fn bundle_entry(gz: &[u8], name: &str) -> Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// The agent's stream for this evidence, as the `agent_evidence` target reads it, each message
/// length-delimited: `RunEvent { progress: Progress { step, elapsed_ms, total_ms } }`, one
/// `RunEvent { evidence: Evidence { section, schema, json } }` per section, then
/// `RunEvent { report: Report { finished_at_unix_ms, agent_version } }`
/// (proto/proto/nodehealth/v1/agent.proto has the field numbers).
fn run_events(evidence_json: &[u8]) -> Result<Vec<u8>> {
    let evidence: serde_json::Value = serde_json::from_slice(evidence_json)?;
    let sections = evidence
        .as_object()
        .context("the evidence is not a JSON object")?;
    let mut out = Vec::new();
    let mut progress = Vec::new();
    proto_bytes(1, b"observe", &mut progress);
    proto_varint(2, 4_000, &mut progress);
    proto_varint(3, 10_000, &mut progress);
    let mut event = Vec::new();
    proto_bytes(1, &progress, &mut event);
    varint(event.len() as u64, &mut out);
    out.extend(event);
    for (section, value) in sections {
        if !value.is_object() {
            continue; // schema, hostRoot, the times: not sections
        }
        let mut ev = Vec::new();
        proto_bytes(1, section.as_bytes(), &mut ev);
        proto_bytes(2, b"nodehealth/v1", &mut ev);
        proto_bytes(3, &serde_json::to_vec(value)?, &mut ev);
        proto_varint(4, 1_796_558_400_000, &mut ev);
        let mut event = Vec::new();
        proto_bytes(2, &ev, &mut event);
        varint(event.len() as u64, &mut out);
        out.extend(event);
    }
    let mut report = Vec::new();
    proto_varint(1, 1_796_558_410_000, &mut report);
    proto_bytes(3, b"0.1.0", &mut report);
    let mut event = Vec::new();
    proto_bytes(3, &report, &mut event);
    varint(event.len() as u64, &mut out);
    out.extend(event);
    Ok(out)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn proto_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A varint field (wire type 0).
fn proto_varint(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_one_of_the_list_or_an_error_naming_them() {
        assert_eq!(selected(None).unwrap().len(), TARGETS.len());
        assert_eq!(selected(Some("hpack")).unwrap(), vec!["hpack"]);
        let e = selected(Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("prom_text") && e.contains("agent_evidence"),
            "{e}"
        );
    }

    #[test]
    fn every_target_has_its_source_file() {
        let root = sh::workspace_root();
        for (name, _) in TARGETS {
            let path = root.join(format!("fuzz/fuzz_targets/{name}.rs"));
            assert!(path.is_file(), "{}", path.display());
        }
    }

    #[test]
    fn libfuzzer_output_gives_runs_the_error_and_the_artifact() {
        let done = "#4096\tpulse  cov: 10\nDone 52311 runs in 11 second(s)\n\
                    stat::number_of_executed_units: 52312\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            Stats::of(done),
            Stats {
                runs: Some(52312),
                ..Stats::default()
            }
        );
        let crash = "==123== ERROR: libFuzzer: deadly signal\n\
                     SUMMARY: libFuzzer: deadly signal\n\
                     artifact_prefix='/c/'; Test unit written to /c/crash-ab12\n\
                     stat::number_of_executed_units: 77\n";
        let s = Stats::of(crash);
        assert_eq!(s.runs, Some(77));
        assert_eq!(s.artifact, Some(PathBuf::from("/c/crash-ab12")));
        assert_eq!(
            s.error.as_deref(),
            Some("==123== ERROR: libFuzzer: deadly signal")
        );
    }

    /// The encoder writes what prost reads: RunEvent{evidence: Evidence{section: "clock"}} is
    /// field 2 (0x12) holding field 1 (0x0a) "clock".
    #[test]
    fn the_seed_stream_is_length_delimited_run_events() {
        let stream = run_events(br#"{"schema":"nodehealth/v1","clock":{}}"#).unwrap();
        // Progress first: field 1 (0x0a) holding step (0x0a) "observe", 2: 4000, 3: 10000.
        let progress_len = stream[0] as usize;
        assert_eq!(&stream[1..5], b"\x0a\x0f\x0a\x07");
        assert_eq!(&stream[5..12], b"observe");
        let stream = &stream[1 + progress_len..];
        let first_len = stream[0] as usize;
        let first = &stream[1..1 + first_len];
        assert_eq!(&first[..2], &[0x12, first_len as u8 - 2]);
        assert_eq!(&first[2..9], b"\x0a\x05clock");
        // The report closes the stream: field 3 (0x1a).
        let report = &stream[1 + first_len..];
        assert_eq!(report[1], 0x1a);
        assert_eq!(report.len(), 1 + report[0] as usize);
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, [0xac, 0x02]);
    }

    #[test]
    fn metrics_are_cut_at_family_starts() {
        let text = "# HELP a x\na 1\n# HELP b y\nb 2\n# HELP c z\nc 3\n";
        let pieces = families(text, 10);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.starts_with("# HELP ")));
        assert_eq!(pieces.concat(), text);
        assert_eq!(families(text, 1 << 20), vec![text.to_string()]);
    }
}
