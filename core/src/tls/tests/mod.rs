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

mod certs;

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
