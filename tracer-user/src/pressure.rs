//! Pressure stall information (/proc/pressure/{cpu,io,memory}) and the CPU bandwidth
//! throttling of the kubelet's and runtime's cgroups: cgroup v1 `cpu.stat` (nr_periods,
//! nr_throttled, throttled_time in ns) and v2 `cpu.stat` (nr_periods, nr_throttled,
//! throttled_usec). Both are sampled at the start and the end of the window.
use std::{collections::HashMap, fs};

use nodehealth_proto::node::{CgroupCpu, CgroupPsi, Pressure, PsiLine, PsiResource};

use crate::{host::HostRoot, procfs};

/// PSI of one resource: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` (+ `full ...`).
pub fn parse_psi(text: &str) -> PsiResource {
    let mut r = PsiResource::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let kind = it.next();
        let mut l = PsiLine::default();
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => l.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => l.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => l.avg300 = v.parse().unwrap_or(0.0),
                "total" => l.total_us = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => r.some = Some(l),
            Some("full") => r.full = Some(l),
            _ => {}
        }
    }
    r
}

fn with_delta(end: Option<PsiLine>, start: Option<&PsiLine>) -> Option<PsiLine> {
    end.map(|mut e| {
        e.window_delta_us = start.map(|s| e.total_us.saturating_sub(s.total_us));
        e
    })
}

/// `cpu.stat` as key → value.
pub fn parse_kv(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A start- or end-of-window sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    psi: HashMap<&'static str, PsiResource>,
    psi_error: Option<String>,
    cgroups: Vec<CgroupCpu>,
}

fn cgroup_cpu(host: &HostRoot, owner: &str, pid: u32) -> CgroupCpu {
    let mut c = CgroupCpu {
        owner: owner.to_string(),
        pid,
        ..Default::default()
    };
    let Some((version, path, dir)) = procfs::cgroup_dir(host, pid, Some("cpu")) else {
        c.error = Some("no cpu cgroup found for the process".into());
        return c;
    };
    c.cgroup_version = version;
    c.path = path;
    match fs::read_to_string(dir.join("cpu.stat")) {
        Ok(t) => {
            let kv = parse_kv(&t);
            c.nr_periods = kv.get("nr_periods").copied().unwrap_or(0);
            c.nr_throttled = kv.get("nr_throttled").copied().unwrap_or(0);
            c.throttled_ns = if version == 1 {
                kv.get("throttled_time").copied().unwrap_or(0)
            } else {
                kv.get("throttled_usec").copied().unwrap_or(0) * 1000
            };
        }
        Err(e) => c.error = Some(format!("{}: {e}", dir.join("cpu.stat").display())),
    }
    c.psi = cgroup_psi(host, pid);
    c.io_max = io_limits(host, pid);
    if version == 1 {
        let read = |f: &str| fs::read_to_string(dir.join(f)).ok();
        c.quota_us = read("cpu.cfs_quota_us")
            .and_then(|v| v.trim().parse().ok())
            .filter(|q: &i64| *q >= 0);
        c.period_us = read("cpu.cfs_period_us").and_then(|v| v.trim().parse().ok());
    } else if let Ok(max) = fs::read_to_string(dir.join("cpu.max")) {
        // "max 100000" or "50000 100000"
        let mut it = max.split_whitespace();
        c.quota_us = it.next().and_then(|q| q.parse().ok());
        c.period_us = it.next().and_then(|p| p.parse().ok());
    }
    c
}

/// The v2 cgroup's own PSI and CPU usage; None on a v1-only host, when the process sits in the
/// root cgroup (whose PSI is the node's, as on a hybrid host's empty unified hierarchy), or when
/// the kernel has PSI off.
fn cgroup_psi(host: &HostRoot, pid: u32) -> Option<CgroupPsi> {
    let (_, path, dir) = procfs::cgroup_dir(host, pid, None)?;
    if path == "/" {
        return None;
    }
    let read = |res: &str| {
        fs::read_to_string(dir.join(format!("{res}.pressure")))
            .ok()
            .map(|t| parse_psi(&t))
    };
    let psi = CgroupPsi {
        cpu: read("cpu"),
        io: read("io"),
        memory: read("memory"),
        window_usage_us: None,
        usage_us: fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|t| parse_kv(&t).get("usage_usec").copied())
            .unwrap_or(0),
    };
    (psi.cpu.is_some() || psi.io.is_some() || psi.memory.is_some()).then_some(psi)
}

/// The v2 cgroup's own `io.max` lines that limit something.
fn io_limits(host: &HostRoot, pid: u32) -> Vec<String> {
    procfs::cgroup_dir(host, pid, None)
        .filter(|(_, path, _)| path != "/")
        .and_then(|(_, _, dir)| fs::read_to_string(dir.join("io.max")).ok())
        .map(|t| limited_io_max_lines(&t))
        .unwrap_or_default()
}

/// `io.max` lines with at least one limit (`MAJ:MIN rbps=max wbps=max riops=max wiops=10`).
pub fn limited_io_max_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .skip(1)
                .any(|kv| kv.split_once('=').is_some_and(|(_, v)| v != "max"))
        })
        .map(|l| l.trim().to_string())
        .collect()
}

/// `end`'s PSI with deltas over the window from `start`.
fn psi_with_deltas(end: &CgroupPsi, start: Option<&CgroupPsi>) -> CgroupPsi {
    let res = |e: &Option<PsiResource>, s: Option<&PsiResource>| {
        e.clone().map(|e| PsiResource {
            some: with_delta(e.some, s.and_then(|s| s.some.as_ref())),
            full: with_delta(e.full, s.and_then(|s| s.full.as_ref())),
        })
    };
    CgroupPsi {
        cpu: res(&end.cpu, start.and_then(|s| s.cpu.as_ref())),
        io: res(&end.io, start.and_then(|s| s.io.as_ref())),
        memory: res(&end.memory, start.and_then(|s| s.memory.as_ref())),
        window_usage_us: start.map(|s| end.usage_us.saturating_sub(s.usage_us)),
        usage_us: end.usage_us,
    }
}

impl Sample {
    /// `targets`: (owner, pid) of the kubelet and the runtime.
    pub fn take(host: &HostRoot, targets: &[(&str, u32)]) -> Sample {
        let mut s = Sample::default();
        for res in ["cpu", "io", "memory"] {
            match fs::read_to_string(host.proc().join("pressure").join(res)) {
                Ok(t) => {
                    s.psi.insert(res, parse_psi(&t));
                }
                Err(e) => s.psi_error = Some(format!("/proc/pressure/{res}: {e}")),
            }
        }
        s.cgroups = targets
            .iter()
            .map(|(owner, pid)| cgroup_cpu(host, owner, *pid))
            .collect();
        s
    }
}

/// The evidence from two samples: end values with deltas over the window.
pub fn evidence(start: &Sample, end: Sample) -> Pressure {
    let res = |name: &str| {
        let e = end.psi.get(name)?.clone();
        let s = start.psi.get(name);
        Some(PsiResource {
            some: with_delta(e.some, s.and_then(|s| s.some.as_ref())),
            full: with_delta(e.full, s.and_then(|s| s.full.as_ref())),
        })
    };
    let cgroups = end
        .cgroups
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(s) = start
                .cgroups
                .iter()
                .find(|s| s.pid == e.pid && s.path == e.path && s.error.is_none())
                && e.error.is_none()
            {
                e.window_nr_periods = Some(e.nr_periods.saturating_sub(s.nr_periods));
                e.window_nr_throttled = Some(e.nr_throttled.saturating_sub(s.nr_throttled));
                e.window_throttled_ns = Some(e.throttled_ns.saturating_sub(s.throttled_ns));
                e.psi = e
                    .psi
                    .as_ref()
                    .map(|end| psi_with_deltas(end, s.psi.as_ref()));
            }
            e
        })
        .collect();
    Pressure {
        cpu: res("cpu"),
        io: res("io"),
        memory: res("memory"),
        psi_error: end.psi_error.clone(),
        cgroups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_max_lines_that_limit() {
        let text = "254:0 rbps=max wbps=max riops=max wiops=10\n7:0 rbps=max wbps=max riops=max wiops=max\n";
        assert_eq!(
            limited_io_max_lines(text),
            vec!["254:0 rbps=max wbps=max riops=max wiops=10".to_string()]
        );
        assert!(limited_io_max_lines("").is_empty());
    }

    #[test]
    fn cgroup_psi_deltas_over_the_window() {
        let line = |total_us| PsiLine {
            total_us,
            ..Default::default()
        };
        let at = |total, usage| CgroupPsi {
            io: Some(PsiResource {
                some: Some(line(total)),
                full: None,
            }),
            usage_us: usage,
            ..Default::default()
        };
        let d = psi_with_deltas(&at(9_000_000, 700), Some(&at(1_000_000, 200)));
        assert_eq!(d.io.unwrap().some.unwrap().window_delta_us, Some(8_000_000));
        assert_eq!(d.window_usage_us, Some(500));
        assert!(d.cpu.is_none());
        assert_eq!(psi_with_deltas(&at(5, 5), None).window_usage_us, None);
    }

    #[test]
    fn psi_lines() {
        let r = parse_psi(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n",
        );
        assert_eq!(r.some.as_ref().unwrap().avg10, 1.5);
        assert_eq!(r.some.unwrap().total_us, 123_456);
        assert_eq!(r.full.unwrap().total_us, 42);
    }

    #[test]
    fn real_psi_and_own_cgroup() {
        let host = HostRoot::new("/");
        let me = std::process::id();
        let a = Sample::take(&host, &[("kubelet", me)]);
        let b = Sample::take(&host, &[("kubelet", me)]);
        let p = evidence(&a, b);
        // This kernel has PSI (TOOLCHAIN.md); the window delta is computed.
        assert!(
            p.cpu
                .as_ref()
                .unwrap()
                .some
                .as_ref()
                .unwrap()
                .window_delta_us
                .is_some()
        );
        assert_eq!(p.cgroups.len(), 1);
        let cg = &p.cgroups[0];
        assert!(cg.error.is_none(), "{cg:?}");
        assert!(cg.cgroup_version == 1 || cg.cgroup_version == 2);
        assert!(cg.window_nr_throttled.is_some());
    }
}
