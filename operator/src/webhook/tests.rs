//! Webhook tests: realistic AdmissionReview v1 requests (fixtures/), the returned JSON patch
//! applied to the submitted pod, and the resulting pod checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

use super::*;

const DEPLOYMENT_POD: &str = include_str!("fixtures/deployment-pod.json");
const MINIMAL_POD: &str = include_str!("fixtures/minimal-pod.json");

fn config() -> InjectConfig {
    InjectConfig::new(
        "registry.example.com/trustmesh/sidecar:0.1.0",
        "trustmesh-operator.trustmesh-system.svc:15012",
        "spiffe://cluster.local/ns/trustmesh-system/sa/trustmesh-operator",
        "cluster.local",
    )
}

/// Namespaces `shop` and `batch` carry `trustmesh.dev/inject=enabled`, `kube-system` too (it
/// must still be skipped), every other namespace is known and unlabeled.
fn contexts(ns: &str) -> InjectionContext {
    let labeled = ["shop", "batch", "kube-system", "trustmesh-system"].contains(&ns);
    let mut labels = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.to_owned())]);
    if labeled {
        labels.insert("trustmesh.dev/inject".into(), "enabled".into());
    }
    InjectionContext { namespace: ns.into(), namespace_labels: Some(labels), operator_namespace: "trustmesh-system".into(), config: config() }
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// The review's `response`, as JSON, and the decoded patch if there is one.
struct Answer {
    response: Value,
    patch: Option<json_patch::Patch>,
}

impl Answer {
    fn allowed(&self) -> bool {
        self.response["allowed"] == json!(true)
    }
    fn message(&self) -> String {
        self.response["status"]["message"].as_str().unwrap_or_default().to_owned()
    }
    /// The submitted pod with the patch applied.
    fn patched(&self, review: &Value) -> Value {
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &self.patch.as_ref().expect("a patch").0).expect("the patch applies");
        pod
    }
}

fn answer_bytes(body: &[u8], ctx: impl Fn(&str) -> InjectionContext) -> Answer {
    let out = review(body, ctx);
    let raw: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(raw["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(raw["kind"], "AdmissionReview");
    let typed: AdmissionReview<DynamicObject> = serde_json::from_slice(&out).expect("the answer is an AdmissionReview");
    let patch = typed.response.and_then(|r| r.patch).map(|p| serde_json::from_slice(&p).expect("the patch is an RFC 6902 patch"));
    if patch.is_some() {
        assert_eq!(raw["response"]["patchType"], "JSONPatch");
    }
    Answer { response: raw["response"].clone(), patch }
}

fn answer(review: &Value) -> Answer {
    answer_bytes(&serde_json::to_vec(review).expect("serializes"), contexts)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().expect("an array").iter().map(|c| c["name"].as_str().expect("a name")).collect()
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array().expect("an array").iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

fn args(c: &Value) -> Vec<&str> {
    c["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("string arg")).collect()
}

/// The value following `flag` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| *a == flag).and_then(|i| args.get(i + 1)).copied()
}

/// Every value of a repeated flag, in order.
fn flags<'a>(args: &[&'a str], flag: &str) -> Vec<&'a str> {
    args.windows(2).filter(|w| w[0] == flag).map(|w| w[1]).collect()
}

fn with(mut review: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let target = review.pointer_mut(parent).expect("parent exists");
    target.as_object_mut().expect("an object").insert(key.replace("~1", "/"), value);
    review
}

fn pod_of(review: &Value) -> Pod {
    serde_json::from_value(review["request"]["object"].clone()).expect("a pod")
}

#[test]
fn deployment_pod_in_labeled_namespace_is_injected() {
    let review = fixture(DEPLOYMENT_POD);
    let a = answer(&review);
    assert!(a.allowed(), "{:?}", a.response);
    assert_eq!(a.response["uid"], "5a3c1e0b-7d2f-4f7e-9a51-2f0c6b1d9e42");
    let pod = a.patched(&review);
    let original = &review["request"]["object"];
    let spec = &pod["spec"];

    // Init order: iptables first, then the native sidecar, then the pod's own, unchanged.
    assert_eq!(names(&spec["initContainers"]), ["trustmesh-init", "trustmesh-sidecar", "migrate"]);
    assert_eq!(spec["initContainers"][2], original["spec"]["initContainers"][0]);

    let init = by_name(&spec["initContainers"], "trustmesh-init");
    assert_eq!(init["image"], "registry.example.com/trustmesh/sidecar:0.1.0");
    let sc = &init["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}));
    assert!(init.get("restartPolicy").is_none(), "the init step runs once");
    let init_args = args(init);
    assert_eq!(init_args[0], "init");
    assert_eq!(flag(&init_args, "--proxy-uid"), Some("1337"));
    // The tcpSocket probe on the named port "warmer" (7070) keeps working only outside the mesh.
    assert_eq!(flag(&init_args, "--exclude-inbound-ports"), Some("7070"));
    assert_eq!(flag(&init_args, "--exclude-outbound-cidrs"), Some("169.254.169.254/32"));
    assert_eq!(flag(&init_args, "--inbound-ports"), None, "default: every port");

    let sidecar = by_name(&spec["initContainers"], "trustmesh-sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    let sc = &sidecar["securityContext"];
    assert_eq!((&sc["runAsUser"], &sc["runAsGroup"], &sc["runAsNonRoot"]), (&json!(1337), &json!(1337), &json!(true)));
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    let sargs = args(sidecar);
    assert_eq!(&sargs[..2], ["run", "--transparent"]);
    assert_eq!(flag(&sargs, "--operator"), Some("trustmesh-operator.trustmesh-system.svc:15012"));
    assert_eq!(flag(&sargs, "--bundle"), Some("/var/run/trustmesh/bundle/ca.crt"));
    assert_eq!(flag(&sargs, "--sa-token-file"), Some("/var/run/trustmesh/token/token"));
    assert_eq!(flag(&sargs, "--operator-id"), Some("spiffe://cluster.local/ns/trustmesh-system/sa/trustmesh-operator"));
    assert_eq!(flag(&sargs, "--admin"), Some("0.0.0.0:15020"));
    assert_eq!(flags(&sargs, "--probe-path"), ["8080:/healthz", "8080:/ready", "8081:/status"], "exactly the probes, nothing else");
    assert!(!sargs.contains(&"--permissive"));
    assert_eq!(sidecar["ports"], json!([{"name": "trustmesh-admin", "containerPort": 15020, "protocol": "TCP"}]));
    assert_eq!(sidecar["readinessProbe"]["httpGet"], json!({"path": "/ready", "port": 15020, "scheme": "HTTP"}));
    assert_eq!(sidecar["livenessProbe"]["httpGet"], json!({"path": "/live", "port": 15020, "scheme": "HTTP"}));
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(sidecar["resources"], serde_json::to_value(default_resources()).expect("json"));
    assert_eq!(
        sidecar["volumeMounts"],
        json!([
            {"name": "trustmesh-token", "mountPath": "/var/run/trustmesh/token", "readOnly": true},
            {"name": "trustmesh-bundle", "mountPath": "/var/run/trustmesh/bundle", "readOnly": true},
        ])
    );

    // Volumes: the pod's three kept as they were, ours appended.
    assert_eq!(names(&spec["volumes"]), ["config", "cache", "kube-api-access-x7k2p", "trustmesh-token", "trustmesh-bundle", "trustmesh-run"]);
    assert_eq!(spec["volumes"][2], original["spec"]["volumes"][2]);
    let token = &by_name(&spec["volumes"], "trustmesh-token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token, &json!({"audience": "trustmesh", "expirationSeconds": 3600, "path": "token"}));
    let bundle = &by_name(&spec["volumes"], "trustmesh-bundle")["configMap"];
    assert_eq!(bundle, &json!({"name": "trustmesh-ca-bundle", "items": [{"key": "ca.crt", "path": "ca.crt"}]}));

    // Probes: HTTP ones go through the admin port, named ports resolved; the rest untouched.
    let app = by_name(&spec["containers"], "checkout");
    assert_eq!(app["livenessProbe"]["httpGet"], json!({"path": "/app-health/8080/healthz", "port": 15020, "scheme": "HTTP"}));
    assert_eq!(app["livenessProbe"]["initialDelaySeconds"], 5, "timings are kept");
    assert_eq!(app["readinessProbe"]["httpGet"]["path"], "/app-health/8080/ready");
    assert_eq!(app["readinessProbe"]["httpGet"]["httpHeaders"], json!([{"name": "X-Probe", "value": "kubelet"}]));
    assert_eq!(app["startupProbe"], original["spec"]["containers"][0]["startupProbe"], "exec probe untouched");
    let warmer = by_name(&spec["containers"], "cache-warmer");
    assert_eq!(warmer["readinessProbe"]["httpGet"], json!({"path": "/app-health/8081/status", "port": 15020, "scheme": "HTTP"}));
    assert_eq!(warmer["livenessProbe"], original["spec"]["containers"][1]["livenessProbe"], "tcpSocket probe untouched");
    // App containers are otherwise unchanged.
    assert_eq!(app["ports"], original["spec"]["containers"][0]["ports"]);
    assert_eq!(app["volumeMounts"], original["spec"]["containers"][0]["volumeMounts"]);

    // Annotations: ours added, the pod's kept.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["trustmesh.dev/status"], "injected");
    assert_eq!(ann["trustmesh.dev/probe-excluded-inbound-ports"], "7070");
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["trustmesh.dev/exclude-outbound-cidrs"], "169.254.169.254/32");
    // Keys with '/' are JSON-pointer escaped in the patch.
    let paths: Vec<String> = a.patch.as_ref().expect("patch").0.iter().map(|op| op.path().to_string()).collect();
    assert!(paths.contains(&"/metadata/annotations/trustmesh.dev~1status".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/spec/volumes/-".to_owned()), "{paths:?}");

    // The warning about the unmeshed port reaches the client.
    let warnings = a.response["warnings"].as_array().expect("warnings");
    assert!(warnings.iter().any(|w| w.as_str().is_some_and(|w| w.contains("port 7070"))), "{warnings:?}");

    // The result is a valid Pod, and injecting it again changes nothing.
    let injected: Pod = serde_json::from_value(pod.clone()).expect("still a Pod");
    assert_eq!(inject(&injected, &contexts("shop")), Ok(Injection::Skip("already injected")));
    let again = answer(&with(review, "/request/object", pod));
    assert!(again.allowed() && again.patch.is_none());
}

#[test]
fn pod_annotation_opts_in_in_an_unlabeled_namespace() {
    let review = with(fixture(DEPLOYMENT_POD), "/request/namespace", json!("web"));
    assert!(answer(&review).patch.is_none(), "unlabeled namespace, no annotation: not injected");
    let review = with(review, "/request/object/metadata/annotations/trustmesh.dev~1inject", json!("enabled"));
    let a = answer(&review);
    assert!(a.allowed());
    let pod = a.patched(&review);
    assert_eq!(names(&pod["spec"]["initContainers"]), ["trustmesh-init", "trustmesh-sidecar", "migrate"]);
}

#[test]
fn annotation_disabled_wins_over_namespace_label() {
    let review = with(fixture(DEPLOYMENT_POD), "/request/object/metadata/annotations/trustmesh.dev~1inject", json!("disabled"));
    let a = answer(&review);
    assert!(a.allowed());
    assert!(a.patch.is_none());
    assert_eq!(inject(&pod_of(&review), &contexts("shop")), Ok(Injection::Skip("disabled by pod annotation or label trustmesh.dev/inject")));
}

#[test]
fn kube_system_and_operator_namespace_are_never_injected() {
    for ns in ["kube-system", "trustmesh-system"] {
        let review = with(fixture(DEPLOYMENT_POD), "/request/namespace", json!(ns));
        let review = with(review, "/request/object/metadata/annotations/trustmesh.dev~1inject", json!("enabled"));
        let a = answer(&review);
        assert!(a.allowed() && a.patch.is_none(), "{ns}");
        // Even when the namespace cache does not know them.
        let ctx = InjectionContext { namespace_labels: None, ..contexts(ns) };
        assert!(matches!(inject(&pod_of(&review), &ctx), Ok(Injection::Skip(_))), "{ns}");
    }
}

#[test]
fn already_injected_pods_are_left_alone() {
    let review = with(fixture(DEPLOYMENT_POD), "/request/object/metadata/annotations/trustmesh.dev~1status", json!("injected"));
    let a = answer(&review);
    assert!(a.allowed() && a.patch.is_none());

    let mut review = fixture(DEPLOYMENT_POD);
    review["request"]["object"]["spec"]["initContainers"]
        .as_array_mut()
        .expect("array")
        .push(json!({"name": "trustmesh-sidecar", "image": "x", "restartPolicy": "Always"}));
    assert_eq!(inject(&pod_of(&review), &contexts("shop")), Ok(Injection::Skip("already injected")));
}

#[test]
fn pod_without_volumes_init_containers_or_annotations_gets_the_arrays_created() {
    let review = fixture(MINIMAL_POD);
    let a = answer(&review);
    assert!(a.allowed(), "{:?}", a.response);
    let ops: Vec<(String, &Value)> = a
        .patch
        .as_ref()
        .expect("patch")
        .0
        .iter()
        .map(|op| match op {
            json_patch::PatchOperation::Add(add) => (add.path.to_string(), &add.value),
            other => panic!("only adds expected: {other:?}"),
        })
        .collect();
    let paths: Vec<&str> = ops.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/spec/initContainers", "/spec/volumes", "/metadata/annotations"]);
    assert_eq!(ops[2].1, &json!({"trustmesh.dev/status": "injected"}));

    let pod = a.patched(&review);
    assert_eq!(names(&pod["spec"]["initContainers"]), ["trustmesh-init", "trustmesh-sidecar"]);
    assert_eq!(names(&pod["spec"]["volumes"]), ["trustmesh-token", "trustmesh-bundle", "trustmesh-run"]);
    assert_eq!(pod["metadata"]["annotations"], json!({"trustmesh.dev/status": "injected"}));
    let sargs = args(&pod["spec"]["initContainers"][1]);
    assert_eq!(flag(&sargs, "--probe-path"), None, "no probes, no --probe-path");
    let iargs = args(&pod["spec"]["initContainers"][0]);
    assert_eq!(iargs, ["init", "--proxy-uid", "1337"]);
    assert!(a.response.get("warnings").is_none());
    serde_json::from_value::<Pod>(pod).expect("a valid Pod");
}

#[test]
fn empty_arrays_are_appended_to() {
    let mut review = fixture(MINIMAL_POD);
    review["request"]["object"]["spec"]["initContainers"] = json!([]);
    review["request"]["object"]["spec"]["volumes"] = json!([]);
    review["request"]["object"]["metadata"]["annotations"] = json!({});
    let a = answer(&review);
    let pod = a.patched(&review);
    assert_eq!(names(&pod["spec"]["initContainers"]), ["trustmesh-init", "trustmesh-sidecar"]);
    assert_eq!(names(&pod["spec"]["volumes"]), ["trustmesh-token", "trustmesh-bundle", "trustmesh-run"]);
    assert_eq!(pod["metadata"]["annotations"], json!({"trustmesh.dev/status": "injected"}));
}

#[test]
fn bad_annotation_values_deny_the_pod_with_the_fix() {
    let cases = [
        ("trustmesh.dev~1exclude-inbound-ports", "9090,http", "trustmesh.dev/exclude-inbound-ports", "\"9090,9091\""),
        ("trustmesh.dev~1exclude-outbound-ports", "0", "trustmesh.dev/exclude-outbound-ports", "comma-separated"),
        ("trustmesh.dev~1exclude-outbound-cidrs", "10.0.0.0/33", "trustmesh.dev/exclude-outbound-cidrs", "10.0.0.0/8"),
        ("trustmesh.dev~1exclude-outbound-cidrs", "my-vpc", "trustmesh.dev/exclude-outbound-cidrs", "CIDRs"),
        ("trustmesh.dev~1include-inbound-ports", "all", "trustmesh.dev/include-inbound-ports", "\"*\""),
        ("trustmesh.dev~1include-outbound-ports", "80;443", "trustmesh.dev/include-outbound-ports", "\"*\""),
        ("trustmesh.dev~1inject", "true", "trustmesh.dev/inject", "enabled"),
    ];
    for (key, value, annotation, fix) in cases {
        let review = with(fixture(DEPLOYMENT_POD), &format!("/request/object/metadata/annotations/{key}"), json!(value));
        let a = answer(&review);
        assert!(!a.allowed(), "{key}={value} should be denied");
        assert!(a.patch.is_none());
        let msg = a.message();
        assert!(msg.contains(annotation) && msg.contains(fix), "{key}={value}: {msg}");
        assert_eq!(a.response["status"]["code"], 403);
        assert_eq!(a.response["uid"], "5a3c1e0b-7d2f-4f7e-9a51-2f0c6b1d9e42");
    }
}

#[test]
fn interception_annotations_reach_the_init_container() {
    let mut review = fixture(DEPLOYMENT_POD);
    let ann = &mut review["request"]["object"]["metadata"]["annotations"];
    ann["trustmesh.dev/include-inbound-ports"] = json!("8080, 8081,8080");
    ann["trustmesh.dev/exclude-inbound-ports"] = json!("9090,9091");
    ann["trustmesh.dev/exclude-outbound-ports"] = json!("5432");
    ann["trustmesh.dev/include-outbound-ports"] = json!("8080,80");
    ann["trustmesh.dev/exclude-outbound-cidrs"] = json!("10.0.0.0/8, 169.254.169.254,fd00::/8");
    let pod = answer(&review).patched(&review);
    let iargs = args(&pod["spec"]["initContainers"][0]);
    assert_eq!(flag(&iargs, "--inbound-ports"), Some("8080,8081"));
    assert_eq!(flag(&iargs, "--exclude-inbound-ports"), Some("7070,9090,9091"), "annotation + tcpSocket probe port");
    assert_eq!(flag(&iargs, "--exclude-outbound-ports"), Some("5432"));
    assert_eq!(flag(&iargs, "--outbound-ports"), Some("80,8080"));
    assert_eq!(flag(&iargs, "--exclude-outbound-cidrs"), Some("10.0.0.0/8,169.254.169.254/32,fd00::/8"));

    let review = with(fixture(DEPLOYMENT_POD), "/request/object/metadata/annotations/trustmesh.dev~1include-inbound-ports", json!("*"));
    let pod = answer(&review).patched(&review);
    assert_eq!(flag(&args(&pod["spec"]["initContainers"][0]), "--inbound-ports"), Some("*"));
}

#[test]
fn host_network_pods_are_skipped() {
    let review = with(fixture(DEPLOYMENT_POD), "/request/object/spec/hostNetwork", json!(true));
    let a = answer(&review);
    assert!(a.allowed() && a.patch.is_none());
    let Ok(Injection::Skip(reason)) = inject(&pod_of(&review), &contexts("shop")) else { panic!("expected a skip") };
    assert!(reason.contains("hostNetwork"));
}

#[test]
fn malformed_input_is_refused_with_a_message() {
    let uid_only = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "abc-123"}}).to_string();
    let bad_pod = with(fixture(DEPLOYMENT_POD), "/request/object/spec/containers", json!("not a list")).to_string();
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string();
    let bodies: [&[u8]; 6] = [b"", b"{{{", b"[]", no_request.as_bytes(), uid_only.as_bytes(), bad_pod.as_bytes()];
    for body in bodies {
        let a = answer_bytes(body, contexts);
        assert!(!a.allowed(), "{}", String::from_utf8_lossy(body));
        assert!(a.patch.is_none());
        assert!(a.message().starts_with("trustmesh webhook: "), "{}", a.message());
    }
    // The uid is kept whenever it can be read, so the API server can match the answer.
    assert_eq!(answer_bytes(uid_only.as_bytes(), contexts).response["uid"], "abc-123");
    let a = answer_bytes(bad_pod.as_bytes(), contexts);
    assert_eq!(a.response["uid"], "5a3c1e0b-7d2f-4f7e-9a51-2f0c6b1d9e42");
    assert!(a.message().contains("pod could not be read"), "{}", a.message());
}

#[test]
fn other_operations_and_kinds_pass_unchanged() {
    for op in ["UPDATE", "DELETE", "CONNECT"] {
        let mut review = with(fixture(DEPLOYMENT_POD), "/request/operation", json!(op));
        if op == "UPDATE" {
            review["request"]["oldObject"] = review["request"]["object"].clone();
        }
        if op == "DELETE" {
            review["request"]["oldObject"] = review["request"]["object"].take();
        }
        let a = answer(&review);
        assert!(a.allowed() && a.patch.is_none(), "{op}");
        assert_eq!(a.response["uid"], "5a3c1e0b-7d2f-4f7e-9a51-2f0c6b1d9e42");
    }
    // A subresource CREATE (pods/binding) is not a pod to inject.
    let review = with(fixture(DEPLOYMENT_POD), "/request/subResource", json!("binding"));
    let review = with(review, "/request/object", json!({"apiVersion": "v1", "kind": "Binding", "target": {"kind": "Node", "name": "n1"}}));
    let a = answer(&review);
    assert!(a.allowed() && a.patch.is_none());
}

#[test]
fn unknown_namespace_denies_only_pods_that_need_its_labels() {
    let unknown = |ns: &str| InjectionContext { namespace_labels: None, ..contexts(ns) };
    let review = fixture(DEPLOYMENT_POD);
    let a = answer_bytes(&serde_json::to_vec(&review).expect("json"), unknown);
    assert!(!a.allowed());
    assert!(a.message().contains("does not know namespace \"shop\""), "{}", a.message());
    let review = with(review, "/request/object/metadata/annotations/trustmesh.dev~1inject", json!("enabled"));
    let a = answer_bytes(&serde_json::to_vec(&review).expect("json"), unknown);
    assert!(a.allowed() && a.patch.is_some(), "the annotation alone decides");
}

#[test]
fn permissive_mode_adds_the_flag() {
    let permissive = |ns: &str| {
        let mut c = contexts(ns);
        c.config.mtls_mode = MtlsMode::Permissive;
        c
    };
    let review = fixture(MINIMAL_POD);
    let a = answer_bytes(&serde_json::to_vec(&review).expect("json"), permissive);
    let pod = a.patched(&review);
    assert!(args(&pod["spec"]["initContainers"][1]).contains(&"--permissive"));
}

#[test]
fn ipv6_redirects_and_listens_on_both_families_only_when_asked() {
    let review = fixture(MINIMAL_POD);
    let pod = answer(&review).patched(&review);
    assert!(!args(&pod["spec"]["initContainers"][0]).contains(&"--ipv6") && !args(&pod["spec"]["initContainers"][1]).contains(&"--ipv6"));
    let dual = |ns: &str| {
        let mut c = contexts(ns);
        c.config.ipv6 = true;
        c
    };
    let pod = answer_bytes(&serde_json::to_vec(&review).expect("json"), dual).patched(&review);
    assert!(args(&pod["spec"]["initContainers"][0]).contains(&"--ipv6"), "init writes the ip6tables rules");
    assert!(args(&pod["spec"]["initContainers"][1]).contains(&"--ipv6"), "the sidecar listens where they redirect");
}

#[test]
fn conflicts_deny_the_pod() {
    let review = with(fixture(MINIMAL_POD), "/request/object/spec/containers/0/ports", json!([{"containerPort": 15020}]));
    let a = answer(&review);
    assert!(!a.allowed() && a.message().contains("port 15020"), "{}", a.message());

    let review = with(fixture(MINIMAL_POD), "/request/object/spec/securityContext", json!({"runAsUser": 1337}));
    let a = answer(&review);
    assert!(!a.allowed() && a.message().contains("uid 1337"), "{}", a.message());
    // A container that overrides the pod's uid is fine.
    let review = with(review, "/request/object/spec/containers/0/securityContext", json!({"runAsUser": 1000}));
    assert!(answer(&review).allowed());

    let review = with(fixture(MINIMAL_POD), "/request/object/spec/volumes", json!([{"name": "trustmesh-token", "emptyDir": {}}]));
    let a = answer(&review);
    assert!(!a.allowed() && a.message().contains("volume named \"trustmesh-token\""), "{}", a.message());
}

#[test]
fn native_sidecar_and_other_probe_kinds() {
    let mut review = fixture(MINIMAL_POD);
    let spec = &mut review["request"]["object"]["spec"];
    spec["initContainers"] = json!([
        {"name": "setup", "image": "busybox", "command": ["true"]},
        {"name": "log-shipper", "image": "shipper", "restartPolicy": "Always",
         "ports": [{"name": "health", "containerPort": 2020}],
         "readinessProbe": {"httpGet": {"port": "health", "path": "/"}}},
    ]);
    spec["containers"][0]["livenessProbe"] = json!({"httpGet": {"port": 8443, "path": "/healthz", "scheme": "HTTPS"}});
    spec["containers"][0]["readinessProbe"] = json!({"grpc": {"port": 9000}});
    spec["containers"][0]["startupProbe"] = json!({"httpGet": {"port": "nope", "path": "/"}});
    let a = answer(&review);
    let pod = a.patched(&review);
    let inits = &pod["spec"]["initContainers"];
    assert_eq!(names(inits), ["trustmesh-init", "trustmesh-sidecar", "setup", "log-shipper"]);
    // The probe replacement targets the right container although two were inserted before it.
    assert_eq!(inits[3]["readinessProbe"]["httpGet"], json!({"path": "/app-health/2020/", "port": 15020, "scheme": "HTTP"}));
    assert_eq!(flags(&args(&inits[1]), "--probe-path"), ["2020:/"]);
    assert_eq!(flag(&args(&inits[0]), "--exclude-inbound-ports"), Some("8443,9000"));
    let app = &pod["spec"]["containers"][0];
    assert_eq!(app["livenessProbe"]["httpGet"]["scheme"], "HTTPS", "HTTPS probe untouched");
    assert_eq!(app["startupProbe"]["httpGet"]["port"], "nope", "unresolvable port untouched");
    let warnings = a.response["warnings"].to_string();
    assert!(warnings.contains("\\\"nope\\\"") && warnings.contains("port 8443") && warnings.contains("port 9000"), "{warnings}");
    assert_eq!(pod["metadata"]["annotations"]["trustmesh.dev/probe-excluded-inbound-ports"], "8443,9000");
}

/// A self-signed server config (ring), offering h2 and http/1.1.
fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("rcgen");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(trustmesh_core::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// `curl -sk` against the server: (status, body).
async fn curl(extra: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sSk", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let body = if out.status.success() { body.to_owned() } else { format!("{body} (curl: {})", String::from_utf8_lossy(&out.stderr)) };
    (code.trim().parse().expect("status code"), body)
}

#[tokio::test]
async fn serves_admission_reviews_over_https() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(serve(listener, tls_config(), Arc::new(contexts)));
    let url = format!("https://127.0.0.1:{port}/inject");
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture_path = dir.path().join("review.json");
    std::fs::write(&fixture_path, DEPLOYMENT_POD).expect("write");
    let data = format!("@{}", fixture_path.display());
    let json = "Content-Type: application/json";

    for version in ["--http1.1", "--http2"] {
        let (status, body) = curl(&[version, "-H", json, "--data-binary", &data, &url]).await;
        assert_eq!(status, 200, "{version}: {body}");
        let review = fixture(DEPLOYMENT_POD);
        let reply: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(reply["kind"], "AdmissionReview");
        assert_eq!(reply["response"]["allowed"], true);
        assert_eq!(reply["response"]["patchType"], "JSONPatch");
        // `body` is itself an answer: decode its patch and apply it.
        let patch: Vec<u8> = serde_json::from_value(reply["response"]["patch"].clone()).expect("patch bytes");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("patch");
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch.0).expect("applies");
        assert_eq!(names(&pod["spec"]["initContainers"]), ["trustmesh-init", "trustmesh-sidecar", "migrate"]);
    }

    let (status, _) = curl(&["-X", "GET", &url]).await;
    assert_eq!(status, 405);
    let (status, _) = curl(&["-H", json, "--data-binary", &data, &format!("https://127.0.0.1:{port}/mutate")]).await;
    assert_eq!(status, 404);
    let (status, _) = curl(&["-H", "Content-Type: text/plain", "--data-binary", &data, &url]).await;
    assert_eq!(status, 415);
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; MAX_BODY_BYTES + 1]).expect("write");
    for version in ["--http1.1", "--http2"] {
        let (status, body) = curl(&[version, "-H", json, "--data-binary", &format!("@{}", big.display()), &url]).await;
        assert_eq!(status, 413, "{version}: {body}");
    }
    // Garbage still gets an AdmissionReview that refuses, not a crash.
    let (status, body) = curl(&["-H", json, "--data-binary", "{not json", &url]).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"allowed\":false"), "{body}");
    server.abort();
}

#[test]
fn probe_queries_commas_and_odd_paths_are_forwarded_exactly_or_left_alone() {
    let mut review = fixture(MINIMAL_POD);
    let app = &mut review["request"]["object"]["spec"]["containers"][0];
    app["livenessProbe"] = json!({"httpGet": {"port": 8080, "path": "/healthz?full=1,deep"}});
    app["readinessProbe"] = json!({"httpGet": {"port": 8080, "path": "ready//now"}});
    app["startupProbe"] = json!({"httpGet": {"port": 8081, "path": "/start up"}});
    let a = answer(&review);
    let pod = a.patched(&review);
    let app = &pod["spec"]["containers"][0];
    assert_eq!(app["livenessProbe"]["httpGet"]["path"], "/app-health/8080/healthz?full=1,deep", "the query is kept");
    assert_eq!(app["readinessProbe"]["httpGet"]["path"], "/app-health/8080/ready//now", "not normalized: matched exactly");
    assert_eq!(app["startupProbe"]["httpGet"], json!({"port": 8081, "path": "/start up"}), "an invalid path is left alone");
    let sidecar = by_name(&pod["spec"]["initContainers"], "trustmesh-sidecar");
    assert_eq!(flags(&args(sidecar), "--probe-path"), ["8080:/healthz?full=1,deep", "8080:/ready//now"], "one flag per probe: commas survive");
    let init = by_name(&pod["spec"]["initContainers"], "trustmesh-init");
    assert_eq!(flag(&args(init), "--exclude-inbound-ports"), Some("8081"));
    assert!(a.response["warnings"].to_string().contains("not a valid URI path"), "{}", a.response["warnings"]);
}
