//! Resolving one AccessPolicy against the compiled identities: callers to SPIFFE IDs, namespaces
//! and trust domains; paths to patterns. Problems are collected, not returned early, so the status
//! lists all of them at once.

use trustmesh_api::AccessPolicy;
use trustmesh_core::policy::{CallerMatch, Destination, PathPattern, PolicyRef, Rule};
use trustmesh_core::spiffe::SpiffeId;

use super::{CompiledMesh, MeshSettings, NamespaceInfo, ObjectKey, PolicyReport, Problem, action, fail_closed_rule, mode, selector};

/// What a policy is resolved against.
pub(super) struct Resolver<'a> {
    pub settings: &'a MeshSettings,
    pub mesh: &'a CompiledMesh,
    pub namespaces: &'a [NamespaceInfo],
}

impl Resolver<'_> {
    /// The report, the rules to install, and the target they belong to.
    pub fn policy(&self, policy: &AccessPolicy) -> (PolicyReport, Vec<Rule>, Option<ObjectKey>) {
        let key = ObjectKey::of(policy);
        let spec = &policy.spec;
        let policy_ref = PolicyRef {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            generation: policy.metadata.generation.unwrap_or_default(),
        };
        let mut report = PolicyReport { generation: policy_ref.generation, ..Default::default() };

        let target = ObjectKey { namespace: key.namespace.clone(), name: spec.target_ref.name.clone() };
        let target_found = match self.mesh.workloads.get(&target) {
            Some(w) => {
                report.target = Some(w.spiffe_id.clone());
                true
            }
            None if self.mesh.identities.contains_key(&target) => {
                report.problems.push(Problem::TargetNotReady { name: target.name.clone() });
                false
            }
            None => {
                report.problems.push(Problem::TargetNotFound { namespace: target.namespace.clone(), name: target.name.clone() });
                false
            }
        };
        if spec.rules.is_empty() {
            report.problems.push(Problem::NoRules);
        }

        let mut rules = Vec::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            if r.from.is_empty() {
                report.problems.push(Problem::EmptyFrom { field: format!("{field}.from") });
            }
            let mut from = Vec::new();
            for (j, source) in r.from.iter().enumerate() {
                let field = format!("{field}.from[{j}]");
                if let Some(c) = self.caller(&key.namespace, source, &field, &mut report) {
                    from.extend(c);
                }
            }
            let mut to = Vec::new();
            for (k, d) in r.to.iter().enumerate() {
                to.push(destination(d, &format!("{field}.to[{k}]"), &mut report));
            }
            rules.push(Rule {
                policy: policy_ref.clone(),
                rule_index: i as u32,
                action: action(spec.action),
                mode: mode(spec.mode),
                from,
                to,
            });
        }

        if !target_found {
            return (report, vec![], None);
        }
        if !report.accepted() {
            let closed = matches!((spec.action, spec.mode), (trustmesh_api::PolicyAction::Deny, trustmesh_api::PolicyMode::Enforce));
            let rules = if closed { vec![fail_closed_rule(self.settings, policy_ref)] } else { vec![] };
            return (report, rules, Some(target));
        }
        (report, rules, Some(target))
    }

    /// Resolves one `from` entry; `None` when it is malformed (a problem was recorded).
    fn caller(&self, policy_ns: &str, s: &trustmesh_api::Source, field: &str, report: &mut PolicyReport) -> Option<Vec<CallerMatch>> {
        let kinds = [s.identity.is_some(), s.spiffe_id.is_some(), s.namespace_selector.is_some()];
        let found = kinds.iter().filter(|k| **k).count();
        if found != 1 {
            report.problems.push(Problem::SourceKinds { field: field.to_owned(), found });
            return None;
        }
        if s.namespace.is_some() && s.identity.is_none() {
            report.problems.push(Problem::NamespaceWithoutIdentity { field: field.to_owned() });
            return None;
        }
        if let Some(name) = &s.identity {
            let key = ObjectKey { namespace: s.namespace.clone().unwrap_or_else(|| policy_ns.to_owned()), name: name.clone() };
            return Some(match self.mesh.workloads.get(&key) {
                Some(w) => vec![CallerMatch::Id(w.spiffe_id.clone())],
                None => {
                    report.unresolved_callers.push(key.to_string());
                    vec![]
                }
            });
        }
        if let Some(id) = &s.spiffe_id {
            return match SpiffeId::parse(id) {
                Ok(id) => Some(vec![CallerMatch::Id(id)]),
                Err(e) => {
                    report.problems.push(Problem::BadSpiffeId { field: format!("{field}.spiffeId"), reason: e.to_string() });
                    None
                }
            };
        }
        let sel = s.namespace_selector.as_ref()?;
        if let Err(e) = selector::validate(sel) {
            report.problems.push(Problem::BadSelector { field: format!("{field}.namespaceSelector"), reason: e.to_string() });
            return None;
        }
        if selector::is_empty(sel) {
            return Some(vec![CallerMatch::TrustDomain(self.settings.trust_domain.clone())]);
        }
        let matched: Vec<CallerMatch> = self
            .namespaces
            .iter()
            .filter(|n| selector::matches(sel, &n.labels))
            .map(|n| CallerMatch::Namespace { trust_domain: self.settings.trust_domain.clone(), namespace: n.name.clone() })
            .collect();
        if matched.is_empty() {
            report.unresolved_callers.push(format!("{field}.namespaceSelector (matches no namespace)"));
        }
        Some(matched)
    }
}

fn destination(d: &trustmesh_api::Destination, field: &str, report: &mut PolicyReport) -> Destination {
    if d.ports.is_empty() && d.methods.is_empty() && d.paths.is_empty() {
        report.problems.push(Problem::EmptyDestination { field: field.to_owned() });
    }
    if d.ports.contains(&0) {
        report.problems.push(Problem::BadPort { field: format!("{field}.ports") });
    }
    let mut paths = Vec::with_capacity(d.paths.len());
    for (i, p) in d.paths.iter().enumerate() {
        match PathPattern::parse(p) {
            Ok(p) => paths.push(p),
            Err(e) => report.problems.push(Problem::BadPath { field: format!("{field}.paths[{i}]"), reason: e.to_string() }),
        }
    }
    Destination {
        ports: d.ports.clone(),
        methods: d.methods.iter().map(|m| m.as_str().to_owned()).collect(),
        paths,
    }
}
