//! The kubelet's `/metrics` text as the plugin parses it (`metrics::parse`), and the histogram
//! arithmetic the checks then run on what was parsed: any text parses without a panic, and every
//! line is either a sample, a comment or a counted malformed line.
#![no_main]

use kubectl_nodehealth::metrics::{self, Histogram, MetricType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The plugin reads the answer as UTF-8 text (the node proxy's body, lossily decoded).
    let text = String::from_utf8_lossy(data);
    let scrape = metrics::parse(&text);
    assert!(scrape.samples.len() + scrape.malformed_count <= text.lines().count());
    for word in text.split_whitespace().take(64) {
        let _ = metrics::parse_go_float(word);
    }
    for (name, kind) in &scrape.types {
        if *kind != MetricType::Histogram {
            continue;
        }
        let histograms = scrape.histograms(name);
        for h in &histograms {
            let _ = h.mean();
            for q in [0.5, 0.9, 0.99, 1.0] {
                if let Some(bucket) = h.quantile(q) {
                    let _ = bucket.to_string();
                }
            }
            for b in &h.buckets {
                let _ = h.fraction_above(b.le);
                let _ = metrics::fmt_seconds(b.le);
            }
            let _ = Histogram::window(h, h);
        }
        let _ = Histogram::merge(&histograms);
    }
});
