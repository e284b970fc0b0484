//! One node probe: discovers the kubelet's paths, then observes for the window and emits each
//! evidence section as soon as it is ready. Shared by `tracer-user probe` (standalone) and the
//! gRPC service.
//!
//! Bounded by construction: the CRI probe ends within window + CRI timeout, and every file-system
//! step runs on a blocking thread under a timeout too (reading /proc of a task stuck in a page
//! fault, or a cert on a hung disk, can block in the kernel) — a step that does not finish is
//! reported as failed and left behind; the agent exits on its own deadline regardless.
use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use nodehealth_proto::node::{
    ApiServerProbe, Discovery, KernelEventKind, KubeletHealthz, Liveness, NodeEvidence,
    RuntimeSocket, SectionFailure, section,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{
    apiserver, certs, clock, cri,
    discovery::{self, Overrides, socket_path},
    host::{HostRoot, now_unix_ms},
    http, kmsg, pressure, processes,
    trace_session::{self, TraceSession},
};

/// What to probe and how long to observe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub host_root: PathBuf,
    pub window: Duration,
    /// Bound on each CRI call and each network request.
    pub timeout: Duration,
    /// Pause between repeated CRI calls.
    pub cri_interval: Duration,
    pub overrides: Overrides,
    /// Attach the eBPF run-queue tracer to the kubelet and the runtime during the window.
    pub trace: bool,
    /// How far back the kubelet's and runtime's logs are read (from the start of the run).
    pub log_since: Duration,
}

/// How far back logs are read unless asked otherwise.
pub const DEFAULT_LOG_SINCE: Duration = Duration::from_secs(15 * 60);

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            host_root: "/".into(),
            window: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            cri_interval: Duration::from_secs(1),
            overrides: Overrides::default(),
            trace: false,
            log_since: DEFAULT_LOG_SINCE,
        }
    }
}

/// What the probe reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    Progress {
        step: String,
        elapsed_ms: u64,
        total_ms: u64,
        detail: String,
    },
    Evidence {
        section: String,
        json: Vec<u8>,
        collected_at_unix_ms: i64,
    },
    Failure(SectionFailure),
}

struct Sink {
    tx: Option<mpsc::Sender<Event>>,
    t0: Instant,
    total_ms: u64,
}

impl Sink {
    /// Never waits on a slow consumer for long: progress is best effort, evidence waits up to 5 s.
    async fn send(&self, e: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send_timeout(e, Duration::from_secs(5)).await;
        }
    }

    async fn progress(&self, step: &str, detail: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Event::Progress {
                step: step.to_string(),
                elapsed_ms: self.t0.elapsed().as_millis() as u64,
                total_ms: self.total_ms,
                detail: detail.into(),
            });
        }
    }

    async fn section<T: Serialize>(&self, name: &str, value: &T) {
        if let Ok(json) = serde_json::to_vec(value) {
            self.send(Event::Evidence {
                section: name.to_string(),
                json,
                collected_at_unix_ms: now_unix_ms(),
            })
            .await;
        }
    }

    async fn failure(&self, ev: &mut NodeEvidence, section: &str, message: String) {
        let f = SectionFailure {
            section: section.to_string(),
            message,
        };
        ev.errors.push(f.clone());
        self.send(Event::Failure(f)).await;
    }

    fn closed(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| t.is_closed())
    }
}

/// Runs `f` on a blocking thread, giving up after `limit`.
async fn blocking<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("collector failed: {e}")),
        Err(_) => Err(format!(
            "did not finish within {limit:?} (blocked in the kernel?)"
        )),
    }
}

/// The kubelet's local healthz address (`healthzBindAddress:healthzPort`), None when disabled
/// (port 0) or unknown.
pub fn healthz_addr(d: &Discovery) -> Option<String> {
    match (&d.healthz_bind_address, &d.healthz_port) {
        (_, Some(p)) if p.value == 0 => None,
        (b, Some(p)) => {
            let bind = b.as_ref().map(|b| b.value.as_str()).unwrap_or("127.0.0.1");
            // A wildcard bind answers on loopback.
            let ip = match bind {
                "0.0.0.0" | "" => "127.0.0.1",
                "::" => "[::1]",
                other => other,
            };
            Some(format!("{ip}:{}", p.value))
        }
        _ => None,
    }
}

/// Runs the probe. Events go to `tx` (if any) as they happen; the full evidence is returned.
pub async fn run(cfg: ProbeConfig, tx: Option<mpsc::Sender<Event>>) -> NodeEvidence {
    let t0 = Instant::now();
    let host = HostRoot::new(&cfg.host_root);
    let sink = Sink {
        tx,
        t0,
        total_ms: cfg.window.as_millis() as u64,
    };
    let fs_limit = cfg.timeout.max(Duration::from_secs(2));
    let mut ev = NodeEvidence {
        schema: nodehealth_proto::SCHEMA.to_string(),
        host_root: cfg.host_root.display().to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_unix_ms: now_unix_ms(),
        window_ms: cfg.window.as_millis() as u64,
        ..Default::default()
    };

    // 1. Where things are.
    sink.progress("discovery", "reading the kubelet's command line and config")
        .await;
    let d: Discovery = {
        let (h, o) = (host.clone(), cfg.overrides.clone());
        match blocking(fs_limit, move || discovery::discover(&h, &o)).await {
            Ok(d) => d,
            Err(e) => {
                sink.failure(&mut ev, section::DISCOVERY, e).await;
                Discovery::default()
            }
        }
    };
    sink.section(section::DISCOVERY, &d).await;

    let endpoint = d.runtime_endpoint.as_ref().map(|e| e.value.clone());
    let socket: Option<RuntimeSocket> = match &endpoint {
        Some(e) => {
            let (h, e) = (host.clone(), e.clone());
            match blocking(fs_limit, move || crate::socket::inspect(&h, &e)).await {
                Ok(s) => {
                    sink.section(section::RUNTIME_SOCKET, &s).await;
                    Some(s)
                }
                Err(e) => {
                    sink.failure(&mut ev, section::RUNTIME_SOCKET, e).await;
                    None
                }
            }
        }
        None => {
            let msg = "no runtime endpoint: no kubelet names one and no well-known socket exists";
            sink.failure(&mut ev, section::RUNTIME_SOCKET, msg.into())
                .await;
            None
        }
    };

    // 2. Start-of-window samples.
    let kubelet_pid = d.kubelet_pid;
    let start = {
        let h = host.clone();
        blocking(fs_limit, move || processes::Sample::take(&h)).await
    };
    let runtime = start
        .as_ref()
        .ok()
        .and_then(|s| processes::runtime_pid(socket.as_ref(), s))
        .map(|(pid, _)| pid);
    let mut targets: Vec<(&'static str, u32)> = Vec::new();
    targets.extend(kubelet_pid.map(|p| ("kubelet", p)));
    targets.extend(runtime.map(|p| ("runtime", p)));
    let psi_start = {
        let (h, t) = (host.clone(), targets.clone());
        blocking(fs_limit, move || pressure::Sample::take(&h, &t)).await
    };

    // The eBPF tracer, when asked for, over the same window.
    let tracer = if cfg.trace {
        let t = targets.clone();
        let (h, e) = (host.clone(), endpoint.clone());
        Some(
            blocking(fs_limit, move || {
                let cri = cri_target(&h, kubelet_pid, e.as_deref());
                TraceSession::start_with_cri(t, cri, h.proc().to_path_buf())
                    .map_err(|e| e.to_string())
            })
            .await
            .and_then(|r| r),
        )
    } else {
        None
    };
    let trace_started = Instant::now();

    // 3. The window: CRI calls repeated, everything else once, side by side.
    sink.progress("observe", "CRI calls, certificates, API server, kernel log")
        .await;
    let cri_fut = async {
        match &endpoint {
            Some(e) => {
                let c = cri::CriConfig {
                    endpoint: e.clone(),
                    socket: host.path(socket_path(e)),
                    timeout: cfg.timeout,
                    interval: cfg.cri_interval,
                    window: cfg.window,
                };
                Some(cri::probe(c).await)
            }
            None => None,
        }
    };
    let healthz_addr = healthz_addr(&d);
    let healthz_first = async {
        // Probed even when no kubelet process was found: "connection refused" confirms it.
        match &healthz_addr {
            Some(a) => Some(http::get_plain(a, "/healthz", cfg.timeout).await),
            None => None,
        }
    };
    let kubeconfig = d.kubeconfig.as_ref().map(|k| k.value.clone());
    let api_fut = async {
        let Some(path) = kubeconfig.clone() else {
            return (
                ApiServerProbe {
                    skipped: Some("the kubelet has no --kubeconfig (or was not found)".into()),
                    ..Default::default()
                },
                None,
            );
        };
        let h = host.clone();
        let p2 = path.clone();
        match blocking(fs_limit, move || apiserver::read_kubeconfig(&h, &p2)).await {
            Ok(Ok(facts)) => {
                let mut p = apiserver::probe(&facts, cfg.timeout).await;
                p.kubeconfig = Some(path);
                (p, facts.client_certificate)
            }
            Ok(Err(e)) | Err(e) => (
                ApiServerProbe {
                    kubeconfig: Some(path),
                    skipped: Some(e),
                    ..Default::default()
                },
                None,
            ),
        }
    };
    let heartbeat = async {
        // Progress every second so the plugin sees the agent alive while the runtime is not.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sink.progress("observe", "window running").await;
        }
    };
    let (cri_result, healthz1, (api, kc_client_cert)) = tokio::select! {
        r = async { tokio::join!(cri_fut, healthz_first, api_fut) } => r,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    };
    if sink.closed() {
        ev.finished_at_unix_ms = now_unix_ms();
        return ev;
    }

    sink.section(section::API_SERVER, &api).await;
    let mut clock = clock::collect();
    clock.api_server_skew_ms = api.clock_skew_ms;
    sink.section(section::CLOCK, &clock).await;
    ev.api_server = Some(api);
    ev.clock = Some(clock);

    let certs = {
        let (h, d2) = (host.clone(), d.clone());
        blocking(fs_limit, move || {
            certs::collect(&h, &d2, kc_client_cert.as_deref())
        })
        .await
    };
    match certs {
        Ok(c) => {
            sink.section(section::CERTIFICATES, &c).await;
            ev.certificates = Some(c);
        }
        Err(e) => sink.failure(&mut ev, section::CERTIFICATES, e).await,
    }

    // 4. End-of-window samples.
    sink.progress("finish", "end-of-window samples").await;
    let healthz2 = match &healthz_addr {
        Some(a) => Some(http::get_plain(a, "/healthz", cfg.timeout).await),
        None => None,
    };
    let healthz = KubeletHealthz {
        url: healthz_addr.as_ref().map(|a| format!("http://{a}/healthz")),
        skipped: healthz_addr
            .is_none()
            .then(|| "healthz disabled (healthzPort 0)".to_string()),
        attempts: healthz1.into_iter().chain(healthz2).collect(),
    };
    sink.section(section::KUBELET_HEALTHZ, &healthz).await;
    ev.kubelet_healthz = Some(healthz);

    let (cri_probe, cri_ids) = match cri_result {
        Some(r) => (r.probe, r.ids),
        None => (cri::not_probed(""), None),
    };
    sink.section(section::CRI, &cri_probe).await;
    ev.cri = Some(cri_probe);

    let window = t0.elapsed();
    let end = {
        let h = host.clone();
        blocking(fs_limit, move || processes::Sample::take(&h)).await
    };

    // Kernel log, with the kubelet's and runtime's names as subjects.
    let mut subjects = BTreeMap::new();
    if let Ok(s) = &start {
        for (owner, pid) in &targets {
            if let Some(st) = s.stats.get(pid) {
                subjects.insert(st.comm.clone(), owner.to_string());
            }
        }
    }
    subjects.entry("kubelet".into()).or_insert("kubelet".into());
    let kmsg_log = {
        let h = host.clone();
        let subjects = subjects.clone();
        blocking(fs_limit, move || {
            let boot =
                now_unix_ms() - (crate::procfs::uptime_seconds(&h).unwrap_or(0.0) * 1000.0) as i64;
            let in_root = h.lexical("/dev/kmsg");
            let path = if in_root.exists() {
                in_root
            } else {
                "/dev/kmsg".into()
            };
            kmsg::collect(&path, boot, &subjects)
        })
        .await
    };

    match (&start, end) {
        (Ok(start), Ok(end)) => {
            let cri_ids: Option<&HashSet<String>> = cri_ids.as_ref();
            let mut p = processes::collect(
                &host,
                kubelet_pid,
                socket.as_ref(),
                start,
                &end,
                window,
                cri_ids,
            );
            if let Ok(log) = &kmsg_log {
                let ooms = |comm: &str| {
                    log.events
                        .iter()
                        .filter(|e| {
                            e.kind == KernelEventKind::OomKill && e.process.as_deref() == Some(comm)
                        })
                        .count() as u32
                };
                for proc_state in [p.kubelet.as_mut(), p.runtime.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    proc_state.oom_kills_in_kernel_log = ooms(&proc_state.comm.clone());
                }
            }
            if let Some(k) = &p.kubelet
                && k.liveness == Liveness::Gone
            {
                // Restart evidence: did another kubelet take its place during the window?
                let (h, old) = (host.clone(), k.pid);
                let now = blocking(fs_limit, move || discovery::kubelet_candidates(&h))
                    .await
                    .unwrap_or_default();
                let new: Vec<u32> = now.into_iter().filter(|p| *p != old).collect();
                p.notes.push(if new.is_empty() {
                    format!("kubelet pid {old} exited during the window and no kubelet runs now")
                } else {
                    format!("kubelet pid {old} exited during the window; now running as {new:?} (restarted)")
                });
            }
            sink.section(section::PROCESSES, &p).await;
            ev.processes = Some(p);
        }
        (Err(e), _) => sink.failure(&mut ev, section::PROCESSES, e.clone()).await,
        (_, Err(e)) => sink.failure(&mut ev, section::PROCESSES, e).await,
    }
    match kmsg_log {
        Ok(log) => {
            sink.section(section::KERNEL_LOG, &log).await;
            ev.kernel_log = Some(log);
        }
        Err(e) => sink.failure(&mut ev, section::KERNEL_LOG, e).await,
    }
    // The kubelet's and runtime's logs (journalctl may take a few seconds on a big journal).
    let logs = {
        let h = host.clone();
        let since = ev.started_at_unix_ms - cfg.log_since.as_millis() as i64;
        blocking(cfg.timeout.max(Duration::from_secs(10)), move || {
            crate::logs::collect(&h, kubelet_pid, runtime, since, now_unix_ms())
        })
        .await
    };
    match logs {
        Ok(l) => {
            sink.section(section::LOGS, &l).await;
            ev.logs = Some(l);
        }
        Err(e) => sink.failure(&mut ev, section::LOGS, e).await,
    }
    let psi_end = {
        let (h, t) = (host.clone(), targets.clone());
        blocking(fs_limit, move || pressure::Sample::take(&h, &t)).await
    };
    match (psi_start, psi_end) {
        (Ok(a), Ok(b)) => {
            let p = pressure::evidence(&a, b);
            sink.section(section::PRESSURE, &p).await;
            ev.pressure = Some(p);
        }
        (Err(e), _) | (_, Err(e)) => sink.failure(&mut ev, section::PRESSURE, e).await,
    }

    if let Some(tracer) = tracer {
        let window = trace_started.elapsed();
        let (rq, trace) = match tracer {
            Ok(session) => blocking(fs_limit, move || session.finish())
                .await
                .unwrap_or_else(|e| trace_session::unavailable(e, window)),
            Err(e) => trace_session::unavailable(e, window),
        };
        sink.section(section::RUN_QUEUE, &rq).await;
        ev.run_queue = Some(rq);
        sink.section(section::TRACE, &trace).await;
        ev.trace = Some(trace);
    }

    ev.discovery = Some(d);
    ev.runtime_socket = socket;
    ev.finished_at_unix_ms = now_unix_ms();
    ev
}

/// The kubelet's connections to the runtime, for tracing its CRI calls — or why there are none.
fn cri_target(
    host: &HostRoot,
    kubelet: Option<u32>,
    endpoint: Option<&str>,
) -> Result<crate::trace::CriTarget, String> {
    let kubelet = kubelet.ok_or("no kubelet process found")?;
    let endpoint = endpoint.ok_or("no runtime endpoint")?;
    let path = socket_path(endpoint);
    let sockets = crate::cri_socket::unix_sockets()
        .map_err(|e| format!("listing unix sockets (sock_diag) failed: {e}"))?;
    let fds = crate::cri_socket::connected_fds(host, kubelet, path, &sockets);
    if fds.is_empty() {
        return Err(format!(
            "the kubelet (pid {kubelet}) has no connection to {path} (not connected yet, or \
             another network namespace)"
        ));
    }
    Ok(crate::trace::CriTarget::new(kubelet, fds))
}
