//! `--bundle out.tar.gz`: everything one run saw, raw and timestamped, for a vendor escalation or
//! a later look; `--from-bundle out.tar.gz` replays it through today's checks and verdict (no
//! cluster needed: everything after collection is a pure function of the evidence).
//!
//! Layout (all under `nodehealth/`):
//! - `MANIFEST.json`: format, tool version, node, when, the command line, the files;
//! - `report.json`: the `nodehealth/v1` report (evidence, findings, verdict);
//! - `raw/`: the kubelet's answers as received — `/metrics` at both ends of the window, the
//!   goroutine dump, `/configz`, `/stats/summary`, `/healthz?verbose`;
//! - `node/evidence.json`: the node agent's evidence, when there was a probe;
//! - `node/offcpu.folded`: the longest off-CPU waits of the kubelet's and the runtime's threads
//!   (eBPF, `--trace`) as folded stacks — `owner;kind;outermost;...;innermost microseconds`, the
//!   input of flamegraph.pl / inferno. They are the top waits the agent kept, not a full profile;
//! - `node/offcpu.svg`: the same stacks drawn as an off-CPU flame graph (inferno): width is time
//!   spent waiting, the root splits by process and wait kind (I/O, run queue, lock, socket).

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{Error, Report, diagnose, evidence::RawCaptures};

/// The bundle format this build writes and reads.
pub const FORMAT: &str = "nodehealth-bundle/v1";
const ROOT: &str = "nodehealth";

/// `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub tool_version: String,
    pub node: String,
    pub created_at: jiff::Timestamp,
    pub command: Vec<String>,
    pub files: Vec<String>,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("bundle {}: {why}", path.display()))
}

/// Refuses a `--bundle` path that cannot be written, before anything is collected.
pub fn check_writable(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(bad(
            path,
            format!("directory {} does not exist", dir.display()),
        ));
    }
    if path.is_dir() {
        return Err(bad(
            path,
            "is a directory; give a file name like out.tar.gz",
        ));
    }
    // The bundle replaces a regular file only: a symlink may point anywhere (another user's
    // file, a device), and what it points at is not ours to overwrite.
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(bad(
            path,
            "exists and is not a regular file (a symlink, a FIFO, a device): give a new file name",
        ));
    }
    // Whether the directory takes a new file (read-only, full, not ours): asked now, before
    // minutes of collection, with the same kind of file the bundle is written through.
    let probe = temp_path(path);
    create_private(&probe).map_err(|e| {
        bad(
            path,
            format!("cannot create a file in {}: {e}", dir.display()),
        )
    })?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Where the bundle is written before it is renamed into place.
fn temp_path(path: &Path) -> PathBuf {
    path.with_extension(format!("partial-{}", std::process::id()))
}

/// A new file readable by its owner only (the bundle holds the node's configuration and logs);
/// never an existing one, never through a symlink.
fn create_private(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The folded stacks as an off-CPU flame graph (SVG).
pub fn offcpu_svg(node: &str, folded: &str) -> Result<Vec<u8>, Error> {
    use inferno::flamegraph::{self, Options, color::Palette};
    let mut options = Options::default();
    options.title = format!("Off-CPU waits of the kubelet and the runtime on {node}");
    options.subtitle = Some("eBPF sched_switch: the longest waits of the window".into());
    options.count_name = "µs".into();
    options.colors = Palette::Basic(inferno::flamegraph::color::BasicPalette::Io);
    options.deterministic = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg).map_err(|e| {
        Error::Serialize {
            format: "svg",
            message: e.to_string(),
        }
    })?;
    Ok(svg)
}

/// The longest waits of the trace as folded stacks (see the module docs).
pub fn folded_stacks(report: &Report) -> String {
    let Some(trace) = report
        .evidence
        .node_probe
        .data()
        .and_then(|p| p.evidence.trace.as_ref())
    else {
        return String::new();
    };
    let mut out = String::new();
    for s in &trace.stalls {
        let mut frames: Vec<String> = vec![s.owner.clone(), s.kind.clone()];
        // Kernel stacks are innermost first; folded stacks read from the root.
        frames.extend(
            s.kernel_stack
                .iter()
                .rev()
                .map(|f| f.replace([';', ' '], "_")),
        );
        if s.kernel_stack.is_empty() {
            frames.push("(no stack: the wait began with a wake-up)".replace(' ', "_"));
        }
        out.push_str(&format!(
            "{} {}\n",
            frames.join(";"),
            (s.duration_ns / 1000).max(1)
        ));
    }
    out
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::Serialize {
        format: "json",
        message: e.to_string(),
    })
}

/// Writes the bundle to `path` (through a temporary file next to it, renamed when complete:
/// an interrupted or failed write leaves nothing behind).
pub fn write(
    path: &Path,
    report: &Report,
    raw: &RawCaptures,
    command: &[String],
) -> Result<(), Error> {
    let mut files: Vec<(String, Vec<u8>)> = vec![("report.json".into(), json(report)?)];
    for (name, text) in [
        ("raw/metrics-start.txt", &raw.metrics_start),
        ("raw/metrics-end.txt", &raw.metrics_end),
        ("raw/goroutines.txt", &raw.goroutine_dump),
        ("raw/configz.json", &raw.configz),
        ("raw/stats-summary.json", &raw.stats_summary),
        ("raw/healthz.txt", &raw.healthz),
    ] {
        if let Some(t) = text {
            files.push((name.into(), t.clone().into_bytes()));
        }
    }
    for (signal, answer) in &raw.history {
        files.push((
            format!("raw/prometheus/{signal}.json"),
            answer.clone().into_bytes(),
        ));
    }
    if let Some(p) = report.evidence.node_probe.data() {
        files.push(("node/evidence.json".into(), json(&p.evidence)?));
    }
    let folded = folded_stacks(report);
    if !folded.is_empty() {
        let svg = offcpu_svg(&report.node, &folded)?;
        files.push(("node/offcpu.folded".into(), folded.into_bytes()));
        files.push(("node/offcpu.svg".into(), svg));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        node: report.node.clone(),
        created_at: jiff::Timestamp::now(),
        command: command.to_vec(),
        files: files.iter().map(|(n, _)| n.clone()).collect(),
    };
    files.insert(0, ("MANIFEST.json".into(), json(&manifest)?));

    let tmp = temp_path(path);
    // Whatever is already at the temporary name is not ours: neither written nor removed.
    let file = create_private(&tmp)
        .map_err(|e| bad(path, format!("cannot create {}: {e}", tmp.display())))?;
    let result = (|| -> std::io::Result<()> {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mtime = manifest.created_at.as_second().max(0) as u64;
        for (name, data) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(mtime);
            header.set_cksum();
            tar.append_data(&mut header, format!("{ROOT}/{name}"), data.as_slice())?;
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(bad(path, format!("cannot write: {e}")));
    }
    Ok(())
}

/// The part of a bundle's report that is replayed.
#[derive(serde::Deserialize)]
struct Recorded {
    evidence: crate::evidence::Evidence,
}

/// Entries a bundle may have (this tool writes about a dozen).
const MAX_ENTRIES: usize = 1000;
/// Bytes the manifest or the report may decompress to.
const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a bundle: its manifest and its report re-diagnosed from the recorded evidence.
pub fn replay(path: &Path) -> Result<(Manifest, Report), Error> {
    let file = fs::File::open(path).map_err(|e| bad(path, e))?;
    replay_from(file, path)
}

/// [`replay`] of a bundle's bytes from any reader (the fuzz target's input); `path` only names
/// the bundle in errors.
pub fn replay_from(reader: impl Read, path: &Path) -> Result<(Manifest, Report), Error> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let (mut manifest, mut report) = (None, None);
    let entries = archive
        .entries()
        .map_err(|e| bad(path, format!("not a tar.gz: {e}")))?;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(bad(
                path,
                format!("more than {MAX_ENTRIES} entries: not a bundle of this tool"),
            ));
        }
        let mut entry = entry.map_err(|e| bad(path, format!("not a tar.gz: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut text = String::new();
        if name == format!("{ROOT}/MANIFEST.json") || name == format!("{ROOT}/report.json") {
            // Decompressed bytes are read with a cap: a gzip bomb is an error in bounded memory.
            (&mut entry)
                .take(MAX_ENTRY_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| bad(path, format!("{name}: {e}")))?;
            if text.len() as u64 > MAX_ENTRY_BYTES {
                return Err(bad(
                    path,
                    format!(
                        "{name} is larger than {} MiB: not a report of this tool",
                        MAX_ENTRY_BYTES / (1024 * 1024)
                    ),
                ));
            }
        }
        if name.ends_with("MANIFEST.json") && !text.is_empty() {
            manifest = Some(
                serde_json::from_str::<Manifest>(&text)
                    .map_err(|e| bad(path, format!("MANIFEST.json: {e}")))?,
            );
        } else if name.ends_with("report.json") && !text.is_empty() {
            // Only the evidence is replayed: the findings and verdict of the build that wrote the
            // bundle are not read (their ids may be ones this build no longer has).
            report = Some(
                serde_json::from_str::<Recorded>(&text)
                    .map_err(|e| bad(path, format!("report.json: {e}")))?,
            );
        }
    }
    let manifest =
        manifest.ok_or_else(|| bad(path, "no nodehealth/MANIFEST.json: not a bundle"))?;
    if manifest.format != FORMAT {
        return Err(bad(
            path,
            format!("format {:?}; this build reads {FORMAT}", manifest.format),
        ));
    }
    let report = report.ok_or_else(|| bad(path, "no nodehealth/report.json"))?;
    // Today's checks and verdict over the evidence as it was.
    Ok((manifest, diagnose(report.evidence)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests_support::healthy_evidence;

    /// A tar.gz of `entries` (name, bytes).
    fn archive(path: &Path, entries: &[(&str, Vec<u8>)]) {
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn a_gzip_bomb_or_an_endless_archive_is_a_clear_error_in_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.tar.gz");
        // 65 MiB of zeros: ~65 KiB compressed.
        archive(
            &bomb,
            &[(
                "nodehealth/report.json",
                vec![b' '; (MAX_ENTRY_BYTES + 1024 * 1024) as usize],
            )],
        );
        assert!(fs::metadata(&bomb).unwrap().len() < 1024 * 1024);
        let err = replay(&bomb).unwrap_err().to_string();
        assert!(err.contains("larger than 64 MiB"), "{err}");
        let many = dir.path().join("many.tar.gz");
        let entries: Vec<(String, Vec<u8>)> = (0..MAX_ENTRIES + 1)
            .map(|i| (format!("nodehealth/raw/{i}"), vec![]))
            .collect();
        let refs: Vec<(&str, Vec<u8>)> = entries
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect();
        archive(&many, &refs);
        let err = replay(&many).unwrap_err().to_string();
        assert!(err.contains("more than 1000 entries"), "{err}");
    }

    /// The folded stacks a real disk-slow run recorded (round-1 fixture) draw as a flame graph
    /// whose frames are the runtime's I/O waits. `NODEHEALTH_SVG_OUT=path` also writes it (the
    /// README's picture comes from here).
    #[test]
    fn offcpu_svg_of_a_recorded_disk_slow_run() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/round1/disk-slow.tar.gz");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            fs::File::open(&fixture).unwrap(),
        ));
        let mut folded = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("node/offcpu.folded") {
                entry.read_to_string(&mut folded).unwrap();
            }
        }
        assert!(
            folded.lines().any(|l| l.starts_with("runtime;ioWait;")),
            "{folded}"
        );
        let svg = String::from_utf8(offcpu_svg("vm", &folded).unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("Off-CPU waits of the kubelet and the runtime on vm"));
        assert!(svg.contains("ioWait"), "the wait kind is a frame");
        assert!(svg.trim_end().ends_with("</svg>"));
        if let Some(out) = std::env::var_os("NODEHEALTH_SVG_OUT") {
            fs::write(out, &svg).unwrap();
        }
    }

    #[test]
    fn a_bundle_replays_to_the_same_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tar.gz");
        let report = diagnose(healthy_evidence());
        let raw = RawCaptures {
            metrics_end: Some("kubelet_running_pods 3\n".into()),
            ..Default::default()
        };
        check_writable(&path).unwrap();
        write(
            &path,
            &report,
            &raw,
            &["kubectl-nodehealth".into(), "n1".into()],
        )
        .unwrap();
        let (manifest, again) = replay(&path).unwrap();
        assert_eq!(manifest.format, FORMAT);
        assert!(manifest.files.contains(&"raw/metrics-end.txt".to_string()));
        assert!(
            !manifest
                .files
                .contains(&"raw/metrics-start.txt".to_string())
        );
        assert_eq!(
            serde_json::to_value(&again.verdict).unwrap(),
            serde_json::to_value(&report.verdict).unwrap()
        );
        // Nothing but the bundle is left in the directory, readable by its owner only.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        // Written again over the existing bundle: replaced, still private.
        write(&path, &report, &raw, &[]).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Paths the bundle must not be written to are refused before any collection, with what to
    /// do, and leave nothing; a symlink's target is never touched.
    #[test]
    fn a_symlink_a_fifo_or_a_read_only_place_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("out.tar.gz");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = check_writable(&link).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("new file name"),
            "{e}"
        );
        let fifo = dir.path().join("fifo.tgz");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        assert!(check_writable(&fifo).is_err());
        // A file system that takes no new files (as root, a mode-0555 directory still does).
        let e = check_writable(Path::new("/proc/nodehealth-bundle.tgz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot create a file in /proc"), "{e}");
        // A stale temporary name that is a symlink is not followed by the write either.
        let tmp = temp_path(&dir.path().join("b.tgz"));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let report = diagnose(healthy_evidence());
        assert!(
            write(
                &dir.path().join("b.tgz"),
                &report,
                &RawCaptures::default(),
                &[]
            )
            .is_err()
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            4,
            "victim, link, fifo and the planted symlink only: {names:?}"
        );
    }

    #[test]
    fn garbage_and_bad_paths_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.tar.gz");
        fs::write(&junk, b"not gzip").unwrap();
        let e = replay(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.tar.gz"), "{e}");
        assert!(replay(&dir.path().join("missing.tgz")).is_err());
        assert!(check_writable(&dir.path().join("no/such/dir/out.tgz")).is_err());
        assert!(check_writable(dir.path()).is_err());
    }
}
