//! `cargo xtask fault <name>` and `cargo xtask heal`: failures injected into the local cluster,
//! each touching only what the harness created. Active faults are listed in
//! `target/cluster/faults/` (a marker file per fault, written before the fault is applied so a
//! half-applied fault is healed too); `heal` undoes all of them, and `cluster down` undoes what
//! would outlive the cluster's processes and cgroups (throttle rules, the kubelet's certificate).
//!
//! The kubelet talks to containerd directly. Only `runtime-slow-list` puts the harness's CRI proxy
//! between them: it starts the proxy, points the kubelet's `containerRuntimeEndpoint` at it and
//! restarts the kubelet through its supervisor; `heal` points the kubelet back at containerd the
//! same way and stops the proxy. So in every other fault the process listening on the kubelet's
//! runtime socket — what the node agent calls "the runtime" — is containerd.

use std::{
    fs,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Layout, api, component_argv, component_cgroup, criproxy, disk, launch, node_name, pki,
    podchurn, restart_component, stop_component,
};
use crate::sh::{info, step};

#[derive(clap::Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Freeze the harness's containerd (cgroup freezer): the runtime socket stops answering.
    RuntimeFrozen,
    /// Put the harness's CRI proxy between the kubelet and containerd (the kubelet is restarted
    /// onto it) and delay the relist calls (ListPodSandbox, ListContainers) there; every other
    /// call passes unchanged. Waits until the node is Ready again and a relist shows the delay.
    RuntimeSlowList {
        /// How long each relist call is held (e.g. 1500ms, 1.5s, 2m).
        #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
        delay: Duration,
    },
    /// CFS bandwidth limit on containerd's cpu cgroup: the runtime is starved of CPU.
    RuntimeCpuStarved {
        /// CPU time containerd may use per period, in microseconds (1000 is the kernel minimum).
        #[arg(long, default_value_t = 1_000)]
        quota_us: u64,
        /// The CFS period in microseconds.
        #[arg(long, default_value_t = 1_000_000)]
        period_us: u64,
    },
    /// Throttle containerd's root device (the harness's loop device) and run a steady stream of
    /// short-lived pods so containerd keeps writing and syncing; returns once the kubelet's runtime
    /// calls that write are measurably slowed.
    DiskSlow {
        /// Write IOPS allowed on the device.
        #[arg(long, default_value_t = 10)]
        write_iops: u64,
        /// Write bytes per second allowed on the device.
        #[arg(long, default_value_t = 256 * 1024)]
        write_bps: u64,
        /// Read IOPS allowed on the device.
        #[arg(long, default_value_t = 20)]
        read_iops: u64,
        /// Read bytes per second allowed on the device.
        #[arg(long, default_value_t = 1024 * 1024)]
        read_bps: u64,
    },
    /// Certificate rotation off and the kubelet restarted with a static client certificate that
    /// expires soon: afterwards every request it makes fails with 401.
    CertExpiredStatic {
        /// Time from now until the certificate expires.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        expires_in: Duration,
    },
    /// Certificate rotation on, the controller manager's CSR approver off, and a short-lived client
    /// certificate: the renewal CSR stays Pending, after expiry the kubelet is refused, and it later
    /// exits and its restarts fail (README: when).
    CertRotationStuck {
        /// Lifetime of the kubelet's client certificate, from now.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        lifetime: Duration,
    },
    /// Cut the kubelet's path to the API server (the admin path stays up).
    ApiPartition,
    /// Stop the kubelet (like `systemctl stop kubelet`).
    KubeletStopped,
    /// Freeze the kubelet (cgroup freezer): alive but unresponsive.
    KubeletFrozen,
    /// A memory limit on the kubelet's cgroup below what it needs: the kernel OOM-kills it, the
    /// supervisor restarts it, again and again.
    KubeletMemoryLimited {
        /// The limit in MiB.
        #[arg(long, default_value_t = 16)]
        limit_mib: u64,
    },
    /// The kubelet restarted with `enableSystemLogQuery: false`: its node log query is off and
    /// `/logs/` serves a listing of /var/log instead (a configuration, not a failure: for the
    /// plugin's "log query disabled" message). Waits until the node is Ready again.
    LogQueryOff,
    /// The controller manager restarted without its Job controller: a Job gets no pod (what the
    /// plugin meets when kube-controller-manager is down; its probe then creates the pod itself).
    JobControllerOff,
}

/// The kubelet's runtime operations that write the runtime's metadata and snapshots.
const WRITE_OPERATIONS: &[&str] = &[
    "run_podsandbox",
    "create_container",
    "start_container",
    "stop_podsandbox",
    "remove_podsandbox",
    "remove_container",
];
/// `kubelet_runtime_operations_duration_seconds` bucket bound above which a write counts as slowed
/// (ExponentialBuckets(.005, 2.5, 14): 0.005 × 2.5^6 s).
const SLOW_WRITE_LE: &str = "1.220703125";

/// Every fault by name, in the order `heal` undoes them. `runtime-slow-list` comes last: its heal
/// restarts the kubelet back onto containerd, which needs a thawed runtime and a kubelet that is
/// neither frozen nor stopped.
pub const NAMES: &[&str] = &[
    "runtime-frozen",
    "runtime-cpu-starved",
    "disk-slow",
    "cert-expired-static",
    "cert-rotation-stuck",
    "api-partition",
    "kubelet-stopped",
    "kubelet-frozen",
    "kubelet-memory-limited",
    "log-query-off",
    "job-controller-off",
    "runtime-slow-list",
];

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::RuntimeFrozen => "runtime-frozen",
            Fault::RuntimeSlowList { .. } => "runtime-slow-list",
            Fault::RuntimeCpuStarved { .. } => "runtime-cpu-starved",
            Fault::DiskSlow { .. } => "disk-slow",
            Fault::CertExpiredStatic { .. } => "cert-expired-static",
            Fault::CertRotationStuck { .. } => "cert-rotation-stuck",
            Fault::ApiPartition => "api-partition",
            Fault::KubeletStopped => "kubelet-stopped",
            Fault::KubeletFrozen => "kubelet-frozen",
            Fault::KubeletMemoryLimited { .. } => "kubelet-memory-limited",
            Fault::LogQueryOff => "log-query-off",
            Fault::JobControllerOff => "job-controller-off",
        }
    }
}

/// The duration grammar the plugin and the agent share (Go's: `1500ms`, `1.5s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    nodehealth_units::parse(s)
}

fn marker(l: &Layout, name: &str) -> PathBuf {
    l.faults().join(name)
}

/// The file whose existence cuts the kubelet's API path (read by `xtask lb`).
pub fn cut_file(l: &Layout) -> PathBuf {
    l.run_dir().join("api-partition.cut")
}

fn freeze(component: &str, state: &str) -> Result<()> {
    let path = component_cgroup("freezer", component).join("freezer.state");
    fs::write(&path, state).with_context(|| format!("writing {state} to {path:?}"))?;
    // FREEZING -> FROZEN takes a moment; wait so the fault is in place when we return.
    for _ in 0..100 {
        if fs::read_to_string(&path)?.trim() == state {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("{component} did not reach {state}")
}

fn write_cgroup(controller: &str, component: &str, file: &str, value: &str) -> Result<()> {
    let path = component_cgroup(controller, component).join(file);
    fs::write(&path, value).with_context(|| format!("writing {value} to {path:?}"))
}

pub fn apply(f: Fault) -> Result<()> {
    let l = Layout::new();
    if !api::ready(&l) {
        bail!("the local cluster is not running: `cargo xtask cluster up` first");
    }
    step(format!("fault {}", f.name()));
    fs::create_dir_all(l.faults())?;
    fs::write(marker(&l, f.name()), "")?;
    let name = f.name();
    // When the fault took hold, where that is a moment before this command returns.
    let mut held = None;
    match f {
        Fault::RuntimeFrozen => {
            freeze("containerd", "FROZEN")?;
            held = Some(SystemTime::now());
        }
        Fault::KubeletFrozen => {
            freeze("kubelet", "FROZEN")?;
            held = Some(SystemTime::now());
        }
        Fault::ApiPartition => {
            fs::write(cut_file(&l), "")?;
            held = Some(SystemTime::now());
        }
        Fault::KubeletStopped => {
            stop_component(&l, "kubelet")?;
            held = Some(SystemTime::now());
        }
        Fault::RuntimeSlowList { delay } => held = Some(runtime_slow_list(&l, delay)?),
        Fault::RuntimeCpuStarved {
            quota_us,
            period_us,
        } => {
            write_cgroup(
                "cpu",
                "containerd",
                "cpu.cfs_period_us",
                &period_us.to_string(),
            )?;
            write_cgroup(
                "cpu",
                "containerd",
                "cpu.cfs_quota_us",
                &quota_us.to_string(),
            )?;
            info(format!(
                "containerd may use {quota_us} µs of CPU per {period_us} µs"
            ));
        }
        Fault::KubeletMemoryLimited { limit_mib } => {
            // Limit a stopped kubelet: a running one's usage may exceed the limit, which the kernel
            // then refuses (EBUSY). The restarted kubelet grows into the limit and is OOM-killed.
            stop_component(&l, "kubelet")?;
            write_cgroup(
                "memory",
                "kubelet",
                "memory.limit_in_bytes",
                &(limit_mib << 20).to_string(),
            )?;
            restart_component(&l, "kubelet")?;
            info(format!(
                "kubelet restarted under a {limit_mib} MiB memory limit"
            ));
            // Returns once the symptom is there: the new supervisor (its count starts at 0) has
            // restarted a killed kubelet. Above the kubelet's working set that may never happen,
            // which is a strength to observe, not an error.
            if let Err(e) = super::wait_for(
                "the kubelet killed and restarted",
                Duration::from_secs(90),
                || Ok(super::restarts(&l, "kubelet") >= 1),
            ) {
                info(format!(
                    "{e}: {limit_mib} MiB may be above what the kubelet needs right now"
                ));
            }
        }
        Fault::DiskSlow {
            write_iops,
            write_bps,
            read_iops,
            read_bps,
        } => {
            disk::throttle(
                &l,
                &[
                    ("blkio.throttle.write_iops_device", write_iops),
                    ("blkio.throttle.write_bps_device", write_bps),
                    ("blkio.throttle.read_iops_device", read_iops),
                    ("blkio.throttle.read_bps_device", read_bps),
                ],
            )?;
            churn_until_writes_are_slow(&l, &node_name(), "podchurn", &|| {
                restart_component(&l, "podchurn")
            })?;
            info(format!(
                "containerd's root device limited to {write_iops} write IOPS, {write_bps} B/s"
            ));
        }
        Fault::CertExpiredStatic { expires_in } => cert_expired_static(&l, expires_in)?,
        Fault::CertRotationStuck { lifetime } => cert_rotation_stuck(&l, lifetime)?,
        Fault::LogQueryOff => {
            if let Some((since, _)) = set_log_query(&l, false)? {
                wait_for_the_restarted_kubelet(&l, &since)?;
            }
            info("the kubelet's node log query is off (enableSystemLogQuery: false)");
        }
        Fault::JobControllerOff => {
            controller_manager_without(&l, "job")?;
            info("kube-controller-manager runs without its Job controller");
        }
    }
    info("applied; `cargo xtask heal` undoes it");
    // For tests that judge how soon a signal follows the fault (stdout; the rest is on stderr):
    // the moment it took hold, else when it was in place.
    let at = held
        .unwrap_or_else(SystemTime::now)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    println!("FAULT {name} took hold at {:.3}", at.as_secs_f64());
    Ok(())
}

pub fn heal() -> Result<()> {
    let l = Layout::new();
    let mut failed = Vec::new();
    for problem in super::guest_node::heal_faults(&l) {
        eprintln!("xtask: healing failed: {problem}");
        failed.push("a fault on the guest node");
    }
    let mut kubelet_moved_at = None;
    for name in NAMES {
        if !marker(&l, name).exists() {
            continue;
        }
        step(format!("healing {name}"));
        let healed = if *name == "runtime-slow-list" {
            heal_runtime_slow_list(&l).map(|moved| kubelet_moved_at = moved)
        } else {
            heal_one(&l, name)
        };
        match healed {
            Ok(()) => fs::remove_file(marker(&l, name))?,
            Err(e) => {
                eprintln!("xtask: healing {name} failed: {e:#}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not heal {}", failed.join(", "));
    }
    // Every fault is undone now, so a kubelet moved back onto containerd must come back Ready.
    if let Some((since, started)) = kubelet_moved_at {
        wait_for_the_restarted_kubelet(&l, &since)?;
        info(format!(
            "the kubelet talks to containerd directly again ({:.1} s for the switch)",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

fn heal_one(l: &Layout, name: &str) -> Result<()> {
    match name {
        "runtime-frozen" => freeze("containerd", "THAWED"),
        "kubelet-frozen" => freeze("kubelet", "THAWED"),
        "api-partition" => {
            let _ = fs::remove_file(cut_file(l));
            Ok(())
        }
        "kubelet-stopped" => ensure_running(l, "kubelet"),
        "runtime-cpu-starved" => {
            write_cgroup("cpu", "containerd", "cpu.cfs_quota_us", "-1")?;
            write_cgroup("cpu", "containerd", "cpu.cfs_period_us", "100000")
        }
        // The supervisor's next restart of the kubelet then succeeds (or the one alive at the
        // edge of the limit keeps running). Healed once a kubelet runs and has renewed the lease
        // since: between two kills the Node may still say Ready, which is not a heal.
        "kubelet-memory-limited" => {
            write_cgroup("memory", "kubelet", "memory.limit_in_bytes", "-1")?;
            let since = api::next_second();
            let node = node_name();
            super::wait_for(
                "a kubelet running without the limit (lease renewed)",
                Duration::from_secs(120),
                || {
                    Ok(super::component_alive(l, "kubelet")
                        && api::lease_renew_time(l, &node)?
                            .is_some_and(|t| api::at_or_after(&t, &since)))
                },
            )
        }
        "disk-slow" => {
            stop_component(l, "podchurn")?;
            let problems = disk::clear_throttle(l);
            if !problems.is_empty() {
                bail!("{}", problems.join("; "));
            }
            delete_fault_pods(l, &node_name())
        }
        "cert-expired-static" => {
            // Back to the command line `up` chose: rotation on, the regular certificate.
            stop_component(l, "kubelet")?;
            restart_component(l, "kubelet")?;
            for f in [STATIC_CERT, STATIC_KUBECONFIG, STATIC_CONFIG] {
                let _ = fs::remove_file(l.faults().join(f));
            }
            Ok(())
        }
        "log-query-off" => {
            if let Some((since, _)) = set_log_query(l, true)? {
                wait_for_the_restarted_kubelet(l, &since)?;
            }
            Ok(())
        }
        "job-controller-off" => {
            stop_component(l, "kube-controller-manager")?;
            restart_component(l, "kube-controller-manager")
        }
        "cert-rotation-stuck" => {
            stop_component(l, "kubelet")?;
            delete_pending_node_csrs(l, &node_name())?;
            restore_kubelet_cert(l)?;
            stop_component(l, "kube-controller-manager")?;
            restart_component(l, "kube-controller-manager")?;
            restart_component(l, "kubelet")
        }
        _ => unreachable!("unknown fault {name}"),
    }
}

fn ensure_running(l: &Layout, name: &str) -> Result<()> {
    if super::component_alive(l, name) {
        return Ok(());
    }
    restart_component(l, name)
}

/// What `cluster down` must undo itself because it outlives the processes: the kubelet's
/// certificate link (pki is kept across `down`, so the next `up` would start with an expired
/// certificate).
pub fn undo_on_down(l: &Layout) -> Vec<String> {
    if !marker(l, "cert-rotation-stuck").exists() {
        return Vec::new();
    }
    match restore_kubelet_cert(l) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!("restoring the kubelet's client certificate: {e:#}")],
    }
}

// --- runtime-slow-list: the kubelet's runtime endpoint --------------------------------------

const ENDPOINT_KEY: &str = "containerRuntimeEndpoint:";
/// Beyond this delay the fault does not wait for a slow relist: a relist then takes over 20 s
/// (two held calls), and a delay near runtimeRequestTimeout (30 s in the fast profile) makes each
/// held call time out instead of completing.
pub const LONGEST_MEASURED_DELAY: Duration = Duration::from_secs(10);

/// The `containerRuntimeEndpoint` of a KubeletConfiguration the harness wrote.
pub fn runtime_endpoint(config: &str) -> Option<&str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(ENDPOINT_KEY))
        .map(str::trim)
}

/// `config` with its `containerRuntimeEndpoint` line replaced.
fn with_runtime_endpoint(config: &str, endpoint: &str) -> Result<String> {
    with_line(config, ENDPOINT_KEY, endpoint)
}

/// `config` with the line that starts with `key` replaced by `key value`.
fn with_line(config: &str, key: &str, value: &str) -> Result<String> {
    if !config.lines().any(|l| l.starts_with(key)) {
        bail!("the kubelet config has no `{key}` line");
    }
    let mut out = config
        .lines()
        .map(|l| {
            if l.starts_with(key) {
                format!("{key} {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    Ok(out)
}

fn endpoint_of(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// Rewrites the kubelet's configuration files with `edit`: the one `up` wrote and, while
/// cert-expired-static is applied, the fault's copy the kubelet runs with. Returns whether the
/// configuration the kubelet reads changed.
fn edit_kubelet_config(l: &Layout, edit: &dyn Fn(&str) -> Result<String>) -> Result<bool> {
    let mut changed = false;
    for path in [l.kubelet_config(), l.faults().join(STATIC_CONFIG)] {
        let Ok(config) = fs::read_to_string(&path) else {
            continue;
        };
        let new = edit(&config)?;
        if new != config {
            super::write(&path, &new)?;
            changed = true;
        }
    }
    Ok(changed)
}

fn kubelet_frozen() -> bool {
    fs::read_to_string(component_cgroup("freezer", "kubelet").join("freezer.state"))
        .is_ok_and(|s| s.trim() != "THAWED")
}

/// Rewrites the kubelet's configuration with `edit` and restarts it through its supervisor with
/// the command line it runs with, as `systemctl restart kubelet` would. Pods keep running (their
/// containers belong to containerd, which is not restarted) and the new kubelet takes over the
/// node's lease. Returns when the kubelet was restarted: the time as the API server writes it (a
/// whole second that began after the old kubelet exited) and as an instant; `None` when nothing
/// changed or the kubelet is stopped (it reads the new configuration when it starts).
fn reconfigure_kubelet(
    l: &Layout,
    what: &str,
    edit: &dyn Fn(&str) -> Result<String>,
) -> Result<Option<(String, Instant)>> {
    if kubelet_frozen() {
        bail!("the kubelet is frozen (kubelet-frozen): it cannot be restarted with {what}");
    }
    if !edit_kubelet_config(l, edit)? {
        return Ok(None);
    }
    if !super::component_alive(l, "kubelet") {
        info(format!(
            "the kubelet is stopped: it uses {what} when it starts"
        ));
        return Ok(None);
    }
    let started = Instant::now();
    let argv = super::launched_argv(l, "kubelet")?;
    stop_component(l, "kubelet")?;
    // Everything the API server records from the next second on comes from the new kubelet.
    let since = api::next_second();
    launch(l, "kubelet", &argv)?;
    info(format!("kubelet restarted with {what}"));
    Ok(Some((since, started)))
}

/// Moves the kubelet onto `socket` (its `containerRuntimeEndpoint`).
fn move_kubelet(l: &Layout, socket: &Path) -> Result<Option<(String, Instant)>> {
    let endpoint = endpoint_of(socket);
    reconfigure_kubelet(
        l,
        &format!("containerRuntimeEndpoint {endpoint}"),
        &|config| with_runtime_endpoint(config, &endpoint),
    )
}

const LOG_QUERY_KEY: &str = "enableSystemLogQuery:";

/// Turns the kubelet's node log query on or off (`enableSystemLogQuery`; the NodeLogQuery gate
/// stays on: the kubelet refuses the field without it).
fn set_log_query(l: &Layout, on: bool) -> Result<Option<(String, Instant)>> {
    let value = on.to_string();
    reconfigure_kubelet(l, &format!("{LOG_QUERY_KEY} {value}"), &|config| {
        with_line(config, LOG_QUERY_KEY, &value)
    })
}

/// Waits until the kubelet started in whole second `since` (API server time, after the old one
/// had exited) has renewed the node's lease and posted Ready=True itself: a heartbeat in or after
/// `since`, so the old kubelet's True does not count. A restarted kubelet always posts its status
/// once at start (then only on change or every nodeStatusReportFrequency, 5 min), NotReady if its
/// first relist has not happened yet.
fn wait_for_the_restarted_kubelet(l: &Layout, since: &str) -> Result<()> {
    wait_for_a_kubelet_started_since(l, &node_name(), since, &|| super::check_alive(l, "kubelet"))
}

/// [`wait_for_the_restarted_kubelet`] for `node`, with `alive` failing the wait early.
pub fn wait_for_a_kubelet_started_since(
    l: &Layout,
    node: &str,
    since: &str,
    alive: &dyn Fn() -> Result<()>,
) -> Result<()> {
    super::wait_for(
        "the restarted kubelet (lease renewed, node Ready)",
        Duration::from_secs(180),
        || {
            alive()?;
            let renewed =
                api::lease_renew_time(l, node)?.is_some_and(|t| api::at_or_after(&t, since));
            let ready = api::ready_heartbeat(l, node)?
                .is_some_and(|(status, beat)| status == "True" && api::at_or_after(&beat, since));
            Ok(renewed && ready)
        },
    )
}

/// Faults applied besides `name`.
fn other_faults(l: &Layout, name: &str) -> Vec<&'static str> {
    NAMES
        .iter()
        .copied()
        .filter(|n| *n != name && marker(l, n).exists())
        .collect()
}

/// Returns when the delay was set: the calls are held from then on.
fn runtime_slow_list(l: &Layout, delay: Duration) -> Result<SystemTime> {
    let started = Instant::now();
    let proxy = l.criproxy_socket();
    if !super::component_alive(l, "criproxy") {
        // A passthrough until the kubelet is on it: its start-up calls and first relists are
        // not held, so it comes back Ready as fast as it would on containerd.
        criproxy::set_delay(&l.criproxy_control(), Duration::ZERO)?;
        let _ = fs::remove_file(&proxy);
        restart_component(l, "criproxy")
            .context("starting the CRI proxy (a cluster from before this harness version? cluster down, then up)")?;
        super::wait_for("the CRI proxy's socket", Duration::from_secs(10), || {
            super::check_alive(l, "criproxy")?;
            Ok(UnixStream::connect(&proxy).is_ok())
        })?;
    }
    let others = other_faults(l, "runtime-slow-list");
    let mut on_proxy = String::new();
    if let Some((since, _)) = move_kubelet(l, &proxy)? {
        if others.is_empty() {
            wait_for_the_restarted_kubelet(l, &since)?;
        } else {
            info(format!(
                "not waiting for the node to be Ready: {} also applied",
                others.join(", ")
            ));
        }
        on_proxy = format!(
            "the kubelet moved onto the CRI proxy in {:.1} s; ",
            started.elapsed().as_secs_f64()
        );
    }
    criproxy::set_delay(&l.criproxy_control(), delay)?;
    let held = SystemTime::now();
    info(format!(
        "{on_proxy}ListPodSandbox and ListContainers now take {} ms longer",
        delay.as_millis()
    ));
    if !others.is_empty() || !super::component_alive(l, "kubelet") {
        return Ok(held);
    }
    if delay > LONGEST_MEASURED_DELAY {
        info(format!(
            "not waiting for a slow relist: with calls held over {} s relists may time out",
            LONGEST_MEASURED_DELAY.as_secs()
        ));
        return Ok(held);
    }
    let took = wait_for_a_slow_relist(l, &node_name(), delay)?;
    info(format!(
        "a relist took {took:.2} s (two held calls); fault in place {:.1} s after the command started",
        started.elapsed().as_secs_f64()
    ));
    Ok(held)
}

/// Waits for a relist that both held calls slowed (≥ 1.5 × delay; the one in flight when the
/// delay was set may have been held once or not at all). Returns its duration in seconds.
pub fn wait_for_a_slow_relist(l: &Layout, node: &str, delay: Duration) -> Result<f64> {
    let d = delay.as_secs_f64();
    let timeout = Duration::from_secs_f64(6.0 * d + 30.0);
    let since = Instant::now();
    let mut last = api::relist_histogram(l, node)?;
    let mut took = 0.0;
    super::wait_for("a relist slowed by the proxy", timeout, || {
        let now = api::relist_histogram(l, node)?;
        if now.1 < last.1 {
            // The kubelet restarted (counters start again): measure from here.
            last = now;
            return Ok(false);
        }
        if now.1 > last.1 {
            took = (now.0 - last.0) / (now.1 - last.1);
            last = now;
            return Ok(took >= 1.5 * d);
        }
        Ok(false)
    })
    .with_context(|| {
        format!(
            "relists did not slow within {:.0} s (last mean {took:.2} s with {d:.2} s per call)",
            since.elapsed().as_secs_f64()
        )
    })?;
    Ok(took)
}

/// Points the kubelet back at containerd (restarting it) and stops the proxy. Returns when the
/// kubelet was restarted, for `heal` to wait for it once every fault is undone.
fn heal_runtime_slow_list(l: &Layout) -> Result<Option<(String, Instant)>> {
    // Release calls arriving from now on; the kubelet is restarted anyway.
    if l.criproxy_control().exists() {
        criproxy::set_delay(&l.criproxy_control(), Duration::ZERO)?;
    }
    let moved = move_kubelet(l, &l.containerd_socket())?;
    stop_component(l, "criproxy")?;
    let _ = fs::remove_file(l.criproxy_socket());
    Ok(moved)
}

/// The disk-slow workload on `node`: `start` starts its pod churn (component `churn`); returns
/// once the symptom is there — the kubelet's runtime calls that write wait on the throttled disk
/// (its own metrics record calls past the 1.22 s bucket).
pub fn churn_until_writes_are_slow(
    l: &Layout,
    node: &str,
    churn: &str,
    start: &dyn Fn() -> Result<()>,
) -> Result<()> {
    let before = api::runtime_operations_above(l, node, WRITE_OPERATIONS, SLOW_WRITE_LE)?;
    start()?;
    info(format!(
        "a steady stream of short-lived pods on {node} (label {})",
        podchurn::LABEL
    ));
    let since = Instant::now();
    super::wait_for(
        "the runtime's writes slowed by the throttled disk",
        Duration::from_secs(180),
        || {
            super::check_alive(l, churn)?;
            let now = api::runtime_operations_above(l, node, WRITE_OPERATIONS, SLOW_WRITE_LE)?;
            Ok(now - before >= 2.0)
        },
    )?;
    info(format!(
        "runtime write calls over 1.22 s after {:.1} s",
        since.elapsed().as_secs_f64()
    ));
    Ok(())
}

// --- certificates ---------------------------------------------------------------------------

const STATIC_CERT: &str = "kubelet-static-client.pem";
const STATIC_KUBECONFIG: &str = "kubelet-static.kubeconfig";
const STATIC_CONFIG: &str = "kubelet-config-static.yaml";
const CURRENT_CERT: &str = "kubelet-client-current.pem";

/// A kubelet client certificate (CN=system:node:<node>, O=system:nodes) valid from now for
/// `lifetime`, as one PEM file holding cert and key, as the kubelet keeps it.
pub fn short_lived_kubelet_cert(l: &Layout, node: &str, lifetime: Duration) -> Result<String> {
    let ca = pki::Ca::load(&l.pki("ca.crt"), &l.pki("ca.key"))?;
    let mut leaf = pki::Leaf::client(&format!("system:node:{node}"), &["system:nodes"]);
    leaf.validity = time::Duration::try_from(lifetime)?;
    // Valid from now, not backdated: the kubelet schedules rotation at 70-90% of
    // NotAfter - NotBefore (client-go util/certificate/certificate_manager.go, nextRotationDeadline).
    leaf.backdate = time::Duration::ZERO;
    let pair = ca.issue(&leaf)?;
    Ok(format!("{}{}", pair.cert_pem, pair.key_pem))
}

/// Replaces the value of `--flag=` in a command line.
fn with_flag(argv: &[String], flag: &str, value: &str) -> Result<Vec<String>> {
    let prefix = format!("{flag}=");
    if !argv.iter().any(|a| a.starts_with(&prefix)) {
        bail!("{flag} is not on the recorded command line");
    }
    Ok(argv
        .iter()
        .map(|a| {
            if a.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                a.clone()
            }
        })
        .collect())
}

fn cert_expired_static(l: &Layout, expires_in: Duration) -> Result<()> {
    let dir = l.faults();
    let cert = dir.join(STATIC_CERT);
    pki::write_private(
        &cert,
        &short_lived_kubelet_cert(l, &node_name(), expires_in)?,
    )?;
    let kubeconfig = dir.join(STATIC_KUBECONFIG);
    super::write(
        &kubeconfig,
        &super::config::kubeconfig(
            &format!("https://127.0.0.1:{}", super::LB_PORT),
            &l.pki("ca.crt"),
            &cert,
            &cert,
            &format!("system:node:{}", node_name()),
        ),
    )?;
    let normal = fs::read_to_string(l.dir.join("kubelet-config.yaml"))?;
    let on = "rotateCertificates: true";
    if !normal.contains(on) {
        bail!("the kubelet config does not say `{on}`");
    }
    let config = dir.join(STATIC_CONFIG);
    super::write(&config, &normal.replace(on, "rotateCertificates: false"))?;
    let argv = component_argv(l, "kubelet")?;
    let argv = with_flag(&argv, "--config", &config.display().to_string())?;
    let argv = with_flag(&argv, "--kubeconfig", &kubeconfig.display().to_string())?;
    stop_component(l, "kubelet")?;
    launch(l, "kubelet", &argv)?;
    info(format!(
        "kubelet restarted with rotation off and a client certificate expiring in {} s",
        expires_in.as_secs()
    ));
    Ok(())
}

/// Restarts kube-controller-manager with one controller disabled.
pub fn controller_manager_without(l: &Layout, controller: &str) -> Result<()> {
    let argv = component_argv(l, "kube-controller-manager")?;
    let controllers = argv
        .iter()
        .find_map(|a| a.strip_prefix("--controllers="))
        .context("--controllers is not on the controller manager's command line")?;
    let argv = with_flag(
        &argv,
        "--controllers",
        &format!("{controllers},-{controller}"),
    )?;
    stop_component(l, "kube-controller-manager")?;
    launch(l, "kube-controller-manager", &argv)
}

fn cert_rotation_stuck(l: &Layout, lifetime: Duration) -> Result<()> {
    // Withhold approval: the controller manager without its csrapproving controller (signing
    // stays on, so an approved CSR would still be issued).
    controller_manager_without(l, "csrapproving")?;

    // The short-lived certificate where rotation keeps it: a dated file and the current link.
    let cert_dir = l.kubelet_cert_dir();
    let current = cert_dir.join(CURRENT_CERT);
    let previous = fs::read_link(&current).with_context(|| format!("reading link {current:?}"))?;
    // The marker remembers the certificate to go back to.
    fs::write(
        marker(l, "cert-rotation-stuck"),
        previous.display().to_string(),
    )?;
    let dated = format!(
        "kubelet-client-fault-{}.pem",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    pki::write_private(
        &cert_dir.join(&dated),
        &short_lived_kubelet_cert(l, &node_name(), lifetime)?,
    )?;
    relink(&current, Path::new(&dated))?;
    stop_component(l, "kubelet")?;
    restart_component(l, "kubelet")?;
    info(format!(
        "kubelet restarted with a client certificate valid for {} s; CSR approval withheld",
        lifetime.as_secs()
    ));
    Ok(())
}

fn relink(link: &Path, target: &Path) -> Result<()> {
    let tmp = link.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link).with_context(|| format!("pointing {link:?} at {target:?}"))
}

/// Points the kubelet's current client certificate back at the one it had before
/// `cert-rotation-stuck` and removes the fault's certificates.
fn restore_kubelet_cert(l: &Layout) -> Result<()> {
    let cert_dir = l.kubelet_cert_dir();
    let previous = fs::read_to_string(marker(l, "cert-rotation-stuck")).unwrap_or_default();
    let previous = previous.trim();
    if previous.is_empty() || !cert_dir.join(previous).exists() {
        bail!("the certificate to go back to ({previous:?}) is gone from {cert_dir:?}");
    }
    relink(&cert_dir.join(CURRENT_CERT), Path::new(previous))?;
    for e in fs::read_dir(&cert_dir)?.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("kubelet-client-fault-")
        {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Deletes the node's CSRs that were never approved or denied (the fault's renewal attempts).
pub fn delete_pending_node_csrs(l: &Layout, node: &str) -> Result<()> {
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let (code, body) = api::request(l, "GET", path, None)?;
    if code != 200 {
        bail!("GET {path}: HTTP {code}");
    }
    let list: Value = serde_json::from_str(&body)?;
    let user = format!("system:node:{node}");
    for csr in list["items"].as_array().into_iter().flatten() {
        let pending = csr["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty());
        if csr["spec"]["username"] == user.as_str() && pending {
            let name = csr["metadata"]["name"].as_str().unwrap_or_default();
            info(format!("deleting pending CSR {name}"));
            api::request(l, "DELETE", &format!("{path}/{name}"), None)?;
        }
    }
    Ok(())
}

// --- pods -------------------------------------------------------------------------------------

/// Deletes the disk-slow fault's churn pods on `node` (one collection DELETE by their label and
/// node).
pub fn delete_fault_pods(l: &Layout, node: &str) -> Result<()> {
    let path = format!(
        "/api/v1/namespaces/default/pods?{}&gracePeriodSeconds=0",
        podchurn::selector(node)
    );
    let (code, body) = api::request(l, "DELETE", &path, None)?;
    match code {
        200 | 202 | 404 => Ok(()),
        _ => bail!("deleting the churn pods: HTTP {code}: {body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(
            parse_duration("30").is_err(),
            "a bare number: seconds or minutes?"
        );
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn the_runtime_endpoint_line_is_replaced() {
        let l = Layout {
            dir: PathBuf::from("/c"),
        };
        let config = super::super::config::kubelet(&l, &super::super::Settings::fast());
        assert_eq!(
            runtime_endpoint(&config),
            Some("unix:///c/containerd/containerd.sock"),
            "up points the kubelet at containerd"
        );
        let moved = with_runtime_endpoint(&config, "unix:///c/containerd/criproxy.sock").unwrap();
        assert_eq!(
            runtime_endpoint(&moved),
            Some("unix:///c/containerd/criproxy.sock")
        );
        assert_eq!(moved.lines().count(), config.lines().count());
        assert!(with_runtime_endpoint("kind: KubeletConfiguration\n", "unix:///x").is_err());
    }

    #[test]
    fn flags_are_replaced_not_added() {
        let argv = vec!["kubelet".to_string(), "--config=/a".to_string()];
        assert_eq!(
            with_flag(&argv, "--config", "/b").unwrap(),
            vec!["kubelet".to_string(), "--config=/b".to_string()]
        );
        assert!(with_flag(&argv, "--kubeconfig", "/b").is_err());
    }
}
