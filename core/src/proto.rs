//! The control-plane protocol (gRPC), generated from `core/proto` at build time.

#![allow(missing_docs, clippy::all)]

/// `trustmesh.v1`: the identity API (and, later, config distribution).
pub mod v1 {
    tonic::include_proto!("trustmesh.v1");
}
