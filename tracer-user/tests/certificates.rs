//! Certificate checks on generated cert+key files laid out like a kubelet's pki directory (the
//! private key in the same file, `kubelet-client-current.pem` an absolute symlink inside the
//! host root): valid, expiring in 2 days, expired, not a certificate — and no key material in
//! any output.
use std::{fs, os::unix::fs::symlink};

use base64::Engine;
use nodehealth_proto::node::{Discovery, Source, Sourced};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::{Duration, OffsetDateTime};
use tracer_user::{certs, host::HostRoot};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "test cluster CA");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    Ca { params, key }
}

/// A leaf valid from `from` to `to` (relative to now); returns (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, sans: &[&str], from: Duration, to: Duration) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    let now = OffsetDateTime::now_utc();
    params.not_before = now + from;
    params.not_after = now + to;
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Every base64 line of every key PEM, and the key's DER in base64 and hex.
fn key_fragments(key_pems: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for pem in key_pems {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            out.push(line.to_string());
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap();
        // Any 12-byte run of the DER, hex-encoded either way a serializer might write it.
        for chunk in der.chunks(12).filter(|c| c.len() == 12) {
            out.push(chunk.iter().map(|b| format!("{b:02x}")).collect());
            out.push(
                chunk
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
            out.push(format!("{chunk:?}").trim_matches(['[', ']']).to_string());
        }
    }
    out
}

#[test]
fn valid_expiring_expired_and_garbage_files_and_no_key_material_anywhere() {
    let ca = ca();
    let root = tempfile::tempdir().unwrap();
    let pki = root.path().join("var/lib/kubelet/pki");
    fs::create_dir_all(&pki).unwrap();
    let mut keys = Vec::new();

    // Client cert: valid for a year, key in the same file, reached through an absolute symlink.
    let (cert, key) = leaf(
        &ca,
        "system:node:n1",
        &[],
        Duration::hours(-1),
        Duration::days(365),
    );
    fs::write(
        pki.join("kubelet-client-2026-11-24.pem"),
        format!("{cert}{key}"),
    )
    .unwrap();
    symlink(
        "/var/lib/kubelet/pki/kubelet-client-2026-11-24.pem",
        pki.join("kubelet-client-current.pem"),
    )
    .unwrap();
    keys.push(key);
    // Serving cert expiring in 2 days (key first this time).
    let (cert, key) = leaf(
        &ca,
        "n1",
        &["n1", "127.0.0.1"],
        Duration::days(-300),
        Duration::days(2),
    );
    fs::write(pki.join("kubelet.crt"), format!("{key}{cert}")).unwrap();
    keys.push(key);

    let host = HostRoot::new(root.path());
    let d = Discovery {
        cert_dir: Some(Sourced {
            value: "/var/lib/kubelet/pki".into(),
            source: Source::Flag,
        }),
        bootstrap_kubeconfig: Some(Sourced {
            value: "/etc/kubernetes/bootstrap-kubelet.conf".into(),
            source: Source::Flag,
        }),
        ..Default::default()
    };
    let c = certs::collect(&host, &d, None);
    let client = c.client.as_ref().unwrap();
    assert!(client.exists && client.error.is_none(), "{client:?}");
    assert_eq!(
        client.resolved_path.as_deref(),
        Some("/var/lib/kubelet/pki/kubelet-client-2026-11-24.pem")
    );
    assert_eq!(client.other_pem_blocks, 1, "the key is counted, not read");
    let cc = &client.certificates[0];
    assert_eq!(cc.subject, "CN=system:node:n1, O=system:nodes");
    assert_eq!(cc.issuer, "CN=test cluster CA");
    assert!(!cc.expired && !cc.not_yet_valid && !cc.is_ca);
    assert!((cc.seconds_left - 365 * 86_400).abs() < 120, "{cc:?}");

    let serving = c.serving.as_ref().unwrap();
    assert_eq!(serving.path, "/var/lib/kubelet/pki/kubelet.crt");
    let sc = &serving.certificates[0];
    assert_eq!(sc.sans, vec!["DNS:n1", "IP:127.0.0.1"]);
    assert!(!sc.expired);
    assert!((sc.seconds_left - 2 * 86_400).abs() < 120, "{sc:?}");
    let b = c.bootstrap_kubeconfig.as_ref().unwrap();
    assert!(!b.exists);

    // Expired.
    let (cert, key) = leaf(&ca, "old", &[], Duration::days(-30), Duration::days(-1));
    fs::write(pki.join("expired.pem"), format!("{cert}{key}")).unwrap();
    keys.push(key);
    let expired = certs::inspect_file(&host, "client", "/var/lib/kubelet/pki/expired.pem");
    let ec = &expired.certificates[0];
    assert!(ec.expired, "{ec:?}");
    assert!(ec.seconds_left < -86_000, "{ec:?}");

    // Not a certificate: a key alone, random text, and a CERTIFICATE block of garbage.
    let lone_key = KeyPair::generate().unwrap().serialize_pem();
    fs::write(pki.join("key-only.pem"), &lone_key).unwrap();
    keys.push(lone_key);
    let key_only = certs::inspect_file(&host, "client", "/var/lib/kubelet/pki/key-only.pem");
    assert!(key_only.certificates.is_empty());
    assert!(
        key_only
            .error
            .as_deref()
            .unwrap()
            .contains("no CERTIFICATE"),
        "{key_only:?}"
    );
    fs::write(pki.join("text.pem"), "hello, not a certificate\n").unwrap();
    let text = certs::inspect_file(&host, "client", "/var/lib/kubelet/pki/text.pem");
    assert!(text.error.is_some() && text.certificates.is_empty());
    fs::write(
        pki.join("bad.pem"),
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad = certs::inspect_file(&host, "client", "/var/lib/kubelet/pki/bad.pem");
    assert!(
        bad.error.as_deref().unwrap().contains("not an X.509"),
        "{bad:?}"
    );
    let missing = certs::inspect_file(&host, "serving", "/var/lib/kubelet/pki/none.pem");
    assert!(!missing.exists && missing.error.is_some());
    // A FIFO where the certificate should be (no writer: a plain read would wait forever) and
    // a directory: reported at once, never read.
    let fifo = pki.join("fifo.pem");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    // Asked on a thread: a read that blocks fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let fifo_host = HostRoot::new(root.path());
    std::thread::spawn(move || {
        let _ = tx.send(certs::inspect_file(
            &fifo_host,
            "client",
            "/var/lib/kubelet/pki/fifo.pem",
        ));
    });
    let f = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("inspect_file blocked on a FIFO");
    assert!(
        f.exists && f.certificates.is_empty() && f.error.as_deref().unwrap().contains("a FIFO"),
        "{f:?}"
    );
    // The kubeconfig and config-file reads go through the same guard.
    let e = host
        .read_limited("/var/lib/kubelet/pki/fifo.pem", 4096)
        .unwrap_err();
    assert!(e.to_string().contains("a FIFO"), "{e}");
    let dir = certs::inspect_file(&host, "client", "/var/lib/kubelet");
    assert!(
        dir.error.as_deref().unwrap().contains("not a regular file"),
        "{dir:?}"
    );

    // No key material in any output, in JSON or debug form.
    let outputs = [
        serde_json::to_string(&c).unwrap(),
        format!("{c:?}"),
        serde_json::to_string(&[&expired, &key_only, &text, &bad, &missing]).unwrap(),
        format!("{:?}", [&expired, &key_only, &text, &bad]),
    ];
    let fragments = key_fragments(&keys);
    assert!(fragments.len() > 20);
    for out in &outputs {
        assert!(!out.contains("PRIVATE KEY"), "a key label leaked: {out}");
        for f in &fragments {
            assert!(
                !out.contains(f.as_str()),
                "key material {f:?} leaked into {out}"
            );
        }
    }
}
