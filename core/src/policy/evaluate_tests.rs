//! Decision table: each row reads as a sentence about one call to the `orders` workload.

use super::*;
use crate::policy::model::{Destination, PathPattern, Rule};
use crate::policy::path::normalize_path;
use crate::spiffe::TrustDomain;

const TD: &str = "td.example";
const FRONTEND: &str = "spiffe://td.example/ns/web/sa/frontend";
const INTRUDER: &str = "spiffe://td.example/ns/web/sa/intruder";
const IMPORTER: &str = "spiffe://td.example/ns/batch/sa/importer";
const ADMIN_TOOL: &str = "spiffe://td.example/ns/ops/sa/admin-tool";
const REPORTS: &str = "spiffe://td.example/ns/analytics/sa/reports";
const FOREIGN_FRONTEND: &str = "spiffe://evil.example/ns/web/sa/frontend";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("valid test id")
}

fn td() -> TrustDomain {
    TrustDomain::new(TD).expect("valid trust domain")
}

fn dest(ports: &[u16], methods: &[&str], paths: &[&str]) -> Destination {
    Destination {
        ports: ports.to_vec(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        paths: paths.iter().map(|p| PathPattern::parse(p).expect("valid pattern")).collect(),
    }
}

fn rule(policy: &str, generation: i64, index: u32, action: Action, mode: Mode, from: Vec<CallerMatch>, to: Vec<Destination>) -> Rule {
    Rule {
        policy: PolicyRef { namespace: "shop".into(), name: policy.into(), generation },
        rule_index: index,
        action,
        mode,
        from,
        to,
    }
}

/// The `orders` workload's policy, as the operator would compile it.
fn orders(default_action: DefaultAction) -> CompiledPolicy {
    use Action::*;
    use Mode::*;
    let rules = vec![
        rule("block-admin", 1, 0, Deny, Enforce, vec![CallerMatch::TrustDomain(td())], vec![dest(&[8080], &[], &["/admin", "/admin/*"])]),
        rule("orders-callers", 3, 0, Allow, Enforce, vec![CallerMatch::Id(id(FRONTEND))], vec![dest(&[8080], &["GET", "HEAD"], &["/api/*", "/healthz"])]),
        rule("orders-callers", 3, 1, Allow, Enforce, vec![CallerMatch::Namespace { trust_domain: td(), namespace: "batch".into() }], vec![dest(&[8080], &["POST"], &["/api/orders/import"])]),
        rule("orders-callers", 3, 2, Allow, Enforce, vec![CallerMatch::Id(id(ADMIN_TOOL))], vec![]),
        rule("orders-callers", 3, 3, Allow, Enforce, vec![CallerMatch::Id(id(FRONTEND))], vec![dest(&[9090], &[], &[])]),
        rule("try-reports", 2, 0, Allow, Audit, vec![CallerMatch::Id(id(REPORTS))], vec![dest(&[], &["GET"], &["/api/reports/*"])]),
        rule("watch-deletes", 1, 0, Deny, Audit, vec![CallerMatch::TrustDomain(td())], vec![dest(&[], &["DELETE"], &[])]),
    ];
    CompiledPolicy::new(WorkloadPolicy { workload: id("spiffe://td.example/ns/shop/sa/orders"), default_action, rules })
}

/// What a row expects: a verdict by a rule (`policy`, index) or by the default, or a refused path.
#[derive(Debug, PartialEq)]
enum Expect {
    Allowed(&'static str, u32),
    Denied(&'static str, u32),
    DeniedByDefault,
    AllowedByDefault,
    RefusedPath(&'static str),
}
use Expect::*;

fn outcome(policy: &CompiledPolicy, caller: Option<&str>, port: u16, call: Option<(&str, &str)>) -> Expect {
    let caller = caller.map(id);
    let normalized;
    let http = match call {
        Some((method, raw)) => match normalize_path(raw) {
            Ok(p) => {
                normalized = p;
                Some(HttpRequest { method, path: &normalized })
            }
            Err(e) => return RefusedPath(e.reason()),
        },
        None => None,
    };
    let d = policy.evaluate(&Request { caller: caller.as_ref(), port, http });
    let name = |p: &PolicyRef| -> &'static str { Box::leak(p.name.clone().into_boxed_str()) };
    match (d.verdict, d.by) {
        (Verdict::Allow, Decided::Rule { policy, rule_index }) => Allowed(name(policy), rule_index),
        (Verdict::Deny, Decided::Rule { policy, rule_index }) => Denied(name(policy), rule_index),
        (Verdict::Deny, Decided::Default(_)) => DeniedByDefault,
        (Verdict::Allow, Decided::Default(_)) => AllowedByDefault,
    }
}

const GET: &str = "GET";

/// One row: what it says, caller, port, HTTP method and path (or opaque TCP), expected outcome.
type Row<'a> = (&'a str, Option<&'a str>, u16, Option<(&'a str, &'a str)>, Expect);

#[test]
fn decisions_under_default_deny() {
    let p = orders(DefaultAction::Deny);
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("the frontend may GET an order",                          Some(FRONTEND), 8080, Some((GET, "/api/orders/1")), Allowed("orders-callers", 0)),
        ("the frontend may HEAD the health check",                 Some(FRONTEND), 8080, Some(("HEAD", "/healthz")), Allowed("orders-callers", 0)),
        ("the frontend may GET the prefix root /api/",             Some(FRONTEND), 8080, Some((GET, "/api/")), Allowed("orders-callers", 0)),
        ("the frontend may not GET /api: /api/* needs the slash",   Some(FRONTEND), 8080, Some((GET, "/api")), DeniedByDefault),
        ("the frontend may not POST an order",                     Some(FRONTEND), 8080, Some(("POST", "/api/orders")), DeniedByDefault),
        ("a lower-case method is another method",                  Some(FRONTEND), 8080, Some(("get", "/api/orders")), DeniedByDefault),
        ("the frontend may not GET /admin",                        Some(FRONTEND), 8080, Some((GET, "/admin")), Denied("block-admin", 0)),
        ("the frontend may not GET below /admin/",                 Some(FRONTEND), 8080, Some((GET, "/admin/users")), Denied("block-admin", 0)),
        ("paths are case-sensitive: /API/orders is not /api/*",    Some(FRONTEND), 8080, Some((GET, "/API/orders")), DeniedByDefault),
        ("/ADMIN is not /admin, and nothing allows it",            Some(FRONTEND), 8080, Some((GET, "/ADMIN")), DeniedByDefault),
        ("the frontend's allowed path on another port is denied",  Some(FRONTEND), 8081, Some((GET, "/api/orders")), DeniedByDefault),
        ("/healthz/ with a trailing slash is not /healthz",        Some(FRONTEND), 8080, Some((GET, "/healthz/")), DeniedByDefault),
        ("a batch workload may POST the import",                   Some(IMPORTER), 8080, Some(("POST", "/api/orders/import")), Allowed("orders-callers", 1)),
        ("a batch workload may not POST below the exact import",   Some(IMPORTER), 8080, Some(("POST", "/api/orders/import/x")), DeniedByDefault),
        ("a batch workload may not GET the import",                Some(IMPORTER), 8080, Some((GET, "/api/orders/import")), DeniedByDefault),
        ("the admin tool may do anything on any port",             Some(ADMIN_TOOL), 7000, Some(("DELETE", "/anything")), Allowed("orders-callers", 2)),
        ("the admin tool is still denied /admin: deny wins",       Some(ADMIN_TOOL), 8080, Some((GET, "/admin")), Denied("block-admin", 0)),
        ("an intruder with a valid certificate is denied",         Some(INTRUDER), 8080, Some((GET, "/api/orders")), DeniedByDefault),
        ("the frontend's name in another trust domain is denied",  Some(FOREIGN_FRONTEND), 8080, Some((GET, "/api/orders")), DeniedByDefault),
        ("an unauthenticated caller is denied",                    None, 8080, Some((GET, "/api/orders")), DeniedByDefault),
        ("the frontend may open a TCP connection to 9090",         Some(FRONTEND), 9090, None, Allowed("orders-callers", 3)),
        ("the frontend may not open TCP to 9091",                  Some(FRONTEND), 9091, None, DeniedByDefault),
        ("an intruder may not open TCP to 9090",                   Some(INTRUDER), 9090, None, DeniedByDefault),
        ("opaque TCP to 8080 is refused: a path-limited Deny there cannot be checked", Some(FRONTEND), 8080, None, Denied("block-admin", 0)),
        ("the admin tool's opaque TCP on another port is allowed", Some(ADMIN_TOOL), 5432, None, Allowed("orders-callers", 2)),
        ("an unauthenticated TCP connection is denied",            None, 9090, None, DeniedByDefault),
        ("reports is only audited, so it is denied by default",    Some(REPORTS), 8080, Some((GET, "/api/reports/daily")), DeniedByDefault),
        // Attack-shaped paths: normalized first, then matched.
        ("/api/../admin climbs into /admin and is denied",         Some(FRONTEND), 8080, Some((GET, "/api/../admin")), Denied("block-admin", 0)),
        ("/admin/../api/orders resolves to an allowed path",       Some(FRONTEND), 8080, Some((GET, "/admin/../api/orders")), Allowed("orders-callers", 0)),
        ("//admin merges slashes and is denied",                   Some(FRONTEND), 8080, Some((GET, "//admin")), Denied("block-admin", 0)),
        ("/%61dmin decodes to /admin and is denied",               Some(FRONTEND), 8080, Some((GET, "/%61dmin")), Denied("block-admin", 0)),
        ("/api/%2e%2e/admin decodes dots and is denied",           Some(FRONTEND), 8080, Some((GET, "/api/%2e%2e/admin")), Denied("block-admin", 0)),
        ("/admin%2F.. is refused before any rule",                 Some(FRONTEND), 8080, Some((GET, "/admin%2F..")), RefusedPath("encoded_slash")),
        ("/api/..;/admin is refused before any rule",              Some(FRONTEND), 8080, Some((GET, "/api/..;/admin")), RefusedPath("dot_segment_with_params")),
        ("/admin;x is /admin to Tomcat, and is denied",          Some(FRONTEND), 8080, Some((GET, "/admin;x")), Denied("block-admin", 0)),
        ("/admin;x/users is below /admin/ and is denied",          Some(FRONTEND), 8080, Some((GET, "/admin;x/users")), Denied("block-admin", 0)),
        ("/api;v=2/orders is still an allowed /api/ path",         Some(FRONTEND), 8080, Some((GET, "/api;v=2/orders")), Allowed("orders-callers", 0)),
        ("/api\\..\\admin is refused before any rule",             Some(FRONTEND), 8080, Some((GET, "/api\\..\\admin")), RefusedPath("backslash")),
        ("an empty path is / and / is not allowed",                Some(FRONTEND), 8080, Some((GET, "")), DeniedByDefault),
        ("a very long path is refused",                            Some(FRONTEND), 8080, Some((GET, &*Box::leak(format!("/api/{}", "a".repeat(9000)).into_boxed_str()))), RefusedPath("too_long")),
    ];
    let mut failures = vec![];
    for (sentence, caller, port, call, expected) in rows {
        let got = outcome(&p, *caller, *port, *call);
        if &got != expected {
            failures.push(format!("{sentence}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn default_allow_lets_unmatched_calls_through_but_never_overrides_a_deny() {
    let p = orders(DefaultAction::Allow);
    assert_eq!(outcome(&p, Some(INTRUDER), 8080, Some((GET, "/api/orders"))), AllowedByDefault);
    assert_eq!(outcome(&p, Some(INTRUDER), 8080, Some((GET, "/admin"))), Denied("block-admin", 0));
    assert_eq!(outcome(&p, None, 8080, Some((GET, "/"))), AllowedByDefault);
}

#[test]
fn audit_default_allows_and_reports_would_deny() {
    let p = orders(DefaultAction::Audit);
    let intruder = id(INTRUDER);
    let path = normalize_path("/api/orders").unwrap();
    let d = p.evaluate(&Request { caller: Some(&intruder), port: 8080, http: Some(HttpRequest { method: GET, path: &path }) });
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.by, Decided::Default(DefaultAction::Audit));
    assert_eq!(d.audit, Some((Verdict::Deny, Decided::Default(DefaultAction::Audit))));
    // Enforced rules still decide what they match.
    assert_eq!(outcome(&p, Some(FRONTEND), 8080, Some((GET, "/admin"))), Denied("block-admin", 0));
}

#[test]
fn audit_rules_report_without_changing_the_verdict() {
    let p = orders(DefaultAction::Deny);
    let reports = id(REPORTS);
    let path = normalize_path("/api/reports/daily").unwrap();
    let d = p.evaluate(&Request { caller: Some(&reports), port: 8080, http: Some(HttpRequest { method: GET, path: &path }) });
    assert_eq!(d.verdict, Verdict::Deny, "audit-mode allow does not allow");
    let Some((Verdict::Allow, Decided::Rule { policy, rule_index: 0 })) = d.audit else { panic!("expected would-allow, got {:?}", d.audit) };
    assert_eq!(policy.name, "try-reports");

    let frontend = id(FRONTEND);
    let path = normalize_path("/api/orders/1").unwrap();
    let d = p.evaluate(&Request { caller: Some(&frontend), port: 8080, http: Some(HttpRequest { method: "DELETE", path: &path }) });
    assert_eq!(d.verdict, Verdict::Deny);
    let Some((Verdict::Deny, Decided::Rule { policy, .. })) = d.audit else { panic!("expected would-deny, got {:?}", d.audit) };
    assert_eq!(policy.name, "watch-deletes");
    assert_eq!(policy.generation, 1);
}

#[test]
fn the_first_matching_rule_is_named_whatever_index_bucket_it_sits_in() {
    // Rule 0 matches through the trust-domain index, rule 1 through the exact-id index: rule 0 wins.
    let rules = vec![
        rule("p", 1, 0, Action::Allow, Mode::Enforce, vec![CallerMatch::TrustDomain(td())], vec![dest(&[80], &[], &[])]),
        rule("p", 1, 1, Action::Allow, Mode::Enforce, vec![CallerMatch::Id(id(FRONTEND))], vec![]),
    ];
    let p = CompiledPolicy::new(WorkloadPolicy { workload: id(FRONTEND), default_action: DefaultAction::Deny, rules });
    assert_eq!(outcome(&p, Some(FRONTEND), 80, None), Allowed("p", 0));
    assert_eq!(outcome(&p, Some(FRONTEND), 81, None), Allowed("p", 1));
}

#[test]
fn path_patterns_must_be_written_normalized() {
    assert_eq!(PathPattern::parse("*"), Ok(PathPattern::Any));
    assert_eq!(PathPattern::parse("/api/*"), Ok(PathPattern::Prefix("/api/".into())));
    assert_eq!(PathPattern::parse("/*"), Ok(PathPattern::Prefix("/".into())));
    assert_eq!(PathPattern::parse("/healthz"), Ok(PathPattern::Exact("/healthz".into())));
    for (bad, hint) in [("/a*", "final '/*'"), ("/a/*/b", "final '/*'"), ("/%61dmin", "\"/admin\""), ("//x/*", "\"/x/*\""), ("/a/../b", "\"/b\""), ("", "\"/\""), ("/a b", "not a valid path")] {
        let e = PathPattern::parse(bad).expect_err(bad).to_string();
        assert!(e.contains(hint), "{bad}: {e}");
    }
}

#[test]
fn a_policy_survives_a_json_round_trip_and_is_indexed_the_same() {
    let p = orders(DefaultAction::Deny);
    let json = serde_json::to_string(p.policy()).expect("serializes");
    assert!(json.contains(r#""paths":["/api/*","/healthz"]"#), "{json}");
    let back: WorkloadPolicy = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(&back, p.policy());
    let again = CompiledPolicy::new(back);
    assert_eq!(outcome(&again, Some(FRONTEND), 8080, Some((GET, "/api/x"))), Allowed("orders-callers", 0));
    let tampered = json.replace("/api/*", "/api/../*");
    assert!(serde_json::from_str::<WorkloadPolicy>(&tampered).is_err(), "patterns are validated on the way in");
}
