//! Round 1's bundles replayed through this build (`--from-bundle`): bundles written by the plugin
//! as it was at the end of round 1 (commit de1c9b2) on the local cluster under faults, with what
//! that build answered. Each must still give its cause — or the one the verdict rules now give
//! instead, with the reason written next to it (`fixtures/bundles/round1/expected.json`, README).
//! And no fix may restart the kubelet where the truth forbids it.

use std::path::PathBuf;

use kubectl_nodehealth::bundle;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    bundle: String,
    fault: String,
    /// What round 1's build answered (its top cause).
    round1_top: String,
    /// The top causes this build may give.
    expected_top: Vec<String>,
    /// The truth forbids restarting the kubelet.
    no_kubelet_restart: bool,
    /// Why the expected answer is right (when it differs from round 1's).
    why: String,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/round1")
}

#[test]
fn round_one_bundles_replay_to_their_causes() {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap())
            .unwrap();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let (_, report) = bundle::replay(&dir().join(&case.bundle))
            .unwrap_or_else(|e| panic!("{}: {e}", case.bundle));
        let top = report
            .verdict
            .causes
            .first()
            .map(|c| {
                serde_json::to_value(c.id)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_else(|| "none".into());
        eprintln!(
            "{} ({}): round 1 {}, now {top} — {}",
            case.bundle, case.fault, case.round1_top, case.why
        );
        if !case.expected_top.contains(&top) {
            failures.push(format!(
                "{}: top {top}, expected one of {:?}",
                case.bundle, case.expected_top
            ));
        }
        if case.no_kubelet_restart {
            for c in &report.verdict.causes {
                if c.fix.contains("systemctl restart kubelet") {
                    failures.push(format!(
                        "{}: {:?}'s fix restarts the kubelet",
                        case.bundle, c.id
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
