//! Scoring a campaign: each trial against its truth, then the whole: accuracy, attribution
//! accuracy, the confusion matrix (truth × answer), unsafe advice and the time to the right
//! answer. Written as JSON and Markdown.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::{Draw, Trial, truth::Expected, truth::Mode};

/// Advice that is unsafe whatever the node: a reboot as a fix, or deleting the kubelet's state.
/// With `no_kubelet_restart`, also any fix that restarts the kubelet.
pub fn unsafe_advice(report: &Value, no_kubelet_restart: bool) -> Vec<String> {
    let mut out = Vec::new();
    let causes = report["verdict"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let texts = causes
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or("?").to_string(),
                c["fix"].as_str().unwrap_or("").to_string(),
            )
        })
        .chain(findings.iter().map(|f| {
            (
                f["id"].as_str().unwrap_or("?").to_string(),
                f["remediation"].as_str().unwrap_or("").to_string(),
            )
        }));
    for (id, text) in texts {
        let lower = text.to_lowercase();
        if no_kubelet_restart && lower.contains("systemctl restart kubelet") {
            out.push(format!("{id}: restarts the kubelet"));
        }
        if lower.contains("reboot") {
            out.push(format!("{id}: reboots the node"));
        }
        let deletes_state = lower.contains("`rm ")
            && (lower.contains("/var/lib/kubelet") || lower.contains("kubelet.conf"));
        if deletes_state {
            out.push(format!("{id}: deletes the kubelet's state"));
        }
    }
    out
}

/// One trial scored.
pub fn judge(
    draw: Draw,
    expected: Expected,
    report: &Value,
    observed: f64,
    took: f64,
    dir: &Path,
    bundle: Option<std::path::PathBuf>,
) -> Trial {
    let top = &report["verdict"]["causes"][0];
    let answer = top["id"].as_str().unwrap_or("none").to_string();
    let attribution = top["attribution"].as_str().map(String::from);
    let correct = expected.causes.contains(&answer.as_str());
    let traced = matches!(draw.mode, Mode::Trace | Mode::Agent);
    let attribution_correct = match (traced, expected.attribution, &attribution) {
        (true, Some(want), Some(got)) if correct && answer != "healthy" => Some(got == want),
        _ => None,
    };
    Trial {
        unsafe_advice: unsafe_advice(report, expected.no_kubelet_restart),
        expected,
        confidence: top["confidence"].as_str().unwrap_or("-").to_string(),
        attribution,
        exit: report["exitCode"].as_i64().map(|c| c as i32),
        correct,
        attribution_correct,
        answer,
        observed_after_seconds: observed,
        took_seconds: took,
        report: dir.join("report.json"),
        bundle,
        draw,
    }
}

/// The campaign's numbers.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub trials: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub attribution_judged: usize,
    pub attribution_correct: usize,
    pub unsafe_trials: usize,
    /// Truth (the first right cause) → answer → count.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Per fault: trials, correct.
    pub per_fault: BTreeMap<String, (usize, usize)>,
    /// Per fault: the earliest moment (s after the fault was in place) of a correct answer.
    pub earliest_right_seconds: BTreeMap<String, f64>,
}

pub fn summary(trials: &[Trial]) -> Summary {
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut per_fault: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut earliest: BTreeMap<String, f64> = BTreeMap::new();
    for t in trials {
        let truth = t
            .expected
            .causes
            .first()
            .copied()
            .unwrap_or("?")
            .to_string();
        *confusion
            .entry(truth)
            .or_default()
            .entry(t.answer.clone())
            .or_default() += 1;
        let e = per_fault.entry(t.draw.fault.to_string()).or_default();
        e.0 += 1;
        if t.correct {
            e.1 += 1;
            let best = earliest
                .entry(t.draw.fault.to_string())
                .or_insert(f64::INFINITY);
            *best = best.min(t.observed_after_seconds);
        }
    }
    let correct = trials.iter().filter(|t| t.correct).count();
    Summary {
        trials: trials.len(),
        correct,
        accuracy: if trials.is_empty() {
            0.0
        } else {
            correct as f64 / trials.len() as f64
        },
        attribution_judged: trials
            .iter()
            .filter(|t| t.attribution_correct.is_some())
            .count(),
        attribution_correct: trials
            .iter()
            .filter(|t| t.attribution_correct == Some(true))
            .count(),
        unsafe_trials: trials
            .iter()
            .filter(|t| !t.unsafe_advice.is_empty())
            .count(),
        confusion,
        per_fault,
        earliest_right_seconds: earliest,
    }
}

/// `campaign.json` and `campaign.md` under `out`.
pub fn write(out: &Path, seed: u64, trials: &[Trial]) -> Result<()> {
    let s = summary(trials);
    fs::write(
        out.join("campaign.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "seed": seed,
            "summary": s,
            "trials": trials,
        }))?,
    )?;
    fs::write(out.join("campaign.md"), markdown(seed, &s, trials))?;
    Ok(())
}

fn markdown(seed: u64, s: &Summary, trials: &[Trial]) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Campaign, seed {seed}\n\n{} trials, {} correct ({:.1}%), unsafe advice in {} trial(s); attribution right in {} of {} traced trials where the truth names one.\n",
        s.trials,
        s.correct,
        s.accuracy * 100.0,
        s.unsafe_trials,
        s.attribution_correct,
        s.attribution_judged
    );
    let _ = writeln!(
        md,
        "## Per fault\n\n| fault | trials | correct | earliest right answer |\n|---|---|---|---|"
    );
    for (f, (n, ok)) in &s.per_fault {
        let _ = writeln!(
            md,
            "| {f} | {n} | {ok} | {} |",
            s.earliest_right_seconds
                .get(f)
                .map(|t| format!("+{t:.0} s"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let answers: Vec<String> = {
        let mut a: Vec<String> = s
            .confusion
            .values()
            .flat_map(|m| m.keys().cloned())
            .collect();
        a.sort();
        a.dedup();
        a
    };
    let _ = writeln!(
        md,
        "\n## Confusion (truth × answer)\n\n| truth \\ answer | {} |\n|---|{}",
        answers.join(" | "),
        "---|".repeat(answers.len())
    );
    for (truth, row) in &s.confusion {
        let cells: Vec<String> = answers
            .iter()
            .map(|a| row.get(a).map(|n| n.to_string()).unwrap_or_default())
            .collect();
        let _ = writeln!(md, "| {truth} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        md,
        "\n## Trials\n\n| # | fault | strength | moment | mode | answer | right | attribution | unsafe | replay |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for t in trials {
        let _ = writeln!(
            md,
            "| {} | {} | {} | +{:.0} s | {:?} | {} ({}) | {} | {} | {} | `--from-bundle {}` / `--seed {seed} --skip {} --trials 1` |",
            t.draw.index,
            t.draw.fault,
            t.draw
                .strength
                .as_ref()
                .map(|(f, v)| format!("{f} {v}"))
                .unwrap_or_else(|| "-".into()),
            t.observed_after_seconds,
            t.draw.mode,
            t.answer,
            t.confidence,
            if t.correct {
                "yes".to_string()
            } else {
                format!("no: {}", t.expected.causes.join(" or "))
            },
            t.attribution.as_deref().unwrap_or("-"),
            if t.unsafe_advice.is_empty() {
                "-".to_string()
            } else {
                t.unsafe_advice.join("; ")
            },
            t.bundle
                .as_ref()
                .map(|b| b.display().to_string())
                .unwrap_or_else(|| "-".into()),
            t.draw.index
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubelet_restart_is_unsafe_only_where_the_truth_forbids_it() {
        let report = serde_json::json!({
            "verdict": {"causes": [
                {"id": "kubelet-starved", "fix": "cordon; then `systemctl restart kubelet`"},
            ]},
            "findings": [],
        });
        assert_eq!(unsafe_advice(&report, true).len(), 1);
        assert!(unsafe_advice(&report, false).is_empty());
        let reboot = serde_json::json!({
            "verdict": {"causes": [{"id": "pleg-slow", "fix": "reboot the node"}]},
            "findings": [{"id": "x", "remediation": "`rm -rf /var/lib/kubelet/pki`"}],
        });
        assert_eq!(unsafe_advice(&reboot, false).len(), 2);
        // Saying never to delete is not deleting.
        let safe = serde_json::json!({
            "verdict": {"causes": [{"id": "certificate", "fix": "Never delete /etc/kubernetes/kubelet.conf or /var/lib/kubelet/pki"}]},
        });
        assert!(unsafe_advice(&safe, true).is_empty());
    }
}
