//! Which platform runs the node — EKS, GKE, AKS, OpenShift, kubeadm — from what the Node object
//! publishes about itself: `spec.providerID`, labels, annotations, `osImage`, `kubeletVersion`.
//! The advice is written for it: who approves a kubelet's certificate, the API server's usual
//! port, whether a broken node is repaired or replaced, which CLI exists.
//!
//! Only the keys [`SIGNS`] look for are kept from the Node's labels and annotations (the rest are
//! the cluster's own business and may be many).

use serde::{Deserialize, Serialize};

use crate::evidence::{KubeletConfig, NodeInfo};

/// Whether a label or annotation key is kept for platform detection: the keys of [`SIGNS`].
pub fn keep_key(key: &str) -> bool {
    SIGNS
        .iter()
        .flat_map(|s| s.keys)
        .any(|p| key.starts_with(p))
}

/// A platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    /// Amazon EKS.
    Eks,
    /// Google GKE.
    Gke,
    /// Azure AKS.
    Aks,
    /// Red Hat OpenShift (4.x).
    OpenShift,
    /// A kubeadm-built cluster.
    Kubeadm,
    /// None of the above could be told.
    Unknown,
}

impl PlatformKind {
    /// Its name in texts.
    pub fn name(self) -> &'static str {
        match self {
            PlatformKind::Eks => "EKS",
            PlatformKind::Gke => "GKE",
            PlatformKind::Aks => "AKS",
            PlatformKind::OpenShift => "OpenShift",
            PlatformKind::Kubeadm => "kubeadm",
            PlatformKind::Unknown => "unknown",
        }
    }

    /// A managed node pool replaces broken nodes rather than having them repaired by hand.
    pub fn replaces_nodes(self) -> bool {
        matches!(
            self,
            PlatformKind::Eks | PlatformKind::Gke | PlatformKind::Aks
        )
    }
}

/// The platform and what it was told from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    /// Which.
    pub kind: PlatformKind,
    /// What said so (or, when unknown, what the advice assumes).
    pub from: String,
    /// How this kubelet gets and checks credentials, from its `/configz` (absent when configz
    /// could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletCredentials>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            kind: PlatformKind::Unknown,
            from: UNKNOWN_ASSUMES.into(),
            kubelet: None,
        }
    }
}

impl Platform {
    /// With what the node agent read of the kubelet's flags and config file, where `/configz`
    /// could not say (a kubelet whose own certificate is refused cannot authorize the API server's
    /// request for its configz — the very case where rotation decides the fix).
    pub fn with_discovery(mut self, discovery: Option<&nodehealth_proto::node::Discovery>) -> Self {
        let Some(d) = discovery else {
            return self;
        };
        let k = self.kubelet.get_or_insert_with(KubeletCredentials::default);
        k.client_rotation = k.client_rotation.or(d.rotate_certificates);
        k.serving_bootstrap = k.serving_bootstrap.or(d.server_tls_bootstrap);
        self
    }

    /// With what the kubelet's `/configz` says of its credentials.
    pub fn with_config(mut self, config: Option<&KubeletConfig>) -> Self {
        self.kubelet = config.map(|c| KubeletCredentials {
            client_rotation: c.rotate_certificates,
            serving_bootstrap: c.server_tls_bootstrap,
            webhook_authentication: c.authentication_webhook,
            anonymous: c.anonymous_auth,
            authorization_mode: c.authorization_mode.clone(),
        });
        self
    }
}

/// How the kubelet gets its certificates and checks its callers: what decides the certificate
/// advice (a rotating kubelet files CSRs to approve; a static one needs a certificate issued by
/// hand) and what the API server's requests to it must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletCredentials {
    /// `rotateCertificates`: the client certificate is renewed through CSRs.
    pub client_rotation: Option<bool>,
    /// `serverTLSBootstrap`: the serving certificate comes from CSRs (which kube-controller-manager
    /// does not approve by itself).
    pub serving_bootstrap: Option<bool>,
    /// `authentication.webhook.enabled`.
    pub webhook_authentication: Option<bool>,
    /// `authentication.anonymous.enabled`.
    pub anonymous: Option<bool>,
    /// `authorization.mode`.
    pub authorization_mode: Option<String>,
}

impl KubeletCredentials {
    /// One line for the report.
    pub fn describe(&self) -> String {
        let on = |v: Option<bool>| match v {
            Some(true) => "on",
            Some(false) => "off",
            None => "not set",
        };
        format!(
            "client certificate rotation {}, serving certificate bootstrap {}, webhook authentication {}, anonymous requests {}, authorization {}",
            on(self.client_rotation),
            on(self.serving_bootstrap),
            on(self.webhook_authentication),
            on(self.anonymous),
            self.authorization_mode.as_deref().unwrap_or("not set")
        )
    }
}

const UNKNOWN_ASSUMES: &str = "nothing on the Node names a platform: the advice assumes a kubeadm-style node (the kubelet under systemd, kube-controller-manager approving kubelet CSRs, the API server on 6443)";

/// The platform of the node described by `node`.
pub fn detect(node: &NodeInfo) -> Platform {
    let provider = node.provider_id.as_deref().unwrap_or("");
    let os = node.os_image.as_deref().unwrap_or("");
    let kubelet = node.kubelet_version.as_deref().unwrap_or("");
    let key = |prefix: &str| {
        node.labels
            .keys()
            .chain(node.annotations.keys())
            .find(|k| k.starts_with(prefix))
    };
    for sign in SIGNS {
        let mut said: Vec<String> = sign
            .keys
            .iter()
            .find_map(|p| key(p))
            .map(|k| format!("the key {k}"))
            .into_iter()
            .collect();
        if let Some(suffix) = sign.kubelet_suffix
            && said.is_empty()
            && kubelet.contains(suffix)
        {
            said.push(format!("kubeletVersion {kubelet}"));
        }
        if said.is_empty() {
            continue;
        }
        if let Some(cloud) = sign.provider
            && provider.starts_with(cloud)
        {
            said.push(format!("providerID {cloud}…"));
        }
        if sign.kind == PlatformKind::OpenShift && os.contains("CoreOS") {
            said.push(format!("osImage {os:?}"));
        }
        return Platform {
            kind: sign.kind,
            from: said.join(", "),
            kubelet: None,
        };
    }
    Platform::default()
}

/// What tells a platform from the Node, in the order they are tried.
struct Sign {
    kind: PlatformKind,
    /// Label or annotation key prefixes, any of which names it.
    keys: &'static [&'static str],
    /// A suffix of the kubelet's version its builds carry.
    kubelet_suffix: Option<&'static str>,
    /// Its cloud provider's providerID scheme (supporting evidence only).
    provider: Option<&'static str>,
}

const SIGNS: &[Sign] = &[
    Sign {
        kind: PlatformKind::OpenShift,
        keys: &[
            "node.openshift.io/",
            "machine.openshift.io/",
            "machineconfiguration.openshift.io/",
        ],
        kubelet_suffix: None,
        provider: None,
    },
    Sign {
        kind: PlatformKind::Eks,
        keys: &["eks.amazonaws.com/", "alpha.eksctl.io/"],
        kubelet_suffix: Some("-eks-"),
        provider: Some("aws://"),
    },
    Sign {
        kind: PlatformKind::Gke,
        keys: &["cloud.google.com/gke-"],
        kubelet_suffix: Some("-gke."),
        provider: Some("gce://"),
    },
    Sign {
        kind: PlatformKind::Aks,
        keys: &["kubernetes.azure.com/"],
        kubelet_suffix: None,
        provider: Some("azure://"),
    },
    Sign {
        kind: PlatformKind::Kubeadm,
        keys: &["kubeadm.alpha.kubernetes.io/"],
        kubelet_suffix: None,
        provider: None,
    },
];

/// What the advice says differently per platform.
pub struct Advice {
    /// Who approves (or replaces) a kubelet's client certificate, and how.
    pub certificate: &'static str,
    /// The API server as the node usually reaches it, when the agent did not read it.
    pub api_server: &'static str,
    /// What to do when the node cannot be brought back in place.
    pub last_resort: &'static str,
    /// How to get a shell on the node for the commands the fixes name.
    pub shell: &'static str,
    /// Where kubeReserved/systemReserved are raised on this platform.
    pub reserves: &'static str,
}

/// The platform's advice.
pub fn advice(kind: PlatformKind) -> Advice {
    match kind {
        PlatformKind::Eks => Advice {
            certificate: "on EKS the kubelet authenticates to the API server with the node's IAM role (a token from `aws eks get-token`), not with a client certificate CSR: check that the node's instance role is still mapped (the cluster's access entries or the aws-auth ConfigMap) and the node's clock (skew breaks token validation); only the serving certificate goes through CSRs, approved by EKS",
            api_server: "https://<cluster endpoint>:443",
            last_resort: "a managed node group replaces a node rather than repairing it: `kubectl drain` it, then terminate the instance and let the group replace it",
            shell: "a shell on the node through SSM Session Manager (`aws ssm start-session --target <instance id>`) or SSH",
            reserves: "raise kubeReserved/systemReserved in the node group's launch template (AL2023: the kubelet section of nodeadm's NodeConfig; AL2: bootstrap.sh --kubelet-extra-args), applied to new nodes as the group rolls",
        },
        PlatformKind::Gke => Advice {
            certificate: "on GKE the control plane approves kubelet certificates (you cannot run its approver): check the node's clock and that node auto-repair is on; the node pool recreates a node whose kubelet cannot authenticate",
            api_server: "https://<cluster endpoint>:443",
            last_resort: "GKE repairs nodes by recreating them: with node auto-repair on it will; otherwise `kubectl drain` the node and delete its instance so the node pool recreates it",
            shell: "a shell on the node with `gcloud compute ssh <node>`",
            reserves: "GKE sizes the kubelet's reserves by machine type: move the workload to a node pool of a larger machine type (or lower its density); reserves are not edited per node",
        },
        PlatformKind::Aks => Advice {
            certificate: "on AKS the control plane approves kubelet certificates: check the node's clock; if the cluster's certificates were rotated (`az aks rotate-certs`) the nodes need the new ones, which AKS applies by reimaging them",
            api_server: "https://<cluster FQDN>:443",
            last_resort: "AKS node auto-repair restores an unhealthy node by itself (reimage, then redeploy); by hand: `kubectl drain` it and reimage the node pool instance",
            shell: "a shell on the node with `kubectl debug node/<node> -it --image=<a shell image>`, then `chroot /host`",
            reserves: "AKS sizes the kubelet's reserves by VM size: a node pool of a larger VM size, or a custom kubelet configuration for a new node pool (`az aks nodepool add --kubelet-config`)",
        },
        PlatformKind::OpenShift => Advice {
            certificate: "on OpenShift the machine-approver (namespace openshift-cluster-machine-approver) approves kubelet CSRs: `oc get csr`, then `oc adm certificate approve <csr>` for this node's pending ones, and check the machine-approver's log (`oc logs -n openshift-cluster-machine-approver deploy/machine-approver -c machine-approver-controller`)",
            api_server: "https://api.<cluster domain>:6443",
            last_resort: "a Machine-backed node is replaced by deleting its Machine (`oc delete machine -n openshift-machine-api <machine>`) after draining it",
            shell: "a shell on the node with `oc debug node/<node>`, then `chroot /host`",
            reserves: "raise systemReserved (or set autoSizingReserved: true) in a KubeletConfig resource for the node's machine config pool; the Machine Config Operator rolls it out node by node",
        },
        PlatformKind::Kubeadm | PlatformKind::Unknown => Advice {
            certificate: "kube-controller-manager auto-approves kubelet client CSRs (its csrapproving controller): make sure it runs",
            api_server: "https://<control-plane endpoint>:6443",
            last_resort: "drain the node and rejoin it (`kubeadm reset` then `kubeadm join` on a kubeadm cluster)",
            shell: "a shell on the node (SSH)",
            reserves: "raise kubeReserved/systemReserved in the kubelet's config file (/var/lib/kubelet/config.yaml; on kubeadm also the kubelet-config ConfigMap so joins keep it); the kubelet reads it when it next starts, so change it on a drained node",
        },
    }
}

// The tests read Node objects through the collector's own conversion: `src/platform_tests.rs`.
