//! The reconcile rules: after every scorer has spoken, causes are weighed against each other —
//! a cause's symptoms never outrank it. Each rule is a named unit with the kubelet behaviour it
//! encodes and its own test; [`RULES`] is their order, and the order is part of each rule's
//! meaning (stated in its doc).

use super::{CauseId, Inputs, REPORT_SCORE, Scores};
use crate::checks::logs::cause_of;
use crate::checks::{Component, FindingId, Severity};

/// A reconcile rule.
pub struct Rule {
    /// Its name, for tests and for reading.
    pub name: &'static str,
    /// The rule.
    pub apply: fn(&mut Scores, &Inputs),
}

/// The rules, in the order they run.
pub const RULES: &[Rule] = &[
    Rule {
        name: "logs-support-what-they-name",
        apply: logs_support_what_they_name,
    },
    Rule {
        name: "history-supports-what-degraded-first",
        apply: history_supports_what_degraded_first,
    },
    Rule {
        name: "nothing-separates-down-from-partition",
        apply: nothing_separates_down_from_partition,
    },
    Rule {
        name: "a-recorder-silent-with-the-kubelet-is-a-partition",
        apply: a_recorder_silent_with_the_kubelet_is_a_partition,
    },
    Rule {
        name: "oom-loop-explains-a-down-kubelet",
        apply: oom_loop_explains_a_down_kubelet,
    },
    Rule {
        name: "node-side-settles-down-and-partition",
        apply: node_side_settles_down_and_partition,
    },
    Rule {
        name: "a-slow-runtime-is-why-relists-are-slow",
        apply: a_slow_runtime_is_why_relists_are_slow,
    },
    Rule {
        name: "a-pod-that-never-started-supports-every-cause",
        apply: a_pod_that_never_started_supports_every_cause,
    },
    Rule {
        name: "a-certificate-problem-explains-the-restarts",
        apply: a_certificate_problem_explains_the_restarts,
    },
    Rule {
        name: "a-restart-loop-explains-a-fresh-kubelet",
        apply: a_restart_loop_explains_a_fresh_kubelet,
    },
    Rule {
        name: "a-runtime-outage-explains-its-symptoms",
        apply: a_runtime_outage_explains_its_symptoms,
    },
    Rule {
        name: "a-stalled-sync-loop-follows-pleg",
        apply: a_stalled_sync_loop_follows_pleg,
    },
];

/// The causes rules may lift or hold, besides `healthy`.
const ALL: [CauseId; 7] = CauseId::BY_SAFETY;

/// Known log messages (the catalogue in `nodehealth_proto::logs`, each with its upstream source)
/// add to a cause something else already raised: +5 a message, at most +10 a cause. On their own
/// they raise nothing — a fault healed minutes ago leaves its lines behind. Runs first: what the
/// node side and the trace settle below, log lines do not undo.
pub fn logs_support_what_they_name(scores: &mut Scores, i: &Inputs) {
    let lines: Vec<(CauseId, String)> = i
        .findings
        .iter()
        .filter(|f| f.is_log_evidence() && f.severity.is_problem())
        .filter_map(|f| {
            let cause = cause_of(&f.id).and_then(CauseId::named)?;
            Some((cause, format!("{}: {}", f.id, f.summary)))
        })
        .collect();
    for id in ALL {
        let s = scores.get(id);
        let before = s.score;
        for (_, line) in lines.iter().filter(|(c, _)| *c == id) {
            if s.raised() {
                s.support(5, line.clone());
                s.score = s.score.min(before.saturating_add(10)).min(99);
            }
        }
    }
}

/// The Prometheus history's order of onsets (`--prometheus`) adds to a cause something else
/// already raised, +5, as log lines do. Only episodes that began inside the range and still last
/// are ordered (a blip that recovered an hour ago explains nothing now; two signals degraded from
/// the range's start have no order). The runtime's list calls or errors degrading no later than the
/// relists support the runtime and PLEG (the relists wait on it); relists degrading while the
/// runtime's calls are present and stayed fast put the time inside the kubelet; the lease or Ready
/// failing before anything on the node degraded supports a partition or a dead kubelet; the
/// kubelet's scrape (`up`, its duration) is neither a cut-off nor on the node: a slow runtime makes
/// /metrics time out, and a kubelet cut off from the API server fails the scrape as soon as its
/// cached authorization of it expires (it cannot ask the API server; seen in the partition test,
/// 14 s after the cut, before the lease aged). A client certificate running out
/// supports the certificate. On its own it raises nothing. Runs beside the logs, before the node
/// side settles.
pub fn history_supports_what_degraded_first(scores: &mut Scores, i: &Inputs) {
    let h = &i.facts.history;
    if h.is_empty() {
        return;
    }
    let at = |ids: &[&str]| {
        h.iter()
            .filter(|o| ids.contains(&o.signal.as_str()))
            .filter_map(|o| o.ordered_onset())
            .min()
    };
    let calm = |id: &str| {
        h.iter()
            .any(|o| o.signal == id && o.current && o.at.is_none())
    };
    let clock = crate::history::clock;
    let runtime = at(&["runtime-list-seconds", "runtime-errors-per-second"]);
    let relists = at(&["relist-seconds", "pleg-last-seen-seconds"]);
    let on_node = at(&[
        "runtime-list-seconds",
        "runtime-errors-per-second",
        "relist-seconds",
        "pleg-last-seen-seconds",
        "kubelet-rss-bytes",
    ]);
    let cut_off = at(&["lease-age-seconds", "node-ready"]);
    let mut lines: Vec<(CauseId, String)> = Vec::new();
    match (runtime, relists) {
        (Some(r), Some(p)) if r <= p => {
            let line = format!(
                "history: the runtime's calls degraded at {}, the relists at {}: the relists wait on the runtime",
                clock(r),
                clock(p)
            );
            lines.push((CauseId::RuntimeUnresponsive, line.clone()));
            lines.push((CauseId::PlegSlow, line));
        }
        (Some(r), None) => lines.push((
            CauseId::RuntimeUnresponsive,
            format!("history: the runtime's calls degraded at {}", clock(r)),
        )),
        (None, Some(p)) if calm("runtime-list-seconds") => lines.push((
            CauseId::PlegSlow,
            format!(
                "history: the relists degraded at {} while the runtime's list calls stayed fast",
                clock(p)
            ),
        )),
        _ => {}
    }
    if let Some(c) = cut_off
        && on_node.is_none_or(|n| c < n)
    {
        let line = format!(
            "history: the lease or Ready failed at {} before anything on the node degraded",
            clock(c)
        );
        lines.push((CauseId::ApiPartition, line.clone()));
        lines.push((CauseId::KubeletDown, line));
    }
    if let Some(c) = at(&["client-cert-ttl-seconds"]) {
        lines.push((
            CauseId::Certificate,
            format!(
                "history: the client certificate's time to live ran low from {}",
                clock(c)
            ),
        ));
    }
    for (id, line) in lines {
        let s = scores.get(id);
        if s.raised() {
            s.support(5, line);
        }
    }
}

/// A kubelet that stopped reporting, with nothing that tells a dead kubelet from a partition
/// (e.g. no permission to use the node proxy): both stay on the table, at low confidence. Before
/// the node side settles them.
pub fn nothing_separates_down_from_partition(scores: &mut Scores, i: &Inputs) {
    if i.not_reporting()
        && !i.certificate_signal()
        && !i.fresh_kubelet_not_yet_heartbeating()
        && scores.of(CauseId::KubeletDown) == 0
        && scores.of(CauseId::ApiPartition) == 0
        && scores.of(CauseId::KubeletStarved) < 45
    {
        for id in [CauseId::KubeletDown, CauseId::ApiPartition] {
            scores.get(id).because(
                35,
                "the kubelet stopped reporting and nothing here separates a dead kubelet from a partition",
            );
        }
    }
}

/// The node's flight recorder writes to the API server on its own path and reports a kubelet
/// that dies or freezes within seconds. When it fell silent with the kubelet, having last seen
/// the kubelet running and healthy ([`crate::checks::facts::recorder_silent_with_kubelet`]), the
/// kubelet did not die: the node lost its path to the API server, or the node itself is down
/// (powered off, or hung as a whole) — which the partition's advice covers. A certificate
/// problem keeps the recorder writing (its own token), so it never meets this. After
/// nothing-separates (which may have raised both at low confidence), before the node side.
pub fn a_recorder_silent_with_the_kubelet_is_a_partition(scores: &mut Scores, i: &Inputs) {
    let Some(why) = &i.facts.recorder_silent_with_kubelet else {
        return;
    };
    if !i.not_reporting() || i.certificate_signal() {
        return;
    }
    let partition = scores.get(CauseId::ApiPartition);
    if partition.raised() {
        partition.support(15, why.clone());
    } else {
        partition.because(50, why.clone());
    }
    // Whatever else the kubelet has, none of it silences the recorder: the silence that the
    // kubelet-side causes were raised on is the node's path (seen: an OOM loop healed minutes
    // before the cut kept kubelet-starved at 90 on its recent events).
    let p = scores.of(CauseId::ApiPartition);
    for (id, why) in [
        (
            CauseId::KubeletDown,
            "the node's recorder last saw the kubelet running and healthy, and a kubelet that died \
             or froze would have been reported within seconds (see api-partition)",
        ),
        (
            CauseId::KubeletStarved,
            "the node's recorder last saw the kubelet running and healthy and fell silent with it: \
             a starved kubelet does not silence the recorder (see api-partition)",
        ),
        (
            CauseId::Certificate,
            "the node's recorder, on a token of its own, fell silent with the kubelet: not the \
             kubelet's certificate alone (see api-partition)",
        ),
    ] {
        scores.get(id).cap_below(p, why);
    }
}

/// A kubelet the kernel keeps OOM-killing is "down" between kills: starved of memory is the
/// cause (the guide: "Kubelet OOM or resource starvation — kubelet process restarting; dmesg
/// shows OOM kill").
pub fn oom_loop_explains_a_down_kubelet(scores: &mut Scores, i: &Inputs) {
    if i.oom_loop() {
        let starved = scores.of(CauseId::KubeletStarved);
        scores
            .get(CauseId::KubeletDown)
            .cap_below(starved, "it is being OOM-killed: see kubelet-starved");
    }
}

/// What the node side sees settles what the API side could not: a kubelet process that runs is
/// not down; a node that reaches the API server is not partitioned from it.
pub fn node_side_settles_down_and_partition(scores: &mut Scores, i: &Inputs) {
    let node = &i.facts.node;
    if !node.collected {
        return;
    }
    if node.kubelet_running {
        scores.get(CauseId::KubeletDown).cap_below(
            REPORT_SCORE,
            "the node agent sees the kubelet process running",
        );
    }
    if node.api_reachable {
        scores.get(CauseId::ApiPartition).cap_below(
            REPORT_SCORE,
            "the node reaches the API server (its healthz answered the agent)",
        );
    }
}

/// A runtime that answers, only slowly, is why relists are slow (pkg/kubelet/pleg/generic.go:
/// a relist is ListPodSandbox + ListContainers): PLEG is what the operator meets, and the share
/// of the relist in those calls (and the trace's attribution) says where the time goes. So a
/// merely slow runtime ranks just below PLEG, with the explanation in PLEG's evidence; a hung or
/// failing runtime is a cause of its own and is left alone here.
pub fn a_slow_runtime_is_why_relists_are_slow(scores: &mut Scores, i: &Inputs) {
    // The trace's answer to "why is the runtime slow" belongs to the runtime cause whether or
    // not relists are slow too (slow writes with fast lists: the disk under the runtime).
    if let Some(a) = &i.facts.attribution {
        let runtime = scores.get(CauseId::RuntimeUnresponsive);
        if runtime.raised() {
            runtime.support(0, a.why.clone());
        }
    }
    let pleg = scores.of(CauseId::PlegSlow);
    if pleg == 0 {
        return;
    }
    if let Some(a) = &i.facts.attribution {
        scores.get(CauseId::PlegSlow).support(10, a.why.clone());
    }
    let hung = i.runtime_down() || i.runtime_failing();
    let pleg = scores.of(CauseId::PlegSlow);
    let runtime = scores.get(CauseId::RuntimeUnresponsive);
    if !hung && runtime.raised() {
        runtime.cap_below(
            pleg,
            "the runtime answers, slowly: that is why relists are slow (see pleg-slow)",
        );
    }
}

/// A probe pod the kubelet never started is evidence against the node as a whole (PLEG, a runtime
/// that cannot start containers, a certificate or a partition all stop pod starts): it supports
/// every cause already raised, none in particular.
pub fn a_pod_that_never_started_supports_every_cause(scores: &mut Scores, i: &Inputs) {
    let Some(w) = i.problem(&FindingId::PodNotStarted) else {
        return;
    };
    for s in scores.iter_mut() {
        if s.raised() {
            s.support(10, w.clone());
        }
    }
}

/// A kubelet whose client certificate expires with rotation on exits and is started again by its
/// service manager (its restarts then fail the same way), and operators restart a silent kubelet
/// while they look: start events in the last minutes follow from a certificate problem as often as
/// from starvation. While the certificate explains the silence (its credentials refused, expired,
/// or its client CSR pending while it does not report) and nothing else shows the kubelet itself
/// in trouble — no OOM loop, its own healthz answering on the node, its threads not starved of
/// CPU — kubelet-starved ranks below the certificate. Measured: the scenario suite run twice in a
/// row, cert-rotation-stuck 3 minutes after the previous round's OOM loop read kubelet-starved 99
/// (4 starts in 3 minutes) over certificate 90. Runs before the restart loop holds PLEG and the
/// runtime below kubelet-starved.
pub fn a_certificate_problem_explains_the_restarts(scores: &mut Scores, i: &Inputs) {
    let itself = i.oom_loop()
        || i.at_least(&FindingId::KubeletUnresponsive, Severity::Warning)
        || i.at_least(
            &FindingId::CpuStarved(Component::Kubelet),
            Severity::Warning,
        );
    if !i.certificate_signal() || itself {
        return;
    }
    let certificate = scores.of(CauseId::Certificate);
    if certificate == 0 {
        return;
    }
    scores.get(CauseId::KubeletStarved).cap_below(
        certificate,
        "the kubelet's certificate is refused, expired or awaiting approval: a kubelet in that state exits and is restarted (and is restarted by hand), so its recent starts follow from the certificate",
    );
}

/// A kubelet that keeps starting over has not relisted ("pleg has yet to be successful") or
/// reached its runtime yet: the loop is the cause, PLEG and the runtime its symptoms.
pub fn a_restart_loop_explains_a_fresh_kubelet(scores: &mut Scores, i: &Inputs) {
    if !i.restart_loop() {
        return;
    }
    let starved = scores.of(CauseId::KubeletStarved);
    for id in [CauseId::PlegSlow, CauseId::RuntimeUnresponsive] {
        scores.get(id).cap_below(
            starved,
            "the kubelet keeps restarting: a kubelet minutes or seconds old has not relisted or reached its runtime yet",
        );
    }
}

/// A runtime known to be down stops the relists, hangs the kubelet's CRI-backed endpoints
/// (/metrics, /stats/summary) and its goroutines on the calls, and after 5 minutes fails healthz
/// `syncloop` — the kubelet skips its sync loop while the runtime is down (pkg/kubelet/kubelet.go
/// syncLoop: "skipping pod synchronization" on runtime errors). Those are the runtime's symptoms:
/// PLEG stays below it (the operator meets it in the Ready message), and kubelet-starved is not a
/// cause of its own — unless the node shows the kubelet itself in trouble (a restart or OOM loop,
/// its own healthz timing out on the node, its threads starved of CPU), when it only ranks below.
pub fn a_runtime_outage_explains_its_symptoms(scores: &mut Scores, i: &Inputs) {
    if !i.runtime_down() {
        return;
    }
    let top = scores.of(CauseId::RuntimeUnresponsive);
    if top == 0 {
        return;
    }
    scores.get(CauseId::PlegSlow).cap_below(
        top,
        "the runtime is down: relists wait on it (PLEG is the symptom)",
    );
    let why = "the runtime is down: the kubelet's metrics, stats and sync loop wait on it too — symptoms, not a starved kubelet";
    let starved = scores.get(CauseId::KubeletStarved);
    if i.kubelet_itself() {
        starved.cap_below(top, why);
    } else {
        starved.cap_below(REPORT_SCORE, why);
    }
}

/// With PLEG unhealthy the kubelet skips its sync loop too (pkg/kubelet/kubelet.go syncLoop: "skipping
/// pod synchronization" while PLEG is not healthy), so healthz `syncloop` fails after 5 minutes of
/// any PLEG stall: a symptom of the stall, not a starved kubelet (not reported as one) — unless the
/// node shows the kubelet itself in trouble.
pub fn a_stalled_sync_loop_follows_pleg(scores: &mut Scores, i: &Inputs) {
    if !(i.syncloop_failing() && i.relist_stuck()) || i.kubelet_itself() {
        return;
    }
    if scores.of(CauseId::PlegSlow) > 0 {
        scores.get(CauseId::KubeletStarved).cap_below(
            REPORT_SCORE,
            "healthz syncloop fails because the kubelet skips its sync loop while PLEG is unhealthy: a symptom of the stall, not a starved kubelet",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::causes::test_support::*;
    use super::super::{Score, Scores};
    use super::*;
    use crate::checks::{Component, Severity};

    fn scores(pairs: &[(CauseId, u8)]) -> Scores {
        Scores::new(pairs.iter().map(|(id, score)| Score {
            id: *id,
            score: *score,
            evidence: vec![],
        }))
    }

    #[test]
    fn rules_have_unique_names() {
        let mut names: Vec<_> = RULES.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
    }

    #[test]
    fn log_lines_add_at_most_ten_and_raise_nothing() {
        let f = [
            finding(FindingId::log("pleg-not-healthy"), Severity::Warning),
            finding(FindingId::log("pleg-not-healthy"), Severity::Warning),
            finding(FindingId::log("pleg-not-healthy"), Severity::Warning),
        ];
        let facts = facts();
        let mut s = scores(&[(CauseId::PlegSlow, 50), (CauseId::RuntimeUnresponsive, 0)]);
        logs_support_what_they_name(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::PlegSlow), 60);
        assert_eq!(s.of(CauseId::RuntimeUnresponsive), 0);
    }

    /// A cause's score after the history rule, from `score` alone.
    fn history_lifts(facts: &crate::checks::Facts, id: CauseId, score: u8) -> u8 {
        let mut s = scores(&[(id, score)]);
        history_supports_what_degraded_first(&mut s, &Inputs::new(&[], facts));
        s.of(id)
    }

    fn onset(signal: &str, minute: i64) -> crate::checks::facts::HistoryOnset {
        crate::checks::facts::HistoryOnset {
            signal: signal.into(),
            at: Some(jiff::Timestamp::from_second(minute * 60).unwrap()),
            ongoing: true,
            from_start: false,
            current: true,
        }
    }

    #[test]
    fn history_orders_only_what_began_in_the_range_and_still_lasts() {
        let mut facts = facts();
        let mut blip = onset("runtime-list-seconds", 10);
        blip.ongoing = false;
        facts.history = vec![blip, onset("relist-seconds", 50)];
        let mut s = scores(&[(CauseId::RuntimeUnresponsive, 50), (CauseId::PlegSlow, 45)]);
        history_supports_what_degraded_first(&mut s, &Inputs::new(&[], &facts));
        assert_eq!(s.of(CauseId::RuntimeUnresponsive), 50);
        // Relists degrading, the runtime's calls present and calm: inside the kubelet.
        let mut calm = onset("runtime-list-seconds", 0);
        calm.at = None;
        calm.ongoing = false;
        facts.history = vec![onset("relist-seconds", 50), calm.clone()];
        assert_eq!(history_lifts(&facts, CauseId::PlegSlow, 45), 50);
        // No runtime series at all (hung calls never complete): nothing said about it.
        facts.history = vec![onset("relist-seconds", 50)];
        assert_eq!(history_lifts(&facts, CauseId::PlegSlow, 45), 45);
        // Both degraded from the range's start: no order.
        let mut r = onset("runtime-list-seconds", 0);
        r.from_start = true;
        let mut p = onset("relist-seconds", 0);
        p.from_start = true;
        facts.history = vec![r, p];
        assert_eq!(history_lifts(&facts, CauseId::RuntimeUnresponsive, 50), 50);
        // A scrape that stopped is not a cut-off: a slow runtime makes /metrics time out too.
        facts.history = vec![onset("kubelet-up", 10)];
        assert_eq!(history_lifts(&facts, CauseId::ApiPartition, 60), 60);
    }

    #[test]
    fn history_orders_runtime_before_relists_and_raises_nothing_alone() {
        let mut facts = facts();
        facts.history = vec![
            onset("runtime-list-seconds", 41),
            onset("relist-seconds", 42),
        ];
        let mut s = scores(&[
            (CauseId::PlegSlow, 45),
            (CauseId::RuntimeUnresponsive, 50),
            (CauseId::ApiPartition, 0),
        ]);
        history_supports_what_degraded_first(&mut s, &Inputs::new(&[], &facts));
        assert_eq!(s.of(CauseId::RuntimeUnresponsive), 55);
        assert_eq!(s.of(CauseId::PlegSlow), 50);
        assert_eq!(s.of(CauseId::ApiPartition), 0);
        let line = &s.get(CauseId::RuntimeUnresponsive).evidence[0];
        assert_eq!(
            line,
            "history: the runtime's calls degraded at 00:41:00, the relists at 00:42:00: the relists wait on the runtime"
        );
        // Relists first, the runtime after: not the runtime's doing.
        facts.history = vec![
            onset("relist-seconds", 40),
            onset("runtime-list-seconds", 41),
        ];
        assert_eq!(history_lifts(&facts, CauseId::RuntimeUnresponsive, 50), 50);
    }

    #[test]
    fn history_of_a_lease_lost_before_anything_on_the_node_supports_a_partition() {
        let mut facts = facts();
        facts.history = vec![onset("lease-age-seconds", 10), onset("kubelet-up", 11)];
        // (kubelet-up after the lease: the scrape failed once the node was cut off)
        let mut s = scores(&[(CauseId::ApiPartition, 60), (CauseId::KubeletDown, 35)]);
        history_supports_what_degraded_first(&mut s, &Inputs::new(&[], &facts));
        assert_eq!(s.of(CauseId::ApiPartition), 65);
        assert_eq!(s.of(CauseId::KubeletDown), 40);
        // The scrape failing first does not change that: a kubelet cut off from the API server
        // cannot authorize the scrape once its cached answer expires.
        facts.history = vec![
            onset("kubelet-up", 5),
            onset("scrape-seconds", 6),
            onset("node-ready", 9),
            onset("lease-age-seconds", 10),
        ];
        assert_eq!(history_lifts(&facts, CauseId::ApiPartition, 60), 65);
        // The relists went first: the lease is a symptom, not the first thing that broke.
        facts.history.insert(0, onset("relist-seconds", 4));
        assert_eq!(history_lifts(&facts, CauseId::ApiPartition, 60), 60);
    }

    #[test]
    fn a_recorder_silent_with_a_healthy_kubelet_ranks_the_partition_above_down() {
        let mut facts = silent();
        let f = [finding(FindingId::Lease, Severity::Critical)];
        // Nothing separated them: both at 35.
        let mut s = scores(&[(CauseId::KubeletDown, 35), (CauseId::ApiPartition, 35)]);
        let rule = a_recorder_silent_with_the_kubelet_is_a_partition;
        rule(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(
            (s.of(CauseId::KubeletDown), s.of(CauseId::ApiPartition)),
            (35, 35)
        );
        facts.recorder_silent_with_kubelet = Some("the recorder fell silent".into());
        rule(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::ApiPartition), 50);
        assert_eq!(s.of(CauseId::KubeletDown), 35, "already below");
        // Raised from nothing; a kubelet-down at 60 held below it.
        let mut s = scores(&[(CauseId::KubeletDown, 60), (CauseId::ApiPartition, 0)]);
        rule(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::ApiPartition), 50);
        assert_eq!(s.of(CauseId::KubeletDown), 49);
        // Seen in the long recorder test: kubelet-starved at 90 on an OOM loop healed before the
        // cut, certificate at 55 on "cannot authorize" (a cut-off kubelet cannot either).
        let mut s = scores(&[
            (CauseId::KubeletStarved, 90),
            (CauseId::ApiPartition, 55),
            (CauseId::Certificate, 55),
            (CauseId::KubeletDown, 50),
            (CauseId::PlegSlow, 60),
        ]);
        rule(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::ApiPartition), 70);
        assert_eq!(s.of(CauseId::KubeletStarved), 69);
        assert_eq!(s.of(CauseId::Certificate), 55);
        assert_eq!(s.of(CauseId::KubeletDown), 50);
        assert_eq!(
            s.of(CauseId::PlegSlow),
            60,
            "node-side causes are not its to judge"
        );
        // A certificate problem explains the silence: not this rule's.
        let cert = [
            finding(FindingId::Lease, Severity::Critical),
            finding(FindingId::KubeletAuth, Severity::Critical),
        ];
        let mut s = scores(&[(CauseId::KubeletDown, 60), (CauseId::ApiPartition, 0)]);
        rule(&mut s, &Inputs::new(&cert, &facts));
        assert_eq!(
            (s.of(CauseId::KubeletDown), s.of(CauseId::ApiPartition)),
            (60, 0)
        );
        // A kubelet that reports: nothing to explain.
        let mut s = scores(&[(CauseId::KubeletDown, 0), (CauseId::ApiPartition, 0)]);
        rule(
            &mut s,
            &Inputs::new(&[], &super::super::causes::test_support::facts()),
        );
        assert_eq!(s.of(CauseId::ApiPartition), 0);
    }

    #[test]
    fn an_oom_loop_holds_down_below_starved() {
        let f = [finding(FindingId::NodeOom, Severity::Critical)];
        let facts = facts();
        let mut s = scores(&[(CauseId::KubeletDown, 85), (CauseId::KubeletStarved, 90)]);
        oom_loop_explains_a_down_kubelet(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::KubeletDown), 85);
        let mut s = scores(&[(CauseId::KubeletDown, 95), (CauseId::KubeletStarved, 90)]);
        oom_loop_explains_a_down_kubelet(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::KubeletDown), 89);
    }

    #[test]
    fn a_running_kubelet_on_the_node_is_not_down_and_a_reachable_api_is_no_partition() {
        let mut facts = silent();
        facts.node.collected = true;
        facts.node.kubelet_running = true;
        facts.node.api_reachable = true;
        let mut s = scores(&[(CauseId::KubeletDown, 60), (CauseId::ApiPartition, 60)]);
        node_side_settles_down_and_partition(&mut s, &Inputs::new(&[], &facts));
        assert!(s.of(CauseId::KubeletDown) < REPORT_SCORE);
        assert!(s.of(CauseId::ApiPartition) < REPORT_SCORE);
    }

    #[test]
    fn a_merely_slow_runtime_ranks_below_pleg_a_hung_one_does_not() {
        let facts = facts();
        let mut s = scores(&[(CauseId::PlegSlow, 45), (CauseId::RuntimeUnresponsive, 55)]);
        a_slow_runtime_is_why_relists_are_slow(&mut s, &Inputs::new(&[], &facts));
        assert_eq!(s.of(CauseId::RuntimeUnresponsive), 44);
        let hung = [finding(FindingId::NodeCri, Severity::Critical)];
        let mut s = scores(&[(CauseId::PlegSlow, 45), (CauseId::RuntimeUnresponsive, 85)]);
        a_slow_runtime_is_why_relists_are_slow(&mut s, &Inputs::new(&hung, &facts));
        assert_eq!(s.of(CauseId::RuntimeUnresponsive), 85);
    }

    /// Slow writes with relists fine (a throttled disk under the runtime): the trace's answer
    /// still reaches the runtime cause's evidence.
    #[test]
    fn the_traces_answer_reaches_the_runtime_cause_without_slow_relists() {
        let mut facts = facts();
        facts.attribution = Some(crate::checks::trace::Attributed {
            attribution: crate::checks::trace::Attribution::DiskIowait {
                device: Some("7:0".into()),
            },
            why: "eBPF attribution disk-iowait: (most on device 7:0, loop0)".into(),
        });
        let mut s = scores(&[(CauseId::RuntimeUnresponsive, 55)]);
        a_slow_runtime_is_why_relists_are_slow(&mut s, &Inputs::new(&[], &facts));
        assert!(
            s.get(CauseId::RuntimeUnresponsive)
                .evidence
                .iter()
                .any(|l| l.contains("most on device 7:0")),
            "{s:?}"
        );
        assert_eq!(s.of(CauseId::PlegSlow), 0);
    }

    #[test]
    fn a_pod_that_never_started_lifts_only_raised_causes() {
        let f = [finding(FindingId::PodNotStarted, Severity::Critical)];
        let facts = facts();
        let mut s = scores(&[(CauseId::PlegSlow, 50), (CauseId::Certificate, 0)]);
        a_pod_that_never_started_supports_every_cause(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::PlegSlow), 60);
        assert_eq!(s.of(CauseId::Certificate), 0);
    }

    /// The scenario suite run twice in a row: cert-rotation-stuck judged 3 minutes after the
    /// previous round's OOM loop (API side: 4 starts in 3 minutes, a pending client CSR, Unknown).
    #[test]
    fn a_certificate_problem_holds_restarts_below_it() {
        let facts = facts();
        let restarts = finding(FindingId::KubeletRestarts, Severity::Critical);
        let refused = finding(FindingId::KubeletAuth, Severity::Warning);
        let run = |f: &[crate::checks::Finding]| {
            let mut s = scores(&[(CauseId::KubeletStarved, 99), (CauseId::Certificate, 90)]);
            a_certificate_problem_explains_the_restarts(&mut s, &Inputs::new(f, &facts));
            s.of(CauseId::KubeletStarved)
        };
        assert_eq!(run(&[restarts.clone(), refused.clone()]), 89);
        // Without a certificate signal the restarts stand.
        assert_eq!(run(std::slice::from_ref(&restarts)), 99);
        // The node shows the kubelet itself in trouble: both stand, ordered by their evidence.
        for itself in [
            finding(FindingId::NodeOom, Severity::Critical),
            finding(FindingId::KubeletUnresponsive, Severity::Warning),
            finding(FindingId::CpuStarved(Component::Kubelet), Severity::Warning),
        ] {
            assert_eq!(run(&[restarts.clone(), refused.clone(), itself]), 99);
        }
    }

    #[test]
    fn a_restart_loop_holds_pleg_and_runtime_below_starved() {
        let f = [finding(FindingId::KubeletRestarts, Severity::Critical)];
        let facts = facts();
        let mut s = scores(&[
            (CauseId::KubeletStarved, 90),
            (CauseId::PlegSlow, 95),
            (CauseId::RuntimeUnresponsive, 45),
        ]);
        a_restart_loop_explains_a_fresh_kubelet(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(s.of(CauseId::PlegSlow), 89);
        assert_eq!(s.of(CauseId::RuntimeUnresponsive), 45);
    }

    /// Round 1: 6.5 min into runtime-frozen, healthz syncloop failed and kubelet-starved was listed
    /// high with a restart. And 15 s in, /metrics and /stats/summary hung while healthz answered.
    #[test]
    fn a_runtime_outage_holds_pleg_and_starved_below_it() {
        let facts = facts();
        for down in [
            FindingId::NodeCri,
            FindingId::KubeletWaitsOnRuntime,
            FindingId::NodeRuntimeSocket,
        ] {
            let f = [
                finding(down.clone(), Severity::Critical),
                finding(FindingId::Healthz, Severity::Critical),
            ];
            let mut s = scores(&[
                (CauseId::RuntimeUnresponsive, 65),
                (CauseId::PlegSlow, 85),
                (CauseId::KubeletStarved, 70),
            ]);
            a_runtime_outage_explains_its_symptoms(&mut s, &Inputs::new(&f, &facts));
            assert_eq!(s.of(CauseId::PlegSlow), 64, "{down}");
            assert!(s.of(CauseId::KubeletStarved) < REPORT_SCORE, "{down}");
        }
        // ... unless the kubelet itself is starved on the node.
        let f = [
            finding(FindingId::NodeCri, Severity::Critical),
            finding(
                FindingId::CpuStarved(Component::Kubelet),
                Severity::Critical,
            ),
        ];
        let mut s = scores(&[
            (CauseId::RuntimeUnresponsive, 85),
            (CauseId::KubeletStarved, 90),
        ]);
        a_runtime_outage_explains_its_symptoms(&mut s, &Inputs::new(&f, &facts));
        assert_eq!(
            s.of(CauseId::KubeletStarved),
            84,
            "a cause of its own, below the runtime"
        );
    }

    #[test]
    fn a_failing_syncloop_during_a_pleg_stall_is_its_symptom() {
        let f = [
            finding(FindingId::Healthz, Severity::Critical),
            finding(FindingId::PlegLastSeen, Severity::Critical),
        ];
        let facts = facts();
        let mut s = scores(&[(CauseId::PlegSlow, 80), (CauseId::KubeletStarved, 80)]);
        a_stalled_sync_loop_follows_pleg(&mut s, &Inputs::new(&f, &facts));
        assert!(s.of(CauseId::KubeletStarved) < REPORT_SCORE);
    }

    #[test]
    fn a_silent_node_with_nothing_else_keeps_down_and_partition_open() {
        let facts = silent();
        let mut s = scores(&[]);
        nothing_separates_down_from_partition(&mut s, &Inputs::new(&[], &facts));
        assert_eq!(s.of(CauseId::KubeletDown), 35);
        assert_eq!(s.of(CauseId::ApiPartition), 35);
    }
}
