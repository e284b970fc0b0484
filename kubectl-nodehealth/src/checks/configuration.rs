//! Kubelet configuration risks from /configz: image GC, container log rotation, reserves.

use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::Evidence;
use crate::units::{human_bytes, parse_quantity_bytes};

fn percent_value(text: &str) -> Option<f64> {
    text.strip_suffix('%')?.parse().ok()
}

/// Image GC thresholds against the imagefs eviction threshold.
pub fn image_gc(e: &Evidence) -> Vec<Finding> {
    let Some(c) = e.configz.data() else {
        return vec![];
    };
    // Defaults: pkg/kubelet/apis/config/v1beta1/defaults.go (85 / 80); eviction imagefs.available<15%.
    let high = c.image_gc_high_threshold_percent.unwrap_or(85);
    let low = c.image_gc_low_threshold_percent.unwrap_or(80);
    let eviction_used = c
        .eviction_hard
        .get("imagefs.available")
        .and_then(|v| percent_value(v))
        .map(|avail| 100.0 - avail);
    let basis = format!(
        "imageGCHighThresholdPercent={high} imageGCLowThresholdPercent={low} evictionHard imagefs.available={}",
        c.eviction_hard
            .get("imagefs.available")
            .cloned()
            .unwrap_or_else(|| "(default 15%)".into())
    );
    let f = if low >= high {
        Finding::new(
            FindingId::ImageGc,
            Domain::Configuration,
            Severity::Warning,
            format!("image GC low threshold {low}% is not below the high threshold {high}%"),
        )
        .fix("set imageGCLowThresholdPercent below imageGCHighThresholdPercent")
    } else if eviction_used.is_some_and(|used| f64::from(high as i32) > used) {
        Finding::new(
            FindingId::ImageGc,
            Domain::Configuration,
            Severity::Warning,
            format!(
                "image GC starts at {high}% used, after eviction starts at {:.0}% used",
                eviction_used.unwrap_or(0.0)
            ),
        )
        .fix("lower imageGCHighThresholdPercent below the imagefs eviction threshold")
    } else if high >= 90 {
        Finding::new(
            FindingId::ImageGc,
            Domain::Configuration,
            Severity::Warning,
            format!("image GC starts late, at {high}% used"),
        )
        .fix("lower imageGCHighThresholdPercent (default 85) so GC runs before DiskPressure")
    } else {
        Finding::new(
            FindingId::ImageGc,
            Domain::Configuration,
            Severity::Ok,
            format!("image GC at {high}% -> {low}%"),
        )
    };
    vec![f.with(basis)]
}

/// Container log rotation: per-container log budget.
pub fn log_rotation(e: &Evidence) -> Vec<Finding> {
    let Some(c) = e.configz.data() else {
        return vec![];
    };
    let size_text = c
        .container_log_max_size
        .clone()
        .unwrap_or_else(|| "10Mi".into());
    let files = c.container_log_max_files.unwrap_or(5);
    let basis = format!("containerLogMaxSize={size_text} containerLogMaxFiles={files}");
    let Some(size) = parse_quantity_bytes(&size_text) else {
        return vec![
            Finding::new(
                FindingId::LogRotation,
                Domain::Configuration,
                Severity::Info,
                format!("container log size {size_text:?} not understood"),
            )
            .with(basis),
        ];
    };
    let budget = size * files as f64;
    let f = if budget > 1024.0 * 1024.0 * 1024.0 {
        Finding::new(
            FindingId::LogRotation,
            Domain::Configuration,
            Severity::Warning,
            format!(
                "each container may keep {} of logs: a few chatty containers can fill nodefs",
                human_bytes(budget)
            ),
        )
        .fix("lower containerLogMaxSize or containerLogMaxFiles")
    } else {
        Finding::new(
            FindingId::LogRotation,
            Domain::Configuration,
            Severity::Ok,
            format!("container logs rotate at {size_text} x {files} files"),
        )
    };
    vec![f.with(basis)]
}

/// kube-reserved / system-reserved.
pub fn reserved(e: &Evidence) -> Vec<Finding> {
    let Some(c) = e.configz.data() else {
        return vec![];
    };
    let show = |m: &std::collections::BTreeMap<String, String>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let basis = format!(
        "kubeReserved {} systemReserved {}",
        show(&c.kube_reserved),
        show(&c.system_reserved)
    );
    let f = if c.kube_reserved.is_empty() && c.system_reserved.is_empty() {
        Finding::new(
            FindingId::Reserved,
            Domain::Configuration,
            Severity::Warning,
            "no kubeReserved or systemReserved: workloads can starve the kubelet and the runtime",
        )
        .fix("set kubeReserved and systemReserved (cpu, memory) in the kubelet config")
    } else {
        Finding::new(
            FindingId::Reserved,
            Domain::Configuration,
            Severity::Ok,
            "resources reserved for the kubelet/system",
        )
    };
    vec![f.with(basis)]
}
