//! Rendering the report: a table a person reads in ten seconds (verdict first, then findings by
//! domain), or the JSON/YAML contract.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::{Cell, Color, ContentArrangement, Table};

use crate::Report;
use crate::checks::{Domain, Finding, Severity};
use crate::error::Error;
use crate::verdict::{Cause, CauseId, Confidence};

/// Output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human report.
    Table,
    /// The human report with every evidence line, each finding's id and every cause's fix.
    Wide,
    /// The `nodehealth/v1` JSON report.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Render the report.
pub fn render(
    report: &Report,
    format: Format,
    color: bool,
    width: Option<u16>,
) -> Result<String, Error> {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(report).map_err(|e| Error::Serialize {
                format: "json",
                message: e.to_string(),
            })?;
            text.push('\n');
            Ok(text)
        }
        Format::Yaml => serde_saphyr::to_string(report).map_err(|e| Error::Serialize {
            format: "yaml",
            message: e.to_string(),
        }),
        Format::Table => Ok(table(report, color, width, false)),
        Format::Wide => Ok(table(report, color, width, true)),
    }
}

/// `text` safe to print on a terminal: control characters (C0 including newlines, DEL, C1, so
/// ESC and CSI sequences) and the Unicode bidirectional overrides are shown as escapes instead of
/// acting on the terminal. Node-controlled text (log lines, condition messages, event text, names)
/// can hold them: a line of a kubelet log could otherwise repaint the screen, hide itself or fake
/// a verdict line. JSON and YAML escape them already.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape_unprintable(text, false)
}

/// [`printable`], keeping line breaks and tabs (a message of several lines).
pub fn printable_lines(text: &str) -> std::borrow::Cow<'_, str> {
    escape_unprintable(text, true)
}

fn escape_unprintable(text: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let acts = |c: char| {
        (c.is_control() && !(keep_lines && matches!(c, '\n' | '\t')))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

struct Paint {
    on: bool,
}

impl Paint {
    fn code(&self, text: &str, code: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, text: &str) -> String {
        self.code(text, "1")
    }
    fn dim(&self, text: &str) -> String {
        self.code(text, "2")
    }
    fn severity(&self, text: &str, severity: Severity) -> String {
        match severity {
            Severity::Critical => self.code(text, "1;31"),
            Severity::Warning => self.code(text, "33"),
            Severity::Unknown => self.code(text, "35"),
            Severity::Info => self.code(text, "36"),
            Severity::Ok => self.code(text, "32"),
        }
    }
}

fn severity_color(severity: Severity) -> Color {
    match severity {
        Severity::Critical => Color::Red,
        Severity::Warning => Color::Yellow,
        Severity::Unknown => Color::Magenta,
        Severity::Info => Color::Cyan,
        Severity::Ok => Color::Green,
    }
}

fn cause_severity(cause: &Cause) -> Severity {
    match (cause.id, cause.confidence) {
        (CauseId::Healthy, _) => Severity::Ok,
        (_, Confidence::High) => Severity::Critical,
        _ => Severity::Warning,
    }
}

fn cause_title(cause: &Cause) -> String {
    let mut title = format!(
        "{} ({} confidence)",
        cause.id_text(),
        confidence_text(cause.confidence)
    );
    if let Some(a) = cause.attribution {
        let a = serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(title, " attribution: {a}");
    }
    title
}

fn confidence_text(c: Confidence) -> &'static str {
    match c {
        Confidence::High => "high",
        Confidence::Medium => "medium",
        Confidence::Low => "low",
    }
}

impl Cause {
    /// The vocabulary id as text.
    pub fn id_text(&self) -> String {
        serde_json::to_value(self.id)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn table(report: &Report, color: bool, width: Option<u16>, wide: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::new();
    let layers: Vec<String> = report
        .verdict
        .layers
        .iter()
        .filter_map(|l| serde_json::to_value(l).ok()?.as_str().map(str::to_string))
        .collect();
    let _ = writeln!(
        out,
        "{} {}   observed {}   layers: {}   window {:.1}s",
        p.bold("NODE"),
        p.bold(&printable(&report.node)),
        report.observed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        layers.join(","),
        report.evidence.window.requested_seconds
    );
    if wide || report.verdict.platform.kind != crate::checks::platform::PlatformKind::Unknown {
        let _ = writeln!(
            out,
            "{} {} (from {})",
            p.bold("PLATFORM"),
            report.verdict.platform.kind.name(),
            printable(&report.verdict.platform.from)
        );
        if let (true, Some(k)) = (wide, &report.verdict.platform.kubelet) {
            let _ = writeln!(out, "{} {}", p.bold("KUBELET"), k.describe());
        }
    }
    out.push('\n');
    match report.verdict.causes.first() {
        None => {
            let text = if report.evidence.node.data().is_some() {
                "no cause in the vocabulary matches the evidence: read the findings"
            } else {
                "could not diagnose: not enough evidence"
            };
            let _ = writeln!(
                out,
                "{} {}",
                p.bold("VERDICT"),
                p.severity(text, Severity::Unknown)
            );
        }
        Some(top) => {
            let sev = cause_severity(top);
            let _ = writeln!(
                out,
                "{} {} — {}",
                p.bold("VERDICT"),
                p.severity(&cause_title(top), sev),
                printable(&top.summary)
            );
            let _ = writeln!(out, "  {} {}", p.bold("Fix:  "), printable(&top.fix));
            let _ = writeln!(out, "  {} {}", p.bold("Avoid:"), printable(&top.avoid));
            let _ = writeln!(out, "  {}", p.bold("Because:"));
            for line in &top.evidence {
                let _ = writeln!(out, "    - {}", printable(line));
            }
        }
    }
    if report.verdict.causes.len() > 1 {
        let _ = writeln!(out, "\n{}", p.bold("Other probable causes:"));
        for (i, c) in report.verdict.causes.iter().enumerate().skip(1) {
            let _ = writeln!(
                out,
                "  {}. {} — {}",
                i + 1,
                p.severity(&cause_title(c), cause_severity(c)),
                printable(&c.summary)
            );
            for line in c.evidence.iter().take(if wide { usize::MAX } else { 3 }) {
                let _ = writeln!(out, "     - {}", printable(line));
            }
            let _ = writeln!(out, "     fix: {}", printable(&c.fix));
            let _ = writeln!(out, "     avoid: {}", printable(&c.avoid));
        }
    }

    let (problems, passed): (Vec<&Finding>, Vec<&Finding>) = report
        .findings
        .iter()
        .partition(|f| f.severity > Severity::Ok);
    if !problems.is_empty() {
        // Findings by domain; domains ordered by their worst finding.
        let mut by_domain: BTreeMap<Domain, Vec<&Finding>> = BTreeMap::new();
        for f in &problems {
            by_domain.entry(f.domain).or_default().push(f);
        }
        let mut domains: Vec<(Domain, Vec<&Finding>)> = by_domain.into_iter().collect();
        domains.sort_by_key(|(d, fs)| (std::cmp::Reverse(fs.iter().map(|f| f.severity).max()), *d));
        let mut t = Table::new();
        t.load_style(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
        t.set_content_arrangement(ContentArrangement::Dynamic);
        // Colour comes only from the cells we colour (and only when `color`); the table itself
        // still measures the terminal when there is one.
        if color {
            t.enforce_styling();
        }
        match width {
            Some(w) => {
                t.set_width(w);
            }
            // Not a terminal, or one that reports no usable size (a bare pty says 0).
            None if t.width().is_none_or(|w| w < 60) => {
                t.set_width(120);
            }
            None => {}
        }
        if wide {
            t.set_header(vec!["DOMAIN", "SEVERITY", "ID", "FINDING"]);
        } else {
            t.set_header(vec!["DOMAIN", "SEVERITY", "FINDING"]);
        }
        for (domain, mut fs) in domains {
            fs.sort_by_key(|f| std::cmp::Reverse(f.severity));
            for f in fs {
                let mut text = printable(&f.summary).into_owned();
                for line in f.evidence.iter().take(if wide { usize::MAX } else { 2 }) {
                    let _ = write!(text, "\n- {}", printable(line));
                }
                if let Some(fix) = &f.remediation {
                    let _ = write!(text, "\nfix: {}", printable(fix));
                }
                let sev = serde_json::to_value(f.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let mut sev_cell = Cell::new(sev);
                if color {
                    sev_cell = sev_cell.fg(severity_color(f.severity));
                }
                let mut row = vec![Cell::new(domain.name()), sev_cell];
                if wide {
                    row.push(Cell::new(f.id.to_string()));
                }
                row.push(Cell::new(text));
                t.add_row(row);
            }
        }
        let _ = writeln!(out, "\n{}", p.bold("Findings"));
        let _ = writeln!(out, "{t}");
    }
    if let Some(h) = report.evidence.history.data() {
        out.push_str(&history_section(h, &p));
    }
    if !passed.is_empty() {
        let names: Vec<String> = passed.iter().map(|f| f.id.to_string()).collect();
        let _ = writeln!(
            out,
            "\n{} {}",
            p.severity(&format!("Passed ({}):", passed.len()), Severity::Ok),
            p.dim(&names.join(", "))
        );
    }
    for l in &report.verdict.limitations {
        let _ = writeln!(out, "{} {}", p.dim("Note:"), p.dim(&printable(l)));
    }
    out
}

/// Width of a history sparkline, in columns.
const SPARK_WIDTH: usize = 30;

/// The history from Prometheus: per signal a sparkline over the range and its onset, peak and now.
fn history_section(h: &crate::history::History, p: &Paint) -> String {
    use crate::history::{SeriesStatus, clock, show, signal, sparkline};
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} {} – {} UTC from {}, step {:.0}s",
        p.bold("History"),
        h.start.strftime("%Y-%m-%d %H:%M"),
        clock(h.end),
        printable(&h.source),
        h.step_seconds
    );
    let (start, end) = (h.start.as_second(), h.end.as_second());
    for s in &h.signals {
        let spec = signal(&s.id);
        let title = spec.map_or(s.id.as_str(), |x| x.title);
        let unit = spec.map_or("", |x| x.unit);
        let t = &s.timeline;
        let (line, text) = match &s.status {
            SeriesStatus::Missing => (" ".repeat(SPARK_WIDTH), p.dim("no series")),
            SeriesStatus::Failed { message } => (
                " ".repeat(SPARK_WIDTH),
                p.dim(&format!("query failed: {}", printable(message))),
            ),
            SeriesStatus::Found => {
                let mut text = match (t.onset, t.recovered) {
                    (Some(o), None) => {
                        p.severity(&format!("degraded since {}", clock(o)), Severity::Warning)
                    }
                    (Some(o), Some(r)) => {
                        format!("degraded {}–{}", clock(o), clock(r))
                    }
                    (None, _) => "ok".to_string(),
                };
                if let Some((at, v)) = t.peak {
                    let _ = write!(text, "  worst {} {}", show(v, unit), clock(at));
                }
                if let Some((_, v)) = t.now {
                    let _ = write!(text, "  now {}", show(v, unit));
                }
                if let Some(at) = t.silent_since {
                    let _ = write!(text, "  silent since {}", clock(at));
                }
                (
                    sparkline(&s.points, start, end, SPARK_WIDTH, s.worse, s.threshold),
                    text,
                )
            }
        };
        let _ = writeln!(out, "  {title:<31} {line} {text}");
    }
    for n in &h.notes {
        let _ = writeln!(out, "  {}", p.dim(&printable(n)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests_support::healthy_evidence;

    /// Escape sequences, carriage returns, line breaks and bidi overrides in node-controlled
    /// text are shown, never acted on; ordinary text (UTF-8 included) is untouched.
    #[test]
    fn node_text_cannot_drive_the_terminal() {
        assert!(matches!(
            printable("runc 1.2 — ok ✓"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\x1b[2J\x1b]0;pwned\x07b\rc\nVERDICT healthy\u{202e}x\u{9b}y\x7f"),
            "a\\u{1b}[2J\\u{1b}]0;pwned\\u{7}b\\rc\\nVERDICT healthy\\u{202e}x\\u{9b}y\\u{7f}"
        );
        assert_eq!(printable_lines("one\n\ttwo\x1b[1m"), "one\n\ttwo\\u{1b}[1m");
        // Through the whole table: a finding whose text came from a node.
        let mut report = crate::diagnose(crate::checks::tests_support::healthy_evidence());
        report.findings[0].severity = Severity::Warning;
        report.findings[0].summary = "evil\x1b[31m\rVERDICT healthy".into();
        report.findings[0].evidence = vec!["\x1b]8;;http://x\x07link".into()];
        report.node = "node\x1b[8m".into();
        let text = table(&report, false, Some(200), true);
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\x07'),
            "{text}"
        );
        assert!(text.contains("evil\\u{1b}[31m\\rVERDICT healthy"), "{text}");
    }

    #[test]
    fn table_puts_the_verdict_first_and_has_no_colour_when_off() {
        let report = crate::diagnose(healthy_evidence());
        let text = render(&report, Format::Table, false, None).unwrap();
        let verdict_at = text.find("VERDICT").unwrap();
        assert!(verdict_at < text.find("Passed").unwrap());
        assert!(text.contains("healthy"), "{text}");
        assert!(!text.contains('\x1b'), "no ANSI codes without colour");
        let coloured = render(&report, Format::Table, true, None).unwrap();
        assert!(coloured.contains('\x1b'));
    }

    #[test]
    fn json_follows_the_contract() {
        let report = crate::diagnose(healthy_evidence());
        let text = render(&report, Format::Json, false, None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], "nodehealth/v1");
        assert_eq!(v["node"], "node-a");
        assert!(v["observedAt"].is_string());
        assert!(v["evidence"].is_object());
        let f = &v["findings"][0];
        for key in ["id", "domain", "severity", "summary", "remediation"] {
            assert!(f.get(key).is_some(), "finding lacks {key}: {f}");
        }
        let c = &v["verdict"]["causes"][0];
        assert_eq!(c["id"], "healthy");
        for key in ["confidence", "evidence", "fix", "avoid"] {
            assert!(c.get(key).is_some(), "cause lacks {key}");
        }
        // The report is replayable: it deserializes back.
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.findings.len(), report.findings.len());
    }

    #[test]
    fn infinite_ttl_stays_a_string_in_json_and_yaml() {
        let mut e = healthy_evidence();
        crate::checks::tests_support::set_scalar(
            crate::checks::tests_support::end(&mut e),
            "kubelet_certificate_manager_client_ttl_seconds",
            &[],
            f64::INFINITY,
        );
        let report = crate::diagnose(e);
        let json = render(&report, Format::Json, false, None).unwrap();
        assert!(json.contains("\"+Inf\""), "JSON would turn +Inf into null");
        let yaml = render(&report, Format::Yaml, false, None).unwrap();
        assert!(
            yaml.contains("\"+Inf\"") || yaml.contains("'+Inf'"),
            "+Inf must be a quoted string in YAML"
        );
    }

    #[test]
    fn yaml_has_the_same_top_level_keys() {
        let report = crate::diagnose(healthy_evidence());
        let text = render(&report, Format::Yaml, false, None).unwrap();
        for key in [
            "apiVersion: nodehealth/v1",
            "node: node-a",
            "observedAt:",
            "findings:",
            "verdict:",
            "evidence:",
        ] {
            assert!(text.contains(key), "yaml lacks {key}");
        }
    }
}
