//! `Identity.Sign` through the tonic service: every refusal is a gRPC status with a message that
//! says what to do and its own metric label, and the limits hold in the order that protects the
//! control plane (refused credentials per address before any check, then per proven caller).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use serde_json::{Value, json};
use trustmesh_api::WorkloadIdentity;
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::proto::v1::identity_server::Identity;
use trustmesh_core::spiffe::TrustDomain;

use super::*;
use crate::compile::{DesiredState, MeshSettings, ObjectKey, compile};
use crate::local::init::token_sha256;
use crate::server::incoming::PeerInfo;

const APP_TOKEN: &str = "app-join-token-0123456789abcdef";
const QUIET_TOKEN: &str = "quiet-join-token-0123456789abcdef";
const GHOST_TOKEN: &str = "ghost-join-token-0123456789abcdef";

fn wid(name: &str, spec: Value) -> WorkloadIdentity {
    serde_json::from_value(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    .unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey { namespace: "default".into(), name: name.into() }
}

/// Local mode: `app` (serving), `quiet` (suspended), and a workload `ghost` whose identity is gone.
fn view() -> MeshView {
    let settings = MeshSettings::new(TrustDomain::new("local.trustmesh").unwrap(), DefaultAction::Deny);
    let identities = vec![wid("app", json!({"serviceAccount": "app"})), wid("quiet", json!({"serviceAccount": "quiet", "suspended": true}))];
    let compiled = compile(&settings, &DesiredState { identities, ..Default::default() });
    let join_tokens = [(APP_TOKEN, "app"), (QUIET_TOKEN, "quiet"), (GHOST_TOKEN, "ghost")]
        .map(|(token, name)| (token_sha256(token), (format!("default/{name}"), key(name))))
        .into_iter()
        .collect();
    MeshView { settings, compiled, join_tokens, addresses: BTreeMap::new(), version: 1, cache: Default::default() }
}

fn service(burst: u32) -> (IdentityService, Arc<Metrics>) {
    let ca = Arc::new(CertificateAuthority::generate(&TrustDomain::new("local.trustmesh").unwrap()).unwrap());
    let (_tx, rx) = watch::channel(Arc::new(view()));
    let metrics = Metrics::new();
    (IdentityService::new(ca, rx, Authenticator::Local, RateLimiter::new(burst, 0.0), metrics.clone()), metrics)
}

fn csr(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    CertificateParams::default().serialize_request(&key).unwrap().der().to_vec()
}

fn request(credential: Option<WireCredential>, csr_der: Vec<u8>, from: &str) -> tonic::Request<SignRequest> {
    let mut req = tonic::Request::new(SignRequest { credential, csr_der });
    let remote: SocketAddr = format!("{from}:40000").parse().unwrap();
    req.extensions_mut().insert(PeerInfo { remote, certificates: None });
    req
}

fn join(token: &str) -> Option<WireCredential> {
    Some(WireCredential::JoinToken(token.to_owned()))
}

/// Calls `Identity.Sign` and returns the refusal.
async fn refused(svc: &IdentityService, req: tonic::Request<SignRequest>) -> tonic::Status {
    match svc.sign(req).await {
        Ok(resp) => panic!("expected a refusal, got a certificate for {}", resp.get_ref().spiffe_id),
        Err(status) => status,
    }
}

fn refusals(metrics: &Metrics, reason: &str) -> u64 {
    let line = format!("trustmesh_svid_refusals_total{{reason=\"{reason}\"}} ");
    metrics.encode().lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_registered_workload_gets_its_own_spiffe_id_whatever_the_csr_says() {
    let (svc, metrics) = service(10);
    let resp = svc.sign(request(join(APP_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "127.0.0.1")).await.unwrap().into_inner();
    assert_eq!(resp.spiffe_id, "spiffe://local.trustmesh/ns/default/sa/app");
    assert!(!resp.cert_chain_der.is_empty() && resp.trust_bundle_der.len() == 1);
    assert!(metrics.encode().contains("trustmesh_svids_issued_total 1"), "{}", metrics.encode());
}

#[tokio::test]
async fn every_refusal_has_a_status_a_message_to_act_on_and_a_metric_label() {
    let p256 = || csr(&PKCS_ECDSA_P256_SHA256);
    let cases: Vec<(&str, tonic::Request<SignRequest>, tonic::Code, &str, &str)> = vec![
        ("no credential", request(None, p256(), "10.0.0.1"), tonic::Code::Unauthenticated, "missing_credential", "send the workload's join token"),
        ("unknown join token", request(join("guess"), p256(), "10.0.0.1"), tonic::Code::Unauthenticated, "unknown_join_token", "DIR/tokens/<name>"),
        (
            "a service-account token in local mode",
            request(Some(WireCredential::ServiceAccountToken("eyJ...".into())), p256(), "10.0.0.1"),
            tonic::Code::Unauthenticated,
            "wrong_credential_kind",
            "join token (this operator runs in local mode)",
        ),
        ("identity deleted", request(join(GHOST_TOKEN), p256(), "10.0.0.2"), tonic::Code::NotFound, "no_identity", "create it or fix the LocalWorkload"),
        ("suspended identity", request(join(QUIET_TOKEN), p256(), "10.0.0.3"), tonic::Code::PermissionDenied, "suspended", "spec.suspended is false"),
        ("malformed CSR", request(join(APP_TOKEN), b"not a CSR".to_vec(), "10.0.0.4"), tonic::Code::InvalidArgument, "bad_csr", "CSR"),
        ("P-384 key", request(join(APP_TOKEN), csr(&PKCS_ECDSA_P384_SHA384), "10.0.0.4"), tonic::Code::InvalidArgument, "unsupported_key", "P-256"),
    ];
    let (svc, metrics) = service(10);
    for (what, req, code, label, hint) in cases {
        let status = refused(&svc, req).await;
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(status.message().contains(hint), "{what}: {:?} should mention {hint:?}", status.message());
        assert_eq!(refusals(&metrics, label), 1, "{what}: counted under {label}");
    }
    assert!(metrics.encode().contains("trustmesh_svids_issued_total 0"));
}

#[tokio::test]
async fn one_caller_is_limited_after_its_burst_and_others_are_not() {
    let (svc, metrics) = service(2);
    for _ in 0..2 {
        svc.sign(request(join(APP_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "127.0.0.1")).await.unwrap();
    }
    let status = refused(&svc, request(join(APP_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "127.0.0.1")).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("too many signing requests from local/default/app"), "{}", status.message());
    assert_eq!(refusals(&metrics, "rate_limited"), 1);
    // The limit is per proven caller and comes before the identity lookup, so a suspended
    // workload retrying in a loop is throttled too, on its own bucket.
    for _ in 0..2 {
        assert_eq!(refused(&svc, request(join(QUIET_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "127.0.0.1")).await.code(), tonic::Code::PermissionDenied);
    }
    assert_eq!(refused(&svc, request(join(QUIET_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "127.0.0.1")).await.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn an_address_that_keeps_sending_bad_credentials_is_not_heard_until_it_slows_down() {
    let (svc, metrics) = service(100);
    let guesser = "10.9.9.9";
    for i in 0..FAILURE_BURST {
        let status = refused(&svc, request(join(&format!("guess-{i}")), csr(&PKCS_ECDSA_P256_SHA256), guesser)).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "guess {i} is checked");
    }
    // Now even a valid token from that address is refused before it is checked.
    let status = refused(&svc, request(join(APP_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), guesser)).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("too many refused credentials from 10.9.9.9"), "{}", status.message());
    assert_eq!(refusals(&metrics, "too_many_failures"), 1);
    assert_eq!(refusals(&metrics, "unknown_join_token"), u64::from(FAILURE_BURST));
    // Other addresses are unaffected, and refusals after authentication do not count as failures.
    svc.sign(request(join(APP_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "10.1.1.1")).await.unwrap();
    let quiet: IpAddr = "10.2.2.2".parse().unwrap();
    for _ in 0..FAILURE_BURST + 5 {
        let _ = svc.sign_request(&SignRequest { credential: join(QUIET_TOKEN), csr_der: csr(&PKCS_ECDSA_P256_SHA256) }, Some(quiet)).await;
    }
    let again = svc.sign_request(&SignRequest { credential: join(APP_TOKEN), csr_der: csr(&PKCS_ECDSA_P256_SHA256) }, Some(quiet)).await;
    assert!(again.is_ok(), "a suspended identity's retries do not lock out its address: {again:?}");
}

#[tokio::test]
async fn service_account_tokens_from_one_address_are_limited_before_their_review() {
    let (svc, metrics) = service(100);
    let sa_token = || Some(WireCredential::ServiceAccountToken("eyJ...".into()));
    for i in 0..REVIEW_BURST {
        let status = refused(&svc, request(sa_token(), csr(&PKCS_ECDSA_P256_SHA256), "10.3.3.3")).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "request {i} reaches authentication");
    }
    let status = refused(&svc, request(sa_token(), csr(&PKCS_ECDSA_P256_SHA256), "10.3.3.3")).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too many signing requests from address 10.3.3.3"), "{}", status.message());
    assert_eq!(refusals(&metrics, "rate_limited"), 1);
    // Join tokens cost no API call and are not counted here.
    svc.sign(request(join(APP_TOKEN), csr(&PKCS_ECDSA_P256_SHA256), "10.3.3.3")).await.unwrap();
}
