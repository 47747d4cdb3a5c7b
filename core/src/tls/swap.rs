//! The workload's current certificate behind rustls' certificate resolvers: swapped live,
//! never presented once expired (fail closed).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::TlsError;
use super::svid::{parse, to_system_time};

/// The certificate a [`SwappableCert`] holds, with its notAfter.
type Held = Option<(Arc<CertifiedKey>, SystemTime)>;

/// The workload's current certificate, for both [`ResolvesServerCert`] and
/// [`ResolvesClientCert`].
///
/// [`SwappableCert::set`] replaces it while established connections keep the old one; new
/// handshakes use the new one. It fails closed: while empty, or once the certificate is past
/// its notAfter, nothing is presented and handshakes fail (no certificate, no traffic).
pub struct SwappableCert {
    current: RwLock<Held>,
    clock: fn() -> SystemTime,
}

impl std::fmt::Debug for SwappableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwappableCert")
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl SwappableCert {
    /// An empty holder using the system clock.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Self::with_clock(SystemTime::now)
    }

    /// An empty holder using `clock` to decide expiry (for tests).
    #[must_use]
    pub fn with_clock(clock: fn() -> SystemTime) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(None),
            clock,
        })
    }

    /// Replaces the certificate; its notAfter is read from the leaf.
    ///
    /// # Errors
    /// [`TlsError::EmptyChain`] / [`TlsError::BadCertificate`] for an unusable chain,
    /// [`TlsError::Expired`] if it has already expired; the old certificate is then kept.
    pub fn set(&self, key: Arc<CertifiedKey>) -> Result<(), TlsError> {
        let leaf = key.cert.first().ok_or(TlsError::EmptyChain)?;
        let asn1_expiry = parse(leaf)?.validity().not_after;
        let expiry = to_system_time(asn1_expiry)?;
        if (self.clock)() > expiry {
            let not_after = asn1_expiry.to_string();
            return Err(TlsError::Expired(not_after));
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some((key, expiry));
        Ok(())
    }

    /// Forgets the certificate: handshakes fail until the next [`SwappableCert::set`].
    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The certificate to present, or `None` when empty or expired.
    #[must_use]
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let held = self.current.read().unwrap_or_else(PoisonError::into_inner);
        match &*held {
            Some((key, expiry)) if (self.clock)() <= *expiry => Some(Arc::clone(key)),
            _ => None,
        }
    }

    /// notAfter of the held certificate (even if expired), for expiry metrics and renewal.
    #[must_use]
    pub fn not_after(&self) -> Option<SystemTime> {
        let held = self.current.read().unwrap_or_else(PoisonError::into_inner);
        held.as_ref().map(|(_, expiry)| *expiry)
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SwappableCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    /// Always true: a certificate may be set at any time, and an empty holder simply presents
    /// none when asked.
    fn has_certs(&self) -> bool {
        true
    }
}

