//! "Alive but unresponsive": a kubelet-like process (a small C healthz server compiled by the
//! test and named `kubelet`, started with kubelet flags and a KubeletConfiguration naming its
//! healthz port) answers /healthz; frozen with SIGSTOP, the whole probe reports it stopped and its
//! healthz timed out within the bound — and the probe itself still finishes on time. Needs gcc.
mod common;

use std::{
    fs,
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::ChildGuard;
use nodehealth_proto::node::Liveness;
use tracer_user::{
    discovery::Overrides,
    probe::{self, ProbeConfig},
};

const HEALTHZ_C: &str = r#"
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    int port = atoi(getenv("HEALTHZ_PORT"));
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) return 1;
    const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    for (;;) {
        int c = accept(s, 0, 0);
        char buf[1024];
        if (c < 0) continue;
        read(c, buf, sizeof buf);
        write(c, r, strlen(r));
        close(c);
    }
}
"#;

fn config(pid: u32, timeout_ms: u64) -> ProbeConfig {
    ProbeConfig {
        window: Duration::from_millis(500),
        timeout: Duration::from_millis(timeout_ms),
        cri_interval: Duration::from_millis(250),
        overrides: Overrides {
            kubelet_pid: Some(pid),
            // No runtime in this test: a path nobody listens on.
            runtime_endpoint: Some("unix:///nonexistent/nodehealth-test.sock".into()),
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kubelet_is_alive_but_its_healthz_times_out() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("healthz.c"), HEALTHZ_C).unwrap();
    let bin = dir.path().join("kubelet");
    let ok = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(dir.path().join("healthz.c"))
        .status()
        .unwrap();
    assert!(ok.success(), "gcc");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    fs::write(
        dir.path().join("config.yaml"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             healthzPort: {port}\nhealthzBindAddress: 127.0.0.1\n"
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .current_dir(dir.path())
        .args(["--config=config.yaml", "--v=2"])
        .env("HEALTHZ_PORT", port.to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let kubelet = ChildGuard(child);
    let pid = kubelet.0.id();
    std::thread::sleep(Duration::from_millis(200));

    let ev = probe::run(config(pid, 1_000), None).await;
    let d = ev.discovery.as_ref().unwrap();
    assert_eq!(d.healthz_port.as_ref().unwrap().value, port);
    let k = ev.processes.as_ref().unwrap().kubelet.clone().unwrap();
    assert_eq!(k.comm, "kubelet");
    assert!(matches!(k.liveness, Liveness::Sleeping | Liveness::Running));
    let h = ev.kubelet_healthz.as_ref().unwrap();
    assert_eq!(
        h.url.as_deref(),
        Some(&*format!("http://127.0.0.1:{port}/healthz"))
    );
    assert!(h.attempts.iter().all(|a| a.status == Some(200)), "{h:?}");

    Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let ev = probe::run(config(pid, 1_000), None).await;
    let took = started.elapsed();
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    eprintln!("probe of a stopped kubelet took {took:?}");
    let k = ev.processes.as_ref().unwrap().kubelet.clone().unwrap();
    assert_eq!(k.liveness, Liveness::Stopped);
    let h = ev.kubelet_healthz.as_ref().unwrap();
    assert_eq!(h.attempts.len(), 2);
    for a in &h.attempts {
        // The kernel completes the TCP handshake from the listen backlog; nothing answers.
        assert!(a.timed_out && a.status.is_none(), "{a:?}");
        assert!(a.latency_ms < 1_300.0, "{a:?}");
    }
    // window + two healthz timeouts (start and end) + slack; the CRI side was unreachable.
    assert!(took < Duration::from_millis(4_000), "{took:?}");
}
