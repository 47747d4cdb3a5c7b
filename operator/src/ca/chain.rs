//! Validation of a CA's certificate chain: the signing key and certificates on their own
//! ([`check_signing`]), and the path from the signing certificate to a root of the trust bundle
//! ([`anchor_chain`]), which also yields the intermediates sent after every leaf.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use trustmesh_core::spiffe::TrustDomain;

use super::bundle::TrustBundle;
use super::pki::{self, KeyKind};
use super::{CA_CRT, CaError, TLS_CRT, TLS_KEY};

/// Without `ca.crt`: the last certificate of `tls.crt` must be a self-signed root.
pub(crate) fn self_signed_root(chain: &[CertificateDer<'static>]) -> Result<TrustBundle, CaError> {
    let last_index = chain.len().saturating_sub(1);
    let Some(last) = chain.last() else {
        return Err(CaError::InvalidPem {
            field: TLS_CRT,
            reason: "holds no certificate".to_owned(),
        });
    };
    let cert = pki::parse_x509(last, TLS_CRT, last_index)?;
    if !pki::signed_by(&cert, &cert) {
        return Err(CaError::Incomplete {
            reason: format!(
                "ca.crt is missing and the last certificate of tls.crt (\"{}\") is not self-signed: supply the root CA certificate(s) in ca.crt",
                pki::subject_of(&cert)
            ),
        });
    }
    TrustBundle::from_roots(vec![last.clone()], TLS_CRT)
}

/// Checks the key and every certificate of `tls.crt` on its own: P-256, key matches the first
/// certificate, trust domain, CA, valid at `now`, no URI name constraints.
pub(crate) fn check_signing(
    td: &TrustDomain,
    key: &KeyPair,
    chain: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<(), CaError> {
    if !key.is_compatible(&PKCS_ECDSA_P256_SHA256) {
        return Err(CaError::UnsupportedCaKey {
            field: TLS_KEY,
            found: "not ECDSA P-256".to_owned(),
        });
    }
    let certs = parse_chain(chain)?;
    let signing = &certs[0];
    let kind = pki::key_kind(signing.public_key());
    if kind != KeyKind::P256 {
        return Err(CaError::UnsupportedCaKey {
            field: TLS_CRT,
            found: kind.to_string(),
        });
    }
    if signing.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::KeyMismatch {
            subject: pki::subject_of(signing),
        });
    }
    let expected = td.id();
    let foreign = pki::uri_sans(signing)
        .into_iter()
        .find(|u| u.starts_with("spiffe://") && *u != expected.as_str());
    if let Some(found) = foreign {
        return Err(CaError::TrustDomainMismatch {
            found: found.to_owned(),
            expected: expected.as_str().to_owned(),
        });
    }
    for (index, cert) in certs.iter().enumerate() {
        pki::check_ca(cert, TLS_CRT, index)?;
        pki::check_validity(cert, TLS_CRT, index, now)?;
        if pki::has_uri_name_constraints(cert) {
            return Err(CaError::UriNameConstraints {
                field: TLS_CRT,
                index,
                subject: pki::subject_of(cert),
            });
        }
    }
    Ok(())
}

/// Walks `tls.crt` until it reaches a root of the bundle, checking each link; returns the
/// intermediates to send after a leaf and the signing certificate's notAfter.
pub(crate) fn anchor_chain(
    chain: &[CertificateDer<'static>],
    bundle: &TrustBundle,
    now: OffsetDateTime,
) -> Result<(Vec<Vec<u8>>, OffsetDateTime), CaError> {
    let certs = parse_chain(chain)?;
    let signing = &certs[0];
    let roots = bundle
        .roots_der()
        .iter()
        .enumerate()
        .map(|(i, der)| pki::parse_x509(der, CA_CRT, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut intermediates = Vec::new();
    for (index, cert) in certs.iter().enumerate() {
        if bundle.contains(&chain[index]) {
            return Ok((intermediates, signing.validity().not_after.to_datetime()));
        }
        intermediates.push(chain[index].to_vec());
        if let Some(parent) = certs.get(index + 1) {
            if !pki::signed_by(cert, parent) {
                return Err(CaError::UntrustedChain {
                    reason: format!(
                        "tls.crt: certificate #{index} (\"{}\") is not signed by certificate #{} (\"{}\"); order tls.crt as the signing certificate first, then each issuer in turn",
                        pki::subject_of(cert),
                        index + 1,
                        pki::subject_of(parent)
                    ),
                });
            }
        } else if let Some((root_index, root)) = roots
            .iter()
            .enumerate()
            .find(|(_, root)| pki::signed_by(cert, root))
        {
            pki::check_validity(root, CA_CRT, root_index, now)?;
            return Ok((intermediates, signing.validity().not_after.to_datetime()));
        } else {
            return Err(CaError::UntrustedChain {
                reason: format!(
                    "tls.crt does not chain to a root in ca.crt: no root signed \"{}\" (issuer \"{}\"); put the root CA that issued it in ca.crt",
                    pki::subject_of(cert),
                    cert.issuer()
                ),
            });
        }
    }
    Err(CaError::InvalidPem {
        field: TLS_CRT,
        reason: "holds no certificate".to_owned(),
    })
}

/// Parses `tls.crt`'s certificates; at least one (the signing certificate) must be there.
fn parse_chain<'a>(chain: &'a [CertificateDer<'static>]) -> Result<Vec<x509_parser::certificate::X509Certificate<'a>>, CaError> {
    let certs = chain
        .iter()
        .enumerate()
        .map(|(i, der)| pki::parse_x509(der, TLS_CRT, i))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(CaError::InvalidPem { field: TLS_CRT, reason: "holds no certificate".to_owned() });
    }
    Ok(certs)
}
