//! The agent's gRPC stream end to end over loopback, with the real binary: a wrong token is
//! refused, the right one streams progress, every evidence section (with the eBPF run-queue
//! section when tracing is asked for) and a report, then the
//! agent exits; with the runtime frozen the agent keeps streaming and finishes in its bound; with
//! no client it exits at its deadline. Its stdout/stderr are pipes nobody reads.
mod common;

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{ChildGuard, Containerd, agent_bin};
use nodehealth_proto::{
    node::{CriState, NodeEvidence, section},
    proof,
    v1::{ProveRequest, RunRequest, agent_client::AgentClient, run_event::Event},
};
use tracer_user::server::token_sha256_hex;

const TOKEN: &str = "per-run-token-for-tests";

/// Starts `tracer-user serve` on a free loopback port; returns the guard and the port.
fn start_agent(extra: &[&str], deadline: &str) -> (ChildGuard, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("port");
    let child = Command::new(agent_bin())
        .args(["serve", "--port", "0", "--deadline", deadline])
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .env("NODEHEALTH_TOKEN_SHA256", token_sha256_hex(TOKEN))
        .env(proof::RUN_KEY_ENV, proof::hex(&proof::run_key(TOKEN)))
        .stdin(Stdio::null())
        // Pipes that are never read: the agent must not depend on anyone draining them.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tracer-user serve");
    let guard = ChildGuard(child);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(p) = fs::read_to_string(&ready)
            && let Ok(port) = p.trim().parse()
        {
            return (guard, port, dir);
        }
        assert!(Instant::now() < until, "agent did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the agent's peak RSS (VmHWM) until it exits; returns the last value read, in KiB.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                peak = kib;
            }
            if status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// Waits for the agent to exit; returns its exit code.
fn wait_exit(g: &mut ChildGuard, within: Duration) -> Option<i32> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(status) = g.0.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn request(token: &str, window_ms: u64, timeout_ms: u64) -> RunRequest {
    RunRequest {
        token: token.into(),
        window_ms,
        trace: false,
        cri_timeout_ms: timeout_ms,
        log_since_ms: 0,
    }
}

/// Reads the stream to its end: (progress count, evidence, report seen, max gap between events).
async fn drain(
    client: &mut AgentClient<tonic::transport::Channel>,
    req: RunRequest,
) -> (u32, NodeEvidence, bool, Duration) {
    let mut stream = client.run(req).await.expect("run accepted").into_inner();
    let (mut progress, mut report) = (0, false);
    let mut ev = NodeEvidence::default();
    let mut last = Instant::now();
    let mut max_gap = Duration::ZERO;
    while let Some(msg) = stream.message().await.expect("stream ok") {
        max_gap = max_gap.max(last.elapsed());
        last = Instant::now();
        match msg.event.expect("event") {
            Event::Progress(_) => progress += 1,
            Event::Evidence(e) => {
                assert_eq!(e.schema, nodehealth_proto::SCHEMA);
                ev.insert_section(&e.section, &e.json)
                    .unwrap_or_else(|err| panic!("section {}: {err}", e.section));
            }
            Event::Report(r) => {
                assert!(!report, "one report");
                assert_eq!(r.agent_version, env!("CARGO_PKG_VERSION"));
                report = true;
            }
        }
    }
    (progress, ev, report, max_gap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_then_the_run_streams_every_section_and_the_agent_exits() {
    let c = Containerd::start();
    let endpoint = c.endpoint();
    let (mut agent, port, _dir) = start_agent(&["--runtime-endpoint", &endpoint], "60s");
    let peak = watch_peak_rss(agent.0.id());
    let mut client = AgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();

    // It proves it holds this run's key before anyone sends it the token: the proof checks
    // against the token for this nonce only; a nonce out of range is refused.
    let nonce = vec![0x5a; 32];
    let answer = client
        .prove(ProveRequest {
            nonce: nonce.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proof;
    assert!(proof::verify(TOKEN, &nonce, &answer));
    assert!(!proof::verify(TOKEN, &[0x5b; 32], &answer));
    assert!(!proof::verify("not-the-token", &nonce, &answer));
    let short = client.prove(ProveRequest { nonce: vec![1; 4] }).await;
    assert_eq!(short.unwrap_err().code(), tonic::Code::InvalidArgument);

    let err = client
        .run(request("not-the-token", 1_000, 1_000))
        .await
        .expect_err("a wrong token must be refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let started = Instant::now();
    let mut req = request(TOKEN, 2_000, 2_000);
    req.trace = true;
    let (progress, ev, report, _) = drain(&mut client, req).await;
    eprintln!("run over gRPC took {:?}", started.elapsed());
    assert!(report, "the stream ends with a report");
    assert!(progress >= 2);
    for (name, present) in [
        (section::DISCOVERY, ev.discovery.is_some()),
        (section::PROCESSES, ev.processes.is_some()),
        (section::RUNTIME_SOCKET, ev.runtime_socket.is_some()),
        (section::KUBELET_HEALTHZ, ev.kubelet_healthz.is_some()),
        (section::CRI, ev.cri.is_some()),
        (section::CERTIFICATES, ev.certificates.is_some()),
        (section::API_SERVER, ev.api_server.is_some()),
        (section::CLOCK, ev.clock.is_some()),
        (section::KERNEL_LOG, ev.kernel_log.is_some()),
        (section::PRESSURE, ev.pressure.is_some()),
    ] {
        assert!(present, "section {name} missing");
    }
    let cri = ev.cri.unwrap();
    assert_eq!(cri.state, CriState::Responding, "{cri:#?}");
    assert_eq!(cri.endpoint, endpoint);
    let rt = ev.processes.unwrap().runtime.unwrap();
    assert_eq!(rt.pid, c.pid());
    // Tracing was requested: the run-queue tracer ran over the window for the runtime.
    let rq = ev.run_queue.expect("runQueue section");
    assert!(rq.attached, "{rq:?}");
    assert!(
        rq.processes
            .iter()
            .any(|p| p.owner == "runtime" && p.pid == c.pid()),
        "{rq:?}"
    );
    // ... and the thread-state tracer with it: per-process totals and per-second summaries.
    let trace = ev.trace.expect("trace section");
    assert!(trace.attached && trace.error.is_none(), "{trace:?}");
    let rt_trace = trace
        .processes
        .iter()
        .find(|p| p.owner == "runtime" && p.pid == c.pid())
        .unwrap_or_else(|| panic!("{trace:?}"));
    assert!(rt_trace.threads > 0, "{trace:?}");
    assert!(
        trace
            .seconds
            .iter()
            .filter(|s| s.owner == "runtime")
            .count()
            >= 2,
        "per-second summaries over a 2 s window: {trace:?}"
    );

    // One run per agent: it exits once the stream is done.
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(5)), Some(0));
    let peak_kib = peak.join().unwrap();
    eprintln!("agent peak RSS with tracing: {} KiB", peak_kib);
    // DESIGN.md's bar is 64 MiB for the agent. Tests run the debug build, whose peak (kernel
    // BTF parsed for the tracer) is ~10 MiB above the release build's (measured 51.7 MiB
    // with tracing, 9 MiB without): guard against regressions with headroom for that.
    assert!(peak_kib > 0 && peak_kib < 80 * 1024, "{peak_kib} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_exits_when_its_stream_closes_mid_run() {
    let c = Containerd::start();
    let endpoint = c.endpoint();
    let (mut agent, port, _dir) = start_agent(&["--runtime-endpoint", &endpoint], "60s");
    let mut client = AgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut stream = client
        .run(request(TOKEN, 30_000, 2_000))
        .await
        .unwrap()
        .into_inner();
    // The run is under way...
    assert!(stream.message().await.unwrap().is_some());
    // ...and the plugin goes away (Ctrl-C, port-forward dropped).
    let closed = Instant::now();
    drop(stream);
    drop(client);
    let code = wait_exit(&mut agent, Duration::from_secs(10));
    eprintln!(
        "agent exited {:?} after its stream closed",
        closed.elapsed()
    );
    assert_eq!(code, Some(0));
    assert!(closed.elapsed() < Duration::from_secs(3));
}

#[test]
fn standalone_probe_prints_the_evidence_as_json() {
    let c = Containerd::start();
    let out = Command::new(agent_bin())
        .args([
            "probe",
            "--host-root",
            "/",
            "--duration",
            "1s",
            "-o",
            "json",
        ])
        .args(["--cri-timeout", "2s", "--runtime-endpoint", &c.endpoint()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev: NodeEvidence = serde_json::from_slice(&out.stdout).expect("NodeEvidence JSON");
    assert_eq!(ev.schema, nodehealth_proto::SCHEMA);
    assert_eq!(ev.host_root, "/");
    assert_eq!(ev.cri.unwrap().state, CriState::Responding);
    assert!(ev.errors.is_empty(), "{:?}", ev.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_runtime_frozen_the_agent_keeps_streaming_and_finishes_in_its_bound() {
    let c = Containerd::start();
    c.freeze();
    let endpoint = c.endpoint();
    let (mut agent, port, _dir) = start_agent(&["--runtime-endpoint", &endpoint], "60s");
    let mut client = AgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let (window, timeout) = (3_000, 2_000);
    let started = Instant::now();
    let (progress, ev, report, max_gap) = drain(&mut client, request(TOKEN, window, timeout)).await;
    let took = started.elapsed();
    eprintln!("frozen runtime: run took {took:?}, {progress} progress events, max gap {max_gap:?}");
    assert!(report);
    assert_eq!(ev.cri.as_ref().unwrap().state, CriState::Hung);
    // Heartbeats every second while the CRI calls hang.
    assert!(progress >= 3, "{progress}");
    assert!(max_gap < Duration::from_millis(2_500), "{max_gap:?}");
    assert!(
        took < Duration::from_millis(window + timeout + 3_000),
        "{took:?}"
    );
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(5)), Some(0));
}

#[test]
fn without_a_client_the_agent_exits_at_its_deadline() {
    let (mut agent, _port, _dir) = start_agent(&[], "2s");
    let started = Instant::now();
    let code = wait_exit(&mut agent, Duration::from_secs(8));
    let took = started.elapsed();
    eprintln!("deadline exit after {took:?}");
    assert_eq!(code, Some(124));
    assert!(took < Duration::from_millis(3_500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_the_deadline_is_cut_to_fit_it() {
    let (mut agent, port, _dir) = start_agent(&["--cri-timeout", "1s"], "5s");
    let started = Instant::now();
    let mut client = AgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    // Asks for a minute; the agent has five seconds.
    let (_, ev, report, _) = drain(&mut client, request(TOKEN, 60_000, 1_000)).await;
    assert!(report);
    assert!(ev.cri.is_some());
    let code = wait_exit(&mut agent, Duration::from_secs(5));
    let took = started.elapsed();
    eprintln!("60 s window under a 5 s deadline: done after {took:?}, exit {code:?}");
    assert!(took < Duration::from_secs(7), "{took:?}");
    assert!(code.is_some());
}
