//! trustmesh-api: the Kubernetes resources users write, group `trustmesh.dev`, version `v1alpha1`.
//!
//! - [`WorkloadIdentity`] (`wid`): registers the pods of one service account as one SPIFFE identity.
//! - [`AccessPolicy`] (`acp`): written by the owners of a *called* workload; says which callers may
//!   reach it on which ports, methods and paths.
//!
//! The doc comments on every field become the CRD descriptions that `kubectl explain` shows, so they
//! say what the field means, its default and its bounds. Schema bounds and CEL rules
//! (`x-kubernetes-validations`) reject nonsense at `kubectl apply` time; the operator's compiler
//! re-checks everything and reports what the schema cannot see (unknown identities, conflicts) in
//! the resource's status.

// kube-derive takes one trait per `derive = "..."`, which clippy reads as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod condition;
pub mod duration;
pub mod identity;
pub mod labels;
pub mod policy;

pub use identity::{WorkloadIdentity, WorkloadIdentitySpec, WorkloadIdentityStatus};
pub use policy::{
    AccessPolicy, AccessPolicySpec, AccessPolicyStatus, Destination, EnforcementStatus, PolicyAction,
    PolicyMode, PolicyRule, Source, TargetRef,
};

/// The API group of every trustmesh resource.
pub const GROUP: &str = "trustmesh.dev";
/// The API version of every trustmesh resource.
pub const VERSION: &str = "v1alpha1";

/// All CustomResourceDefinitions of this API, in a stable order (used by `trustmesh-operator crds`
/// and by the test that keeps `crds/` in sync).
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![WorkloadIdentity::crd(), AccessPolicy::crd()]
}

#[cfg(test)]
mod tests;
