//! The host's file system as the agent sees it: under `/host` in the probe pod, `/` standalone.
//!
//! Paths the kubelet names (in its flags, its config, its kubeconfig) are host paths. They are
//! resolved here component by component, so an absolute symlink on the host
//! (`/var/run -> /run`, `kubelet-client-current.pem -> /var/lib/kubelet/pki/...`) stays inside
//! the host root instead of escaping into the agent's own container.
use std::{
    fs,
    io::{self, Read},
    path::{Component, Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// The Linux /proc ABI reports CPU times in USER_HZ ticks, which is 100 on every architecture
/// Kubernetes runs on (include/asm-generic/param.h), independent of the kernel's CONFIG_HZ.
pub const USER_HZ: f64 = 100.0;

/// Where the host's `/` is mounted, and where its /proc is.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
    proc: PathBuf,
}

impl HostRoot {
    /// `root` is `/` or the mount point of the host's root (`/host`). Its `proc` is used when it
    /// holds a procfs (the probe pod mounts the host root recursively); otherwise the agent's
    /// own /proc, which shows the host's processes when the pod has hostPID.
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        let root = root.into();
        let candidate = root.join("proc");
        let proc = if candidate.join("self/stat").exists() {
            candidate
        } else {
            PathBuf::from("/proc")
        };
        HostRoot { root, proc }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host's /proc.
    pub fn proc(&self) -> &Path {
        &self.proc
    }

    /// `/proc/<pid>/<file>` of a host process.
    pub fn proc_file(&self, pid: u32, file: &str) -> PathBuf {
        self.proc.join(pid.to_string()).join(file)
    }

    /// The agent-side path of a host path, without following symlinks.
    pub fn lexical(&self, host_path: &str) -> PathBuf {
        let rel = host_path.trim_start_matches('/');
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Resolves every symlink of a host path inside the host root. Returns the resolved host path
    /// (missing trailing components are kept as they are).
    pub fn resolve(&self, host_path: &str) -> String {
        let mut pending: Vec<String> = components(host_path).into_iter().rev().collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let candidate = format!("/{}", join(&resolved, &part));
            let agent_path = self.lexical(&candidate);
            match fs::symlink_metadata(&agent_path) {
                Ok(meta) if meta.file_type().is_symlink() && hops < 40 => {
                    hops += 1;
                    let Ok(target) = fs::read_link(&agent_path) else {
                        resolved.push(part);
                        continue;
                    };
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    pending.extend(components(&target).into_iter().rev());
                }
                _ => resolved.push(part),
            }
        }
        format!("/{}", resolved.join("/"))
    }

    /// The agent-side path of a host path with symlinks resolved inside the host root.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.lexical(&self.resolve(host_path))
    }

    /// Reads a small host file, at most `limit` bytes (a regular file only: see [`open_regular`]).
    pub fn read_limited(&self, host_path: &str, limit: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        open_regular(&self.path(host_path))?
            .0
            .take(limit)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Opens a file to read, without blocking, and only if it is a regular file: a FIFO at a
/// configuration or certificate path (no writer: a plain open or read waits forever), a device or
/// a socket is an error naming what it is. Judged on the open file, so it cannot be swapped
/// between the check and the read.
pub fn open_regular(path: &Path) -> io::Result<(fs::File, fs::Metadata)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok((file, meta));
    }
    let t = meta.file_type();
    let kind = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({kind}), not read"),
    ))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn join(prefix: &[String], last: &str) -> String {
    if prefix.is_empty() {
        last.to_string()
    } else {
        format!("{}/{last}", prefix.join("/"))
    }
}

/// Joins a possibly relative host path onto a host directory.
pub fn host_join(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), path)
    }
}

/// Node wall clock, Unix milliseconds.
pub fn now_unix_ms() -> i64 {
    unix_ms(SystemTime::now())
}

pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn absolute_symlinks_stay_inside_the_host_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("run/containerd")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        fs::write(root.join("run/containerd/x.sock"), b"").unwrap();
        fs::create_dir_all(root.join("pki")).unwrap();
        fs::write(root.join("pki/client-2026.pem"), b"c").unwrap();
        symlink("/pki/client-2026.pem", root.join("pki/current.pem")).unwrap();
        symlink("client-2026.pem", root.join("pki/rel.pem")).unwrap();

        let host = HostRoot::new(root);
        assert_eq!(
            host.resolve("/var/run/containerd/x.sock"),
            "/run/containerd/x.sock"
        );
        assert_eq!(host.resolve("/pki/current.pem"), "/pki/client-2026.pem");
        assert_eq!(host.resolve("/pki/rel.pem"), "/pki/client-2026.pem");
        assert_eq!(host.resolve("/var/run/missing/y"), "/run/missing/y");
        assert_eq!(
            host.path("/pki/current.pem"),
            root.join("pki/client-2026.pem")
        );
        // No procfs under the temp root: the agent's own /proc is used.
        assert_eq!(host.proc(), Path::new("/proc"));
    }
}
