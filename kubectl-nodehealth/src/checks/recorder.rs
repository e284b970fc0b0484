//! The node's flight recorder (`kubectl nodehealth recorder install`): its timeline of the
//! minutes before the run, whether its report is fresh, and whether its own writes to the API
//! server failed. Context for the operator, never a cause on its own: the recorder's node
//! evidence reaches the verdict through the node checks when no probe pod could start.

use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, Step};
use crate::units::human_duration;

/// At most this many spans in the timeline finding (the newest).
const MAX_SPANS: usize = 12;

pub fn run(e: &Evidence) -> Vec<Finding> {
    let v = match &e.recorder {
        Step::Skipped { .. } => return Vec::new(),
        // Optional evidence: said, never a problem (a cluster without the recorder, a user
        // whose role predates it).
        Step::Failed { failure } => {
            let mut f = Finding::new(
                FindingId::RecorderTimeline,
                Domain::Collection,
                Severity::Info,
                format!(
                    "the node's recorder report could not be read ({}): {}",
                    failure.request, failure.message
                ),
            );
            if let Some(need) = &failure.needs {
                f = f.fix(format!(
                    "where the recorder is installed, grant your user `{need}` (RBAC; `kubectl \
                     nodehealth rbac`)"
                ));
            }
            return vec![f];
        }
        Step::Collected { data } => data,
    };
    let r = &v.report;
    let age = v
        .age_seconds
        .map(|a| format!("{} old", human_duration(a)))
        .unwrap_or_else(|| "of unknown age".into());
    let mut out = Vec::new();
    let lines = crate::recorder::timeline_lines(r);
    let unhealthy = r.timeline.iter().filter(|s| !s.state.healthy()).count();
    let covered = r
        .timeline
        .first()
        .zip(r.timeline.last())
        .map(|(a, b)| (b.to_unix_ms - a.from_unix_ms) as f64 / 1000.0)
        .unwrap_or(0.0);
    let pleg = nodehealth_proto::pleg::worst(&r.pleg);
    let pleg_words = if pleg == "ok" {
        String::new()
    } else {
        format!("; its PLEG was {pleg} in the recorded minutes")
    };
    let summary = if unhealthy == 0 {
        format!(
            "the node's recorder ({}, {age}): processes healthy throughout the last {}{pleg_words}",
            v.object,
            human_duration(covered)
        )
    } else {
        format!(
            "the node's recorder ({}, {age}): {unhealthy} span(s) not healthy in the last {}; now: {}{pleg_words}",
            v.object,
            human_duration(covered),
            r.now.state().words()
        )
    };
    let skip = lines.len().saturating_sub(MAX_SPANS);
    let mut evidence: Vec<String> = lines.into_iter().skip(skip).collect();
    if skip > 0 {
        evidence.insert(0, format!("({skip} older spans not shown)"));
    }
    if !r.evidence_reason.is_empty() {
        evidence.push(format!("its latest probe: {}", r.evidence_reason));
    }
    // The kubelet's PLEG over the same minutes (`pleg <node> --recorded` shows every tick).
    evidence.extend(crate::recorder::pleg_lines(r));
    out.push(Finding::new(
        FindingId::RecorderTimeline,
        Domain::Collection,
        Severity::Info,
        summary,
    ));
    if let Some(f) = out.last_mut() {
        f.evidence = evidence;
    }
    if v.stale {
        out.push(
            Finding::new(
                FindingId::RecorderStale,
                Domain::Collection,
                Severity::Info,
                format!(
                    "the recorder's report is {age} (it writes every {} at least): its recorder is \
                     not writing — cut off from the API server, not running, or its node is down",
                    human_duration(r.publisher.heartbeat_seconds as f64)
                ),
            )
            .fix("its node evidence is not used; `kubectl nodehealth recorder status` shows which recorders run"),
        );
    }
    if let Some(o) = &r.publisher.last_outage {
        let clock = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .map(|t| t.strftime("%H:%M:%S").to_string())
                .unwrap_or_default()
        };
        let span = match o.to_unix_ms {
            Some(to) => format!(
                "from {} to {} ({})",
                clock(o.from_unix_ms),
                clock(to),
                human_duration((to - o.from_unix_ms) as f64 / 1000.0)
            ),
            None => format!("since {}", clock(o.from_unix_ms)),
        };
        out.push(
            Finding::new(
                FindingId::RecorderWritesFailed,
                Domain::ApiConnectivity,
                Severity::Info,
                format!(
                    "the recorder on this node could not write to the API server {span}: {} \
                     failed write(s), the last: {}",
                    o.failed_writes, o.last_error
                ),
            )
            .with(format!("it writes to {}", r.publisher.server)),
        );
    }
    out
}
