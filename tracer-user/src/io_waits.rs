//! What the target threads in I/O wait are blocked in: every [`IO_WAIT_SAMPLE_MS`] the tracing
//! window looks at the threads the eBPF tracer has in I/O wait and reads their
//! `/proc/<pid>/task/<tid>/syscall` (the syscall a blocked thread is in, with its arguments). For
//! a syscall on an fd, `/proc/<pid>/fd/<fd>` gives the file and the device its file system is on.
//!
//! This names the device a thread waits on even when the bios it waits for are not its own: an
//! fsync waits for writeback and the journal, and bios delayed by blk-throttle are re-issued from
//! a kernel worker — the bio histograms (by submitter) miss both.

use std::{
    collections::HashMap,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use nodehealth_proto::node::{IO_WAIT_SAMPLE_MS, TraceIoWait};

/// I/O-wait kinds listed in the evidence at most.
pub const MAX_IO_WAITS: usize = 10;

/// The syscall a blocked thread is in, from `/proc/<pid>/task/<tid>/syscall`: its number and
/// first argument. `None` when the thread runs (`running`) or is blocked outside a syscall
/// (`-1 ...`, e.g. a page fault).
pub fn parse_syscall(text: &str) -> Option<(i64, u64)> {
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let arg0 = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())?;
    Some((nr, arg0))
}

/// The name of a syscall a thread may wait for I/O in, and whether its first argument is an fd.
pub fn syscall_name(nr: i64) -> Option<(&'static str, bool)> {
    let known: &[(i64, &str, bool)] = &[
        (libc::SYS_read, "read", true),
        (libc::SYS_write, "write", true),
        (libc::SYS_pread64, "pread64", true),
        (libc::SYS_pwrite64, "pwrite64", true),
        (libc::SYS_readv, "readv", true),
        (libc::SYS_writev, "writev", true),
        (libc::SYS_preadv, "preadv", true),
        (libc::SYS_pwritev, "pwritev", true),
        (libc::SYS_fsync, "fsync", true),
        (libc::SYS_fdatasync, "fdatasync", true),
        (libc::SYS_sync_file_range, "sync_file_range", true),
        (libc::SYS_syncfs, "syncfs", true),
        (libc::SYS_fallocate, "fallocate", true),
        (libc::SYS_ftruncate, "ftruncate", true),
        (libc::SYS_getdents64, "getdents64", true),
        (libc::SYS_fstat, "fstat", true),
        (libc::SYS_close, "close", true),
        (libc::SYS_sync, "sync", false),
        (libc::SYS_openat, "openat", false),
        (libc::SYS_renameat, "renameat", false),
        (libc::SYS_unlinkat, "unlinkat", false),
        (libc::SYS_mkdirat, "mkdirat", false),
        (libc::SYS_newfstatat, "newfstatat", false),
        (libc::SYS_mount, "mount", false),
        (libc::SYS_umount2, "umount2", false),
    ];
    known
        .iter()
        .find(|(n, _, _)| *n == nr)
        .map(|(_, name, fd)| (*name, *fd))
}

/// `major:minor` of a `dev_t` as user space encodes it (glibc's gnu_dev_major/minor).
pub fn dev_text(dev: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major}:{minor}")
}

/// The file behind fd `fd` of `pid` and the device it is on (a block device file is its own
/// device: O_DIRECT writes to /dev/sdX).
fn fd_file(proc: &Path, pid: u32, fd: u64) -> (Option<String>, Option<String>) {
    let link = proc.join(pid.to_string()).join("fd").join(fd.to_string());
    let path = std::fs::read_link(&link)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let device = std::fs::metadata(&link).ok().map(|m| {
        if m.file_type().is_block_device() {
            dev_text(m.rdev())
        } else {
            dev_text(m.dev())
        }
    });
    (path, device)
}

/// The kernel's name of block device `major:minor` (`DEVNAME` in sysfs), if it is one.
pub fn block_device_name(device: &str) -> Option<String> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{device}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_string)
}

/// What one sample found a thread blocked in: owner, pid, syscall, file, device.
type Blocked = (String, u32, String, Option<String>, Option<String>);

/// Counts what the threads in I/O wait are blocked in over a window.
pub struct IoWaitSampler {
    proc: PathBuf,
    counts: HashMap<Blocked, u32>,
}

impl IoWaitSampler {
    /// `proc`: the host's /proc (the tracer's pids are the host's).
    pub fn new(proc: impl Into<PathBuf>) -> Self {
        IoWaitSampler {
            proc: proc.into(),
            counts: HashMap::new(),
        }
    }

    /// One look at the threads `(tid, tgid)` the tracer has in I/O wait now.
    pub fn sample(&mut self, in_io_wait: &[(u32, u32)], targets: &[(&'static str, u32)]) {
        for &(tid, tgid) in in_io_wait {
            let Some((owner, _)) = targets.iter().find(|(_, p)| *p == tgid) else {
                continue;
            };
            let file = self
                .proc
                .join(tgid.to_string())
                .join("task")
                .join(tid.to_string())
                .join("syscall");
            let Some((nr, arg0)) = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| parse_syscall(&t))
            else {
                continue;
            };
            let (name, on_fd) = syscall_name(nr)
                .map(|(n, fd)| (n.to_string(), fd))
                .unwrap_or_else(|| (format!("syscall {nr}"), false));
            let (path, device) = if on_fd {
                fd_file(&self.proc, tgid, arg0)
            } else {
                (None, None)
            };
            *self
                .counts
                .entry((owner.to_string(), tgid, name, path, device))
                .or_default() += 1;
        }
    }

    /// The window's I/O waits, most samples first.
    pub fn finish(self) -> Vec<TraceIoWait> {
        let mut out: Vec<TraceIoWait> = self
            .counts
            .into_iter()
            .map(
                |((owner, pid, syscall, path, device), samples)| TraceIoWait {
                    owner,
                    pid,
                    syscall,
                    path,
                    device_name: device.as_deref().and_then(block_device_name),
                    device,
                    samples,
                },
            )
            .collect();
        out.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.path.cmp(&b.path)));
        out.truncate(MAX_IO_WAITS);
        out
    }
}

/// How often the window samples the threads in I/O wait.
pub const IO_WAIT_EVERY: std::time::Duration = std::time::Duration::from_millis(IO_WAIT_SAMPLE_MS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        // A thread blocked in fsync(7) (the number is the build architecture's), one running, one
        // in a page fault.
        let fsync = format!(
            "{} 0x7 0xc000123000 0x0 0x0 0x0 0x0 0x7ffd1 0x4a3b2c",
            libc::SYS_fsync
        );
        assert_eq!(parse_syscall(&fsync), Some((libc::SYS_fsync, 7)));
        assert_eq!(syscall_name(libc::SYS_fsync), Some(("fsync", true)));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd1 0x4a3b2c\n"), None);
        assert_eq!(syscall_name(99_999), None);
    }

    #[test]
    fn device_numbers_decode_like_glibc() {
        assert_eq!(dev_text(0x0700), "7:0");
        assert_eq!(dev_text(0xfe01), "254:1");
        // Minors past 255 spill into bits 20 and up (loop259 = 7:259).
        assert_eq!(dev_text(0x03 | 0x700 | (0x100 << 12)), "7:259");
    }

    #[test]
    fn a_thread_of_our_own_blocked_in_a_syscall_is_found_with_its_file() {
        // This process as the target: a thread that reads a pipe blocks in read(fd); the sampler
        // names the syscall and the pipe (no block device: pipefs).
        let (r, w) = {
            let mut fds = [0; 2];
            #[allow(unsafe_code)]
            // SAFETY: pipe() fills the two-element array it is given.
            let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
            assert_eq!(rc, 0);
            (fds[0], fds[1])
        };
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            #[allow(unsafe_code)]
            // SAFETY: gettid has no preconditions; read() writes at most 1 byte into `b`.
            unsafe {
                tid_tx.send(libc::gettid() as u32).unwrap();
                let mut b = [0u8; 1];
                libc::read(r, b.as_mut_ptr().cast(), 1);
            }
        });
        let tid = tid_rx.recv().unwrap();
        let pid = std::process::id();
        let mut sampler = IoWaitSampler::new("/proc");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            sampler.sample(&[(tid, pid), (tid, 1)], &[("runtime", pid)]);
            let found = sampler.counts.keys().any(|k| k.2 == "read");
            if found || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        #[allow(unsafe_code)]
        // SAFETY: writes one byte from a live buffer to our own pipe, then closes our fds.
        unsafe {
            libc::write(w, b"x".as_ptr().cast(), 1);
            reader.join().unwrap();
            libc::close(r);
            libc::close(w);
        }
        let waits = sampler.finish();
        let read = waits
            .iter()
            .find(|w| w.syscall == "read")
            .unwrap_or_else(|| panic!("{waits:?}"));
        assert_eq!(read.owner, "runtime");
        assert!(
            read.path.as_deref().is_some_and(|p| p.starts_with("pipe:")),
            "{read:?}"
        );
        assert!(read.device.as_deref().is_some_and(|d| d.starts_with("0:")));
        assert_eq!(read.device_name, None, "pipefs is no block device");
        // The thread of pid 1 was not a target: nothing recorded for it.
        assert!(waits.iter().all(|w| w.pid == pid));
    }
}
