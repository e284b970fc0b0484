//! The fix and the avoid of each cause, written for the node in front of it: the runtime that
//! actually runs (containerd or CRI-O, from what was collected), its pending CSRs, a paused
//! kubelet's pid — and safe whatever else is true:
//! - no fix restarts the kubelet while a partition, a runtime outage or a certificate problem
//!   explains the symptoms (a restart fixes none of them and adds a reconciliation storm; a
//!   kubelet without a valid certificate may not come back at all);
//! - a runtime is restarted only when it is hung, never when it is merely slow;
//! - the goroutine dump is kept before anything is restarted, and never taken with a signal that
//!   kills the kubelet;
//! - never "reboot the node" as a fix.

use super::{CauseId, Inputs};
use crate::checks::certificates::{REBOOTSTRAP, REBOOTSTRAP_STATIC};
use crate::checks::facts::GoroutineDump;
use crate::checks::node::resume_command;
use crate::checks::platform::{self, PlatformKind};
use crate::checks::runtime::RuntimeKind;

/// What the texts are written with.
pub struct Context {
    /// The node's name.
    pub node: String,
    /// The runtime.
    pub runtime: RuntimeKind,
    /// This node's pending client CSRs.
    pub pending_client_csrs: Vec<String>,
    /// A paused kubelet: pid, stopped (else frozen).
    pub paused_kubelet: Option<(u32, bool)>,
    /// The runtime is down or failing (not merely slow).
    pub runtime_hung: bool,
    /// The node side shows the kubelet itself in trouble.
    pub kubelet_itself: bool,
    /// A partition, a runtime outage or a certificate problem is among the causes, or a client
    /// CSR is pending: then nothing restarts the kubelet.
    pub restart_forbidden_by: Option<&'static str>,
    /// The goroutine dump.
    pub goroutine_dump: GoroutineDump,
    /// The API server as the node knows it.
    pub api_server: Option<String>,
    /// The platform the advice is written for.
    pub platform: PlatformKind,
    /// The node runs systemd, when the agent could tell.
    pub systemd: Option<bool>,
    /// The runtime's unit and its KillMode, when the agent read them.
    pub runtime_unit: Option<(String, String)>,
    /// Client certificate rotation as the kubelet's `/configz` says (`None`: not read).
    pub client_rotation: Option<bool>,
}

impl Context {
    /// From the verdict's inputs and the causes it reports.
    pub fn new(i: &Inputs, reported: &[CauseId]) -> Context {
        let f = i.facts;
        let runtime_hung = i.runtime_down() || i.runtime_failing();
        let restart_forbidden_by = if reported.contains(&CauseId::ApiPartition) {
            Some("a partition")
        } else if runtime_hung || reported.contains(&CauseId::RuntimeUnresponsive) {
            Some("a runtime problem")
        } else if reported.contains(&CauseId::Certificate) || !f.pending_client_csrs.is_empty() {
            Some("a certificate problem")
        } else {
            None
        };
        Context {
            node: f.node_name.clone(),
            runtime: f.runtime.kind,
            pending_client_csrs: f.pending_client_csrs.clone(),
            paused_kubelet: f.node.paused_kubelet,
            runtime_hung,
            kubelet_itself: i.kubelet_itself(),
            restart_forbidden_by,
            goroutine_dump: f.goroutine_dump.clone(),
            api_server: f.api_server_from_node.clone(),
            platform: f.platform.kind,
            systemd: f.node.systemd,
            runtime_unit: f.node.runtime_unit.clone(),
            client_rotation: f.platform.kubelet.as_ref().and_then(|k| k.client_rotation),
        }
    }

    /// What restarting the runtime does to the running containers on this node.
    fn runtime_restart(&self) -> String {
        let shim = self.runtime.shim();
        if self.runtime != RuntimeKind::Containerd {
            return format!("running containers keep running through their {shim} processes");
        }
        match &self.runtime_unit {
            Some((unit, mode)) if mode == "process" || mode == "none" => format!(
                "running containers keep running through their {shim} processes ({unit} has KillMode={mode})"
            ),
            Some((unit, mode)) => format!(
                "{unit} has KillMode={mode}: stopping it kills every {shim} left in its cgroup, so the restart takes this node's containers down with it — drain the node first (or give the unit KillMode=process in a drop-in, as containerd's own unit file does)"
            ),
            None => format!(
                "running containers keep running through their {shim} processes if the runtime's unit does not kill its children (`systemctl show -p KillMode {}`: `process` keeps them; `control-group` kills them — then drain the node first)",
                self.unit()
            ),
        }
    }

    /// The API server as the node reaches it, or where it usually is on this platform.
    fn api(&self) -> String {
        self.api_server
            .clone()
            .unwrap_or_else(|| platform::advice(self.platform).api_server.to_string())
    }

    /// How to approve a CSR on this platform.
    fn approve(&self, csr: &str) -> String {
        match self.platform {
            PlatformKind::OpenShift => format!("`oc adm certificate approve {csr}`"),
            _ => format!("`kubectl certificate approve {csr}`"),
        }
    }

    fn unit(&self) -> &'static str {
        self.runtime.unit_or_placeholder()
    }

    /// Where the goroutine dump is, or how to take one safely before any restart.
    pub fn dump(&self) -> String {
        const SAFE: &str = "on the node, before any restart: `curl -sk --cert <client cert> --key <client key> https://localhost:10250/debug/pprof/goroutine?debug=2 > goroutines.txt` (never SIGQUIT: it dumps the stacks and kills the kubelet)";
        match &self.goroutine_dump {
            GoroutineDump::Captured => {
                "the kubelet's goroutine dump was captured in this run (kept with --bundle)".into()
            }
            GoroutineDump::Disabled => "no goroutine dump: the kubelet's profiling handler is off (enableProfilingHandler: false); never SIGQUIT the kubelet for one — it dumps the stacks and kills it".into(),
            GoroutineDump::NotTaken(why) => {
                format!("the goroutine dump could not be taken through the API server ({why}); take it {SAFE}")
            }
        }
    }
}

/// A cause's texts.
pub struct Texts {
    /// One line.
    pub summary: String,
    /// The safe fix.
    pub fix: String,
    /// What not to do.
    pub avoid: String,
}

/// The way back to a valid client certificate, in the platform's own commands.
fn rebootstrap(platform: PlatformKind, client_rotation: Option<bool>) -> String {
    if client_rotation == Some(false) {
        return REBOOTSTRAP_STATIC.to_string();
    }
    match platform {
        PlatformKind::OpenShift => REBOOTSTRAP.replace(
            "`kubectl get csr`, `kubectl certificate approve <name>`",
            "`oc get csr`, `oc adm certificate approve <name>`",
        ),
        _ => REBOOTSTRAP.to_string(),
    }
}

/// How to tell a dead kubelet from a partition, for when both are listed.
pub fn separation(c: &Context) -> String {
    let api = c.api();
    format!(
        "from the API side a dead kubelet and a partition look alike (no lease renewals, the API server cannot reach the kubelet). What separates them: `connection refused` from the node proxy = kubelet not running; timeouts = node or network; many nodes stale at once = control plane or network; a node that is powered off looks like a partition too. On the node (SSH): `systemctl is-active kubelet`, and `curl -k {api}/healthz` (any HTTP answer — 200, 401 or 403 — means the API server is reachable); or `tracer-user probe`"
    )
}

/// The texts of one cause.
pub fn texts(id: CauseId, c: &Context) -> Texts {
    let node = &c.node;
    let unit = c.unit();
    let no_kubelet_restart = c
        .restart_forbidden_by
        .map(|why| format!("do not restart the kubelet: {why} explains the symptoms, and a restart fixes none of them"))
        .unwrap_or_else(|| "do not restart the kubelet first".into());
    match id {
        CauseId::Healthy => Texts {
            summary: String::new(),
            fix: String::new(),
            avoid: String::new(),
        },
        CauseId::Certificate => {
            let approve = if c.pending_client_csrs.is_empty() {
                String::new()
            } else if c.platform == PlatformKind::Eks {
                // EKS kubelets authenticate with IAM: a pending client CSR means this node's
                // kubelet is not configured the EKS way, and approving it is not the fix.
                format!(
                    "this node filed client CSRs ({}), which EKS does not approve: its kubelet's kubeconfig should authenticate with `aws eks get-token`, not a client certificate — compare it with a healthy node's; ",
                    c.pending_client_csrs.join(", ")
                )
            } else {
                format!(
                    "approve the pending client CSR now: {}; ",
                    c.pending_client_csrs
                        .iter()
                        .map(|n| c.approve(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Texts {
                summary: "the kubelet's client certificate is expired, unrotated or rejected"
                    .into(),
                fix: {
                    let p = platform::advice(c.platform);
                    match c.platform {
                        PlatformKind::Eks => format!(
                            "{approve}{}; if the node cannot be brought back: {}",
                            p.certificate, p.last_resort
                        ),
                        PlatformKind::Gke | PlatformKind::Aks => format!(
                            "{approve}{}; on {node}: `openssl x509 -in /var/lib/kubelet/pki/kubelet-client-current.pem -noout -dates`; if it cannot be brought back: {}",
                            p.certificate, p.last_resort
                        ),
                        PlatformKind::OpenShift | PlatformKind::Kubeadm | PlatformKind::Unknown => format!(
                            "{approve}{}, and the node's clock is NTP-synchronized (skew breaks validation); on {node}: `openssl x509 -in /var/lib/kubelet/pki/kubelet-client-current.pem -noout -dates`. Then {}",
                            p.certificate,
                            rebootstrap(c.platform, c.client_rotation)
                        ),
                    }
                },
                avoid: "do not delete /etc/kubernetes/kubelet.conf or /var/lib/kubelet/pki (the kubelet is left with no credentials and no way back without a bootstrap token); do not restart the kubelet to \"fix\" it: it comes back with the same certificate; do not reboot the node".into(),
            }
        }
        CauseId::PlegSlow => {
            let runtime_step = if c.runtime_hung {
                format!(
                    "the runtime does not answer: capture its goroutine stacks (containerd and CRI-O dump them on SIGUSR1), then `systemctl restart {unit}` — {}",
                    c.runtime_restart()
                )
            } else {
                "a runtime that answers, even slowly, is not restarted: find why it is slow".into()
            };
            Texts {
                summary:
                    "PLEG relists are slow or stuck: the kubelet cannot see container state changes"
                        .into(),
                fix: format!(
                    "find where relist time goes before touching anything (the evidence: the runtime's share of each relist, and --trace for CPU, disk or the runtime holding the calls): on {node} `time crictl ps` (slow = the runtime, fast = inside the kubelet), disk iowait (`iostat -x 1`), the runtime's and the kubelet's CPU; {runtime_step}; reduce pod density or churn if the node is overloaded; {}",
                    c.dump()
                ),
                avoid: format!(
                    "{no_kubelet_restart} — it destroys the evidence (goroutine dump) and fixes neither a slow runtime nor a slow disk; do not reboot the node"
                ),
            }
        }
        CauseId::RuntimeUnresponsive => {
            let fix = if c.runtime_hung {
                format!(
                    "on {node}: `timeout 10 crictl info`, `systemctl status {unit}`, `journalctl -u {unit} --since -15m`; the runtime is hung: capture its goroutine stacks (SIGUSR1 makes containerd and CRI-O dump them), then `systemctl restart {unit}` — {}; check workload tolerance first; if orphaned {} processes block state queries, drain the node first, then restart {unit}",
                    c.runtime_restart(),
                    c.runtime.shim()
                )
            } else {
                format!(
                    "on {node}: `time crictl ps`, `journalctl -u {unit} --since -15m`; the runtime answers, slowly — find why before anything else: its CPU (throttled? starved?), its disk (`iostat -x 1`), lock contention inside it (--trace attributes it); a slow runtime is not restarted"
                )
            };
            Texts {
                summary: format!("the container runtime ({}) is hung, failing or slow", c.runtime.name()),
                fix,
                avoid: format!(
                    "do not kill {} processes by hand (leaves defunct containers); {no_kubelet_restart}; do not reboot the node as a first step",
                    c.runtime.shim()
                ),
            }
        }
        CauseId::KubeletDown => match c.paused_kubelet {
            Some((pid, stopped)) => Texts {
                summary: format!(
                    "the kubelet is not running: its process (pid {pid}) is {}",
                    if stopped { "stopped" } else { "in a frozen cgroup" }
                ),
                fix: format!(
                    "on {node}: resume it — {}; then find who paused it (a checkpoint or backup agent, `systemctl freeze`, a debugger) so it does not happen again",
                    if !stopped && c.systemd == Some(true) {
                        "`systemctl thaw kubelet` (systemd owns its cgroup: writing the freezer file behind its back leaves systemd's view of the unit stale)".to_string()
                    } else {
                        resume_command(pid, stopped)
                    }
                ),
                avoid: "do not restart or kill the kubelet: resuming it loses nothing, a restart loses its state and adds a burst of CRI and API calls; do not reboot the node".into(),
            },
            None => Texts {
                summary: "the kubelet is not running (exited, or its process stopped or frozen)"
                    .into(),
                fix: format!(
                    "on {node}: `systemctl is-active kubelet` first — if it is active, this is not kubelet-down (see the other causes); otherwise `journalctl -u kubelet -b | tail -100` and `dmesg | grep -i -e oom -e 'hung task'` for why it stopped; if its state is T (`ps -o stat= -C kubelet`) or its cgroup is frozen, resume it (`kill -CONT`, or `systemctl thaw kubelet` under systemd); otherwise start it: `systemctl start kubelet`{}",
                    if c.platform.replaces_nodes() {
                        format!("; if it does not stay up: {}", platform::advice(c.platform).last_resort)
                    } else {
                        String::new()
                    }
                ),
                avoid: "do not reboot the node: its containers are still running; do not restart anything if this is a partition (see evidence)".into(),
            },
        },
        CauseId::KubeletStarved => {
            let restart = match (c.kubelet_itself, c.restart_forbidden_by) {
                (true, None) => "only then, if it does not recover: `systemctl restart kubelet` (expect a burst of CRI and API calls)".to_string(),
                (_, Some(why)) => format!("do not restart it: {why} is also in play"),
                (false, None) => "do not restart it until the node side confirms the kubelet itself is starved (`tracer-user probe --host-root /` on the node): from the API side a kubelet cut off from the API server looks the same".to_string(),
            };
            Texts {
                summary: "the kubelet is alive but starved or stuck".into(),
                fix: format!(
                    "{}; `kubectl cordon {node}`, relieve the node by draining pods; {}; {restart}",
                    c.dump(),
                    platform::advice(c.platform).reserves
                ),
                avoid: "do not restart the kubelet before the goroutine dump is saved: the restart destroys the evidence; do not reboot the node".into(),
            }
        }
        CauseId::ApiPartition => {
            let api = c.api();
            Texts {
                summary: "the node and the API server cannot talk (partition)".into(),
                fix: format!(
                    "restore the network path or the control plane: load balancer, DNS, firewall, routes, API server health; from {node}: `curl -k {api}/healthz` (any HTTP answer — 200, 401 or 403 — means the API server is reachable)"
                ),
                avoid: "do NOT restart the kubelet: it keeps pods running while disconnected, and a restart adds a reconciliation storm when the path returns; do not reboot the node".into(),
            }
        }
        CauseId::NodePressure => Texts {
            summary: "the node is under resource pressure".into(),
            fix: format!(
                "`kubectl cordon {node}`; free the resource under pressure (see findings): evictable pods, then unused images (`crictl rmi --prune`) and logs (`journalctl --vacuum-size=500M`) from {}; so the kubelet stays protected: {}",
                platform::advice(c.platform).shell,
                platform::advice(c.platform).reserves
            ),
            avoid: "do not reboot the node: pressure returns with the same workload".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(runtime: RuntimeKind, hung: bool, forbidden: Option<&'static str>) -> Context {
        Context {
            node: "node-a".into(),
            runtime,
            pending_client_csrs: vec![],
            paused_kubelet: None,
            runtime_hung: hung,
            kubelet_itself: true,
            restart_forbidden_by: forbidden,
            goroutine_dump: GoroutineDump::Captured,
            api_server: Some("https://10.0.0.1:443".into()),
            platform: PlatformKind::Unknown,
            systemd: None,
            runtime_unit: None,
            client_rotation: None,
        }
    }

    /// Every platform the advice is written for.
    const PLATFORMS: [PlatformKind; 6] = [
        PlatformKind::Eks,
        PlatformKind::Gke,
        PlatformKind::Aks,
        PlatformKind::OpenShift,
        PlatformKind::Kubeadm,
        PlatformKind::Unknown,
    ];

    fn restarts_kubelet(text: &str) -> bool {
        text.contains("systemctl restart kubelet")
    }

    #[test]
    fn the_runtime_is_restarted_only_when_hung_and_by_its_own_name() {
        let slow = texts(
            CauseId::RuntimeUnresponsive,
            &context(RuntimeKind::CriO, false, Some("a runtime problem")),
        );
        assert!(!slow.fix.contains("systemctl restart"), "{}", slow.fix);
        let hung = texts(
            CauseId::RuntimeUnresponsive,
            &context(RuntimeKind::CriO, true, Some("a runtime problem")),
        );
        assert!(hung.fix.contains("systemctl restart crio"), "{}", hung.fix);
        assert!(hung.fix.contains("conmon"), "{}", hung.fix);
        assert!(!hung.fix.contains("containerd-shim"), "{}", hung.fix);
    }

    #[test]
    fn no_fix_restarts_the_kubelet_while_a_partition_runtime_or_certificate_explains_it() {
        for why in ["a partition", "a runtime problem", "a certificate problem"] {
            let c = context(
                RuntimeKind::Containerd,
                why == "a runtime problem",
                Some(why),
            );
            for id in CauseId::BY_SAFETY {
                let t = texts(id, &c);
                assert!(!restarts_kubelet(&t.fix), "{id:?} during {why}: {}", t.fix);
                assert!(
                    !t.fix.to_lowercase().contains("reboot"),
                    "{id:?}: {}",
                    t.fix
                );
            }
        }
        // Only a kubelet the node shows starved itself, with nothing else in play, may be
        // restarted — after the dump.
        let t = texts(
            CauseId::KubeletStarved,
            &context(RuntimeKind::Containerd, false, None),
        );
        assert!(restarts_kubelet(&t.fix), "{}", t.fix);
        let mut unconfirmed = context(RuntimeKind::Containerd, false, None);
        unconfirmed.kubelet_itself = false;
        let t = texts(CauseId::KubeletStarved, &unconfirmed);
        assert!(!restarts_kubelet(&t.fix), "{}", t.fix);
    }

    #[test]
    fn the_certificate_fix_says_how_to_rebootstrap_without_deleting_anything() {
        let mut c = context(
            RuntimeKind::Containerd,
            false,
            Some("a certificate problem"),
        );
        c.pending_client_csrs = vec!["csr-abc".into()];
        let t = texts(CauseId::Certificate, &c);
        assert!(
            t.fix.contains("kubectl certificate approve csr-abc"),
            "{}",
            t.fix
        );
        assert!(t.fix.contains("reaches the API server first"), "{}", t.fix);
        assert!(t.fix.contains("Never delete"), "{}", t.fix);
        assert!(t.avoid.contains("do not delete"), "{}", t.avoid);
    }

    /// The advice on each platform, for containerd and CRI-O: the platform's approval path and
    /// CLI, its API server port, replacing rather than repairing where node pools do that, the
    /// runtime's own unit and shim — and still no kubelet restart where one is forbidden.
    #[test]
    fn each_platform_and_runtime_gets_its_own_commands() {
        for platform in PLATFORMS {
            for runtime in [RuntimeKind::Containerd, RuntimeKind::CriO] {
                let mut c = context(runtime, true, Some("a certificate problem"));
                c.platform = platform;
                c.api_server = None;
                c.pending_client_csrs = vec!["csr-x".into()];
                let cert = texts(CauseId::Certificate, &c);
                let partition = texts(CauseId::ApiPartition, &c);
                let down = texts(CauseId::KubeletDown, &c);
                let runtime_fix = texts(CauseId::RuntimeUnresponsive, &c).fix;
                let what = format!("{platform:?}/{runtime:?}");
                match platform {
                    PlatformKind::OpenShift => {
                        assert!(
                            cert.fix.contains("oc adm certificate approve csr-x"),
                            "{what}: {}",
                            cert.fix
                        );
                        assert!(
                            !cert.fix.contains("kubectl certificate approve"),
                            "{what}: {}",
                            cert.fix
                        );
                        assert!(
                            cert.fix.contains("machine-approver"),
                            "{what}: {}",
                            cert.fix
                        );
                    }
                    PlatformKind::Eks => {
                        assert!(cert.fix.contains("IAM role"), "{what}: {}", cert.fix);
                        // A client CSR from an EKS node is named, not approved.
                        assert!(
                            cert.fix.contains("csr-x") && !cert.fix.contains("certificate approve"),
                            "{what}: {}",
                            cert.fix
                        );
                        assert!(
                            !cert.fix.contains("kubelet-client-current.pem"),
                            "{what}: {}",
                            cert.fix
                        );
                        assert!(cert.fix.contains("replace"), "{what}: {}", cert.fix);
                    }
                    PlatformKind::Gke | PlatformKind::Aks => {
                        assert!(
                            !cert.fix.contains("kube-controller-manager"),
                            "{what}: {}",
                            cert.fix
                        );
                        assert!(
                            cert.fix.contains("kubectl certificate approve csr-x"),
                            "{what}"
                        );
                    }
                    PlatformKind::Kubeadm | PlatformKind::Unknown => {
                        assert!(
                            cert.fix.contains("kube-controller-manager"),
                            "{what}: {}",
                            cert.fix
                        );
                        assert!(
                            cert.fix.contains("kubectl certificate approve csr-x"),
                            "{what}"
                        );
                    }
                }
                let port = if platform.replaces_nodes() {
                    ":443"
                } else {
                    ":6443"
                };
                assert!(partition.fix.contains(port), "{what}: {}", partition.fix);
                assert_eq!(
                    down.fix.contains("let the group replace it")
                        || down.fix.contains("recreates")
                        || down.fix.contains("reimage"),
                    platform.replaces_nodes(),
                    "{what}: {}",
                    down.fix
                );
                let (unit, shim) = match runtime {
                    RuntimeKind::CriO => ("systemctl restart crio", "conmon"),
                    _ => ("systemctl restart containerd", "containerd-shim"),
                };
                assert!(
                    runtime_fix.contains(unit) && runtime_fix.contains(shim),
                    "{what}: {runtime_fix}"
                );
                for id in CauseId::BY_SAFETY {
                    let fix = texts(id, &c).fix;
                    assert!(!restarts_kubelet(&fix), "{what} {id:?}: {fix}");
                    assert!(
                        !fix.to_lowercase().contains("reboot"),
                        "{what} {id:?}: {fix}"
                    );
                }
            }
        }
    }

    /// Pressure and starvation name the platform's way onto the node and its place for the
    /// kubelet's reserves (no platform has the same); the kubelet's own configz decides whether a
    /// certificate is re-bootstrapped through CSRs or issued by hand.
    #[test]
    fn pressure_starvation_and_static_certificates_follow_the_platform_and_the_kubelet() {
        let mut seen = std::collections::HashSet::new();
        for (platform, shell, reserves) in [
            (
                PlatformKind::Eks,
                "aws ssm start-session",
                "launch template",
            ),
            (PlatformKind::Gke, "gcloud compute ssh", "machine type"),
            (PlatformKind::Aks, "kubectl debug node/", "--kubelet-config"),
            (
                PlatformKind::OpenShift,
                "oc debug node/",
                "KubeletConfig resource",
            ),
            (PlatformKind::Kubeadm, "SSH", "kubelet-config ConfigMap"),
        ] {
            let mut c = context(RuntimeKind::Containerd, false, None);
            c.platform = platform;
            let pressure = texts(CauseId::NodePressure, &c).fix;
            let starved = texts(CauseId::KubeletStarved, &c).fix;
            assert!(pressure.contains(shell), "{platform:?}: {pressure}");
            assert!(pressure.contains(reserves), "{platform:?}: {pressure}");
            assert!(starved.contains(reserves), "{platform:?}: {starved}");
            assert!(seen.insert(platform::advice(platform).reserves));
            for fix in [&pressure, &starved] {
                assert!(!fix.to_lowercase().contains("reboot"), "{fix}");
            }
        }
        // Rotation off (configz): no CSR to approve; issue one by hand. On or unknown: the CSR
        // path first.
        let mut c = context(
            RuntimeKind::Containerd,
            false,
            Some("a certificate problem"),
        );
        c.platform = PlatformKind::Kubeadm;
        c.client_rotation = Some(false);
        let fix = texts(CauseId::Certificate, &c).fix;
        assert!(
            fix.contains("rotation is off") && fix.contains("nothing to approve"),
            "{fix}"
        );
        assert!(!fix.contains("files a new CSR: approve it"), "{fix}");
        for rotation in [Some(true), None] {
            c.client_rotation = rotation;
            let fix = texts(CauseId::Certificate, &c).fix;
            assert!(
                fix.contains("files a new CSR: approve it"),
                "{rotation:?}: {fix}"
            );
        }
        assert!(!restarts_kubelet(&fix));
    }

    /// What the agent found on the node: the runtime unit's KillMode decides whether a restart
    /// keeps the containers; systemd decides how a frozen kubelet is thawed.
    #[test]
    fn the_runtime_units_kill_mode_and_systemd_shape_the_fix() {
        let mut c = context(RuntimeKind::Containerd, true, Some("a runtime problem"));
        c.runtime_unit = Some(("containerd.service".into(), "process".into()));
        let keeps = texts(CauseId::RuntimeUnresponsive, &c).fix;
        assert!(
            keeps.contains("keep running") && keeps.contains("KillMode=process"),
            "{keeps}"
        );
        c.runtime_unit = Some(("containerd.service".into(), "control-group".into()));
        let kills = texts(CauseId::RuntimeUnresponsive, &c).fix;
        assert!(
            kills.contains("takes this node's containers down"),
            "{kills}"
        );
        assert!(kills.contains("drain the node first"), "{kills}");
        assert!(!kills.contains("keep running through"), "{kills}");
        c.runtime_unit = None;
        let unknown = texts(CauseId::RuntimeUnresponsive, &c).fix;
        assert!(
            unknown.contains("systemctl show -p KillMode containerd"),
            "{unknown}"
        );
        // CRI-O's conmon lives outside crio.service's cgroup whatever its KillMode.
        let mut crio = context(RuntimeKind::CriO, true, Some("a runtime problem"));
        crio.runtime_unit = Some(("crio.service".into(), "control-group".into()));
        let fix = texts(CauseId::RuntimeUnresponsive, &crio).fix;
        assert!(fix.contains("keep running through their conmon"), "{fix}");

        let mut frozen = context(RuntimeKind::Containerd, false, None);
        frozen.paused_kubelet = Some((42, false));
        frozen.systemd = Some(true);
        let fix = texts(CauseId::KubeletDown, &frozen).fix;
        assert!(fix.contains("systemctl thaw kubelet"), "{fix}");
        frozen.systemd = Some(false);
        let fix = texts(CauseId::KubeletDown, &frozen).fix;
        assert!(
            fix.contains("freezer.state") && !fix.contains("systemctl thaw"),
            "{fix}"
        );
    }

    /// The context each cause is reported in on its own (the fault as the scenarios make it),
    /// on `platform` with `runtime`: what the advice document shows.
    fn reported_alone(id: CauseId, platform: PlatformKind, runtime: RuntimeKind) -> Context {
        let mut c = context(runtime, false, None);
        c.node = "<node>".into();
        c.platform = platform;
        c.api_server = None;
        c.kubelet_itself = false;
        c.goroutine_dump = GoroutineDump::NotTaken("the kubelet did not answer".into());
        match id {
            CauseId::ApiPartition => c.restart_forbidden_by = Some("a partition"),
            CauseId::Certificate => {
                c.restart_forbidden_by = Some("a certificate problem");
                c.pending_client_csrs = vec!["<csr>".into()];
            }
            CauseId::RuntimeUnresponsive => {
                c.restart_forbidden_by = Some("a runtime problem");
                c.runtime_hung = true;
            }
            CauseId::KubeletStarved => c.kubelet_itself = true,
            _ => {}
        }
        c
    }

    /// docs/advice.md: every cause's fix and avoid on every platform, for containerd and CRI-O,
    /// as `texts` writes them (identical texts merged, with the combinations that get them).
    fn advice_document() -> String {
        use std::fmt::Write;
        let mut doc = String::from(
            "# The advice on each platform and runtime\n\n\
             Generated from the verdict's own texts (`kubectl-nodehealth/src/verdict/advice.rs`, the test\n\
             `the_advice_document_is_what_the_tool_says`; regenerate with `NODEHEALTH_UPDATE_DOCS=1 cargo test -p\n\
             kubectl-nodehealth --lib advice_document`). Each cause is shown as it is reported on its own: a\n\
             pending client CSR for `certificate`, a hung runtime for `runtime-unresponsive`, the kubelet shown\n\
             starved by the node side for `kubelet-starved`, the goroutine dump not taken, and no address read\n\
             from the node (the platform's usual API server is shown). What the agent discovers on a node (the\n\
             runtime unit's `KillMode`, systemd, a paused kubelet, the API server address, `/configz`) changes\n\
             these texts further; README \"Platforms\" says how.\n",
        );
        for id in CauseId::BY_SAFETY {
            let name = serde_json::to_value(id).unwrap();
            let name = name.as_str().unwrap();
            writeln!(doc, "\n## {name}\n").unwrap();
            // Each distinct (fix, avoid), in first-seen order, with the combinations giving it.
            let mut seen: Vec<((String, String), Vec<String>)> = Vec::new();
            for platform in PLATFORMS {
                for runtime in [RuntimeKind::Containerd, RuntimeKind::CriO] {
                    let t = texts(id, &reported_alone(id, platform, runtime));
                    let who = format!("{} / {}", platform.name(), runtime.name());
                    match seen
                        .iter_mut()
                        .find(|(k, _)| *k == (t.fix.clone(), t.avoid.clone()))
                    {
                        Some((_, whos)) => whos.push(who),
                        None => seen.push(((t.fix, t.avoid), vec![who])),
                    }
                }
            }
            for ((fix, avoid), whos) in seen {
                writeln!(doc, "**{}**\n", whos.join(", ")).unwrap();
                writeln!(doc, "- fix: {fix}\n- avoid: {avoid}\n").unwrap();
            }
        }
        // One newline at the end, as editors leave a file.
        let end = doc.trim_end().len();
        doc.truncate(end);
        doc.push('\n');
        doc
    }

    /// The committed document is what the tool says today.
    #[test]
    fn the_advice_document_is_what_the_tool_says() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/advice.md");
        let doc = advice_document();
        if std::env::var_os("NODEHEALTH_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &doc).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == doc,
            "{} is not what the advice says now: regenerate it with `NODEHEALTH_UPDATE_DOCS=1 cargo test -p kubectl-nodehealth --lib advice_document` and review the diff",
            path.display()
        );
        // Every platform's own commands are in it.
        for said in [
            "IAM role",
            "gcloud compute ssh",
            "az aks",
            "oc adm certificate approve <csr>",
            "kubectl certificate approve <csr>",
            "systemctl restart crio",
            "systemctl restart containerd",
        ] {
            assert!(doc.contains(said), "{said}");
        }
    }

    #[test]
    fn an_unknown_runtime_gets_a_placeholder_not_a_guess() {
        let t = texts(
            CauseId::RuntimeUnresponsive,
            &context(RuntimeKind::Unknown, true, Some("a runtime problem")),
        );
        assert!(t.fix.contains("<runtime unit"), "{}", t.fix);
    }

    #[test]
    fn the_dump_is_never_taken_with_a_killing_signal() {
        let mut c = context(RuntimeKind::Containerd, false, None);
        c.goroutine_dump = GoroutineDump::NotTaken("timed out".into());
        let t = texts(CauseId::KubeletStarved, &c);
        assert!(t.fix.contains("never SIGQUIT"), "{}", t.fix);
        assert!(t.fix.contains("debug/pprof/goroutine"), "{}", t.fix);
    }
}
