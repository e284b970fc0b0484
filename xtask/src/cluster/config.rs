//! Configuration files of the local cluster's components.

use std::path::Path;

use super::{Layout, Settings};

/// A kubeconfig that authenticates with a client certificate from files.
pub fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: nodehealth-local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: nodehealth-local
  context:
    cluster: nodehealth-local
    user: {user}
current-context: nodehealth-local
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// containerd 1.6 configuration (version 2): private root, state and sockets under the cluster
/// directory; the CRI plugin with the locally built pause image and the loopback CNI config.
pub fn containerd(l: &Layout) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # No CAP_SYS_RESOURCE on this machine: negative oom_score_adj values fail.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  # Per-registry hosts.toml files (read at each pull): the end-to-end tier's loopback registry.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_d}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = l.containerd_root().display(),
        state = l.containerd_state().display(),
        sock = l.containerd_socket().display(),
        pause = super::PAUSE_IMAGE,
        runc_root = l.dir.join("containerd/runc").display(),
        cni = l.cni_conf_dir().display(),
        certs_d = l.containerd_certs_d().display(),
        opt = l.dir.join("containerd/opt").display(),
    )
}

/// A CNI config so the runtime reports NetworkReady. Only hostNetwork pods run on this cluster; a
/// pod on the pod network would get a loopback interface and nothing else, so no traffic can leave.
pub const CNI_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "nodehealth-loopback",
  "plugins": [{ "type": "loopback" }]
}
"#;

/// A kubeconfig whose server is reached at an address its certificate does not name: `name` is the
/// one TLS checks instead (the kubeconfig's `tls-server-name`).
pub fn with_tls_server_name(kubeconfig: &str, name: &str) -> String {
    kubeconfig.replacen(
        "    certificate-authority:",
        &format!("    tls-server-name: {name}\n    certificate-authority:"),
        1,
    )
}

/// What differs between the nodes' kubelets: addresses, files, runtime socket, cgroups.
pub struct KubeletNode {
    pub node_ip: String,
    pub ca: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub runtime_socket: String,
    /// The cgroup settings, as KubeletConfiguration lines.
    pub cgroups: String,
    pub pod_logs: String,
}

/// The host's node: the harness's directories (deliberately not the defaults, so the agent must
/// discover them as it must on real distributions), the cgroupfs driver on cgroup v1.
pub fn host_kubelet(l: &Layout) -> KubeletNode {
    KubeletNode {
        node_ip: super::host::NODE_IP.to_string(),
        ca: l.pki("ca.crt").display().to_string(),
        serving_cert: l.pki("kubelet-serving.crt").display().to_string(),
        serving_key: l.pki("kubelet-serving.key").display().to_string(),
        runtime_socket: l.containerd_socket().display().to_string(),
        cgroups: format!(
            r#"cgroupDriver: cgroupfs
cgroupRoot: /{}
# cgroup v1 is all this machine has; kubelet 1.35 refuses it unless told otherwise.
failCgroupV1: false
# No CAP_SYS_RESOURCE here: negative OOM score adjustments fail.
oomScoreAdj: 0"#,
            super::KUBE_CGROUP_ROOT
        ),
        pod_logs: l.dir.join("pod-logs").display().to_string(),
    }
}

/// The guest node: a distribution's layout (Debian's containerd socket, /var/log/pods), the
/// systemd cgroup driver on cgroup v2.
pub fn guest_kubelet(node_ip: &str) -> KubeletNode {
    KubeletNode {
        node_ip: node_ip.to_string(),
        ca: "/etc/kubernetes/pki/ca.crt".into(),
        serving_cert: "/etc/kubernetes/pki/kubelet-serving.crt".into(),
        serving_key: "/etc/kubernetes/pki/kubelet-serving.key".into(),
        runtime_socket: "/run/containerd/containerd.sock".into(),
        cgroups: "cgroupDriver: systemd".into(),
        pod_logs: "/var/log/pods".into(),
    }
}

/// The host node's KubeletConfiguration; `fault::move_kubelet` rewrites its runtime endpoint line.
pub fn kubelet(l: &Layout, s: &Settings) -> String {
    kubelet_config(&host_kubelet(l), s)
}

/// A node's KubeletConfiguration.
pub fn kubelet_config(n: &KubeletNode, s: &Settings) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {serving_cert}
tlsPrivateKeyFile: {serving_key}
rotateCertificates: true
serverTLSBootstrap: false
# containerd itself, as on a stock node. Only the runtime-slow-list fault points this at the
# harness's CRI proxy (criproxy.rs) and restarts the kubelet; heal points it back.
containerRuntimeEndpoint: unix://{sock}
runtimeRequestTimeout: {runtime_timeout}
{cgroups}
failSwapOn: false
podLogsDir: {pod_logs}
# The harness imports its own images as nodehealth.local/* (no registry serves that name), and
# the registry test pulls the same agent image by digest from loopback. Kubernetes 1.35 then
# keeps a pull record for that image ID and, by default, re-verifies every other name of it
# with a pull — which fails for the imported name. Never verify the imported names.
imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages
preloadedImagesVerificationAllowlist:
  - nodehealth.local/*
# Debian's containerd does not pin the sandbox image: never garbage-collect it.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The node shares the host's disk with everything else on it (build trees, caches, other
# clones): a percentage of a big, busy disk puts a healthy test node under DiskPressure and
# evicts its pods. Absolute floors keep eviction for a disk that is really full.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1Gi"
  imagefs.available: "1Gi"
  nodefs.inodesFree: "1%"
enableSystemLogQuery: true
enableProfilingHandler: true
enableDebuggingHandlers: true
featureGates:
  NodeLogQuery: true
resolvConf: /etc/resolv.conf
maxPods: 32
"#,
        node_ip = n.node_ip,
        ca = n.ca,
        serving_cert = n.serving_cert,
        serving_key = n.serving_key,
        sock = n.runtime_socket,
        runtime_timeout = s.runtime_request_timeout,
        cgroups = n.cgroups,
        pod_logs = n.pod_logs,
    )
}
