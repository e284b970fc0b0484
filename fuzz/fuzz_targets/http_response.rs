//! The agent's HTTP/1.1 response reader for health endpoints (`http::parse`): the kubelet's
//! `/healthz` answer or anything a port answers with, at most 16 KiB of it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(response) = tracer_user::http::parse(data) {
        // The body is kept to its first 256 bytes (each at most a 3-byte U+FFFD when not UTF-8).
        assert!(response.body.len() <= 256 * 3);
    }
});
