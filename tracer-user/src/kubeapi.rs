//! The recorder's one write to the API server: a server-side apply of its node's
//! `NodeRecorderReport`, authenticated with the pod's service-account token.
//!
//! Where to: the API server the kubelet itself uses (its kubeconfig's server and CA — the path a
//! partition cuts, reachable from a host-network pod without kube-proxy), else the in-cluster
//! `KUBERNETES_SERVICE_HOST`. The token file is read on every write (projected tokens rotate).
//! One HTTP/1.1 request per connection, everything under one timeout: a write every 10 s or
//! slower does not need a pool, and a stuck connection must never hold the next write.
use std::{path::PathBuf, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{
    apiserver::{split_server, tls_config},
    certs::certificate_blocks,
};

/// The in-cluster service account's files.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where and as whom the recorder writes.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    /// `https://host:port`
    pub server: String,
    /// Name to verify the server's certificate against (`tls-server-name`, else the host).
    pub server_name: String,
    /// DER CA certificates.
    pub ca: Vec<Vec<u8>>,
    /// Verify the server's certificate against `ca` (only the kubelet's, where the operator said
    /// its serving certificate is self-signed, is not).
    pub verify: bool,
    pub token_file: PathBuf,
}

impl ApiTarget {
    /// From the kubelet's kubeconfig facts (server, CA) and a token file.
    pub fn from_kubeconfig(
        server: &str,
        tls_server_name: Option<&str>,
        ca: Vec<Vec<u8>>,
        token_file: PathBuf,
    ) -> Result<ApiTarget, String> {
        let (host, _) = split_server(server)
            .ok_or_else(|| format!("{server}: not an https://host:port address"))?;
        Ok(ApiTarget {
            server: server.trim_end_matches('/').to_string(),
            server_name: tls_server_name.map_or(host, str::to_string),
            ca,
            verify: true,
            token_file,
        })
    }

    /// The in-cluster address (`KUBERNETES_SERVICE_HOST`/`_PORT`) and the service account's CA.
    pub fn in_cluster(token_file: PathBuf, ca_file: &std::path::Path) -> Result<ApiTarget, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "KUBERNETES_SERVICE_HOST is not set (not in a pod)".to_string())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let pem = std::fs::read_to_string(ca_file)
            .map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
        let ca = certificate_blocks(&pem).0.into_iter().flatten().collect();
        ApiTarget::from_kubeconfig(&format!("https://{host}:{port}"), None, ca, token_file)
    }
}

/// The path of a cluster-scoped object of the report's resource.
pub fn report_path(node: &str) -> String {
    use nodehealth_proto::recorder::{GROUP, NAME, PLURAL, VERSION};
    format!("/apis/{GROUP}/{VERSION}/{PLURAL}/{node}?fieldManager={NAME}&force=true")
}

/// Server-side applies `body` (a whole object, JSON) at `path`. Ok(status) on 2xx; the server's
/// message otherwise.
pub async fn apply(
    target: &ApiTarget,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, String> {
    let (status, _) = request(
        target,
        Method::PATCH,
        path,
        Some((body, "application/apply-patch+yaml")),
        timeout,
    )
    .await?;
    Ok(status)
}

/// GETs `path`: the body on 2xx, the server's message otherwise.
pub async fn get(target: &ApiTarget, path: &str, timeout: Duration) -> Result<Bytes, String> {
    request(target, Method::GET, path, None, timeout)
        .await
        .map(|(_, body)| body)
}

/// One request on its own connection, everything under `timeout`.
async fn request(
    target: &ApiTarget,
    method: Method,
    path: &str,
    body: Option<(Vec<u8>, &str)>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    match tokio::time::timeout(timeout, request_inner(target, method, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {} within {timeout:?}",
            target.server
        )),
    }
}

async fn request_inner(
    target: &ApiTarget,
    method: Method,
    path: &str,
    body: Option<(Vec<u8>, &str)>,
) -> Result<(u16, Bytes), String> {
    let token = std::fs::read_to_string(&target.token_file)
        .map_err(|e| format!("cannot read the token {}: {e}", target.token_file.display()))?;
    let (host, port) = split_server(&target.server)
        .ok_or_else(|| format!("{}: not an https://host:port address", target.server))?;
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect {}: {e}", target.server))?;
    let name = ServerName::try_from(target.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", target.server_name))?;
    let tls = TlsConnector::from(Arc::new(tls_config(&target.ca, target.verify)?))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {}: {e}", target.server))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP with {}: {e}", target.server))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", format!("{host}:{port}"))
        .header("authorization", format!("Bearer {}", token.trim()))
        .header("accept", "application/json, text/plain")
        .header(
            "user-agent",
            concat!("nodehealth-recorder/", env!("CARGO_PKG_VERSION")),
        );
    let payload = match body {
        Some((bytes, content_type)) => {
            req = req.header("content-type", content_type);
            Bytes::from(bytes)
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{method} {}: {e}", target.server))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    conn.abort();
    if (200..300).contains(&status) {
        Ok((status, body))
    } else {
        Err(format!("{status}: {}", status_message(&body)))
    }
}

/// The `message` of a Kubernetes `Status` body, else the body's start.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_path_applies_as_the_recorder() {
        assert_eq!(
            report_path("vm"),
            "/apis/nodehealth.io/v1alpha1/noderecorderreports/vm?fieldManager=nodehealth-recorder&force=true"
        );
    }

    #[test]
    fn a_status_body_gives_its_message() {
        let body = br#"{"kind":"Status","message":"noderecorderreports.nodehealth.io \"guest\" is forbidden: ValidatingAdmissionPolicy denied"}"#;
        assert!(status_message(body).contains("is forbidden"));
        assert_eq!(status_message(b"plain"), "plain");
    }
}
