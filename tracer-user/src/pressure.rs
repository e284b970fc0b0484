//! Pressure stall information (/proc/pressure/{cpu,io,memory}) and the CPU bandwidth
//! throttling of the kubelet's and runtime's cgroups: cgroup v1 `cpu.stat` (nr_periods,
//! nr_throttled, throttled_time in ns) and v2 `cpu.stat` (nr_periods, nr_throttled,
//! throttled_usec). Both are sampled at the start and the end of the window.
use std::{collections::HashMap, fs};

use nodehealth_proto::node::{CgroupCpu, Pressure, PsiLine, PsiResource};

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
