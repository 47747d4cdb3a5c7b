//! [`CertificateAuthority`]: the signing key and certificate of the mesh, with its trust bundle.
//!
//! The authority is either a fresh self-signed root ([`CertificateAuthority::generate`]) or a
//! user-supplied root or intermediate ([`CertificateAuthority::from_pem`]). Both go through the
//! same checks (P-256, key matches certificate, CA, valid now, chains to the bundle) before the
//! authority signs anything.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::bundle::TrustBundle;
use super::chain::{anchor_chain, check_signing, self_signed_root};
use super::pki::{self, KeyKind};
use super::svid::{self, CLOCK_SKEW, IssuedSvid};
use super::{CA_CRT, CaError, TLS_CRT, TLS_KEY};

/// Validity of a generated root.
const ROOT_VALIDITY: time::Duration = time::Duration::days(3652);
/// A generated root is valid from this long before its creation.
const ROOT_BACKDATE: time::Duration = time::Duration::minutes(5);

/// The mesh certificate authority: an ECDSA P-256 signing key and certificate, the certificates
/// between it and the root, and the trust bundle.
pub struct CertificateAuthority {
    td: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    /// `tls.crt` as loaded: the signing certificate first, then its chain.
    cert_chain: Vec<CertificateDer<'static>>,
    /// Sent after each leaf: the signing certificate and its chain up to (not including) the
    /// first certificate that is a root of the bundle.
    intermediates: Vec<Vec<u8>>,
    bundle: TrustBundle,
    not_after: OffsetDateTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.td.as_str())
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.bundle.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a fresh self-signed ECDSA P-256 root for `td`, valid for ten years.
    ///
    /// Subject `O=trustmesh, CN=trustmesh root <td>`, URI SAN `spiffe://<td>`, basicConstraints
    /// `cA=true` (critical, no path length limit), keyUsage keyCertSign + cRLSign +
    /// digitalSignature (critical), SubjectKeyIdentifier, random serial, no name constraints.
    ///
    /// # Errors
    /// [`CaError::Crypto`] or [`CaError::Random`] if key generation or signing fails.
    pub fn generate(td: &TrustDomain) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Crypto {
            action: "generate the CA key",
            reason: e.to_string(),
        })?;
        let now = svid::whole_seconds(OffsetDateTime::now_utc());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "trustmesh");
        dn.push(
            DnType::CommonName,
            format!("trustmesh root {}", td.as_str()),
        );
        params.distinguished_name = dn;
        let uri = td
            .id()
            .as_str()
            .to_owned()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Crypto {
                action: "encode the trust domain ID",
                reason: e.to_string(),
            })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - ROOT_BACKDATE;
        params.not_after = now + ROOT_VALIDITY;
        params.serial_number = Some(SerialNumber::from_slice(&pki::random_serial()?));
        let cert = params.self_signed(&key).map_err(|e| CaError::Crypto {
            action: "self-sign the root certificate",
            reason: e.to_string(),
        })?;
        let der = cert.der().clone();
        let bundle = TrustBundle::from_roots(vec![der.clone()], CA_CRT)?;
        Self::from_parts(td, key, vec![der], Some(bundle), OffsetDateTime::now_utc())
    }

    /// Loads a user-supplied CA in the cert-manager layout.
    ///
    /// - `cert_chain_pem` (`tls.crt`): the signing certificate (root or intermediate), optionally
    ///   followed by its chain;
    /// - `key_pem` (`tls.key`): its ECDSA P-256 key, PKCS#8 or SEC1;
    /// - `bundle_pem` (`ca.crt`): the trusted roots. Without it (or when empty) the last
    ///   certificate of `tls.crt` must be self-signed and becomes the only root.
    ///
    /// # Errors
    /// A [`CaError`] naming the file and the fix: key mismatch, not a CA, expired or not yet
    /// valid, not P-256, a chain that does not lead to a root of the bundle, URI name
    /// constraints, or a different trust domain.
    pub fn from_pem(
        cert_chain_pem: &str,
        key_pem: &str,
        bundle_pem: Option<&str>,
        td: &TrustDomain,
    ) -> Result<Self, CaError> {
        let chain = pki::parse_cert_pems(cert_chain_pem, TLS_CRT)?;
        let key = pki::parse_private_key(key_pem, TLS_KEY)?;
        let bundle = match bundle_pem.filter(|p| !p.trim().is_empty()) {
            Some(pem) => Some(TrustBundle::from_pem_field(pem, CA_CRT)?),
            None => None,
        };
        Self::from_parts(td, key, chain, bundle, OffsetDateTime::now_utc())
    }

    /// Validates the parts and assembles the authority. Without a bundle, the last certificate
    /// of the chain must be a self-signed root and becomes the bundle.
    fn from_parts(
        td: &TrustDomain,
        key: KeyPair,
        chain: Vec<CertificateDer<'static>>,
        bundle: Option<TrustBundle>,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        check_signing(td, &key, &chain, now)?;
        let bundle = match bundle {
            Some(bundle) => bundle,
            None => self_signed_root(&chain)?,
        };
        let (intermediates, not_after) = anchor_chain(&chain, &bundle, now)?;
        let first = chain.first().ok_or_else(|| CaError::InvalidPem {
            field: TLS_CRT,
            reason: "holds no certificate".to_owned(),
        })?;
        let issuer =
            Issuer::from_ca_cert_der(first, key).map_err(|e| CaError::InvalidCertificate {
                field: TLS_CRT,
                index: 0,
                reason: e.to_string(),
            })?;
        let ca = Self {
            td: td.clone(),
            issuer,
            cert_chain: chain,
            intermediates,
            bundle,
            not_after,
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// Issues a probe certificate and checks that it names the signing certificate's subject
    /// byte for byte and verifies under its key, so a CA that cannot produce chaining SVIDs is
    /// refused at load time rather than at the first handshake.
    fn self_check(&self) -> Result<(), CaError> {
        let now = svid::whole_seconds(OffsetDateTime::now_utc());
        let probe_id = SpiffeId::from_segments(&self.td, &["trustmesh", "probe"]).map_err(|e| {
            CaError::InvalidIdentity {
                id: self.td.id().as_str().to_owned(),
                reason: e.to_string(),
            }
        })?;
        let params = svid::leaf_params(&probe_id, &[], now - CLOCK_SKEW, now, &[0x40; 16])?;
        let probe = params
            .signed_by(self.issuer.key(), &self.issuer)
            .map_err(|e| CaError::Crypto {
                action: "sign a probe certificate",
                reason: e.to_string(),
            })?;
        let signing = pki::parse_x509(&self.cert_chain[0], TLS_CRT, 0)?;
        let leaf = pki::parse_x509(probe.der(), TLS_CRT, 0)?;
        if !pki::signed_by(&leaf, &signing) {
            return Err(CaError::IssuerNameEncoding {
                subject: pki::subject_of(&signing),
            });
        }
        Ok(())
    }

    /// Signs an X.509-SVID for `id` over the public key of a PKCS#10 CSR.
    ///
    /// The CSR must be well-formed, self-signed correctly, and carry an ECDSA P-256 key.
    /// Everything else in it (subject, SANs, extensions) is ignored: the certificate carries
    /// exactly `id`, decided by the caller. Validity: from `now - 60s` to `now + ttl`, never past
    /// the signing certificate's notAfter.
    ///
    /// # Errors
    /// [`CaError::InvalidCsr`], [`CaError::UnsupportedKey`], [`CaError::CsrSignature`],
    /// [`CaError::InvalidIdentity`] (other trust domain, or no path), [`CaError::InvalidTtl`],
    /// [`CaError::CaExpired`].
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        let csr = match X509CertificationRequest::from_der(csr_der) {
            Ok(([], csr)) => csr,
            Ok(_) => {
                return Err(CaError::InvalidCsr {
                    reason: "trailing bytes after the request".to_owned(),
                });
            }
            Err(e) => {
                return Err(CaError::InvalidCsr {
                    reason: e.to_string(),
                });
            }
        };
        let spki = &csr.certification_request_info.subject_pki;
        let kind = pki::key_kind(spki);
        if kind != KeyKind::P256 {
            return Err(CaError::UnsupportedKey {
                found: kind.to_string(),
            });
        }
        csr.verify_signature().map_err(|_| CaError::CsrSignature)?;
        let public_key =
            rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|e| CaError::InvalidCsr {
                reason: e.to_string(),
            })?;
        self.issue(&public_key, id, ttl, now, &[])
    }

    /// Generates an ECDSA P-256 key in-process and issues an SVID for it, with `dns_names` as
    /// extra DNS SANs (still exactly one URI SAN): the operator's own gRPC and webhook serving
    /// certificate. Returns the SVID and the key as PKCS#8 PEM.
    ///
    /// # Errors
    /// [`CaError::InvalidDnsName`] and the errors of [`CertificateAuthority::sign_csr`] that
    /// concern the identity, TTL and CA validity.
    pub fn issue_with_new_key(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
        dns_names: &[String],
    ) -> Result<(IssuedSvid, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Crypto {
            action: "generate a serving key",
            reason: e.to_string(),
        })?;
        let svid = self.issue(&key, id, ttl, now, dns_names)?;
        Ok((svid, key.serialize_pem()))
    }

    fn issue(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
        dns_names: &[String],
    ) -> Result<IssuedSvid, CaError> {
        if !id.is_member_of(&self.td) {
            return Err(CaError::InvalidIdentity {
                id: id.as_str().to_owned(),
                reason: format!(
                    "it is not in this CA's trust domain {}; request an ID under {}/",
                    self.td.as_str(),
                    self.td.id().as_str()
                ),
            });
        }
        if id.path().is_empty() {
            return Err(CaError::InvalidIdentity {
                id: id.as_str().to_owned(),
                reason: "a workload SVID needs a path (e.g. /ns/<namespace>/sa/<account>); the bare trust domain ID belongs to the CA".to_owned(),
            });
        }
        let ttl = time::Duration::try_from(ttl)
            .ok()
            .filter(|t| *t >= time::Duration::SECOND)
            .ok_or_else(|| CaError::InvalidTtl {
                reason: format!("{ttl:?} is not between one second and the CA lifetime; configure a TTL such as 1h"),
            })?;
        let now = svid::whole_seconds(OffsetDateTime::from(now));
        if now >= self.not_after {
            return Err(CaError::CaExpired {
                not_after: self.not_after.to_string(),
            });
        }
        let not_after = now
            .checked_add(ttl)
            .map_or(self.not_after, |t| t.min(self.not_after));
        let not_after = svid::whole_seconds(not_after);
        let serial = pki::random_serial()?;
        let params = svid::leaf_params(id, dns_names, now - CLOCK_SKEW, not_after, &serial)?;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Crypto {
                action: "sign the SVID",
                reason: e.to_string(),
            })?;
        Ok(IssuedSvid {
            cert_der: cert.der().to_vec(),
            chain_der: self.intermediates.clone(),
            not_after: SystemTime::from(not_after),
            serial_hex: pki::hex(&serial),
        })
    }

    /// The trust bundle: the roots workloads must trust.
    #[must_use]
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Adds the roots of `other` to this authority's bundle (root rotation: publish the old and
    /// the new root together until every SVID of the old root has expired).
    pub fn extend_bundle(&mut self, other: &TrustBundle) {
        self.bundle.merge(other);
    }

    /// The trust domain this authority issues for.
    #[must_use]
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The signing certificate (first certificate of `tls.crt`) as PEM.
    #[must_use]
    pub fn signing_cert_pem(&self) -> String {
        pki::pem_encode("CERTIFICATE", &self.cert_chain[0])
    }

    /// The signing certificate's notAfter: SVIDs are never valid beyond it.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        SystemTime::from(self.not_after)
    }

    /// `tls.crt`: the signing certificate and the chain it was loaded with, as PEM.
    pub(crate) fn cert_chain_pem(&self) -> String {
        self.cert_chain
            .iter()
            .map(|c| pki::pem_encode("CERTIFICATE", c))
            .collect()
    }

    /// `tls.key`: the signing key as PKCS#8 PEM.
    pub(crate) fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}
