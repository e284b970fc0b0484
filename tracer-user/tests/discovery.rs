//! Path discovery from a real process command line: a process whose comm is `kubelet` (a
//! symlink named kubelet to /bin/sh) started with kubelet flags, a relative `--config` resolved
//! against its working directory, flags overriding the config file. Also: reading the real
//! /dev/kmsg returns without blocking.
mod common;

use std::{
    fs,
    os::unix::fs::symlink,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::ChildGuard;
use nodehealth_proto::node::Source;
use tracer_user::{
    discovery::{self, Overrides},
    host::HostRoot,
    kmsg,
};

#[test]
fn kubelet_paths_come_from_its_command_line_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    fs::write(
        dir.path().join("config.yaml"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             containerRuntimeEndpoint: unix://{d}/run/containerd.sock\nstaticPodPath: {d}/manifests\n\
             healthzPort: 10299\nhealthzBindAddress: 127.0.0.1\ntlsCertFile: {d}/pki/serving.crt\n\
             rotateCertificates: true\nserverTLSBootstrap: true\n"
        ),
    )
    .unwrap();
    // A drop-in overriding the config file (kubelet --config-dir).
    fs::create_dir(dir.path().join("conf.d")).unwrap();
    fs::write(
        dir.path().join("conf.d/10-endpoint.conf"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: {d}/dropin-manifests\n"
        ),
    )
    .unwrap();
    fs::write(
        dir.path().join("conf.d/ignored.yaml"),
        "staticPodPath: /nope\n",
    )
    .unwrap();
    let kubelet = dir.path().join("kubelet");
    symlink("/bin/sh", &kubelet).unwrap();
    // argv: kubelet -c 'sleep 60; :' kubelet --config config.yaml (relative) ...
    let child = Command::new(&kubelet)
        .current_dir(dir.path())
        .args(["-c", "sleep 60; :", "kubelet", "--config", "config.yaml"])
        .arg(format!("--kubeconfig={d}/kubelet.conf"))
        .arg(format!("--bootstrap-kubeconfig={d}/bootstrap.conf"))
        .args(["--root-dir", &format!("{d}/data")])
        .args(["--cert-dir", &format!("{d}/pki")])
        .arg("--healthz-port=10301")
        .arg("--config-dir=conf.d")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let pid = guard.0.id();
    std::thread::sleep(Duration::from_millis(100));

    let host = HostRoot::new("/");
    // The spawned process is found as a kubelet by name...
    assert!(discovery::kubelet_candidates(&host).contains(&pid));
    // ...and (another kubelet may run on this machine) chosen explicitly here.
    let found = discovery::discover(
        &host,
        &Overrides {
            kubelet_pid: Some(pid),
            ..Default::default()
        },
    );
    assert_eq!(found.kubelet_pid, Some(pid));
    assert_eq!(
        found.config_file.as_deref(),
        Some(&*format!("{d}/config.yaml"))
    );
    assert_eq!(found.config_error, None);
    let v = |s: &Option<nodehealth_proto::node::Sourced<String>>| {
        s.as_ref().map(|s| (s.value.clone(), s.source))
    };
    assert_eq!(
        v(&found.root_dir),
        Some((format!("{d}/data"), Source::Flag))
    );
    assert_eq!(v(&found.cert_dir), Some((format!("{d}/pki"), Source::Flag)));
    assert_eq!(
        v(&found.kubeconfig),
        Some((format!("{d}/kubelet.conf"), Source::Flag))
    );
    assert_eq!(
        v(&found.bootstrap_kubeconfig),
        Some((format!("{d}/bootstrap.conf"), Source::Flag))
    );
    assert_eq!(
        v(&found.runtime_endpoint),
        Some((format!("unix://{d}/run/containerd.sock"), Source::Config))
    );
    assert_eq!(
        found.config_drop_ins,
        vec![format!("{d}/conf.d/10-endpoint.conf")]
    );
    assert_eq!(
        v(&found.static_pod_path),
        Some((format!("{d}/dropin-manifests"), Source::Config))
    );
    assert_eq!(
        v(&found.tls_cert_file),
        Some((format!("{d}/pki/serving.crt"), Source::Config))
    );
    // The flag wins over the config file, as in the kubelet.
    let port = found.healthz_port.as_ref().unwrap();
    assert_eq!((port.value, port.source), (10301, Source::Flag));
    assert_eq!(found.server_tls_bootstrap, Some(true));
    assert_eq!(found.rotate_certificates, Some(true));
    // Nothing outside the allow-list is copied.
    assert!(!found.flags.contains_key("c"));
}

#[test]
fn without_a_kubelet_defaults_are_labelled_as_such() {
    let root = tempfile::tempdir().unwrap();
    // An empty /proc under the host root: no processes at all.
    fs::create_dir_all(root.path().join("proc/self")).unwrap();
    fs::write(root.path().join("proc/self/stat"), "").unwrap();
    let host = HostRoot::new(root.path());
    assert_eq!(host.proc(), root.path().join("proc"));
    let found = discovery::discover(&host, &Overrides::default());
    assert_eq!(found.kubelet_pid, None);
    let r = found.root_dir.unwrap();
    assert_eq!(
        (r.value.as_str(), r.source),
        ("/var/lib/kubelet", Source::KubeletDefault)
    );
    assert!(found.notes.iter().any(|n| n.contains("no kubelet process")));
    // No well-known socket exists under the empty root.
    assert!(found.runtime_endpoint.is_none());

    // With one there, it is found and labelled as a guess, not the kubelet's setting.
    fs::create_dir_all(root.path().join("run/crio")).unwrap();
    let _l =
        std::os::unix::net::UnixListener::bind(root.path().join("run/crio/crio.sock")).unwrap();
    let found = discovery::discover(&host, &Overrides::default());
    let e = found.runtime_endpoint.unwrap();
    assert_eq!(
        (e.value.as_str(), e.source),
        ("unix:///run/crio/crio.sock", Source::WellKnown)
    );
}

#[test]
fn the_real_kernel_log_is_read_to_its_end_without_blocking() {
    let boot = tracer_user::host::now_unix_ms()
        - (tracer_user::procfs::uptime_seconds(&HostRoot::new("/")).unwrap() * 1000.0) as i64;
    let started = Instant::now();
    let log = kmsg::collect("/dev/kmsg".as_ref(), boot, &Default::default());
    let took = started.elapsed();
    eprintln!("read {} kmsg records in {took:?}", log.records_read);
    assert!(log.readable && log.error.is_none(), "{log:?}");
    assert!(log.records_read > 0);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let oldest = log.oldest_record_unix_ms.unwrap();
    assert!(oldest >= boot - 1_000 && oldest <= tracer_user::host::now_unix_ms());
}
