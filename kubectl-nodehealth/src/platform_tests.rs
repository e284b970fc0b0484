//! Platform detection over Node objects as each platform publishes them, read through the
//! collector's own Node -> NodeInfo conversion (so the kept labels and annotations are tested too).
//! Lives outside checks/: checks never import the collection modules.

use crate::checks::platform::*;
use crate::evidence::NodeInfo;

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

/// The kubelet's `/configz` as platforms configure it, read through the plugin's own parser:
/// what the certificate advice and the report's platform line are told from.
#[test]
fn the_kubelets_credentials_come_from_its_configz() {
    use crate::evidence::parse_configz;
    // EKS AL2023 (nodeadm's expected kubelet config in awslabs/amazon-eks-ami,
    // nodeadm/test/e2e/cases/kubelet-config/expected-kubelet-config.json, trimmed): the
    // serving certificate is bootstrapped, client rotation is not set (the kubelet
    // authenticates with IAM through an exec credential plugin).
    let eks = r#"{"kubeletconfig": {
        "authentication": {"x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
            "webhook": {"enabled": true, "cacheTTL": "2m0s"}, "anonymous": {"enabled": false}},
        "authorization": {"mode": "Webhook"},
        "serverTLSBootstrap": true,
        "providerID": "aws:///us-west-2f/i-1234567890abcdef0"}}"#;
    // kubeadm (the KubeletConfiguration `kubeadm init` writes: kubeadm docs, "Configuring each
    // kubelet in your cluster using kubeadm"): client rotation on, no serving bootstrap.
    let kubeadm = r#"{"kubeletconfig": {
        "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}},
        "authorization": {"mode": "Webhook"},
        "rotateCertificates": true}}"#;
    let eks = Platform::default().with_config(Some(&parse_configz(eks).unwrap()));
    let k = eks.kubelet.as_ref().unwrap();
    assert_eq!(
        (
            k.client_rotation,
            k.serving_bootstrap,
            k.webhook_authentication,
            k.anonymous
        ),
        (None, Some(true), Some(true), Some(false))
    );
    assert_eq!(k.authorization_mode.as_deref(), Some("Webhook"));
    assert!(
        k.describe().contains("serving certificate bootstrap on")
            && k.describe().contains("client certificate rotation not set"),
        "{}",
        k.describe()
    );
    let kubeadm_platform =
        || Platform::default().with_config(Some(&parse_configz(kubeadm).unwrap()));
    assert_eq!(
        kubeadm_platform().kubelet.unwrap().client_rotation,
        Some(true)
    );
    // No configz read: nothing claimed, unless the node agent read the kubelet's flags or
    // config file (configz set wins where both say).
    assert!(Platform::default().with_config(None).kubelet.is_none());
    let discovered = nodehealth_proto::node::Discovery {
        rotate_certificates: Some(false),
        ..Default::default()
    };
    let p = Platform::default()
        .with_config(None)
        .with_discovery(Some(&discovered));
    assert_eq!(p.kubelet.unwrap().client_rotation, Some(false));
    let p = kubeadm_platform().with_discovery(Some(&discovered));
    assert_eq!(p.kubelet.unwrap().client_rotation, Some(true));
}
