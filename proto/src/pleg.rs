//! The PLEG timeline: what the kubelet's relists did between two scrapes of its `/metrics` (one
//! [`Tick`]), judged against the kubelet's own thresholds. `kubectl nodehealth pleg <node>` makes
//! a tick every second through the API server; the flight recorder makes one every ten seconds
//! on the node and publishes the last minutes of them, so the history outlives the kubelet. Both
//! use [`tick`]; each tick is the difference of two scrapes, and histograms give counts and bucket
//! bounds, never an invented precision.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::metrics::{Histogram, Labels, MetricsSnapshot, QuantileBucket};

/// Stuck relist: kubelet_pleg_last_seen_seconds age for a warning (FACTS: our own, well below
/// the kubelet's 3 m).
pub const PLEG_LAST_SEEN_WARN_SECONDS: f64 = 60.0;
/// The kubelet's PLEG health threshold (pkg/kubelet/pleg/generic.go relistThreshold = 3m).
pub const PLEG_UNHEALTHY_SECONDS: f64 = 180.0;
/// Degraded tier: relist duration p50 > 1 s (a DefBuckets bound).
pub const PLEG_DEGRADED_P50_SECONDS: f64 = 1.0;

pub const RELIST: &str = "kubelet_pleg_relist_duration_seconds";
pub const INTERVAL: &str = "kubelet_pleg_relist_interval_seconds";
pub const LAST_SEEN: &str = "kubelet_pleg_last_seen_seconds";
pub const RUNTIME: &str = "kubelet_runtime_operations_duration_seconds";
pub const RUNTIME_ERRORS: &str = "kubelet_runtime_operations_errors_total";
const LIST_OPERATIONS: &[&str] = &["list_podsandbox", "list_containers"];

/// The metric families a tick reads: a scrape reduced to these is all [`tick`] needs.
pub const FAMILIES: &[&str] = &[RELIST, INTERVAL, LAST_SEEN, RUNTIME, RUNTIME_ERRORS];

/// What happened between two scrapes (or, folded, between the first and the last of a run of
/// quiet ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tick {
    /// When the later scrape arrived.
    pub at: Timestamp,
    /// Seconds between the two scrapes (the sum, for folded ticks).
    #[serde(default)]
    pub seconds: f64,
    /// Relists finished between the two scrapes.
    pub relists: f64,
    /// Their mean duration (exact: sum / count).
    pub relist_mean_seconds: Option<f64>,
    /// The bucket holding the slowest of them.
    pub relist_slowest: Option<QuantileBucket>,
    /// Mean time between relist starts.
    pub interval_mean_seconds: Option<f64>,
    /// Seconds since the last finished relist (kubelet_pleg_last_seen_seconds).
    pub last_seen_age_seconds: Option<f64>,
    /// The kubelet's runtime list calls (ListPodSandbox, ListContainers) in the same time.
    pub runtime_list_calls: f64,
    pub runtime_list_mean_seconds: Option<f64>,
    pub runtime_list_slowest: Option<QuantileBucket>,
    /// Runtime operation errors in the same time.
    pub runtime_errors: f64,
    /// The counters went backwards: the kubelet restarted between the scrapes.
    pub restarted: bool,
    /// How this time looks: `ok`, `slow` (relists over 1 s), `stuck` (no relist for 60 s),
    /// `unhealthy` (none for 3 min: the kubelet reports PLEG unhealthy).
    pub state: String,
}

fn list_op(l: &Labels) -> bool {
    l.get("operation_type")
        .is_some_and(|o| LIST_OPERATIONS.contains(&o.as_str()))
}

fn delta(
    prev: &MetricsSnapshot,
    cur: &MetricsSnapshot,
    name: &str,
    filter: impl Fn(&Labels) -> bool + Copy,
) -> Option<(Histogram, bool)> {
    let w = Histogram::window(
        &prev.histogram_where(name, filter)?,
        &cur.histogram_where(name, filter)?,
    );
    Some((w.histogram, w.reset))
}

/// The tick between two scrapes.
pub fn tick(prev: &MetricsSnapshot, cur: &MetricsSnapshot) -> Tick {
    let at = cur.scraped_at.unwrap_or_else(Timestamp::now);
    let seconds = prev.scraped_at.map_or(0.0, |p| {
        (at.as_millisecond() - p.as_millisecond()).max(0) as f64 / 1e3
    });
    let all = |_: &Labels| true;
    let relist = delta(prev, cur, RELIST, all);
    let interval = delta(prev, cur, INTERVAL, all);
    let runtime = delta(prev, cur, RUNTIME, list_op);
    let errors = match (
        prev.sum_where(RUNTIME_ERRORS, all),
        cur.sum_where(RUNTIME_ERRORS, all),
    ) {
        (Some(a), Some(b)) if b >= a => b - a,
        (None, Some(b)) => b,
        _ => 0.0,
    };
    let last_seen_age_seconds = cur
        .scalar(LAST_SEEN)
        .filter(|t| *t > 0.0)
        .map(|t| (at.as_millisecond() as f64 / 1e3 - t).max(0.0));
    let relist_mean_seconds = relist.as_ref().and_then(|(h, _)| h.mean());
    // A relist finished in this time: not stuck, whatever the two clocks say (the age is the
    // node's timestamp against the scraper's clock).
    let advanced = match (prev.scalar(LAST_SEEN), cur.scalar(LAST_SEEN)) {
        (Some(a), Some(b)) => b > a,
        _ => false,
    };
    let state = match last_seen_age_seconds.filter(|_| !advanced) {
        Some(a) if a > PLEG_UNHEALTHY_SECONDS => "unhealthy",
        Some(a) if a > PLEG_LAST_SEEN_WARN_SECONDS => "stuck",
        _ if relist_mean_seconds.is_some_and(|m| m > PLEG_DEGRADED_P50_SECONDS) => "slow",
        _ => "ok",
    };
    Tick {
        at,
        seconds,
        relists: relist.as_ref().map_or(0.0, |(h, _)| h.count),
        relist_mean_seconds,
        relist_slowest: relist.as_ref().and_then(|(h, _)| h.quantile(1.0)),
        interval_mean_seconds: interval.as_ref().and_then(|(h, _)| h.mean()),
        last_seen_age_seconds,
        runtime_list_calls: runtime.as_ref().map_or(0.0, |(h, _)| h.count),
        runtime_list_mean_seconds: runtime.as_ref().and_then(|(h, _)| h.mean()),
        runtime_list_slowest: runtime.as_ref().and_then(|(h, _)| h.quantile(1.0)),
        runtime_errors: errors,
        restarted: [&relist, &interval, &runtime]
            .iter()
            .any(|d| d.as_ref().is_some_and(|(_, reset)| *reset)),
        state: state.into(),
    }
}

/// The worst state of a timeline.
pub fn worst(ticks: &[Tick]) -> &'static str {
    ["unhealthy", "stuck", "slow"]
        .into_iter()
        .find(|s| ticks.iter().any(|t| t.state == *s))
        .unwrap_or("ok")
}

/// Runs of quiet ticks (`ok`, no restart, no runtime error) folded into one each, the others
/// kept as they are: a healthy node's fifteen minutes publish as one tick, a troubled one's keep
/// every tick of the trouble. A folded tick sums the counts and the seconds, weights the means by
/// their counts, keeps the slowest bucket and the last tick's time and last-seen age.
pub fn fold(ticks: &[Tick]) -> Vec<Tick> {
    let quiet = |t: &Tick| t.state == "ok" && !t.restarted && t.runtime_errors == 0.0;
    let mut out: Vec<Tick> = Vec::new();
    let mut run_open = false;
    for t in ticks {
        match out.last_mut() {
            Some(last) if run_open && quiet(t) => merge(last, t),
            _ => out.push(t.clone()),
        }
        run_open = quiet(t);
    }
    out
}

fn merge(into: &mut Tick, t: &Tick) {
    let weighted = |a: Option<f64>, wa: f64, b: Option<f64>, wb: f64| match (a, b) {
        (Some(a), Some(b)) if wa + wb > 0.0 => Some((a * wa + b * wb) / (wa + wb)),
        (a, b) => a.or(b),
    };
    let slowest = |a: Option<QuantileBucket>, b: Option<QuantileBucket>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.upper > a.upper { b } else { a }),
        (a, b) => a.or(b),
    };
    into.relist_mean_seconds = weighted(
        into.relist_mean_seconds,
        into.relists,
        t.relist_mean_seconds,
        t.relists,
    );
    // Intervals are counted once per relist start: the relists weigh them well enough.
    into.interval_mean_seconds = weighted(
        into.interval_mean_seconds,
        into.relists,
        t.interval_mean_seconds,
        t.relists,
    );
    into.runtime_list_mean_seconds = weighted(
        into.runtime_list_mean_seconds,
        into.runtime_list_calls,
        t.runtime_list_mean_seconds,
        t.runtime_list_calls,
    );
    into.relist_slowest = slowest(into.relist_slowest.take(), t.relist_slowest);
    into.runtime_list_slowest = slowest(into.runtime_list_slowest.take(), t.runtime_list_slowest);
    into.relists += t.relists;
    into.runtime_list_calls += t.runtime_list_calls;
    into.seconds += t.seconds;
    into.at = t.at;
    into.last_seen_age_seconds = t.last_seen_age_seconds;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at_s: i64, state: &str, relists: f64, mean: Option<f64>, upper: f64) -> Tick {
        Tick {
            at: Timestamp::from_second(1_700_000_000 + at_s).unwrap(),
            seconds: 10.0,
            relists,
            relist_mean_seconds: mean,
            relist_slowest: Some(QuantileBucket { lower: 0.0, upper }),
            interval_mean_seconds: Some(1.0),
            last_seen_age_seconds: Some(at_s as f64 / 100.0),
            runtime_list_calls: relists * 2.0,
            runtime_list_mean_seconds: mean,
            runtime_list_slowest: None,
            runtime_errors: 0.0,
            restarted: false,
            state: state.into(),
        }
    }

    #[test]
    fn quiet_runs_fold_into_one_and_trouble_keeps_every_tick() {
        let ticks = [
            t(10, "ok", 10.0, Some(0.01), 0.025),
            t(20, "ok", 10.0, Some(0.03), 0.05),
            t(30, "slow", 4.0, Some(1.6), 2.5),
            t(40, "slow", 3.0, Some(1.8), 2.5),
            t(50, "ok", 9.0, Some(0.02), 0.025),
            t(60, "ok", 1.0, None, 0.025),
        ];
        let f = fold(&ticks);
        assert_eq!(
            f.iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
            ["ok", "slow", "slow", "ok"]
        );
        let first = &f[0];
        assert_eq!((first.relists, first.seconds), (20.0, 20.0));
        assert!((first.relist_mean_seconds.unwrap() - 0.02).abs() < 1e-9);
        assert_eq!(first.relist_slowest.as_ref().unwrap().upper, 0.05);
        assert_eq!(first.at, ticks[1].at);
        assert_eq!(first.last_seen_age_seconds, Some(0.2));
        // A tick with no mean of its own leaves the run's mean as it was.
        assert_eq!(f[3].relist_mean_seconds, Some(0.02));
        assert_eq!(f[3].relists, 10.0);
        // A restart or an error is not folded away, even in an ok tick.
        let mut r = ticks.clone();
        r[1].restarted = true;
        r[5].runtime_errors = 1.0;
        assert_eq!(fold(&r).len(), 6);
        assert_eq!(worst(&f), "slow");
        assert_eq!(worst(&[]), "ok");
    }
}
