//! trustmesh-sidecar: the data plane beside each workload.
//!
//! - [`control`]: the mTLS gRPC channel to the operator.
//! - [`identity`]: key generation, CSR, renewal at half-life and hot swap of the certificate.
//! - [`metrics`]: Prometheus metrics.

pub mod control;
pub mod identity;
pub mod metrics;
