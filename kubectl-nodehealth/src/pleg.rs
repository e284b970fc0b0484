//! `kubectl nodehealth pleg <node>`: a live per-second PLEG timeline from the kubelet's own
//! metrics (through the API server's node proxy): relists finished in each second and their mean
//! duration, the slowest relist's bucket, the relist interval, the age of the last finished
//! relist (a stuck relist finishes nothing: only this age shows it), and the runtime's list calls
//! in the same second. Each tick is the difference of two scrapes; histograms give counts and
//! bucket bounds, never an invented precision.

use jiff::Timestamp;
use serde::Serialize;

use crate::{
    checks::{PLEG_DEGRADED_P50_SECONDS, PLEG_LAST_SEEN_WARN_SECONDS, PLEG_UNHEALTHY_SECONDS},
    evidence::MetricsSnapshot,
    metrics::{Histogram, QuantileBucket, fmt_seconds},
};

const RELIST: &str = "kubelet_pleg_relist_duration_seconds";
const INTERVAL: &str = "kubelet_pleg_relist_interval_seconds";
const LAST_SEEN: &str = "kubelet_pleg_last_seen_seconds";
const RUNTIME: &str = "kubelet_runtime_operations_duration_seconds";
const RUNTIME_ERRORS: &str = "kubelet_runtime_operations_errors_total";
const LIST_OPERATIONS: &[&str] = &["list_podsandbox", "list_containers"];

/// One second (one pair of scrapes) of the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tick {
    /// When the later scrape arrived.
    pub at: Timestamp,
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
    /// How this second looks: `ok`, `slow` (relists over 1 s), `stuck` (no relist for 60 s),
    /// `unhealthy` (none for 3 min: the kubelet reports PLEG unhealthy).
    pub state: &'static str,
}

fn list_op(l: &crate::metrics::Labels) -> bool {
    l.get("operation_type")
        .is_some_and(|o| LIST_OPERATIONS.contains(&o.as_str()))
}

fn delta(
    prev: &MetricsSnapshot,
    cur: &MetricsSnapshot,
    name: &str,
    filter: impl Fn(&crate::metrics::Labels) -> bool + Copy,
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
    let all = |_: &crate::metrics::Labels| true;
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
    // A relist finished in this second: not stuck, whatever the two clocks say (the age is the
    // node's timestamp against this machine's clock).
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
        state,
    }
}

/// The table header of [`line`].
pub const HEADER: &str = "TIME      STATE      RELISTS  MEAN     SLOWEST        INTERVAL  LAST SEEN  LIST CALLS  LIST MEAN  LIST SLOWEST   ERRORS";

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{}s", fmt_seconds(s)),
    }
}

fn bucket(b: &Option<QuantileBucket>) -> String {
    b.as_ref().map_or("-".into(), |b| b.to_string())
}

/// One tick as a table line.
pub fn line(t: &Tick) -> String {
    format!(
        "{:<9} {:<10} {:>7}  {:<8} {:<14} {:<9} {:<10} {:>10}  {:<10} {:<14} {}{}",
        t.at.strftime("%H:%M:%S"),
        t.state,
        t.relists,
        secs(t.relist_mean_seconds),
        bucket(&t.relist_slowest),
        secs(t.interval_mean_seconds),
        t.last_seen_age_seconds
            .map_or("-".into(), |a| format!("{a:.0}s ago")),
        t.runtime_list_calls,
        secs(t.runtime_list_mean_seconds),
        bucket(&t.runtime_list_slowest),
        t.runtime_errors,
        if t.restarted {
            "  (kubelet restarted)"
        } else {
            ""
        },
    )
}

/// The worst state of a timeline, for the summary and the exit code.
pub fn worst(ticks: &[Tick]) -> &'static str {
    ["unhealthy", "stuck", "slow"]
        .into_iter()
        .find(|s| ticks.iter().any(|t| t.state == *s))
        .unwrap_or("ok")
}

/// The closing lines of a table timeline.
pub fn summary(node: &str, ticks: &[Tick], failures: usize) -> String {
    let relists: f64 = ticks.iter().map(|t| t.relists).sum();
    let mut out = format!(
        "\n{} s of timeline, {relists} relists, {failures} failed scrapes; worst: {}.\n",
        ticks.len(),
        worst(ticks)
    );
    match worst(ticks) {
        "ok" => {}
        "slow" => out.push_str(&format!(
            "Relists took over 1 s on average in some seconds. If the runtime's list calls were \
             slow in the same seconds, the runtime is the bottleneck; if not, the kubelet is. \
             `kubectl nodehealth {node} --trace` names the cause with kernel evidence.\n"
        )),
        _ => out.push_str(&format!(
            "No relist finished for over a minute: the PLEG is stuck (at 3 min the node goes \
             NotReady). `kubectl nodehealth {node} --trace` names the cause; capture a goroutine \
             dump before restarting anything.\n"
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests_support::{ago, healthy_evidence, now, observe, set_scalar};

    /// A kubelet's scrape `age` seconds ago (the fixture's families and buckets).
    fn snapshot(at: Timestamp) -> MetricsSnapshot {
        let e = healthy_evidence();
        let mut m = e.metrics_start.data().expect("fixture scrape").clone();
        m.scraped_at = Some(at);
        m
    }

    #[test]
    fn a_second_of_relists_and_list_calls() {
        let a = snapshot(ago(1.0));
        let mut b = a.clone();
        b.scraped_at = Some(now());
        observe(&mut b, RELIST, &[], 1.5, 1.0);
        observe(&mut b, INTERVAL, &[], 2.5, 1.0);
        observe(
            &mut b,
            RUNTIME,
            &[("operation_type", "list_containers")],
            1.5,
            2.0,
        );
        // A status call is not a list call.
        observe(&mut b, RUNTIME, &[("operation_type", "status")], 9.0, 1.0);
        set_scalar(
            &mut b,
            LAST_SEEN,
            &[],
            now().as_millisecond() as f64 / 1e3 - 0.5,
        );
        let t = tick(&a, &b);
        assert_eq!(t.relists, 1.0);
        assert_eq!(t.relist_mean_seconds, Some(1.5));
        assert_eq!(t.relist_slowest.map(|q| q.upper), Some(2.5));
        assert_eq!(t.runtime_list_calls, 2.0);
        assert_eq!(t.state, "slow");
        assert!(t.last_seen_age_seconds.unwrap() < 1.0);
        assert!(line(&t).contains("slow"), "{}", line(&t));
    }

    #[test]
    fn no_relist_for_a_minute_is_stuck_and_three_is_unhealthy() {
        let a = snapshot(ago(1.0));
        let mut b = a.clone();
        b.scraped_at = Some(now());
        let at = |age: f64| now().as_millisecond() as f64 / 1e3 - age;
        set_scalar(&mut b, LAST_SEEN, &[], at(75.0));
        let t = tick(&a, &b);
        assert_eq!((t.relists, t.state), (0.0, "stuck"));
        set_scalar(&mut b, LAST_SEEN, &[], at(200.0));
        let u = tick(&a, &b);
        assert_eq!(u.state, "unhealthy");
        assert_eq!(worst(&[t, u.clone()]), "unhealthy");
        assert!(summary("n1", &[u], 0).contains("PLEG is stuck"));
    }
}
