//! The API-server check against a real TLS server on loopback (rustls, certificates from
//! rcgen): TCP connect, verified handshake with the kubeconfig's CA, anonymous GET /healthz and
//! the server's Date against the node clock; a wrong CA fails verification but reachability and
//! the clock are still measured; a closed port is a TCP error.
use std::{sync::Arc, time::Duration};

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;
use tracer_user::{
    apiserver::{self, KubeconfigFacts},
    host::HostRoot,
};

fn ca(cn: &str) -> (CertificateParams, KeyPair, Vec<u8>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    (params, key, der)
}

/// Serves `HTTP/1.1 401` with a Date header `skew_s` seconds off, once per connection.
async fn serve(skew_s: i64) -> (u16, Vec<u8>, String) {
    let (ca_params, ca_key, ca_der) = ca("test apiserver CA");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let date = std::time::SystemTime::now()
                    .checked_add(Duration::from_secs(skew_s.max(0) as u64))
                    .unwrap()
                    .checked_sub(Duration::from_secs((-skew_s).max(0) as u64))
                    .unwrap();
                let body = r#"{"kind":"Status","code":401}"#;
                let resp = format!(
                    "HTTP/1.1 401 Unauthorized\r\nDate: {}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    httpdate::fmt_http_date(date),
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&ca_der)
    );
    (port, ca_der, pem)
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    b.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn verified_handshake_anonymous_healthz_and_server_clock() {
    let (port, _, ca_pem) = serve(0).await;
    // Through a kubeconfig file like the kubelet's, CA by path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
    std::fs::write(
        dir.path().join("kubelet.conf"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    \
             server: https://localhost:{port}\n    certificate-authority: ca.crt\ncontexts:\n- name: c\n  \
             context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user: {{client-certificate: /x.pem, client-key: /x.pem}}\n"
        ),
    )
    .unwrap();
    let path = dir.path().join("kubelet.conf");
    let facts = apiserver::read_kubeconfig(&HostRoot::new("/"), path.to_str().unwrap()).unwrap();
    assert_eq!(facts.ca.len(), 1);
    let p = apiserver::probe(&facts, Duration::from_secs(5)).await;
    eprintln!(
        "apiserver: tcp {:?} ms, tls {:?} ms, healthz {:?} ms, skew {:?} ms",
        p.tcp_connect_ms,
        p.tls_handshake_ms,
        p.healthz.as_ref().map(|h| h.latency_ms),
        p.clock_skew_ms
    );
    assert!(p.tcp_connect_ms.is_some() && p.tcp_error.is_none());
    assert!(p.tls_verified, "{p:?}");
    let h = p.healthz.as_ref().unwrap();
    assert_eq!(h.status, Some(401));
    assert!(p.server_date_unix_ms.is_some());
    assert!(p.clock_skew_ms.unwrap().abs() <= 1_000, "{p:?}");
}

#[tokio::test]
async fn wrong_ca_fails_verification_but_reachability_and_clock_are_measured() {
    let (port, _, _) = serve(-300).await;
    let (_, _, other_ca) = ca("some other CA");
    let facts = KubeconfigFacts {
        server: Some(format!("https://localhost:{port}")),
        ca: vec![other_ca],
        ca_source: Some("inline".into()),
        ..Default::default()
    };
    let p = apiserver::probe(&facts, Duration::from_secs(5)).await;
    assert!(!p.tls_verified);
    assert!(
        p.tls_error
            .as_deref()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{p:?}"
    );
    assert_eq!(p.healthz.as_ref().unwrap().status, Some(401));
    // The server's clock is 5 minutes behind: the node is ~300 s ahead.
    let skew = p.clock_skew_ms.unwrap();
    assert!((299_000..=301_000).contains(&skew), "{skew}");
}

#[tokio::test]
async fn a_closed_port_is_a_tcp_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let facts = KubeconfigFacts {
        server: Some(format!("https://127.0.0.1:{port}")),
        ..Default::default()
    };
    let p = apiserver::probe(&facts, Duration::from_secs(2)).await;
    assert!(p.tcp_error.is_some() && p.healthz.is_none(), "{p:?}");
}
