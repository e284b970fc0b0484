//! The HPACK header blocks of the kubelet's CRI calls as the tracer keeps them
//! (`hpack::Connection::request_path`): one connection's blocks in the order they were sent, any
//! bytes, cut or whole.
//!
//! Input: frames of `[length - 1][flags][block]` (a block is at most 256 bytes, the eBPF
//! program's `CRI_HDR_BYTES`); bit 0 of `flags` says the block was captured whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::hpack::Connection;

fuzz_target!(|data: &[u8]| {
    let mut connection = Connection::default();
    let mut rest = data;
    while let [len, flags, tail @ ..] = rest {
        let (block, next) = tail.split_at((*len as usize + 1).min(tail.len()));
        let _ = connection.request_path(block, flags & 1 == 1);
        rest = next;
    }
});
