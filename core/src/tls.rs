//! SPIFFE peer verification for rustls and X.509-SVID inspection.
//!
//! Responsible for: reading the SPIFFE ID and validity of an X.509-SVID leaf ([`spiffe_id_of`],
//! [`not_after`]) with the SVID rules enforced (exactly one URI SAN, a valid `spiffe://` ID, not
//! a CA); verifying SPIFFE servers by chain *and* expected identity, ignoring the TLS server
//! name since SPIFFE peers have none ([`SpiffeServerVerifier`]); building TLS 1.3-only mTLS
//! [`ClientConfig`]s and [`ServerConfig`]s on the mesh's one crypto provider ([`provider`]);
//! reading the client identity after a server handshake ([`peer_identity`]); and holding the
//! workload's certificate so it can be swapped live and is never presented expired
//! ([`SwappableCert`]). It does no I/O. Session resumption is off in both directions so every
//! connection verifies a fresh chain (a resumed session would skip expiry and identity checks).

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    NoServerSessionStorage, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, InconsistentKeys,
    OtherError, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

mod svid;
mod swap;
pub use svid::{not_after, not_before, peer_identity, peer_not_after, spiffe_id_of, trust_domain_of_ca};
use svid::parse;
pub use swap::SwappableCert;

/// How many characters of a peer-supplied string an error message repeats at most.
const EXCERPT_CHARS: usize = 64;

/// Why a certificate, key or TLS configuration was refused.
///
/// [`TlsError::reason`] gives a short stable label per variant for the
/// `trustmesh_tls_failures_total{reason}` metric. Peer-supplied text is quoted truncated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The leaf has no URI SAN, so it carries no SPIFFE ID.
    #[error(
        "certificate has no URI SAN, so it carries no SPIFFE ID; the peer must present an X.509-SVID whose only URI SAN is its spiffe:// ID (is it meshed and enrolled?)"
    )]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error(
        "certificate has {0} URI SANs but an X.509-SVID must have exactly one, its spiffe:// ID; reissue it with a single URI SAN"
    )]
    SeveralUriSans(usize),
    /// A CA certificate was presented where a workload (leaf) certificate belongs; holds what
    /// marks it as a CA, e.g. `basicConstraints cA=true`.
    #[error(
        "a CA certificate ({0}) was presented as a workload certificate; present a leaf X.509-SVID (cA=false, no keyCertSign/cRLSign) and keep CA certificates in the trust bundle only"
    )]
    CaAsLeaf(&'static str),
    /// The only URI SAN is not a valid SPIFFE ID.
    #[error("certificate URI SAN {uri:?} is not a valid SPIFFE ID: {error}")]
    BadSpiffeId {
        /// The URI SAN (truncated).
        uri: String,
        /// Which SPIFFE ID rule it breaks.
        error: SpiffeIdError,
    },
    /// A valid certificate for an identity this connection does not accept (secure naming).
    #[error(
        "peer presented SPIFFE ID {got} but this connection expects {expected}; the destination runs under another identity (misrouted traffic or impersonation): check the destination's service account and the identities expected for it"
    )]
    UnexpectedIdentity {
        /// The identity the peer proved.
        got: SpiffeId,
        /// What was expected, in words.
        expected: String,
    },
    /// The certificate is not well-formed X.509 DER (or uses values we cannot represent); holds
    /// what is wrong.
    #[error(
        "certificate is not usable X.509 DER ({0}); check that the PEM/DER holds one well-formed certificate"
    )]
    BadCertificate(String),
    /// A certificate chain with no certificate in it.
    #[error(
        "certificate chain is empty; supply the leaf certificate first, followed by any intermediates"
    )]
    EmptyChain,
    /// No trust anchors were given.
    #[error(
        "trust bundle is empty; configure at least one CA certificate (the mesh root) so peers can be verified"
    )]
    EmptyTrustBundle,
    /// A trust bundle certificate cannot be used as a trust anchor.
    #[error(
        "trust bundle certificate #{index} cannot be used as a trust anchor ({error}); fix it or remove it from the bundle"
    )]
    BadTrustBundle {
        /// Position of the certificate in the bundle (0-based).
        index: usize,
        /// What rustls said.
        error: rustls::Error,
    },
    /// An [`ExpectedServer::Ids`] with no ID in it would refuse every server.
    #[error(
        "no expected server identity was given; list at least one SPIFFE ID or accept a whole trust domain"
    )]
    NoExpectedIdentity,
    /// The private key could not be loaded.
    #[error(
        "private key could not be loaded ({0}); supply an unencrypted PKCS#8 (or SEC1) ECDSA/Ed25519/RSA key in DER"
    )]
    BadPrivateKey(rustls::Error),
    /// The private key does not belong to the leaf certificate.
    #[error(
        "private key does not match the leaf certificate's public key; supply the key the certificate was issued for"
    )]
    KeyMismatch,
    /// The certificate is past its notAfter (held formatted).
    #[error(
        "certificate expired at {0}; it will not be presented: renew it (can the sidecar reach the operator's Identity service?)"
    )]
    Expired(String),
    /// rustls refused the configuration.
    #[error("could not build the TLS configuration: {0}")]
    Config(rustls::Error),
}

impl TlsError {
    /// A short, stable label for this failure, e.g. `"no_uri_san"`; usable as a metric label.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoUriSan => "no_uri_san",
            Self::SeveralUriSans(_) => "several_uri_sans",
            Self::CaAsLeaf(_) => "ca_as_leaf",
            Self::BadSpiffeId { .. } => "bad_spiffe_id",
            Self::UnexpectedIdentity { .. } => "unexpected_identity",
            Self::BadCertificate(_) => "bad_certificate",
            Self::EmptyChain => "empty_chain",
            Self::EmptyTrustBundle => "empty_trust_bundle",
            Self::BadTrustBundle { .. } => "bad_trust_bundle",
            Self::NoExpectedIdentity => "no_expected_identity",
            Self::BadPrivateKey(_) => "bad_private_key",
            Self::KeyMismatch => "key_mismatch",
            Self::Expired(_) => "expired",
            Self::Config(_) => "tls_config",
        }
    }

    fn bad_certificate(detail: impl std::fmt::Display) -> Self {
        Self::BadCertificate(detail.to_string())
    }
}

/// Wraps a [`TlsError`] as `InvalidCertificate(Other(..))` so the message survives and the
/// error can be recovered with [`failure_reason`] or a downcast.
impl From<TlsError> for rustls::Error {
    fn from(e: TlsError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// A metric label for a failed handshake, e.g. `"unexpected_identity"`, `"unknown_issuer"`,
/// `"expired"`, `"no_client_certificate"`: the [`TlsError::reason`] when one of this module's
/// checks refused the peer, otherwise a coarse label for the rustls error.
#[must_use]
pub fn failure_reason(err: &rustls::Error) -> &'static str {
    use CertificateError as C;
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(C::Other(other)) => other
            .0
            .downcast_ref::<TlsError>()
            .map_or("bad_certificate", TlsError::reason),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
        E::InvalidCertificate(C::UnknownIssuer) => "unknown_issuer",
        E::InvalidCertificate(C::BadSignature) => "bad_signature",
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "invalid_purpose"
        }
        E::InvalidCertificate(_) => "bad_certificate",
        E::NoCertificatesPresented => "no_client_certificate",
        E::AlertReceived(_) => "alert_received",
        E::NoApplicationProtocol => "no_alpn",
        E::PeerIncompatible(_) | E::PeerMisbehaved(_) | E::InvalidMessage(_) => "protocol",
        _ => "other",
    }
}

/// The one crypto provider (ring) every config in the mesh uses.
///
/// Always build configs with `builder_with_provider(provider())`: two providers are compiled
/// into the test graph, and the default-provider builders panic.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A server name to connect with: SPIFFE peers have no DNS name, [`client_config`] does not
/// send SNI and [`SpiffeServerVerifier`] ignores the name, so any value works; this is `0.0.0.0`.
#[must_use]
pub fn placeholder_server_name() -> ServerName<'static> {
    ServerName::from(Ipv4Addr::UNSPECIFIED)
}

/// Which server identities a client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedServer {
    /// Exactly one of these SPIFFE IDs.
    Ids(Vec<SpiffeId>),
    /// Any SPIFFE ID in this trust domain.
    TrustDomain(TrustDomain),
}

impl ExpectedServer {
    /// Whether a server proving `id` is acceptable.
    #[must_use]
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Ids(ids) => ids.contains(id),
            Self::TrustDomain(td) => id.is_member_of(td),
        }
    }
}

impl std::fmt::Display for ExpectedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ids(ids) => match ids.as_slice() {
                [one] => write!(f, "{one}"),
                many => {
                    let ids: Vec<&str> = many.iter().map(SpiffeId::as_str).collect();
                    write!(f, "one of [{}]", ids.join(", "))
                }
            },
            Self::TrustDomain(td) => write!(f, "any SPIFFE ID in trust domain {td}"),
        }
    }
}

/// Builds a root store from the trust bundle.
fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::EmptyTrustBundle);
    }
    let mut store = RootCertStore::empty();
    for (index, root) in roots.iter().enumerate() {
        store
            .add(root.clone())
            .map_err(|error| TlsError::BadTrustBundle { index, error })?;
    }
    Ok(Arc::new(store))
}

/// rustls `ServerCertVerifier` for SPIFFE servers.
///
/// In order: the leaf must be an X.509-SVID (exactly one URI SAN holding a SPIFFE ID, not a
/// CA); its chain must verify to the trust bundle (webpki, serverAuth EKU, validity at the
/// handshake time); its SPIFFE ID must be accepted by the [`ExpectedServer`] (secure naming),
/// otherwise the handshake fails with [`TlsError::UnexpectedIdentity`]. The `ServerName` is
/// ignored entirely. Failures are `rustls::Error::InvalidCertificate(Other(TlsError))`; see
/// [`failure_reason`].
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: ExpectedServer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier trusting `roots` (the trust bundle) and accepting `expected` servers.
    ///
    /// # Errors
    /// [`TlsError::EmptyTrustBundle`] / [`TlsError::BadTrustBundle`] for unusable roots,
    /// [`TlsError::NoExpectedIdentity`] for an empty [`ExpectedServer::Ids`].
    pub fn new(
        roots: &[CertificateDer<'static>],
        expected: ExpectedServer,
    ) -> Result<Arc<Self>, TlsError> {
        if matches!(&expected, ExpectedServer::Ids(ids) if ids.is_empty()) {
            return Err(TlsError::NoExpectedIdentity);
        }
        Ok(Arc::new(Self {
            roots: root_store(roots)?,
            expected,
            algorithms: provider().signature_verification_algorithms,
        }))
    }

    /// The server identities this verifier accepts.
    #[must_use]
    pub fn expected(&self) -> &ExpectedServer {
        &self.expected
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = spiffe_id_of(end_entity)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if !self.expected.accepts(&id) {
            return Err(TlsError::UnexpectedIdentity {
                got: id,
                expected: self.expected.to_string(),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Client config for mTLS to a SPIFFE server: TLS 1.3 only, no SNI, no session resumption,
/// `verifier` for the server, `client_cert` (if any) presented when the server asks, `alpn`
/// offered. Connect with any name, e.g. [`placeholder_server_name`].
///
/// # Errors
/// [`TlsError::Config`] if rustls refuses the protocol version (not expected with ring).
pub fn client_config(
    verifier: Arc<SpiffeServerVerifier>,
    client_cert: Option<Arc<dyn ResolvesClientCert>>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Whether a server asks for, and insists on, a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate chained to the bundle is mandatory (strict mTLS).
    Required,
    /// Asked for; a client may present none (permissive mode), but one it presents must verify.
    Optional,
    /// Not asked for (plain TLS, e.g. for enrolment before a workload has an SVID).
    None,
}

/// Server-side client verification: rustls' `WebPkiClientVerifier` (chain to the bundle,
/// clientAuth EKU, validity; it ignores names) preceded by the X.509-SVID shape checks of
/// [`spiffe_id_of`], so a non-SPIFFE or CA client certificate fails the handshake itself.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        spiffe_id_of(end_entity)?;
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server config: TLS 1.3 only, no session resumption, the certificate from `cert` (so it can
/// be swapped live), `alpn` accepted, and client certificates per `client_auth`, verified
/// against `roots` (ignored for [`ClientAuth::None`]). Authorize on [`peer_identity`] after the
/// handshake.
///
/// # Errors
/// [`TlsError::EmptyTrustBundle`] / [`TlsError::BadTrustBundle`] for unusable roots when
/// clients are verified, [`TlsError::Config`] if rustls refuses the configuration.
pub fn server_config(
    roots: &[CertificateDer<'static>],
    client_auth: ClientAuth,
    cert: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsError> {
    let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Required | ClientAuth::Optional => {
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(root_store(roots)?, provider());
            if client_auth == ClientAuth::Optional {
                builder = builder.allow_unauthenticated();
            }
            let inner = builder
                .build()
                .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
            Arc::new(SpiffeClientVerifier { inner })
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A certified key (chain + signing key) for rustls, loaded with the ring provider.
///
/// `chain` is the leaf first, then intermediates; `key` is the leaf's private key (PKCS#8).
///
/// # Errors
/// [`TlsError::EmptyChain`], [`TlsError::BadPrivateKey`], [`TlsError::KeyMismatch`], or
/// [`TlsError::BadCertificate`] if the leaf does not parse.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let leaf = chain.first().ok_or(TlsError::EmptyChain)?;
    parse(leaf)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::BadPrivateKey)?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
        Err(e) => Err(TlsError::bad_certificate(e)),
    }
}

#[cfg(test)]
mod tests;
