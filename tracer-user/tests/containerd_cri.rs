//! The CRI probe against a real containerd that the test starts on a private socket: timings
//! and counts while it answers; "hung" within the timeout bound once it is frozen (SIGSTOP);
//! the runtime identified as the socket's listener and reported stopped. Needs root and the
//! Debian containerd (`cargo xtask setup`).
mod common;

use std::time::Duration;

use common::Containerd;
use nodehealth_proto::node::{CallOutcome, CriState, Identification, Liveness};
use tracer_user::{
    cri::{self, CriConfig},
    discovery::Overrides,
    host::HostRoot,
    probe::{self, ProbeConfig},
    socket,
};

fn cri_config(c: &Containerd, window_ms: u64, timeout_ms: u64, interval_ms: u64) -> CriConfig {
    CriConfig {
        endpoint: c.endpoint(),
        socket: c.socket.clone(),
        timeout: Duration::from_millis(timeout_ms),
        interval: Duration::from_millis(interval_ms),
        window: Duration::from_millis(window_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_times_every_call_against_a_real_containerd() {
    let c = Containerd::start();
    let r = cri::probe(cri_config(&c, 3_000, 5_000, 500)).await;
    let p = &r.probe;
    assert_eq!(p.state, CriState::Responding, "{p:#?}\n{}", c.log());
    assert_eq!(p.runtime_name.as_deref(), Some("containerd"));
    assert!(
        p.runtime_version.as_deref().unwrap_or("").contains("1.6"),
        "{p:?}"
    );
    assert_eq!(p.runtime_api_version.as_deref(), Some("v1"));
    let cond = |t: &str| p.conditions.iter().find(|c| c.kind == t).map(|c| c.status);
    assert_eq!(cond("RuntimeReady"), Some(true));
    // No CNI config in the private conf_dir: the runtime says so.
    assert_eq!(cond("NetworkReady"), Some(false));
    assert_eq!(p.sandboxes.as_ref().map(|s| s.total), Some(0));
    assert_eq!(p.containers.as_ref().map(|s| s.total), Some(0));
    assert!(r.ids.as_ref().is_some_and(|ids| ids.is_empty()));
    for op in &p.operations[1..] {
        // Calls at 0, 0.5, ..., 3.0 s.
        assert!((6..=8).contains(&op.calls), "{op:?}");
        assert_eq!(op.ok, op.calls, "{op:?}");
        assert!(op.p50_ms.unwrap() < 1_000.0, "{op:?}");
        assert_eq!(op.samples.len() as u32, op.calls);
        eprintln!(
            "{:>15}: {} calls, p50 {:.2} ms, max {:.2} ms",
            op.name,
            op.calls,
            op.p50_ms.unwrap(),
            op.max_ms.unwrap()
        );
    }
    assert!(
        p.elapsed_ms >= 3_000 && p.elapsed_ms < 5_000,
        "{}",
        p.elapsed_ms
    );

    let s = socket::inspect(&HostRoot::new("/"), &c.endpoint());
    assert!(s.exists && s.is_socket, "{s:?}");
    assert_eq!(s.mode.as_deref(), Some("0660"), "{s:?}");
    assert_eq!(s.listeners.len(), 1, "{s:?}");
    assert_eq!(s.listeners[0].pid, c.pid());
    assert_eq!(s.listeners[0].comm, "containerd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_containerd_is_reported_hung_within_the_timeout_bound() {
    let c = Containerd::start();
    c.freeze();
    let (window, timeout) = (2_000, 1_000);
    let r = cri::probe(cri_config(&c, window, timeout, 500)).await;
    let p = &r.probe;
    eprintln!("frozen: state {:?}, elapsed {} ms", p.state, p.elapsed_ms);
    assert_eq!(p.state, CriState::Hung, "{p:#?}");
    // The kernel still accepts the connection into the listen backlog...
    assert_eq!(p.operations[0].ok, 1);
    // ...and nothing ever answers: every call timed out, none took longer than the bound.
    for op in &p.operations[1..] {
        assert!(op.calls >= 1 && op.timeouts == op.calls, "{op:?}");
        assert!(
            op.samples
                .iter()
                .all(|s| s.outcome == CallOutcome::Timeout && s.latency_ms < timeout as f64 + 250.0),
            "{op:?}"
        );
    }
    assert!(p.elapsed_ms <= window + timeout + 500, "{}", p.elapsed_ms);
    assert!(r.ids.is_none());

    // The whole node probe: the runtime is the socket's listener, alive but stopped.
    let cfg = ProbeConfig {
        window: Duration::from_millis(1_000),
        timeout: Duration::from_millis(1_000),
        cri_interval: Duration::from_millis(500),
        overrides: Overrides {
            runtime_endpoint: Some(c.endpoint()),
            ..Default::default()
        },
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let ev = probe::run(cfg, None).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "probe took {took:?}");
    let rt = ev.processes.as_ref().unwrap().runtime.as_ref().unwrap();
    assert_eq!(rt.pid, c.pid());
    assert_eq!(rt.identified_by, Identification::SocketListener);
    assert_eq!(rt.liveness, Liveness::Stopped);
    assert_eq!(ev.cri.as_ref().unwrap().state, CriState::Hung);

    // Thawed, it answers again.
    c.thaw();
    let r = cri::probe(cri_config(&c, 500, 5_000, 250)).await;
    assert_eq!(r.probe.state, CriState::Responding, "{:#?}", r.probe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_containerd_leaves_a_stale_socket_nobody_listens_on() {
    let mut c = Containerd::start();
    c.signal("KILL");
    let _ = c.child.wait();
    let s = socket::inspect(&HostRoot::new("/"), &c.endpoint());
    // SIGKILL leaves the socket file behind: it exists, but no process listens on it.
    assert!(s.exists && s.is_socket, "{s:?}");
    assert_eq!(s.listener_inode, None, "{s:?}");
    assert!(s.listeners.is_empty());
    let r = cri::probe(cri_config(&c, 600, 1_000, 200)).await;
    assert_eq!(r.probe.state, CriState::Unreachable, "{:#?}", r.probe);
    let connect = &r.probe.operations[0];
    assert!(connect.calls >= 3 && connect.ok == 0, "{connect:?}");
    assert!(
        connect
            .last_error
            .as_deref()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{connect:?}"
    );
    // And the whole probe: no runtime process to report (gone), socket evidence says why.
    let cfg = ProbeConfig {
        window: Duration::from_millis(300),
        timeout: Duration::from_millis(1_000),
        cri_interval: Duration::from_millis(100),
        overrides: Overrides {
            runtime_endpoint: Some(c.endpoint()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ev = probe::run(cfg, None).await;
    let rs = ev.runtime_socket.as_ref().unwrap();
    assert!(rs.listeners.is_empty());
    assert!(
        rs.notes.iter().any(|n| n.contains("no process listens")),
        "{rs:?}"
    );
    let rt = ev.processes.as_ref().unwrap().runtime.as_ref();
    // Without a listener the runtime is looked for by name; ours is dead, another may run here.
    assert!(rt.is_none_or(|r| r.pid != c.pid()), "{rt:?}");
}
