//! End-to-end tests of kubectl-nodehealth against the real local cluster that
//! `cargo xtask cluster up` provides (`cargo xtask test` brings it up, runs `tests/`, and takes it
//! down). Helpers here talk to that cluster the way the harness does: the admin client
//! certificate through curl, and the harness's own `xtask` binary for faults.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The local cluster's files.
pub struct Cluster {
    pub dir: PathBuf,
    pub node: String,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

impl Cluster {
    /// The running local cluster; panics with what to do when there is none.
    pub fn get() -> Cluster {
        let dir = workspace_root().join("target/cluster");
        let cluster = Cluster {
            dir,
            node: node_name(),
        };
        assert!(
            cluster.admin_kubeconfig().exists(),
            "no local cluster: run `cargo xtask cluster up` (or `cargo xtask test`, which does)"
        );
        cluster
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    /// Sends a request as the cluster admin; returns (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "15", "-X", method])
            .arg("--cacert")
            .arg(self.pki("ca.crt"))
            .arg("--cert")
            .arg(self.pki("admin.crt"))
            .arg("--key")
            .arg(self.pki("admin.key"))
            .args(["-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:6443{path}"))
            .stdout(Stdio::piped())
            .stdin(if body.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        if body.is_some() {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        let mut child = cmd.spawn().expect("curl");
        if let Some(b) = body {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b.to_string().as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().expect("curl output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// GET returning JSON; panics on a non-200 answer.
    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.request("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The node's Ready condition: (status, reason, message).
    pub fn ready_condition(&self) -> (String, String, String) {
        let node = self.get_json(&format!("/api/v1/nodes/{}", self.node));
        let c = node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or_default();
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        (s("status"), s("reason"), s("message"))
    }

    /// Waits until the Ready condition has `status`; returns how long it took.
    pub fn wait_ready(&self, status: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (now, reason, message) = self.ready_condition();
            if now == status {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "node Ready stayed {now} ({reason}: {message}) for {timeout:?}, expected {status}"
            );
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// Runs the harness's xtask binary (built by `cargo xtask test` before the tests run).
    pub fn xtask(&self, args: &[&str]) {
        let bin = workspace_root().join("target/debug/xtask");
        let status = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running {bin:?}: {e}"));
        assert!(status.success(), "xtask {args:?} failed: {status}");
    }
}

/// Heals every fault when dropped, so a failing assertion leaves a working cluster behind, and
/// waits for the node to be Ready again.
pub struct Healer<'a>(pub &'a Cluster);

impl Drop for Healer<'_> {
    fn drop(&mut self) {
        self.0.xtask(&["heal"]);
        if !thread::panicking() {
            self.0.wait_ready("True", Duration::from_secs(120));
        }
    }
}

/// The node name the harness uses (this machine's hostname when it resolves to loopback).
pub fn node_name() -> String {
    let host = Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_lowercase())
        .unwrap_or_default();
    let loopback = Command::new("getent")
        .args(["ahostsv4", &host])
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let addrs: Vec<String> = s
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.starts_with("127."))
        })
        .unwrap_or(false);
    if !host.is_empty() && loopback {
        host
    } else {
        "localhost".into()
    }
}
