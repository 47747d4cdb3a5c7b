//! Compilation scenarios: resources in, per-workload policy and status reports out.

use super::*;
use trustmesh_api::labels::EGRESS_LABEL;
use serde_json::json;
use trustmesh_core::policy::{CompiledPolicy, HttpRequest, Request, normalize_path};

fn settings() -> MeshSettings {
    MeshSettings::new(TrustDomain::new("cluster.local").unwrap(), DefaultAction::Deny)
}

fn wid(ns: &str, name: &str, spec: serde_json::Value) -> WorkloadIdentity {
    serde_json::from_value(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})).unwrap()
}

fn acp(ns: &str, name: &str, generation: i64, spec: serde_json::Value) -> AccessPolicy {
    serde_json::from_value(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": ns, "generation": generation}, "spec": spec})).unwrap()
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey { namespace: ns.into(), name: name.into() }
}

fn shop() -> DesiredState {
    DesiredState {
        identities: vec![
            wid("shop", "orders", json!({"serviceAccount": "orders"})),
            wid("web", "frontend", json!({"serviceAccount": "frontend", "ttl": "30m"})),
            wid("batch", "importer", json!({"serviceAccount": "importer"})),
        ],
        policies: vec![acp("shop", "orders-callers", 4, json!({
            "targetRef": {"name": "orders"},
            "rules": [
                {"from": [{"identity": "frontend", "namespace": "web"}], "to": [{"ports": [8080], "methods": ["GET"], "paths": ["/api/*"]}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "batch"}}}], "to": [{"methods": ["POST"], "paths": ["/api/import"]}]},
                {"from": [{"identity": "ghost", "namespace": "web"}]}
            ]}))],
        namespaces: vec![NamespaceInfo { name: "batch".into(), labels: [("team".to_string(), "batch".to_string())].into() }],
    }
}

fn decide(mesh: &CompiledMesh, target: &ObjectKey, caller: &str, method: &str, path: &str) -> String {
    let policy = CompiledPolicy::new(mesh.workloads[target].policy.clone());
    let caller = SpiffeId::parse(caller).unwrap();
    let path = normalize_path(path).unwrap();
    let d = policy.evaluate(&Request { caller: Some(&caller), port: 8080, http: Some(HttpRequest { method, path: &path }) });
    format!("{} by {}", d.verdict.as_str(), d.by)
}

#[test]
fn identities_get_spiffe_ids_ttls_and_namespace_defaults() {
    let mut state = shop();
    state.namespaces.push(NamespaceInfo { name: "web".into(), labels: [(DEFAULT_POLICY_LABEL.to_string(), "audit".to_string())].into() });
    let mesh = compile(&settings(), &state);
    let frontend = &mesh.workloads[&key("web", "frontend")];
    assert_eq!(frontend.spiffe_id.as_str(), "spiffe://cluster.local/ns/web/sa/frontend");
    assert_eq!(frontend.ttl, Duration::from_secs(1800));
    assert_eq!(frontend.policy.default_action, DefaultAction::Audit, "namespace label overrides the mesh default");
    assert_eq!(mesh.workloads[&key("shop", "orders")].policy.default_action, DefaultAction::Deny);
    assert!(mesh.identities.values().all(|r| r.problems.is_empty()));
}

#[test]
fn policy_rules_resolve_to_spiffe_ids_and_namespaces() {
    let mesh = compile(&settings(), &shop());
    let report = &mesh.policies[&key("shop", "orders-callers")];
    assert!(report.accepted(), "{:?}", report.problems);
    assert_eq!(report.unresolved_callers, ["web/ghost"]);
    assert_eq!(report.target.as_ref().map(|t| t.as_str()), Some("spiffe://cluster.local/ns/shop/sa/orders"));
    let orders = key("shop", "orders");
    let rules = &mesh.workloads[&orders].policy.rules;
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].from, [CallerMatch::Id(SpiffeId::parse("spiffe://cluster.local/ns/web/sa/frontend").unwrap())]);
    assert_eq!(rules[1].from, [CallerMatch::Namespace { trust_domain: settings().trust_domain, namespace: "batch".into() }]);
    assert!(rules[2].from.is_empty(), "an unresolved caller matches nothing");
    assert_eq!(decide(&mesh, &orders, "spiffe://cluster.local/ns/web/sa/frontend", "GET", "/api/orders"), "allow by shop/orders-callers@4 rule 0");
    assert_eq!(decide(&mesh, &orders, "spiffe://cluster.local/ns/batch/sa/anyone", "POST", "/api/import"), "allow by shop/orders-callers@4 rule 1");
    assert_eq!(decide(&mesh, &orders, "spiffe://cluster.local/ns/web/sa/ghost", "GET", "/api/orders"), "deny by default (deny)");
    assert!(mesh.workloads[&key("web", "frontend")].policy.rules.is_empty(), "rules land only on their target");
}

#[test]
fn invalid_policies_are_rejected_with_every_problem_named_by_field() {
    let mut state = shop();
    state.policies = vec![acp("shop", "broken", 2, json!({
        "targetRef": {"name": "orders"},
        "rules": [
            {"from": []},
            {"from": [{"identity": "frontend", "spiffeId": "spiffe://cluster.local/x"}, {"namespace": "web", "namespaceSelector": {}}]},
            {"from": [{"spiffeId": "spiffe://Cluster.local/x/"}], "to": [{}, {"ports": [0]}, {"paths": ["/a/../b", "/x*"]}]}
        ]}))];
    let mesh = compile(&settings(), &state);
    let report = &mesh.policies[&key("shop", "broken")];
    assert!(!report.accepted());
    let messages: Vec<String> = report.problems.iter().map(|p| format!("{}: {p}", p.reason())).collect();
    let expected = [
        "EmptyRule: spec.rules[0].from: a rule needs at least one caller",
        "ConflictingFields: spec.rules[1].from[0]: names 2 of identity, spiffeId and namespaceSelector",
        "ConflictingFields: spec.rules[1].from[1].namespace qualifies identity",
        "InvalidSpiffeId: spec.rules[2].from[0].spiffeId",
        "EmptyDestination: spec.rules[2].to[0]: set at least one of ports, methods or paths",
        "InvalidPort: spec.rules[2].to[1].ports: port 0",
        "InvalidPath: spec.rules[2].to[2].paths[0]: path pattern \"/a/../b\" is not in normalized form and could never match; write \"/b\"",
        "InvalidPath: spec.rules[2].to[2].paths[1]",
    ];
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
    for (m, e) in messages.iter().zip(expected) {
        assert!(m.starts_with(e), "{m:?} should start with {e:?}");
    }
    assert!(mesh.workloads[&key("shop", "orders")].policy.rules.is_empty(), "a rejected Allow policy installs nothing");
}

#[test]
fn a_rejected_deny_policy_closes_its_target() {
    let mut state = shop();
    state.policies.push(acp("shop", "deny-broken", 1, json!({
        "targetRef": {"name": "orders"}, "action": "Deny",
        "rules": [{"from": [{"spiffeId": "not-a-spiffe-id"}]}]})));
    let mesh = compile(&settings(), &state);
    assert!(!mesh.policies[&key("shop", "deny-broken")].accepted());
    let orders = key("shop", "orders");
    let verdict = decide(&mesh, &orders, "spiffe://cluster.local/ns/web/sa/frontend", "GET", "/api/orders");
    assert_eq!(verdict, format!("deny by shop/deny-broken@1 rule {}", u32::MAX));
}

#[test]
fn missing_targets_and_broken_identities_are_reported() {
    let mut state = shop();
    state.identities.push(wid("shop", "orders-again", json!({"serviceAccount": "orders"})));
    state.identities.push(wid("shop", "short", json!({"serviceAccount": "short", "ttl": "1m"})));
    state.identities.push(wid("shop", "bad-sa", json!({"serviceAccount": "Bad_SA!"})));
    state.policies.push(acp("shop", "to-nowhere", 1, json!({"targetRef": {"name": "nope"}, "rules": [{"from": [{"identity": "frontend", "namespace": "web"}]}]})));
    state.policies.push(acp("shop", "to-short", 1, json!({"targetRef": {"name": "short"}, "rules": [{"from": [{"identity": "frontend", "namespace": "web"}]}]})));
    let mesh = compile(&settings(), &state);
    let reason = |k: ObjectKey, r: &IdentityReport| r.problems.first().map(|p| format!("{k} {}", p.reason()));
    let mut found: Vec<String> = mesh.identities.iter().filter_map(|(k, r)| reason(k.clone(), r)).collect();
    found.sort();
    assert_eq!(found, ["shop/bad-sa InvalidServiceAccount", "shop/orders-again DuplicateServiceAccount", "shop/short InvalidTTL"]);
    assert!(!mesh.workloads.contains_key(&key("shop", "orders-again")));
    let nowhere = &mesh.policies[&key("shop", "to-nowhere")];
    assert_eq!(nowhere.problems[0].to_string(), "spec.targetRef.name: no WorkloadIdentity \"nope\" in namespace shop; create it or fix targetRef.name");
    assert_eq!(mesh.policies[&key("shop", "to-short")].problems[0].reason(), "TargetNotReady");
}

#[test]
fn suspended_identities_are_revoked_and_compilation_is_deterministic() {
    let mut state = shop();
    state.identities[1].spec.suspended = true;
    let a = compile(&settings(), &state);
    state.policies.reverse();
    state.identities.reverse();
    let b = compile(&settings(), &state);
    assert_eq!(a, b);
    let revoked: Vec<String> = a.revoked().iter().map(|id| id.to_string()).collect();
    assert_eq!(revoked, ["spiffe://cluster.local/ns/web/sa/frontend"]);
}

#[test]
fn a_quarantine_holds_when_the_suspended_identity_breaks_and_a_duplicate_cannot_take_over() {
    let mut state = shop();
    // Suspended, and its ttl is over a maximum lowered since: it is no longer servable.
    state.identities[1] = wid("web", "frontend", json!({"serviceAccount": "frontend", "ttl": "12h", "suspended": true}));
    state.identities.push(wid("web", "frontend-v2", json!({"serviceAccount": "frontend"})));
    let mut s = settings();
    s.max_ttl = Duration::from_secs(6 * 3600);
    let mesh = compile(&s, &state);
    assert!(!mesh.workloads.contains_key(&key("web", "frontend")), "the broken identity is not servable");
    let revoked: Vec<String> = mesh.revoked().iter().map(|id| id.to_string()).collect();
    assert_eq!(revoked, ["spiffe://cluster.local/ns/web/sa/frontend"], "its certificates stay refused everywhere");
    assert!(!mesh.workloads.contains_key(&key("web", "frontend-v2")), "a newer identity for the same service account issues nothing");
    let problems = &mesh.identities[&key("web", "frontend-v2")].problems;
    assert!(matches!(problems.as_slice(), [Problem::DuplicateServiceAccount { owner, .. }] if owner == "web/frontend"), "{problems:?}");
}

#[test]
fn opaque_ports_and_the_namespace_egress_mode_reach_the_workload() {
    let mut state = shop();
    state.identities.push(wid("data", "postgres", json!({"serviceAccount": "postgres", "opaquePorts": [5432]})));
    state.namespaces.push(NamespaceInfo { name: "data".into(), labels: [(EGRESS_LABEL.to_string(), "locked".to_string())].into() });
    let locked_mesh = MeshSettings { egress: Egress::Deny, ..settings() };
    for (settings, orders_egress) in [(settings(), Egress::Allow), (locked_mesh, Egress::Deny)] {
        let mesh = compile(&settings, &state);
        let postgres = &mesh.workloads[&key("data", "postgres")];
        assert_eq!(postgres.opaque_ports, [5432].into());
        assert_eq!(postgres.egress, Egress::Deny, "the namespace label locks egress whatever the mesh says");
        assert_eq!(mesh.workloads[&key("shop", "orders")].egress, orders_egress, "no label: the mesh setting");
        assert!(mesh.workloads[&key("shop", "orders")].opaque_ports.is_empty());
    }
}

#[test]
fn a_bad_namespace_label_is_a_warning_with_a_fail_closed_fallback_not_an_outage() {
    let mut state = shop();
    let labels = [(EGRESS_LABEL.to_string(), "closed".to_string()), (DEFAULT_POLICY_LABEL.to_string(), "alow".to_string())];
    state.namespaces.push(NamespaceInfo { name: "web".into(), labels: labels.into() });
    let mesh = compile(&MeshSettings { default_action: DefaultAction::Deny, ..settings() }, &state);
    let frontend = &mesh.workloads[&key("web", "frontend")];
    assert_eq!((frontend.egress, frontend.policy.default_action), (Egress::Deny, DefaultAction::Deny));
    let report = &mesh.identities[&key("web", "frontend")];
    assert!(report.problems.is_empty(), "still served: {:?}", report.problems);
    let warnings: Vec<String> = report.warnings.iter().map(|w| format!("{}: {w}", w.reason())).collect();
    assert_eq!(
        warnings,
        [
            "InvalidNamespaceLabel: namespace web label trustmesh.dev/default-policy: unknown default action \"alow\": use deny, audit or allow; the mesh default applies until it is fixed",
            "InvalidNamespaceLabel: namespace web label trustmesh.dev/egress: unknown egress mode \"closed\": use open or locked; egress is locked until it is fixed",
        ]
    );
}

#[test]
fn port_zero_in_opaque_ports_keeps_the_identity_from_being_served() {
    let mut state = shop();
    state.identities.push(wid("data", "postgres", json!({"serviceAccount": "postgres", "opaquePorts": [0]})));
    let mesh = compile(&settings(), &state);
    assert!(!mesh.workloads.contains_key(&key("data", "postgres")));
    let problems: Vec<String> = mesh.identities[&key("data", "postgres")].problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with("spec.opaquePorts"), "{problems:?}");
}
