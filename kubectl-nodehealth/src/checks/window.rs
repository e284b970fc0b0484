//! The observation window over the kubelet's metrics: deltas of two scrapes, and the words for
//! them. Quantiles are bucket intervals; means are exact (`_sum`/`_count`).

use std::fmt::Write as _;

use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, MetricsSnapshot};
use crate::metrics::{Histogram, Labels, WindowDelta, counter_delta};
use crate::units::human_duration;

pub(crate) fn metrics_end(e: &Evidence) -> Option<&MetricsSnapshot> {
    e.metrics_end.data()
}

/// Both scrapes, when both were taken.
pub(crate) fn metrics_pair(e: &Evidence) -> Option<(&MetricsSnapshot, &MetricsSnapshot)> {
    Some((e.metrics_start.data()?, e.metrics_end.data()?))
}

pub(crate) fn window_seconds(e: &Evidence) -> f64 {
    match metrics_pair(e) {
        Some((s, t)) => match (s.scraped_at, t.scraped_at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => e.window.requested_seconds,
        },
        None => e.window.requested_seconds,
    }
}

pub(crate) fn window_histogram(
    e: &Evidence,
    name: &str,
    filter: impl Fn(&Labels) -> bool + Copy,
) -> Option<WindowDelta> {
    let (start, end) = metrics_pair(e)?;
    let end_h = end.histogram_where(name, filter)?;
    let start_h = start.histogram_where(name, filter)?;
    Some(Histogram::window(&start_h, &end_h))
}

pub(crate) fn window_counter(
    e: &Evidence,
    name: &str,
    filter: impl Fn(&Labels) -> bool + Copy,
) -> Option<f64> {
    let (start, end) = metrics_pair(e)?;
    Some(counter_delta(
        start.sum_where(name, filter)?,
        end.sum_where(name, filter)?,
    ))
}

pub(crate) fn all(_: &Labels) -> bool {
    true
}

pub(crate) fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p > 0.0 && p < 0.1 {
        "<0.1%".to_string()
    } else {
        format!("{p:.1}%")
    }
}

/// One line describing a histogram: count, p50/p99 buckets and the exact mean.
pub(crate) fn describe(label: &str, h: &Histogram) -> String {
    if h.count <= 0.0 {
        return format!("{label}: no observations");
    }
    let noun = if h.count == 1.0 {
        "observation"
    } else {
        "observations"
    };
    let mut s = format!("{label}: {} {noun}", h.count);
    if let Some(q) = h.quantile(0.5) {
        let _ = write!(s, ", p50 {q}");
    }
    if let Some(q) = h.quantile(0.99) {
        let _ = write!(s, ", p99 {q}");
    }
    if let Some(mean) = h.mean() {
        let _ = write!(s, ", mean {}", human_duration(mean));
    }
    s
}

pub(crate) fn window_label(delta: &WindowDelta, window: f64) -> String {
    if delta.reset {
        "window (counters reset: kubelet restarted; since restart)".to_string()
    } else {
        format!("window ({})", human_duration(window))
    }
}

/// A metric this kubelet does not export.
pub(crate) fn missing_metric(id: FindingId, domain: Domain, name: &str) -> Finding {
    Finding::new(
        id,
        domain,
        Severity::Info,
        format!("this kubelet does not export {name}"),
    )
    .with("metric names are ALPHA and change between kubelet versions")
}
