//! PLEG: relist duration, interval, the last successful relist, discarded events.

use super::thresholds::*;
use super::window::*;
use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::Evidence;
use crate::relists::{PlegMode, RelistWindow, pleg_mode, relist_window};
use crate::units::human_duration;

/// Relist duration: degraded p50 > 1 s; kubernetes-mixin p99 >= 10 s.
pub fn pleg_duration(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_relist_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(since_start) = end.histogram_where(NAME, all) else {
        return vec![missing_metric(FindingId::PlegDuration, Domain::Pleg, NAME)];
    };
    let window = window_histogram(e, NAME, all);
    let since_line = describe("since kubelet start", &since_start);
    let Some(window) = window else {
        // Only one scrape: judge on since-start, but say so.
        let severity = if since_start.fraction_above(PLEG_P99_SECONDS).unwrap_or(0.0) >= 0.01 {
            Severity::Warning
        } else {
            Severity::Info
        };
        return vec![
            Finding::new(
                FindingId::PlegDuration,
                Domain::Pleg,
                severity,
                "relist duration known only since kubelet start (no window scrape)",
            )
            .with(since_line),
        ];
    };
    let w = &window.histogram;
    let wsecs = window_seconds(e);
    let label = window_label(&window, wsecs);
    let mut f = if w.count <= 0.0 {
        Finding::new(
            FindingId::PlegDuration,
            Domain::Pleg,
            if wsecs >= 2.0 {
                Severity::Warning
            } else {
                Severity::Info
            },
            format!(
                "no relist completed during the {} window (relists run every 1 s)",
                human_duration(wsecs)
            ),
        )
        .fix("a relist is stuck or very slow: see pleg-last-seen and the runtime findings")
    } else if w.fraction_above(PLEG_P99_SECONDS).unwrap_or(0.0) >= 0.01 {
        Finding::new(
            FindingId::PlegDuration,
            Domain::Pleg,
            Severity::Critical,
            format!(
                "relist p99 above 10 s (the top bucket): {} of relists in the window took > 10 s",
                percent(w.fraction_above(PLEG_P99_SECONDS).unwrap_or(0.0))
            ),
        )
        .fix("the runtime's list calls or the kubelet are slow: attribution needs the node probe")
    } else if w.fraction_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0) > 0.5
        && w.count < MIN_WINDOW_RELISTS
        && since_start
            .fraction_above(PLEG_DEGRADED_P50_SECONDS)
            .unwrap_or(0.0)
            <= 0.5
    {
        Finding::new(
            FindingId::PlegDuration,
            Domain::Pleg,
            Severity::Info,
            format!(
                "{} of {} relists in the window took > 1 s: too few to judge the median (widen --duration)",
                w.count_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0),
                w.count
            ),
        )
    } else if w.fraction_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0) > 0.5 {
        Finding::new(
            FindingId::PlegDuration,
            Domain::Pleg,
            Severity::Warning,
            format!(
                "degraded: relist p50 above 1 s ({} of relists in the window took > 1 s)",
                percent(w.fraction_above(PLEG_DEGRADED_P50_SECONDS).unwrap_or(0.0))
            ),
        )
        .fix("relists are slow before the node flips: attribute it (disk iowait, runtime socket, CPU starvation or the kubelet) with the node probe")
    } else {
        Finding::new(
            FindingId::PlegDuration,
            Domain::Pleg,
            Severity::Ok,
            format!(
                "relists fast: p50 {}",
                w.quantile(0.5).map(|q| q.to_string()).unwrap_or_default()
            ),
        )
    };
    f = f.with(describe(&label, w)).with(since_line);
    if let Some(frac) = since_start.fraction_above(PLEG_P99_SECONDS)
        && frac > 0.0
    {
        f = f.with(format!(
            "since kubelet start {} relists ({}) took > 10 s",
            since_start.count_above(PLEG_P99_SECONDS).unwrap_or(0.0),
            percent(frac)
        ));
    }
    vec![f]
}

/// Relist interval: degraded when p50 > 2 s.
pub fn pleg_interval(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_relist_interval_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(since_start) = end.histogram_where(NAME, all) else {
        return vec![missing_metric(FindingId::PlegInterval, Domain::Pleg, NAME)];
    };
    let Some(window) = window_histogram(e, NAME, all) else {
        return vec![
            Finding::new(
                FindingId::PlegInterval,
                Domain::Pleg,
                Severity::Info,
                "relist interval known only since kubelet start",
            )
            .with(describe("since kubelet start", &since_start)),
        ];
    };
    let w = &window.histogram;
    if w.count <= 0.0 {
        // No relist finished: pleg-relist-duration already says so.
        return vec![];
    }
    let above_25 = w.fraction_above(2.5).unwrap_or(0.0);
    let mean = w.mean().unwrap_or(0.0);
    let label = window_label(&window, window_seconds(e));
    let since_mean = since_start.mean().unwrap_or(0.0);
    // With EventedPLEG the generic relist runs every 300 s by design.
    let mode = pleg_mode(e);
    let limit = PLEG_INTERVAL_DEGRADED_SECONDS.max(2.0 * mode.relist_period_seconds);
    let degraded = (above_25 > 0.5 && !mode.evented) || mean > limit;
    let f = if degraded && w.count < MIN_WINDOW_RELISTS && since_mean <= limit {
        Finding::new(
            FindingId::PlegInterval,
            Domain::Pleg,
            Severity::Info,
            format!(
                "relist interval {} in the window, but only {} intervals: too few to judge (widen --duration)",
                human_duration(mean),
                w.count
            ),
        )
    } else if degraded {
        Finding::new(
            FindingId::PlegInterval,
            Domain::Pleg,
            Severity::Warning,
            format!(
                "degraded: relists run every {} on average (should be ~{}); {} of intervals > 2.5 s",
                human_duration(mean),
                human_duration(mode.relist_period_seconds),
                percent(above_25)
            ),
        )
        .fix("relists are delayed: the relist goroutine is starved or each relist is slow; attribute it with the node probe")
    } else {
        Finding::new(
            FindingId::PlegInterval,
            Domain::Pleg,
            Severity::Ok,
            format!("relist interval mean {}", human_duration(mean)),
        )
    };
    vec![
        f.with(describe(&label, w))
            .with(describe("since kubelet start", &since_start)),
    ]
}

/// Stuck relist: age of kubelet_pleg_last_seen_seconds (set when a relist starts successfully).
pub fn pleg_last_seen(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_last_seen_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(last_seen) = end.scalar(NAME) else {
        return vec![missing_metric(FindingId::PlegLastSeen, Domain::Pleg, NAME)];
    };
    let scraped = end.scraped_at.unwrap_or(e.collected_at);
    if last_seen <= 0.0 {
        // The gauge is still at its zero value: no relist has succeeded since the kubelet
        // started ("pleg has yet to be successful").
        let up = end
            .scalar("process_start_time_seconds")
            .map(|start| scraped.as_second() as f64 - start);
        let severity = if up.is_some_and(|u| u >= pleg_mode(e).unhealthy_after_seconds) {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut f = Finding::new(
            FindingId::PlegLastSeen,
            Domain::Pleg,
            severity,
            format!(
                "no relist has succeeded since the kubelet started{}",
                up.map(|u| format!(" {} ago", human_duration(u)))
                    .unwrap_or_default()
            ),
        )
        .with(format!("{NAME} = 0"));
        if severity == Severity::Critical {
            f = f.fix(
                "the first relist never returned: check the runtime on the node (`time crictl ps`)",
            );
        }
        return vec![f];
    }
    let clock_age =
        scraped.as_second() as f64 + f64::from(scraped.subsec_nanosecond()) / 1e9 - last_seen;
    // The gauge is on the node's clock, the scrape time on ours. If the gauge moved between the
    // two scrapes, a relist succeeded inside the window, whatever the clocks say: the age is at
    // most the window, and a larger clock age is skew.
    let window = window_seconds(e);
    let advanced = e
        .metrics_start
        .data()
        .and_then(|m| m.scalar(NAME))
        .is_some_and(|start| last_seen > start);
    let skewed = advanced && clock_age > window + 5.0;
    let age = if skewed {
        clock_age.min(window)
    } else {
        clock_age
    };
    let shown = human_duration(age.max(0.0));
    let mode = pleg_mode(e);
    let unhealthy = mode.unhealthy_after_seconds;
    let warn =
        PLEG_LAST_SEEN_WARN_SECONDS.max(mode.relist_period_seconds + PLEG_LAST_SEEN_WARN_SECONDS);
    let (severity, summary, fix) = if age >= unhealthy {
        (
            Severity::Critical,
            format!(
                "relist stuck: last successful relist {shown} ago (kubelet threshold {}: PLEG unhealthy)",
                human_duration(unhealthy)
            ),
            Some(
                "a relist call is hanging: the runtime's ListPodSandbox/ListContainers do not return; check the runtime on the node",
            ),
        )
    } else if age > warn {
        (
            Severity::Warning,
            format!(
                "relist stalling: last successful relist {shown} ago (node flips NotReady at {})",
                human_duration(unhealthy)
            ),
            Some("capture the goroutine dump now and check runtime latency before the node flips"),
        )
    } else {
        (
            Severity::Ok,
            format!("last successful relist {shown} ago"),
            None,
        )
    };
    let mut f = Finding::new(FindingId::PlegLastSeen, Domain::Pleg, severity, summary).with(
        format!("{NAME} = {last_seen:.3} (node clock), scraped at {scraped}"),
    );
    if age < -5.0 {
        f = f.with(format!(
            "the node's clock is {} ahead of this machine's",
            human_duration(-age)
        ));
    }
    if skewed {
        f = f.with(format!(
            "the gauge advanced during the window, yet reads {} old on this machine's clock: the node's clock is about {} behind",
            human_duration(clock_age),
            human_duration(clock_age - window)
        ));
    }
    if let Some(fix) = fix {
        f = f.fix(fix);
    }
    vec![f]
}

/// Discarded PLEG events (the event channel was full).
pub fn pleg_discards(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_pleg_discard_events";
    let Some(delta) = window_counter(e, NAME, all) else {
        return vec![];
    };
    if delta > 0.0 {
        vec![
            Finding::new(
                FindingId::PlegDiscards,
                Domain::Pleg,
                Severity::Warning,
                format!(
                    "{delta} PLEG events discarded in the window: the sync loop cannot keep up"
                ),
            )
            .fix("the kubelet's sync loop is behind: look for CPU starvation of the kubelet"),
        ]
    } else {
        vec![]
    }
}

/// A relist above this share of its time in the runtime's list calls is explained by the runtime:
/// most of the relist was spent waiting for it.
pub const RUNTIME_EXPLAINS_SHARE: f64 = 0.5;
/// A relist below this share is explained inside the kubelet (the guide: "crictl fast but relist
/// slow → inside the kubelet"): the runtime answered in a small part of its time.
pub const KUBELET_EXPLAINS_SHARE: f64 = 0.2;

/// Who a relist's time belongs to, by the share of it spent in the runtime's list calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelistTime {
    /// Most of it waits on the runtime.
    Runtime,
    /// Most of it is the kubelet's own.
    Kubelet,
    /// Both take a real part.
    Mixed,
}

/// Classify a runtime share.
pub fn relist_time(share: f64) -> RelistTime {
    if share >= RUNTIME_EXPLAINS_SHARE {
        RelistTime::Runtime
    } else if share <= KUBELET_EXPLAINS_SHARE {
        RelistTime::Kubelet
    } else {
        RelistTime::Mixed
    }
}

/// Whether a window's relists are slow enough to be explained: the degraded tier (most relists
/// over 1 s, or a mean over 1 s).
pub fn relists_degraded(w: &RelistWindow) -> bool {
    w.fraction_over_1s > 0.5 || w.mean_relist_seconds > PLEG_DEGRADED_P50_SECONDS
}

/// Does the runtime explain the relists' time? The seed's comparison (`time crictl ps` against
/// the relist duration), made exact: the window's mean ListPodSandbox + ListContainers time per
/// relist, against the mean relist duration. A share, never a fixed per-call threshold: healthy
/// list calls take milliseconds, so 0.8 s calls inside 1.6 s relists are the runtime's doing.
/// Judged only when relists are slow; reported (ok) otherwise.
pub fn runtime_share(e: &Evidence) -> Vec<Finding> {
    let Some(w) = relist_window(e) else {
        return vec![];
    };
    let Some(runtime) = w.runtime_seconds_per_relist() else {
        return vec![];
    };
    let share = runtime / w.mean_relist_seconds;
    let calls = w
        .list_calls
        .iter()
        .map(|c| {
            format!(
                "{} {} ({} calls)",
                c.operation,
                human_duration(c.mean_seconds),
                c.calls
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let basis = format!(
        "window means: relist {} ({} relists); runtime list calls {calls}; {} of runtime time per relist = {}",
        human_duration(w.mean_relist_seconds),
        w.relists,
        human_duration(runtime),
        percent(share.min(1.0)),
    );
    let slow = relists_degraded(&w);
    let (severity, summary) = match (slow, relist_time(share)) {
        (false, _) => (
            Severity::Ok,
            format!(
                "relists take {}; the runtime's list calls {} of that",
                human_duration(w.mean_relist_seconds),
                percent(share.min(1.0))
            ),
        ),
        (true, RelistTime::Runtime) => (
            Severity::Warning,
            format!(
                "slow relists wait on the runtime: its list calls take {} of each {} relist ({})",
                human_duration(runtime),
                human_duration(w.mean_relist_seconds),
                percent(share.min(1.0))
            ),
        ),
        (true, RelistTime::Kubelet) => (
            Severity::Warning,
            format!(
                "slow relists spend their time inside the kubelet: the runtime's list calls take only {} of each {} relist ({})",
                human_duration(runtime),
                human_duration(w.mean_relist_seconds),
                percent(share)
            ),
        ),
        (true, RelistTime::Mixed) => (
            Severity::Warning,
            format!(
                "slow relists are split between the runtime ({} per relist, {}) and the kubelet",
                human_duration(runtime),
                percent(share)
            ),
        ),
    };
    let mut f =
        Finding::new(FindingId::PlegRuntimeShare, Domain::Pleg, severity, summary).with(basis);
    if w.reset {
        f = f.with("a counter reset in the window (kubelet restart): means are since the restart");
    }
    if severity.is_problem() {
        f = f.fix(match relist_time(share) {
            RelistTime::Runtime => "the runtime is slow to list: find why on the node (its CPU, its disk, a lock held inside it) — the trace (--trace) attributes it",
            RelistTime::Kubelet => "the runtime answers fast: look inside the kubelet (CPU starvation, pod density, a goroutine pile-up in the dump)",
            RelistTime::Mixed => "attribute it on the node with --trace",
        });
    }
    vec![f]
}

/// Which PLEG the kubelet runs: the generic relist every second, or EventedPLEG with a relist
/// every 300 s as its backup — the thresholds the other PLEG checks use follow from it.
pub fn mode(e: &Evidence) -> Vec<Finding> {
    if e.configz.data().is_none() && e.node.data().is_none() {
        return vec![];
    }
    let PlegMode {
        evented,
        relist_period_seconds,
        unhealthy_after_seconds,
        from,
    } = pleg_mode(e);
    vec![
        Finding::new(
            FindingId::PlegMode,
            Domain::Pleg,
            Severity::Ok,
            format!(
                "{}: relist every {}, unhealthy after {} without one",
                if evented {
                    "EventedPLEG"
                } else {
                    "generic PLEG"
                },
                human_duration(relist_period_seconds),
                human_duration(unhealthy_after_seconds)
            ),
        )
        .with(from),
    ]
}
