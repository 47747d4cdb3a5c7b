//! Tests for `tls` without a handshake: the swappable certificate slot, reading SPIFFE IDs and
//! validity from certificates, and the errors of building verifiers and configs.

use super::*;

// ---------------------------------------------------------------- SwappableCert

static CLOCK_SECS: AtomicU64 = AtomicU64::new(1_800_000_000);

fn test_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(CLOCK_SECS.load(Ordering::SeqCst))
}

#[test]
fn swappable_cert_lifecycle() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let holder = SwappableCert::with_clock(test_clock);
    let connect = |holder: &Arc<SwappableCert>| {
        handshake(
            client(
                &roots,
                ExpectedServer::TrustDomain(TrustDomain::new("td.test").unwrap()),
                None,
            ),
            server(&roots, ClientAuth::Optional, holder.clone()),
        )
    };
    // Empty: no certificate, no traffic.
    assert!(holder.current().is_none() && holder.not_after().is_none());
    assert!(connect(&holder).server.is_err());

    holder.set(svid(&ca, ORDERS).certified()).unwrap();
    let (c, _) = connect(&holder).ok();
    assert_eq!(
        peer_identity(c.peer_certificates()).unwrap(),
        Some(id(ORDERS))
    );

    let cert2 = svid(&ca, CHECKOUT);
    holder.set(cert2.certified()).unwrap();
    let (c, _) = connect(&holder).ok();
    assert_eq!(
        peer_identity(c.peer_certificates()).unwrap(),
        Some(id(CHECKOUT))
    );
    assert_eq!(
        holder.not_after(),
        Some(not_after(&cert2.chain[0]).unwrap())
    );

    // Past notAfter (2100-01-01): nothing presented.
    CLOCK_SECS.store(4_200_000_000, Ordering::SeqCst);
    assert!(holder.current().is_none());
    assert!(holder.not_after().is_some());
    assert!(connect(&holder).server.is_err());
    // And an expired certificate is not accepted either.
    let err = holder.set(svid(&ca, ORDERS).certified()).unwrap_err();
    assert_eq!(err.reason(), "expired");
    assert!(err.to_string().contains("2100"), "{err}");
    CLOCK_SECS.store(1_800_000_000, Ordering::SeqCst);
    assert!(holder.current().is_some());

    holder.clear();
    assert!(holder.current().is_none());
    assert!(connect(&holder).server.is_err());
}

// ---------------------------------------------------------------- certificate inspection

#[test]
fn spiffe_id_of_reads_the_single_uri_san() {
    let ca = ca("td.test");
    assert_eq!(
        spiffe_id_of(&svid(&ca, ORDERS).chain[0]).unwrap(),
        id(ORDERS)
    );
}

#[test]
fn spiffe_id_of_refuses_non_svids() {
    let ca = ca("td.test");
    let reason =
        |params: CertificateParams| spiffe_id_of(&sign(&ca, &params).chain[0]).unwrap_err();
    assert_eq!(
        reason(svid_params(vec![uri(ORDERS), uri(CHECKOUT)])).reason(),
        "several_uri_sans"
    );
    assert_eq!(
        reason(svid_params(vec![SanType::DnsName(
            "a.test".try_into().unwrap()
        )]))
        .reason(),
        "no_uri_san"
    );
    assert_eq!(reason(svid_params(vec![])).reason(), "no_uri_san");
    assert_eq!(reason(ca_params(ORDERS)).reason(), "ca_as_leaf");
    let mut signer = svid_params(vec![uri(ORDERS)]);
    signer.key_usages.push(KeyUsagePurpose::KeyCertSign);
    assert_eq!(reason(signer).reason(), "ca_as_leaf");
    let bad = reason(svid_params(vec![uri("https://td.test/orders")]));
    assert_eq!(bad.reason(), "bad_spiffe_id");
    assert!(bad.to_string().contains("https://td.test/orders"), "{bad}");
    // The root itself, used as a leaf.
    assert_eq!(spiffe_id_of(&ca.der).unwrap_err().reason(), "ca_as_leaf");
}

#[test]
fn garbage_is_a_bad_certificate() {
    let err = spiffe_id_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).unwrap_err();
    assert_eq!(err.reason(), "bad_certificate");
    let ca = ca("td.test");
    let mut trailing = svid(&ca, ORDERS).chain[0].to_vec();
    trailing.push(0);
    let err = not_after(&CertificateDer::from(trailing)).unwrap_err();
    assert_eq!(err.reason(), "bad_certificate");
}

#[test]
fn validity_period_is_read() {
    let ca = ca("td.test");
    let leaf = &svid(&ca, ORDERS).chain[0];
    // 2024-01-01 and 2100-01-01, 00:00:00 UTC.
    assert_eq!(
        not_before(leaf).unwrap(),
        UNIX_EPOCH + Duration::from_secs(1_704_067_200)
    );
    assert_eq!(
        not_after(leaf).unwrap(),
        UNIX_EPOCH + Duration::from_secs(4_102_444_800)
    );
}

#[test]
fn peer_identity_without_certificates_is_none() {
    assert_eq!(peer_identity(None).unwrap(), None);
    assert_eq!(peer_identity(Some(&[])).unwrap(), None);
    let ca = ca("td.test");
    assert_eq!(
        peer_identity(Some(std::slice::from_ref(&ca.der))).unwrap_err().reason(),
        "ca_as_leaf"
    );
}

// ---------------------------------------------------------------- construction errors

#[test]
fn verifier_and_config_construction_errors() {
    let ca = ca("td.test");
    let err = SpiffeServerVerifier::new(&[], expect_ids(&[ORDERS])).unwrap_err();
    assert_eq!(err.reason(), "empty_trust_bundle");
    let err =
        SpiffeServerVerifier::new(std::slice::from_ref(&ca.der), ExpectedServer::Ids(vec![])).unwrap_err();
    assert_eq!(err.reason(), "no_expected_identity");
    let garbage = CertificateDer::from(vec![1, 2, 3]);
    let err =
        SpiffeServerVerifier::new(&[ca.der.clone(), garbage], expect_ids(&[ORDERS])).unwrap_err();
    assert_eq!(err.reason(), "bad_trust_bundle");
    assert!(err.to_string().contains("#1"), "{err}");

    let holder = SwappableCert::new();
    let err = server_config(&[], ClientAuth::Required, holder.clone(), vec![]).unwrap_err();
    assert_eq!(err.reason(), "empty_trust_bundle");
    assert!(server_config(&[], ClientAuth::None, holder, vec![]).is_ok());
}

#[test]
fn certified_key_checks_key_and_chain() {
    let ca = ca("td.test");
    let (a, b) = (svid(&ca, ORDERS), svid(&ca, CHECKOUT));
    assert!(certified_key(a.chain.clone(), a.key.clone_key()).is_ok());
    let err = certified_key(a.chain.clone(), b.key.clone_key()).unwrap_err();
    assert_eq!(err.reason(), "key_mismatch");
    let err = certified_key(vec![], a.key.clone_key()).unwrap_err();
    assert_eq!(err.reason(), "empty_chain");
    let junk = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(vec![0x30, 0x00]));
    let err = certified_key(a.chain.clone(), junk).unwrap_err();
    assert_eq!(err.reason(), "bad_private_key");
}

#[test]
fn provider_is_ring_and_shared() {
    assert!(Arc::ptr_eq(&provider(), &provider()));
    assert!(!provider().cipher_suites.is_empty());
}

#[test]
fn every_error_has_a_distinct_reason() {
    let errs = [
        TlsError::NoUriSan,
        TlsError::SeveralUriSans(2),
        TlsError::CaAsLeaf("x"),
        TlsError::BadSpiffeId {
            uri: String::new(),
            error: SpiffeId::parse("").unwrap_err(),
        },
        TlsError::UnexpectedIdentity {
            got: id(ORDERS),
            expected: String::new(),
        },
        TlsError::bad_certificate("x"),
        TlsError::EmptyChain,
        TlsError::EmptyTrustBundle,
        TlsError::BadTrustBundle {
            index: 0,
            error: rustls::Error::General(String::new()),
        },
        TlsError::NoExpectedIdentity,
        TlsError::BadPrivateKey(rustls::Error::General(String::new())),
        TlsError::KeyMismatch,
        TlsError::Expired(String::new()),
        TlsError::Config(rustls::Error::General(String::new())),
    ];
    let mut reasons: Vec<_> = errs.iter().map(TlsError::reason).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), errs.len());
    // Wrapped into rustls and recovered.
    for e in errs {
        let reason = e.reason();
        assert_eq!(failure_reason(&rustls::Error::from(e)), reason);
    }
}

proptest::proptest! {
    #[test]
    fn inspection_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let der = CertificateDer::from(bytes);
        let _ = spiffe_id_of(&der);
        let _ = not_after(&der);
        let _ = peer_identity(Some(&[der]));
    }
}
