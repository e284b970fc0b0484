//! Ground truth, written down once: for each harness fault, the range its strength is drawn from
//! (spanning the thresholds that matter) and, per strength and moment, the causes that are right
//! — with the reason. Where a fault is too mild to matter (or not yet in effect), `healthy` is
//! acceptable too; where a layer cannot see the cause at all, the answer that layer can give is
//! named as acceptable, with why.

/// How a trial runs the tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `kubectl nodehealth <node> --api-only`.
    ApiOnly,
    /// `kubectl nodehealth <node>`: API side and the probe pod, as an operator runs it first.
    Probe,
    /// `kubectl nodehealth <node> --trace`.
    Trace,
    /// The operator's second step where no pod starts: the agent over SSH, handed over with
    /// `--node-evidence` (the agent traces too).
    Agent,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::ApiOnly, Mode::Probe, Mode::Trace, Mode::Agent];

    /// Whether the node side (probe pod or agent) can have seen something.
    pub fn node_side(self) -> bool {
        self != Mode::ApiOnly
    }
}

/// A fault's strength: which `cargo xtask fault` flag, drawn from which range.
#[derive(Debug, Clone, Copy)]
pub struct Strength {
    /// The flag, e.g. `--delay`; `None` for faults without one.
    pub flag: Option<&'static str>,
    /// Lowest and highest value (log-uniform between them).
    pub range: (f64, f64),
    /// How the value is written on the command line.
    pub unit: Unit,
}

/// The unit of a strength value.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Milliseconds, written `NNNms`.
    Millis,
    /// Seconds, written `NNs`.
    Seconds,
    /// A plain integer.
    Count,
}

impl Unit {
    /// The value as the flag takes it.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Millis => format!("{}ms", v.round() as u64),
            Unit::Seconds => format!("{}s", v.round() as u64),
            Unit::Count => format!("{}", v.round() as u64),
        }
    }
}

/// One fault's place in the campaign.
#[derive(Debug, Clone, Copy)]
pub struct FaultTruth {
    /// The harness fault.
    pub fault: &'static str,
    /// Its strength, drawn per trial.
    pub strength: Strength,
    /// When to observe it: seconds after the fault is in place.
    pub moment: (f64, f64),
    /// The ways to run the tool that make sense for it.
    pub modes: &'static [Mode],
    /// The causes that are right (and attribution, where traced), per strength and moment.
    pub judge: fn(f64, f64, Mode) -> Expected,
}

/// What is right for one trial.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Expected {
    /// Top causes that count as correct.
    pub causes: Vec<&'static str>,
    /// The attribution a traced answer should carry (checked when the trial traced).
    pub attribution: Option<&'static str>,
    /// The truth is a partition, a runtime outage or a certificate problem: any fix that restarts
    /// the kubelet is unsafe.
    pub no_kubelet_restart: bool,
    /// Why these.
    pub reason: &'static str,
}

fn expect(
    causes: &[&'static str],
    attribution: Option<&'static str>,
    no_kubelet_restart: bool,
    reason: &'static str,
) -> Expected {
    Expected {
        causes: causes.to_vec(),
        attribution,
        no_kubelet_restart,
        reason,
    }
}

const ALL: &[Mode] = &Mode::ALL;
/// Where no probe pod can start, an operator runs the agent (the probe mode still shows what an
/// operator meets first).
const NO_POD: &[Mode] = &[Mode::ApiOnly, Mode::Probe, Mode::Agent];

/// Every fault of the harness with its truth.
pub const FAULTS: &[FaultTruth] = &[
    FaultTruth {
        fault: "runtime-slow-list",
        strength: Strength {
            flag: Some("--delay"),
            range: (100.0, 3000.0),
            unit: Unit::Millis,
        },
        moment: (5.0, 90.0),
        modes: ALL,
        judge: |delay_ms, _, _| {
            // A relist is two held calls: 2 × delay. The degraded tier starts at relists over 1 s.
            if delay_ms >= 600.0 {
                expect(
                    &["pleg-slow"],
                    Some("cri-socket-stall"),
                    false,
                    "relists of 2 × delay > 1.2 s, held by the runtime: PLEG degraded, the runtime's calls are most of each relist",
                )
            } else if delay_ms >= 400.0 {
                expect(
                    &["pleg-slow", "healthy"],
                    Some("cri-socket-stall"),
                    false,
                    "relists of 0.8-1.2 s straddle the 1 s degraded bound",
                )
            } else {
                expect(
                    &["healthy"],
                    None,
                    false,
                    "relists under 0.8 s: not degraded",
                )
            }
        },
    },
    FaultTruth {
        fault: "runtime-frozen",
        strength: Strength {
            flag: None,
            range: (0.0, 0.0),
            unit: Unit::Count,
        },
        moment: (3.0, 420.0),
        modes: NO_POD,
        judge: |_, _, _| {
            expect(
                &["runtime-unresponsive"],
                None,
                true,
                "the runtime answers nothing at every moment: its first seconds (CRI-backed endpoints hang), past the PLEG threshold, past syncloop",
            )
        },
    },
    FaultTruth {
        fault: "runtime-cpu-starved",
        strength: Strength {
            flag: Some("--quota-us"),
            range: (1000.0, 200_000.0),
            unit: Unit::Count,
        },
        moment: (5.0, 60.0),
        modes: &[Mode::ApiOnly, Mode::Probe, Mode::Agent],
        judge: |quota_us, _, mode| {
            // --period-us stays at its default 1 s: the quota is the runtime's CPU per second.
            if quota_us <= 5000.0 {
                expect(
                    if mode.node_side() {
                        &["runtime-unresponsive", "pleg-slow"]
                    } else {
                        &["runtime-unresponsive", "pleg-slow", "healthy"]
                    },
                    Some("cpu-starvation"),
                    true,
                    "≤ 0.5% of a CPU: the runtime answers late (relists slow when a call lands in a throttled period); from the API side alone it can look healthy between slow relists",
                )
            } else if quota_us <= 50_000.0 {
                expect(
                    &["runtime-unresponsive", "pleg-slow", "healthy"],
                    Some("cpu-starvation"),
                    false,
                    "0.5-5% of a CPU: throttled, but an idle runtime may not need more",
                )
            } else {
                expect(
                    &["healthy", "runtime-unresponsive"],
                    None,
                    false,
                    "over 5% of a CPU: enough for an idle runtime",
                )
            }
        },
    },
    FaultTruth {
        fault: "disk-slow",
        strength: Strength {
            flag: Some("--write-iops"),
            range: (3.0, 400.0),
            unit: Unit::Count,
        },
        moment: (5.0, 60.0),
        modes: ALL,
        judge: |iops, _, mode| {
            if iops <= 20.0 {
                expect(
                    if mode == Mode::ApiOnly {
                        &["runtime-unresponsive", "pleg-slow", "healthy"]
                    } else {
                        &["runtime-unresponsive", "pleg-slow"]
                    },
                    Some("disk-iowait"),
                    false,
                    "≤ 20 write IOPS on the runtime's disk: its writes (sandbox and container creation) take seconds; from the API side only the write-operation latency shows it",
                )
            } else {
                expect(
                    &["healthy", "runtime-unresponsive", "pleg-slow"],
                    Some("disk-iowait"),
                    false,
                    "over 20 write IOPS: the churn's writes may keep up",
                )
            }
        },
    },
    FaultTruth {
        fault: "cert-expired-static",
        strength: Strength {
            flag: Some("--expires-in"),
            range: (15.0, 120.0),
            unit: Unit::Seconds,
        },
        moment: (5.0, 150.0),
        modes: NO_POD,
        judge: |expires_in, moment, _| {
            if moment > expires_in + 5.0 {
                expect(
                    &["certificate"],
                    None,
                    true,
                    "the static client certificate expired: 401 on every request",
                )
            } else {
                expect(
                    &["certificate", "healthy"],
                    None,
                    true,
                    "not expired yet: a certificate about to expire is right, a healthy node too",
                )
            }
        },
    },
    FaultTruth {
        fault: "cert-rotation-stuck",
        strength: Strength {
            flag: Some("--lifetime"),
            range: (30.0, 120.0),
            unit: Unit::Seconds,
        },
        moment: (5.0, 150.0),
        modes: NO_POD,
        judge: |lifetime, moment, _| {
            // The kubelet asks for a new certificate at 70-90% of the lifetime; the CSR stays
            // pending (no approver).
            if moment >= 0.9 * lifetime {
                expect(
                    &["certificate"],
                    None,
                    true,
                    "its renewal CSR is pending with no approver (and past expiry the API server rejects it)",
                )
            } else {
                expect(
                    &["certificate", "healthy"],
                    None,
                    true,
                    "before the rotation deadline the certificate is merely short-lived",
                )
            }
        },
    },
    FaultTruth {
        fault: "api-partition",
        strength: Strength {
            flag: None,
            range: (0.0, 0.0),
            unit: Unit::Count,
        },
        moment: (5.0, 180.0),
        modes: NO_POD,
        judge: |_, moment, _| {
            // The lease lasts 40 s from its last renewal (every 10 s).
            if moment >= 45.0 {
                expect(
                    &["api-partition"],
                    None,
                    true,
                    "the lease went stale: the kubelet is cut off from the API server",
                )
            } else {
                expect(
                    &["api-partition", "healthy"],
                    None,
                    true,
                    "the lease has not expired yet: the control plane still sees a live node",
                )
            }
        },
    },
    FaultTruth {
        fault: "kubelet-stopped",
        strength: Strength {
            flag: None,
            range: (0.0, 0.0),
            unit: Unit::Count,
        },
        moment: (3.0, 150.0),
        modes: NO_POD,
        judge: |_, _, _| {
            expect(
                &["kubelet-down"],
                None,
                false,
                "no kubelet process: its port refuses connections at once",
            )
        },
    },
    FaultTruth {
        fault: "kubelet-frozen",
        strength: Strength {
            flag: None,
            range: (0.0, 0.0),
            unit: Unit::Count,
        },
        moment: (3.0, 150.0),
        modes: NO_POD,
        judge: |_, moment, mode| {
            if moment < 45.0 && mode != Mode::Agent {
                expect(
                    &["kubelet-down", "kubelet-starved"],
                    None,
                    false,
                    "frozen less than ~45 s ago the API server may still hold an HTTP/2 connection to it: requests hang instead of failing the handshake, so stuck and stopped look alike from the API side",
                )
            } else {
                expect(
                    &["kubelet-down"],
                    None,
                    false,
                    "the kubelet process exists but does not run (frozen cgroup): the handshake times out; the agent sees it frozen",
                )
            }
        },
    },
    FaultTruth {
        fault: "kubelet-memory-limited",
        strength: Strength {
            flag: Some("--limit-mib"),
            range: (12.0, 256.0),
            unit: Unit::Count,
        },
        moment: (10.0, 120.0),
        modes: NO_POD,
        judge: |limit, _, mode| {
            // Measured on the host node (cgroup v1; the binary's page cache is charged to the
            // cgroup that first read it): at 12 MiB the kubelet is killed within 0.5 s of each
            // start, at 16 MiB 3-32 s after it, at 24 and 40 MiB not within 120 s.
            if limit <= 16.0 {
                expect(
                    if mode == Mode::Agent {
                        &["kubelet-starved"]
                    } else {
                        &["kubelet-starved", "kubelet-down"]
                    },
                    None,
                    false,
                    "below the kubelet's working set: OOM-killed and restarted over and over; from the API side a kubelet between two kills is down",
                )
            } else {
                expect(
                    &["healthy", "kubelet-starved"],
                    None,
                    false,
                    "a limit above what it charges to its cgroup: it may never be killed",
                )
            }
        },
    },
];

/// The fault's truth by name.
pub fn fault(name: &str) -> Option<&'static FaultTruth> {
    FAULTS.iter().find(|f| f.fault == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_truth_names_causes_of_the_vocabulary() {
        const VOCABULARY: &[&str] = &[
            "healthy",
            "pleg-slow",
            "runtime-unresponsive",
            "certificate",
            "kubelet-down",
            "kubelet-starved",
            "api-partition",
            "node-pressure",
        ];
        for f in FAULTS {
            for mode in f.modes {
                for s in [f.strength.range.0, f.strength.range.1] {
                    for m in [f.moment.0, f.moment.1] {
                        let e = (f.judge)(s, m, *mode);
                        assert!(!e.causes.is_empty(), "{}", f.fault);
                        for c in &e.causes {
                            assert!(VOCABULARY.contains(c), "{}: {c}", f.fault);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strengths_span_their_thresholds() {
        let slow = fault("runtime-slow-list").unwrap();
        assert_eq!((slow.judge)(200.0, 10.0, Mode::Probe).causes, ["healthy"]);
        assert_eq!((slow.judge)(800.0, 10.0, Mode::Probe).causes, ["pleg-slow"]);
        assert!(slow.strength.range.0 < 400.0 && slow.strength.range.1 > 600.0);
        let cert = fault("cert-expired-static").unwrap();
        assert_eq!(
            (cert.judge)(30.0, 60.0, Mode::ApiOnly).causes,
            ["certificate"]
        );
        assert_eq!(Unit::Millis.format(612.4), "612ms");
    }
}
