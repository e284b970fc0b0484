//! Bad input the plugin meets before any cluster answers, run as the real binary: a kubeconfig
//! that is not one, and an API server that accepts the connection and never answers. Each is a
//! clear message naming what to do, exit code 2 (could not diagnose), and nothing left behind.

use std::{
    io::Read,
    net::TcpListener,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Runs the plugin; a run that does not end within `within` fails the test (and is killed)
/// rather than hanging it.
fn run(args: &[&str], kubeconfig: &std::path::Path, within: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_kubectl-nodehealth"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("wait for the plugin"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the plugin did not end within {within:?}");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_malformed_kubeconfig_is_named_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, "clusters: [this is: not, a kubeconfig\n").unwrap();
    let out = run(&["some-node"], &path, Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kubeconfig") && err.contains("Fix: point --kubeconfig or KUBECONFIG"),
        "names the kubeconfig and what to do: {err}"
    );
    assert!(out.stdout.is_empty(), "no report from nothing");
    // Only the file the test wrote is in its directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn an_api_server_that_accepts_and_never_answers_times_out_with_exit_2() {
    // A listener that accepts and reads, and never writes a byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: not-a-real-token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let out = run(
        &["some-node", "--timeout", "3s", "--duration", "1s"],
        &path,
        Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the API server at https://127.0.0.1:{port}"
        ))
            // Our step timeout or the client's connect timeout (TCP and TLS), whichever first.
            && (err.contains("no answer within 3s") || err.contains("no answer while connecting"))
            && err.contains("--timeout"),
        "says which server did not answer, and what to do: {err}"
    );
    assert!(
        !err.contains("not-a-real-token"),
        "never prints the credential: {err}"
    );
}
