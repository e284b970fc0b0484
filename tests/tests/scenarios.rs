//! The fault-scenario suite: every failure domain the harness can inject, met the way an operator
//! meets it — the fault is already there when the tool runs. For each: apply the fault, wait until
//! its symptom shows from the API side, run `kubectl nodehealth <node> -o json` and assert the top
//! cause and its key evidence (and which layers supplied it); where the probe pod cannot start, run
//! the agent standalone on the node (`tracer-user probe --host-root /`, the operator's SSH
//! fallback) and assert what it sees; heal and check that the node recovers.
//!
//! Where the probe pod cannot start, the plugin is run a second time with the agent's output
//! (`--node-evidence`): the API side and the node side together name the cause. Each run prints
//! one `SCENARIO` line (fault, layers, top cause, confidence, attribution, exit code, time): the
//! README's scenario table is made of them. The OOM restart loop runs last (tests run in name
//! order): its burst of "Starting kubelet." events stays in the API for minutes. The healthy
//! node's scenario is the first test of `cluster.rs`, before any fault has left its traces.

use std::{
    thread,
    time::{Duration, Instant},
};

use nodehealth_e2e::{
    Cluster, Healer, finding, json_of, kubelet_restarts_or_reboots, run_agent_standalone,
    run_plugin, run_plugin_with_node_evidence, wait_until,
};
use serde_json::Value;

/// The plugin's report on the node as it is now.
struct Diagnosis {
    report: Value,
    exit: Option<i32>,
    took: Duration,
}

impl Diagnosis {
    /// The plugin as an operator runs it first: API side and the probe pod (given 10 s).
    fn run(c: &Cluster, duration: &str) -> Diagnosis {
        let (out, took) = run_plugin(
            c,
            &["--duration", duration, "--pod-timeout", "10s", "-o", "json"],
        );
        Diagnosis {
            report: json_of(&out),
            exit: out.status.code(),
            took,
        }
    }

    /// The operator's second step when no pod started: the agent on the node (as over SSH),
    /// its evidence handed to the plugin.
    fn with_agent(c: &Cluster, duration: &str) -> (Diagnosis, Value) {
        let agent = run_agent_standalone(&["--duration", duration]);
        let (out, took) = run_plugin_with_node_evidence(c, &agent, duration);
        (
            Diagnosis {
                report: json_of(&out),
                exit: out.status.code(),
                took,
            },
            agent,
        )
    }

    /// The plugin from the API side only (`--api-only`).
    fn api_only(c: &Cluster, duration: &str) -> Diagnosis {
        Diagnosis::with_args(c, &["--api-only", "--duration", duration, "-o", "json"])
    }

    /// The plugin with the probe pod tracing the node (`--trace`).
    fn traced(c: &Cluster, duration: &str) -> Diagnosis {
        Diagnosis::with_args(c, &["--duration", duration, "--trace", "-o", "json"])
    }

    fn with_args(c: &Cluster, args: &[&str]) -> Diagnosis {
        let (out, took) = run_plugin(c, args);
        Diagnosis {
            report: json_of(&out),
            exit: out.status.code(),
            took,
        }
    }

    /// The advice contract: no cause's fix and no finding's remediation restarts the kubelet or
    /// reboots the node (asserted where a partition, a runtime outage or a certificate problem
    /// is the truth).
    fn expect_no_kubelet_restart(&self) {
        let offending = kubelet_restarts_or_reboots(&self.report);
        assert!(
            offending.is_empty(),
            "advice restarts the kubelet or reboots the node: {offending:#?}"
        );
    }

    /// The evidence of a cause (empty when it is not listed).
    fn evidence_of(&self, id: &str) -> String {
        self.causes()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["evidence"].to_string())
            .unwrap_or_default()
    }

    /// The agent on the node with its tracer, its evidence handed to the plugin.
    fn with_traced_agent(c: &Cluster, duration: &str) -> Diagnosis {
        let agent = run_agent_standalone(&["--duration", duration, "--trace"]);
        let (out, took) = run_plugin_with_node_evidence(c, &agent, duration);
        Diagnosis {
            report: json_of(&out),
            exit: out.status.code(),
            took,
        }
    }

    fn has(&self, id: &str) -> bool {
        self.causes().iter().any(|c| c["id"] == id)
    }

    fn causes(&self) -> &Vec<Value> {
        self.report["verdict"]["causes"]
            .as_array()
            .expect("verdict.causes")
    }

    fn top(&self) -> &Value {
        self.causes().first().expect("a cause")
    }

    fn top_id(&self) -> &str {
        self.top()["id"].as_str().unwrap_or("")
    }

    fn layers(&self) -> Vec<String> {
        self.report["verdict"]["layers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn evidence(&self) -> String {
        self.top()["evidence"].to_string()
    }

    /// Asserts that one of the known log messages `ids` (catalogue ids) was seen recently and
    /// supports the top cause (its `logs-<id>` line in the cause's evidence).
    fn expect_log_support(&self, ids: &[&str]) {
        let findings = self.report["findings"].as_array().expect("findings");
        let seen: Vec<&Value> = findings
            .iter()
            .filter(|f| {
                ids.iter().any(|id| f["id"] == format!("logs-{id}")) && f["severity"] == "warning"
            })
            .collect();
        assert!(
            !seen.is_empty(),
            "none of {ids:?} in the logs; log findings: {:#?}",
            findings
                .iter()
                .filter(|f| f["id"].as_str().is_some_and(|i| i.starts_with("logs-")))
                .collect::<Vec<_>>()
        );
        let evidence = self.evidence();
        assert!(
            seen.iter()
                .any(|f| evidence.contains(f["id"].as_str().unwrap_or("?"))),
            "the log findings {:?} do not support the top cause: {evidence}",
            seen.iter().map(|f| &f["id"]).collect::<Vec<_>>()
        );
    }

    /// Asserts the top cause, printing the whole verdict when it is another.
    fn expect_top(&self, id: &str) {
        assert_eq!(
            self.top_id(),
            id,
            "top cause; verdict {:#}",
            self.report["verdict"]
        );
        assert_eq!(self.exit, Some(1), "exit code with a problem found");
    }

    fn print(&self, fault: &str) {
        eprintln!(
            "SCENARIO {fault} | {} | {} ({}) | attribution {} | exit {:?} | {:.1} s",
            self.layers().join("+"),
            self.top_id(),
            self.top()["confidence"].as_str().unwrap_or("?"),
            self.top()["attribution"],
            self.exit,
            self.took.as_secs_f64()
        );
        // Why there is no node-side half, when the probe pod was tried and gave none: a failed
        // assertion on the verdict then says what the node side missed.
        let probe = &self.report["evidence"]["nodeProbe"];
        if probe["outcome"] == "failed" {
            eprintln!("  node probe failed: {}", probe["failure"]["message"]);
        }
    }
}

fn healed_and_ready(c: &Cluster, healer: Healer<'_>) {
    drop(healer);
    c.wait_ready("True", Duration::from_secs(120));
}

#[test]
fn api_partition_is_a_partition_and_says_not_to_restart_the_kubelet() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "api-partition"]);
    c.wait_ready("Unknown", Duration::from_secs(90));
    // API side: the kubelet neither reports nor answers — stuck or cut off, both on the table.
    let d = Diagnosis::run(&c, "3s");
    d.print("api-partition");
    assert!(d.has("api-partition"), "{:#}", d.report["verdict"]);
    // With the node side: the node cannot reach the API server.
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("api-partition");
    let api = &agent["apiServer"];
    assert!(api["healthz"]["status"].is_null(), "{api:#}");
    d.expect_top("api-partition");
    // The fix checks the API server at the address the agent read from the kubelet's kubeconfig.
    let server = api["server"]
        .as_str()
        .expect("the kubelet's API server address");
    let check = format!("curl -k {server}/healthz");
    assert!(
        d.top()["fix"].as_str().unwrap_or("").contains(&check),
        "{check}: {:#}",
        d.top()
    );
    // The kubelet's log, read on the node: its lease renewals fail on the network (how a request
    // fails depends on the connection's state when the path was cut: a handshake timeout, a
    // client timeout, a deadline).
    d.expect_log_support(&[
        "api-unreachable",
        "lease-update-failed",
        "node-status-failed",
    ]);
    assert!(
        d.top()["avoid"]
            .as_str()
            .unwrap_or("")
            .contains("do NOT restart the kubelet"),
        "{:#}",
        d.top()
    );
    healed_and_ready(&c, healer);
}

#[test]
fn kubelet_stopped_is_kubelet_down_and_the_agent_finds_no_kubelet() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "kubelet-stopped"]);
    c.wait_ready("Unknown", Duration::from_secs(90));
    let d = Diagnosis::run(&c, "3s");
    d.print("kubelet-stopped");
    assert!(d.has("kubelet-down"), "{:#}", d.report["verdict"]);
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("kubelet-stopped");
    assert!(
        agent["processes"]["kubelet"].is_null(),
        "{:#}",
        agent["processes"]
    );
    d.expect_top("kubelet-down");
    healed_and_ready(&c, healer);
}

#[test]
fn kubelet_frozen_is_a_kubelet_that_does_not_answer() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "kubelet-frozen"]);
    c.wait_ready("Unknown", Duration::from_secs(90));
    // API side: the API server's proxy reaches the kubelet's port, but the process never
    // completes a TLS handshake — it does not run. Not a partition: a cut-off kubelet still
    // shakes hands. (Until the API server drops the HTTP/2 connection it held to the kubelet
    // before the freeze — up to 45 s — its requests hang on that connection instead, and down
    // and partition stay side by side; the plugin asks again on a fresh dial while its window
    // lasts.)
    let d = Diagnosis::run(&c, "3s");
    d.print("kubelet-frozen");
    if d.evidence().contains("TLS handshake") {
        d.expect_top("kubelet-down");
    } else {
        assert!(d.has("kubelet-down"), "{:#}", d.report["verdict"]);
    }
    // The node side: the process exists, in a frozen cgroup; the fix thaws it, and says not to
    // restart it.
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("kubelet-frozen");
    let kubelet = &agent["processes"]["kubelet"];
    assert_eq!(kubelet["cgroupFrozen"], true, "{kubelet:#}");
    d.expect_top("kubelet-down");
    assert_eq!(d.top()["confidence"], "high", "{:#}", d.top());
    assert!(d.evidence().contains("frozen"), "{}", d.evidence());
    let fix = d.top()["fix"].as_str().unwrap_or("");
    assert!(fix.contains("freezer.state"), "{fix}");
    healed_and_ready(&c, healer);
}

#[test]
fn verdict_on_an_oom_killed_kubelet_in_a_restart_loop_is_starved() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "kubelet-memory-limited", "--limit-mib", "12"]);
    // The fault starts the kubelet under a new supervisor, whose count starts at 0: the count
    // read before the fault (restarts left by earlier tests) is not a baseline.
    wait_until(
        "the kubelet restarted twice",
        Duration::from_secs(60),
        || (c.restarts("kubelet") >= 2).then_some(()),
    );
    // API side alone: between two kills the kubelet is down (connection refused) or, while it
    // is not Ready, restarting over and over (its start events): either is what it sees.
    let d = Diagnosis::run(&c, "3s");
    d.print("kubelet-memory-limited");
    assert!(
        ["kubelet-starved", "kubelet-down"].contains(&d.top_id()),
        "{:#}",
        d.report["verdict"]
    );
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("kubelet-memory-limited");
    let ooms = agent["kernelLog"]["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == "oomKill" && e["subject"] == "kubelet")
                .count()
        })
        .unwrap_or(0);
    eprintln!("agent: kubelet OOM kills in the kernel log: {ooms}");
    assert!(ooms >= 1, "{:#}", agent["kernelLog"]);
    d.expect_top("kubelet-starved");
    assert!(d.evidence().contains("OOM"), "{}", d.evidence());
    // While it holds, the kubelet's memory cgroup says so (when the agent caught one alive).
    let memcg = &agent["processes"]["kubelet"]["memoryCgroup"];
    if !memcg.is_null() {
        assert_eq!(memcg["limitBytes"], 12u64 << 20, "{memcg:#}");
    }
    eprintln!("agent: the kubelet's memory cgroup {memcg}");
    healed_and_ready(&c, healer);
    // Healed seconds ago: the kills are minutes-fresh in the kernel log, but the kubelet now
    // running came back without the limit — history, not the loop (judged right after the heal,
    // long before the 2-minute steady rule would say so).
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("kubelet-memory-limited, healed");
    let memcg = &agent["processes"]["kubelet"]["memoryCgroup"];
    assert!(
        memcg.is_object() && memcg["limitBytes"].is_null(),
        "{memcg:#}"
    );
    let oom = finding(&d.report, "node-oom-kills")
        .cloned()
        .unwrap_or_default();
    assert_eq!(oom["severity"], "warning", "{oom:#}");
    d.expect_top("healthy");
    // Then the API server cut off, within minutes of the loop: its start events are still
    // recent, but the node side shows a kubelet out of any loop that cannot reach the API
    // server — a partition (they tied at 95 before the node side could say the loop was over).
    let healer = Healer(&c);
    c.xtask(&["fault", "api-partition"]);
    c.wait_ready("Unknown", Duration::from_secs(90));
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("api-partition after a healed OOM loop");
    eprintln!(
        "agent: kubelet up {} s",
        agent["processes"]["kubelet"]["uptimeSeconds"]
    );
    d.expect_top("api-partition");
    d.expect_no_kubelet_restart();
    healed_and_ready(&c, healer);
}

#[test]
fn expired_client_certificate_is_the_certificate() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    c.xtask(&["fault", "cert-expired-static", "--expires-in", "20s"]);
    c.wait_ready("Unknown", Duration::from_secs(120));
    let d = Diagnosis::run(&c, "3s");
    d.print("cert-expired-static");
    d.expect_top("certificate");
    // Where the kubelet's /configz could be read (it says rotation is off), no CSR will come and
    // the fix issues a certificate by hand; where it could not (the kubelet cannot authorize the
    // API server's request with its own expired certificate), the fix gives both paths.
    let fix = d.top()["fix"].as_str().unwrap_or("");
    let configz = &d.report["evidence"]["configz"];
    if configz["outcome"] == "collected" {
        assert_eq!(configz["data"]["rotateCertificates"], false, "{configz:#}");
        assert!(
            fix.contains("rotation is off") && fix.contains("nothing to approve"),
            "{fix}"
        );
    } else {
        assert!(
            fix.contains("with a static certificate (rotation off)"),
            "{fix}"
        );
    }
    eprintln!("cert-expired-static: configz {}", configz["outcome"]);
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("cert-expired-static");
    let leaf = &agent["certificates"]["client"]["certificates"][0];
    assert_eq!(leaf["expired"], true, "{:#}", agent["certificates"]);
    d.expect_top("certificate");
    // The agent read the kubelet's flags and config: rotation is off, so no CSR will come and
    // the fix issues a certificate by hand.
    assert_eq!(
        agent["discovery"]["rotateCertificates"], false,
        "{:#}",
        agent["discovery"]
    );
    let fix = d.top()["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains("rotation is off") && fix.contains("nothing to approve"),
        "{fix}"
    );
    // The kubelet's log, read on the node: every request it makes is refused with 401.
    d.expect_log_support(&["unauthorized"]);
    healed_and_ready(&c, healer);
}

#[test]
fn cert_rotation_stuck_is_the_certificate_and_names_the_csr_to_approve() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    // A 30 s client certificate whose renewal CSR nobody approves: it expires, the kubelet's
    // requests turn anonymous and are refused, the node goes Unknown.
    c.xtask(&["fault", "cert-rotation-stuck", "--lifetime", "30s"]);
    let csrs = wait_until(
        "a pending CSR from the node",
        Duration::from_secs(60),
        || Some(c.pending_node_csrs()).filter(|v| !v.is_empty()),
    );
    c.wait_ready("Unknown", Duration::from_secs(120));
    let d = Diagnosis::run(&c, "3s");
    d.print("cert-rotation-stuck");
    d.expect_top("certificate");
    let approve = format!("kubectl certificate approve {}", csrs[0]);
    let fix = d.top()["fix"].as_str().unwrap_or("");
    assert!(fix.contains(&approve), "{fix}");
    assert!(d.evidence().contains(&csrs[0]), "{}", d.evidence());
    // The node side: the certificate on disk has expired.
    let (d, agent) = Diagnosis::with_agent(&c, "3s");
    d.print("cert-rotation-stuck");
    let leaf = &agent["certificates"]["client"]["certificates"][0];
    assert_eq!(leaf["expired"], true, "{:#}", agent["certificates"]);
    d.expect_top("certificate");
    assert_eq!(d.top()["confidence"], "high", "{:#}", d.top());
    healed_and_ready(&c, healer);
    assert!(c.pending_node_csrs().is_empty(), "heal left pending CSRs");
}

/// The kubelet's healthz through the API server, verbose: its failing checks (empty when it
/// answers 200, `None` when it does not answer).
fn healthz_failing(c: &Cluster) -> Option<Vec<String>> {
    let (code, body) = c.request(
        "GET",
        &format!("/api/v1/nodes/{}/proxy/healthz?verbose", c.node),
        None,
    );
    (code != 0).then(|| {
        body.lines()
            .filter_map(|l| l.strip_prefix("[-]"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    })
}

/// A frozen runtime judged at the moments of one outage — the verdict must name the runtime
/// every time, and no fix may restart the kubelet:
/// 1. its first seconds: Ready is still True, the lease renews, healthz and configz answer, but
///    /metrics and /stats/summary hang (their collectors ask the runtime) and no pod starts;
/// 2. past the kubelet's PLEG threshold: Ready=False, "container runtime is down, PLEG is not
///    healthy"; the agent (run by the plugin) finds the CRI hung;
/// 3. (long tier) past 5 minutes: healthz `syncloop` fails too (the kubelet skips its sync loop
///    while the runtime is down) — round 1 called this kubelet-starved and advised a restart.
///
/// Then it heals and the node is Ready again. In the long tier the node is then reported healthy
/// (exit 0) once the outage's events and log lines are no longer recent — not an hour later (the
/// events' five minutes: measured 279 s after the heal).
#[test]
fn frozen_runtime_is_the_runtime_at_onset_and_past_pleg_then_heals() {
    frozen_runtime_timeline(false);
}

/// The same outage held past 5 minutes (moment 3), then healed to exit 0: about fourteen minutes
/// of wall time, so the long tier.
#[test]
#[ignore = "long tier (cargo xtask test --long): holds the runtime frozen past 5 minutes, then waits out the events' recency"]
fn frozen_runtime_is_the_runtime_past_syncloop_too_then_heals_to_exit_0() {
    frozen_runtime_timeline(true);
}

fn frozen_runtime_timeline(past_syncloop: bool) {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    let onset = Instant::now();
    c.xtask(&["fault", "runtime-frozen"]);

    // 1. The first seconds.
    let at = onset.elapsed();
    assert!(
        at < Duration::from_secs(20),
        "the fault took {at:?} to apply"
    );
    let d = Diagnosis::run(&c, "3s");
    d.print(&format!("runtime-frozen (+{}s)", at.as_secs()));
    d.expect_top("runtime-unresponsive");
    d.expect_no_kubelet_restart();
    assert!(
        d.evidence().contains("kubelet-waits-on-runtime"),
        "the hung runtime-backed endpoints name the runtime: {}",
        d.evidence()
    );

    // 2. Past the PLEG threshold.
    let message = wait_until(
        "Ready's message: PLEG is not healthy",
        Duration::from_secs(6 * 60),
        || {
            let (status, _, message) = c.ready_condition();
            (status == "False" && message.contains("PLEG is not healthy")).then_some(message)
        },
    );
    let at = onset.elapsed();
    eprintln!("runtime-frozen +{}s: {message}", at.as_secs());
    let d = Diagnosis::run(&c, "3s");
    d.print(&format!(
        "runtime-frozen (+{}s, PLEG unhealthy)",
        at.as_secs()
    ));
    d.expect_top("runtime-unresponsive");
    d.expect_no_kubelet_restart();
    assert!(d.has("pleg-slow"), "{:#}", d.report["verdict"]);
    d.expect_log_support(&["runtime-down", "cri-deadline-exceeded", "pleg-not-healthy"]);
    expect_the_agent_finds_the_cri_hung(&c, onset, "PLEG unhealthy");

    // 3. Past 5 minutes: healthz syncloop fails.
    if past_syncloop {
        let failing = wait_until(
            "healthz syncloop failing",
            Duration::from_secs(8 * 60),
            || healthz_failing(&c).filter(|f| f.iter().any(|n| n == "syncloop")),
        );
        let at = onset.elapsed();
        eprintln!(
            "runtime-frozen +{}s: healthz failing {failing:?}",
            at.as_secs()
        );
        let d = Diagnosis::run(&c, "3s");
        d.print(&format!(
            "runtime-frozen (+{}s, syncloop failing)",
            at.as_secs()
        ));
        d.expect_top("runtime-unresponsive");
        d.expect_no_kubelet_restart();
        // The failing syncloop is the outage's symptom, said where it would be read as starvation.
        assert!(
            !d.has("kubelet-starved")
                || d.evidence_of("kubelet-starved")
                    .contains("the runtime is down"),
            "{:#}",
            d.report["verdict"]
        );
        expect_the_agent_finds_the_cri_hung(&c, onset, "syncloop failing");
    }

    // Healed: Ready again; exit 0 once the outage's traces are no longer recent.
    healed_and_ready(&c, healer);
    if !past_syncloop {
        return;
    }
    let healed = Instant::now();
    let clean = wait_until(
        "a healthy report (exit 0) after the heal",
        Duration::from_secs(12 * 60),
        || {
            let d = Diagnosis::api_only(&c, "2s");
            if d.exit == Some(0) {
                Some(d)
            } else {
                thread::sleep(Duration::from_secs(20));
                None
            }
        },
    );
    eprintln!(
        "runtime-frozen healed: exit 0 after {} s ({})",
        healed.elapsed().as_secs(),
        clean.top_id()
    );
    assert_eq!(clean.top_id(), "healthy");
}

/// With the agent (the plugin's probe pod, or the agent run on the node when the pod cannot
/// start): the CRI is hung and the verdict still names the runtime.
fn expect_the_agent_finds_the_cri_hung(c: &Cluster, onset: Instant, moment: &str) {
    let (d, agent) = Diagnosis::with_agent(c, "3s");
    d.print(&format!(
        "runtime-frozen (+{}s, {moment}, with the agent)",
        onset.elapsed().as_secs()
    ));
    assert_eq!(agent["cri"]["state"], "hung", "{:#}", agent["cri"]);
    d.expect_top("runtime-unresponsive");
    d.expect_no_kubelet_restart();
}

// --- slow, not dead: the eBPF attribution names where the time goes ---------------------------

/// The trace section of a report's node evidence.
fn trace_of(d: &Diagnosis) -> &Value {
    &d.report["evidence"]["nodeProbe"]["data"]["evidence"]["trace"]
}

/// The attribution on the cause that carries one (pleg-slow or runtime-unresponsive).
fn attribution_of(d: &Diagnosis) -> Vec<String> {
    d.causes()
        .iter()
        .filter_map(|c| c["attribution"].as_str().map(String::from))
        .collect()
}

/// The runtime's list calls held at strengths below and above a second — round 1 called the
/// 800 ms case "inside the kubelet" (fixed per-call thresholds, while healthy calls take ~1 ms).
/// At every delay the relists are slow because the runtime holds them: from the API side the
/// share of each relist spent in the list calls (exact `_sum`/`_count`) says so; with `--trace`
/// the attribution is the runtime holding the calls on its socket. Windows long enough for three
/// slow relists.
#[test]
fn runtime_slow_list_below_and_above_a_second_is_pleg_held_by_the_runtime() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    for (delay, held, window) in [
        ("600ms", 0.6, "10s"),
        ("800ms", 0.8, "12s"),
        ("1500ms", 1.5, "15s"),
        ("3s", 3.0, "25s"),
    ] {
        c.xtask(&["fault", "runtime-slow-list", "--delay", delay]);
        let d = Diagnosis::api_only(&c, window);
        d.print(&format!("runtime-slow-list {delay} (API side)"));
        d.expect_top("pleg-slow");
        let evidence = d.evidence();
        assert!(
            evidence.contains("pleg-runtime-share") && evidence.contains("wait on the runtime"),
            "{delay}: the runtime's share explains the relists: {evidence}"
        );
        assert!(
            !evidence.contains("inside the kubelet"),
            "{delay}: {evidence}"
        );
        d.expect_no_kubelet_restart();

        // At 3 s a call the probe pod does not start within the bound (each step of a pod start
        // waits for a relist of 7-9 s): the operator's next step is the agent over SSH, tracing.
        let d = if held < 2.0 {
            Diagnosis::traced(&c, window)
        } else {
            Diagnosis::with_traced_agent(&c, window)
        };
        d.print(&format!("runtime-slow-list {delay} (traced)"));
        d.expect_top("pleg-slow");
        assert_eq!(
            d.top()["attribution"],
            "cri-socket-stall",
            "{delay}: {:#}",
            d.report["verdict"]
        );
        d.expect_no_kubelet_restart();
        let cri = &trace_of(&d)["cri"];
        let slowest: Vec<f64> = cri["slowest"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c["durationNs"].as_f64().unwrap_or(0.0) / 1e9)
                    .collect()
            })
            .unwrap_or_default();
        eprintln!("{delay}: the kubelet's slowest CRI calls (s): {slowest:?}");
        assert!(
            slowest.len() >= 3
                && slowest[..3]
                    .iter()
                    .all(|s| (0.95 * held..held + 0.5).contains(s)),
            "{delay}: each held list call ~{held} s: {cri:#}"
        );
    }
    healed_and_ready(&c, healer);
}

// Run through the agent on the node, not the probe pod: at the fault's 1 ms per second no pod
// starts within 90 s; at 3 ms one started after ~60 s in one try, but another window caught too
// little starvation and a third pod failed in runc ("namespace path: lstat /proc/0/ns/ipc": the
// sandbox's process was not up yet); at 10 ms the pod starts in 10 s and the window shows no
// starvation at all. An operator meets the same: a starved runtime starts pods late or not at all.
// The runtime's cgroup gets 1 ms of CPU per second: the trace shows its threads waiting for a CPU
// (run-queue wait) and its cgroup throttled in every period. How slow any one call is varies from
// run to run (a call that starts right after the quota refills is fast), so the verdict does not
// wait for a slow call: the starvation measured on the node raises the runtime, and the trace's
// whole-window attribution names CPU starvation.
#[test]
fn runtime_cpu_starved_is_attributed_to_cpu_starvation_of_the_runtime() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let healer = Healer(&c);
    let throttled = c.throttled_periods("containerd");
    c.xtask(&["fault", "runtime-cpu-starved"]);
    wait_until("containerd throttled", Duration::from_secs(30), || {
        (c.throttled_periods("containerd") > throttled).then_some(())
    });
    // The starved runtime may not start a pod in time: the agent on the node, traced, is what
    // an operator runs then.
    let agent = run_agent_standalone(&["--duration", "10s", "--trace"]);
    let trace = &agent["trace"];
    let runtime = trace["processes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["owner"] == "runtime"))
        .cloned()
        .unwrap_or_default();
    eprintln!("runtime threads over the window: {runtime:#}");
    let runq = runtime["runQueueNs"].as_u64().unwrap_or(0);
    let io = runtime["ioWaitNs"].as_u64().unwrap_or(0);
    assert!(runq > 1_000_000_000 && runq > io, "{runtime:#}");
    let (out, took) = run_plugin_with_node_evidence(&c, &agent, "3s");
    let d = Diagnosis {
        report: json_of(&out),
        exit: out.status.code(),
        took,
    };
    d.print("runtime-cpu-starved");
    let starved = d.report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "node-cpu-starved-runtime")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        starved["severity"], "critical",
        "{:#}",
        d.report["findings"]
    );
    assert!(
        attribution_of(&d).iter().any(|a| a == "cpu-starvation"),
        "{:#}",
        d.report["verdict"]
    );
    healed_and_ready(&c, healer);
}

/// The harness's loop device under containerd's root is throttled: containerd's fsyncs of its
/// metadata databases wait for it. Seen through the probe pod (it starts, slowly: `--pod-timeout`
/// is widened as an operator would when the API side shows slow relists), traced.
#[test]
fn disk_slow_is_attributed_to_io_wait_on_the_runtimes_device() {
    let c = Cluster::get();
    c.wait_ready("True", Duration::from_secs(60));
    let device = c.containerd_root_device();
    let healer = Healer(&c);
    // The fault returns once the runtime's writes are measurably slowed, and its pod churn keeps
    // them so for as long as it is in place.
    c.xtask(&["fault", "disk-slow"]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("disk-slow.tar.gz");
    let (out, took) = run_plugin(
        &c,
        &[
            "--duration",
            "10s",
            "--trace",
            // The probe pod's own sandbox and container are written through the throttled disk,
            // behind the churn pods' writes: it took 45-62 s in most runs and past 90 s in one of
            // eight (2026-12-06).
            "--pod-timeout",
            "180s",
            "-o",
            "json",
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    );
    let d = Diagnosis {
        report: json_of(&out),
        exit: out.status.code(),
        took,
    };
    d.print("disk-slow");
    let trace = trace_of(&d);
    let probe = &d.report["evidence"]["nodeProbe"]["data"];
    eprintln!(
        "disk-slow: probe pod started after {} s, agent connected after {} s more; processes {:#}, I/O waits {:#}",
        probe["podStartSeconds"], probe["connectSeconds"], trace["processes"], trace["ioWaits"]
    );
    assert!(
        d.layers().iter().any(|l| l == "ebpf"),
        "the probe pod ran the trace: {:?}; the node probe: {:#}",
        d.layers(),
        d.report["evidence"]["nodeProbe"]["failure"]
    );
    assert!(
        attribution_of(&d).iter().any(|a| a == "disk-iowait"),
        "{:#}",
        d.report["verdict"]
    );
    // The device named is the harness's loop device, found through the files the runtime's
    // threads were blocked on.
    let cause = d
        .causes()
        .iter()
        .find(|c| c["attribution"] == "disk-iowait")
        .unwrap();
    assert!(
        cause["evidence"]
            .to_string()
            .contains(&format!("most on device {device}")),
        "not on {device}: {cause:#}"
    );
    let on_device = trace["ioWaits"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|w| w["owner"] == "runtime" && w["device"] == device.as_str());
    assert!(on_device, "{:#}", trace["ioWaits"]);
    // The bundle keeps the runtime's longest I/O waits as folded kernel stacks.
    let folded = std::process::Command::new("tar")
        .arg("xzfO")
        .arg(&bundle)
        .arg("nodehealth/node/offcpu.folded")
        .output()
        .expect("tar");
    let folded = String::from_utf8_lossy(&folded.stdout);
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("runtime;ioWait;") && l.split(';').count() >= 5),
        "{folded}"
    );
    // ... and draws them as an off-CPU flame graph.
    let svg = std::process::Command::new("tar")
        .arg("xzfO")
        .arg(&bundle)
        .arg("nodehealth/node/offcpu.svg")
        .output()
        .expect("tar");
    let svg = String::from_utf8_lossy(&svg.stdout);
    assert!(
        svg.starts_with("<?xml") && svg.contains("ioWait") && svg.trim_end().ends_with("</svg>"),
        "offcpu.svg: {}",
        &svg[..svg.len().min(300)]
    );
    // ... in the seconds the runtime's threads spent in I/O wait.
    let io_seconds = trace["seconds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["owner"] == "runtime" && s["ioWaitNs"].as_u64().unwrap_or(0) >= 100_000_000)
        .count();
    assert!(io_seconds >= 1, "{:#}", trace["seconds"]);
    healed_and_ready(&c, healer);
}
