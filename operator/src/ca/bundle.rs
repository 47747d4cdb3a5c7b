//! The trust bundle: the root certificates workloads trust, several at once so a root can be
//! rotated without an outage, rendered as PEM or as a SPIFFE bundle (JWK Set).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use x509_parser::public_key::PublicKey;

use super::CaError;
use super::pki::{self, KeyKind};

/// Field name used in errors for a bundle given directly (not from a file).
const BUNDLE_FIELD: &str = "trust bundle";

/// The set of trusted root certificates of a trust domain.
///
/// Every root is a parseable CA certificate (`cA=true`) with an EC (P-256/P-384/P-521) or RSA
/// key, so it can always be rendered as a JWK. Roots are kept in insertion order, without
/// duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    /// The JWK of each root (same order), computed once when the root is added.
    jwks: Vec<Value>,
}

impl TrustBundle {
    /// A bundle holding one root, given as DER.
    ///
    /// # Errors
    /// [`CaError::InvalidCertificate`] or [`CaError::InvalidRoot`] if it cannot be a trust root.
    pub fn from_der(root_der: impl Into<Vec<u8>>) -> Result<Self, CaError> {
        Self::from_roots(vec![CertificateDer::from(root_der.into())], BUNDLE_FIELD)
    }

    /// Parses a PEM bundle (one or more `CERTIFICATE` blocks), e.g. the contents of `ca.crt`.
    ///
    /// # Errors
    /// [`CaError::InvalidPem`] if no certificate can be read; [`CaError::InvalidRoot`] or
    /// [`CaError::InvalidCertificate`] for a certificate that cannot be a trust root.
    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        Self::from_pem_field(pem, BUNDLE_FIELD)
    }

    /// As [`TrustBundle::from_pem`], naming `field` (e.g. `ca.crt`) in errors.
    pub(crate) fn from_pem_field(pem: &str, field: &'static str) -> Result<Self, CaError> {
        Self::from_roots(pki::parse_cert_pems(pem, field)?, field)
    }

    pub(crate) fn from_roots(
        roots: Vec<CertificateDer<'static>>,
        field: &'static str,
    ) -> Result<Self, CaError> {
        let mut bundle = Self {
            roots: Vec::new(),
            jwks: Vec::new(),
        };
        for (index, root) in roots.into_iter().enumerate() {
            bundle.push(root, field, index)?;
        }
        Ok(bundle)
    }

    /// Returns the bundle with `root_der` added (a no-op if it is already present).
    ///
    /// # Errors
    /// As [`TrustBundle::from_der`].
    pub fn with_root(mut self, root_der: impl Into<Vec<u8>>) -> Result<Self, CaError> {
        let index = self.roots.len();
        self.push(CertificateDer::from(root_der.into()), BUNDLE_FIELD, index)?;
        Ok(self)
    }

    /// Adds every root of `other` not already present, keeping this bundle's order first.
    pub fn merge(&mut self, other: &TrustBundle) {
        for (root, jwk) in other.roots.iter().zip(&other.jwks) {
            if !self.contains(root) {
                self.roots.push(root.clone());
                self.jwks.push(jwk.clone());
            }
        }
    }

    /// The roots, DER-encoded, in order.
    #[must_use]
    pub fn roots_der(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Whether the bundle holds exactly this DER certificate.
    #[must_use]
    pub fn contains(&self, der: &[u8]) -> bool {
        self.roots.iter().any(|r| r.as_ref() == der)
    }

    /// How many roots the bundle holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether the bundle holds no root.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The roots as concatenated PEM `CERTIFICATE` blocks (the format of `ca.crt`).
    #[must_use]
    pub fn to_pem(&self) -> String {
        self.roots
            .iter()
            .map(|r| pki::pem_encode("CERTIFICATE", r))
            .collect()
    }

    /// The bundle's `spiffe_sequence`, derived from its contents so that every replica computes
    /// the same number and it increases on the changes a rotation makes: adding a root (a new
    /// root's notBefore is later than every older one's) and removing one (fewer roots). It is
    /// `newest notBefore (Unix seconds) x 1000 + (999 - number of roots)`.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        let newest = self
            .roots
            .iter()
            .filter_map(|r| x509_parser::parse_x509_certificate(r).ok())
            .map(|(_, c)| u64::try_from(c.validity().not_before.timestamp()).unwrap_or(0))
            .max()
            .unwrap_or(0);
        let count = u64::try_from(self.roots.len()).unwrap_or(u64::MAX).min(999);
        newest.saturating_mul(1000).saturating_add(999 - count)
    }

    /// The bundle in the SPIFFE Trust Domain and Bundle format: a JWK Set whose keys have
    /// `"use": "x509-svid"` and `x5c` holding the root, plus `spiffe_sequence` and
    /// `spiffe_refresh_hint` (seconds).
    #[must_use]
    pub fn to_spiffe_jwks(&self, sequence: u64, refresh_hint_secs: u64) -> String {
        json!({
            "keys": self.jwks,
            "spiffe_sequence": sequence,
            "spiffe_refresh_hint": refresh_hint_secs,
        })
        .to_string()
    }

    fn push(
        &mut self,
        root: CertificateDer<'static>,
        field: &'static str,
        index: usize,
    ) -> Result<(), CaError> {
        if self.contains(&root) {
            return Ok(());
        }
        let jwk = root_jwk(&root, field, index)?;
        self.roots.push(root);
        self.jwks.push(jwk);
        Ok(())
    }
}

/// Validates a root and builds its JWK (`use: x509-svid`, `x5c` = the root).
fn root_jwk(der: &[u8], field: &'static str, index: usize) -> Result<Value, CaError> {
    let cert = pki::parse_x509(der, field, index)?;
    let invalid = |reason: String| CaError::InvalidRoot {
        field,
        index,
        reason,
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => {
            return Err(invalid(format!(
                "\"{}\" is not a CA certificate (basicConstraints cA=true); put only root CA certificates in the bundle",
                pki::subject_of(&cert)
            )));
        }
    }
    let spki = cert.public_key();
    let kind = pki::key_kind(spki);
    let x5c = STANDARD.encode(der);
    let parsed = spki
        .parsed()
        .map_err(|e| invalid(format!("unreadable public key ({e})")))?;
    let jwk = match (&kind, parsed) {
        (KeyKind::P256 | KeyKind::P384 | KeyKind::P521, PublicKey::EC(point)) => {
            let (crv, len) = match kind {
                KeyKind::P256 => ("P-256", 32),
                KeyKind::P384 => ("P-384", 48),
                _ => ("P-521", 66),
            };
            let data = point.data();
            if data.len() != 1 + 2 * len || data[0] != 0x04 {
                return Err(invalid(
                    "the EC public key is not an uncompressed point; re-issue the root with a standard EC key".to_owned(),
                ));
            }
            json!({
                "kty": "EC",
                "crv": crv,
                "x": URL_SAFE_NO_PAD.encode(&data[1..=len]),
                "y": URL_SAFE_NO_PAD.encode(&data[1 + len..]),
                "use": "x509-svid",
                "x5c": [x5c],
            })
        }
        (KeyKind::Rsa, PublicKey::RSA(rsa)) => json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(strip_leading_zeros(rsa.modulus)),
            "e": URL_SAFE_NO_PAD.encode(strip_leading_zeros(rsa.exponent)),
            "use": "x509-svid",
            "x5c": [x5c],
        }),
        _ => {
            return Err(invalid(format!(
                "its key is {kind}, which the SPIFFE bundle format cannot carry here; use an EC or RSA root"
            )));
        }
    };
    Ok(jwk)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[skip.min(bytes.len().saturating_sub(1))..]
}
