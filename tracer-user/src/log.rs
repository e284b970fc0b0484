//! Diagnostics that can never block the agent.
//!
//! In the probe pod stdout/stderr are pipes read by the container runtime's shim; when the
//! runtime is frozen (one of the faults the agent diagnoses) nobody drains them and a write
//! blocks once the pipe is full. Lines go to a bounded queue instead, written to stderr by one
//! thread; when that thread is stuck the queue fills and further lines are dropped.
use std::{
    io::Write,
    sync::{
        OnceLock,
        mpsc::{SyncSender, sync_channel},
    },
};

static QUEUE: OnceLock<Option<SyncSender<String>>> = OnceLock::new();

/// Starts the writer thread (idempotent). Without it, `line` discards everything.
pub fn init() {
    QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(256);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                for line in rx {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "tracer-user: {line}");
                }
            })
            .ok()
            .map(|_| tx)
    });
}

/// Queues one line for stderr; never blocks.
pub fn line(msg: &str) {
    if let Some(Some(tx)) = QUEUE.get() {
        let _ = tx.try_send(msg.to_string());
    }
}
