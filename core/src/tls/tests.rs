//! Tests for `tls`: real TLS 1.3 handshakes in memory (no sockets) between rustls client and
//! server connections built from this module's configs, with rcgen-made CAs and SVIDs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;

const ORDERS: &str = "spiffe://td.test/ns/shop/sa/orders";
const CHECKOUT: &str = "spiffe://td.test/ns/shop/sa/checkout";
const INTRUDER: &str = "spiffe://td.test/ns/shop/sa/intruder";

// ---------------------------------------------------------------- fixtures

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(uri: &str) -> CertificateParams {
    ca_params_named(uri, "trustmesh test root")
}

fn ca_params_named(uri: &str, cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn ca(td: &str) -> Ca {
    ca_named(td, "trustmesh test root")
}

/// A CA whose subject is `cn`: an impostor with the real root's name is caught by the
/// signature check, one with another name by the issuer lookup.
fn ca_named(td: &str, cn: &str) -> Ca {
    let params = ca_params_named(&format!("spiffe://{td}"), cn);
    let key = new_key();
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca {
        der,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf's chain and key.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Leaf {
    fn certified(&self) -> Arc<rustls::sign::CertifiedKey> {
        certified_key(self.chain.clone(), self.key.clone_key()).unwrap()
    }

    fn resolver(&self) -> Arc<SwappableCert> {
        let r = SwappableCert::new();
        r.set(self.certified()).unwrap();
        r
    }
}

fn svid_params(sans: Vec<SanType>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2100, 1, 1);
    p
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn sign(ca: &Ca, params: &CertificateParams) -> Leaf {
    let key = new_key();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

fn svid(ca: &Ca, id: &str) -> Leaf {
    sign(ca, &svid_params(vec![uri(id)]))
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn expect_ids(ids: &[&str]) -> ExpectedServer {
    ExpectedServer::Ids(ids.iter().map(|s| id(s)).collect())
}

fn client(
    roots: &[CertificateDer<'static>],
    expected: ExpectedServer,
    cert: Option<Arc<SwappableCert>>,
) -> ClientConfig {
    let verifier = SpiffeServerVerifier::new(roots, expected).unwrap();
    let cert = cert.map(|c| c as Arc<dyn rustls::client::ResolvesClientCert>);
    client_config(verifier, cert, vec![b"h2".to_vec()]).unwrap()
}

fn server(
    roots: &[CertificateDer<'static>],
    auth: ClientAuth,
    cert: Arc<SwappableCert>,
) -> ServerConfig {
    server_config(roots, auth, cert, vec![b"h2".to_vec()]).unwrap()
}

// ---------------------------------------------------------------- in-memory handshake

/// What each side saw.
struct Outcome {
    client: Result<ClientConnection, rustls::Error>,
    server: Result<ServerConnection, rustls::Error>,
}

impl Outcome {
    fn ok(self) -> (ClientConnection, ServerConnection) {
        match (self.client, self.server) {
            (Ok(c), Ok(s)) => (c, s),
            (c, s) => panic!(
                "handshake failed: client {:?}, server {:?}",
                c.err(),
                s.err()
            ),
        }
    }
    fn client_err(&self) -> &rustls::Error {
        self.client
            .as_ref()
            .expect_err("client should have failed")
    }
    fn server_err(&self) -> &rustls::Error {
        self.server
            .as_ref()
            .expect_err("server should have failed")
    }
}

/// Moves pending TLS records from `from` to `to`; returns whether anything moved.
fn pump(from: &mut Connection, to: &mut Connection, to_err: &mut Option<rustls::Error>) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        if from.write_tls(&mut buf).unwrap() == 0 {
            break;
        }
    }
    if buf.is_empty() || to_err.is_some() {
        return !buf.is_empty();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        if to.read_tls(&mut rd).unwrap() == 0 {
            break;
        }
        if let Err(e) = to.process_new_packets() {
            *to_err = Some(e);
            break;
        }
    }
    true
}

fn handshake(client: ClientConfig, server: ServerConfig) -> Outcome {
    let mut c = Connection::Client(
        ClientConnection::new(Arc::new(client), placeholder_server_name()).unwrap(),
    );
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server)).unwrap());
    let (mut c_err, mut s_err) = (None, None);
    for _ in 0..32 {
        let a = pump(&mut c, &mut s, &mut s_err);
        let b = pump(&mut s, &mut c, &mut c_err);
        if !a && !b {
            break;
        }
    }
    let (Connection::Client(c), Connection::Server(s)) = (c, s) else {
        unreachable!()
    };
    let done = |handshaking: bool, err: Option<rustls::Error>| match err {
        Some(e) => Err(e),
        None if handshaking => Err(rustls::Error::General("handshake did not finish".into())),
        None => Ok(()),
    };
    Outcome {
        client: done(c.is_handshaking(), c_err).map(|()| c),
        server: done(s.is_handshaking(), s_err).map(|()| s),
    }
}

/// The identity the server saw and the identity the client saw.
fn identities(c: &ClientConnection, s: &ServerConnection) -> (Option<SpiffeId>, SpiffeId) {
    let client_id = peer_identity(s.peer_certificates()).unwrap();
    let server_id = peer_identity(c.peer_certificates()).unwrap().unwrap();
    (client_id, server_id)
}

// ---------------------------------------------------------------- handshakes

#[test]
fn mutual_tls_between_two_svids() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let out = handshake(
        client(
            &roots,
            expect_ids(&[ORDERS]),
            Some(svid(&ca, CHECKOUT).resolver()),
        ),
        server(&roots, ClientAuth::Required, svid(&ca, ORDERS).resolver()),
    );
    let (c, s) = out.ok();
    assert_eq!(identities(&c, &s), (Some(id(CHECKOUT)), id(ORDERS)));
    assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn secure_naming_refuses_a_valid_cert_for_another_identity() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let out = handshake(
        client(
            &roots,
            expect_ids(&[ORDERS]),
            Some(svid(&ca, CHECKOUT).resolver()),
        ),
        server(&roots, ClientAuth::Required, svid(&ca, INTRUDER).resolver()),
    );
    let err = out.client_err();
    assert_eq!(failure_reason(err), "unexpected_identity");
    let msg = err.to_string();
    assert!(msg.contains(INTRUDER) && msg.contains(ORDERS), "{msg}");
    assert_eq!(failure_reason(out.server_err()), "alert_received");
}

#[test]
fn several_expected_ids_accept_any_of_them() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let expected = expect_ids(&[CHECKOUT, ORDERS]);
    let (c, _) = handshake(
        client(
            &roots,
            expected.clone(),
            Some(svid(&ca, CHECKOUT).resolver()),
        ),
        server(&roots, ClientAuth::Required, svid(&ca, ORDERS).resolver()),
    )
    .ok();
    assert_eq!(
        peer_identity(c.peer_certificates()).unwrap(),
        Some(id(ORDERS))
    );
    let out = handshake(
        client(&roots, expected, None),
        server(&roots, ClientAuth::None, svid(&ca, INTRUDER).resolver()),
    );
    let msg = out.client_err().to_string();
    assert!(
        msg.contains(&format!("one of [{CHECKOUT}, {ORDERS}]")),
        "{msg}"
    );
}

#[test]
fn trust_domain_expectation_accepts_members_only() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let td = ExpectedServer::TrustDomain(TrustDomain::new("td.test").unwrap());
    let (c, _) = handshake(
        client(&roots, td.clone(), None),
        server(&roots, ClientAuth::Optional, svid(&ca, INTRUDER).resolver()),
    )
    .ok();
    assert_eq!(
        peer_identity(c.peer_certificates()).unwrap(),
        Some(id(INTRUDER))
    );

    let foreign = "spiffe://other.test/ns/shop/sa/orders";
    let out = handshake(
        client(&roots, td, None),
        server(&roots, ClientAuth::Optional, svid(&ca, foreign).resolver()),
    );
    assert_eq!(failure_reason(out.client_err()), "unexpected_identity");
    let msg = out.client_err().to_string();
    assert!(
        msg.contains(foreign) && msg.contains("trust domain td.test"),
        "{msg}"
    );
}

#[test]
fn server_cert_from_another_ca_is_refused() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    for (other, reason) in [
        (ca_named("td.test", "impostor root"), "unknown_issuer"),
        (ca_named("td.test", "trustmesh test root"), "bad_signature"),
    ] {
        let out = handshake(
            client(&roots, expect_ids(&[ORDERS]), None),
            server(&roots, ClientAuth::None, svid(&other, ORDERS).resolver()),
        );
        assert_eq!(failure_reason(out.client_err()), reason);
    }
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    for (other, reason) in [
        (ca_named("td.test", "impostor root"), "unknown_issuer"),
        (ca_named("td.test", "trustmesh test root"), "bad_signature"),
    ] {
        for auth in [ClientAuth::Required, ClientAuth::Optional] {
            let out = handshake(
                client(
                    &roots,
                    expect_ids(&[ORDERS]),
                    Some(svid(&other, CHECKOUT).resolver()),
                ),
                server(&roots, auth, svid(&ca, ORDERS).resolver()),
            );
            assert_eq!(failure_reason(out.server_err()), reason, "{auth:?}");
            assert!(out.client.is_err(), "{auth:?}");
        }
    }
}

#[test]
fn bundle_with_several_roots_trusts_each() {
    let (old, new) = (ca("td.test"), ca("td.test"));
    let roots = [old.der.clone(), new.der.clone()];
    let (c, s) = handshake(
        client(
            &roots,
            expect_ids(&[ORDERS]),
            Some(svid(&old, CHECKOUT).resolver()),
        ),
        server(&roots, ClientAuth::Required, svid(&new, ORDERS).resolver()),
    )
    .ok();
    assert_eq!(identities(&c, &s), (Some(id(CHECKOUT)), id(ORDERS)));
}

/// A holder that accepted an expired certificate because its clock was in the past.
fn expired(ca: &Ca, spiffe_id: &str) -> Arc<SwappableCert> {
    let mut params = svid_params(vec![uri(spiffe_id)]);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
    let r = SwappableCert::with_clock(|| UNIX_EPOCH + Duration::from_secs(1_590_000_000));
    r.set(sign(ca, &params).certified()).unwrap();
    r
}

#[test]
fn expired_certs_are_refused_both_ways() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let out = handshake(
        client(&roots, expect_ids(&[ORDERS]), None),
        server(&roots, ClientAuth::None, expired(&ca, ORDERS)),
    );
    assert_eq!(failure_reason(out.client_err()), "expired");
    let out = handshake(
        client(&roots, expect_ids(&[ORDERS]), Some(expired(&ca, CHECKOUT))),
        server(&roots, ClientAuth::Required, svid(&ca, ORDERS).resolver()),
    );
    assert_eq!(failure_reason(out.server_err()), "expired");
}

#[test]
fn client_without_cert_required_vs_optional() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let out = handshake(
        client(&roots, expect_ids(&[ORDERS]), None),
        server(&roots, ClientAuth::Required, svid(&ca, ORDERS).resolver()),
    );
    assert_eq!(failure_reason(out.server_err()), "no_client_certificate");

    // An empty holder behaves like no certificate at all.
    let out = handshake(
        client(&roots, expect_ids(&[ORDERS]), Some(SwappableCert::new())),
        server(&roots, ClientAuth::Required, svid(&ca, ORDERS).resolver()),
    );
    assert_eq!(failure_reason(out.server_err()), "no_client_certificate");

    let (c, s) = handshake(
        client(&roots, expect_ids(&[ORDERS]), None),
        server(&roots, ClientAuth::Optional, svid(&ca, ORDERS).resolver()),
    )
    .ok();
    assert_eq!(identities(&c, &s), (None, id(ORDERS)));
}

#[test]
fn malformed_svids_are_refused_in_the_handshake() {
    let ca = ca("td.test");
    let roots = [ca.der.clone()];
    let two = sign(&ca, &svid_params(vec![uri(ORDERS), uri(CHECKOUT)]));
    let dns = sign(
        &ca,
        &svid_params(vec![SanType::DnsName("orders.shop".try_into().unwrap())]),
    );
    let mut ca_params = ca_params(ORDERS);
    ca_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let ca_leaf = sign(&ca, &ca_params);
    for (leaf, reason) in [
        (&two, "several_uri_sans"),
        (&dns, "no_uri_san"),
        (&ca_leaf, "ca_as_leaf"),
    ] {
        // As a server certificate.
        let out = handshake(
            client(&roots, expect_ids(&[ORDERS]), None),
            server(&roots, ClientAuth::None, leaf.resolver()),
        );
        assert_eq!(failure_reason(out.client_err()), reason);
        // As a client certificate.
        let out = handshake(
            client(&roots, expect_ids(&[ORDERS]), Some(leaf.resolver())),
            server(&roots, ClientAuth::Required, svid(&ca, ORDERS).resolver()),
        );
        assert_eq!(failure_reason(out.server_err()), reason);
    }
}

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
