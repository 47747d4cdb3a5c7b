//! Indexing a [`WorkloadPolicy`] and evaluating requests against it.
//!
//! Rules are split by (mode, action) and indexed by caller key (exact SPIFFE ID, namespace, trust
//! domain) and then by port. Evaluating a request costs at most 6 hash lookups per rule set plus a
//! scan of the few entries for *this* caller and port, so it does not grow with the number of rules
//! written for other callers.

use std::collections::HashMap;

use super::model::{Action, CallerMatch, DefaultAction, HttpRequest, Mode, PolicyRef, WorkloadPolicy};
use crate::spiffe::SpiffeId;

/// A connection or request to authorize.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The caller's SPIFFE ID from its certificate; `None` for an unauthenticated (plaintext)
    /// caller, which no rule matches.
    pub caller: Option<&'a SpiffeId>,
    /// Destination port on the workload.
    pub port: u16,
    /// The HTTP request, or `None` for an opaque TCP connection.
    pub http: Option<HttpRequest<'a>>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The call goes through.
    Allow,
    /// The call is refused.
    Deny,
}

impl Verdict {
    /// `"allow"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What produced a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided<'a> {
    /// A rule of an AccessPolicy.
    Rule {
        /// The policy.
        policy: &'a PolicyRef,
        /// The rule's index in the policy's `rules`.
        rule_index: u32,
    },
    /// No enforced rule matched; the default action applied.
    Default(DefaultAction),
}

impl std::fmt::Display for Decided<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule { policy, rule_index } => write!(f, "{policy} rule {rule_index}"),
            Self::Default(a) => write!(f, "default ({})", a.as_str()),
        }
    }
}

/// The outcome of [`CompiledPolicy::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// What happens to the call.
    pub verdict: Verdict,
    /// Who decided it.
    pub by: Decided<'a>,
    /// What audit-mode rules (or an `audit` default) would have decided, when they have an opinion.
    pub audit: Option<(Verdict, Decided<'a>)>,
}

/// An entry: one (rule, destination) pair; `dest == None` when the rule has no `to` (everything).
#[derive(Clone, Copy, Debug)]
struct Entry {
    rule: u32,
    dest: Option<u32>,
}

/// Entry ids (ascending, so the first match is the first rule) by port.
#[derive(Default, Debug)]
struct PortIndex {
    by_port: HashMap<u16, Vec<u32>>,
    any_port: Vec<u32>,
}

impl PortIndex {
    fn insert(&mut self, ports: &[u16], entry: u32) {
        if ports.is_empty() {
            self.any_port.push(entry);
        }
        for p in ports {
            self.by_port.entry(*p).or_default().push(entry);
        }
    }

    fn buckets(&self, port: u16) -> [&[u32]; 2] {
        [self.by_port.get(&port).map_or(&[][..], Vec::as_slice), &self.any_port]
    }
}

/// The rules of one (mode, action), indexed by caller and port.
#[derive(Default, Debug)]
struct RuleSet {
    entries: Vec<Entry>,
    by_id: HashMap<String, PortIndex>,
    by_namespace: HashMap<String, HashMap<String, PortIndex>>,
    by_trust_domain: HashMap<String, PortIndex>,
}

/// A [`WorkloadPolicy`] indexed for evaluation. Build it once per policy version; evaluation is
/// read-only, so one instance can be shared by every connection (`Arc<CompiledPolicy>`).
#[derive(Debug)]
pub struct CompiledPolicy {
    policy: WorkloadPolicy,
    /// Indexed by `set_index(mode, action)`.
    sets: [RuleSet; 4],
}

fn set_index(mode: Mode, action: Action) -> usize {
    match (mode, action) {
        (Mode::Enforce, Action::Deny) => 0,
        (Mode::Enforce, Action::Allow) => 1,
        (Mode::Audit, Action::Deny) => 2,
        (Mode::Audit, Action::Allow) => 3,
    }
}

impl CompiledPolicy {
    /// Indexes the policy. Never fails: the operator validated it, and anything odd (a rule with no
    /// callers) simply matches nothing.
    pub fn new(policy: WorkloadPolicy) -> Self {
        let mut sets: [RuleSet; 4] = Default::default();
        for (rule_id, rule) in policy.rules.iter().enumerate() {
            let set = &mut sets[set_index(rule.mode, rule.action)];
            let dests: Vec<(Option<u32>, &[u16])> = if rule.to.is_empty() {
                vec![(None, &[][..])]
            } else {
                rule.to.iter().enumerate().map(|(i, d)| (Some(i as u32), d.ports.as_slice())).collect()
            };
            for (dest, ports) in dests {
                let entry = set.entries.len() as u32;
                set.entries.push(Entry { rule: rule_id as u32, dest });
                for caller in &rule.from {
                    let index = match caller {
                        CallerMatch::Id(id) => set.by_id.entry(id.as_str().to_owned()).or_default(),
                        CallerMatch::Namespace { trust_domain, namespace } => set
                            .by_namespace
                            .entry(trust_domain.as_str().to_owned())
                            .or_default()
                            .entry(namespace.clone())
                            .or_default(),
                        CallerMatch::TrustDomain(td) => set.by_trust_domain.entry(td.as_str().to_owned()).or_default(),
                    };
                    index.insert(ports, entry);
                }
            }
        }
        Self { policy, sets }
    }

    /// The policy this was built from (what `/config` shows).
    pub fn policy(&self) -> &WorkloadPolicy {
        &self.policy
    }

    /// Decides one connection (`http: None`) or HTTP request, in the order enforced Deny,
    /// enforced Allow, default action; audit rules are evaluated apart and reported in
    /// [`Decision::audit`].
    pub fn evaluate(&self, req: &Request<'_>) -> Decision<'_> {
        let first = |mode, action| {
            self.first_match(&self.sets[set_index(mode, action)], req, action)
                .map(|rule| (if action == Action::Deny { Verdict::Deny } else { Verdict::Allow }, rule))
        };
        let audit_rules = first(Mode::Audit, Action::Deny).or_else(|| first(Mode::Audit, Action::Allow));
        if let Some((verdict, by)) = first(Mode::Enforce, Action::Deny).or_else(|| first(Mode::Enforce, Action::Allow)) {
            return Decision { verdict, by, audit: audit_rules };
        }
        let default = self.policy.default_action;
        let by = Decided::Default(default);
        match default {
            DefaultAction::Deny => Decision { verdict: Verdict::Deny, by, audit: audit_rules },
            DefaultAction::Allow => Decision { verdict: Verdict::Allow, by, audit: audit_rules },
            DefaultAction::Audit => Decision {
                verdict: Verdict::Allow,
                by,
                audit: audit_rules.or(Some((Verdict::Deny, by))),
            },
        }
    }

    /// The first rule (lowest entry id) of `set` that matches, if any.
    fn first_match(&self, set: &RuleSet, req: &Request<'_>, action: Action) -> Option<Decided<'_>> {
        let caller = req.caller?;
        if set.entries.is_empty() {
            return None;
        }
        let td = caller.trust_domain_name();
        let namespace = caller
            .kubernetes_service_account()
            .and_then(|(ns, _)| set.by_namespace.get(td).and_then(|m| m.get(ns)));
        let indexes = [set.by_id.get(caller.as_str()), namespace, set.by_trust_domain.get(td)];
        let mut best: Option<u32> = None;
        for index in indexes.into_iter().flatten() {
            for bucket in index.buckets(req.port) {
                // Entries are ascending: the first match in a bucket is the bucket's best.
                let limit = best.unwrap_or(u32::MAX);
                if let Some(&e) = bucket.iter().take_while(|&&e| e < limit).find(|&&e| self.entry_matches(set, e, req, action)) {
                    best = Some(e);
                }
            }
        }
        let entry = set.entries[best? as usize];
        let rule = &self.policy.rules[entry.rule as usize];
        Some(Decided::Rule { policy: &rule.policy, rule_index: rule.rule_index })
    }

    /// Port and caller already matched through the index; checks methods and paths.
    fn entry_matches(&self, set: &RuleSet, entry: u32, req: &Request<'_>, action: Action) -> bool {
        let entry = set.entries[entry as usize];
        let Some(dest) = entry.dest else { return true };
        let dest = &self.policy.rules[entry.rule as usize].to[dest as usize];
        match req.http {
            Some(HttpRequest { method, path }) => {
                (dest.methods.is_empty() || dest.methods.iter().any(|m| m == method))
                    && (dest.paths.is_empty() || dest.paths.iter().any(|p| p.matches(path)))
            }
            // Opaque TCP: an Allow rule restricted to methods or paths cannot vouch for a whole
            // connection, but a Deny rule restricted to them refuses it (fail closed).
            None => !dest.is_http_only() || action == Action::Deny,
        }
    }
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
