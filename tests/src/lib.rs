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

/// A histogram's `_sum` and `_count` in Prometheus text, for the series whose labels contain
/// `labels` (e.g. `operation_type="create_container"`; "" for an unlabelled histogram).
pub fn histogram_sum_count(metrics: &str, name: &str, labels: &str) -> (f64, f64) {
    let value = |suffix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, v) = l.rsplit_once(' ')?;
                let rest = series.strip_prefix(&format!("{name}_{suffix}"))?;
                let matches = if labels.is_empty() {
                    rest.is_empty() || rest == "{}"
                } else {
                    rest.starts_with('{') && rest.contains(labels)
                };
                matches.then(|| v.parse::<f64>().ok()).flatten()
            })
            .sum()
    };
    (value("sum"), value("count"))
}

/// Observations between two readings of a histogram: (count, mean seconds).
pub fn window(before: (f64, f64), after: (f64, f64)) -> (f64, f64) {
    let count = after.1 - before.1;
    let mean = if count > 0.0 {
        (after.0 - before.0) / count
    } else {
        0.0
    };
    (count, mean)
}

impl Cluster {
    /// The kubelet's metrics through the API server's node proxy.
    pub fn kubelet_metrics(&self) -> String {
        let (code, body) = self.request(
            "GET",
            &format!("/api/v1/nodes/{}/proxy/metrics", self.node),
            None,
        );
        assert_eq!(code, 200, "kubelet metrics through the node proxy: {body}");
        body
    }

    /// `kubelet_pleg_relist_duration_seconds` (sum, count) now.
    pub fn relist_histogram(&self) -> (f64, f64) {
        histogram_sum_count(
            &self.kubelet_metrics(),
            "kubelet_pleg_relist_duration_seconds",
            "",
        )
    }

    /// How often the supervisor has restarted a component since it was (re)started.
    pub fn restarts(&self, component: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(format!("run/{component}.restarts")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The kubelet's log file (/var/log/kubelet.log): its current length, to read what follows.
    pub fn kubelet_log_len(&self) -> u64 {
        std::fs::metadata("/var/log/kubelet.log")
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The kubelet's log from byte `offset` on.
    pub fn kubelet_log_since(&self, offset: u64) -> String {
        let text = std::fs::read("/var/log/kubelet.log").unwrap_or_default();
        let from = (offset as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// The status code of a GET as a client holding `cert_and_key` (one PEM file).
    pub fn status_as(&self, cert_and_key: &Path, path: &str) -> u16 {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "15",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("--cacert")
            .arg(self.pki("ca.crt"))
            .arg("--cert")
            .arg(cert_and_key)
            .arg(format!("https://127.0.0.1:6443{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

/// Polls `check` every second until it returns Some, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_secs(1));
    }
}

/// Lines of the kernel log (`dmesg`) that record an OOM kill of a process named `comm`.
pub fn oom_kills_of(comm: &str) -> Vec<String> {
    let out = Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Killed process") && l.contains(&format!("({comm})")))
        .map(str::to_string)
        .collect()
}

/// Runs `kubectl nodehealth <node> --kubeconfig <admin> <args>` (the built plugin) to the end.
pub fn run_plugin(c: &Cluster, args: &[&str]) -> (std::process::Output, Duration) {
    let bin = workspace_root().join("target/debug/kubectl-nodehealth");
    assert!(
        bin.exists(),
        "{bin:?} missing: `cargo build -p kubectl-nodehealth`"
    );
    let start = Instant::now();
    let out = Command::new(bin)
        .arg(&c.node)
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl-nodehealth");
    (out, start.elapsed())
}

/// The node agent run standalone on the node, as an operator would over SSH when no probe pod
/// can start: `tracer-user probe --host-root / <args> -o json`; its evidence.
pub fn run_agent_standalone(args: &[&str]) -> Value {
    let bin = workspace_root().join("target/debug/tracer-user");
    assert!(
        bin.exists(),
        "{bin:?} missing: `cargo build -p tracer-user`"
    );
    let out = Command::new(bin)
        .args(["probe", "--host-root", "/"])
        .args(args)
        .args(["-o", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("running tracer-user probe");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tracer-user probe printed no JSON ({e}); exit {:?}, stderr {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The plugin's JSON report; panics with both streams when it is not JSON.
pub fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_series_are_picked_by_labels() {
        let text = "# HELP x\n\
            kubelet_pleg_relist_duration_seconds_sum 3.5\n\
            kubelet_pleg_relist_duration_seconds_count 7\n\
            kubelet_runtime_operations_duration_seconds_sum{operation_type=\"create_container\"} 12\n\
            kubelet_runtime_operations_duration_seconds_count{operation_type=\"create_container\"} 3\n\
            kubelet_runtime_operations_duration_seconds_sum{operation_type=\"list_containers\"} 1\n";
        assert_eq!(
            histogram_sum_count(text, "kubelet_pleg_relist_duration_seconds", ""),
            (3.5, 7.0)
        );
        assert_eq!(
            histogram_sum_count(
                text,
                "kubelet_runtime_operations_duration_seconds",
                "operation_type=\"create_container\""
            ),
            (12.0, 3.0)
        );
        assert_eq!(window((1.0, 2.0), (7.0, 5.0)), (3.0, 2.0));
    }
}
