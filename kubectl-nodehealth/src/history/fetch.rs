//! Reading the history: range queries to the user's Prometheus, directly by URL or through the
//! API server's service proxy (`auto` finds the well-known kube-prometheus, prometheus-operator
//! and Helm chart services, so nothing extra needs exposing).
//!
//! Bounded: one range query per signal (at most a few hundred points each: the step grows with
//! `--since`), each answer capped in size and in time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::{
    History, SIGNALS, SeriesStatus, SignalHistory, Source, analyse, median_interval, query_for,
    refine_onset, signal,
};
use crate::collect::Target;
use crate::evidence::{Failure, FailureKind, Step};

/// `--prometheus` and `--since`.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// `auto`, a URL (`http://localhost:9090`), or a service
    /// (`monitoring/prometheus-k8s:9090`, reached through the API server).
    pub prometheus: String,
    /// How far back.
    pub since: Duration,
    /// Per-request bound.
    pub timeout: Duration,
}

/// At most this many points per signal.
const MAX_POINTS: u64 = 240;
/// The least step (a finer one than the usual 15-30 s scrape interval shows nothing more).
const MIN_STEP_SECONDS: u64 = 15;
/// The greatest answer read for one node (240 points of one series is a few KiB; several jobs a
/// few more).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// The greatest answer read for the fleet (~7 KiB per node at 240 points: some 9,000 nodes).
const MAX_FLEET_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The step for a range: at least 15 s, at most [`MAX_POINTS`] points.
pub fn step_for(since: Duration) -> u64 {
    since.as_secs().div_ceil(MAX_POINTS).max(MIN_STEP_SECONDS)
}

/// Where the Prometheus is.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// A URL this machine reaches (`http://` or `https://`).
    Url(String),
    /// A service, through the API server's service proxy.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Port name or number.
        port: String,
    },
}

impl Endpoint {
    /// `--prometheus` as given (other than `auto`).
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            let url: http::Uri = text
                .parse()
                .map_err(|e| format!("--prometheus {text:?}: not a URL ({e})"))?;
            if url.host().is_none() {
                return Err(format!("--prometheus {text:?}: the URL has no host"));
            }
            return Ok(Endpoint::Url(text.trim_end_matches('/').to_string()));
        }
        let shape = || {
            format!(
                "--prometheus {text:?}: give `auto`, a URL (http://localhost:9090) or a service as \
                 NAMESPACE/NAME:PORT (monitoring/prometheus-k8s:web)"
            )
        };
        let (namespace, rest) = text.split_once('/').ok_or_else(shape)?;
        let (name, port) = rest.split_once(':').unwrap_or((rest, ""));
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !dns(namespace) || !dns(name) || (!port.is_empty() && !dns(port)) {
            return Err(shape());
        }
        Ok(Endpoint::Service {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
        })
    }

    /// As the report names it.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Url(u) => u.clone(),
            Endpoint::Service {
                namespace,
                name,
                port,
            } if port.is_empty() => format!("service {namespace}/{name} (through the API server)"),
            Endpoint::Service {
                namespace,
                name,
                port,
            } => format!("service {namespace}/{name}:{port} (through the API server)"),
        }
    }
}

/// An HTTP GET of a Prometheus API path (with its query string), the body as text.
async fn get(
    target: &Target,
    endpoint: &Endpoint,
    path: &str,
    timeout: Duration,
    cap: usize,
) -> Result<String, String> {
    let fut = async {
        match endpoint {
            Endpoint::Url(base) => get_url(&format!("{base}{path}"), cap).await,
            Endpoint::Service {
                namespace,
                name,
                port,
            } => {
                let port = if port.is_empty() {
                    String::new()
                } else {
                    format!(":{port}")
                };
                let uri =
                    format!("/api/v1/namespaces/{namespace}/services/{name}{port}/proxy{path}");
                let request = http::Request::get(&uri)
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                let reader = target.client.request_stream(request).await.map_err(|e| match &e {
                    kube::Error::Api(s) if s.code == 403 => format!(
                        "forbidden: reading through the service proxy needs `get services/proxy` in {namespace} ({})",
                        s.message
                    ),
                    kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
                    _ => e.to_string(),
                })?;
                let body =
                    crate::collect::read_capped(reader, cap, crate::collect::Keep::Head).await?;
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs_f64())),
    }
}

async fn get_url(url: &str, cap: usize) -> Result<String, String> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let builder = Client::builder(TokioExecutor::new());
    // Plain HTTP needs no CA certificates (a port-forward to localhost, a machine without them).
    let answer = if url.starts_with("http://") {
        let client: Client<_, Full<Bytes>> =
            builder.build(hyper_util::client::legacy::connect::HttpConnector::new());
        client.request(request).await
    } else {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("reading the system's CA certificates: {e}"))?
            .https_only()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> = builder.build(https);
        client.request(request).await
    };
    let response = answer.map_err(|e| crate::collect::chain(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), cap)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() && !text.trim_start().starts_with('{') {
        return Err(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(text)
}

/// The query string of a range query.
fn range_path(query: &str, start: i64, end: i64, step: u64) -> String {
    let qs: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .append_pair("start", &start.to_string())
        .append_pair("end", &end.to_string())
        .append_pair("step", &step.to_string())
        .finish();
    format!("/api/v1/query_range?{qs}")
}

fn instant_path(query: &str, at: i64) -> String {
    let qs: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .append_pair("time", &at.to_string())
        .finish();
    format!("/api/v1/query?{qs}")
}

/// An instant query's `data.result`.
async fn instant(
    target: &Target,
    endpoint: &Endpoint,
    query: &str,
    at: i64,
    timeout: Duration,
) -> Result<Vec<Value>, String> {
    let body = get(
        target,
        endpoint,
        &instant_path(query, at),
        timeout,
        MAX_ANSWER_BYTES,
    )
    .await?;
    result_of(&body)
}

/// The `data.result` of a Prometheus API answer, or its error.
pub fn result_of(body: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "not a Prometheus API answer ({e}): {}",
            body.chars().take(120).collect::<String>()
        )
    })?;
    if v["status"] != "success" {
        return Err(format!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("the query failed")
        ));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The points of a matrix answer's series, merged (the worse value per timestamp when several
/// series came back) and sorted.
pub fn points_of(result: &[Value], worse: super::Worse) -> Vec<(i64, f64)> {
    let mut merged: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
    for series in result {
        for p in series["values"].as_array().into_iter().flatten() {
            let (Some(t), Some(v)) = (
                p[0].as_f64(),
                p[1].as_str().and_then(|s| s.parse::<f64>().ok()),
            ) else {
                continue;
            };
            if !v.is_finite() {
                continue;
            }
            let t = t as i64;
            merged
                .entry(t)
                .and_modify(|old| {
                    *old = match worse {
                        super::Worse::Above => old.max(v),
                        super::Worse::Below => old.min(v),
                    }
                })
                .or_insert(v);
        }
    }
    merged.into_iter().collect()
}

/// Finds a Prometheus among the cluster's services: the well-known names first, then any service
/// that calls itself Prometheus; each candidate confirmed by its build-info endpoint.
async fn discover(target: &Target, timeout: Duration) -> Result<(Endpoint, String), String> {
    const KNOWN: &[(&str, &str)] = &[
        ("prometheus-k8s", "kube-prometheus"),
        ("kube-prometheus-stack-prometheus", "kube-prometheus-stack"),
        ("prometheus-operated", "prometheus-operator"),
        ("prometheus-server", "the prometheus Helm chart"),
        ("prometheus", "a service named prometheus"),
    ];
    let services: Api<Service> = Api::all(target.client.clone());
    let list = tokio::time::timeout(timeout, services.list(&ListParams::default()))
        .await
        .map_err(|_| {
            format!(
                "listing services: no answer within {}s",
                timeout.as_secs_f64()
            )
        })?
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "`--prometheus auto` needs to list services in all namespaces ({}); give the \
                 service as NAMESPACE/NAME:PORT or a URL instead",
                s.message
            ),
            _ => format!("listing services: {e}"),
        })?;
    let mut candidates: Vec<(usize, Endpoint, String)> = Vec::new();
    for s in &list.items {
        let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
            continue;
        };
        let labelled = s.metadata.labels.as_ref().is_some_and(|l| {
            l.get("app.kubernetes.io/name").map(String::as_str) == Some("prometheus")
                || l.get("app").map(String::as_str) == Some("prometheus")
        });
        let rank = KNOWN
            .iter()
            .position(|(n, _)| n == name || name.ends_with(&format!("-{n}")))
            .or_else(|| (labelled || name.ends_with("-prometheus")).then_some(KNOWN.len()));
        let Some(rank) = rank else { continue };
        let ports = s
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| {
                matches!(p.name.as_deref(), Some("web" | "http-web" | "http")) || p.port == 9090
            })
            .or(ports.first())
            .map(|p| p.name.clone().unwrap_or_else(|| p.port.to_string()))
            .unwrap_or_default();
        let why = KNOWN
            .get(rank)
            .map(|(_, what)| format!("{what}'s service"))
            .unwrap_or_else(|| "a service labelled or named prometheus".into());
        candidates.push((
            rank,
            Endpoint::Service {
                namespace: ns.clone(),
                name: name.clone(),
                port,
            },
            why,
        ));
    }
    candidates.sort_by_key(|(rank, _, _)| *rank);
    let mut tried = Vec::new();
    for (_, endpoint, why) in candidates.into_iter().take(5) {
        match get(
            target,
            &endpoint,
            "/api/v1/status/buildinfo",
            timeout,
            64 * 1024,
        )
        .await
        {
            Ok(body) if body.contains("\"version\"") => {
                return Ok((
                    endpoint.clone(),
                    format!("{why}, found by --prometheus auto"),
                ));
            }
            Ok(_) => tried.push(format!("{}: not a Prometheus API", endpoint.describe())),
            Err(e) => tried.push(format!("{}: {e}", endpoint.describe())),
        }
    }
    if tried.is_empty() {
        return Err(
            "no Prometheus service found (looked for prometheus-k8s, prometheus-operated, \
             *-kube-prometheus-prometheus, prometheus-server and services labelled \
             app.kubernetes.io/name=prometheus); give it as NAMESPACE/NAME:PORT or a URL"
                .into(),
        );
    }
    Err(format!(
        "no service answered as Prometheus: {}",
        tried.join("; ")
    ))
}

/// How the kubelet's series are matched: by the node's name where the scrape labels it (as
/// kube-prometheus does), else by its address in `instance`. Returns the matcher and notes (the
/// scrape jobs found, and when several report this kubelet).
async fn kubelet_matcher(
    target: &Target,
    endpoint: &Endpoint,
    node: &str,
    addresses: &[String],
    (at, range): (i64, u64),
    timeout: Duration,
) -> Result<(Option<String>, Vec<String>), String> {
    let mut candidates = vec![format!("node=\"{}\"", super::escape_label_value(node))];
    for a in addresses {
        let escaped = a.replace('.', "\\\\.");
        candidates.push(format!("instance=~\"{escaped}(:[0-9]+)?\""));
    }
    candidates.push(format!(
        "instance=~\"{}(:[0-9]+)?\"",
        super::escape_label_value(node).replace('.', "\\\\.")
    ));
    for m in candidates {
        let q =
            // Over the whole range: a kubelet that stopped has no series *now* (a failed scrape
            // marks them stale), and its history is what is asked for.
            format!("count by (job, instance) (count_over_time(kubelet_pleg_relist_duration_seconds_count{{{m}}}[{range}s]))");
        let result = instant(target, endpoint, &q, at, timeout).await?;
        if result.is_empty() {
            continue;
        }
        let jobs: Vec<String> = result
            .iter()
            .map(|r| {
                format!(
                    "job={} instance={}",
                    r["metric"]["job"].as_str().unwrap_or("?"),
                    r["metric"]["instance"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let mut notes = vec![format!(
            "the kubelet's series matched by {m}: {}",
            jobs.join(", ")
        )];
        // Only the kubelet's own scrape jobs: other exporters on the same address or node
        // (node-exporter's :9100) answer `up` too.
        let mut names: Vec<String> = result
            .iter()
            .filter_map(|r| r["metric"]["job"].as_str())
            .map(regex_literal)
            .collect();
        names.sort();
        names.dedup();
        let m = if names.is_empty() {
            m
        } else {
            format!("{m},job=~\"{}\"", names.join("|"))
        };
        if jobs.len() > 1 {
            notes.push(format!(
                "ambiguous: {} scrapes report this kubelet; each signal shows the worst of them",
                jobs.len()
            ));
        }
        return Ok((Some(m), notes));
    }
    Ok((
        None,
        vec![format!(
            "no series of {node}'s kubelet (kubelet_pleg_relist_duration_seconds_count) by its name \
             in a `node` label or by its address in `instance`: this Prometheus does not scrape it, \
             or labels it otherwise"
        )],
    ))
}

/// A label value as a literal inside a PromQL regex string: the regex's metacharacters escaped,
/// then the string's backslashes and quotes.
fn regex_literal(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        } else if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads the node's history. The raw range answers come back beside it for the bundle.
pub async fn history(
    target: &Target,
    node: &str,
    addresses: &[String],
    o: &HistoryOptions,
) -> (Step<History>, Vec<(String, String)>) {
    let failed = |request: String, message: String| {
        (
            Step::Failed {
                failure: Failure {
                    kind: FailureKind::HttpError,
                    request,
                    http_status: None,
                    needs: None,
                    message,
                },
            },
            Vec::new(),
        )
    };
    let (endpoint, found_by) = if o.prometheus == "auto" {
        match discover(target, o.timeout).await {
            Ok((e, why)) => (e, Some(why)),
            Err(m) => return failed("--prometheus auto".into(), m),
        }
    } else {
        match Endpoint::parse(&o.prometheus) {
            Ok(e) => (e, None),
            Err(m) => return failed(format!("--prometheus {}", o.prometheus), m),
        }
    };
    let end = Timestamp::now().as_second();
    let step = step_for(o.since);
    let start = end - o.since.as_secs() as i64;
    let (matcher, mut notes) = match kubelet_matcher(
        target,
        &endpoint,
        node,
        addresses,
        (end, o.since.as_secs()),
        o.timeout,
    )
    .await
    {
        Ok(m) => m,
        Err(m) => return failed(format!("{} (the kubelet's series)", endpoint.describe()), m),
    };
    let asks = SIGNALS.iter().map(|s| {
        let endpoint = &endpoint;
        let matcher = matcher.clone();
        async move {
            let Some(m) = matcher.as_deref().or(match s.source {
                Source::KubeStateMetrics => Some(""),
                _ => None,
            }) else {
                return (
                    s,
                    String::new(),
                    Err("no kubelet series to match".to_string()),
                );
            };
            let q = query_for(s, m, node, &super::rate_window(step));
            let answer = get(
                target,
                endpoint,
                &range_path(&q, start, end, step),
                o.timeout,
                MAX_ANSWER_BYTES,
            )
            .await;
            (s, q, answer)
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut raw = Vec::new();
    let mut signals = Vec::new();
    for (s, query, answer) in answers {
        let (status, points) = match answer.and_then(|body| {
            let r = result_of(&body);
            raw.push((s.id.to_string(), body));
            r
        }) {
            Ok(r) if r.is_empty() => (SeriesStatus::Missing, Vec::new()),
            Ok(r) => (SeriesStatus::Found, points_of(&r, s.worse)),
            Err(m) if m == "no kubelet series to match" => (SeriesStatus::Missing, Vec::new()),
            Err(message) => (SeriesStatus::Failed { message }, Vec::new()),
        };
        let timeline = analyse(&points, s.threshold, s.worse, (start, end), step as i64);
        signals.push(SignalHistory {
            id: s.id.to_string(),
            query,
            status,
            threshold: s.threshold,
            worse: s.worse,
            points,
            timeline,
        });
    }
    let scrape = match &matcher {
        Some(m) => scrape_interval(target, &endpoint, m, end, o.timeout).await,
        None => None,
    };
    match scrape {
        Some(scrape) => {
            let (fine, answers) = refine(
                target,
                &endpoint,
                (node, matcher.as_deref().unwrap_or("")),
                &mut signals,
                (step, scrape),
                o.timeout,
            )
            .await;
            if fine > 0 {
                notes.push(format!(
                    "{fine} onset(s) found again to within one scrape ({scrape} s): one point a \
                     second before the onset at the step, rates over two scrapes"
                ));
            }
            raw.extend(answers);
        }
        None if matcher.is_some() => notes.push(format!(
            "the scrape interval could not be read from the kubelet's `up`: onsets are to the \
             step ({step} s)"
        )),
        None => {}
    }
    let all_failed = signals
        .iter()
        .all(|s| matches!(s.status, SeriesStatus::Failed { .. }));
    if all_failed && let Some(SeriesStatus::Failed { message }) = signals.first().map(|s| &s.status)
    {
        return failed(endpoint.describe(), message.clone());
    }
    (
        Step::Collected {
            data: History {
                source: endpoint.describe(),
                found_by,
                start: Timestamp::from_second(start).unwrap_or(Timestamp::UNIX_EPOCH),
                end: Timestamp::from_second(end).unwrap_or(Timestamp::UNIX_EPOCH),
                step_seconds: step as f64,
                scrape_seconds: scrape.map(|s| s as f64),
                matcher,
                notes,
                signals,
            },
        },
        raw,
    )
}

/// Seconds between the kubelet's scrapes: the median spacing of its `up` samples over the last ten
/// minutes (raw samples: an instant query of a range selector).
async fn scrape_interval(
    target: &Target,
    endpoint: &Endpoint,
    matcher: &str,
    at: i64,
    timeout: Duration,
) -> Option<i64> {
    let q = format!(r#"up{{{matcher},metrics_path=~"(/metrics)?"}}[10m]"#);
    let result = instant(target, endpoint, &q, at, timeout).await.ok()?;
    let times: Vec<f64> = result
        .first()?
        .get("values")?
        .as_array()?
        .iter()
        .filter_map(|p| p[0].as_f64())
        .collect();
    median_interval(&times).map(|s| (s.round() as i64).max(1))
}

/// Finds each onset again to within one scrape ([`refine_onset`]): one range query per degraded
/// signal, a point a second over the rate window and a step before its onset at the step (some
/// 135 points), its rates over two scrapes. Returns how many onsets moved, and the answers for the
/// bundle (`<signal>.onset`).
async fn refine(
    target: &Target,
    endpoint: &Endpoint,
    (node, matcher): (&str, &str),
    signals: &mut [SignalHistory],
    (step, scrape): (u64, i64),
    timeout: Duration,
) -> (usize, Vec<(String, String)>) {
    let window = format!("{}s", 2 * scrape);
    let asks = signals.iter().enumerate().filter_map(|(i, s)| {
        let spec = signal(&s.id)?;
        let coarse = s.timeline.onset?.as_second();
        if s.status != SeriesStatus::Found || s.timeline.degraded_from_start {
            return None;
        }
        let q = query_for(spec, matcher, node, &window);
        let from = coarse - step.max(120) as i64 - step as i64;
        let path = range_path(&q, from, coarse, 1);
        let window_rate = spec.query.contains("$W");
        Some(async move {
            let answer = get(target, endpoint, &path, timeout, MAX_ANSWER_BYTES).await;
            (i, coarse, window_rate, answer)
        })
    });
    let answers = futures_util::future::join_all(asks.collect::<Vec<_>>()).await;
    let mut moved = 0;
    let mut raw = Vec::new();
    for (i, coarse, rate, answer) in answers {
        let s = &mut signals[i];
        let Ok(body) = answer else { continue };
        if let Ok(result) = result_of(&body) {
            let fine = points_of(&result, s.worse);
            if let Some(at) = refine_onset(&fine, (s.threshold, s.worse), coarse, scrape, rate)
                .and_then(|t| Timestamp::from_second(t).ok())
            {
                s.timeline.onset = Some(at);
                s.timeline.onset_refined = true;
                moved += 1;
            }
        }
        raw.push((format!("{}.onset", s.id), body));
    }
    (moved, raw)
}

/// The fleet's signals for `scan --prometheus`: one range query each for every node at once
/// (grouped by the `node` label that kube-prometheus puts on the kubelet's series), so the number
/// of queries does not grow with the nodes.
const FLEET: &[(&str, &str)] = &[
    (
        "relist-seconds",
        r#"sum by (node) (rate(kubelet_pleg_relist_duration_seconds_sum{node!=""}[$W])) / sum by (node) (rate(kubelet_pleg_relist_duration_seconds_count{node!=""}[$W]))"#,
    ),
    (
        "runtime-list-seconds",
        r#"sum by (node) (rate(kubelet_runtime_operations_duration_seconds_sum{node!="",operation_type=~"list_podsandbox|list_containers"}[$W])) / sum by (node) (rate(kubelet_runtime_operations_duration_seconds_count{node!="",operation_type=~"list_podsandbox|list_containers"}[$W]))"#,
    ),
    (
        "pleg-last-seen-seconds",
        r#"max by (node) (time() - kubelet_pleg_last_seen_seconds{node!=""})"#,
    ),
];

/// Every node's timelines of the [`FLEET`] signals, by node name; and where they came from.
pub async fn fleet(
    target: &Target,
    o: &HistoryOptions,
) -> Result<
    (
        String,
        std::collections::BTreeMap<String, Vec<SignalHistory>>,
    ),
    String,
> {
    let endpoint = if o.prometheus == "auto" {
        discover(target, o.timeout).await?.0
    } else {
        Endpoint::parse(&o.prometheus)?
    };
    let end = Timestamp::now().as_second();
    let step = step_for(o.since);
    let start = end - o.since.as_secs() as i64;
    let asks = FLEET.iter().map(|(id, q)| {
        let endpoint = &endpoint;
        async move {
            let q = q.replace("$W", &super::rate_window(step));
            let body = get(
                target,
                endpoint,
                &range_path(&q, start, end, step),
                o.timeout,
                MAX_FLEET_ANSWER_BYTES,
            )
            .await;
            (*id, q, body.and_then(|b| result_of(&b)))
        }
    });
    let mut nodes: std::collections::BTreeMap<String, Vec<SignalHistory>> = Default::default();
    for (id, query, answer) in futures_util::future::join_all(asks).await {
        let spec = super::signal(id).expect("fleet signals are in SIGNALS");
        for series in answer? {
            let Some(node) = series["metric"]["node"].as_str() else {
                continue;
            };
            let points = points_of(std::slice::from_ref(&series), spec.worse);
            nodes
                .entry(node.to_string())
                .or_default()
                .push(SignalHistory {
                    id: id.to_string(),
                    query: query.clone(),
                    status: SeriesStatus::Found,
                    threshold: spec.threshold,
                    worse: spec.worse,
                    timeline: analyse(
                        &points,
                        spec.threshold,
                        spec.worse,
                        (start, end),
                        step as i64,
                    ),
                    points,
                });
        }
    }
    Ok((endpoint.describe(), nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ones_say_the_shapes() {
        assert_eq!(
            Endpoint::parse("http://localhost:9090/").unwrap(),
            Endpoint::Url("http://localhost:9090".into())
        );
        assert_eq!(
            Endpoint::parse("monitoring/prometheus-k8s:web").unwrap(),
            Endpoint::Service {
                namespace: "monitoring".into(),
                name: "prometheus-k8s".into(),
                port: "web".into()
            }
        );
        let e = Endpoint::parse("prometheus").unwrap_err();
        assert!(e.contains("NAMESPACE/NAME:PORT"), "{e}");
        assert!(Endpoint::parse("monitoring/Prom:web").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }

    #[test]
    fn the_step_bounds_the_points() {
        assert_eq!(step_for(Duration::from_secs(3600)), 15);
        assert_eq!(step_for(Duration::from_secs(86400)), 360);
        assert_eq!(step_for(Duration::from_secs(60)), 15);
    }

    #[test]
    fn answers_are_read_merged_and_errors_named() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"job":"a"},"values":[[100,"1"],[115,"3"]]},
            {"metric":{"job":"b"},"values":[[100,"2"],[130,"NaN"]]}]}}"#;
        let r = result_of(body).unwrap();
        assert_eq!(
            points_of(&r, super::super::Worse::Above),
            [(100, 2.0), (115, 3.0)]
        );
        assert_eq!(
            points_of(&r, super::super::Worse::Below),
            [(100, 1.0), (115, 3.0)]
        );
        let err = result_of(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
            .unwrap_err();
        assert_eq!(err, "bad_data: parse error");
        assert!(
            result_of("<html>")
                .unwrap_err()
                .starts_with("not a Prometheus API answer")
        );
    }

    #[test]
    fn job_names_become_regex_literals_in_a_promql_string() {
        assert_eq!(regex_literal("kubelet"), "kubelet");
        assert_eq!(regex_literal("a.b"), r"a\\.b");
        assert_eq!(regex_literal(r#"x"y"#), r#"x\"y"#);
    }

    #[test]
    fn range_queries_are_url_encoded() {
        let p = range_path(r#"up{node="a b"}"#, 1, 2, 15);
        assert_eq!(
            p,
            "/api/v1/query_range?query=up%7Bnode%3D%22a+b%22%7D&start=1&end=2&step=15"
        );
    }
}
