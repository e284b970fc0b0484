//! `cargo xtask guest`: a Debian guest node under QEMU (issue 17, step 1: its image and its boot).
//!
//! The image is a Debian cloud kernel (from the Debian packages apt already offers here), a
//! busybox initramfs that loads the virtio modules, and a bookworm rootfs made by mmdebstrap with
//! systemd, containerd and runc, packed into an ext4 disk with `mkfs.ext4 -d` (no mounts, no loop
//! devices). It is cached outside the clone under `guest/<kernel>-<key>/`, the key a hash of every
//! input, and built in a temporary directory renamed into place, so a half-built image is never
//! mistaken for a finished one.
//!
//! `boot` runs it under QEMU's TCG (this machine's /dev/kvm runs only kernels built for it) on a
//! qcow2 overlay of the cached disk, with QEMU user networking in 198.18.2.0/24, and talks to it
//! over SSH on a 127.0.0.1 host forward.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};

use crate::{
    setup,
    sh::{self, info, step},
};

#[derive(Subcommand)]
pub enum Cmd {
    /// Build (or find up to date in the cache) the guest's kernel, initramfs and root disk.
    Image {
        #[arg(long, value_enum, default_value_t = Kernel::V6_12)]
        kernel: Kernel,
    },
    /// Boot the guest under QEMU (TCG); with `-- CMD...`, wait until it is up, run CMD in it over
    /// SSH, power it off and exit with CMD's status.
    Boot {
        #[arg(long, value_enum, default_value_t = Kernel::V6_12)]
        kernel: Kernel,
        /// The command to run in the guest (its words are shell-quoted for the guest's shell).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

/// The two Debian cloud kernel lines the guest runs.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kernel {
    /// bookworm's own kernel line.
    #[value(name = "6.1")]
    V6_1,
    /// The 6.12 line Debian ships for bookworm (`+deb12` packages).
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    /// The meta-package whose dependency names the newest kernel package of the line.
    fn meta_package(self) -> &'static str {
        match self {
            Kernel::V6_1 => "linux-image-cloud-amd64",
            Kernel::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }
}

/// Host packages the image and the boot need, and why.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "runs the guest (TCG)"),
    (
        "qemu-utils",
        "qemu-img: each boot's qcow2 overlay keeps the cached disk pristine",
    ),
    ("mmdebstrap", "builds the guest's Debian rootfs"),
    ("busybox-static", "the guest initramfs's shell and tools"),
    ("e2fsprogs", "mkfs.ext4 -d packs the rootfs into a disk"),
    ("kmod", "depmod: the kernel package ships no modules.dep"),
    ("xz-utils", "the kernel's modules are .ko.xz"),
    ("openssh-client", "ssh and ssh-keygen: the command channel"),
];

/// The guest's packages (on top of mmdebstrap's minbase), and why.
const GUEST_PACKAGES: &[(&str, &str)] = &[
    (
        "systemd",
        "PID 1, the kubelet's and containerd's units, the journal",
    ),
    ("systemd-sysv", "/sbin/init is systemd"),
    ("udev", "device nodes and network interface naming"),
    (
        "dbus",
        "runc's systemd cgroup driver talks to systemd over D-Bus",
    ),
    (
        "kmod",
        "modprobe: containerd loads overlay, the kubelet br_netfilter",
    ),
    ("iproute2", "the node's addresses and routes"),
    ("containerd", "the container runtime"),
    ("runc", "the OCI runtime"),
    (
        "containernetworking-plugins",
        "the loopback CNI plugin: containerd reports NetworkReady",
    ),
    ("ca-certificates", "TLS roots"),
    ("iptables", "kube-proxy's and the kubelet's rules"),
    ("conntrack", "kube-proxy flushes conntrack entries"),
    ("socat", "port-forward on older kubelets"),
    ("ethtool", "the kubelet's and CNI's interface tweaks"),
    ("util-linux", "mount, nsenter"),
    ("mount", "the kubelet mounts volumes"),
    ("procps", "ps, sysctl"),
    ("e2fsprogs", "the kubelet formats block volumes"),
    ("curl", "health checks from inside the guest"),
    ("openssh-server", "the harness's command channel"),
];

/// The modules the initramfs needs to find its disk and network (a name built into the kernel
/// is skipped; dependencies come from modules.dep).
const INITRAMFS_MODULES: &[&str] = &["virtio", "virtio_pci", "virtio_blk", "virtio_net"];

/// Units masked in the guest: periodic maintenance that would start at a random moment of a test
/// and perturb what the node is measured doing (apt downloads, fstrim, e2scrub), and a getty on
/// a VGA console nobody sees.
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
];

const INIT: &str = include_str!("guest/init.sh");
const NETWORK: &str = include_str!("guest/eth.network");
const CLUSTER_NETWORK: &str = include_str!("guest/cluster.network");
const SSHD: &str = include_str!("guest/sshd.conf");
const RESOLV: &str = include_str!("guest/resolv.conf");

/// Bumped when the build steps change in a way the inputs below do not show.
const RECIPE: &str = "guest-image 2";
const SUITES: &[&str] = &["bookworm", "bookworm-updates", "bookworm-security"];
const DISK_SIZE: &str = "4G";
/// Names the guest's SSH host key in known_hosts whatever port the forward gets.
const HOST_KEY_ALIAS: &str = "nodehealth-guest";
const NET: &str = "net=198.18.2.0/24,host=198.18.2.2";

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Image { kernel } => image(kernel).map(|_| ExitCode::SUCCESS),
        Cmd::Boot { kernel, cmd } => {
            let image = image(kernel)?;
            boot(&image, &cmd)
        }
    }
}

/// A built guest image in the cache.
pub struct Image {
    pub dir: PathBuf,
    pub release: String,
}

impl Image {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn guest_cache() -> PathBuf {
    sh::cache_dir().join("guest")
}

/// Builds the image for `kernel` unless the cache holds it already.
pub fn image(kernel: Kernel) -> Result<Image> {
    let start = Instant::now();
    step(format!("guest image (kernel {})", kernel.name()));
    info("host tools:");
    setup::apt_install(HOST_PACKAGES)?;
    let (package, version) = resolve_kernel(kernel)?;
    let release = package
        .strip_prefix("linux-image-")
        .context("kernel package name")?
        .to_string();
    info(format!("kernel package {package} {version}"));

    let sources = debian_sources()?;
    let rootfs_inputs = format!(
        "{RECIPE}\nsuite bookworm\npackages {}\nsources\n{sources}",
        GUEST_PACKAGES
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(",")
    );
    let inputs = format!(
        "{rootfs_inputs}\nkernel {package} {version}\nmodules {}\nmasked {}\ndisk {DISK_SIZE}\n\
         --- init.sh\n{INIT}\n--- eth.network\n{NETWORK}\n--- cluster.network\n{CLUSTER_NETWORK}\n--- sshd.conf\n{SSHD}\n--- resolv.conf\n{RESOLV}",
        INITRAMFS_MODULES.join(","),
        MASKED_UNITS.join(",")
    );
    let key = &sh::sha256_hex(inputs.as_bytes())[..16];
    let dir = guest_cache().join(format!("{}-{key}", kernel.name()));
    let image = Image {
        dir: dir.clone(),
        release,
    };
    if dir.join("rootfs.img").exists() {
        info(format!(
            "up to date: {} ({:.1} s)",
            dir.display(),
            start.elapsed().as_secs_f64()
        ));
        return Ok(image);
    }

    let rootfs_tar = rootfs_tarball(&rootfs_inputs, &sources)?;
    let tmp = guest_cache().join(format!(
        ".tmp-{}-{key}-{}",
        kernel.name(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let built = build_image(&tmp, &package, &image.release, &rootfs_tar, &inputs);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    prune(&format!("{}-", kernel.name()), &dir);
    info(format!(
        "built {} in {:.1} s",
        dir.display(),
        start.elapsed().as_secs_f64()
    ));
    Ok(image)
}

/// Removes the cache entries named `<prefix>...` other than `keep`: images of older inputs.
fn prune(prefix: &str, keep: &Path) {
    let Ok(entries) = fs::read_dir(guest_cache()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let stale = entry.file_name().to_string_lossy().starts_with(prefix) && path != keep;
        if stale {
            info(format!("removing the stale {}", path.display()));
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

/// The newest package of the kernel line and its version, as this machine's apt sees them.
fn resolve_kernel(kernel: Kernel) -> Result<(String, String)> {
    let meta = kernel.meta_package();
    let depends = sh::output(Command::new("apt-cache").args(["depends", "--important", meta]))
        .with_context(|| format!("apt-cache depends {meta}: is the package list current?"))?;
    let prefix = format!("linux-image-{}", kernel.name());
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with(&prefix) && p.ends_with("-cloud-amd64"))
        .with_context(|| {
            format!("{meta} depends on no {prefix}*-cloud-amd64 package here:\n{depends}")
        })?
        .to_string();
    let show = sh::output(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))
        .with_context(|| format!("apt-cache show {package}"))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .with_context(|| format!("no Version in apt-cache show {package}"))?
        .to_string();
    Ok((package, version))
}

/// The Debian bookworm entries of this machine's apt sources, as one-line sources.list entries:
/// the guest is built from the same mirror apt uses here (none is named in this code).
fn debian_sources() -> Result<String> {
    let mut lines = Vec::new();
    let mut files: Vec<PathBuf> = vec!["/etc/apt/sources.list".into()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        // apt reads *.list and *.sources only (a renamed file such as x.list.disabled is off).
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => lines.extend(deb822_entries(&text)),
            Some("list") => lines.extend(one_line_entries(&text)),
            _ => {}
        }
    }
    if lines.is_empty() {
        bail!("no bookworm entries in this machine's apt sources (/etc/apt/sources.list{{,.d}})");
    }
    Ok(lines.join("\n") + "\n")
}

fn keep_suites(suites: &[&str]) -> Vec<String> {
    suites
        .iter()
        .filter(|s| SUITES.contains(s))
        .map(|s| s.to_string())
        .collect()
}

fn deb822_entries(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let (Some(types), Some(uris), Some(suites), Some(components)) = (
            field("Types"),
            field("URIs"),
            field("Suites"),
            field("Components"),
        ) else {
            continue;
        };
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for suite in keep_suites(&suites.split_whitespace().collect::<Vec<_>>()) {
            for uri in uris.split_whitespace() {
                out.push(format!("deb {uri} {suite} {components}"));
            }
        }
    }
    out
}

fn one_line_entries(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        // Options in brackets (signed-by=...) are dropped: mmdebstrap uses the host's keyrings.
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(r) => r.split_once(']').map_or("", |(_, r)| r),
            None => rest,
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() >= 3 && SUITES.contains(&words[1]) {
            out.push(format!("deb {}", words.join(" ")));
        }
    }
    out
}

/// The mmdebstrap rootfs tarball, shared by both kernels' images.
fn rootfs_tarball(inputs: &str, sources: &str) -> Result<PathBuf> {
    let key = &sh::sha256_hex(inputs.as_bytes())[..16];
    let tar = guest_cache().join(format!("rootfs-{key}.tar"));
    if tar.exists() {
        info(format!("rootfs tarball up to date: {}", tar.display()));
        return Ok(tar);
    }
    fs::create_dir_all(guest_cache())?;
    let sources_file = guest_cache().join(format!(".sources-{}.list", std::process::id()));
    fs::write(&sources_file, sources)?;
    let partial = guest_cache().join(format!(".rootfs-{key}-{}.tar", std::process::id()));
    info(format!(
        "mmdebstrap bookworm ({} packages on minbase; about a minute, its output follows)",
        GUEST_PACKAGES.len()
    ));
    let start = Instant::now();
    let include = GUEST_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .collect::<Vec<_>>()
        .join(",");
    // unshare mode: its mounts (proc, sys, dev in the chroot) live in a private mount namespace
    // that disappears with it, so an interrupted build leaves no mount behind on this machine.
    let result = sh::run(
        "mmdebstrap",
        Command::new("mmdebstrap")
            .args([
                "--mode=unshare",
                "--variant=minbase",
                "--aptopt=APT::Install-Recommends \"false\"",
            ])
            .arg(format!("--include={include}"))
            .arg("--customize-hook=chroot \"$1\" systemctl enable systemd-networkd")
            .arg("bookworm")
            .arg(&partial)
            .arg(&sources_file),
    );
    let _ = fs::remove_file(&sources_file);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, &tar)?;
    prune("rootfs-", &tar);
    info(format!(
        "rootfs tarball {} ({} MB) in {:.1} s",
        tar.display(),
        fs::metadata(&tar)?.len() >> 20,
        start.elapsed().as_secs_f64()
    ));
    Ok(tar)
}

fn build_image(
    tmp: &Path,
    package: &str,
    release: &str,
    rootfs_tar: &Path,
    inputs: &str,
) -> Result<()> {
    info(format!("apt-get download {package}"));
    sh::run(
        "apt-get download",
        Command::new("apt-get")
            // As root, apt drops to its _apt user for downloads, which cannot write to the
            // cache directory; download as root instead of warning about it.
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(tmp),
    )?;
    let deb = fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let kernel_dir = tmp.join("kernel");
    info("dpkg-deb -x (the kernel and its modules)");
    sh::run(
        "dpkg-deb -x",
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&kernel_dir),
    )?;
    fs::remove_file(&deb)?;
    // Debian's postinst runs depmod; the package itself ships no modules.dep.
    sh::run(
        "depmod",
        Command::new("/usr/sbin/depmod")
            .arg("-b")
            .arg(&kernel_dir)
            .arg(release),
    )?;
    fs::copy(
        kernel_dir.join(format!("boot/vmlinuz-{release}")),
        tmp.join("vmlinuz"),
    )
    .context("the package's vmlinuz")?;
    let modules = kernel_dir.join("lib/modules").join(release);

    initramfs(tmp, &modules)?;

    info(format!("unpacking {}", rootfs_tar.display()));
    let rootfs = tmp.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    sh::run(
        "tar -x rootfs",
        Command::new("tar")
            .args([
                "-x",
                "-p",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
            ])
            .arg("-f")
            .arg(rootfs_tar)
            .arg("-C")
            .arg(&rootfs),
    )?;
    configure_rootfs(tmp, &rootfs, &modules, release)?;

    info(format!("mkfs.ext4 -d ({DISK_SIZE}, sparse)"));
    sh::run(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "nodehealth-guest", "-d"])
            .arg(&rootfs)
            .arg(tmp.join("rootfs.img"))
            .arg(DISK_SIZE),
    )?;
    fs::remove_dir_all(&rootfs)?;
    fs::remove_dir_all(&kernel_dir)?;
    fs::write(tmp.join("inputs.txt"), inputs)?;
    fs::write(tmp.join("release"), release)?;
    Ok(())
}

/// The initramfs: busybox, the modules of INITRAMFS_MODULES with their dependencies
/// (decompressed when compressed, so busybox's insmod needs no xz support), and init.sh.
fn initramfs(tmp: &Path, modules: &Path) -> Result<()> {
    let dep = fs::read_to_string(modules.join("modules.dep")).context("modules.dep")?;
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let order = module_load_order(&dep, &builtin, INITRAMFS_MODULES)?;
    info(format!(
        "initramfs: busybox, init.sh and {}",
        if order.is_empty() {
            "no modules".to_string()
        } else {
            order
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
    ));
    let root = tmp.join("initramfs");
    let mods = root.join("lib/modules");
    fs::create_dir_all(&mods)?;
    fs::create_dir_all(root.join("bin"))?;
    for (name, path) in &order {
        let dest = mods.join(format!("{name}.ko"));
        // 6.12's modules are .ko.xz, 6.1's plain .ko.
        if !path.ends_with(".xz") {
            fs::copy(modules.join(path), &dest).with_context(|| format!("copying {path}"))?;
            continue;
        }
        let out = Command::new("xz")
            .args(["-d", "-c"])
            .arg(modules.join(path))
            .output()
            .with_context(|| format!("xz -d {path}"))?;
        if !out.status.success() {
            bail!("xz -d {path}: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::write(dest, out.stdout)?;
    }
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    fs::write(root.join("modules.order"), names.join("\n") + "\n")?;
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("/bin/busybox")?;
    fs::write(root.join("init"), INIT)?;
    sh::run(
        "chmod init",
        Command::new("chmod").arg("755").arg(root.join("init")),
    )?;
    // `busybox cpio -o -H newc` takes the file list on stdin, paths relative to the root.
    let script = "find . | busybox cpio -o -H newc > ../initramfs.cpio";
    sh::run(
        "cpio initramfs",
        Command::new("sh").args(["-c", script]).current_dir(&root),
    )?;
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// The module's name as the kernel knows it, from its path in modules.dep.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// (name, path under lib/modules/<release>) of each module to load, dependencies first;
/// modules built into the kernel are skipped.
fn module_load_order(dep: &str, builtin: &str, wanted: &[&str]) -> Result<Vec<(String, String)>> {
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut order: Vec<(String, String)> = Vec::new();
    for want in wanted {
        if builtin.contains(*want) {
            continue;
        }
        let (path, deps) = dep
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(p, _)| module_name(p) == *want)
            .with_context(|| format!("module {want} is neither built in nor in modules.dep"))?;
        // modules.dep lists every dependency, each after the ones it needs itself: load in reverse.
        for d in deps.split_whitespace().rev().chain([path]) {
            let name = module_name(d);
            if !order.iter().any(|(n, _)| *n == name) {
                order.push((name, d.to_string()));
            }
        }
    }
    Ok(order)
}

fn configure_rootfs(tmp: &Path, rootfs: &Path, modules: &Path, release: &str) -> Result<()> {
    info("rootfs: the kernel's modules, network, DNS, SSH keys");
    // /lib is a symlink to usr/lib in bookworm's merged /usr.
    let guest_modules = rootfs.join("usr/lib/modules");
    fs::create_dir_all(&guest_modules)?;
    sh::run(
        "cp modules",
        Command::new("cp")
            .arg("-a")
            .arg(modules)
            .arg(guest_modules.join(release)),
    )?;
    fs::write(rootfs.join("etc/hostname"), "guest\n")?;
    fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1 guest\n",
    )?;
    fs::write(rootfs.join("etc/systemd/network/10-eth.network"), NETWORK)?;
    fs::write(
        rootfs.join("etc/systemd/network/20-cluster.network"),
        CLUSTER_NETWORK,
    )?;
    let _ = fs::remove_file(rootfs.join("etc/resolv.conf"));
    fs::write(rootfs.join("etc/resolv.conf"), RESOLV)?;
    fs::write(rootfs.join("etc/ssh/sshd_config.d/nodehealth.conf"), SSHD)?;
    for unit in MASKED_UNITS {
        let link = rootfs.join("etc/systemd/system").join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)
            .with_context(|| format!("masking {unit}"))?;
    }

    // The client key and the guest's host key are made for this image and kept beside it: the
    // harness pins the host key (known_hosts under an alias, whatever port the forward gets).
    for f in ["rsa", "ecdsa", "ed25519"] {
        let _ = fs::remove_file(rootfs.join(format!("etc/ssh/ssh_host_{f}_key")));
        let _ = fs::remove_file(rootfs.join(format!("etc/ssh/ssh_host_{f}_key.pub")));
    }
    let host_key = rootfs.join("etc/ssh/ssh_host_ed25519_key");
    ssh_keygen(&host_key, "guest host key")?;
    ssh_keygen(&tmp.join("id_ed25519"), "nodehealth harness")?;
    let host_pub = fs::read_to_string(host_key.with_extension("pub"))?;
    let host_pub = host_pub.split_whitespace().take(2).collect::<Vec<_>>();
    fs::write(
        tmp.join("known_hosts"),
        format!("{HOST_KEY_ALIAS} {}\n", host_pub.join(" ")),
    )?;
    let ssh_dir = rootfs.join("root/.ssh");
    fs::create_dir_all(&ssh_dir)?;
    fs::copy(tmp.join("id_ed25519.pub"), ssh_dir.join("authorized_keys"))?;
    sh::run(
        "chmod .ssh",
        Command::new("chmod").args(["-R", "go-rwx"]).arg(&ssh_dir),
    )?;
    Ok(())
}

fn ssh_keygen(path: &Path, comment: &str) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("ssh-keygen")?;
    if !out.status.success() {
        bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

// --- boot -----------------------------------------------------------------------------------

/// What must go when xtask exits, however it exits: QEMU and the per-boot directory.
struct Cleanup {
    qemu: Mutex<Option<Child>>,
    dir: PathBuf,
}

impl Cleanup {
    /// Kills QEMU if it still runs and removes the per-boot directory; safe to call twice.
    fn run(&self) {
        if let Some(mut child) = self.qemu.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs the cleanup when dropped (return, `?`, panic).
struct Guard(Arc<Cleanup>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.run();
    }
}

/// Runs the cleanup on SIGINT, SIGTERM or SIGHUP and exits 130. The handlers are registered
/// before this returns, so no signal in between falls to the default action.
fn cleanup_on_signal(cleanup: Arc<Cleanup>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term, mut hup) = {
        let _enter = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        eprintln!("xtask guest: interrupted: stopping QEMU, removing the per-boot disk");
        cleanup.run();
        std::process::exit(130);
    });
    Ok(())
}

/// Removes the per-boot directories of xtask processes that are gone: a SIGKILLed xtask cannot
/// clean up (its QEMU dies with it through the parent-death signal, its overlay stays).
fn remove_orphaned_boots(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("boot-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            info(format!("removing {name}, left by an xtask that was killed"));
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A free TCP port on 127.0.0.1 for the SSH forward (the kernel picks it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Quotes a word for a POSIX shell (ssh hands the guest's shell one string).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

pub struct Ssh {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub port: u16,
}

impl Ssh {
    /// The harness's SSH channel to a guest booted from `image` whose port 22 is forwarded to
    /// 127.0.0.1:`port`.
    pub fn new(image: &Image, port: u16) -> Ssh {
        Ssh {
            key: image.path("id_ed25519"),
            known_hosts: image.path("known_hosts"),
            port,
        }
    }

    pub fn command(&self, remote: &str) -> Command {
        self.command_with_timeout(remote, 10)
    }

    /// `connect_timeout` bounds the TCP connect and the banner exchange. QEMU's forward accepts
    /// at once and then holds the connection while the guest's network is not up yet, so a try
    /// made early waits the whole timeout.
    pub fn command_with_timeout(&self, remote: &str, connect_timeout: u32) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                &format!("HostKeyAlias={HOST_KEY_ALIAS}"),
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                &format!("ConnectTimeout={connect_timeout}"),
                "-o",
                "LogLevel=ERROR",
                "-p",
                &self.port.to_string(),
                "root@127.0.0.1",
                "--",
                remote,
            ])
            .stdin(Stdio::null());
        cmd
    }
}

/// Console lines that mark boot milestones, and what to call them.
const MILESTONES: &[(&str, &str)] = &[
    ("Run /init as init process", "userspace (initramfs /init)"),
    ("Welcome to ", "systemd started"),
    // systemd stops printing status once the serial getty owns the console, so
    // multi-user.target's own line rarely shows; sshd's start is the last one that does.
    ("Started ssh.service", "sshd started"),
];

fn boot(image: &Image, cmd: &[String]) -> Result<ExitCode> {
    let start = Instant::now();
    step(format!("guest boot ({})", image.release));
    let runs = sh::workspace_root().join("target/guest");
    remove_orphaned_boots(&runs);
    let dir = runs.join(format!("boot-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let cleanup = Arc::new(Cleanup {
        qemu: Mutex::new(None),
        dir: dir.clone(),
    });
    let _guard = Guard(cleanup.clone());
    cleanup_on_signal(cleanup.clone())?;

    let disk = dir.join("disk.qcow2");
    overlay(image, &disk)?;
    let port = free_port()?;
    let console_log = runs.join("console.log");
    info(format!(
        "QEMU TCG, 2 vCPUs, 2 GiB; overlay {}; SSH on 127.0.0.1:{port}; console in {}",
        disk.display(),
        console_log.display()
    ));
    // setpriv --pdeathsig: QEMU gets SIGKILL if xtask dies without running its cleanup (SIGKILL).
    let mut qemu = Command::new("setpriv")
        .args(["--pdeathsig", "KILL"])
        .args(qemu_argv(image, &disk, port, &[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = qemu.stdout.take().context("QEMU's stdout")?;
    *cleanup.qemu.lock().unwrap_or_else(|e| e.into_inner()) = Some(qemu);

    let milestones: Arc<Mutex<Vec<(&'static str, Duration)>>> = Arc::default();
    {
        let milestones = milestones.clone();
        let mut log = fs::File::create(&console_log)?;
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                // systemd colours its status lines: match on the text without the escapes.
                let plain = strip_ansi(&line);
                if let Some((_, name)) = MILESTONES.iter().find(|(m, _)| plain.contains(m)) {
                    let at = start.elapsed();
                    let mut seen = milestones.lock().unwrap_or_else(|e| e.into_inner());
                    if !seen.iter().any(|(n, _)| n == name) {
                        info(format!("{:6.1} s  {name}", at.as_secs_f64()));
                        seen.push((name, at));
                    }
                }
            }
        });
    }

    let ssh = Ssh::new(image, port);
    wait_for_ssh(&ssh, &cleanup, &console_log, start)?;
    let up = start.elapsed();
    info(format!("{:6.1} s  SSH answers", up.as_secs_f64()));
    // Blocks until systemd's start-up job queue is empty: running, or degraded naming failed units.
    let state = ssh
        .command("systemctl is-system-running --wait")
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let booted = start.elapsed();
    info(format!(
        "{:6.1} s  boot finished: system {state}",
        booted.as_secs_f64()
    ));
    if state != "running"
        && let Ok(o) = ssh
            .command("systemctl --failed --no-legend --plain")
            .output()
    {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            info(format!("failed unit: {l}"));
        }
    }

    let status = if cmd.is_empty() {
        info("no command given (`guest boot -- CMD...` runs one); powering off");
        0
    } else {
        let remote = cmd
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        step(format!("guest$ {remote}"));
        let status = ssh
            .command(&remote)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context("ssh")?;
        let code = status.code().unwrap_or(255);
        info(format!("exit status {code}"));
        code
    };

    let off = Instant::now();
    let _ = ssh
        .command("systemctl poweroff")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let powered_off = wait_for_exit(&cleanup, Duration::from_secs(60));
    info(format!(
        "{} in {:.1} s",
        if powered_off {
            "powered off"
        } else {
            "did not power off: killed"
        },
        off.elapsed().as_secs_f64()
    ));
    let userspace = milestones
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(n, _)| n.starts_with("userspace"))
        .map(|(_, at)| format!("{:.1} s", at.as_secs_f64()))
        .unwrap_or_else(|| "not seen".to_string());
    step(format!(
        "guest: userspace at {userspace}, SSH at {:.1} s, booted at {:.1} s, total {:.1} s",
        up.as_secs_f64(),
        booted.as_secs_f64(),
        start.elapsed().as_secs_f64()
    ));
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(255)))
}

/// QEMU's command line: TCG with one host thread for both vCPUs (`thread=single`), 2 GiB, the image's kernel and initramfs, `disk` (a qcow2
/// overlay of the image's root disk) as /dev/vda, user networking (the guest's eth0, DHCP in
/// 198.18.2.0/24) with SSH forwarded from 127.0.0.1:`ssh_port`, then `extra` (more drives and
/// NICs: the cluster's guest node adds its payload disk and its tap link as eth1).
pub fn qemu_argv(image: &Image, disk: &Path, ssh_port: u16, extra: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "qemu-system-x86_64",
        "-accel",
        // Not `thread=multi`: with a host thread per vCPU, QEMU 7.2 lets a vCPU run the int3 of
        // a kernel text patch after the patch is done (the kernel's static keys, switched each
        // time a tracepoint is enabled or disabled), and the guest dies with "Oops: int3" in
        // syscall_exit_to_user_mode_prepare: measured, the tracer's attach panicked the guest
        // once in three traced runs and 300 toggles of raw_syscalls/enable within seconds;
        // with one thread, 600 toggles and every traced run went through.
        "tcg,thread=single",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
        "-nographic",
        "-no-reboot",
    ]
    .map(String::from)
    .to_vec();
    argv.extend([
        "-kernel".into(),
        image.path("vmlinuz").display().to_string(),
        "-initrd".into(),
        image.path("initramfs.cpio").display().to_string(),
        "-append".into(),
        "console=ttyS0 panic=-1 net.ifnames=0 systemd.unified_cgroup_hierarchy=1".into(),
        "-drive".into(),
        format!("file={},if=virtio,format=qcow2", disk.display()),
        "-netdev".into(),
        format!("user,id=n0,{NET},hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
        "-device".into(),
        // No iPXE option ROM: the kernel is given directly, network boot is never used.
        "virtio-net-pci,netdev=n0,romfile=".into(),
    ]);
    argv.extend(extra.iter().cloned());
    argv
}

/// Makes a qcow2 overlay at `disk` backed by the image's root disk (which stays pristine).
pub fn overlay(image: &Image, disk: &Path) -> Result<()> {
    sh::run(
        "qemu-img create (the guest's overlay)",
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.path("rootfs.img"))
            .arg(disk),
    )
}

/// Waits until SSH runs `true` in the guest (a condition, not a sleep); fails when QEMU exits or
/// five minutes pass, showing the console's last lines.
fn wait_for_ssh(ssh: &Ssh, cleanup: &Cleanup, console_log: &Path, start: Instant) -> Result<()> {
    let deadline = Duration::from_secs(300);
    let mut last_report = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let attempt = Instant::now();
        // Short tries first: a try made before the guest's network is up waits its whole
        // timeout. Longer ones later, for an sshd slow to answer in a guest busy starting up.
        let out = ssh
            .command_with_timeout("true", (2 + tries).min(10))
            .output()
            .context("ssh")?;
        if out.status.success() {
            return Ok(());
        }
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let exited = cleanup
            .qemu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            bail!(
                "QEMU exited ({status}) before SSH answered; console's end:\n{}",
                strip_ansi(&console_tail(console_log, 30))
            );
        }
        if start.elapsed() > deadline {
            bail!(
                "SSH did not answer within {deadline:?}; console's end:\n{}",
                strip_ansi(&console_tail(console_log, 30))
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            info(format!(
                "{:6.1} s  waiting for SSH (last try: {why:?} after {:.1} s); console: {}",
                start.elapsed().as_secs_f64(),
                attempt.elapsed().as_secs_f64(),
                strip_ansi(&console_tail(console_log, 1))
            ));
            last_report = Instant::now();
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// Whether QEMU exited within `timeout`.
fn wait_for_exit(cleanup: &Cleanup, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let exited = cleanup
            .qemu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

/// `line` without its ANSI escape sequences (ESC [ ... final byte).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn console_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_dependencies_first_and_skip_built_ins() {
        let dep = "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\n\
                   kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz\n\
                   kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz\n\
                   kernel/net/core/failover.ko.xz:\n\
                   kernel/drivers/virtio/virtio.ko.xz:\n";
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\n";
        let order = module_load_order(dep, builtin, INITRAMFS_MODULES).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert!(module_load_order(dep, "", &["virtio_pci"]).is_err());
    }

    #[test]
    fn deb822_keeps_the_bookworm_suites_only() {
        let text = "Types: deb\n# comment\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates trixie\nComponents: main\n\n\
                    Types: deb\nURIs: http://other.example/apt\nSuites: nodistro\nComponents: main\n";
        assert_eq!(
            deb822_entries(text),
            [
                "deb http://mirror.example/debian bookworm main",
                "deb http://mirror.example/debian bookworm-updates main"
            ]
        );
        assert_eq!(
            one_line_entries(
                "deb [signed-by=/k.gpg] http://m.example/d bookworm-security main\ndeb http://x cloud-sdk-bookworm main\n"
            ),
            ["deb http://m.example/d bookworm-security main"]
        );
    }

    #[test]
    fn status_lines_match_without_their_colours() {
        let line = "[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m - Multi-User System.";
        assert_eq!(
            strip_ansi(line),
            "[  OK  ] Reached target multi-user.target - Multi-User System."
        );
    }

    #[test]
    fn words_are_quoted_for_the_guest_shell() {
        assert_eq!(shell_quote("uname"), "uname");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
