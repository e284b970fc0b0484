//! Where the kubelet keeps things, from its own command line and config file — never assumed.
//!
//! Flags override the config file (the kubelet's own precedence, cmd/kubelet/app/server.go).
//! What neither sets falls back to the kubelet's compiled-in defaults and is labelled so
//! (`source: kubeletDefault`): `--root-dir` /var/lib/kubelet and `--cert-dir` <root-dir>/pki
//! (cmd/kubelet/app/options/options.go), `containerRuntimeEndpoint`
//! unix:///run/containerd/containerd.sock and healthz 127.0.0.1:10248
//! (pkg/kubelet/apis/config/v1beta1/defaults.go, defaults_linux.go).
use std::collections::BTreeMap;

use nodehealth_proto::node::{Discovery, Source, Sourced};
use serde::Deserialize;

use crate::{
    host::{HostRoot, host_join},
    procfs,
};

/// Flags copied into the evidence. An allow-list: nothing else from the command line is kept.
const FLAGS: &[&str] = &[
    "config",
    "config-dir",
    "kubeconfig",
    "bootstrap-kubeconfig",
    "cert-dir",
    "root-dir",
    "container-runtime-endpoint",
    "tls-cert-file",
    "healthz-port",
    "healthz-bind-address",
    "rotate-certificates",
    "pod-manifest-path",
    "hostname-override",
];

const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
const DEFAULT_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
const DEFAULT_HEALTHZ_PORT: u16 = 10248;
const DEFAULT_HEALTHZ_BIND: &str = "127.0.0.1";

/// Runtime sockets tried when no kubelet names one (FACTS.md: CRI sockets).
const WELL_KNOWN_RUNTIME_SOCKETS: &[&str] = &[
    "unix:///run/containerd/containerd.sock",
    "unix:///run/crio/crio.sock",
    "unix:///var/run/cri-dockerd.sock",
];

/// The subset of KubeletConfiguration (kubelet.config.k8s.io/v1beta1) the probe uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfigSubset {
    container_runtime_endpoint: Option<String>,
    static_pod_path: Option<String>,
    healthz_port: Option<i64>,
    healthz_bind_address: Option<String>,
    tls_cert_file: Option<String>,
    rotate_certificates: Option<bool>,
    #[serde(rename = "serverTLSBootstrap")]
    server_tls_bootstrap: Option<bool>,
}

impl KubeletConfigSubset {
    /// Fields set in `later` override ours.
    fn merge(&mut self, later: KubeletConfigSubset) {
        fn take<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        take(
            &mut self.container_runtime_endpoint,
            later.container_runtime_endpoint,
        );
        take(&mut self.static_pod_path, later.static_pod_path);
        take(&mut self.healthz_port, later.healthz_port);
        take(&mut self.healthz_bind_address, later.healthz_bind_address);
        take(&mut self.tls_cert_file, later.tls_cert_file);
        take(&mut self.rotate_certificates, later.rotate_certificates);
        take(&mut self.server_tls_bootstrap, later.server_tls_bootstrap);
    }
}

fn read_config(host: &HostRoot, path: &str) -> Result<KubeletConfigSubset, String> {
    let bytes = host
        .read_limited(path, 1 << 20)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_yaml_ng::from_slice(&bytes).map_err(|e| format!("cannot parse {path}: {e}"))
}

/// Explicit choices given to the agent.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub kubelet_pid: Option<u32>,
    pub runtime_endpoint: Option<String>,
}

/// Parses `--name=value` and `--name value` (or single-dash) flags, keeping the allow-listed ones.
/// The last occurrence wins, as with the kubelet's pflag parsing.
pub fn parse_flags(args: &[String]) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            continue;
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let next = args.get(i).filter(|n| !n.starts_with('-'));
                match next {
                    Some(v) => {
                        i += 1;
                        (body.to_string(), v.clone())
                    }
                    None => (body.to_string(), "true".to_string()),
                }
            }
        };
        if FLAGS.contains(&name.as_str()) {
            flags.insert(name, value);
        }
    }
    flags
}

/// Processes that look like a kubelet: comm `kubelet`, or argv0 / argv1 (hyperkube) `kubelet`.
pub fn kubelet_candidates(host: &HostRoot) -> Vec<u32> {
    let mut found = Vec::new();
    for pid in procfs::pids(host) {
        let Some(stat) = procfs::read_stat(host, pid) else {
            continue;
        };
        if stat.state == 'Z' {
            continue;
        }
        if stat.comm == "kubelet" {
            found.push(pid);
            continue;
        }
        if !(stat.comm.contains("kubelet") || stat.comm.contains("hyperkube")) {
            continue;
        }
        if let Some(args) = procfs::cmdline(host, pid) {
            let is_kubelet =
                |a: Option<&String>| a.is_some_and(|a| a.rsplit('/').next() == Some("kubelet"));
            if is_kubelet(args.first()) || is_kubelet(args.get(1)) {
                found.push(pid);
            }
        }
    }
    found
}

fn sourced<T>(value: T, source: Source) -> Option<Sourced<T>> {
    Some(Sourced { value, source })
}

/// Discovers the kubelet's settings. Works without a kubelet too (it may be down): then the
/// kubelet's defaults are reported as such and the runtime socket is looked for where runtimes
/// usually put it.
pub fn discover(host: &HostRoot, overrides: &Overrides) -> Discovery {
    let mut d = Discovery {
        kubelet_candidates: kubelet_candidates(host),
        ..Default::default()
    };
    d.kubelet_pid = overrides.kubelet_pid.or_else(|| {
        if d.kubelet_candidates.len() > 1 {
            d.notes.push(format!(
                "{} kubelet processes found: {:?}; using the oldest",
                d.kubelet_candidates.len(),
                d.kubelet_candidates
            ));
        }
        d.kubelet_candidates
            .iter()
            .copied()
            .min_by_key(|pid| procfs::read_stat(host, *pid).map(|s| s.start_ticks))
    });

    let mut config = KubeletConfigSubset::default();
    if let Some(pid) = d.kubelet_pid {
        match procfs::cmdline(host, pid) {
            Some(args) => d.flags = parse_flags(&args),
            None => d
                .notes
                .push(format!("cannot read /proc/{pid}/cmdline (process gone?)")),
        }
        // A relative path is relative to the kubelet's working directory.
        let cwd = procfs::readlink(host, pid, "cwd").unwrap_or_else(|| "/".into());
        if let Some(cfg) = d.flags.get("config").cloned() {
            let path = host_join(&cwd, &cfg);
            match read_config(host, &path) {
                Ok(c) => config = c,
                Err(e) => d.config_error = Some(e),
            }
            d.config_file = Some(path);
        }
        // Drop-ins (`--config-dir`, kubelet 1.30+): `*.conf` files in lexical order, each
        // overriding what came before (cmd/kubelet/app/server.go mergeKubeletConfigurations).
        if let Some(dir) = d.flags.get("config-dir").cloned() {
            let dir = host_join(&cwd, &dir);
            let mut files: Vec<String> = std::fs::read_dir(host.path(&dir))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.ends_with(".conf"))
                .collect();
            files.sort();
            for f in files {
                let path = host_join(&dir, &f);
                match read_config(host, &path) {
                    Ok(c) => config.merge(c),
                    Err(e) => d.notes.push(e),
                }
                d.config_drop_ins.push(path);
            }
        }
    } else {
        d.notes.push(
            "no kubelet process found: its paths are the kubelet's defaults, not discovered".into(),
        );
    }
    let flag = |name: &str| d.flags.get(name).cloned();

    d.root_dir = match flag("root-dir") {
        Some(v) => sourced(v, Source::Flag),
        None => sourced(DEFAULT_ROOT_DIR.into(), Source::KubeletDefault),
    };
    let root_dir = d
        .root_dir
        .as_ref()
        .map(|r| r.value.clone())
        .unwrap_or_default();
    d.cert_dir = match flag("cert-dir") {
        Some(v) => sourced(v, Source::Flag),
        None => sourced(format!("{root_dir}/pki"), Source::KubeletDefault),
    };
    d.kubeconfig = flag("kubeconfig").and_then(|v| sourced(v, Source::Flag));
    d.bootstrap_kubeconfig = flag("bootstrap-kubeconfig").and_then(|v| sourced(v, Source::Flag));
    d.runtime_endpoint = if let Some(v) = overrides.runtime_endpoint.clone() {
        sourced(v, Source::Override)
    } else if let Some(v) = flag("container-runtime-endpoint") {
        sourced(v, Source::Flag)
    } else if let Some(v) = config.container_runtime_endpoint.clone() {
        sourced(v, Source::Config)
    } else if d.kubelet_pid.is_some() {
        sourced(DEFAULT_RUNTIME_ENDPOINT.into(), Source::KubeletDefault)
    } else {
        WELL_KNOWN_RUNTIME_SOCKETS
            .iter()
            .find(|e| host.path(socket_path(e)).exists())
            .and_then(|e| sourced(e.to_string(), Source::WellKnown))
    };
    d.static_pod_path = match (flag("pod-manifest-path"), config.static_pod_path.clone()) {
        (Some(v), _) => sourced(v, Source::Flag),
        (None, Some(v)) => sourced(v, Source::Config),
        _ => None,
    };
    d.healthz_port = match (flag("healthz-port"), config.healthz_port) {
        (Some(v), _) => v.parse().ok().and_then(|p| sourced(p, Source::Flag)),
        (None, Some(p)) => u16::try_from(p)
            .ok()
            .and_then(|p| sourced(p, Source::Config)),
        _ => sourced(DEFAULT_HEALTHZ_PORT, Source::KubeletDefault),
    };
    d.healthz_bind_address = match (flag("healthz-bind-address"), config.healthz_bind_address) {
        (Some(v), _) => sourced(v, Source::Flag),
        (None, Some(v)) => sourced(v, Source::Config),
        _ => sourced(DEFAULT_HEALTHZ_BIND.into(), Source::KubeletDefault),
    };
    d.tls_cert_file = match (flag("tls-cert-file"), config.tls_cert_file) {
        (Some(v), _) => sourced(v, Source::Flag),
        (None, Some(v)) => sourced(v, Source::Config),
        _ => None,
    };
    d.rotate_certificates = flag("rotate-certificates")
        .map(|v| v == "true")
        .or(config.rotate_certificates);
    d.server_tls_bootstrap = config.server_tls_bootstrap;
    d
}

/// The file path of a `unix://` endpoint (a bare path is accepted as the kubelet does).
pub fn socket_path(endpoint: &str) -> &str {
    endpoint.strip_prefix("unix://").unwrap_or(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn flags_in_both_spellings_and_only_allow_listed() {
        let f = parse_flags(&args(&[
            "/usr/bin/kubelet",
            "--config=/etc/k/config.yaml",
            "--kubeconfig",
            "/etc/k/kubelet.conf",
            "--rotate-certificates",
            "--v=4",
            "--token",
            "s3cret",
            "-root-dir",
            "/data/kubelet",
        ]));
        assert_eq!(f["config"], "/etc/k/config.yaml");
        assert_eq!(f["kubeconfig"], "/etc/k/kubelet.conf");
        assert_eq!(f["rotate-certificates"], "true");
        assert_eq!(f["root-dir"], "/data/kubelet");
        assert!(!f.contains_key("v"));
        assert!(!f.values().any(|v| v == "s3cret"));
    }

    #[test]
    fn config_subset_reads_kubelet_configuration_yaml() {
        let c: KubeletConfigSubset = serde_yaml_ng::from_str(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             containerRuntimeEndpoint: unix:///run/x.sock\nstaticPodPath: /etc/m\n\
             healthzPort: 10299\nserverTLSBootstrap: true\nauthentication:\n  x509: {}\n",
        )
        .unwrap();
        assert_eq!(
            c.container_runtime_endpoint.as_deref(),
            Some("unix:///run/x.sock")
        );
        assert_eq!(c.healthz_port, Some(10299));
        assert_eq!(c.server_tls_bootstrap, Some(true));
    }
}
