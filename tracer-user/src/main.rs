//! `tracer-user`: the node agent binary.
use std::{process::ExitCode, thread, time::Duration};

use clap::{Parser, Subcommand};
use tracer_user::runq::RunqTracer;

#[derive(Parser)]
#[command(name = "tracer-user", version, about = "kubectl-nodehealth node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Runq { pids, seconds } => match runq(&pids, seconds) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tracer-user: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn runq(pids: &[u32], seconds: u64) -> anyhow::Result<()> {
    let mut tracer = RunqTracer::attach()?;
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
