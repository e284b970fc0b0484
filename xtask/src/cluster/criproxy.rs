//! The CRI proxy of the `runtime-slow-list` fault lives in its own crate (`criproxy/`), so the
//! guest node can run it as a static binary; the host's cluster runs it as `xtask criproxy`.
pub use nodehealth_criproxy::*;
