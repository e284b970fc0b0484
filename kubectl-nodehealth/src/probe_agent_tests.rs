//! The plugin against agents that misbehave, served in-process over loopback gRPC (the real
//! tonic stack; only the port-forward is left out): one that cannot prove it was started for the
//! run, one that goes silent after connecting or after its first message, one that sends a 5 MiB
//! section. Each ends with a clear message, the evidence received before it kept.

use std::{net::SocketAddr, time::Duration};

use nodehealth_proto::{
    node::{Clock, section},
    proof,
    v1::{
        Evidence, Progress, ProveReply, ProveRequest, RunEvent, RunRequest,
        agent_client::AgentClient,
        agent_server::{Agent, AgentServer},
        run_event,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::*;

#[derive(Clone, Copy, PartialEq)]
enum Misbehaviour {
    /// Proves itself, then streams nothing at all.
    Silent,
    /// Proves itself, sends one progress line, then nothing.
    SilentAfterFirst,
    /// Proves itself, sends a section, then one of 5 MiB.
    HugeSection,
    /// Answers the challenge with a wrong proof.
    WrongProof,
    /// Knows no Prove (an agent older than the challenge).
    NoProve,
}

struct FakeAgent {
    how: Misbehaviour,
    key: [u8; 32],
}

fn event(e: run_event::Event) -> Result<RunEvent, Status> {
    Ok(RunEvent { event: Some(e) })
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    type RunStream = ReceiverStream<Result<RunEvent, Status>>;

    async fn prove(&self, req: Request<ProveRequest>) -> Result<Response<ProveReply>, Status> {
        let nonce = req.into_inner().nonce;
        match self.how {
            Misbehaviour::NoProve => Err(Status::unimplemented("unknown method Prove")),
            Misbehaviour::WrongProof => Ok(Response::new(ProveReply { proof: vec![0; 32] })),
            _ => Ok(Response::new(ProveReply {
                proof: proof::proof(&self.key, &nonce).to_vec(),
            })),
        }
    }

    async fn run(&self, _req: Request<RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let how = self.how;
        tokio::spawn(async move {
            match how {
                Misbehaviour::SilentAfterFirst => {
                    let _ = tx
                        .send(event(run_event::Event::Progress(Progress {
                            step: "discovery".into(),
                            ..Default::default()
                        })))
                        .await;
                }
                Misbehaviour::HugeSection => {
                    let clock = serde_json::to_vec(&Clock::default()).unwrap();
                    for (name, json) in [
                        (section::CLOCK, clock),
                        (section::KERNEL_LOG, vec![b' '; 5 * 1024 * 1024]),
                    ] {
                        let _ = tx
                            .send(event(run_event::Event::Evidence(Evidence {
                                section: name.into(),
                                json,
                                ..Default::default()
                            })))
                            .await;
                    }
                }
                _ => {}
            }
            // Silent from here on, the stream held open until the test ends.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves a fake agent on a loopback port; returns a client to it, capped as the plugin caps it.
async fn fake_agent(how: Misbehaviour, id: &RunIdentity) -> AgentClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let agent = FakeAgent {
        how,
        key: proof::run_key(&id.token),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(agent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    AgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
        .max_decoding_message_size(AGENT_MAX_MESSAGE)
}

async fn stream_of(
    how: Misbehaviour,
    bounds: StreamBounds,
) -> (nodehealth_proto::node::NodeEvidence, Option<String>, bool) {
    let id = RunIdentity::new().unwrap();
    let mut agent = fake_agent(how, &id).await;
    prove(&mut agent, &id)
        .await
        .expect("this agent proves itself");
    let mut stream = agent.run(RunRequest::default()).await.unwrap().into_inner();
    let progress = crate::progress::Progress::hidden();
    read_stream(&mut stream, Duration::from_secs(1), bounds, &progress).await
}

#[tokio::test]
async fn an_agent_that_cannot_prove_itself_is_not_sent_the_token() {
    for how in [Misbehaviour::WrongProof, Misbehaviour::NoProve] {
        let id = RunIdentity::new().unwrap();
        let mut agent = fake_agent(how, &id).await;
        let e = prove(&mut agent, &id).await.unwrap_err().to_string();
        assert!(
            e.contains(NOT_PROVEN) && e.contains("the token was not sent"),
            "{e}"
        );
        assert!(e.contains(&id.port.to_string()), "names the port: {e}");
    }
}

#[tokio::test]
async fn an_agent_silent_after_connecting_is_cut_at_the_first_message_bound() {
    let bounds = StreamBounds {
        first: Duration::from_millis(300),
        total: Duration::from_secs(600),
    };
    let (node, error, finished) = stream_of(Misbehaviour::Silent, bounds).await;
    let error = error.unwrap();
    assert!(
        error.contains("sent nothing") && error.contains("hangs"),
        "{error}"
    );
    assert!(!finished && node.clock.is_none());
}

#[tokio::test]
async fn an_agent_silent_after_its_first_message_is_cut_at_the_total_bound() {
    let bounds = StreamBounds {
        first: Duration::from_secs(600),
        total: Duration::from_millis(500),
    };
    let (_, error, finished) = stream_of(Misbehaviour::SilentAfterFirst, bounds).await;
    let error = error.unwrap();
    assert!(error.contains("no final report"), "{error}");
    assert!(!finished);
}

#[tokio::test]
async fn a_section_over_the_cap_ends_the_stream_and_keeps_what_came_before() {
    let bounds = StreamBounds {
        first: Duration::from_secs(600),
        total: Duration::from_secs(600),
    };
    let (node, error, finished) = stream_of(Misbehaviour::HugeSection, bounds).await;
    let error = error.unwrap();
    assert!(
        error.contains("over the 4 MiB cap") && error.contains("sections before it are kept"),
        "{error}"
    );
    assert!(!finished);
    assert!(
        node.clock.is_some(),
        "the section before the huge one is kept"
    );
    assert!(node.kernel_log.is_none());
}
