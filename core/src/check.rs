//! "Would this call be allowed, and why?" — the inbound sidecar's decision for one call, taken
//! from a snapshot without any I/O, so a person can ask before writing a policy or after a
//! denial. The steps and their order are the sidecar's: a quarantined caller is refused; a port
//! declared opaque is authorized once per connection (method and path are never seen); on any
//! other port a connection that speaks no HTTP is refused; the path is normalized (or refused)
//! and the policy evaluated on what the app would receive.
//!
//! [`explain`] renders the answer for a terminal, with the rules that name the caller, so a
//! near miss ("you may GET, not POST") is visible. Used by `trustmesh-sidecar check` (a snapshot
//! file or a sidecar's `/config`) and `trustmesh-operator local check` (a local directory).

use std::fmt::Write as _;

use crate::policy::{
    CallerMatch, CompiledPolicy, Decided, Decision, HttpRequest, NormalizedPath, PathError, Request, Rule, Verdict,
    WorkloadPolicy, normalize_path,
};
use crate::snapshot::Snapshot;
use crate::spiffe::SpiffeId;

/// The call to check.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The caller's SPIFFE ID; `None` for an unauthenticated (plaintext) caller.
    pub caller: Option<&'a SpiffeId>,
    /// The port on the target workload.
    pub port: u16,
    /// Method and path as the caller sends them; `None` for a TCP connection that speaks no HTTP.
    pub http: Option<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    /// The HTTP part as the `check` commands take it: without method and path a TCP
    /// connection; a missing method is `GET`, a missing path `/`.
    pub fn http_of(method: Option<&'a str>, path: Option<&'a str>) -> Option<(&'a str, &'a str)> {
        match (method, path) {
            (None, None) => None,
            (m, p) => Some((m.unwrap_or("GET"), p.unwrap_or("/"))),
        }
    }
}

/// What the target's sidecar does with the call.
#[derive(Debug)]
pub enum Answer<'a> {
    /// The caller is quarantined (its WorkloadIdentity is suspended): refused before any policy.
    Revoked,
    /// A connection without HTTP on a port that is not declared opaque: refused (`not_http`).
    NotHttp,
    /// The path is refused before any policy (400 or 414).
    BadPath(PathError),
    /// The policy decided.
    Decided {
        /// The path the policy matched and the app would receive (`None` on an opaque port).
        path: Option<NormalizedPath>,
        /// The port is opaque: authorized once per connection, method and path unseen.
        opaque: bool,
        /// The decision, with attribution and any audit finding.
        decision: Decision<'a>,
    },
}

impl Answer<'_> {
    /// Whether the call goes through.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Decided { decision, .. } if decision.verdict == Verdict::Allow)
    }
}

/// Decides `call` as the sidecar holding `snapshot` (and `policy`, its inbound policy indexed)
/// would.
pub fn check<'a>(snapshot: &Snapshot, policy: &'a CompiledPolicy, call: &Call<'_>) -> Answer<'a> {
    if call.caller.is_some_and(|c| snapshot.is_revoked(c)) {
        return Answer::Revoked;
    }
    if snapshot.opaque_ports.contains(&call.port) {
        let decision = policy.evaluate(&Request { caller: call.caller, port: call.port, http: None });
        return Answer::Decided { path: None, opaque: true, decision };
    }
    let Some((method, raw)) = call.http else {
        return Answer::NotHttp;
    };
    // The query is not part of the path the rules match (the sidecar forwards it unchanged).
    let raw = raw.split_once('?').map_or(raw, |(path, _)| path);
    let path = match normalize_path(raw) {
        Ok(p) => p,
        Err(e) => return Answer::BadPath(e),
    };
    let decision = policy.evaluate(&Request { caller: call.caller, port: call.port, http: Some(HttpRequest { method, path: &path }) });
    Answer::Decided { path: Some(path), opaque: false, decision }
}

/// What both `check` commands print, and whether the call is allowed: indexes the snapshot's
/// policy, decides the call and explains it.
pub fn check_and_explain(snapshot: &Snapshot, call: &Call<'_>) -> (bool, String) {
    let policy = CompiledPolicy::new(snapshot.inbound.clone());
    let answer = check(snapshot, &policy, call);
    (answer.allowed(), explain(&answer, call, &snapshot.inbound))
}

/// Whether a rule's `from` names this caller (by ID, namespace or trust domain).
fn names_caller(rule: &Rule, caller: &SpiffeId) -> bool {
    rule.from.iter().any(|m| match m {
        CallerMatch::Id(id) => id == caller,
        CallerMatch::Namespace { trust_domain, namespace } => {
            caller.is_member_of(trust_domain) && caller.kubernetes_service_account().is_some_and(|(ns, _)| ns == namespace)
        }
        CallerMatch::TrustDomain(td) => caller.is_member_of(td),
    })
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "any".to_owned();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn rule_line(rule: &Rule) -> String {
    let to = if rule.to.is_empty() {
        "everything".to_owned()
    } else {
        rule.to.iter().map(|d| format!("ports {} methods {} paths {}", list(&d.ports), list(&d.methods), list(&d.paths))).collect::<Vec<_>>().join("; or ")
    };
    if rule.rule_index == u32::MAX {
        return format!("{} (rejected enforced Deny policy: closes the target until it is fixed)", rule.policy);
    }
    format!("{} rule {} ({:?}, {:?}): {to}", rule.policy, rule.rule_index, rule.action, rule.mode)
}

/// The answer for a person: what was asked, the decision and who made it, any audit finding,
/// and the rules that name the caller.
pub fn explain(answer: &Answer<'_>, call: &Call<'_>, policy: &WorkloadPolicy) -> String {
    let mut s = String::new();
    let caller = call.caller.map_or("unauthenticated (no client certificate)", SpiffeId::as_str);
    let _ = writeln!(s, "caller:   {caller}");
    let _ = writeln!(s, "target:   {} port {}", policy.workload, call.port);
    match call.http {
        Some((method, path)) => {
            let _ = writeln!(s, "request:  {method} {path}");
        }
        None => {
            let _ = writeln!(s, "request:  a TCP connection (no HTTP)");
        }
    }
    match answer {
        Answer::Revoked => {
            let _ = writeln!(s, "decision: DENY: the caller is quarantined (its WorkloadIdentity has suspended: true); every connection is refused");
        }
        Answer::NotHttp => {
            let _ = writeln!(
                s,
                "decision: DENY (not_http): port {} is not declared opaque, so it carries HTTP only; list it in the target WorkloadIdentity's spec.opaquePorts if it speaks another protocol",
                call.port
            );
        }
        Answer::BadPath(e) => {
            let _ = writeln!(s, "decision: DENY {} ({}): {e}", e.http_status(), e.reason());
        }
        Answer::Decided { path, opaque, decision } => {
            if *opaque {
                let _ = writeln!(s, "port:     opaque (spec.opaquePorts): authorized once per connection; methods and paths are not seen, and a rule limited to them does not allow it");
            }
            if let Some(p) = path
                && call.http.is_some_and(|(_, raw)| raw.split_once('?').map_or(raw, |(path, _)| path) != p.as_str())
            {
                let _ = writeln!(s, "path:     normalized to {} (what the rules match and the app receives)", p.as_str());
            }
            let verdict = match decision.verdict {
                Verdict::Allow => "ALLOW",
                Verdict::Deny => "DENY",
            };
            let _ = writeln!(s, "decision: {verdict} by {}", decision.by);
            if let Some((would, by)) = &decision.audit {
                let _ = writeln!(s, "audit:    would {} by {by}", would.as_str());
            }
            if matches!(decision.by, Decided::Default(_)) && decision.verdict == Verdict::Deny {
                let _ = writeln!(s, "          no enforced Allow rule matched this caller, port, method and path");
            }
        }
    }
    if call.caller.is_none() {
        let _ = writeln!(s, "note:     a sidecar in strict mTLS mode (the default) refuses a caller without a certificate before any policy; this answer holds in permissive mode");
    }
    let named: Vec<&Rule> = call.caller.map(|c| policy.rules.iter().filter(|r| names_caller(r, c)).collect()).unwrap_or_default();
    if named.is_empty() {
        let _ = writeln!(s, "rules naming this caller: none (default for the target: {})", policy.default_action.as_str());
    } else {
        let _ = writeln!(s, "rules naming this caller:");
        for r in named {
            let _ = writeln!(s, "  {}", rule_line(r));
        }
    }
    s
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
