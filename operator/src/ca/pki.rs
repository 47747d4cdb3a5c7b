//! Low-level PKI helpers for the CA: PEM in and out, private-key loading (PKCS#8 and SEC1),
//! certificate inspection with x509-parser, and random serial numbers.

use std::fmt;
use std::io::Read;

use base64::Engine;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::CaError;

/// The kind of a public key, as far as the CA cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// ECDSA on NIST P-256: the only kind the mesh uses.
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// ECDSA on NIST P-521.
    P521,
    /// Ed25519.
    Ed25519,
    /// RSA.
    Rsa,
    /// Anything else, with the algorithm OID.
    Other(String),
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::P256 => f.write_str("ECDSA P-256"),
            KeyKind::P384 => f.write_str("ECDSA P-384"),
            KeyKind::P521 => f.write_str("ECDSA P-521"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
            KeyKind::Rsa => f.write_str("RSA"),
            KeyKind::Other(oid) => write!(f, "an unsupported algorithm ({oid})"),
        }
    }
}

/// Classifies a SubjectPublicKeyInfo.
pub(crate) fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> KeyKind {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| x509_parser::asn1_rs::Oid::try_from(p).ok());
        match curve {
            Some(c) if c == OID_EC_P256 => KeyKind::P256,
            Some(c) if c == OID_NIST_EC_P384 => KeyKind::P384,
            Some(c) if c == OID_NIST_EC_P521 => KeyKind::P521,
            Some(c) => KeyKind::Other(format!("EC curve {c}")),
            None => KeyKind::Other("EC without a named curve".to_owned()),
        }
    } else if *alg == OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        KeyKind::Rsa
    } else {
        KeyKind::Other(alg.to_id_string())
    }
}

/// Every `CERTIFICATE` block of `pem`, in order; at least one.
pub(crate) fn parse_cert_pems(
    pem: &str,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::InvalidPem {
            field,
            reason: format!("cannot read the PEM certificates ({e}); supply PEM `-----BEGIN CERTIFICATE-----` blocks"),
        })?;
    if certs.is_empty() {
        return Err(CaError::InvalidPem {
            field,
            reason: "holds no `-----BEGIN CERTIFICATE-----` block; supply the certificate(s) in PEM form".to_owned(),
        });
    }
    Ok(certs)
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_x509<'a>(
    der: &'a [u8],
    field: &'static str,
    index: usize,
) -> Result<X509Certificate<'a>, CaError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CaError::InvalidCertificate {
            field,
            index,
            reason: "trailing bytes after the certificate".to_owned(),
        }),
        Err(e) => Err(CaError::InvalidCertificate {
            field,
            index,
            reason: e.to_string(),
        }),
    }
}

/// The subject of a certificate as a readable string.
pub(crate) fn subject_of(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

/// Requires basicConstraints `cA=true` and a keyUsage extension with `keyCertSign`.
pub(crate) fn check_ca(
    cert: &X509Certificate<'_>,
    field: &'static str,
    index: usize,
) -> Result<(), CaError> {
    let not_a_ca = |reason: &str| CaError::NotACa {
        field,
        index,
        subject: subject_of(cert),
        reason: reason.to_owned(),
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(not_a_ca("basicConstraints cA is not true")),
        Err(e) => return Err(not_a_ca(&format!("unreadable basicConstraints ({e})"))),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => Ok(()),
        Ok(Some(_)) => Err(not_a_ca("keyUsage lacks keyCertSign")),
        Ok(None) => Err(not_a_ca("no keyUsage extension (keyCertSign required)")),
        Err(e) => Err(not_a_ca(&format!("unreadable keyUsage ({e})"))),
    }
}

/// Requires `now` to lie inside the certificate's validity window.
pub(crate) fn check_validity(
    cert: &X509Certificate<'_>,
    field: &'static str,
    index: usize,
    now: OffsetDateTime,
) -> Result<(), CaError> {
    let validity = cert.validity();
    if now > validity.not_after.to_datetime() {
        return Err(CaError::Expired {
            field,
            index,
            subject: subject_of(cert),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before.to_datetime() {
        return Err(CaError::NotYetValid {
            field,
            index,
            subject: subject_of(cert),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// Whether the certificate carries name constraints on URIs (webpki fails closed on them).
pub(crate) fn has_uri_name_constraints(cert: &X509Certificate<'_>) -> bool {
    let Ok(Some(nc)) = cert.name_constraints() else {
        return false;
    };
    let is_uri =
        |t: &x509_parser::extensions::GeneralSubtree<'_>| matches!(t.base, GeneralName::URI(_));
    let permitted = nc.value.permitted_subtrees.iter().flatten().any(is_uri);
    let excluded = nc.value.excluded_subtrees.iter().flatten().any(is_uri);
    permitted || excluded
}

/// The URI SANs of a certificate (empty when it has none or they cannot be read).
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `child` names `parent` as its issuer and carries a valid signature by its key.
pub(crate) fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == parent.subject().as_raw()
        && child.verify_signature(Some(parent.public_key())).is_ok()
}

/// Loads an ECDSA P-256 private key from PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
///
/// Error messages never include the key or parser output about its bytes.
pub(crate) fn parse_private_key(pem: &str, field: &'static str) -> Result<KeyPair, CaError> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| CaError::InvalidPem {
        field,
        reason: "holds no readable `-----BEGIN PRIVATE KEY-----` (PKCS#8) or `-----BEGIN EC PRIVATE KEY-----` (SEC1) block; supply the unencrypted private key of the CA certificate".to_owned(),
    })?;
    match der {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            let key = KeyPair::try_from(&pkcs8).map_err(|_| CaError::InvalidPem {
                field,
                reason: "the PKCS#8 private key cannot be read (encrypted or corrupt?); supply an unencrypted PKCS#8 ECDSA P-256 key".to_owned(),
            })?;
            require_p256_key(key, field)
        }
        PrivateKeyDer::Sec1(sec1) => {
            let wrapped = sec1_to_pkcs8(sec1.secret_sec1_der());
            let pkcs8 = PrivatePkcs8KeyDer::from(wrapped);
            let key = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &PKCS_ECDSA_P256_SHA256)
                .map_err(|_| CaError::InvalidPem {
                    field,
                    reason: "the SEC1 `EC PRIVATE KEY` is not a P-256 key with its public key included; supply an ECDSA P-256 key (convert with `openssl pkcs8 -topk8 -nocrypt`)".to_owned(),
                })?;
            Ok(key)
        }
        PrivateKeyDer::Pkcs1(_) => Err(CaError::UnsupportedCaKey {
            field,
            found: KeyKind::Rsa.to_string(),
        }),
        _ => Err(CaError::InvalidPem {
            field,
            reason: "unknown private key format; supply a PKCS#8 or SEC1 ECDSA P-256 key"
                .to_owned(),
        }),
    }
}

fn require_p256_key(key: KeyPair, field: &'static str) -> Result<KeyPair, CaError> {
    if key.is_compatible(&PKCS_ECDSA_P256_SHA256) {
        return Ok(key);
    }
    let found = if key.is_compatible(&rcgen::PKCS_ECDSA_P384_SHA384) {
        KeyKind::P384
    } else if key.is_compatible(&rcgen::PKCS_ED25519) {
        KeyKind::Ed25519
    } else {
        KeyKind::Rsa
    };
    Err(CaError::UnsupportedCaKey {
        field,
        found: found.to_string(),
    })
}

/// Wraps a SEC1 `ECPrivateKey` for P-256 into a PKCS#8 v1 `PrivateKeyInfo`.
///
/// ring checks the curve named inside the SEC1 structure (if any) against P-256.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID id-ecPublicKey, OID prime256v1 }
    const ALG_ID: [u8; 21] = [
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(&ALG_ID);
    body.push(0x04); // OCTET STRING
    push_der_len(&mut body, sec1.len());
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    push_der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// PEM-encodes DER with the given label, 64 characters a line.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A random 16-byte positive serial number of exactly 16 bytes in DER.
///
/// The top bit is cleared (positive) and the next one set (no leading zero byte is stripped),
/// leaving 126 random bits. The bytes come from the kernel CSPRNG (`/dev/urandom`), the same
/// source `getrandom(2)` draws from.
pub(crate) fn random_serial() -> Result<[u8; 16], CaError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(CaError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
