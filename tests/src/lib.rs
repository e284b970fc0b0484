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

/// `cargo`, for a build the test needs, without the variables cargo set for this test crate
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …): a build script that tracks one (ring's tracks
/// `CARGO_MANIFEST_DIR`) would rebuild its crate, and everything above it, here and again when
/// xtask or a shell builds next (xtask's `sh::cargo` does the same).
pub fn cargo() -> Command {
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            cargo.env_remove(key);
        }
    }
    cargo
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

    /// A file of the cluster's PKI (ca.crt, admin.crt, admin.key, ...).
    pub fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    /// Sends a request as the cluster admin; returns (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        self.request_as(None, method, path, body, "application/json")
    }

    /// A request as the holder of a bearer `token` (else as the admin), with the body's
    /// content type (e.g. `application/apply-patch+yaml` for a server-side apply).
    pub fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "15", "-X", method])
            .arg("--cacert")
            .arg(self.pki("ca.crt"));
        match token {
            Some(t) => cmd.args(["-H", &format!("Authorization: Bearer {t}")]),
            None => cmd
                .arg("--cert")
                .arg(self.pki("admin.crt"))
                .arg("--key")
                .arg(self.pki("admin.key")),
        };
        cmd.args(["-w", "\n%{http_code}"])
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
                &format!("Content-Type: {content_type}"),
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

    /// Deletes the node's events (namespace default, where the kubelet records them): a test of
    /// a healthy node starts without the Warning events an earlier test's fault left, which the
    /// events rule rightly reports for 5 minutes (10 for image GC).
    pub fn clear_node_events(&self) {
        let path = format!(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.kind%3DNode,involvedObject.name%3D{}",
            self.node
        );
        let (code, body) = self.request("DELETE", &path, None);
        assert_eq!(code, 200, "DELETE {path}: {body}");
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
        // Its stdout goes to our stderr: the test binary's stdout is libtest's, whose
        // `test <name> ... ok` lines the flake hunt counts (a child's line in between split them).
        let status = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .status()
            .unwrap_or_else(|e| panic!("running {bin:?}: {e}"));
        assert!(status.success(), "xtask {args:?} failed: {status}");
    }

    /// `xtask fault ...`, returning the moment the fault took hold (unix seconds), as the command
    /// prints it: for runtime-slow-list when the delay was set, for the others when they were in
    /// place.
    pub fn fault(&self, args: &[&str]) -> f64 {
        let bin = workspace_root().join("target/debug/xtask");
        let out = Command::new(&bin)
            .arg("fault")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {bin:?}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "xtask fault {args:?} failed: {stdout}"
        );
        stdout
            .lines()
            .find_map(|l| l.split(" took hold at ").nth(1)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("xtask fault {args:?} said not when: {stdout}"))
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

    /// CFS periods in which a harness component's cpu cgroup was throttled, so far.
    pub fn throttled_periods(&self, component: &str) -> u64 {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/cpu/nodehealth-harness/{component}/cpu.stat"
        ))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled ")?.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Waits until relists have finished fast again: two polls in a row in which the relists that
    /// finished took under a second on average (a relist slowed by an earlier fault may still be in
    /// flight when the node is already Ready). Returns how long it took.
    pub fn wait_relists_fast(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut last = self.relist_histogram();
        let mut fast = 0;
        wait_until("relists back under a second", timeout, || {
            let now = self.relist_histogram();
            let (count, mean) = window(last, now);
            if now.1 < last.1 {
                // The kubelet restarted: count from here.
                fast = 0;
            } else if count >= 1.0 {
                fast = if mean < 1.0 { fast + 1 } else { 0 };
            }
            last = now;
            (fast >= 2).then_some(())
        });
        start.elapsed()
    }

    /// `major:minor` of the harness's loop device under containerd's root (what `disk-slow`
    /// slows).
    pub fn containerd_root_device(&self) -> String {
        std::fs::read_to_string(self.dir.join("run/containerd-root.dev"))
            .expect("the harness records containerd's root device at `up`")
            .trim()
            .to_string()
    }

    /// Names of the node's certificate signing requests that no one approved or denied yet.
    pub fn pending_node_csrs(&self) -> Vec<String> {
        let user = format!("system:node:{}", self.node);
        let list = self.get_json("/apis/certificates.k8s.io/v1/certificatesigningrequests");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|csr| csr["spec"]["username"] == user.as_str())
            .filter(|csr| {
                csr["status"]["conditions"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
            })
            .map(|csr| csr["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect()
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

impl Cluster {
    /// containerd's CRI socket (what the kubelet uses unless runtime-slow-list is applied).
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// The harness's CRI proxy's socket (the kubelet's only while runtime-slow-list is applied).
    pub fn criproxy_socket(&self) -> PathBuf {
        self.dir.join("containerd/criproxy.sock")
    }

    /// The node lease's renewTime.
    pub fn lease_renew_time(&self) -> String {
        self.get_json(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            self.node
        ))["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The pid the harness's supervisor recorded for a component, when that process exists.
    pub fn component_pid(&self, component: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(format!("run/{component}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// The `containerRuntimeEndpoint` of the configuration file the running kubelet was started
    /// with (its `--config` flag, read from /proc).
    pub fn kubelet_runtime_endpoint(&self) -> String {
        let pid = self.component_pid("kubelet").expect("the kubelet runs");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("kubelet cmdline");
        let config = cmdline
            .split(|b| *b == 0)
            .find_map(|a| a.strip_prefix(b"--config="))
            .map(|c| PathBuf::from(String::from_utf8_lossy(c).into_owned()))
            .expect("the kubelet has --config");
        std::fs::read_to_string(&config)
            .unwrap_or_else(|e| panic!("{config:?}: {e}"))
            .lines()
            .find_map(|l| l.strip_prefix("containerRuntimeEndpoint:"))
            .map(|e| e.trim().to_string())
            .unwrap_or_default()
    }

    /// The unix socket paths the running kubelet is connected to, each with the processes holding
    /// the other end: where its CRI calls really go.
    pub fn kubelet_unix_peers(&self) -> Vec<(String, Vec<(String, u32)>)> {
        let pid = self.component_pid("kubelet").expect("the kubelet runs");
        unix_peers_of(pid)
    }
}

impl Cluster {
    /// The process the kubelet's CRI calls reach: asserts that the running kubelet's configured
    /// endpoint is `socket`, that it is connected to `socket`, that the other end is held by the
    /// harness's `component` process, and that it has no connection to `not` (the other socket).
    /// Returns that process's pid.
    pub fn assert_kubelet_talks_to(&self, component: &str, socket: &Path, not: &Path) -> u32 {
        let pid = self
            .component_pid(component)
            .unwrap_or_else(|| panic!("{component} is not running"));
        assert_eq!(
            self.kubelet_runtime_endpoint(),
            format!("unix://{}", socket.display()),
            "the kubelet's containerRuntimeEndpoint"
        );
        // The kubelet dials its runtime lazily after a restart: give it a few seconds.
        let (socket_s, not_s) = (socket.to_string_lossy(), not.to_string_lossy());
        let peers = wait_until(
            &format!("the kubelet connected to {component}"),
            Duration::from_secs(15),
            || {
                let peers = self.kubelet_unix_peers();
                peers
                    .iter()
                    .any(|(p, h)| *p == socket_s && h.iter().any(|(_, hp)| *hp == pid))
                    .then_some(peers)
            },
        );
        assert!(
            !peers.iter().any(|(p, _)| *p == not_s),
            "the kubelet is also connected to {not_s}: {peers:?}"
        );
        pid
    }

    /// Asserts that the kubelet talks to containerd directly (the harness's default) and that no
    /// CRI proxy runs; returns containerd's pid.
    pub fn assert_kubelet_on_containerd(&self) -> u32 {
        let pid = self.assert_kubelet_talks_to(
            "containerd",
            &self.containerd_socket(),
            &self.criproxy_socket(),
        );
        assert_eq!(
            self.component_pid("criproxy"),
            None,
            "a CRI proxy runs without the runtime-slow-list fault"
        );
        assert_eq!(
            socket_listeners(&self.containerd_socket()),
            vec![("containerd".to_string(), pid)],
            "the listener on containerd's socket"
        );
        pid
    }
}

/// A unix stream socket as `ss -xap` shows it. ss asks the kernel (sock_diag), independently of
/// how the node agent reads /proc/net/unix and /proc/<pid>/fd.
#[derive(Debug, Clone)]
pub struct UnixSocket {
    pub state: String,
    /// The bound path ("*" for none): a server's accepted sockets carry the listener's path.
    pub path: String,
    pub inode: u64,
    pub peer_inode: u64,
    /// (comm, pid) of each process holding it.
    pub holders: Vec<(String, u32)>,
}

/// Every unix stream socket on the machine, with its holders.
pub fn unix_sockets() -> Vec<UnixSocket> {
    let out = Command::new("ss")
        .args(["-xapn"])
        .output()
        .expect("running ss (iproute2)");
    parse_ss(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `ss -xapn` output (header line first; unix stream sockets only).
pub fn parse_ss(text: &str) -> Vec<UnixSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.first() != Some(&"u_str") || f.len() < 8 {
                return None;
            }
            let holders = f[8..]
                .join(" ")
                .split("((")
                .flat_map(|s| s.split("),("))
                .filter_map(|entry| {
                    let comm = entry.split('"').nth(1)?.to_string();
                    let pid = entry
                        .split("pid=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse()
                        .ok()?;
                    Some((comm, pid))
                })
                .collect();
            Some(UnixSocket {
                state: f[1].to_string(),
                path: f[4].to_string(),
                inode: f[5].parse().ok()?,
                peer_inode: f[7].parse().ok()?,
                holders,
            })
        })
        .collect()
}

/// The processes listening on the unix socket `path`: (comm, pid).
pub fn socket_listeners(path: &Path) -> Vec<(String, u32)> {
    let path = path.to_string_lossy();
    unix_sockets()
        .into_iter()
        .filter(|s| s.state == "LISTEN" && s.path == path)
        .flat_map(|s| s.holders)
        .collect()
}

/// The bound unix socket paths process `pid` is connected to, each with the holders of the
/// other end (the server side of an accepted connection carries the listener's path).
pub fn unix_peers_of(pid: u32) -> Vec<(String, Vec<(String, u32)>)> {
    let sockets = unix_sockets();
    let mut peers: Vec<(String, Vec<(String, u32)>)> = sockets
        .iter()
        .filter(|s| s.state == "ESTAB" && s.holders.iter().any(|(_, p)| *p == pid))
        .filter_map(|mine| {
            let other = sockets.iter().find(|o| o.inode == mine.peer_inode)?;
            (other.path != "*").then(|| (other.path.clone(), other.holders.clone()))
        })
        .collect();
    peers.sort();
    peers.dedup();
    peers
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
/// Kernel timestamp (seconds since boot) of a dmesg line `[  123.456789] ...`.
pub fn dmesg_seconds(line: &str) -> Option<f64> {
    line.trim_start()
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// OOM kills of `comm` in the kernel log newer than `after` (seconds since boot): counted by
/// time, since the ring buffer drops old lines as each kill prints its task dump.
pub fn oom_kills_since(comm: &str, after: f64) -> Vec<String> {
    oom_kills_of(comm)
        .into_iter()
        .filter(|l| dmesg_seconds(l).is_some_and(|t| t > after))
        .collect()
}

/// The newest kernel-log timestamp of an OOM kill of `comm` (0 when there is none).
pub fn last_oom_kill_at(comm: &str) -> f64 {
    oom_kills_of(comm)
        .iter()
        .filter_map(|l| dmesg_seconds(l))
        .fold(0.0, f64::max)
}

pub fn oom_kills_of(comm: &str) -> Vec<String> {
    let out = Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Killed process") && l.contains(&format!("({comm})")))
        .map(str::to_string)
        .collect()
}

/// Runs the built plugin with exactly `args` (no node, no kubeconfig; KUBECONFIG unset) to the
/// end.
pub fn plugin(args: &[&str]) -> std::process::Output {
    let bin = workspace_root().join("target/debug/kubectl-nodehealth");
    assert!(
        bin.exists(),
        "{bin:?} missing: `cargo build -p kubectl-nodehealth`"
    );
    Command::new(bin)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl-nodehealth")
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

/// The plugin judging the API side together with the agent's evidence `agent` from a standalone
/// run (`--node-evidence <file>`, the operator's second step when no pod started), over a window
/// of `duration`.
pub fn run_plugin_with_node_evidence(
    c: &Cluster,
    agent: &Value,
    duration: &str,
) -> (std::process::Output, Duration) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), agent.to_string()).expect("write the agent's evidence");
    let path = file.path().to_str().expect("utf-8 temp path").to_string();
    run_plugin(
        c,
        &[
            "--duration",
            duration,
            "--node-evidence",
            &path,
            "-o",
            "json",
        ],
    )
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

/// The advice in a report that restarts the kubelet or reboots the node: each cause's fix and
/// each finding's remediation that says so, as (id, text). The advice contract forbids both
/// where a partition, a runtime outage or a certificate problem is the truth.
pub fn kubelet_restarts_or_reboots(report: &Value) -> Vec<(String, String)> {
    let causes = report["verdict"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (&c["id"], &c["fix"]));
    let findings = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (&f["id"], &f["remediation"]));
    causes
        .chain(findings)
        .filter_map(|(id, text)| {
            let text = text.as_str().unwrap_or("");
            (text.contains("systemctl restart kubelet")
                || text.to_lowercase().contains("reboot the node"))
            .then(|| (id.as_str().unwrap_or("?").to_string(), text.to_string()))
        })
        .collect()
}

/// The report's finding `id`, if it has one.
pub fn finding<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
}

/// The file names in a `--bundle` archive (`tar tzf`), one per line.
pub fn bundle_listing(bundle: &std::path::Path) -> String {
    let out = Command::new("tar")
        .arg("tzf")
        .arg(bundle)
        .output()
        .expect("tar");
    String::from_utf8_lossy(&out.stdout).into_owned()
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

    #[test]
    fn ss_lines_give_paths_inodes_and_holders() {
        let text = "Netid State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n\
            u_str LISTEN 0 4096 /c/containerd.sock 200 * 0 users:((\"containerd\",pid=10,fd=7))\n\
            u_str ESTAB 0 0 /c/containerd.sock 201 * 300 users:((\"containerd\",pid=10,fd=9),(\"x\",pid=11,fd=3))\n\
            u_str ESTAB 0 0 * 300 * 201 users:((\"kubelet\",pid=20,fd=12))\n\
            u_dgr UNCONN 0 0 /run/log 5 * 0\n\
            u_str ESTAB 0 0 * 7 * 8\n";
        let s = parse_ss(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].state, "LISTEN");
        assert_eq!(s[0].path, "/c/containerd.sock");
        assert_eq!(s[0].holders, vec![("containerd".to_string(), 10)]);
        assert_eq!(s[1].holders.len(), 2);
        assert_eq!(s[1].holders[1], ("x".to_string(), 11));
        assert_eq!((s[2].inode, s[2].peer_inode), (300, 201));
        assert!(s[3].holders.is_empty());
    }
}
