//! The kubelet's and the runtime's logs read on the node, digested with the shared catalogue
//! (`nodehealth_proto::logs`), and their systemd units' state where systemd runs.
//!
//! Where a log is, is discovered, not assumed, in this order:
//! 1. the kubelet's `--log-file` flag (klog writes there instead of stderr);
//! 2. the process's stderr and stdout (`/proc/<pid>/fd/2`, `fd/1`): a regular file is its log —
//!    what a supervisor redirecting output, or a `kubelet ... 2>>/var/log/kubelet.log`, gives;
//! 3. the systemd journal, for the unit the process runs in (its cgroup names the unit) — read
//!    with `journalctl` (our own with `--root <host root>` when we have one, else the host's,
//!    run chrooted into the host root);
//! 4. the places the kubelet's own node log query looks: `/var/log/<name>.log` and
//!    `/var/log/<name>/<name>.log`.
//!
//! A process that is gone has no fds: its unit (systemd) or the well-known files still tell.
//! Only the tail of a file is read (the last [`TAIL_BYTES`]), and only lines since the requested
//! time are digested.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::Path,
    process::{Command, Stdio},
};

use nodehealth_proto::logs::{self, Component};
use nodehealth_proto::node::{ComponentLog, Logs, UnitState};

use crate::host::HostRoot;

/// The most of a log file read (its end).
pub const TAIL_BYTES: u64 = 8 << 20;
/// The most journal entries read per unit.
pub const JOURNAL_ENTRIES: u32 = 50_000;

/// Reads both components' logs from `since_unix_ms` on.
pub fn collect(
    host: &HostRoot,
    kubelet_pid: Option<u32>,
    runtime_pid: Option<u32>,
    since_unix_ms: i64,
    now_unix_ms: i64,
) -> Logs {
    let systemd = host.lexical("/run/systemd/system").is_dir();
    let read =
        |component, pid| component_log(host, systemd, component, pid, since_unix_ms, now_unix_ms);
    Logs {
        systemd,
        kubelet: read(Component::Kubelet, kubelet_pid),
        runtime: read(Component::Runtime, runtime_pid),
    }
}

fn component_log(
    host: &HostRoot,
    systemd: bool,
    component: Component,
    pid: Option<u32>,
    since: i64,
    now: i64,
) -> ComponentLog {
    let mut out = ComponentLog::default();
    let name = match (component, pid) {
        (Component::Kubelet, _) => "kubelet".to_string(),
        (Component::Runtime, Some(pid)) => fs::read_to_string(host.proc_file(pid, "comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "containerd".into()),
        (Component::Runtime, None) => "containerd".into(),
    };
    let unit = systemd.then(|| {
        pid.and_then(|p| unit_of(host, p))
            .unwrap_or_else(|| format!("{name}.service"))
    });

    let mut files: Vec<String> = Vec::new();
    if let Some(pid) = pid {
        if let Some(f) = log_file_flag(host, pid) {
            out.tried.push(format!("--log-file {f}"));
            files.push(f);
        }
        for fd in [2, 1] {
            let link = host.proc_file(pid, &format!("fd/{fd}"));
            match fs::read_link(&link) {
                Ok(target) => {
                    let t = target.to_string_lossy().into_owned();
                    out.tried.push(format!("/proc/{pid}/fd/{fd} -> {t}"));
                    if t.starts_with('/') && !t.starts_with("/dev/") && !t.ends_with(" (deleted)") {
                        files.push(t);
                    }
                }
                Err(e) => out.tried.push(format!("/proc/{pid}/fd/{fd}: {e}")),
            }
        }
    }
    let mut errors = Vec::new();
    // Explicit places first (flag, the process's own output), then the journal, then guesses.
    for f in dedup(files) {
        match read_file(host, component, &f, since, now) {
            Ok(d) => {
                out.digest = Some(d);
                break;
            }
            Err(e) => errors.push(format!("{f}: {e}")),
        }
    }
    if let Some(u) = &unit {
        if out.digest.is_none() {
            out.tried.push(format!("journal of {u}"));
            match read_journal(host, component, u, since, now) {
                Ok(d) => out.digest = Some(d),
                Err(e) => errors.push(format!("journal of {u}: {e}")),
            }
        }
        out.unit = Some(unit_state(host, u));
    }
    if out.digest.is_none() {
        for f in [
            format!("/var/log/{name}.log"),
            format!("/var/log/{name}/{name}.log"),
        ] {
            out.tried.push(f.clone());
            match read_file(host, component, &f, since, now) {
                Ok(d) => {
                    out.digest = Some(d);
                    break;
                }
                Err(e) => errors.push(format!("{f}: {e}")),
            }
        }
    }
    if out.digest.is_none() {
        out.error = Some(format!("no {name} log found: {}", errors.join("; ")));
    }
    out
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// The klog `--log-file` flag of a process (`--log-file=x`, `--log-file x`, `--log_file`).
fn log_file_flag(host: &HostRoot, pid: u32) -> Option<String> {
    let raw = fs::read(host.proc_file(pid, "cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.trim_start_matches('-');
        for flag in ["log-file", "log_file"] {
            if let Some(v) = a.strip_prefix(flag) {
                if let Some(v) = v.strip_prefix('=') {
                    return (!v.is_empty()).then(|| v.to_string());
                }
                if v.is_empty() {
                    return it.next().cloned();
                }
            }
        }
    }
    None
}

/// The systemd unit a process runs in: the last `.service` in its cgroup path.
fn unit_of(host: &HostRoot, pid: u32) -> Option<String> {
    let cgroup = fs::read_to_string(host.proc_file(pid, "cgroup")).ok()?;
    cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .flat_map(|p| p.split('/'))
        .rfind(|c| c.ends_with(".service"))
        .map(str::to_string)
}

fn read_file(
    host: &HostRoot,
    component: Component,
    host_path: &str,
    since: i64,
    now: i64,
) -> Result<logs::LogDigest, String> {
    let path = host.path(host_path);
    let meta = fs::metadata(&path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let text = tail(&path, TAIL_BYTES).map_err(|e| e.to_string())?;
    Ok(logs::digest(
        component,
        format!("file {host_path}"),
        text.lines().map(|l| (None, l)),
        Some(since),
        now,
    ))
}

/// The last `limit` bytes of a file, from the first whole line on.
fn tail(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(limit);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf)?;
    let body = if start > 0 {
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => &buf[i + 1..],
            None => &buf[..0],
        }
    } else {
        &buf[..]
    };
    Ok(String::from_utf8_lossy(body).into_owned())
}

/// `program` on the agent's PATH.
fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// A command that runs the host's `program`: directly when the host root is `/`, else chrooted
/// into the host root (the probe pod's image has no systemd tools; the host's need its own
/// libraries, which only its root has).
fn host_command(host: &HostRoot, program: &str) -> Command {
    if host.root() == Path::new("/") {
        return Command::new(program);
    }
    let mut c = Command::new(program);
    let root = std::ffi::CString::new(host.root().as_os_str().as_encoded_bytes())
        .unwrap_or_else(|_| c"/".into());
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes two system calls
    // (chroot(2), chdir(2)) on strings allocated before the fork: async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn run(mut c: Command) -> Result<String, String> {
    let out = c
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| format!("{:?}: {e}", c.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            c.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_journal(
    host: &HostRoot,
    component: Component,
    unit: &str,
    since: i64,
    now: i64,
) -> Result<logs::LogDigest, String> {
    let mut c = match on_path("journalctl") {
        Some(own) => {
            let mut c = Command::new(own);
            c.arg("--root").arg(host.root());
            c
        }
        None => host_command(host, "journalctl"),
    };
    c.args(["--no-pager", "--quiet", "--output", "json", "--unit", unit])
        .arg(format!("--since=@{}", since.div_euclid(1000)))
        .arg(format!("--lines={JOURNAL_ENTRIES}"));
    let out = run(c)?;
    let entries: Vec<(Option<i64>, String)> = out.lines().filter_map(journal_entry).collect();
    Ok(logs::digest(
        component,
        format!("journal {unit}"),
        entries.iter().map(|(t, m)| (*t, m.as_str())),
        Some(since),
        now,
    ))
}

/// One `journalctl -o json` line: its time and message (a message with non-UTF-8 bytes is an
/// array of numbers).
fn journal_entry(line: &str) -> Option<(Option<i64>, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let t = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<i64>().ok())
        .map(|us| us / 1000);
    let msg = match v.get("MESSAGE")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(bytes) => {
            let b: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect();
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => return None,
    };
    Some((t, msg))
}

/// `systemctl show` of a unit (the seed's `systemctl is-active kubelet`, with the restart count).
fn unit_state(host: &HostRoot, unit: &str) -> UnitState {
    let mut s = UnitState {
        name: unit.to_string(),
        ..UnitState::default()
    };
    let mut c = host_command(host, "systemctl");
    c.args([
        "show",
        unit,
        "--property=ActiveState,SubState,NRestarts,Result,KillMode",
    ]);
    match run(c) {
        Ok(out) => {
            for line in out.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let v = (!v.is_empty()).then(|| v.to_string());
                match k {
                    "ActiveState" => s.active_state = v,
                    "SubState" => s.sub_state = v,
                    "NRestarts" => s.restarts = v.and_then(|v| v.parse().ok()),
                    "Result" => s.result = v,
                    "KillMode" => s.kill_mode = v,
                    _ => {}
                }
            }
        }
        Err(e) => s.error = Some(e),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_json_entries() {
        let l = r#"{"__REALTIME_TIMESTAMP":"1796217001500000","MESSAGE":"E1202 13:10:01.500000 1 x.go:1] \"PLEG is not healthy\"","_SYSTEMD_UNIT":"kubelet.service"}"#;
        let (t, m) = journal_entry(l).unwrap();
        assert_eq!(t, Some(1_796_217_001_500));
        assert!(m.contains("PLEG"));
        let bin = r#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":[104,105,255]}"#;
        assert_eq!(journal_entry(bin).unwrap().1, "hi\u{fffd}");
        assert!(journal_entry("not json").is_none());
    }

    #[test]
    fn tail_starts_at_a_whole_line() {
        let dir = std::env::temp_dir().join(format!("nodehealth-logs-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.log");
        fs::write(&f, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(tail(&f, 15).unwrap(), "third\n");
        assert_eq!(tail(&f, 1000).unwrap(), "first line\nsecond line\nthird\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_output_is_found_through_the_fds() {
        // The test process's fds 1 and 2 are whatever cargo gave it; the reader must at least say
        // where it looked for a live process.
        let host = HostRoot::new("/");
        let l = component_log(
            &host,
            false,
            Component::Kubelet,
            Some(std::process::id()),
            0,
            0,
        );
        assert!(l.tried.iter().any(|t| t.contains("/fd/2")), "{:?}", l.tried);
    }
}
