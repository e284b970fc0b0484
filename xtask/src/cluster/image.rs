//! OCI image layouts built without Docker: a one-layer image from files on disk, written as an
//! OCI archive that `ctr images import` accepts. Used for the pause image (and the agent image).

use std::{fs, io::Write, path::Path};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A file to place in the image's single layer.
pub struct File<'a> {
    /// Path inside the image, without the leading slash.
    pub path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Writes an OCI archive (tar of an OCI image layout) at `out` with one uncompressed layer holding
/// `files`, `entrypoint` as the command, and `name` (e.g. registry.k8s.io/pause:3.10) as the
/// image name containerd imports it under.
pub fn write_oci_archive(
    out: &Path,
    name: &str,
    files: &[File],
    entrypoint: &[&str],
) -> Result<()> {
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
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": entrypoint, "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        "history": [{ "created_by": "kubectl-nodehealth xtask" }],
    }))?;
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

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
    add(&format!("blobs/sha256/{layer_digest}"), &layer)?;
    add(&format!("blobs/sha256/{config_digest}"), &config)?;
    add(&format!("blobs/sha256/{manifest_digest}"), &manifest)?;
    let archive = archive.into_inner()?;
    let tmp = out.with_extension("tmp");
    fs::File::create(&tmp)?.write_all(&archive)?;
    fs::rename(&tmp, out)?;
    Ok(())
}
