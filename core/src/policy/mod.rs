//! Policy: the compiled per-workload rules, their evaluation, and HTTP path normalization.
//!
//! The operator turns AccessPolicy resources into a [`WorkloadPolicy`] for each workload (rules
//! already resolved to SPIFFE IDs, namespaces and trust domains). The sidecar indexes it once with
//! [`CompiledPolicy::new`] and asks [`CompiledPolicy::evaluate`] about every connection and
//! request. Evaluation is pure: no I/O, no allocation, and its cost does not grow with the number
//! of rules for other callers (rules are indexed by caller and port).
//!
//! Decision order: an enforced Deny rule that matches denies; else an enforced Allow rule that
//! matches allows; else the default action. Audit-mode rules are evaluated the same way, apart,
//! and only reported ("would deny"). Every decision names the rule that decided it, or `default`.

mod evaluate;
mod model;
pub mod path;

pub use evaluate::{CompiledPolicy, Decided, Decision, Request, Verdict};
pub use model::{
    Action, CallerMatch, DefaultAction, Destination, HttpRequest, Mode, PathPattern, PathPatternError,
    PolicyRef, Rule, WorkloadPolicy,
};
pub use path::{NormalizedPath, PathError, normalize_path};
