//! The crate's error type: failures that stop a diagnosis (exit code 2). Failures of single
//! collection steps are not errors: they are evidence.

use std::path::PathBuf;

/// Why the plugin could not diagnose.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or parsed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No usable client configuration (context missing, no kubeconfig found, ...).
    #[error(
        "cannot load the client configuration{context}: {message}. Fix: point --kubeconfig or \
         KUBECONFIG at a valid kubeconfig (`kubectl config view` shows what kubectl reads), or \
         pick a context that exists (--context)"
    )]
    ClientConfig {
        /// ` for context X` when a context was asked for.
        context: String,
        /// What went wrong.
        message: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the API client for {server}: {source}")]
    Client {
        /// API server URL.
        server: String,
        /// Underlying error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer (down, wrong address, TLS failure).
    #[error(
        "cannot reach the API server at {server}: {message}. Check the address and the network \
         path (`kubectl --request-timeout=5s get --raw /readyz`), or give a longer --timeout"
    )]
    ApiUnreachable {
        /// API server URL.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// Our own credentials were rejected.
    #[error("the API server at {server} rejected our credentials (401): {message}")]
    Unauthorized {
        /// API server URL.
        server: String,
        /// Message from the server.
        message: String,
    },
    /// The node does not exist.
    #[error("node {node:?} not found{}", suggestions_text(.suggestions))]
    UnknownNode {
        /// The name asked for.
        node: String,
        /// Close names.
        suggestions: Vec<String>,
    },
    /// A bad command-line value.
    #[error("{0}")]
    Usage(String),
    /// Ctrl-C or SIGTERM: the probe pod was deleted, no report.
    #[error("interrupted")]
    Interrupted,
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Output(#[source] std::io::Error),
    /// Serializing the report failed.
    #[error("cannot serialize the report as {format}: {message}")]
    Serialize {
        /// json or yaml.
        format: &'static str,
        /// What went wrong.
        message: String,
    },
}

fn suggestions_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", suggestions.join(", "))
    }
}
