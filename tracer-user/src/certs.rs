//! The kubelet's certificates from disk.
//!
//! `kubelet-client-current.pem` (and usually the serving certificate) holds the certificate
//! *and its private key* in one file. Only the text between `-----BEGIN CERTIFICATE-----` and
//! `-----END CERTIFICATE-----` is ever base64-decoded and parsed; every other PEM block is
//! counted by its label and skipped unread. Nothing from the file is copied into the evidence
//! except facts parsed from certificates.
use std::{
    io::Read as _,
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
};

use base64::Engine;
use nodehealth_proto::node::{
    CertificateFile, CertificateInfo, Certificates, Discovery, FilePresence,
};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::host::{HostRoot, host_join, now_unix_ms};

const BEGIN_CERT: &str = "-----BEGIN CERTIFICATE-----";
const END_CERT: &str = "-----END CERTIFICATE-----";

/// DER of every CERTIFICATE block, and the number of other PEM blocks (never decoded).
pub fn certificate_blocks(pem: &str) -> (Vec<Result<Vec<u8>, String>>, u32) {
    let mut certs = Vec::new();
    let mut others = 0;
    let mut lines = pem.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line == BEGIN_CERT {
            let mut b64 = String::new();
            let mut closed = false;
            for l in lines.by_ref() {
                let l = l.trim();
                if l == END_CERT {
                    closed = true;
                    break;
                }
                b64.push_str(l);
            }
            certs.push(if closed {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("CERTIFICATE block is not valid base64: {e}"))
            } else {
                Err("CERTIFICATE block has no END line".to_string())
            });
        } else if line.starts_with("-----BEGIN ") {
            // Not a certificate (a private key, most likely): skip to its END line unread.
            others += 1;
            for l in lines.by_ref() {
                if l.trim().starts_with("-----END ") {
                    break;
                }
            }
        }
    }
    (certs, others)
}

/// Facts from one DER certificate.
pub fn describe(der: &[u8], now_ms: i64) -> Result<CertificateInfo, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_before = cert.validity().not_before.timestamp() * 1000;
    let not_after = cert.validity().not_after.timestamp() * 1000;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(ip) => sans.push(match ip.len() {
                    4 => format!("IP:{}", Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(ip);
                        format!("IP:{}", Ipv6Addr::from(b))
                    }
                    _ => "IP:?".to_string(),
                }),
                GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                _ => {}
            }
        }
    }
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: cert.raw_serial_as_string(),
        sans,
        not_before_unix_ms: not_before,
        not_after_unix_ms: not_after,
        seconds_left: (not_after - now_ms).div_euclid(1000),
        expired: now_ms > not_after,
        not_yet_valid: now_ms < not_before,
        is_ca: cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca),
    })
}

/// A certificate file larger than this is not one (a PEM chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads one certificate file (a host path).
pub fn inspect_file(host: &HostRoot, role: &str, path: &str) -> CertificateFile {
    let resolved = host.resolve(path);
    let mut f = CertificateFile {
        role: role.to_string(),
        path: path.to_string(),
        resolved_path: (resolved != path).then(|| resolved.clone()),
        ..Default::default()
    };
    let agent_path = host.lexical(&resolved);
    let (file, meta) = match crate::host::open_regular(&agent_path) {
        Ok(opened) => opened,
        Err(e) => {
            f.exists = agent_path.symlink_metadata().is_ok();
            f.error = Some(format!("{resolved}: {e}"));
            return f;
        }
    };
    f.exists = true;
    f.modified_at_unix_ms = Some(meta.mtime() * 1000);
    if meta.len() > MAX_PEM_BYTES {
        f.error = Some(format!("{resolved}: {} bytes, not a PEM file", meta.len()));
        return f;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded also if the file grows after the check.
    if let Err(e) = file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes) {
        bytes.fill(0);
        f.error = Some(format!("{resolved}: {e}"));
        return f;
    }
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bytes.fill(0);
        f.error = Some(format!(
            "{resolved}: grew past {MAX_PEM_BYTES} bytes while read, not a PEM file"
        ));
        return f;
    }
    // Scanned in place (no copy of the file, which holds the key); the buffer is wiped after.
    let (blocks, others) = match std::str::from_utf8(&bytes) {
        Ok(text) => certificate_blocks(text),
        Err(_) => (Vec::new(), 0),
    };
    bytes.fill(0);
    std::hint::black_box(&bytes);
    drop(bytes);
    f.other_pem_blocks = others;
    let now = now_unix_ms();
    let mut errors = Vec::new();
    for block in blocks {
        match block.and_then(|der| describe(&der, now)) {
            Ok(info) => f.certificates.push(info),
            Err(e) => errors.push(e),
        }
    }
    if f.certificates.is_empty() && errors.is_empty() {
        errors.push("no CERTIFICATE PEM block in the file (or not a text file)".to_string());
    }
    if !errors.is_empty() {
        f.error = Some(errors.join("; "));
    }
    f
}

/// The kubelet's client and serving certificates and the bootstrap kubeconfig's presence.
/// `kubeconfig_client_cert` is the client-certificate path named in the kubelet's kubeconfig,
/// which wins over `<cert-dir>/kubelet-client-current.pem` when set.
pub fn collect(
    host: &HostRoot,
    d: &Discovery,
    kubeconfig_client_cert: Option<&str>,
) -> Certificates {
    let mut c = Certificates::default();
    let cert_dir = d.cert_dir.as_ref().map(|s| s.value.clone());
    let client_path = kubeconfig_client_cert.map(str::to_string).or_else(|| {
        cert_dir
            .as_ref()
            .map(|dir| host_join(dir, "kubelet-client-current.pem"))
    });
    c.client = client_path.map(|p| inspect_file(host, "client", &p));

    // Serving: tlsCertFile when configured; else the rotated serving cert when it exists
    // (serverTLSBootstrap), else the self-signed kubelet.crt (pkg/kubelet/kubelet.go).
    let serving = if let Some(t) = &d.tls_cert_file {
        Some(t.value.clone())
    } else if let Some(dir) = &cert_dir {
        let rotated = host_join(dir, "kubelet-server-current.pem");
        if host.path(&rotated).exists() {
            Some(rotated)
        } else {
            Some(host_join(dir, "kubelet.crt"))
        }
    } else {
        None
    };
    c.serving = serving.map(|p| inspect_file(host, "serving", &p));
    if let Some(b) = &d.bootstrap_kubeconfig {
        c.bootstrap_kubeconfig = Some(FilePresence {
            path: b.value.clone(),
            exists: host.path(&b.value).exists(),
        });
    } else {
        c.notes
            .push("the kubelet has no --bootstrap-kubeconfig flag".to_string());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificate_blocks_are_decoded() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n\
                   -----BEGIN EC PRIVATE KEY-----\n!!!not base64 and never decoded!!!\n\
                   -----END EC PRIVATE KEY-----\n";
        let (certs, others) = certificate_blocks(pem);
        assert_eq!(others, 1);
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].as_deref(), Ok(&[0u8, 1, 2][..]));
        assert!(describe(&[0, 1, 2], 0).is_err());
    }
}
