//! A small process supervisor, as systemd would run the kubelet and containerd: restart on exit
//! after a pause, count restarts, and stop when asked.
//!
//! It runs as `xtask supervise ...` in its own process group, detached from the `cluster up` that
//! started it. It is told to stop through a file (`<run>/<name>.stop`) rather than a signal, so it
//! needs no signal handling: it polls the child and the stop file a few times a second.

use std::{
    fs::{self, OpenOptions},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// `xtask supervise` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Component name (kubelet, containerd, ...): names the pid, restart and stop files.
    #[arg(long)]
    pub name: String,
    /// Directory for `<name>.pid`, `<name>.restarts`, `<name>.stop`.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Log file the child's stdout and stderr are appended to.
    #[arg(long)]
    pub log: PathBuf,
    /// cgroup directories (v1) the child is placed in right after it starts (cgroup.procs).
    #[arg(long = "cgroup")]
    pub cgroups: Vec<PathBuf>,
    /// Pause between an exit and the restart (systemd's RestartSec).
    #[arg(long, default_value_t = 2)]
    pub restart_sec: u64,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The files a supervisor keeps for component `name`.
pub struct Files {
    pub pid: PathBuf,
    pub restarts: PathBuf,
    pub stop: PathBuf,
    pub supervisor_pid: PathBuf,
}

pub fn files(run_dir: &std::path::Path, name: &str) -> Files {
    Files {
        pid: run_dir.join(format!("{name}.pid")),
        restarts: run_dir.join(format!("{name}.restarts")),
        stop: run_dir.join(format!("{name}.stop")),
        supervisor_pid: run_dir.join(format!("{name}.supervisor.pid")),
    }
}

pub fn run(args: Args) -> Result<()> {
    let f = files(&args.run_dir, &args.name);
    fs::write(&f.supervisor_pid, std::process::id().to_string())?;
    let mut restarts: u64 = 0;
    fs::write(&f.restarts, "0")?;
    loop {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening {:?}", args.log))?;
        let mut child = Command::new(&args.command[0])
            .args(&args.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {:?}", args.command))?;
        let pid = child.id();
        fs::write(&f.pid, pid.to_string())?;
        for cg in &args.cgroups {
            // A failure here is logged, not fatal: the component runs, only the fault that
            // needs the cgroup will not work.
            if let Err(e) = fs::write(cg.join("cgroup.procs"), pid.to_string()) {
                eprintln!("supervise {}: placing {pid} in {cg:?}: {e}", args.name);
            }
        }
        let status = loop {
            if f.stop.exists() {
                stop_child(&mut child, pid);
                let _ = fs::remove_file(&f.pid);
                let _ = fs::remove_file(&f.supervisor_pid);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            thread::sleep(Duration::from_millis(200));
        };
        restarts += 1;
        fs::write(&f.restarts, restarts.to_string())?;
        eprintln!(
            "supervise {}: exited ({status}); restart {restarts} in {} s",
            args.name, args.restart_sec
        );
        let until = Instant::now() + Duration::from_secs(args.restart_sec);
        while Instant::now() < until {
            if f.stop.exists() {
                let _ = fs::remove_file(&f.pid);
                let _ = fs::remove_file(&f.supervisor_pid);
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL. A frozen child (cgroup freezer) cannot act on SIGTERM;
/// `cluster down` thaws before it stops anything.
fn stop_child(child: &mut std::process::Child, pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
