//! The plugin <-> node agent API (`proto/nodehealth/v1/agent.proto`) and the node evidence it
//! carries ([`node`]).

pub mod logs;
pub mod metrics;
pub mod node;
pub mod pleg;
pub mod proof;
pub mod recorder;
pub mod redact;

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("nodehealth.v1");
}

/// Evidence payload schema this build reads and writes.
pub const SCHEMA: &str = "nodehealth/v1";
