//! `tracer-user`: the node agent binary.
use std::{io::Write, path::PathBuf, process::ExitCode, thread, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use tracer_user::{
    discovery::Overrides,
    log,
    probe::{self, ProbeConfig},
    runq::RunqTracer,
    server::{self, Exit, ServeOptions},
};

#[derive(Parser)]
#[command(name = "tracer-user", version, about = "kubectl-nodehealth node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by `probe` and `serve`.
#[derive(clap::Args, Clone)]
struct ProbeArgs {
    /// Where the host's root file system is mounted (`/host` in the probe pod).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// Observation window (CRI calls are repeated over it), e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Bound on each CRI call and network request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    cri_timeout: Duration,
    /// Pause between repeated CRI calls (the kubelet relists every 1 s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    cri_interval: Duration,
    /// Use this kubelet process instead of looking for one.
    #[arg(long)]
    kubelet_pid: Option<u32>,
    /// Probe this CRI endpoint (unix:///path) instead of the kubelet's.
    #[arg(long)]
    runtime_endpoint: Option<String>,
    /// Also measure the kubelet's and runtime's run-queue wait with the eBPF tracer (`probe`;
    /// for `serve` the request decides).
    #[arg(long)]
    trace: bool,
    /// How far back the kubelet's and runtime's logs are read (`serve`: unless the request says).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    log_since: Duration,
}

impl ProbeArgs {
    fn config(&self) -> ProbeConfig {
        ProbeConfig {
            host_root: self.host_root.clone(),
            window: self.duration,
            timeout: self.cri_timeout,
            cri_interval: self.cri_interval,
            overrides: Overrides {
                kubelet_pid: self.kubelet_pid,
                runtime_endpoint: self.runtime_endpoint.clone(),
            },
            trace: self.trace,
            log_since: self.log_since,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the run-queue wait of a process's threads for a while and print it as JSON.
    Runq {
        /// Process id (tgid) to trace; repeatable.
        #[arg(long = "pid", required = true)]
        pids: Vec<u32>,
        /// How long to trace, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Also trace the CRI calls of this process (as the kubelet) on its `--cri-fd` fds — the
        /// raw syscall programs a probe with a kubelet attaches (used by `bench tracer`).
        #[arg(long)]
        cri_kubelet: Option<u32>,
        /// An fd of `--cri-kubelet` connected to the runtime; repeatable.
        #[arg(long = "cri-fd")]
        cri_fds: Vec<u32>,
    },
    /// Probe the node once and print the evidence (the fallback when no probe pod can start).
    Probe {
        #[command(flatten)]
        args: ProbeArgs,
        #[arg(short = 'o', long, value_enum, default_value = "json")]
        output: Output,
    },
    /// Record the node every second and publish its report to the API server (the recorder
    /// DaemonSet `kubectl nodehealth recorder install` applies).
    Record {
        /// Where the host's root file system is mounted (`/host` in the recorder's pod).
        #[arg(long, default_value = "/")]
        host_root: PathBuf,
        /// This node's name (the pod's spec.nodeName).
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// A short probe and a write at least this often, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        heartbeat: Duration,
        /// Never two writes closer than this (at least 10s).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        min_write_interval: Duration,
        /// The short probe's window.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        probe_window: Duration,
        /// How far back each probe reads the kubelet's and runtime's logs.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        log_since: Duration,
        /// The API server to write to (default: the kubelet's, from its kubeconfig).
        #[arg(long)]
        server: Option<String>,
        /// The service account token.
        #[arg(
            long,
            default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        )]
        token_file: PathBuf,
        /// The CA of the API server when the kubelet's kubeconfig names none (or with --server).
        #[arg(
            long,
            default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        )]
        ca_file: PathBuf,
        /// The kubelet's address for its /metrics (the PLEG history), e.g. the node's IP (the
        /// pod's status.hostIP); without it, no PLEG history is kept.
        #[arg(long, env = "NODE_IP")]
        kubelet_address: Option<String>,
        /// The kubelet's port.
        #[arg(long, default_value_t = 10250)]
        kubelet_port: u16,
        /// Accept the kubelet's serving certificate unverified (self-signed serving certificates,
        /// serverTLSBootstrap off); it is verified against --ca-file otherwise.
        #[arg(long)]
        kubelet_insecure_tls: bool,
        /// Print each report as a JSON line instead of writing it.
        #[arg(long)]
        print: bool,
        /// Exit after this many reports (0: run until stopped).
        #[arg(long, default_value_t = 0)]
        max_reports: u64,
    },
    /// Serve one probe run over gRPC on 127.0.0.1, then exit.
    Serve {
        #[command(flatten)]
        args: ProbeArgs,
        /// Loopback port (0: pick one and write it to --ready-file).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// SHA-256 (hex) of the per-run token; the token itself is never given to the agent.
        #[arg(long, env = "NODEHEALTH_TOKEN_SHA256")]
        token_sha256: String,
        /// The run key (hex, 32 bytes) the agent proves itself with before the plugin sends the
        /// token; the plugin derives it from the token and puts it in the pod's environment.
        #[arg(long, env = "NODEHEALTH_RUN_KEY")]
        run_key: Option<String>,
        /// Exit after this long whatever happens, e.g. 120s.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        deadline: Duration,
        /// File to write the listening port to once ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// The run's expiry (Unix seconds): started after it — a kubelet that came back and ran a
        /// probe pod whose plugin is long gone — the agent exits at once and does nothing.
        #[arg(long)]
        not_after: Option<i64>,
    },
}

/// The duration grammar the plugin and xtask share (Go's: `10s`, `500ms`, `1m30s`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    nodehealth_units::parse(s)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Runq {
            pids,
            seconds,
            cri_kubelet,
            cri_fds,
        } => {
            let cri =
                cri_kubelet.map(|kubelet| tracer_user::trace::CriTarget::new(kubelet, cri_fds));
            runq(&pids, seconds, cri)
        }
        Command::Probe { args, output } => probe_once(&args, output),
        Command::Record {
            host_root,
            node,
            heartbeat,
            min_write_interval,
            probe_window,
            log_since,
            server,
            token_file,
            ca_file,
            kubelet_address,
            kubelet_port,
            kubelet_insecure_tls,
            print,
            max_reports,
        } => {
            if min_write_interval < Duration::from_secs(10) {
                eprintln!(
                    "tracer-user: --min-write-interval {min_write_interval:?}: at least 10s (one \
                     write per node per 10 s is the API server's budget)"
                );
                return ExitCode::from(2);
            }
            let cfg = tracer_user::recorder::RecordConfig {
                host_root,
                node,
                heartbeat: heartbeat.max(min_write_interval),
                min_write_interval,
                probe_window,
                log_since,
                server,
                token_file,
                ca_file,
                kubelet: kubelet_address.filter(|a| !a.is_empty()).map(|a| {
                    let host = if a.contains(':') { format!("[{a}]") } else { a };
                    format!("https://{host}:{kubelet_port}")
                }),
                kubelet_insecure_tls,
                print,
                max_writes: max_reports,
            };
            record(cfg)
        }
        Command::Serve {
            args,
            port,
            token_sha256,
            run_key,
            deadline,
            ready_file,
            not_after,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if let Some(expiry) = not_after.filter(|t| now > *t) {
                eprintln!(
                    "tracer-user: this run expired {} s ago (its plugin is gone): exiting without probing",
                    now - expiry
                );
                return ExitCode::SUCCESS;
            }
            let secrets = (token_sha256.as_str(), run_key.as_deref());
            return serve(args, port, secrets, deadline, ready_file);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer-user: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn record(cfg: tracer_user::recorder::RecordConfig) -> anyhow::Result<()> {
    log::init();
    runtime()?.block_on(async {
        let stop = Box::pin(async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        });
        tracer_user::recorder::run(cfg, stop)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    })
}

fn probe_once(args: &ProbeArgs, _output: Output) -> anyhow::Result<()> {
    let ev = runtime()?.block_on(probe::run(args.config(), None));
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &ev)?;
    match writeln!(out) {
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn serve(
    args: ProbeArgs,
    port: u16,
    (token_sha256, run_key): (&str, Option<&str>),
    deadline: Duration,
    ready_file: Option<PathBuf>,
) -> ExitCode {
    log::init();
    let token_sha256 = match server::parse_sha256(token_sha256) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("tracer-user: --token-sha256: {e}");
            return ExitCode::from(2);
        }
    };
    let run_key = match run_key
        .map(nodehealth_proto::proof::parse_hex32)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tracer-user: --run-key: {e}");
            return ExitCode::from(2);
        }
    };
    // The last line of defence: whatever is stuck (a blocking read in the kernel, a wedged
    // runtime thread), the process ends shortly after its deadline.
    thread::spawn(move || {
        thread::sleep(deadline + Duration::from_secs(3));
        std::process::exit(124);
    });
    let opts = ServeOptions {
        port,
        token_sha256,
        run_key,
        deadline,
        defaults: args.config(),
        ready_file,
    };
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        let r = rt.block_on(server::serve(opts));
        // Do not wait for blocking collectors that may be stuck in the kernel.
        rt.shutdown_timeout(Duration::from_millis(200));
        r
    });
    let code = match result {
        Ok(Exit::RunFinished) => 0,
        Ok(Exit::Deadline) => 124,
        Err(e) => {
            log::line(&format!("{e:#}"));
            2
        }
    };
    // Give the log thread a moment, never more.
    thread::sleep(Duration::from_millis(50));
    std::process::exit(code);
}

fn runq(
    pids: &[u32],
    seconds: u64,
    cri: Option<tracer_user::trace::CriTarget>,
) -> anyhow::Result<()> {
    let mut tracer = RunqTracer::attach_with(cri.as_ref())?;
    for &pid in pids {
        tracer.add_target(pid)?;
    }
    thread::sleep(Duration::from_secs(seconds));
    let mut rows: Vec<_> = tracer
        .thread_waits()?
        .into_iter()
        .map(|(tid, w)| {
            serde_json::json!({
                "tid": tid, "pid": w.tgid, "waits": w.count,
                "runQueueWaitNs": w.total_ns, "maxWaitNs": w.max_ns,
            })
        })
        .collect();
    rows.sort_by_key(|r| r["tid"].as_u64());
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}
