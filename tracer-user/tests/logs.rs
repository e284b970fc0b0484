//! The agent's log reading on real inputs: a systemd journal written by the real journal tools
//! (systemd-journal-remote writes a journal file from an export stream; this machine runs no
//! systemd, so the host root is a directory the test builds), and a process whose stderr is a
//! log file, found through its fds as on a host without systemd.
mod common;

use std::{
    fs,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use common::ChildGuard;
use nodehealth_proto::logs::Component;
use tracer_user::{host::HostRoot, logs};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const MACHINE_ID: &str = "6e6f64656865616c7468746573743031";

fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nodehealth-logs-")
        .tempdir()
        .unwrap()
}

fn now_ms() -> i64 {
    tracer_user::host::now_unix_ms()
}

/// Writes `entries` (unit, Unix ms, message) as a journal file under `root`'s persistent journal.
fn write_journal(root: &Path, entries: &[(&str, i64, &str)]) {
    let dir = root.join("var/log/journal").join(MACHINE_ID);
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/machine-id"), format!("{MACHINE_ID}\n")).unwrap();
    let mut export = String::new();
    for (i, (unit, ms, msg)) in entries.iter().enumerate() {
        let name = unit.trim_end_matches(".service");
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             _SYSTEMD_UNIT={unit}\nSYSLOG_IDENTIFIER={name}\n_HOSTNAME=node-a\nMESSAGE={msg}\n\n",
            ms * 1000,
            1000 + i
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join("system.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{JOURNAL_REMOTE} (cargo xtask setup installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_journal_of_the_kubelet_and_runtime_units_is_read_under_systemd() {
    let root = temp_root();
    // A host that runs systemd has this directory.
    fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
    let now = now_ms();
    let old = now - 60 * 60 * 1000;
    write_journal(
        root.path(),
        &[
            // Before the window: must not count.
            (
                "kubelet.service",
                old,
                "E1202 12:00:00.000000 1 controller.go:251] \"Failed to update lease\" err=\"Unauthorized\"",
            ),
            (
                "kubelet.service",
                now - 120_000,
                "E1202 13:10:01.500000    7879 kubelet.go:2525] \"Skipping pod synchronization\" err=\"PLEG is not healthy: pleg was last seen active 3m1.2s ago; threshold is 3m0s\"",
            ),
            (
                "kubelet.service",
                now - 60_000,
                "E1202 13:11:01.500000    7879 kubelet.go:2525] \"Skipping pod synchronization\" err=\"PLEG is not healthy: pleg was last seen active 4m1.2s ago; threshold is 3m0s\"",
            ),
            (
                "containerd.service",
                now - 30_000,
                "time=\"2026-12-02T13:11:31.000000000Z\" level=error msg=\"failed to delete shim\" error=\"ttrpc: closed\" id=3f2a",
            ),
            (
                "other.service",
                now - 30_000,
                "PLEG is not healthy: pleg was last seen active 9m ago",
            ),
        ],
    );
    let l = logs::collect(
        &HostRoot::new(root.path()),
        None,
        None,
        now - 15 * 60 * 1000,
        now,
    );
    assert!(l.systemd);
    let k = l
        .kubelet
        .digest
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", l.kubelet));
    assert_eq!(k.source, "journal kubelet.service");
    assert_eq!(k.lines_scanned, 2, "{k:?}");
    let pleg = &k.matches[0];
    assert_eq!((pleg.id.as_str(), pleg.count), ("pleg-not-healthy", 2));
    // The journal's own time, not the klog header's.
    assert_eq!(pleg.first_unix_ms, Some(now - 120_000));
    assert_eq!(pleg.last_unix_ms, Some(now - 60_000));
    let r = l.runtime.digest.as_ref().unwrap();
    assert_eq!(r.matches.len(), 1);
    assert_eq!(r.matches[0].id, "runtime-shim");
    // No systemd manager runs here, and the host root has no systemctl: the unit state is
    // unknown, and says why.
    let unit = l.kubelet.unit.as_ref().unwrap();
    assert_eq!(unit.name, "kubelet.service");
    assert!(unit.active_state.is_none());
    assert!(unit.error.is_some(), "{unit:?}");
}

#[test]
fn a_process_whose_stderr_is_a_file_has_that_file_read() {
    let root = temp_root();
    let log = root.path().join("kubelet.log");
    fs::write(
        &log,
        "I1202 13:53:19.128825    7879 factory.go:221] Registration of the containerd container factory failed: dial unix /run/containerd/containerd.sock: connect: no such file or directory\n",
    )
    .unwrap();
    let now = now_ms();
    let stamp = |ms: i64| {
        let t =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let f = time::macros::format_description!(
            "[month][day] [hour]:[minute]:[second].[subsecond digits:6]"
        );
        t.format(&f).unwrap()
    };
    let line = format!(
        "E{}    7879 log.go:32] \"ListPodSandbox with filter from runtime service failed\" err=\"rpc error: code = DeadlineExceeded desc = context deadline exceeded\" filter=\"nil\"\n",
        stamp(now - 5_000)
    );
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let child = Command::new("sleep")
        .arg("30")
        .stderr(fs::OpenOptions::new().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let pid = guard.0.id();
    let l = logs::collect(&HostRoot::new("/"), Some(pid), None, now - 60_000, now);
    let k = l
        .kubelet
        .digest
        .clone()
        .unwrap_or_else(|| panic!("{:?}", l.kubelet));
    assert_eq!(k.source, format!("file {}", log.display()));
    assert!(
        l.kubelet.tried[0].starts_with(&format!("/proc/{pid}/fd/2 -> ")),
        "{:?}",
        l.kubelet.tried
    );
    // The cAdvisor line (a look-alike of a CRI dial error) is not counted, in or out of the window.
    assert_eq!(k.matches.len(), 1, "{k:?}");
    assert_eq!(k.matches[0].id, "cri-deadline-exceeded");
    assert_eq!(
        nodehealth_proto::logs::classify(Component::Kubelet, &k.matches[0].example)
            .unwrap()
            .id,
        "cri-deadline-exceeded"
    );
}
