//! `kubectl nodehealth rbac`: the permissions the plugin uses, as a ClusterRole (cluster-scoped
//! reads) and a Role in the probe pod's namespace (the probe Job and its pod) — exactly the
//! requests the code makes, one comment per rule naming what needs it. The end-to-end tier binds
//! a fresh user to this output and gets a full diagnosis, and removes each rule in turn to see
//! the check that needed it name the missing permission.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::Error;

/// One RBAC rule and why the plugin needs it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// What needs it (a comment in the YAML).
    pub why: &'static str,
    /// What the plugin says when it is missing (a phrase of its message).
    pub missing_says: &'static str,
}

/// Cluster-scoped: the Node, its kubelet through the API server's node proxy, leases, CSRs,
/// events.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        api_group: "",
        resources: &["nodes"],
        verbs: &["get", "list"],
        why: "the Node: conditions, addresses, versions (node-ready, pressure, versions); list: \
              close names for a mistyped node, `scan`, completion",
        missing_says: "get nodes",
    },
    Rule {
        api_group: "",
        resources: &["nodes/proxy"],
        verbs: &["get"],
        why: "the kubelet through the API server's node proxy: healthz, metrics (PLEG, runtime \
              calls, certificates), configz, stats/summary, the goroutine dump, node log query. \
              WARNING: get nodes/proxy also lets the holder exec into every pod on the node \
              through the kubelet's API; grant it to operators, not to workloads",
        missing_says: "get nodes/proxy",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "list"],
        why: "the node's lease in kube-node-lease (heartbeat age), all node leases (a partition \
              makes many stale at once), kube-controller-manager's lease in kube-system (the CSR \
              approver is alive)",
        missing_says: "leases",
    },
    Rule {
        api_group: "certificates.k8s.io",
        resources: &["certificatesigningrequests"],
        verbs: &["list"],
        why: "the node's pending client-certificate requests (rotation stuck, approver down)",
        missing_says: "certificatesigningrequests",
    },
    Rule {
        api_group: "",
        resources: &["events"],
        verbs: &["list"],
        why: "recent warning events about the node (eviction, image GC, OOM, rebooted), and the \
              Job controller's FailedCreate event when the probe pod is refused",
        missing_says: "events",
    },
    Rule {
        api_group: "nodehealth.io",
        resources: &["noderecorderreports"],
        verbs: &["get", "list"],
        why: "the node's flight-recorder report (`recorder install`): its node evidence when no \
              probe pod starts, its timeline; optional (without it the run says so and goes on); \
              list: `recorder status`",
        missing_says: "get noderecorderreports",
    },
];

/// In the probe pod's namespace: the probe Job, its pod, and the port-forward to the agent.
pub const NAMESPACE_RULES: &[Rule] = &[
    Rule {
        api_group: "batch",
        resources: &["jobs"],
        verbs: &["create", "list", "delete"],
        why: "the probe Job (one per run, deadline and TTL set); list and delete: deleting it after \
              the run, `cleanup`",
        missing_says: "create jobs",
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["list", "delete"],
        why: "the Job's pod: its state while it starts (image, admission, PLEG), deleting it at \
              once after the run, `cleanup`",
        missing_says: "list pods",
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["create"],
        why: "only when the Job controller has not created the probe pod within 10 s \
              (kube-controller-manager down): the plugin creates it, owned by the Job",
        missing_says: "create pods",
    },
    Rule {
        api_group: "",
        resources: &["pods/portforward"],
        verbs: &["get", "create"],
        why: "the agent's gRPC port, reached through the API server (no node port, no host \
              network exposure)",
        missing_says: "pods/portforward",
    },
];

/// Who to bind the roles to (`--bind user:NAME|group:NAME|serviceaccount:NS:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

impl std::str::FromStr for Subject {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.splitn(3, ':').collect();
        match parts.as_slice() {
            ["user", name] if !name.is_empty() => Ok(Subject::User(name.to_string())),
            ["group", name] if !name.is_empty() => Ok(Subject::Group(name.to_string())),
            ["serviceaccount", ns, name] if !ns.is_empty() && !name.is_empty() => {
                Ok(Subject::ServiceAccount {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "{text:?}: expected user:NAME, group:NAME or serviceaccount:NAMESPACE:NAME"
            )),
        }
    }
}

impl Subject {
    fn json(&self) -> Value {
        match self {
            Subject::User(name) => {
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name})
            }
            Subject::Group(name) => {
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name})
            }
            Subject::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
            }
        }
    }
}

/// The names of the objects.
pub const CLUSTER_ROLE: &str = "nodehealth";
/// The Role in the probe namespace.
pub const PROBE_ROLE: &str = "nodehealth-probe";

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";

fn labels() -> Value {
    json!({"app.kubernetes.io/name": "nodehealth"})
}

fn rule_json(r: &Rule) -> Value {
    json!({"apiGroups": [r.api_group], "resources": r.resources, "verbs": r.verbs})
}

/// The objects, in order: ClusterRole, Role, and with subjects their bindings.
pub fn objects(namespace: &str, subjects: &[Subject]) -> Vec<Value> {
    let mut out = vec![
        json!({
            "apiVersion": RBAC_V1, "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE, "labels": labels()},
            "rules": CLUSTER_RULES.iter().map(rule_json).collect::<Vec<_>>(),
        }),
        json!({
            "apiVersion": RBAC_V1, "kind": "Role",
            "metadata": {"name": PROBE_ROLE, "namespace": namespace, "labels": labels()},
            "rules": NAMESPACE_RULES.iter().map(rule_json).collect::<Vec<_>>(),
        }),
    ];
    if !subjects.is_empty() {
        let subjects: Vec<Value> = subjects.iter().map(Subject::json).collect();
        out.push(json!({
            "apiVersion": RBAC_V1, "kind": "ClusterRoleBinding",
            "metadata": {"name": CLUSTER_ROLE, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
            "subjects": subjects,
        }));
        out.push(json!({
            "apiVersion": RBAC_V1, "kind": "RoleBinding",
            "metadata": {"name": PROBE_ROLE, "namespace": namespace, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROBE_ROLE},
            "subjects": subjects,
        }));
    }
    out
}

/// A `v1 List` of [`objects`] (`-o json`).
pub fn list(namespace: &str, subjects: &[Subject]) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": objects(namespace, subjects)})
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wraps a comment at ~96 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + word.len() > 96 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

fn yaml_rules(out: &mut String, rules: &[Rule]) {
    out.push_str("rules:\n");
    for r in rules {
        comment(out, r.why);
        let _ = writeln!(out, "- apiGroups: [\"{}\"]", r.api_group);
        let _ = writeln!(out, "  resources: [{}]", quoted(r.resources));
        let _ = writeln!(out, "  verbs: [{}]", quoted(r.verbs));
    }
}

/// The YAML a person applies (`kubectl apply -f -`), commented.
pub fn yaml(namespace: &str, subjects: &[Subject]) -> Result<String, Error> {
    let mut out = String::new();
    comment(
        &mut out,
        "kubectl nodehealth: exactly the permissions it uses (`kubectl nodehealth rbac`). The \
         ClusterRole reads the node and its kubelet; the Role creates the probe Job in the probe \
         namespace. With --api-only only the ClusterRole is needed; `cleanup -A` also needs list \
         and delete on jobs and pods in every namespace (not granted here).",
    );
    comment(
        &mut out,
        "WARNING: `get nodes/proxy` also allows exec into every pod on a node through the \
         kubelet's API. Bind this to the people who diagnose nodes, not to workloads.",
    );
    let _ = writeln!(
        out,
        "apiVersion: {RBAC_V1}\nkind: ClusterRole\nmetadata:\n  name: {CLUSTER_ROLE}\n  labels:\n    app.kubernetes.io/name: nodehealth"
    );
    yaml_rules(&mut out, CLUSTER_RULES);
    let _ = writeln!(
        out,
        "---\napiVersion: {RBAC_V1}\nkind: Role\nmetadata:\n  name: {PROBE_ROLE}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/name: nodehealth"
    );
    yaml_rules(&mut out, NAMESPACE_RULES);
    // The bindings have nothing to comment: serialise them.
    for binding in objects(namespace, subjects).into_iter().skip(2) {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(&binding).map_err(|e| Error::Serialize {
                format: "yaml",
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse() {
        assert_eq!("user:jane".parse(), Ok(Subject::User("jane".into())));
        assert_eq!("group:sre".parse(), Ok(Subject::Group("sre".into())));
        assert_eq!(
            "serviceaccount:ops:diag".parse(),
            Ok(Subject::ServiceAccount {
                namespace: "ops".into(),
                name: "diag".into()
            })
        );
        for bad in ["jane", "user:", "serviceaccount:ops", "robot:x"] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }

    /// The YAML says what the JSON says, rule for rule (the comments are the only difference).
    #[test]
    fn yaml_and_json_agree() {
        let subjects = ["user:jane".parse().unwrap()];
        let text = yaml("ops", &subjects).unwrap();
        let docs: Vec<&str> = text.split("\n---\n").collect();
        assert_eq!(docs.len(), 4, "{text}");
        assert!(text.contains("WARNING: `get nodes/proxy` also allows exec"));
        let objects = objects("ops", &subjects);
        for (doc, object) in docs.iter().zip(&objects) {
            for rule in object["rules"].as_array().into_iter().flatten() {
                let line = format!(
                    "  resources: [{}]\n  verbs: [{}]",
                    quoted(
                        &rule["resources"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_str().unwrap())
                            .collect::<Vec<_>>()
                    ),
                    quoted(
                        &rule["verbs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_str().unwrap())
                            .collect::<Vec<_>>()
                    )
                );
                assert!(doc.contains(&line), "{line} in {doc}");
            }
        }
        assert!(docs[1].contains("namespace: ops"));
        assert!(docs[3].contains("kind: RoleBinding") && docs[3].contains("jane"));
        // Each rule has its comment right above it.
        assert_eq!(
            text.matches("\n- apiGroups").count(),
            CLUSTER_RULES.len() + NAMESPACE_RULES.len()
        );
        for line in text.lines() {
            assert!(line.len() <= 120, "{line}");
        }
    }

    /// Every permission the code names when refused is granted by a rule.
    #[test]
    fn every_needed_permission_is_granted() {
        let all: Vec<&Rule> = CLUSTER_RULES.iter().chain(NAMESPACE_RULES).collect();
        for needed in [
            "get nodes",
            "get nodes/proxy",
            "list leases",
            "get leases",
            "list certificatesigningrequests",
            "list events",
            "create jobs",
            "delete jobs",
            "list pods",
            "create pods",
            "create pods/portforward",
        ] {
            let (verb, resource) = needed.split_once(' ').unwrap();
            assert!(
                all.iter()
                    .any(|r| r.resources.contains(&resource) && r.verbs.contains(&verb)),
                "{needed}"
            );
        }
    }
}
