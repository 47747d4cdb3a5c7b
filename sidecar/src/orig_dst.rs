//! The original destination of a connection that the trustmesh iptables rules redirected.
//!
//! `trustmesh-sidecar init` (see [`crate::iptables`]) installs nat-table `REDIRECT` rules, so an
//! application's `connect(10.0.0.7:80)` arrives at the sidecar's outbound listener (15001) and a
//! peer's connection to the pod's port 8080 arrives at the inbound listener (15006). The address
//! the client actually asked for survives only in the kernel's connection-tracking entry; the
//! `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) socket options read it back.
//!
//! This module is the only place in the sidecar that talks to the kernel's netfilter state. It
//! needs no `unsafe` (the workspace forbids it): the `nix` crate's typed
//! [`getsockopt`](nix::sys::socket::getsockopt) wrappers
//! ([`OriginalDst`](nix::sys::socket::sockopt::OriginalDst),
//! [`Ip6tOriginalDst`](nix::sys::socket::sockopt::Ip6tOriginalDst)) own the raw `getsockopt(2)`
//! call, take the descriptor through [`AsFd`](std::os::fd::AsFd) (so it cannot outlive the
//! stream), and return plain `sockaddr_in`/`sockaddr_in6` values whose fields we only read.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt};

/// Why the original destination could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    /// The kernel has no NAT record for this connection (`ENOENT`), or connection tracking is
    /// not active in this network namespace (`ENOPROTOOPT`).
    #[error(
        "no original destination: the connection was not redirected by the trustmesh iptables rules; run `trustmesh-sidecar init` in the pod's network namespace"
    )]
    NotRedirected,
    /// The recorded destination is the sidecar's own listener: the client connected to the
    /// sidecar port directly. Proxying it would make the sidecar connect to itself.
    #[error(
        "the original destination {0} is the sidecar's own listener: the client connected to the sidecar port directly instead of being redirected; refusing to proxy the connection to itself"
    )]
    DirectConnection(SocketAddr),
    /// The socket's own addresses could not be read.
    #[error("cannot read the connection's addresses: {0}")]
    Socket(#[from] std::io::Error),
    /// Any other `getsockopt` failure.
    #[error("reading the original destination failed: {0}; is this a TCP socket?")]
    Getsockopt(Errno),
}

impl From<Errno> for OrigDstError {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::ENOENT | Errno::ENOPROTOOPT => Self::NotRedirected,
            other => Self::Getsockopt(other),
        }
    }
}

/// The destination the client originally connected to, before the `REDIRECT` rule rewrote it.
///
/// Connections accepted on an IPv4 socket (or as IPv4-mapped addresses on a dual-stack IPv6
/// socket) are asked with `SO_ORIGINAL_DST`, true IPv6 connections with `IP6T_SO_ORIGINAL_DST`.
/// A connection that went straight to the listener (its recorded destination is the socket's own
/// local address) is refused with [`OrigDstError::DirectConnection`] rather than looped.
pub fn original_dst(stream: &tokio::net::TcpStream) -> Result<SocketAddr, OrigDstError> {
    let local = stream.local_addr()?;
    let ipv4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let dst = if ipv4 {
        let sa = getsockopt(stream, sockopt::OriginalDst)?;
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)), u16::from_be(sa.sin_port)))
    } else {
        let sa = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(sa.sin6_addr.s6_addr),
            u16::from_be(sa.sin6_port),
            u32::from_be(sa.sin6_flowinfo),
            sa.sin6_scope_id,
        ))
    };
    if same_endpoint(dst, local) {
        return Err(OrigDstError::DirectConnection(dst));
    }
    Ok(dst)
}

/// Equal addresses and ports, treating IPv4-mapped IPv6 addresses as their IPv4 form.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| (s.ip().to_canonical(), s.port());
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_names_the_init_step() {
        for errno in [Errno::ENOENT, Errno::ENOPROTOOPT] {
            let err = OrigDstError::from(errno);
            assert!(matches!(err, OrigDstError::NotRedirected));
            let msg = err.to_string();
            assert!(msg.contains("no original destination"), "{msg}");
            assert!(msg.contains("trustmesh-sidecar init"), "{msg}");
        }
        assert!(matches!(OrigDstError::from(Errno::EBADF), OrigDstError::Getsockopt(Errno::EBADF)));
    }

    #[test]
    fn mapped_addresses_compare_equal() {
        let v4: SocketAddr = "127.0.0.1:15001".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:15001".parse().expect("addr");
        assert!(same_endpoint(v4, mapped));
        assert!(!same_endpoint(v4, "127.0.0.1:15006".parse().expect("addr")));
    }

    /// Without redirect rules in this namespace a plain loopback connection has no NAT record
    /// (or one pointing at the listener itself): either way it is an error, never an address.
    #[tokio::test]
    async fn unredirected_connection_is_an_error() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = tokio::net::TcpListener::bind(bind).await else {
                continue; // no IPv6 loopback on this machine
            };
            let addr = listener.local_addr().expect("local addr");
            let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            let err = original_dst(&server).expect_err("not redirected");
            assert!(matches!(err, OrigDstError::NotRedirected | OrigDstError::DirectConnection(_)), "{bind}: {err}");
        }
    }
}
