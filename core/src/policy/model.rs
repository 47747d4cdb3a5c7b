//! The per-workload policy as the operator sends it: plain data, serializable, already resolved.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::path::{NormalizedPath, normalize_path};
use crate::spiffe::{SpiffeId, TrustDomain};

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Refuse the request.
    Deny,
}

/// Whether a rule's decision is applied or only reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Apply the decision.
    Enforce,
    /// Only report what the rule would have decided.
    Audit,
}

/// What happens to a request no enforced rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Refuse it (zero trust; the mesh default).
    #[default]
    Deny,
    /// Let it through but report it as "would deny" (piloting a namespace).
    Audit,
    /// Let it through.
    Allow,
}

impl DefaultAction {
    /// The name used in configuration, labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Audit => "audit",
            Self::Allow => "allow",
        }
    }
}

impl FromStr for DefaultAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Self::Deny),
            "audit" => Ok(Self::Audit),
            "allow" => Ok(Self::Allow),
            other => Err(format!("unknown default action {other:?}: use deny, audit or allow")),
        }
    }
}

/// The policy a rule came from, for attribution in logs and status.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Namespace of the AccessPolicy.
    pub namespace: String,
    /// Name of the AccessPolicy.
    pub name: String,
    /// `metadata.generation` of the AccessPolicy the rule was compiled from.
    pub generation: i64,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.name, self.generation)
    }
}

/// Who a rule applies to, resolved by the operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallerMatch {
    /// Exactly this SPIFFE ID.
    Id(SpiffeId),
    /// Any workload `spiffe://<trust_domain>/ns/<namespace>/sa/<anything>`.
    Namespace {
        /// Trust domain the caller must belong to.
        trust_domain: TrustDomain,
        /// Kubernetes namespace of the caller.
        namespace: String,
    },
    /// Any authenticated caller of this trust domain.
    TrustDomain(TrustDomain),
}

/// A path a rule matches, on the normalized path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// `*`: every path.
    Any,
    /// `/healthz`: exactly this path.
    Exact(String),
    /// `/api/*`: every path that starts with `/api/` (stored with the trailing slash).
    Prefix(String),
}

/// Why a path pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathPatternError {
    /// `*` appears somewhere other than alone or as a final `/*`.
    #[error("path pattern {0:?}: '*' is allowed only alone (every path) or as a final '/*' (a prefix)")]
    MisplacedWildcard(String),
    /// The pattern is not what normalization would produce, so it could never match.
    #[error("path pattern {pattern:?} is not in normalized form and could never match; write {normalized:?}")]
    NotNormalized {
        /// The pattern as written.
        pattern: String,
        /// What normalization makes of it.
        normalized: String,
    },
    /// The pattern is not a valid path at all.
    #[error("path pattern {pattern:?} is not a valid path: {reason}")]
    Invalid {
        /// The pattern as written.
        pattern: String,
        /// The normalizer's complaint.
        reason: String,
    },
}

impl PathPattern {
    /// Parses `*`, `/exact` or `/prefix/*`; the path part must already be in normalized form.
    pub fn parse(pattern: &str) -> Result<Self, PathPatternError> {
        if pattern == "*" {
            return Ok(Self::Any);
        }
        let (base, prefix) = match pattern.strip_suffix('*') {
            Some(b) if b.ends_with('/') => (b, true),
            Some(_) => return Err(PathPatternError::MisplacedWildcard(pattern.to_owned())),
            None => (pattern, false),
        };
        if base.contains('*') {
            return Err(PathPatternError::MisplacedWildcard(pattern.to_owned()));
        }
        let normalized = normalize_path(base).map_err(|e| PathPatternError::Invalid {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        if normalized.as_str() != base || base.is_empty() {
            let mut fixed = normalized.as_str().to_owned();
            if prefix {
                if !fixed.ends_with('/') {
                    fixed.push('/');
                }
                fixed.push('*');
            }
            return Err(PathPatternError::NotNormalized { pattern: pattern.to_owned(), normalized: fixed });
        }
        Ok(if prefix { Self::Prefix(base.to_owned()) } else { Self::Exact(base.to_owned()) })
    }

    /// Whether the normalized path matches (without its `;` parameters, see
    /// [`NormalizedPath::for_matching`]).
    pub fn matches(&self, path: &NormalizedPath) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path.for_matching() == p,
            Self::Prefix(p) => path.for_matching().starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a caller may reach: every non-empty field must match (an empty field matches anything).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Target ports; empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// HTTP methods (case-sensitive, as on the wire); empty: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path patterns; empty: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathPattern>,
}

impl Destination {
    /// Whether the entry names HTTP-only fields (methods or paths).
    pub fn is_http_only(&self) -> bool {
        !self.methods.is_empty() || !self.paths.is_empty()
    }
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The AccessPolicy it came from.
    pub policy: PolicyRef,
    /// Index of the rule in the policy's `rules`.
    pub rule_index: u32,
    /// Allow or deny.
    pub action: Action,
    /// Enforce or audit.
    pub mode: Mode,
    /// Callers (any may match). A rule with no callers matches nothing.
    pub from: Vec<CallerMatch>,
    /// Destinations (any may match); empty: everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Destination>,
}

/// Everything a sidecar needs to authorize inbound calls to one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPolicy {
    /// The protected workload.
    pub workload: SpiffeId,
    /// What happens when no enforced rule matches.
    pub default_action: DefaultAction,
    /// Rules in a stable order (policy namespace/name, then rule index); among several matching
    /// rules of the same action the first one is named in the decision.
    pub rules: Vec<Rule>,
}

/// An HTTP request as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// Method as on the wire (`GET`).
    pub method: &'a str,
    /// The normalized path (what the app will receive).
    pub path: &'a NormalizedPath,
}
