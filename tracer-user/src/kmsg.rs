//! The kernel log ring buffer through /dev/kmsg: OOM kills, hung tasks, I/O errors. Where the
//! device is refused (a non-privileged container: its device cgroup does not allow char 1:11),
//! the same ring is read with syslog(2) (`SYSLOG_ACTION_READ_ALL`, CAP_SYSLOG), whose lines are
//! `<prio>[seconds.micros] message`.
//!
//! /dev/kmsg is opened O_NONBLOCK: a reader starts at the oldest record still in the ring, each
//! read(2) returns one record, EAGAIN means the end of the ring (never wait for new ones), EPIPE
//! means records were overwritten while reading (Documentation/ABI/testing/dev-kmsg).
//! Record format: `<prio>,<seq>,<usec since boot>,<flags>[,...];<message>\n` followed by
//! continuation lines starting with a space.
use std::{
    collections::{BTreeMap, VecDeque},
    fs::OpenOptions,
    io::{ErrorKind, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use nodehealth_proto::node::{KernelEvent, KernelEventKind, KernelLog};

/// Events kept per kind (the most recent).
const KEEP: usize = 20;

/// One kmsg record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub priority: u8,
    pub seq: u64,
    pub usec: u64,
    pub message: String,
}

pub fn parse_record(raw: &str) -> Option<Record> {
    let (header, rest) = raw.split_once(';')?;
    let mut h = header.split(',');
    let prio: u32 = h.next()?.parse().ok()?;
    let seq = h.next()?.parse().ok()?;
    let usec = h.next()?.parse().ok()?;
    // The message is the first line; continuation (dictionary) lines start with a space.
    let message = rest.lines().next().unwrap_or("").to_string();
    Some(Record {
        priority: (prio & 7) as u8,
        seq,
        usec,
        message,
    })
}

/// `(name)` right after `Killed process <pid> `.
fn oom_victim(msg: &str) -> Option<(u32, String)> {
    // mm/oom_kill.c: "%s: Killed process %d (%s) total-vm:%lukB, anon-rss:..."
    let rest = msg.split("Killed process ").nth(1)?;
    let (pid, rest) = rest.split_once(' ')?;
    let name = rest.strip_prefix('(')?.split(')').next()?;
    Some((pid.parse().ok()?, name.to_string()))
}

/// `INFO: task <comm>:<pid> blocked for more than <n> seconds.` (kernel/hung_task.c)
fn hung_task(msg: &str) -> Option<(u32, String)> {
    let rest = msg.split("INFO: task ").nth(1)?;
    let (task, _) = rest.split_once(" blocked for more than")?;
    let (name, pid) = task.rsplit_once(':')?;
    Some((pid.parse().ok()?, name.to_string()))
}

/// The block device of an I/O error record: `I/O error, dev sda, sector ...`
/// (block/blk-core.c), `Buffer I/O error on dev sda1, ...` (fs/buffer.c),
/// `EXT4-fs error (device sda1): ...`.
fn io_error_device(msg: &str) -> Option<Option<String>> {
    if !(msg.contains("I/O error") || msg.contains("-fs error")) {
        return None;
    }
    let dev = msg
        .split("dev ")
        .nth(1)
        .or_else(|| msg.split("(device ").nth(1))
        .and_then(|r| {
            r.split(|c: char| c == ',' || c == ')' || c == ':' || c.is_whitespace())
                .next()
        })
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    Some(dev)
}

/// Classifies a record. `subjects` maps process names to `kubelet`/`runtime`.
pub fn classify(
    r: &Record,
    boot_unix_ms: i64,
    subjects: &BTreeMap<String, String>,
) -> Option<KernelEvent> {
    let at_unix_ms = boot_unix_ms + (r.usec / 1000) as i64;
    let event = |kind, pid: Option<u32>, process: Option<String>, device| KernelEvent {
        kind,
        at_unix_ms,
        usec_since_boot: r.usec,
        subject: process.as_ref().and_then(|p| subjects.get(p).cloned()),
        process,
        pid,
        device,
        message: r.message.clone(),
    };
    if let Some((pid, name)) = oom_victim(&r.message) {
        return Some(event(KernelEventKind::OomKill, Some(pid), Some(name), None));
    }
    if let Some((pid, name)) = hung_task(&r.message) {
        return Some(event(
            KernelEventKind::HungTask,
            Some(pid),
            Some(name),
            None,
        ));
    }
    if let Some(dev) = io_error_device(&r.message) {
        return Some(event(KernelEventKind::IoError, None, None, dev));
    }
    None
}

fn kind_name(k: KernelEventKind) -> &'static str {
    match k {
        KernelEventKind::OomKill => "oomKill",
        KernelEventKind::HungTask => "hungTask",
        KernelEventKind::IoError => "ioError",
    }
}

/// One line of syslog(2)'s copy of the ring: `<prio>[ seconds.micros] message` (printk.time on;
/// the kernel default). `seq` numbers the lines read.
pub fn parse_syslog_line(line: &str, seq: u64) -> Option<Record> {
    let rest = line.strip_prefix('<')?;
    let (prio, rest) = rest.split_once('>')?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (time, message) = rest.split_once(']')?;
    let seconds: f64 = time.trim().parse().ok()?;
    Some(Record {
        priority: (prio.parse::<u32>().ok()? & 7) as u8,
        seq,
        usec: (seconds * 1e6) as u64,
        message: message.trim_start().to_string(),
    })
}

/// The whole ring through syslog(2).
fn read_syslog() -> std::io::Result<String> {
    const READ_ALL: libc::c_int = 3;
    const SIZE_BUFFER: libc::c_int = 10;
    #[allow(unsafe_code)]
    // SAFETY: klogctl(SIZE_BUFFER) takes no buffer; klogctl(READ_ALL) writes at most `len` bytes
    // into the buffer we own, of that length.
    unsafe {
        let size = libc::klogctl(SIZE_BUFFER, std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        let n = libc::klogctl(READ_ALL, buf.as_mut_ptr() as *mut libc::c_char, size);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Keeps one record's event, if it is one.
fn keep(
    log: &mut KernelLog,
    kept: &mut BTreeMap<KernelEventKind, VecDeque<KernelEvent>>,
    rec: &Record,
    boot_unix_ms: i64,
    subjects: &BTreeMap<String, String>,
) {
    log.records_read += 1;
    if log.oldest_record_unix_ms.is_none() {
        log.oldest_record_unix_ms = Some(boot_unix_ms + (rec.usec / 1000) as i64);
    }
    if let Some(ev) = classify(rec, boot_unix_ms, subjects) {
        *log.counts
            .entry(kind_name(ev.kind).to_string())
            .or_default() += 1;
        let q = kept.entry(ev.kind).or_default();
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(ev);
    }
}

/// Reads the whole ring without blocking and keeps the relevant records.
pub fn collect(kmsg: &Path, boot_unix_ms: i64, subjects: &BTreeMap<String, String>) -> KernelLog {
    let mut log = KernelLog::default();
    let mut kept: BTreeMap<KernelEventKind, VecDeque<KernelEvent>> = BTreeMap::new();
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(kmsg)
    {
        Ok(f) => f,
        Err(e) => {
            // The device refused: the same ring through syslog(2).
            match read_syslog() {
                Ok(text) => {
                    log.readable = true;
                    log.source = Some(format!("syslog(2) ({} refused: {e})", kmsg.display()));
                    for (i, line) in text.lines().enumerate() {
                        if let Some(rec) = parse_syslog_line(line, i as u64) {
                            keep(&mut log, &mut kept, &rec, boot_unix_ms, subjects);
                        }
                    }
                    log.events = kept.into_values().flatten().collect();
                    log.events.sort_by_key(|e| e.usec_since_boot);
                }
                Err(s) => {
                    log.error = Some(format!(
                        "cannot open {}: {e}; syslog(2) refused too: {s} (the agent needs CAP_SYSLOG)",
                        kmsg.display()
                    ));
                }
            }
            return log;
        }
    };
    log.readable = true;
    log.source = Some(kmsg.display().to_string());
    let mut buf = vec![0u8; 16 * 1024];
    // A bound on records read, in case the kernel logs faster than we read.
    for _ in 0..1_000_000 {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let Some(rec) = parse_record(&text) else {
                    continue;
                };
                keep(&mut log, &mut kept, &rec, boot_unix_ms, subjects);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => log.records_lost += 1,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log.error = Some(format!("reading {}: {e}", kmsg.display()));
                break;
            }
        }
    }
    log.events = kept.into_values().flatten().collect();
    log.events.sort_by_key(|e| e.usec_since_boot);
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as the kernel formats them in /dev/kmsg (prio,seq,usec,flags;text + dictionary).
    const OOM: &str = "3,2291,483921337,-;Out of memory: Killed process 4242 (kubelet) \
        total-vm:1837260kB, anon-rss:912340kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:2088kB \
        oom_score_adj:-999\n";
    const MEMCG_OOM: &str = "3,2300,483999000,-;Memory cgroup out of memory: Killed process 777 \
        (containerd) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:44kB \
        oom_score_adj:0\n";
    const OOM_SUMMARY: &str = "6,2290,483921300,-;oom-kill:constraint=CONSTRAINT_NONE,\
        nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/kubelet,task=kubelet,\
        pid=4242,uid=0\n";
    const HUNG: &str = "3,1200,250000123,-;INFO: task containerd:1911 blocked for more than 122 \
        seconds.\n";
    const IO: &str = "3,1500,300000000,-;I/O error, dev sda, sector 2048 op 0x1:(WRITE) flags \
        0x800 phys_seg 1 prio class 2\n SUBSYSTEM=block\n DEVICE=b8:0\n";
    const BUF_IO: &str = "3,1501,300000100,-;Buffer I/O error on dev loop7, logical block 0, \
        async page read\n";
    const EXT4: &str = "2,1502,300000200,-;EXT4-fs error (device vdb1): ext4_find_entry:1455: \
        inode #2: comm ls: reading directory lblock 0\n";
    const BORING: &str = "6,5,1234,-;Linux version 6.18.0 (gcc) #1 SMP\n";

    fn subjects() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("kubelet".to_string(), "kubelet".to_string()),
            ("containerd".to_string(), "runtime".to_string()),
        ])
    }

    #[test]
    fn real_format_lines_are_classified() {
        let boot = 1_700_000_000_000;
        let ev = |raw: &str| classify(&parse_record(raw).unwrap(), boot, &subjects());

        let oom = ev(OOM).unwrap();
        assert_eq!(oom.kind, KernelEventKind::OomKill);
        assert_eq!(oom.pid, Some(4242));
        assert_eq!(oom.process.as_deref(), Some("kubelet"));
        assert_eq!(oom.subject.as_deref(), Some("kubelet"));
        assert_eq!(oom.at_unix_ms, boot + 483_921);
        let memcg = ev(MEMCG_OOM).unwrap();
        assert_eq!(memcg.subject.as_deref(), Some("runtime"));
        // The summary line of the same kill is not counted twice.
        assert!(ev(OOM_SUMMARY).is_none());

        let hung = ev(HUNG).unwrap();
        assert_eq!(hung.kind, KernelEventKind::HungTask);
        assert_eq!(
            (hung.pid, hung.process.as_deref()),
            (Some(1911), Some("containerd"))
        );
        assert_eq!(hung.subject.as_deref(), Some("runtime"));

        let io = ev(IO).unwrap();
        assert_eq!(io.kind, KernelEventKind::IoError);
        assert_eq!(io.device.as_deref(), Some("sda"));
        assert_eq!(
            io.message.lines().count(),
            1,
            "dictionary lines are not the message"
        );
        assert_eq!(ev(BUF_IO).unwrap().device.as_deref(), Some("loop7"));
        assert_eq!(ev(EXT4).unwrap().device.as_deref(), Some("vdb1"));
        assert!(ev(BORING).is_none());

        let r = parse_record(OOM).unwrap();
        assert_eq!((r.priority, r.seq, r.usec), (3, 2291, 483_921_337));
    }

    #[test]
    fn syslog_lines_give_the_same_records() {
        let line = "<3>[  483.921337] Out of memory: Killed process 4242 (kubelet) total-vm:1kB";
        let r = parse_syslog_line(line, 7).unwrap();
        assert_eq!((r.priority, r.seq, r.usec), (3, 7, 483_921_337));
        assert!(r.message.starts_with("Out of memory"), "{r:?}");
        let ev = classify(&r, 1_700_000_000_000, &subjects()).unwrap();
        assert_eq!(ev.kind, KernelEventKind::OomKill);
        assert!(parse_syslog_line("no prefix", 0).is_none());
    }

    /// The syslog(2) copy of the ring parses (the tests run as root: CAP_SYSLOG).
    #[test]
    fn syslog_reads_the_ring() {
        let text = read_syslog().expect("syslog(2) READ_ALL (needs CAP_SYSLOG: run as root)");
        assert!(text.lines().filter_map(|l| parse_syslog_line(l, 0)).count() > 0);
    }
}
