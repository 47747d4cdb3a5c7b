//! `Identity.Sign`: a proven caller's CSR becomes an X.509-SVID for the identity that covers it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use trustmesh_core::proto::v1::identity_server::Identity;
use trustmesh_core::proto::v1::sign_request::Credential as WireCredential;
use trustmesh_core::proto::v1::{SignRequest, SignResponse};

use super::ratelimit::RateLimiter;
use super::{Authenticator, Credential, SignError};
use crate::ca::{CaError, CertificateAuthority};
use crate::metrics::{Metrics, ReasonLabel};
use crate::state::MeshView;

/// Certificates issued per WorkloadIdentity since start (for `status.issuedCertificates`).
pub type IssuedCounts = Arc<Mutex<std::collections::BTreeMap<crate::compile::ObjectKey, i64>>>;

/// Refused credentials one address may send at once before it is not heard for a while.
const FAILURE_BURST: u32 = 20;
/// Refused credentials per second one address may sustain (one every two seconds: a sidecar
/// retrying with backoff never gets there; a token guesser or a TokenReview flood does at once).
const FAILURE_RATE: f64 = 0.5;

/// Service-account-token requests one address may send at once: each costs a TokenReview and a
/// pod read on the API server, so they are limited before the token is checked.
pub(crate) const REVIEW_BURST: u32 = 10;
/// Service-account-token requests per second one address may sustain (a pod renews at half
/// life, a node's host-network pods restarting together get through in seconds).
const REVIEW_RATE: f64 = 1.0;

/// The signing service.
pub struct IdentityService {
    ca: Arc<CertificateAuthority>,
    issued: IssuedCounts,
    view: watch::Receiver<Arc<MeshView>>,
    auth: Authenticator,
    /// Per proven caller: every request, before its identity is looked up.
    limiter: Mutex<RateLimiter>,
    /// Per address: refused credentials, checked before the credential is (so no TokenReview).
    failures: Mutex<RateLimiter>,
    /// Per address: every request with a service-account token, before its TokenReview.
    reviews: Mutex<RateLimiter>,
    metrics: Arc<Metrics>,
}

impl IdentityService {
    /// A service signing with `ca` for the identities in `view`.
    pub fn new(ca: Arc<CertificateAuthority>, view: watch::Receiver<Arc<MeshView>>, auth: Authenticator, limiter: RateLimiter, metrics: Arc<Metrics>) -> Self {
        let failures = Mutex::new(RateLimiter::new(FAILURE_BURST, FAILURE_RATE));
        let reviews = Mutex::new(RateLimiter::new(REVIEW_BURST, REVIEW_RATE));
        Self { ca, issued: IssuedCounts::default(), view, auth, limiter: Mutex::new(limiter), failures, reviews, metrics }
    }

    /// The per-identity issue counters (shared with the status controller).
    pub fn issued(&self) -> IssuedCounts {
        self.issued.clone()
    }

    /// The decision and signing, without gRPC around it; `peer` is the caller's address.
    pub async fn sign_request(&self, req: &SignRequest, peer: Option<IpAddr>) -> Result<SignResponse, SignError> {
        let peer_key = peer.map(|ip| ip.to_string());
        if let (Some(ip), Some(k)) = (peer, &peer_key) {
            lock(&self.failures).peek(k, Instant::now()).map_err(|retry_after| SignError::TooManyFailures { peer: ip, retry_after })?;
        }
        let view = self.view.borrow().clone();
        let cred = match &req.credential {
            Some(WireCredential::JoinToken(t)) => Some(Credential::JoinToken(t)),
            Some(WireCredential::ServiceAccountToken(t)) => Some(Credential::ServiceAccountToken(t)),
            None => None,
        };
        if let (Some(Credential::ServiceAccountToken(_)), Some(ip), Some(k)) = (&cred, peer, &peer_key) {
            lock(&self.reviews).check(k, Instant::now()).map_err(|retry_after| SignError::RateLimited { caller: format!("address {ip}"), retry_after })?;
        }
        let subject = match self.auth.authenticate(cred, &view).await {
            Ok(subject) => subject,
            Err(e) => {
                if let (true, Some(k)) = (e.is_bad_credential(), &peer_key) {
                    let _ = lock(&self.failures).check(k, Instant::now());
                }
                return Err(e);
            }
        };
        let caller = subject.rate_key();
        lock(&self.limiter).check(&caller, Instant::now()).map_err(|retry_after| SignError::RateLimited { caller: caller.clone(), retry_after })?;
        let key = subject.identity(&view)?;
        let Some(workload) = view.compiled.workloads.get(&key) else {
            return Err(match view.compiled.identities.get(&key).and_then(|r| r.problems.first()) {
                Some(problem) => SignError::IdentityNotReady { key: key.to_string(), problem: problem.to_string() },
                None => SignError::IdentityMissing(key.to_string()),
            });
        };
        if workload.suspended {
            return Err(SignError::Suspended { spiffe_id: workload.spiffe_id.to_string(), key: key.to_string() });
        }
        let svid = self.ca.sign_csr(&req.csr_der, &workload.spiffe_id, workload.ttl, SystemTime::now()).map_err(|e| match e {
            CaError::InvalidCsr { .. } | CaError::UnsupportedKey { .. } | CaError::CsrSignature => SignError::BadCsr(e),
            other => SignError::CaFailure(other),
        })?;
        *self.issued.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default() += 1;
        let not_after_unix = svid.not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        tracing::info!(spiffe_id = %workload.spiffe_id, caller = %caller, serial = %svid.serial_hex, not_after_unix, "issued X.509-SVID");
        Ok(SignResponse {
            spiffe_id: workload.spiffe_id.to_string(),
            cert_chain_der: std::iter::once(svid.cert_der).chain(svid.chain_der).collect(),
            trust_bundle_der: self.ca.bundle().roots_der().iter().map(|r| r.to_vec()).collect(),
            not_after_unix,
        })
    }
}

fn lock(limiter: &Mutex<RateLimiter>) -> std::sync::MutexGuard<'_, RateLimiter> {
    limiter.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign(&self, request: tonic::Request<SignRequest>) -> Result<tonic::Response<SignResponse>, tonic::Status> {
        let started = Instant::now();
        let peer = request.extensions().get::<super::incoming::PeerInfo>().map(|p| p.remote);
        let result = self.sign_request(request.get_ref(), peer.map(|a| a.ip())).await;
        self.metrics.sign_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(resp) => {
                self.metrics.svids_issued.inc();
                Ok(tonic::Response::new(resp))
            }
            Err(e) => {
                self.metrics.svid_refusals.get_or_create(&ReasonLabel { reason: e.reason() }).inc();
                let peer = peer.map(|p| p.to_string()).unwrap_or_default();
                tracing::warn!(reason = e.reason(), %peer, error = %e, "refused a signing request");
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
