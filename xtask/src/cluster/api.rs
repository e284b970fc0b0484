//! The few API calls the harness makes, with the admin client certificate through curl (keeps the
//! xtask build small; the plugin and the tests use kube-rs).

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{API_PORT, Layout};

/// Sends a request as the cluster admin; returns the status code and body.
pub fn request(
    l: &Layout,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-X", method])
        .arg("--cacert")
        .arg(l.pki("ca.crt"))
        .arg("--cert")
        .arg(l.pki("admin.crt"))
        .arg("--key")
        .arg(l.pki("admin.key"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{API_PORT}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd.spawn().context("running curl")?;
    if let Some(b) = body {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(serde_json::to_string(b)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code: u16 = code.trim().parse().unwrap_or(0);
    Ok((code, body.to_string()))
}

/// The API server answers /readyz with 200.
pub fn ready(l: &Layout) -> bool {
    l.pki("admin.crt").exists()
        && request(l, "GET", "/readyz", None).is_ok_and(|(code, _)| code == 200)
}

fn get_json(l: &Layout, path: &str) -> Result<Option<Value>> {
    let (code, body) = request(l, "GET", path, None)?;
    match code {
        200 => Ok(Some(serde_json::from_str(&body)?)),
        404 => Ok(None),
        _ => bail!("GET {path}: HTTP {code}"),
    }
}

/// The node's Ready condition status ("True", "False", "Unknown"), None if the node is absent.
pub fn node_ready(l: &Layout, node: &str) -> Result<Option<String>> {
    let Some(n) = get_json(l, &format!("/api/v1/nodes/{node}"))? else {
        return Ok(None);
    };
    Ok(n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .map(str::to_string))
}

/// The node's Ready condition: its status and `lastHeartbeatTime` (RFC 3339, UTC), None if the
/// node or the condition is absent.
pub fn ready_heartbeat(l: &Layout, node: &str) -> Result<Option<(String, String)>> {
    let Some(n) = get_json(l, &format!("/api/v1/nodes/{node}"))? else {
        return Ok(None);
    };
    Ok(n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("lastHeartbeatTime"))
        }))
}

/// `kubelet_pleg_relist_duration_seconds` (sum, count) from the kubelet's metrics, fetched
/// through the API server's node proxy.
pub fn relist_histogram(l: &Layout, node: &str) -> Result<(f64, f64)> {
    let path = format!("/api/v1/nodes/{node}/proxy/metrics");
    let (code, body) = request(l, "GET", &path, None)?;
    if code != 200 {
        bail!("GET {path}: HTTP {code}");
    }
    histogram_sum_count(&body, "kubelet_pleg_relist_duration_seconds")
        .with_context(|| format!("no kubelet_pleg_relist_duration_seconds in {path}"))
}

/// How many of the kubelet's runtime operations of these types took longer than the histogram
/// bound `le` (a bucket bound of `kubelet_runtime_operations_duration_seconds`), since it started.
pub fn runtime_operations_above(l: &Layout, node: &str, ops: &[&str], le: &str) -> Result<f64> {
    let path = format!("/api/v1/nodes/{node}/proxy/metrics");
    let (code, body) = request(l, "GET", &path, None)?;
    if code != 200 {
        bail!("GET {path}: HTTP {code}");
    }
    Ok(operations_above(&body, ops, le))
}

fn operations_above(text: &str, ops: &[&str], le: &str) -> f64 {
    const NAME: &str = "kubelet_runtime_operations_duration_seconds";
    let mut total = 0.0;
    for op in ops {
        let label = format!("operation_type=\"{op}\"");
        let value = |series: &str, extra: Option<&str>| {
            text.lines().find_map(|l| {
                let (s, v) = l.rsplit_once(' ')?;
                (s.starts_with(series) && s.contains(&label) && extra.is_none_or(|e| s.contains(e)))
                    .then(|| v.parse::<f64>().ok())
                    .flatten()
            })
        };
        let bound = format!("le=\"{le}\"");
        if let (Some(count), Some(below)) = (
            value(&format!("{NAME}_count{{"), None),
            value(&format!("{NAME}_bucket{{"), Some(&bound)),
        ) {
            total += count - below;
        }
    }
    total
}

/// An unlabelled histogram's `_sum` and `_count` in Prometheus text.
fn histogram_sum_count(text: &str, name: &str) -> Option<(f64, f64)> {
    let value = |suffix: &str| {
        let series = format!("{name}_{suffix}");
        text.lines().find_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            (s == series || s == format!("{series}{{}}"))
                .then(|| v.parse::<f64>().ok())
                .flatten()
        })
    };
    Some((value("sum")?, value("count")?))
}

/// The start of the next whole second, as the API server writes times ("2026-11-24T10:00:01Z"),
/// once it has begun: every time the API server records from then on (second precision, as in
/// condition heartbeats, or finer, as in lease renewals) is `at_or_after` it, and nothing recorded
/// before the call is.
pub fn next_second() -> String {
    let now = time::OffsetDateTime::now_utc();
    let next = now.replace_nanosecond(0).expect("0 ns is valid") + time::Duration::SECOND;
    if let Ok(wait) = Duration::try_from(next - now) {
        std::thread::sleep(wait);
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        next.year(),
        u8::from(next.month()),
        next.day(),
        next.hour(),
        next.minute(),
        next.second()
    )
}

/// Whether the API server time `t` ("...T10:00:01Z" or "...T10:00:01.123456Z", UTC) is in or
/// after the whole second `second` (from `next_second`).
pub fn at_or_after(t: &str, second: &str) -> bool {
    // "YYYY-MM-DDTHH:MM:SS" compares in time order as text.
    t.get(..19).is_some_and(|t| Some(t) >= second.get(..19))
}

/// The node lease's renewTime.
pub fn lease_renew_time(l: &Layout, node: &str) -> Result<Option<String>> {
    Ok(get_json(
        l,
        &format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"),
    )?
    .and_then(|v| v["spec"]["renewTime"].as_str().map(str::to_string)))
}

fn create(l: &Layout, path: &str, object: Value) -> Result<()> {
    let (code, body) = request(l, "POST", path, Some(&object))?;
    match code {
        200 | 201 | 409 => Ok(()),
        _ => bail!("POST {path}: HTTP {code}: {body}"),
    }
}

/// RBAC that kubeadm would create, plus the tests' restricted viewer.
pub fn bootstrap_rbac(l: &Layout) -> Result<()> {
    let crb = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
    // Nodes may renew their own client certificate and have it auto-approved (csrapproving).
    create(
        l,
        crb,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "nodehealth:node-autoapprove-certificate-rotation"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        }),
    )?;
    create(
        l,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "nodehealth:viewer"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes", "events", "pods", "namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
            ],
        }),
    )?;
    create(
        l,
        crb,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "nodehealth:viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nodehealth:viewer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nodehealth-viewer"}],
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relist_histogram_is_read_from_prometheus_text() {
        let text = "# TYPE kubelet_pleg_relist_duration_seconds histogram\n\
            kubelet_pleg_relist_duration_seconds_bucket{le=\"+Inf\"} 7\n\
            kubelet_pleg_relist_duration_seconds_sum 3.5\n\
            kubelet_pleg_relist_duration_seconds_count 7\n\
            kubelet_pleg_relist_interval_seconds_sum 9\n";
        assert_eq!(
            histogram_sum_count(text, "kubelet_pleg_relist_duration_seconds"),
            Some((3.5, 7.0))
        );
        assert_eq!(histogram_sum_count(text, "absent"), None);
    }

    #[test]
    fn api_times_compare_by_the_second() {
        let second = "2026-11-24T10:00:01Z";
        assert!(at_or_after("2026-11-24T10:00:01Z", second));
        assert!(at_or_after("2026-11-24T10:00:01.000001Z", second));
        assert!(at_or_after("2026-11-24T10:01:00Z", second));
        assert!(!at_or_after("2026-11-24T10:00:00.999999Z", second));
        assert!(!at_or_after("", second));
        let before = time::OffsetDateTime::now_utc().unix_timestamp();
        let next = next_second();
        assert_eq!(next.len(), second.len());
        assert!(time::OffsetDateTime::now_utc().unix_timestamp() > before);
    }
}
