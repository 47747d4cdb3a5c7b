//! Cost of one policy decision for a workload with 10, 1,000 and 10,000 rules and callers.
//!
//! Each rule allows one distinct caller (a different service account) GET on `/api/<n>/*` at
//! port 8080, and one namespace-wide deny sits in front, so a decision touches the deny index, the
//! allow index and a path match. Three requests per size:
//! - `allowed`: the last caller (its rule is the last one written) on its own path;
//! - `denied_path`: the same caller on a path its rule does not cover (falls to the default);
//! - `unknown_caller`: a caller with no rule at all.
//!
//! Run: `cargo bench -p trustmesh-core --bench evaluate`. A linear scan would make the 10,000 row
//! ~1,000x the 10 row; with the caller/port index it should stay flat.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use trustmesh_core::policy::{
    Action, CallerMatch, CompiledPolicy, DefaultAction, Destination, HttpRequest, Mode, PathPattern, PolicyRef, Request, Rule,
    WorkloadPolicy, normalize_path,
};
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};

fn caller(n: usize) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://bench.local/ns/ns{}/sa/caller{n}", n % 50)).expect("valid id")
}

fn policy(rules: usize) -> CompiledPolicy {
    let td = TrustDomain::new("bench.local").expect("valid td");
    let policy = |name: &str| PolicyRef { namespace: "bench".into(), name: name.into(), generation: 1 };
    let mut all = vec![Rule {
        policy: policy("deny-quarantine-ns"),
        rule_index: 0,
        action: Action::Deny,
        mode: Mode::Enforce,
        from: vec![CallerMatch::Namespace { trust_domain: td, namespace: "quarantine".into() }],
        to: vec![],
    }];
    all.extend((0..rules).map(|n| Rule {
        policy: policy("allow-callers"),
        rule_index: n as u32,
        action: Action::Allow,
        mode: Mode::Enforce,
        from: vec![CallerMatch::Id(caller(n))],
        to: vec![Destination {
            ports: vec![8080],
            methods: vec!["GET".into()],
            paths: vec![PathPattern::parse(&format!("/api/{n}/*")).expect("valid pattern")],
        }],
    }));
    CompiledPolicy::new(WorkloadPolicy {
        workload: SpiffeId::parse("spiffe://bench.local/ns/bench/sa/server").expect("valid id"),
        default_action: DefaultAction::Deny,
        rules: all,
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate");
    for rules in [10usize, 1_000, 10_000] {
        let compiled = policy(rules);
        let last = caller(rules - 1);
        let stranger = SpiffeId::parse("spiffe://bench.local/ns/ns1/sa/stranger").expect("valid id");
        let own_path = normalize_path(&format!("/api/{}/items/7", rules - 1)).expect("valid path");
        let other_path = normalize_path("/api/0/items/7").expect("valid path");
        let cases = [("allowed", &last, &own_path), ("denied_path", &last, &other_path), ("unknown_caller", &stranger, &own_path)];
        for (name, who, path) in cases {
            group.bench_with_input(BenchmarkId::new(name, rules), &rules, |b, _| {
                b.iter(|| {
                    let req = Request { caller: Some(who), port: 8080, http: Some(HttpRequest { method: "GET", path }) };
                    black_box(compiled.evaluate(black_box(&req)).verdict)
                })
            });
        }
    }
    group.finish();

    // Normalizing the path is part of every HTTP decision; measure it next to evaluation.
    c.bench_function("normalize_path/typical", |b| b.iter(|| normalize_path(black_box("/api/v1/orders/12345/items")).map(|p| p.into_string())));
    c.bench_function("normalize_path/attack", |b| {
        b.iter(|| normalize_path(black_box("/api/./v1//orders/%2e%2e/%61dmin/../items")).map(|p| p.into_string()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
