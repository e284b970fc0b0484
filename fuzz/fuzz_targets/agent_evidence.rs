//! The agent's answer as the plugin takes it in, and everything the plugin then does with it:
//! - the probe pod's gRPC stream: `RunEvent` messages (prost), each applied by `probe::receive`
//!   (evidence sections are JSON, decoded by `NodeEvidence::insert_section`);
//! - `--node-evidence FILE`: the standalone agent's whole `NodeEvidence` JSON (serde_json);
//!
//! then judged (`diagnose`) beside the API-side evidence of the healthy round-1 bundle, and
//! rendered as the wide table and as JSON.
//!
//! Input: the bytes are tried both ways — as JSON, and as length-delimited `RunEvent` messages
//! (the stream's messages one after another).
#![no_main]

use std::{path::Path, sync::OnceLock};

use kubectl_nodehealth::{
    bundle, diagnose,
    evidence::{Evidence, NodeProbe, Step},
    probe::{self, Received},
    render::{self, Format},
};
use libfuzzer_sys::fuzz_target;
use nodehealth_proto::{node::NodeEvidence, v1::RunEvent};
use prost::Message;

/// The API side of a healthy node (round 1's bundle), the node side replaced by the input.
fn api_side() -> &'static Evidence {
    static API: OnceLock<Evidence> = OnceLock::new();
    API.get_or_init(|| {
        let healthy =
            include_bytes!("../../kubectl-nodehealth/fixtures/bundles/round1/healthy.tar.gz");
        bundle::replay_from(&healthy[..], Path::new("healthy.tar.gz"))
            .expect("the healthy fixture bundle replays")
            .1
            .evidence
    })
}

fn judge(node: NodeEvidence, partial: bool) {
    let mut evidence = api_side().clone();
    evidence.node_probe = Step::Collected {
        data: NodeProbe {
            pod: "kube-system/fuzz".into(),
            pod_start_seconds: 1.0,
            connect_seconds: None,
            host_root_recursive_read_only: None,
            partial,
            stream_error: partial.then(|| "the stream ended early".into()),
            evidence: node,
        },
    };
    let report = diagnose(evidence);
    for format in [Format::Wide, Format::Json] {
        let _ = render::render(&report, format, false, Some(100));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = serde_json::from_slice::<NodeEvidence>(data) {
        judge(node, false);
    }
    let mut node = NodeEvidence::default();
    let (mut events, mut finished) = (0, false);
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(event) = RunEvent::decode_length_delimited(&mut rest) else {
            break;
        };
        events += 1;
        finished |= probe::receive(&mut node, event) == Received::Finished;
    }
    if events > 0 {
        judge(node, !finished);
    }
});
