//! The node agent of kubectl-nodehealth: measures what only the node can see and reports it to
//! the plugin, which judges.
//!
//! collect: [`discovery`] (the kubelet's real paths) → [`processes`], [`socket`], [`cri`],
//! [`certs`], [`apiserver`], [`clock`], [`kmsg`], [`pressure`] — orchestrated by [`probe`] —
//! and the eBPF tracer ([`trace`], [`runq`], [`btf`]). Served over gRPC by [`server`].
pub mod apiserver;
pub mod btf;
pub mod certs;
pub mod clock;
pub mod cri;
pub mod cri_socket;
pub mod discovery;
pub mod gosym;
pub mod host;
pub mod hpack;
pub mod http;
pub mod io_waits;
pub mod kmsg;
pub mod ksyms;
pub mod kubeapi;
pub mod log;
pub mod logs;
pub mod pressure;
pub mod probe;
pub mod processes;
pub mod procfs;
pub mod recorder;
pub mod runq;
pub mod server;
pub mod socket;
pub mod trace;
pub mod trace_session;
