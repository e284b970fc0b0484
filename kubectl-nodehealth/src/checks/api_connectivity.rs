//! The kubelet's requests to the API server: latency, 5xx and unanswered requests.

use super::thresholds::*;
use super::window::*;
use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::Evidence;
use crate::metrics::Labels;

/// Kubelet -> API server latency: "p99 above 5 s" is only visible at the 4 s / 8 s buckets.
pub fn rest_client_latency(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "rest_client_request_duration_seconds";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(since) = end.histogram_where(NAME, all) else {
        return vec![missing_metric(
            FindingId::RestLatency,
            Domain::ApiConnectivity,
            NAME,
        )];
    };
    let Some(window) = window_histogram(e, NAME, all) else {
        return vec![];
    };
    let w = &window.histogram;
    let above4 = w.fraction_above(REST_BUCKET_4S).unwrap_or(0.0);
    let above8 = w.fraction_above(REST_BUCKET_8S).unwrap_or(0.0);
    let f = if above8 >= 0.01 {
        Finding::new(
            FindingId::RestLatency,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!(
                "the kubelet's API requests are slow: {} took > 8 s (p99 above 5 s)",
                percent(above8)
            ),
        )
    } else if above4 >= 0.01 {
        Finding::new(
            FindingId::RestLatency,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!(
                "the kubelet's API requests are slow: {} took > 4 s (p99 above 4 s; 5 s is not a bucket bound)",
                percent(above4)
            ),
        )
    } else {
        Finding::new(
            FindingId::RestLatency,
            Domain::ApiConnectivity,
            Severity::Ok,
            "the kubelet's API requests are fast",
        )
    };
    let label = window_label(&window, window_seconds(e));
    let mut f = f
        .with(describe(&label, w))
        .with(describe("since kubelet start", &since));
    if f.severity.is_problem() {
        f = f.fix("lease renewals and status updates ride on these requests: check the API server's load and the network path from the node");
    }
    vec![f]
}

/// Kubelet -> API server 5xx answers and requests with no answer (`code="<error>"`).
pub fn rest_client_errors(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "rest_client_requests_total";
    let five = |l: &Labels| l.get("code").is_some_and(|c| c.starts_with('5'));
    let transport = |l: &Labels| l.get("code").map(String::as_str) == Some("<error>");
    let Some(w5) = window_counter(e, NAME, five) else {
        return vec![];
    };
    let wt = window_counter(e, NAME, transport).unwrap_or(0.0);
    let since5 = metrics_end(e)
        .and_then(|m| m.sum_where(NAME, five))
        .unwrap_or(0.0);
    let evidence = format!(
        "rest_client_requests_total: 5xx +{w5}, <error> +{wt} in the window; 5xx {since5} since kubelet start"
    );
    let f = if wt > 0.0 {
        Finding::new(
            FindingId::RestErrors,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!("{wt} of the kubelet's API requests got no answer in the window (network path or API server)"),
        )
        .fix("fix the path from the node to the API server (load balancer, DNS, firewall); do not restart the kubelet for this")
    } else if w5 > 0.0 {
        Finding::new(
            FindingId::RestErrors,
            Domain::ApiConnectivity,
            Severity::Warning,
            format!(
                "the API server answered {w5} of the kubelet's requests with 5xx in the window"
            ),
        )
        .fix("the API server is failing: check its health and etcd")
    } else {
        Finding::new(
            FindingId::RestErrors,
            Domain::ApiConnectivity,
            Severity::Ok,
            "no 5xx or unanswered kubelet API requests in the window",
        )
    };
    vec![f.with(evidence)]
}
