//! The API server as the node reaches it: TCP connect, TLS handshake, `GET /healthz`, and the
//! server's `Date` against the node clock.
//!
//! Only the server address, the CA and the client-certificate *path* are taken from the
//! kubelet's kubeconfig (it may embed keys and tokens: those fields are not even deserialized).
//! The request is anonymous, so its status code says only that the server answers (200, 401 and
//! 403 alike) — it says nothing about the kubelet's own credentials.
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine;
use nodehealth_proto::node::ApiServerProbe;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{
    certs::certificate_blocks,
    host::{HostRoot, host_join, now_unix_ms, unix_ms},
    http,
};

#[derive(Debug, Default, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    value: T,
}

#[derive(Debug, Default, Deserialize)]
struct Cluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "tls-server-name")]
    tls_server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    cluster: Option<String>,
    user: Option<String>,
}

/// Only the certificate path: `client-key`, `token`, `*-data` are never read into memory.
#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(rename = "client-certificate")]
    client_certificate: Option<String>,
}

/// What the probe uses from a kubelet kubeconfig.
#[derive(Debug, Clone, Default)]
pub struct KubeconfigFacts {
    pub server: Option<String>,
    pub tls_server_name: Option<String>,
    /// DER CA certificates.
    pub ca: Vec<Vec<u8>>,
    pub ca_source: Option<String>,
    /// Host path of the client certificate, if the kubeconfig names a file.
    pub client_certificate: Option<String>,
}

/// Reads the server, CA and client-certificate path of the current context. `path` is a host path.
pub fn read_kubeconfig(host: &HostRoot, path: &str) -> Result<KubeconfigFacts, String> {
    let bytes = host
        .read_limited(path, 4 << 20)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let kc: Kubeconfig =
        serde_yaml_ng::from_slice(&bytes).map_err(|e| format!("cannot parse {path}: {e}"))?;
    let dir = Path::new(path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let context = kc
        .current_context
        .as_ref()
        .and_then(|c| kc.contexts.iter().find(|x| &x.name == c))
        .or(kc.contexts.first())
        .map(|c| &c.value);
    let cluster = context
        .and_then(|c| c.cluster.as_ref())
        .and_then(|n| kc.clusters.iter().find(|x| &x.name == n))
        .or(kc.clusters.first())
        .map(|c| &c.value);
    let user = context
        .and_then(|c| c.user.as_ref())
        .and_then(|n| kc.users.iter().find(|x| &x.name == n))
        .map(|u| &u.value);
    let mut facts = KubeconfigFacts {
        client_certificate: user
            .and_then(|u| u.client_certificate.as_ref())
            .map(|p| host_join(&dir, p)),
        ..Default::default()
    };
    let Some(cluster) = cluster else {
        return Err(format!("{path} names no cluster"));
    };
    facts.server = cluster.server.clone();
    facts.tls_server_name = cluster.tls_server_name.clone();
    let pem = if let Some(data) = &cluster.ca_data {
        facts.ca_source = Some("inline".into());
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("certificate-authority-data is not base64: {e}"))?
    } else if let Some(file) = &cluster.ca_file {
        let file = host_join(&dir, file);
        facts.ca_source = Some(format!("file:{file}"));
        let b = host
            .read_limited(&file, 1 << 20)
            .map_err(|e| format!("cannot read CA {file}: {e}"))?;
        String::from_utf8_lossy(&b).into_owned()
    } else {
        facts.ca_source = Some("none".into());
        String::new()
    };
    facts.ca = certificate_blocks(&pem).0.into_iter().flatten().collect();
    Ok(facts)
}

/// `https://host:port/...` → (host, port).
pub fn split_server(server: &str) -> Option<(String, u16)> {
    let rest = server.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        let port = p.strip_prefix(':').map_or(Some(443), |p| p.parse().ok())?;
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), 443)),
    }
}

/// Accepts any server certificate: used only after a verified handshake failed, to still measure
/// reachability and read the server's clock (a skewed node clock is one reason verification fails).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn tls_config(ca: &[Vec<u8>], verify: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        for der in ca {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("CA certificate rejected: {e}"))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    };
    Ok(config)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Probes the API server named by the kubeconfig facts. Every step is bounded by `timeout`.
pub async fn probe(facts: &KubeconfigFacts, timeout: Duration) -> ApiServerProbe {
    let mut p = ApiServerProbe {
        server: facts.server.clone(),
        ca_source: facts.ca_source.clone(),
        ..Default::default()
    };
    let Some((host, port)) = facts.server.as_deref().and_then(split_server) else {
        p.skipped = Some(format!(
            "no https server address in the kubeconfig: {:?}",
            facts.server
        ));
        return p;
    };
    let sni = facts
        .tls_server_name
        .clone()
        .unwrap_or_else(|| host.clone());
    let Ok(server_name) = ServerName::try_from(sni.clone()) else {
        p.skipped = Some(format!("invalid TLS server name {sni:?}"));
        return p;
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };

    let connect = || async {
        let started = Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => Ok((s, started.elapsed())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no TCP connection within {timeout:?}")),
        }
    };
    let tcp = match connect().await {
        Ok((s, took)) => {
            p.tcp_connect_ms = Some(ms(took));
            s
        }
        Err(e) => {
            p.tcp_error = Some(e);
            return p;
        }
    };

    let handshake = |tcp: TcpStream, verify: bool| {
        let server_name = server_name.clone();
        let ca = facts.ca.clone();
        async move {
            let config = tls_config(&ca, verify)?;
            let started = Instant::now();
            let connector = TlsConnector::from(Arc::new(config));
            match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
                Ok(Ok(s)) => Ok((s, started.elapsed())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no TLS handshake within {timeout:?}")),
            }
        }
    };
    let verified = if facts.ca.is_empty() {
        Err("no CA in the kubeconfig: the server cannot be verified".to_string())
    } else {
        handshake(tcp, true).await
    };
    let (mut tls, took) = match verified {
        Ok(v) => {
            p.tls_verified = true;
            v
        }
        Err(e) => {
            p.tls_error = Some(e);
            // Measure reachability and the clock anyway, on a fresh unverified connection.
            let retry = match connect().await {
                Ok((tcp, _)) => handshake(tcp, false).await,
                Err(e) => Err(e),
            };
            match retry {
                Ok(v) => v,
                Err(e) => {
                    p.tls_error = Some(format!(
                        "{}; unverified retry: {e}",
                        p.tls_error.take().unwrap_or_default()
                    ));
                    return p;
                }
            }
        }
    };
    p.tls_handshake_ms = Some(ms(took));

    let at = now_unix_ms();
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, http::get(&mut tls, &sni, "/healthz")).await;
    let elapsed = started.elapsed();
    let received = now_unix_ms();
    if let Ok(Ok(r)) = &result
        && let Some(date) = r.date
    {
        let server = unix_ms(date);
        p.server_date_unix_ms = Some(server);
        // The Date header is truncated to the second: compare with the node clock at the
        // middle of the request, truncated alike (RFC 9110 §6.6.1).
        let mid = (at + received) / 2;
        p.clock_skew_ms = Some(mid - server - 500);
    }
    p.healthz = Some(http::attempt(at, elapsed, timeout, result));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            split_server("https://10.0.0.1:6443"),
            Some(("10.0.0.1".into(), 6443))
        );
        assert_eq!(
            split_server("https://api.example/x"),
            Some(("api.example".into(), 443))
        );
        assert_eq!(
            split_server("https://[::1]:6443"),
            Some(("::1".into(), 6443))
        );
        assert_eq!(split_server("http://x:1"), None);
    }

    #[test]
    fn kubeconfig_yields_server_ca_and_cert_path_but_not_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubelet.conf");
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\ncurrent-context: k\nclusters:\n- name: c\n  cluster:\n    \
             server: https://127.0.0.1:6443\n    certificate-authority: ca.crt\ncontexts:\n- name: k\n  \
             context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    \
             client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    \
             client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n    token: s3cret\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not a pem").unwrap();
        let host = HostRoot::new("/");
        let f = read_kubeconfig(&host, kc.to_str().unwrap()).unwrap();
        assert_eq!(f.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            f.client_certificate.as_deref(),
            Some("/var/lib/kubelet/pki/kubelet-client-current.pem")
        );
        assert!(f.ca_source.as_deref().unwrap().ends_with("/ca.crt"));
        assert!(f.ca.is_empty());
        assert!(!format!("{:?}", f).contains("s3cret"));
    }
}
