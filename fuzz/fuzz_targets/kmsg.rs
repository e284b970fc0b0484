//! The kernel log as the agent reads it: a `/dev/kmsg` record (`kmsg::parse_record`, one read(2),
//! continuation lines included) and syslog(2)'s lines (`kmsg::parse_syslog_line`), each then
//! classified into OOM kills, hung tasks and I/O errors (`kmsg::classify`).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tracer_user::kmsg;

/// A boot time on the node's clock (2026-12-06), Unix milliseconds.
const BOOT_UNIX_MS: i64 = 1_796_515_200_000;

fuzz_target!(|data: &[u8]| {
    // Both readers decode the kernel's bytes lossily.
    let text = String::from_utf8_lossy(data);
    let subjects = BTreeMap::from([
        ("kubelet".to_string(), "kubelet".to_string()),
        ("containerd".to_string(), "runtime".to_string()),
    ]);
    if let Some(record) = kmsg::parse_record(&text) {
        assert!(record.priority < 8);
        let _ = kmsg::classify(&record, BOOT_UNIX_MS, &subjects);
    }
    for (seq, line) in text.lines().enumerate() {
        if let Some(record) = kmsg::parse_syslog_line(line, seq as u64) {
            assert!(record.priority < 8);
            let _ = kmsg::classify(&record, BOOT_UNIX_MS, &subjects);
        }
    }
});
