//! `Identity.Sign`: a proven caller's CSR becomes an X.509-SVID for the identity that covers it.

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

/// The signing service.
pub struct IdentityService {
    ca: Arc<CertificateAuthority>,
    issued: IssuedCounts,
    view: watch::Receiver<Arc<MeshView>>,
    auth: Authenticator,
    limiter: Mutex<RateLimiter>,
    metrics: Arc<Metrics>,
}

impl IdentityService {
    /// A service signing with `ca` for the identities in `view`.
    pub fn new(ca: Arc<CertificateAuthority>, view: watch::Receiver<Arc<MeshView>>, auth: Authenticator, limiter: RateLimiter, metrics: Arc<Metrics>) -> Self {
        Self { ca, issued: IssuedCounts::default(), view, auth, limiter: Mutex::new(limiter), metrics }
    }

    /// The per-identity issue counters (shared with the status controller).
    pub fn issued(&self) -> IssuedCounts {
        self.issued.clone()
    }

    /// The decision and signing, without gRPC around it.
    pub async fn sign_request(&self, req: &SignRequest) -> Result<SignResponse, SignError> {
        let view = self.view.borrow().clone();
        let cred = match &req.credential {
            Some(WireCredential::JoinToken(t)) => Some(Credential::JoinToken(t)),
            Some(WireCredential::ServiceAccountToken(t)) => Some(Credential::ServiceAccountToken(t)),
            None => None,
        };
        let subject = self.auth.authenticate(cred, &view).await?;
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
        let caller = subject.rate_key();
        {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            limiter.check(&caller, Instant::now()).map_err(|retry_after| SignError::RateLimited { caller: caller.clone(), retry_after })?;
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

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign(&self, request: tonic::Request<SignRequest>) -> Result<tonic::Response<SignResponse>, tonic::Status> {
        let started = Instant::now();
        let result = self.sign_request(request.get_ref()).await;
        self.metrics.sign_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(resp) => {
                self.metrics.svids_issued.inc();
                Ok(tonic::Response::new(resp))
            }
            Err(e) => {
                self.metrics.svid_refusals.get_or_create(&ReasonLabel { reason: e.reason() }).inc();
                let peer = request.extensions().get::<super::incoming::PeerInfo>().map(|p| p.remote.to_string()).unwrap_or_default();
                tracing::warn!(reason = e.reason(), %peer, error = %e, "refused a signing request");
                Err(e.into())
            }
        }
    }
}
