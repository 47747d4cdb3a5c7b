//! Reading X.509-SVIDs: the SPIFFE ID of a leaf with the SVID rules enforced (exactly one URI
//! SAN, a valid `spiffe://` ID, not a CA certificate) and validity times, for handshakes, expiry
//! metrics and renewal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::OID_X509_EXT_BASIC_CONSTRAINTS;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use super::{EXCERPT_CHARS, TlsError};
use crate::spiffe::{SpiffeId, TrustDomain};

/// Parses one DER certificate with nothing after it.
pub(super) fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, TlsError> {
    match X509Certificate::from_der(cert.as_ref()) {
        Ok(([], parsed)) => Ok(parsed),
        Ok((rest, _)) => Err(TlsError::bad_certificate(format!(
            "{} bytes of trailing data",
            rest.len()
        ))),
        Err(e) => Err(TlsError::bad_certificate(e)),
    }
}

/// Fails with [`TlsError::CaAsLeaf`] if the certificate is a CA (basicConstraints cA=true) or may
/// sign certificates or CRLs (keyUsage keyCertSign/cRLSign). Unparsable extensions fail closed.
fn refuse_ca(cert: &X509Certificate<'_>) -> Result<(), TlsError> {
    let bc = cert
        .get_extension_unique(&OID_X509_EXT_BASIC_CONSTRAINTS)
        .map_err(TlsError::bad_certificate)?;
    let is_ca = match bc.map(X509Extension::parsed_extension) {
        None => false,
        Some(ParsedExtension::BasicConstraints(bc)) => bc.ca,
        Some(_) => return Err(TlsError::bad_certificate("malformed basicConstraints")),
    };
    let ku = cert.key_usage().map_err(TlsError::bad_certificate)?;
    let signs = ku.is_some_and(|ku| ku.value.key_cert_sign() || ku.value.crl_sign());
    let what = match (is_ca, signs) {
        (true, _) => "basicConstraints cA=true",
        (false, true) => "keyUsage keyCertSign/cRLSign",
        (false, false) => return Ok(()),
    };
    Err(TlsError::CaAsLeaf(what))
}

/// Reads the SPIFFE ID of an X.509-SVID leaf.
///
/// # Errors
/// [`TlsError::CaAsLeaf`] if it is a CA certificate, [`TlsError::NoUriSan`] /
/// [`TlsError::SeveralUriSans`] unless it has exactly one URI SAN, [`TlsError::BadSpiffeId`] if
/// that SAN is not a valid `spiffe://` ID, [`TlsError::BadCertificate`] if it does not parse.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let parsed = parse(cert)?;
    refuse_ca(&parsed)?;
    uri_san_id(&parsed)
}

/// The trust domain a CA certificate of the mesh names in its URI SAN (`spiffe://<td>`), e.g. to
/// derive the operator's expected SPIFFE ID from a trust bundle.
///
/// # Errors
/// As [`spiffe_id_of`], without the CA refusal.
pub fn trust_domain_of_ca(cert: &CertificateDer<'_>) -> Result<TrustDomain, TlsError> {
    Ok(uri_san_id(&parse(cert)?)?.trust_domain())
}

fn uri_san_id(parsed: &X509Certificate<'_>) -> Result<SpiffeId, TlsError> {
    let san = parsed
        .subject_alternative_name()
        .map_err(TlsError::bad_certificate)?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match *name {
            GeneralName::URI(uri) => Some(uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(TlsError::NoUriSan),
        [uri] => SpiffeId::parse(uri).map_err(|error| TlsError::BadSpiffeId {
            uri: uri.chars().take(EXCERPT_CHARS).collect(),
            error,
        }),
        several => Err(TlsError::SeveralUriSans(several.len())),
    }
}

pub(super) fn to_system_time(t: ASN1Time) -> Result<SystemTime, TlsError> {
    let secs = t.timestamp();
    let since = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(since)
    } else {
        UNIX_EPOCH.checked_sub(since)
    };
    at.ok_or_else(|| TlsError::bad_certificate(format!("validity time {t} out of range")))
}

/// notAfter of a certificate (for expiry metrics and renewal).
///
/// # Errors
/// [`TlsError::BadCertificate`] if it does not parse.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, TlsError> {
    to_system_time(parse(cert)?.validity().not_after)
}

/// notBefore of a certificate.
///
/// # Errors
/// [`TlsError::BadCertificate`] if it does not parse.
pub fn not_before(cert: &CertificateDer<'_>) -> Result<SystemTime, TlsError> {
    to_system_time(parse(cert)?.validity().not_before)
}

/// After a server handshake: the authenticated client's SPIFFE ID, from
/// `ServerConnection::peer_certificates()`; `None` if the client presented no certificate.
///
/// # Errors
/// The [`spiffe_id_of`] errors: a CA certificate as leaf, no or several URI SANs, a bad ID.
pub fn peer_identity(
    peer_certs: Option<&[CertificateDer<'static>]>,
) -> Result<Option<SpiffeId>, TlsError> {
    match peer_certs.and_then(<[_]>::first) {
        None => Ok(None),
        Some(leaf) => spiffe_id_of(leaf).map(Some),
    }
}

/// notAfter of the peer's leaf certificate (`None` without one, or when it cannot be read), so
/// an open connection can end when the certificate that authenticated it expires.
#[must_use]
pub fn peer_not_after(peer_certs: Option<&[CertificateDer<'static>]>) -> Option<SystemTime> {
    let leaf = peer_certs?.first()?;
    to_system_time(parse(leaf).ok()?.validity().not_after).ok()
}
