//! SPIFFE names: trust domains and SPIFFE IDs, validated exactly as the
//! [SPIFFE ID standard](https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md)
//! says.
//!
//! This module is responsible for turning untrusted text (CRD fields, certificate
//! URI SANs, CLI flags) into [`TrustDomain`] and [`SpiffeId`] values that are
//! known to be well-formed, and for explaining precisely why a string was
//! rejected. It does no I/O and knows nothing about X.509 or Kubernetes beyond
//! the `/ns/<namespace>/sa/<service-account>` naming convention.
//!
//! The rules enforced (anything else is rejected with a [`SpiffeIdError`]):
//!
//! - the scheme is exactly the lowercase `spiffe://`;
//! - the trust domain is non-empty, at most [`MAX_TRUST_DOMAIN_LEN`] bytes, and
//!   uses only lowercase `a-z`, digits `0-9`, `.`, `-` and `_` (so no user info,
//!   no port, no percent-encoding);
//! - the path is empty or a sequence of `/`-separated segments, each non-empty,
//!   neither `.` nor `..`, using only `a-z A-Z 0-9 . - _` (so no trailing slash);
//! - there is no query, no fragment, and the whole ID is at most
//!   [`MAX_SPIFFE_ID_LEN`] bytes.
//!
//! Both types serialize as their string form and are re-validated when
//! deserialized, so an invalid name can never enter the program through serde.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Maximum length in bytes of a whole SPIFFE ID URI, including `spiffe://`.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Maximum length in bytes of a trust domain name.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// The only scheme a SPIFFE ID may have.
const SCHEME: &str = "spiffe://";

/// How many characters of offending input an error message repeats at most.
const EXCERPT_CHARS: usize = 64;

/// Why a string is not a valid SPIFFE ID or trust domain.
///
/// There is one variant per rule of the standard; [`SpiffeIdError::rule`] gives a
/// short stable label for each, suitable as a metric label. Messages name the
/// rule, say how to fix the input, and quote the offending part (truncated) where
/// that is safe; user info is never quoted because it may hold credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input is the empty string.
    #[error(
        "SPIFFE ID is empty; expected spiffe://<trust-domain>/<path>, e.g. spiffe://example.org/ns/default/sa/web"
    )]
    Empty,
    /// The input does not start with the lowercase scheme `spiffe://`; holds how it starts.
    #[error(
        "SPIFFE ID must start with the lowercase scheme \"spiffe://\" but starts with {0:?}; write it as spiffe://<trust-domain>/<path>"
    )]
    WrongScheme(String),
    /// Nothing between `spiffe://` and the path.
    #[error(
        "SPIFFE ID has no trust domain; put a trust domain name such as example.org right after \"spiffe://\""
    )]
    MissingTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error(
        "trust domain is {len} bytes long, over the SPIFFE limit of 255 bytes; use a shorter trust domain name"
    )]
    TrustDomainTooLong {
        /// Length of the trust domain in bytes.
        len: usize,
    },
    /// The trust domain contains a character other than lowercase `a-z`, `0-9`, `.`, `-`, `_`.
    #[error(
        "trust domain {trust_domain:?} contains {ch:?}; the SPIFFE standard allows only lowercase letters a-z, digits 0-9, '.', '-' and '_' in a trust domain{}",
        uppercase_hint(*.ch, .trust_domain)
    )]
    BadTrustDomainChar {
        /// The first offending character.
        ch: char,
        /// The trust domain as given (truncated).
        trust_domain: String,
    },
    /// The authority carries a port (`:`).
    #[error(
        "trust domain {authority:?} includes a port; SPIFFE IDs must not carry a port, remove the ':<port>' part"
    )]
    Port {
        /// The authority as given (truncated).
        authority: String,
    },
    /// The authority carries user info (`@`). The input is deliberately not quoted.
    #[error(
        "SPIFFE ID contains user info (\"<user>@\") before the trust domain; SPIFFE IDs must not carry user info, remove everything up to and including '@'"
    )]
    UserInfo,
    /// The path contains an empty segment (`//`).
    #[error(
        "SPIFFE ID path {path:?} has an empty segment (\"//\"); every path segment must be non-empty, remove the extra '/'"
    )]
    EmptySegment {
        /// The path as given (truncated).
        path: String,
    },
    /// The path contains a `.` or `..` segment.
    #[error(
        "SPIFFE ID path contains the relative segment {segment:?}; '.' and '..' segments are not allowed, write the path out in full"
    )]
    DotSegment {
        /// The offending segment, `.` or `..`.
        segment: String,
    },
    /// The path ends with `/`.
    #[error(
        "SPIFFE ID path {path:?} ends with a trailing slash; remove the final '/' (the trust domain's own ID is spiffe://<trust-domain> with no '/')"
    )]
    TrailingSlash {
        /// The path as given (truncated).
        path: String,
    },
    /// A path segment contains a character other than `a-z A-Z 0-9 . - _`.
    #[error(
        "SPIFFE ID path segment {segment:?} contains {ch:?}; path segments may contain only letters a-z A-Z, digits 0-9, '.', '-' and '_'"
    )]
    BadPathChar {
        /// The first offending character.
        ch: char,
        /// The segment as given (truncated).
        segment: String,
    },
    /// The input contains `%`.
    #[error(
        "SPIFFE ID contains '%'; percent-encoding is not allowed, use only the plain characters the standard permits (a-z A-Z 0-9 . - _)"
    )]
    PercentEncoded,
    /// The input contains a query (`?`).
    #[error(
        "SPIFFE ID contains a query ('?'); SPIFFE IDs must not have a query component, remove '?' and everything after it"
    )]
    Query,
    /// The input contains a fragment (`#`).
    #[error(
        "SPIFFE ID contains a fragment ('#'); SPIFFE IDs must not have a fragment component, remove '#' and everything after it"
    )]
    Fragment,
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`] bytes.
    #[error("SPIFFE ID is {len} bytes long, over the SPIFFE limit of 2048 bytes; shorten the path")]
    TooLong {
        /// Length of the whole ID in bytes.
        len: usize,
    },
    /// A trust domain was expected but the input is a SPIFFE ID with a path.
    #[error(
        "expected a trust domain (e.g. example.org or spiffe://example.org) but got a SPIFFE ID with path {path:?}; drop the path"
    )]
    TrustDomainHasPath {
        /// The unexpected path (truncated).
        path: String,
    },
}

impl SpiffeIdError {
    /// A short, stable label naming the broken rule, e.g. `"scheme"` or
    /// `"trust_domain_char"`; usable as a metric label.
    #[must_use]
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::WrongScheme(_) => "scheme",
            Self::MissingTrustDomain => "missing_trust_domain",
            Self::TrustDomainTooLong { .. } => "trust_domain_length",
            Self::BadTrustDomainChar { .. } => "trust_domain_char",
            Self::Port { .. } => "port",
            Self::UserInfo => "user_info",
            Self::EmptySegment { .. } => "empty_segment",
            Self::DotSegment { .. } => "dot_segment",
            Self::TrailingSlash { .. } => "trailing_slash",
            Self::BadPathChar { .. } => "path_char",
            Self::PercentEncoded => "percent_encoding",
            Self::Query => "query",
            Self::Fragment => "fragment",
            Self::TooLong { .. } => "length",
            Self::TrustDomainHasPath { .. } => "trust_domain_path",
        }
    }
}

/// Extra hint for [`SpiffeIdError::BadTrustDomainChar`] when the culprit is uppercase.
fn uppercase_hint(ch: char, trust_domain: &str) -> String {
    if ch.is_ascii_uppercase() {
        format!(
            " (the standard says trust domains are lowercase: write {:?})",
            trust_domain.to_ascii_lowercase()
        )
    } else {
        String::new()
    }
}

/// At most [`EXCERPT_CHARS`] characters of `s`, with `…` when truncated.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// The part of a wrongly-schemed input worth quoting: its scheme if it has one,
/// otherwise its first few characters.
fn scheme_excerpt(s: &str) -> String {
    match s.find("://") {
        Some(i) if i <= 32 => s[..i + 3].to_owned(),
        _ => match s.char_indices().nth(24) {
            Some((end, _)) => format!("{}…", &s[..end]),
            None => s.to_owned(),
        },
    }
}

/// Validates a bare trust domain name (the authority of a SPIFFE ID).
fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    // Checked first and never quoted: user info may hold a password.
    if td.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: td.len() });
    }
    for ch in td.chars() {
        match ch {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => {
                return Err(SpiffeIdError::Port {
                    authority: excerpt(td),
                });
            }
            '%' => return Err(SpiffeIdError::PercentEncoded),
            _ => {
                return Err(SpiffeIdError::BadTrustDomainChar {
                    ch,
                    trust_domain: excerpt(td),
                });
            }
        }
    }
    Ok(())
}

/// Validates one non-empty path segment.
fn validate_segment(segment: &str) -> Result<(), SpiffeIdError> {
    if segment == "." || segment == ".." {
        return Err(SpiffeIdError::DotSegment {
            segment: segment.to_owned(),
        });
    }
    for ch in segment.chars() {
        match ch {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
            '%' => return Err(SpiffeIdError::PercentEncoded),
            _ => {
                return Err(SpiffeIdError::BadPathChar {
                    ch,
                    segment: excerpt(segment),
                });
            }
        }
    }
    Ok(())
}

/// Validates a path: empty, or `/seg(/seg)*`.
fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    let Some(body) = path.strip_prefix('/') else {
        // Only reachable with an empty path: the caller splits at the first '/'.
        return Ok(());
    };
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            let path = excerpt(path);
            return Err(if segments.peek().is_none() {
                SpiffeIdError::TrailingSlash { path }
            } else {
                SpiffeIdError::EmptySegment { path }
            });
        }
        validate_segment(segment)?;
    }
    Ok(())
}

/// Validates a whole SPIFFE ID and returns the byte index where its path starts.
fn validate_id(s: &str) -> Result<usize, SpiffeIdError> {
    if s.is_empty() {
        return Err(SpiffeIdError::Empty);
    }
    let Some(rest) = s.strip_prefix(SCHEME) else {
        return Err(SpiffeIdError::WrongScheme(scheme_excerpt(s)));
    };
    if s.len() > MAX_SPIFFE_ID_LEN {
        return Err(SpiffeIdError::TooLong { len: s.len() });
    }
    if let Some(i) = rest.find(['?', '#']) {
        return Err(if rest[i..].starts_with('?') {
            SpiffeIdError::Query
        } else {
            SpiffeIdError::Fragment
        });
    }
    let td_end = rest.find('/').unwrap_or(rest.len());
    validate_trust_domain(&rest[..td_end])?;
    validate_path(&rest[td_end..])?;
    Ok(SCHEME.len() + td_end)
}

/// A validated SPIFFE trust domain name, e.g. `cluster.local`.
///
/// Non-empty, at most [`MAX_TRUST_DOMAIN_LEN`] bytes, and made only of lowercase
/// `a-z`, digits, `.`, `-` and `_`. Displays and serializes as the bare name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain given either as a bare name (`example.org`) or as the
    /// trust domain's own SPIFFE ID (`spiffe://example.org`, no path).
    ///
    /// # Errors
    /// Returns the [`SpiffeIdError`] for the first rule the input breaks;
    /// [`SpiffeIdError::TrustDomainHasPath`] if a `spiffe://` form has a path.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.starts_with(SCHEME) {
            let id = SpiffeId::parse(name)?;
            if !id.path().is_empty() {
                return Err(SpiffeIdError::TrustDomainHasPath {
                    path: excerpt(id.path()),
                });
            }
            return Ok(id.trust_domain());
        }
        if name.contains("://") {
            return Err(SpiffeIdError::WrongScheme(scheme_excerpt(name)));
        }
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The bare trust domain name, e.g. `example.org`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>` with an empty path.
    #[must_use]
    pub fn id(&self) -> SpiffeId {
        let id = format!("{SCHEME}{}", self.0);
        let path_start = id.len();
        SpiffeId { id, path_start }
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.contains("://") {
            return Self::new(&s);
        }
        validate_trust_domain(&s)?;
        Ok(Self(s))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// A validated SPIFFE ID, e.g. `spiffe://cluster.local/ns/default/sa/web`.
///
/// Stores the full URI once plus the byte index where the path starts, so the
/// accessors are free. Ordering and equality are those of the string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole URI, `spiffe://<td><path>`.
    id: String,
    /// Byte index in `id` where the path (possibly empty) starts.
    path_start: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    ///
    /// # Errors
    /// Returns the [`SpiffeIdError`] for the first rule the input breaks.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let path_start = validate_id(s)?;
        Ok(Self {
            id: s.to_owned(),
            path_start,
        })
    }

    /// Builds `spiffe://<td>/<seg1>/<seg2>...` from path segments, validating each.
    /// No segments gives the trust domain's own ID.
    ///
    /// # Errors
    /// [`SpiffeIdError::EmptySegment`], [`SpiffeIdError::DotSegment`],
    /// [`SpiffeIdError::BadPathChar`] (including a `/` inside a segment),
    /// [`SpiffeIdError::PercentEncoded`] or [`SpiffeIdError::TooLong`].
    pub fn from_segments(td: &TrustDomain, segments: &[&str]) -> Result<Self, SpiffeIdError> {
        let mut id = td.id().id;
        let path_start = id.len();
        for segment in segments {
            if segment.is_empty() {
                return Err(SpiffeIdError::EmptySegment {
                    path: excerpt(&format!("/{}", segments.join("/"))),
                });
            }
            validate_segment(segment)?;
            id.push('/');
            id.push_str(segment);
        }
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: id.len() });
        }
        Ok(Self { id, path_start })
    }

    /// Builds the Kubernetes-style ID `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    ///
    /// # Errors
    /// As [`SpiffeId::from_segments`], e.g. for an empty namespace or one containing `/`.
    pub fn for_service_account(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::from_segments(td, &["ns", namespace, "sa", service_account])
    }

    /// The trust domain this ID belongs to.
    #[must_use]
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The trust domain name, e.g. `example.org`, without allocating.
    #[must_use]
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME.len()..self.path_start]
    }

    /// The path: `""` for a trust domain's own ID, otherwise `/a/b`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// The whole ID as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// `Some((namespace, service_account))` when the path is exactly
    /// `/ns/<namespace>/sa/<service_account>`, otherwise `None`.
    #[must_use]
    pub fn kubernetes_service_account(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) => {
                Some((namespace, service_account))
            }
            _ => None,
        }
    }

    /// Whether this ID belongs to the trust domain `td`.
    #[must_use]
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        let path_start = validate_id(&id)?;
        Ok(Self { id, path_start })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::try_from(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "spiffe/tests.rs"]
mod tests;
