//! Checks over the kubelet's and the runtime's logs — read through the kubelet's node log query
//! (API side) and on the node (the agent: journal or log files) — and the systemd units' state.
//!
//! Each known message (the catalogue in `nodehealth_proto::logs`) seen in any source becomes one
//! finding `logs-<id>` with its count, first and last time and one example line. The same log is
//! often read by both layers: the source with the most occurrences speaks for it. A message last
//! seen more than [`RECENT_MS`] before collection is history (info): a fault healed minutes ago
//! leaves its lines behind. Log findings support causes; on their own they are not a problem
//! (exit code, "healthy"): see [`super::Finding::is_log_evidence`].

use jiff::Timestamp;
use nodehealth_proto::logs::{self, LogDigest, LogMatch};
use nodehealth_proto::node::{ComponentLog, UnitState};

use super::{Component, Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, FailureKind};

/// How to turn the kubelet's node log query on. Not a fix for now: the setting takes effect at the
/// kubelet's next start, and an incident is no time to restart it for a log reader.
pub const ENABLE_LOG_QUERY: &str = "turn it on in the kubelet's configuration for next time: `featureGates: {NodeLogQuery: true}` (beta, off by default before 1.36; GA from 1.36) and `enableSystemLogQuery: true`, applied at the kubelet's next planned restart (not during this incident) — for now read the logs on the node (`tracer-user probe`, `journalctl -u kubelet`)";

/// A message last seen within this long before collection counts as happening now: the
/// messages of an ongoing failure repeat within seconds (sync-loop backoff up to 5 s, lease
/// retries up to 7 s, relists every second).
pub const RECENT_MS: i64 = 2 * 60 * 1000;
/// Automatic restarts of a unit at or above this are a restart loop.
const UNIT_RESTARTS_LOOP: u32 = 3;

/// Where one digest came from, for the evidence line.
struct Source<'a> {
    layer: &'static str,
    digest: &'a LogDigest,
}

fn sources(e: &Evidence) -> Vec<Source<'_>> {
    let mut out = Vec::new();
    for step in [&e.kubelet_log, &e.runtime_log] {
        if let Some(q) = step.data() {
            out.push(Source {
                layer: "API (node log query)",
                digest: &q.digest,
            });
        }
    }
    if let Some(node) = e.node_probe.data()
        && let Some(l) = &node.evidence.logs
    {
        for c in [&l.kubelet, &l.runtime] {
            if let Some(d) = &c.digest {
                out.push(Source {
                    layer: "node agent",
                    digest: d,
                });
            }
        }
    }
    out
}

fn time_of(ms: Option<i64>) -> String {
    ms.and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

fn domain(name: &str) -> Domain {
    match name {
        "pleg" => Domain::Pleg,
        "runtime" => Domain::Runtime,
        "certificates" => Domain::Certificates,
        "api-connectivity" => Domain::ApiConnectivity,
        "kubelet" => Domain::Kubelet,
        "filesystem" => Domain::Filesystem,
        _ => Domain::Node,
    }
}

/// All log checks.
pub fn run(e: &Evidence) -> Vec<Finding> {
    let now = e.collected_at.as_millisecond() - (super::local_clock_ahead(e) * 1000.0) as i64;
    let mut out = Vec::new();

    // One finding per known message: the source that saw it most often speaks for it.
    let mut best: Vec<(&LogMatch, &Source)> = Vec::new();
    let all = sources(e);
    for s in &all {
        for m in &s.digest.matches {
            match best.iter_mut().find(|(b, _)| b.id == m.id) {
                Some(b) if b.0.count < m.count => *b = (m, s),
                Some(_) => {}
                None => best.push((m, s)),
            }
        }
    }
    for (m, s) in best {
        let Some(msg) = logs::message(&m.id) else {
            continue;
        };
        let recent = m.last_unix_ms.is_some_and(|t| now - t <= RECENT_MS);
        let who = match msg.component {
            logs::Component::Kubelet => "kubelet",
            logs::Component::Runtime => "runtime",
        };
        let mut f = Finding::new(
            FindingId::log(&m.id),
            domain(msg.domain),
            if recent {
                Severity::Warning
            } else {
                Severity::Info
            },
            format!(
                "{who} log: {} — {}× between {} and {}{}",
                msg.meaning,
                m.count,
                time_of(m.first_unix_ms),
                time_of(m.last_unix_ms),
                if recent { "" } else { " (not recently)" }
            ),
        )
        .with(format!("e.g. {}", m.example))
        .with(format!("read by the {} from {}", s.layer, s.digest.source))
        .with(format!("emitted by {}", msg.source));
        if let Some(cause) = msg.cause {
            f = f.with(format!("points at: {cause}"));
        }
        out.push(f);
    }

    // The log query itself.
    let node_logs = e.node_probe.data().and_then(|n| n.evidence.logs.as_ref());
    let disabled: Vec<&str> = [&e.kubelet_log, &e.runtime_log]
        .into_iter()
        .filter_map(|s| s.failure())
        .filter(|f| f.kind == FailureKind::Disabled)
        .map(|f| f.message.as_str())
        .collect();
    if let Some(first) = disabled.first() {
        let read_on_node = node_logs.is_some_and(|l| l.kubelet.digest.is_some());
        out.push(
            Finding::new(
                FindingId::LogQueryDisabled,
                Domain::Collection,
                Severity::Info,
                if read_on_node {
                    "the kubelet's node log query is off: its logs were read on the node instead"
                } else {
                    "the kubelet's node log query is off: its logs were not read from the API side"
                },
            )
            .with(first.to_string())
            .fix(ENABLE_LOG_QUERY),
        );
    }
    if let Some(l) = node_logs {
        for (who, c, api) in [
            (Component::Kubelet, &l.kubelet, &e.kubelet_log),
            (Component::Runtime, &l.runtime, &e.runtime_log),
        ] {
            if c.digest.is_none() && api.data().is_none() {
                out.push(unreadable(who.name(), c));
            }
            if let Some(u) = &c.unit {
                out.extend(unit(who, u));
            }
        }
    }
    out
}

fn unreadable(who: &str, c: &ComponentLog) -> Finding {
    let mut f = Finding::new(
        FindingId::LogUnreadable,
        Domain::Collection,
        Severity::Unknown,
        format!("the {who}'s log could not be read on the node or through the API"),
    );
    if let Some(e) = &c.error {
        f = f.with(e.clone());
    }
    if !c.tried.is_empty() {
        f = f.with(format!("looked at: {}", c.tried.join(", ")));
    }
    f
}

/// `systemctl is-active` and the restart count of a unit.
fn unit(component: Component, u: &UnitState) -> Option<Finding> {
    let who = component.name();
    if let Some(err) = &u.error {
        return Some(
            Finding::new(
                FindingId::Unit(component),
                Domain::Collection,
                Severity::Unknown,
                format!("the state of {} could not be read", u.name),
            )
            .with(err.clone()),
        );
    }
    let active = u.active_state.as_deref().unwrap_or("unknown");
    let restarts = u.restarts.unwrap_or(0);
    let line = format!(
        "systemctl: {} is {active} ({}), result {}, {restarts} automatic restarts",
        u.name,
        u.sub_state.as_deref().unwrap_or("?"),
        u.result.as_deref().unwrap_or("?"),
    );
    let d = if component == Component::Kubelet {
        Domain::Kubelet
    } else {
        Domain::Runtime
    };
    let (severity, summary) = match active {
        "active" if restarts >= UNIT_RESTARTS_LOOP => (
            Severity::Warning,
            format!(
                "{} is active but systemd restarted it {restarts} times",
                u.name
            ),
        ),
        "active" | "reloading" => (Severity::Ok, format!("{} is active", u.name)),
        "activating" => (
            Severity::Warning,
            format!(
                "{} is (re)starting: it exited and systemd restarts it",
                u.name
            ),
        ),
        other => (
            Severity::Critical,
            format!("{} is {other}: the {who} is not running", u.name),
        ),
    };
    let mut f = Finding::new(FindingId::Unit(component), d, severity, summary).with(line);
    if severity.is_problem() {
        f = f.fix(format!(
            "journalctl -u {} -n 200 shows why it exits; start it again (`systemctl start {}`) only once that cause is fixed",
            u.name, u.name
        ));
    }
    Some(f)
}

/// The verdict cause a `logs-*` finding supports, from the catalogue.
pub fn cause_of(finding_id: &FindingId) -> Option<&'static str> {
    let FindingId::Log(id) = finding_id else {
        return None;
    };
    logs::message(id)?.cause
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_states() {
        let u = |active: &str, restarts| UnitState {
            name: "kubelet.service".into(),
            active_state: Some(active.into()),
            sub_state: Some("x".into()),
            restarts: Some(restarts),
            result: Some("exit-code".into()),
            kill_mode: None,
            error: None,
        };
        assert_eq!(
            unit(Component::Kubelet, &u("active", 0)).unwrap().severity,
            Severity::Ok
        );
        assert_eq!(
            unit(Component::Kubelet, &u("active", 5)).unwrap().severity,
            Severity::Warning
        );
        let failed = unit(Component::Kubelet, &u("failed", 5)).unwrap();
        assert_eq!(failed.severity, Severity::Critical);
        assert_eq!(failed.domain, Domain::Kubelet);
        assert!(failed.evidence[0].contains("5 automatic restarts"));
    }

    #[test]
    fn causes_come_from_the_catalogue() {
        assert_eq!(
            cause_of(&FindingId::log("pleg-not-healthy")),
            Some("pleg-slow")
        );
        assert_eq!(cause_of(&FindingId::log("skipping-pod-sync")), None);
        assert_eq!(cause_of(&FindingId::Ready), None);
    }
}
