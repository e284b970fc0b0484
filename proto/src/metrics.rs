//! The kubelet's `/metrics`: Prometheus text exposition format (0.0.4) parsing, and the
//! histogram arithmetic the checks use.
//!
//! Why a parser of our own: the maintained-looking crate for this (`prometheus-parse` 0.2) splits
//! label sets on `,` and `=` and trims quotes, so a label value holding a comma, an `=` or an
//! escaped quote (the kubelet's `rest_client_*` series carry the API server URL in `host`; any
//! `url`/`path` label can hold anything) corrupts the series, and it does not unescape `\\`, `\"`
//! or `\n`. The format is small; this module implements it completely for what a kubelet emits:
//! `# TYPE`, samples with quoted and escaped labels, Go float spellings (`+Inf`, `-Inf`, `NaN`),
//! optional timestamps, and counts malformed lines instead of giving up on the whole scrape.
//!
//! Histogram rule: quantiles are never more precise than the buckets. [`Histogram::quantile`]
//! returns the bucket interval that holds the rank, and [`Histogram::fraction_above`] answers
//! threshold questions only at a real bucket bound.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Label set of one series, sorted by label name.
pub type Labels = BTreeMap<String, String>;

/// How many malformed lines a scrape remembers verbatim (the count is always complete).
const MALFORMED_KEPT: usize = 5;

/// The declared type of a metric family (`# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Cumulative histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
    /// Summary (`quantile` label, `_sum`, `_count`).
    Summary,
    /// No `# TYPE` line, or `untyped`.
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written (including `_bucket`/`_sum`/`_count` suffixes).
    pub name: String,
    /// Unescaped labels.
    pub labels: Labels,
    /// Value; may be infinite or NaN.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Samples in text order.
    pub samples: Vec<Sample>,
    /// Family name -> declared type.
    pub types: BTreeMap<String, MetricType>,
    /// Number of lines that could not be parsed.
    pub malformed_count: usize,
    /// The first few malformed lines, `line N: reason: text`.
    pub malformed: Vec<String>,
}

/// Parse Prometheus text format. Never fails: malformed lines are counted and skipped, so one
/// odd line from a newer kubelet does not blind every check.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
            {
                let kind = match kind {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "summary" => MetricType::Summary,
                    _ => MetricType::Untyped,
                };
                scrape.types.insert(name.to_string(), kind);
            }
            continue;
        }
        match parse_sample(line) {
            Ok(sample) => scrape.samples.push(sample),
            Err(reason) => {
                scrape.malformed_count += 1;
                if scrape.malformed.len() < MALFORMED_KEPT {
                    let shown: String = line.chars().take(120).collect();
                    scrape
                        .malformed
                        .push(format!("line {}: {reason}: {shown}", index + 1));
                }
            }
        }
    }
    scrape
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let mut chars = line.char_indices().peekable();
    match chars.peek() {
        Some(&(_, c)) if is_name_start(c) => {}
        _ => return Err("metric name expected"),
    }
    let mut name_end = line.len();
    while let Some(&(i, c)) = chars.peek() {
        if is_name_char(c) {
            chars.next();
        } else {
            name_end = i;
            break;
        }
    }
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(after_brace) = rest.trim_start().strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("value missing")?;
    let value = parse_go_float(value).ok_or("value is not a number")?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("trailing text after timestamp");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parse `name="value",...}` (the opening brace already consumed); returns the text after `}`.
fn parse_labels<'a>(mut text: &'a str, labels: &mut Labels) -> Result<&'a str, &'static str> {
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok(after);
        }
        let name_len = text
            .char_indices()
            .find(|&(_, c)| !is_name_char(c))
            .map(|(i, _)| i)
            .ok_or("unterminated label set")?;
        if name_len == 0 || !text.starts_with(is_name_start) {
            return Err("label name expected");
        }
        let label = &text[..name_len];
        text = text[name_len..].trim_start();
        text = text
            .strip_prefix('=')
            .ok_or("'=' expected after label name")?;
        text = text.trim_start();
        text = text.strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in text.char_indices() {
            if escaped {
                match c {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => {
                        // The format defines only three escapes; keep anything else verbatim.
                        value.push('\\');
                        value.push(other);
                    }
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or("unterminated label value")?;
        labels.insert(label.to_string(), value);
        text = text[end + 1..].trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err("',' or '}' expected after label value");
        }
    }
}

/// Go's float spellings as the Prometheus client writes them: `+Inf`, `-Inf`, `NaN`, and
/// ordinary decimal/exponent numbers.
pub fn parse_go_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            // Rust also accepts "infinity" and friends; the format does not.
            if text
                .chars()
                .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            {
                return None;
            }
            text.parse().ok()
        }
    }
}

impl Scrape {
    /// All samples of exactly this name.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The histograms of family `name`, one per label set (without `le`).
    pub fn histograms(&self, name: &str) -> Vec<Histogram> {
        let bucket_name = format!("{name}_bucket");
        let sum_name = format!("{name}_sum");
        let count_name = format!("{name}_count");
        let mut by_labels: BTreeMap<Labels, Histogram> = BTreeMap::new();
        for sample in &self.samples {
            if sample.name == bucket_name {
                let mut labels = sample.labels.clone();
                // A NaN bound is no bound (and would leave the buckets without an order).
                let Some(le) = labels
                    .remove("le")
                    .and_then(|le| parse_go_float(&le))
                    .filter(|le| !le.is_nan())
                else {
                    continue;
                };
                let histogram = by_labels
                    .entry(labels.clone())
                    .or_insert_with(|| Histogram::empty(labels));
                if le.is_infinite() {
                    histogram.count = sample.value;
                } else {
                    histogram.buckets.push(Bucket {
                        le,
                        cumulative: sample.value,
                    });
                }
            } else if sample.name == sum_name || sample.name == count_name {
                let labels = sample.labels.clone();
                let histogram = by_labels
                    .entry(labels.clone())
                    .or_insert_with(|| Histogram::empty(labels));
                if sample.name == sum_name {
                    histogram.sum = sample.value;
                } else if histogram.count == 0.0 {
                    histogram.count = sample.value;
                }
            }
        }
        let mut histograms: Vec<Histogram> = by_labels
            .into_values()
            .filter(|h| !h.buckets.is_empty())
            .collect();
        for histogram in &mut histograms {
            histogram.buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
        }
        histograms
    }
}

/// One finite cumulative bucket: observations `<= le`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound (seconds for latency histograms).
    pub le: f64,
    /// Observations at or below `le`.
    pub cumulative: f64,
}

/// A cumulative histogram. The `+Inf` bucket is `count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Labels of the series, without `le`.
    pub labels: Labels,
    /// Finite buckets, ascending `le`.
    pub buckets: Vec<Bucket>,
    /// Total observations (= the `+Inf` bucket).
    pub count: f64,
    /// Sum of observations.
    #[serde(with = "prom_f64")]
    pub sum: f64,
}

/// Where a quantile falls: the bucket `(lower, upper]` that holds its rank. `upper` is infinite
/// when the rank is in the `+Inf` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileBucket {
    /// Lower bound (exclusive).
    pub lower: f64,
    /// Upper bound (inclusive); infinite for the `+Inf` bucket.
    #[serde(with = "prom_f64")]
    pub upper: f64,
}

impl std::fmt::Display for QuantileBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.upper.is_infinite() {
            write!(f, "> {} s", fmt_seconds(self.lower))
        } else if self.lower <= 0.0 {
            write!(f, "<= {} s", fmt_seconds(self.upper))
        } else {
            write!(
                f,
                "{}-{} s",
                fmt_seconds(self.lower),
                fmt_seconds(self.upper)
            )
        }
    }
}

/// Seconds without float noise: `0.005`, `3.05`, `10`.
pub fn fmt_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// The result of subtracting the window's first scrape from its last.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowDelta {
    /// Observations made during the window.
    pub histogram: Histogram,
    /// The counters went backwards (kubelet restarted): the delta is "since the restart",
    /// i.e. the end scrape alone.
    pub reset: bool,
}

impl Histogram {
    fn empty(labels: Labels) -> Self {
        Histogram {
            labels,
            buckets: Vec::new(),
            count: 0.0,
            sum: 0.0,
        }
    }

    /// Mean observation, exact (sum / count) — unlike quantiles it needs no buckets.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The bucket that holds quantile `q` (0 < q <= 1). `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<QuantileBucket> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = 0.0;
        for bucket in &self.buckets {
            if bucket.cumulative >= rank {
                return Some(QuantileBucket {
                    lower,
                    upper: bucket.le,
                });
            }
            lower = bucket.le;
        }
        Some(QuantileBucket {
            lower,
            upper: f64::INFINITY,
        })
    }

    /// Number of observations above `bound`, if `bound` is one of the bucket bounds (to 0.1%).
    pub fn count_above(&self, bound: f64) -> Option<f64> {
        let bucket = self
            .buckets
            .iter()
            .find(|b| (b.le - bound).abs() <= bound.abs() * 1e-3)?;
        Some((self.count - bucket.cumulative).max(0.0))
    }

    /// Fraction (0..=1) of observations above `bound`; `None` without observations or when
    /// `bound` is not a bucket bound (no invented precision).
    pub fn fraction_above(&self, bound: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        Some(self.count_above(bound)? / self.count)
    }

    /// Whether `other` has the same bucket layout.
    fn same_layout(&self, other: &Histogram) -> bool {
        self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| (a.le - b.le).abs() <= a.le.abs() * 1e-9)
    }

    /// `end - start`, bucket by bucket. A counter that went backwards (kubelet restart) or a
    /// changed layout makes the window "since the reset": the end histogram alone.
    pub fn window(start: &Histogram, end: &Histogram) -> WindowDelta {
        let decreased = end.count < start.count
            || !start.same_layout(end)
            || start
                .buckets
                .iter()
                .zip(&end.buckets)
                .any(|(a, b)| b.cumulative < a.cumulative);
        if decreased {
            return WindowDelta {
                histogram: end.clone(),
                reset: true,
            };
        }
        WindowDelta {
            histogram: Histogram {
                labels: end.labels.clone(),
                buckets: start
                    .buckets
                    .iter()
                    .zip(&end.buckets)
                    .map(|(a, b)| Bucket {
                        le: b.le,
                        cumulative: b.cumulative - a.cumulative,
                    })
                    .collect(),
                count: end.count - start.count,
                sum: end.sum - start.sum,
            },
            reset: false,
        }
    }

    /// Sum histograms with the same layout (e.g. all `verb`/`host` series of the rest client).
    /// Series with a different layout than the first are left out.
    pub fn merge<'a>(histograms: impl IntoIterator<Item = &'a Histogram>) -> Option<Histogram> {
        let mut iter = histograms.into_iter();
        let mut total = iter.next()?.clone();
        total.labels.clear();
        for histogram in iter {
            if !total.same_layout(histogram) {
                continue;
            }
            for (sum, add) in total.buckets.iter_mut().zip(&histogram.buckets) {
                sum.cumulative += add.cumulative;
            }
            total.count += histogram.count;
            total.sum += histogram.sum;
        }
        Some(total)
    }
}

/// Counter delta over the window: `end - start`, or `end` alone when the counter reset.
pub fn counter_delta(start: f64, end: f64) -> f64 {
    if end < start { end } else { end - start }
}

/// Serialize `f64` so that `+Inf`, `-Inf` and `NaN` survive JSON (as those strings), which
/// plain serde_json would turn into `null`.
pub mod prom_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize finite values as numbers, others as Go's spelling.
    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if *value > 0.0 {
            serializer.serialize_str("+Inf")
        } else {
            serializer.serialize_str("-Inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(f64),
        Text(String),
    }

    /// Accept a number or one of `+Inf`, `-Inf`, `NaN`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(n) => Ok(n),
            NumberOrText::Text(text) => super::parse_go_float(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("not a number: {text}"))),
        }
    }
}

/// One counter or gauge series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    /// Labels.
    pub labels: Labels,
    /// Value (`+Inf` survives JSON as a string).
    #[serde(with = "prom_f64")]
    pub value: f64,
}

/// The metric families the checks read. Everything else in `/metrics` stays in the raw capture.
pub const SCALAR_FAMILIES: &[&str] = &[
    "kubelet_pleg_last_seen_seconds",
    "kubelet_pleg_discard_events",
    "kubelet_runtime_operations_total",
    "kubelet_runtime_operations_errors_total",
    "kubelet_certificate_manager_client_ttl_seconds",
    "kubelet_certificate_manager_client_expiration_renew_errors",
    "kubelet_certificate_manager_server_ttl_seconds",
    "kubelet_server_expiration_renew_errors",
    "rest_client_requests_total",
    "go_goroutines",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "kubelet_running_pods",
    "kubelet_running_containers",
];

/// Histogram families the checks read.
pub const HISTOGRAM_FAMILIES: &[&str] = &[
    "kubelet_pleg_relist_duration_seconds",
    "kubelet_pleg_relist_interval_seconds",
    "kubelet_runtime_operations_duration_seconds",
    "rest_client_request_duration_seconds",
];

/// One `/metrics` scrape, reduced to the families the checks use.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// When the answer arrived (local clock).
    pub scraped_at: Option<Timestamp>,
    /// Size of the text.
    pub bytes: usize,
    /// Lines that did not parse.
    pub malformed_lines: usize,
    /// The first few of them.
    pub malformed_examples: Vec<String>,
    /// Counter and gauge families by name; absent when the kubelet does not export it.
    pub scalars: BTreeMap<String, Vec<Series>>,
    /// Histogram families by name.
    pub histograms: BTreeMap<String, Vec<Histogram>>,
}

impl MetricsSnapshot {
    /// Reduce a parsed scrape to the families in [`SCALAR_FAMILIES`] and [`HISTOGRAM_FAMILIES`].
    pub fn from_scrape(scrape: &Scrape, bytes: usize, scraped_at: Timestamp) -> Self {
        let mut scalars = BTreeMap::new();
        for &name in SCALAR_FAMILIES {
            // Counters may be exposed with or without `_total` depending on the client version.
            let series: Vec<Series> = scrape
                .series(name)
                .map(|s| Series {
                    labels: s.labels.clone(),
                    value: s.value,
                })
                .collect();
            if !series.is_empty() {
                scalars.insert(name.to_string(), series);
            }
        }
        let mut histograms = BTreeMap::new();
        for &name in HISTOGRAM_FAMILIES {
            if matches!(
                scrape.types.get(name),
                Some(MetricType::Counter | MetricType::Gauge)
            ) {
                continue;
            }
            let found = scrape.histograms(name);
            if !found.is_empty() {
                histograms.insert(name.to_string(), found);
            }
        }
        MetricsSnapshot {
            scraped_at: Some(scraped_at),
            bytes,
            malformed_lines: scrape.malformed_count,
            malformed_examples: scrape.malformed.clone(),
            scalars,
            histograms,
        }
    }

    /// The value of an unlabelled gauge (first series).
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars.get(name)?.first().map(|s| s.value)
    }

    /// Sum of the series of `name` whose labels pass `filter`; `None` if the family is absent.
    pub fn sum_where(&self, name: &str, filter: impl Fn(&Labels) -> bool) -> Option<f64> {
        let series = self.scalars.get(name)?;
        // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0".
        Some(
            series
                .iter()
                .filter(|s| filter(&s.labels))
                .map(|s| s.value)
                .sum::<f64>()
                + 0.0,
        )
    }

    /// Histograms of `name` whose labels pass `filter`, merged.
    pub fn histogram_where(
        &self,
        name: &str,
        filter: impl Fn(&Labels) -> bool,
    ) -> Option<Histogram> {
        let series = self.histograms.get(name)?;
        Histogram::merge(series.iter().filter(|h| filter(&h.labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLEG: &str = r#"
# HELP kubelet_pleg_relist_duration_seconds [ALPHA] Duration in seconds for relisting pods in PLEG.
# TYPE kubelet_pleg_relist_duration_seconds histogram
kubelet_pleg_relist_duration_seconds_bucket{le="0.005"} 0
kubelet_pleg_relist_duration_seconds_bucket{le="0.01"} 10
kubelet_pleg_relist_duration_seconds_bucket{le="0.025"} 80
kubelet_pleg_relist_duration_seconds_bucket{le="0.05"} 90
kubelet_pleg_relist_duration_seconds_bucket{le="0.1"} 95
kubelet_pleg_relist_duration_seconds_bucket{le="0.25"} 96
kubelet_pleg_relist_duration_seconds_bucket{le="0.5"} 97
kubelet_pleg_relist_duration_seconds_bucket{le="1"} 98
kubelet_pleg_relist_duration_seconds_bucket{le="2.5"} 98
kubelet_pleg_relist_duration_seconds_bucket{le="5"} 98
kubelet_pleg_relist_duration_seconds_bucket{le="10"} 98
kubelet_pleg_relist_duration_seconds_bucket{le="+Inf"} 100
kubelet_pleg_relist_duration_seconds_sum 123.5
kubelet_pleg_relist_duration_seconds_count 100
"#;

    #[test]
    fn parses_escaped_labels_with_commas_and_equals() {
        let scrape = parse(
            r#"rest_client_requests_total{code="200",host="https://10.0.0.1:6443,x=y",method="GET",path="C:\\dir\\\"f\"\n"} 42"#,
        );
        assert_eq!(scrape.malformed_count, 0, "{:?}", scrape.malformed);
        let sample = &scrape.samples[0];
        assert_eq!(sample.labels["host"], "https://10.0.0.1:6443,x=y");
        assert_eq!(sample.labels["path"], "C:\\dir\\\"f\"\n");
        assert_eq!(sample.labels["code"], "200");
        assert_eq!(sample.value, 42.0);
    }

    /// Found by the prom_text fuzz target: a `le="NaN"` bucket among others made the sort panic
    /// ("user-provided comparison function does not correctly implement a total order").
    #[test]
    fn a_nan_bucket_bound_is_skipped_not_a_panic() {
        let mut text = String::from("# TYPE h histogram\n");
        for (i, le) in ["NaN", "0.1", "NaN", "0.5", "NaN", "1", "NaN", "0.25"]
            .iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            text.push_str(&format!("h_bucket{{le=\"{le}\"}} {i}\n"));
        }
        text.push_str("h_bucket{le=\"+Inf\"} 50\n");
        let histograms = parse(&text).histograms("h");
        assert_eq!(histograms.len(), 1);
        assert_eq!(histograms[0].buckets.len(), 20);
        for h in &histograms {
            assert!(h.buckets.iter().all(|b| !b.le.is_nan()));
            assert!(h.buckets.windows(2).all(|w| w[0].le <= w[1].le));
        }
    }

    #[test]
    fn parses_go_floats_timestamps_and_trailing_comma() {
        let scrape = parse(
            "a +Inf\nb -Inf 1700000000000\nc NaN\nd 1.5e3\ne{x=\"1\",} 7\nkubelet_certificate_manager_client_ttl_seconds +Inf\n",
        );
        assert_eq!(scrape.malformed_count, 0, "{:?}", scrape.malformed);
        let values: Vec<f64> = scrape.samples.iter().map(|s| s.value).collect();
        assert_eq!(values[0], f64::INFINITY);
        assert_eq!(values[1], f64::NEG_INFINITY);
        assert!(values[2].is_nan());
        assert_eq!(values[3], 1500.0);
        assert_eq!(values[4], 7.0);
        assert_eq!(scrape.samples[4].labels["x"], "1");
    }

    #[test]
    fn counts_malformed_lines_and_keeps_the_rest() {
        let scrape = parse(
            "good 1\nbad{x=\"unterminated} 1\n9starts_with_digit 1\nnovalue\nword infinity\ngood2{a=\"b\"} 2 12 extra\nlast 3\n",
        );
        assert_eq!(scrape.samples.len(), 2);
        assert_eq!(scrape.malformed_count, 5);
        assert!(scrape.malformed[0].starts_with("line 2:"));
    }

    #[test]
    fn histogram_quantiles_are_bucket_intervals() {
        let scrape = parse(PLEG);
        let histograms = scrape.histograms("kubelet_pleg_relist_duration_seconds");
        assert_eq!(histograms.len(), 1);
        let h = &histograms[0];
        assert_eq!(h.count, 100.0);
        assert_eq!(h.buckets.len(), 11);
        let p50 = h.quantile(0.5).unwrap();
        assert_eq!((p50.lower, p50.upper), (0.01, 0.025));
        // 2 of 100 observations are in +Inf: p99 is above the top finite bucket.
        let p99 = h.quantile(0.99).unwrap();
        assert_eq!(p99.lower, 10.0);
        assert!(p99.upper.is_infinite());
        assert_eq!(p99.to_string(), "> 10 s");
        assert_eq!(h.fraction_above(10.0), Some(0.02));
        assert_eq!(h.count_above(1.0), Some(2.0));
        // 2 s is not a bucket bound: no answer rather than an invented one.
        assert_eq!(h.fraction_above(2.0), None);
        assert_eq!(h.mean(), Some(1.235));
    }

    #[test]
    fn window_delta_subtracts_and_detects_resets() {
        let start = parse(PLEG).histograms("kubelet_pleg_relist_duration_seconds")[0].clone();
        let mut end = start.clone();
        for bucket in &mut end.buckets {
            bucket.cumulative += 5.0;
        }
        end.count += 5.0;
        end.sum += 0.05;
        let delta = Histogram::window(&start, &end);
        assert!(!delta.reset);
        assert_eq!(delta.histogram.count, 5.0);
        assert_eq!(delta.histogram.buckets[0].cumulative, 5.0);

        // The kubelet restarted between the scrapes: counts went down.
        let mut restarted = start.clone();
        for bucket in &mut restarted.buckets {
            bucket.cumulative = 1.0;
        }
        restarted.count = 1.0;
        let delta = Histogram::window(&start, &restarted);
        assert!(delta.reset);
        assert_eq!(delta.histogram.count, 1.0);
    }

    #[test]
    fn empty_window_has_no_quantile() {
        let h = parse(PLEG).histograms("kubelet_pleg_relist_duration_seconds")[0].clone();
        let delta = Histogram::window(&h, &h);
        assert_eq!(delta.histogram.count, 0.0);
        assert_eq!(delta.histogram.quantile(0.5), None);
        assert_eq!(delta.histogram.fraction_above(1.0), None);
    }

    #[test]
    fn labelled_histograms_are_grouped_and_merged() {
        let text = r#"
# TYPE rest_client_request_duration_seconds histogram
rest_client_request_duration_seconds_bucket{host="h",verb="GET",le="4"} 9
rest_client_request_duration_seconds_bucket{host="h",verb="GET",le="8"} 10
rest_client_request_duration_seconds_bucket{host="h",verb="GET",le="+Inf"} 10
rest_client_request_duration_seconds_sum{host="h",verb="GET"} 20
rest_client_request_duration_seconds_count{host="h",verb="GET"} 10
rest_client_request_duration_seconds_bucket{host="h",verb="PUT",le="4"} 90
rest_client_request_duration_seconds_bucket{host="h",verb="PUT",le="8"} 90
rest_client_request_duration_seconds_bucket{host="h",verb="PUT",le="+Inf"} 90
rest_client_request_duration_seconds_sum{host="h",verb="PUT"} 9
rest_client_request_duration_seconds_count{host="h",verb="PUT"} 90
"#;
        let scrape = parse(text);
        let histograms = scrape.histograms("rest_client_request_duration_seconds");
        assert_eq!(histograms.len(), 2);
        assert_eq!(histograms[0].labels["verb"], "GET");
        let merged = Histogram::merge(&histograms).unwrap();
        assert_eq!(merged.count, 100.0);
        assert_eq!(merged.fraction_above(4.0), Some(0.01));
    }

    #[test]
    fn counter_delta_handles_resets() {
        assert_eq!(counter_delta(10.0, 15.0), 5.0);
        assert_eq!(counter_delta(10.0, 3.0), 3.0);
    }

    #[test]
    fn infinite_values_survive_json() {
        let h = Histogram {
            labels: Labels::new(),
            buckets: vec![],
            count: 0.0,
            sum: f64::INFINITY,
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("\"+Inf\""), "{json}");
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sum, f64::INFINITY);
    }
}
