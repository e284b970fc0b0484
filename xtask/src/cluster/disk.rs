//! containerd's root on a block device of the harness's own: an ext4 file system in a sparse
//! file under `target/cluster/`, attached to a loop device at `up` (so the `disk-slow` fault can
//! slow exactly that device and nothing else), unmounted and detached by `down`.
//!
//! Throttling: cgroup v1 blk-throttle is not hierarchical (block/blk-throttle.c, throtl_pd_init:
//! only the default hierarchy links a group to its parent) and v1 has no cgroup writeback, so
//! buffered writes flushed by the kernel's writeback and jbd2 threads are charged to the root
//! group. The `disk-slow` rules therefore go in the root blkio group — for our loop device's
//! major:minor only, which no one else uses — and in containerd's own harness group (for the
//! writes containerd submits itself, e.g. fsync of its metadata database).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{Layout, component_cgroup, host};
use crate::sh::{self, info};

/// Size of the (sparse) file backing containerd's root.
const IMAGE_BYTES: u64 = 2 << 30;

/// blk-throttle rule files (each takes "major:minor value"; value 0 removes the rule).
pub const THROTTLE_FILES: &[&str] = &[
    "blkio.throttle.read_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.write_iops_device",
];

fn image(l: &Layout) -> PathBuf {
    l.dir.join("containerd-root.img")
}

fn device_file(l: &Layout) -> PathBuf {
    l.run_dir().join("containerd-root.dev")
}

/// The loop device under containerd's root as "major:minor", from the mount table.
pub fn device(l: &Layout) -> Option<String> {
    let root = l.containerd_root();
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.len() > 4 && Path::new(fields[4]) == root).then(|| fields[2].to_string())
    })
}

/// Creates the file system and mounts it (through a loop device, which `mount` creates with
/// autoclear: the device is released when the file system is unmounted) at containerd's root.
pub fn mount_containerd_root(l: &Layout) -> Result<()> {
    if let Some(dev) = device(l) {
        fs::write(device_file(l), &dev)?;
        return Ok(());
    }
    let root = l.containerd_root();
    fs::create_dir_all(&root)?;
    let img = image(l);
    let _ = fs::remove_file(&img);
    fs::File::create(&img)
        .and_then(|f| f.set_len(IMAGE_BYTES))
        .with_context(|| format!("creating {img:?}"))?;
    // Initialise inode tables and journal now: lazy initialisation would write in the background
    // for minutes after the mount and blur the disk-slow fault's measurements.
    sh::run(
        "mkfs.ext4 for containerd's root",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "nodehealth-ctrd"])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&img),
    )?;
    sh::run(
        "mounting containerd's root",
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&root),
    )?;
    let Some(dev) = device(l) else {
        bail!("{root:?} is not a mount point after mounting {img:?}");
    };
    info(format!("containerd root on loop device {dev}"));
    fs::write(device_file(l), &dev)?;
    Ok(())
}

/// The blkio groups the disk-slow rules go in: the root group and containerd's.
fn throttle_groups() -> [PathBuf; 2] {
    [
        PathBuf::from("/sys/fs/cgroup/blkio"),
        component_cgroup("blkio", "containerd"),
    ]
}

/// Limits on containerd's root device: (rule file, value) pairs, e.g.
/// ("blkio.throttle.write_iops_device", 10).
pub fn throttle(l: &Layout, limits: &[(&str, u64)]) -> Result<()> {
    let dev = fs::read_to_string(device_file(l))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| device(l))
        .context("containerd's root is not on the harness's loop device (cluster up again)")?;
    for group in throttle_groups() {
        for (file, value) in limits {
            let path = group.join(file);
            fs::write(&path, format!("{dev} {value}"))
                .with_context(|| format!("writing {dev} {value} to {path:?}"))?;
        }
    }
    Ok(())
}

/// Removes every throttle rule on our device; reports what it could not remove.
pub fn clear_throttle(l: &Layout) -> Vec<String> {
    let Some(dev) = fs::read_to_string(device_file(l))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| device(l))
    else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for group in throttle_groups() {
        for file in THROTTLE_FILES {
            let path = group.join(file);
            let ours = fs::read_to_string(&path)
                .is_ok_and(|rules| rules.lines().any(|r| r.split(' ').next() == Some(&dev)));
            if ours && let Err(e) = fs::write(&path, format!("{dev} 0")) {
                problems.push(format!("removing the rule for {dev} from {path:?}: {e}"));
            }
        }
    }
    problems
}

/// After the unmount: detaches any loop device still backed by our image (autoclear normally
/// did already, asynchronously) and deletes the image.
pub fn remove_image(l: &Layout) -> Vec<String> {
    let img = image(l);
    let attached = || -> Vec<String> {
        sh::output(Command::new("losetup").arg("-j").arg(&img))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(':').next())
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect()
    };
    for _ in 0..20 {
        let devs = attached();
        if devs.is_empty() {
            break;
        }
        for d in devs {
            let _ = Command::new("losetup")
                .args(["-d", &d])
                .stderr(std::process::Stdio::null())
                .status();
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut problems: Vec<String> = attached()
        .into_iter()
        .map(|d| format!("cannot detach {d} (backed by {img:?})"))
        .collect();
    if host::mounts_under(&l.containerd_root()).is_empty() {
        if img.exists()
            && let Err(e) = fs::remove_file(&img)
        {
            problems.push(format!("removing {img:?}: {e}"));
        }
        let _ = fs::remove_file(device_file(l));
    }
    problems
}
