//! `cargo xtask image`: the node agent's image, built without Docker.
//!
//! One static `tracer-user` binary (musl; the eBPF object is embedded by its build.rs, and is the
//! same on every architecture) in a one-layer OCI image. No shell or libc in the image: the agent
//! needs neither.
//!
//! - Local: the archive for this machine's architecture, named [`AGENT_IMAGE`] — what `kubectl
//!   nodehealth` runs in its probe pod by default — cached by the binary's SHA-256 and imported
//!   into the local cluster's containerd (`k8s.io` namespace), where `imagePullPolicy:
//!   IfNotPresent` finds it without any registry.
//! - `--push REF`: linux/amd64 and linux/arm64 builds as one OCI image index, pushed with the
//!   `oci-client` crate (no Docker, no skopeo); prints `REF@sha256:…` to pass as `--image`.

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

/// A platform the agent is built for.
pub struct Target {
    /// The Rust target triple.
    pub triple: &'static str,
    /// The OCI architecture.
    pub arch: &'static str,
    /// The cross C compiler and linker (ring compiles a little C), `None` on the host.
    cross: Option<&'static str>,
    /// The strip of that architecture.
    strip: &'static str,
}

/// Every platform of the published image.
pub const TARGETS: &[Target] = &[
    Target {
        triple: "x86_64-unknown-linux-musl",
        arch: "amd64",
        cross: None,
        strip: "strip",
    },
    Target {
        triple: "aarch64-unknown-linux-musl",
        arch: "arm64",
        cross: Some("aarch64-linux-gnu-gcc"),
        strip: "aarch64-linux-gnu-strip",
    },
];

fn host_target() -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.arch == image::host_arch())
        .unwrap_or(&TARGETS[0])
}

/// Where the static and cross builds go: a target directory in the cache, outside the clone, so
/// their dependencies (tokio, tonic, aya, ring, … for two architectures, minutes of release
/// compiling) are built once per machine rather than once per clone. Cargo reuses them across
/// clones because a path package's artifact names do not depend on where the workspace lies.
/// The workspace's own crates are another matter: cargo judges them fresh by file times, so a
/// clone whose sources are older than another clone's last build would be handed that clone's
/// binary — [`claim_for_this_clone`] removes them whenever the last build here came from another
/// clone. Cargo's lock on the directory serialises two clones building at once (two building
/// the same target at the same time may still read each other's binary: run one at a time).
fn target_dir() -> PathBuf {
    sh::cache_dir().join("static-target")
}

/// Removes the workspace crates' artifacts for `triple` from the shared target directory when the
/// last build for it came from another clone (remembered in a marker file), so this clone's
/// sources are what gets built.
fn claim_for_this_clone(triple: &str) -> Result<()> {
    let root = sh::workspace_root();
    let marker = target_dir().join(format!(".built-from-{triple}"));
    let here = root.display().to_string();
    if fs::read_to_string(&marker).ok().as_deref() == Some(here.as_str()) {
        return Ok(());
    }
    let metadata = sh::output(sh::cargo().current_dir(&root).args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))
    .context("cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("reading cargo metadata")?;
    let mut clean = sh::cargo();
    clean
        .current_dir(&root)
        .args([
            "clean",
            "--quiet",
            "--release",
            "--target",
            triple,
            "--target-dir",
        ])
        .arg(target_dir());
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if let Some(name) = package["name"].as_str() {
            clean.args(["-p", name]);
        }
    }
    sh::run("removing another clone's workspace artifacts", &mut clean)?;
    fs::create_dir_all(target_dir())?;
    fs::write(&marker, here)?;
    Ok(())
}

/// The static agent binary for this machine's architecture, as the last image build left it
/// (the guest node runs it over SSH where no pod can start).
pub fn static_agent_binary() -> PathBuf {
    target_dir()
        .join(host_target().triple)
        .join("release")
        .join("tracer-user")
}

/// Builds `package` static (musl) for this machine's architecture; returns the binary's path.
pub fn static_build(package: &str) -> Result<PathBuf> {
    let t = host_target();
    cross_build(package, t.triple, t.cross, t.arch, &[])
}

/// Builds the static agent for `t`; returns the binary's path.
fn build_binary(t: &Target) -> Result<PathBuf> {
    cross_build("tracer-user", t.triple, t.cross, t.arch, &[])
}

/// `cargo build --release -p package --target triple`, with `cross` as the C compiler and linker
/// when the target is not this machine's, and `env` set for the build; returns the built
/// binary's path (`.exe` on Windows).
pub fn cross_build(
    package: &str,
    triple: &str,
    cross: Option<&str>,
    what: &str,
    env: &[(&str, &str)],
) -> Result<PathBuf> {
    claim_for_this_clone(triple)?;
    let mut cargo = sh::cargo();
    cargo.envs(env.iter().copied());
    cargo.current_dir(sh::workspace_root()).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        package,
        "--target",
        triple,
    ]);
    cargo.arg("--target-dir").arg(target_dir());
    let env_triple = triple.replace('-', "_");
    match cross {
        Some(cc) => {
            cargo.env(format!("CC_{env_triple}"), cc).env(
                format!("CARGO_TARGET_{}_LINKER", env_triple.to_uppercase()),
                cc,
            );
        }
        // ring compiles a little C; without a musl cross compiler the host gcc does (ring's C
        // needs no libc headers).
        None if sh::output(Command::new("musl-gcc").arg("--version")).is_none() => {
            cargo.env(format!("CC_{env_triple}"), "gcc");
        }
        None => {}
    }
    sh::run(&format!("building {package} for {what}"), &mut cargo)?;
    let exe = if triple.contains("windows") {
        ".exe"
    } else {
        ""
    };
    Ok(target_dir()
        .join(triple)
        .join("release")
        .join(format!("{package}{exe}")))
}

/// The agent binary for `t` without debug info (std's and the dependencies' are most of it).
fn stripped_binary(t: &Target) -> Result<Vec<u8>> {
    let bin = build_binary(t)?;
    let dir = sh::cache_dir().join("images");
    fs::create_dir_all(&dir)?;
    let stripped = dir.join(format!("tracer-user-{}.stripped", t.arch));
    let contents = match sh::output(Command::new(t.strip).arg("-o").arg(&stripped).arg(&bin)) {
        Some(_) => fs::read(&stripped)?,
        None => fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
    };
    let _ = fs::remove_file(&stripped);
    Ok(contents)
}

/// Builds the static agent and its OCI archive for this machine; returns the archive's path.
pub fn build() -> Result<PathBuf> {
    let t = host_target();
    step(format!(
        "agent image {AGENT_IMAGE} (static tracer-user, {})",
        t.triple
    ));
    let bin = build_binary(t)?;
    let contents = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    let key = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&contents));
    let dir = sh::cache_dir().join("images");
    fs::create_dir_all(&dir)?;
    let archive = dir.join(format!("tracer-user-{}.oci.tar", &key[..12]));
    if !archive.exists() {
        let contents = stripped_binary(t)?;
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
        "for a real cluster: `cargo xtask image --push <registry>/<repo>:<tag>` (amd64 and \
         arm64), then pass the printed reference as --image",
    );
    Ok(())
}

/// `cargo xtask image --push REF`: both architectures as one OCI index, pushed to `reference`;
/// returns `registry/repository@sha256:…` of the index. `insecure`: plain HTTP (a registry on
/// loopback). Credentials: `REGISTRY_USERNAME` / `REGISTRY_PASSWORD`, else anonymous.
pub fn push(reference: &str, insecure: bool) -> Result<String> {
    use oci_client::{
        Client, Reference, RegistryOperation,
        client::{ClientConfig, ClientProtocol},
        secrets::RegistryAuth,
    };
    let target: Reference = reference
        .parse()
        .with_context(|| format!("{reference:?} is not an image reference (registry/repo:tag)"))?;
    let mut images = Vec::new();
    for t in TARGETS {
        step(format!("agent for linux/{} ({})", t.arch, t.triple));
        let contents = stripped_binary(t)?;
        images.push(image::platform_image(
            t.arch,
            &[image::File {
                path: "tracer-user",
                contents: &contents,
                mode: 0o755,
            }],
            &["/tracer-user"],
        )?);
    }
    let index = image::index(&images, None)?;
    let index_digest = image::digest(&index);
    step(format!("pushing {reference} (linux/amd64, linux/arm64)"));
    let auth = match (
        std::env::var("REGISTRY_USERNAME"),
        std::env::var("REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    };
    let client = Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        client
            .auth(&target, &auth, RegistryOperation::Push)
            .await
            .with_context(|| format!("authenticating to {}", target.registry()))?;
        for i in &images {
            for blob in [&i.layer, &i.config] {
                let digest = image::digest(blob);
                if !client.blob_exists(&target, &digest).await.unwrap_or(false) {
                    client
                        .push_blob(&target, blob.clone(), &digest)
                        .await
                        .with_context(|| format!("pushing blob {digest}"))?;
                }
            }
            let by_digest = Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                image::digest(&i.manifest),
            );
            client
                .push_manifest_raw(
                    &by_digest,
                    i.manifest.clone(),
                    image::MANIFEST_MEDIA_TYPE.parse()?,
                )
                .await
                .with_context(|| format!("pushing the linux/{} manifest", i.arch))?;
            info(format!(
                "linux/{}: {} ({:.1} MiB)",
                i.arch,
                image::digest(&i.manifest),
                i.layer.len() as f64 / (1024.0 * 1024.0)
            ));
        }
        client
            .push_manifest_raw(&target, index.clone(), image::INDEX_MEDIA_TYPE.parse()?)
            .await
            .context("pushing the image index")?;
        anyhow::Ok(())
    })?;
    let pinned = format!(
        "{}/{}@{index_digest}",
        target.registry(),
        target.repository()
    );
    info(format!("pushed: {pinned}"));
    Ok(pinned)
}
