//! The workload's identity: a P-256 key generated in memory (it never leaves the process), a CSR
//! sent with the workload's credential, the certificate kept in a [`SwappableCert`] and renewed at
//! half-life (with jitter) so new connections get the new certificate and open ones keep theirs.
//!
//! Fail closed: a certificate past its notAfter is never presented (the resolver returns none),
//! and failures back off exponentially from 1 s to 30 s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use trustmesh_core::proto::v1::identity_client::IdentityClient;
use trustmesh_core::proto::v1::sign_request::Credential;
use trustmesh_core::proto::v1::{SignRequest, SignResponse};
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls::{self, SwappableCert};

use crate::metrics::Metrics;

/// Why an SVID could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The credential file could not be read.
    #[error("cannot read the credential {path}: {source}; check --token-file (local: DIR/tokens/<name>; cluster: the projected token)")]
    Credential {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The operator refused (its message says what to do).
    #[error("the operator refused to sign: {message} ({code:?})")]
    Refused {
        /// gRPC status code.
        code: tonic::Code,
        /// The operator's message.
        message: String,
    },
    /// Key or CSR generation failed.
    #[error("cannot generate the key or CSR: {0}")]
    Key(String),
    /// The response does not hold a usable certificate.
    #[error("the operator's answer is unusable: {0}")]
    BadResponse(String),
}

impl IdentityError {
    /// A stable metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Credential { .. } => "credential",
            Self::Refused { code: tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown, .. } => "unreachable",
            Self::Refused { code: tonic::Code::PermissionDenied, .. } => "suspended",
            Self::Refused { code: tonic::Code::ResourceExhausted, .. } => "rate_limited",
            Self::Refused { .. } => "refused",
            Self::Key(_) => "key",
            Self::BadResponse(_) => "bad_response",
        }
    }
}

/// Which credential proves the workload.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// Local mode: a join token file.
    JoinTokenFile(PathBuf),
    /// Cluster mode: the projected service-account token (re-read every time: the kubelet rotates it).
    ServiceAccountTokenFile(PathBuf),
}

impl CredentialSource {
    fn read(&self) -> Result<Credential, IdentityError> {
        let (path, wrap): (&PathBuf, fn(String) -> Credential) = match self {
            Self::JoinTokenFile(p) => (p, Credential::JoinToken),
            Self::ServiceAccountTokenFile(p) => (p, Credential::ServiceAccountToken),
        };
        let token = std::fs::read_to_string(path).map_err(|source| IdentityError::Credential { path: path.clone(), source })?;
        Ok(wrap(token.trim().to_owned()))
    }
}

/// An X.509-SVID with its key (in memory only).
pub struct Svid {
    /// The SPIFFE ID it carries.
    pub spiffe_id: SpiffeId,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8), generated here.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// Trust bundle roots from the operator.
    pub bundle: Vec<CertificateDer<'static>>,
    /// Expiry.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Svid").field("spiffe_id", &self.spiffe_id).field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// Sends a CSR and returns the signed answer: the gRPC client, or a fake in tests.
pub trait Signer: Send + Sync + 'static {
    /// One signing round trip.
    fn sign(&self, req: SignRequest) -> impl std::future::Future<Output = Result<SignResponse, tonic::Status>> + Send;
}

/// The real signer: `Identity.Sign` over the control channel.
#[derive(Clone)]
pub struct GrpcSigner(pub IdentityClient<tonic::transport::Channel>);

impl Signer for GrpcSigner {
    async fn sign(&self, req: SignRequest) -> Result<SignResponse, tonic::Status> {
        self.0.clone().sign(req).await.map(tonic::Response::into_inner)
    }
}

/// Generates a key, sends the CSR with the credential, and checks the answer.
pub async fn fetch_svid(signer: &impl Signer, credential: &CredentialSource) -> Result<Svid, IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| IdentityError::Key(e.to_string()))?;
    let csr = CertificateParams::default().serialize_request(&key).map_err(|e| IdentityError::Key(e.to_string()))?;
    let req = SignRequest { csr_der: csr.der().to_vec(), credential: Some(credential.read()?) };
    let resp = signer.sign(req).await.map_err(|s| IdentityError::Refused { code: s.code(), message: s.message().to_owned() })?;
    let chain: Vec<CertificateDer<'static>> = resp.cert_chain_der.into_iter().map(CertificateDer::from).collect();
    let leaf = chain.first().ok_or_else(|| IdentityError::BadResponse("no certificate".into()))?;
    let spiffe_id = tls::spiffe_id_of(leaf).map_err(|e| IdentityError::BadResponse(e.to_string()))?;
    if spiffe_id.as_str() != resp.spiffe_id {
        return Err(IdentityError::BadResponse(format!("certificate says {spiffe_id}, response says {}", resp.spiffe_id)));
    }
    let not_after = tls::not_after(leaf).map_err(|e| IdentityError::BadResponse(e.to_string()))?;
    let key = PrivatePkcs8KeyDer::from(key.serialize_der());
    // The certificate must be for our key: load it as rustls would and compare.
    tls::certified_key(chain.clone(), PrivateKeyDer::Pkcs8(key.clone_key())).map_err(|e| IdentityError::BadResponse(e.to_string()))?;
    let bundle: Vec<CertificateDer<'static>> = resp.trust_bundle_der.into_iter().map(CertificateDer::from).collect();
    if bundle.is_empty() {
        return Err(IdentityError::BadResponse("no trust bundle".into()));
    }
    Ok(Svid { spiffe_id, chain, key, bundle, not_after })
}

/// When to renew: half of the remaining lifetime, shifted by up to ±10 % (`jitter` in -1.0..=1.0)
/// so a fleet started together does not renew together.
pub fn renew_after(remaining: Duration, jitter: f64) -> Duration {
    let half = remaining.as_secs_f64() / 2.0;
    Duration::from_secs_f64((half * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0))).max(0.0))
}

/// Backoff after `failures` consecutive failures: 1 s doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 2.0 - 1.0
}

/// Keeps `slot` holding a valid SVID forever: fetch, install, sleep to half-life, repeat; on
/// failure back off. The bundle from each answer is published on `bundle`.
pub async fn keep_fresh(
    signer: impl Signer,
    credential: CredentialSource,
    slot: Arc<SwappableCert>,
    bundle: watch::Sender<Vec<CertificateDer<'static>>>,
    metrics: Arc<Metrics>,
) {
    let mut failures = 0u32;
    loop {
        let wait = match fetch_svid(&signer, &credential).await.and_then(|svid| install(&svid, &slot).map(|()| svid)) {
            Ok(svid) => {
                failures = 0;
                metrics.svid_renewals.inc();
                let expiry = svid.not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                metrics.svid_expiry_seconds.set(expiry);
                tracing::info!(spiffe_id = %svid.spiffe_id, not_after_unix = expiry, "installed a new X.509-SVID");
                bundle.send_replace(svid.bundle);
                let remaining = svid.not_after.duration_since(SystemTime::now()).unwrap_or_default();
                // At least a second between renewals, even when clocks disagree wildly.
                renew_after(remaining, jitter()).max(Duration::from_secs(1))
            }
            Err(e) => {
                failures += 1;
                metrics.svid_failures.get_or_create(&crate::metrics::ReasonLabel { reason: e.reason() }).inc();
                let wait = backoff(failures);
                tracing::warn!(error = %e, retry_in = ?wait, "could not renew the X.509-SVID");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn install(svid: &Svid, slot: &SwappableCert) -> Result<(), IdentityError> {
    let key = tls::certified_key(svid.chain.clone(), PrivateKeyDer::Pkcs8(svid.key.clone_key()))
        .map_err(|e| IdentityError::BadResponse(e.to_string()))?;
    slot.set(key).map_err(|e| IdentityError::BadResponse(e.to_string()))
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
