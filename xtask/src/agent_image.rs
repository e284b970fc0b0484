//! `cargo xtask image`: the node agent's image, built without Docker.
//!
//! One static `tracer-user` binary (x86_64-unknown-linux-musl; the eBPF object is embedded by its
//! build.rs) in a one-layer OCI archive, named [`AGENT_IMAGE`] — what `kubectl nodehealth` runs in
//! its probe pod by default. No shell or libc in the image: the agent needs neither. The archive is
//! cached by the binary's SHA-256, so an unchanged agent costs a no-op cargo build. When the local
//! cluster is up, the archive is imported into its containerd (`k8s.io` namespace), where
//! `imagePullPolicy: IfNotPresent` finds it without any registry.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{
    cluster::{self, Layout, image},
    sh::{self, info, step},
};

/// The agent image reference (the plugin's `--image` default names the same).
pub const AGENT_IMAGE: &str = concat!("nodehealth.local/tracer-user:", env!("CARGO_PKG_VERSION"));

const TARGET: &str = "x86_64-unknown-linux-musl";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sh::workspace_root().join("target"))
}

/// Builds the static agent and its OCI archive; returns the archive's path.
pub fn build() -> Result<PathBuf> {
    step(format!(
        "agent image {AGENT_IMAGE} (static tracer-user, {TARGET})"
    ));
    let mut cargo = sh::cargo();
    cargo.current_dir(sh::workspace_root()).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "tracer-user",
        "--target",
        TARGET,
    ]);
    // ring compiles a little C; without a musl cross compiler the host gcc does (ring's C needs
    // no libc headers).
    if sh::output(Command::new("musl-gcc").arg("--version")).is_none() {
        cargo.env("CC_x86_64_unknown_linux_musl", "gcc");
    }
    sh::run("building the static agent", &mut cargo)?;
    let bin = target_dir().join(TARGET).join("release/tracer-user");
    let contents = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    let key = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&contents));
    let dir = sh::cache_dir().join("images");
    fs::create_dir_all(&dir)?;
    let archive = dir.join(format!("tracer-user-{}.oci.tar", &key[..12]));
    if !archive.exists() {
        // Debug info of std and the dependencies is most of the binary; the image does not need it.
        let stripped = dir.join("tracer-user.stripped");
        let contents = match sh::output(Command::new("strip").arg("-o").arg(&stripped).arg(&bin)) {
            Some(_) => fs::read(&stripped)?,
            None => contents,
        };
        let _ = fs::remove_file(&stripped);
        image::write_oci_archive(
            &archive,
            AGENT_IMAGE,
            &[image::File {
                path: "tracer-user",
                contents: &contents,
                mode: 0o755,
            }],
            &["/tracer-user"],
        )?;
        // Older agents' archives (one per build): removed after an hour, so a concurrent `up`
        // from another clone still finds the one it just wrote.
        for entry in fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if name.starts_with("tracer-user-") && entry.path() != archive && old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    info(format!(
        "{} ({:.1} MiB)",
        archive.display(),
        fs::metadata(&archive)?.len() as f64 / (1024.0 * 1024.0)
    ));
    Ok(archive)
}

/// For `cluster up`: build and import, but a failing agent build (a tree mid-edit) only warns —
/// the cluster is useful without the probe image.
pub fn build_or_warn() -> Option<PathBuf> {
    match build() {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("xtask: warning: no agent image ({e:#}); `cargo xtask image` once it builds");
            None
        }
    }
}

/// Imports an archive into the local cluster's containerd.
pub fn import(l: &Layout, archive: &Path) -> Result<()> {
    sh::run(
        "importing the agent image",
        Command::new("ctr")
            .arg("--address")
            .arg(l.containerd_socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .stdout(Stdio::null()),
    )
}

/// `cargo xtask image`: build, and import when the local cluster is up.
pub fn run() -> Result<()> {
    let archive = build()?;
    let l = Layout::new();
    if cluster::api::ready(&l) && l.containerd_socket().exists() {
        import(&l, &archive)?;
        info(format!("imported into the local cluster as {AGENT_IMAGE}"));
    } else {
        info("the local cluster is not up: not imported (`cargo xtask cluster up` imports it)");
    }
    info(
        "for a real cluster: push the archive with a registry tool, e.g. \
         `skopeo copy oci-archive:<archive> docker://<registry>/tracer-user:<tag>`, then pass \
         --image <registry>/tracer-user:<tag>",
    );
    Ok(())
}
