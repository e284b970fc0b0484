//! Command line: flags, orchestration of collect -> diagnose -> render, exit codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::collect::{self, CollectOptions, KubeOptions};
use crate::error::Error;
use crate::render::{self, Format};
use crate::units::parse_go_duration;
use crate::{diagnose, exit};

/// Why is this node's kubelet not responding, and what is the safe fix?
///
/// Runs API-side checks (Node, Lease, CSRs, Events, and the kubelet's healthz, configz,
/// metrics, stats and goroutine dump through the API server's node proxy), then ranks the
/// probable causes. Exit codes: 0 healthy, 1 problems found, 2 could not diagnose.
#[derive(Debug, Parser)]
#[command(name = "kubectl-nodehealth", bin_name = "kubectl nodehealth", version)]
pub struct Cli {
    /// Not yet implemented subcommands.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The node to diagnose.
    pub node: Option<String>,

    /// Only API-side checks (the node probe pod arrives later; today every run is API-side).
    #[arg(long)]
    pub api_only: bool,

    /// Observation window between the two /metrics scrapes (Go duration: 5s, 1m30s).
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    pub duration: Duration,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// No colour (also when NO_COLOR is set, or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,

    /// Timeout for each API request.
    #[arg(long, default_value = "10s", value_parser = parse_duration_flag)]
    pub timeout: Duration,

    /// Write everything raw into a bundle (not implemented yet).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,

    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// Namespace for the probe pod (accepted for kubectl compatibility; unused by API-side checks).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// Subcommands of the design that this build does not implement yet.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// API-side checks for every node, worst first (not implemented yet).
    Scan,
    /// Live per-second PLEG timeline (not implemented yet).
    Pleg {
        /// The node.
        node: String,
    },
    /// Prometheus rules with these thresholds (not implemented yet).
    Alerts,
    /// Delete leftover probe pods (not implemented yet).
    Cleanup,
}

fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    let seconds = parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (examples: 5s, 500ms, 1m30s)"))?;
    if !(0.0..=24.0 * 3600.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Colour only on a terminal, and not with --no-color or NO_COLOR (any non-empty value).
pub fn use_color(
    no_color_flag: bool,
    no_color_env: Option<&std::ffi::OsStr>,
    is_terminal: bool,
) -> bool {
    !no_color_flag && no_color_env.is_none_or(|v| v.is_empty()) && is_terminal
}

/// Run the plugin; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8, Error> {
    match &cli.command {
        Some(Command::Scan) => return Err(Error::NotYet("kubectl nodehealth scan")),
        Some(Command::Pleg { .. }) => return Err(Error::NotYet("kubectl nodehealth pleg")),
        Some(Command::Alerts) => return Err(Error::NotYet("kubectl nodehealth alerts")),
        Some(Command::Cleanup) => return Err(Error::NotYet("kubectl nodehealth cleanup")),
        None => {}
    }
    if cli.bundle.is_some() {
        return Err(Error::NotYet("--bundle"));
    }
    let Some(node) = cli.node.clone() else {
        return Err(Error::Usage(
            "which node? usage: kubectl nodehealth <node> [--duration 5s] [-o table|json|yaml]"
                .into(),
        ));
    };
    let target = collect::connect(&KubeOptions {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        timeout: cli.timeout,
    })
    .await?;
    let (evidence, _raw) = collect::collect(
        &target,
        &CollectOptions {
            node,
            window: cli.duration,
            timeout: cli.timeout,
        },
    )
    .await?;
    let report = diagnose(evidence);
    let stdout = std::io::stdout();
    let color = use_color(
        cli.no_color,
        std::env::var_os("NO_COLOR").as_deref(),
        stdout.is_terminal(),
    );
    let text = render::render(&report, cli.output, color, None)?;
    let mut out = stdout.lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::Output(e)),
    }
    Ok(report.exit_code())
}

/// Entry point for `main`: parse, run, print errors prefixed with the program name.
pub fn main_entry() -> u8 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubectl-nodehealth: cannot start the async runtime: {e}");
            return exit::UNDIAGNOSED;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl-nodehealth: {e}");
            exit::UNDIAGNOSED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "kubectl-nodehealth",
            "node-a",
            "--duration",
            "1m30s",
            "-o",
            "json",
            "--context",
            "c",
            "-n",
            "ns",
            "--kubeconfig",
            "/tmp/k",
        ])
        .unwrap();
        assert_eq!(cli.node.as_deref(), Some("node-a"));
        assert_eq!(cli.duration, Duration::from_secs(90));
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.timeout, Duration::from_secs(10));
        assert_eq!(cli.context.as_deref(), Some("c"));
        let default = Cli::try_parse_from(["kubectl-nodehealth", "n"]).unwrap();
        assert_eq!(default.duration, Duration::from_secs(5));
        assert_eq!(default.output, Format::Table);
        assert!(Cli::try_parse_from(["kubectl-nodehealth", "n", "--duration", "5"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-nodehealth", "n", "-o", "xml"]).is_err());
        let scan = Cli::try_parse_from(["kubectl-nodehealth", "scan"]).unwrap();
        assert!(matches!(scan.command, Some(Command::Scan)));
    }

    #[test]
    fn kubeconfig_flag_before_a_subcommand_still_selects_it() {
        // Regression: with args_conflicts_with_subcommands, `--kubeconfig k scan` made "scan"
        // the node name.
        let cli =
            Cli::try_parse_from(["kubectl-nodehealth", "--kubeconfig", "/k", "scan"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Scan)), "{cli:?}");
        assert_eq!(cli.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        let cli = Cli::try_parse_from([
            "kubectl-nodehealth",
            "--context",
            "c",
            "node-a",
            "-o",
            "yaml",
        ])
        .unwrap();
        assert_eq!(cli.node.as_deref(), Some("node-a"));
        assert!(cli.command.is_none());
    }

    #[test]
    fn colour_rules() {
        assert!(use_color(false, None, true));
        assert!(!use_color(false, None, false));
        assert!(!use_color(true, None, true));
        assert!(!use_color(false, Some(std::ffi::OsStr::new("1")), true));
        // NO_COLOR set but empty does not disable colour (no-color.org).
        assert!(use_color(false, Some(std::ffi::OsStr::new("")), true));
    }

    #[test]
    fn unimplemented_subcommands_say_so() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for args in [
            vec!["k", "scan"],
            vec!["k", "alerts"],
            vec!["k", "cleanup"],
            vec!["k", "pleg", "n"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let err = rt.block_on(run(cli)).unwrap_err();
            assert!(matches!(err, Error::NotYet(_)), "{err}");
        }
        let cli = Cli::try_parse_from(["k"]).unwrap();
        assert!(matches!(
            rt.block_on(run(cli)).unwrap_err(),
            Error::Usage(_)
        ));
    }
}
