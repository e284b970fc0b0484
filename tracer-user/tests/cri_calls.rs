//! The kubelet's CRI calls traced on its socket, against ground truth: a grpc-go CRI server that
//! answers ListPodSandbox after a known delay, called by the kubelet's own CRI client library
//! (`xtask/cri-sim`: grpc-go on both ends, non-blocking reads and writes, one long-lived
//! connection that exists before the tracer attaches — as the tracer meets a real kubelet).
//! Needs root and Go; fails if the programs do not load or attach.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{ChildGuard, cri_sim};
use tracer_ebpf::{CriCall, GO_CALL_FD, cri_end};
use tracer_user::{
    cri_socket::{connected_fds, unix_sockets},
    host::HostRoot,
    trace::{CriHook, CriTarget, Tracer},
    trace_session::cri_section,
};

/// The server, listening on `dir/cri.sock`.
fn serve(dir: &Path, delay: &str) -> (ChildGuard, String) {
    let sock = dir.join("cri.sock");
    let mut server = ChildGuard(
        Command::new(cri_sim())
            .args(["serve", "-delay", delay, "-listen"])
            .arg(&sock)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start cri-sim serve"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    (server, sock.to_str().unwrap().to_string())
}

/// A client, connected (one Version call made), waiting for "go".
struct Client {
    child: ChildGuard,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn connect(sock: &str, calls: u32, timeout: &str) -> Client {
        let mut child = ChildGuard(
            Command::new(cri_sim())
                .args(["call", "-endpoint", &format!("unix://{sock}")])
                .args(["-calls", &calls.to_string(), "-timeout", timeout])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start cri-sim call"),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "connected", "client did not connect");
        Client { child, out }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends "go" and returns the latencies it printed (ns), and how many calls failed.
    fn run(&mut self) -> (Vec<u64>, usize) {
        self.child
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
        let (mut latencies, mut errors) = (Vec::new(), 0);
        for line in (&mut self.out).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("latency_ns ") {
                latencies.push(n.parse().unwrap());
            } else if line.starts_with("error_after_ns ") {
                errors += 1;
            } else if line == "done" {
                break;
            }
        }
        (latencies, errors)
    }
}

/// The tracer on `client`'s CRI calls: on its socket (`Hook::Syscalls`) or through uprobes on its
/// gRPC client (`Hook::Uprobe`: asserted to be the path that ran).
fn traced(client: &Client, sock: &str, hook: Hook) -> Tracer {
    let sockets = unix_sockets().expect("sock_diag dump of unix sockets");
    let fds = connected_fds(&HostRoot::new("/"), client.pid(), sock, &sockets);
    assert!(
        !fds.is_empty(),
        "no fd of the client is connected to {sock}"
    );
    let tracer = Tracer::attach_with(Some(&CriTarget {
        kubelet: client.pid(),
        fds,
        syscalls_only: hook == Hook::Syscalls,
    }))
    .expect("load and attach the tracer");
    match (hook, tracer.cri_hook()) {
        (Hook::Syscalls, Some(CriHook::Syscalls { .. })) => {}
        (Hook::Uprobe, Some(CriHook::Uprobe { returns })) => {
            assert!(*returns > 0, "Invoke's returns hooked");
        }
        (_, other) => panic!("asked for {hook:?}, the tracer used {other:?}"),
    }
    tracer
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Syscalls,
    Uprobe,
}

/// The calls the tracer submits, read until `want` arrived (the ring buffer is read as the
/// kernel fills it; a call ends in the kernel before its record is readable) or 2 s passed.
fn calls_until(tracer: &mut Tracer, want: usize) -> Vec<CriCall> {
    let started = Instant::now();
    let mut calls = Vec::new();
    while calls.len() < want && started.elapsed() < Duration::from_secs(2) {
        calls.extend(tracer.cri_calls());
        if calls.len() < want {
            thread::sleep(Duration::from_millis(10));
        }
    }
    // And nothing more arrives late: a duplicate would show here.
    thread::sleep(Duration::from_millis(50));
    calls.extend(tracer.cri_calls());
    calls
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Five calls of a traced client against a server holding each 300 ms, while a second,
/// untraced client makes five of its own: the traced records, each checked to have ended with the
/// response and to last the server's delay and the client's own measure (within 10%), exactly one
/// per call of the traced client (none of the other's).
struct FiveCalls {
    calls: Vec<CriCall>,
    counters: tracer_user::trace::CriCounters,
    tracer: Tracer,
    pid: u32,
}

fn five_timed_calls(hook: Hook) -> FiveCalls {
    let dir = tempfile::tempdir().unwrap();
    let (_server, sock) = serve(dir.path(), "300ms");
    let mut client = Client::connect(&sock, 5, "10s");
    let mut other = Client::connect(&sock, 5, "10s");
    let mut tracer = traced(&client, &sock, hook);

    let o = thread::spawn(move || other.run());
    let (latencies, errors) = client.run();
    let _ = o.join();
    let calls = calls_until(&mut tracer, 5);
    let counters = tracer.cri_counters().unwrap();
    eprintln!(
        "{hook:?}: client latencies (ms): {:?}; traced: {:?}; counters {counters:?}",
        latencies.iter().map(|l| ms(*l)).collect::<Vec<_>>(),
        calls
            .iter()
            .map(|c| (c.key.stream, ms(c.end_ns - c.stream.start_ns), c.end))
            .collect::<Vec<_>>()
    );
    assert_eq!(errors, 0);
    assert_eq!(
        calls.len(),
        5,
        "one traced call per call of the traced client"
    );
    for (c, client_ns) in calls.iter().zip(&latencies) {
        let d = c.end_ns - c.stream.start_ns;
        assert_eq!(c.end, cri_end::RESPONSE);
        assert!(
            (0.9..1.1).contains(&(d as f64 / 300e6)),
            "traced {} ms vs the server's 300 ms delay",
            ms(d)
        );
        assert!(
            (0.9..1.1).contains(&(d as f64 / *client_ns as f64)),
            "traced {} ms vs the client's own {} ms",
            ms(d),
            ms(*client_ns)
        );
    }
    assert_eq!(counters.lost, 0);
    assert!(tracer.cri_in_flight().unwrap().is_empty());
    FiveCalls {
        calls,
        counters,
        tracer,
        pid: client.pid(),
    }
}

#[test]
fn each_call_lasts_the_servers_known_delay() {
    let FiveCalls {
        calls,
        counters,
        tracer: _tracer,
        pid,
    } = five_timed_calls(Hook::Syscalls);
    let mut streams: Vec<u32> = calls.iter().map(|c| c.key.stream).collect();
    streams.dedup();
    assert_eq!(streams.len(), 5, "distinct stream ids");
    for c in &calls {
        assert_eq!(c.key.stream & 1, 1, "client streams are odd");
        assert!(c.stream.hdr_len > 0, "the request's header block is kept");
    }

    // The section the agent reports: methods decoded from the requests' HPACK blocks (the
    // connection's first ListPodSandbox sends its :path literally, the next ones by index).
    let target = CriTarget {
        kubelet: pid,
        fds: vec![calls[0].key.fd],
        syscalls_only: true,
    };
    let section = cri_section(&target, &calls, &[], counters, |ns| ns as i64, 0);
    eprintln!("methods: {:?}", section.methods);
    assert_eq!(section.calls, 5);
    assert_eq!(section.methods.len(), 1, "{:?}", section.methods);
    assert_eq!(
        section.methods[0].method.as_deref(),
        Some("/runtime.v1.RuntimeService/ListPodSandbox")
    );
    assert_eq!(section.methods[0].calls, 5);
    assert!(section.slowest.iter().all(|c| c.end == "response"));
    assert_eq!(section.slow_intervals(250_000_000).len(), 5);
    assert!(section.slow_intervals(400_000_000).is_empty());
}

#[test]
fn a_call_past_its_deadline_ends_at_the_deadline_and_is_in_flight_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, sock) = serve(dir.path(), "5s");
    let mut client = Client::connect(&sock, 1, "1500ms");
    let mut tracer = traced(&client, &sock, Hook::Syscalls);
    struct Ran {
        client: Client,
        result: (Vec<u64>, usize),
    }
    let run = thread::spawn(move || {
        let result = client.run();
        Ran { client, result }
    });
    // Before its 1.5 s deadline the pending call is in flight (the call is written at once; the
    // server holds it 5 s).
    let started = Instant::now();
    let in_flight = loop {
        let now = tracer.cri_in_flight().unwrap();
        if !now.is_empty() || started.elapsed() > Duration::from_millis(1200) {
            break now;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        in_flight.len(),
        1,
        "the pending call is in flight within 1.2 s: {in_flight:?}"
    );
    let mut client = run.join().unwrap();
    let (_, errors) = client.result;
    assert_eq!(errors, 1, "the call failed at its deadline");
    // grpc-go writes the reset asynchronously: wait for the client to exit (it lingers for that).
    let _ = client.client.child.0.wait();
    let calls = calls_until(&mut tracer, 1);
    eprintln!(
        "traced: {:?}",
        calls
            .iter()
            .map(|c| (c.key.stream, ms(c.end_ns - c.stream.start_ns), c.end))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        calls.len(),
        1,
        "in flight {:?}, counters {:?}",
        tracer.cri_in_flight().unwrap().len(),
        tracer.cri_counters().unwrap()
    );
    let d = calls[0].end_ns - calls[0].stream.start_ns;
    // Both ends of grpc-go enforce the deadline: the client resets the stream when its deadline
    // passes; the server, which got the deadline in `grpc-timeout`, cancels the handler's
    // context on its own timer — cri-sim's handler then returns the context's error, which
    // grpc-go sends as DEADLINE_EXCEEDED trailers (END_STREAM), and it may also reset the
    // stream. Whichever the kubelet's side reads first ends the call: a reset either way, or
    // that error answer (a CI run saw it). The end is at the deadline in every case.
    assert!(
        [
            cri_end::CANCELLED,
            cri_end::RESET_BY_RUNTIME,
            cri_end::RESPONSE
        ]
        .contains(&calls[0].end),
        "the stream ended at the deadline, end {}",
        calls[0].end
    );
    assert!(
        (0.9..1.1).contains(&(d as f64 / 1500e6)),
        "cancelled after {} ms, deadline 1500 ms",
        ms(d)
    );
    assert!(tracer.cri_in_flight().unwrap().is_empty());
}

/// The uprobe path (entry and return instructions of grpc-go's `(*ClientConn).Invoke`, found
/// through the client binary's function table): one record per call of the traced client, none of
/// the other client's, each named by its method and as long as the server's known delay.
#[test]
fn the_uprobes_on_invoke_name_and_time_each_call_of_the_traced_client_only() {
    let FiveCalls {
        calls,
        counters,
        tracer: _tracer,
        pid,
    } = five_timed_calls(Hook::Uprobe);
    for c in &calls {
        assert_eq!(c.key.fd, GO_CALL_FD);
        assert_ne!(c.stream.tid, 0);
    }
    assert_eq!(counters.frames, 0, "no socket parsing on the uprobe path");

    let target = CriTarget {
        kubelet: pid,
        fds: vec![],
        syscalls_only: false,
    };
    let section = cri_section(&target, &calls, &[], counters, |ns| ns as i64, 0);
    assert_eq!(section.calls, 5);
    assert_eq!(section.methods.len(), 1, "{:?}", section.methods);
    assert_eq!(
        section.methods[0].method.as_deref(),
        Some("/runtime.v1.RuntimeService/ListPodSandbox"),
        "every call named, the first included"
    );
}

/// On the uprobe path a call past its deadline is in flight, named, until `Invoke` returns its
/// error at the deadline.
#[test]
fn on_the_uprobe_path_a_call_past_its_deadline_is_in_flight_then_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, sock) = serve(dir.path(), "5s");
    let mut client = Client::connect(&sock, 1, "1500ms");
    let mut tracer = traced(&client, &sock, Hook::Uprobe);
    let run = thread::spawn(move || {
        let result = client.run();
        (client, result)
    });
    let started = Instant::now();
    let in_flight = loop {
        let now = tracer.cri_in_flight().unwrap();
        if !now.is_empty() || started.elapsed() > Duration::from_millis(1200) {
            break now;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(in_flight.len(), 1, "in flight within 1.2 s: {in_flight:?}");
    let (key, stream) = in_flight[0];
    assert_eq!(key.fd, GO_CALL_FD);
    let len = stream.hdr_len as usize;
    assert_eq!(
        std::str::from_utf8(&stream.hdr[..len]).ok(),
        Some("/runtime.v1.RuntimeService/ListPodSandbox")
    );
    let (_client, (_, errors)) = run.join().unwrap();
    assert_eq!(errors, 1, "the call failed at its deadline");
    let calls = calls_until(&mut tracer, 1);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].end, cri_end::ERROR);
    let d = calls[0].end_ns - calls[0].stream.start_ns;
    assert!(
        (0.9..1.1).contains(&(d as f64 / 1500e6)),
        "returned after {} ms, deadline 1500 ms",
        ms(d)
    );
    assert!(tracer.cri_in_flight().unwrap().is_empty());
}
