//! `cargo xtask setup`: installs what a fresh machine of this kind lacks, idempotently.
//!
//! Each step checks first and says what it found; only missing pieces are installed. Caches live
//! outside the clone (Debian's package cache, ~/.cargo/bin, ~/.rustup, ~/.cache/kubectl-nodehealth),
//! so CI's fresh clone on the same machine finds them warm.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::sh::{self, info, step};

/// Debian packages and why each is needed.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links against LLVM 22 (the LLVM of rustc 1.95)",
    ),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    (
        "protobuf-compiler",
        "protoc for the CRI API crate's build script",
    ),
    (
        "containerd",
        "the container runtime of the tests and the local cluster",
    ),
    ("runc", "the OCI runtime containerd starts containers with"),
    (
        "containernetworking-plugins",
        "a CNI config so the node reports NetworkReady",
    ),
    (
        "libbpf-tools",
        "runqlat/biolatency, measured side by side in `bench tracer`",
    ),
    ("linux-perf", "`perf bench sched pipe` for tracer overhead"),
    (
        "libfaketime",
        "an end-to-end test runs the plugin with a clock off the API server's, as on a laptop",
    ),
    (
        "systemd",
        "journalctl: the agent reads the kubelet's journal with it (this machine runs no systemd)",
    ),
    (
        "systemd-journal-remote",
        "writes the journal files the agent's journal test reads",
    ),
    (
        "bpftool",
        "program names in `bench tracer`'s per-program costs",
    ),
    (
        "iproute2",
        "the node's veth link, loop devices and network namespaces",
    ),
    (
        "busybox-static",
        "the shell and tools inside the test pods' image",
    ),
    (
        "e2fsprogs",
        "mkfs.ext4 for containerd's root on the cluster's loop device (disk-slow fault)",
    ),
    (
        "nftables",
        "`cluster down` deletes the netfilter tables the kubelet created",
    ),
    (
        "gcc-aarch64-linux-gnu",
        "links the arm64 agent and compiles ring's C for it (the multi-arch image)",
    ),
    (
        // Only recommended by gcc-aarch64-linux-gnu, and packages are installed without their
        // recommendations: without it ring's C fails on <bits/libc-header-start.h>.
        "libc6-dev-arm64-cross",
        "the arm64 C library headers ring's C is compiled against (the multi-arch image)",
    ),
    (
        "libssl-dev",
        "TLS of the OCI registry client that pushes the agent image (native-tls)",
    ),
    ("pkg-config", "finds OpenSSL for the registry client"),
    (
        "docker-registry",
        "the reference registry the end-to-end tier pushes the image to and pulls it from",
    ),
];

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn run() -> Result<()> {
    apt_packages().context("setup step 'Debian packages' failed")?;
    rust_components().context("setup step 'Rust components' failed")?;
    bpf_linker().context("setup step 'bpf-linker' failed")?;
    step("setup complete");
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    sh::output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_some_and(|s| s.trim() == "installed")
}

fn apt_packages() -> Result<()> {
    step("Debian packages");
    apt_install(APT_PACKAGES)
}

/// Installs those of `packages` (name, why) that are missing, saying why each is needed.
pub fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(p, _)| !dpkg_installed(p))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        if !packages.is_empty() {
            info(format!("all {} present", packages.len()));
        }
        return Ok(());
    }
    for (p, why) in packages.iter().filter(|(p, _)| missing.contains(p)) {
        info(format!("missing {p}: {why}"));
    }
    if !nix_is_root() {
        bail!(
            "installing {} needs root: run as root or install them with apt-get",
            missing.join(" ")
        );
    }
    // Packages such as containerd try to start their service on install; this machine's services
    // are not ours to start. A policy-rc.d that answers 101 ("action forbidden") stops that, and is
    // removed again if we created it.
    let created_policy = !Path::new(POLICY_RC_D).exists();
    if created_policy {
        fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        sh::run(
            "chmod policy-rc.d",
            Command::new("chmod").args(["755", POLICY_RC_D]),
        )?;
    }
    let result = (|| {
        sh::run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-q"]),
        )?;
        sh::run(
            "apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })();
    if created_policy {
        let _ = fs::remove_file(POLICY_RC_D);
    }
    result
}

fn nix_is_root() -> bool {
    sh::output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// The toolchain this xtask runs under, as rustup names it (rust-toolchain.toml pins it).
fn toolchain() -> String {
    std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.95.0".to_string())
}

fn rust_components() -> Result<()> {
    step("Rust components (rust-src for the eBPF build, rustfmt, clippy; the musl target)");
    let toolchain = toolchain();
    let installed = sh::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))
    .context("rustup is needed (this machine kind installs Rust with rustup)")?;
    let missing: Vec<&str> = ["rust-src", "rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        info(format!("present for {toolchain}"));
    } else {
        info(format!("adding {} to {toolchain}", missing.join(", ")));
        sh::run(
            "rustup component add",
            Command::new("rustup")
                .args(["component", "add", "--toolchain", &toolchain])
                .args(&missing),
        )?;
    }
    // The agent image's static binaries (`cargo xtask image`), one per architecture.
    let musl: Vec<&str> = crate::agent_image::TARGETS
        .iter()
        .map(|t| t.triple)
        .collect();
    rust_targets(&musl)
}

/// Adds the Rust targets of `triples` the toolchain lacks.
pub fn rust_targets(triples: &[&str]) -> Result<()> {
    let toolchain = toolchain();
    let targets = sh::output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))
    .unwrap_or_default();
    for triple in triples {
        if !targets.lines().any(|t| t.trim() == *triple) {
            info(format!("adding target {triple} to {toolchain}"));
            sh::run(
                "rustup target add",
                Command::new("rustup").args(["target", "add", "--toolchain", &toolchain, triple]),
            )?;
        }
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    step("bpf-linker (links the eBPF programs; built against LLVM 22)");
    if let Some(v) = sh::output(Command::new("bpf-linker").arg("--version")) {
        info(format!("present: {}", v.trim()));
        return Ok(());
    }
    info("building bpf-linker 0.13 with LLVM 22 (about 3 minutes)");
    // Without LLVM_PREFIX it looks in /usr/lib64 and fails with "unable to find library -lLLVM".
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    sh::run(
        "cargo install bpf-linker",
        sh::cargo()
            .args([
                "install",
                "bpf-linker",
                "--version",
                "^0.13",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("PATH", path),
    )
}
