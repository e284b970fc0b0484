use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kubectl-nodehealth",
    version,
    about = "Why is this node's kubelet not responding, and what is the safe fix?"
)]
struct Cli {
    /// The node to diagnose.
    node: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "kubectl-nodehealth: diagnosis of {} is not implemented yet (see the API-side diagnosis issue)",
        cli.node.as_deref().unwrap_or("<node>")
    );
    ExitCode::from(kubectl_nodehealth::exit::UNDIAGNOSED)
}
