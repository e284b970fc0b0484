//! Node filesystems and inodes from /stats/summary (the guide keeps them under 70%).

use super::thresholds::*;
use super::{Domain, Finding, FindingId, Severity};
use crate::evidence::{Evidence, FsUsage};

fn fs_finding(name: &str, fs: &FsUsage) -> Option<Finding> {
    let bytes = match (fs.used_bytes, fs.capacity_bytes) {
        (Some(u), Some(c)) if c > 0 => Some(u as f64 * 100.0 / c as f64),
        _ => None,
    };
    let inodes = match (fs.inodes_used, fs.inodes) {
        (Some(u), Some(c)) if c > 0 => Some(u as f64 * 100.0 / c as f64),
        _ => None,
    };
    if bytes.is_none() && inodes.is_none() {
        return None;
    }
    let worst = bytes.unwrap_or(0.0).max(inodes.unwrap_or(0.0));
    let severity = if worst >= FS_CRITICAL_PERCENT {
        Severity::Critical
    } else if worst > FS_WARN_PERCENT {
        Severity::Warning
    } else {
        Severity::Ok
    };
    let text = |p: Option<f64>| p.map_or("?".to_string(), |p| format!("{p:.0}%"));
    let mut f = Finding::new(
        FindingId::Filesystem(name.to_string()),
        Domain::Filesystem,
        severity,
        format!(
            "{name}: {} space, {} inodes used",
            text(bytes),
            text(inodes)
        ),
    )
    .with(format!(
        "used {:?} of {:?} bytes; inodes used {:?} of {:?}",
        fs.used_bytes, fs.capacity_bytes, fs.inodes_used, fs.inodes
    ));
    if severity.is_problem() {
        f = f.fix("keep node filesystems under 70%: `crictl rmi --prune`, check container log rotation and emptyDir usage; inodes separately (many small files)");
    }
    Some(f)
}

/// Node filesystem and inode usage from /stats/summary.
pub fn filesystems(e: &Evidence) -> Vec<Finding> {
    let Some(s) = e.stats_summary.data() else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Some(fs) = &s.node_fs {
        out.extend(fs_finding("nodefs", fs));
    }
    // imagefs is often the same filesystem as nodefs; report it only when it differs.
    if let Some(fs) = &s.image_fs
        && Some(fs) != s.node_fs.as_ref()
    {
        out.extend(fs_finding("imagefs", fs));
    }
    if let Some(fs) = &s.container_fs
        && Some(fs) != s.node_fs.as_ref()
        && Some(fs) != s.image_fs.as_ref()
    {
        out.extend(fs_finding("containerfs", fs));
    }
    out
}
