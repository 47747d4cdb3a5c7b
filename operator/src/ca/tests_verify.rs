//! Chain tests with the real `openssl` binary: issued SVIDs verify for TLS client and server use,
//! through an intermediate CA, and across a root rotation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::tests::{id, p256_csr, td};
use super::*;

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Runs `openssl verify -x509_strict -purpose <purpose> -CAfile <ca> [-untrusted <u>] <cert>`.
fn openssl_verify(
    ca: &Path,
    untrusted: Option<&Path>,
    purpose: &str,
    cert: &Path,
) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(ca);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    let out = cmd
        .arg(cert)
        .output()
        .expect("the openssl binary is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_verifies(ca: &Path, untrusted: Option<&Path>, cert: &Path) {
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = openssl_verify(ca, untrusted, purpose, cert);
        assert!(ok, "openssl verify -purpose {purpose} failed: {out}");
    }
}

fn svid_of(ca: &CertificateAuthority, path: &str) -> IssuedSvid {
    ca.sign_csr(
        &p256_csr(),
        &id(path),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap()
}

#[test]
fn openssl_verifies_an_svid_for_client_and_server_use() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(&td()).unwrap();
    let bundle = write(tmp.path(), "bundle.pem", &ca.bundle().to_pem());
    let svid = svid_of(&ca, "spiffe://example.org/ns/shop/sa/cart");
    let cert = write(tmp.path(), "svid.pem", &svid.to_pem());
    assert_verifies(&bundle, None, &cert);

    let (serving, _key) = ca
        .issue_with_new_key(
            &id("spiffe://example.org/ns/trustmesh/sa/trustmesh-operator"),
            Duration::from_secs(3600),
            SystemTime::now(),
            &["trustmesh-operator.trustmesh.svc".to_owned()],
        )
        .unwrap();
    let serving = write(tmp.path(), "serving.pem", &serving.cert_pem());
    assert_verifies(&bundle, None, &serving);
}

/// A root and an intermediate signed by it, built with rcgen; PEM (root, intermediate, key).
fn root_and_intermediate(sec1_key: bool, dir: &Path) -> (String, String, String) {
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "corp root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root_params.not_before = now - time::Duration::days(1);
    root_params.not_after = now + time::Duration::days(365);
    let root = root_params.self_signed(&root_key).unwrap();

    let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut inter_params = CertificateParams::default();
    inter_params
        .distinguished_name
        .push(DnType::CommonName, "trustmesh intermediate");
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    inter_params.use_authority_key_identifier_extension = true;
    inter_params.not_before = now - time::Duration::days(1);
    inter_params.not_after = now + time::Duration::days(30);
    let issuer = Issuer::new(root_params, root_key);
    let inter = inter_params.signed_by(&inter_key, &issuer).unwrap();

    let mut key_pem = inter_key.serialize_pem();
    if sec1_key {
        let pkcs8 = write(dir, "inter-pkcs8.key", &key_pem);
        let sec1 = dir.join("inter-sec1.key");
        let status = Command::new("openssl")
            .args(["ec", "-in"])
            .arg(&pkcs8)
            .arg("-out")
            .arg(&sec1)
            .output()
            .expect("the openssl binary is installed");
        assert!(status.status.success());
        key_pem = std::fs::read_to_string(&sec1).unwrap();
        assert!(key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    }
    (root.pem(), inter.pem(), key_pem)
}

#[test]
fn openssl_verifies_an_svid_issued_by_an_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let (root_pem, inter_pem, key_pem) = root_and_intermediate(false, tmp.path());
    let ca = CertificateAuthority::from_pem(&inter_pem, &key_pem, Some(&root_pem), &td()).unwrap();
    assert_eq!(ca.bundle().to_pem(), root_pem);
    let svid = svid_of(&ca, "spiffe://example.org/ns/shop/sa/cart");
    assert_eq!(
        svid.chain_der.len(),
        1,
        "the intermediate travels with the leaf"
    );
    assert_eq!(svid.to_pem().matches("BEGIN CERTIFICATE").count(), 2);

    let root = write(tmp.path(), "root.pem", &root_pem);
    let inter = write(tmp.path(), "intermediate.pem", &inter_pem);
    let leaf = write(tmp.path(), "svid.pem", &svid.cert_pem());
    assert_verifies(&root, Some(&inter), &leaf);
    // Without the intermediate the leaf does not verify: the chain is really needed.
    assert!(!openssl_verify(&root, None, "sslclient", &leaf).0);

    // tls.crt holding intermediate + root: the root is not sent after leaves.
    let chain = format!("{inter_pem}{root_pem}");
    let ca = CertificateAuthority::from_pem(&chain, &key_pem, Some(&root_pem), &td()).unwrap();
    let svid = svid_of(&ca, "spiffe://example.org/a");
    assert_eq!(svid.chain_der.len(), 1);
    // And without ca.crt, the self-signed end of tls.crt becomes the bundle.
    let ca = CertificateAuthority::from_pem(&chain, &key_pem, None, &td()).unwrap();
    assert_eq!(ca.bundle().to_pem(), root_pem);

    // An intermediate without its root is refused with a fix.
    let err = CertificateAuthority::from_pem(&inter_pem, &key_pem, None, &td()).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn a_sec1_intermediate_key_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let (root_pem, inter_pem, sec1_pem) = root_and_intermediate(true, tmp.path());
    let ca = CertificateAuthority::from_pem(&inter_pem, &sec1_pem, Some(&root_pem), &td()).unwrap();
    let svid = svid_of(&ca, "spiffe://example.org/a");
    let root = write(tmp.path(), "root.pem", &root_pem);
    let chain = write(tmp.path(), "svid-chain.pem", &svid.to_pem());
    let leaf = write(tmp.path(), "svid.pem", &svid.cert_pem());
    assert_verifies(&root, Some(&chain), &leaf);
}

#[test]
fn root_rotation_keeps_old_and_new_svids_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let a = CertificateAuthority::generate(&td()).unwrap();
    let svid1 = svid_of(&a, "spiffe://example.org/one");
    let mut b = CertificateAuthority::generate(&td()).unwrap();
    b.extend_bundle(a.bundle());
    let svid2 = svid_of(&b, "spiffe://example.org/two");

    let mut both = a.bundle().clone();
    both.merge(b.bundle());
    assert_eq!(both.len(), 2);
    assert_eq!(b.bundle().len(), 2);
    let both = write(tmp.path(), "both.pem", &both.to_pem());
    let only_a = write(tmp.path(), "a.pem", &a.bundle().to_pem());
    let s1 = write(tmp.path(), "svid1.pem", &svid1.to_pem());
    let s2 = write(tmp.path(), "svid2.pem", &svid2.to_pem());
    assert_verifies(&both, None, &s1);
    assert_verifies(&both, None, &s2);
    let b_bundle = write(tmp.path(), "b-bundle.pem", &b.bundle().to_pem());
    assert_verifies(&b_bundle, None, &s1);
    let (ok, _) = openssl_verify(&only_a, None, "sslclient", &s2);
    assert!(!ok, "svid2 must not verify against A's root alone");
    assert_verifies(&only_a, None, &s1);
}
