//! Run-queue wait of target processes' threads — the runqlat view of the [`crate::trace`] tracer,
//! kept under its first name for callers that only want run-queue wait.

pub use crate::trace::{TraceError, Tracer as RunqTracer};
