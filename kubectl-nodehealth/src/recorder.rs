//! The flight recorder: `kubectl nodehealth recorder install|uninstall|status`, and the node's
//! report read back for a diagnosis.
//!
//! Each node runs `tracer-user record` (a DaemonSet) and writes its own `NodeRecorderReport` — a
//! cluster-scoped custom resource named after the node — straight to the API server, not through
//! the kubelet. Why a CRD rather than a ConfigMap or Lease per node: the report has a schema and
//! printer columns (`kubectl get noderecorderreports`), it is cluster-scoped like the Node it
//! describes, RBAC and the admission policy can name exactly this resource, and deleting the
//! CRD on uninstall deletes every report with it.
//!
//! A recorder may write only its own node's report, enforced in the cluster: a
//! ValidatingAdmissionPolicy compares the object's name with the node claim of the writer's
//! service-account token (`authentication.kubernetes.io/node-name`, put there by the API server
//! for a token bound to a pod — Kubernetes 1.30+, GA in 1.32).
use std::time::Duration;

use jiff::Timestamp;
use kube::{
    Client,
    api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use nodehealth_proto::recorder::{self as rec, RecorderReport};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::evidence::{Failure, FailureKind, Step};

/// The label on everything the install creates.
pub const LABEL: (&str, &str) = ("app.kubernetes.io/name", rec::NAME);
/// The admission policy (and its binding).
pub const POLICY: &str = "nodehealth-recorder-own-node";
/// The CRD's name.
pub fn crd_name() -> String {
    format!("{}.{}", rec::PLURAL, rec::GROUP)
}

/// A report older than this many heartbeats (plus slack) is stale: its recorder is not writing.
const STALE_HEARTBEATS: u64 = 2;
const STALE_SLACK_SECONDS: u64 = 15;

/// What `recorder install` was told.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub image: String,
    pub pull_policy: String,
    /// The recorder accepts the kubelet's serving certificate unverified (for its `/metrics`).
    pub kubelet_insecure_tls: bool,
}

/// Everything `install` applies, in order (pure: `recorder install --dry-run` prints it).
pub fn manifests(namespace: &str, o: &InstallOptions) -> Vec<Value> {
    let (image, pull_policy) = (o.image.as_str(), o.pull_policy.as_str());
    let mut args = vec!["record", "--host-root", "/host"];
    if o.kubelet_insecure_tls {
        args.push("--kubelet-insecure-tls");
    }
    let labels = json!({ LABEL.0: LABEL.1 });
    let sa_user = format!("system:serviceaccount:{namespace}:{}", rec::NAME);
    let mut pod = json!({
        "metadata": { "labels": labels },
        "spec": {
            "serviceAccountName": rec::NAME,
            // Its own bound token: the node claim in it is what the admission policy checks.
            "automountServiceAccountToken": true,
            "enableServiceLinks": false,
            // The node's process table, its loopback (the kubelet's healthz) and its route to
            // the API server — the same the kubelet takes, which is what a partition cuts.
            "hostPID": true,
            "hostNetwork": true,
            "dnsPolicy": "Default",
            // Every taint: a NotReady node is tainted NoExecute, and that is when it matters.
            "tolerations": [{ "operator": "Exists" }],
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "recorder",
                "image": image,
                "imagePullPolicy": pull_policy,
                "args": args,
                "env": [
                    {
                        "name": "NODE_NAME",
                        "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } },
                    },
                    // The kubelet's address for its /metrics (the PLEG history).
                    {
                        "name": "NODE_IP",
                        "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } },
                    },
                ],
                // The probe pod's capabilities without the tracer's (crate::probe::capabilities).
                "securityContext": {
                    "privileged": false,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {
                        "drop": ["ALL"],
                        "add": crate::probe::capabilities(false, false),
                    },
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
                // Burstable with a memory limit: the recorder's own budget is 32 MiB RSS.
                "resources": {
                    "requests": { "cpu": "5m", "memory": "32Mi" },
                    "limits": { "memory": "64Mi" },
                },
                "volumeMounts": [{
                    "name": "host", "mountPath": "/host", "readOnly": true,
                    "recursiveReadOnly": "IfPossible", "mountPropagation": "None",
                }],
            }],
            "volumes": [{ "name": "host", "hostPath": { "path": "/", "type": "Directory" } }],
        },
    });
    // Not evicted first under memory pressure, when a node's story matters most. The Priority
    // admission plugin allows the system classes in kube-system only.
    if namespace == "kube-system" {
        pod["spec"]["priorityClassName"] = json!("system-node-critical");
    }
    let claim = "authentication.kubernetes.io/node-name";
    vec![
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": crd_name(), "labels": labels },
            "spec": {
                "group": rec::GROUP,
                "scope": "Cluster",
                "names": {
                    "plural": rec::PLURAL,
                    "singular": "noderecorderreport",
                    "kind": rec::KIND,
                    "shortNames": ["nrr"],
                },
                "versions": [{
                    "name": rec::VERSION,
                    "served": true,
                    "storage": true,
                    "schema": { "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["nodeName"],
                                "properties": { "nodeName": { "type": "string" } },
                            },
                            // The report (nodehealth_proto::recorder::RecorderReport), versioned
                            // by its own `schema` field.
                            "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                        },
                    }},
                    "additionalPrinterColumns": [
                        { "name": "Kubelet", "type": "string", "jsonPath": ".status.now.kubelet" },
                        { "name": "Healthz", "type": "string", "jsonPath": ".status.now.healthz" },
                        { "name": "Runtime", "type": "string", "jsonPath": ".status.now.runtime" },
                        { "name": "CRI", "type": "string", "jsonPath": ".status.now.cri" },
                        { "name": "Failed-Writes", "type": "integer", "jsonPath": ".status.publisher.failedWrites" },
                    ],
                }],
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": rec::NAME, "namespace": namespace, "labels": labels },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": rec::NAME, "labels": labels },
            // Server-side apply of its report: create the first time, patch after. And its
            // node's kubelet's /metrics, which the kubelet authorizes as `get nodes/metrics`
            // (read-only counters; not nodes/proxy, which would open the kubelet's whole API).
            // Nothing else: everything else it reads is on its node.
            "rules": [
                {
                    "apiGroups": [rec::GROUP],
                    "resources": [rec::PLURAL],
                    "verbs": ["get", "create", "patch"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["nodes/metrics"],
                    "verbs": ["get"],
                },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": rec::NAME, "labels": labels },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rec::NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": rec::NAME, "namespace": namespace }],
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": POLICY, "labels": labels },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": [rec::GROUP],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                    "resources": [rec::PLURAL],
                }]},
                "matchConditions": [{
                    "name": "written-by-a-recorder",
                    "expression": format!("request.userInfo.username == '{sa_user}'"),
                }],
                "variables": [
                    {
                        "name": "claimNode",
                        "expression": format!(
                            "has(request.userInfo.extra) && '{claim}' in request.userInfo.extra \
                             ? request.userInfo.extra['{claim}'][0] : ''"
                        ),
                    },
                    {
                        "name": "reportNode",
                        "expression": "request.operation == 'DELETE' ? oldObject.metadata.name : object.metadata.name",
                    },
                ],
                "validations": [
                    {
                        "expression": "variables.claimNode != ''",
                        // 403, not the default 422: the writer may not, the object is fine.
                        "reason": "Forbidden",
                        "message": "the recorder's token carries no node claim: it must be a pod's bound service-account token (Kubernetes 1.30+)",
                    },
                    {
                        "expression": "request.operation != 'DELETE' && variables.reportNode == variables.claimNode && object.spec.nodeName == variables.claimNode",
                        "reason": "Forbidden",
                        "messageExpression": "'a recorder on node ' + variables.claimNode + ' may write only its own node\\'s report, not ' + variables.reportNode",
                    },
                ],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": POLICY, "labels": labels },
            "spec": { "policyName": POLICY, "validationActions": ["Deny"] },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": { "name": rec::NAME, "namespace": namespace, "labels": labels },
            "spec": {
                "selector": { "matchLabels": labels },
                "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "10%" } },
                "template": pod,
            },
        }),
    ]
}

/// The API resource of a manifest (its plural is its kind's, lower-cased, plus "s", except for
/// the report's own).
fn resource_of(m: &Value) -> (ApiResource, Option<String>, String) {
    let api_version = m["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = m["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "NodeRecorderReport" => rec::PLURAL.to_string(),
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies".into(),
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings".into(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let namespace = m["metadata"]["namespace"].as_str().map(str::to_string);
    let name = m["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (
        ApiResource::from_gvk_with_plural(&gvk, &plural),
        namespace,
        name,
    )
}

fn api_for(client: &Client, m: &Value) -> (Api<DynamicObject>, String) {
    let (ar, namespace, name) = resource_of(m);
    let api = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), &ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    (api, name)
}

fn describe(m: &Value) -> String {
    let (ar, namespace, name) = resource_of(m);
    match namespace {
        Some(ns) => format!("{}/{name} in {ns}", ar.kind),
        None => format!("{}/{name}", ar.kind),
    }
}

/// Why an install step failed, in words that name the fix.
fn install_error(what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "not allowed to create {what}: {}. Installing the recorder needs cluster-admin (it \
             creates a CRD, a ClusterRole and an admission policy)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 404 && what.contains("ValidatingAdmissionPolicy") => {
            format!(
                "{what}: this API server does not serve admissionregistration.k8s.io/v1 \
                 ValidatingAdmissionPolicy (Kubernetes 1.30+): without it nothing would stop a \
                 recorder from writing another node's report, so the recorder is not installed"
            )
        }
        e => format!("{what}: {e}"),
    }
}

/// Applies the manifests (server-side apply, field manager `kubectl-nodehealth`), waiting for the
/// CRD to be served before the rest. Returns what was applied, in order.
pub async fn install(
    client: &Client,
    manifests: &[Value],
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let pp = PatchParams::apply("kubectl-nodehealth").force();
    let mut done = Vec::new();
    for m in manifests {
        let (api, name) = api_for(client, m);
        let what = describe(m);
        tokio::time::timeout(timeout, api.patch(&name, &pp, &Patch::Apply(m)))
            .await
            .map_err(|_| format!("{what}: no answer within {timeout:?}"))?
            .map_err(|e| install_error(&what, &e))?;
        if m["kind"] == "CustomResourceDefinition" {
            wait_established(&api, &name, Duration::from_secs(30)).await?;
        }
        done.push(what);
    }
    Ok(done)
}

async fn wait_established(
    api: &Api<DynamicObject>,
    name: &str,
    limit: Duration,
) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        if let Ok(crd) = api.get(name).await {
            let established = crd.data["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
            if established {
                return Ok(());
            }
        }
        if start.elapsed() > limit {
            return Err(format!(
                "the CRD {name} was not established within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes what `install` created, the CRD last (which deletes every report). Returns what was
/// deleted; what was not there is skipped.
pub async fn uninstall(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let mut deleted = Vec::new();
    let dp = DeleteParams::background();
    for m in manifests(namespace, &InstallOptions::default())
        .iter()
        .rev()
    {
        let (api, name) = api_for(client, m);
        let what = describe(m);
        match tokio::time::timeout(timeout, api.delete(&name, &dp)).await {
            Err(_) => return Err(format!("{what}: no answer within {timeout:?}")),
            Ok(Ok(_)) => deleted.push(what),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
            Ok(Err(e)) => return Err(install_error(&what, &e)),
        }
    }
    Ok(deleted)
}

/// The DaemonSet's rollout and every node's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub namespace: String,
    /// None: not installed.
    pub desired: Option<i64>,
    pub ready: Option<i64>,
    pub reports: Vec<ReportLine>,
}

/// One node's report, as `status` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportLine {
    pub node: String,
    pub age_seconds: Option<f64>,
    pub stale: bool,
    pub now: String,
    pub failed_writes: u64,
}

/// The report's resource.
pub fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(rec::GROUP, rec::VERSION, rec::KIND),
        rec::PLURAL,
    )
}

pub async fn status(client: &Client, namespace: &str) -> Result<Status, String> {
    let ds_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "DaemonSet"),
        "daemonsets",
    );
    let ds: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ds_ar);
    let (desired, ready) = match ds.get_opt(rec::NAME).await.map_err(|e| e.to_string())? {
        Some(d) => (
            d.data["status"]["desiredNumberScheduled"].as_i64(),
            d.data["status"]["numberReady"].as_i64(),
        ),
        None => (None, None),
    };
    let reports: Api<DynamicObject> = Api::all_with(client.clone(), &report_resource());
    let now = Timestamp::now();
    let list = match reports.list(&Default::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let reports = list
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter_map(|v| view(&v, now).ok())
        .map(|v| ReportLine {
            node: v.report.node.clone(),
            age_seconds: v.age_seconds,
            stale: v.stale,
            now: v.report.now.state().words(),
            failed_writes: v.report.publisher.failed_writes,
        })
        .collect();
    Ok(Status {
        namespace: namespace.to_string(),
        desired,
        ready,
        reports,
    })
}

/// A node's report as a diagnosis uses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderView {
    /// `noderecorderreports/<node>`
    pub object: String,
    /// Seconds since the API server last accepted a write of it (its managed-fields time, on
    /// the server's clock — not the node's, which may be wrong), at collection.
    pub age_seconds: Option<f64>,
    /// Older than two heartbeats: its recorder is not writing (cut off, gone, or its node down).
    pub stale: bool,
    pub report: RecorderReport,
}

/// Reads a report object (as JSON) into a view, ages it against `now` (the API server's clock
/// where known).
pub fn view(object: &Value, now: Timestamp) -> Result<RecorderView, String> {
    // The API server's server-side apply stores an empty map under a schemaless field as null
    // (seen: a stopped kubelet's `discovery.flags: {}` read back as null): nulls are dropped,
    // and every field of the report's types has a default.
    let mut status = object["status"].clone();
    drop_nulls(&mut status);
    let report: RecorderReport = serde_json::from_value(status)
        .map_err(|e| format!("not a recorder report this plugin reads: {e}"))?;
    if report.schema != rec::REPORT_SCHEMA {
        return Err(format!(
            "report schema {:?}, this plugin reads {:?}: upgrade the plugin or the recorder",
            report.schema,
            rec::REPORT_SCHEMA
        ));
    }
    // The recorder's own last write (the server stamps managedFields[].time).
    let written: Option<Timestamp> = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["manager"] == rec::NAME)
        .filter_map(|f| f["time"].as_str()?.parse().ok())
        .max();
    let age_seconds = written.map(|w| (now - w).total(jiff::Unit::Second).unwrap_or(0.0).max(0.0));
    let stale_after =
        report.publisher.heartbeat_seconds.max(10) * STALE_HEARTBEATS + STALE_SLACK_SECONDS;
    Ok(RecorderView {
        object: format!(
            "{}/{}",
            rec::PLURAL,
            object["metadata"]["name"].as_str().unwrap_or_default()
        ),
        stale: age_seconds.is_some_and(|a| a > stale_after as f64),
        age_seconds,
        report,
    })
}

/// Removes every object member whose value is null, at any depth.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The node's report, or why there is none (not installed, not yet written, not allowed).
pub async fn fetch(
    client: &Client,
    node: &str,
    timeout: Duration,
    server_time: Option<Timestamp>,
) -> Step<RecorderView> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &report_resource());
    let request = format!(
        "GET /apis/{}/{}/{}/{node}",
        rec::GROUP,
        rec::VERSION,
        rec::PLURAL
    );
    let failed = |kind, http_status, message: String| Step::Failed {
        failure: Failure {
            kind,
            request: request.clone(),
            http_status,
            needs: None,
            message,
        },
    };
    match tokio::time::timeout(timeout, api.get(node)).await {
        Err(_) => failed(
            FailureKind::Timeout,
            None,
            format!("no answer within {timeout:?}"),
        ),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Step::Skipped {
            reason: "no recorder report for this node (install the recorder: kubectl nodehealth \
                     recorder install)"
                .into(),
        },
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Step::Failed {
            failure: Failure {
                kind: FailureKind::Forbidden,
                request: request.clone(),
                http_status: Some(403),
                needs: Some(format!("get {}.{}", rec::PLURAL, rec::GROUP)),
                message: s.message,
            },
        },
        Ok(Err(e)) => failed(FailureKind::HttpError, None, e.to_string()),
        Ok(Ok(o)) => {
            let value = serde_json::to_value(&o).unwrap_or_default();
            match view(&value, server_time.unwrap_or_else(Timestamp::now)) {
                Ok(v) => Step::Collected { data: v },
                Err(e) => failed(FailureKind::Malformed, Some(200), e),
            }
        }
    }
}

/// Every report, in one list call (a 404 — no CRD — is an empty list: no recorder installed).
pub async fn list(client: &Client, timeout: Duration) -> Step<Vec<Value>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &report_resource());
    let request = format!("LIST /apis/{}/{}/{}", rec::GROUP, rec::VERSION, rec::PLURAL);
    match tokio::time::timeout(timeout, api.list(&Default::default())).await {
        Err(_) => Step::Failed {
            failure: Failure {
                kind: FailureKind::Timeout,
                request,
                http_status: None,
                needs: None,
                message: format!("no answer within {timeout:?}"),
            },
        },
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Step::Collected { data: Vec::new() },
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Step::Skipped {
            reason: format!(
                "not allowed to list the recorder's reports (list {}.{}): {}",
                rec::PLURAL,
                rec::GROUP,
                s.message
            ),
        },
        Ok(Err(e)) => Step::Failed {
            failure: Failure {
                kind: FailureKind::HttpError,
                request,
                http_status: None,
                needs: None,
                message: e.to_string(),
            },
        },
        Ok(Ok(l)) => Step::Collected {
            data: l
                .items
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
        },
    }
}

/// The reports this plugin reads (others skipped), aged against `now` (the API server's clock
/// where known).
pub fn views(objects: &[Value], now: Option<Timestamp>) -> Vec<RecorderView> {
    let now = now.unwrap_or_else(Timestamp::now);
    objects.iter().filter_map(|o| view(o, now).ok()).collect()
}

/// The timeline in words, newest last: one line per segment that is not a healthy node's, and
/// the healthy stretches as a span. Times are the node's.
pub fn timeline_lines(report: &RecorderReport) -> Vec<String> {
    let hhmmss = |ms: i64| {
        Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%H:%M:%S").to_string())
            .unwrap_or_else(|_| ms.to_string())
    };
    report
        .timeline
        .iter()
        .map(|s| {
            let span = (s.to_unix_ms - s.from_unix_ms) as f64 / 1000.0 + 1.0;
            let mut line = format!(
                "{}-{} ({}) {}",
                hhmmss(s.from_unix_ms),
                hhmmss(s.to_unix_ms),
                crate::units::human_duration(span),
                s.state.words()
            );
            if s.kubelet_pids.len() > 1 {
                line.push_str(&format!("; kubelet pids {:?} (restarted)", s.kubelet_pids));
            }
            if s.kubelet_oom_kills > 0 {
                line.push_str(&format!(
                    "; {} OOM kill(s) in the kubelet's cgroup",
                    s.kubelet_oom_kills
                ));
            }
            if let Some(io) = s.max_psi_io.filter(|v| *v >= 10.0) {
                line.push_str(&format!("; io pressure up to {io:.0}%"));
            }
            if let Some(m) = s.max_psi_memory.filter(|v| *v >= 10.0) {
                line.push_str(&format!("; memory pressure up to {m:.0}%"));
            }
            line
        })
        .collect()
}

/// The recorded PLEG in words: one line per run of ticks in the same troubled state (slow, stuck,
/// unhealthy), with the run's span and its worst relist and runtime-list means; a quiet PLEG is
/// one line. Times are the node's.
pub fn pleg_lines(report: &RecorderReport) -> Vec<String> {
    let ticks = &report.pleg;
    if ticks.is_empty() {
        return report
            .pleg_error
            .iter()
            .map(|e| format!("PLEG (recorded): no ticks; the latest scrape failed: {e}"))
            .collect();
    }
    let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let secs = |v: Option<f64>| v.map_or("-".into(), |s| format!("{s:.1}s"));
    let mut out = Vec::new();
    let mut i = 0;
    while i < ticks.len() {
        let state = &ticks[i].state;
        let mut j = i;
        let (mut relist, mut list, mut restarts) = (None, None, 0);
        while j < ticks.len() && ticks[j].state == *state {
            relist = max(relist, ticks[j].relist_mean_seconds);
            list = max(list, ticks[j].runtime_list_mean_seconds);
            restarts += u32::from(ticks[j].restarted);
            j += 1;
        }
        let run = &ticks[i..j];
        let seconds: f64 = run.iter().map(|t| t.seconds).sum();
        let from = ticks[i]
            .at
            .checked_sub(jiff::SignedDuration::from_secs_f64(ticks[i].seconds))
            .unwrap_or(ticks[i].at);
        let mut line = format!(
            "PLEG (recorded) {}-{} ({}) {state}: relists mean up to {}, the runtime's list calls up to {}",
            from.strftime("%H:%M:%S"),
            ticks[j - 1].at.strftime("%H:%M:%S"),
            crate::units::human_duration(seconds),
            secs(relist),
            secs(list),
        );
        if restarts > 0 {
            line.push_str(&format!("; the kubelet restarted {restarts} time(s)"));
        }
        out.push(line);
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodehealth_proto::recorder::{Publisher, Sample, fold};

    fn opts() -> InstallOptions {
        InstallOptions {
            image: "img:1".into(),
            pull_policy: "IfNotPresent".into(),
            kubelet_insecure_tls: false,
        }
    }

    fn sample(at: i64, kubelet: &str, pid: Option<u32>) -> Sample {
        Sample {
            at_unix_ms: at,
            kubelet: kubelet.into(),
            kubelet_pid: pid,
            healthz: if kubelet == "running" {
                "ok"
            } else {
                "refused"
            }
            .into(),
            runtime: "running".into(),
            cri: "ok".into(),
            ..Default::default()
        }
    }

    fn object(written: &str, heartbeat: u64) -> Value {
        let report = RecorderReport {
            schema: rec::REPORT_SCHEMA.into(),
            node: "vm".into(),
            timeline: fold(&[
                sample(1_796_600_000_000, "running", Some(7)),
                sample(1_796_600_001_000, "absent", None),
                sample(1_796_600_002_000, "absent", None),
            ]),
            publisher: Publisher {
                heartbeat_seconds: heartbeat,
                ..Default::default()
            },
            ..Default::default()
        };
        json!({
            "metadata": {
                "name": "vm",
                "managedFields": [
                    { "manager": "kubectl-nodehealth", "time": "2026-12-07T10:00:00Z" },
                    { "manager": rec::NAME, "time": written },
                ],
            },
            "status": report,
        })
    }

    #[test]
    fn a_report_is_aged_on_the_servers_write_time_and_stale_past_two_heartbeats() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let v = view(&object("2026-12-07T11:59:00Z", 60), now).unwrap();
        assert_eq!(v.age_seconds, Some(60.0));
        assert!(!v.stale);
        assert_eq!(v.object, "noderecorderreports/vm");
        // 2 x 60 + 15 s: 135 s is the edge.
        assert!(
            !view(&object("2026-12-07T11:57:45Z", 60), now)
                .unwrap()
                .stale
        );
        assert!(
            view(&object("2026-12-07T11:57:44Z", 60), now)
                .unwrap()
                .stale
        );
        // What the API server gives back for empty maps (null) reads as empty.
        let mut nulled = object("2026-12-07T11:59:00Z", 60);
        let mut discovery =
            serde_json::to_value(nodehealth_proto::node::Discovery::default()).unwrap();
        discovery["flags"] = Value::Null;
        let mut evidence =
            serde_json::to_value(nodehealth_proto::node::NodeEvidence::default()).unwrap();
        evidence["discovery"] = discovery;
        nulled["status"]["evidence"] = evidence;
        let v = view(&nulled, now).unwrap();
        assert!(
            v.report
                .evidence
                .unwrap()
                .discovery
                .unwrap()
                .flags
                .is_empty()
        );
        // A report from another schema is refused with the fix.
        let mut other = object("2026-12-07T11:59:00Z", 60);
        other["status"]["schema"] = json!("nodehealth/recorder/v9");
        assert!(view(&other, now).unwrap_err().contains("upgrade"));
    }

    #[test]
    fn the_timeline_reads_as_spans_of_state() {
        let v = view(&object("2026-12-07T11:59:00Z", 60), Timestamp::now()).unwrap();
        let lines = timeline_lines(&v.report);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[1].contains("kubelet absent, healthz refused"),
            "{lines:?}"
        );
        assert!(lines[1].contains("(2s)"), "{lines:?}");
    }

    #[test]
    fn the_recorded_pleg_reads_as_runs_of_state() {
        use nodehealth_proto::pleg::Tick;
        let tick = |at: i64, state: &str, mean: f64, restarted: bool| Tick {
            at: Timestamp::from_second(1_796_688_000 + at).unwrap(),
            seconds: 10.0,
            relists: 3.0,
            relist_mean_seconds: Some(mean),
            relist_slowest: None,
            interval_mean_seconds: None,
            last_seen_age_seconds: None,
            runtime_list_calls: 6.0,
            runtime_list_mean_seconds: Some(mean / 2.0),
            runtime_list_slowest: None,
            runtime_errors: 0.0,
            restarted,
            state: state.into(),
        };
        let mut r = RecorderReport {
            pleg: vec![
                tick(60, "ok", 0.002, false),
                tick(70, "slow", 1.5, true),
                tick(80, "slow", 3.1, false),
                tick(90, "ok", 0.002, false),
            ],
            ..Default::default()
        };
        let lines = pleg_lines(&r);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].contains("(20s) slow: relists mean up to 3.1s, the runtime's list calls up to 1.6s; the kubelet restarted 1 time(s)"),
            "{lines:?}"
        );
        // The span starts a tick's length before its scrape.
        assert!(lines[1].contains("-"), "{lines:?}");
        r.pleg.clear();
        assert!(pleg_lines(&r).is_empty());
        r.pleg_error = Some("kubelet https://n:10250/metrics: 403: forbidden".into());
        assert!(pleg_lines(&r)[0].contains("403"));
    }

    #[test]
    fn the_manifests_are_least_privilege_and_bound_to_the_own_node() {
        let ms = manifests("kube-system", &opts());
        let kinds: Vec<&str> = ms.iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "DaemonSet"
            ]
        );
        let role = &ms[2]["rules"];
        assert_eq!(
            role.as_array().unwrap().len(),
            2,
            "two rules: its reports, the kubelet's metrics"
        );
        assert_eq!(role[0]["verbs"], json!(["get", "create", "patch"]));
        assert_eq!(role[1]["resources"], json!(["nodes/metrics"]));
        assert_eq!(role[1]["verbs"], json!(["get"]));
        let pod = &ms[6]["spec"]["template"]["spec"];
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        let caps = sc["capabilities"]["add"].as_array().unwrap();
        assert!(
            !caps.iter().any(|c| c == "SYS_ADMIN" || c == "BPF"),
            "no tracer capabilities: {caps:?}"
        );
        assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(pod["containers"][0]["env"][1]["name"], "NODE_IP");
        // The kubelet's certificate is verified unless the operator says otherwise.
        let args = |o: &InstallOptions| {
            manifests("kube-system", o)[6]["spec"]["template"]["spec"]["containers"][0]["args"]
                .clone()
        };
        assert!(!args(&opts()).to_string().contains("insecure"));
        let insecure = InstallOptions {
            kubelet_insecure_tls: true,
            ..opts()
        };
        assert!(
            args(&insecure)
                .to_string()
                .contains("--kubelet-insecure-tls")
        );
        let policy = &ms[4]["spec"];
        assert!(
            policy["matchConditions"][0]["expression"]
                .as_str()
                .unwrap()
                .contains("system:serviceaccount:kube-system:nodehealth-recorder")
        );
        assert!(
            policy["variables"][0]["expression"]
                .as_str()
                .unwrap()
                .contains("authentication.kubernetes.io/node-name")
        );
        assert_eq!(ms[5]["spec"]["validationActions"], json!(["Deny"]));
        // The system priority class only where the Priority admission plugin allows it.
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        let elsewhere = manifests("monitoring", &opts());
        assert!(elsewhere[6]["spec"]["template"]["spec"]["priorityClassName"].is_null());
        for m in &ms {
            let (ar, _, name) = resource_of(m);
            assert!(!name.is_empty() && !ar.plural.is_empty());
        }
        assert_eq!(resource_of(&ms[4]).0.plural, "validatingadmissionpolicies");
        assert_eq!(resource_of(&ms[0]).0.plural, "customresourcedefinitions");
    }
}
