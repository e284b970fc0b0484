//! Node conditions: Ready (True / False with the kubelet's reason / Unknown) and the pressure
//! conditions, and the cordon.

use super::{Domain, Finding, FindingId, PressureKind, Severity, seconds_since};
use crate::evidence::Evidence;
use crate::units::{human_duration, parse_go_duration};

/// What the Ready message says, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadyMessage {
    /// "PLEG is not healthy: pleg was last seen active X ago; threshold is Y".
    PlegUnhealthy {
        /// Seconds since the last successful relist, when stated.
        last_seen_seconds: Option<f64>,
    },
    /// "container runtime is down" / "container runtime status check may not have completed".
    RuntimeDown,
    /// "container runtime network not ready".
    NetworkNotReady,
    /// The node lifecycle controller: "Kubelet stopped posting node status." / never updated.
    StoppedPosting,
    /// Anything else.
    Other,
}

/// Whether a Ready message says the runtime is down — alone, or next to PLEG ("[container
/// runtime is down, PLEG is not healthy: ...]", which [`parse_ready_message`] reads as PLEG).
pub fn says_runtime_down(message: &str) -> bool {
    message.contains("container runtime is down")
        || message.contains("container runtime status check may not have completed")
}

/// Parse a Ready condition message (pkg/kubelet/pleg/generic.go Healthy(); kubelet
/// runtimeState errors; node lifecycle controller).
pub fn parse_ready_message(message: &str) -> ReadyMessage {
    if let Some(pos) = message.find("pleg was last seen active ") {
        let rest = &message[pos + "pleg was last seen active ".len()..];
        let seen = rest.split(" ago").next().and_then(parse_go_duration);
        return ReadyMessage::PlegUnhealthy {
            last_seen_seconds: seen,
        };
    }
    if message.contains("PLEG is not healthy") || message.contains("pleg has yet to be successful")
    {
        return ReadyMessage::PlegUnhealthy {
            last_seen_seconds: None,
        };
    }
    if says_runtime_down(message) {
        return ReadyMessage::RuntimeDown;
    }
    if message.contains("network not ready") || message.contains("NetworkPluginNotReady") {
        return ReadyMessage::NetworkNotReady;
    }
    if message.contains("stopped posting node status") || message.contains("never posted") {
        return ReadyMessage::StoppedPosting;
    }
    ReadyMessage::Other
}

/// Ready: True / False (the kubelet says why) / Unknown (the kubelet stopped reporting).
pub fn ready(e: &Evidence) -> Vec<Finding> {
    let Some(node) = e.node.data() else {
        return vec![];
    };
    let Some(cond) = node.condition("Ready") else {
        return vec![Finding::new(
            FindingId::Ready,
            Domain::Node,
            Severity::Unknown,
            "node has no Ready condition (kubelet never reported)",
        )];
    };
    let reason = cond.reason.clone().unwrap_or_default();
    let message = cond.message.clone().unwrap_or_default();
    let since = cond
        .last_transition_time
        .map(|t| format!(" for {}", human_duration(seconds_since(e, t))))
        .unwrap_or_default();
    let heartbeat = cond
        .last_heartbeat_time
        .map(|t| {
            format!(
                "last status heartbeat {} ago",
                human_duration(seconds_since(e, t))
            )
        })
        .unwrap_or_else(|| "no status heartbeat time".to_string());
    let basis = format!("Ready={} reason={reason} message={message:?}", cond.status);
    match cond.status.as_str() {
        "True" => vec![
            Finding::new(
                FindingId::Ready,
                Domain::Node,
                Severity::Ok,
                format!("Ready{since}"),
            )
            .with(basis),
        ],
        "False" => {
            let parsed = parse_ready_message(&message);
            let (summary, fix) = match &parsed {
                ReadyMessage::PlegUnhealthy { last_seen_seconds } => (
                    format!(
                        "NotReady{since}: PLEG is not healthy{}",
                        last_seen_seconds
                            .map(|s| format!(
                                " (last successful relist {} ago; the kubelet's threshold is 3m)",
                                human_duration(s)
                            ))
                            .unwrap_or_default()
                    ),
                    "the kubelet cannot relist pods from the runtime: look at runtime latency (runtime findings) and, on the node, `time crictl ps`",
                ),
                ReadyMessage::RuntimeDown => (
                    format!("NotReady{since}: the kubelet reports the container runtime down"),
                    "check the runtime service and its socket on the node",
                ),
                ReadyMessage::NetworkNotReady => (
                    format!("NotReady{since}: container network (CNI) not ready"),
                    "check the CNI plugin's pods and config on the node",
                ),
                _ => (
                    format!("NotReady{since}: {reason}"),
                    "read the message and the kubelet log",
                ),
            };
            vec![
                Finding::new(FindingId::Ready, Domain::Node, Severity::Critical, summary)
                    .with(basis)
                    .with(heartbeat)
                    .fix(fix),
            ]
        }
        _ => vec![
            Finding::new(
                FindingId::Ready,
                Domain::Node,
                Severity::Critical,
                format!("Ready=Unknown{since}: the kubelet stopped posting node status"),
            )
            .with(basis)
            .with(heartbeat)
            .fix("find out whether the kubelet is down, cannot authenticate, or cannot reach the API server (see the verdict)"),
        ],
    }
}

/// Memory/Disk/PID pressure conditions that are True; cordon status.
pub fn pressure(e: &Evidence) -> Vec<Finding> {
    let Some(node) = e.node.data() else {
        return vec![];
    };
    let mut findings = Vec::new();
    for kind in PressureKind::ALL {
        let type_ = kind.condition();
        let fix = match kind {
            PressureKind::Memory => {
                "the kubelet is evicting pods for memory: find the largest consumers, cordon and drain if it persists"
            }
            PressureKind::Disk => {
                "free nodefs/imagefs space: image GC, container logs, emptyDir volumes"
            }
            PressureKind::Pid => {
                "a process is forking without bound: find it (ps -eLf | wc -l per cgroup)"
            }
        };
        let id = FindingId::Pressure(kind);
        match node.condition(type_) {
            Some(c) if c.status == "True" => findings.push(
                Finding::new(
                    id,
                    Domain::Node,
                    Severity::Warning,
                    format!("{type_}: {}", c.message.clone().unwrap_or_default()),
                )
                .with(format!(
                    "{type_}=True reason={}",
                    c.reason.clone().unwrap_or_default()
                ))
                .fix(fix),
            ),
            Some(c) if c.status == "False" => findings.push(Finding::new(
                id,
                Domain::Node,
                Severity::Ok,
                format!("no {type_}"),
            )),
            // Unknown pressure accompanies Ready=Unknown and says nothing new.
            _ => {}
        }
    }
    if node.unschedulable {
        findings.push(
            Finding::new(
                FindingId::Cordoned,
                Domain::Node,
                Severity::Info,
                "node is cordoned (unschedulable)",
            )
            .with(format!("taints: {}", node.taints.join(", "))),
        );
    }
    findings
}
