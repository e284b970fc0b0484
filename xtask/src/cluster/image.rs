//! OCI image layouts built without Docker: a one-layer image from files on disk, written as an
//! OCI archive that `ctr images import` accepts. Used for the pause image (and the agent image).

use std::{fs, io::Write, path::Path};

use anyhow::{Context, Result};
use serde_json::json;

/// A file to place in the image's single layer.
pub struct File<'a> {
    /// Path inside the image, without the leading slash.
    pub path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// One platform's image: its single layer, its config and its manifest, as pushed or archived.
pub struct PlatformImage {
    /// The OCI architecture (`amd64`, `arm64`).
    pub arch: &'static str,
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// The OCI media types of what [`PlatformImage`] and [`index`] hold.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", crate::sh::sha256_hex(data))
}

/// A one-layer image for `arch` holding `files`, with `entrypoint` as its command. Reproducible:
/// the same files give the same digests.
pub fn platform_image(
    arch: &'static str,
    files: &[File],
    entrypoint: &[&str],
) -> Result<PlatformImage> {
    let mut layer = tar::Builder::new(Vec::new());
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.contents.len() as u64);
        header.set_mode(f.mode);
        header.set_mtime(0);
        header.set_cksum();
        layer
            .append_data(&mut header, f.path, f.contents)
            .with_context(|| format!("adding {} to the layer", f.path))?;
    }
    let layer = layer.into_inner()?;
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Entrypoint": entrypoint, "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [digest(&layer)] },
        "history": [{ "created_by": "kubectl-nodehealth xtask" }],
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": digest(&layer),
            "size": layer.len(),
        }],
    }))?;
    Ok(PlatformImage {
        arch,
        layer,
        config,
        manifest,
    })
}

/// An OCI image index over `images`, one entry per platform; `name` (`registry/repo:tag`) adds
/// the annotations `ctr images import` names the image by.
pub fn index(images: &[PlatformImage], name: Option<&str>) -> Result<Vec<u8>> {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            let mut entry = json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": digest(&i.manifest),
                "size": i.manifest.len(),
                "platform": { "architecture": i.arch, "os": "linux" },
            });
            if let Some(name) = name {
                let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                entry["annotations"] = json!({
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                });
            }
            entry
        })
        .collect();
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    }))?)
}

/// Writes an OCI archive (tar of an OCI image layout) at `out` with one uncompressed layer holding
/// `files` for this machine's architecture, `entrypoint` as the command, and `name` (e.g.
/// registry.k8s.io/pause:3.10) as the image name containerd imports it under.
pub fn write_oci_archive(
    out: &Path,
    name: &str,
    files: &[File],
    entrypoint: &[&str],
) -> Result<()> {
    let image = platform_image(host_arch(), files, entrypoint)?;
    let index = index(std::slice::from_ref(&image), Some(name))?;
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(&mut header, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in [&image.layer, &image.config, &image.manifest] {
        add(
            &format!("blobs/sha256/{}", crate::sh::sha256_hex(blob)),
            blob,
        )?;
    }
    let archive = archive.into_inner()?;
    let tmp = out.with_extension("tmp");
    fs::File::create(&tmp)?.write_all(&archive)?;
    fs::rename(&tmp, out)?;
    Ok(())
}

/// This machine's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}
