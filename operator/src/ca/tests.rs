//! Unit tests of the CA: SVID profile, CSR handling and the SPIFFE bundle. Loading and
//! persistence are tested in `tests_load.rs`, chains with OpenSSL in `tests_verify.rs`.

use std::time::{Duration, SystemTime};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SanType,
    SignatureAlgorithm,
};
use time::OffsetDateTime;
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;

pub(super) fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub(super) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub(super) fn csr_for(params: &CertificateParams, alg: &'static SignatureAlgorithm) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    params.serialize_request(&key).unwrap().der().to_vec()
}

pub(super) fn p256_csr() -> Vec<u8> {
    csr_for(&CertificateParams::default(), &PKCS_ECDSA_P256_SHA256)
}

pub(super) fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn unix(t: SystemTime) -> i64 {
    OffsetDateTime::from(t).unix_timestamp()
}

/// A self-signed CA (or not) built directly with rcgen, as PEM (cert, key).
pub(super) fn rcgen_ca(
    cn: &str,
    alg: &'static SignatureAlgorithm,
    is_ca: bool,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> (String, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.subject_alt_names = vec![SanType::DnsName("leaf.example".try_into().unwrap())];
    }
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn issued_svid_follows_the_x509_svid_profile() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let now = SystemTime::now();
    let wid = id("spiffe://example.org/ns/shop/sa/cart");
    let svid = ca
        .sign_csr(&p256_csr(), &wid, Duration::from_secs(3600), now)
        .unwrap();
    let cert = parse(&svid.cert_der);
    let root_der = ca.bundle().roots_der()[0].to_vec();
    let root = parse(&root_der);

    assert_eq!(cert.version().0, 2, "X.509 v3");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(wid.as_str())]
    );
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert_eq!(ku.value.flags, 1, "digitalSignature only");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any && eku.other.is_empty());
    assert!(!eku.code_signing && !eku.email_protection && !eku.time_stamping);
    assert!(cert.name_constraints().unwrap().is_none());

    let now_s = unix(now);
    assert_eq!(cert.validity().not_before.timestamp(), now_s - 60);
    assert_eq!(cert.validity().not_after.timestamp(), now_s + 3600);
    assert_eq!(unix(svid.not_after), now_s + 3600);

    let serial = cert.raw_serial();
    assert_eq!(serial.len(), 16);
    assert_eq!(serial[0] & 0x80, 0, "positive serial");
    assert_eq!(svid.serial_hex, pki::hex(serial));

    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => Some(a.key_identifier.clone()),
            _ => None,
        })
        .expect("AuthorityKeyIdentifier present")
        .expect("with a key identifier");
    let ski = root
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.clone()),
            _ => None,
        })
        .expect("root has a SubjectKeyIdentifier");
    assert_eq!(aki.0, ski.0);

    assert_eq!(cert.issuer().as_raw(), root.subject().as_raw());
    cert.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(cert.subject().to_string(), "O=trustmesh");
    assert!(svid.chain_der.is_empty(), "the root signs directly");
    assert_eq!(svid.to_pem().matches("BEGIN CERTIFICATE").count(), 1);
}

#[test]
fn generated_root_has_the_ca_profile() {
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let der = ca.bundle().roots_der()[0].to_vec();
    let root = parse(&der);
    assert_eq!(
        root.subject().to_string(),
        "O=trustmesh, CN=trustmesh root example.org"
    );
    assert_eq!(pki::uri_sans(&root), vec!["spiffe://example.org"]);
    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(root.name_constraints().unwrap().is_none());
    assert!(root.iter_extensions().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::SubjectKeyIdentifier(_)
    )));
    let nb = root.validity().not_before.timestamp();
    let na = root.validity().not_after.timestamp();
    assert!(
        nb <= before - 290 && nb >= before - 310,
        "backdated 5 minutes"
    );
    assert!(na - nb >= 10 * 365 * 86400, "ten years");
    assert_eq!(root.raw_serial().len(), 16);
    assert_eq!(root.raw_serial()[0] & 0x80, 0);
    assert_eq!(pki::key_kind(root.public_key()), pki::KeyKind::P256);
    assert_eq!(ca.signing_cert_pem(), ca.bundle().to_pem());
}

#[test]
fn spiffe_id_comes_from_the_caller_never_the_csr() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.subject_alt_names = vec![
        SanType::URI("spiffe://example.org/ns/evil/sa/admin".try_into().unwrap()),
        SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
        SanType::DnsName("evil.example".try_into().unwrap()),
    ];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    let csr = csr_for(&params, &PKCS_ECDSA_P256_SHA256);
    let wid = id("spiffe://example.org/ns/shop/sa/cart");
    let svid = ca
        .sign_csr(&csr, &wid, Duration::from_secs(600), SystemTime::now())
        .unwrap();
    let cert = parse(&svid.cert_der);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(wid.as_str())]
    );
    assert!(!cert.is_ca());
    assert_eq!(cert.key_usage().unwrap().unwrap().value.flags, 1);
    assert!(
        !cert
            .extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .code_signing
    );
    assert_eq!(cert.subject().to_string(), "O=trustmesh");
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let mut csr = p256_csr();
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    let err = ca
        .sign_csr(
            &csr,
            &id("spiffe://example.org/a"),
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");
    let err = ca
        .sign_csr(
            b"not a csr",
            &id("spiffe://example.org/a"),
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr { .. }), "{err}");
}

#[test]
fn csr_with_a_non_p256_key_is_refused() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    for (alg, name) in [
        (&PKCS_ED25519, "Ed25519"),
        (&PKCS_ECDSA_P384_SHA384, "P-384"),
    ] {
        let csr = csr_for(&CertificateParams::default(), alg);
        let err = ca
            .sign_csr(
                &csr,
                &id("spiffe://example.org/a"),
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .unwrap_err();
        assert!(matches!(err, CaError::UnsupportedKey { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(name) && msg.contains("generate an ECDSA P-256 key"),
            "{msg}"
        );
    }
}

#[test]
fn ttl_beyond_the_ca_lifetime_is_clamped() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let ttl = Duration::from_secs(20 * 365 * 86400);
    let svid = ca
        .sign_csr(
            &p256_csr(),
            &id("spiffe://example.org/a"),
            ttl,
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(svid.not_after, ca.not_after());
    let cert = parse(&svid.cert_der);
    assert_eq!(cert.validity().not_after.timestamp(), unix(ca.not_after()));

    // Also against a user-supplied CA that expires in one hour.
    let now = OffsetDateTime::now_utc();
    let (crt, key) = rcgen_ca(
        "short",
        &PKCS_ECDSA_P256_SHA256,
        true,
        now - time::Duration::days(1),
        now + time::Duration::hours(1),
    );
    let short = CertificateAuthority::from_pem(&crt, &key, None, &td()).unwrap();
    let svid = short
        .sign_csr(
            &p256_csr(),
            &id("spiffe://example.org/a"),
            Duration::from_secs(86400),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(svid.not_after, short.not_after());
    assert!(unix(svid.not_after) <= (now + time::Duration::hours(1)).unix_timestamp());
}

#[test]
fn identity_ttl_and_expiry_are_checked() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let now = SystemTime::now();
    let ttl = Duration::from_secs(60);
    let other = ca
        .sign_csr(&p256_csr(), &id("spiffe://other.org/a"), ttl, now)
        .unwrap_err();
    assert!(matches!(other, CaError::InvalidIdentity { .. }), "{other}");
    let bare = ca
        .sign_csr(&p256_csr(), &id("spiffe://example.org"), ttl, now)
        .unwrap_err();
    assert!(matches!(bare, CaError::InvalidIdentity { .. }), "{bare}");
    let zero = ca
        .sign_csr(
            &p256_csr(),
            &id("spiffe://example.org/a"),
            Duration::ZERO,
            now,
        )
        .unwrap_err();
    assert!(matches!(zero, CaError::InvalidTtl { .. }), "{zero}");
    let late = ca.not_after() + Duration::from_secs(1);
    let expired = ca
        .sign_csr(&p256_csr(), &id("spiffe://example.org/a"), ttl, late)
        .unwrap_err();
    assert!(matches!(expired, CaError::CaExpired { .. }), "{expired}");
}

#[test]
fn serving_certificate_has_dns_names_and_one_uri() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let wid = id("spiffe://example.org/ns/trustmesh/sa/trustmesh-operator");
    let dns = vec!["trustmesh-operator.trustmesh.svc".to_owned()];
    let (svid, key_pem) = ca
        .issue_with_new_key(&wid, Duration::from_secs(3600), SystemTime::now(), &dns)
        .unwrap();
    let cert = parse(&svid.cert_der);
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        names,
        &vec![
            GeneralName::URI(wid.as_str()),
            GeneralName::DNSName(&dns[0])
        ]
    );
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key = KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(cert.key_usage().unwrap().unwrap().value.flags, 1);

    let bad = ca
        .issue_with_new_key(
            &wid,
            Duration::from_secs(60),
            SystemTime::now(),
            &["a b".to_owned()],
        )
        .unwrap_err();
    assert!(matches!(bad, CaError::InvalidDnsName { .. }), "{bad}");
}

#[test]
fn spiffe_jwks_carries_the_root_key() {
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ca.bundle().to_spiffe_jwks(7, 300)).unwrap();
    assert_eq!(json["spiffe_sequence"], 7);
    assert_eq!(json["spiffe_refresh_hint"], 300);
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["use"], "x509-svid");
    let root_der = ca.bundle().roots_der()[0].to_vec();
    let x5c = key["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let std_b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(std_b64.decode(x5c[0].as_str().unwrap()).unwrap(), root_der);

    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (x, y) = (key["x"].as_str().unwrap(), key["y"].as_str().unwrap());
    assert!(!x.contains('=') && !y.contains('='));
    let mut point = vec![0x04];
    point.extend(url.decode(x).unwrap());
    point.extend(url.decode(y).unwrap());
    assert_eq!(point.len(), 65);
    assert_eq!(
        point,
        parse(&root_der)
            .public_key()
            .subject_public_key
            .data
            .as_ref()
    );
}

#[test]
fn trust_bundle_parses_merges_and_refuses_leaves() {
    let a = CertificateAuthority::generate(&td()).unwrap();
    let b = CertificateAuthority::generate(&td()).unwrap();
    let mut bundle = TrustBundle::from_pem(&a.bundle().to_pem()).unwrap();
    bundle.merge(b.bundle());
    bundle.merge(a.bundle());
    assert_eq!(bundle.len(), 2, "no duplicates");
    let again = TrustBundle::from_pem(&bundle.to_pem()).unwrap();
    assert_eq!(again, bundle);
    let via_with = TrustBundle::from_der(a.bundle().roots_der()[0].to_vec())
        .unwrap()
        .with_root(b.bundle().roots_der()[0].to_vec())
        .unwrap();
    assert_eq!(via_with, bundle);
    assert_eq!(again.to_spiffe_jwks(1, 60).matches("x509-svid").count(), 2);

    // spiffe_sequence over a rotation: old root, old + new, new only. Every step raises it, and
    // it depends on the contents only (every replica computes the same).
    let year = |y: i32| OffsetDateTime::new_utc(time::Date::from_calendar_date(y, time::Month::January, 1).unwrap(), time::Time::MIDNIGHT);
    let (old, _) = rcgen_ca("old root", &PKCS_ECDSA_P256_SHA256, true, year(2025), year(2035));
    let (new, _) = rcgen_ca("new root", &PKCS_ECDSA_P256_SHA256, true, year(2026), year(2036));
    let steps = [old.clone(), format!("{old}{new}"), new].map(|pem| TrustBundle::from_pem(&pem).unwrap().sequence());
    assert!(steps[0] < steps[1] && steps[1] < steps[2], "{steps:?}");
    assert_eq!(TrustBundle::from_pem(&old).unwrap().sequence(), steps[0]);

    let svid = a
        .sign_csr(
            &p256_csr(),
            &id("spiffe://example.org/a"),
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
    let err = bundle.clone().with_root(svid.cert_der).unwrap_err();
    assert!(matches!(err, CaError::InvalidRoot { .. }), "{err}");
    assert!(TrustBundle::from_pem("").is_err());
}
