//! The agent's gRPC service (`nodehealth.v1.Agent`) on the node's loopback.
//!
//! The plugin reaches it through the API server's pod port-forward. The agent knows only the
//! SHA-256 of the per-run token (the pod spec is readable by anyone who can read pods); a request
//! whose token does not hash to it gets PermissionDenied. One run per agent: it exits when that
//! run's stream ends or closes, or when its deadline passes — whichever comes first.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nodehealth_proto::v1::{
    Evidence, Progress, ProveReply, ProveRequest, Report, RunEvent, RunRequest, SectionError,
    agent_server::{Agent, AgentServer},
    run_event,
};
use sha2::{Digest, Sha256};
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use crate::{
    host::now_unix_ms,
    log,
    probe::{self, Event, ProbeConfig},
};

/// How the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run's stream ended (report sent) or the client went away.
    RunFinished,
    /// The deadline passed first.
    Deadline,
}

/// Parses a hex SHA-256 (64 hex digits).
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    nodehealth_proto::proof::parse_hex32(hex)
}

/// Hex SHA-256 of a token (what the plugin puts in the pod spec).
pub fn token_sha256_hex(token: &str) -> String {
    nodehealth_proto::proof::token_sha256_hex(token)
}

/// Compares in constant time so the hash cannot be probed byte by byte.
fn token_matches(token: &str, expected: &[u8; 32]) -> bool {
    let got = Sha256::digest(token.as_bytes());
    got.iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

struct Service {
    token_sha256: [u8; 32],
    run_key: Option<[u8; 32]>,
    defaults: ProbeConfig,
    deadline: Instant,
    busy: AtomicBool,
    done: Arc<Notify>,
}

fn map_event(e: Event) -> RunEvent {
    let event = match e {
        Event::Progress {
            step,
            elapsed_ms,
            total_ms,
            detail,
        } => run_event::Event::Progress(Progress {
            step,
            elapsed_ms,
            total_ms,
            detail,
        }),
        Event::Evidence {
            section,
            json,
            collected_at_unix_ms,
        } => run_event::Event::Evidence(Evidence {
            section,
            schema: nodehealth_proto::SCHEMA.to_string(),
            json,
            collected_at_unix_ms,
        }),
        Event::Failure(f) => run_event::Event::Progress(Progress {
            step: format!("failed:{}", f.section),
            detail: f.message,
            ..Default::default()
        }),
    };
    RunEvent { event: Some(event) }
}

#[tonic::async_trait]
impl Agent for Service {
    type RunStream = ReceiverStream<Result<RunEvent, Status>>;

    async fn prove(&self, req: Request<ProveRequest>) -> Result<Response<ProveReply>, Status> {
        let Some(key) = &self.run_key else {
            return Err(Status::failed_precondition(format!(
                "started without a run key ({})",
                nodehealth_proto::proof::RUN_KEY_ENV
            )));
        };
        let nonce = req.into_inner().nonce;
        if !nodehealth_proto::proof::NONCE_BYTES.contains(&nonce.len()) {
            return Err(Status::invalid_argument(format!(
                "a nonce of {} bytes (16 to 64 expected)",
                nonce.len()
            )));
        }
        Ok(Response::new(ProveReply {
            proof: nodehealth_proto::proof::proof(key, &nonce).to_vec(),
        }))
    }

    async fn run(&self, req: Request<RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let req = req.into_inner();
        if !token_matches(&req.token, &self.token_sha256) {
            log::line("refused a run: wrong token");
            return Err(Status::permission_denied("wrong token"));
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(Status::failed_precondition("a run is already in progress"));
        }
        let mut cfg = self.defaults.clone();
        if req.window_ms > 0 {
            cfg.window = Duration::from_millis(req.window_ms);
        }
        cfg.trace = req.trace;
        if req.cri_timeout_ms > 0 {
            cfg.timeout = Duration::from_millis(req.cri_timeout_ms);
        }
        if req.log_since_ms > 0 {
            cfg.log_since = Duration::from_millis(req.log_since_ms);
        }
        // Fit the run before the deadline: window + one timeout + margin for the sections.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let budget = left.saturating_sub(cfg.timeout + Duration::from_secs(2));
        if cfg.window > budget {
            cfg.window = budget.max(Duration::from_millis(100));
        }
        log::line(&format!(
            "run: window {:?}, timeout {:?}",
            cfg.window, cfg.timeout
        ));

        let (tx, rx) = mpsc::channel(64);
        let (ptx, mut prx) = mpsc::channel(64);
        let done = self.done.clone();
        tokio::spawn(async move {
            let mut probe = tokio::spawn(probe::run(cfg, Some(ptx)));
            let mut client_gone = false;
            let evidence = loop {
                tokio::select! {
                    e = prx.recv() => match e {
                        Some(e) => {
                            if tx.send(Ok(map_event(e))).await.is_err() {
                                client_gone = true;
                                probe.abort();
                                break None;
                            }
                        }
                        // The probe dropped its sender: it is finishing.
                        None => break (&mut probe).await.ok(),
                    },
                    _ = tx.closed() => {
                        client_gone = true;
                        probe.abort();
                        break None;
                    }
                }
            };
            if let Some(ev) = evidence {
                let report = Report {
                    finished_at_unix_ms: now_unix_ms(),
                    errors: ev
                        .errors
                        .iter()
                        .map(|f| SectionError {
                            section: f.section.clone(),
                            message: f.message.clone(),
                        })
                        .collect(),
                    agent_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                let _ = tx
                    .send(Ok(RunEvent {
                        event: Some(run_event::Event::Report(report)),
                    }))
                    .await;
            }
            log::line(if client_gone {
                "run: client went away"
            } else {
                "run: finished"
            });
            drop(tx);
            done.notify_one();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Loopback port; 0 picks a free one (written to `ready_file`).
    pub port: u16,
    pub token_sha256: [u8; 32],
    /// The run key (`Prove`); without it the agent cannot prove itself and the plugin refuses to
    /// send it the token.
    pub run_key: Option<[u8; 32]>,
    /// Time until the agent exits whatever happens.
    pub deadline: Duration,
    pub defaults: ProbeConfig,
    /// Written with the bound port once the server listens.
    pub ready_file: Option<PathBuf>,
}

/// Serves one run on 127.0.0.1 until it finishes or the deadline passes.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<Exit> {
    let deadline = Instant::now() + opts.deadline;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], opts.port))).await?;
    let port = listener.local_addr()?.port();
    if let Some(f) = &opts.ready_file {
        std::fs::write(f, format!("{port}\n"))?;
    }
    log::line(&format!("listening on 127.0.0.1:{port}"));
    let done = Arc::new(Notify::new());
    let svc = Service {
        token_sha256: opts.token_sha256,
        run_key: opts.run_key,
        defaults: opts.defaults,
        deadline,
        busy: AtomicBool::new(false),
        done: done.clone(),
    };
    let exit = Arc::new(std::sync::Mutex::new(Exit::Deadline));
    let exit2 = exit.clone();
    let shutdown = async move {
        tokio::select! {
            _ = done.notified() => {
                *exit2.lock().unwrap_or_else(|e| e.into_inner()) = Exit::RunFinished;
            }
            _ = tokio::time::sleep_until(deadline) => {
                log::line("deadline passed: exiting");
            }
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(AgentServer::new(svc))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
    // Graceful shutdown waits for open streams; never past the deadline (+ a moment to flush).
    match tokio::time::timeout_at(deadline + Duration::from_secs(1), server).await {
        Ok(r) => r?,
        Err(_) => log::line("shutdown did not finish before the deadline"),
    }
    let e = *exit.lock().unwrap_or_else(|e| e.into_inner());
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_round_trip() {
        let hex = token_sha256_hex("per-run-secret");
        let h = parse_sha256(&hex).unwrap();
        assert!(token_matches("per-run-secret", &h));
        assert!(!token_matches("per-run-secreT", &h));
        assert!(parse_sha256("abc").is_err());
    }
}
