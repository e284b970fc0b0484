//! Real pod sandboxes and containers in a private containerd (a static pause image built and
//! imported by the test): the CRI probe counts them, the shim of each sandbox is found and
//! matched to the CRI's ids; when the sandbox's processes die while the runtime is frozen, the
//! shim is reported with no live container under it. Everything is stopped, removed, unmounted and its cgroups deleted
//! on the way out. Needs root, containerd + runc, gcc with static libc.
mod common;

use std::{collections::HashMap, process::Command, time::Duration};

use common::{CgroupParent, Containerd};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use nodehealth_proto::node::CriState;
use tracer_user::{
    cri,
    discovery::Overrides,
    probe::{self, ProbeConfig},
};

fn sandbox_config(cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "probe-test".into(),
            uid: "00000000-0000-0000-0000-000000000001".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        labels: HashMap::new(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                // Host network: no CNI is involved (and no pod traffic exists).
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Pod as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe_config(c: &Containerd) -> ProbeConfig {
    ProbeConfig {
        window: Duration::from_millis(1_000),
        timeout: Duration::from_secs(5),
        cri_interval: Duration::from_millis(500),
        overrides: Overrides {
            runtime_endpoint: Some(c.endpoint()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_containers_and_their_shims_are_counted_and_matched() {
    let cg = CgroupParent::new("sandboxes");
    let c = Containerd::start();
    c.import_pause_image();

    let channel = cri::connect(c.socket.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let mut rt = RuntimeServiceClient::new(channel);
    let config = sandbox_config(&cg.0);
    let sandbox = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()))
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "sleeper".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: common::PAUSE_IMAGE.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", c.log()))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap();

    let ev = probe::run(probe_config(&c), None).await;
    let cri = ev.cri.as_ref().unwrap();
    assert_eq!(cri.state, CriState::Responding);
    let sb = cri.sandboxes.as_ref().unwrap();
    assert_eq!((sb.total, sb.ready), (1, 1), "{cri:#?}");
    let ct = cri.containers.as_ref().unwrap();
    assert_eq!((ct.total, ct.running), (1, 1), "{cri:#?}");
    for op in &cri.operations[1..] {
        eprintln!(
            "{:>15} with 1 sandbox + 1 container: p50 {:.2} ms",
            op.name,
            op.p50_ms.unwrap()
        );
    }
    let dir = c.dir.path().display().to_string();
    let procs = ev.processes.as_ref().unwrap();
    let shim = procs
        .shims
        .iter()
        .find(|s| s.address.as_deref().is_some_and(|a| a.starts_with(&dir)))
        .unwrap_or_else(|| panic!("our shim: {:#?}", procs.shims));
    // containerd 1.6 runs one shim per sandbox, keyed by the sandbox id.
    assert_eq!(shim.id.as_deref(), Some(sandbox.as_str()));
    assert_eq!(shim.namespace.as_deref(), Some("k8s.io"));
    assert_eq!(shim.known_to_cri, Some(true));
    assert!(shim.live_children >= 2, "pause + container: {shim:?}");
    let shim_pid = shim.pid;

    // With the runtime frozen, kill every process under the shim: containerd cannot reap the
    // task, so the shim stays with no container left under it — and the CRI cannot say.
    c.freeze();
    let children: Vec<String> =
        std::fs::read_to_string(format!("/proc/{shim_pid}/task/{shim_pid}/children"))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect();
    assert!(!children.is_empty());
    for pid in &children {
        // Killing the pod's pid-namespace init may already have taken the others with it.
        let _ = Command::new("kill")
            .args(["-9", pid])
            .stderr(std::process::Stdio::null())
            .status();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cfg = probe_config(&c);
    cfg.timeout = Duration::from_secs(1);
    let ev = probe::run(cfg, None).await;
    assert_eq!(ev.cri.as_ref().unwrap().state, CriState::Hung);
    let procs = ev.processes.as_ref().unwrap();
    let shim = procs.shims.iter().find(|s| s.pid == shim_pid).unwrap();
    eprintln!("orphaned shim: {shim:?}");
    assert_eq!(shim.live_children, 0, "{shim:?}");
    assert_eq!(shim.known_to_cri, None, "the CRI did not answer");
    c.thaw();

    // Thawed, containerd reaps the task: the sandbox is no longer ready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ev = probe::run(probe_config(&c), None).await;
    let sb = ev.cri.as_ref().unwrap().sandboxes.clone().unwrap();
    eprintln!("after the kill: {sb:?}");
    assert_eq!((sb.total, sb.ready), (1, 0));

    // Clean up through the CRI; the guards handle whatever is left.
    let _ = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await;
    let _ = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await;
}
