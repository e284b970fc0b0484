//! `kubectl nodehealth alerts`: Prometheus alerting rules with the thresholds the checks use, so a
//! node is flagged before the kubelet's own 3-minute PLEG limit turns it NotReady.
//!
//! The rules read the kubelet's own `/metrics` (scraped from its authenticated endpoint; the
//! selector names that scrape job) and, for the node and lease rules, kube-state-metrics.
//! Thresholds come from [`crate::checks`]' constants; where a histogram's bucket bounds do not
//! hold the guide's number, a rule asks for the share of observations above the nearest bound
//! (the checks do the same) instead of interpolating a quantile between distant buckets.
//!
//! `KubeletPLEGRelistStuck` is the one kube-prometheus lacks: a relist that never finishes is
//! never observed by the duration histogram, so its p99 stays low while the PLEG stalls;
//! `kubelet_pleg_last_seen_seconds` (the time of the last finished relist) shows it.

use std::collections::BTreeMap;
#[cfg(any(test, feature = "promql"))]
use std::collections::BTreeSet;

use serde::Serialize;

use crate::{
    Error,
    checks::{
        CERT_CRITICAL_SECONDS, CERT_WARN_SECONDS, GOROUTINES_PER_POD_EXPLAINED, GOROUTINES_WARN,
        PLEG_INTERVAL_DEGRADED_SECONDS, PLEG_LAST_SEEN_WARN_SECONDS, PLEG_P99_SECONDS,
        PLEG_UNHEALTHY_SECONDS, REST_BUCKET_4S, RSS_PER_POD_EXPLAINED_BYTES, RSS_WARN_BYTES,
        RUNTIME_BUCKET_3S,
    },
};

/// The kube-prometheus label set of the kubelet's own metrics scrape.
pub const DEFAULT_SELECTOR: &str = r#"job="kubelet",metrics_path="/metrics""#;

/// A Prometheus rule file (`rule_files:`), or the `spec` of a PrometheusRule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

/// One rule group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// One alerting rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The prometheus-operator custom resource wrapping the same groups.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusRule<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    spec: &'a RuleFile,
}

#[derive(Debug, Clone, Serialize)]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
}

/// A `--label k=v` of the PrometheusRule (kube-prometheus-stack's Prometheus selects rules by
/// label, `release: <name>` by default): a label name and value the API server accepts.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| {
        format!("{text:?}: expected KEY=VALUE, e.g. release=kube-prometheus-stack")
    })?;
    let name = key.rsplit('/').next().unwrap_or(key);
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let value_ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (value.is_empty()
            || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if !name_ok || !value_ok {
        return Err(format!(
            "{text:?} is not a Kubernetes label (names and values: letters, digits, '-', '_', \
             '.', at most 63, starting and ending with a letter or digit)"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Seconds as PromQL takes them (an integer when whole).
fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A histogram bucket bound as the Go client writes it in the `le` label.
fn le(v: f64) -> String {
    format!("{v}")
}

fn rule(
    alert: &str,
    severity: &str,
    for_: &str,
    expr: String,
    summary: &str,
    description: &str,
) -> Rule {
    Rule {
        alert: alert.into(),
        expr,
        for_: for_.into(),
        labels: BTreeMap::from([("severity".into(), severity.into())]),
        annotations: BTreeMap::from([
            ("summary".into(), summary.into()),
            ("description".into(), description.into()),
        ]),
    }
}

/// Share (0..1) of a histogram's observations over 5 m above bucket bound `bound`, per instance.
fn share_above(metric: &str, selector: &str, bound: f64) -> String {
    format!(
        "1 - (sum by (instance, node) (rate({metric}_bucket{{{selector},le=\"{b}\"}}[5m])) / sum by \
         (instance, node) (rate({metric}_count{{{selector}}}[5m])))",
        b = le(bound)
    )
}

/// A kubelet /metrics scrape slower than this is half way to the default 10 s scrape timeout.
const METRICS_SCRAPE_SLOW_SECONDS: f64 = 5.0;

/// A lease older than this (kube-state-metrics' renew time) is not scrape jitter: at a 60 s
/// scrape a healthy node's lease reads up to ~75 s old (scrape interval + 10 s renew interval +
/// the exporter's lag).
const LEASE_STALE_SECONDS: f64 = 90.0;

const DIAGNOSE: &str = "Run `kubectl nodehealth {{ $labels.node }} --trace` (or on the node \
                        `tracer-user probe --host-root / --trace`) for the cause with kernel evidence.";

/// [`DIAGNOSE`] for kube-state-metrics' lease series, whose node is the lease's name.
fn diagnose_lease() -> String {
    DIAGNOSE.replace("$labels.node", "$labels.lease")
}

/// The rules, reading the kubelet's metrics through `selector` (PromQL label matchers without
/// braces, e.g. `job="kubelet"`).
pub fn rules(selector: &str) -> Result<RuleFile, Error> {
    if selector.contains(['{', '}']) || selector.trim().is_empty() {
        return Err(Error::Usage(format!(
            "--kubelet-selector {selector:?}: give label matchers without braces, e.g. {DEFAULT_SELECTOR}"
        )));
    }
    let s = selector;
    let pleg = Group {
        name: "kubectl-nodehealth.pleg".into(),
        rules: vec![
            rule(
                "KubeletPLEGRelistStuck",
                "warning",
                "0m",
                format!(
                    "time() - kubelet_pleg_last_seen_seconds{{{s}}} > {}",
                    num(PLEG_LAST_SEEN_WARN_SECONDS)
                ),
                "No PLEG relist has finished for over a minute on {{ $labels.node }}.",
                &format!(
                    "A relist that never finishes is invisible to the relist-duration histogram. \
                     At {} s the kubelet reports PLEG unhealthy and the node goes NotReady. Time \
                     `crictl ps` on the node: slow means the runtime; fast means the kubelet \
                     itself. {DIAGNOSE} Capture a goroutine dump before any restart.",
                    num(PLEG_UNHEALTHY_SECONDS)
                ),
            ),
            rule(
                "KubeletPLEGUnhealthy",
                "critical",
                "0m",
                format!(
                    "time() - kubelet_pleg_last_seen_seconds{{{s}}} > {}",
                    num(PLEG_UNHEALTHY_SECONDS)
                ),
                "PLEG is not healthy on {{ $labels.node }}: no relist for 3 minutes.",
                &format!(
                    "The kubelet stops syncing pods and the node goes NotReady. {DIAGNOSE} Do not \
                     reboot the node first: a hung runtime or a starved kubelet has a narrower fix."
                ),
            ),
            rule(
                "KubeletPLEGRelistSlow",
                "warning",
                "5m",
                format!(
                    "{} > 0.01",
                    share_above("kubelet_pleg_relist_duration_seconds", s, PLEG_P99_SECONDS)
                ),
                "Over 1% of PLEG relists take longer than 10 s on {{ $labels.node }}.",
                &format!(
                    "Relists slow down before they stall: the runtime's list calls, disk I/O wait \
                     or a CPU-starved kubelet. {DIAGNOSE}"
                ),
            ),
            rule(
                "KubeletPLEGRelistIntervalHigh",
                "warning",
                "5m",
                format!(
                    "rate(kubelet_pleg_relist_interval_seconds_sum{{{s}}}[5m]) / \
                     rate(kubelet_pleg_relist_interval_seconds_count{{{s}}}[5m]) > {}",
                    num(PLEG_INTERVAL_DEGRADED_SECONDS)
                ),
                "PLEG relists start more than 2 s apart on average on {{ $labels.node }}.",
                &format!("The relist loop runs every second when healthy. {DIAGNOSE}"),
            ),
        ],
    };
    let list_ops = format!(r#"{s},operation_type=~"list_podsandbox|list_containers""#);
    let runtime = Group {
        name: "kubectl-nodehealth.runtime".into(),
        rules: vec![
            rule(
                "KubeletRuntimeListSlow",
                "warning",
                "5m",
                format!(
                    "{} > 0.01",
                    share_above(
                        "kubelet_runtime_operations_duration_seconds",
                        &list_ops,
                        RUNTIME_BUCKET_3S
                    )
                ),
                "Over 1% of the kubelet's runtime list calls take longer than 3 s on {{ $labels.node }}.",
                &format!(
                    "The container runtime is slow to list sandboxes and containers; PLEG slows \
                     with it. Check the runtime's CPU and disk I/O. {DIAGNOSE}"
                ),
            ),
            // Measured on the local cluster: with the runtime's list calls held 3.5 s, the
            // kubelet's /metrics took 7.0 s (a relist's two calls) — its collectors wait on the
            // runtime. Past the scrape timeout (10 s by default) the scrape fails and every rule
            // on the kubelet's metrics goes silent, so this one speaks first.
            rule(
                "KubeletMetricsSlow",
                "warning",
                "2m",
                format!(
                    "scrape_duration_seconds{{{s}}} > {}",
                    num(METRICS_SCRAPE_SLOW_SECONDS)
                ),
                "Scraping the kubelet's /metrics takes over 5 s on {{ $labels.node }}.",
                &format!(
                    "The kubelet answers /metrics only after its runtime list calls return: a slow \
                     runtime slows the scrape, and past the scrape timeout every rule on the \
                     kubelet's metrics (PLEG included) goes silent with `up` at 0. {DIAGNOSE}"
                ),
            ),
            rule(
                "KubeletRuntimeErrors",
                "warning",
                "5m",
                format!(
                    "sum by (instance, node, operation_type) \
                     (rate(kubelet_runtime_operations_errors_total{{{s}}}[5m])) > 0"
                ),
                "The kubelet's {{ $labels.operation_type }} calls to the runtime fail on {{ $labels.node }}.",
                &format!(
                    "Check that the runtime runs and its socket exists (`crictl info`); read its \
                     log (`journalctl -u containerd`, or `-u crio` on CRI-O nodes). {DIAGNOSE}"
                ),
            ),
        ],
    };
    let certificates = Group {
        name: "kubectl-nodehealth.certificates".into(),
        rules: vec![
            rule(
                "KubeletClientCertificateExpiring",
                "warning",
                "0m",
                format!(
                    "kubelet_certificate_manager_client_ttl_seconds{{{s}}} < {}",
                    num(CERT_WARN_SECONDS)
                ),
                "The kubelet's client certificate expires within 7 days on {{ $labels.node }}.",
                "Rotation should have renewed it by now. Look for pending CSRs \
                 (`kubectl get csr`; approve with `kubectl certificate approve <csr>`) and check \
                 that kube-controller-manager signs them.",
            ),
            rule(
                "KubeletClientCertificateExpiresToday",
                "critical",
                "0m",
                format!(
                    "kubelet_certificate_manager_client_ttl_seconds{{{s}}} < {}",
                    num(CERT_CRITICAL_SECONDS)
                ),
                "The kubelet's client certificate expires within a day on {{ $labels.node }}.",
                "When it expires the API server answers 401 and the node goes NotReady. Approve \
                 the pending CSR now (`kubectl certificate approve <csr>`).",
            ),
            rule(
                "KubeletClientCertificateRenewErrors",
                "warning",
                "0m",
                format!(
                    "increase(kubelet_certificate_manager_client_expiration_renew_errors{{{s}}}[15m]) > 0"
                ),
                "The kubelet failed to renew its client certificate on {{ $labels.node }}.",
                "Check pending CSRs and the node's clock (NTP): a skewed clock fails validation.",
            ),
        ],
    };
    let resources = Group {
        name: "kubectl-nodehealth.resources".into(),
        rules: vec![
            rule(
                "KubeletMemoryHigh",
                "warning",
                "15m",
                format!(
                    "process_resident_memory_bytes{{{s}}} > {} and \
                     process_resident_memory_bytes{{{s}}} > {} * kubelet_running_pods{{{s}}}",
                    num(RSS_WARN_BYTES),
                    num(RSS_PER_POD_EXPLAINED_BYTES)
                ),
                "The kubelet's RSS is above 500 MiB and more than 8 MiB per running pod on {{ $labels.node }}.",
                "Growth without more pods suggests a leak: capture a heap profile before \
                 restarting. Set kubeReserved/systemReserved so workloads cannot starve or \
                 OOM-kill the kubelet.",
            ),
            rule(
                "KubeletGoroutinesHigh",
                "warning",
                "15m",
                format!(
                    "go_goroutines{{{s}}} > {} and go_goroutines{{{s}}} > {} * \
                     kubelet_running_pods{{{s}}}",
                    num(GOROUTINES_WARN),
                    num(GOROUTINES_PER_POD_EXPLAINED)
                ),
                "The kubelet runs over 500 goroutines, more than 10 per pod, on {{ $labels.node }}.",
                "A goroutine leak is a leading sign of memory growth and a stuck relist. Save \
                 /debug/pprof/goroutine?debug=1 before any restart.",
            ),
        ],
    };
    let api = Group {
        name: "kubectl-nodehealth.api".into(),
        rules: vec![
            rule(
                "KubeletAPIRequestsSlow",
                "warning",
                "5m",
                format!(
                    "{} > 0.01",
                    share_above("rest_client_request_duration_seconds", s, REST_BUCKET_4S)
                ),
                "Over 1% of the kubelet's API requests take longer than 4 s on {{ $labels.node }}.",
                "Lease renewals and status updates depend on them. Check the path to the API \
                 server (load balancer, network) before touching the kubelet: restarting it \
                 during an API outage only adds a reconciliation storm.",
            ),
            rule(
                "KubeletAPIServerErrors",
                "warning",
                "5m",
                format!(
                    r#"sum by (instance, node) (rate(rest_client_requests_total{{{s},code=~"5.."}}[5m])) > 0"#
                ),
                "The API server answers the kubelet with 5xx on {{ $labels.node }}.",
                "Restore API server health; do not restart the kubelet for it.",
            ),
        ],
    };
    let nodes = Group {
        name: "kubectl-nodehealth.nodes".into(),
        rules: vec![
            // kube-state-metrics' renew time is as old as its last scrape: on a healthy node the
            // age reaches the scrape interval (30-60 s) plus the kubelet's 10 s renew interval
            // plus the exporter's lag (about 75 s at a 60 s scrape), so a 40 s bound with no
            // `for` flaps at every scrape; past 90 s for a minute is silence, not jitter.
            rule(
                "NodeLeaseStale",
                "warning",
                "1m",
                format!(
                    r#"time() - kube_lease_renew_time{{namespace="kube-node-lease"}} > {}"#,
                    num(LEASE_STALE_SECONDS)
                ),
                "Node {{ $labels.lease }} has not renewed its lease for over 90 s, for a minute.",
                &format!(
                    "The kubelet renews every 10 s and the node controller marks the node \
                     Unknown 40-50 s after the last renewal; this waits for scrape jitter to pass. \
                     From kube-state-metrics. {}",
                    diagnose_lease()
                ),
            ),
            // kube-prometheus' KubeNodeNotReady waits 15 minutes: nodes joining (NotReady until
            // the CNI is up) and nodes being scaled down (NotReady before deletion) would page
            // on every autoscaler move with a shorter wait.
            rule(
                "NodeNotReadySustained",
                "critical",
                "15m",
                r#"kube_node_status_condition{condition="Ready",status!="true"} == 1"#.into(),
                "Node {{ $labels.node }} is {{ $labels.status }} (not Ready) for over 15 minutes.",
                &format!(
                    "Unknown with an unreachable API server is a partition: do not restart the \
                     kubelet. From kube-state-metrics. {DIAGNOSE}"
                ),
            ),
        ],
    };
    Ok(RuleFile {
        groups: vec![pleg, runtime, certificates, resources, api, nodes],
    })
}

#[cfg(any(test, feature = "promql"))]
/// The labels an alert from `expr` carries (`None`: a scalar), given the label names of each
/// metric's series (`series`): aggregations keep their `by` labels, functions and comparisons
/// keep their vector's, `and`/`unless` the left side's. What the annotations' `{{ $labels.x }}`
/// can use — an aggregation that drops `node` leaves the alert text without the node's name.
pub fn output_labels(
    expr: &str,
    series: &dyn Fn(&str) -> BTreeSet<String>,
) -> Result<Option<BTreeSet<String>>, String> {
    use promql_parser::parser::{Expr, LabelModifier};
    fn walk(e: &Expr, series: &dyn Fn(&str) -> BTreeSet<String>) -> Option<BTreeSet<String>> {
        match e {
            Expr::Aggregate(a) => {
                let inner = walk(&a.expr, series).unwrap_or_default();
                Some(match &a.modifier {
                    Some(LabelModifier::Include(l)) => l.labels.iter().cloned().collect(),
                    Some(LabelModifier::Exclude(l)) => inner
                        .into_iter()
                        .filter(|x| !l.labels.contains(x))
                        .collect(),
                    None => BTreeSet::new(),
                })
            }
            Expr::Unary(u) => walk(&u.expr, series),
            Expr::Paren(p) => walk(&p.expr, series),
            Expr::Subquery(q) => walk(&q.expr, series),
            Expr::Binary(b) => {
                let (l, r) = (walk(&b.lhs, series), walk(&b.rhs, series));
                match (l, r) {
                    (Some(l), Some(r)) if b.op.to_string() == "or" => {
                        Some(l.intersection(&r).cloned().collect())
                    }
                    (Some(l), Some(_)) => {
                        // One-to-one matching with on(...) keeps only those labels.
                        match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                            Some(LabelModifier::Include(on)) if !b.op.is_set_operator() => {
                                Some(l.into_iter().filter(|x| on.labels.contains(x)).collect())
                            }
                            _ => Some(l),
                        }
                    }
                    (Some(v), None) | (None, Some(v)) => Some(v),
                    (None, None) => None,
                }
            }
            Expr::VectorSelector(v) => Some(series(v.name.as_deref().unwrap_or(""))),
            Expr::MatrixSelector(m) => Some(series(m.vs.name.as_deref().unwrap_or(""))),
            Expr::Call(c) => c.args.args.iter().find_map(|a| walk(a, series)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => None,
        }
    }
    let ast = promql_parser::parser::parse(expr)?;
    Ok(walk(&ast, series))
}

#[cfg(any(test, feature = "promql"))]
/// The `{{ $labels.x }}` names a rule's annotations use.
pub fn annotation_labels(rule: &Rule) -> BTreeSet<String> {
    rule.annotations
        .values()
        .flat_map(|text| text.split("$labels.").skip(1))
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

fn to_yaml<T: Serialize>(v: &T) -> Result<String, Error> {
    serde_saphyr::to_string(v).map_err(|e| Error::Serialize {
        format: "yaml",
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T, json: bool) -> Result<String, Error> {
    if json {
        serde_json::to_string_pretty(v)
            .map(|t| t + "\n")
            .map_err(|e| Error::Serialize {
                format: "json",
                message: e.to_string(),
            })
    } else {
        to_yaml(v)
    }
}

/// The rules as YAML (or JSON, `json`): a rule file, or (`resource`: its name) a
/// prometheus-operator PrometheusRule in `namespace`.
pub fn render(
    rules: &RuleFile,
    resource: Option<&str>,
    namespace: Option<&str>,
    labels: &[(String, String)],
    json: bool,
) -> Result<String, Error> {
    let Some(name) = resource else {
        if !labels.is_empty() {
            return Err(Error::Usage(
                "--label labels the PrometheusRule: give --prometheus-rule NAME too".into(),
            ));
        }
        return encode(rules, json);
    };
    encode(
        &PrometheusRule {
            api_version: "monitoring.coreos.com/v1",
            kind: "PrometheusRule",
            metadata: Metadata {
                name,
                namespace,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            },
            spec: rules,
        },
        json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_expression_parses_as_promql() {
        for g in rules(DEFAULT_SELECTOR).unwrap().groups {
            for r in g.rules {
                promql_parser::parser::parse(&r.expr)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{}", r.alert, r.expr));
            }
        }
    }

    /// The labels a kube-prometheus scrape puts on the kubelet's series (the ServiceMonitor's
    /// target labels; `node` from the endpoint's Node) and kube-state-metrics' own.
    fn kube_prometheus_series(name: &str) -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = match name {
            "kube_lease_renew_time" => ["lease", "namespace", "lease_owner_kind"].as_slice(),
            "kube_node_status_condition" => ["node", "condition", "status"].as_slice(),
            n if n.starts_with("kubelet_runtime_operations") => ["operation_type"].as_slice(),
            n if n.ends_with("_bucket") => ["le"].as_slice(),
            _ => [].as_slice(),
        }
        .iter()
        .map(|l| l.to_string())
        .collect();
        let target: &[&str] = if name.starts_with("kube_") {
            &[
                "instance",
                "job",
                "namespace",
                "service",
                "pod",
                "container",
                "endpoint",
            ]
        } else {
            &[
                "instance",
                "job",
                "node",
                "metrics_path",
                "namespace",
                "service",
                "endpoint",
            ]
        };
        labels.extend(target.iter().map(|l| l.to_string()));
        labels
    }

    /// Every label an alert's text uses survives its expression: an aggregation `by (instance)`
    /// drops `node`, and "on {{ $labels.node }}" then names no node.
    #[test]
    fn alert_texts_only_use_labels_their_expression_keeps() {
        for g in rules(DEFAULT_SELECTOR).unwrap().groups {
            for r in g.rules {
                let kept = output_labels(&r.expr, &kube_prometheus_series)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{}: a scalar alert", r.alert));
                let used = annotation_labels(&r);
                assert!(!used.is_empty(), "{}: its text names no node", r.alert);
                let lost: Vec<&String> = used.difference(&kept).collect();
                assert!(
                    lost.is_empty(),
                    "{}: {lost:?} not in {kept:?}\n{}",
                    r.alert,
                    r.expr
                );
            }
        }
        // The analysis itself: by() keeps only its labels, `and` the left side's.
        let series = |_: &str| -> BTreeSet<String> {
            ["instance", "node", "job"]
                .iter()
                .map(|l| l.to_string())
                .collect()
        };
        let kept = |e: &str| output_labels(e, &series).unwrap().unwrap();
        assert_eq!(
            kept("sum by (instance) (rate(x[5m])) > 0"),
            BTreeSet::from(["instance".to_string()])
        );
        assert!(kept("x > 1 and y > 2 * z").contains("node"));
        assert!(!kept("sum without (node) (x)").contains("node"));
        assert_eq!(
            kept("x / on (instance) y"),
            BTreeSet::from(["instance".to_string()])
        );
        assert_eq!(output_labels("time()", &series).unwrap(), None);
    }

    #[test]
    fn thresholds_are_the_checks_and_buckets_are_written_as_go_writes_them() {
        let f = rules(DEFAULT_SELECTOR).unwrap();
        let expr = |name: &str| {
            f.groups
                .iter()
                .flat_map(|g| &g.rules)
                .find(|r| r.alert == name)
                .unwrap()
                .expr
                .clone()
        };
        assert!(expr("KubeletPLEGRelistStuck").ends_with("> 60"));
        assert!(expr("KubeletPLEGUnhealthy").ends_with("> 180"));
        assert!(expr("KubeletPLEGRelistSlow").contains(r#"le="10""#));
        assert!(expr("KubeletRuntimeListSlow").contains(r#"le="3.0517578125""#));
        assert!(expr("KubeletAPIRequestsSlow").contains(r#"le="4""#));
        assert!(expr("KubeletClientCertificateExpiring").ends_with("< 604800"));
        assert!(expr("KubeletMemoryHigh").contains("> 524288000"));
        assert!(expr("KubeletMemoryHigh").contains("8388608 * kubelet_running_pods"));
    }

    #[test]
    fn yaml_is_a_rule_file_or_a_prometheus_rule() {
        let f = rules(r#"job="k""#).unwrap();
        let file = render(&f, None, None, &[], false).unwrap();
        assert!(file.starts_with("groups:"), "{file}");
        assert!(
            file.contains("kubelet_pleg_last_seen_seconds{job="),
            "{file}"
        );
        assert!(
            file.contains("{{ $labels.node }}"),
            "templates kept: {file}"
        );
        let cr = render(
            &f,
            Some("nodehealth"),
            Some("monitoring"),
            &[parse_label("release=kube-prometheus-stack").unwrap()],
            false,
        )
        .unwrap();
        assert!(
            cr.contains("labels:\n    release: kube-prometheus-stack"),
            "{cr}"
        );
        assert!(render(&f, None, None, &[("a".into(), "b".into())], false).is_err());
        for bad in ["release", "-a=b", "a=b c", "a=-b"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
        assert!(parse_label("app.kubernetes.io/part-of=monitoring").is_ok());
        assert!(cr.contains("kind: PrometheusRule"), "{cr}");
        assert!(cr.contains("namespace: monitoring"), "{cr}");
        assert!(cr.contains("spec:\n  groups:"), "{cr}");
    }

    #[test]
    fn json_is_the_same_rules_as_json() {
        let f = rules(r#"job="k""#).unwrap();
        let file: serde_json::Value =
            serde_json::from_str(&render(&f, None, None, &[], true).unwrap()).unwrap();
        assert_eq!(
            file["groups"].as_array().map(Vec::len),
            Some(f.groups.len())
        );
        assert_eq!(
            file["groups"][0]["rules"][0]["alert"],
            f.groups[0].rules[0].alert
        );
        assert_eq!(
            file["groups"][0]["rules"][0]["for"],
            f.groups[0].rules[0].for_
        );
        let cr: serde_json::Value = serde_json::from_str(
            &render(&f, Some("nodehealth"), Some("monitoring"), &[], true).unwrap(),
        )
        .unwrap();
        assert_eq!(cr["kind"], "PrometheusRule");
        assert_eq!(cr["metadata"]["namespace"], "monitoring");
    }

    /// Waits that do not page on scrape jitter or autoscaler churn, and texts that fit any
    /// runtime.
    #[test]
    fn node_rules_wait_out_jitter_and_churn_and_texts_are_runtime_neutral() {
        let f = rules(r#"job="k""#).unwrap();
        let rule = |name: &str| {
            f.groups
                .iter()
                .flat_map(|g| &g.rules)
                .find(|r| r.alert == name)
                .unwrap()
        };
        let lease = rule("NodeLeaseStale");
        assert!(lease.expr.ends_with("> 90"), "{}", lease.expr);
        assert_eq!(lease.for_, "1m");
        assert_eq!(rule("NodeNotReadySustained").for_, "15m");
        let errors = rule("KubeletRuntimeErrors");
        let text = serde_json::to_string(&errors.annotations).unwrap();
        assert!(
            text.contains("crio") && text.contains("containerd"),
            "{text}"
        );
    }

    #[test]
    fn a_selector_with_braces_is_refused() {
        assert!(matches!(rules(r#"{job="x"}"#), Err(Error::Usage(_))));
        assert!(matches!(rules(" "), Err(Error::Usage(_))));
    }
}
