//! Who is asking for a certificate: join tokens (local mode) and service-account tokens checked
//! with the TokenReview API (cluster mode). The answer is a [`Subject`]; which SPIFFE ID it gets is
//! decided from the compiled identities, never from anything the caller wrote in its CSR.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use super::SignError;
use crate::compile::{ObjectKey, selector};
use crate::local::init::token_sha256;
use crate::state::MeshView;

/// The audience service-account tokens must be minted for.
pub const AUDIENCE: &str = "trustmesh";

/// How credentials are checked.
#[derive(Clone)]
pub enum Authenticator {
    /// Join tokens from the local directory.
    Local,
    /// Projected service-account tokens, reviewed by the apiserver.
    Kubernetes(kube::Client),
}

/// A proven caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// A local workload (`namespace/name`) running as a WorkloadIdentity.
    LocalWorkload {
        /// `namespace/name` of the LocalWorkload (the rate-limit key).
        name: String,
        /// The WorkloadIdentity it runs as.
        identity: ObjectKey,
    },
    /// A pod, from a reviewed service-account token.
    Pod {
        /// Namespace.
        namespace: String,
        /// Service account.
        service_account: String,
        /// Pod name.
        pod: String,
        /// Pod labels (for `podSelector`).
        labels: BTreeMap<String, String>,
    },
}

impl Subject {
    /// Key for per-caller rate limiting.
    pub fn rate_key(&self) -> String {
        match self {
            Self::LocalWorkload { name, .. } => format!("local/{name}"),
            Self::Pod { namespace, pod, .. } => format!("pod/{namespace}/{pod}"),
        }
    }

    /// The WorkloadIdentity that covers this subject.
    pub fn identity(&self, view: &MeshView) -> Result<ObjectKey, SignError> {
        match self {
            Self::LocalWorkload { identity, .. } => Ok(identity.clone()),
            Self::Pod { namespace, service_account, labels, .. } => view
                .compiled
                .workloads
                .iter()
                .find(|(k, w)| {
                    &k.namespace == namespace
                        && &w.service_account == service_account
                        && w.pod_selector.as_ref().is_none_or(|s| selector::matches(s, labels))
                })
                .map(|(k, _)| k.clone())
                .ok_or_else(|| SignError::NoIdentity { namespace: namespace.clone(), service_account: service_account.clone() }),
        }
    }
}

/// The credential a request carries.
pub enum Credential<'a> {
    /// A join token.
    JoinToken(&'a str),
    /// A service-account token.
    ServiceAccountToken(&'a str),
}

impl Authenticator {
    /// Checks the credential and says who the caller is.
    pub async fn authenticate(&self, cred: Option<Credential<'_>>, view: &MeshView) -> Result<Subject, SignError> {
        match (self, cred) {
            (_, None) => Err(SignError::MissingCredential),
            (Self::Local, Some(Credential::JoinToken(token))) => {
                let hash = token_sha256(token);
                // Constant-time comparison against every registered hash: no early exit on a prefix.
                let found = view.join_tokens.iter().fold(None, |found, (h, entry)| {
                    let equal = h.len() == hash.len() && h.bytes().zip(hash.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
                    if equal { Some(entry) } else { found }
                });
                let (name, identity) = found.ok_or(SignError::UnknownJoinToken)?;
                Ok(Subject::LocalWorkload { name: name.clone(), identity: identity.clone() })
            }
            (Self::Local, Some(Credential::ServiceAccountToken(_))) => Err(SignError::WrongCredentialKind {
                expected: "a join token (this operator runs in local mode)",
            }),
            (Self::Kubernetes(_), Some(Credential::JoinToken(_))) => Err(SignError::WrongCredentialKind {
                expected: "the pod's projected service-account token with audience trustmesh (this operator runs in a cluster)",
            }),
            (Self::Kubernetes(client), Some(Credential::ServiceAccountToken(token))) => review(client, token).await,
        }
    }
}

/// Reviews a service-account token with the apiserver and reads the pod it is bound to.
async fn review(client: &kube::Client, token: &str) -> Result<Subject, SignError> {
    let review = TokenReview {
        spec: TokenReviewSpec { token: token.to_owned(), audiences: Some(vec![AUDIENCE.to_owned()]) },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let reviewed = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| SignError::Backend { what: "TokenReview", reason: e.to_string() })?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status.error.unwrap_or_else(|| "not authenticated".to_owned());
        return Err(SignError::TokenRejected { label: classify_review_error(&why), reason: why });
    }
    if !status.audiences.iter().flatten().any(|a| a == AUDIENCE) {
        return Err(SignError::TokenRejected {
            label: "token_audience",
            reason: format!("the token is not for audience {AUDIENCE:?}; mount a projected token with audience {AUDIENCE}"),
        });
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) else {
        return Err(SignError::TokenRejected { label: "token_invalid", reason: format!("{username:?} is not a service account") });
    };
    let extra = user.extra.unwrap_or_default();
    let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
    let (Some(pod), Some(pod_uid)) = (first("authentication.kubernetes.io/pod-name"), first("authentication.kubernetes.io/pod-uid")) else {
        return Err(SignError::TokenRejected {
            label: "token_not_pod_bound",
            reason: "the token is not bound to a pod; use a projected service-account token, not a Secret-based one".to_owned(),
        });
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let found = pods.get(&pod).await.map_err(|e| SignError::Backend { what: "pod lookup", reason: e.to_string() })?;
    if found.metadata.uid.as_deref() != Some(pod_uid.as_str()) {
        return Err(SignError::TokenRejected { label: "token_pod_mismatch", reason: format!("pod {namespace}/{pod} was replaced since the token was issued") });
    }
    let pod_sa = found.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    if pod_sa != service_account {
        return Err(SignError::TokenRejected { label: "token_pod_mismatch", reason: format!("pod {namespace}/{pod} runs as {pod_sa}, not {service_account}") });
    }
    Ok(Subject::Pod {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod,
        labels: found.metadata.labels.unwrap_or_default(),
    })
}

/// The metric label for a TokenReview that did not authenticate, from the apiserver's error text
/// (`"[invalid bearer token, square/go-jose/jwt: validation failed, token is expired (exp)]"`,
/// `"... token audiences [\"x\"] is invalid for the target audiences [\"trustmesh\"]"`).
fn classify_review_error(error: &str) -> &'static str {
    let lower = error.to_ascii_lowercase();
    if lower.contains("expired") {
        "token_expired"
    } else if lower.contains("audience") {
        "token_audience"
    } else {
        "token_invalid"
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
