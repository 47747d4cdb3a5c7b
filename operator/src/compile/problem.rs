//! Problems compilation finds in resources, as data: each names the field and the fix, and has a
//! stable CamelCase reason for status conditions, Events and metric labels.

/// A problem in a WorkloadIdentity or AccessPolicy that keeps it from being served or accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `spec.serviceAccount` cannot form a SPIFFE ID.
    #[error("spec.serviceAccount {value:?} cannot be part of a SPIFFE ID ({reason}); use the pod's service account name")]
    BadServiceAccount {
        /// The value as written.
        value: String,
        /// Why the SPIFFE ID was refused.
        reason: String,
    },
    /// Another, older WorkloadIdentity already registers this service account.
    #[error("spec.serviceAccount {service_account:?} is already registered by WorkloadIdentity {owner}; delete one of the two or narrow them to different service accounts")]
    DuplicateServiceAccount {
        /// The service account.
        service_account: String,
        /// `namespace/name` of the identity that has it.
        owner: String,
    },
    /// `spec.ttl` outside 5m..max.
    #[error("spec.ttl {value:?} is out of bounds; use a duration between 5m and {max} (the mesh's certificates.maxTtl)")]
    TtlOutOfBounds {
        /// The value as written.
        value: String,
        /// The largest allowed.
        max: String,
    },
    /// `spec.ttl` is not a duration.
    #[error("spec.ttl: {reason}")]
    BadTtl {
        /// The parser's message.
        reason: String,
    },
    /// A label selector that cannot be evaluated.
    #[error("{field}: {reason}")]
    BadSelector {
        /// Path of the selector.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A namespace label trustmesh reads has an unknown value (a warning: a safe fallback applies).
    #[error("namespace {namespace} label {label}: {reason}; {fallback} until it is fixed")]
    BadNamespaceLabel {
        /// The namespace.
        namespace: String,
        /// The label.
        label: &'static str,
        /// What is wrong.
        reason: String,
        /// What applies meanwhile.
        fallback: &'static str,
    },
    /// `spec.targetRef.name` names no WorkloadIdentity.
    #[error("spec.targetRef.name: no WorkloadIdentity {name:?} in namespace {namespace}; create it or fix targetRef.name")]
    TargetNotFound {
        /// Namespace searched.
        namespace: String,
        /// The name as written.
        name: String,
    },
    /// The target exists but cannot be served (see its own status).
    #[error("spec.targetRef.name: WorkloadIdentity {name:?} is not Ready; fix it first (kubectl describe wid {name})")]
    TargetNotReady {
        /// The target's name.
        name: String,
    },
    /// `spec.rules` is empty.
    #[error("spec.rules: at least one rule is required")]
    NoRules,
    /// A rule with no callers.
    #[error("{field}: a rule needs at least one caller in from")]
    EmptyFrom {
        /// Path of the `from` list.
        field: String,
    },
    /// A caller entry naming zero or several of the caller kinds.
    #[error("{field}: names {found} of identity, spiffeId and namespaceSelector; name exactly one")]
    SourceKinds {
        /// Path of the entry.
        field: String,
        /// How many it names.
        found: usize,
    },
    /// `namespace` without `identity`.
    #[error("{field}.namespace qualifies identity; set identity too, or use namespaceSelector for a whole namespace")]
    NamespaceWithoutIdentity {
        /// Path of the entry.
        field: String,
    },
    /// An invalid SPIFFE ID.
    #[error("{field}: {reason}")]
    BadSpiffeId {
        /// Path of the field.
        field: String,
        /// The parser's message.
        reason: String,
    },
    /// A `to` entry that says nothing.
    #[error("{field}: set at least one of ports, methods or paths; leave out `to` to allow everything")]
    EmptyDestination {
        /// Path of the entry.
        field: String,
    },
    /// Port 0.
    #[error("{field}: port 0 is not a port; use 1-65535")]
    BadPort {
        /// Path of the ports list.
        field: String,
    },
    /// A path pattern that could never match or is malformed.
    #[error("{field}: {reason}")]
    BadPath {
        /// Path of the pattern.
        field: String,
        /// What is wrong and how to write it.
        reason: String,
    },
}

impl Problem {
    /// A stable CamelCase reason for conditions, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadServiceAccount { .. } => "InvalidServiceAccount",
            Self::DuplicateServiceAccount { .. } => "DuplicateServiceAccount",
            Self::TtlOutOfBounds { .. } | Self::BadTtl { .. } => "InvalidTTL",
            Self::BadSelector { .. } => "InvalidSelector",
            Self::BadNamespaceLabel { .. } => "InvalidNamespaceLabel",
            Self::TargetNotFound { .. } => "TargetNotFound",
            Self::TargetNotReady { .. } => "TargetNotReady",
            Self::NoRules | Self::EmptyFrom { .. } => "EmptyRule",
            Self::SourceKinds { .. } | Self::NamespaceWithoutIdentity { .. } => "ConflictingFields",
            Self::BadSpiffeId { .. } => "InvalidSpiffeId",
            Self::EmptyDestination { .. } => "EmptyDestination",
            Self::BadPort { .. } => "InvalidPort",
            Self::BadPath { .. } => "InvalidPath",
        }
    }
}
