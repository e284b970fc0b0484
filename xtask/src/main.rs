//! `cargo xtask <command>`: developer automation for kubectl-nodehealth.
//!
//! Every command installs what it needs through `setup` (idempotent, cached outside the clone) and
//! prints what it does, so a fresh machine and a warm one run the same commands.
mod agent_image;
mod bench;
mod campaign;
mod cluster;
mod demo;
mod dist;
mod fuzz;
mod guest;
mod prometheus;
mod setup;
mod sh;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "kubectl-nodehealth developer automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything this machine lacks for building and testing (idempotent).
    Setup,
    /// Setup, then fmt, clippy, every test tier and the fuzz smoke.
    Test {
        /// Also run the long tier (default kubelet timings; minutes per scenario).
        #[arg(long)]
        long: bool,
        /// Run the selected tests N times (the end-to-end ones against one cluster) and print
        /// each test's pass count: the flake hunt.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Only this tier (unit, integration, e2e, fuzz: the fuzz smoke), test binary
        /// (scenarios, cri_calls, ...) or test name filter; skips fmt and clippy.
        #[arg(long)]
        only: Option<String>,
    },
    /// Benchmarks (ratios measured side by side in one run).
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
    /// Build the node agent's OCI image (static binary, no Docker); import it into the local
    /// cluster when it is up. With --push: linux/amd64 + linux/arm64 as one index, pushed.
    Image {
        /// Push the multi-arch image to this reference (registry/repository:tag) and print the
        /// digest reference to pass as the plugin's --image.
        #[arg(long, value_name = "REF")]
        push: Option<String>,
        /// Plain HTTP to the registry (one on loopback).
        #[arg(long, requires = "push")]
        insecure: bool,
    },
    /// The plugin's release archives (linux amd64/arm64 static, windows amd64; macOS
    /// type-checked), their SHA256SUMS and the krew manifest nodehealth.yaml.
    Dist {
        /// Where to write them (default target/dist/v<version>).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Only this platform, os/arch (repeatable): linux/amd64, linux/arm64, windows/amd64,
        /// darwin/arm64 (type check only).
        #[arg(long = "platform", value_name = "OS/ARCH")]
        platforms: Vec<String>,
        /// The URL the archives will be published under (the manifest's URIs); default the
        /// repository's release download URL for this version.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// The agent image the released plugin uses by default: the reference `cargo xtask
        /// image --push` printed (pinned by digest).
        #[arg(long, value_name = "REF")]
        image: Option<String>,
    },
    /// Fuzz the parsers of what a node sends (cargo-fuzz, libFuzzer; corpora kept in
    /// ~/.cache/kubectl-nodehealth): each target for N minutes. A crash, a hang or a memory
    /// blow-up prints its input and the command that reproduces it, and fails the command.
    Fuzz {
        /// Minutes per target.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        minutes: u64,
        /// Only this target (prom_text, hpack, http_response, kmsg, log_lines, bundle,
        /// agent_evidence).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Set up, start the local cluster and run `kubectl nodehealth` on its node.
    Demo,
    /// The local single-node Kubernetes cluster.
    Cluster {
        #[command(subcommand)]
        cmd: cluster::Cmd,
    },
    /// Inject a failure into the local cluster.
    Fault {
        /// The node to break: the host's (default) or `guest` (`cluster up --guest-node`).
        #[arg(long, value_parser = ["guest"])]
        node: Option<String>,
        #[command(subcommand)]
        fault: cluster::fault::Fault,
    },
    /// The Debian guest node under QEMU (kernel 6.1 or 6.12, systemd, cgroup v2): its image,
    /// cached outside the clone, and its boot.
    Guest {
        #[command(subcommand)]
        cmd: guest::Cmd,
    },
    /// Undo every fault injected into the local cluster.
    Heal,
    /// Diagnostic accuracy over random faults, strengths, moments and ways to run the tool,
    /// scored against the written-down truth (results in target/campaign/).
    Campaign(campaign::Args),
    /// (internal) The kubelet's cuttable path to the API server.
    #[command(hide = true)]
    Lb(cluster::lb::Args),
    /// (internal) The disk-slow fault's steady stream of short-lived pods.
    #[command(hide = true)]
    Podchurn(cluster::podchurn::Args),
    /// (internal) The CRI proxy the runtime-slow-list fault puts between the kubelet and containerd.
    #[command(hide = true)]
    Criproxy(cluster::criproxy::Args),
    /// (internal) Run a component like systemd would: restart on exit, count restarts.
    #[command(hide = true)]
    Supervise(cluster::supervise::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Test { long, repeat, only } => test::run(test::Options { long, repeat, only }),
        Command::Image { push: None, .. } => agent_image::run(),
        Command::Image {
            push: Some(reference),
            insecure,
        } => agent_image::push(&reference, insecure).map(|pinned| println!("{pinned}")),
        Command::Dist {
            out,
            platforms,
            base_url,
            image,
        } => dist::run(dist::Options {
            out,
            platforms,
            base_url,
            image,
        }),
        Command::Fuzz { minutes, target } => fuzz::run(&fuzz::Options {
            seconds: minutes * 60,
            target,
        }),
        Command::Demo => demo::run(),
        Command::Bench { bench } => bench::run(bench),
        Command::Cluster { cmd } => cluster::run(cmd),
        Command::Supervise(args) => cluster::supervise::run(args),
        Command::Fault { node: None, fault } => cluster::fault::apply(fault),
        Command::Fault {
            node: Some(_),
            fault,
        } => cluster::guest_node::apply_fault(&cluster::Layout::new(), &fault),
        Command::Heal => cluster::fault::heal(),
        Command::Guest { cmd } => {
            // `guest boot -- CMD` exits with CMD's status.
            return guest::run(cmd).unwrap_or_else(|e| {
                eprintln!("xtask: error: {e:#}");
                ExitCode::FAILURE
            });
        }
        Command::Campaign(args) => campaign::run(args),
        Command::Lb(args) => cluster::lb::run(args),
        Command::Criproxy(args) => cluster::criproxy::run(args),
        Command::Podchurn(args) => cluster::podchurn::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
