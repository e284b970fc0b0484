//! Real components the integration tests start and always clean up.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The sandbox image name the private containerd is configured with (built by
/// [`Containerd::import_pause_image`]).
pub const PAUSE_IMAGE: &str = "nodehealth.test/pause:1";

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
  sandbox_image = "{pause}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni-bin"
    conf_dir = "{dir}/cni-conf"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            dir = d.display(),
            pause = PAUSE_IMAGE,
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
            // The socket accepts as soon as it is bound; containerd logs "successfully booted"
            // once every plugin, the CRI one among them, is registered and serving.
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && self.log().contains("containerd successfully booted")
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up; log:\n{}", self.log());
    }

    /// Builds a static pause binary (gcc -static) into a one-layer OCI archive and imports it
    /// as [`PAUSE_IMAGE`] into this containerd's k8s.io namespace (no registry is reachable).
    pub fn import_pause_image(&self) {
        use sha2::{Digest, Sha256};
        let d = self.dir.path().join("image");
        let rootfs = d.join("rootfs");
        let layout = d.join("layout");
        fs::create_dir_all(&rootfs).unwrap();
        fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        fs::write(
            d.join("pause.c"),
            "#include <signal.h>\n#include <sys/wait.h>\n#include <unistd.h>\n\
             static void stop(int s) { (void)s; _exit(0); }\n\
             static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }\n\
             int main(void) { signal(SIGINT, stop); signal(SIGTERM, stop); \
             signal(SIGCHLD, reap); for (;;) pause(); }\n",
        )
        .unwrap();
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(rootfs.join("pause"))
            .arg(d.join("pause.c")));
        let layer_tar = d.join("layer.tar");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&layer_tar)
            .arg("-C")
            .arg(&rootfs)
            .arg("pause"));
        let blob = |bytes: &[u8]| -> (String, usize) {
            let hex: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
            (format!("sha256:{hex}"), bytes.len())
        };
        let (layer, layer_size) = blob(&fs::read(&layer_tar).unwrap());
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/pause"]}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
        );
        let (config, config_size) = blob(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_size}}}]}}"#
        );
        let (manifest, manifest_size) = blob(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{manifest_size},"annotations":{{"io.containerd.image.name":"{PAUSE_IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}"#
        );
        fs::write(layout.join("index.json"), index).unwrap();
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let archive = d.join("pause.tar");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .args(["oci-layout", "index.json", "blobs"]));
        run(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
            ])
            .arg(&archive));
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
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.path().display().to_string();
        // Shims of this containerd (they name its socket in -address) and their children.
        let shims = own_shims(&dir);
        for pid in &shims {
            let _ = Command::new("kill")
                .args(["-9", &format!("-{pid}")])
                .status();
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // Gone before their mounts are taken down (a dying shim may still hold them).
        let until = Instant::now() + Duration::from_secs(5);
        while shims
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < until
        {
            thread::sleep(Duration::from_millis(20));
        }
        // Anything still mounted under the temp dir (sandbox shm, rootfs), deepest first.
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

/// Pids of containerd-shim processes whose command line names `dir` (this test's socket).
pub fn own_shims(dir: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        let is_shim =
            cmd.starts_with("/usr/bin/containerd-shim") || cmd.starts_with("containerd-shim");
        if is_shim && cmd.contains(dir) {
            out.push(pid);
        }
    }
    out
}

/// A cgroup parent this test owns in every hierarchy; removed (bottom-up) on drop.
pub struct CgroupParent(pub String);

impl CgroupParent {
    pub fn new(tag: &str) -> CgroupParent {
        CgroupParent(format!("/nodehealth-test-{}-{tag}", std::process::id()))
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let name = self.0.trim_start_matches('/');
        for h in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let top = h.path().join(name);
            if !top.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            // Whatever still runs in them is a container this test started.
            for d in &dirs {
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                for _ in 0..20 {
                    if fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn collect_dirs(p: &Path, out: &mut Vec<PathBuf>) {
    out.push(p.to_path_buf());
    for e in fs::read_dir(p).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

/// `xtask/cri-sim` (a grpc-go CRI server with a known delay, and the kubelet's own CRI client),
/// built once per test binary with the machine's Go into the target dir — or the one `CRI_SIM`
/// names (the guest node runs these tests from binaries built on the host, and has no Go).
pub fn cri_sim() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(prebuilt) = std::env::var_os("CRI_SIM") {
                return PathBuf::from(prebuilt);
            }
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cri-sim");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/cri-sim");
            let go = which_go();
            let status = Command::new(&go)
                .args(["build", "-trimpath", "-buildvcs=false", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(&src)
                .env("CGO_ENABLED", "0")
                .status()
                .unwrap_or_else(|e| panic!("running {go:?} (Go is installed by setup): {e}"));
            assert!(status.success(), "go build xtask/cri-sim failed");
            out
        })
        .clone()
}

pub fn which_go() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("go"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/local/go/bin/go"))
}
