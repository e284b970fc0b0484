//! The kubelet's own health: RSS, goroutines, healthz, the goroutine dump.

use super::thresholds::*;
use super::window::*;
use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, FailureKind, Step};
use crate::units::human_bytes;

fn running_pods(e: &Evidence) -> Option<f64> {
    metrics_end(e)
        .and_then(|m| m.scalar("kubelet_running_pods"))
        .or_else(|| e.stats_summary.data().map(|s| s.pods as f64))
}

/// Running pods at the start of the window, when known.
fn running_pods_at_start(e: &Evidence) -> Option<f64> {
    e.metrics_start
        .data()
        .and_then(|m| m.scalar("kubelet_running_pods"))
}

/// Growth of a gauge over the window that is not explained by more pods: `(start, end)` when it
/// grew by more than `share` and more than `floor` while the running pods did not grow.
fn unexplained_growth(e: &Evidence, gauge: &str, share: f64, floor: f64) -> Option<(f64, f64)> {
    let start = e.metrics_start.data()?.scalar(gauge)?;
    let end = metrics_end(e)?.scalar(gauge)?;
    let pods_grew = match (running_pods_at_start(e), running_pods(e)) {
        (Some(a), Some(b)) => b > a,
        _ => true,
    };
    (!pods_grew && end - start > floor && end > start * (1.0 + share)).then_some((start, end))
}

/// Growth within one window that counts as a pile-up, not noise: goroutines (each hung call the
/// kubelet waits on holds one) ...
const GOROUTINE_GROWTH: (f64, f64) = (0.10, 50.0);
/// ... and RSS.
const RSS_GROWTH: (f64, f64) = (0.10, 20.0 * 1024.0 * 1024.0);

/// Kubelet RSS, also per running pod.
pub fn kubelet_memory(e: &Evidence) -> Vec<Finding> {
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(rss) = end.scalar("process_resident_memory_bytes") else {
        return vec![missing_metric(
            FindingId::KubeletMemory,
            Domain::Kubelet,
            "process_resident_memory_bytes",
        )];
    };
    let pods = running_pods(e).unwrap_or(0.0);
    let per_pod = (pods > 0.0).then(|| rss / pods);
    let mut f = if rss > RSS_WARN_BYTES {
        if per_pod.is_some_and(|p| p <= RSS_PER_POD_EXPLAINED_BYTES) {
            Finding::new(
                FindingId::KubeletMemory,
                Domain::Kubelet,
                Severity::Info,
                format!(
                    "kubelet RSS {} is above 500 MB but explained by {pods} running pods",
                    human_bytes(rss)
                ),
            )
        } else {
            Finding::new(
                FindingId::KubeletMemory,
                Domain::Kubelet,
                Severity::Warning,
                format!("kubelet RSS {} (above 500 MB)", human_bytes(rss)),
            )
            .fix("growth without more pods suggests a leak: capture the goroutine dump and a heap profile before restarting; raise kubeReserved memory")
        }
    } else {
        Finding::new(
            FindingId::KubeletMemory,
            Domain::Kubelet,
            Severity::Ok,
            format!("kubelet RSS {}", human_bytes(rss)),
        )
    };
    if let Some(p) = per_pod {
        f = f.with(format!("{} per running pod ({pods} pods)", human_bytes(p)));
    }
    if let Some(start) = e
        .metrics_start
        .data()
        .and_then(|m| m.scalar("process_resident_memory_bytes"))
    {
        f = f.with(format!(
            "window change {:+.1} MiB",
            (rss - start) / (1024.0 * 1024.0)
        ));
    }
    if let Some((start, end)) = unexplained_growth(
        e,
        "process_resident_memory_bytes",
        RSS_GROWTH.0,
        RSS_GROWTH.1,
    ) && f.severity < Severity::Warning
    {
        f.severity = Severity::Warning;
        f.summary = format!(
            "kubelet RSS grew from {} to {} within the window while the running pods did not",
            human_bytes(start),
            human_bytes(end)
        );
        f = f.fix("memory growing without more pods: capture the goroutine dump and a heap profile (`/debug/pprof/heap`) before anyone restarts it");
    }
    vec![f]
}

/// Kubelet goroutines, also per running pod.
pub fn kubelet_goroutines(e: &Evidence) -> Vec<Finding> {
    let count = metrics_end(e)
        .and_then(|m| m.scalar("go_goroutines"))
        .or_else(|| e.goroutine_dump.data().map(|d| d.goroutines as f64));
    let Some(count) = count else {
        return vec![];
    };
    let pods = running_pods(e).unwrap_or(0.0);
    let per_pod = (pods > 0.0).then(|| count / pods);
    let mut f = if count > GOROUTINES_WARN {
        if per_pod.is_some_and(|p| p <= GOROUTINES_PER_POD_EXPLAINED) {
            Finding::new(
                FindingId::KubeletGoroutines,
                Domain::Kubelet,
                Severity::Info,
                format!(
                    "{count} kubelet goroutines, above 500 but explained by {pods} running pods"
                ),
            )
        } else {
            Finding::new(
                FindingId::KubeletGoroutines,
                Domain::Kubelet,
                Severity::Warning,
                format!("{count} kubelet goroutines (above 500): possible leak or pile-up"),
            )
            .fix("keep the goroutine dump (it shows where they wait) before anyone restarts the kubelet")
        }
    } else {
        Finding::new(
            FindingId::KubeletGoroutines,
            Domain::Kubelet,
            Severity::Ok,
            format!("{count} kubelet goroutines"),
        )
    };
    if let Some(p) = per_pod {
        f = f.with(format!("{p:.1} per running pod ({pods} pods)"));
    }
    if let Some((start, end)) =
        unexplained_growth(e, "go_goroutines", GOROUTINE_GROWTH.0, GOROUTINE_GROWTH.1)
    {
        f = f.with(format!(
            "goroutines grew from {start} to {end} within the window while the running pods did not"
        ));
        if f.severity < Severity::Warning {
            f.severity = Severity::Warning;
            f.summary = format!(
                "kubelet goroutines piling up: {start} -> {end} within the window (each call the kubelet waits on holds one)"
            );
            f = f.fix("keep the goroutine dump: it shows where they wait (a hung runtime call, the API server, a lock)");
        }
    }
    vec![f]
}

/// Running pods against the node's pod capacity (kubernetes-mixin KubeletTooManyPods: above 95%).
/// The relist's cost grows with the pods and containers it lists.
pub fn pod_density(e: &Evidence) -> Vec<Finding> {
    let Some(pods) = running_pods(e) else {
        return vec![];
    };
    let capacity = e
        .node
        .data()
        .and_then(|n| n.pod_capacity.as_deref())
        .and_then(|c| c.parse::<f64>().ok())
        .or_else(|| e.configz.data().and_then(|c| c.max_pods).map(|m| m as f64));
    let Some(capacity) = capacity.filter(|c| *c > 0.0) else {
        return vec![];
    };
    let share = pods / capacity;
    let f = if share > POD_DENSITY_WARN {
        Finding::new(
            FindingId::PodDensity,
            Domain::Kubelet,
            Severity::Warning,
            format!(
                "{pods} running pods of a capacity of {capacity}: above {:.0}% (every relist lists them all)",
                POD_DENSITY_WARN * 100.0
            ),
        )
        .fix("spread pods to other nodes (cordon this one, lower maxPods) before relists slow down further")
    } else {
        Finding::new(
            FindingId::PodDensity,
            Domain::Kubelet,
            Severity::Ok,
            format!("{pods} running pods of a capacity of {capacity}"),
        )
    };
    vec![f.with("kubelet_running_pods against status.capacity.pods (or maxPods)")]
}

/// Container starts in the window (`kubelet_started_containers_total`): a relist re-reads the
/// status of every pod whose containers changed (pkg/kubelet/pleg/generic.go updateCache), so
/// churn adds to each relist's work. It matters when relists are slow: then starts per relist
/// are a warning.
pub fn pod_churn(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "kubelet_started_containers_total";
    let Some(starts) = window_counter(e, NAME, all) else {
        return vec![];
    };
    let window = window_seconds(e).max(1e-3);
    let per_minute = starts * 60.0 / window;
    let relists = crate::relists::relist_window(e);
    let slow = relists
        .as_ref()
        .is_some_and(|w| w.fraction_over_1s > 0.5 || w.mean_relist_seconds > 1.0);
    let per_relist = relists
        .as_ref()
        .filter(|w| w.relists > 0.0)
        .map(|w| starts / w.relists);
    let f = if slow && per_relist.is_some_and(|p| p >= CHURN_STARTS_PER_RELIST) {
        Finding::new(
            FindingId::PodChurn,
            Domain::Kubelet,
            Severity::Warning,
            format!(
                "container churn while relists are slow: {starts} container starts in the window ({per_minute:.0}/min, {:.1} per relist)",
                per_relist.unwrap_or(0.0)
            ),
        )
        .fix("find the crash-looping or rapidly recreated pods (`kubectl get pods -A --field-selector spec.nodeName=<node>` sorted by restarts) and stop the churn")
    } else {
        Finding::new(
            FindingId::PodChurn,
            Domain::Kubelet,
            if starts > 0.0 {
                Severity::Info
            } else {
                Severity::Ok
            },
            format!("{starts} container starts in the window ({per_minute:.1}/min)"),
        )
    };
    vec![f.with(format!("{NAME} window delta {starts}"))]
}

/// KubeletTooManyPods (kubernetes-mixin): running pods above 95% of capacity.
const POD_DENSITY_WARN: f64 = 0.95;
/// Container starts per relist from which churn is named next to slow relists: each relist then
/// also re-reads at least one changed pod's status.
const CHURN_STARTS_PER_RELIST: f64 = 1.0;

/// Kubelet healthz sub-checks. Healthz has no PLEG check.
pub fn healthz(e: &Evidence) -> Vec<Finding> {
    let Some(h) = e.healthz.data() else {
        return vec![];
    };
    let failing: Vec<_> = h.checks.iter().filter(|c| !c.ok).collect();
    let names: Vec<&str> = h.checks.iter().map(|c| c.name.as_str()).collect();
    if failing.is_empty() && h.http_status == 200 {
        let ready_false = e
            .node
            .data()
            .and_then(|n| n.condition("Ready"))
            .is_some_and(|c| c.status == "False");
        let mut f = Finding::new(
            FindingId::Healthz,
            Domain::Kubelet,
            Severity::Ok,
            format!("kubelet healthz ok ({})", names.join(", ")),
        )
        .with("healthz has no PLEG check");
        if ready_false {
            f = f.with("healthz 200 while Ready=False is expected during a PLEG stall");
        }
        return vec![f];
    }
    let syncloop = failing.iter().any(|c| c.name == "syncloop");
    let mut f = Finding::new(
        FindingId::Healthz,
        Domain::Kubelet,
        if syncloop {
            Severity::Critical
        } else {
            Severity::Warning
        },
        format!(
            "kubelet healthz failing (HTTP {}): {}",
            h.http_status,
            failing
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    for c in &failing {
        f = f.with(format!("[-]{} {}", c.name, c.detail));
    }
    if syncloop {
        f = f
            .with("syncloop fails after max(2 x resync, 5 min) without a completed sync-loop iteration")
            .fix("the kubelet skips its sync loop while the runtime is down or PLEG is unhealthy (pkg/kubelet/kubelet.go syncLoop), so syncloop fails after 5 min of either as their symptom — see the verdict; only a loop stuck on its own needs the kubelet's goroutine dump (captured before anything is restarted)");
    }
    vec![f]
}

/// The goroutine dump was captured (kept for the bundle) or why not.
pub fn goroutine_dump(e: &Evidence) -> Vec<Finding> {
    match &e.goroutine_dump {
        Step::Collected { data } => {
            let mut f = Finding::new(
                FindingId::GoroutineDump,
                Domain::Kubelet,
                Severity::Ok,
                format!(
                    "goroutine dump captured: {} goroutines, {} blocked over a minute",
                    data.goroutines, data.blocked_over_a_minute
                ),
            );
            let states: Vec<String> = data
                .top_states
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            f = f.with(format!("states: {}", states.join(", ")));
            vec![f]
        }
        Step::Failed { failure } if failure.kind == FailureKind::NotFound => vec![
            Finding::new(
                FindingId::GoroutineDump,
                Domain::Kubelet,
                Severity::Info,
                "no goroutine dump: the kubelet's profiling handler is disabled (enableProfilingHandler: false)",
            )
            .with(failure.message.clone())
            .fix("nothing to do now; enable the profiling handler to get dumps before restarts"),
        ],
        _ => vec![],
    }
}
