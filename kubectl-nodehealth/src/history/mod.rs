//! History from the user's Prometheus: what this node's kubelet series did in the minutes before
//! the run (`--prometheus URL|auto --since 1h`).
//!
//! At 3 a.m. the alert fired twenty minutes ago and the run looks at the next few seconds; the
//! cluster's Prometheus already stored the relists, the runtime's call latencies and errors, the
//! PLEG heartbeat, the scrape itself and (with kube-state-metrics) Ready and the lease. Per
//! signal this keeps a compact timeline — when it degraded (onset), how bad it got (peak), where
//! it is now — and the order of the onsets: which signal degraded first. A runtime whose list
//! calls slowed before the relists supports the runtime; a lease that stopped renewing before
//! anything on the node degraded supports a partition or a dead kubelet.
//!
//! This module is pure (the signal table, the analysis, the sparkline); [`fetch`] does the I/O.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::checks::thresholds;

pub mod fetch;

/// Which way a signal gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Worse {
    /// Higher is worse (latencies, errors, ages).
    Above,
    /// Lower is worse (up, Ready, a certificate's time to live).
    Below,
}

/// Where a signal's series come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The kubelet's own `/metrics` (matched by the node's label or its kubelet's instance).
    Kubelet,
    /// Prometheus' own series about the kubelet's scrape (`up`, `scrape_duration_seconds`).
    Scrape,
    /// kube-state-metrics (labelled with the node's name by design).
    KubeStateMetrics,
}

/// One signal read from the history: its query and the line past which it is degraded, with the
/// reason for that line.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    /// Stable id (report, bundle file names).
    pub id: &'static str,
    /// What a person reads.
    pub title: &'static str,
    /// The unit of its values (`s`, `/s`, `bytes`, `bool`).
    pub unit: &'static str,
    /// PromQL with `$M` for the kubelet's matcher, `$N` for the node's name and `$W` for the rate
    /// window.
    pub query: &'static str,
    /// Past this the signal is degraded.
    pub threshold: f64,
    /// Which side of the threshold is degraded.
    pub worse: Worse,
    /// Where the series come from.
    pub source: Source,
    /// Why this threshold.
    pub why: &'static str,
}

/// The signals, in the order the kubelet's failure chain usually runs: the runtime, the relists
/// that wait on it, the PLEG heartbeat, the kubelet's scrape, then what the control plane sees.
pub const SIGNALS: &[Signal] = &[
    Signal {
        id: "runtime-list-seconds",
        title: "runtime list calls (mean)",
        unit: "s",
        query: r#"sum(rate(kubelet_runtime_operations_duration_seconds_sum{$M,operation_type=~"list_podsandbox|list_containers"}[$W])) / sum(rate(kubelet_runtime_operations_duration_seconds_count{$M,operation_type=~"list_podsandbox|list_containers"}[$W]))"#,
        threshold: 0.25,
        worse: Worse::Above,
        source: Source::Kubelet,
        why: "healthy list calls take milliseconds; every relist makes two, so 0.25 s each is half of a degraded (1 s) relist",
    },
    Signal {
        id: "runtime-errors-per-second",
        title: "runtime call errors",
        unit: "/s",
        query: r#"sum(rate(kubelet_runtime_operations_errors_total{$M}[$W]))"#,
        threshold: 0.01,
        worse: Worse::Above,
        source: Source::Kubelet,
        why: "a healthy runtime answers every call; more than one error in 100 s is a runtime failing calls",
    },
    Signal {
        id: "relist-seconds",
        title: "PLEG relist (mean)",
        unit: "s",
        query: r#"sum(rate(kubelet_pleg_relist_duration_seconds_sum{$M}[$W])) / sum(rate(kubelet_pleg_relist_duration_seconds_count{$M}[$W]))"#,
        threshold: thresholds::PLEG_DEGRADED_P50_SECONDS,
        worse: Worse::Above,
        source: Source::Kubelet,
        why: "the kubelet relists every second: a relist that takes longer is the degraded tier",
    },
    Signal {
        id: "pleg-last-seen-seconds",
        title: "since the last relist",
        unit: "s",
        query: r#"max(time() - kubelet_pleg_last_seen_seconds{$M})"#,
        threshold: thresholds::PLEG_LAST_SEEN_WARN_SECONDS,
        worse: Worse::Above,
        source: Source::Kubelet,
        why: "a relist a minute old is stuck; at 3 minutes the kubelet reports PLEG not healthy",
    },
    Signal {
        id: "scrape-seconds",
        title: "kubelet /metrics scrape",
        unit: "s",
        query: r#"max(scrape_duration_seconds{$M,metrics_path=~"(/metrics)?"})"#,
        threshold: 5.0,
        worse: Worse::Above,
        source: Source::Scrape,
        why: "the kubelet's /metrics waits on the runtime's list calls; past 5 s it nears the scrape timeout",
    },
    Signal {
        id: "kubelet-up",
        title: "kubelet scraped (up)",
        unit: "bool",
        query: r#"max(up{$M,metrics_path=~"(/metrics)?"})"#,
        threshold: 0.5,
        worse: Worse::Below,
        source: Source::Scrape,
        why: "0 when Prometheus could not scrape the kubelet: down, cut off, or too slow to answer",
    },
    Signal {
        id: "kubelet-rss-bytes",
        title: "kubelet memory (RSS)",
        unit: "bytes",
        query: r#"max(process_resident_memory_bytes{$M,metrics_path=~"(/metrics)?",job=~".*kubelet.*"})"#,
        threshold: thresholds::RSS_WARN_BYTES,
        worse: Worse::Above,
        source: Source::Kubelet,
        why: "the kubelet check's line: past 500 MiB the kubelet is leaking or has too many pods",
    },
    Signal {
        id: "client-cert-ttl-seconds",
        title: "client certificate TTL",
        unit: "s",
        query: r#"min(kubelet_certificate_manager_client_ttl_seconds{$M})"#,
        threshold: thresholds::CERT_WARN_SECONDS,
        worse: Worse::Below,
        source: Source::Kubelet,
        why: "under 7 days the certificate should have been renewed already",
    },
    Signal {
        id: "node-ready",
        title: "Ready (kube-state-metrics)",
        unit: "bool",
        query: r#"max(kube_node_status_condition{node="$N",condition="Ready",status="true"})"#,
        threshold: 0.5,
        worse: Worse::Below,
        source: Source::KubeStateMetrics,
        why: "the node's Ready condition as the control plane saw it",
    },
    Signal {
        id: "lease-age-seconds",
        title: "lease age (kube-state-metrics)",
        unit: "s",
        query: r#"max(time() - kube_lease_renew_time{namespace="kube-node-lease",lease="$N"})"#,
        threshold: 40.0,
        worse: Worse::Above,
        source: Source::KubeStateMetrics,
        why: "the kubelet renews every 10 s; the node lifecycle controller marks it Unknown after 40 s",
    },
];

/// The signal with this id.
pub fn signal(id: &str) -> Option<&'static Signal> {
    SIGNALS.iter().find(|s| s.id == id)
}

/// The query of a signal for this node and kubelet matcher.
pub fn query_for(s: &Signal, matcher: &str, node: &str, window: &str) -> String {
    s.query
        .replace("$M", matcher)
        .replace("$N", &escape_label_value(node))
        .replace("$W", window)
}

/// The rate window for a step: two minutes (four 30 s scrapes), or the step when it is longer, so
/// that a long range's points do not sample a sliver of it.
pub fn rate_window(step_seconds: u64) -> String {
    format!("{}s", step_seconds.max(120))
}

/// A label value inside a PromQL string literal.
pub fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// What was asked of the Prometheus and what it answered, per signal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The Prometheus asked: a URL, or the service reached through the API server.
    pub source: String,
    /// How `auto` found it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<String>,
    /// The range asked.
    pub start: Timestamp,
    /// The range's end (the run's start).
    pub end: Timestamp,
    /// Seconds between points.
    pub step_seconds: f64,
    /// Seconds between the kubelet's scrapes (the median of the last ten minutes' `up` samples),
    /// when they could be read: the onsets are found again to within one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_seconds: Option<f64>,
    /// How the kubelet's series were matched (`node="n1"` or `instance=~"10.0.0.5(:[0-9]+)?"`);
    /// `None` when no series of this node's kubelet was found.
    pub matcher: Option<String>,
    /// What the match found and what it could not tell apart (several scrape jobs, no series).
    pub notes: Vec<String>,
    /// Per signal, in [`SIGNALS`] order.
    pub signals: Vec<SignalHistory>,
}

/// A signal's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalHistory {
    /// [`Signal::id`].
    pub id: String,
    /// The query sent.
    pub query: String,
    /// What came back.
    pub status: SeriesStatus,
    /// The threshold and its side (copied from the signal, for readers of the report alone).
    pub threshold: f64,
    /// Which side of the threshold is degraded.
    pub worse: Worse,
    /// `[unix seconds, value]`, oldest first (at most a few hundred: the step bounds them).
    pub points: Vec<(i64, f64)>,
    /// The analysis of the points.
    pub timeline: Timeline,
}

/// Whether the query found the series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SeriesStatus {
    /// One series came back.
    Found,
    /// No series: the Prometheus does not have it (not scraped, another label, no
    /// kube-state-metrics).
    Missing,
    /// The query failed.
    Failed {
        /// Why.
        message: String,
    },
}

/// Onset, peak and now of one signal over the range.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// When the latest degraded episode began (the first degraded point after a healthy one, or
    /// the range's first point when it was degraded throughout).
    pub onset: Option<Timestamp>,
    /// Whether it was degraded from the first point of the range (the onset is earlier).
    pub degraded_from_start: bool,
    /// When it recovered, when the latest episode ended inside the range.
    pub recovered: Option<Timestamp>,
    /// The worst value and when (the greatest, or the least where lower is worse).
    pub peak: Option<(Timestamp, f64)>,
    /// The last value and when.
    pub now: Option<(Timestamp, f64)>,
    /// No point in the last part of the range: the series went silent (a kubelet not scraped).
    pub silent_since: Option<Timestamp>,
    /// The onset was found again to within one scrape ([`refine_onset`]); otherwise it is the
    /// first degraded point at the range's step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub onset_refined: bool,
}

impl Timeline {
    /// Degraded at the range's end.
    pub fn ongoing(&self) -> bool {
        self.onset.is_some() && self.recovered.is_none()
    }
}

/// The onset/peak/now of `points` (oldest first) against the threshold. A series that stops
/// before the range's end by more than two steps is silent from its last point.
pub fn analyse(
    points: &[(i64, f64)],
    threshold: f64,
    worse: Worse,
    (start, end): (i64, i64),
    step: i64,
) -> Timeline {
    let degraded = |v: f64| match worse {
        Worse::Above => v > threshold,
        Worse::Below => v < threshold,
    };
    let ts = |s: i64| Timestamp::from_second(s).ok();
    let mut t = Timeline::default();
    let Some(&(last_t, last_v)) = points.last() else {
        return t;
    };
    t.now = ts(last_t).map(|at| (at, last_v));
    let worst = points.iter().copied().reduce(|a, b| {
        let b_worse = match worse {
            Worse::Above => b.1 > a.1,
            Worse::Below => b.1 < a.1,
        };
        if b_worse { b } else { a }
    });
    t.peak = worst.and_then(|(at, v)| ts(at).map(|at| (at, v)));
    // The latest episode: walk back from the end to its last degraded point, then to its start.
    if let Some(last_bad) = points.iter().rposition(|p| degraded(p.1)) {
        let first_bad = points[..=last_bad]
            .iter()
            .rposition(|p| !degraded(p.1))
            .map_or(0, |i| i + 1);
        t.onset = ts(points[first_bad].0);
        t.degraded_from_start = first_bad == 0 && points[0].0 - start <= step;
        t.recovered = points.get(last_bad + 1).and_then(|p| ts(p.0));
    }
    if end - last_t > 2 * step {
        t.silent_since = ts(last_t);
    }
    t
}

/// The onset found again to within one scrape. At the range's step, a rate over minutes crosses its
/// line well after the calls slowed (the window fills slowly) and the step itself is coarser than
/// the scrape. `fine` are the signal's points one second apart over the stretch before the coarse
/// onset `coarse` (rates taken over two scrapes, so each point covers one scrape interval's calls).
/// The episode began where the run of degraded points that ends at the coarse onset began; for a
/// rate, one scrape before that point (the interval it covers began there; the calls that crossed
/// the line fell inside it). `None` when the point at the coarse onset is not degraded at this
/// resolution, or the run fills the stretch (it began before the stretch asked).
pub fn refine_onset(
    fine: &[(i64, f64)],
    (threshold, worse): (f64, Worse),
    coarse: i64,
    scrape: i64,
    rate: bool,
) -> Option<i64> {
    let degraded = |v: f64| match worse {
        Worse::Above => v > threshold,
        Worse::Below => v < threshold,
    };
    let last = fine.iter().rposition(|p| p.0 <= coarse)?;
    if coarse - fine[last].0 > scrape || !degraded(fine[last].1) {
        return None;
    }
    let mut first = last;
    while first > 0
        && degraded(fine[first - 1].1)
        && fine[first].0 - fine[first - 1].0 <= 2 * scrape
    {
        first -= 1;
    }
    if first == 0 {
        return None;
    }
    Some(fine[first].0 - if rate { scrape } else { 0 })
}

/// The median seconds between samples (timestamps oldest first), when there are three or more.
pub fn median_interval(times: &[f64]) -> Option<f64> {
    let mut d: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    if d.len() < 2 {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2])
}

/// Eight levels of a sparkline, and a gap.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `points` over `[start, end]` in `width` columns: each column the worst value in
/// its slice of time; a blank where no point fell.
pub fn sparkline(
    points: &[(i64, f64)],
    start: i64,
    end: i64,
    width: usize,
    worse: Worse,
    threshold: f64,
) -> String {
    if width == 0 || end <= start {
        return String::new();
    }
    let span = (end - start) as f64;
    let mut cols: Vec<Option<f64>> = vec![None; width];
    for &(t, v) in points {
        if !v.is_finite() || t < start || t > end {
            continue;
        }
        let i = (((t - start) as f64 / span) * width as f64) as usize;
        let i = i.min(width - 1);
        cols[i] = Some(match (cols[i], worse) {
            (None, _) => v,
            (Some(c), Worse::Above) => c.max(v),
            (Some(c), Worse::Below) => c.min(v),
        });
    }
    // Scaled from zero (or the least value, when negative) to the threshold or the greatest
    // value: a healthy series stays low however it wobbles, a bar at the top is past the line.
    let values: Vec<f64> = cols.iter().flatten().copied().collect();
    let lo = values.iter().copied().fold(0.0, f64::min);
    let hi = values.iter().copied().fold(threshold, f64::max);
    // Where lower is worse the bars show how far below the top a value fell: a drop is a spike.
    cols.iter()
        .map(|c| match c {
            None => ' ',
            Some(_) if hi - lo <= f64::EPSILON => BARS[0],
            Some(v) => {
                let share = match worse {
                    Worse::Above => (v - lo) / (hi - lo),
                    Worse::Below => (hi - v) / (hi - lo),
                };
                let level = (share * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// A value in the signal's unit, short.
pub fn show(value: f64, unit: &str) -> String {
    match unit {
        "s" if value.abs() >= 86400.0 => format!("{:.1} d", value / 86400.0),
        "s" if value.abs() >= 120.0 => format!("{:.0} min", value / 60.0),
        "s" if value.abs() >= 10.0 => format!("{value:.0} s"),
        "s" => format!("{value:.2} s"),
        "/s" => format!("{value:.2}/s"),
        "bytes" => format!("{:.0} MiB", value / (1024.0 * 1024.0)),
        "bool" => format!("{value:.0}"),
        _ => format!("{value}"),
    }
}

/// `HH:MM:SS` of a time (UTC), for lines that sit beside a full timestamp.
pub fn clock(t: Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

impl History {
    /// The signals degraded at some point in the range, by onset (oldest first); ties keep the
    /// table's order (the runtime before the relists that wait on it).
    pub fn onsets(&self) -> Vec<(&SignalHistory, Timestamp)> {
        let mut v: Vec<(&SignalHistory, Timestamp)> = self
            .signals
            .iter()
            .filter_map(|s| s.timeline.onset.map(|o| (s, o)))
            .collect();
        v.sort_by_key(|(_, o)| *o);
        v
    }

    /// One line per signal for a person: onset, peak, now, or why there is nothing.
    pub fn lines(&self) -> Vec<String> {
        self.signals
            .iter()
            .map(|s| {
                let spec = signal(&s.id);
                let title = spec.map_or(s.id.as_str(), |x| x.title);
                let unit = spec.map_or("", |x| x.unit);
                match &s.status {
                    SeriesStatus::Missing => format!("{title}: no series"),
                    SeriesStatus::Failed { message } => format!("{title}: query failed: {message}"),
                    SeriesStatus::Found => describe(title, unit, s),
                }
            })
            .collect()
    }
}

fn describe(title: &str, unit: &str, s: &SignalHistory) -> String {
    let t = &s.timeline;
    let mut text = match (t.onset, t.recovered) {
        (Some(o), None) => format!(
            "{title}: degraded {}{} (past {})",
            if t.degraded_from_start {
                "since before "
            } else {
                "since "
            },
            clock(o),
            show(s.threshold, unit)
        ),
        (Some(o), Some(r)) => format!(
            "{title}: degraded {}–{} (past {}), recovered",
            clock(o),
            clock(r),
            show(s.threshold, unit)
        ),
        (None, _) => format!("{title}: within {}", show(s.threshold, unit)),
    };
    if let Some((at, v)) = t.peak {
        text += &format!("; worst {} at {}", show(v, unit), clock(at));
    }
    if let Some((_, v)) = t.now {
        text += &format!("; now {}", show(v, unit));
    }
    if let Some(at) = t.silent_since {
        text += &format!("; no data since {}", clock(at));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 15;

    fn series(values: &[f64]) -> Vec<(i64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (1_000_000 + i as i64 * STEP, *v))
            .collect()
    }

    #[test]
    fn the_latest_episode_has_an_onset_a_peak_and_now() {
        let p = series(&[0.001, 0.002, 0.4, 0.6, 0.5, 0.6]);
        let end = p.last().unwrap().0;
        let t = analyse(&p, 0.25, Worse::Above, (1_000_000, end), STEP);
        assert_eq!(t.onset.unwrap().as_second(), 1_000_000 + 2 * STEP);
        assert!(!t.degraded_from_start);
        assert!(t.ongoing());
        assert_eq!(t.peak.unwrap().1, 0.6);
        assert_eq!(t.peak.unwrap().0.as_second(), 1_000_000 + 3 * STEP);
        assert_eq!(t.now.unwrap().1, 0.6);
        assert_eq!(t.silent_since, None);
    }

    #[test]
    fn a_recovered_episode_says_when_and_the_healthy_series_has_no_onset() {
        let p = series(&[0.0, 0.5, 0.5, 0.0, 0.0]);
        let end = p.last().unwrap().0;
        let t = analyse(&p, 0.25, Worse::Above, (1_000_000, end), STEP);
        assert_eq!(t.onset.unwrap().as_second(), 1_000_000 + STEP);
        assert_eq!(t.recovered.unwrap().as_second(), 1_000_000 + 3 * STEP);
        assert!(!t.ongoing());
        let healthy = analyse(
            &series(&[0.0, 0.1, 0.2]),
            0.25,
            Worse::Above,
            (1_000_000, end),
            STEP,
        );
        assert_eq!(healthy.onset, None);
        // Exactly at the threshold is not past it.
        let at = analyse(&series(&[0.25]), 0.25, Worse::Above, (1_000_000, end), STEP);
        assert_eq!(at.onset, None);
    }

    #[test]
    fn lower_is_worse_for_up_and_a_silent_series_says_since_when() {
        let p = series(&[1.0, 1.0, 0.0, 0.0]);
        let end = p.last().unwrap().0 + 10 * STEP;
        let t = analyse(&p, 0.5, Worse::Below, (1_000_000, end), STEP);
        assert_eq!(t.onset.unwrap().as_second(), 1_000_000 + 2 * STEP);
        assert_eq!(t.peak.unwrap().1, 0.0);
        assert_eq!(t.silent_since.unwrap().as_second(), 1_000_000 + 3 * STEP);
        // Degraded throughout: the onset is before the range.
        let all = analyse(
            &series(&[0.0, 0.0]),
            0.5,
            Worse::Below,
            (1_000_000, end),
            STEP,
        );
        assert!(all.degraded_from_start);
    }

    #[test]
    fn sparklines_scale_from_zero_to_the_threshold_and_leave_gaps_blank() {
        let p = vec![(0, 0.0), (10, 1.0), (30, 0.5)];
        assert_eq!(sparkline(&p, 0, 40, 4, Worse::Above, 0.25), "▁█ ▅");
        // Below the threshold the bars stay low: the line is the top.
        assert_eq!(sparkline(&p, 0, 40, 4, Worse::Above, 7.0), "▁▂ ▂");
        assert_eq!(
            sparkline(&[(0, 2.0), (20, 2.0)], 0, 40, 2, Worse::Above, 2.0),
            "██"
        );
        assert_eq!(sparkline(&[], 0, 40, 3, Worse::Above, 1.0), "   ");
        assert_eq!(sparkline(&p, 0, 0, 3, Worse::Above, 1.0), "");
    }

    #[test]
    fn onsets_come_oldest_first_and_lines_name_the_threshold() {
        let p1 = series(&[0.0, 0.0, 2.0]);
        let p2 = series(&[0.0, 0.5, 0.5]);
        let end = p1.last().unwrap().0;
        let mk = |id: &str, p: Vec<(i64, f64)>| {
            let s = signal(id).unwrap();
            SignalHistory {
                id: id.into(),
                query: String::new(),
                status: SeriesStatus::Found,
                threshold: s.threshold,
                worse: s.worse,
                timeline: analyse(&p, s.threshold, s.worse, (1_000_000, end), STEP),
                points: p,
            }
        };
        let h = History {
            source: "http://p".into(),
            found_by: None,
            start: Timestamp::from_second(1_000_000).unwrap(),
            end: Timestamp::from_second(end).unwrap(),
            step_seconds: STEP as f64,
            scrape_seconds: None,
            matcher: Some("node=\"n\"".into()),
            notes: vec![],
            signals: vec![mk("relist-seconds", p1), mk("runtime-list-seconds", p2)],
        };
        let order: Vec<&str> = h.onsets().iter().map(|(s, _)| s.id.as_str()).collect();
        assert_eq!(order, ["runtime-list-seconds", "relist-seconds"]);
        let lines = h.lines();
        assert!(
            lines[0].starts_with("PLEG relist (mean): degraded since "),
            "{lines:?}"
        );
        assert!(lines[0].contains("past 1.00 s"), "{lines:?}");
        assert!(lines[1].contains("worst 0.50 s"), "{lines:?}");
    }

    #[test]
    fn onsets_are_found_again_to_the_scrape() {
        let above = (1.0, Worse::Above);
        // One point a second; degraded from 1060 on, the coarse onset at 1090.
        let fine: Vec<(i64, f64)> = (1000..=1090)
            .map(|t| (t, if t >= 1060 { 3.0 } else { 0.01 }))
            .collect();
        // A gauge: the first degraded sample; a rate: the interval before it.
        assert_eq!(refine_onset(&fine, above, 1090, 10, false), Some(1060));
        assert_eq!(refine_onset(&fine, above, 1090, 10, true), Some(1050));
        // An earlier blip apart from the run does not count.
        let mut blip = fine.clone();
        blip[20].1 = 5.0;
        assert_eq!(refine_onset(&blip, above, 1090, 10, false), Some(1060));
        // Not degraded at the coarse onset at this resolution, or degraded throughout: unknown.
        let calm: Vec<(i64, f64)> = fine.iter().map(|p| (p.0, 0.01)).collect();
        assert_eq!(refine_onset(&calm, above, 1090, 10, false), None);
        let throughout: Vec<(i64, f64)> = fine.iter().map(|p| (p.0, 3.0)).collect();
        assert_eq!(refine_onset(&throughout, above, 1090, 10, false), None);
        // The points end long before the coarse onset: nothing to say.
        assert_eq!(refine_onset(&fine[..50], above, 1090, 10, false), None);
        // A gap longer than two scrapes ends the run; lower is worse for `up`.
        let up = [
            (1000, 1.0),
            (1010, 1.0),
            (1020, 0.0),
            (1060, 0.0),
            (1070, 0.0),
        ];
        assert_eq!(
            refine_onset(&up, (0.5, Worse::Below), 1075, 10, false),
            Some(1060)
        );
        assert_eq!(median_interval(&[0.0, 10.0, 19.5, 30.0, 45.0]), Some(10.5));
        assert_eq!(median_interval(&[0.0, 10.0]), None);
    }

    #[test]
    fn queries_fill_in_the_matcher_and_an_escaped_node_name() {
        let s = signal("node-ready").unwrap();
        assert!(query_for(s, "node=\"a\"", "a\"b", "2m").contains(r#"node="a\"b""#));
        let r = signal("relist-seconds").unwrap();
        let q = query_for(r, r#"instance=~"x""#, "n", &rate_window(15));
        assert!(q.contains("[120s]"), "{q}");
        assert_eq!(rate_window(360), "360s");
        assert!(q.contains(r#"{instance=~"x"}"#), "{q}");
        assert!(
            SIGNALS
                .iter()
                .all(|s| s.query.contains("$M") || s.query.contains("$N"))
        );
    }
}
