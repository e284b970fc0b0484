//! Progress a person can see on stderr while the plugin waits (the observation window, the probe
//! pod's start, the agent's steps and trace, a scan): one spinner line with the current step and
//! the time spent, cleared before the report is printed. Only on a terminal, and never when the
//! output is JSON/YAML going to a pipe, `NO_COLOR` is set or `TERM=dumb` — a script reading
//! stderr sees only messages.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::render::Format;

/// The spinner, or nothing (cheap to clone: clones share one line).
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<ProgressBar>);

/// Whether progress is shown, from what the process is connected to.
pub fn wanted_from(
    stderr_tty: bool,
    stdout_tty: bool,
    format: Format,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    let machine_output = matches!(format, Format::Json | Format::Yaml) && !stdout_tty;
    stderr_tty
        && !machine_output
        && no_color.is_none_or(|v| v.is_empty())
        && term.is_none_or(|t| t != "dumb")
}

/// [`wanted_from`] for this process.
pub fn wanted(format: Format) -> bool {
    wanted_from(
        std::io::stderr().is_terminal(),
        std::io::stdout().is_terminal(),
        format,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

impl Progress {
    /// A spinner with `message` when `enabled`, else nothing.
    pub fn start(enabled: bool, message: impl Into<Cow<'static, str>>) -> Progress {
        if !enabled {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// Nothing shown.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// Whether anything is shown.
    pub fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    /// The current step.
    pub fn step(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }

    /// A line above the spinner (a warning during the run) that the spinner does not overwrite.
    pub fn println(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.suspend(|| eprintln_safe(line)),
            None => eprintln_safe(line),
        }
    }

    /// Clears the line: the report follows.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn eprintln_safe(line: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        crate::render::printable_lines(line)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn only_for_a_person_at_a_terminal() {
        assert!(wanted_from(true, true, Format::Table, None, None));
        assert!(wanted_from(
            true,
            true,
            Format::Json,
            None,
            Some(OsStr::new("xterm"))
        ));
        // JSON to a pipe: a script is reading.
        assert!(!wanted_from(true, false, Format::Json, None, None));
        assert!(!wanted_from(true, false, Format::Yaml, None, None));
        // A table to a pipe still has a person on stderr.
        assert!(wanted_from(true, false, Format::Table, None, None));
        assert!(!wanted_from(false, true, Format::Table, None, None));
        assert!(!wanted_from(
            true,
            true,
            Format::Table,
            Some(OsStr::new("1")),
            None
        ));
        assert!(wanted_from(
            true,
            true,
            Format::Table,
            Some(OsStr::new("")),
            None
        ));
        assert!(!wanted_from(
            true,
            true,
            Format::Table,
            None,
            Some(OsStr::new("dumb"))
        ));
        assert!(!Progress::start(false, "x").is_shown());
    }
}
