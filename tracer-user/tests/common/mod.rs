//! Real components the integration tests start and always clean up.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A private containerd (CRI plugin on) with its own root, state, socket and config in a temp
/// dir — never the machine's /run/containerd. Killed and removed on drop, also when frozen.
pub struct Containerd {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("nodehealth-ctrd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        // A minimal v2 config. restrict_oom_score_adj: the machine has no CAP_SYS_RESOURCE
        // (TOOLCHAIN.md). CNI conf_dir is empty on purpose: NetworkReady is then false, as on
        // a node whose CNI is not installed yet.
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = "{dir}/debug.sock"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni-bin"
    conf_dir = "{dir}/cni-conf"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            dir = d.display(),
        );
        fs::write(d.join("config.toml"), config).expect("write config");
        let log = fs::File::create(d.join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            // A file, not a pipe: a pipe nobody reads could block containerd itself.
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd (cargo xtask setup installs it)");
        let c = Containerd { child, dir, socket };
        c.wait_ready();
        c
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                // The gRPC socket is up; the CRI plugin registers on the same server.
                thread::sleep(Duration::from_millis(300));
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    pub fn freeze(&self) {
        self.signal("STOP");
    }

    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims (none are started here, but be safe) would be children of init; nothing is
        // mounted under the dir without containers, so removing it is enough.
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of the built agent binary.
pub fn agent_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tracer-user"))
}
