//! Collection: the only module that does I/O. It talks to the API server (and to the kubelet
//! through the API server's node proxy), concurrently, and turns every answer — or failure —
//! into evidence. One step failing never stops the others.

use crate::checks::logs::ENABLE_LOG_QUERY;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::Error;
use crate::evidence::{
    self, Condition, Csr, CsrState, Evidence, Failure, FailureKind, Layer, LeaseInfo,
    LeaseOverview, LogQuery, MetricsSnapshot, NodeEvent, NodeInfo, RawCaptures, SIGNER_CLIENT,
    SIGNER_SERVING, Step, Window,
};
use crate::metrics;

/// How to reach the cluster (the kubectl flags).
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `--cluster`: the kubeconfig cluster to use instead of the context's.
    pub cluster: Option<String>,
    /// `--user`: the kubeconfig user to use instead of the context's.
    pub user: Option<String>,
    /// `--as`: the user to impersonate.
    pub as_user: Option<String>,
    /// `--as-group`: groups to impersonate (repeatable).
    pub as_groups: Vec<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A connected client and the server it talks to.
#[derive(Clone)]
pub struct Target {
    /// The client.
    pub client: Client,
    /// API server URL (for messages).
    pub server: String,
}

/// Build a client from the kubeconfig flags.
pub async fn connect(options: &KubeOptions) -> Result<Target, Error> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        cluster: options.cluster.clone(),
        user: options.user.clone(),
    };
    let context_text = options
        .context
        .as_ref()
        .map(|c| format!(" for context {c:?}"))
        .unwrap_or_default();
    let mut config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                .await
                .map_err(|e| Error::ClientConfig {
                    context: context_text.clone(),
                    message: format!("{} ({})", e, path.display()),
                })?
        }
        None => match Config::from_kubeconfig(&kube_options).await {
            Ok(config) => config,
            Err(kubeconfig_error) if options.context.is_none() => {
                Config::incluster().map_err(|incluster| Error::ClientConfig {
                    context: String::new(),
                    message: format!(
                        "no usable kubeconfig ({kubeconfig_error}) and not in a cluster ({incluster})"
                    ),
                })?
            }
            Err(e) => {
                return Err(Error::ClientConfig {
                    context: context_text,
                    message: e.to_string(),
                });
            }
        },
    };
    // Impersonation as kubectl does it (Impersonate-User / Impersonate-Group headers).
    if let Some(user) = &options.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !options.as_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(options.as_groups.clone());
    }
    config.connect_timeout = Some(options.timeout.min(Duration::from_secs(10)));
    // Each request has its own bound (the steps' timeouts). The client's read timeout is only a
    // safety net for calls without one: it runs from a connection's last read, so a request
    // that reuses a connection idle since the start of the run would be cut early — seen as
    // "connection error: timed out" on node-proxy requests when it equalled --timeout.
    config.read_timeout = Some(CONNECTION_READ_TIMEOUT.max(options.timeout * 3));
    // kube retries 5xx answers with backoff by default. For a diagnosis the first answer is the
    // evidence: the node proxy's 503 "dial tcp ...: connection refused" (a kubelet that is not
    // running) retried until our timeout reads as a kubelet that does not answer.
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| Error::Client {
        server: server.clone(),
        source,
    })?;
    Ok(Target { client, server })
}

/// What to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The node.
    pub node: String,
    /// Observation window between the two metrics scrapes.
    pub window: Duration,
    /// Per-step timeout.
    pub timeout: Duration,
    /// How far back logs are read through the node log query.
    pub log_since: Duration,
}

/// The error text with its sources (TLS errors hide in the chain).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn failure(err: kube::Error, request: &str, needs: &str, proxy: bool) -> Failure {
    match err {
        kube::Error::Api(status) => {
            let code = status.code;
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            let dial = message.contains("dial tcp") || message.contains("error trying to reach");
            let kind = match code {
                401 => FailureKind::Unauthorized,
                403 => FailureKind::Forbidden,
                404 => FailureKind::NotFound,
                502..=504 if proxy => FailureKind::KubeletUnreachable,
                _ if proxy && dial => FailureKind::KubeletUnreachable,
                _ => FailureKind::HttpError,
            };
            Failure {
                kind,
                request: request.to_string(),
                http_status: Some(code),
                needs: (code == 403).then(|| needs.to_string()),
                message,
            }
        }
        // The client's connect timeout (TCP and TLS): a server that accepts and never answers.
        other if chain(&other).contains("deadline has elapsed") => Failure {
            kind: FailureKind::Timeout,
            request: request.to_string(),
            http_status: None,
            needs: None,
            message: format!(
                "no answer while connecting (TCP and TLS): {}",
                chain(&other)
            ),
        },
        other => Failure {
            kind: FailureKind::Transport,
            request: request.to_string(),
            http_status: None,
            needs: None,
            message: chain(&other),
        },
    }
}

fn timed_out(request: &str, timeout: Duration) -> Failure {
    Failure {
        kind: FailureKind::Timeout,
        request: request.to_string(),
        http_status: None,
        needs: None,
        message: format!("no answer within {}s", timeout.as_secs_f64()),
    }
}

/// Run one request with the step timeout, mapping errors to a [`Failure`].
async fn step<T>(
    timeout: Duration,
    request: &str,
    needs: &str,
    proxy: bool,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failure(e, request, needs, proxy)),
        Err(_) => Err(timed_out(request, timeout)),
    }
}

const NEEDS_PROXY: &str = "get nodes/proxy";

/// The client's read timeout (a safety net: see `connect`).
const CONNECTION_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How much longer than `--timeout` the healthz request waits. The API server's node proxy gives
/// up on a TLS handshake with the kubelet after 10 s and says so ("TLS handshake timeout"): a
/// process that holds its port but does not run (stopped, frozen). Waiting past our own timeout
/// for that answer separates such a kubelet from one that shakes hands but hangs the request (a
/// kubelet cut off from the API server cannot authorize it). It runs alongside the metrics
/// window: a healthz that gets no word from the API server is asked again while the window
/// lasts, so a diagnosis takes at most the grace longer for it.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(3);

/// The API server's node proxy gives up on a TLS handshake after this long: its transport takes
/// Go's DefaultTransport values (k8s.io/apimachinery/pkg/util/net/http.go
/// SetOldTransportDefaults); measured 10.0 s on v1.35.4. An HTTP/2 connection it already holds
/// to the kubelet is dropped only when a health ping goes unanswered (read-idle 30 s, then a 15 s
/// ping timeout, same file): until then requests ride it and simply hang.
const PROXY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// GET a kubelet path through the API server's node proxy.
/// How much of an answer through the node proxy is read, by endpoint: a kubelet never sends more
/// for these (a 110-pod node's /metrics is ~1-3 MiB, its goroutine dump a few MiB), and a body
/// that never ends must not grow the plugin's memory without bound.
fn body_cap(path: &str) -> (usize, Keep) {
    const MIB: usize = 1024 * 1024;
    if path.starts_with("logs/") {
        // A log: its newest lines matter; the older ones are dropped as they stream past.
        (8 * MIB, Keep::Tail)
    } else if path.starts_with("debug/pprof") {
        (64 * MIB, Keep::Head)
    } else if path.starts_with("metrics") || path.starts_with("stats") {
        (32 * MIB, Keep::Head)
    } else {
        (MIB, Keep::Head)
    }
}

/// Which part of an oversized body is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Keep {
    /// Refuse it: the answer is not what the endpoint sends.
    Head,
    /// Keep its last `cap` bytes (cut at a line start).
    Tail,
}

/// Reads a body with a byte cap, in bounded memory.
pub(crate) async fn read_capped(
    mut reader: impl futures_util::AsyncBufRead + Unpin,
    cap: usize,
    keep: Keep,
) -> Result<Vec<u8>, String> {
    use futures_util::AsyncBufReadExt;
    let mut out: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let chunk = reader.fill_buf().await.map_err(|e| e.to_string())?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        out.extend_from_slice(chunk);
        reader.consume_unpin(n);
        if out.len() > cap {
            match keep {
                Keep::Head => {
                    return Err(format!(
                        "the answer exceeds {} MiB: not read further (no kubelet sends that much here)",
                        cap / (1024 * 1024)
                    ));
                }
                Keep::Tail => {
                    let drop = out.len() - cap;
                    out.drain(..drop);
                    cut = true;
                }
            }
        }
    }
    if cut && let Some(nl) = out.iter().position(|b| *b == b'\n') {
        out.drain(..=nl);
    }
    Ok(out)
}

async fn proxy_get(
    client: &Client,
    node: &str,
    path: &str,
    timeout: Duration,
) -> Result<String, Failure> {
    let uri = format!("/api/v1/nodes/{node}/proxy/{path}");
    let request_text = format!("GET {uri}");
    let request = match http::Request::get(&uri).body(Vec::new()) {
        Ok(r) => r,
        Err(e) => {
            return Err(Failure {
                kind: FailureKind::HttpError,
                request: request_text,
                http_status: None,
                needs: None,
                message: e.to_string(),
            });
        }
    };
    let (cap, keep) = body_cap(path);
    let body = async {
        let reader = client.request_stream(request).await?;
        Ok(read_capped(reader, cap, keep).await)
    };
    match step(timeout, &request_text, NEEDS_PROXY, true, body).await? {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(message) => Err(Failure {
            kind: FailureKind::Malformed,
            request: request_text,
            http_status: Some(200),
            needs: None,
            message,
        }),
    }
}

/// One scrape of the kubelet's `/metrics` through the node proxy, reduced to the families the
/// checks read.
pub async fn kubelet_metrics(
    target: &Target,
    node: &str,
    timeout: Duration,
) -> Result<MetricsSnapshot, Failure> {
    let text = proxy_get(&target.client, node, "metrics", timeout).await?;
    let scrape = crate::metrics::parse(&text);
    Ok(MetricsSnapshot::from_scrape(
        &scrape,
        text.len(),
        Timestamp::now(),
    ))
}

fn to_step<T>(result: Result<T, Failure>) -> Step<T> {
    match result {
        Ok(data) => Step::Collected { data },
        Err(failure) => Step::Failed { failure },
    }
}

fn parsed<T>(
    result: Result<String, Failure>,
    request: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> (Step<T>, Option<String>) {
    match result {
        Ok(text) => {
            let step = match parse(&text) {
                Ok(data) => Step::Collected { data },
                Err(message) => Step::Failed {
                    failure: Failure {
                        kind: FailureKind::Malformed,
                        request: request.to_string(),
                        http_status: Some(200),
                        needs: None,
                        message,
                    },
                },
            };
            (step, Some(text))
        }
        Err(failure) => (Step::Failed { failure }, None),
    }
}

pub(crate) fn node_info(node: &Node) -> NodeInfo {
    let status = node.status.clone().unwrap_or_default();
    let conditions = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| Condition {
            type_: c.type_,
            status: c.status,
            reason: c.reason,
            message: c.message,
            last_heartbeat_time: c.last_heartbeat_time.map(|t| t.0),
            last_transition_time: c.last_transition_time.map(|t| t.0),
        })
        .collect();
    let spec = node.spec.clone().unwrap_or_default();
    NodeInfo {
        conditions,
        unschedulable: spec.unschedulable.unwrap_or(false),
        taints: spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect(),
        kubelet_version: status.node_info.as_ref().map(|i| i.kubelet_version.clone()),
        container_runtime_version: status
            .node_info
            .as_ref()
            .map(|i| i.container_runtime_version.clone()),
        pod_capacity: status
            .capacity
            .as_ref()
            .and_then(|c| c.get("pods"))
            .map(|q| q.0.clone()),
        internal_ip: status
            .addresses
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address),
        provider_id: spec.provider_id.clone(),
        os_image: status.node_info.as_ref().map(|i| i.os_image.clone()),
        labels: platform_keys(node.metadata.labels.as_ref()),
        annotations: platform_keys(node.metadata.annotations.as_ref()),
    }
}

/// The entries of a label or annotation map that tell the platform.
fn platform_keys(
    map: Option<&std::collections::BTreeMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| crate::checks::platform::keep_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The API server's clock, from the `Date` header of a `GET /version` (any authenticated user
/// may read it; 1 s resolution). Ages of what the kubelet stamps are judged on it when this
/// machine's clock is off: a laptop's clock says nothing about the node.
async fn api_server_time(client: &Client, timeout: Duration) -> Option<Timestamp> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .ok()?;
    let response = tokio::time::timeout(timeout, client.send(request))
        .await
        .ok()?
        .ok()?;
    let date = response.headers().get(http::header::DATE)?.to_str().ok()?;
    http_date(date)
}

/// An HTTP `Date` (RFC 9110 IMF-fixdate, e.g. `Sun, 06 Dec 2026 17:50:00 GMT`).
fn http_date(text: &str) -> Option<Timestamp> {
    jiff::fmt::rfc2822::parse(text).ok().map(|z| z.timestamp())
}

/// The moment leases are aged at: the API server's clock when this machine's is off, else the
/// local time they were read.
fn judged_at(read_at: Timestamp, server_time: Option<Timestamp>) -> Timestamp {
    let clocks = LeaseInfo {
        observed_at: Some(read_at),
        server_time,
        ..LeaseInfo::default()
    };
    match (crate::checks::heartbeat::clock_offset(&clocks), server_time) {
        (Some(_), Some(server)) => server,
        _ => read_at,
    }
}

fn lease_info(lease: &Lease, observed_at: Timestamp) -> LeaseInfo {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseInfo {
        observed_at: Some(observed_at),
        renew_time_before: None,
        server_time: None,
        namespace: lease.metadata.namespace.clone().unwrap_or_default(),
        name: lease.metadata.name.clone().unwrap_or_default(),
        holder_identity: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0),
        lease_duration_seconds: spec.lease_duration_seconds,
    }
}

/// The cluster's node leases: how many are stale (renewTime older than their duration), with up
/// to 10 names other than `node`'s.
fn lease_overview(leases: &[Lease], node: &str, now: Timestamp) -> LeaseOverview {
    let mut overview = LeaseOverview {
        total: leases.len(),
        ..LeaseOverview::default()
    };
    for l in leases {
        let info = lease_info(l, now);
        let duration = f64::from(info.lease_duration_seconds.unwrap_or(40));
        let stale = info
            .renew_time
            .is_none_or(|t| now.duration_since(t).as_secs_f64() >= duration);
        if stale {
            overview.stale += 1;
            if info.name != node && overview.stale_examples.len() < 10 {
                overview.stale_examples.push(info.name);
            }
        }
    }
    overview
}

/// A failure that means the API server itself cannot be used (unreachable, or our credentials
/// refused): no diagnosis can follow.
fn api_unusable(target: &Target, f: &Failure) -> Option<Error> {
    match f.kind {
        FailureKind::Transport | FailureKind::Timeout => Some(Error::ApiUnreachable {
            server: target.server.clone(),
            message: f.message.clone(),
        }),
        FailureKind::Unauthorized => Some(Error::Unauthorized {
            server: target.server.clone(),
            message: f.message.clone(),
        }),
        _ => None,
    }
}

/// What `scan` reads for the whole cluster, in a fixed number of API calls whatever the number
/// of nodes: the nodes, the node leases, the CSRs and kube-controller-manager's lease.
#[derive(Debug, Clone)]
pub struct ScanSnapshot {
    pub nodes: Vec<Node>,
    pub leases: Step<Vec<Lease>>,
    pub csrs: Step<Vec<CertificateSigningRequest>>,
    pub controller_manager_lease: Step<LeaseInfo>,
    pub collected_at: Timestamp,
    /// The API server's clock when the objects were read (its `Date` header).
    pub server_time: Option<Timestamp>,
    /// API requests made.
    pub api_calls: u32,
    /// Every node's flight-recorder report (one list), by node name.
    pub recorders: Step<Vec<crate::recorder::RecorderView>>,
}

/// Reads the [`ScanSnapshot`]; `label_selector` narrows the nodes.
pub async fn scan_snapshot(
    target: &Target,
    label_selector: Option<&str>,
    timeout: Duration,
) -> Result<ScanSnapshot, Error> {
    let client = &target.client;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut params = ListParams::default();
    if let Some(l) = label_selector {
        params = params.labels(l);
    }
    let node_list = match step(
        timeout,
        "LIST /api/v1/nodes",
        "list nodes",
        false,
        nodes.list(&params),
    )
    .await
    {
        Ok(list) => list.items,
        Err(f) => {
            return Err(api_unusable(target, &f).unwrap_or_else(|| {
                Error::Usage(format!(
                    "cannot list nodes: {} (scan needs `list nodes`)",
                    f.message
                ))
            }));
        }
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let any_version = ListParams::default().match_any();
    let csr_api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let all_csrs = ListParams::default();
    let kcm_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let (leases, csrs, kcm, server_time, recorders) = tokio::join!(
        step(
            timeout,
            "LIST /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            "list leases.coordination.k8s.io in kube-node-lease",
            false,
            leases.list(&any_version),
        ),
        step(
            timeout,
            "LIST /apis/certificates.k8s.io/v1/certificatesigningrequests",
            "list certificatesigningrequests.certificates.k8s.io",
            false,
            csr_api.list(&all_csrs),
        ),
        step(
            timeout,
            "GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager",
            "get leases.coordination.k8s.io in kube-system",
            false,
            kcm_leases.get("kube-controller-manager"),
        ),
        api_server_time(client, timeout),
        crate::recorder::list(client, timeout),
    );
    let answered_at = Timestamp::now();
    Ok(ScanSnapshot {
        nodes: node_list,
        leases: to_step(leases.map(|l| l.items)),
        csrs: to_step(csrs.map(|l| l.items)),
        controller_manager_lease: to_step(kcm.map(|l| {
            let mut info = lease_info(&l, answered_at);
            info.server_time = server_time;
            info
        })),
        collected_at: answered_at,
        server_time,
        api_calls: 6,
        // Aged on the API server's clock, like the leases.
        recorders: recorders.map_ref(|list| crate::recorder::views(list, server_time)),
    })
}

/// A scan node's node-side steps from its recorder report (one list for all nodes): a fresh
/// report's evidence is the node probe (layer `recorder`); otherwise both say why not.
fn recorder_evidence(report: Step<Option<crate::recorder::RecorderView>>) -> RecorderSteps {
    fn skipped<T>(reason: &str) -> Step<T> {
        Step::Skipped {
            reason: reason.to_string(),
        }
    }
    match report {
        Step::Collected { data: Some(v) } => {
            let node_probe = match (&v.report.evidence, v.stale) {
                (Some(ev), false) => Step::Collected {
                    data: evidence::NodeProbe::without_pod(
                        format!("recorder: {}", v.object),
                        ev.clone(),
                    ),
                },
                _ => skipped("the recorder's report is stale or carries no evidence"),
            };
            RecorderSteps {
                node_probe,
                recorder: Step::Collected { data: v },
            }
        }
        Step::Collected { data: None } => RecorderSteps {
            node_probe: skipped(SCAN_SKIPPED),
            recorder: skipped("no recorder report for this node"),
        },
        Step::Failed { failure } => RecorderSteps {
            node_probe: skipped(SCAN_SKIPPED),
            recorder: Step::Failed { failure },
        },
        Step::Skipped { reason } => RecorderSteps {
            node_probe: skipped(SCAN_SKIPPED),
            recorder: Step::Skipped { reason },
        },
    }
}

/// The two node-side steps of a scan's evidence.
struct RecorderSteps {
    node_probe: Step<evidence::NodeProbe>,
    recorder: Step<crate::recorder::RecorderView>,
}

/// Why a scan's evidence has no kubelet or node-side steps.
pub const SCAN_SKIPPED: &str =
    "scan reads API objects only: run `kubectl nodehealth <node>` for the kubelet and the node";

/// One [`Evidence`] per node of a scan: the API objects, every kubelet and node step skipped.
pub fn scan_evidence(snap: &ScanSnapshot) -> Vec<Evidence> {
    fn skipped<T>() -> Step<T> {
        Step::Skipped {
            reason: SCAN_SKIPPED.to_string(),
        }
    }
    snap.nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone().map(|name| (name, n)))
        .map(|(name, n)| {
            let lease = match (snap.leases.data(), snap.leases.failure().cloned()) {
                (Some(list), _) => match list
                    .iter()
                    .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
                {
                    Some(l) => Step::Collected {
                        data: LeaseInfo {
                            server_time: snap.server_time,
                            ..lease_info(l, snap.collected_at)
                        },
                    },
                    None => Step::Skipped {
                        reason: format!("no lease {name} in kube-node-lease"),
                    },
                },
                (None, Some(failure)) => Step::Failed { failure },
                _ => skipped(),
            };
            let steps = recorder_evidence(
                snap.recorders
                    .map_ref(|all| all.iter().find(|v| v.report.node == name).cloned()),
            );
            let mut layers = vec![Layer::Api];
            if steps.node_probe.data().is_some() {
                layers.push(Layer::Recorder);
            }
            Evidence {
                node_name: name.clone(),
                collected_at: snap.collected_at,
                window: Window {
                    requested_seconds: 0.0,
                    started_at: snap.collected_at,
                    ended_at: snap.collected_at,
                },
                layers,
                node: Step::Collected { data: node_info(n) },
                lease,
                node_probe: steps.node_probe,
                node_leases: snap.leases.map_ref(|list| {
                    lease_overview(list, &name, judged_at(snap.collected_at, snap.server_time))
                }),
                csrs: snap.csrs.map_ref(|all| node_csrs(all, &name)),
                events: skipped(),
                healthz: skipped(),
                configz: skipped(),
                metrics_start: skipped(),
                metrics_end: skipped(),
                stats_summary: skipped(),
                goroutine_dump: skipped(),
                controller_manager_lease: snap.controller_manager_lease.clone(),
                kubelet_log: skipped(),
                runtime_log: skipped(),
                history: evidence::no_history(),
                recorder: steps.recorder,
            }
        })
        .collect()
}

/// Whether a PEM CSR's subject names `system:node:<node>` (used only for bootstrap requestors,
/// whose username does not name the node). The DER holds the common name as a length-prefixed
/// string, so the match requires the byte before it to be exactly its length: `node-a` does not
/// match `node-ab`.
pub fn pem_names_node(pem: &[u8], node: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else {
        return false;
    };
    let needle = format!("system:node:{node}");
    let needle = needle.as_bytes();
    (1..der.len().saturating_sub(needle.len()) + 1)
        .any(|i| der[i..].starts_with(needle) && usize::from(der[i - 1]) == needle.len())
}

/// The CSRs that belong to `node`: kubelet signers, requested by the node itself or by a
/// bootstrap token for this node's name.
pub fn node_csrs(csrs: &[CertificateSigningRequest], node: &str) -> Vec<Csr> {
    let own = format!("system:node:{node}");
    let mut out: Vec<Csr> = csrs
        .iter()
        .filter(|c| c.spec.signer_name == SIGNER_CLIENT || c.spec.signer_name == SIGNER_SERVING)
        .filter(|c| {
            let user = c.spec.username.as_deref().unwrap_or_default();
            user == own
                || (user.starts_with("system:bootstrap:")
                    && pem_names_node(&c.spec.request.0, node))
        })
        .map(|c| {
            let status = c.status.clone().unwrap_or_default();
            let conditions = status.conditions.unwrap_or_default();
            let has = |t: &str| {
                conditions
                    .iter()
                    .any(|x| x.type_ == t && x.status != "False")
            };
            let state = if has("Denied") {
                CsrState::Denied
            } else if has("Failed") {
                CsrState::Failed
            } else if has("Approved") {
                if status.certificate.is_some() {
                    CsrState::Issued
                } else {
                    CsrState::Approved
                }
            } else {
                CsrState::Pending
            };
            Csr {
                name: c.metadata.name.clone().unwrap_or_default(),
                signer_name: c.spec.signer_name.clone(),
                username: c.spec.username.clone().unwrap_or_default(),
                created: c.metadata.creation_timestamp.as_ref().map(|t| t.0),
                state,
            }
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.created));
    out
}

fn node_event(e: &Event) -> NodeEvent {
    let last_seen = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0));
    NodeEvent {
        type_: e.type_.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        count: e.count.unwrap_or(1),
        last_seen,
        source: e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .or_else(|| e.reporting_component.clone()),
    }
}

/// Levenshtein distance (for close-name suggestions).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Node names close to `wanted`: small edit distance or containing it, closest first, at most 5.
pub fn suggest(wanted: &str, names: &[String]) -> Vec<String> {
    let limit = (wanted.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .map(|n| (edit_distance(wanted, n), n))
        .filter(|(d, n)| *d <= limit || n.contains(wanted) || wanted.contains(n.as_str()))
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n.clone()).collect()
}

/// Collect the API-side evidence for one node.
///
/// Errors only when nothing can be diagnosed: the API server is unreachable, our credentials
/// are rejected, or the node does not exist.
/// The service name the node log query knows the runtime by, from the Node's
/// `containerRuntimeVersion` (`containerd://2.1.4`, `cri-o://1.33.0`).
pub fn runtime_log_service(version: &str) -> Option<&'static str> {
    match version.split("://").next()? {
        "containerd" => Some("containerd"),
        "cri-o" => Some("crio"),
        "docker" => Some("docker"),
        _ => None,
    }
}

/// Reads `service`'s log since `since` through the kubelet's node log query and digests it. An
/// endpoint that is off says so (the kubelet then serves `/logs/` as a plain listing of /var/log,
/// ignoring the query, or not at all).
async fn log_query(
    client: &Client,
    node: &str,
    service: &str,
    since: Timestamp,
    timeout: Duration,
) -> Step<LogQuery> {
    use nodehealth_proto::logs::{Component, digest};
    let since_text = since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let path = format!(
        "logs/?query={service}&sinceTime={}&tailLines={LOG_QUERY_LINES}",
        since_text.replace(':', "%3A")
    );
    let request = format!("GET /api/v1/nodes/{node}/proxy/{path}");
    let disabled = |message: String, status| Step::Failed {
        failure: Failure {
            kind: FailureKind::Disabled,
            request: request.clone(),
            http_status: status,
            needs: None,
            message,
        },
    };
    let mut answer = proxy_get(client, node, &path, timeout).await;
    let mut digest_source = format!("node log query {service} (journal)");
    if matches!(&answer, Ok(b) if b.contains(FILE_BACKED)) {
        // The kubelet found the service's log in a file under /var/log, where it applies no
        // options: ask again without, and keep only the lines since `since` here.
        answer = proxy_get(client, node, &format!("logs/?query={service}"), timeout).await;
        digest_source = format!("node log query {service} (a file under /var/log)");
    }
    match answer {
        Ok(body) if is_file_listing(&body) => disabled(
            format!(
                "the kubelet's node log query is off: /logs/ answered with a listing of /var/log, not the {service} log; {}",
                ENABLE_LOG_QUERY
            ),
            Some(200),
        ),
        Ok(body) if body.trim_start().starts_with("log not found for") => Step::Failed {
            failure: Failure {
                kind: FailureKind::NotFound,
                request: request.clone(),
                http_status: Some(200),
                needs: None,
                message: format!(
                    "the kubelet found no {service} log: not in the journal, nor /var/log/{service}, /var/log/{service}.log or /var/log/{service}/{service}.log"
                ),
            },
        },
        Ok(body) => {
            let component = if service == "kubelet" {
                Component::Kubelet
            } else {
                Component::Runtime
            };
            let now = Timestamp::now().as_millisecond();
            Step::Collected {
                data: LogQuery {
                    service: service.to_string(),
                    digest: digest(
                        component,
                        digest_source,
                        body.lines().map(|l| (None, l)),
                        Some(since.as_millisecond()),
                        now,
                    ),
                },
            }
        }
        Err(f) if matches!(f.http_status, Some(404 | 405)) || log_query_refused(&f.message) => {
            disabled(
                format!(
                    "the kubelet refused its node log query (HTTP {}: {}); {}",
                    f.http_status.unwrap_or(0),
                    f.message.trim(),
                    ENABLE_LOG_QUERY
                ),
                f.http_status,
            )
        }
        Err(f) => Step::Failed { failure: f },
    }
}

/// The kubelet's answer when the service's log is a file and options were given.
const FILE_BACKED: &str = "options present and query resolved to log files";

/// At most this many of the newest lines per query.
const LOG_QUERY_LINES: u32 = 20_000;

/// The kubelet's `/logs/` file server's directory listing (what it serves when the query is off).
fn is_file_listing(body: &str) -> bool {
    let head = body.trim_start();
    head.starts_with("<pre>") || head.starts_with("<!doctype") || head.starts_with("<html")
}

/// The kubelet's own refusals of a log query when the feature or the config field is off.
fn log_query_refused(message: &str) -> bool {
    [
        "enableSystemLogQuery",
        "NodeLogQuery",
        "logs endpoint is disabled",
        "Debug endpoints are disabled",
    ]
    .iter()
    .any(|s| message.contains(s))
}

pub async fn collect(
    target: &Target,
    options: &CollectOptions,
) -> Result<(Evidence, RawCaptures), Error> {
    collect_with(target, options, |_| {}).await
}

/// [`collect`], calling `on_first_scrape` with the window's first `/metrics` scrape as soon as it
/// is in (the probe pod's start can then be given longer at once when relists are slow).
pub async fn collect_with(
    target: &Target,
    options: &CollectOptions,
    on_first_scrape: impl FnOnce(&MetricsSnapshot),
) -> Result<(Evidence, RawCaptures), Error> {
    let client = &target.client;
    let node = options.node.as_str();
    let timeout = options.timeout;

    // The Node first: it tells us at once whether the API answers and the node exists.
    let nodes: Api<Node> = Api::all(client.clone());
    let node_request = format!("GET /api/v1/nodes/{node}");
    let node_step = match step(timeout, &node_request, "get nodes", false, nodes.get(node)).await {
        Ok(n) => Step::Collected {
            data: node_info(&n),
        },
        Err(f) => match f.kind {
            FailureKind::NotFound => {
                let names = nodes
                    .list_metadata(&ListParams::default().match_any())
                    .await
                    .map(|l| {
                        l.items
                            .into_iter()
                            .filter_map(|n| n.metadata.name)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                return Err(Error::UnknownNode {
                    node: node.to_string(),
                    suggestions: suggest(node, &names),
                });
            }
            _ => match api_unusable(target, &f) {
                Some(e) => return Err(e),
                None => Step::Failed { failure: f },
            },
        },
    };

    let window = async {
        let started_at = Timestamp::now();
        let first = proxy_get(client, node, "metrics", timeout).await;
        let first_at = Timestamp::now();
        if let Ok(text) = &first {
            let scrape = crate::metrics::parse(text);
            on_first_scrape(&MetricsSnapshot::from_scrape(&scrape, text.len(), first_at));
        }
        let give_up = matches!(&first, Err(f) if matches!(f.kind, FailureKind::Forbidden | FailureKind::Unauthorized | FailureKind::NotFound));
        let second = if give_up {
            Err(first
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_else(|| timed_out("", timeout)))
        } else {
            tokio::time::sleep(options.window).await;
            proxy_get(client, node, "metrics", timeout).await
        };
        let second_at = Timestamp::now();
        (started_at, first, first_at, second, second_at)
    };

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease_request =
        format!("GET /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
    let any_version = ListParams::default().match_any();
    let all_csrs = ListParams::default();
    let field_selector = format!("involvedObject.kind=Node,involvedObject.name={node}");
    let node_events = ListParams::default().fields(&field_selector);
    let events_request = format!("LIST /api/v1/events?fieldSelector={field_selector}");
    let get_lease = || {
        step(
            timeout,
            &lease_request,
            "get leases.coordination.k8s.io in kube-node-lease",
            false,
            leases.get(node),
        )
    };
    // The lease at the window's start too: a renewTime that moved while the window lasted is a
    // heartbeat whatever the clocks say (the node lifecycle controller's own rule: it watches
    // renewTime change, pkg/controller/nodelifecycle tryUpdateNodeHealth).
    let lease_before = get_lease();
    let lease = get_lease();
    let all_leases = step(
        timeout,
        "LIST /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        "list leases.coordination.k8s.io in kube-node-lease",
        false,
        leases.list(&any_version),
    );
    let kcm_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let kcm = step(
        timeout,
        "GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager",
        "get leases.coordination.k8s.io in kube-system",
        false,
        kcm_leases.get("kube-controller-manager"),
    );
    let csr_api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csrs = step(
        timeout,
        "LIST /apis/certificates.k8s.io/v1/certificatesigningrequests",
        "list certificatesigningrequests.certificates.k8s.io",
        false,
        csr_api.list(&all_csrs),
    );
    let events_api: Api<Event> = Api::all(client.clone());
    let events = step(
        timeout,
        &events_request,
        "list events (all namespaces)",
        false,
        events_api.list(&node_events),
    );
    let healthz = async {
        let request = format!("GET /api/v1/nodes/{node}/proxy/healthz?verbose");
        let mut answer =
            proxy_get(client, node, "healthz?verbose", timeout + HANDSHAKE_GRACE).await;
        // Our own timeout, or "http2: client connection lost": the proxy sent the request on
        // the HTTP/2 connection it keeps open to the kubelet, where a frozen process and a hung
        // handler look alike (until its health ping fails: then the connection is dropped,
        // which a cut path does too). Once more on a fresh dial, where the API server's
        // handshake timeout tells a process that does not run from the rest.
        let stale_connection = |a: &Result<String, Failure>| {
            matches!(a, Err(f) if f.kind == FailureKind::Timeout
                || f.message.contains("client connection lost"))
        };
        // Within the time the metrics window takes anyway (two requests and the window).
        let deadline = tokio::time::Instant::now() + timeout * 2 + options.window;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !stale_connection(&answer) || left <= PROXY_HANDSHAKE_TIMEOUT {
                break;
            }
            let again = proxy_get(
                client,
                node,
                "healthz?verbose",
                left.min(timeout + HANDSHAKE_GRACE),
            )
            .await;
            if !matches!(&again, Err(f) if f.kind == FailureKind::Timeout) {
                answer = again;
            }
        }
        match answer {
            Ok(body) => (
                Step::Collected {
                    data: evidence::parse_healthz(200, &body),
                },
                Some(body),
            ),
            // A failing kubelet healthz is a 500 whose body lists the sub-checks.
            Err(f)
                if f.http_status == Some(500)
                    && (f.message.contains("[-]") || f.message.contains("[+]")) =>
            {
                (
                    Step::Collected {
                        data: evidence::parse_healthz(500, &f.message),
                    },
                    Some(f.message),
                )
            }
            Err(mut f) => {
                f.request = request;
                (Step::Failed { failure: f }, None)
            }
        }
    };
    let runtime = node_step
        .data()
        .and_then(|n| n.container_runtime_version.as_deref())
        .and_then(runtime_log_service)
        .unwrap_or("containerd");
    let since = Timestamp::now() - options.log_since;
    let kubelet_log = log_query(client, node, "kubelet", since, timeout);
    let runtime_log = log_query(client, node, runtime, since, timeout);
    let configz = proxy_get(client, node, "configz", timeout);
    let stats = proxy_get(client, node, "stats/summary", timeout);
    let pprof = proxy_get(client, node, "debug/pprof/goroutine?debug=2", timeout);

    // Leases, CSRs and events are read when the window ends, beside its second scrape: the end is
    // the freshest view, and a heartbeat is judged by its age at the moment it was seen (a lease
    // read at the start of a 25 s window and aged at the end looked stale on a healthy node).
    // Boxed: the joined futures are large, and a debug build polls them on a 2 MiB test stack.
    let window_then_objects = Box::pin(async {
        let (window, lease_before) = tokio::join!(window, lease_before);
        let (objects, server_time) = tokio::join!(
            async { tokio::join!(lease, all_leases, kcm, csrs, events) },
            api_server_time(client, timeout)
        );
        // The recorder's report, aged on the API server's clock.
        let recorder = crate::recorder::fetch(client, node, timeout, server_time).await;
        (
            window,
            lease_before,
            objects,
            server_time,
            Timestamp::now(),
            recorder,
        )
    });
    let (
        (
            (
                window,
                lease_before,
                (lease, all_leases, kcm, csrs, events),
                server_time,
                leases_at,
                recorder,
            ),
            healthz,
            configz,
            stats,
            pprof,
        ),
        (kubelet_log, runtime_log),
    ) = tokio::join!(
        async { tokio::join!(window_then_objects, healthz, configz, stats, pprof) },
        async { tokio::join!(kubelet_log, runtime_log) }
    );

    let collected_at = Timestamp::now();
    let mut raw = RawCaptures::default();
    let (started_at, first, first_at, second, second_at) = window;
    let snapshot =
        |result: Result<String, Failure>, at: Timestamp, keep: &mut Option<String>| match result {
            Ok(text) => {
                let scrape = metrics::parse(&text);
                let step = if scrape.samples.is_empty() {
                    Step::Failed {
                        failure: Failure {
                            kind: FailureKind::Malformed,
                            request: format!("GET /api/v1/nodes/{node}/proxy/metrics"),
                            http_status: Some(200),
                            needs: None,
                            message: format!(
                                "no metric samples in {} bytes ({} malformed lines)",
                                text.len(),
                                scrape.malformed_count
                            ),
                        },
                    }
                } else {
                    Step::Collected {
                        data: MetricsSnapshot::from_scrape(&scrape, text.len(), at),
                    }
                };
                *keep = Some(text);
                step
            }
            Err(f) => Step::Failed { failure: f },
        };
    let metrics_start = snapshot(first, first_at, &mut raw.metrics_start);
    let metrics_end = snapshot(second, second_at, &mut raw.metrics_end);

    // The other nodes' leases are aged on the API server's clock when this machine's is off.
    let node_leases =
        all_leases.map(|list| lease_overview(&list.items, node, judged_at(leases_at, server_time)));
    let (healthz, healthz_raw) = healthz;
    raw.healthz = healthz_raw;
    let configz_request = format!("GET /api/v1/nodes/{node}/proxy/configz");
    let (configz, configz_raw) = parsed(configz, &configz_request, evidence::parse_configz);
    raw.configz = configz_raw.map(|t| evidence::redact_configz(&t));
    let stats_request = format!("GET /api/v1/nodes/{node}/proxy/stats/summary");
    let (stats_summary, stats_raw) = parsed(stats, &stats_request, evidence::parse_stats_summary);
    raw.stats_summary = stats_raw;
    let goroutine_dump = match pprof {
        Ok(text) => {
            let summary = evidence::summarise_goroutines(&text);
            raw.goroutine_dump = Some(text);
            Step::Collected { data: summary }
        }
        Err(f) => Step::Failed { failure: f },
    };

    let evidence = Evidence {
        node_name: node.to_string(),
        collected_at,
        window: Window {
            requested_seconds: options.window.as_secs_f64(),
            started_at,
            ended_at: second_at,
        },
        layers: vec![Layer::Api],
        node: node_step,
        lease: to_step(lease.map(|l| {
            let mut info = lease_info(&l, leases_at);
            info.renew_time_before = lease_before
                .ok()
                .and_then(|b| b.spec.and_then(|s| s.renew_time).map(|t| t.0));
            info.server_time = server_time;
            info
        })),
        node_leases: to_step(node_leases),
        csrs: to_step(csrs.map(|list| node_csrs(&list.items, node))),
        events: to_step(events.map(|list| {
            let mut events: Vec<NodeEvent> = list.items.iter().map(node_event).collect();
            events.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
            events.truncate(30);
            events
        })),
        healthz,
        configz,
        metrics_start,
        metrics_end,
        stats_summary,
        goroutine_dump,
        controller_manager_lease: to_step(kcm.map(|l| {
            let mut info = lease_info(&l, leases_at);
            info.server_time = server_time;
            info
        })),
        kubelet_log,
        runtime_log,
        node_probe: Step::Skipped {
            reason: "--api-only".to_string(),
        },
        history: evidence::no_history(),
        recorder,
    };
    Ok((evidence, raw))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn capped(body: &[u8], cap: usize, keep: Keep) -> Result<Vec<u8>, String> {
        // Small reads, as a network delivers them.
        let reader = futures_util::io::BufReader::with_capacity(
            7,
            futures_util::io::Cursor::new(body.to_vec()),
        );
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(read_capped(reader, cap, keep))
    }

    #[test]
    fn the_api_servers_date_header_is_read() {
        let t = http_date("Sun, 06 Dec 2026 17:50:07 GMT").unwrap();
        assert_eq!(t.to_string(), "2026-12-06T17:50:07Z");
        assert!(http_date("yesterday").is_none());
    }

    #[test]
    fn bodies_are_read_with_a_cap_in_bounded_memory() {
        assert_eq!(capped(b"abc", 10, Keep::Head).unwrap(), b"abc");
        let err = capped(&[b'x'; 100], 10, Keep::Head).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
        // A log keeps its newest whole lines.
        let log: Vec<u8> = (0..50)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let tail = String::from_utf8(capped(&log, 30, Keep::Tail).unwrap()).unwrap();
        assert!(tail.ends_with("line 49\n"), "{tail}");
        assert!(tail.starts_with("line "), "{tail}");
        assert!(tail.len() <= 30, "{tail}");
    }

    fn csr(
        name: &str,
        user: &str,
        signer: &str,
        request: &[u8],
        approved: bool,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                username: Some(user.into()),
                request: ByteString(request.to_vec()),
                ..CertificateSigningRequestSpec::default()
            },
            status: approved.then(|| CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..CertificateSigningRequestCondition::default()
                }]),
                certificate: Some(ByteString(b"cert".to_vec())),
            }),
        }
    }

    fn pem_with_subject(subject: &str) -> Vec<u8> {
        // Not a real CSR: DER-ish bytes that carry the subject's CN verbatim, as a real one does.
        let mut der = vec![0x30, 0x82, 0x01, 0x0a, 0x0c, subject.len() as u8];
        der.extend_from_slice(subject.as_bytes());
        der.extend_from_slice(&[0x05, 0x00]);
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
            .into_bytes()
    }

    #[test]
    fn csrs_of_this_node_only() {
        let items = vec![
            csr("csr-own", "system:node:node-a", SIGNER_CLIENT, b"", false),
            csr(
                "csr-serving",
                "system:node:node-a",
                SIGNER_SERVING,
                b"",
                false,
            ),
            csr(
                "csr-boot",
                "system:bootstrap:abcdef",
                SIGNER_CLIENT,
                &pem_with_subject("system:node:node-a"),
                false,
            ),
            csr(
                "csr-boot-other",
                "system:bootstrap:abcdef",
                SIGNER_CLIENT,
                &pem_with_subject("system:node:node-b"),
                false,
            ),
            csr(
                "csr-other-node",
                "system:node:node-b",
                SIGNER_CLIENT,
                b"",
                false,
            ),
            csr(
                "csr-app",
                "system:node:node-a",
                "example.com/app",
                b"",
                false,
            ),
            csr("csr-done", "system:node:node-a", SIGNER_CLIENT, b"", true),
        ];
        let got = node_csrs(&items, "node-a");
        let names: Vec<&str> = got.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        for n in ["csr-own", "csr-serving", "csr-boot", "csr-done"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let done = got.iter().find(|c| c.name == "csr-done").unwrap();
        assert_eq!(done.state, CsrState::Issued);
        let own = got.iter().find(|c| c.name == "csr-own").unwrap();
        assert_eq!(own.state, CsrState::Pending);
    }

    #[test]
    fn node_name_prefix_is_not_a_match() {
        assert!(pem_names_node(
            &pem_with_subject("system:node:node-a"),
            "node-a"
        ));
        assert!(!pem_names_node(
            &pem_with_subject("system:node:node-ab"),
            "node-a"
        ));
        assert!(!pem_names_node(
            &pem_with_subject("system:node:node-b"),
            "node-a"
        ));
        assert!(!pem_names_node(b"not pem at all", "node-a"));
    }

    #[test]
    fn suggestions_by_edit_distance() {
        let names: Vec<String> = ["worker-1", "worker-2", "control-plane", "gpu-worker-17"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(suggest("worker1", &names), vec!["worker-1", "worker-2"]);
        assert_eq!(suggest("control-plan", &names), vec!["control-plane"]);
        assert!(suggest("zzzzzz", &names).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn api_errors_become_failures() {
        let status = |code: u16, message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, "x")
                    .with_code(code)
                    .boxed(),
            )
        };
        let f = failure(status(403, "forbidden"), "GET p", NEEDS_PROXY, true);
        assert_eq!(f.kind, FailureKind::Forbidden);
        assert_eq!(f.needs.as_deref(), Some("get nodes/proxy"));
        let f = failure(
            status(
                503,
                "error trying to reach service: dial tcp 10.0.0.5:10250: connect: connection refused",
            ),
            "GET p",
            NEEDS_PROXY,
            true,
        );
        assert_eq!(f.kind, FailureKind::KubeletUnreachable);
        let f = failure(status(503, "etcd down"), "GET n", "get nodes", false);
        assert_eq!(f.kind, FailureKind::HttpError);
        let f = failure(
            status(404, "404 page not found"),
            "GET pprof",
            NEEDS_PROXY,
            true,
        );
        assert_eq!(f.kind, FailureKind::NotFound);
        assert_eq!(f.needs, None);
    }
}
