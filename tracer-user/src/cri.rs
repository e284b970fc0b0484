//! The agent's own timed CRI calls over the runtime's unix socket (the guide's `time crictl ps`).
//!
//! Version, Status, ListPodSandbox and ListContainers are each repeated over the window, one
//! call per interval after the previous one returns (like the kubelet's relist loop,
//! pkg/kubelet/pleg/generic.go: `wait.Until(relist, 1s)`), each bounded by the timeout. The
//! four run side by side on one HTTP/2 connection, so the whole probe ends within
//! window + timeout however hung the runtime is: a frozen runtime's kernel still accepts the
//! connection into the listen backlog, and then nothing ever answers.
use std::{
    collections::HashSet,
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ContainerState, ListContainersRequest, ListPodSandboxRequest, PodSandboxState, StatusRequest,
    VersionRequest, runtime_service_client::RuntimeServiceClient,
};
use nodehealth_proto::node::{
    CallOutcome, CallSample, ContainerCounts, CriOperation, CriProbe, CriState, RuntimeCondition,
    SandboxCounts,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::host::now_unix_ms;

/// What to probe and for how long.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// As configured (for the report).
    pub endpoint: String,
    /// The socket's path as the agent reaches it (under the host root).
    pub socket: PathBuf,
    pub timeout: Duration,
    pub interval: Duration,
    pub window: Duration,
}

/// The probe's result plus the sandbox and container ids it saw (for shim correlation).
#[derive(Debug, Clone)]
pub struct CriResult {
    pub probe: CriProbe,
    /// None when no list call answered.
    pub ids: Option<HashSet<String>>,
}

#[derive(Default)]
struct Seen {
    runtime_name: Option<String>,
    runtime_version: Option<String>,
    runtime_api_version: Option<String>,
    conditions: Vec<RuntimeCondition>,
    sandboxes: Option<SandboxCounts>,
    containers: Option<ContainerCounts>,
    sandbox_ids: Option<HashSet<String>>,
    container_ids: Option<HashSet<String>>,
}

/// Connects a tonic channel to a unix socket. The URI is a placeholder: the connector ignores it.
pub async fn connect(socket: PathBuf, timeout: Duration) -> Result<Channel, String> {
    let endpoint = Endpoint::try_from("http://cri.invalid")
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout);
    let fut = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
    }));
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn op(name: &str) -> CriOperation {
    CriOperation {
        name: name.to_string(),
        ..Default::default()
    }
}

fn record(
    op: &mut CriOperation,
    at: i64,
    latency: Duration,
    outcome: CallOutcome,
    err: Option<String>,
) {
    op.calls += 1;
    match outcome {
        CallOutcome::Ok => op.ok += 1,
        CallOutcome::Error => op.errors += 1,
        CallOutcome::Timeout => op.timeouts += 1,
    }
    if err.is_some() {
        op.last_error = err;
    }
    op.samples.push(CallSample {
        at_unix_ms: at,
        latency_ms: latency.as_secs_f64() * 1000.0,
        outcome,
    });
}

fn summarize(op: &mut CriOperation) {
    let mut done: Vec<f64> = op
        .samples
        .iter()
        .filter(|s| s.outcome != CallOutcome::Timeout)
        .map(|s| s.latency_ms)
        .collect();
    done.sort_by(f64::total_cmp);
    if !done.is_empty() {
        // Nearest-rank median.
        op.p50_ms = Some(done[(done.len() - 1) / 2]);
        op.max_ms = done.last().copied();
    }
}

/// Repeats one call until the window is over.
async fn repeat<F, Fut>(name: &str, t0: Instant, cfg: &CriConfig, mut call: F) -> CriOperation
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut o = op(name);
    loop {
        let at = now_unix_ms();
        let started = Instant::now();
        let result = tokio::time::timeout(cfg.timeout, call()).await;
        let latency = started.elapsed();
        match result {
            Ok(Ok(())) => record(&mut o, at, latency, CallOutcome::Ok, None),
            Ok(Err(status)) => {
                let msg = format!("{:?}: {}", status.code(), status.message());
                record(&mut o, at, latency, CallOutcome::Error, Some(msg))
            }
            Err(_) => record(
                &mut o,
                at,
                latency,
                CallOutcome::Timeout,
                Some(format!("no answer within {:?}", cfg.timeout)),
            ),
        }
        // The last call starts at the end of the window at the latest.
        let left = cfg.window.saturating_sub(t0.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(cfg.interval.min(left)).await;
    }
    summarize(&mut o);
    o
}

/// Runs the CRI probe. Never takes longer than window + timeout (+ scheduling noise).
pub async fn probe(cfg: CriConfig) -> CriResult {
    let t0 = Instant::now();
    let mut connect_op = op("connect");
    let mut channel = None;
    loop {
        let at = now_unix_ms();
        let started = Instant::now();
        match connect(cfg.socket.clone(), cfg.timeout).await {
            Ok(ch) => {
                record(
                    &mut connect_op,
                    at,
                    started.elapsed(),
                    CallOutcome::Ok,
                    None,
                );
                channel = Some(ch);
                break;
            }
            Err(e) => {
                let outcome = if started.elapsed() >= cfg.timeout {
                    CallOutcome::Timeout
                } else {
                    CallOutcome::Error
                };
                record(&mut connect_op, at, started.elapsed(), outcome, Some(e));
            }
        }
        let left = cfg.window.saturating_sub(t0.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(cfg.interval.min(left)).await;
    }
    summarize(&mut connect_op);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut operations = vec![connect_op];
    if let Some(channel) = channel {
        let client = RuntimeServiceClient::new(channel);
        let version = {
            let (client, seen) = (client.clone(), seen.clone());
            repeat("Version", t0, &cfg, move || {
                let (mut client, seen) = (client.clone(), seen.clone());
                async move {
                    let v = client
                        .version(VersionRequest::default())
                        .await?
                        .into_inner();
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    s.runtime_name = Some(v.runtime_name);
                    s.runtime_version = Some(v.runtime_version);
                    s.runtime_api_version = Some(v.runtime_api_version);
                    Ok(())
                }
            })
        };
        let status = {
            let (client, seen) = (client.clone(), seen.clone());
            repeat("Status", t0, &cfg, move || {
                let (mut client, seen) = (client.clone(), seen.clone());
                async move {
                    let r = client
                        .status(StatusRequest { verbose: false })
                        .await?
                        .into_inner();
                    let conditions = r
                        .status
                        .map(|st| {
                            st.conditions
                                .into_iter()
                                .map(|c| RuntimeCondition {
                                    kind: c.r#type,
                                    status: c.status,
                                    reason: c.reason,
                                    message: c.message,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    seen.lock().unwrap_or_else(|e| e.into_inner()).conditions = conditions;
                    Ok(())
                }
            })
        };
        let sandboxes = {
            let (client, seen) = (client.clone(), seen.clone());
            repeat("ListPodSandbox", t0, &cfg, move || {
                let (mut client, seen) = (client.clone(), seen.clone());
                async move {
                    let r = client
                        .list_pod_sandbox(ListPodSandboxRequest::default())
                        .await?
                        .into_inner();
                    let mut counts = SandboxCounts::default();
                    let mut ids = HashSet::new();
                    for sb in r.items {
                        counts.total += 1;
                        if sb.state == PodSandboxState::SandboxReady as i32 {
                            counts.ready += 1;
                        } else {
                            counts.not_ready += 1;
                        }
                        ids.insert(sb.id);
                    }
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    s.sandboxes = Some(counts);
                    s.sandbox_ids = Some(ids);
                    Ok(())
                }
            })
        };
        let containers = {
            let (client, seen) = (client.clone(), seen.clone());
            repeat("ListContainers", t0, &cfg, move || {
                let (mut client, seen) = (client.clone(), seen.clone());
                async move {
                    let r = client
                        .list_containers(ListContainersRequest::default())
                        .await?
                        .into_inner();
                    let mut counts = ContainerCounts::default();
                    let mut ids = HashSet::new();
                    for c in r.containers {
                        counts.total += 1;
                        match ContainerState::try_from(c.state) {
                            Ok(ContainerState::ContainerCreated) => counts.created += 1,
                            Ok(ContainerState::ContainerRunning) => counts.running += 1,
                            Ok(ContainerState::ContainerExited) => counts.exited += 1,
                            _ => counts.unknown += 1,
                        }
                        ids.insert(c.id);
                    }
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    s.containers = Some(counts);
                    s.container_ids = Some(ids);
                    Ok(())
                }
            })
        };
        let (a, b, c, d) = tokio::join!(version, status, sandboxes, containers);
        operations.extend([a, b, c, d]);
    }

    let calls: Vec<&CriOperation> = operations.iter().skip(1).collect();
    let state = if operations[0].ok == 0 {
        CriState::Unreachable
    } else if calls.iter().all(|o| o.ok == 0 && o.errors == 0) {
        CriState::Hung
    } else if calls.iter().all(|o| o.errors == 0 && o.timeouts == 0) {
        CriState::Responding
    } else {
        CriState::Degraded
    };
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let ids = match (seen.sandbox_ids, seen.container_ids) {
        (None, None) => None,
        (a, b) => Some(
            a.unwrap_or_default()
                .into_iter()
                .chain(b.unwrap_or_default())
                .collect(),
        ),
    };
    CriResult {
        probe: CriProbe {
            endpoint: cfg.endpoint.clone(),
            state,
            timeout_ms: cfg.timeout.as_millis() as u64,
            interval_ms: cfg.interval.as_millis() as u64,
            window_ms: cfg.window.as_millis() as u64,
            elapsed_ms: t0.elapsed().as_millis() as u64,
            operations,
            runtime_name: seen.runtime_name,
            runtime_version: seen.runtime_version,
            runtime_api_version: seen.runtime_api_version,
            conditions: seen.conditions,
            sandboxes: seen.sandboxes,
            containers: seen.containers,
        },
        ids,
    }
}

/// The result when there is no endpoint to probe.
pub fn not_probed(endpoint: &str) -> CriProbe {
    CriProbe {
        endpoint: endpoint.to_string(),
        state: CriState::NotProbed,
        timeout_ms: 0,
        interval_ms: 0,
        window_ms: 0,
        elapsed_ms: 0,
        operations: vec![],
        runtime_name: None,
        runtime_version: None,
        runtime_api_version: None,
        conditions: vec![],
        sandboxes: None,
        containers: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_max_ignore_timeouts() {
        let mut o = op("Version");
        for (ms, out) in [
            (5, CallOutcome::Ok),
            (1, CallOutcome::Ok),
            (9, CallOutcome::Error),
            (10_000, CallOutcome::Timeout),
        ] {
            record(&mut o, 0, Duration::from_millis(ms), out, None);
        }
        summarize(&mut o);
        assert_eq!((o.calls, o.ok, o.errors, o.timeouts), (4, 2, 1, 1));
        assert_eq!(o.p50_ms, Some(5.0));
        assert_eq!(o.max_ms, Some(9.0));
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_within_the_window() {
        let cfg = CriConfig {
            endpoint: "unix:///nonexistent.sock".into(),
            socket: "/nonexistent/nodehealth-test.sock".into(),
            timeout: Duration::from_millis(500),
            interval: Duration::from_millis(100),
            window: Duration::from_millis(350),
        };
        let r = probe(cfg).await;
        assert_eq!(r.probe.state, CriState::Unreachable);
        assert!(r.probe.operations[0].calls >= 2);
        assert!(r.probe.elapsed_ms < 1_000);
        assert!(r.ids.is_none());
    }
}
