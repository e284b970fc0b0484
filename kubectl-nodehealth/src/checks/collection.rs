//! What the collection itself could not do, and what its failures say: RBAC denials, a kubelet the
//! API server cannot reach, answers that never came.

use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, Failure, FailureKind};

/// Collection steps by name, for failure reporting.
fn steps(e: &Evidence) -> Vec<(&'static str, Option<&Failure>)> {
    vec![
        ("node", e.node.failure()),
        ("lease", e.lease.failure()),
        ("node-leases", e.node_leases.failure()),
        ("csrs", e.csrs.failure()),
        ("events", e.events.failure()),
        ("healthz", e.healthz.failure()),
        ("configz", e.configz.failure()),
        ("metrics-start", e.metrics_start.failure()),
        ("metrics-end", e.metrics_end.failure()),
        ("stats-summary", e.stats_summary.failure()),
        ("goroutine-dump", e.goroutine_dump.failure()),
        (
            "controller-manager-lease",
            e.controller_manager_lease.failure(),
        ),
        ("kubelet-log", e.kubelet_log.failure()),
        ("runtime-log", e.runtime_log.failure()),
    ]
}

/// How a dial from the API server to the kubelet failed, from the proxy's error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialError {
    /// The node answered but nothing listens on the kubelet port: the kubelet is not running.
    Refused,
    /// The dial timed out: the node or the path to it is down.
    Timeout,
    /// Connected, but the TLS handshake timed out (the API server's proxy gives up at 10 s): the
    /// kernel accepts on the kubelet's port, yet the process does not run at all — stopped,
    /// frozen, or starved to a standstill. (A kubelet cut off from the API server still shakes
    /// hands: its TLS needs nothing from the API server.)
    NoHandshake,
    /// Connected and shook hands, but no answer (response headers timed out, reset, EOF): the
    /// kubelet serves its port but its handlers hang — stuck, starved, or unable to authorize.
    NoResponse,
    /// No route to the node.
    NoRoute,
    /// Something else.
    Other,
}

/// Classify a node-proxy failure message.
pub fn dial_error(message: &str) -> DialError {
    let m = message.to_lowercase();
    if m.contains("connection refused") {
        DialError::Refused
    } else if m.contains("tls handshake timeout") {
        DialError::NoHandshake
    } else if m.contains("awaiting response headers")
        || m.contains("connection reset")
        || m.ends_with("eof")
    {
        DialError::NoResponse
    } else if m.contains("no route to host") || m.contains("network is unreachable") {
        DialError::NoRoute
    } else if m.contains("timeout") || m.contains("timed out") || m.contains("deadline exceeded") {
        DialError::Timeout
    } else {
        DialError::Other
    }
}

/// The kubelet's own answer when its webhook authorization cannot ask the API server:
/// "Authorization error (user=kube-apiserver-kubelet-client, verb=get, resource=nodes,
/// subresource=healthz)" with HTTP 500 (seen on v1.35.4 with a rejected client certificate).
pub fn is_kubelet_authz_failure(f: &Failure) -> bool {
    f.request.contains("/proxy/")
        && f.http_status == Some(500)
        && f.message.contains("Authorization error (user=")
}

/// The kubelet endpoints whose handlers ask the container runtime (CRI-backed metrics collectors,
/// the summary's pod and container stats).
const RUNTIME_DEPENDENT: &[&str] = &["metrics-start", "metrics-end", "stats-summary"];
/// Endpoints that need nothing from the runtime.
const RUNTIME_INDEPENDENT: &[&str] = &["healthz", "configz"];

/// A request the kubelet accepted and never answered: our own timeout, or the proxy's "no
/// response" (the kubelet shook hands, then nothing).
fn is_hang(f: &Failure) -> bool {
    f.kind == FailureKind::Timeout
        || (f.kind == FailureKind::KubeletUnreachable
            && dial_error(&f.message) == DialError::NoResponse)
}

/// Whether this collection step got the kubelet's answer.
fn answered(e: &Evidence, step: &str) -> bool {
    match step {
        "healthz" => e.healthz.data().is_some(),
        "configz" => e.configz.data().is_some(),
        _ => false,
    }
}

/// One finding per kind of collection failure (RBAC denials name the permission).
pub fn collection_failures(e: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    let ready_true = e
        .node
        .data()
        .and_then(|n| n.condition("Ready"))
        .is_some_and(|c| c.status == "True");
    let failed = steps(e);
    // RBAC: group by the permission needed.
    let mut needs: Vec<(String, Vec<&str>)> = Vec::new();
    for (step, failure) in &failed {
        let Some(f) = failure else { continue };
        if matches!(f.kind, FailureKind::Forbidden | FailureKind::Unauthorized) {
            let need = f.needs.clone().unwrap_or_else(|| "credentials".into());
            match needs.iter_mut().find(|(n, _)| *n == need) {
                Some((_, list)) => list.push(step),
                None => needs.push((need, vec![step])),
            }
        }
    }
    for (need, list) in needs {
        out.push(
            Finding::new(
                FindingId::Access(list[0].to_string()),
                Domain::Collection,
                Severity::Unknown,
                format!("not checked ({}): needs {need}", list.join(", ")),
            )
            .fix(format!(
                "grant your user `{need}` (RBAC) to run these checks"
            )),
        );
    }
    let proxy: Vec<(&str, &Failure)> = failed
        .iter()
        .filter_map(|(s, f)| f.map(|f| (*s, f)))
        .filter(|(_, f)| f.request.contains("/proxy/"))
        .collect();
    // healthz must have answered (every kubelet serves it, and needs nothing to answer it), and
    // none of the other runtime-independent endpoints may hang with the rest.
    let independent_answered = answered(e, "healthz")
        && !proxy
            .iter()
            .any(|(s, f)| RUNTIME_INDEPENDENT.contains(s) && is_hang(f));
    let waits_on_runtime =
        |s: &str, f: &Failure| independent_answered && RUNTIME_DEPENDENT.contains(&s) && is_hang(f);
    let unreachable: Vec<_> = proxy
        .iter()
        .filter(|(s, f)| f.kind == FailureKind::KubeletUnreachable && !waits_on_runtime(s, f))
        .collect();
    if let Some((_, first)) = unreachable.first() {
        let dial = dial_error(&first.message);
        let meaning = match dial {
            DialError::Refused => {
                "connection refused: the node answers but nothing listens on the kubelet port (kubelet not running)"
            }
            DialError::Timeout => "dial timed out: the node or the network path to it is down",
            DialError::NoHandshake => {
                "its port accepts connections but the process never completes a TLS handshake (stopped, frozen, or starved to a standstill)"
            }
            DialError::NoResponse => {
                "the kubelet accepts connections but does not answer (stuck or starved)"
            }
            DialError::NoRoute => "no route to the node: network partition or node down",
            DialError::Other => "the API server cannot reach the kubelet",
        };
        out.push(
            Finding::new(
                FindingId::KubeletUnreachable,
                Domain::Kubelet,
                if ready_true {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                format!("API server cannot reach the kubelet: {meaning}"),
            )
            .with(format!(
                "{} (HTTP {}): {}",
                first.request,
                first.http_status.unwrap_or(0),
                first.message
            ))
            .with(format!(
                "failed the same way: {}",
                unreachable
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
    }
    // A log query over a big file may take long on a healthy kubelet: not a slow kubelet.
    let hung: Vec<_> = proxy
        .iter()
        .filter(|(s, f)| !s.ends_with("-log") && is_hang(f))
        .collect();
    // Which endpoints hang tells where the kubelet waits: /metrics and /stats/summary ask the
    // runtime (their collectors list pods and containers through CRI), /healthz and /configz do
    // not. Those answering while these hang is a kubelet waiting on its runtime, not a starved
    // one.
    let (on_runtime, slow): (Vec<_>, Vec<_>) =
        hung.into_iter().partition(|(s, f)| waits_on_runtime(s, f));
    if let Some((_, first)) = on_runtime.first() {
        out.push(
            Finding::new(
                FindingId::KubeletWaitsOnRuntime,
                Domain::Runtime,
                Severity::Warning,
                format!(
                    "the kubelet's endpoints that ask the runtime hang ({}) while those that do not answer ({}): the kubelet is waiting on its container runtime",
                    on_runtime.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", "),
                    RUNTIME_INDEPENDENT
                        .iter()
                        .filter(|s| answered(e, s))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with(first.message.clone())
            .with("/metrics and /stats/summary gather pod and container data through CRI; /healthz and /configz need nothing from the runtime")
            .fix("check the runtime on the node: `time crictl ps` (a hang is the runtime)"),
        );
    }
    if !slow.is_empty() {
        out.push(
            Finding::new(
                FindingId::KubeletSlow,
                Domain::Kubelet,
                Severity::Warning,
                format!(
                    "the kubelet did not answer in time through the API server ({})",
                    slow.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
                ),
            )
            .with(slow[0].1.message.clone())
            .fix("an alive but unresponsive kubelet is starved or deadlocked: keep the goroutine dump if one was captured"),
        );
    }
    let authz: Vec<_> = proxy
        .iter()
        .filter(|(_, f)| is_kubelet_authz_failure(f))
        .collect();
    if let Some((_, first)) = authz.first() {
        out.push(
            Finding::new(
                FindingId::KubeletAuthz,
                Domain::Certificates,
                if ready_true { Severity::Warning } else { Severity::Critical },
                "the kubelet answers but cannot authorize the API server's requests: its own calls to the API server (SubjectAccessReview) fail — its credentials are rejected or it cannot reach the API server",
            )
            .with(format!(
                "{} (HTTP {}): {}",
                first.request,
                first.http_status.unwrap_or(0),
                first.message
            ))
            .with(format!(
                "failed the same way: {}",
                authz.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
            )),
        );
    }
    for (step, failure) in &failed {
        let Some(f) = failure else { continue };
        let handled = is_kubelet_authz_failure(f)
            || f.kind == FailureKind::Disabled
            || matches!(
                f.kind,
                FailureKind::Forbidden
                    | FailureKind::Unauthorized
                    | FailureKind::KubeletUnreachable
            )
            || (f.kind == FailureKind::Timeout
                && f.request.contains("/proxy/")
                && !step.ends_with("-log"))
            || (f.kind == FailureKind::NotFound
                && matches!(
                    *step,
                    "lease" | "goroutine-dump" | "controller-manager-lease"
                ));
        if handled {
            continue;
        }
        let severity = if f.kind == FailureKind::Malformed {
            Severity::Warning
        } else {
            Severity::Unknown
        };
        out.push(
            Finding::new(
                FindingId::Collection(step.to_string()),
                Domain::Collection,
                severity,
                format!("{step} not collected: {:?}", f.kind).to_lowercase(),
            )
            .with(format!(
                "{} (HTTP {}): {}",
                f.request,
                f.http_status.map_or("-".into(), |s| s.to_string()),
                f.message
            )),
        );
    }
    for (label, m) in [
        ("start", e.metrics_start.data()),
        ("end", e.metrics_end.data()),
    ] {
        if let Some(m) = m
            && m.malformed_lines > 0
        {
            let mut f = Finding::new(
                FindingId::MetricsMalformed,
                Domain::Collection,
                Severity::Warning,
                format!(
                    "{} malformed lines in the kubelet's /metrics ({label} scrape); they were skipped",
                    m.malformed_lines
                ),
            );
            for ex in &m.malformed_examples {
                f = f.with(ex.clone());
            }
            out.push(f);
            break;
        }
    }
    out
}
