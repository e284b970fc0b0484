//! `cargo xtask dist`: the plugin's release archives and its krew manifest.
//!
//! One archive per platform (`kubectl-nodehealth-<os>-<arch>.tar.gz`, the stripped binary at its
//! root: krew reads gzip'd tar on every platform, Windows included), a krew plugin manifest
//! `nodehealth.yaml` listing each archive's URI and SHA-256, and `SHA256SUMS`. Linux binaries are
//! static (musl): one archive runs on every distribution. macOS is type-checked (there is no Apple
//! SDK to link with here): what does not compile for a laptop fails this command.
//!
//! The archives are reproducible: fixed mtime, owner and mode, so the manifest's hashes only change
//! when the binary does.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use sha2::Digest;

use crate::{
    agent_image, setup,
    sh::{self, info, step},
};

/// A platform the plugin is released for.
#[derive(Debug)]
pub struct Platform {
    /// krew's `os` selector label (Go's GOOS).
    pub os: &'static str,
    /// krew's `arch` selector label (Go's GOARCH).
    pub arch: &'static str,
    triple: &'static str,
    /// The cross C compiler and linker, `None` for this machine's own architecture.
    cross: Option<&'static str>,
    strip: &'static str,
}

impl Platform {
    pub fn name(&self) -> String {
        format!("{}/{}", self.os, self.arch)
    }

    fn binary(&self) -> &'static str {
        if self.os == "windows" {
            "kubectl-nodehealth.exe"
        } else {
            "kubectl-nodehealth"
        }
    }

    pub fn archive(&self) -> String {
        format!("kubectl-nodehealth-{}-{}.tar.gz", self.os, self.arch)
    }
}

/// Every platform with a release archive.
pub const PLATFORMS: &[Platform] = &[
    Platform {
        os: "linux",
        arch: "amd64",
        triple: "x86_64-unknown-linux-musl",
        cross: None,
        strip: "strip",
    },
    Platform {
        os: "linux",
        arch: "arm64",
        triple: "aarch64-unknown-linux-musl",
        cross: Some("aarch64-linux-gnu-gcc"),
        strip: "aarch64-linux-gnu-strip",
    },
    Platform {
        os: "windows",
        arch: "amd64",
        triple: "x86_64-pc-windows-gnu",
        cross: Some("x86_64-w64-mingw32-gcc"),
        strip: "x86_64-w64-mingw32-strip",
    },
];

/// A platform that is type-checked only: (os/arch, Rust target).
type Checked = (&'static str, &'static str);

/// Type-checked only: no SDK to link with on this machine.
const CHECKED: &[Checked] = &[("darwin/arm64", "aarch64-apple-darwin")];

/// The Debian packages the release builds need beyond `setup`'s.
const PACKAGES: &[(&str, &str)] = &[
    (
        "gcc-mingw-w64-x86-64-win32",
        "links the Windows plugin and compiles ring's C for it",
    ),
    (
        "clang",
        "assembles psm's Mach-O stack switching for the macOS type check",
    ),
];

pub struct Options {
    /// Where the archives and the manifest go (default target/dist/v<version>).
    pub out: Option<PathBuf>,
    /// Only these platforms (os/arch); all when empty.
    pub platforms: Vec<String>,
    /// Where the archives will be downloadable from (the manifest's URIs).
    pub base_url: Option<String>,
    /// The agent image the released plugin runs by default (`--image` still overrides it).
    pub image: Option<String>,
}

/// The manifest's file name: krew requires `<plugin name>.yaml`.
pub const MANIFEST: &str = "nodehealth.yaml";

pub fn run(o: Options) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let root = sh::workspace_root();
    let out = o
        .out
        .unwrap_or_else(|| root.join("target/dist").join(format!("v{version}")));
    let (platforms, checks) = select(&o.platforms)?;
    let base_url = o.base_url.unwrap_or_else(|| {
        format!(
            "{}/releases/download/v{version}",
            env!("CARGO_PKG_REPOSITORY")
        )
    });
    step(format!(
        "release archives of kubectl-nodehealth v{version} -> {}",
        out.display()
    ));
    let packages: Vec<(&str, &str)> = PACKAGES
        .iter()
        .filter(|(p, _)| {
            (*p != "clang" || !checks.is_empty())
                && (!p.starts_with("gcc-mingw") || platforms.iter().any(|x| x.os == "windows"))
        })
        .copied()
        .collect();
    setup::apt_install(&packages)?;
    let triples: Vec<&str> = platforms
        .iter()
        .map(|p| p.triple)
        .chain(checks.iter().map(|(_, t)| *t))
        .collect();
    setup::rust_targets(&triples)?;
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Without --image the released plugin defaults to the local cluster's imported name, which
    // no real cluster can pull: say so.
    let image_env: Vec<(&str, &str)> = match &o.image {
        Some(image) => {
            info(format!("default agent image: {image}"));
            vec![("NODEHEALTH_DEFAULT_IMAGE", image.as_str())]
        }
        None => {
            info(format!(
                "no --image: the plugin's default agent image stays {}, which only the local \
                 cluster has; users pass --image (`cargo xtask image --push REF` prints one)",
                agent_image::AGENT_IMAGE
            ));
            Vec::new()
        }
    };

    let mut built = Vec::new();
    for p in &platforms {
        let bin = agent_image::cross_build(
            "kubectl-nodehealth",
            p.triple,
            p.cross,
            &p.name(),
            &image_env,
        )?;
        let contents = stripped(p, &bin)?;
        let archive = out.join(p.archive());
        write_archive(&archive, p.binary(), &contents)?;
        let sha = sha256_file(&archive)?;
        info(format!(
            "{}: {} ({:.1} MiB), sha256 {sha}",
            p.name(),
            p.archive(),
            fs::metadata(&archive)?.len() as f64 / 1048576.0
        ));
        built.push((*p, sha));
    }
    for (name, triple) in &checks {
        type_check(triple)?;
        info(format!("{name}: type-checked ({triple}; not linked here)"));
    }
    if built.is_empty() {
        return Ok(());
    }
    let manifest = krew_manifest(version, &base_url, &built);
    fs::write(out.join(MANIFEST), manifest)?;
    let sums: String = built
        .iter()
        .map(|(p, sha)| format!("{sha}  {}\n", p.archive()))
        .collect();
    fs::write(out.join("SHA256SUMS"), sums)?;
    info(format!(
        "krew manifest {} (URIs under {base_url}); install from here: `kubectl krew install \
         --manifest={} --archive={}`",
        out.join(MANIFEST).display(),
        out.join(MANIFEST).display(),
        out.join(built[0].0.archive()).display()
    ));
    Ok(())
}

/// The platforms to build and to type-check for `names` (all when empty).
fn select(names: &[String]) -> Result<(Vec<&'static Platform>, Vec<Checked>)> {
    if names.is_empty() {
        return Ok((PLATFORMS.iter().collect(), CHECKED.to_vec()));
    }
    let mut platforms = Vec::new();
    let mut checks = Vec::new();
    for n in names {
        if let Some(p) = PLATFORMS.iter().find(|p| p.name() == *n) {
            platforms.push(p);
        } else if let Some(c) = CHECKED.iter().find(|(name, _)| name == n) {
            checks.push(*c);
        } else {
            let known: Vec<String> = PLATFORMS
                .iter()
                .map(|p| p.name())
                .chain(CHECKED.iter().map(|(n, _)| format!("{n} (type check)")))
                .collect();
            bail!("unknown platform {n:?}: known are {}", known.join(", "));
        }
    }
    Ok((platforms, checks))
}

/// The binary without debug info; unstripped when the platform's strip is missing.
fn stripped(p: &Platform, bin: &Path) -> Result<Vec<u8>> {
    let tmp = bin.with_extension("stripped");
    let contents = match sh::output(Command::new(p.strip).arg("-o").arg(&tmp).arg(bin)) {
        Some(_) => fs::read(&tmp)?,
        None => {
            info(format!(
                "{} missing: the archive holds the unstripped binary",
                p.strip
            ));
            fs::read(bin).with_context(|| format!("reading {}", bin.display()))?
        }
    };
    let _ = fs::remove_file(&tmp);
    Ok(contents)
}

/// A gzip'd tar with one executable at its root, byte-identical for the same binary.
fn write_archive(path: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, contents)?;
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

/// `cargo check` for a target with no SDK here. ring's build script compiles C against the SDK's
/// headers and produces only a library to link, which a check never links: its output is
/// overridden (cargo's `[target.<triple>.<links>]`), so the check covers every line of Rust,
/// ring's included. psm's stack-switching assembly needs only an assembler: clang.
fn type_check(triple: &str) -> Result<()> {
    let links = ring_links()?;
    let env_triple = triple.replace('-', "_");
    sh::run(
        &format!("type-checking the plugin for {triple}"),
        sh::cargo()
            .current_dir(sh::workspace_root())
            .args([
                "check",
                "--quiet",
                "-p",
                "kubectl-nodehealth",
                "--target",
                triple,
            ])
            .arg("--config")
            .arg(format!("target.{triple}.{links}.rustc-link-lib=[]"))
            .env(format!("CC_{env_triple}"), "clang"),
    )
}

/// The `links` key of the ring package in the lockfile's dependency graph.
fn ring_links() -> Result<String> {
    let meta = sh::output(sh::cargo().current_dir(sh::workspace_root()).args([
        "metadata",
        "--format-version",
        "1",
    ]))
    .context("cargo metadata failed")?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "ring")
        .and_then(|p| p["links"].as_str())
        .map(str::to_string)
        .context("no ring package with a links key in cargo metadata")
}

/// The krew plugin manifest (krew.googlecontainertools.github.com/v1alpha2) for `built`.
fn krew_manifest(version: &str, base_url: &str, built: &[(&Platform, String)]) -> String {
    let mut m = format!(
        "apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: nodehealth
spec:
  version: v{version}
  homepage: {homepage}
  shortDescription: Why a node's kubelet is not responding, and the safe fix
  description: |
    Names the cause when a node's kubelet stops responding: PLEG stalls, a hung or slow
    container runtime, certificate expiry, kubelet starvation, an API-server partition.
    Reads the node through the API server (conditions, lease, kubelet metrics and logs
    through the node proxy) and, unless --api-only, a short-lived agent pod on the node
    (CRI timings, processes, certificates; eBPF attribution with --trace). Prints the
    evidence, the safe fix and what not to do.
    Needs RBAC: `kubectl nodehealth rbac` prints exactly what it uses.
  platforms:
",
        homepage = env!("CARGO_PKG_REPOSITORY"),
    );
    for (p, sha) in built {
        m.push_str(&format!(
            "  - selector:
      matchLabels:
        os: {os}
        arch: {arch}
    uri: {base_url}/{archive}
    sha256: {sha}
    files:
    - from: {bin}
      to: .
    bin: {bin}
",
            os = p.os,
            arch = p.arch,
            archive = p.archive(),
            bin = p.binary(),
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_selected_by_name_and_unknown_ones_are_named() {
        let (p, c) = select(&["linux/arm64".into(), "darwin/arm64".into()]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].triple, "aarch64-unknown-linux-musl");
        assert_eq!(c, vec![("darwin/arm64", "aarch64-apple-darwin")]);
        let (p, c) = select(&[]).unwrap();
        assert_eq!((p.len(), c.len()), (PLATFORMS.len(), CHECKED.len()));
        let e = select(&["linux/riscv64".into()]).unwrap_err().to_string();
        assert!(
            e.contains("linux/riscv64") && e.contains("windows/amd64"),
            "{e}"
        );
    }

    #[test]
    fn archives_are_reproducible_and_hold_one_executable() {
        let dir = std::env::temp_dir().join(format!("nodehealth-dist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.tar.gz"), dir.join("b.tar.gz"));
        write_archive(&a, "kubectl-nodehealth", b"\x7fELF binary").unwrap();
        write_archive(&b, "kubectl-nodehealth", b"\x7fELF binary").unwrap();
        assert_eq!(sha256_file(&a).unwrap(), sha256_file(&b).unwrap());
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&a).unwrap()));
        let entries: Vec<(String, u32, u64)> = tar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries, vec![("kubectl-nodehealth".into(), 0o755, 11)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_manifest_names_each_archive_with_its_hash_and_binary() {
        let built = vec![
            (&PLATFORMS[0], "a".repeat(64)),
            (&PLATFORMS[2], "b".repeat(64)),
        ];
        let m = krew_manifest("0.1.0", "https://example.invalid/v0.1.0", &built);
        assert!(m.contains("  version: v0.1.0\n"), "{m}");
        assert!(m.contains(&format!(
            "uri: https://example.invalid/v0.1.0/kubectl-nodehealth-linux-amd64.tar.gz\n    sha256: {}",
            "a".repeat(64)
        )));
        assert!(m.contains("os: windows\n        arch: amd64"), "{m}");
        assert!(m.contains("bin: kubectl-nodehealth.exe\n"), "{m}");
    }
}
