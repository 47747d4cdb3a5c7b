//! The mesh certificate authority: the signing identity, the trust bundle and X.509-SVID issuance.
//!
//! - [`CertificateAuthority`] holds the ECDSA P-256 signing key and certificate (a root generated
//!   on first start, or a user-supplied root or intermediate in the cert-manager layout
//!   `tls.crt` / `tls.key` / `ca.crt`) and signs X.509-SVIDs: from a workload's CSR
//!   ([`CertificateAuthority::sign_csr`], the SPIFFE ID decided by the caller, never by the CSR)
//!   or with a key generated in-process for the operator's own servers
//!   ([`CertificateAuthority::issue_with_new_key`]).
//! - [`TrustBundle`] is the set of roots workloads trust; it holds several roots so a root can be
//!   rotated without an outage, and renders PEM and the SPIFFE bundle (JWK Set) format.
//! - [`load_or_generate_dir`] and the Secret helpers persist the authority.
//!
//! Errors are one enum, [`CaError`]; no message ever carries key material.

mod authority;
mod bundle;
mod chain;
mod pki;
mod store;
mod svid;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_load;
#[cfg(test)]
mod tests_verify;

pub use authority::CertificateAuthority;
pub use bundle::TrustBundle;
pub use store::{CA_CRT, TLS_CRT, TLS_KEY, load_or_generate_dir};
pub use svid::IssuedSvid;

use std::path::PathBuf;

/// Everything that can go wrong in the certificate authority; each message says what to do.
///
/// `field` names the file or Secret key concerned (`tls.crt`, `tls.key`, `ca.crt`) or
/// `trust bundle` for a bundle given directly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A PEM input could not be read.
    #[error("{field}: {reason}")]
    InvalidPem {
        /// File or Secret key.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A certificate could not be parsed or is unusable for a reason not covered below.
    #[error(
        "{field}: certificate #{index} is invalid: {reason}; supply a DER X.509 v3 certificate in PEM form"
    )]
    InvalidCertificate {
        /// File or Secret key.
        field: &'static str,
        /// Position in the file, 0 = first.
        index: usize,
        /// Parser message.
        reason: String,
    },
    /// The private key in `tls.key` does not belong to the first certificate of `tls.crt`.
    #[error(
        "tls.key does not match the first certificate in tls.crt (\"{subject}\"): put the private key of that certificate in tls.key, or put the certificate of this key first in tls.crt"
    )]
    KeyMismatch {
        /// Subject of the signing certificate.
        subject: String,
    },
    /// The CA certificate or key is not ECDSA P-256.
    #[error(
        "{field}: the CA key is {found}; trustmesh signs with ECDSA P-256 only: create the CA with an ECDSA P-256 key (e.g. `openssl ecparam -name prime256v1 -genkey`)"
    )]
    UnsupportedCaKey {
        /// File or Secret key.
        field: &'static str,
        /// The key type found.
        found: String,
    },
    /// A certificate that must be a CA is not one.
    #[error(
        "{field}: certificate #{index} (\"{subject}\") is not a CA: {reason}; supply a CA certificate (basicConstraints cA=true, keyUsage keyCertSign), not a server or client certificate"
    )]
    NotACa {
        /// File or Secret key.
        field: &'static str,
        /// Position in the file, 0 = first.
        index: usize,
        /// Subject of the certificate.
        subject: String,
        /// The missing property.
        reason: String,
    },
    /// A CA certificate has expired.
    #[error(
        "{field}: certificate #{index} (\"{subject}\") expired at {not_after}; renew the CA certificate (or rotate to a new root) and restart"
    )]
    Expired {
        /// File or Secret key.
        field: &'static str,
        /// Position in the file, 0 = first.
        index: usize,
        /// Subject of the certificate.
        subject: String,
        /// Its notAfter.
        not_after: String,
    },
    /// A CA certificate is not valid yet.
    #[error(
        "{field}: certificate #{index} (\"{subject}\") is not valid before {not_before}; check this machine's clock or wait until then"
    )]
    NotYetValid {
        /// File or Secret key.
        field: &'static str,
        /// Position in the file, 0 = first.
        index: usize,
        /// Subject of the certificate.
        subject: String,
        /// Its notBefore.
        not_before: String,
    },
    /// The certificates of `tls.crt` do not form a chain to a root of the bundle.
    #[error("{reason}")]
    UntrustedChain {
        /// What does not link up, and how to fix it.
        reason: String,
    },
    /// A CA certificate carries URI name constraints, which rustls/webpki reject outright.
    #[error(
        "{field}: certificate #{index} (\"{subject}\") has URI name constraints, which make every SVID fail verification in rustls/webpki; issue the CA without URI name constraints"
    )]
    UriNameConstraints {
        /// File or Secret key.
        field: &'static str,
        /// Position in the file, 0 = first.
        index: usize,
        /// Subject of the certificate.
        subject: String,
    },
    /// The CA certificate names a SPIFFE trust domain other than the configured one.
    #[error(
        "tls.crt: the CA certificate is for {found}, but the mesh trust domain is {expected}; use a CA for {expected} or change the configured trust domain"
    )]
    TrustDomainMismatch {
        /// The SPIFFE ID found in the certificate.
        found: String,
        /// The configured trust domain ID.
        expected: String,
    },
    /// rcgen cannot reproduce the CA's subject name byte for byte, so issued SVIDs would not chain.
    #[error(
        "tls.crt: the CA subject \"{subject}\" is encoded in a way trustmesh cannot copy exactly into issued certificates; re-issue the CA with a plain UTF8String or PrintableString subject"
    )]
    IssuerNameEncoding {
        /// Subject of the signing certificate.
        subject: String,
    },
    /// The CSR is not a well-formed PKCS#10 request.
    #[error(
        "the certificate signing request is malformed ({reason}); send a DER-encoded PKCS#10 CSR"
    )]
    InvalidCsr {
        /// Parser message.
        reason: String,
    },
    /// The CSR's self-signature does not verify.
    #[error(
        "the certificate signing request's signature does not verify; sign the CSR with the private key whose public key it carries"
    )]
    CsrSignature,
    /// The CSR's key is not ECDSA P-256.
    #[error(
        "the CSR key is {found}; trustmesh issues SVIDs for ECDSA P-256 keys only: generate an ECDSA P-256 key"
    )]
    UnsupportedKey {
        /// The key type found.
        found: String,
    },
    /// The SPIFFE ID to certify is outside this CA's trust domain or is not a workload ID.
    #[error("cannot issue an SVID for {id}: {reason}")]
    InvalidIdentity {
        /// The requested SPIFFE ID.
        id: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A DNS name to add to a serving certificate is not a valid hostname.
    #[error(
        "invalid DNS name {name:?} for the serving certificate: use a hostname such as trustmesh-operator.<namespace>.svc"
    )]
    InvalidDnsName {
        /// The name given.
        name: String,
    },
    /// The requested TTL is unusable.
    #[error("invalid certificate TTL: {reason}")]
    InvalidTtl {
        /// Why, and what to do.
        reason: String,
    },
    /// The signing certificate has expired by the time of signing.
    #[error(
        "the CA signing certificate expired at {not_after}; rotate the CA (new root or renewed intermediate) and restart the operator"
    )]
    CaExpired {
        /// The signing certificate's notAfter.
        not_after: String,
    },
    /// Certificate generation or signing failed inside rcgen/ring.
    #[error("could not {action}: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// Library message (never key material).
        reason: String,
    },
    /// The system random source could not be read.
    #[error(
        "could not read random bytes from /dev/urandom: {0}; the operator needs a working kernel random source"
    )]
    Random(#[source] std::io::Error),
    /// A file or directory operation failed.
    #[error("could not {action} {}: {source}; check that the path exists and the operator's user may read and write it", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Stored CA material is incomplete.
    #[error("{reason}")]
    Incomplete {
        /// What is missing and how to fix it.
        reason: String,
    },
    /// The bundle would hold a certificate that cannot be a SPIFFE bundle root.
    #[error("{field}: certificate #{index} cannot be a trust root: {reason}")]
    InvalidRoot {
        /// File or Secret key.
        field: &'static str,
        /// Position in the input, 0 = first.
        index: usize,
        /// Why, and what to do.
        reason: String,
    },
}
