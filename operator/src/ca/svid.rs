//! The X.509-SVID profile (SPIFFE X.509-SVID standard) and the issued result, [`IssuedSvid`].
//!
//! Profile: exactly one URI SAN (the SPIFFE ID), optional DNS SANs only for the operator's own
//! serving certificate, basicConstraints `cA=false` (critical), keyUsage `digitalSignature` only
//! (critical), extendedKeyUsage serverAuth + clientAuth, AuthorityKeyIdentifier, a random
//! positive 16-byte serial, subject `O=trustmesh`.

use std::time::SystemTime;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;
use trustmesh_core::spiffe::SpiffeId;

use super::CaError;
use super::pki;

/// An X.509-SVID issued by the [`CertificateAuthority`](super::CertificateAuthority).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedSvid {
    /// The leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// Intermediate CA certificates, DER, from the one that signed the leaf up to, not
    /// including, the root. Empty when the root signs directly.
    pub chain_der: Vec<Vec<u8>>,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
    /// The leaf's serial number, lower-case hex without separators.
    pub serial_hex: String,
}

impl IssuedSvid {
    /// The leaf followed by the intermediates, as PEM `CERTIFICATE` blocks: what a TLS peer
    /// presents.
    #[must_use]
    pub fn to_pem(&self) -> String {
        std::iter::once(&self.cert_der)
            .chain(&self.chain_der)
            .map(|der| pki::pem_encode("CERTIFICATE", der))
            .collect()
    }

    /// The leaf alone as PEM.
    #[must_use]
    pub fn cert_pem(&self) -> String {
        pki::pem_encode("CERTIFICATE", &self.cert_der)
    }
}

/// Allowed clock skew: a leaf is valid from this long before `now`.
pub(crate) const CLOCK_SKEW: time::Duration = time::Duration::seconds(60);

/// Builds the certificate parameters of an X.509-SVID for `id`.
///
/// `not_before`/`not_after` must already be whole seconds.
pub(crate) fn leaf_params(
    id: &SpiffeId,
    dns_names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: &[u8],
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "trustmesh");
    params.distinguished_name = dn;
    let uri = id
        .as_str()
        .to_owned()
        .try_into()
        .map_err(|_| CaError::InvalidIdentity {
            id: id.as_str().to_owned(),
            reason: "not an ASCII URI".to_owned(),
        })?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for name in dns_names {
        check_dns_name(name)?;
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| CaError::InvalidDnsName { name: name.clone() })?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    Ok(params)
}

/// A DNS SAN must be a plain hostname: labels of letters, digits and `-`, separated by dots.
fn check_dns_name(name: &str) -> Result<(), CaError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(CaError::InvalidDnsName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Truncates to whole seconds (X.509 times have second precision).
pub(crate) fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}
