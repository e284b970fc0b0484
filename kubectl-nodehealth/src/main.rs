use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(kubectl_nodehealth::cli::main_entry())
}
