//! `kubectl nodehealth scan`: fleet triage from the API objects alone — every node's Ready and
//! pressure conditions, its lease, the cluster's stale leases (a partition looks like many at
//! once), its pending certificate requests and the CSR approver — ranked worst first, each with
//! the probable cause the same verdict engine gives. A fixed number of API calls whatever the
//! number of nodes ([`crate::collect::scan_snapshot`]); where the flight recorder runs, every
//! node's report comes in the same single list and its node-side evidence ranks the node with the
//! node-side causes. The kubelet itself is for `kubectl nodehealth <node>` on the nodes at the top.

use comfy_table::{Cell, ContentArrangement, Table};
use jiff::Timestamp;
use serde::Serialize;

use crate::{
    API_VERSION, Error,
    checks::{self, Finding, Severity},
    evidence::Evidence,
    exit,
    render::{Format, printable},
    verdict::{self, Cause, CauseId},
};

/// One node's line of the scan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    /// The Ready condition's status (`True`, `False`, `Unknown`), or `-` when absent.
    pub ready: String,
    /// Seconds since the node's lease was renewed.
    pub lease_age_seconds: Option<f64>,
    /// The worst severity among its findings.
    pub severity: Severity,
    /// Its problems (warning and critical findings), worst first.
    pub problems: Vec<Finding>,
    /// The verdict's most probable cause (none when healthy).
    pub cause: Option<Cause>,
    /// The kubelet's version as the Node reports it.
    pub kubelet_version: Option<String>,
    /// The container runtime as the Node reports it (`containerd://1.7.24`).
    pub container_runtime_version: Option<String>,
    /// From the Prometheus history (`scan --prometheus`): since when the node has been degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<NodeHistory>,
}

/// A node's line of fleet history.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeHistory {
    /// The earliest onset among its signals still degraded at the range's end.
    pub degraded_since: Option<Timestamp>,
    /// Its relists are degrading while the node is still Ready: past their line, or at least
    /// half way to it and twice what they were at the range's start.
    pub relists_degrading: bool,
    /// One line per signal that degraded.
    pub lines: Vec<String>,
}

/// The fleet-history verdict for one node's timelines (pure).
pub fn node_history(ready: &str, signals: &[crate::history::SignalHistory]) -> NodeHistory {
    use crate::history::{clock, show, signal};
    let degraded_since = signals
        .iter()
        .filter(|s| s.timeline.ongoing())
        .filter_map(|s| s.timeline.onset)
        .min();
    let relists_degrading = ready == "True"
        && signals.iter().any(|s| {
            s.id == "relist-seconds"
                && (s.timeline.ongoing()
                    || match (s.points.first(), s.timeline.now) {
                        (Some(&(_, first)), Some((_, now))) => {
                            now >= s.threshold / 2.0 && now >= 2.0 * first
                        }
                        _ => false,
                    })
        });
    let mut by_onset: Vec<&crate::history::SignalHistory> = signals.iter().collect();
    by_onset.sort_by_key(|s| s.timeline.onset.map_or(i64::MAX, |t| t.as_second()));
    let lines = by_onset
        .into_iter()
        .filter(|s| s.timeline.onset.is_some() || (relists_degrading && s.id == "relist-seconds"))
        .map(|s| {
            let spec = signal(&s.id);
            let title = spec.map_or(s.id.as_str(), |x| x.title);
            let unit = spec.map_or("", |x| x.unit);
            let now = s.timeline.now.map_or("-".into(), |(_, v)| show(v, unit));
            match (s.timeline.onset, s.timeline.recovered) {
                (Some(o), None) => format!("{title} degraded since {} (now {now})", clock(o)),
                (Some(o), Some(r)) => {
                    format!("{title} degraded {}–{} (now {now})", clock(o), clock(r))
                }
                (None, _) => format!(
                    "{title} rising (now {now}, line {})",
                    show(s.threshold, unit)
                ),
            }
        })
        .collect();
    NodeHistory {
        degraded_since,
        relists_degrading,
        lines,
    }
}

/// Adds the fleet history to the rows: since when each node is degraded, and the Ready nodes
/// whose relists are degrading (listed first among the nodes of their severity).
pub fn with_history(
    report: &mut ScanReport,
    history: &std::collections::BTreeMap<String, Vec<crate::history::SignalHistory>>,
) {
    for r in &mut report.nodes {
        if let Some(signals) = history.get(&r.node) {
            r.history = Some(node_history(&r.ready, signals));
        }
    }
    report.nodes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.severity),
            !r.history.as_ref().is_some_and(|h| h.relists_degrading),
        )
    });
}

/// The scan report (`-o json|yaml`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    pub api_version: String,
    /// Always `ScanReport`.
    pub kind: &'static str,
    pub observed_at: Timestamp,
    /// API requests the scan made (does not grow with the number of nodes).
    pub api_calls: u32,
    pub nodes: Vec<NodeRow>,
}

impl ScanReport {
    /// 0 when no node has a problem, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.nodes.iter().any(|n| n.severity.is_problem()) {
            exit::PROBLEMS
        } else {
            exit::HEALTHY
        }
    }
}

/// One row per node, worst first (severity, then the top cause's score, then the oldest lease).
pub fn rows(evidence: &[Evidence]) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = evidence
        .iter()
        .map(|e| {
            // The checks that read what a scan collects: API objects, and a node's recorder
            // report (its node evidence, its timeline) where a recorder runs.
            let names: Vec<&str> = checks::OBJECT_CHECKS
                .iter()
                .copied()
                .chain(["node", "recorder"])
                .collect();
            let assessment = checks::assess_with(e, checks::run_named(e, &names));
            let v = verdict::judge(&assessment);
            let mut problems: Vec<Finding> = assessment
                .findings
                .iter()
                .filter(|f| f.severity.is_problem() && !f.is_advisory())
                .cloned()
                .collect();
            problems.sort_by_key(|f| std::cmp::Reverse(f.severity));
            let severity = problems.first().map_or(Severity::Ok, |f| f.severity);
            let node = e.node.data();
            NodeRow {
                node: e.node_name.clone(),
                ready: node
                    .and_then(|n| n.condition("Ready"))
                    .map_or("-".into(), |c| c.status.clone()),
                lease_age_seconds: e
                    .lease
                    .data()
                    .and_then(|l| crate::checks::heartbeat::lease_age(e, l))
                    .map(|(age, _)| age.max(0.0)),
                severity,
                cause: v
                    .causes
                    .into_iter()
                    .find(|c| c.id != CauseId::Healthy)
                    .filter(|_| severity.is_problem()),
                problems,
                kubelet_version: node.and_then(|n| n.kubelet_version.clone()),
                container_runtime_version: node.and_then(|n| n.container_runtime_version.clone()),
                history: None,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(
                b.cause
                    .as_ref()
                    .map(|c| c.score)
                    .cmp(&a.cause.as_ref().map(|c| c.score)),
            )
            .then(
                b.lease_age_seconds
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&a.lease_age_seconds.unwrap_or(f64::INFINITY)),
            )
            .then(a.node.cmp(&b.node))
    });
    rows
}

/// Renders the report.
pub fn render(report: &ScanReport, format: Format) -> Result<String, Error> {
    match format {
        Format::Json => serde_json::to_string_pretty(report)
            .map(|t| t + "\n")
            .map_err(|e| Error::Serialize {
                format: "json",
                message: e.to_string(),
            }),
        Format::Yaml => serde_saphyr::to_string(report).map_err(|e| Error::Serialize {
            format: "yaml",
            message: e.to_string(),
        }),
        Format::Table => Ok(table(report, false)),
        Format::Wide => Ok(table(report, true)),
    }
}

/// A value's name in the JSON contract (`pleg-slow`, `critical`).
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "-".into(),
    }
}

fn table(report: &ScanReport, wide: bool) -> String {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    let history = report.nodes.iter().any(|n| n.history.is_some());
    let mut header = vec!["NODE", "READY", "LEASE AGE", "SEVERITY", "PROBABLE CAUSE"];
    if history {
        header.push("DEGRADED SINCE");
    }
    if wide {
        header.extend(["PROBLEMS", "KUBELET", "RUNTIME"]);
    }
    header.push("WHY");
    t.set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for r in &report.nodes {
        let mut why = r
            .problems
            .first()
            .map(|f| f.summary.clone())
            .unwrap_or_default();
        if let Some(h) = &r.history
            && let Some(line) = h.lines.first()
        {
            let flag = if h.relists_degrading {
                "relists degrading before NotReady: "
            } else {
                "history: "
            };
            why = if why.is_empty() {
                format!("{flag}{line}")
            } else {
                format!("{why}; {flag}{line}")
            };
        }
        let mut row = vec![
            Cell::new(printable(&r.node)),
            Cell::new(printable(&r.ready)),
            Cell::new(
                r.lease_age_seconds
                    .map_or("-".into(), |s| format!("{s:.0}s")),
            ),
            Cell::new(word(&r.severity)),
            Cell::new(r.cause.as_ref().map_or("-".into(), |c| {
                format!("{} ({})", word(&c.id), word(&c.confidence))
            })),
        ];
        if history {
            row.push(Cell::new(
                r.history
                    .as_ref()
                    .and_then(|h| h.degraded_since)
                    .map_or("-".into(), |t| t.strftime("%H:%M:%S").to_string()),
            ));
        }
        if wide {
            let or_dash = |v: &Option<String>| Cell::new(printable(v.as_deref().unwrap_or("-")));
            row.push(Cell::new(r.problems.len()));
            row.push(or_dash(&r.kubelet_version));
            row.push(or_dash(&r.container_runtime_version));
        }
        row.push(Cell::new(printable(&why)));
        t.add_row(row);
    }
    let problems = report
        .nodes
        .iter()
        .filter(|n| n.severity.is_problem())
        .count();
    let mut out = t.to_string();
    let n = report.nodes.len();
    out.push_str(&format!(
        "\n{n} node{}, {problems} with problems ({} API calls). Next: `kubectl nodehealth \
         <node>` on the first ones for the kubelet's metrics and the node itself.\n",
        if n == 1 { "" } else { "s" },
        report.api_calls
    ));
    out
}

/// The report for `evidence` (one per node) read in `api_calls` requests.
pub fn report(evidence: &[Evidence], api_calls: u32, observed_at: Timestamp) -> ScanReport {
    ScanReport {
        api_version: API_VERSION.to_string(),
        kind: "ScanReport",
        observed_at,
        api_calls,
        nodes: rows(evidence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests_support::*;
    use crate::evidence::Step;

    fn relists(values: &[f64]) -> crate::history::SignalHistory {
        let points: Vec<(i64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (3_600 + 15 * i as i64, *v))
            .collect();
        let end = points.last().unwrap().0;
        crate::history::SignalHistory {
            id: "relist-seconds".into(),
            query: String::new(),
            status: crate::history::SeriesStatus::Found,
            threshold: 1.0,
            worse: crate::history::Worse::Above,
            timeline: crate::history::analyse(
                &points,
                1.0,
                crate::history::Worse::Above,
                (3_600, end),
                15,
            ),
            points,
        }
    }

    #[test]
    fn fleet_history_says_since_when_and_flags_relists_rising_on_a_ready_node() {
        let degraded = node_history("True", &[relists(&[0.01, 0.02, 1.5, 1.8])]);
        assert!(degraded.relists_degrading);
        assert_eq!(degraded.degraded_since.unwrap().as_second(), 3_600 + 30);
        assert_eq!(
            degraded.lines,
            ["PLEG relist (mean) degraded since 01:00:30 (now 1.80 s)"]
        );
        // Half way to the line and twice where it started: rising before anything is NotReady.
        let rising = node_history("True", &[relists(&[0.1, 0.2, 0.6])]);
        assert!(rising.relists_degrading);
        assert_eq!(rising.degraded_since, None);
        assert_eq!(
            rising.lines,
            ["PLEG relist (mean) rising (now 0.60 s, line 1.00 s)"]
        );
        // Steady, or already NotReady: not the early warning.
        assert!(!node_history("True", &[relists(&[0.5, 0.6])]).relists_degrading);
        assert!(!node_history("False", &[relists(&[0.1, 1.5])]).relists_degrading);
        assert!(
            node_history("True", &[relists(&[0.01, 0.01])])
                .lines
                .is_empty()
        );
    }

    /// A scan's view of a node: the API objects, nothing from the kubelet.
    fn scanned(name: &str) -> Evidence {
        let mut e = healthy_evidence();
        e.node_name = name.into();
        let skip = || crate::collect::SCAN_SKIPPED.to_string();
        e.metrics_start = Step::Skipped { reason: skip() };
        e.metrics_end = Step::Skipped { reason: skip() };
        e.healthz = Step::Skipped { reason: skip() };
        e.configz = Step::Skipped { reason: skip() };
        e
    }

    #[test]
    fn nodes_are_ranked_worst_first_with_their_cause() {
        let healthy = scanned("a-healthy");
        let mut pleg = scanned("b-pleg");
        set_ready(
            &mut pleg,
            "False",
            "KubeletNotReady",
            "PLEG is not healthy: pleg was last seen active 3m2s ago; threshold is 3m0s",
        );
        let mut gone = scanned("c-gone");
        set_ready(
            &mut gone,
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        );
        set_lease_age(&mut gone, 300.0);
        let r = report(&[healthy, pleg, gone], 4, now());
        let order: Vec<&str> = r.nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(order.last(), Some(&"a-healthy"), "{order:?}");
        let pleg = r.nodes.iter().find(|n| n.node == "b-pleg").unwrap();
        assert_eq!(pleg.ready, "False");
        assert!(pleg.severity.is_problem(), "{pleg:#?}");
        assert_eq!(
            pleg.cause.as_ref().map(|c| c.id),
            Some(CauseId::PlegSlow),
            "{pleg:#?}"
        );
        let gone = r.nodes.iter().find(|n| n.node == "c-gone").unwrap();
        assert!(gone.lease_age_seconds.unwrap() >= 300.0);
        assert!(gone.cause.is_some(), "{gone:#?}");
        let healthy = r.nodes.last().unwrap();
        assert!(healthy.cause.is_none() && healthy.problems.is_empty());
        assert_eq!(r.exit_code(), exit::PROBLEMS);
        let table = render(&r, Format::Table).unwrap();
        assert!(table.contains("pleg-slow"), "{table}");
        assert!(
            table.contains("3 nodes, 2 with problems (4 API calls)"),
            "{table}"
        );
    }

    #[test]
    fn a_nodes_recorder_evidence_ranks_it_with_the_node_side_cause() {
        let healthy = scanned("a-healthy");
        let mut gone = scanned("b-recorded");
        // Its recorder's report: no kubelet process on the node (what kubelet-stopped gives).
        gone.node_probe = Step::Collected {
            data: crate::evidence::NodeProbe {
                pod: "recorder: noderecorderreports/b-recorded".into(),
                pod_start_seconds: 0.0,
                connect_seconds: None,
                partial: false,
                stream_error: None,
                host_root_recursive_read_only: None,
                evidence: nodehealth_proto::node::NodeEvidence {
                    processes: Some(nodehealth_proto::node::Processes::default()),
                    ..Default::default()
                },
            },
        };
        let r = report(&[healthy, gone], 6, now());
        assert_eq!(r.nodes[0].node, "b-recorded", "{:#?}", r.nodes);
        assert!(
            r.nodes[0]
                .problems
                .iter()
                .any(|f| f.id.to_string() == "node-kubelet-process-gone"),
            "{:#?}",
            r.nodes[0].problems
        );
        assert!(r.nodes[1].problems.is_empty());
    }

    #[test]
    fn a_healthy_fleet_exits_0() {
        let r = report(&[scanned("a"), scanned("b")], 4, now());
        assert_eq!(r.exit_code(), exit::HEALTHY);
        assert!(
            r.nodes
                .iter()
                .all(|n| n.severity == Severity::Ok || !n.severity.is_problem())
        );
    }
}
