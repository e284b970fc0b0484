//! Which of the kubelet's fds are its connections to the runtime's CRI socket.
//!
//! A connected unix socket has no path of its own; its peer — the socket the runtime accepted —
//! carries the listener's path. The peer's inode is nowhere in /proc, so it comes from the
//! kernel's socket diagnostics (netlink `sock_diag`, `UNIX_DIAG_PEER`, what `ss -xp` uses): every
//! unix socket of this network namespace with its name and peer. The agent runs in the host's
//! network namespace (standalone, or the probe pod with hostNetwork), where the kubelet's and the
//! runtime's sockets live.

use std::{collections::HashMap, fs};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    unix::{ShowFlags, StateFlags, UnixRequest, nlas::UnixDiagName},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::host::HostRoot;

/// A unix socket as sock_diag reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixSocket {
    /// Bound path (an accepted socket reports its listener's path).
    pub name: Option<String>,
    /// Inode of the other end, for connected sockets.
    pub peer: Option<u32>,
}

/// Every unix socket of this network namespace, by inode.
pub fn unix_sockets() -> std::io::Result<HashMap<u32, UnixSocket>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: StateFlags::all(),
            inode: 0,
            show_flags: ShowFlags::NAME | ShowFlags::PEER,
            cookie: [0xff; 8],
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut sockets = HashMap::new();
    let mut rx = Vec::with_capacity(64 * 1024);
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        let mut off = 0;
        while off < n {
            // nlmsg_len, the first field of every message: a message this crate cannot parse
            // (say, a bound name without its NUL) is skipped, not fatal.
            let len = rx
                .get(off..off + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(0);
            let Ok(msg) = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[off..n]) else {
                if len == 0 {
                    break;
                }
                off += len;
                continue;
            };
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                    let name = match r.name() {
                        Some(UnixDiagName::Pathname(p)) => Some(p.to_string_lossy().into_owned()),
                        _ => None,
                    };
                    sockets.insert(
                        r.header.inode,
                        UnixSocket {
                            name,
                            peer: r.peer(),
                        },
                    );
                }
                NetlinkPayload::Done(_) => return Ok(sockets),
                NetlinkPayload::Error(e) => {
                    return Err(std::io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// The fds of process `pid` connected to the socket bound at `path` (the path as the runtime
/// bound it — the host's path), ascending.
pub fn connected_fds(
    host: &HostRoot,
    pid: u32,
    path: &str,
    sockets: &HashMap<u32, UnixSocket>,
) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(host.proc().join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            let inode: u32 = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let peer = sockets.get(&inode)?.peer?;
            (sockets.get(&peer)?.name.as_deref() == Some(path)).then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}
