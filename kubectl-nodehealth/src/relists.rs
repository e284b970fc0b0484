//! Derived views of the evidence that several stages share: the window's relists next to the
//! runtime's list calls, and the PLEG the kubelet runs. Pure functions of the snapshot (no
//! judgement: the checks judge them; collection reads them to size its waits).

use crate::evidence::{Evidence, MetricsSnapshot};
use crate::metrics::{Histogram, Labels};
use crate::units::parse_go_duration;

/// `kubelet_pleg_relist_duration_seconds`.
pub const RELIST_DURATION: &str = "kubelet_pleg_relist_duration_seconds";
/// `kubelet_runtime_operations_duration_seconds`.
pub const RUNTIME_OPERATIONS: &str = "kubelet_runtime_operations_duration_seconds";

/// The two runtime calls of every relist (pkg/kubelet/kuberuntime/kuberuntime_manager.go GetPods:
/// ListPodSandbox, then ListContainers), as `operation_type` labels.
pub const RELIST_CALLS: [&str; 2] = ["list_podsandbox", "list_containers"];

/// One runtime list operation over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ListCalls {
    /// `list_podsandbox` or `list_containers`.
    pub operation: &'static str,
    /// Calls finished in the window (every caller: relists and others).
    pub calls: f64,
    /// Their exact mean, seconds.
    pub mean_seconds: f64,
}

/// The window's relists and the runtime's list calls, from the exact `_sum`/`_count` deltas of the
/// kubelet's histograms — no bucket interpolation.
#[derive(Debug, Clone, PartialEq)]
pub struct RelistWindow {
    /// Relists finished in the window.
    pub relists: f64,
    /// Their exact mean duration, seconds.
    pub mean_relist_seconds: f64,
    /// Share of them above 1 s (a bucket bound).
    pub fraction_over_1s: f64,
    /// The list calls, when the kubelet exports them.
    pub list_calls: Vec<ListCalls>,
    /// A counter went backwards (the kubelet restarted): "since the restart".
    pub reset: bool,
}

impl RelistWindow {
    /// The runtime's time per relist: one ListPodSandbox plus one ListContainers at their window
    /// means. Means, not totals, because other callers make list calls too (the status manager,
    /// stats): a relist makes exactly one of each. `None` unless both were seen.
    pub fn runtime_seconds_per_relist(&self) -> Option<f64> {
        (self.list_calls.len() == RELIST_CALLS.len())
            .then(|| self.list_calls.iter().map(|c| c.mean_seconds).sum())
    }

    /// The share of a relist's time spent waiting on the runtime's list calls (can exceed 1 when
    /// other callers' calls were slower than the relists' own).
    pub fn runtime_share(&self) -> Option<f64> {
        let runtime = self.runtime_seconds_per_relist()?;
        (self.mean_relist_seconds > 0.0).then(|| runtime / self.mean_relist_seconds)
    }
}

fn window(
    start: &MetricsSnapshot,
    end: &MetricsSnapshot,
    name: &str,
    f: impl Fn(&Labels) -> bool + Copy,
) -> Option<(Histogram, bool)> {
    let d = Histogram::window(
        &start.histogram_where(name, f)?,
        &end.histogram_where(name, f)?,
    );
    Some((d.histogram, d.reset))
}

/// The window's relists and list calls; `None` without both scrapes, or when no relist finished.
pub fn relist_window(e: &Evidence) -> Option<RelistWindow> {
    let (start, end) = (e.metrics_start.data()?, e.metrics_end.data()?);
    let (relists, mut reset) = window(start, end, RELIST_DURATION, |_| true)?;
    let mean_relist_seconds = relists.mean()?;
    let mut list_calls = Vec::new();
    for op in RELIST_CALLS {
        let is_op = |l: &Labels| l.get("operation_type").map(String::as_str) == Some(op);
        if let Some((h, r)) = window(start, end, RUNTIME_OPERATIONS, is_op)
            && let Some(mean_seconds) = h.mean()
        {
            reset |= r;
            list_calls.push(ListCalls {
                operation: op,
                calls: h.count,
                mean_seconds,
            });
        }
    }
    Some(RelistWindow {
        relists: relists.count,
        mean_relist_seconds,
        fraction_over_1s: relists.fraction_above(1.0).unwrap_or(0.0),
        list_calls,
        reset,
    })
}

/// Which PLEG the kubelet runs, and the numbers that go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlegMode {
    /// The EventedPLEG feature gate is on: the runtime streams container events and the generic
    /// relist only backs it up.
    pub evented: bool,
    /// How often the generic PLEG relists.
    pub relist_period_seconds: f64,
    /// How long without a successful relist before the kubelet reports PLEG unhealthy.
    pub unhealthy_after_seconds: f64,
    /// Where these came from.
    pub from: String,
}

/// Generic PLEG relist period and threshold (pkg/kubelet/kubelet.go genericPlegRelistPeriod,
/// genericPlegRelistThreshold) ...
const GENERIC: (f64, f64) = (1.0, 180.0);
/// ... and with EventedPLEG (eventedPlegRelistPeriod 300 s, eventedPlegRelistThreshold 10 min).
const EVENTED: (f64, f64) = (300.0, 600.0);

/// The kubelet's PLEG: from its feature gates (`/configz`), and the unhealthy threshold from its
/// own Ready message when that states one ("...; threshold is 3m0s").
pub fn pleg_mode(e: &Evidence) -> PlegMode {
    let gate = e
        .configz
        .data()
        .and_then(|c| c.feature_gates.get("EventedPLEG").copied());
    let evented = gate == Some(true);
    let (period, threshold) = if evented { EVENTED } else { GENERIC };
    let mut from = match gate {
        Some(v) => format!("configz featureGates EventedPLEG={v}"),
        None if e.configz.data().is_some() => {
            "configz: the EventedPLEG gate is not set (off by default)".to_string()
        }
        None => "no configz: assumed the default generic PLEG".to_string(),
    };
    let stated = e
        .node
        .data()
        .and_then(|n| n.condition("Ready"))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.split("threshold is ").nth(1))
        .and_then(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(rest.len());
            parse_go_duration(&rest[..end])
        });
    let unhealthy_after_seconds = match stated {
        Some(s) => {
            from.push_str(&format!("; threshold {s:.0} s from the Ready message"));
            s
        }
        None => threshold,
    };
    PlegMode {
        evented,
        relist_period_seconds: period,
        unhealthy_after_seconds,
        from,
    }
}

/// Whether the window shows relists slow enough to slow a pod's start (the probe pod's start
/// waits for a relist to see its containers): most relists over a second, a relist stalled past
/// a minute, or none finished in a window of several seconds. Measured: a pod start took 20.8 s
/// with list calls held 1.5 s, against 1.0 s healthy.
pub fn slows_pod_starts(e: &Evidence) -> bool {
    if let Some(w) = relist_window(e) {
        return w.fraction_over_1s > 0.5 || w.mean_relist_seconds > 1.0;
    }
    let Some(end) = e.metrics_end.data() else {
        return false;
    };
    let scraped = end.scraped_at.unwrap_or(e.collected_at).as_second() as f64;
    let stalled = end
        .scalar("kubelet_pleg_last_seen_seconds")
        .is_some_and(|seen| seen > 0.0 && scraped - seen > 60.0);
    let none_finished = e.window.requested_seconds >= 2.0
        && e.metrics_start.data().is_some_and(|start| {
            match (
                start.histogram_where(RELIST_DURATION, |_| true),
                end.histogram_where(RELIST_DURATION, |_| true),
            ) {
                (Some(a), Some(b)) => b.count <= a.count,
                _ => false,
            }
        });
    stalled || none_finished
}

/// Whether one scrape shows relists slow since the kubelet started (for the probe pod's start,
/// before the window's second scrape is in): most relists over a second (at least three), or the
/// last successful relist over a minute old.
pub fn slow_since_start(m: &MetricsSnapshot) -> bool {
    let mostly_slow = m
        .histogram_where(RELIST_DURATION, |_| true)
        .filter(|h| h.count >= 3.0)
        .and_then(|h| h.fraction_above(1.0))
        .is_some_and(|f| f > 0.5);
    let scraped = m.scraped_at.map(|t| t.as_second() as f64);
    let stalled = match (m.scalar("kubelet_pleg_last_seen_seconds"), scraped) {
        (Some(seen), Some(at)) => seen > 0.0 && at - seen > 60.0,
        _ => false,
    };
    mostly_slow || stalled
}
