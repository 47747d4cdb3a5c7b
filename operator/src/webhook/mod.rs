//! Sidecar injection: the mutating admission webhook (`POST /inject`, HTTPS, port 15017).
//!
//! - [`inject`] (pure): pod + [`InjectionContext`] -> [`Injection`] (a JSON patch, or why not)
//!   or an [`InjectError`] (the pod is denied with its message: better than a silently unmeshed
//!   pod). The rules are documented in [`inject`](mod@inject) and [`probes`].
//! - [`review`] (pure): AdmissionReview v1 bytes in, AdmissionReview bytes out; never panics.
//! - [`serve`]: the HTTPS server around [`review`].
//!
//! Opting in: namespace label `trustmesh.dev/inject=enabled`, or pod annotation
//! `trustmesh.dev/inject: enabled`; the pod annotation `disabled` wins over the label. Pods in
//! `kube-system` and the operator's namespace are never injected, nor `hostNetwork` pods.
//!
//! Pod annotations that tune interception (validated; a bad value denies the pod):
//!
//! | annotation                              | example               | `trustmesh-sidecar init` flag |
//! |-----------------------------------------|-----------------------|-------------------------------|
//! | `trustmesh.dev/include-inbound-ports`   | `*` or `8080,8443`    | `--inbound-ports`             |
//! | `trustmesh.dev/exclude-inbound-ports`   | `9090,9091`           | `--exclude-inbound-ports`     |
//! | `trustmesh.dev/include-outbound-ports`  | `*` or `80,8080`      | `--outbound-ports`            |
//! | `trustmesh.dev/exclude-outbound-ports`  | `5432`                | `--exclude-outbound-ports`    |
//! | `trustmesh.dev/exclude-outbound-cidrs`  | `169.254.169.254/32`  | `--exclude-outbound-cidrs`    |
//!
//! The webhook writes `trustmesh.dev/status: injected` (which makes injection idempotent) and,
//! when probes forced ports out of the mesh, `trustmesh.dev/probe-excluded-inbound-ports`.

pub mod inject;
pub mod probes;
pub mod server;
#[cfg(test)]
mod tests;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

pub use inject::{InjectConfig, InjectError, Injection, InjectionContext, MtlsMode, default_resources, inject};
pub use probes::ProbePlan;
pub use server::{ContextFn, MAX_BODY_BYTES, serve};

/// Pod annotation set on injected pods (value [`STATUS_INJECTED`]).
pub const STATUS: &str = "trustmesh.dev/status";
/// Value of [`STATUS`] on an injected pod.
pub const STATUS_INJECTED: &str = "injected";
/// Pod annotation: inbound ports to redirect (`*` or a comma list).
pub const INCLUDE_INBOUND_PORTS: &str = "trustmesh.dev/include-inbound-ports";
/// Pod annotation: outbound destination ports redirected to the sidecar (`*` or a comma list).
pub const INCLUDE_OUTBOUND_PORTS: &str = "trustmesh.dev/include-outbound-ports";
/// Pod annotation: inbound ports never redirected (comma list).
pub const EXCLUDE_INBOUND_PORTS: &str = "trustmesh.dev/exclude-inbound-ports";
/// Pod annotation: outbound destination ports never redirected (comma list).
pub const EXCLUDE_OUTBOUND_PORTS: &str = "trustmesh.dev/exclude-outbound-ports";
/// Pod annotation: outbound destination CIDRs never redirected (comma list).
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "trustmesh.dev/exclude-outbound-cidrs";
/// Pod annotation written by the webhook: ports left out of inbound interception for probes.
pub const PROBE_EXCLUDED_PORTS: &str = "trustmesh.dev/probe-excluded-inbound-ports";

/// The iptables init container.
pub const INIT_CONTAINER: &str = "trustmesh-init";
/// The sidecar (a native sidecar init container).
pub const SIDECAR_CONTAINER: &str = "trustmesh-sidecar";
/// Projected service-account token volume.
pub const TOKEN_VOLUME: &str = "trustmesh-token";
/// Trust bundle ConfigMap volume.
pub const BUNDLE_VOLUME: &str = "trustmesh-bundle";
/// In-memory `/run` of the init container (iptables' lock file).
pub const RUN_VOLUME: &str = "trustmesh-run";
/// Audience of the projected token the operator's TokenReview expects.
pub const TOKEN_AUDIENCE: &str = "trustmesh";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/trustmesh/token";
/// The token's file name in [`TOKEN_DIR`].
pub const TOKEN_PATH: &str = "token";
/// Where the bundle volume is mounted in the sidecar.
pub const BUNDLE_DIR: &str = "/var/run/trustmesh/bundle";
/// The bundle's key in the ConfigMap and file name in [`BUNDLE_DIR`].
pub const BUNDLE_KEY: &str = "ca.crt";
/// Sidecar ports (see DESIGN.md, "Data plane").
pub const OUTBOUND_PORT: u16 = 15001;
/// Inbound listener.
pub const INBOUND_PORT: u16 = 15006;
/// Admin port (`/ready`, `/live`, `/app-health/...`), never redirected.
pub const ADMIN_PORT: u16 = 15020;

/// Answers one AdmissionReview (v1) request body with an AdmissionReview response body.
///
/// `contexts` gives the [`InjectionContext`] for a namespace (the operator looks the
/// namespace's labels up in its cache). A Pod CREATE gets the injection patch, or is allowed
/// unchanged ([`Injection::Skip`]), or denied with the [`InjectError`]'s message. Other
/// operations and kinds are allowed unchanged. Input that is not an AdmissionReview gets
/// `allowed: false` with a message (and the request's `uid` when it can be found).
pub fn review(body: &[u8], contexts: impl Fn(&str) -> InjectionContext) -> Vec<u8> {
    let review = respond(body, contexts).into_review();
    serde_json::to_vec(&review).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serializing the AdmissionReview response failed");
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false,"status":{"message":"trustmesh webhook: internal error"}}}"#.to_vec()
    })
}

fn respond(body: &[u8], contexts: impl Fn(&str) -> InjectionContext) -> AdmissionResponse {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return invalid(body, format!("trustmesh webhook: the request body is not an AdmissionReview: {e}")),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return invalid(body, "trustmesh webhook: the AdmissionReview has no request"),
    };
    let resp = AdmissionResponse::from(&req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod" && req.sub_resource.as_deref().unwrap_or("").is_empty();
    if !is_pod || req.operation != Operation::Create {
        tracing::debug!(uid = %req.uid, kind = %req.kind.kind, operation = ?req.operation, "not a Pod CREATE: allowed unchanged");
        return resp;
    }
    let pod: Pod = match req.object.as_ref().map(|o| serde_json::to_value(o).and_then(serde_json::from_value)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return deny(resp, &req, format!("trustmesh webhook: the pod could not be read: {e}")),
        None => return deny(resp, &req, "trustmesh webhook: a Pod CREATE without an object".into()),
    };
    let Some(namespace) = req.namespace.clone().or_else(|| pod.metadata.namespace.clone()) else {
        return deny(resp, &req, "trustmesh webhook: the request names no namespace".into());
    };
    let ctx = contexts(&namespace);
    let (name, generate_name) = (pod.metadata.name.as_deref().unwrap_or(""), pod.metadata.generate_name.as_deref().unwrap_or(""));
    match inject(&pod, &ctx) {
        Ok(Injection::Skip(reason)) => {
            tracing::info!(uid = %req.uid, %namespace, name, generate_name, decision = "skip", reason, "pod not injected");
            resp
        }
        Ok(Injection::Patch { ops, warnings }) => {
            for w in &warnings {
                tracing::warn!(uid = %req.uid, %namespace, name, generate_name, warning = %w, "injection warning");
            }
            match resp.clone().with_patch(json_patch::Patch(ops)) {
                Ok(mut r) => {
                    tracing::info!(uid = %req.uid, %namespace, name, generate_name, decision = "inject", reason = "opted in", "sidecar injected");
                    if !warnings.is_empty() {
                        r.warnings = Some(warnings);
                    }
                    r
                }
                Err(e) => deny(resp, &req, format!("trustmesh webhook: serializing the patch failed: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(uid = %req.uid, %namespace, name, generate_name, decision = "deny", reason = %e, "pod denied");
            let mut r = resp.deny(format!("trustmesh: {e}"));
            r.result.code = 403;
            r.result.reason = "Forbidden".into();
            r
        }
    }
}

fn deny(resp: AdmissionResponse, req: &AdmissionRequest<DynamicObject>, message: String) -> AdmissionResponse {
    tracing::warn!(uid = %req.uid, namespace = req.namespace.as_deref().unwrap_or(""), name = %req.name, decision = "deny", reason = %message, "malformed pod request");
    let mut r = resp.deny(message);
    r.result.code = 400;
    r.result.reason = "BadRequest".into();
    r
}

/// `allowed: false` for input that is not a readable AdmissionReview; keeps the `uid` when the
/// body is JSON with `request.uid`, so the API server can match the answer.
fn invalid(body: &[u8], message: impl Into<String>) -> AdmissionResponse {
    let message = message.into();
    tracing::warn!(reason = %message, "malformed AdmissionReview");
    let mut r = AdmissionResponse::invalid(&message);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(uid) = v.pointer("/request/uid").and_then(serde_json::Value::as_str)
    {
        r.uid = uid.to_owned();
    }
    r.result.code = 400;
    r
}
