//! `check` follows the sidecar's steps in its order; `explain` names the decider and the near
//! misses. Each test reads as a sentence about one call to the `orders` workload.

use std::collections::BTreeSet;

use super::*;
use crate::policy::{Action, DefaultAction, Destination, Mode, PathPattern, PolicyRef};

const FRONTEND: &str = "spiffe://td.example/ns/web/sa/frontend";
const INTRUDER: &str = "spiffe://td.example/ns/web/sa/intruder";
const QUARANTINED: &str = "spiffe://td.example/ns/web/sa/old-frontend";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("valid test id")
}

/// `orders`: the frontend may GET /api/* on 8080; the web namespace may use the database port
/// 5432 (opaque); an audit rule watches DELETEs; default deny.
fn snapshot() -> Snapshot {
    let rule = |name: &str, index: u32, action: Action, mode: Mode, from: CallerMatch, to: Destination| Rule {
        policy: PolicyRef { namespace: "shop".into(), name: name.into(), generation: 4 },
        rule_index: index,
        action,
        mode,
        from: vec![from],
        to: vec![to],
    };
    let td = crate::spiffe::TrustDomain::new("td.example").expect("trust domain");
    let rules = vec![
        rule(
            "orders-callers",
            0,
            Action::Allow,
            Mode::Enforce,
            CallerMatch::Id(id(FRONTEND)),
            Destination { ports: vec![8080], methods: vec!["GET".into()], paths: vec![PathPattern::parse("/api/*").expect("pattern")] },
        ),
        rule(
            "orders-callers",
            1,
            Action::Allow,
            Mode::Enforce,
            CallerMatch::Namespace { trust_domain: td.clone(), namespace: "web".into() },
            Destination { ports: vec![5432], ..Destination::default() },
        ),
        rule("watch-deletes", 0, Action::Deny, Mode::Audit, CallerMatch::TrustDomain(td), Destination { methods: vec!["DELETE".into()], ..Destination::default() }),
    ];
    Snapshot {
        version: "7".into(),
        inbound: WorkloadPolicy { workload: id("spiffe://td.example/ns/shop/sa/orders"), default_action: DefaultAction::Deny, rules },
        destinations: Default::default(),
        egress: Default::default(),
        revoked: BTreeSet::from([id(QUARANTINED)]),
        opaque_ports: BTreeSet::from([5432]),
    }
}

fn ask(caller: Option<&str>, port: u16, http: Option<(&str, &str)>) -> (bool, String) {
    let caller = caller.map(id);
    check_and_explain(&snapshot(), &Call { caller: caller.as_ref(), port, http })
}

#[test]
fn the_frontend_may_get_an_order_and_the_rule_that_allows_it_is_named() {
    let (allowed, text) = ask(Some(FRONTEND), 8080, Some(("GET", "/api/orders/1")));
    assert!(allowed, "{text}");
    assert!(text.contains("decision: ALLOW by shop/orders-callers@4 rule 0"), "{text}");
    assert!(!text.contains("path:"), "an already normalized path is not repeated: {text}");
}

#[test]
fn a_post_is_denied_by_default_and_the_near_miss_is_shown() {
    let (allowed, text) = ask(Some(FRONTEND), 8080, Some(("POST", "/api/orders")));
    assert!(!allowed);
    assert!(text.contains("decision: DENY by default (deny)"), "{text}");
    assert!(text.contains("shop/orders-callers@4 rule 0 (Allow, Enforce): ports 8080 methods GET paths /api/*"), "the rule that almost matched: {text}");
}

#[test]
fn an_attack_path_is_normalized_before_matching_and_says_so() {
    let (allowed, text) = ask(Some(FRONTEND), 8080, Some(("GET", "/api/../admin")));
    assert!(!allowed);
    assert!(text.contains("path:     normalized to /admin"), "{text}");
    let (allowed, text) = ask(Some(FRONTEND), 8080, Some(("GET", "/api/%2e%2e%2Fadmin")));
    assert!(!allowed);
    assert!(text.contains("decision: DENY 400 (encoded_slash)"), "an encoded slash is refused before policy: {text}");
}

#[test]
fn the_query_is_not_part_of_the_matched_path() {
    let (allowed, text) = ask(Some(FRONTEND), 8080, Some(("GET", "/api/orders?id=1&x=/../admin")));
    assert!(allowed, "{text}");
    assert!(!text.contains("path:"), "the path itself needed no normalization: {text}");
}

#[test]
fn an_audit_rule_reports_what_it_would_do_without_deciding() {
    let (allowed, text) = ask(Some(FRONTEND), 8080, Some(("DELETE", "/api/orders/1")));
    assert!(!allowed);
    assert!(text.contains("audit:    would deny by shop/watch-deletes@4 rule 0"), "{text}");
}

#[test]
fn an_opaque_port_is_authorized_per_connection_by_namespace() {
    let (allowed, text) = ask(Some(INTRUDER), 5432, None);
    assert!(allowed, "the web namespace may reach the database port: {text}");
    assert!(text.contains("port:     opaque"), "{text}");
    let (allowed, _) = ask(Some(INTRUDER), 5432, Some(("GET", "/anything")));
    assert!(allowed, "on an opaque port HTTP is not seen: the connection is what is authorized");
}

#[test]
fn tcp_on_an_http_port_is_refused_as_not_http() {
    let (allowed, text) = ask(Some(FRONTEND), 8080, None);
    assert!(!allowed);
    assert!(text.contains("not_http") && text.contains("spec.opaquePorts"), "{text}");
}

#[test]
fn a_quarantined_caller_is_refused_before_any_rule() {
    let (allowed, text) = ask(Some(QUARANTINED), 5432, None);
    assert!(!allowed, "the namespace rule would allow it, the quarantine wins");
    assert!(text.contains("quarantined"), "{text}");
}

#[test]
fn an_unauthenticated_caller_matches_no_rule() {
    let (allowed, text) = ask(None, 8080, Some(("GET", "/api/orders/1")));
    assert!(!allowed);
    assert!(text.contains("caller:   unauthenticated") && text.contains("rules naming this caller: none (default for the target: deny)"), "{text}");
    assert!(text.contains("strict mTLS mode (the default) refuses a caller without a certificate"), "{text}");
}
