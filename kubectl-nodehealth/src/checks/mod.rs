//! Checks: pure functions from the evidence snapshot to findings.
//!
//! Thresholds come from the kubelet itself and kubernetes-mixin (see FACTS in the design notes),
//! plus the degraded tier of the design: relist p50 > 1 s, relist interval p50 > 2 s, runtime
//! list operations above the 3.05 s bucket. Histogram answers are bucket intervals and
//! fractions above a real bucket bound — never an interpolated number.

use serde::{Deserialize, Serialize};

use crate::evidence::Evidence;

/// How bad a finding is. Ordered from harmless to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Worth knowing, not a problem.
    Info,
    /// Could not be checked (permission, endpoint missing).
    Unknown,
    /// A problem or a degradation that precedes one.
    Warning,
    /// The node is failing or about to.
    Critical,
}

impl Severity {
    /// Whether this is a problem (warning or critical).
    pub fn is_problem(self) -> bool {
        self >= Severity::Warning
    }
}

/// The failure domain a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// Node conditions and taints.
    Node,
    /// Lease heartbeat.
    Heartbeat,
    /// Pod lifecycle event generator relists.
    Pleg,
    /// The container runtime as the kubelet sees it.
    Runtime,
    /// Kubelet client/serving certificates and CSRs.
    Certificates,
    /// The kubelet's own health: healthz, memory, goroutines.
    Kubelet,
    /// The kubelet's requests to the API server.
    ApiConnectivity,
    /// Node filesystems.
    Filesystem,
    /// Kubelet configuration.
    Configuration,
    /// What the collection itself could not do.
    Collection,
}

impl Domain {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Node => "node",
            Domain::Heartbeat => "heartbeat",
            Domain::Pleg => "pleg",
            Domain::Runtime => "runtime",
            Domain::Certificates => "certificates",
            Domain::Kubelet => "kubelet",
            Domain::ApiConnectivity => "api-connectivity",
            Domain::Filesystem => "filesystem",
            Domain::Configuration => "configuration",
            Domain::Collection => "collection",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Stable identifier.
    pub id: FindingId,
    /// Failure domain.
    pub domain: Domain,
    /// Severity.
    pub severity: Severity,
    /// One line for a person.
    pub summary: String,
    /// The observations behind it.
    pub evidence: Vec<String>,
    /// What to do, with real names filled in.
    pub remediation: Option<String>,
}

impl Finding {
    /// A problem that does not make the node unhealthy now: configuration risks. They are
    /// shown as warnings but do not set exit code 1 on their own.
    pub fn is_advisory(&self) -> bool {
        self.domain == Domain::Configuration
    }

    /// Known messages in the kubelet's or runtime's logs: supporting evidence for a cause, never
    /// a problem on their own — a fault healed minutes ago leaves its lines behind.
    pub fn is_log_evidence(&self) -> bool {
        self.id.is_log()
    }

    /// A problem that counts for the exit code and the verdict.
    pub fn is_real_problem(&self) -> bool {
        self.severity.is_problem() && !self.is_advisory() && !self.is_log_evidence()
    }

    pub(crate) fn new(
        id: FindingId,
        domain: Domain,
        severity: Severity,
        summary: impl Into<String>,
    ) -> Self {
        Finding {
            id,
            domain,
            severity,
            summary: summary.into(),
            evidence: Vec::new(),
            remediation: None,
        }
    }

    pub(crate) fn with(mut self, evidence: impl Into<String>) -> Self {
        self.evidence.push(evidence.into());
        self
    }

    pub(crate) fn fix(mut self, remediation: impl Into<String>) -> Self {
        self.remediation = Some(remediation.into());
        self
    }
}

pub mod api_connectivity;
pub mod certificates;
pub mod collection;
pub mod conditions;
pub mod configuration;
pub mod events;
pub mod facts;
pub mod filesystems;
pub mod heartbeat;
pub mod history;
pub mod id;
pub mod kubelet;
pub mod logs;
pub mod node;
pub mod platform;
pub mod pleg;
pub mod recorder;
pub mod runtime;
pub mod thresholds;
pub mod trace;
pub mod window;

pub use facts::Facts;
pub use id::{CertRole, Component, FindingId, PressureKind};
pub use thresholds::*;

/// One check: a name (for `--explain`-style listings and the scan subset) and a pure function
/// from the evidence to its findings.
pub struct Check {
    /// Short name.
    pub name: &'static str,
    /// The check.
    pub run: fn(&Evidence) -> Vec<Finding>,
}

/// Every check, in report order. The engine only iterates: adding a check touches this table and
/// its own module, nothing else.
pub const CHECKS: &[Check] = &[
    Check {
        name: "ready",
        run: conditions::ready,
    },
    Check {
        name: "pressure",
        run: conditions::pressure,
    },
    Check {
        name: "lease",
        run: heartbeat::lease,
    },
    Check {
        name: "cluster-leases",
        run: heartbeat::cluster_leases,
    },
    Check {
        name: "events",
        run: events::events,
    },
    Check {
        name: "kubelet-restarts",
        run: events::kubelet_restarts,
    },
    Check {
        name: "pleg-duration",
        run: pleg::pleg_duration,
    },
    Check {
        name: "pleg-interval",
        run: pleg::pleg_interval,
    },
    Check {
        name: "pleg-last-seen",
        run: pleg::pleg_last_seen,
    },
    Check {
        name: "pleg-discards",
        run: pleg::pleg_discards,
    },
    Check {
        name: "pleg-runtime-share",
        run: pleg::runtime_share,
    },
    Check {
        name: "pleg-mode",
        run: pleg::mode,
    },
    Check {
        name: "runtime-list-latency",
        run: runtime::runtime_list_latency,
    },
    Check {
        name: "runtime-errors",
        run: runtime::runtime_errors,
    },
    Check {
        name: "runtime-write-latency",
        run: runtime::runtime_write_latency,
    },
    Check {
        name: "cert-client-ttl",
        run: certificates::client_ttl,
    },
    Check {
        name: "cert-server-ttl",
        run: certificates::server_ttl,
    },
    Check {
        name: "cert-client-renew",
        run: certificates::client_renew_errors,
    },
    Check {
        name: "cert-server-renew",
        run: certificates::server_renew_errors,
    },
    Check {
        name: "kubelet-auth",
        run: certificates::kubelet_auth_errors,
    },
    Check {
        name: "csrs",
        run: certificates::csrs,
    },
    Check {
        name: "csr-approver",
        run: certificates::csr_approver,
    },
    Check {
        name: "kubelet-memory",
        run: kubelet::kubelet_memory,
    },
    Check {
        name: "kubelet-goroutines",
        run: kubelet::kubelet_goroutines,
    },
    Check {
        name: "pod-density",
        run: kubelet::pod_density,
    },
    Check {
        name: "pod-churn",
        run: kubelet::pod_churn,
    },
    Check {
        name: "healthz",
        run: kubelet::healthz,
    },
    Check {
        name: "goroutine-dump",
        run: kubelet::goroutine_dump,
    },
    Check {
        name: "rest-latency",
        run: api_connectivity::rest_client_latency,
    },
    Check {
        name: "rest-errors",
        run: api_connectivity::rest_client_errors,
    },
    Check {
        name: "filesystems",
        run: filesystems::filesystems,
    },
    Check {
        name: "image-gc",
        run: configuration::image_gc,
    },
    Check {
        name: "log-rotation",
        run: configuration::log_rotation,
    },
    Check {
        name: "reserved",
        run: configuration::reserved,
    },
    Check {
        name: "collection",
        run: collection::collection_failures,
    },
    Check {
        name: "node",
        run: node::run,
    },
    Check {
        name: "logs",
        run: logs::run,
    },
    Check {
        name: "history",
        run: history::run,
    },
    Check {
        name: "recorder",
        run: recorder::run,
    },
];

/// The checks that read only API objects (Node, Lease, CSRs): what `scan` runs per node.
pub const OBJECT_CHECKS: &[&str] = &[
    "ready",
    "pressure",
    "lease",
    "cluster-leases",
    "csrs",
    "csr-approver",
];

/// Run every check.
pub fn run_all(e: &Evidence) -> Vec<Finding> {
    CHECKS.iter().flat_map(|c| (c.run)(e)).collect()
}

/// Run the named checks only.
pub fn run_named(e: &Evidence, names: &[&str]) -> Vec<Finding> {
    CHECKS
        .iter()
        .filter(|c| names.contains(&c.name))
        .flat_map(|c| (c.run)(e))
        .collect()
}

/// What the checks make of a snapshot: the findings, and the typed facts the verdict needs beside
/// them (which runtime, which CSR is pending, which kubelet endpoints answered, ...). The verdict
/// reads only this.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// Typed facts.
    pub facts: Facts,
}

/// Run the checks and gather the facts.
pub fn assess(e: &Evidence) -> Assessment {
    assess_with(e, run_all(e))
}

/// Gather the facts beside findings already computed (e.g. a subset of the checks).
pub fn assess_with(e: &Evidence, mut findings: Vec<Finding>) -> Assessment {
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.domain.cmp(&b.domain)));
    let facts = Facts::gather(e, &findings);
    Assessment { findings, facts }
}

/// Seconds from `t` (stamped by the cluster) to the end of collection, on the API server's clock
/// when this machine's is off by more than the `Date` header's resolution.
pub(crate) fn seconds_since(e: &Evidence, t: jiff::Timestamp) -> f64 {
    e.collected_at.duration_since(t).as_secs_f64() - local_clock_ahead(e)
}

/// How far this machine's clock is ahead of the API server's (0 within the `Date` header's
/// resolution, or when unknown): measured beside the lease read.
pub(crate) fn local_clock_ahead(e: &Evidence) -> f64 {
    e.lease
        .data()
        .and_then(heartbeat::clock_offset)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;
