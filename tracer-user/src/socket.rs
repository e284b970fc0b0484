//! The runtime's CRI socket: does it exist, who may use it, and which process listens on it.
//!
//! The listener is found the way `ss -xlp` does it: the socket inode bound to the path in
//! /proc/net/unix (flag __SO_ACCEPTCON = listening), then the process holding `socket:[inode]`
//! among its fds. That process *is* the runtime, whatever its name.
use std::{collections::HashSet, fs, os::unix::fs::MetadataExt};

use nodehealth_proto::node::{RuntimeSocket, SocketHolder};

use crate::{discovery::socket_path, host::HostRoot, procfs};

/// `__SO_ACCEPTCON` in the Flags column of /proc/net/unix (include/linux/net.h).
const SO_ACCEPTCON: u32 = 1 << 16;
/// `SS_CONNECTED` in the St column.
const SS_CONNECTED: u32 = 3;

/// One row of /proc/net/unix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixEntry {
    pub flags: u32,
    pub state: u32,
    pub inode: u64,
    pub path: Option<String>,
}

/// Parses /proc/net/unix (header line first).
pub fn parse_net_unix(text: &str) -> Vec<UnixEntry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(UnixEntry {
                flags: u32::from_str_radix(f.get(3)?, 16).ok()?,
                state: u32::from_str_radix(f.get(5)?, 16).ok()?,
                inode: f.get(6)?.parse().ok()?,
                path: f.get(7).map(|p| p.to_string()),
            })
        })
        .collect()
}

/// Inspects the socket of `endpoint` (a `unix://` URL or a path).
pub fn inspect(host: &HostRoot, endpoint: &str) -> RuntimeSocket {
    let path = socket_path(endpoint).to_string();
    let resolved = host.resolve(&path);
    let mut s = RuntimeSocket {
        endpoint: endpoint.to_string(),
        path: path.clone(),
        ..Default::default()
    };
    if endpoint.contains("://") && !endpoint.starts_with("unix://") {
        s.notes
            .push("not a unix socket endpoint: only unix:// is inspected".into());
        return s;
    }
    match fs::metadata(host.lexical(&resolved)) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            s.exists = true;
            s.is_socket = meta.file_type().is_socket();
            s.mode = Some(format!("{:04o}", meta.mode() & 0o7777));
            s.uid = Some(meta.uid());
            s.gid = Some(meta.gid());
        }
        Err(e) => {
            s.notes.push(format!("{resolved}: {e}"));
            return s;
        }
    }
    if resolved != path {
        s.notes.push(format!("{path} resolves to {resolved}"));
    }
    let table = match fs::read_to_string(host.proc().join("net/unix")) {
        Ok(t) => parse_net_unix(&t),
        Err(e) => {
            s.notes.push(format!("cannot read /proc/net/unix: {e}"));
            return s;
        }
    };
    let matches = |p: &Option<String>| p.as_deref().is_some_and(|p| p == path || p == resolved);
    s.listener_inode = table
        .iter()
        .find(|e| e.flags & SO_ACCEPTCON != 0 && matches(&e.path))
        .map(|e| e.inode);
    s.connections = table
        .iter()
        .filter(|e| e.state == SS_CONNECTED && matches(&e.path))
        .count() as u32;
    match s.listener_inode {
        Some(inode) => s.listeners = holders(host, &HashSet::from([inode])),
        None => s.notes.push(
            "no process listens on this path (in this network namespace): \
             the socket file is stale or the runtime is gone"
                .into(),
        ),
    }
    s
}

/// Processes that hold any of `inodes` open.
pub fn holders(host: &HostRoot, inodes: &HashSet<u64>) -> Vec<SocketHolder> {
    let mut out = Vec::new();
    for pid in procfs::pids(host) {
        let dir = host.proc().join(pid.to_string());
        if procfs::socket_inodes(&dir)
            .iter()
            .any(|i| inodes.contains(i))
        {
            let comm = procfs::read_stat(host, pid)
                .map(|s| s.comm)
                .unwrap_or_default();
            // Threads share the fd table; /proc lists only thread-group leaders, so one per process.
            out.push(SocketHolder { pid, comm });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_unix_rows() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/containerd/containerd.sock\n\
                 0000000000000000: 00000003 00000000 00000000 0001 03 31338 /run/containerd/containerd.sock\n\
                 0000000000000000: 00000003 00000000 00000000 0001 03 31339\n";
        let rows = parse_net_unix(t);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].flags & SO_ACCEPTCON, SO_ACCEPTCON);
        assert_eq!(rows[0].inode, 31337);
        assert_eq!(rows[1].state, SS_CONNECTED);
        assert_eq!(rows[2].path, None);
    }

    #[test]
    fn finds_our_own_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _server_side = _listener.accept().unwrap();
        let host = HostRoot::new("/");
        let s = inspect(&host, &format!("unix://{}", path.display()));
        assert!(s.exists && s.is_socket, "{s:?}");
        assert!(s.listener_inode.is_some(), "{s:?}");
        assert_eq!(s.connections, 1, "{s:?}");
        assert!(
            s.listeners.iter().any(|h| h.pid == std::process::id()),
            "{s:?}"
        );
    }
}
