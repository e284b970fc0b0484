//! `cargo xtask cluster up|down|status`: a real single-node Kubernetes on this machine.
//!
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler (Kubernetes v1.35.4 built from the published Go
//! modules by `xtask/k8s/build.sh`, cached outside the clone) and the kubelet with containerd, runc
//! and the CNI plugins from Debian, as plain processes. The kubelet and containerd run under
//! `xtask supervise`, which restarts them like systemd would. Everything lives under
//! `target/cluster/`, except what components insist on putting at fixed paths — recorded before
//! `up` and removed by `down` (see `host.rs`).

pub mod api;
mod config;
pub mod criproxy;
pub mod disk;
pub mod fault;
pub mod guest_node;
pub mod host;
pub mod image;
pub mod lb;
mod pki;
pub mod podchurn;
pub mod supervise;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::sh::{self, info, step};

/// The sandbox image containerd is told to use; built locally (no registry is reachable).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The kubelet's cgroup root (cgroupfs driver): every pod cgroup lives under it.
pub const KUBE_CGROUP_ROOT: &str = "nodehealth-kubepods";
/// The harness's own cgroups: one child per component.
pub const HARNESS_CGROUP: &str = "nodehealth-harness";
/// Where the API server listens (loopback only).
pub const API_PORT: u16 = 6443;
const ETCD_CLIENT_PORT: u16 = 23790;
const ETCD_PEER_PORT: u16 = 23800;
/// Points at the running cluster's directory, so `down` from another clone still finds it.
const POINTER: &str = "/run/kubectl-nodehealth-cluster";

/// Components in start order; `down` stops them in reverse. `criproxy` is not started by `up`:
/// the kubelet talks to containerd directly, and only the `runtime-slow-list` fault starts the
/// proxy and moves the kubelet onto it (fault.rs). `guest-lb` and `guest` (QEMU) exist only with
/// `up --guest-node` (guest_node.rs), `guest-podchurn` only with the guest's disk-slow fault.
const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "apiserver-lb",
    "containerd",
    "criproxy",
    "kubelet",
    "podchurn",
    "guest-lb",
    "guest",
    "guest-podchurn",
];
/// The kubelet reaches the API server through `apiserver-lb` on this port (see lb.rs).
pub const LB_PORT: u16 = 6444;
/// A busybox image for test pods (built locally from Debian's static busybox).
pub const BUSYBOX_IMAGE: &str = "nodehealth.local/busybox:1.35";

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Build what is missing, start the cluster, wait for a Ready node with a renewing lease.
    Up {
        /// Use Kubernetes' default timings instead of the fast test settings (README lists them).
        #[arg(long)]
        defaults: bool,
        /// Add a second node, `guest`: a Debian guest under QEMU (systemd, cgroup v2, a Debian
        /// cloud kernel). On a running cluster, adds just the guest.
        #[arg(long)]
        guest_node: bool,
        /// The guest node's kernel line.
        #[arg(long, value_enum, default_value_t = crate::guest::Kernel::V6_12, requires = "guest_node")]
        kernel: crate::guest::Kernel,
    },
    /// Stop everything `up` started and put the machine back as it was found.
    Down {
        /// Take only the guest node out of the running cluster.
        #[arg(long)]
        guest_node: bool,
    },
    /// Show the components, restarts and node state.
    Status,
    /// Run a command on the guest node over the harness's SSH channel; exits with its status.
    GuestSsh {
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Up {
            defaults,
            guest_node,
            kernel,
        } => up(
            if defaults {
                Settings::defaults()
            } else {
                Settings::fast()
            },
            guest_node.then_some(kernel),
        ),
        Cmd::Down { guest_node: true } => guest_node::remove(&Layout::new()),
        Cmd::Down { guest_node: false } => down(),
        Cmd::GuestSsh { cmd } => {
            let remote = cmd
                .iter()
                .map(|w| crate::guest::shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ");
            let status = guest_node::ssh(&Layout::new())?
                .command(&remote)
                .stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(255));
            }
            Ok(())
        }
        Cmd::Status => status(),
    }
}

/// Timings that differ between the fast test tier and Kubernetes' defaults.
#[derive(Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Name of the settings profile: "fast" or "defaults".
    pub profile: String,
    /// kubelet runtimeRequestTimeout (default 2m): how long a hung CRI call blocks the kubelet.
    pub runtime_request_timeout: String,
    /// kube-controller-manager --node-monitor-grace-period (default 50s): stale lease → Unknown.
    pub node_monitor_grace_period: String,
    /// kube-controller-manager --node-monitor-period (default 5s).
    pub node_monitor_period: String,
}

impl Settings {
    pub fn fast() -> Settings {
        Settings {
            profile: "fast".into(),
            runtime_request_timeout: "30s".into(),
            node_monitor_grace_period: "20s".into(),
            node_monitor_period: "2s".into(),
        }
    }

    pub fn defaults() -> Settings {
        Settings {
            profile: "defaults".into(),
            runtime_request_timeout: "2m0s".into(),
            node_monitor_grace_period: "50s".into(),
            node_monitor_period: "5s".into(),
        }
    }
}

/// Paths of the cluster's files.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new() -> Layout {
        Layout {
            dir: sh::workspace_root().join("target/cluster"),
        }
    }
    pub fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.dir.join("containerd/root")
    }
    pub fn containerd_state(&self) -> PathBuf {
        self.dir.join("containerd/state")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }
    /// The harness's CRI proxy's socket: the kubelet's runtime socket only while
    /// `runtime-slow-list` is applied (otherwise the kubelet uses `containerd_socket`).
    pub fn criproxy_socket(&self) -> PathBuf {
        self.dir.join("containerd/criproxy.sock")
    }
    /// The CRI proxy's current delay for relist calls, in milliseconds.
    pub fn criproxy_control(&self) -> PathBuf {
        self.run_dir().join("criproxy.delay-ms")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    /// containerd's per-registry `hosts.toml` directory (`<dir>/<host:port>/hosts.toml`).
    pub fn containerd_certs_d(&self) -> PathBuf {
        self.dir.join("containerd/certs.d")
    }
    /// The KubeletConfiguration `up` writes (faults may rewrite its runtime endpoint).
    pub fn kubelet_config(&self) -> PathBuf {
        self.dir.join("kubelet-config.yaml")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
    pub fn kubelet_cert_dir(&self) -> PathBuf {
        self.dir.join("kubelet-pki")
    }
    fn snapshot(&self) -> PathBuf {
        self.dir.join("machine-snapshot.json")
    }
    pub fn faults(&self) -> PathBuf {
        self.dir.join("faults")
    }
    fn settings_file(&self) -> PathBuf {
        self.dir.join("settings.json")
    }
}

/// The node's name: this machine's hostname when it resolves to loopback (the API server dials
/// the kubelet by hostname, so it must never resolve to the default-route address), else localhost.
pub fn node_name() -> String {
    let host = sh::output(&mut Command::new("hostname"))
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_default();
    let loopback = |name: &str| {
        sh::output(Command::new("getent").args(["ahostsv4", name])).is_some_and(|out| {
            let addrs: Vec<&str> = out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.starts_with("127."))
        })
    };
    if !host.is_empty() && loopback(&host) {
        host
    } else {
        "localhost".into()
    }
}

pub fn binaries_dir() -> Result<PathBuf> {
    step("Kubernetes v1.35.4 and etcd binaries (built from Go modules, cached)");
    let script = sh::workspace_root().join("xtask/k8s/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running xtask/k8s/build.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        info(line);
    }
    if !out.status.success() {
        bail!("building Kubernetes from Go modules failed (xtask/k8s/build.sh); see its log above");
    }
    let dir = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .context("build.sh printed no bin directory")?;
    for b in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "etcd",
    ] {
        if !dir.join(b).exists() {
            bail!("{b} missing in {dir:?} after build.sh");
        }
    }
    Ok(dir)
}

/// The busybox test image from Debian's static busybox (cached by the binary's digest).
fn busybox_image() -> Result<PathBuf> {
    let busybox = fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    let key = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&busybox));
    let dir = sh::cache_dir().join("images");
    fs::create_dir_all(&dir)?;
    let archive = dir.join(format!("busybox-{}.oci.tar", &key[..12]));
    if !archive.exists() {
        step("busybox test image");
        image::write_oci_archive(
            &archive,
            BUSYBOX_IMAGE,
            &[image::File {
                path: "bin/busybox",
                contents: &busybox,
                mode: 0o755,
            }],
            &["/bin/busybox", "sh"],
        )?;
    }
    Ok(archive)
}

/// Builds the static pause binary and its OCI archive (cached by content of pause.c).
fn pause_image() -> Result<PathBuf> {
    let src = sh::workspace_root().join("xtask/assets/pause.c");
    let source = fs::read(&src)?;
    let key = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&source));
    let dir = sh::cache_dir().join("images");
    fs::create_dir_all(&dir)?;
    let archive = dir.join(format!("pause-{}.oci.tar", &key[..12]));
    if archive.exists() {
        return Ok(archive);
    }
    step("pause image (static C binary in a one-layer OCI archive)");
    let bin = dir.join("pause.bin");
    sh::run(
        "gcc -static pause.c",
        Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&bin)
            .arg(&src),
    )?;
    let contents = fs::read(&bin)?;
    image::write_oci_archive(
        &archive,
        PAUSE_IMAGE,
        &[image::File {
            path: "pause",
            contents: &contents,
            mode: 0o755,
        }],
        &["/pause"],
    )?;
    let _ = fs::remove_file(&bin);
    Ok(archive)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, contents).with_context(|| format!("writing {path:?}"))
}

fn generate_pki(l: &Layout, node: &str) -> Result<()> {
    // Kept across `up`s; made anew when a leaf a newer harness issues is missing (the
    // scheduler's, added after clusters had been brought up without it).
    if ["ca.crt", "scheduler.crt"]
        .iter()
        .all(|f| l.pki(f).exists())
    {
        return Ok(());
    }
    step("cluster PKI");
    // Every leaf anew with the new CA: a leaf kept from the old one (the guest kubelet's is issued
    // only when missing) would be refused.
    match fs::remove_dir_all(l.dir.join("pki")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    fs::create_dir_all(l.dir.join("pki"))?;
    let ca = pki::Ca::generate()?;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let issue = |name: &str, leaf: pki::Leaf| -> Result<()> {
        let pair = ca.issue(&leaf)?;
        write(&l.pki(&format!("{name}.crt")), &pair.cert_pem)?;
        pki::write_private(&l.pki(&format!("{name}.key")), &pair.key_pem)
    };
    write(&l.pki("ca.crt"), &ca.pair.cert_pem)?;
    pki::write_private(&l.pki("ca.key"), &ca.pair.key_pem)?;
    issue(
        "apiserver",
        pki::Leaf::server(
            "kube-apiserver",
            &[
                "localhost",
                node,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[lo],
        ),
    )?;
    issue(
        "admin",
        pki::Leaf::client("nodehealth-admin", &["system:masters"]),
    )?;
    issue(
        "controller-manager",
        pki::Leaf::client("system:kube-controller-manager", &[]),
    )?;
    issue("scheduler", pki::Leaf::client("system:kube-scheduler", &[]))?;
    issue(
        "apiserver-kubelet-client",
        pki::Leaf::client("kube-apiserver-kubelet-client", &["system:masters"]),
    )?;
    issue(
        "kubelet-serving",
        pki::Leaf::server(
            node,
            &[node, "localhost"],
            &[lo, host::NODE_IP.parse().expect("node IP")],
        ),
    )?;
    // A user with read access to nodes, leases, CSRs and events but not nodes/proxy: the tests'
    // RBAC-restricted kubeconfig.
    issue("viewer", pki::Leaf::client("nodehealth-viewer", &[]))?;
    let (sa_key, sa_pub) = pki::service_account_key()?;
    pki::write_private(&l.pki("sa.key"), &sa_key)?;
    write(&l.pki("sa.pub"), &sa_pub)?;

    // The kubelet's client certificate, laid out as kubeadm does: a dated file holding cert and
    // key, and kubelet-client-current.pem pointing at it (rotation replaces both).
    let kubelet = ca.issue(&pki::Leaf::client(
        &format!("system:node:{node}"),
        &["system:nodes"],
    ))?;
    let cert_dir = l.kubelet_cert_dir();
    fs::create_dir_all(&cert_dir)?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let dated = format!("kubelet-client-{stamp}.pem");
    pki::write_private(
        &cert_dir.join(&dated),
        &format!("{}{}", kubelet.cert_pem, kubelet.key_pem),
    )?;
    let current = cert_dir.join("kubelet-client-current.pem");
    let _ = fs::remove_file(&current);
    std::os::unix::fs::symlink(&dated, &current)?;
    Ok(())
}

fn write_configs(l: &Layout, node: &str, settings: &Settings) -> Result<()> {
    let server = format!("https://127.0.0.1:{API_PORT}");
    let ca = l.pki("ca.crt");
    write(
        &l.admin_kubeconfig(),
        &config::kubeconfig(
            &server,
            &ca,
            &l.pki("admin.crt"),
            &l.pki("admin.key"),
            "admin",
        ),
    )?;
    write(
        &l.dir.join("viewer.kubeconfig"),
        &config::kubeconfig(
            &server,
            &ca,
            &l.pki("viewer.crt"),
            &l.pki("viewer.key"),
            "viewer",
        ),
    )?;
    write(
        &l.dir.join("controller-manager.kubeconfig"),
        &config::kubeconfig(
            &server,
            &ca,
            &l.pki("controller-manager.crt"),
            &l.pki("controller-manager.key"),
            "controller-manager",
        ),
    )?;
    write(
        &l.dir.join("scheduler.kubeconfig"),
        &config::kubeconfig(
            &server,
            &ca,
            &l.pki("scheduler.crt"),
            &l.pki("scheduler.key"),
            "scheduler",
        ),
    )?;
    let kubelet_cert = l.kubelet_cert_dir().join("kubelet-client-current.pem");
    write(
        &l.dir.join("kubelet.kubeconfig"),
        &config::kubeconfig(
            &format!("https://127.0.0.1:{LB_PORT}"),
            &ca,
            &kubelet_cert,
            &kubelet_cert,
            &format!("system:node:{node}"),
        ),
    )?;
    write(&l.kubelet_config(), &config::kubelet(l, settings))?;
    write(
        &l.dir.join("containerd/config.toml"),
        &config::containerd(l),
    )?;
    write(
        &l.cni_conf_dir().join("10-nodehealth-loopback.conflist"),
        config::CNI_CONFLIST,
    )?;
    Ok(())
}

fn command_line(l: &Layout, bin: &Path, name: &str, node: &str, s: &Settings) -> Vec<String> {
    let p = |n: &str| l.pki(n).display().to_string();
    let d = |n: &str| l.dir.join(n).display().to_string();
    let mut args: Vec<String> = match name {
        "etcd" => vec![
            bin.join("etcd").display().to_string(),
            "--name=nodehealth".into(),
            format!("--data-dir={}", d("etcd")),
            format!("--listen-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
            format!("--advertise-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
            format!("--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}"),
            format!("--initial-cluster=nodehealth=http://127.0.0.1:{ETCD_PEER_PORT}"),
            "--listen-metrics-urls=".into(),
            "--log-level=warn".into(),
        ],
        "kube-apiserver" => vec![
            bin.join("kube-apiserver").display().to_string(),
            format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={API_PORT}"),
            format!("--cert-dir={}", d("apiserver-certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            format!("--kubelet-certificate-authority={}", p("ca.crt")),
            // Dial the kubelet at the node IP on the harness's own link (see host::NODE_IP);
            // never at the machine's default-route address.
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            // Only allocated, never routed: nothing on this cluster talks to service IPs.
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--endpoint-reconciler-type=none".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ],
        "kube-controller-manager" => vec![
            bin.join("kube-controller-manager").display().to_string(),
            format!("--kubeconfig={}", d("controller-manager.kubeconfig")),
            format!("--authentication-kubeconfig={}", d("controller-manager.kubeconfig")),
            format!("--authorization-kubeconfig={}", d("controller-manager.kubeconfig")),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=10257".into(),
            "--leader-elect=true".into(),
            "--use-service-account-credentials=true".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--cluster-signing-cert-file={}", p("ca.crt")),
            format!("--cluster-signing-key-file={}", p("ca.key")),
            format!("--node-monitor-grace-period={}", s.node_monitor_grace_period),
            format!("--node-monitor-period={}", s.node_monitor_period),
            "--controllers=*,-service-lb-controller,-node-ipam-controller,-cloud-node-lifecycle-controller".into(),
            "--profiling=false".into(),
        ],
        // Only what has no nodeName asks it: the recorder's DaemonSet pods (every other pod
        // here is bound to its node directly).
        "kube-scheduler" => vec![
            bin.join("kube-scheduler").display().to_string(),
            format!("--kubeconfig={}", d("scheduler.kubeconfig")),
            format!("--authentication-kubeconfig={}", d("scheduler.kubeconfig")),
            format!("--authorization-kubeconfig={}", d("scheduler.kubeconfig")),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=10259".into(),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ],
        "apiserver-lb" => vec![
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "xtask".into()),
            "lb".into(),
            format!("--listen=127.0.0.1:{LB_PORT}"),
            format!("--target=127.0.0.1:{API_PORT}"),
            format!("--cut-file={}", fault::cut_file(l).display()),
        ],
        "criproxy" => vec![
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "xtask".into()),
            "criproxy".into(),
            format!("--listen={}", l.criproxy_socket().display()),
            format!("--upstream={}", l.containerd_socket().display()),
            format!("--control={}", l.criproxy_control().display()),
        ],
        "podchurn" => vec![
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "xtask".into()),
            "podchurn".into(),
            format!("--node={}", node_name()),
        ],
        "containerd" => vec![
            "containerd".into(),
            format!("--config={}", d("containerd/config.toml")),
            "--log-level=info".into(),
        ],
        "kubelet" => vec![
            bin.join("kubelet").display().to_string(),
            format!("--config={}", l.kubelet_config().display()),
            format!("--kubeconfig={}", d("kubelet.kubeconfig")),
            format!("--root-dir={}", l.kubelet_root().display()),
            format!("--cert-dir={}", l.kubelet_cert_dir().display()),
            format!("--hostname-override={node}"),
            format!("--node-ip={}", host::NODE_IP),
            "--v=2".into(),
        ],
        _ => unreachable!("unknown component {name}"),
    };
    args.shrink_to_fit();
    args
}

/// Log file of a component: the kubelet's and containerd's under /var/log (the kubelet's log query
/// only serves files there), linked from `target/cluster/logs/`.
fn log_path(l: &Layout, name: &str) -> PathBuf {
    match name {
        "kubelet" | "containerd" => PathBuf::from(format!("/var/log/{name}.log")),
        _ => l.logs().join(format!("{name}.log")),
    }
}

/// The component's cgroup in `controller` under the harness's group.
pub fn component_cgroup(controller: &str, name: &str) -> PathBuf {
    host::cgroup_dir(controller, HARNESS_CGROUP).join(name)
}

fn argv_file(l: &Layout, name: &str) -> PathBuf {
    l.run_dir().join(format!("{name}.argv.json"))
}

/// The command line `up` started a component with.
pub fn component_argv(l: &Layout, name: &str) -> Result<Vec<String>> {
    let file = argv_file(l, name);
    let bytes = fs::read(&file).with_context(|| {
        format!(
            "no recorded command line for {name} ({}): a cluster from an older harness — `cargo xtask cluster down`, then `up`",
            file.display()
        )
    })?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Starts a component stopped by a fault again, with the command line `up` gave it.
pub fn restart_component(l: &Layout, name: &str) -> Result<()> {
    launch(l, name, &component_argv(l, name)?)
}

fn launched_argv_file(l: &Layout, name: &str) -> PathBuf {
    l.run_dir().join(format!("{name}.launched.json"))
}

/// The command line a component was last launched with (a fault's altered flags included), else
/// the one `up` chose.
pub fn launched_argv(l: &Layout, name: &str) -> Result<Vec<String>> {
    match fs::read(launched_argv_file(l, name)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(_) => component_argv(l, name),
    }
}

/// Asks a component's supervisor to stop it (SIGTERM, SIGKILL after 10 s) and waits until the
/// supervisor has exited — like `systemctl stop`.
pub fn stop_component(l: &Layout, name: &str) -> Result<()> {
    let files = supervise::files(&l.run_dir(), name);
    if !files.supervisor_pid.exists() {
        return Ok(());
    }
    fs::write(&files.stop, "")?;
    let until = Instant::now() + Duration::from_secs(20);
    while files.supervisor_pid.exists() {
        if Instant::now() > until {
            bail!("the {name} supervisor did not stop within 20 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn start(l: &Layout, name: &str, argv: &[String]) -> Result<()> {
    record_argv(l, name, argv)?;
    launch(l, name, argv)
}

/// Records the command line `up` chose for a component (what `restart_component` starts).
fn record_argv(l: &Layout, name: &str, argv: &[String]) -> Result<()> {
    fs::write(argv_file(l, name), serde_json::to_vec(argv)?)?;
    Ok(())
}

/// Starts a component under its supervisor with `argv`, without recording it as the command line
/// `up` chose (faults start components with altered flags; `heal` restores the recorded one).
pub fn launch(l: &Layout, name: &str, argv: &[String]) -> Result<()> {
    let f = supervise::files(&l.run_dir(), name);
    let _ = fs::remove_file(&f.stop);
    fs::write(launched_argv_file(l, name), serde_json::to_vec(argv)?)?;
    let xtask = std::env::current_exe()?;
    let mut cmd = Command::new(xtask);
    cmd.arg("supervise")
        .arg("--name")
        .arg(name)
        .arg("--run-dir")
        .arg(l.run_dir())
        .arg("--log")
        .arg(log_path(l, name));
    for controller in ["pids", "freezer", "cpu", "cpuacct", "memory", "blkio"] {
        cmd.arg("--cgroup").arg(component_cgroup(controller, name));
    }
    cmd.arg("--").args(argv);
    use std::os::unix::process::CommandExt;
    // Its own process group: the supervisor outlives `cluster up` and ignores its terminal.
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(
            l.logs().join(format!("{name}.supervisor.log")),
        )?);
    let mut supervisor = cmd
        .spawn()
        .with_context(|| format!("starting the {name} supervisor"))?;
    // Wait until the supervisor has started the component (its pid file), so liveness checks
    // and `down` never race the start.
    let until = Instant::now() + Duration::from_secs(10);
    while !f.pid.exists() {
        if let Some(status) = supervisor.try_wait()? {
            bail!(
                "the {name} supervisor exited at once ({status}); see {:?}",
                l.logs()
            );
        }
        if Instant::now() > until {
            bail!("the {name} supervisor did not start {name} within 10 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        if ready()? {
            info(format!(
                "{what}: ready after {:.1} s",
                start.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not ready after {} s", timeout.as_secs());
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            info(format!(
                "{what}: still waiting ({:.0} s)",
                start.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn component_alive(l: &Layout, name: &str) -> bool {
    let f = supervise::files(&l.run_dir(), name);
    fs::read_to_string(&f.supervisor_pid)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// How often the component's current supervisor has restarted it (a new supervisor — `launch` —
/// starts at 0).
fn restarts(l: &Layout, name: &str) -> u64 {
    fs::read_to_string(supervise::files(&l.run_dir(), name).restarts)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Fails when the component's supervisor is gone or the component keeps crashing, quoting the
/// end of its log.
fn check_alive(l: &Layout, name: &str) -> Result<()> {
    let restarts = restarts(l, name);
    if component_alive(l, name) && restarts < 3 {
        return Ok(());
    }
    let log = log_path(l, name);
    let text = fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    for line in tail.iter().rev() {
        eprintln!("    | {line}");
    }
    bail!(
        "{name} {} (end of {} above)",
        if restarts >= 3 {
            format!("keeps exiting ({restarts} restarts)")
        } else {
            "supervisor exited".to_string()
        },
        log.display()
    )
}

/// Starts the cluster (`guest`: with the guest node on that kernel).
pub fn up(settings: Settings, guest: Option<crate::guest::Kernel>) -> Result<()> {
    let l = Layout::new();
    if Path::new(POINTER).exists() {
        let running = fs::read_to_string(POINTER).unwrap_or_default();
        if Path::new(running.trim()) == l.dir && api::ready(&l) {
            step(format!(
                "cluster already running; kubeconfig: {}",
                l.admin_kubeconfig().display()
            ));
            // The agent may have changed since the cluster came up.
            let agent = crate::agent_image::build_or_warn();
            if let Some(agent) = &agent {
                crate::agent_image::import(&l, agent)?;
                if guest_node::running(&l) {
                    guest_node::import_agent(&l, agent)?;
                }
            }
            if let Some(kernel) = guest
                && guest_node::running(&l)
                && let Some(running) = guest_node::running_kernel(&l)
                && running != kernel.name()
            {
                bail!(
                    "the guest node already runs kernel {running}, not {}: \
                     `cargo xtask cluster down --guest-node` first, then `up --guest-node --kernel {}`",
                    kernel.name(),
                    kernel.name()
                );
            }
            if let Some(kernel) = guest
                && !guest_node::running(&l)
            {
                let settings: Settings = serde_json::from_slice(&fs::read(l.settings_file())?)?;
                let mut images = vec![pause_image()?, busybox_image()?];
                images.extend(agent);
                let result = guest_node::up(&l, &settings, &binaries_dir()?, &images, kernel);
                if let Err(e) = result {
                    eprintln!("xtask: the guest node failed to join: {e:#}; removing it");
                    let _ = guest_node::remove(&l);
                    return Err(e);
                }
            }
            return Ok(());
        }
        step(format!(
            "a cluster from {} is registered; bringing it down first",
            running.trim()
        ));
        down()?;
    }
    crate::setup::run()?;
    let bin = binaries_dir()?;
    let mut images = vec![pause_image()?, busybox_image()?];
    images.extend(crate::agent_image::build_or_warn());
    let node = node_name();
    step(format!(
        "starting a single-node cluster (node {node}, {} timings)",
        settings.profile
    ));

    fs::create_dir_all(l.run_dir())?;
    fs::create_dir_all(l.logs())?;
    // Record the machine as found before anything changes it (kept across a failed `up`).
    if !l.snapshot().exists() {
        let snapshot = host::take_snapshot();
        fs::write(l.snapshot(), serde_json::to_vec_pretty(&snapshot)?)?;
    }
    fs::write(POINTER, l.dir.display().to_string())?;
    fs::write(l.settings_file(), serde_json::to_vec_pretty(&settings)?)?;

    let result = (|| -> Result<()> {
        generate_pki(&l, &node)?;
        host::create_node_link().context("creating the node's link")?;
        write_configs(&l, &node, &settings)?;
        for ctrl in host::CGROUP_CONTROLLERS {
            fs::create_dir_all(host::cgroup_dir(ctrl, KUBE_CGROUP_ROOT))
                .with_context(|| format!("creating the kubelet's cgroup root in {ctrl}"))?;
        }
        for name in COMPONENTS {
            for ctrl in ["pids", "freezer", "cpu", "cpuacct", "memory", "blkio"] {
                fs::create_dir_all(component_cgroup(ctrl, name))?;
            }
        }
        for name in ["kubelet", "containerd"] {
            let link = l.logs().join(format!("{name}.log"));
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(log_path(&l, name), &link)?;
        }

        step("etcd");
        start(
            &l,
            "etcd",
            &command_line(&l, &bin, "etcd", &node, &settings),
        )?;
        wait_for("etcd", Duration::from_secs(60), || {
            check_alive(&l, "etcd")?;
            Ok(sh::output(Command::new("curl").args([
                "-sf",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:{ETCD_CLIENT_PORT}/health"),
            ]))
            .is_some_and(|s| s.contains("true")))
        })?;

        step("kube-apiserver");
        start(
            &l,
            "kube-apiserver",
            &command_line(&l, &bin, "kube-apiserver", &node, &settings),
        )?;
        wait_for("kube-apiserver", Duration::from_secs(120), || {
            check_alive(&l, "kube-apiserver")?;
            Ok(api::ready(&l))
        })?;
        api::bootstrap_rbac(&l).context("creating the cluster's RBAC bindings")?;

        step("kube-controller-manager");
        start(
            &l,
            "kube-controller-manager",
            &command_line(&l, &bin, "kube-controller-manager", &node, &settings),
        )?;

        step("kube-scheduler");
        start(
            &l,
            "kube-scheduler",
            &command_line(&l, &bin, "kube-scheduler", &node, &settings),
        )?;
        wait_for("kube-scheduler", Duration::from_secs(60), || {
            check_alive(&l, "kube-scheduler")?;
            Ok(sh::output(Command::new("curl").args([
                "-skf",
                "--max-time",
                "2",
                "https://127.0.0.1:10259/healthz",
            ]))
            .is_some_and(|s| s.trim() == "ok"))
        })?;

        step("apiserver-lb (the kubelet's path to the API server)");
        start(
            &l,
            "apiserver-lb",
            &command_line(&l, &bin, "apiserver-lb", &node, &settings),
        )?;

        step("containerd (root on a loop device of its own)");
        disk::mount_containerd_root(&l).context("putting containerd's root on a loop device")?;
        start(
            &l,
            "containerd",
            &command_line(&l, &bin, "containerd", &node, &settings),
        )?;
        let sock = l.containerd_socket();
        wait_for("containerd", Duration::from_secs(60), || {
            check_alive(&l, "containerd")?;
            Ok(
                sh::output(Command::new("ctr").arg("--address").arg(&sock).args([
                    "--timeout",
                    "2s",
                    "version",
                ]))
                .is_some(),
            )
        })?;
        for archive in &images {
            sh::run(
                "importing a locally built image",
                Command::new("ctr")
                    .arg("--address")
                    .arg(&sock)
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(archive)
                    .stdout(Stdio::null()),
            )?;
        }

        // The CRI proxy is started only by the runtime-slow-list fault; its command line is
        // recorded now so the fault starts the same one.
        record_argv(
            &l,
            "criproxy",
            &command_line(&l, &bin, "criproxy", &node, &settings),
        )?;
        // Likewise the disk-slow fault's pod churn.
        record_argv(
            &l,
            "podchurn",
            &command_line(&l, &bin, "podchurn", &node, &settings),
        )?;

        step("kubelet");
        start(
            &l,
            "kubelet",
            &command_line(&l, &bin, "kubelet", &node, &settings),
        )?;
        wait_for("node Ready", Duration::from_secs(180), || {
            check_alive(&l, "kubelet")?;
            Ok(api::node_ready(&l, &node)?.is_some_and(|r| r == "True"))
        })?;
        let first = api::lease_renew_time(&l, &node)?;
        wait_for("lease renewing", Duration::from_secs(60), || {
            Ok(api::lease_renew_time(&l, &node)? != first)
        })?;
        if let Some(kernel) = guest {
            guest_node::up(&l, &settings, &bin, &images, kernel)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("xtask: cluster up failed: {e:#}");
        eprintln!(
            "xtask: component logs are in {:?}; bringing the cluster down",
            l.logs()
        );
        let _ = down();
        return Err(e);
    }
    step(format!(
        "cluster up: node {node} Ready; kubeconfig: {}",
        l.admin_kubeconfig().display()
    ));
    Ok(())
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

pub fn down() -> Result<()> {
    let registered = fs::read_to_string(POINTER)
        .ok()
        .map(|s| PathBuf::from(s.trim()));
    let l = match &registered {
        Some(dir) => Layout { dir: dir.clone() },
        None => Layout::new(),
    };
    step(format!("cluster down ({})", l.dir.display()));
    let mut problems = Vec::new();

    // A frozen process cannot act on SIGTERM: thaw first.
    for name in COMPONENTS {
        let state = component_cgroup("freezer", name).join("freezer.state");
        if fs::read_to_string(&state).is_ok_and(|s| s.trim() != "THAWED") {
            let _ = fs::write(&state, "THAWED");
        }
    }
    // Supervisors stop their component (SIGTERM, then SIGKILL after 10 s) and exit.
    for name in COMPONENTS.iter().rev() {
        let f = supervise::files(&l.run_dir(), name);
        if read_pid(&f.supervisor_pid).is_some() {
            let _ = fs::write(&f.stop, "");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for name in COMPONENTS.iter().rev() {
        let f = supervise::files(&l.run_dir(), name);
        if let Some(pid) = read_pid(&f.supervisor_pid) {
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                kill(pid, "KILL");
            }
        }
        for p in [&f.pid, &f.supervisor_pid] {
            if let Some(pid) = read_pid(p) {
                kill(pid, "KILL");
            }
        }
    }
    // Whatever is left in our cgroups (shims, containers, children) or names our directory on its
    // command line is ours: kill it.
    let trees = [
        host::cgroup_dir("pids", HARNESS_CGROUP),
        host::cgroup_dir("pids", KUBE_CGROUP_ROOT),
    ];
    for _ in 0..50 {
        let mut pids: Vec<u32> = trees.iter().flat_map(|t| host::cgroup_pids(t)).collect();
        pids.extend(host::processes_mentioning(&l.dir));
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            kill(pid, "KILL");
        }
        thread::sleep(Duration::from_millis(100));
    }
    problems.extend(disk::clear_throttle(&l));
    problems.extend(host::unmount_under(&l.dir));
    problems.extend(disk::remove_image(&l));
    for ctrl in host::CGROUP_CONTROLLERS {
        for group in [HARNESS_CGROUP, KUBE_CGROUP_ROOT] {
            if let Err(e) = host::remove_cgroup_tree(&host::cgroup_dir(ctrl, group)) {
                problems.push(format!("{e:#}"));
            }
        }
    }
    problems.extend(host::remove_node_link());
    problems.extend(guest_node::undo_on_down(&l));
    if let Ok(text) = fs::read_to_string(l.snapshot()) {
        let snapshot: host::Snapshot =
            serde_json::from_str(&text).context("reading the machine snapshot")?;
        problems.extend(host::restore(&snapshot));
        let _ = fs::remove_file(l.snapshot());
    }
    for name in COMPONENTS {
        let f = supervise::files(&l.run_dir(), name);
        for p in [f.pid, f.supervisor_pid, f.stop, f.restarts] {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_file(launched_argv_file(&l, name));
    }
    // Runtime state of the components (keep pki and logs for a look after the fact).
    for d in [
        "containerd/root",
        "containerd/state",
        "kubelet",
        "etcd",
        "pod-logs",
    ] {
        let p = l.dir.join(d);
        if p.exists()
            && let Err(e) = fs::remove_dir_all(&p)
        {
            problems.push(format!("removing {p:?}: {e}"));
        }
    }
    problems.extend(fault::undo_on_down(&l));
    let _ = fs::remove_dir_all(l.faults());
    let _ = fs::remove_file(fault::cut_file(&l));
    let _ = fs::remove_file(l.criproxy_control());
    let _ = fs::remove_file(l.criproxy_socket());
    let _ = fs::remove_file(POINTER);
    if problems.is_empty() {
        step("cluster down: the machine is as it was found");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("    problem: {p}");
        }
        bail!("cluster down left {} problem(s)", problems.len())
    }
}

fn status() -> Result<()> {
    let l = Layout::new();
    let running = Path::new(POINTER).exists();
    step(format!(
        "cluster {} ({})",
        if running { "registered" } else { "not running" },
        l.dir.display()
    ));
    if let Ok(s) = fs::read_to_string(l.settings_file()) {
        let s: Settings = serde_json::from_str(&s)?;
        info(format!(
            "timings: {} (runtimeRequestTimeout {}, node-monitor-grace-period {})",
            s.profile, s.runtime_request_timeout, s.node_monitor_grace_period
        ));
    }
    for name in COMPONENTS {
        let f = supervise::files(&l.run_dir(), name);
        let pid = read_pid(&f.pid);
        let restarts = fs::read_to_string(&f.restarts).unwrap_or_else(|_| "-".into());
        info(format!(
            "{name:<24} {:<10} pid {:<8} restarts {}",
            match (component_alive(&l, name), *name) {
                (true, _) => "running",
                // Started only by the runtime-slow-list fault.
                (false, "criproxy" | "podchurn") => "not in use",
                // Only with `up --guest-node`.
                (false, "guest" | "guest-lb") => "no guest",
                (false, "guest-podchurn") => "not in use",
                (false, _) => "stopped",
            },
            pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            restarts.trim()
        ));
    }
    if running && let Ok(config) = fs::read_to_string(l.kubelet_config()) {
        let endpoint = fault::runtime_endpoint(&config).unwrap_or("(not set)");
        let path = if endpoint.ends_with(&*l.criproxy_socket().to_string_lossy()) {
            format!(
                "the CRI proxy (relist calls held {} ms), then containerd",
                criproxy::current_delay(&l.criproxy_control()).as_millis()
            )
        } else if endpoint.ends_with(&*l.containerd_socket().to_string_lossy()) {
            "containerd directly".to_string()
        } else {
            "unknown".to_string()
        };
        info(format!("kubelet runtime endpoint: {endpoint} ({path})"));
    }
    if running && api::ready(&l) {
        let node = node_name();
        info(format!(
            "node {node}: Ready={}",
            api::node_ready(&l, &node)?.unwrap_or_else(|| "absent".into())
        ));
        info(format!("kubeconfig: {}", l.admin_kubeconfig().display()));
    }
    Ok(())
}
