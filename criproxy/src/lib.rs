//! The harness's CRI proxy for the `runtime-slow-list` fault: forwards every gRPC call to
//! containerd unchanged — except ListPodSandbox and ListContainers, the two calls of a PLEG
//! relist, which it holds for the delay in its control file first. With a delay of 0 it is a
//! plain passthrough.
//!
//! It is not in the kubelet's path by default: `up` points the kubelet at containerd's socket.
//! The fault starts the proxy and restarts the kubelet onto its socket (fault.rs), so only then
//! is the proxy the process listening on the kubelet's runtime socket; `heal` undoes both.
//!
//! It forwards HTTP/2 requests as they are (headers, body frames, trailers), keyed only on the
//! `:path`; it never decodes a CRI message. Each kubelet connection gets its own connection to
//! containerd, so streams keep the ordering and flow control they would have had.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};

/// `xtask criproxy` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The unix socket the kubelet connects to (while runtime-slow-list is applied).
    #[arg(long)]
    pub listen: PathBuf,
    /// containerd's CRI socket.
    #[arg(long)]
    pub upstream: PathBuf,
    /// A file holding the current delay in milliseconds (absent or 0: no delay). Read per call.
    #[arg(long)]
    pub control: PathBuf,
}

/// The gRPC methods a PLEG relist calls (pkg/kubelet/pleg/generic.go, relist →
/// GetPods → ListPodSandbox + ListContainers).
pub const DELAYED_METHODS: &[&str] = &[
    "/runtime.v1.RuntimeService/ListPodSandbox",
    "/runtime.v1.RuntimeService/ListContainers",
];

/// Writes the delay the proxy applies to relist calls (0 = passthrough).
pub fn set_delay(control: &Path, delay: Duration) -> Result<()> {
    fs::write(control, delay.as_millis().to_string())
        .with_context(|| format!("writing the CRI proxy's delay to {control:?}"))
}

/// The delay the proxy currently applies (0 when the control file is absent).
pub fn current_delay(control: &Path) -> Duration {
    fs::read_to_string(control)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or_default()
}

pub fn run(args: Args) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(Arc::new(args)))
}

async fn serve(args: Arc<Args>) -> Result<()> {
    let _ = fs::remove_file(&args.listen);
    let listener = UnixListener::bind(&args.listen)
        .with_context(|| format!("listening on {:?}", args.listen))?;
    eprintln!(
        "criproxy: {:?} -> {:?} (delay from {:?})",
        args.listen, args.upstream, args.control
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let args = args.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &args).await {
                eprintln!("criproxy: connection ended: {e:#}");
            }
        });
    }
}

async fn connection(downstream: UnixStream, args: &Args) -> Result<()> {
    let upstream = UnixStream::connect(&args.upstream)
        .await
        .with_context(|| format!("connecting to {:?}", args.upstream))?;
    let (sender, upstream_conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(upstream))
            .await
            .context("HTTP/2 handshake with containerd")?;
    tokio::spawn(async move {
        if let Err(e) = upstream_conn.await {
            eprintln!("criproxy: upstream connection: {e}");
        }
    });
    let control = args.control.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let mut sender = sender.clone();
        let control = control.clone();
        async move {
            if DELAYED_METHODS.contains(&req.uri().path()) {
                let delay = current_delay(&control);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            sender.ready().await?;
            sender.send_request(req).await
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(downstream), service)
        .await
        .context("serving the kubelet's connection")?;
    Ok(())
}
