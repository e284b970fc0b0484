//! Command line: flags, orchestration of collect -> diagnose -> render, exit codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::collect::{self, CollectOptions, KubeOptions};
use crate::error::Error;
use crate::probe::{self, ProbeOptions, RunIdentity};
use crate::render::{self, Format};
use crate::{diagnose, exit};

/// A line on stderr that never panics: after SIGHUP the terminal is gone and writes fail, and a
/// panic there would skip deleting the probe pod (`eprintln!` panics on a failed write).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        // Messages quote node-controlled text (pod events, the agent's errors): no escape
        // sequence of theirs reaches the terminal.
        let text = format!($($arg)*);
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}",
            $crate::render::printable_lines(&text)
        );
    }};
}

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
    #[arg(value_parser = parse_node_name)]
    pub node: Option<String>,

    /// Only API-side checks: no probe pod on the node.
    #[arg(long)]
    pub api_only: bool,

    /// How long the kubelet gets to start the probe pod [default: 30s, widened to 90s when the
    /// API evidence shows slow PLEG relists; a value given here is kept as is]. A pod not started
    /// in time is itself evidence.
    #[arg(long, value_parser = parse_duration_flag)]
    pub pod_timeout: Option<Duration>,

    /// The node agent image: for a real cluster, the reference `cargo xtask image --push`
    /// printed (a copy in your own registry). The default is set when the plugin is built.
    #[arg(long, default_value = probe::DEFAULT_IMAGE)]
    pub image: String,

    /// A Secret in the probe's namespace (-n) to pull the agent image with, for a private
    /// registry (repeatable): `kubectl create secret docker-registry NAME -n kube-system …`.
    #[arg(long = "image-pull-secret", value_name = "NAME", value_parser = parse_secret_name)]
    pub image_pull_secrets: Vec<String>,

    /// imagePullPolicy of the probe pod.
    #[arg(long, default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,

    /// priorityClassName for the probe pod, e.g. system-node-critical: gets past the kubelet's
    /// eviction admission under node pressure, and may preempt workloads. Only on request.
    #[arg(long)]
    pub priority_class: Option<String>,

    /// The node agent's evidence from a standalone run on the node, when no probe pod can start
    /// (the kubelet is down, frozen or cut off): `tracer-user probe --host-root / -o json >
    /// node.json` over SSH, then this flag. Judged together with the API side; no probe pod.
    #[arg(long, value_name = "FILE", conflicts_with = "api_only")]
    pub node_evidence: Option<PathBuf>,

    /// Attach the agent's eBPF run-queue tracer over the window.
    #[arg(long)]
    pub trace: bool,

    /// With --trace: let the agent see the kubelet's CRI calls through uprobes on its gRPC client,
    /// where only the kubelet pays and every call is named (the default reads them on its socket,
    /// which slows every task's syscalls on the node for the window). Linux allows uprobes only
    /// with CAP_SYS_ADMIN: this adds it to the probe pod. Implies --trace.
    #[arg(long)]
    pub trace_uprobes: bool,

    /// Observation window between the two /metrics scrapes (Go duration: 5s, 1m30s).
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    pub duration: Duration,

    /// How far back the kubelet's and runtime's logs are read (node log query and node agent).
    #[arg(long, default_value = "15m", value_parser = parse_duration_flag)]
    pub log_since: Duration,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,

    /// No colour (also when NO_COLOR is set, or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,

    /// Timeout for each API request. The kubelet's healthz through the node proxy waits 3 s
    /// longer, for the API server's own verdict on the connection (its TLS handshake timeout
    /// is 10 s: a kubelet that holds its port but does not run), and is asked again on a fresh
    /// connection while the metrics window lasts.
    #[arg(long, alias = "request-timeout", default_value = "10s", value_parser = parse_duration_flag, global = true)]
    pub timeout: Duration,

    /// Also write everything this run saw, raw and timestamped, into a gzip'd tar (the report,
    /// the kubelet's raw answers, the node evidence, the longest waits as folded stacks).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,

    /// Replay a bundle through this build's checks and verdict instead of collecting (no
    /// cluster needed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["bundle", "node_evidence", "api_only"])]
    pub from_bundle: Option<PathBuf>,

    /// Read this node's history from your Prometheus: `auto` (found among the cluster's services
    /// and read through the API server), a service as NAMESPACE/NAME:PORT, or a URL
    /// (http://localhost:9090). Adds a timeline per signal and which one degraded first.
    #[arg(long, value_name = "auto|NS/NAME:PORT|URL", value_parser = parse_prometheus, global = true)]
    pub prometheus: Option<String>,

    /// How far back `--prometheus` reads (default 1h).
    #[arg(long, value_parser = parse_since, global = true)]
    pub since: Option<Duration>,

    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// The kubeconfig cluster to use (instead of the context's).
    #[arg(long, global = true)]
    pub cluster: Option<String>,

    /// The kubeconfig user to use (instead of the context's).
    #[arg(long, global = true)]
    pub user: Option<String>,

    /// Username to impersonate for the operation, as kubectl --as.
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,

    /// Group to impersonate (repeatable), as kubectl --as-group.
    #[arg(long = "as-group", global = true, requires = "as_user")]
    pub as_groups: Vec<String>,

    /// Namespace for the probe pod (default kube-system: see the README for why).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// Subcommands of the design that this build does not implement yet.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// API-side checks for every node, worst first: Ready and pressure conditions, leases,
    /// pending CSRs, the flight recorder's reports, with the probable cause. A fixed number of
    /// API calls (6) for any number of nodes. Exit 0 when no node has a problem, 1 otherwise.
    Scan {
        /// Only nodes with these labels (a label selector, e.g. `node-role.kubernetes.io/worker`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Live per-second PLEG timeline from the kubelet's metrics: relists and their duration,
    /// the relist interval, the age of the last finished relist (what shows a stuck relist),
    /// the runtime's list calls. Ctrl-C ends it early. `-o json`: one JSON object per line.
    Pleg {
        /// The node.
        node: String,
        /// How long to watch (Go duration: 30s, 5m).
        #[arg(long = "duration", default_value = "1m", value_parser = parse_duration_flag)]
        watch: Duration,
        /// Seconds between scrapes.
        #[arg(long, default_value = "1s", value_parser = parse_duration_flag)]
        every: Duration,
        /// The last 15 minutes from the node's flight recorder (one tick per 10 s, quiet
        /// stretches folded) instead of live seconds: there even when the kubelet no longer
        /// answers (`kubectl nodehealth recorder install`).
        #[arg(long, conflicts_with_all = ["watch", "every"])]
        recorded: bool,
    },
    /// Prometheus alerting rules with the thresholds of these checks, including a stuck-relist
    /// alert (a relist that never finishes never reaches the duration histogram). Prints YAML;
    /// `-o json` prints the same as JSON.
    Alerts {
        /// Label matchers (without braces) of the kubelet's own /metrics scrape.
        #[arg(long, default_value = crate::alerts::DEFAULT_SELECTOR)]
        kubelet_selector: String,
        /// Print a prometheus-operator PrometheusRule of this name (in -n's namespace) instead
        /// of a rule file.
        #[arg(long, value_name = "NAME")]
        prometheus_rule: Option<String>,
        /// A label on the PrometheusRule (repeatable), e.g. `release=kube-prometheus-stack`:
        /// the operator's Prometheus selects rules by label.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::alerts::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Delete this tool's runs that are past their deadline (probe Jobs and pods, label
    /// app.kubernetes.io/name=nodehealth-probe) in -n's namespace (default kube-system), or in
    /// every namespace with -A; a run still live — another operator's — is kept.
    Cleanup {
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// The RBAC the plugin needs, exactly: a ClusterRole and a Role in the probe namespace (-n,
    /// default kube-system), one comment per rule saying which check needs it. YAML to `kubectl
    /// apply -f -`; `-o json` prints a v1 List.
    Rbac {
        /// Also bind both roles to this subject (repeatable): user:NAME, group:NAME or
        /// serviceaccount:NAMESPACE:NAME.
        #[arg(long = "bind", value_name = "SUBJECT")]
        bind: Vec<crate::rbac::Subject>,
    },
    /// The plugin's version; with a node, also the version of the agent its probe pod runs
    /// (`--image`), with a warning and exit 1 when they differ.
    Version {
        /// A node to run the agent on.
        #[arg(value_parser = parse_node_name)]
        node: Option<String>,
    },
    /// The flight recorder: a DaemonSet whose pod on each node records it every second and
    /// writes the node's NodeRecorderReport to the API server, so that a diagnosis has node-side
    /// evidence and the minutes before a failure when no probe pod can start.
    Recorder {
        #[command(subcommand)]
        action: RecorderAction,
    },
    /// A shell completion script: `source <(kubectl-nodehealth completion bash)`. `completion
    /// kubectl` prints the `kubectl_complete-nodehealth` helper: put it on PATH, executable, and
    /// kubectl (≥ 1.26) completes `kubectl nodehealth <TAB>` with node names from the cluster.
    Completion {
        /// The shell, or `kubectl` for the kubectl plugin helper.
        shell: CompletionShell,
    },
}

/// `recorder` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum RecorderAction {
    /// Apply the CRD, the recorder's service account and RBAC, the admission policy that holds
    /// each recorder to its own node's report, and the DaemonSet (in -n's namespace, default
    /// kube-system). Needs cluster-admin.
    Install {
        /// The agent image the recorder runs.
        #[arg(long, default_value = probe::DEFAULT_IMAGE)]
        image: String,
        /// `imagePullPolicy` of the recorder's pods.
        #[arg(long, default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
        image_pull_policy: String,
        /// The recorder accepts the kubelet's serving certificate unverified when it reads the
        /// kubelet's /metrics for the PLEG history (where kubelets serve self-signed
        /// certificates, serverTLSBootstrap off); verified against the cluster CA otherwise.
        #[arg(long)]
        kubelet_insecure_tls: bool,
        /// Print what would be applied (YAML; -o json: a v1 List) and apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete everything `install` created; deleting the CRD deletes every report.
    Uninstall,
    /// The DaemonSet's rollout and each node's report: its age and the node's state now.
    Status,
}

/// The shells `completion` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    /// The `kubectl_complete-nodehealth` helper script.
    Kubectl,
}

fn parse_prometheus(text: &str) -> Result<String, String> {
    if text != "auto" {
        crate::history::fetch::Endpoint::parse(text)?;
    }
    Ok(text.to_string())
}

fn parse_since(text: &str) -> Result<Duration, String> {
    let d = nodehealth_units::parse(text)?;
    if d < Duration::from_secs(300) || d > Duration::from_secs(7 * 86400) {
        return Err(format!(
            "{text:?}: give a range from 5m to 7d (the step grows with it: at most 240 points)"
        ));
    }
    Ok(d)
}

fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    let duration = nodehealth_units::parse(text)?;
    if duration > Duration::from_secs(24 * 3600) {
        return Err(format!("{text:?} is longer than a day"));
    }
    Ok(duration)
}

/// A node name is a DNS-1123 subdomain (what the API server accepts for a Node): refused here,
/// before any request, when it is not one. Subcommand names are passed through.
/// A DNS subdomain name (RFC 1123), the grammar of node and Secret names.
fn is_dns_subdomain(text: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    text.len() <= 253 && text.split('.').all(label_ok)
}

fn parse_node_name(text: &str) -> Result<String, String> {
    if is_dns_subdomain(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a node name: node names are lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit, at most 253 characters (`kubectl get \
             nodes` lists them)"
        ))
    }
}

fn parse_secret_name(text: &str) -> Result<String, String> {
    if is_dns_subdomain(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Secret name: lower-case letters, digits, '-' and '.', starting and \
             ending with a letter or digit (`kubectl get secrets -n <namespace>` lists them)"
        ))
    }
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
        Some(Command::Scan { selector }) => return scan(&cli, selector.as_deref()).await,
        Some(_) if cli.prometheus.is_some() || cli.since.is_some() => {
            return Err(Error::Usage(
                "--prometheus and --since go with a node's diagnosis or `scan`".into(),
            ));
        }
        Some(Command::Pleg {
            node,
            recorded: true,
            ..
        }) => {
            return pleg_recorded(&cli, node).await;
        }
        Some(Command::Pleg {
            node, watch, every, ..
        }) => {
            return pleg(&cli, node, *watch, *every).await;
        }
        Some(Command::Alerts {
            kubelet_selector,
            prometheus_rule,
            labels,
        }) => {
            let rules = crate::alerts::rules(kubelet_selector)?;
            write_stdout(&crate::alerts::render(
                &rules,
                prometheus_rule.as_deref(),
                cli.namespace.as_deref(),
                labels,
                matches!(cli.output, Format::Json),
            )?)?;
            return Ok(crate::exit::HEALTHY);
        }
        Some(Command::Cleanup {
            dry_run,
            all_namespaces,
        }) => return cleanup(&cli, *dry_run, *all_namespaces).await,
        // Boxed: it holds a whole probe run, and `run`'s future is big enough already.
        Some(Command::Rbac { bind }) => {
            let namespace = cli.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            let text = match cli.output {
                Format::Json => {
                    serde_json::to_string_pretty(&crate::rbac::list(namespace, bind))
                        .unwrap_or_default()
                        + "\n"
                }
                _ => crate::rbac::yaml(namespace, bind)?,
            };
            write_stdout(&text)?;
            return Ok(crate::exit::HEALTHY);
        }
        Some(Command::Recorder { action }) => return recorder(&cli, action).await,
        Some(Command::Version { node }) => return Box::pin(version(&cli, node.as_deref())).await,
        Some(Command::Completion { shell }) => {
            write_stdout(&crate::complete::script(*shell))?;
            return Ok(crate::exit::HEALTHY);
        }
        None => {}
    }
    if cli.since.is_some() && cli.prometheus.is_none() {
        return Err(Error::Usage(
            "--since says how far back --prometheus reads: give --prometheus auto|NS/NAME:PORT|URL"
                .into(),
        ));
    }
    if let Some(path) = &cli.from_bundle {
        if cli.prometheus.is_some() {
            return Err(Error::Usage(
                "--from-bundle replays the history the bundle holds: drop --prometheus".into(),
            ));
        }
        let (manifest, report) = crate::bundle::replay(path)?;
        say!(
            "kubectl-nodehealth: replaying {} (node {}, recorded {} by {})",
            path.display(),
            manifest.node,
            manifest.created_at,
            manifest.tool_version
        );
        return output(&cli, &report);
    }
    if let Some(path) = &cli.bundle {
        crate::bundle::check_writable(path)?;
    }
    let Some(node) = cli.node.clone() else {
        return Err(Error::Usage(
            "which node? usage: kubectl nodehealth <node> [--duration 5s] [-o table|json|yaml]"
                .into(),
        ));
    };
    let target = connect(&cli).await?;
    let options = CollectOptions {
        node: node.clone(),
        window: cli.duration,
        timeout: cli.timeout,
        log_since: cli.log_since,
    };
    let progress = crate::progress::Progress::start(
        crate::progress::wanted(cli.output),
        format!(
            "{node}: the API side and the kubelet's metrics over a {} window",
            crate::units::human_duration(cli.duration.as_secs_f64())
        ),
    );
    let collected = collect_evidence(&cli, &target, &options, &progress).await;
    let collected = match (collected, &cli.prometheus) {
        (Ok((mut evidence, mut raw)), Some(prometheus)) => {
            progress.step(format!(
                "{node}: its history from Prometheus ({prometheus})"
            ));
            let addresses: Vec<String> = evidence
                .node
                .data()
                .and_then(|n| n.internal_ip.clone())
                .into_iter()
                .collect();
            let o = crate::history::fetch::HistoryOptions {
                prometheus: prometheus.clone(),
                since: cli.since.unwrap_or(DEFAULT_SINCE),
                timeout: cli.timeout,
            };
            let (history, answers) =
                crate::history::fetch::history(&target, &node, &addresses, &o).await;
            evidence.history = history;
            raw.history = answers;
            Ok((evidence, raw))
        }
        (other, _) => other,
    };
    progress.finish();
    let (evidence, raw) = collected?;
    let report = diagnose(evidence);
    // The report first: a bundle that cannot be written (the disk filled, the directory went
    // away during the window) must not cost the operator the diagnosis.
    let code = output(&cli, &report)?;
    if let Some(path) = &cli.bundle {
        let command: Vec<String> = std::env::args().collect();
        crate::bundle::write(path, &report, &raw, &command)?;
        say!("kubectl-nodehealth: bundle written to {}", path.display());
    }
    Ok(code)
}

/// The evidence of one diagnosis: API side only, with the agent's evidence from a file, or with
/// the probe pod.
async fn collect_evidence(
    cli: &Cli,
    target: &collect::Target,
    options: &CollectOptions,
    progress: &crate::progress::Progress,
) -> Result<(crate::evidence::Evidence, crate::evidence::RawCaptures), Error> {
    Ok(if cli.api_only {
        collect::collect(target, options).await?
    } else if let Some(path) = &cli.node_evidence {
        let node = read_node_evidence(path)?;
        let (mut evidence, raw) = collect::collect(target, options).await?;
        evidence.layers.push(crate::evidence::Layer::NodeAgent);
        if node.trace.as_ref().is_some_and(|t| t.attached) {
            evidence.layers.push(crate::evidence::Layer::Ebpf);
        }
        evidence.node_probe = crate::evidence::Step::Collected {
            data: crate::evidence::NodeProbe::without_pod(
                format!("standalone: {}", path.display()),
                node,
            ),
        };
        (evidence, raw)
    } else {
        with_probe(cli, target, options, progress).await?
    })
}

/// Prints the report; returns its exit code.
fn output(cli: &Cli, report: &crate::Report) -> Result<u8, Error> {
    let stdout = std::io::stdout();
    let color = use_color(
        cli.no_color,
        std::env::var_os("NO_COLOR").as_deref(),
        stdout.is_terminal(),
    );
    write_stdout(&render::render(report, cli.output, color, None)?)?;
    Ok(report.exit_code())
}

/// Writes `text` to stdout and flushes it; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Output(e)),
    }
}

async fn scan(cli: &Cli, selector: Option<&str>) -> Result<u8, Error> {
    let target = connect(cli).await?;
    let progress = crate::progress::Progress::start(
        crate::progress::wanted(cli.output),
        "scan: nodes, leases, certificate requests",
    );
    let snap = collect::scan_snapshot(&target, selector, cli.timeout).await;
    let snap = snap?;
    let mut report = crate::scan::report(
        &collect::scan_evidence(&snap),
        snap.api_calls,
        snap.collected_at,
    );
    if let Some(prometheus) = &cli.prometheus {
        progress.step(format!(
            "scan: the fleet's history from Prometheus ({prometheus})"
        ));
        let o = crate::history::fetch::HistoryOptions {
            prometheus: prometheus.clone(),
            since: cli.since.unwrap_or(DEFAULT_SINCE),
            timeout: cli.timeout,
        };
        match crate::history::fetch::fleet(&target, &o).await {
            Ok((_, history)) => crate::scan::with_history(&mut report, &history),
            Err(e) => {
                progress.println(&format!(
                    "kubectl-nodehealth: warning: no history from Prometheus: {e}"
                ));
            }
        }
    }
    progress.finish();
    write_stdout(&crate::scan::render(&report, cli.output)?)?;
    Ok(report.exit_code())
}

/// `pleg <node> --recorded`: the PLEG ticks of the node's recorder report.
async fn pleg_recorded(cli: &Cli, node: &str) -> Result<u8, Error> {
    use crate::{evidence::Step, pleg};
    if cli.output == Format::Yaml {
        return Err(Error::Usage(
            "pleg prints its timeline: -o table or -o json (one object per line)".into(),
        ));
    }
    let target = connect(cli).await?;
    let view = match crate::recorder::fetch(&target.client, node, cli.timeout, None).await {
        Step::Collected { data } => data,
        Step::Skipped { reason } => {
            return Err(Error::Usage(format!("pleg --recorded {node}: {reason}")));
        }
        Step::Failed { failure } => {
            return Err(Error::Usage(format!(
                "pleg --recorded {node}: cannot read its recorder report: {}{}",
                failure.message,
                failure
                    .needs
                    .map(|n| format!(" (needs {n})"))
                    .unwrap_or_default()
            )));
        }
    };
    let ticks = &view.report.pleg;
    let json = cli.output == Format::Json;
    let mut out = String::new();
    if !json {
        out.push_str(&format!(
            "PLEG history of {node} from its flight recorder: report {}{}; one tick per scrape \
             of the kubelet's /metrics on the node, quiet stretches folded\n{}\n",
            view.age_seconds
                .map_or("of unknown age".into(), |a| format!("{a:.0}s old")),
            if view.stale {
                " (stale: its recorder is not writing)"
            } else {
                ""
            },
            pleg::HEADER
        ));
    }
    for t in ticks {
        if json {
            out.push_str(&(serde_json::to_string(t).unwrap_or_default() + "\n"));
        } else {
            out.push_str(&pleg::line(t));
            if t.seconds >= 20.0 {
                out.push_str(&format!("  ({:.0}s)", t.seconds));
            }
            out.push('\n');
        }
    }
    if let Some(e) = &view.report.pleg_error {
        if json {
            out.push_str(&(serde_json::json!({ "error": e }).to_string() + "\n"));
        } else {
            out.push_str(&format!("latest scrape failed: {e}\n"));
        }
    }
    if !json {
        if ticks.is_empty() {
            out.push_str(
                "\nNo PLEG ticks recorded: the recorder scrapes the kubelet's /metrics every \
                 10 s (it needs two scrapes, and its ClusterRole's `get nodes/metrics`).\n",
            );
        } else {
            out.push_str(&pleg::summary(node, ticks, 0));
        }
    }
    write_stdout(&out)?;
    Ok(pleg::exit_code(ticks))
}

async fn pleg(cli: &Cli, node: &str, watch: Duration, every: Duration) -> Result<u8, Error> {
    use crate::pleg;
    if cli.output == Format::Yaml {
        return Err(Error::Usage(
            "pleg streams its timeline: -o table or -o json (one object per line)".into(),
        ));
    }
    if every < Duration::from_millis(200) {
        return Err(Error::Usage("--every: at least 200ms".into()));
    }
    let target = connect(cli).await?;
    let first = match collect::kubelet_metrics(&target, node, cli.timeout).await {
        Ok(m) => m,
        Err(f) if f.kind == crate::evidence::FailureKind::NotFound => {
            return Err(Error::Usage(format!(
                "no node {node:?} (or its kubelet serves no /metrics): {}",
                f.message
            )));
        }
        Err(f) => {
            return Err(Error::Usage(format!(
                "cannot read the kubelet's metrics on {node}: {} — `kubectl nodehealth {node}`                  diagnoses an unreachable kubelet",
                f.message
            )));
        }
    };
    let json = cli.output == Format::Json;
    let emit = |text: String| write_stdout(&text);
    if !json {
        emit(format!(
            "PLEG timeline of {node}, every {:.1}s for {:.0}s (Ctrl-C ends it)\n{}\n",
            every.as_secs_f64(),
            watch.as_secs_f64(),
            pleg::HEADER
        ))?;
    }
    let (mut prev, mut ticks, mut failures) = (first, Vec::new(), 0usize);
    let end = tokio::time::Instant::now() + watch;
    let mut next = tokio::time::Instant::now() + every;
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    while next <= end {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += every;
        match collect::kubelet_metrics(&target, node, cli.timeout).await {
            Ok(cur) => {
                let t = pleg::tick(&prev, &cur);
                emit(if json {
                    serde_json::to_string(&t).unwrap_or_default() + "\n"
                } else {
                    pleg::line(&t) + "\n"
                })?;
                ticks.push(t);
                prev = cur;
            }
            Err(f) => {
                failures += 1;
                emit(if json {
                    serde_json::json!({ "at": jiff::Timestamp::now(), "error": f.message })
                        .to_string()
                        + "\n"
                } else {
                    format!(
                        "{}  scrape failed: {}\n",
                        jiff::Timestamp::now().strftime("%H:%M:%S"),
                        f.message
                    )
                })?;
            }
        }
    }
    if !json {
        emit(pleg::summary(node, &ticks, failures))?;
    }
    Ok(pleg::exit_code(&ticks))
}

/// The plugin's version line.
fn plugin_version() -> String {
    format!(
        "{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// `version [NODE]`: the plugin's version, and the agent's as the probe pod on NODE reports it.
async fn version(cli: &Cli, node: Option<&str>) -> Result<u8, Error> {
    let plugin = env!("CARGO_PKG_VERSION");
    let Some(node) = node else {
        let text = match cli.output {
            Format::Json | Format::Yaml => version_document(None, cli.output)?,
            _ => format!("kubectl-nodehealth {}\n", plugin_version()),
        };
        write_stdout(&text)?;
        return Ok(exit::HEALTHY);
    };
    let target = connect(cli).await?;
    let options = CollectOptions {
        node: node.to_string(),
        window: cli.duration,
        timeout: cli.timeout,
        log_since: cli.log_since,
    };
    let progress = crate::progress::Progress::start(
        crate::progress::wanted(cli.output),
        format!("{node}: running the agent"),
    );
    let collected = with_probe(cli, &target, &options, &progress).await;
    progress.finish();
    let (evidence, _) = collected?;
    let agent = match &evidence.node_probe {
        crate::evidence::Step::Collected { data } if !data.evidence.agent_version.is_empty() => {
            data.evidence.agent_version.clone()
        }
        crate::evidence::Step::Collected { data } => {
            return Err(Error::Usage(format!(
                "the agent on {node} did not report its version ({})",
                data.stream_error.as_deref().unwrap_or("no final report")
            )));
        }
        crate::evidence::Step::Failed { failure } => {
            return Err(Error::Usage(format!(
                "could not run the agent on {node}: {} — `kubectl nodehealth {node}` says why",
                failure.message
            )));
        }
        crate::evidence::Step::Skipped { reason } => {
            return Err(Error::Usage(format!(
                "could not run the agent on {node}: {reason}"
            )));
        }
    };
    let text = match cli.output {
        Format::Json | Format::Yaml => {
            version_document(Some((node, &agent, &cli.image)), cli.output)?
        }
        _ => format!(
            "kubectl-nodehealth {}\nagent on {node}: {agent} (image {})\n",
            plugin_version(),
            cli.image
        ),
    };
    write_stdout(&text)?;
    if agent != plugin {
        say!(
            "kubectl-nodehealth: warning: version skew: the plugin is {plugin}, the agent image \
             {} runs {agent}; findings that need newer agent evidence may be missing — use \
             --image with the {plugin} image (README: Install on your cluster)",
            cli.image
        );
        return Ok(exit::PROBLEMS);
    }
    Ok(exit::HEALTHY)
}

fn version_document(agent: Option<(&str, &str, &str)>, format: Format) -> Result<String, Error> {
    let mut doc = serde_json::json!({
        "apiVersion": crate::API_VERSION,
        "kind": "Version",
        "plugin": {
            "version": env!("CARGO_PKG_VERSION"),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        },
    });
    if let Some((node, version, image)) = agent {
        doc["agent"] = serde_json::json!({ "node": node, "version": version, "image": image });
        doc["skew"] = serde_json::json!(version != env!("CARGO_PKG_VERSION"));
    }
    match format {
        Format::Yaml => serde_saphyr::to_string(&doc).map_err(|e| Error::Serialize {
            format: "yaml",
            message: e.to_string(),
        }),
        _ => Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"),
    }
}

async fn connect(cli: &Cli) -> Result<collect::Target, Error> {
    collect::connect(&KubeOptions {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        cluster: cli.cluster.clone(),
        user: cli.user.clone(),
        as_user: cli.as_user.clone(),
        as_groups: cli.as_groups.clone(),
        timeout: cli.timeout,
    })
    .await
}

/// `--since` when not given.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

/// `--pod-timeout` when not given.
pub const DEFAULT_POD_TIMEOUT: Duration = Duration::from_secs(30);

/// The default namespace of the probe pod: kube-system (README: Pod Security).
pub const DEFAULT_NAMESPACE: &str = "kube-system";

/// Exit code after Ctrl-C, SIGTERM or SIGHUP (128 + SIGINT, like a shell).
pub const INTERRUPTED: u8 = 130;

/// Resolves on Ctrl-C, SIGTERM or SIGHUP — a closed terminal or a dropped SSH connection ends a
/// run as often as Ctrl-C does, and must delete the probe pod the same way.
async fn interrupted() {
    #[cfg(unix)]
    async fn unix_signal(kind: tokio::signal::unix::SignalKind) {
        match tokio::signal::unix::signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    }
    #[cfg(unix)]
    let others = async {
        use tokio::signal::unix::SignalKind;
        tokio::select! {
            () = unix_signal(SignalKind::terminate()) => {}
            () = unix_signal(SignalKind::hangup()) => {}
        }
    };
    #[cfg(not(unix))]
    let others = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = others => {}
    }
}

/// API-side collection and the probe pod side by side; the pod is deleted on every path.
/// The agent's `probe -o json` output.
fn read_node_evidence(
    path: &std::path::Path,
) -> Result<nodehealth_proto::node::NodeEvidence, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("--node-evidence {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "--node-evidence {}: not the agent's JSON evidence ({e}); produce it on the node with \
             `tracer-user probe --host-root / -o json > node.json`",
            path.display()
        ))
    })
}

async fn with_probe(
    cli: &Cli,
    target: &collect::Target,
    options: &CollectOptions,
    progress: &crate::progress::Progress,
) -> Result<(crate::evidence::Evidence, crate::evidence::RawCaptures), Error> {
    use std::cell::Cell;

    use crate::evidence::{Failure, FailureKind, Layer, Step};

    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    if let Some(pc) = &cli.priority_class {
        progress.println(&format!(
            "kubectl-nodehealth: warning: the probe pod gets priority class {pc:?}: it passes the \
             kubelet's eviction admission under pressure and can preempt workloads"
        ));
    }
    // No pod for a node that does not exist (or an API we cannot use): the API-side path says
    // what is wrong (unknown node with close names, API unreachable, credentials).
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(target.client.clone());
    let exists = tokio::time::timeout(cli.timeout, nodes.get_opt(&options.node)).await;
    if !matches!(exists, Ok(Ok(Some(_)))) {
        let (mut evidence, raw) = collect::collect(target, options).await?;
        evidence.node_probe = Step::Skipped {
            reason: "the Node object could not be read: no probe pod was created".into(),
        };
        return Ok((evidence, raw));
    }
    let id = RunIdentity::new().map_err(|e| Error::Usage(e.to_string()))?;
    let probe_options = ProbeOptions {
        node: options.node.clone(),
        namespace: namespace.clone(),
        image: cli.image.clone(),
        pull_policy: cli.image_pull_policy.clone(),
        pull_secrets: cli.image_pull_secrets.clone(),
        pod_timeout: cli.pod_timeout.unwrap_or(DEFAULT_POD_TIMEOUT),
        priority_class: cli.priority_class.clone(),
        window: cli.duration,
        trace: cli.trace || cli.trace_uprobes,
        uprobes: cli.trace_uprobes,
        log_since: cli.log_since,
        progress: progress.clone(),
    };
    let (widen_tx, widen_rx) = tokio::sync::watch::channel(None);
    let ran = Cell::new(false);
    let widen = cli.pod_timeout.is_none();
    // Slow relists slow pod starts too (the kubelet sees the container start only through a
    // relist): give it three times the default bound — as soon as the first scrape shows it, and
    // again once the window does.
    let widen_to = |slow: bool| {
        if widen && slow {
            let _ = widen_tx.send(Some(DEFAULT_POD_TIMEOUT * 3));
        }
    };
    let api = async {
        let result = collect::collect_with(target, options, |first| {
            widen_to(crate::relists::slow_since_start(first));
        })
        .await;
        if let Ok((evidence, _)) = &result {
            widen_to(crate::relists::slows_pod_starts(evidence));
        }
        result
    };
    let node_side = async {
        let pod_start = probe::start(&target.client, &probe_options, &id, widen_rx).await?;
        ran.set(true);
        probe::run_agent(&target.client, &probe_options, &id, pod_start).await
    };
    let both = async { tokio::join!(api, node_side) };
    let outcome = tokio::select! {
        r = both => Some(r),
        () = interrupted() => None,
    };
    let warning = probe::delete(
        &target.client,
        &namespace,
        &id,
        ran.get(),
        Duration::from_secs(10),
    )
    .await;
    if let Some(w) = warning {
        say!("kubectl-nodehealth: warning: {w}");
    }
    let Some((api, node_side)) = outcome else {
        say!("kubectl-nodehealth: interrupted; the probe pod was deleted");
        return Err(Error::Interrupted);
    };
    let (mut evidence, raw) = api?;
    let request = format!("probe pod {namespace}/{}", id.pod_name());
    evidence.node_probe = match node_side {
        Ok(np) => {
            evidence.layers.push(Layer::NodeProbe);
            if np.evidence.run_queue.as_ref().is_some_and(|rq| rq.attached) {
                evidence.layers.push(Layer::Ebpf);
            }
            if let Some(e) = &np.stream_error {
                say!("kubectl-nodehealth: warning: node evidence is partial: {e}");
            }
            Step::Collected { data: np }
        }
        Err(e) if recorded_evidence(&evidence.recorder).is_some() => {
            // No probe pod, but the node's recorder wrote its evidence recently: that is the
            // node-side half (README, "What each layer can see").
            let (view, node) = recorded_evidence(&evidence.recorder).expect("checked");
            let age = view
                .age_seconds
                .map(|a| format!("{} old", crate::units::human_duration(a)))
                .unwrap_or_else(|| "age unknown".into());
            say!("kubectl-nodehealth: node probe: {e}");
            say!(
                "kubectl-nodehealth: node-side evidence from the recorder's report {} ({age})",
                view.object
            );
            let pod = format!("recorder: {} ({age}; the probe pod: {e})", view.object);
            evidence.layers.push(Layer::Recorder);
            Step::Collected {
                data: crate::evidence::NodeProbe::without_pod(pod, node),
            }
        }
        Err(e) => {
            say!("kubectl-nodehealth: node probe: {e}");
            if matches!(e, probe::ProbeError::NotStarted(_)) {
                say!(
                    "kubectl-nodehealth: for the node-side half, run the agent on the node over \
                     SSH: tracer-user probe --host-root / --duration 10s -o json"
                );
            }
            Step::Failed {
                failure: Failure {
                    kind: match e {
                        probe::ProbeError::NotStarted(_) => FailureKind::Timeout,
                        probe::ProbeError::PodSecurity { .. }
                        | probe::ProbeError::AdmissionPolicy { .. }
                        | probe::ProbeError::Forbidden { .. } => FailureKind::Forbidden,
                        _ => FailureKind::HttpError,
                    },
                    request,
                    http_status: None,
                    needs: None,
                    message: e.to_string(),
                },
            }
        }
    };
    Ok((evidence, raw))
}

async fn recorder(cli: &Cli, action: &RecorderAction) -> Result<u8, Error> {
    use crate::recorder as rec;
    let namespace = cli.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let manifests = match action {
        RecorderAction::Install {
            image,
            image_pull_policy,
            kubelet_insecure_tls,
            ..
        } => rec::manifests(
            namespace,
            &rec::InstallOptions {
                image: image.clone(),
                pull_policy: image_pull_policy.clone(),
                kubelet_insecure_tls: *kubelet_insecure_tls,
            },
        ),
        _ => Vec::new(),
    };
    if let RecorderAction::Install { dry_run: true, .. } = action {
        let text = match cli.output {
            Format::Json => {
                serde_json::to_string_pretty(&serde_json::json!({
                    "apiVersion": "v1", "kind": "List", "items": manifests,
                }))
                .unwrap_or_default()
                    + "\n"
            }
            _ => manifests
                .iter()
                .map(|m| serde_saphyr::to_string(m).map_err(|e| Error::Usage(format!("yaml: {e}"))))
                .collect::<Result<Vec<_>, _>>()?
                .join("---\n"),
        };
        write_stdout(&text)?;
        return Ok(crate::exit::HEALTHY);
    }
    let target = connect(cli).await?;
    let client = &target.client;
    match action {
        RecorderAction::Install { .. } => {
            let applied = rec::install(client, &manifests, cli.timeout)
                .await
                .map_err(Error::Usage)?;
            for a in &applied {
                say!("kubectl-nodehealth: applied {a}");
            }
            say!(
                "kubectl-nodehealth: the recorder is installed; `kubectl nodehealth recorder \
                 status` shows its pods and each node's report"
            );
            Ok(crate::exit::HEALTHY)
        }
        RecorderAction::Uninstall => {
            let deleted = rec::uninstall(client, namespace, cli.timeout)
                .await
                .map_err(Error::Usage)?;
            if deleted.is_empty() {
                say!("kubectl-nodehealth: no recorder installed (namespace {namespace})");
            }
            for d in &deleted {
                say!("kubectl-nodehealth: deleted {d}");
            }
            Ok(crate::exit::HEALTHY)
        }
        RecorderAction::Status => {
            let s = rec::status(client, namespace).await.map_err(Error::Usage)?;
            let text = match cli.output {
                Format::Json => serde_json::to_string_pretty(&s).unwrap_or_default() + "\n",
                Format::Yaml => {
                    serde_saphyr::to_string(&s).map_err(|e| Error::Usage(format!("yaml: {e}")))?
                }
                Format::Table | Format::Wide => {
                    let mut out = match (s.desired, s.ready) {
                        (Some(d), r) => format!(
                            "recorder DaemonSet {namespace}/{}: {} of {d} ready\n",
                            nodehealth_proto::recorder::NAME,
                            r.unwrap_or(0)
                        ),
                        (None, _) => format!(
                            "no recorder DaemonSet in {namespace} (kubectl nodehealth recorder install)\n"
                        ),
                    };
                    for r in &s.reports {
                        out.push_str(&format!(
                            "{}\t{}\t{}{}\n",
                            r.node,
                            r.age_seconds
                                .map(|a| format!("{} ago", crate::units::human_duration(a)))
                                .unwrap_or_else(|| "age unknown".into()),
                            r.now,
                            if r.stale { "\tSTALE" } else { "" }
                        ));
                    }
                    out
                }
            };
            write_stdout(&text)?;
            let all_ready = s.desired.is_some() && s.desired == s.ready;
            Ok(if all_ready && !s.reports.iter().any(|r| r.stale) {
                crate::exit::HEALTHY
            } else {
                crate::exit::PROBLEMS
            })
        }
    }
}

/// The recorder's view and its node evidence, when its report is fresh and carries evidence.
fn recorded_evidence(
    step: &crate::evidence::Step<crate::recorder::RecorderView>,
) -> Option<(
    &crate::recorder::RecorderView,
    nodehealth_proto::node::NodeEvidence,
)> {
    let view = step.data().filter(|v| !v.stale)?;
    Some((view, view.report.evidence.clone()?))
}

async fn cleanup(cli: &Cli, dry_run: bool, all_namespaces: bool) -> Result<u8, Error> {
    let target = connect(cli).await?;
    let namespace = (!all_namespaces).then(|| {
        cli.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into())
    });
    let found = probe::cleanup(&target.client, namespace.as_deref(), dry_run)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    if found.is_empty() {
        write_stdout(&format!(
            "no runs of kubectl-nodehealth left{}\n",
            namespace
                .as_deref()
                .map(|n| format!(" in namespace {n} (-A for all)"))
                .unwrap_or_default()
        ))?;
    }
    for l in found {
        let line = match (l.expired, dry_run) {
            (true, false) => format!(
                "deleted {} (expired {} s ago)",
                l.object, l.past_expiry_seconds
            ),
            (true, true) => format!(
                "would delete {} (expired {} s ago)",
                l.object, l.past_expiry_seconds
            ),
            (false, _) => format!(
                "kept {}: a run still live (it expires in {} s)",
                l.object, -l.past_expiry_seconds
            ),
        };
        write_stdout(&(line + "\n"))?;
    }
    Ok(exit::HEALTHY)
}

/// Entry point for `main`: parse, run, print errors prefixed with the program name.
pub fn main_entry() -> u8 {
    // kubectl's plugin completion protocol: the words as typed, before clap sees them (they are
    // incomplete by nature).
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("__complete") {
        return crate::complete::main(args.collect());
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("kubectl-nodehealth: cannot start the async runtime: {e}");
            return exit::UNDIAGNOSED;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(Error::Interrupted) => INTERRUPTED,
        Err(e) => {
            say!("kubectl-nodehealth: {e}");
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
        assert!(matches!(scan.command, Some(Command::Scan { .. })));
        let secrets = Cli::try_parse_from([
            "kubectl-nodehealth",
            "n",
            "--image-pull-secret",
            "regcred",
            "--image-pull-secret",
            "mirror.io",
        ])
        .unwrap();
        assert_eq!(secrets.image_pull_secrets, ["regcred", "mirror.io"]);
        let bad =
            Cli::try_parse_from(["kubectl-nodehealth", "n", "--image-pull-secret", "Reg_Cred"])
                .unwrap_err()
                .to_string();
        assert!(bad.contains("not a Secret name"), "{bad}");
        assert_eq!(default.image, probe::DEFAULT_IMAGE);
    }

    /// Bad input is a usage error before any request: names the API server would refuse, and
    /// zero, negative or absurd durations.
    #[test]
    fn bad_names_and_durations_are_usage_errors() {
        for bad in ["Node_1", "node-", "a..b", &"x".repeat(254), ""] {
            let e = Cli::try_parse_from(["kubectl-nodehealth", bad]).unwrap_err();
            assert!(e.to_string().contains("not a node name"), "{bad:?}: {e}");
        }
        assert!(Cli::try_parse_from(["kubectl-nodehealth", "ip-10-0-1-5.ec2.internal"]).is_ok());
        for (flag, value) in [
            ("--duration", "0s"),
            ("--duration=-1s", ""),
            ("--pod-timeout", "0s"),
            ("--timeout", "0s"),
            ("--timeout", "0"),
            ("--duration", "48h"),
        ] {
            let mut argv = vec!["kubectl-nodehealth", "n", flag];
            if !value.is_empty() {
                argv.push(value);
            }
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag} {value}"
            );
        }
    }

    /// The kubectl connection flags a plugin is expected to take, in either position.
    #[test]
    fn kubectl_connection_flags() {
        let cli = Cli::try_parse_from([
            "kubectl-nodehealth",
            "--cluster",
            "prod",
            "--user",
            "ops",
            "--as",
            "jane",
            "--as-group",
            "sre",
            "--as-group",
            "oncall",
            "--request-timeout",
            "20s",
            "scan",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Scan { .. })));
        assert_eq!(cli.cluster.as_deref(), Some("prod"));
        assert_eq!(cli.user.as_deref(), Some("ops"));
        assert_eq!(cli.as_user.as_deref(), Some("jane"));
        assert_eq!(cli.as_groups, ["sre", "oncall"]);
        assert_eq!(cli.timeout, Duration::from_secs(20));
        // Groups without a user to impersonate are refused, as kubectl refuses them.
        let e = Cli::try_parse_from(["kubectl-nodehealth", "n", "--as-group", "g"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn kubeconfig_flag_before_a_subcommand_still_selects_it() {
        // Regression: with args_conflicts_with_subcommands, `--kubeconfig k scan` made "scan"
        // the node name.
        let cli =
            Cli::try_parse_from(["kubectl-nodehealth", "--kubeconfig", "/k", "scan"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Scan { .. })), "{cli:?}");
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
    fn bad_inputs_are_refused_before_connecting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A bundle that cannot be written is refused before anything is collected.
        let cli = Cli::try_parse_from(["k", "n", "--bundle", "/no/such/dir/x.tgz"]).unwrap();
        let err = rt.block_on(run(cli)).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        let cli = Cli::try_parse_from(["k", "--from-bundle", "/no/such/x.tgz"]).unwrap();
        assert!(matches!(
            rt.block_on(run(cli)).unwrap_err(),
            Error::Usage(_)
        ));
        // pleg streams: YAML is refused before any connection.
        let cli = Cli::try_parse_from(["k", "pleg", "n", "-o", "yaml"]).unwrap();
        assert!(matches!(
            rt.block_on(run(cli)).unwrap_err(),
            Error::Usage(_)
        ));
        let cli = Cli::try_parse_from(["k"]).unwrap();
        assert!(matches!(
            rt.block_on(run(cli)).unwrap_err(),
            Error::Usage(_)
        ));
        // --prometheus: the shapes it takes are named; --since needs it and a sane range.
        let bad = Cli::try_parse_from(["k", "n", "--prometheus", "prometheus"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("NAMESPACE/NAME:PORT"), "{bad}");
        let cli = Cli::try_parse_from(["k", "n", "--since", "2h"]).unwrap();
        let err = rt.block_on(run(cli)).unwrap_err();
        assert!(err.to_string().contains("give --prometheus"), "{err}");
        let cli = Cli::try_parse_from(["k", "pleg", "n", "--prometheus", "auto"]).unwrap();
        let err = rt.block_on(run(cli)).unwrap_err();
        assert!(err.to_string().contains("or `scan`"), "{err}");
        // Global: before or after the subcommand.
        let cli =
            Cli::try_parse_from(["k", "--prometheus", "auto", "scan", "--since", "2h"]).unwrap();
        assert_eq!(cli.since, Some(Duration::from_secs(7200)));
        assert!(Cli::try_parse_from(["k", "n", "--prometheus", "auto", "--since", "1m"]).is_err());
        let scan =
            Cli::try_parse_from(["k", "scan", "--prometheus", "monitoring/prometheus-k8s:web"])
                .unwrap();
        assert_eq!(
            scan.prometheus.as_deref(),
            Some("monitoring/prometheus-k8s:web")
        );
        assert_eq!(scan.since, None);
        let cli =
            Cli::try_parse_from(["k", "--from-bundle", "/x.tgz", "--prometheus", "auto"]).unwrap();
        let err = rt.block_on(run(cli)).unwrap_err();
        assert!(err.to_string().contains("drop --prometheus"), "{err}");
    }
}
