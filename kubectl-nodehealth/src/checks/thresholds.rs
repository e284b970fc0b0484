//! The thresholds the checks judge by, each with its source: the kubelet's own, kubernetes-mixin's,
//! the operator guide's, or this tool's degraded tier (DESIGN.md, Thresholds). `alerts` and `pleg`
//! use the same numbers.

pub use nodehealth_proto::pleg::{
    PLEG_DEGRADED_P50_SECONDS, PLEG_LAST_SEEN_WARN_SECONDS, PLEG_UNHEALTHY_SECONDS,
};
/// kubernetes-mixin KubeletPlegDurationHigh: p99 >= 10 s (the top finite bucket).
pub const PLEG_P99_SECONDS: f64 = 10.0;
/// Degraded tier: relist interval p50 > 2 s. 2 s is not a bucket bound (1 and 2.5 are), so it is
/// decided on the exact window mean or on p50 above the 2.5 s bucket.
pub const PLEG_INTERVAL_DEGRADED_SECONDS: f64 = 2.0;
/// Fewer relists than this in the window are too few for a median: the degraded tier then also
/// needs the since-start histogram to agree (a single slow relist on a busy machine is not a
/// degraded PLEG). The p99 >= 10 s and stuck-relist tiers do not need it.
pub const MIN_WINDOW_RELISTS: f64 = 3.0;
/// Runtime operation buckets: ExponentialBuckets(.005, 2.5, 14) -> 3.0517578125 s ...
pub const RUNTIME_BUCKET_3S: f64 = 0.005 * 610.3515625;
/// ... and 7.62939453125 s.
pub const RUNTIME_BUCKET_7S: f64 = 0.005 * 1525.87890625;
/// Slack on top of the Lease's renewal interval (a quarter of its duration, 10 s) before a
/// renewal counts as not recent: the renewal's own latency and clock skew between the API
/// server's timestamps and the plugin's. Our own.
pub const LEASE_RENEWAL_MARGIN_SECONDS: f64 = 5.0;
/// Certificate TTL warning (kubernetes-mixin: 7 days).
pub const CERT_WARN_SECONDS: f64 = 7.0 * 86400.0;
/// Certificate TTL critical (kubernetes-mixin: 1 day).
pub const CERT_CRITICAL_SECONDS: f64 = 86400.0;
/// Kubelet RSS warning (the guide: sustained above 500 MB).
pub const RSS_WARN_BYTES: f64 = 500.0 * 1024.0 * 1024.0;
/// Below this RSS per running pod a big RSS is explained by pod density (our heuristic).
pub const RSS_PER_POD_EXPLAINED_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Goroutine warning (the guide: above 500).
pub const GOROUTINES_WARN: f64 = 500.0;
/// Below this many goroutines per running pod a high count is explained by density (heuristic).
pub const GOROUTINES_PER_POD_EXPLAINED: f64 = 10.0;
/// Rest client: "p99 above 5 s" is visible at the 4 s and 8 s bucket bounds.
pub const REST_BUCKET_4S: f64 = 4.0;
/// Rest client bucket above 5 s.
pub const REST_BUCKET_8S: f64 = 8.0;
/// Filesystem warning (the guide keeps usage under 70%).
pub const FS_WARN_PERCENT: f64 = 70.0;
/// Filesystem critical: the default image GC high threshold and imagefs eviction (85% used).
pub const FS_CRITICAL_PERCENT: f64 = 85.0;
