//! Certificates: client and serving TTLs, renew errors, 401/403 answers, CSRs and their approver.

use super::heartbeat::lease_age;
use super::thresholds::*;
use super::window::*;
use super::{Domain, Finding, FindingId, Severity, seconds_since};
use crate::evidence::{CsrState, Evidence, FailureKind, SIGNER_CLIENT, SIGNER_SERVING, Step};
use crate::metrics::Labels;
use crate::units::human_duration;

/// How to get the kubelet a new client certificate without destroying what it has — the steps
/// people get wrong at 3 a.m. (deleting kubelet.conf or /var/lib/kubelet/pki leaves the kubelet no
/// credentials at all, and no way back without a bootstrap token).
pub const REBOOTSTRAP: &str = "get the kubelet a new client certificate, in this order: (1) make sure the node reaches the API server first (a certificate that expired during a partition renews only once the path is back); (2) approve this node's pending client CSR if there is one (`kubectl get csr`, `kubectl certificate approve <name>`): the running kubelet picks up the issued certificate itself; (3) with rotation on, a kubelet whose certificate expired exits by itself and its service manager starts it again — with a bootstrap kubeconfig (--bootstrap-kubeconfig) it then files a new CSR: approve it; (4) without a bootstrap kubeconfig, or with a static certificate (rotation off), issue a new one for CN system:node:<node>, O system:nodes from the cluster CA and put it where the kubeconfig's client-certificate points (the kubelet reads a static certificate when it starts). Never delete /etc/kubernetes/kubelet.conf or /var/lib/kubelet/pki";

/// [`REBOOTSTRAP`] for a kubelet whose `/configz` says client certificate rotation is off: it files
/// no CSR, so the approval steps do not apply.
pub const REBOOTSTRAP_STATIC: &str = "client certificate rotation is off on this kubelet (rotateCertificates: false in its /configz): it files no CSR, so there is nothing to approve. Get it a new client certificate, in this order: (1) make sure the node reaches the API server first; (2) issue a new one for CN system:node:<node>, O system:nodes from the cluster CA and put it where the kubeconfig's client-certificate points (the kubelet reads a static certificate when it starts), or move the node to rotation with a bootstrap kubeconfig so this does not recur. Never delete /etc/kubernetes/kubelet.conf or /var/lib/kubelet/pki";

/// The client certificate's TTL.
pub fn client_ttl(e: &Evidence) -> Vec<Finding> {
    certificate_ttl(e, true)
}

/// The serving certificate's TTL.
pub fn server_ttl(e: &Evidence) -> Vec<Finding> {
    certificate_ttl(e, false)
}

/// Client certificate renew errors.
pub fn client_renew_errors(e: &Evidence) -> Vec<Finding> {
    certificate_renew_errors(e, true)
}

/// Serving certificate renew errors.
pub fn server_renew_errors(e: &Evidence) -> Vec<Finding> {
    certificate_renew_errors(e, false)
}

/// Client or serving certificate TTL (kubernetes-mixin: < 7 d warning, < 1 d critical).
pub fn certificate_ttl(e: &Evidence, client: bool) -> Vec<Finding> {
    let (id, name, what) = if client {
        (
            FindingId::CertClientTtl,
            "kubelet_certificate_manager_client_ttl_seconds",
            "client",
        )
    } else {
        (
            FindingId::CertServerTtl,
            "kubelet_certificate_manager_server_ttl_seconds",
            "serving",
        )
    };
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(ttl) = end.scalar(name) else {
        let config = e.configz.data();
        let why = if !client && config.and_then(|c| c.server_tls_bootstrap) != Some(true) {
            "serving certificate is self-signed or provided (serverTLSBootstrap off): the kubelet does not rotate it".to_string()
        } else if client && config.and_then(|c| c.rotate_certificates) == Some(false) {
            "client certificate rotation is off (rotateCertificates: false): its TTL is not exported".to_string()
        } else {
            format!("{what} certificate TTL not exported by this kubelet")
        };
        return vec![
            Finding::new(id, Domain::Certificates, Severity::Info, why)
                .with(format!("{name} absent")),
        ];
    };
    if ttl.is_infinite() {
        return vec![
            Finding::new(
                id,
                Domain::Certificates,
                Severity::Info,
                format!("the kubelet's certificate manager holds no {what} certificate"),
            )
            .with(format!("{name} = +Inf")),
        ];
    }
    let evidence = format!("{name} = {ttl:.0}");
    let renew = if client {
        "check `kubectl get csr` for this node's pending CSRs and that kube-controller-manager approves them; on the node, check NTP sync (clock skew breaks validation)"
    } else {
        "serving certificates are not auto-approved: approve this node's kubelet-serving CSR after checking its SANs"
    };
    let f = if ttl <= 0.0 {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Critical,
            format!("{what} certificate EXPIRED {} ago", human_duration(-ttl)),
        )
        .fix(renew)
    } else if ttl < CERT_CRITICAL_SECONDS {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Critical,
            format!("{what} certificate expires in {}", human_duration(ttl)),
        )
        .fix(renew)
    } else if ttl < CERT_WARN_SECONDS {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Warning,
            format!(
                "{what} certificate expires in {} (rotation should have happened at 70-90% of its life)",
                human_duration(ttl)
            ),
        )
        .fix(renew)
    } else {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Ok,
            format!("{what} certificate valid for {}", human_duration(ttl)),
        )
    };
    vec![f.with(evidence)]
}

/// Certificate renew errors (kubernetes-mixin: any increase).
pub fn certificate_renew_errors(e: &Evidence, client: bool) -> Vec<Finding> {
    let (id, name, what) = if client {
        (
            FindingId::CertClientRenew,
            "kubelet_certificate_manager_client_expiration_renew_errors",
            "client",
        )
    } else {
        (
            FindingId::CertServerRenew,
            "kubelet_server_expiration_renew_errors",
            "serving",
        )
    };
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let Some(total) = end.sum_where(name, all) else {
        return vec![];
    };
    let delta = window_counter(e, name, all).unwrap_or(0.0);
    let f = if delta > 0.0 {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Warning,
            format!("{what} certificate renewal failing: {delta} errors in the window"),
        )
        .fix("the kubelet cannot get a new certificate: look for its pending CSR and the approver")
    } else if total > 0.0 {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Info,
            format!(
                "{total} {what} certificate renew errors since kubelet start, none in the window"
            ),
        )
    } else {
        Finding::new(
            id,
            Domain::Certificates,
            Severity::Ok,
            format!("no {what} certificate renew errors"),
        )
    };
    vec![f.with(format!("{name} = {total}"))]
}

/// The kubelet's own requests answered 401/403: the certificate signal.
pub fn kubelet_auth_errors(e: &Evidence) -> Vec<Finding> {
    const NAME: &str = "rest_client_requests_total";
    let Some(end) = metrics_end(e) else {
        return vec![];
    };
    let code = |c: &'static str| move |l: &Labels| l.get("code").map(String::as_str) == Some(c);
    let Some(since_401) = end.sum_where(NAME, code("401")) else {
        return vec![missing_metric(
            FindingId::KubeletAuth,
            Domain::Certificates,
            NAME,
        )];
    };
    let since_403 = end.sum_where(NAME, code("403")).unwrap_or(0.0);
    let w401 = window_counter(e, NAME, code("401")).unwrap_or(0.0);
    let w403 = window_counter(e, NAME, code("403")).unwrap_or(0.0);
    let evidence = format!(
        "rest_client_requests_total: code 401 +{w401} / 403 +{w403} in the window; {since_401} / {since_403} since kubelet start"
    );
    let f = if w401 > 0.0 {
        Finding::new(
            FindingId::KubeletAuth,
            Domain::Certificates,
            Severity::Critical,
            format!("the API server rejects the kubelet's credentials: {w401} requests answered 401 in the window"),
        )
        .fix("the kubelet's client certificate is expired or not trusted: check cert-client-ttl and pending CSRs; on the node `openssl x509 -in /var/lib/kubelet/pki/kubelet-client-current.pem -noout -dates`")
    } else if w403 > 0.0
        && let Some(accepted) = identity_accepted(e)
    {
        // The Node authorizer refuses a node's requests about objects not bound to it, and the
        // kubelet's status manager reads every pod it deleted once more after the API server has
        // forgotten it: a few 403s follow any pod deletion on a healthy node. A refused identity
        // is refused everything, its own Lease first.
        Finding::new(
            FindingId::KubeletAuth,
            Domain::Certificates,
            Severity::Info,
            format!(
                "{w403} of the kubelet's requests were forbidden (403) in the window, while {accepted}: requests about objects not bound to this node (a pod just deleted is one), not its credentials"
            ),
        )
    } else if w403 > 0.0 {
        Finding::new(
            FindingId::KubeletAuth,
            Domain::Certificates,
            Severity::Warning,
            format!("{w403} of the kubelet's requests were forbidden (403) in the window"),
        )
        .fix("the Node authorizer refuses it: the certificate's CN must be system:node:<node> in group system:nodes")
    } else if since_401 + since_403 > 0.0 {
        Finding::new(
            FindingId::KubeletAuth,
            Domain::Certificates,
            Severity::Info,
            "the kubelet had 401/403 answers since it started, none in the window",
        )
    } else {
        Finding::new(
            FindingId::KubeletAuth,
            Domain::Certificates,
            Severity::Ok,
            "the API server accepts the kubelet's credentials",
        )
    };
    vec![f.with(evidence)]
}

/// What shows that the API server accepted the kubelet's identity lately: a write of its own that
/// succeeded in the window, or its Lease renewed within one renewal interval (a quarter of the
/// lease's duration) and a margin. Only the kubelet's own credentials renew its Lease.
fn identity_accepted(e: &Evidence) -> Option<String> {
    let write_ok = |l: &Labels| {
        l.get("code").is_some_and(|c| c.starts_with('2'))
            && l.get("method")
                .is_some_and(|m| matches!(m.as_str(), "PUT" | "PATCH" | "POST"))
    };
    let writes = window_counter(e, "rest_client_requests_total", write_ok).unwrap_or(0.0);
    if writes > 0.0 {
        return Some(format!("{writes} of its writes succeeded"));
    }
    let lease = e.lease.data()?;
    if lease.renewed_during_window() {
        return Some("it renewed its Lease while the window lasted".into());
    }
    let (age, duration) = lease_age(e, lease)?;
    (age <= duration / 4.0 + LEASE_RENEWAL_MARGIN_SECONDS)
        .then(|| format!("its Lease was renewed {} ago", human_duration(age.max(0.0))))
}

/// Pending, denied and failed CSRs of this node.
pub fn csrs(e: &Evidence) -> Vec<Finding> {
    let Some(csrs) = e.csrs.data() else {
        return vec![];
    };
    let mut findings = Vec::new();
    for csr in csrs {
        let age = csr
            .created
            .map(|t| human_duration(seconds_since(e, t)))
            .unwrap_or_else(|| "?".into());
        let basis = format!(
            "{} signer={} requestor={} age={age} state={:?}",
            csr.name, csr.signer_name, csr.username, csr.state
        );
        match (csr.state, csr.signer_name.as_str()) {
            (CsrState::Pending, SIGNER_CLIENT) => findings.push(
                Finding::new(
                    FindingId::CsrClientPending,
                    Domain::Certificates,
                    Severity::Warning,
                    format!("client CSR {} pending for {age}", csr.name),
                )
                .with(basis)
                .with("kubelet client CSRs are normally auto-approved within seconds by kube-controller-manager")
                .fix(format!("kubectl certificate approve {}", csr.name)),
            ),
            (CsrState::Pending, SIGNER_SERVING) => findings.push(
                Finding::new(
                    FindingId::CsrServingPending,
                    Domain::Certificates,
                    Severity::Warning,
                    format!("serving CSR {} pending for {age} (never auto-approved)", csr.name),
                )
                .with(basis)
                .fix(format!(
                    "check its SANs are this node's names/IPs first: kubectl get csr {0} -o jsonpath='{{.spec.request}}' | base64 -d | openssl req -noout -text ; then kubectl certificate approve {0}",
                    csr.name
                )),
            ),
            (CsrState::Denied | CsrState::Failed, _) => findings.push(
                Finding::new(
                    FindingId::CsrRejected,
                    Domain::Certificates,
                    Severity::Warning,
                    format!("CSR {} {:?}", csr.name, csr.state).to_lowercase(),
                )
                .with(basis),
            ),
            _ => {}
        }
    }
    if findings.is_empty() {
        let issued = csrs
            .iter()
            .filter(|c| matches!(c.state, CsrState::Issued | CsrState::Approved))
            .count();
        findings.push(Finding::new(
            FindingId::Csrs,
            Domain::Certificates,
            Severity::Ok,
            format!("no pending kubelet CSRs ({issued} approved/issued on record)"),
        ));
    }
    findings
}

/// With CSRs pending: is the approver (kube-controller-manager) alive?
pub fn csr_approver(e: &Evidence) -> Vec<Finding> {
    let pending = e.csrs.data().map_or(0, |c| {
        c.iter().filter(|c| c.state == CsrState::Pending).count()
    });
    if pending == 0 {
        return vec![];
    }
    match &e.controller_manager_lease {
        Step::Collected { data } => {
            let Some((age, duration)) = lease_age(e, data) else {
                return vec![];
            };
            let basis = format!(
                "kube-system/{} renewTime {} ago (duration {duration}s), holder {}",
                data.name,
                human_duration(age),
                data.holder_identity.clone().unwrap_or_default()
            );
            if age >= duration {
                vec![
                    Finding::new(
                        FindingId::CsrApprover,
                        Domain::Certificates,
                        Severity::Critical,
                        format!(
                            "{pending} CSR(s) pending and the CSR approver is down: kube-controller-manager's lease is {} old",
                            human_duration(age)
                        ),
                    )
                    .with(basis)
                    .fix("restore kube-controller-manager (it approves kubelet client CSRs); meanwhile approve the pending CSR by hand"),
                ]
            } else {
                vec![
                    Finding::new(
                        FindingId::CsrApprover,
                        Domain::Certificates,
                        Severity::Info,
                        "kube-controller-manager is alive, yet CSRs are pending",
                    )
                    .with(basis)
                    .fix("client CSRs stay pending when the requestor lacks the nodeclient/selfnodeclient ClusterRoleBindings; serving CSRs always wait for a person or an approver you run"),
                ]
            }
        }
        Step::Failed { failure } if failure.kind == FailureKind::NotFound => vec![Finding::new(
            FindingId::CsrApprover,
            Domain::Certificates,
            Severity::Info,
            "kube-controller-manager's lease is not visible (managed control plane?): cannot tell whether the CSR approver runs",
        )],
        _ => vec![],
    }
}
