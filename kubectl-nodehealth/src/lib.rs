//! kubectl-nodehealth: collect -> evidence -> checks -> findings -> verdict -> render.
//!
//! The API-side diagnosis arrives with its own issue; this crate currently holds the CLI frame.

/// Exit codes scripts can rely on.
pub mod exit {
    /// The node is healthy.
    pub const HEALTHY: u8 = 0;
    /// Problems were found.
    pub const PROBLEMS: u8 = 1;
    /// The tool could not diagnose (bad input, API unreachable, ...).
    pub const UNDIAGNOSED: u8 = 2;
}
