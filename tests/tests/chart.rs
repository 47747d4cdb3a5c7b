//! Tier 5: the Helm chart `charts/trustmesh`, checked with the real `helm` binary.
//!
//! `helm lint` (also `--strict`) must pass; `helm template` with default and non-default values
//! is parsed document by document and the objects are checked: the operator's arguments carry
//! the values, it runs non-root on a read-only root filesystem with every capability dropped,
//! two replicas spread over nodes with a PodDisruptionBudget, the injector's webhook
//! configuration calls `/inject` on the operator's Service and never sees kube-system or the
//! release namespace, and the RBAC grants exactly the expected list (no wildcards). Bad values
//! are refused by `values.schema.json` with a message naming the value.
//!
//! helm comes from `$HELM`, `$PATH`, or where `scripts/install-helm.sh` puts it; the tests fail
//! (never skip) without it, since CI installs it through `scripts/test.sh`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

const RELEASE: &str = "trustmesh";
const NAMESPACE: &str = "trustmesh-system";

/// The non-default values of the issue: every mesh-wide setting changed at once.
const NON_DEFAULT: &str = "defaultPolicy=audit,egress=locked,mtls.mode=permissive,trustDomain=prod.example,\
webhook.failurePolicy=Ignore,replicaCount=3,ca.existingSecret=my-ca";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("charts/trustmesh")
}

fn runs(helm: &Path) -> bool {
    Command::new(helm).args(["version", "--short"]).output().is_ok_and(|o| o.status.success())
}

/// The helm binary: `$HELM`, else `helm` on `$PATH`, else where scripts/install-helm.sh installs it.
fn helm() -> PathBuf {
    const HINT: &str = "the chart tests need the real helm binary: run scripts/install-helm.sh \
                        (scripts/test.sh and CI do), or set HELM=/path/to/helm";
    if let Some(path) = std::env::var_os("HELM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(runs(&path), "HELM={} does not run `helm version`; {HINT}", path.display());
        return path;
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/trustmesh/bin"));
    }
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.into_iter()
        .map(|d| d.join("helm"))
        .find(|p| p.is_file() && runs(p))
        .unwrap_or_else(|| panic!("no helm on PATH; {HINT}"))
}

fn helm_run(args: &[&str]) -> Output {
    let chart = chart();
    let mut cmd = Command::new(helm());
    for a in args {
        cmd.arg(if *a == "CHART" { chart.as_os_str() } else { a.as_ref() });
    }
    // No cluster is touched; keep helm's caches out of the developer's home directory.
    let tmp = std::env::temp_dir().join("trustmesh-chart-test-helm");
    cmd.env("HELM_CACHE_HOME", tmp.join("cache"))
        .env("HELM_CONFIG_HOME", tmp.join("config"))
        .env("HELM_DATA_HOME", tmp.join("data"))
        .env("KUBECONFIG", tmp.join("no-kubeconfig"));
    cmd.output().expect("run helm")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `helm template` with `--set` values; panics with helm's output when it fails.
fn render(set: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", RELEASE, "CHART", "--namespace", NAMESPACE];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = helm_run(&args);
    assert!(out.status.success(), "helm {} failed:\n{}", args.join(" "), text(&out));
    let yaml = String::from_utf8(out.stdout).expect("utf-8 manifest");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"));
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    for d in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string() && d["metadata"]["name"].is_string(), "not an object: {d}");
    }
    docs
}

/// A `helm template` that must fail; returns its output.
fn render_err(set: &str) -> String {
    let out = helm_run(&["template", RELEASE, "CHART", "--namespace", NAMESPACE, "--set", set]);
    assert!(!out.status.success(), "--set {set} was accepted; the schema should refuse it");
    text(&out)
}

fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = objects(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().expect("string")).collect()).unwrap_or_default()
}

fn operator_container(docs: &[Value]) -> &Value {
    let containers = &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "one container: {containers}");
    &containers[0]
}

/// The value following `flag` in the operator's arguments.
fn arg<'a>(docs: &'a [Value], flag: &str) -> &'a str {
    let args = strs(&operator_container(docs)["args"]);
    let i = args.iter().position(|a| *a == flag).unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(i + 1).unwrap_or_else(|| panic!("{flag} has no value"))
}

#[test]
fn chart_crds_are_byte_identical_to_the_generated_crds() {
    let list = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let generated = repo().join("crds");
    let copied = chart().join("crds");
    assert_eq!(list(&generated), list(&copied), "charts/trustmesh/crds/ must hold exactly the files of crds/");
    for name in list(&generated) {
        let a = std::fs::read(generated.join(&name)).unwrap();
        let b = std::fs::read(copied.join(&name)).unwrap();
        assert!(a == b, "charts/trustmesh/crds/{name} differs from crds/{name}; refresh it: cp crds/*.yaml charts/trustmesh/crds/");
    }
}

#[test]
fn helm_lint_passes_plain_and_strict() {
    for args in [
        vec!["lint", "CHART"],
        vec!["lint", "--strict", "CHART"],
        vec!["lint", "--strict", "CHART", "--set", NON_DEFAULT],
        vec!["lint", "--strict", "CHART", "--set", "webhook.selection=all,replicaCount=1"],
    ] {
        let out = helm_run(&args);
        let t = text(&out);
        assert!(out.status.success(), "helm {} failed:\n{t}", args.join(" "));
        assert!(t.contains("0 chart(s) failed"), "{t}");
    }
}

#[test]
fn operator_deployment_with_default_values() {
    let docs = render(&[]);
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], NAMESPACE);
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = operator_container(&docs);

    // Exactly the operator's cluster-mode command line.
    assert_eq!(
        strs(&c["args"]),
        [
            "run", "--namespace", "$(POD_NAMESPACE)", "--pod-name", "$(POD_NAME)",
            "--trust-domain", "cluster.local", "--default-action", "deny", "--egress", "open", "--mtls-mode", "strict",
            "--ca-secret", "trustmesh-ca", "--sidecar-image", "trustmesh/trustmesh-sidecar:0.1.0",
            "--webhook-config", "trustmesh-injector", "--service-name", "trustmesh",
            "--listen", "0.0.0.0:15012", "--webhook-listen", "0.0.0.0:15017", "--metrics-listen", "0.0.0.0:15014",
        ]
    );
    assert_eq!(c["image"], "trustmesh/trustmesh-operator:0.1.0");
    let env = c["env"].as_array().unwrap();
    let field = |name: &str| {
        env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no env {name}"))["valueFrom"]["fieldRef"]["fieldPath"].clone()
    };
    assert_eq!(field("POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(field("POD_NAME"), "metadata.name");
    let env_value = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no env {name}"))["value"].clone();
    assert_eq!(env_value("TRUSTMESH_CERT_DEFAULT_TTL"), "1h");
    assert_eq!(env_value("TRUSTMESH_CERT_MAX_TTL"), "24h");
    assert_eq!(env_value("TRUSTMESH_SIDECAR_UID"), "1337");
    assert_eq!(env_value("TRUSTMESH_SIDECAR_IPV6"), "false", "IPv6 redirection is opt-in");
    let sidecar_resources: Value = serde_json::from_str(env_value("TRUSTMESH_SIDECAR_RESOURCES").as_str().unwrap()).unwrap();
    assert!(sidecar_resources["limits"]["memory"].is_string(), "{sidecar_resources}");

    // Ports and probes.
    let ports: Vec<(String, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("grpc".into(), 15012), ("webhook".into(), 15017), ("http-metrics".into(), 15014)]);
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http-metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http-metrics"}));
    for k in ["requests", "limits"] {
        assert!(c["resources"][k]["cpu"].is_string() && c["resources"][k]["memory"].is_string(), "resources.{k}: {}", c["resources"]);
    }

    // Non-root, read-only, no privilege, no capability, default seccomp.
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], "trustmesh");

    // Replicas spread over nodes; a PodDisruptionBudget keeps one up.
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&term["labelSelector"]["matchLabels"], selector);
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&deploy["spec"]["template"]["metadata"]["labels"][k], v, "pod label {k}");
    }
    // The control plane itself is never injected.
    assert_eq!(deploy["spec"]["template"]["metadata"]["labels"]["trustmesh.dev/inject"], "disabled");
}

#[test]
fn services_expose_grpc_webhook_and_metrics() {
    let docs = render(&[]);
    let selector = &one(&docs, "Deployment")["spec"]["selector"]["matchLabels"];
    let api = named(&docs, "Service", arg(&docs, "--service-name"));
    assert_eq!(&api["spec"]["selector"], selector);
    let ports: Vec<(i64, &str)> =
        api["spec"]["ports"].as_array().unwrap().iter().map(|p| (p["port"].as_i64().unwrap(), p["targetPort"].as_str().unwrap())).collect();
    assert_eq!(ports, [(15012, "grpc"), (443, "webhook")]);
    let metrics = named(&docs, "Service", "trustmesh-metrics");
    assert_eq!(&metrics["spec"]["selector"], selector);
    assert_eq!(metrics["spec"]["ports"][0]["port"], 15014);
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "http-metrics");
}

#[test]
fn every_namespaced_object_is_in_the_release_namespace() {
    let docs = render(&[]);
    let cluster_scoped = ["ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "CustomResourceDefinition"];
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole", "ClusterRoleBinding", "Deployment", "MutatingWebhookConfiguration", "PodDisruptionBudget", "Role",
            "RoleBinding", "Service", "ServiceAccount",
        ])
    );
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        if cluster_scoped.contains(&kind) {
            assert!(d["metadata"]["namespace"].is_null(), "{kind} is cluster-scoped");
        } else {
            assert_eq!(d["metadata"]["namespace"], NAMESPACE, "{kind} {}", d["metadata"]["name"]);
        }
        assert_eq!(d["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm", "{kind}");
    }
}

#[test]
fn injector_webhook_with_default_values() {
    let docs = render(&[]);
    let config = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(config["metadata"]["name"], arg(&docs, "--webhook-config"));
    let hooks = config["webhooks"].as_array().unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["namespace.inject.trustmesh.dev", "pod.inject.trustmesh.dev"]);
    for h in hooks {
        check_common(h, "Fail");
        let ns = expressions(&h["namespaceSelector"]);
        let obj = expressions(&h["objectSelector"]);
        assert!(ns.contains(&("kubernetes.io/metadata.name", "NotIn", vec!["kube-system", NAMESPACE])), "{ns:?}");
        if h["name"] == "namespace.inject.trustmesh.dev" {
            // Opted-in namespaces; pods labelled `disabled` are never sent.
            assert!(ns.contains(&("trustmesh.dev/inject", "In", vec!["enabled"])), "{ns:?}");
            assert_eq!(obj, [("trustmesh.dev/inject", "NotIn", vec!["disabled"])]);
        } else {
            // Pods labelled enabled elsewhere; never twice for one pod (not in enabled namespaces).
            assert!(ns.contains(&("trustmesh.dev/inject", "NotIn", vec!["enabled"])), "{ns:?}");
            assert_eq!(obj, [("trustmesh.dev/inject", "In", vec!["enabled"])]);
        }
    }
}

#[test]
fn injector_webhook_in_broad_mode() {
    let docs = render(&["webhook.selection=all,webhook.excludedNamespaces={monitoring}"]);
    let hooks = one(&docs, "MutatingWebhookConfiguration")["webhooks"].as_array().unwrap().clone();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["name"], "inject.trustmesh.dev");
    check_common(&hooks[0], "Fail");
    let ns = expressions(&hooks[0]["namespaceSelector"]);
    assert_eq!(ns, [("kubernetes.io/metadata.name", "NotIn", vec!["kube-system", NAMESPACE, "monitoring"])]);
    assert_eq!(expressions(&hooks[0]["objectSelector"]), [("trustmesh.dev/inject", "NotIn", vec!["disabled"])]);
}

/// What every injector webhook entry must say.
fn check_common(h: &Value, failure_policy: &str) {
    assert_eq!(h["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(h["sideEffects"], "None");
    assert_eq!(h["failurePolicy"], failure_policy);
    assert_eq!(h["timeoutSeconds"], 5);
    assert_eq!(h["reinvocationPolicy"], "Never");
    assert_eq!(
        h["rules"],
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    let cc = &h["clientConfig"];
    assert_eq!(cc["service"], json!({"name": "trustmesh", "namespace": NAMESPACE, "path": "/inject", "port": 443}));
    // The operator keeps caBundle current; the chart never sets it (an upgrade must not reset it).
    assert!(cc["caBundle"].is_null(), "caBundle must be left to the operator: {cc}");
    assert!(cc["url"].is_null());
}

fn expressions(selector: &Value) -> Vec<(&str, &str, Vec<&str>)> {
    assert!(selector["matchLabels"].is_null(), "selectors here use matchExpressions only: {selector}");
    selector["matchExpressions"]
        .as_array()
        .unwrap_or_else(|| panic!("no matchExpressions: {selector}"))
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["operator"].as_str().unwrap(), strs(&e["values"])))
        .collect()
}

#[test]
fn non_default_values_reach_the_operator_and_the_webhook() {
    let docs = render(&[NON_DEFAULT]);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(arg(&docs, "--trust-domain"), "prod.example");
    assert_eq!(arg(&docs, "--default-action"), "audit");
    assert_eq!(arg(&docs, "--egress"), "locked");
    assert_eq!(arg(&docs, "--mtls-mode"), "permissive");
    assert_eq!(arg(&docs, "--ca-secret"), "my-ca");
    assert!(strs(&operator_container(&docs)["args"]).contains(&"--ca-user-supplied"));
    for h in one(&docs, "MutatingWebhookConfiguration")["webhooks"].as_array().unwrap() {
        check_common(h, "Ignore");
    }
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);

    // The default render does not claim a user-supplied CA.
    let defaults = render(&[]);
    assert!(!strs(&operator_container(&defaults)["args"]).contains(&"--ca-user-supplied"));

    // Image tags, TTLs and the sidecar's uid.
    let docs = render(&[
        "image.operator.tag=1.2.3,image.sidecar.repository=registry.example:5000/mesh/sidecar,image.sidecar.tag=1.2.4",
        "certificates.defaultTtl=30m,certificates.maxTtl=2h,sidecar.uid=2000,sidecar.ipv6=true",
    ]);
    assert_eq!(operator_container(&docs)["image"], "trustmesh/trustmesh-operator:1.2.3");
    assert_eq!(arg(&docs, "--sidecar-image"), "registry.example:5000/mesh/sidecar:1.2.4");
    let env = operator_container(&docs)["env"].as_array().unwrap().clone();
    let value = |n: &str| env.iter().find(|e| e["name"] == n).unwrap()["value"].clone();
    assert_eq!(value("TRUSTMESH_CERT_DEFAULT_TTL"), "30m");
    assert_eq!(value("TRUSTMESH_CERT_MAX_TTL"), "2h");
    assert_eq!(value("TRUSTMESH_SIDECAR_UID"), "2000");
    assert_eq!(value("TRUSTMESH_SIDECAR_IPV6"), "true");
}

#[test]
fn a_single_replica_gets_no_disruption_budget() {
    let docs = render(&["replicaCount=1"]);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 1);
    assert!(objects(&docs, "PodDisruptionBudget").is_empty(), "minAvailable 1 of 1 would block every drain");
}

#[test]
fn invalid_values_are_refused_with_a_message_naming_them() {
    for (set, expected) in [
        ("defaultPolicy=bogus", "defaultPolicy"),
        ("egress=closed", "egress"),
        ("mtls.mode=lenient", "mtls/mode"),
        ("webhook.failurePolicy=Maybe", "webhook/failurePolicy"),
        ("webhook.selection=some", "webhook/selection"),
        ("webhook.timeoutSeconds=60", "webhook/timeoutSeconds"),
        ("trustDomain=Prod/Example", "trustDomain"),
        ("certificates.defaultTtl=1d", "certificates/defaultTtl"),
        ("certificates.maxTtl=", "certificates/maxTtl"),
        ("replicaCount=0", "replicaCount"),
        ("sidecar.uid=0", "sidecar/uid"),
        ("sidecar.ipv6=maybe", "sidecar/ipv6"),
        ("ca.existingSecret=Not_A_Name", "ca/existingSecret"),
        ("image.operator.pullPolicy=Sometimes", "image/operator/pullPolicy"),
        ("replicas=3", "replicas"),
        // Beyond the schema: checks across values in the templates.
        ("certificates.defaultTtl=2h,certificates.maxTtl=1h", "certificates.defaultTtl=2h is longer than certificates.maxTtl=1h"),
        ("certificates.maxTtl=48h", "certificates.maxTtl=48h: must be between 5m and 24h"),
        ("certificates.defaultTtl=1m", "certificates.defaultTtl=1m: must be between 5m and 24h"),
    ] {
        let t = render_err(set);
        assert!(t.contains(expected), "--set {set}: the error should name {expected:?}:\n{t}");
    }
    let t = render_err("defaultPolicy=bogus");
    assert!(t.contains("'deny', 'audit', 'allow'"), "the error should list the allowed values:\n{t}");
}

#[test]
fn notes_tell_the_next_steps() {
    let out = helm_run(&["install", RELEASE, "CHART", "--namespace", NAMESPACE, "--dry-run=client"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let notes = &t[t.find("NOTES:").expect("NOTES")..];
    for step in [
        "rollout status deployment/trustmesh",
        "kubectl label namespace shop trustmesh.dev/inject=enabled",
        "trustmesh.dev/default-policy=audit",
        "kind: WorkloadIdentity",
        "kind: AccessPolicy",
        "kubectl get wid,acp",
        "spiffe://cluster.local/ns/shop/sa/orders",
    ] {
        assert!(notes.contains(step), "NOTES lack {step:?}:\n{notes}");
    }
}

/// One permission: (scope, apiGroup, resource, verb).
type Grant = (&'static str, String, String, String);

fn grants(docs: &[Value]) -> BTreeSet<Grant> {
    let mut set = BTreeSet::new();
    for (kind, scope) in [("ClusterRole", "cluster"), ("Role", "namespace")] {
        for role in objects(docs, kind) {
            for rule in role["rules"].as_array().unwrap() {
                assert!(rule["nonResourceURLs"].is_null(), "{kind} grants nonResourceURLs: {rule}");
                for group in strs(&rule["apiGroups"]) {
                    for resource in strs(&rule["resources"]) {
                        for verb in strs(&rule["verbs"]) {
                            set.insert((scope, group.to_owned(), resource.to_owned(), verb.to_owned()));
                        }
                    }
                }
            }
        }
    }
    set
}

fn expected(rows: &[(&'static str, &str, &str, &str)]) -> BTreeSet<Grant> {
    let mut set = BTreeSet::new();
    for (scope, group, resources, verbs) in rows {
        for resource in resources.split_whitespace() {
            for verb in verbs.split_whitespace() {
                set.insert((*scope, group.to_string(), resource.to_owned(), verb.to_owned()));
            }
        }
    }
    set
}

/// Every permission the operator needs, and no other. Adding one is a conscious change here.
const OPERATOR_GRANTS: &[(&str, &str, &str, &str)] = &[
    ("cluster", "trustmesh.dev", "workloadidentities accesspolicies", "get list watch"),
    ("cluster", "trustmesh.dev", "workloadidentities/status accesspolicies/status", "get patch update"),
    ("cluster", "", "pods namespaces services", "get list watch"),
    ("cluster", "discovery.k8s.io", "endpointslices", "get list watch"),
    ("cluster", "", "configmaps", "get list watch create patch update"),
    ("cluster", "events.k8s.io", "events", "create patch"),
    ("cluster", "authentication.k8s.io", "tokenreviews", "create"),
    ("cluster", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get patch"),
    ("namespace", "coordination.k8s.io", "leases", "get list create update patch"),
];

#[test]
fn rbac_grants_exactly_the_expected_permissions_and_no_wildcard() {
    for (values, secrets) in [(&[][..], "get create update patch"), (&[NON_DEFAULT][..], "get")] {
        let docs = render(values);
        for kind in ["ClusterRole", "Role"] {
            let role = serde_json::to_string(one(&docs, kind)).unwrap();
            assert!(!role.contains('*'), "{kind} has a wildcard: {role}");
        }
        let mut want = expected(OPERATOR_GRANTS);
        want.extend(expected(&[("namespace", "", "secrets", secrets)]));
        let got = grants(&docs);
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(extra.is_empty() && missing.is_empty(), "values {values:?}: RBAC changed\n  extra: {extra:?}\n  missing: {missing:?}");
    }
}

#[test]
fn rbac_narrows_by_name_where_kubernetes_allows_it() {
    let docs = render(&[]);
    let rules = |kind: &str| one(&docs, kind)["rules"].as_array().unwrap().clone();
    // (resource, verb) -> the resourceNames of the rule that grants it (empty: any name).
    let names_for = |rules: &[Value], resource: &str, verb: &str| -> Vec<String> {
        let granting: Vec<&Value> =
            rules.iter().filter(|r| strs(&r["resources"]).contains(&resource) && strs(&r["verbs"]).contains(&verb)).collect();
        assert_eq!(granting.len(), 1, "{resource}/{verb} granted by {} rules", granting.len());
        strs(&granting[0]["resourceNames"]).into_iter().map(str::to_owned).collect()
    };
    let cluster = rules("ClusterRole");
    for verb in ["get", "patch"] {
        assert_eq!(names_for(&cluster, "mutatingwebhookconfigurations", verb), ["trustmesh-injector"]);
    }
    for verb in ["patch", "update"] {
        assert_eq!(names_for(&cluster, "configmaps", verb), ["trustmesh-ca-bundle"]);
    }
    let ns = rules("Role");
    for verb in ["get", "update", "patch"] {
        assert_eq!(names_for(&ns, "secrets", verb), [arg(&docs, "--ca-secret")]);
    }
    // create cannot be narrowed by name: the first start creates the CA Secret.
    assert!(names_for(&ns, "secrets", "create").is_empty());
    assert!(cluster.iter().all(|r| !strs(&r["resources"]).contains(&"secrets")), "no cluster-wide access to Secrets");

    let with_ca = render(&["ca.existingSecret=my-ca"]);
    let ns: Vec<Value> = one(&with_ca, "Role")["rules"].as_array().unwrap().clone();
    assert_eq!(names_for(&ns, "secrets", "get"), ["my-ca"]);

    // The bindings give the roles to the operator's ServiceAccount, and to nothing else.
    for (binding, role) in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")] {
        let b = one(&docs, binding);
        assert_eq!(b["roleRef"], json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": "trustmesh"}));
        assert_eq!(b["subjects"], json!([{"kind": "ServiceAccount", "name": "trustmesh", "namespace": NAMESPACE}]));
    }
    assert_eq!(one(&docs, "ServiceAccount")["metadata"]["name"], "trustmesh");
}
