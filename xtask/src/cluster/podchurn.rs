//! The `disk-slow` fault's workload: a steady stream of short-lived pods on the node, so that the
//! runtime writes its metadata and snapshots (bolt commits with fsync, overlay snapshots) on the
//! throttled device for as long as the fault is in place — and the kubelet's CRI calls that write
//! (RunPodSandbox, CreateContainer, StartContainer, Stop/Remove) wait on it.
//!
//! Round 1 used one crash-looping pod: its restart back-off grows towards five minutes, so
//! whether any container was created inside a 10 s window was luck (issue #23). Here a new pod is
//! created as soon as fewer than `--live` churn pods exist; finished ones are deleted at once.
//! The rate is then what the throttled disk allows, every second of the fault.

use std::{thread, time::Duration};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{Layout, api};

/// `xtask podchurn` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node the pods run on.
    #[arg(long)]
    pub node: String,
    /// How many churn pods may exist at once.
    #[arg(long, default_value_t = 2)]
    pub live: usize,
}

/// The label every churn pod carries (and `heal` deletes by).
pub const LABEL: &str = "nodehealth.local/fault=disk-slow";
/// At most this many churn pods exist at once, terminating ones included.
const MAX_PODS: usize = 8;
/// Churn pods' name prefix.
const PREFIX: &str = "nodehealth-fault-disk-slow-";
const PODS: &str = "/api/v1/namespaces/default/pods";

pub fn run(args: Args) -> Result<()> {
    let l = Layout::new();
    let mut serial: u64 = 0;
    loop {
        if let Err(e) = tick(&l, &args, &mut serial) {
            // The API server may be briefly away (another fault): keep the workload going.
            eprintln!("podchurn: {e:#}");
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The query that selects the churn pods on `node` (each node's churn is its own: the guest's and
/// the host's disk-slow may run at once).
pub fn selector(node: &str) -> String {
    format!(
        "labelSelector={}&fieldSelector=spec.nodeName%3D{node}",
        LABEL.replace('=', "%3D")
    )
}

/// One round: delete finished churn pods, top the live ones up to `--live`.
fn tick(l: &Layout, args: &Args, serial: &mut u64) -> Result<()> {
    let (code, body) = api::request(l, "GET", &format!("{PODS}?{}", selector(&args.node)), None)?;
    if code != 200 {
        bail!("listing churn pods: HTTP {code}");
    }
    let list: Value = serde_json::from_str(&body)?;
    // Pods being deleted wait for the kubelet to stop and remove their sandbox on the slow disk:
    // they do not hold back the next pods (that made whole 10 s windows without a single runtime
    // write), but a bound on everything that exists keeps a stalled node from piling them up.
    let (mut live, mut terminating) = (0, 0);
    for pod in list["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
        if deleting {
            terminating += 1;
        } else if matches!(phase, "Succeeded" | "Failed") {
            api::request(
                l,
                "DELETE",
                &format!("{PODS}/{name}?gracePeriodSeconds=0"),
                None,
            )?;
            terminating += 1;
        } else {
            live += 1;
        }
    }
    while live < args.live && live + terminating < MAX_PODS {
        *serial += 1;
        let name = format!("{PREFIX}{}-{}", std::process::id(), serial);
        let (code, body) = api::request(l, "POST", PODS, Some(&pod(&name, &args.node)))?;
        if code != 201 {
            bail!("creating {name}: HTTP {code}: {body}");
        }
        live += 1;
    }
    Ok(())
}

/// A hostNetwork pod whose container exits at once and is not restarted: a sandbox and a
/// container created, started, stopped and removed through the runtime.
fn pod(name: &str, node: &str) -> Value {
    let (key, value) = LABEL.split_once('=').expect("label");
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {key: value}},
        "spec": {
            "nodeName": node, "hostNetwork": true, "restartPolicy": "Never",
            "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "churn", "image": super::BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "true"],
            }],
        },
    })
}
