//! Keeping the kubelet's health probes working once the pod's inbound traffic goes through the
//! sidecar.
//!
//! After `trustmesh-sidecar init`, every inbound TCP connection to an app port is redirected to
//! the sidecar's inbound listener, which requires mutual TLS (strict mode). The kubelet has no
//! mesh certificate, so its probes would fail. What happens to each probe:
//!
//! | probe                         | what the webhook does                                          |
//! |-------------------------------|----------------------------------------------------------------|
//! | `httpGet` (HTTP) on port P    | rewritten to `httpGet` port 15020, path `/app-health/P/<path>`; the sidecar's admin port (never redirected) forwards it to `127.0.0.1:P`; `P:/path` goes to a `--probe-path` flag |
//! | `httpGet` with `scheme: HTTPS`| left as is; P is **excluded from inbound redirection**          |
//! | `tcpSocket` on port P         | left as is; P is **excluded from inbound redirection**          |
//! | `grpc` on port P              | left as is; P is **excluded from inbound redirection**          |
//! | `exec`                        | left as is (it runs inside the container, no network)          |
//! | any probe with a `host` set   | left as is (it does not target the pod)                        |
//!
//! Named ports (`port: http`) are resolved against the probed container's `ports`. A name that
//! does not resolve leaves the probe untouched (the kubelet would fail it anyway) with a warning.
//!
//! An excluded port is reachable **without the mesh**: no mTLS, no AccessPolicy. That is the price
//! of keeping such probes working until the sidecar can run TCP/gRPC checks itself; the webhook
//! records those ports in the `trustmesh.dev/probe-excluded-inbound-ports` annotation and returns
//! an admission warning, so the gap is visible. Prefer HTTP probes on meshed pods.
//!
//! The sidecar forwards exactly the path and query the probe names, byte for byte (no
//! normalization: it matches the configured probe exactly), as a plain HTTP GET on loopback
//! without the probe's custom headers, so the app must listen on `127.0.0.1` or `0.0.0.0`. A
//! probe path that is not a valid URI path and query (`/a b`, a fragment) is left as is and its
//! port excluded, like an HTTPS probe.
//! Lifecycle hooks (`postStart`/`preStop` `httpGet`) are not rewritten.
//!
//! Probes of app containers (`spec.containers`) and of the pod's own native sidecars
//! (init containers with `restartPolicy: Always`) are handled; plain init containers have none.

use std::collections::BTreeSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::ADMIN_PORT;

/// What probe rewriting means for one pod.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProbePlan {
    /// `replace` operations on `.../<probe>/httpGet`, against the pod as submitted.
    pub ops: Vec<PatchOperation>,
    /// Exactly the probes the sidecar forwards, as `port:/path?query` (one `--probe-path` each); nothing else
    /// on the app is reachable through the admin port.
    pub probe_paths: BTreeSet<String>,
    /// App ports that must bypass inbound redirection for their probes to work.
    pub excluded_inbound_ports: BTreeSet<u16>,
    /// Messages for the pod's author (admission warnings).
    pub warnings: Vec<String>,
}

/// A probe field of a container: JSON name and accessor.
type ProbeField = (&'static str, fn(&Container) -> Option<&Probe>);

/// The three probe fields of a container.
const PROBES: [ProbeField; 3] = [
    ("livenessProbe", |c| c.liveness_probe.as_ref()),
    ("readinessProbe", |c| c.readiness_probe.as_ref()),
    ("startupProbe", |c| c.startup_probe.as_ref()),
];

/// Plans the probe changes for `spec`'s app containers and the pod's own native sidecars.
pub fn plan(spec: &PodSpec) -> ProbePlan {
    let mut plan = ProbePlan::default();
    for (i, c) in spec.containers.iter().enumerate() {
        plan_container(&mut plan, "containers", i, c);
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        if c.restart_policy.as_deref() == Some("Always") {
            plan_container(&mut plan, "initContainers", i, c);
        }
    }
    plan
}

fn plan_container(plan: &mut ProbePlan, list: &str, index: usize, c: &Container) {
    for (field, get) in PROBES {
        let Some(probe) = get(c) else { continue };
        let what = format!("{field} of container {:?}", c.name);
        if let Some(http) = &probe.http_get {
            if http.host.as_deref().is_some_and(|h| !h.is_empty()) {
                continue;
            }
            let Some(port) = resolve(c, &http.port, plan, &what) else { continue };
            if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
                exclude(plan, port, &what, "an HTTPS probe");
                continue;
            }
            let Some(probe_path) = probe_target(http.path.as_deref()) else {
                exclude(plan, port, &what, "a probe whose path is not a valid URI path and query");
                continue;
            };
            let path = PointerBuf::from_tokens([String::from("spec"), list.to_owned(), index.to_string(), field.to_owned(), "httpGet".to_owned()]);
            plan.ops.push(PatchOperation::Replace(ReplaceOperation { path, value: rewritten(http, port, &probe_path) }));
            plan.probe_paths.insert(format!("{port}:{probe_path}"));
        } else if let Some(tcp) = &probe.tcp_socket {
            if tcp.host.as_deref().is_some_and(|h| !h.is_empty()) {
                continue;
            }
            if let Some(port) = resolve(c, &tcp.port, plan, &what) {
                exclude(plan, port, &what, "a tcpSocket probe");
            }
        } else if let Some(grpc) = &probe.grpc
            && let Some(port) = resolve(c, &IntOrString::Int(grpc.port), plan, &what)
        {
            exclude(plan, port, &what, "a gRPC probe");
        }
    }
}

/// The path and query the kubelet requests (`/` when empty, a leading `/` added as the kubelet
/// does), or `None` when it is not a valid URI path and query.
fn probe_target(path: Option<&str>) -> Option<String> {
    let path = path.filter(|p| !p.is_empty()).unwrap_or("/");
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let parsed: http::uri::PathAndQuery = path.parse().ok()?;
    (parsed.as_str() == path && !path.contains('#')).then_some(path)
}

/// The probe as the sidecar's admin port serves it.
fn rewritten(http: &HTTPGetAction, port: u16, target: &str) -> Value {
    let rest = target.strip_prefix('/').unwrap_or(target);
    let mut v = json!({
        "path": format!("/app-health/{port}/{rest}"),
        "port": ADMIN_PORT,
        "scheme": "HTTP",
    });
    if let (Some(headers), Some(obj)) = (&http.http_headers, v.as_object_mut()) {
        // Kept for the kubelet's sake; the sidecar does not forward them.
        obj.insert("httpHeaders".into(), serde_json::to_value(headers).unwrap_or(Value::Null));
    }
    v
}

fn exclude(plan: &mut ProbePlan, port: u16, what: &str, kind: &str) {
    if plan.excluded_inbound_ports.insert(port) {
        plan.warnings.push(format!(
            "trustmesh: port {port} is excluded from the mesh's inbound interception because {what} is {kind}, \
             which the sidecar cannot forward; traffic to that port is not authenticated or authorized by the mesh. \
             Use an httpGet (HTTP) probe to keep the port meshed"
        ));
    }
}

/// The numeric port a probe targets; named ports resolve through the container's `ports`.
fn resolve(c: &Container, port: &IntOrString, plan: &mut ProbePlan, what: &str) -> Option<u16> {
    let found = match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .filter(|p| *p != 0),
    };
    if found.is_none() {
        let shown = match port {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => format!("{s:?}"),
        };
        plan.warnings.push(format!(
            "trustmesh: {what} targets port {shown}, which is not a port number or a named port of the container; left unchanged"
        ));
    }
    found
}
