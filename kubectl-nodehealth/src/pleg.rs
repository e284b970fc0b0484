//! `kubectl nodehealth pleg <node>`: a live per-second PLEG timeline from the kubelet's own
//! metrics (through the API server's node proxy): relists finished in each second and their mean
//! duration, the slowest relist's bucket, the relist interval, the age of the last finished
//! relist (a stuck relist finishes nothing: only this age shows it), and the runtime's list calls
//! in the same second. Each tick is the difference of two scrapes; histograms give counts and
//! bucket bounds, never an invented precision.

use crate::metrics::{QuantileBucket, fmt_seconds};
pub use nodehealth_proto::pleg::{Tick, tick, worst};

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

/// The exit code of a timeline, live or recorded: no tick at all is undiagnosed; any slow,
/// stuck or unhealthy tick is a problem.
pub fn exit_code(ticks: &[Tick]) -> u8 {
    if ticks.is_empty() {
        crate::exit::UNDIAGNOSED
    } else if worst(ticks) == "ok" {
        crate::exit::HEALTHY
    } else {
        crate::exit::PROBLEMS
    }
}

/// The closing lines of a table timeline.
pub fn summary(node: &str, ticks: &[Tick], failures: usize) -> String {
    let relists: f64 = ticks.iter().map(|t| t.relists).sum();
    let seconds: f64 = ticks.iter().map(|t| t.seconds).sum();
    let mut out = format!(
        "\n{seconds:.0} s of timeline, {relists} relists, {failures} failed scrapes; worst: {}.\n",
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
    use crate::evidence::MetricsSnapshot;
    use jiff::Timestamp;
    use nodehealth_proto::pleg::{INTERVAL, LAST_SEEN, RELIST, RUNTIME};

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
        assert_eq!((t.relists, t.state.as_str()), (0.0, "stuck"));
        set_scalar(&mut b, LAST_SEEN, &[], at(200.0));
        let u = tick(&a, &b);
        assert_eq!(u.state, "unhealthy");
        assert_eq!(worst(&[t, u.clone()]), "unhealthy");
        assert!(summary("n1", &[u], 0).contains("PLEG is stuck"));
    }
}
