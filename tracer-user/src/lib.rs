//! The node agent of kubectl-nodehealth: measures what only the node can see and reports it to the
//! plugin, which judges. This first cut holds the kernel tracer's loader.
pub mod btf;
pub mod runq;
