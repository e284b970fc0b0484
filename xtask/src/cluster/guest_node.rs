//! The local cluster's second node, `guest` (issue 17): the Debian guest of `cargo xtask guest`
//! (a Debian cloud kernel, systemd as PID 1, cgroup v2 only, Debian's containerd and runc) joined
//! to the host's API server by the same Go-built kubelet, run as a systemd unit with
//! `cgroupDriver: systemd` and its log in the journal.
//!
//! Network, all inside this machine and inside 198.18.0.0/15:
//! - a tap link `nhguest0` the harness creates (198.18.4.1/30 on the host side) and deletes; the
//!   guest's eth1 is 198.18.4.2, the kubelet's node IP. The API server dials the kubelet there.
//! - the kubelet reaches the API server through `guest-lb`, a forwarder (lb.rs) listening on
//!   198.18.4.1:6443 in front of the loopback-only API server; the `api-partition` fault on the
//!   guest cuts it as `apiserver-lb` is cut for the host's node.
//! - the harness's SSH channel: QEMU user networking (eth0) with a 127.0.0.1 host forward.
//!
//! QEMU runs as the cluster component `guest` under `xtask supervise`, so `down` stops it with
//! the rest; its qcow2 overlay and payload live under `target/cluster/guest/` and go with `down`.
//! What the node needs from the host (the kubelet, its certificates and configuration, the
//! locally built images) is handed over as a tar archive on a second, read-only virtio disk.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{API_PORT, Layout, Settings, api, config, host, pki, supervise};
use crate::{
    guest::{self, Kernel},
    sh::{self, info, step},
};

/// The guest's node name.
pub const NODE: &str = "guest";
/// The host's end of the guest's cluster link.
pub const TAP: &str = "nhguest0";
pub const HOST_IP: &str = "198.18.4.1";
/// The guest's eth1 (see guest/cluster.network): the kubelet's node IP.
pub const GUEST_IP: &str = "198.18.4.2";
/// Where `guest-lb` listens on HOST_IP for the guest's kubelet.
pub const LB_PORT: u16 = 6443;

fn dir(l: &Layout) -> PathBuf {
    l.dir.join("guest")
}

/// While this file exists the guest's path to the API server is cut (`guest-lb`).
pub fn cut_file(l: &Layout) -> PathBuf {
    l.run_dir().join("guest-api-partition.cut")
}

/// The port on 127.0.0.1 that QEMU forwards to the guest's sshd.
fn ssh_port_file(l: &Layout) -> PathBuf {
    dir(l).join("ssh-port")
}

/// The cached image the guest booted from (its SSH keys are there).
fn image_file(l: &Layout) -> PathBuf {
    dir(l).join("image")
}

/// The guest node is part of the running cluster (its QEMU's supervisor is alive).
pub fn running(l: &Layout) -> bool {
    super::component_alive(l, "guest")
}

/// The kernel line of the running guest (from its image directory `<kernel>-<key>`).
pub fn running_kernel(l: &Layout) -> Option<String> {
    let dir = fs::read_to_string(image_file(l)).ok()?;
    let name = Path::new(dir.trim()).file_name()?.to_str()?.to_string();
    name.split_once('-').map(|(k, _)| k.to_string())
}

/// The harness's SSH channel into the running guest node.
pub fn ssh(l: &Layout) -> Result<guest::Ssh> {
    let port: u16 = fs::read_to_string(ssh_port_file(l))
        .context("no guest node in this cluster (`cargo xtask cluster up --guest-node`)")?
        .trim()
        .parse()?;
    let image = guest::Image {
        dir: PathBuf::from(fs::read_to_string(image_file(l))?.trim()),
        release: String::new(),
    };
    Ok(guest::Ssh::new(&image, port))
}

/// Imports a locally built agent image archive into the running guest's containerd, and puts
/// the static agent beside it (/usr/local/bin/tracer-user).
pub fn import_agent(l: &Layout, archive: &Path) -> Result<()> {
    let ssh = ssh(l)?;
    let send = |remote: &str, file: &Path| -> Result<()> {
        let out = ssh
            .command(remote)
            .stdin(fs::File::open(file)?)
            .output()
            .with_context(|| format!("ssh: {remote}"))?;
        if !out.status.success() {
            bail!(
                "{remote} ({}): {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    send("ctr -n k8s.io images import - >/dev/null", archive)?;
    let agent = crate::agent_image::static_agent_binary();
    if agent.exists() {
        send(
            "cat > /usr/local/bin/tracer-user.new && chmod 755 /usr/local/bin/tracer-user.new \
             && mv /usr/local/bin/tracer-user.new /usr/local/bin/tracer-user",
            &agent,
        )?;
    }
    Ok(())
}

/// The guest node's certificates, issued by the cluster's CA when missing.
fn issue_pki(l: &Layout) -> Result<()> {
    if l.pki("guest-kubelet-client.pem").exists() {
        return Ok(());
    }
    let ca = pki::Ca::load(&l.pki("ca.crt"), &l.pki("ca.key"))?;
    let serving = ca.issue(&pki::Leaf::server(
        NODE,
        &[NODE],
        &[GUEST_IP.parse().expect("guest IP")],
    ))?;
    fs::write(l.pki("guest-kubelet-serving.crt"), &serving.cert_pem)?;
    pki::write_private(&l.pki("guest-kubelet-serving.key"), &serving.key_pem)?;
    let client = ca.issue(&pki::Leaf::client(
        &format!("system:node:{NODE}"),
        &["system:nodes"],
    ))?;
    pki::write_private(
        &l.pki("guest-kubelet-client.pem"),
        &format!("{}{}", client.cert_pem, client.key_pem),
    )
}

fn create_tap() -> Result<()> {
    if Path::new("/sys/class/net").join(TAP).exists() {
        return Ok(());
    }
    host::ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    host::ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", TAP])?;
    host::ip(&["link", "set", TAP, "up"])
}

/// Deletes the tap link if it exists.
pub fn remove_tap() -> Vec<String> {
    host::remove_link(TAP)
}

/// containerd on the guest: Debian's paths, runc with the systemd cgroup driver (cgroup v2),
/// the locally built pause image, the loopback CNI config.
const CONTAINERD_CONFIG: &str = r#"version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
"#;

const KUBELET_CONFIG: &str = "/etc/kubernetes/kubelet.yaml";
const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.kubeconfig";
/// The kubelet's client certificate (and key) as rotation keeps it: a link to the current one.
const KUBELET_CLIENT_CERT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";

/// The kubelet unit's `ExecStart=` with this configuration and kubeconfig.
fn kubelet_exec_start(config: &str, kubeconfig: &str) -> String {
    format!(
        r#"ExecStart=/usr/local/bin/kubelet \
  --config={config} \
  --kubeconfig={kubeconfig} \
  --cert-dir=/var/lib/kubelet/pki \
  --hostname-override={NODE} \
  --node-ip={GUEST_IP} \
  --v=2"#
    )
}

/// The kubelet's unit, as a distribution's kubelet package writes it.
fn kubelet_unit() -> String {
    format!(
        r#"[Unit]
Description=kubelet: the Kubernetes node agent
Wants=containerd.service
After=containerd.service network-online.target

[Service]
{}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"#,
        kubelet_exec_start(KUBELET_CONFIG, KUBELET_KUBECONFIG)
    )
}

/// The CRI proxy of the guest's runtime-slow-list fault (criproxy/), started by the fault.
const CRIPROXY_BIN: &str = "/usr/local/bin/nodehealth-criproxy";
const CRIPROXY_DIR: &str = "/run/nodehealth-criproxy";
const CRIPROXY_SOCKET: &str = "/run/nodehealth-criproxy/cri.sock";
const CRIPROXY_CONTROL: &str = "/run/nodehealth-criproxy/delay-ms";

fn criproxy_unit() -> String {
    format!(
        r#"[Unit]
Description=nodehealth test harness: the CRI proxy of the runtime-slow-list fault
After=containerd.service

[Service]
ExecStart={CRIPROXY_BIN} --listen={CRIPROXY_SOCKET} \
  --upstream=/run/containerd/containerd.sock --control={CRIPROXY_CONTROL}
RuntimeDirectory=nodehealth-criproxy
"#
    )
}

/// Run in the guest once the payload is unpacked: containerd with the harness's configuration
/// and images, then the kubelet. Idempotent (a guest restarted by its supervisor keeps its disk).
const SETUP: &str = r#"set -eu
systemctl daemon-reload
systemctl restart containerd
for i in 1 2 3 4 5 6 7 8 9 10; do ctr version >/dev/null 2>&1 && break; sleep 1; done
for image in /opt/nodehealth/images/*.tar; do
  ctr -n k8s.io images import "$image" >/dev/null
done
systemctl enable --now kubelet.service
"#;

/// Lays out what the guest needs under `root` (paths as in the guest) and packs it into `tar`.
fn payload(
    l: &Layout,
    settings: &Settings,
    bin: &Path,
    images: &[PathBuf],
    criproxy: &Path,
    tar: &Path,
) -> Result<()> {
    let root = dir(l).join("payload");
    let _ = fs::remove_dir_all(&root);
    let put = |path: &str, contents: &str, mode: u32| -> Result<()> {
        let p = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().expect("a parent"))?;
        fs::write(&p, contents)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let pem = |name: &str| fs::read_to_string(l.pki(name));
    put("/etc/kubernetes/pki/ca.crt", &pem("ca.crt")?, 0o644)?;
    put(
        "/etc/kubernetes/pki/kubelet-serving.crt",
        &pem("guest-kubelet-serving.crt")?,
        0o644,
    )?;
    put(
        "/etc/kubernetes/pki/kubelet-serving.key",
        &pem("guest-kubelet-serving.key")?,
        0o600,
    )?;
    put(
        KUBELET_CLIENT_CERT,
        &pem("guest-kubelet-client.pem")?,
        0o600,
    )?;
    let client = Path::new(KUBELET_CLIENT_CERT);
    put(
        KUBELET_KUBECONFIG,
        &config::with_tls_server_name(
            &config::kubeconfig(
                &format!("https://{HOST_IP}:{LB_PORT}"),
                Path::new("/etc/kubernetes/pki/ca.crt"),
                client,
                client,
                &format!("system:node:{NODE}"),
            ),
            // The API server's certificate names localhost and 127.0.0.1, not the tap address.
            "localhost",
        ),
        0o600,
    )?;
    put(
        KUBELET_CONFIG,
        &config::kubelet_config(&config::guest_kubelet(GUEST_IP), settings),
        0o644,
    )?;
    put("/etc/containerd/config.toml", CONTAINERD_CONFIG, 0o644)?;
    put(
        "/etc/cni/net.d/10-nodehealth-loopback.conflist",
        config::CNI_CONFLIST,
        0o644,
    )?;
    put(
        "/etc/systemd/system/kubelet.service",
        &kubelet_unit(),
        0o644,
    )?;
    put(
        "/etc/systemd/system/nodehealth-criproxy.service",
        &criproxy_unit(),
        0o644,
    )?;
    put("/opt/nodehealth/setup.sh", SETUP, 0o755)?;
    let link_or_copy = |from: &Path, to: &Path| -> Result<()> {
        fs::create_dir_all(to.parent().expect("a parent"))?;
        if fs::hard_link(from, to).is_err() {
            fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(())
    };
    // The multi-call Kubernetes binary answers to the name it is run as.
    link_or_copy(
        &fs::canonicalize(bin.join("kubelet"))?,
        &root.join("usr/local/bin/kubelet"),
    )?;
    link_or_copy(criproxy, &root.join(CRIPROXY_BIN.trim_start_matches('/')))?;
    // The agent, for runs over SSH where no pod can start (`tracer-user probe --host-root /`).
    let agent = crate::agent_image::static_agent_binary();
    if agent.exists() {
        link_or_copy(&agent, &root.join("usr/local/bin/tracer-user"))?;
    }
    for image in images {
        let name = image.file_name().context("image file name")?;
        link_or_copy(image, &root.join("opt/nodehealth/images").join(name))?;
    }
    sh::run(
        "tar (the guest's payload)",
        Command::new("tar")
            .args(["-c", "--owner=0", "--group=0", "-f"])
            .arg(tar)
            .arg("-C")
            .arg(&root)
            .arg("."),
    )?;
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// Boots the guest and joins it to the running cluster as node `guest`; returns once it is
/// Ready with a renewing lease.
pub fn up(
    l: &Layout,
    settings: &Settings,
    bin: &Path,
    images: &[PathBuf],
    kernel: Kernel,
) -> Result<()> {
    let start = Instant::now();
    let image = guest::image(kernel)?;
    step(format!(
        "guest node `{NODE}` (kernel {}, systemd, cgroup v2) on {TAP} {HOST_IP}/30",
        image.release
    ));
    let d = dir(l);
    fs::create_dir_all(&d)?;
    issue_pki(l)?;
    create_tap().with_context(|| format!("creating the tap link {TAP}"))?;
    super::start(
        l,
        "guest-lb",
        &[
            std::env::current_exe()?.display().to_string(),
            "lb".into(),
            format!("--listen={HOST_IP}:{LB_PORT}"),
            format!("--target=127.0.0.1:{API_PORT}"),
            format!("--cut-file={}", cut_file(l).display()),
        ],
    )?;

    let tar = d.join("payload.tar");
    let criproxy = crate::agent_image::static_build("nodehealth-criproxy")?;
    payload(l, settings, bin, images, &criproxy, &tar)?;
    let disk = d.join("disk.qcow2");
    let _ = fs::remove_file(&disk);
    guest::overlay(&image, &disk)?;
    let port = guest::free_port()?;
    fs::write(ssh_port_file(l), port.to_string())?;
    fs::write(image_file(l), image.dir.display().to_string())?;
    let argv = guest::qemu_argv(
        &image,
        &disk,
        port,
        &[
            "-drive".into(),
            format!("file={},if=virtio,format=raw,readonly=on", tar.display()),
            "-netdev".into(),
            format!("tap,id=n1,ifname={TAP},script=no,downscript=no"),
            "-device".into(),
            "virtio-net-pci,netdev=n1,romfile=".into(),
        ],
    );
    info(format!(
        "QEMU TCG under `xtask supervise` as component `guest`; SSH on 127.0.0.1:{port}; console in {}",
        super::log_path(l, "guest").display()
    ));
    super::start(l, "guest", &argv)?;

    let ssh = guest::Ssh::new(&image, port);
    super::wait_for("guest: SSH", Duration::from_secs(300), || {
        super::check_alive(l, "guest")?;
        Ok(ssh
            .command_with_timeout("true", 5)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()))
    })?;
    guest_sh(
        l,
        "the guest's setup",
        "tar -x -f /dev/vdb -C / && sh /opt/nodehealth/setup.sh",
    )?;
    info("guest: kubelet and containerd started (systemd units)");
    super::wait_for("guest: node Ready", Duration::from_secs(300), || {
        super::check_alive(l, "guest")?;
        Ok(api::node_ready(l, NODE)?.is_some_and(|r| r == "True"))
    })?;
    let first = api::lease_renew_time(l, NODE)?;
    super::wait_for("guest: lease renewing", Duration::from_secs(90), || {
        Ok(api::lease_renew_time(l, NODE)? != first)
    })?;
    step(format!(
        "guest node `{NODE}` Ready in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Takes the guest node out of the running cluster: stops QEMU and its forwarder, deletes the
/// tap link, the Node object and the guest's files. `down` does the same for everything.
pub fn remove(l: &Layout) -> Result<()> {
    step(format!("removing the guest node `{NODE}`"));
    for name in [CHURN, "guest", "guest-lb"] {
        super::stop_component(l, name)?;
        let f = supervise::files(&l.run_dir(), name);
        for p in [f.pid, f.supervisor_pid, f.stop, f.restarts] {
            let _ = fs::remove_file(p);
        }
    }
    let mut problems = remove_tap();
    let _ = fs::remove_file(cut_file(l));
    if let Err(e) = fs::remove_dir_all(dir(l))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", dir(l).display()));
    }
    if api::ready(l) {
        let (code, body) = api::request(l, "DELETE", &format!("/api/v1/nodes/{NODE}"), None)?;
        if code != 200 && code != 404 {
            problems.push(format!("deleting Node {NODE}: HTTP {code}: {body}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("removing the guest node: {}", problems.join("; "))
    }
}

/// What `down` removes of the guest once every component has stopped.
pub fn undo_on_down(l: &Layout) -> Vec<String> {
    let mut problems = remove_tap();
    let _ = fs::remove_file(cut_file(l));
    let _ = fs::remove_dir_all(dir(l));
    problems.retain(|p| !p.is_empty());
    problems
}

// --- faults on the guest node -----------------------------------------------------------------

/// containerd's unit cgroup on the guest (cgroup v2, systemd).
const CONTAINERD_CGROUP: &str = "/sys/fs/cgroup/system.slice/containerd.service";

/// The disk-slow fault's pod churn for the guest (an `xtask podchurn` on the host).
pub const CHURN: &str = "guest-podchurn";
/// Sets `dev` (a /dev/block path systemd takes) and `mm` (MAJ:MIN) to the whole disk under
/// containerd's root, or fails: io.max applies to disks, not partitions. (`stat`, not `findmnt
/// -no MAJ:MIN`: findmnt pads its column with spaces.)
const CONTAINERD_DISK: &str = r#"set -eu
mm=$(stat -c '%Hd:%Ld' /var/lib/containerd)
dev=/dev/block/$mm
if [ -e /sys/dev/block/$mm/partition ]; then echo "containerd's root is on a partition ($mm): io.max takes whole disks" >&2; exit 1; fi"#;
/// Where the certificate faults keep their files on the guest.
const FAULT_DIR: &str = "/etc/kubernetes/nodehealth-fault";
const DROPIN_DIR: &str = "/run/systemd/system/kubelet.service.d";
const DROPIN: &str = "/run/systemd/system/kubelet.service.d/50-nodehealth-fault.conf";
const PKI_DIR: &str = "/var/lib/kubelet/pki";
/// runtime-slow-list's drop-in and the kubelet configuration it points at.
const CRI_DROPIN: &str = "/run/systemd/system/kubelet.service.d/60-nodehealth-criproxy.conf";
const CRI_CONFIG: &str = "/etc/kubernetes/nodehealth-fault/kubelet-criproxy.yaml";
/// The certificate `cert-rotation-stuck` replaced (its name in PKI_DIR).
const PREVIOUS: &str = "/var/lib/kubelet/pki/nodehealth-fault-previous";

fn fault_marker(l: &Layout, name: &str) -> PathBuf {
    l.faults().join(format!("{NODE}-{name}"))
}

/// Runs `script` in the guest (sh -c), failing with its output when it fails.
fn guest_sh(l: &Layout, what: &str, script: &str) -> Result<()> {
    guest_output(l, what, script).map(|_| ())
}

/// [`guest_sh`], returning what the script printed.
fn guest_output(l: &Layout, what: &str, script: &str) -> Result<String> {
    let out = ssh(l)?
        .command(&format!("sh -c {}", guest::shell_quote(script)))
        .output()
        .with_context(|| format!("ssh: {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed in the guest ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Limits containerd.service's I/O on the disk under its root (systemd's IO*Max=).
fn disk_slow_script(write_iops: u64, write_bps: u64, read_iops: u64, read_bps: u64) -> String {
    format!(
        r#"{CONTAINERD_DISK}
systemctl set-property --runtime containerd.service "IOWriteIOPSMax=$dev {write_iops}" \
  "IOWriteBandwidthMax=$dev {write_bps}" "IOReadIOPSMax=$dev {read_iops}" "IOReadBandwidthMax=$dev {read_bps}"
grep -q "^$mm " {CONTAINERD_CGROUP}/io.max
"#
    )
}

/// Lifts containerd.service's I/O limits (an empty IO*Max= resets; io.max is written as well,
/// in case the unit's cgroup kept the line).
fn disk_slow_heal_script() -> String {
    format!(
        r#"{CONTAINERD_DISK}
systemctl set-property --runtime containerd.service IOWriteIOPSMax= IOWriteBandwidthMax= \
  IOReadIOPSMax= IOReadBandwidthMax=
echo "$mm rbps=max wbps=max riops=max wiops=max" > {CONTAINERD_CGROUP}/io.max
"#
    )
}

/// Restarts the kubelet through a runtime drop-in with rotation off and the static certificate
/// `pem`.
fn cert_expired_static_script(pem: &str) -> String {
    format!(
        r#"set -eu
if [ -e {CRI_DROPIN} ]; then echo "the kubelet runs under runtime-slow-list's drop-in: heal first" >&2; exit 1; fi
umask 077
mkdir -p {FAULT_DIR} {DROPIN_DIR}
cat > {FAULT_DIR}/client.pem <<'PEM'
{pem}PEM
sed 's#{KUBELET_CLIENT_CERT}#{FAULT_DIR}/client.pem#g' {KUBELET_KUBECONFIG} > {FAULT_DIR}/kubelet.kubeconfig
grep -q '{FAULT_DIR}/client.pem' {FAULT_DIR}/kubelet.kubeconfig
sed 's/^rotateCertificates: true$/rotateCertificates: false/' {KUBELET_CONFIG} > {FAULT_DIR}/kubelet.yaml
grep -qx 'rotateCertificates: false' {FAULT_DIR}/kubelet.yaml
cat > {DROPIN} <<'UNIT'
[Service]
ExecStart=
{exec}
UNIT
chmod 644 {DROPIN}
systemctl daemon-reload
systemctl restart kubelet.service
"#,
        exec = kubelet_exec_start(
            &format!("{FAULT_DIR}/kubelet.yaml"),
            &format!("{FAULT_DIR}/kubelet.kubeconfig")
        )
    )
}

/// Points the kubelet's current client certificate at `pem` (remembering the one it replaced)
/// and restarts the kubelet.
fn cert_rotation_stuck_script(pem: &str) -> String {
    format!(
        r#"set -eu
umask 077
cd {PKI_DIR}
current={KUBELET_CLIENT_CERT}
if [ ! -e {PREVIOUS} ]; then
  if [ -L "$current" ]; then readlink "$current" > {PREVIOUS}
  else cp -p "$current" kubelet-client-nodehealth-saved.pem; echo kubelet-client-nodehealth-saved.pem > {PREVIOUS}; fi
fi
f=kubelet-client-fault-$(date +%s).pem
cat > "$f" <<'PEM'
{pem}PEM
ln -sfn "$f" current.tmp && mv -T current.tmp "$current"
systemctl restart kubelet.service
"#
    )
}

/// Stops the kubelet and points its current client certificate back at the one it had.
fn cert_rotation_stuck_heal_script() -> String {
    format!(
        r#"set -eu
systemctl stop kubelet.service
cd {PKI_DIR}
if [ -e {PREVIOUS} ]; then
  ln -sfn "$(cat {PREVIOUS})" current.tmp && mv -T current.tmp {KUBELET_CLIENT_CERT}
fi
rm -f kubelet-client-fault-*.pem {PREVIOUS}
"#
    )
}

/// Removes the drop-in and restarts the kubelet as its unit says.
fn cert_expired_static_heal_script() -> String {
    format!(
        "rm -f {DROPIN} && systemctl daemon-reload && systemctl restart kubelet.service \
         && rm -rf {FAULT_DIR}"
    )
}

/// Moves the kubelet onto the CRI proxy (a passthrough until then) when it is not there yet,
/// waits for it to come back, then holds relist calls for `delay`; returns once a relist shows
/// it (as the host's fault does).
fn runtime_slow_list(l: &Layout, delay: Duration) -> Result<()> {
    let since = super::api::next_second();
    let moved = guest_output(
        l,
        "moving the kubelet onto the CRI proxy",
        &move_to_criproxy_script(),
    )?;
    if moved.trim() == "moved" {
        info("the guest's kubelet restarted onto the CRI proxy (a passthrough so far)");
        super::fault::wait_for_a_kubelet_started_since(l, NODE, &since, &|| {
            super::check_alive(l, "guest")
        })?;
    }
    guest_sh(
        l,
        "setting the CRI proxy's delay",
        &format!("echo {} > {CRIPROXY_CONTROL}", delay.as_millis()),
    )?;
    info(format!(
        "ListPodSandbox and ListContainers now take {} ms longer on the guest",
        delay.as_millis()
    ));
    if delay <= super::fault::LONGEST_MEASURED_DELAY {
        let took = super::fault::wait_for_a_slow_relist(l, NODE, delay)?;
        info(format!("a relist took {took:.2} s (two held calls)"));
    }
    Ok(())
}

/// Starts the CRI proxy and, unless the kubelet already uses it, restarts the kubelet onto it
/// through a runtime drop-in; prints `moved` when it did.
fn move_to_criproxy_script() -> String {
    format!(
        r#"set -eu
systemctl start nodehealth-criproxy.service
for i in $(seq 100); do [ -S {CRIPROXY_SOCKET} ] && break; sleep 0.1; done
[ -S {CRIPROXY_SOCKET} ] || {{ echo "the CRI proxy's socket did not appear" >&2; exit 1; }}
if [ -e {CRI_DROPIN} ]; then exit 0; fi
if [ -e {DROPIN} ]; then echo "the kubelet runs under the certificate fault's drop-in: heal first" >&2; exit 1; fi
echo 0 > {CRIPROXY_CONTROL}
umask 022
mkdir -p {FAULT_DIR} {DROPIN_DIR}
sed 's#^containerRuntimeEndpoint:.*#containerRuntimeEndpoint: unix://{CRIPROXY_SOCKET}#' {KUBELET_CONFIG} > {CRI_CONFIG}
grep -qx 'containerRuntimeEndpoint: unix://{CRIPROXY_SOCKET}' {CRI_CONFIG}
cat > {CRI_DROPIN} <<'UNIT'
[Service]
ExecStart=
{exec}
UNIT
systemctl daemon-reload
systemctl restart kubelet.service
echo moved
"#,
        exec = kubelet_exec_start(CRI_CONFIG, KUBELET_KUBECONFIG)
    )
}

/// Releases held calls, restarts the kubelet onto containerd as its unit says, stops the proxy.
fn runtime_slow_list_heal_script() -> String {
    format!(
        r#"set -eu
if [ -d {CRIPROXY_DIR} ]; then echo 0 > {CRIPROXY_CONTROL}; fi
if [ -e {CRI_DROPIN} ]; then
  rm -f {CRI_DROPIN} {CRI_CONFIG}
  systemctl daemon-reload
  systemctl restart kubelet.service
fi
systemctl stop nodehealth-criproxy.service
"#
    )
}

/// The guest's part of `cargo xtask fault --node guest <fault>`: each fault done the way a
/// systemd / cgroup v2 node does it. A fault not yet done this way is refused with a message.
pub fn apply_fault(l: &Layout, f: &super::fault::Fault) -> Result<()> {
    use super::fault::Fault;
    if !running(l) {
        bail!("no guest node in the running cluster: `cargo xtask cluster up --guest-node` first");
    }
    let name = f.name();
    step(format!("fault {name} on the guest node"));
    fs::create_dir_all(l.faults())?;
    fs::write(fault_marker(l, name), "")?;
    let applied = match f {
        // cgroup.freeze of the unit's cgroup (systemd 252's `systemctl freeze`).
        Fault::RuntimeFrozen => guest_sh(
            l,
            "freezing containerd",
            "systemctl freeze containerd.service",
        ),
        Fault::KubeletFrozen => guest_sh(
            l,
            "freezing the kubelet",
            "systemctl freeze kubelet.service",
        ),
        Fault::KubeletStopped => {
            guest_sh(l, "stopping the kubelet", "systemctl stop kubelet.service")
        }
        Fault::ApiPartition => fs::write(cut_file(l), "").map_err(Into::into),
        // cpu.max of containerd.service's cgroup, at the host fault's exact strength (systemd's
        // CPUQuota= cannot go below 1%).
        Fault::RuntimeCpuStarved {
            quota_us,
            period_us,
        } => guest_sh(
            l,
            "limiting containerd's CPU",
            &format!("echo '{quota_us} {period_us}' > {CONTAINERD_CGROUP}/cpu.max"),
        ),
        // memory.max of kubelet.service; the restarted kubelet grows into it and is OOM-killed
        // (memory.events counts the kills), systemd restarts it (Restart=always).
        Fault::KubeletMemoryLimited { limit_mib } => guest_sh(
            l,
            "limiting the kubelet's memory",
            &format!(
                "systemctl set-property --runtime kubelet.service MemoryMax={limit_mib}M MemorySwapMax=0 \
                 && systemctl restart kubelet.service"
            ),
        ),
        // io.max of containerd.service on the disk under containerd's root, the systemd way
        // (IO*Max=), and the host fault's pod churn scheduled to the guest.
        Fault::DiskSlow {
            write_iops,
            write_bps,
            read_iops,
            read_bps,
        } => guest_sh(
            l,
            "limiting containerd's I/O",
            &disk_slow_script(*write_iops, *write_bps, *read_iops, *read_bps),
        )
        .and_then(|()| {
            super::fault::churn_until_writes_are_slow(l, NODE, CHURN, &|| {
                super::launch(
                    l,
                    CHURN,
                    &[
                        std::env::current_exe()?.display().to_string(),
                        "podchurn".into(),
                        format!("--node={NODE}"),
                    ],
                )
            })
        }),
        // Rotation off and a client certificate that expires soon, through a runtime drop-in on
        // the kubelet's unit (its own configuration files stay as they are).
        Fault::CertExpiredStatic { expires_in } => {
            let pem = super::fault::short_lived_kubelet_cert(l, NODE, *expires_in)?;
            guest_sh(
                l,
                "restarting the kubelet with a static, short-lived certificate",
                &cert_expired_static_script(&pem),
            )
        }
        // The controller manager's CSR approver off (the cluster's, shared with the host's node)
        // and a short-lived certificate where rotation keeps it: the renewal CSR stays Pending.
        Fault::CertRotationStuck { lifetime } => {
            let pem = super::fault::short_lived_kubelet_cert(l, NODE, *lifetime)?;
            super::fault::controller_manager_without(l, "csrapproving")?;
            guest_sh(
                l,
                "restarting the kubelet with a short-lived certificate",
                &cert_rotation_stuck_script(&pem),
            )
        }
        Fault::RuntimeSlowList { delay } => runtime_slow_list(l, *delay),
        // The cluster's controller manager, shared with the host's node: the probe's Job gets no
        // pod wherever it is scheduled.
        Fault::JobControllerOff => super::fault::controller_manager_without(l, "job"),
        other => Err(anyhow::anyhow!(
            "fault {} is not done on the guest node yet: run it on the host's node (without --node)",
            other.name()
        )),
    };
    if let Err(e) = applied {
        let _ = fs::remove_file(fault_marker(l, name));
        return Err(e);
    }
    info("applied on the guest node; `cargo xtask heal` undoes it");
    // As the host's faults do (fault.rs): when the fault was in place, on stdout.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    println!("FAULT {name} took hold at {:.3}", at.as_secs_f64());
    Ok(())
}

/// Undoes every fault on the guest node (markers left by [`apply_fault`]).
pub fn heal_faults(l: &Layout) -> Vec<String> {
    let mut failed = Vec::new();
    for name in super::fault::NAMES {
        if !fault_marker(l, name).exists() {
            continue;
        }
        step(format!("healing {name} on the guest node"));
        let healed = match *name {
            "runtime-frozen" => {
                guest_sh(l, "thawing containerd", "systemctl thaw containerd.service")
            }
            "kubelet-frozen" => {
                guest_sh(l, "thawing the kubelet", "systemctl thaw kubelet.service")
            }
            "kubelet-stopped" => {
                guest_sh(l, "starting the kubelet", "systemctl start kubelet.service")
            }
            "api-partition" => {
                let _ = fs::remove_file(cut_file(l));
                Ok(())
            }
            "runtime-cpu-starved" => guest_sh(
                l,
                "lifting containerd's CPU limit",
                &format!("echo 'max 100000' > {CONTAINERD_CGROUP}/cpu.max"),
            ),
            "kubelet-memory-limited" => guest_sh(
                l,
                "lifting the kubelet's memory limit",
                "systemctl set-property --runtime kubelet.service MemoryMax=infinity MemorySwapMax=infinity \
                 && systemctl restart kubelet.service",
            ),
            "disk-slow" => super::stop_component(l, CHURN)
                .and_then(|()| {
                    guest_sh(
                        l,
                        "lifting containerd's I/O limits",
                        &disk_slow_heal_script(),
                    )
                })
                .and_then(|()| super::fault::delete_fault_pods(l, NODE)),
            "cert-expired-static" => guest_sh(
                l,
                "restarting the kubelet as its unit says",
                &cert_expired_static_heal_script(),
            ),
            "cert-rotation-stuck" => guest_sh(
                l,
                "putting the kubelet's certificate back",
                &cert_rotation_stuck_heal_script(),
            )
            .and_then(|()| super::fault::delete_pending_node_csrs(l, NODE))
            .and_then(|()| {
                super::stop_component(l, "kube-controller-manager")?;
                super::restart_component(l, "kube-controller-manager")
            })
            .and_then(|()| guest_sh(l, "starting the kubelet", "systemctl start kubelet.service")),
            "job-controller-off" => super::stop_component(l, "kube-controller-manager")
                .and_then(|()| super::restart_component(l, "kube-controller-manager")),
            "runtime-slow-list" => guest_sh(
                l,
                "moving the kubelet back onto containerd",
                &runtime_slow_list_heal_script(),
            ),
            _ => Ok(()),
        };
        match healed {
            Ok(()) => {
                let _ = fs::remove_file(fault_marker(l, name));
            }
            Err(e) => failed.push(format!("{name} on the guest node: {e:#}")),
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fault scripts are shell inside Rust format strings: each must at least parse.
    #[test]
    fn the_guest_fault_scripts_parse() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        for script in [
            disk_slow_script(10, 1 << 20, 20, 1 << 20),
            disk_slow_heal_script(),
            cert_expired_static_script(pem),
            cert_expired_static_heal_script(),
            cert_rotation_stuck_script(pem),
            cert_rotation_stuck_heal_script(),
            move_to_criproxy_script(),
            runtime_slow_list_heal_script(),
        ] {
            let out = Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let script = cert_expired_static_script(pem);
        assert!(script.contains("ExecStart=\nExecStart=/usr/local/bin/kubelet"));
        assert!(script.contains(&format!("--config={FAULT_DIR}/kubelet.yaml")));
        assert!(disk_slow_script(10, 1, 2, 3).contains("\"IOWriteIOPSMax=$dev 10\""));
    }
}
