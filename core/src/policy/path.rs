//! HTTP path normalization for authorization and forwarding.
//!
//! The sidecar authorizes each request by matching policy rules (exact path,
//! `prefix/*`, `*`) against the request path, then forwards the request to the
//! application. If the matcher and the application read the same bytes
//! differently, a request can be *authorized as one path and served as
//! another* (`/public/../admin`, `/%61dmin`, `/public/..;/admin`, ...). To close
//! that gap the path is normalized exactly once by [`normalize_path`]; the
//! resulting [`NormalizedPath`] is both what the rules match and what the
//! application receives. Anything whose meaning servers disagree on is refused
//! with a [`PathError`] (answered with [`PathError::http_status`], 400 or 414).
//!
//! The input is the path component of an origin-form request target: the
//! caller has already split off `?query` (and the asterisk form `*` and the
//! absolute form `http://host/...` are handled before this module).
//!
//! # Transformations
//!
//! 1. An empty path becomes `/` (RFC 3986 §6.2.3: an empty http path is `/`).
//! 2. Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded:
//!    `%61` → `a`, `%2e` → `.`, `%7E` → `~`. Decoding happens once only:
//!    `%252e` stays `%252e` (`%25` followed by the literal
//!    characters `2e`: a literal `%2e` for the application).
//! 3. Every other escape stays encoded with uppercase hex: `%3a` → `%3A`,
//!    `%c3%a9` → `%C3%A9`.
//! 4. Runs of `/` are merged: `//admin` → `/admin`, `/a///b` → `/a/b`.
//! 5. Dot segments are removed as in RFC 3986 §5.2.4, *after* decoding (so
//!    `%2e%2e` is `..`): `/a/./b` → `/a/b`, `/admin/../public` → `/public`,
//!    `/../x` → `/x` (nothing climbs above the root), and a trailing dot
//!    segment leaves a trailing slash: `/a/b/..` → `/a/`, `/a/.` → `/a/`.
//! 6. A single trailing slash is preserved (`/admin/` stays `/admin/`) and case
//!    is preserved (`/ADMIN` stays `/ADMIN`; rule matching is case-sensitive).
//!
//! # Refusals
//!
//! - longer than [`MAX_PATH_LEN`] bytes → [`PathError::TooLong`] (HTTP 414);
//! - not starting with `/` (`admin`, `*`) → [`PathError::NotAbsolute`];
//! - a raw byte outside RFC 3986 `pchar` and `/` (space, `"`, `<`, `>`, `^`,
//!   backtick, `{`, `|`, `}`, `#`, `?`, control characters, DEL, any
//!   non-ASCII character) → [`PathError::ForbiddenChar`];
//! - a raw backslash, which some servers treat as `/` → [`PathError::Backslash`];
//! - `%` not followed by two hex digits → [`PathError::InvalidEncoding`];
//! - an encoded `/` (`%2F`) → [`PathError::EncodedSlash`];
//! - an encoded `\` (`%5C`) → [`PathError::EncodedBackslash`];
//! - an encoded NUL, control character or DEL (`%00`-`%1F`, `%7F`) →
//!   [`PathError::EncodedControl`];
//! - a segment that is `.` or `..` followed by path parameters (`..;`,
//!   `.;x`, also `..%3B`), which Tomcat and Jetty treat as a dot segment →
//!   [`PathError::DotSegmentWithParams`].
//!
//! # Guarantees of the output
//!
//! A [`NormalizedPath`] starts with `/`, is at most as long as its input (or
//! `/`), contains only unreserved characters, sub-delims, `:`, `@`, `/` and
//! `%XX` escapes with uppercase hex that encode none of the characters above,
//! has no empty segment except one trailing slash, and has no `.` or `..`
//! segment. Normalization is idempotent: normalizing a [`NormalizedPath`]
//! again returns it unchanged. Error positions are 0-based byte offsets into
//! the raw path; when a path has several problems, the first one in byte order
//! is reported.

use std::fmt;

/// The longest raw path accepted, in bytes; longer paths are refused with
/// [`PathError::TooLong`].
pub const MAX_PATH_LEN: usize = 8192;

/// A path that went through [`normalize_path`].
///
/// `path` (normalized) with each segment cut at its first `;`, empty segments dropped, and a
/// trailing slash kept when the last segment was a slash or only parameters.
fn strip_params(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("");
    let trailing = last.is_empty() || last.starts_with(';');
    let segments: Vec<&str> = path.split('/').map(|s| s.split(';').next().unwrap_or("")).filter(|s| !s.is_empty()).collect();
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// It starts with `/`, has no dot segments and no empty segments (except that
/// a single trailing slash is preserved), has unreserved characters decoded
/// and every other `%XX` escape in uppercase hex. It is both what policy rules
/// match and what the application receives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormalizedPath {
    path: String,
    /// The path without `;` parameters, when it has any.
    without_params: Option<String>,
}

impl NormalizedPath {
    fn new(path: String) -> Self {
        let without_params = path.contains(';').then(|| strip_params(&path));
        Self { path, without_params }
    }

    /// What rules match: the path with every segment's `;` parameters removed (`/admin;x/a` is
    /// matched as `/admin/a`), because Tomcat, Jetty and Spring serve it as that resource, so a
    /// rule about `/admin/*` must see it as such. The app still receives [`Self::as_str`].
    #[must_use]
    pub fn for_matching(&self) -> &str {
        self.without_params.as_deref().unwrap_or(&self.path)
    }

    /// The normalized path as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The normalized path as an owned `String`.
    #[must_use]
    pub fn into_string(self) -> String {
        self.path
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.path
    }
}

/// Why a request path was refused by [`normalize_path`].
///
/// Every `position` is the 0-based byte offset in the raw path of the
/// offending character (for escapes: of the `%`; for segments: of the
/// segment's first byte).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The raw path is longer than [`MAX_PATH_LEN`] bytes.
    #[error(
        "path is {len} bytes long, over the mesh limit of {max} bytes: shorten the path \
         (move data into the query string or the request body)",
        max = MAX_PATH_LEN
    )]
    TooLong {
        /// Length of the raw path in bytes.
        len: usize,
    },

    /// The path does not start with `/` (e.g. `admin`, or the asterisk form `*`).
    #[error(
        "path does not start with '/': send an origin-form path such as \"/api/v1/users\" \
         (the asterisk form \"*\" and absolute URLs must be handled before path normalization)"
    )]
    NotAbsolute,

    /// A character that is not allowed unencoded in a URL path.
    #[error(
        "path contains the character '{}' (U+{:04X}) at byte {position}, which is not allowed \
         unencoded in a URL path: percent-encode it (a space is %20); '?' and '#' start the \
         query and fragment, which must be split off before the path is normalized",
        ch.escape_debug(),
        u32::from(*ch)
    )]
    ForbiddenChar {
        /// The offending character.
        ch: char,
        /// Byte offset of the character in the raw path.
        position: usize,
    },

    /// A raw backslash, which some servers treat as `/`.
    #[error(
        "path contains a backslash '\\' at byte {position}; the mesh refuses it because some \
         servers treat it as '/': use '/' to separate path segments"
    )]
    Backslash {
        /// Byte offset of the backslash in the raw path.
        position: usize,
    },

    /// A `%` not followed by two hexadecimal digits.
    #[error(
        "path has a '%' at byte {position} that is not followed by two hex digits: \
         encode a literal '%' as %25"
    )]
    InvalidEncoding {
        /// Byte offset of the `%` in the raw path.
        position: usize,
    },

    /// An encoded `/` (`%2F` or `%2f`).
    #[error(
        "path contains an encoded '/' (%2F) at byte {position}; the mesh refuses it because \
         servers disagree on its meaning: send the literal path instead"
    )]
    EncodedSlash {
        /// Byte offset of the `%` in the raw path.
        position: usize,
    },

    /// An encoded `\` (`%5C` or `%5c`).
    #[error(
        "path contains an encoded '\\' (%5C) at byte {position}; the mesh refuses it because \
         some servers decode it to a path separator: send the literal path with '/' instead"
    )]
    EncodedBackslash {
        /// Byte offset of the `%` in the raw path.
        position: usize,
    },

    /// An encoded NUL, control character (`%00`-`%1F`) or DEL (`%7F`).
    #[error(
        "path contains an encoded control character (%{byte:02X}) at byte {position}; the mesh \
         refuses NUL and control characters in paths: remove it"
    )]
    EncodedControl {
        /// The decoded byte value.
        byte: u8,
        /// Byte offset of the `%` in the raw path.
        position: usize,
    },

    /// A segment that is `.` or `..` followed by `;` path parameters (`..;`,
    /// `.;jsessionid=x`), which Tomcat and Jetty treat as a dot segment.
    #[error(
        "path segment at byte {position} is '.' or '..' followed by ';' parameters; the mesh \
         refuses it because some servers (Tomcat, Jetty) treat it as a dot segment: remove the \
         parameters or the segment"
    )]
    DotSegmentWithParams {
        /// Byte offset of the segment's first byte in the raw path.
        position: usize,
    },
}

impl PathError {
    /// A short, stable label for metrics and logs (e.g. `"encoded_slash"`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "too_long",
            Self::NotAbsolute => "not_absolute",
            Self::ForbiddenChar { .. } => "forbidden_char",
            Self::Backslash { .. } => "backslash",
            Self::InvalidEncoding { .. } => "invalid_encoding",
            Self::EncodedSlash { .. } => "encoded_slash",
            Self::EncodedBackslash { .. } => "encoded_backslash",
            Self::EncodedControl { .. } => "encoded_control",
            Self::DotSegmentWithParams { .. } => "dot_segment_with_params",
        }
    }

    /// The HTTP status the sidecar answers with: 414 (URI Too Long) for
    /// [`PathError::TooLong`], 400 (Bad Request) otherwise.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TooLong { .. } => 414,
            _ => 400,
        }
    }
}

/// Normalizes the path of an origin-form request target (query already split
/// off), or refuses it.
///
/// See the [module documentation](self) for the transformations applied, the
/// refusals and the guarantees of the result.
///
/// # Errors
///
/// Returns a [`PathError`] describing the first problem found, in byte order
/// (dot segments with parameters are detected when their segment ends).
pub fn normalize_path(raw: &str) -> Result<NormalizedPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong { len: bytes.len() });
    }
    match bytes.first() {
        None => return Ok(NormalizedPath::new(String::from("/"))),
        Some(b'/') => {}
        Some(_) => return Err(PathError::NotAbsolute),
    }

    // `out` holds the kept segments, each as "/segment"; `starts` holds the
    // offset in `out` of each kept segment's '/', so ".." can pop one.
    let mut out = String::with_capacity(bytes.len());
    let mut starts: Vec<usize> = Vec::new();

    // Byte 0 is the leading '/'; each iteration of the outer loop reads one
    // segment (possibly empty) and the '/' or end of input that closes it.
    let mut i = 1;
    // The loop's value: whether the last segment asks for a trailing slash.
    let trailing_slash = loop {
        let seg_raw_start = i;
        let mark = out.len();
        out.push('/');
        while let Some(&b) = bytes.get(i) {
            match b {
                b'/' => break,
                b'%' => {
                    push_escape(&mut out, bytes, i)?;
                    i += 3;
                }
                b'\\' => return Err(PathError::Backslash { position: i }),
                _ if is_pchar_literal(b) => {
                    out.push(char::from(b));
                    i += 1;
                }
                _ => {
                    let ch = raw
                        .get(i..)
                        .and_then(|rest| rest.chars().next())
                        .unwrap_or(char::REPLACEMENT_CHARACTER);
                    return Err(PathError::ForbiddenChar { ch, position: i });
                }
            }
        }
        let is_last = i >= bytes.len();

        // An empty or dot last segment leaves a trailing slash (RFC 3986 §5.2.4).
        let trailing = match classify(&out[mark + 1..]) {
            Segment::Empty | Segment::Dot => {
                out.truncate(mark);
                true
            }
            Segment::DotDot => {
                out.truncate(mark);
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
                true
            }
            Segment::DotWithParams => {
                return Err(PathError::DotSegmentWithParams {
                    position: seg_raw_start,
                });
            }
            Segment::Normal => {
                starts.push(mark);
                false
            }
        };

        if is_last {
            break trailing;
        }
        i += 1; // skip the '/' closing this segment
    };

    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(NormalizedPath::new(out))
}

/// What a decoded segment means for dot-segment removal.
enum Segment {
    /// Nothing between two slashes (or after the last one).
    Empty,
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// `.` or `..` followed by `;` parameters (`..;`, `.;x`, `..%3B`).
    DotWithParams,
    /// Anything else: a segment that is kept.
    Normal,
}

/// Classifies a segment as it appears in the output (unreserved characters
/// decoded, other escapes uppercased).
fn classify(seg: &str) -> Segment {
    match seg {
        "" => Segment::Empty,
        "." => Segment::Dot,
        ".." => Segment::DotDot,
        _ => {
            // The part before the first parameter delimiter. An encoded ';'
            // (%3B) counts too: servers that decode before stripping
            // parameters would see `..;`.
            let semi = seg.find(';').unwrap_or(seg.len());
            let encoded_semi = seg.find("%3B").unwrap_or(seg.len());
            let head = &seg[..semi.min(encoded_semi)];
            if head == "." || head == ".." {
                Segment::DotWithParams
            } else {
                Segment::Normal
            }
        }
    }
}

/// Reads the escape starting with the `%` at `bytes[pos]` and appends its
/// normalized form to `out`: the decoded character if it is unreserved, the
/// escape with uppercase hex otherwise.
fn push_escape(out: &mut String, bytes: &[u8], pos: usize) -> Result<(), PathError> {
    let invalid = PathError::InvalidEncoding { position: pos };
    let hi = bytes.get(pos + 1).copied().and_then(hex_value);
    let lo = bytes.get(pos + 2).copied().and_then(hex_value);
    let (Some(hi), Some(lo)) = (hi, lo) else {
        return Err(invalid);
    };
    let value = hi * 16 + lo;
    match value {
        b'/' => Err(PathError::EncodedSlash { position: pos }),
        b'\\' => Err(PathError::EncodedBackslash { position: pos }),
        0x00..=0x1f | 0x7f => Err(PathError::EncodedControl {
            byte: value,
            position: pos,
        }),
        _ if is_unreserved(value) => {
            out.push(char::from(value));
            Ok(())
        }
        _ => {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(hi)]));
            out.push(char::from(HEX_UPPER[usize::from(lo)]));
            Ok(())
        }
    }
}

const HEX_UPPER: [u8; 16] = *b"0123456789ABCDEF";

/// The value of one hexadecimal digit, either case.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 `unreserved`: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` minus `pct-encoded` (handled separately): unreserved,
/// sub-delims, `:` and `@`.
fn is_pchar_literal(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@".contains(&b)
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
