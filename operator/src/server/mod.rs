//! gRPC servers of the control plane: `Identity.Sign` (CSR signing), over TLS with the operator's
//! own SVID.

mod auth;
pub mod config;
mod identity;
pub mod incoming;
pub mod ratelimit;

use std::time::Duration;

pub use auth::{AUDIENCE, Authenticator, Credential, Subject};
pub use config::{ConfigService, ProxyRegistry};
pub use identity::{IdentityService, IssuedCounts};

use crate::ca::CaError;

/// Why a signing request was refused. Each variant is a gRPC status with a message a person can
/// act on, and a metric label.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No credential in the request.
    #[error("the request carries no credential; send the workload's join token (local mode) or the pod's projected service-account token (cluster mode)")]
    MissingCredential,
    /// The join token is not registered.
    #[error("the join token is not registered; use the token in DIR/tokens/<name> of a LocalWorkload, or create one")]
    UnknownJoinToken,
    /// A credential of the other mode.
    #[error("wrong kind of credential: send {expected}")]
    WrongCredentialKind {
        /// What this operator takes.
        expected: &'static str,
    },
    /// The apiserver did not vouch for the service-account token.
    #[error("service-account token refused: {reason}")]
    TokenRejected {
        /// The metric label: `token_expired`, `token_audience`, `token_not_pod_bound`,
        /// `token_pod_mismatch` or `token_invalid`.
        label: &'static str,
        /// Why.
        reason: String,
    },
    /// No WorkloadIdentity covers the caller.
    #[error("no WorkloadIdentity selects service account {namespace}/{service_account}; create one with spec.serviceAccount: {service_account} in namespace {namespace}, or fix the pod's serviceAccountName")]
    NoIdentity {
        /// Namespace.
        namespace: String,
        /// Service account.
        service_account: String,
    },
    /// The WorkloadIdentity named by a local workload does not exist.
    #[error("WorkloadIdentity {0} does not exist; create it or fix the LocalWorkload's spec.identity")]
    IdentityMissing(String),
    /// The WorkloadIdentity exists but has problems.
    #[error("WorkloadIdentity {key} is not Ready: {problem}")]
    IdentityNotReady {
        /// `namespace/name`.
        key: String,
        /// The first problem.
        problem: String,
    },
    /// The identity is quarantined.
    #[error("identity {spiffe_id} is suspended (quarantined by WorkloadIdentity {key}); no certificates are issued until spec.suspended is false")]
    Suspended {
        /// The SPIFFE ID.
        spiffe_id: String,
        /// `namespace/name`.
        key: String,
    },
    /// Too many refused credentials from one address: it is not heard again until it slows down.
    #[error("too many refused credentials from {peer}; retry in {}s with a valid token", retry_after.as_secs().max(1))]
    TooManyFailures {
        /// The caller's address.
        peer: std::net::IpAddr,
        /// When a request is heard again.
        retry_after: Duration,
    },
    /// Too many requests from one caller.
    #[error("too many signing requests from {caller}; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited {
        /// The caller (rate-limit key).
        caller: String,
        /// When a token is available again.
        retry_after: Duration,
    },
    /// The CSR is malformed or its key is not P-256.
    #[error("{0}")]
    BadCsr(CaError),
    /// The CA could not sign (expired CA, internal error).
    #[error("the CA could not sign: {0}")]
    CaFailure(CaError),
    /// A Kubernetes API call failed.
    #[error("{what} failed: {reason}; check the operator's RBAC and the apiserver")]
    Backend {
        /// Which call.
        what: &'static str,
        /// The error.
        reason: String,
    },
}

impl SignError {
    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::MissingCredential | Self::UnknownJoinToken | Self::WrongCredentialKind { .. } | Self::TokenRejected { .. } => {
                Code::Unauthenticated
            }
            Self::NoIdentity { .. } | Self::IdentityMissing(_) => Code::NotFound,
            Self::IdentityNotReady { .. } => Code::FailedPrecondition,
            Self::Suspended { .. } => Code::PermissionDenied,
            Self::RateLimited { .. } | Self::TooManyFailures { .. } => Code::ResourceExhausted,
            Self::BadCsr(_) => Code::InvalidArgument,
            Self::CaFailure(_) => Code::Internal,
            Self::Backend { .. } => Code::Unavailable,
        }
    }

    /// A stable metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingCredential => "missing_credential",
            Self::UnknownJoinToken => "unknown_join_token",
            Self::WrongCredentialKind { .. } => "wrong_credential_kind",
            Self::TokenRejected { label, .. } => label,
            Self::NoIdentity { .. } | Self::IdentityMissing(_) => "no_identity",
            Self::IdentityNotReady { .. } => "identity_not_ready",
            Self::Suspended { .. } => "suspended",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooManyFailures { .. } => "too_many_failures",
            Self::BadCsr(CaError::UnsupportedKey { .. }) => "unsupported_key",
            Self::BadCsr(_) => "bad_csr",
            Self::CaFailure(_) => "ca_failure",
            Self::Backend { .. } => "backend",
        }
    }
}

impl SignError {
    /// Whether this refusal is a credential that did not prove anything (counted per address, so
    /// guessing tokens or flooding the TokenReview API is throttled before any check is made).
    pub fn is_bad_credential(&self) -> bool {
        matches!(self, Self::MissingCredential | Self::UnknownJoinToken | Self::WrongCredentialKind { .. } | Self::TokenRejected { .. })
    }
}

impl From<SignError> for tonic::Status {
    fn from(e: SignError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
