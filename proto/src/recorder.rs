//! The flight recorder's report: what `tracer-user record` publishes about its own node to the
//! API server, as a cluster-scoped `NodeRecorderReport` named after the node, and what the plugin
//! reads back when no probe pod can start (and always, for the timeline).
//!
//! The report is small by design (a 5,000-node cluster writes one per node at most every 10 s,
//! usually once a minute): the latest node evidence of a short probe, and the last 15 minutes of
//! one-second samples folded into segments of unchanged state (a quiet node is one segment).
use serde::{Deserialize, Serialize};

use crate::node::NodeEvidence;

/// API group of the report's custom resource.
pub const GROUP: &str = "nodehealth.io";
/// Its served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Its kind.
pub const KIND: &str = "NodeRecorderReport";
/// Its plural resource name.
pub const PLURAL: &str = "noderecorderreports";
/// The report body's own schema (inside `status`), versioned apart from the CRD.
pub const REPORT_SCHEMA: &str = "nodehealth/recorder/v1";
/// The name of the recorder's service account, DaemonSet and field manager.
pub const NAME: &str = "nodehealth-recorder";

/// `status` of a NodeRecorderReport.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct RecorderReport {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// The node this recorder runs on (its pod's spec.nodeName).
    pub node: String,
    pub agent_version: String,
    /// When this report was put together (node clock).
    pub recorded_at_unix_ms: i64,
    /// When the recorder started (its ring covers from here, at most 15 minutes back).
    pub started_at_unix_ms: i64,
    /// The last one-second sample, summarised.
    pub now: Sample,
    /// The last 15 minutes at one-second resolution, folded into segments of unchanged state,
    /// oldest first.
    pub timeline: Vec<Segment>,
    /// The latest short probe of the node (the agent's evidence, as `tracer-user probe` gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<NodeEvidence>,
    /// Why the latest probe was taken: "heartbeat", "start", or the change that triggered it.
    #[serde(default)]
    pub evidence_reason: String,
    /// How the recorder's own writes to the API server went.
    pub publisher: Publisher,
    /// The kubelet's PLEG over the same minutes, one tick per scrape of its `/metrics` (every
    /// 10 s, on the node), quiet runs folded ([`crate::pleg::fold`]); oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pleg: Vec<crate::pleg::Tick>,
    /// Why the latest scrape of the kubelet's `/metrics` failed (absent when it answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pleg_error: Option<String>,
}

/// The recorder's writes: failures are reported once the path is back (a partition is said
/// after the fact, with when it began; the timeline covers it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Publisher {
    /// Successful writes since the recorder started.
    pub writes: u64,
    /// Failed write attempts since the recorder started.
    pub failed_writes: u64,
    /// The last failed attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last run of failed writes began and ended (the write that ended it is this one,
    /// or a later one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outage: Option<Outage>,
    /// Where the recorder writes (from the kubelet's kubeconfig, or in-cluster).
    pub server: String,
    /// Seconds between writes when nothing changes.
    pub heartbeat_seconds: u64,
}

/// A run of failed writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Outage {
    pub from_unix_ms: i64,
    /// `None` while it lasts (never seen in a published report, except through a backlog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_unix_ms: Option<i64>,
    pub failed_writes: u64,
    pub last_error: String,
}

/// One second of the node, as the recorder sees it without asking the kubelet's API.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Sample {
    pub at_unix_ms: i64,
    /// "running" | "stopped" (SIGSTOP / frozen cgroup) | "disk-wait" | "absent"
    pub kubelet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_pid: Option<u32>,
    /// The kubelet's local healthz: "ok" | "failing" | "no-answer" | "refused" | "disabled".
    pub healthz: String,
    /// "running" | "stopped" | "frozen" (its cgroup) | "disk-wait" | "absent"
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_pid: Option<u32>,
    /// The runtime's CRI `Version` call, asked every few seconds: "ok" | "slow" | "hung" |
    /// "error" | "unknown" (not asked yet).
    pub cri: String,
    /// Node-wide PSI `some avg10` (percent) for cpu, io, memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_io: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_memory: Option<f64>,
    /// OOM kills in the kubelet's cgroup so far (cgroup v2 memory.events `oom_kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_oom_kills: Option<u64>,
}

impl Sample {
    /// The discrete state a segment holds constant.
    pub fn state(&self) -> State {
        State {
            kubelet: self.kubelet.clone(),
            healthz: self.healthz.clone(),
            runtime: self.runtime.clone(),
            cri: self.cri.clone(),
        }
    }
}

/// The discrete part of a [`Sample`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct State {
    pub kubelet: String,
    pub healthz: String,
    pub runtime: String,
    pub cri: String,
}

impl State {
    /// Whether this state is a healthy node's.
    pub fn healthy(&self) -> bool {
        self.kubelet == "running"
            && self.healthz == "ok"
            && self.runtime == "running"
            && matches!(self.cri.as_str(), "ok" | "unknown")
    }

    /// The parts that are not a healthy node's, in words ("kubelet absent, healthz refused").
    pub fn words(&self) -> String {
        let mut parts = Vec::new();
        if self.kubelet != "running" {
            parts.push(format!("kubelet {}", self.kubelet));
        }
        if self.healthz != "ok" {
            parts.push(format!("healthz {}", self.healthz));
        }
        if self.runtime != "running" {
            parts.push(format!("runtime {}", self.runtime));
        }
        if !matches!(self.cri.as_str(), "ok" | "unknown") {
            parts.push(format!("CRI {}", self.cri));
        }
        if parts.is_empty() {
            "healthy".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Consecutive samples with one [`State`]: its span, the worst PSI in it, the kubelet pids seen
/// (a restart shows as a second pid), and OOM kills that happened within it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Segment {
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
    pub samples: u32,
    #[serde(flatten)]
    pub state: State,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubelet_pids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psi_cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psi_io: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psi_memory: Option<f64>,
    /// OOM kills of the kubelet's cgroup counted during the segment.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kubelet_oom_kills: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Folds samples (oldest first) into segments of unchanged state. OOM kills are counted from
/// the rise of the cumulative counter between consecutive samples of the same kubelet cgroup.
pub fn fold(samples: &[Sample]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut last_oom: Option<u64> = None;
    for s in samples {
        let ooms = match (last_oom, s.kubelet_oom_kills) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => 0,
        };
        if s.kubelet_oom_kills.is_some() {
            last_oom = s.kubelet_oom_kills;
        }
        let state = s.state();
        let extend = out.last().is_some_and(|seg| seg.state == state);
        if !extend {
            out.push(Segment {
                from_unix_ms: s.at_unix_ms,
                to_unix_ms: s.at_unix_ms,
                state,
                ..Default::default()
            });
        }
        let seg = out.last_mut().expect("pushed above");
        seg.to_unix_ms = s.at_unix_ms;
        seg.samples += 1;
        if let Some(pid) = s.kubelet_pid
            && !seg.kubelet_pids.contains(&pid)
        {
            seg.kubelet_pids.push(pid);
        }
        seg.max_psi_cpu = max_opt(seg.max_psi_cpu, s.psi_cpu);
        seg.max_psi_io = max_opt(seg.max_psi_io, s.psi_io);
        seg.max_psi_memory = max_opt(seg.max_psi_memory, s.psi_memory);
        seg.kubelet_oom_kills += ooms;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, kubelet: &str, pid: Option<u32>, ooms: Option<u64>) -> Sample {
        Sample {
            at_unix_ms: at,
            kubelet: kubelet.into(),
            kubelet_pid: pid,
            healthz: if kubelet == "running" {
                "ok"
            } else {
                "refused"
            }
            .into(),
            runtime: "running".into(),
            cri: "ok".into(),
            psi_cpu: Some(at as f64 / 1000.0),
            kubelet_oom_kills: ooms,
            ..Default::default()
        }
    }

    #[test]
    fn samples_fold_into_segments_of_one_state_with_restarts_and_oom_kills() {
        let samples = vec![
            sample(1000, "running", Some(10), Some(0)),
            sample(2000, "running", Some(10), Some(0)),
            sample(3000, "absent", None, None),
            sample(4000, "absent", None, None),
            sample(5000, "running", Some(11), Some(1)),
            sample(6000, "running", Some(11), Some(1)),
            sample(7000, "running", Some(12), Some(2)),
        ];
        let segs = fold(&samples);
        assert_eq!(segs.len(), 3, "{segs:#?}");
        assert_eq!((segs[0].from_unix_ms, segs[0].to_unix_ms), (1000, 2000));
        assert_eq!(segs[0].samples, 2);
        assert_eq!(segs[1].state.words(), "kubelet absent, healthz refused");
        assert!(segs[1].kubelet_pids.is_empty());
        assert_eq!(
            segs[2].kubelet_pids,
            vec![11, 12],
            "a restart is a second pid"
        );
        // 0 -> 1 across the absent stretch, 1 -> 2 within the segment.
        assert_eq!(segs[2].kubelet_oom_kills, 2);
        assert_eq!(segs[2].max_psi_cpu, Some(7.0));
        assert!(segs[0].state.healthy() && !segs[1].state.healthy());
        assert!(fold(&[]).is_empty());
    }

    #[test]
    fn a_report_round_trips_through_json_in_camel_case() {
        let r = RecorderReport {
            schema: REPORT_SCHEMA.into(),
            node: "vm".into(),
            timeline: fold(&[sample(1000, "running", Some(1), None)]),
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["timeline"][0]["kubelet"], "running", "state is flattened");
        assert_eq!(v["recordedAtUnixMs"], 0);
        let back: RecorderReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
