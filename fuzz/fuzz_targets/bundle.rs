//! `--from-bundle`: a tar.gz replayed through today's checks and verdict
//! (`bundle::replay_from`). A gzip bomb, an endless archive or an entry too large must be an error
//! in bounded memory (the run's `-rss_limit_mb` and `-timeout` make either a finding), and any
//! report.json that decodes is judged without a panic.
//!
//! Input: a gzip stream as is; anything else is taken as the tar and gzip'd here, so that
//! mutations reach the tar headers and the JSON rather than only break the deflate stream.
#![no_main]

use std::{io::Write, path::Path};

use kubectl_nodehealth::bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.tar.gz");
    if data.starts_with(&[0x1f, 0x8b]) {
        let _ = bundle::replay_from(data, name);
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("writing to memory");
        let gz = gz.finish().expect("writing to memory");
        let _ = bundle::replay_from(gz.as_slice(), name);
    }
});
