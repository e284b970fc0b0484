//! The kubelet's and the runtime's log lines (klog, logrus, CRI-O, journal prefixes) as both the
//! plugin and the agent digest them (`nodehealth_proto::logs`): each line's time
//! (`line_time`), its catalogue entry (`classify`), and the digest of the whole log (`digest`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodehealth_proto::logs::{self, Component, EXAMPLE_CHARS};

/// The reader's clock (2026-12-06T12:00:00Z), Unix milliseconds: klog headers take their year
/// from it.
const NOW_UNIX_MS: i64 = 1_796_558_400_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = logs::line_time(line, NOW_UNIX_MS);
    }
    for component in [Component::Kubelet, Component::Runtime] {
        let since = Some(NOW_UNIX_MS - 15 * 60 * 1000);
        let lines = text.lines().map(|l| (None, l));
        let digest = logs::digest(component, "fuzz", lines, since, NOW_UNIX_MS);
        assert!(digest.lines_scanned as usize <= text.lines().count());
        for m in &digest.matches {
            assert!(m.count > 0);
            // At most EXAMPLE_CHARS characters and the ellipsis.
            assert!(m.example.chars().count() <= EXAMPLE_CHARS + 1);
        }
    }
});
