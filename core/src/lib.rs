//! trustmesh-core: the vocabulary both binaries share, with no Kubernetes and no I/O.
//!
//! - [`spiffe`]: SPIFFE IDs and trust domains, parsed and validated as the SPIFFE ID standard says.
//! - [`policy`]: the compiled per-workload policy, its evaluation and HTTP path normalization.

#![deny(missing_docs)]

pub mod check;
pub mod policy;
pub mod proto;
pub mod snapshot;
pub mod spiffe;
pub mod tls;
