//! The flight recorder on the real local cluster: `kubectl nodehealth recorder install` runs
//! `tracer-user record` on the node as a DaemonSet, which writes the node's NodeRecorderReport to
//! the API server itself. With it, faults that keep every probe pod from starting are diagnosed
//! by `kubectl nodehealth <node>` alone — no SSH, no `--node-evidence` — to the same top cause as
//! the agent run on the node by hand; a recorder cannot write another node's report (the
//! admission policy, asserted); its writes that failed during a partition are said once the path
//! is back; uninstall leaves nothing.

use std::time::{Duration, Instant};

use nodehealth_e2e::{
    Cluster, Healer, json_of, plugin, run_agent_standalone, run_plugin,
    run_plugin_with_node_evidence, wait_until,
};
use serde_json::{Value, json};

const NS: &str = "kube-system";
const REPORTS: &str = "/apis/nodehealth.io/v1alpha1/noderecorderreports";

fn admin(c: &Cluster, args: &[&str]) -> std::process::Output {
    let kubeconfig = c.admin_kubeconfig();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    plugin(&all)
}

/// The node's report as the API server has it (None before the first write).
fn report(c: &Cluster) -> Option<Value> {
    let (code, body) = c.request("GET", &format!("{REPORTS}/{}", c.node), None);
    (code == 200).then(|| serde_json::from_str(&body).expect("report JSON"))
}

/// Waits until the node's report was written after `after` (node clock, ms) and `ok` holds for
/// its status; returns the status.
fn report_where(c: &Cluster, what: &str, after: i64, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, Duration::from_secs(90), || {
        let s = report(c)?["status"].clone();
        (s["recordedAtUnixMs"].as_i64()? > after && ok(&s)).then_some(s)
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The recorder's pod on the node: (name, uid).
fn recorder_pod(c: &Cluster) -> (String, String) {
    let pods = c.get_json(&format!(
        "/api/v1/namespaces/{NS}/pods?labelSelector=app.kubernetes.io%2Fname%3Dnodehealth-recorder"
    ));
    let pod = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["spec"]["nodeName"] == c.node.as_str())
        .cloned()
        .expect("a recorder pod on the node");
    (
        pod["metadata"]["name"].as_str().unwrap().into(),
        pod["metadata"]["uid"].as_str().unwrap().into(),
    )
}

/// A token of the recorder's service account, bound to its pod on the node (what the kubelet
/// mounts into it), or bound to nothing.
fn recorder_token(c: &Cluster, bound_to_pod: bool) -> String {
    let mut spec = json!({ "expirationSeconds": 600 });
    if bound_to_pod {
        let (name, uid) = recorder_pod(c);
        spec["boundObjectRef"] =
            json!({ "apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid });
    }
    let (code, body) = c.request(
        "POST",
        &format!("/api/v1/namespaces/{NS}/serviceaccounts/nodehealth-recorder/token"),
        Some(&json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec })),
    );
    assert_eq!(code, 201, "TokenRequest: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["status"]["token"].as_str().unwrap().to_string()
}

/// The plugin as an operator runs it (the probe pod tried, bounded), and the agent's evidence
/// taken by hand on the node with the plugin judging it (`--node-evidence`): both reports.
fn diagnose_both_ways(c: &Cluster) -> (Value, Value) {
    let (out, took) = run_plugin(
        c,
        &["--duration", "3s", "--pod-timeout", "20s", "-o", "json"],
    );
    let with_recorder = json_of(&out);
    eprintln!(
        "plugin alone: exit {:?} in {:.1} s, layers {}, top {}",
        out.status.code(),
        took.as_secs_f64(),
        with_recorder["evidence"]["layers"],
        with_recorder["verdict"]["causes"][0]["id"]
    );
    let agent = run_agent_standalone(&["--duration", "3s"]);
    let (out, _) = run_plugin_with_node_evidence(c, &agent, "3s");
    (with_recorder, json_of(&out))
}

/// The report's finding with this id.
fn finding(report: &Value, id: &str) -> Option<Value> {
    report["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
}

fn top(report: &Value) -> String {
    report["verdict"]["causes"][0]["id"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

/// One fault: the recorder notices (`noticed` holds for a report written after the fault, with a
/// probe taken after it), the plugin alone uses its evidence (layer `recorder`), and names the same
/// top cause as the agent run by hand.
fn judged_through_the_recorder(c: &Cluster, fault: &str, noticed: impl Fn(&Value) -> bool) {
    let healer = Healer(c);
    let before = now_ms();
    c.xtask(&["fault", fault]);
    let s = report_where(
        c,
        &format!("the recorder's report of {fault}"),
        before,
        |s| noticed(s) && s["evidence"]["startedAtUnixMs"].as_i64() > Some(before),
    );
    eprintln!(
        "{fault}: recorded now {} ({}), {} span(s)",
        s["now"],
        s["evidenceReason"],
        s["timeline"].as_array().map_or(0, Vec::len)
    );
    let (with_recorder, by_hand) = diagnose_both_ways(c);
    let layers = with_recorder["evidence"]["layers"].to_string();
    assert!(
        layers.contains("recorder"),
        "{fault}: the node-side half came from the recorder: {layers}\n{:#}",
        with_recorder["evidence"]["nodeProbe"]
    );
    assert!(
        with_recorder["evidence"]["nodeProbe"]["data"]["pod"]
            .as_str()
            .unwrap_or("")
            .starts_with("recorder: noderecorderreports/"),
        "{:#}",
        with_recorder["evidence"]["nodeProbe"]
    );
    assert_eq!(
        top(&with_recorder),
        top(&by_hand),
        "{fault}: the recorder's evidence gives the same top cause as the agent by hand:\n{:#}\n{:#}",
        with_recorder["verdict"],
        by_hand["verdict"]
    );
    let timeline =
        finding(&with_recorder, "recorder-timeline").expect("the recorder's timeline is a finding");
    eprintln!(
        "{fault}: top {} (by hand {}); {}",
        top(&with_recorder),
        top(&by_hand),
        timeline["summary"]
    );
    drop(healer);
}

/// `recorder install`; returns once the node's first report (a running kubelet) is in.
fn install(c: &Cluster) {
    let started = Instant::now();
    let out = admin(c, &["recorder", "install", "--image-pull-policy", "Never"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = report_where(c, "the first report", 0, |s| {
        s["now"]["kubelet"] == "running"
    });
    eprintln!(
        "installed; first report after {:.1} s: now {}, {} bytes",
        started.elapsed().as_secs_f64(),
        s["now"],
        s.to_string().len()
    );
    assert_eq!(s["node"], c.node.as_str());
    assert!(
        s["evidence"]["processes"].is_object(),
        "it carries node evidence"
    );
}

/// `recorder uninstall`, and nothing of it left: its pods, the CRD (with every report), the
/// service account, RBAC, the admission policy and binding, the DaemonSet.
fn uninstall(c: &Cluster) {
    let out = admin(c, &["recorder", "uninstall"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the recorder's pods gone", Duration::from_secs(90), || {
        let pods = c.get_json(&format!(
            "/api/v1/namespaces/{NS}/pods?labelSelector=app.kubernetes.io%2Fname%3Dnodehealth-recorder"
        ));
        pods["items"].as_array().unwrap().is_empty().then_some(())
    });
    for path in [
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/noderecorderreports.nodehealth.io"
            .to_string(),
        format!("/api/v1/namespaces/{NS}/serviceaccounts/nodehealth-recorder"),
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/nodehealth-recorder".into(),
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/nodehealth-recorder".into(),
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/nodehealth-recorder-own-node"
            .into(),
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/nodehealth-recorder-own-node"
            .into(),
        format!("/apis/apps/v1/namespaces/{NS}/daemonsets/nodehealth-recorder"),
    ] {
        wait_until(&format!("{path} gone"), Duration::from_secs(60), || {
            (c.request("GET", &path, None).0 == 404).then_some(())
        });
    }
    eprintln!("uninstalled: nothing left");
}

/// Installed, held to its own node by the cluster, and two faults that keep every pod from
/// starting — a stopped kubelet, a frozen runtime — judged with no SSH; then uninstalled.
#[test]
fn the_recorder_reports_its_node_through_the_api_server_when_no_pod_can_start() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    install(&c);
    // Its status: the DaemonSet's rollout (once the controller has counted the pod) and the
    // node's report; exit 0 when every recorder runs and no report is stale.
    let text = wait_until(
        "recorder status: all ready",
        Duration::from_secs(60),
        || {
            let out = admin(&c, &["recorder", "status"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.code() == Some(0)).then_some(text)
        },
    );
    assert!(
        text.contains("1 of 1 ready") && text.contains(&c.node),
        "{text}"
    );
    eprintln!("{text}");

    // Held to its own node, in the cluster: its own pod-bound token may write its node's report
    // and nothing else; a token without a node claim may write none.
    let bound = recorder_token(&c, true);
    let other = json!({
        "apiVersion": "nodehealth.io/v1alpha1", "kind": "NodeRecorderReport",
        "metadata": { "name": "some-other-node" }, "spec": { "nodeName": "some-other-node" },
    });
    let (code, body) = c.request_as(
        Some(&bound),
        "POST",
        REPORTS,
        Some(&other),
        "application/json",
    );
    assert_eq!(code, 403, "another node's report: {body}");
    assert!(
        body.contains(&format!(
            "a recorder on node {} may write only its own node",
            c.node
        )),
        "{body}"
    );
    let own = json!({
        "apiVersion": "nodehealth.io/v1alpha1", "kind": "NodeRecorderReport",
        "metadata": { "name": c.node }, "spec": { "nodeName": c.node },
    });
    let apply = format!("{REPORTS}/{}?fieldManager=e2e-check", c.node);
    let (code, body) = c.request_as(
        Some(&bound),
        "PATCH",
        &apply,
        Some(&own),
        "application/apply-patch+yaml",
    );
    assert_eq!(code, 200, "its own node's report: {body}");
    let unbound = recorder_token(&c, false);
    let (code, body) = c.request_as(
        Some(&unbound),
        "POST",
        REPORTS,
        Some(&other),
        "application/json",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("carries no node claim"), "{body}");
    eprintln!("admission: another node's report refused, its own accepted, no claim refused");

    // The PLEG history: the recorder scrapes the kubelet's /metrics on the node (its token,
    // `get nodes/metrics`, the kubelet's certificate verified against the cluster CA) and
    // publishes its ticks; `pleg --recorded` shows them. Quiet first, then relists held 1.5 s by
    // the runtime's list calls.
    let s = report_where(&c, "PLEG ticks in the report", 0, |s| {
        s["pleg"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(s["plegError"].is_null(), "{}", s["plegError"]);
    let out = admin(&c, &["pleg", &c.node, "--recorded"]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "a quiet PLEG: {text}");
    assert!(
        text.contains("PLEG history of") && text.contains(" ok "),
        "{text}"
    );
    let healer = Healer(&c);
    let before = now_ms();
    c.xtask(&["fault", "runtime-slow-list", "--delay", "1500ms"]);
    // The fault restarts the kubelet (pointed at the proxy): the tick across the restart mixes
    // the last fast calls with the first held ones; the ticks after it are the held calls alone.
    let held = |t: &Value| {
        t["state"] == "slow"
            && t["restarted"] == false
            && t["runtimeListMeanSeconds"].as_f64().unwrap_or(0.0) >= 1.0
    };
    let s = report_where(
        &c,
        "a slow PLEG tick, list calls held, in the report",
        before,
        |s| s["pleg"].as_array().is_some_and(|a| a.iter().any(held)),
    );
    let slow: Vec<&Value> = s["pleg"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "slow")
        .collect();
    eprintln!("slow ticks: {}", json!(slow));
    // Two list calls held 1.5 s each make a relist of about 3 s.
    assert!(
        slow.iter()
            .all(|t| t["relistMeanSeconds"].as_f64().unwrap_or(0.0) >= 1.0),
        "{slow:?}"
    );
    assert!(
        slow.iter().filter(|t| held(t)).all(|t| {
            let bucket = &t["relistSlowest"]["upper"];
            bucket.as_f64().unwrap_or(f64::INFINITY) >= 2.5
        }),
        "the slowest relist's bucket holds about 3 s: {slow:?}"
    );
    let out = admin(&c, &["pleg", &c.node, "--recorded", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "a slow PLEG is a problem");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(lines.iter().any(|t| t["state"] == "slow"), "{lines:?}");
    // A diagnosis carries the recorded PLEG in the recorder's finding.
    let (out, _) = run_plugin(&c, &["--api-only", "--duration", "2s", "-o", "json"]);
    let r = json_of(&out);
    let timeline = finding(&r, "recorder-timeline").expect("the recorder's finding");
    let said = timeline.to_string();
    assert!(
        said.contains("its PLEG was slow in the recorded minutes")
            && said.contains("PLEG (recorded)"),
        "{timeline:#}"
    );
    drop(healer);
    c.wait_ready("True", Duration::from_secs(120));

    // Faults that keep every pod from starting, judged without SSH.
    judged_through_the_recorder(&c, "kubelet-stopped", |s| s["now"]["kubelet"] == "absent");
    judged_through_the_recorder(&c, "runtime-frozen", |s| {
        s["now"]["runtime"] == "frozen"
            && matches!(s["now"]["cri"].as_str(), Some("hung" | "error"))
    });

    uninstall(&c);
    // And a diagnosis without it says nothing of a recorder.
    let (out, _) = run_plugin(&c, &["--api-only", "--duration", "2s", "-o", "json"]);
    let r = json_of(&out);
    assert_eq!(
        r["evidence"]["recorder"]["outcome"], "skipped",
        "{:#}",
        r["evidence"]["recorder"]
    );
}

/// The recorder's container log, read on the node (the test runs there): through the API server
/// it would need the kubelet to authorize the request with the API server, which the partition
/// cuts.
fn recorder_log(c: &Cluster) -> String {
    let mut text = String::new();
    for dir in std::fs::read_dir(c.dir.join("pod-logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = dir.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{NS}_nodehealth-recorder-")) {
            continue;
        }
        for log in std::fs::read_dir(dir.path().join("recorder"))
            .into_iter()
            .flatten()
            .flatten()
        {
            text.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
        }
    }
    text
}

/// The other faults it must survive: a frozen kubelet, an OOM-looping kubelet (both judged
/// through it), and a partition of the node's path to the API server — its writes fail, it says
/// so in its log, and its first report after the heal carries the outage and the timeline across
/// it.
#[test]
#[ignore = "long tier (cargo xtask test --long): three more faults through the recorder (minutes)"]
fn the_recorder_survives_a_frozen_or_oom_looping_kubelet_and_reports_a_partition_after_it() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    install(&c);
    judged_through_the_recorder(&c, "kubelet-frozen", |s| s["now"]["kubelet"] == "frozen");
    judged_through_the_recorder(&c, "kubelet-memory-limited", |s| {
        s["timeline"].as_array().is_some_and(|t| {
            t.iter()
                .any(|seg| seg["kubeletOomKills"].as_u64() > Some(0))
        })
    });

    // The recorder has published the healed node (the OOM loop's last report said the kubelet
    // absent: a silence after that says nothing of a healthy kubelet).
    let healed = now_ms();
    report_where(&c, "a report of the healed node", healed, |s| {
        s["now"]["kubelet"] == "running" && s["now"]["healthz"] == "ok"
    });
    let healer = Healer(&c);
    let before = now_ms();
    c.xtask(&["fault", "api-partition"]);
    wait_until(
        "the recorder's log says a write failed",
        Duration::from_secs(120),
        || recorder_log(&c).contains("write failed").then_some(()),
    );
    let failed_by = now_ms();
    // While it lasts: the recorder fell silent with the kubelet, having last seen it healthy —
    // the verdict ranks the partition above a dead kubelet on that (once the report is past its
    // heartbeat's reach and the lease is stale: a bounded wait on the verdict itself).
    let r = wait_until(
        "the verdict reads the silent recorder as a partition",
        Duration::from_secs(240),
        || {
            let (out, _) = run_plugin(&c, &["--api-only", "--duration", "2s", "-o", "json"]);
            let r = json_of(&out);
            let ranked: Vec<String> = r["verdict"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{} {}", c["id"], c["score"]))
                .collect();
            let rec = &r["evidence"]["recorder"]["data"];
            let lease = finding(&r, "lease-age")
                .map(|f| f["summary"].to_string())
                .unwrap_or_default();
            eprintln!(
                "during the cut: report {} s old, its last sample {}; {lease}; causes {ranked:?}",
                rec["ageSeconds"], rec["report"]["now"]
            );
            let partition = r["verdict"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["id"] == "api-partition")?;
            partition["evidence"]
                .to_string()
                .contains("fell silent with the kubelet")
                .then_some(r)
        },
    );
    let causes = r["verdict"]["causes"].as_array().unwrap();
    let rank = |id: &str| causes.iter().position(|c| c["id"] == id);
    assert!(
        rank("kubelet-down").is_none_or(|d| Some(d) > rank("api-partition")),
        "the partition above a dead kubelet: {causes:#?}"
    );
    assert!(
        !r["verdict"]
            .to_string()
            .contains("systemctl restart kubelet"),
        "no kubelet restart during a partition: {:#}",
        r["verdict"]
    );
    drop(healer);
    let s = report_where(&c, "the first report after the partition", failed_by, |s| {
        s["publisher"]["lastOutage"]["toUnixMs"].as_i64() > Some(failed_by)
    });
    let outage = &s["publisher"]["lastOutage"];
    eprintln!("api-partition: after the heal the report says {outage}");
    assert!(outage["failedWrites"].as_u64() >= Some(1), "{outage}");
    assert!(outage["fromUnixMs"].as_i64() <= Some(failed_by), "{outage}");
    let first = s["timeline"][0]["fromUnixMs"].as_i64().unwrap();
    assert!(
        first < before,
        "the timeline it publishes covers the partition (the ring is its backlog): from {first}"
    );
    let (out, _) = run_plugin(&c, &["--api-only", "--duration", "2s", "-o", "json"]);
    let r = json_of(&out);
    let said = finding(&r, "recorder-writes-failed");
    assert!(said.is_some(), "{:#}", r["findings"]);
    eprintln!("api-partition: {}", said.unwrap()["summary"]);
    c.wait_ready("True", Duration::from_secs(120));
    uninstall(&c);
}
