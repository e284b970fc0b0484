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

#[cfg(test)]
mod tests {
    use super::*;

    /// The NodeInfo the plugin collects from a Node object (the collector's own conversion).
    fn info(node: serde_json::Value) -> NodeInfo {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(node).unwrap();
        crate::collect::node_info(&node)
    }

    // Each fixture is a Node as the platform publishes it, trimmed to the fields read; the
    // shapes are from the platform's documentation.

    /// EKS managed node group: labels from the EKS user guide ("Managed node groups": the
    /// eks.amazonaws.com/nodegroup, capacityType labels), the AL2023 AMI's osImage and the
    /// EKS kubelet's version suffix (eks AMI release notes), providerID aws:///<zone>/<instance>.
    fn eks() -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "ip-192-168-12-34.us-west-2.compute.internal",
                "labels": { "eks.amazonaws.com/nodegroup": "ng-1", "eks.amazonaws.com/capacityType": "ON_DEMAND",
                            "kubernetes.io/os": "linux" } },
            "spec": { "providerID": "aws:///us-west-2a/i-0123456789abcdef0" },
            "status": { "nodeInfo": { "kubeletVersion": "v1.31.2-eks-7f9249a", "osImage": "Amazon Linux 2023.6.20241121",
                "containerRuntimeVersion": "containerd://1.7.23", "kernelVersion": "6.1.115-126.197.amzn2023.x86_64",
                "architecture": "amd64", "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": "" } }
        })
    }

    /// GKE: the cloud.google.com/gke-nodepool and gke-os-distribution labels (GKE docs, "About
    /// node labels"), Container-Optimized OS, the -gke. version suffix, providerID
    /// gce://<project>/<zone>/<instance>.
    fn gke() -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "gke-c1-default-pool-1a2b3c4d-xyz1",
                "labels": { "cloud.google.com/gke-nodepool": "default-pool", "cloud.google.com/gke-os-distribution": "cos" } },
            "spec": { "providerID": "gce://my-project/us-central1-a/gke-c1-default-pool-1a2b3c4d-xyz1" },
            "status": { "nodeInfo": { "kubeletVersion": "v1.30.5-gke.1014001", "osImage": "Container-Optimized OS from Google",
                "containerRuntimeVersion": "containerd://1.7.22", "kernelVersion": "6.1.100+", "architecture": "amd64",
                "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": "" } }
        })
    }

    /// AKS: the kubernetes.azure.com/agentpool and cluster labels (AKS docs, "Use labels in an
    /// AKS cluster"), providerID of a scale-set VM, Ubuntu node image.
    fn aks() -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "aks-nodepool1-12345678-vmss000000",
                "labels": { "kubernetes.azure.com/agentpool": "nodepool1", "kubernetes.azure.com/cluster": "MC_rg_c1_westeurope" } },
            "spec": { "providerID": "azure:///subscriptions/0000/resourceGroups/mc_rg_c1_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-12345678-vmss/virtualMachines/0" },
            "status": { "nodeInfo": { "kubeletVersion": "v1.30.6", "osImage": "Ubuntu 22.04.5 LTS",
                "containerRuntimeVersion": "containerd://1.7.23-1", "kernelVersion": "5.15.0-1074-azure", "architecture": "amd64",
                "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": "" } }
        })
    }

    /// OpenShift 4: RHCOS (node.openshift.io/os_id label), the machine annotation of the
    /// Machine API, CRI-O (OpenShift docs, "Working with nodes").
    fn openshift() -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "worker-0.c1.example.com",
                "labels": { "node.openshift.io/os_id": "rhcos", "node-role.kubernetes.io/worker": "" },
                "annotations": { "machine.openshift.io/machine": "openshift-machine-api/c1-worker-0" } },
            "spec": {},
            "status": { "nodeInfo": { "kubeletVersion": "v1.29.10+67d3387", "osImage": "Red Hat Enterprise Linux CoreOS 416.94.202411201433-0",
                "containerRuntimeVersion": "cri-o://1.29.10-3.rhaos4.16.git1ad9d12.el9", "kernelVersion": "5.14.0-427.44.1.el9_4.x86_64",
                "architecture": "amd64", "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": "" } }
        })
    }

    /// kubeadm: `kubeadm join` annotates the Node with its CRI socket (kubeadm docs,
    /// "Implementation details": kubeadm.alpha.kubernetes.io/cri-socket).
    fn kubeadm() -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "worker-1",
                "annotations": { "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock" } },
            "spec": {},
            "status": { "nodeInfo": { "kubeletVersion": "v1.35.4", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.6.20", "kernelVersion": "6.1.0-28-amd64", "architecture": "amd64",
                "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": "" } }
        })
    }

    #[test]
    fn each_platform_is_told_from_what_its_nodes_publish() {
        for (node, kind, said) in [
            (eks(), PlatformKind::Eks, "eks.amazonaws.com/"),
            (gke(), PlatformKind::Gke, "cloud.google.com/gke-nodepool"),
            (aks(), PlatformKind::Aks, "kubernetes.azure.com/"),
            (openshift(), PlatformKind::OpenShift, "openshift.io/"),
            (
                kubeadm(),
                PlatformKind::Kubeadm,
                "kubeadm.alpha.kubernetes.io/cri-socket",
            ),
        ] {
            let p = detect(&info(node));
            assert_eq!(p.kind, kind, "{p:?}");
            assert!(p.from.contains(said), "{p:?}");
        }
        let p = detect(&info(eks()));
        assert!(p.from.contains("providerID aws://"), "{p:?}");
    }

    #[test]
    fn a_node_that_names_no_platform_is_unknown_with_the_assumptions_stated() {
        // The local cluster's node: nothing platform-specific on it.
        let mut node = kubeadm();
        node["metadata"]["annotations"] = serde_json::json!({});
        let p = detect(&info(node));
        assert_eq!(p.kind, PlatformKind::Unknown);
        assert!(p.from.contains("assumes"), "{p:?}");
    }

    #[test]
    fn the_version_suffix_alone_tells_eks_and_gke() {
        let mut node = eks();
        node["metadata"]["labels"] = serde_json::json!({});
        assert_eq!(detect(&info(node)).kind, PlatformKind::Eks);
        let mut node = gke();
        node["metadata"]["labels"] = serde_json::json!({});
        assert_eq!(detect(&info(node)).kind, PlatformKind::Gke);
    }

    #[test]
    fn only_platform_keys_are_kept_from_the_node() {
        let i = info(openshift());
        assert!(i.labels.contains_key("node.openshift.io/os_id"));
        assert!(!i.labels.contains_key("node-role.kubernetes.io/worker"));
        assert!(i.annotations.contains_key("machine.openshift.io/machine"));
    }
}
