//! Who gets a certificate: join tokens in local mode, and service-account tokens reviewed by a
//! scripted apiserver (a `tower_test` mock behind `kube::Client`) in cluster mode.

use std::collections::VecDeque;
use std::pin::pin;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use trustmesh_api::WorkloadIdentity;
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::spiffe::TrustDomain;

use super::*;
use crate::compile::{DesiredState, MeshSettings, compile};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.projected.sig";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ORDERS_POD: &str = "/api/v1/namespaces/shop/pods/orders-7d9";
const POD_UID: &str = "0b7c6a52-91f4-4c1e-9d0a-5f1e2a3b4c5d";

fn wid(ns: &str, name: &str, spec: Value) -> WorkloadIdentity {
    serde_json::from_value(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))
    .unwrap()
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey { namespace: ns.into(), name: name.into() }
}

fn view(identities: Vec<WorkloadIdentity>) -> MeshView {
    let settings = MeshSettings::new(TrustDomain::new("cluster.local").unwrap(), DefaultAction::Deny);
    let compiled = compile(&settings, &DesiredState { identities, ..Default::default() });
    MeshView { settings, compiled, join_tokens: BTreeMap::new(), addresses: BTreeMap::new(), version: 1, cache: Default::default() }
}

/// `shop/orders-api` covers SA `orders` pods labelled app=orders; the same SA name in `web` and
/// another SA in `shop` are there to be *not* picked.
fn shop() -> MeshView {
    view(vec![
        wid("web", "orders", json!({"serviceAccount": "orders"})),
        wid("shop", "payments", json!({"serviceAccount": "payments"})),
        wid("shop", "orders-api", json!({"serviceAccount": "orders", "podSelector": {"matchLabels": {"app": "orders"}}})),
    ])
}

/// A TokenReview answer as the apiserver gives it for a pod-bound projected token.
fn reviewed(status: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": TOKEN}, "status": status})
}

fn bound_status() -> Value {
    json!({
        "authenticated": true,
        "audiences": ["trustmesh"],
        "user": {
            "username": "system:serviceaccount:shop:orders",
            "uid": "5d6c7b8a-0000-4000-8000-000000000001",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/pod-name": ["orders-7d9"],
                "authentication.kubernetes.io/pod-uid": [POD_UID],
                "authentication.kubernetes.io/node-name": ["node-1"],
            }
        }
    })
}

fn pod(uid: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-7d9", "namespace": "shop", "uid": uid, "labels": labels},
        "spec": {"serviceAccountName": "orders", "containers": [{"name": "app", "image": "orders:1"}]}})
}

/// One request the apiserver saw: method, path, JSON body (Null when empty).
type Seen = (Method, String, Value);

/// Answers requests in order with `script` (status, JSON); anything past the script gets a 500.
/// Returns what it saw once the client is dropped.
fn apiserver(script: Vec<(u16, Value)>) -> (kube::Client, tokio::task::JoinHandle<Vec<Seen>>) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut script = VecDeque::from(script);
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.as_mut().next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            seen.push((parts.method, parts.uri.path().to_owned(), json));
            let (code, answer) = script.pop_front().unwrap_or((500, json!({"kind": "Status", "message": "unscripted"})));
            let resp = Response::builder().status(StatusCode::from_u16(code).unwrap()).header("content-type", "application/json");
            send.send_response(resp.body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap());
        }
        seen
    });
    (kube::Client::new(svc, "default"), task)
}

/// Authenticates `TOKEN` in cluster mode against `script`; returns the outcome and the requests.
async fn review_with(script: Vec<(u16, Value)>, view: &MeshView) -> (Result<Subject, SignError>, Vec<Seen>) {
    let (client, task) = apiserver(script);
    let auth = Authenticator::Kubernetes(client);
    let result = auth.authenticate(Some(Credential::ServiceAccountToken(TOKEN)), view).await;
    drop(auth);
    (result, task.await.unwrap())
}

fn assert_review_request(seen: &Seen) {
    let (method, path, body) = seen;
    assert_eq!((method, path.as_str()), (&Method::POST, TOKEN_REVIEWS));
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"]["token"], TOKEN);
    assert_eq!(body["spec"]["audiences"], json!(["trustmesh"]));
}

/// The message of a `TokenRejected` refusal counted under `label`.
fn rejection(result: Result<Subject, SignError>, label: &str) -> String {
    match result {
        Err(e @ SignError::TokenRejected { .. }) => {
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert_eq!(e.reason(), label, "metric label of {e}");
            assert!(e.is_bad_credential());
            e.to_string()
        }
        other => panic!("expected TokenRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pod_bound_token_is_reviewed_and_resolves_to_its_workload_identity() {
    let labels = json!({"app": "orders", "pod-template-hash": "7d9"});
    let view = shop();
    let (result, seen) = review_with(vec![(201, reviewed(bound_status())), (200, pod(POD_UID, labels))], &view).await;

    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_review_request(&seen[0]);
    assert_eq!((&seen[1].0, seen[1].1.as_str()), (&Method::GET, ORDERS_POD));
    let subject = result.unwrap();
    let expected_labels: BTreeMap<String, String> =
        [("app", "orders"), ("pod-template-hash", "7d9")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
    assert_eq!(
        subject,
        Subject::Pod { namespace: "shop".into(), service_account: "orders".into(), pod: "orders-7d9".into(), labels: expected_labels }
    );
    assert_eq!(subject.rate_key(), "pod/shop/orders-7d9");
    let identity = subject.identity(&view).unwrap();
    assert_eq!(identity, key("shop", "orders-api"));
    assert_eq!(view.compiled.workloads[&identity].spiffe_id.as_str(), "spiffe://cluster.local/ns/shop/sa/orders");
}

#[tokio::test]
async fn an_unauthenticated_token_is_rejected_with_the_apiservers_reason() {
    let status = json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"});
    let (result, seen) = review_with(vec![(201, reviewed(status))], &shop()).await;
    assert_eq!(seen.len(), 1, "no pod lookup for a refused token");
    assert_review_request(&seen[0]);
    assert!(rejection(result, "token_expired").ends_with("service account token has expired]"));

    let (result, _) = review_with(vec![(201, reviewed(json!({})))], &shop()).await;
    assert!(rejection(result, "token_invalid").contains("not authenticated"));

    let status = json!({"authenticated": false,
        "error": "[invalid bearer token, token audiences [\"api\"] is invalid for the target audiences [\"trustmesh\"]]"});
    let (result, _) = review_with(vec![(201, reviewed(status))], &shop()).await;
    assert!(rejection(result, "token_audience").contains("target audiences"));
}

#[tokio::test]
async fn a_token_for_another_audience_is_rejected() {
    for audiences in [json!(["https://kubernetes.default.svc"]), Value::Null] {
        let mut status = bound_status();
        status["audiences"] = audiences.clone();
        let (result, seen) = review_with(vec![(201, reviewed(status))], &shop()).await;
        assert_eq!(seen.len(), 1);
        let msg = rejection(result, "token_audience");
        assert!(msg.contains("not for audience \"trustmesh\"") && msg.contains("projected token with audience trustmesh"), "{audiences}: {msg}");
    }
}

#[tokio::test]
async fn only_service_accounts_are_accepted() {
    for user in ["system:node:node-1", "alice@example.com", "system:serviceaccount:shop"] {
        let mut status = bound_status();
        status["user"]["username"] = json!(user);
        let (result, seen) = review_with(vec![(201, reviewed(status))], &shop()).await;
        assert_eq!(seen.len(), 1);
        assert!(rejection(result, "token_invalid").contains(&format!("{user:?} is not a service account")), "{user}");
    }
}

#[tokio::test]
async fn a_token_not_bound_to_a_pod_is_rejected() {
    let mut status = bound_status();
    status["user"]["extra"] = json!({});
    let (result, seen) = review_with(vec![(201, reviewed(status))], &shop()).await;
    assert_eq!(seen.len(), 1);
    let msg = rejection(result, "token_not_pod_bound");
    assert!(msg.contains("not bound to a pod") && msg.contains("projected"), "{msg}");
}

#[tokio::test]
async fn a_token_of_a_replaced_pod_is_rejected() {
    let other = pod("ffffffff-0000-4000-8000-000000000000", json!({"app": "orders"}));
    let (result, seen) = review_with(vec![(201, reviewed(bound_status())), (200, other)], &shop()).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].1, ORDERS_POD);
    assert_eq!(rejection(result, "token_pod_mismatch"), "service-account token refused: pod shop/orders-7d9 was replaced since the token was issued");
}

#[tokio::test]
async fn apiserver_failures_are_backend_errors() {
    let denied = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
        "message": "tokenreviews.authentication.k8s.io is forbidden"});
    let (result, _) = review_with(vec![(403, denied)], &shop()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, SignError::Backend { what: "TokenReview", .. }), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound",
        "message": "pods \"orders-7d9\" not found"});
    let (result, seen) = review_with(vec![(201, reviewed(bound_status())), (404, gone)], &shop()).await;
    assert_eq!(seen.len(), 2);
    assert!(matches!(result, Err(SignError::Backend { what: "pod lookup", .. })), "{result:?}");
}

#[tokio::test]
async fn a_service_account_without_workload_identity_gets_no_identity_with_a_hint() {
    // Only `web/orders` exists: the same SA name in another namespace does not count.
    let view = view(vec![wid("web", "orders", json!({"serviceAccount": "orders"}))]);
    let (result, _) =
        review_with(vec![(201, reviewed(bound_status())), (200, pod(POD_UID, json!({"app": "orders"})))], &view).await;
    let err = result.unwrap().identity(&view).unwrap_err();
    assert!(matches!(&err, SignError::NoIdentity { namespace, service_account } if namespace == "shop" && service_account == "orders"));
    assert_eq!(err.code(), tonic::Code::NotFound);
    let msg = err.to_string();
    assert!(msg.contains("create one with spec.serviceAccount: orders in namespace shop"), "{msg}");
}

#[test]
fn a_pod_outside_the_pod_selector_gets_no_identity() {
    let view = shop();
    let subject = |labels: &[(&str, &str)]| Subject::Pod {
        namespace: "shop".into(),
        service_account: "orders".into(),
        pod: "orders-7d9".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    assert_eq!(subject(&[("app", "orders"), ("x", "y")]).identity(&view).unwrap(), key("shop", "orders-api"));
    for labels in [&[][..], &[("app", "checkout")][..], &[("App", "orders")][..]] {
        let err = subject(labels).identity(&view).unwrap_err();
        assert!(matches!(err, SignError::NoIdentity { .. }), "{labels:?}: {err:?}");
    }
    // Without a selector every pod of the service account is covered.
    let payments = Subject::Pod { namespace: "shop".into(), service_account: "payments".into(), pod: "p-1".into(), labels: BTreeMap::new() };
    assert_eq!(payments.identity(&view).unwrap(), key("shop", "payments"));
}

#[tokio::test]
async fn each_mode_takes_only_its_own_kind_of_credential() {
    let view = shop();
    let (client, task) = apiserver(vec![]);
    let cluster = Authenticator::Kubernetes(client);
    let err = cluster.authenticate(Some(Credential::JoinToken("jt-1")), &view).await.unwrap_err();
    assert!(matches!(err, SignError::WrongCredentialKind { expected } if expected.contains("service-account token")), "{err:?}");
    assert!(matches!(cluster.authenticate(None, &view).await, Err(SignError::MissingCredential)));
    drop(cluster);
    assert!(task.await.unwrap().is_empty(), "nothing is sent to the apiserver");

    let err = Authenticator::Local.authenticate(Some(Credential::ServiceAccountToken(TOKEN)), &view).await.unwrap_err();
    assert!(matches!(err, SignError::WrongCredentialKind { expected } if expected.contains("join token")), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(err.reason(), "wrong_credential_kind");
}

#[tokio::test]
async fn local_mode_finds_the_workload_by_the_hash_of_its_join_token() {
    let mut view = shop();
    for (token, name, identity) in [("jt-demo-secret", "default/demo", "demo"), ("jt-other-secret", "default/other", "other")] {
        view.join_tokens.insert(token_sha256(token), (name.to_owned(), key("default", identity)));
    }
    let auth = Authenticator::Local;
    let subject = auth.authenticate(Some(Credential::JoinToken("jt-demo-secret")), &view).await.unwrap();
    assert_eq!(subject, Subject::LocalWorkload { name: "default/demo".into(), identity: key("default", "demo") });
    assert_eq!(subject.rate_key(), "local/default/demo");
    assert_eq!(subject.identity(&view).unwrap(), key("default", "demo"));
    let other = auth.authenticate(Some(Credential::JoinToken("jt-other-secret\n")), &view).await.unwrap();
    assert_eq!(other, Subject::LocalWorkload { name: "default/other".into(), identity: key("default", "other") });

    for wrong in ["jt-demo-secre", "jt-demo-secretx", "", &token_sha256("jt-demo-secret")] {
        let err = auth.authenticate(Some(Credential::JoinToken(wrong)), &view).await.unwrap_err();
        assert!(matches!(err, SignError::UnknownJoinToken), "{wrong:?}: {err:?}");
    }
}
