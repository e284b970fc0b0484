//! The history from the user's Prometheus (`--prometheus`): what each signal did over the range,
//! and the order in which they degraded. Context, never a problem on its own — a node that
//! degraded an hour ago and recovered is healthy now — so its finding is informational; the
//! verdict reads the order of the onsets from the facts.

use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, Step};
use crate::history::{self, clock};

/// The history finding: one line per signal, the order of the onsets, the matching notes.
pub fn run(e: &Evidence) -> Vec<Finding> {
    let h = match &e.history {
        Step::Skipped { .. } => return Vec::new(),
        Step::Failed { failure } => {
            return vec![Finding {
                id: FindingId::History,
                domain: Domain::Collection,
                severity: Severity::Unknown,
                summary: format!(
                    "the history could not be read from {}: {}",
                    failure.request, failure.message
                ),
                evidence: Vec::new(),
                remediation: Some(
                    "check the Prometheus address (`--prometheus auto` finds kube-prometheus, \
                     prometheus-operator and the Helm charts' services; a URL must be reachable \
                     from this machine, e.g. through `kubectl port-forward`)"
                        .into(),
                ),
            }];
        }
        Step::Collected { data } => data,
    };
    let onsets = h.onsets();
    let minutes = (h.end.as_second() - h.start.as_second()) / 60;
    let found = h
        .signals
        .iter()
        .filter(|s| s.status == history::SeriesStatus::Found)
        .count();
    let summary = match onsets.first() {
        Some((first, at)) => format!(
            "{found} of {} signals over the last {minutes} min from {}: {} degraded, first {} at {}",
            h.signals.len(),
            h.source,
            onsets.len(),
            history::signal(&first.id).map_or(first.id.as_str(), |s| s.title),
            clock(*at)
        ),
        None => format!(
            "{found} of {} signals over the last {minutes} min from {}: none degraded",
            h.signals.len(),
            h.source
        ),
    };
    let mut evidence = Vec::new();
    if onsets.len() > 1 {
        evidence.push(format!(
            "order of onsets: {}",
            onsets
                .iter()
                .map(|(s, at)| format!(
                    "{} {}",
                    history::signal(&s.id).map_or(s.id.as_str(), |x| x.title),
                    clock(*at)
                ))
                .collect::<Vec<_>>()
                .join(" → ")
        ));
    }
    evidence.extend(h.lines());
    evidence.extend(h.notes.iter().cloned());
    if let Some(by) = &h.found_by {
        evidence.push(format!("Prometheus: {} ({by})", h.source));
    }
    vec![Finding {
        id: FindingId::History,
        domain: Domain::Collection,
        severity: if found == 0 {
            Severity::Unknown
        } else {
            Severity::Info
        },
        summary,
        evidence,
        remediation: None,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests_support::healthy_evidence;
    use crate::evidence::Failure;
    use crate::history::{History, SeriesStatus, SignalHistory, Timeline, Worse};
    use jiff::Timestamp;

    fn signal(id: &str, onset: Option<i64>) -> SignalHistory {
        SignalHistory {
            id: id.into(),
            query: String::new(),
            status: SeriesStatus::Found,
            threshold: 1.0,
            worse: Worse::Above,
            points: vec![(1_000, 2.0)],
            timeline: Timeline {
                onset: onset.map(|s| Timestamp::from_second(s).unwrap()),
                ..Timeline::default()
            },
        }
    }

    pub(crate) fn with_history(signals: Vec<SignalHistory>) -> Evidence {
        let mut e = healthy_evidence();
        e.history = Step::Collected {
            data: History {
                source: "http://prometheus:9090".into(),
                found_by: None,
                start: Timestamp::from_second(0).unwrap(),
                end: Timestamp::from_second(3600).unwrap(),
                step_seconds: 15.0,
                scrape_seconds: None,
                matcher: Some("node=\"node-a\"".into()),
                notes: vec![],
                signals,
            },
        };
        e
    }

    #[test]
    fn no_prometheus_no_finding_and_a_failure_is_unknown_with_the_fix() {
        assert!(run(&healthy_evidence()).is_empty());
        let mut e = healthy_evidence();
        e.history = Step::Failed {
            failure: Failure {
                kind: crate::evidence::FailureKind::HttpError,
                request: "--prometheus auto".into(),
                http_status: None,
                needs: None,
                message: "no Prometheus service found".into(),
            },
        };
        let f = run(&e);
        assert_eq!(f[0].severity, Severity::Unknown);
        assert!(f[0].summary.contains("no Prometheus service found"));
        assert!(
            f[0].remediation
                .as_deref()
                .unwrap()
                .contains("port-forward")
        );
    }

    #[test]
    fn the_summary_names_what_degraded_first_and_the_order() {
        let e = with_history(vec![
            signal("relist-seconds", Some(1_200)),
            signal("runtime-list-seconds", Some(1_100)),
            signal("kubelet-up", None),
        ]);
        let f = &run(&e)[0];
        assert_eq!(f.severity, Severity::Info);
        assert!(
            f.summary
                .contains("3 of 3 signals over the last 60 min from http://prometheus:9090: 2 degraded, first runtime list calls (mean) at 00:18:20"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.evidence[0],
            "order of onsets: runtime list calls (mean) 00:18:20 → PLEG relist (mean) 00:20:00"
        );
        assert!(!f.severity.is_problem());
    }
}
