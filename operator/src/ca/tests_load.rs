//! Tests of loading and persisting a CA: refusals of unusable user-supplied CAs (each with a
//! message naming the problem), the local directory store and Kubernetes Secret data.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use time::OffsetDateTime;
use trustmesh_core::spiffe::TrustDomain;

use super::tests::{id, p256_csr, parse, rcgen_ca, td};
use super::*;

#[test]
fn from_pem_refuses_a_mismatched_key() {
    let a = CertificateAuthority::generate(&td()).unwrap();
    let b = CertificateAuthority::generate(&td()).unwrap();
    let err = CertificateAuthority::from_pem(&a.signing_cert_pem(), &b.key_pem(), None, &td())
        .unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("tls.key does not match"), "{err}");
}

#[test]
fn from_pem_refuses_a_leaf_certificate() {
    let now = OffsetDateTime::now_utc();
    let (crt, key) = rcgen_ca(
        "leaf",
        &PKCS_ECDSA_P256_SHA256,
        false,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    );
    let err = CertificateAuthority::from_pem(&crt, &key, None, &td()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::NotACa {
                field: "tls.crt",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("is not a CA"), "{err}");
}

#[test]
fn from_pem_refuses_an_expired_ca() {
    let now = OffsetDateTime::now_utc();
    let (crt, key) = rcgen_ca(
        "old",
        &PKCS_ECDSA_P256_SHA256,
        true,
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let err = CertificateAuthority::from_pem(&crt, &key, None, &td()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Expired {
                field: "tls.crt",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expired at"), "{err}");
}

#[test]
fn from_pem_refuses_other_curves_foreign_domains_and_missing_roots() {
    let now = OffsetDateTime::now_utc();
    let (nb, na) = (
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    );
    let (crt, key) = rcgen_ca("p384", &PKCS_ECDSA_P384_SHA384, true, nb, na);
    let err = CertificateAuthority::from_pem(&crt, &key, None, &td()).unwrap_err();
    assert!(matches!(err, CaError::UnsupportedCaKey { .. }), "{err}");
    assert!(err.to_string().contains("P-384"), "{err}");

    let a = CertificateAuthority::generate(&TrustDomain::new("other.org").unwrap()).unwrap();
    let err = CertificateAuthority::from_pem(&a.signing_cert_pem(), &a.key_pem(), None, &td())
        .unwrap_err();
    assert!(matches!(err, CaError::TrustDomainMismatch { .. }), "{err}");

    // A root that is not in the given ca.crt.
    let (crt, key) = rcgen_ca("root a", &PKCS_ECDSA_P256_SHA256, true, nb, na);
    let (other_root, _) = rcgen_ca("root b", &PKCS_ECDSA_P256_SHA256, true, nb, na);
    let err = CertificateAuthority::from_pem(&crt, &key, Some(&other_root), &td()).unwrap_err();
    assert!(matches!(err, CaError::UntrustedChain { .. }), "{err}");

    let err = CertificateAuthority::from_pem("garbage", &key, None, &td()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::InvalidPem {
                field: "tls.crt",
                ..
            }
        ),
        "{err}"
    );
    let err = CertificateAuthority::from_pem(&crt, "garbage", None, &td()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::InvalidPem {
                field: "tls.key",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn load_or_generate_dir_reuses_the_root_and_protects_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let (first, created) = load_or_generate_dir(&dir, &td()).unwrap();
    assert!(created);
    let (second, created) = load_or_generate_dir(&dir, &td()).unwrap();
    assert!(!created);
    assert_eq!(first.signing_cert_pem(), second.signing_cert_pem());
    assert_eq!(first.bundle(), second.bundle());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(TLS_KEY)), 0o600);
    assert_eq!(mode(&dir), 0o700);
    // The reloaded CA signs SVIDs that chain to the original root.
    let svid = second
        .sign_csr(
            &p256_csr(),
            &id("spiffe://example.org/a"),
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
    let root_der = first.bundle().roots_der()[0].to_vec();
    parse(&svid.cert_der)
        .verify_signature(Some(parse(&root_der).public_key()))
        .unwrap();

    std::fs::remove_file(dir.join(TLS_KEY)).unwrap();
    let err = load_or_generate_dir(&dir, &td()).unwrap_err();
    assert!(matches!(err, CaError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains("tls.key"), "{err}");
}

#[test]
fn secret_data_round_trips() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let data = ca.to_secret_data();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![CA_CRT, TLS_CRT, TLS_KEY]
    );
    let back = CertificateAuthority::from_secret_data(&data, &td()).unwrap();
    assert_eq!(back.signing_cert_pem(), ca.signing_cert_pem());
    assert_eq!(back.bundle(), ca.bundle());

    let mut partial: BTreeMap<String, Vec<u8>> = data.clone();
    partial.remove(TLS_KEY);
    let err = CertificateAuthority::from_secret_data(&partial, &td()).unwrap_err();
    assert!(
        matches!(err, CaError::Incomplete { .. }) && err.to_string().contains("tls.key"),
        "{err}"
    );
}
