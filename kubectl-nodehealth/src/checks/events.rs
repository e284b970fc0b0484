//! Events about the node: Warning events that recur now, and the kubelet's own restarts.

use super::{Domain, Finding, FindingId, Severity, seconds_since};
use crate::evidence::Evidence;
use crate::units::human_duration;

/// Event reasons that say the node itself is in trouble (kubelet events.go, node lifecycle
/// controller, eviction manager).
pub const TROUBLE_EVENT_REASONS: &[&str] = &[
    "NodeNotReady",
    "SystemOOM",
    "Rebooted",
    "ContainerGCFailed",
    "ImageGCFailed",
    "FreeDiskSpaceFailed",
    "EvictionThresholdMet",
    "KubeletSetupFailed",
    "InvalidDiskCapacity",
    "NodeHasDiskPressure",
    "NodeHasInsufficientMemory",
    "NodeHasInsufficientPID",
];

/// `Reason` or `Reason x3`, in order of first appearance.
fn reasons_counted(events: &[&crate::evidence::NodeEvent]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for ev in events {
        match counted.iter_mut().find(|(r, _)| *r == ev.reason) {
            Some((_, n)) => *n += 1,
            None => counted.push((&ev.reason, 1)),
        }
    }
    counted
        .iter()
        .map(|(r, n)| {
            if *n > 1 {
                format!("{r} x{n}")
            } else {
                r.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kubelet starts counted from the node's events within this many seconds.
const RESTARTS_RECENT_SECONDS: f64 = 180.0;
/// Starts within that time that make a restart loop.
const RESTART_LOOP_STARTS: i32 = 4;

/// The kubelet's own "Starting kubelet." events (reason `Starting`, one per process start): a
/// kubelet that starts over and over is being killed (OOM) or crashing — the PLEG and readiness
/// symptoms of a fresh kubelet follow from that. On a Ready, heartbeating node recent restarts
/// are history (someone restarted it), not a cause.
pub fn kubelet_restarts(e: &Evidence) -> Vec<Finding> {
    let Some(events) = e.events.data() else {
        return vec![];
    };
    let starts: i32 = events
        .iter()
        .filter(|ev| ev.reason == "Starting" && ev.message.starts_with("Starting kubelet"))
        .filter(|ev| {
            ev.last_seen
                .is_none_or(|t| seconds_since(e, t) <= RESTARTS_RECENT_SECONDS)
        })
        .map(|ev| ev.count.max(1))
        .sum();
    if starts < 2 {
        return vec![];
    }
    let ready = e
        .node
        .data()
        .and_then(|n| n.condition("Ready"))
        .is_some_and(|c| c.status == "True");
    let severity = if ready {
        Severity::Info
    } else if starts >= RESTART_LOOP_STARTS {
        Severity::Critical
    } else {
        Severity::Warning
    };
    vec![
        Finding::new(
            FindingId::KubeletRestarts,
            Domain::Kubelet,
            severity,
            format!(
                "the kubelet started {starts} times in the last {} minutes{}",
                RESTARTS_RECENT_SECONDS as u64 / 60,
                if ready {
                    " (it is Ready now)"
                } else {
                    ": it is being killed or crashing"
                }
            ),
        )
        .with("node events with reason Starting, \"Starting kubelet.\"")
        .fix("on the node: `dmesg | grep -i -e oom -e 'killed process'` (OOM kills: raise the kubelet's memory limit or kubeReserved) and `journalctl -u kubelet -b | tail -100` (a crash or a bad flag); fix that before anything else — restarting it again changes nothing"),
    ]
}

/// Warning events are listed from this far back ...
const EVENTS_LISTED_SECONDS: f64 = 3600.0;
/// ... and a trouble event counts as happening now when it recurred within this long: the
/// kubelet repeats the event of an ongoing failure every time its loop retries (container GC every
/// minute, eviction every 10 s), so one that has not recurred for minutes is a healed fault's
/// trace, not the node's state.
pub const EVENTS_RECENT_SECONDS: f64 = 300.0;

/// How long a trouble event may go without recurring and still count as ongoing: twice the period
/// of the kubelet loop that raises it, and at least [`EVENTS_RECENT_SECONDS`]. Image GC and the
/// disk-space GC it serves run every 5 minutes (pkg/kubelet/kubelet.go ImageGCPeriod), so their
/// failures recur only that often.
pub fn recent_seconds(reason: &str) -> f64 {
    match reason {
        "ImageGCFailed" | "FreeDiskSpaceFailed" => 2.0 * 300.0,
        _ => EVENTS_RECENT_SECONDS,
    }
}

/// Warning events about the node in the last hour. Trouble events that recurred recently are a
/// warning; older ones, and Warning events of other reasons, are information.
pub fn events(e: &Evidence) -> Vec<Finding> {
    let Some(events) = e.events.data() else {
        return vec![];
    };
    let age = |ev: &crate::evidence::NodeEvent| ev.last_seen.map(|t| seconds_since(e, t));
    let listed: Vec<_> = events
        .iter()
        .filter(|ev| ev.type_ == "Warning")
        .filter(|ev| age(ev).is_none_or(|a| a <= EVENTS_LISTED_SECONDS))
        .collect();
    if listed.is_empty() {
        return vec![Finding::new(
            FindingId::Events,
            Domain::Node,
            Severity::Ok,
            format!(
                "no Warning events in the last hour ({} events seen)",
                events.len()
            ),
        )];
    }
    // Warning events the kubelet and node controllers raise when the node is in trouble; other
    // Warning events (deprecations, image pulls of one pod) are information.
    let ongoing: Vec<_> = listed
        .iter()
        .copied()
        .filter(|ev| TROUBLE_EVENT_REASONS.contains(&ev.reason.as_str()))
        .filter(|ev| age(ev).is_none_or(|a| a <= recent_seconds(&ev.reason)))
        .collect();
    let mut f = if ongoing.is_empty() {
        let troubled = listed
            .iter()
            .any(|ev| TROUBLE_EVENT_REASONS.contains(&ev.reason.as_str()));
        Finding::new(
            FindingId::Events,
            Domain::Node,
            Severity::Info,
            format!(
                "{} Warning event(s) in the last hour: {}{}",
                listed.len(),
                reasons_counted(&listed),
                if troubled {
                    " — none has recurred in the last minutes (a past fault)"
                } else {
                    ""
                }
            ),
        )
    } else {
        Finding::new(
            FindingId::Events,
            Domain::Node,
            Severity::Warning,
            format!(
                "trouble events recurring now: {} ({} Warning event(s) in the last hour)",
                reasons_counted(&ongoing),
                listed.len()
            ),
        )
    };
    // One example per reason: repeats of one event say nothing new.
    let mut shown: Vec<&str> = Vec::new();
    for ev in &listed {
        if shown.contains(&ev.reason.as_str()) || shown.len() >= 5 {
            continue;
        }
        shown.push(&ev.reason);
        f = f.with(format!(
            "{} x{} ({}{}): {}",
            ev.reason,
            ev.count,
            ev.source.clone().unwrap_or_default(),
            age(ev)
                .map(|a| format!(", last {} ago", human_duration(a.max(0.0))))
                .unwrap_or_default(),
            ev.message
        ));
    }
    vec![f]
}
