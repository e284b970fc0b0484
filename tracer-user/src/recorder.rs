//! `tracer-user record`: the agent as a flight recorder on its node, reporting through the API
//! server directly (not through the kubelet), so that the node-side evidence and the minutes
//! before a failure are there when no probe pod can start.
//!
//! Every second it samples what costs nothing to read: the kubelet's and the runtime's process
//! state and cgroup freezer, the kubelet's local healthz (bounded), node PSI, the kubelet
//! cgroup's OOM kills — and every few seconds one CRI `Version` call. The last 15 minutes stay in
//! a ring. A short probe of the node (the same as `tracer-user probe`, a few seconds, logs of the
//! last minutes) runs at each heartbeat and as soon as the sampled state changes and holds; then
//! the report is written: on change and at the heartbeat, never twice within the minimum write
//! interval. A failed write is retried at that interval and said in the next report that gets
//! through, with the outage's span (the timeline covers it: the ring is the backlog).
//!
//! Nothing here depends on the kubelet or the runtime answering: every call to either is
//! bounded, and the loop never waits on one.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nodehealth_proto::{
    node::NodeEvidence,
    recorder::{self, Outage, Publisher, RecorderReport, Sample, State},
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    apiserver,
    discovery::{self, Overrides, socket_path},
    host::{HostRoot, now_unix_ms},
    http,
    kubeapi::{self, ApiTarget},
    pressure, probe, processes, procfs,
};

/// One sample a second for 15 minutes.
pub const RING_SAMPLES: usize = 15 * 60;
/// A changed state must hold this many samples before it triggers a probe and a write (one
/// failed healthz is not a story).
const HOLD_SAMPLES: u32 = 2;
/// The healthz GET's bound (inside the one-second tick).
const HEALTHZ_TIMEOUT: Duration = Duration::from_millis(800);
/// One CRI `Version` call every this often, bounded by [`CRI_TIMEOUT`]; above [`CRI_SLOW`] it is
/// "slow" (a healthy runtime answers in milliseconds).
const CRI_EVERY: Duration = Duration::from_secs(5);
const CRI_TIMEOUT: Duration = Duration::from_secs(3);
const CRI_SLOW: Duration = Duration::from_secs(1);
/// The kubelet's `/metrics` (its PLEG and runtime-call histograms) every this often, bounded by
/// [`PLEG_TIMEOUT`]; the last [`PLEG_TICKS`] ticks (15 minutes) are kept.
const PLEG_EVERY: Duration = Duration::from_secs(10);
const PLEG_TIMEOUT: Duration = Duration::from_secs(5);
const PLEG_TICKS: usize = 90;
/// Rescan /proc for a missing kubelet or runtime at most this often.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// How the recorder runs.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub host_root: PathBuf,
    /// This node's name (the pod's spec.nodeName through the downward API).
    pub node: String,
    /// A probe and a write at least this often.
    pub heartbeat: Duration,
    /// Never two writes closer than this (the API server's budget: 5,000 nodes).
    pub min_write_interval: Duration,
    /// The short probe's window.
    pub probe_window: Duration,
    /// How far back the probe reads the kubelet's and runtime's logs.
    pub log_since: Duration,
    /// The API server, when not the kubelet's.
    pub server: Option<String>,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    /// The kubelet's `https://address:port` for its `/metrics` (the PLEG history); None: not
    /// scraped.
    pub kubelet: Option<String>,
    /// Accept the kubelet's serving certificate unverified (a self-signed one, as kubeadm's
    /// kubelets have when serverTLSBootstrap is off). Verified against the cluster CA otherwise.
    pub kubelet_insecure_tls: bool,
    /// Print each report as one JSON line instead of writing it (a dry run, for a person).
    pub print: bool,
    /// Stop after this many writes (0: never).
    pub max_writes: u64,
}

/// The CRI check's latest outcome, written by its own task.
#[derive(Debug, Clone)]
struct CriCheck {
    state: &'static str,
    in_flight: bool,
    last_started: Option<Instant>,
}

/// What the sampler keeps between seconds.
struct Sampler {
    host: HostRoot,
    healthz: Option<String>,
    socket: Option<PathBuf>,
    endpoint: Option<String>,
    kubelet_pid: Option<u32>,
    runtime_pid: Option<u32>,
    last_rescan: Option<Instant>,
    /// The last kubelet pid seen, for its cgroup's OOM counter while it is absent.
    last_kubelet_pid: Option<u32>,
    cri: Arc<Mutex<CriCheck>>,
}

/// A process's state in the recorder's words.
fn process_state(host: &HostRoot, pid: Option<u32>) -> &'static str {
    let Some(pid) = pid else { return "absent" };
    let Some(stat) = procfs::read_stat(host, pid) else {
        return "absent";
    };
    if procfs::cgroup_frozen(host, pid) == Some(true) {
        return "frozen";
    }
    match stat.state {
        'Z' | 'X' | 'x' => "absent",
        'T' | 't' => "stopped",
        'D' => "disk-wait",
        _ => "running",
    }
}

fn healthz_words(a: &nodehealth_proto::node::HttpAttempt) -> &'static str {
    match (a.status, &a.error) {
        (Some(200), _) => "ok",
        (Some(_), _) => "failing",
        _ if a.timed_out => "no-answer",
        (None, Some(e)) if e.to_ascii_lowercase().contains("refused") => "refused",
        _ => "error",
    }
}

impl Sampler {
    fn new(host: HostRoot) -> Sampler {
        let d = discovery::discover(&host, &Overrides::default());
        let endpoint = d.runtime_endpoint.as_ref().map(|e| e.value.clone());
        Sampler {
            healthz: probe::healthz_addr(&d),
            socket: endpoint.as_ref().map(|e| host.path(socket_path(e))),
            endpoint,
            kubelet_pid: d.kubelet_pid,
            runtime_pid: None,
            last_rescan: None,
            last_kubelet_pid: d.kubelet_pid,
            cri: Arc::new(Mutex::new(CriCheck {
                state: "unknown",
                in_flight: false,
                last_started: None,
            })),
            host,
        }
    }

    /// Finds the kubelet and the runtime again when either is gone (at most every 2 s).
    fn rescan(&mut self) {
        let alive = |pid: Option<u32>| {
            pid.and_then(|p| procfs::read_stat(&self.host, p))
                .is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x'))
        };
        if alive(self.kubelet_pid) && alive(self.runtime_pid) {
            return;
        }
        if self.last_rescan.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
            return;
        }
        self.last_rescan = Some(Instant::now());
        if !alive(self.kubelet_pid) {
            self.kubelet_pid = discovery::kubelet_candidates(&self.host).first().copied();
            if self.kubelet_pid.is_some() {
                self.last_kubelet_pid = self.kubelet_pid;
            }
        }
        if !alive(self.runtime_pid) {
            let socket = self
                .endpoint
                .as_deref()
                .map(|e| crate::socket::inspect(&self.host, e));
            let all = processes::Sample::take(&self.host);
            self.runtime_pid = processes::runtime_pid(socket.as_ref(), &all).map(|(p, _)| p);
        }
    }

    /// Starts a CRI `Version` call when due and none is in flight; never waits for it.
    fn start_cri_check(&self) {
        let Some(socket) = self.socket.clone() else {
            return;
        };
        {
            let mut c = self.cri.lock().expect("cri lock");
            if c.in_flight || c.last_started.is_some_and(|t| t.elapsed() < CRI_EVERY) {
                return;
            }
            c.in_flight = true;
            c.last_started = Some(Instant::now());
        }
        let cri = self.cri.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let call = async {
                let channel = crate::cri::connect(socket, CRI_TIMEOUT).await?;
                k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel)
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await
                    .map_err(|e| e.to_string())
            };
            let state = match tokio::time::timeout(CRI_TIMEOUT, call).await {
                Err(_) => "hung",
                Ok(Err(_)) => "error",
                Ok(Ok(_)) if started.elapsed() > CRI_SLOW => "slow",
                Ok(Ok(_)) => "ok",
            };
            let mut c = cri.lock().expect("cri lock");
            c.state = state;
            c.in_flight = false;
        });
    }

    async fn sample(&mut self) -> Sample {
        self.rescan();
        self.start_cri_check();
        let host = &self.host;
        let kubelet = process_state(host, self.kubelet_pid);
        let runtime = process_state(host, self.runtime_pid);
        let ooms = self
            .kubelet_pid
            .or(self.last_kubelet_pid)
            .and_then(|p| procfs::cgroup_oom_kills(host, p));
        let psi = |r: &str| {
            std::fs::read_to_string(host.proc().join("pressure").join(r))
                .ok()
                .and_then(|t| pressure::parse_psi(&t).some.map(|l| l.avg10))
        };
        let (psi_cpu, psi_io, psi_memory) = (psi("cpu"), psi("io"), psi("memory"));
        let healthz = match &self.healthz {
            Some(a) => healthz_words(&http::get_plain(a, "/healthz", HEALTHZ_TIMEOUT).await),
            None => "disabled",
        };
        let cri = {
            let c = self.cri.lock().expect("cri lock");
            // A call in flight past its bound is hung now, not when it gives up.
            if c.in_flight && c.last_started.is_some_and(|t| t.elapsed() > CRI_TIMEOUT) {
                "hung"
            } else {
                c.state
            }
        };
        Sample {
            at_unix_ms: now_unix_ms(),
            kubelet: kubelet.into(),
            kubelet_pid: self.kubelet_pid.filter(|_| kubelet != "absent"),
            healthz: healthz.into(),
            runtime: runtime.into(),
            runtime_pid: self.runtime_pid.filter(|_| runtime != "absent"),
            cri: if self.socket.is_some() {
                cri
            } else {
                "unknown"
            }
            .into(),
            psi_cpu,
            psi_io,
            psi_memory,
            kubelet_oom_kills: ooms,
        }
    }
}

/// The PLEG ticks the scraper task made, and its latest failure.
#[derive(Debug, Default)]
struct PlegRing {
    ticks: VecDeque<nodehealth_proto::pleg::Tick>,
    error: Option<String>,
    /// A tick worth a write came: the first, a changed state, a troubled one.
    changed: bool,
}

/// Only the lines of the families a PLEG tick reads (the kubelet's `/metrics` is mostly other
/// families): the parse then costs what those lines cost.
fn pleg_lines(text: &str) -> String {
    use nodehealth_proto::pleg::FAMILIES;
    let ours = |name: &str| FAMILIES.iter().any(|f| name.starts_with(f));
    text.lines()
        .filter(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => ours(rest),
            None => !l.starts_with('#') && ours(l),
        })
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// Scrapes the kubelet's `/metrics` every [`PLEG_EVERY`] and keeps one tick per pair of scrapes;
/// runs apart from the sampling loop (a frozen kubelet holds a scrape for its whole bound).
fn spawn_pleg_scraper(target: ApiTarget, ring: Arc<Mutex<PlegRing>>) {
    use nodehealth_proto::{metrics, pleg};
    tokio::spawn(async move {
        let mut prev: Option<metrics::MetricsSnapshot> = None;
        let mut every = tokio::time::interval(PLEG_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let got = kubeapi::get(&target, "/metrics", PLEG_TIMEOUT).await;
            let mut r = ring.lock().expect("pleg lock");
            let body = match got {
                Ok(b) => b,
                Err(e) => {
                    r.error = Some(format!("kubelet {}/metrics: {e}", target.server));
                    continue;
                }
            };
            r.error = None;
            let text = pleg_lines(&String::from_utf8_lossy(&body));
            let cur = metrics::MetricsSnapshot::from_scrape(
                &metrics::parse(&text),
                body.len(),
                jiff::Timestamp::now(),
            );
            if let Some(p) = &prev {
                let t = pleg::tick(p, &cur);
                // Worth a write (at the minimum interval, like any change): the first tick, a
                // change of state, and every troubled tick (their numbers are the story).
                if r.ticks.back().is_none_or(|b| b.state != t.state) || t.state != "ok" {
                    r.changed = true;
                }
                if r.ticks.len() == PLEG_TICKS {
                    r.ticks.pop_front();
                }
                r.ticks.push_back(t);
            }
            prev = Some(cur);
        }
    });
}

/// The DER certificates of a PEM CA file (the service account's `ca.crt`).
fn read_ca(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(crate::certs::certificate_blocks(&pem)
        .0
        .into_iter()
        .flatten()
        .collect())
}

/// Where the recorder writes: `--server` (with the service account's CA), else the kubelet's
/// kubeconfig (its server and CA), else in-cluster.
fn api_target(cfg: &RecordConfig, host: &HostRoot) -> Result<ApiTarget, String> {
    let sa_ca = || read_ca(&cfg.ca_file);
    if let Some(server) = &cfg.server {
        return ApiTarget::from_kubeconfig(server, None, sa_ca()?, cfg.token_file.clone());
    }
    let d = discovery::discover(host, &Overrides::default());
    let from_kubelet = d
        .kubeconfig
        .as_ref()
        .and_then(|k| apiserver::read_kubeconfig(host, &k.value).ok())
        .and_then(|f| {
            let server = f.server.clone()?;
            // The kubelet's CA verifies the server; the service account's CA too where the
            // kubeconfig names none.
            let ca = if f.ca.is_empty() {
                sa_ca().ok()?
            } else {
                f.ca.clone()
            };
            ApiTarget::from_kubeconfig(
                &server,
                f.tls_server_name.as_deref(),
                ca,
                cfg.token_file.clone(),
            )
            .ok()
        });
    match from_kubelet {
        Some(t) => Ok(t),
        None => ApiTarget::in_cluster(cfg.token_file.clone(), &cfg.ca_file),
    }
}

/// The object written: the report in `status` of the node's NodeRecorderReport.
pub fn object(report: &RecorderReport) -> serde_json::Value {
    json!({
        "apiVersion": format!("{}/{}", recorder::GROUP, recorder::VERSION),
        "kind": recorder::KIND,
        "metadata": { "name": report.node },
        "spec": { "nodeName": report.node },
        "status": report,
    })
}

/// When to write, given what happened. Pure, so the rate rules are unit-tested.
#[derive(Debug, Default)]
pub struct Schedule {
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
    /// A write is wanted (new evidence, a change) and not yet through.
    pending: bool,
}

impl Schedule {
    /// New content to write.
    pub fn want(&mut self) {
        self.pending = true;
    }

    /// Whether to attempt a write now.
    pub fn due(&self, now: Instant, min_interval: Duration, heartbeat: Duration) -> bool {
        let spaced = self
            .last_attempt
            .is_none_or(|t| now.duration_since(t) >= min_interval);
        // The heartbeat's probe makes the write (its new evidence is pending): this is only the
        // fallback should a probe never come back, so a quiet node writes once a heartbeat, not
        // twice (measured 1.5 writes a minute before).
        let beat = self
            .last_success
            .is_none_or(|t| now.duration_since(t) >= heartbeat * 3 / 2);
        spaced && (self.pending || beat)
    }

    pub fn attempted(&mut self, now: Instant, ok: bool) {
        self.last_attempt = Some(now);
        if ok {
            self.last_success = Some(now);
            self.pending = false;
        }
    }
}

/// Runs the recorder until `stop` resolves (or `max_writes` writes went through).
pub async fn run(
    cfg: RecordConfig,
    mut stop: impl std::future::Future<Output = ()> + Unpin,
) -> Result<(), String> {
    let host = HostRoot::new(&cfg.host_root);
    let started_at = now_unix_ms();
    let mut sampler = {
        let h = host.clone();
        tokio::task::spawn_blocking(move || Sampler::new(h))
            .await
            .map_err(|e| e.to_string())?
    };
    let target = if cfg.print {
        None
    } else {
        let (c, h) = (cfg.clone(), host.clone());
        let t = tokio::task::spawn_blocking(move || api_target(&c, &h))
            .await
            .map_err(|e| e.to_string())??;
        // Never eprintln!: the pod's stderr is a pipe a frozen runtime's shim does not drain.
        crate::log::line(&format!(
            "record: node {}, writing to {} every {:?} at least",
            cfg.node, t.server, cfg.heartbeat
        ));
        Some(t)
    };
    let pleg = Arc::new(Mutex::new(PlegRing::default()));
    if let Some(kubelet) = &cfg.kubelet {
        // Unverified, the CA is not needed (and may be absent on a host run).
        let ca = read_ca(&cfg.ca_file).or_else(|e| {
            if cfg.kubelet_insecure_tls {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })?;
        let t = ApiTarget {
            verify: !cfg.kubelet_insecure_tls,
            ..ApiTarget::from_kubeconfig(kubelet, None, ca, cfg.token_file.clone())?
        };
        spawn_pleg_scraper(t, pleg.clone());
    }
    let mut ring: VecDeque<Sample> = VecDeque::with_capacity(RING_SAMPLES);
    let mut publisher = Publisher {
        server: target
            .as_ref()
            .map(|t| t.server.clone())
            .unwrap_or_default(),
        heartbeat_seconds: cfg.heartbeat.as_secs(),
        ..Default::default()
    };
    let mut schedule = Schedule::default();
    // The state the latest probe saw, and a changed state's run length.
    let mut probed_state: Option<State> = None;
    // The kubelet's pid and its cgroup's OOM kills at the latest probe: a restart or a kill is a
    // change even when the state looks the same a second later (an OOM loop).
    let (mut probed_pid, mut probed_ooms): (Option<u32>, Option<u64>) = (None, None);
    let mut changed_for = 0u32;
    let mut evidence: Option<(NodeEvidence, String)> = None;
    let mut last_probe: Option<Instant> = None;
    let (probe_tx, mut probe_rx) = mpsc::channel::<(NodeEvidence, String)>(1);
    let mut probing = false;
    let mut written = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            Some(done) = probe_rx.recv() => {
                probing = false;
                evidence = Some(done);
                schedule.want();
            }
            _ = tick.tick() => {}
        }
        let s = sampler.sample().await;
        let state = s.state();
        let (pid, ooms) = (s.kubelet_pid, s.kubelet_oom_kills);
        if ring.len() == RING_SAMPLES {
            ring.pop_front();
        }
        ring.push_back(s);

        // A probe at the heartbeat, and once a changed state has held.
        if probed_state.as_ref().is_some_and(|p| *p != state) {
            changed_for += 1;
        } else {
            changed_for = 0;
        }
        let reason = if probed_state.is_none() {
            Some("start".to_string())
        } else if changed_for >= HOLD_SAMPLES {
            Some(format!(
                "changed: {} -> {}",
                probed_state.as_ref().map(State::words).unwrap_or_default(),
                state.words()
            ))
        } else if let Some(why) = restarted(probed_pid, pid, probed_ooms, ooms)
            .filter(|_| last_probe.is_none_or(|t| t.elapsed() >= cfg.min_write_interval))
        {
            Some(why)
        } else if last_probe.is_some_and(|t| t.elapsed() >= cfg.heartbeat) {
            Some("heartbeat".to_string())
        } else {
            None
        };
        if let Some(reason) = reason.filter(|_| !probing) {
            probing = true;
            last_probe = Some(Instant::now());
            probed_state = Some(state.clone());
            probed_pid = pid.or(probed_pid);
            probed_ooms = ooms.or(probed_ooms);
            changed_for = 0;
            let pc = probe::ProbeConfig {
                host_root: cfg.host_root.clone(),
                window: cfg.probe_window,
                timeout: Duration::from_secs(3),
                log_since: cfg.log_since,
                ..Default::default()
            };
            let tx = probe_tx.clone();
            tokio::spawn(async move {
                let ev = probe::run(pc, None).await;
                let _ = tx.send((ev, reason)).await;
            });
        }

        if std::mem::take(&mut pleg.lock().expect("pleg lock").changed) {
            schedule.want();
        }
        let now = Instant::now();
        if evidence.is_none() || !schedule.due(now, cfg.min_write_interval, cfg.heartbeat) {
            continue;
        }
        let samples: Vec<Sample> = ring.iter().cloned().collect();
        let (ev, why) = evidence.clone().expect("checked above");
        let recorded_at = now_unix_ms();
        let report = RecorderReport {
            schema: recorder::REPORT_SCHEMA.into(),
            node: cfg.node.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            recorded_at_unix_ms: recorded_at,
            started_at_unix_ms: started_at,
            now: samples.last().cloned().unwrap_or_default(),
            timeline: recorder::fold(&samples),
            evidence: Some(ev),
            evidence_reason: why,
            publisher: as_written(&publisher, recorded_at),
            pleg: {
                let p = pleg.lock().expect("pleg lock");
                nodehealth_proto::pleg::fold(&p.ticks.iter().cloned().collect::<Vec<_>>())
            },
            pleg_error: pleg.lock().expect("pleg lock").error.clone(),
        };
        let body = serde_json::to_vec(&object(&report)).map_err(|e| e.to_string())?;
        let ok = match &target {
            None => {
                println!("{}", String::from_utf8_lossy(&body));
                true
            }
            Some(t) => {
                let r = kubeapi::apply(
                    t,
                    &kubeapi::report_path(&cfg.node),
                    body,
                    Duration::from_secs(5),
                )
                .await;
                note_write(&mut publisher, &r, report.recorded_at_unix_ms);
                if let Err(e) = &r {
                    crate::log::line(&format!("record: write failed: {e}"));
                }
                r.is_ok()
            }
        };
        schedule.attempted(now, ok);
        written += u64::from(ok);
        if cfg.max_writes > 0 && written >= cfg.max_writes {
            return Ok(());
        }
    }
}

/// The publisher's record as the report being written says it: an open outage ends with this
/// write, if it gets through (a report that does not get through is never read).
fn as_written(p: &Publisher, at_unix_ms: i64) -> Publisher {
    let mut p = p.clone();
    if let Some(o) = p.last_outage.as_mut().filter(|o| o.to_unix_ms.is_none()) {
        o.to_unix_ms = Some(at_unix_ms);
    }
    p
}

/// A kubelet restart (another pid) or an OOM kill in its cgroup since the latest probe, in words.
fn restarted(
    probed_pid: Option<u32>,
    pid: Option<u32>,
    probed_ooms: Option<u64>,
    ooms: Option<u64>,
) -> Option<String> {
    match ((probed_pid, pid), (probed_ooms, ooms)) {
        (_, (Some(a), Some(b))) if b > a => Some(format!(
            "{} OOM kill(s) in the kubelet's cgroup since the last probe",
            b - a
        )),
        ((Some(a), Some(b)), _) if a != b => Some(format!("kubelet restarted (pid {a} -> {b})")),
        _ => None,
    }
}

/// Counts a write in the publisher's record: a failure opens (or extends) an outage, the first
/// success after it closes it (the outage stays in the report until the next one).
pub fn note_write(p: &mut Publisher, r: &Result<u16, String>, at_unix_ms: i64) {
    match r {
        Ok(_) => {
            p.writes += 1;
            if let Some(o) = p.last_outage.as_mut().filter(|o| o.to_unix_ms.is_none()) {
                o.to_unix_ms = Some(at_unix_ms);
            }
        }
        Err(e) => {
            p.failed_writes += 1;
            p.last_error = Some(e.clone());
            match p.last_outage.as_mut().filter(|o| o.to_unix_ms.is_none()) {
                Some(o) => {
                    o.failed_writes += 1;
                    o.last_error = e.clone();
                }
                None => {
                    p.last_outage = Some(Outage {
                        from_unix_ms: at_unix_ms,
                        to_unix_ms: None,
                        failed_writes: 1,
                        last_error: e.clone(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_spaced_by_the_minimum_interval_and_happen_at_the_heartbeat() {
        let (min, beat) = (Duration::from_secs(10), Duration::from_secs(60));
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert!(s.due(t0, min, beat), "the first write goes at once");
        s.attempted(t0, true);
        assert!(
            !s.due(t0 + Duration::from_secs(30), min, beat),
            "nothing new"
        );
        s.want();
        assert!(
            !s.due(t0 + Duration::from_secs(9), min, beat),
            "9 s after a write"
        );
        assert!(s.due(t0 + Duration::from_secs(10), min, beat));
        s.attempted(t0 + Duration::from_secs(10), true);
        assert!(!s.due(t0 + Duration::from_secs(99), min, beat));
        assert!(
            s.due(t0 + Duration::from_secs(100), min, beat),
            "no new evidence for a heartbeat and a half: written anyway"
        );
        // A failed write is retried at the minimum interval, not sooner.
        s.want();
        s.attempted(t0 + Duration::from_secs(100), false);
        assert!(!s.due(t0 + Duration::from_secs(109), min, beat));
        assert!(s.due(t0 + Duration::from_secs(110), min, beat));
    }

    #[test]
    fn failed_writes_open_an_outage_and_the_next_success_closes_it() {
        let mut p = Publisher::default();
        note_write(&mut p, &Ok(200), 1_000);
        assert_eq!((p.writes, p.failed_writes), (1, 0));
        assert!(p.last_outage.is_none());
        note_write(&mut p, &Err("connect: timed out".into()), 11_000);
        note_write(&mut p, &Err("connect: refused".into()), 21_000);
        let o = p.last_outage.clone().unwrap();
        assert_eq!(
            (o.from_unix_ms, o.to_unix_ms, o.failed_writes),
            (11_000, None, 2)
        );
        assert_eq!(o.last_error, "connect: refused");
        note_write(&mut p, &Ok(200), 31_000);
        let o = p.last_outage.clone().unwrap();
        assert_eq!(
            o.to_unix_ms,
            Some(31_000),
            "closed by the write that got through"
        );
        assert_eq!((p.writes, p.failed_writes), (2, 2));
        // The report that gets through after an outage already says it ended.
        let mut open = Publisher::default();
        note_write(&mut open, &Err("x".into()), 5_000);
        assert_eq!(
            as_written(&open, 9_000).last_outage.unwrap().to_unix_ms,
            Some(9_000)
        );
        assert_eq!(open.last_outage.as_ref().unwrap().to_unix_ms, None);
        // A later outage replaces it.
        note_write(&mut p, &Err("x".into()), 41_000);
        assert_eq!(p.last_outage.unwrap().from_unix_ms, 41_000);
    }

    #[test]
    fn a_restart_or_an_oom_kill_is_a_change() {
        assert_eq!(restarted(Some(1), Some(1), Some(0), Some(0)), None);
        assert_eq!(restarted(None, Some(1), None, Some(0)), None, "first sight");
        assert_eq!(
            restarted(Some(1), None, Some(0), None),
            None,
            "gone: a state change"
        );
        assert_eq!(
            restarted(Some(1), Some(2), Some(0), Some(0)).unwrap(),
            "kubelet restarted (pid 1 -> 2)"
        );
        assert!(
            restarted(Some(1), Some(2), Some(0), Some(3))
                .unwrap()
                .starts_with("3 OOM kill(s)")
        );
    }

    #[test]
    fn only_the_pleg_families_are_parsed() {
        let text = "# HELP kubelet_pleg_relist_duration_seconds x\n\
# TYPE kubelet_pleg_relist_duration_seconds histogram\n\
kubelet_pleg_relist_duration_seconds_bucket{le=\"1\"} 3\n\
kubelet_pleg_relist_duration_seconds_sum 0.3\n\
# TYPE rest_client_requests_total counter\n\
rest_client_requests_total{code=\"200\"} 9\n\
kubelet_pleg_last_seen_seconds 1.7e9\n\
kubelet_runtime_operations_errors_total{operation_type=\"list_containers\"} 1\n";
        let kept = pleg_lines(text);
        assert_eq!(kept.lines().count(), 5, "{kept}");
        assert!(!kept.contains("rest_client") && !kept.contains("# HELP"));
        assert!(kept.starts_with("# TYPE kubelet_pleg_relist_duration_seconds histogram\n"));
    }

    #[test]
    fn process_states_in_words() {
        let host = HostRoot::new("/");
        assert_eq!(process_state(&host, None), "absent");
        assert_eq!(process_state(&host, Some(std::process::id())), "running");
        assert_eq!(process_state(&host, Some(u32::MAX - 1)), "absent");
    }

    #[test]
    fn healthz_answers_in_words() {
        use nodehealth_proto::node::HttpAttempt;
        let a = |status: Option<u16>, error: Option<&str>, timed_out| HttpAttempt {
            status,
            error: error.map(str::to_string),
            timed_out,
            ..Default::default()
        };
        assert_eq!(healthz_words(&a(Some(200), None, false)), "ok");
        assert_eq!(healthz_words(&a(Some(500), None, false)), "failing");
        assert_eq!(healthz_words(&a(None, Some("x"), true)), "no-answer");
        assert_eq!(
            healthz_words(&a(None, Some("Connection refused (os error 111)"), false)),
            "refused"
        );
    }

    #[test]
    fn the_object_is_the_nodes_report() {
        let r = RecorderReport {
            node: "guest".into(),
            ..Default::default()
        };
        let o = object(&r);
        assert_eq!(o["apiVersion"], "nodehealth.io/v1alpha1");
        assert_eq!(o["metadata"]["name"], "guest");
        assert_eq!(o["spec"]["nodeName"], "guest");
        assert_eq!(o["status"]["node"], "guest");
    }
}
