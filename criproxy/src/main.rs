//! `nodehealth-criproxy`: the CRI proxy of the `runtime-slow-list` fault as its own static
//! binary, for the guest node (the host's cluster runs the same code as `xtask criproxy`).

use clap::Parser;

#[derive(Parser)]
#[command(about = "Holds a PLEG relist's CRI calls for the delay in a control file")]
struct Cli {
    #[command(flatten)]
    args: nodehealth_criproxy::Args,
}

fn main() -> anyhow::Result<()> {
    nodehealth_criproxy::run(Cli::parse().args)
}
