//! Which platform runs the node — EKS, GKE, AKS, OpenShift, kubeadm — from what the Node object
//! publishes about itself: `spec.providerID`, labels, annotations, `osImage`, `kubeletVersion`.
//! The advice is written for it: who approves a kubelet's certificate, the API server's usual
//! port, whether a broken node is repaired or replaced, which CLI exists.
//!
//! Only keys under [`KEY_PREFIXES`] are kept from the Node's labels and annotations (the rest are
//! the cluster's own business and may be many).

use serde::{Deserialize, Serialize};

use crate::evidence::NodeInfo;

/// Label and annotation prefixes that say something about the platform.
pub const KEY_PREFIXES: &[&str] = &[
    "eks.amazonaws.com/",
    "alpha.eksctl.io/",
    "cloud.google.com/",
    "kubernetes.azure.com/",
    "node.openshift.io/",
    "machine.openshift.io/",
    "machineconfiguration.openshift.io/",
    "kubeadm.alpha.kubernetes.io/",
];

/// Whether a label or annotation key is kept for platform detection.
pub fn keep_key(key: &str) -> bool {
    KEY_PREFIXES.iter().any(|p| key.starts_with(p))
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
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            kind: PlatformKind::Unknown,
            from: UNKNOWN_ASSUMES.into(),
        }
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
            .cloned()
    };
    let mut said = Vec::new();
    let kind = if let Some(k) = key("node.openshift.io/")
        .or_else(|| key("machine.openshift.io/"))
        .or_else(|| key("machineconfiguration.openshift.io/"))
    {
        said.push(format!("the {k} key"));
        if os.contains("CoreOS") {
            said.push(format!("osImage {os:?}"));
        }
        PlatformKind::OpenShift
    } else if let Some(k) = key("eks.amazonaws.com/")
        .or_else(|| key("alpha.eksctl.io/"))
        .or_else(|| kubelet.contains("-eks-").then(String::new))
    {
        if k.is_empty() {
            said.push(format!("kubeletVersion {kubelet}"));
        } else {
            said.push(format!("the label {k}"));
        }
        PlatformKind::Eks
    } else if let Some(k) =
        key("cloud.google.com/gke-").or_else(|| kubelet.contains("-gke.").then(String::new))
    {
        if k.is_empty() {
            said.push(format!("kubeletVersion {kubelet}"));
        } else {
            said.push(format!("the label {k}"));
        }
        PlatformKind::Gke
    } else if let Some(k) = key("kubernetes.azure.com/") {
        said.push(format!("the label {k}"));
        PlatformKind::Aks
    } else if let Some(k) = key("kubeadm.alpha.kubernetes.io/") {
        said.push(format!("the annotation {k}"));
        PlatformKind::Kubeadm
    } else {
        return Platform::default();
    };
    let cloud = match kind {
        PlatformKind::Eks => "aws://",
        PlatformKind::Gke => "gce://",
        PlatformKind::Aks => "azure://",
        _ => "",
    };
    if !cloud.is_empty() && provider.starts_with(cloud) {
        said.push(format!("providerID {cloud}…"));
    }
    Platform {
        kind,
        from: said.join(", "),
    }
}

/// What the advice says differently per platform.
pub struct Advice {
    /// Who approves (or replaces) a kubelet's client certificate, and how.
    pub certificate: &'static str,
    /// The API server as the node usually reaches it, when the agent did not read it.
    pub api_server: &'static str,
    /// What to do when the node cannot be brought back in place.
    pub last_resort: &'static str,
}

/// The platform's advice.
pub fn advice(kind: PlatformKind) -> Advice {
    match kind {
        PlatformKind::Eks => Advice {
            certificate: "on EKS the kubelet authenticates to the API server with the node's IAM role (a token from `aws eks get-token`), not with a client certificate CSR: check that the node's instance role is still mapped (the cluster's access entries or the aws-auth ConfigMap) and the node's clock (skew breaks token validation); only the serving certificate goes through CSRs, approved by EKS",
            api_server: "https://<cluster endpoint>:443",
            last_resort: "a managed node group replaces a node rather than repairing it: `kubectl drain` it, then terminate the instance and let the group replace it",
        },
        PlatformKind::Gke => Advice {
            certificate: "on GKE the control plane approves kubelet certificates (you cannot run its approver): check the node's clock and that node auto-repair is on; the node pool recreates a node whose kubelet cannot authenticate",
            api_server: "https://<cluster endpoint>:443",
            last_resort: "GKE repairs nodes by recreating them: with node auto-repair on it will; otherwise `kubectl drain` the node and delete its instance so the node pool recreates it",
        },
        PlatformKind::Aks => Advice {
            certificate: "on AKS the control plane approves kubelet certificates: check the node's clock; if the cluster's certificates were rotated (`az aks rotate-certs`) the nodes need the new ones, which AKS applies by reimaging them",
            api_server: "https://<cluster FQDN>:443",
            last_resort: "AKS node auto-repair reboots, reimages, then redeploys an unhealthy node; by hand: `kubectl drain` it and reimage the node pool instance",
        },
        PlatformKind::OpenShift => Advice {
            certificate: "on OpenShift the machine-approver (namespace openshift-cluster-machine-approver) approves kubelet CSRs: `oc get csr`, then `oc adm certificate approve <csr>` for this node's pending ones, and check the machine-approver's log (`oc logs -n openshift-cluster-machine-approver deploy/machine-approver -c machine-approver-controller`)",
            api_server: "https://api.<cluster domain>:6443",
            last_resort: "a Machine-backed node is replaced by deleting its Machine (`oc delete machine -n openshift-machine-api <machine>`) after draining it",
        },
        PlatformKind::Kubeadm | PlatformKind::Unknown => Advice {
            certificate: "kube-controller-manager auto-approves kubelet client CSRs (its csrapproving controller): make sure it runs",
            api_server: "https://<control-plane endpoint>:6443",
            last_resort: "drain the node and rejoin it (`kubeadm reset` then `kubeadm join` on a kubeadm cluster)",
        },
    }
}

// The tests read Node objects through the collector's own conversion: `src/platform_tests.rs`.
