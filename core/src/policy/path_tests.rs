//! Path normalization as a table of sentences: what a request path becomes (or why it is refused)
//! before any rule sees it, attack-shaped paths included, plus property tests (never panics,
//! idempotent, output always in normalized form).

use super::*;
use proptest::prelude::*;

use PathError::{
    Backslash, DotSegmentWithParams, EncodedBackslash, EncodedControl, EncodedSlash, ForbiddenChar,
    InvalidEncoding, NotAbsolute, TooLong,
};

#[test]
fn table_of_paths_reads_as_sentences() {
    let exactly_max = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
    let one_over_max = format!("/{}", "a".repeat(MAX_PATH_LEN));
    let dots_over_max = format!("/{}", "./".repeat(MAX_PATH_LEN / 2));

    #[rustfmt::skip]
    let cases: &[(&str, Result<&str, PathError>, &str)] = &[
        // --- plain paths pass through untouched
        ("/", Ok("/"), "the root stays the root"),
        ("/admin", Ok("/admin"), "a plain path stays as it is"),
        ("/ADMIN", Ok("/ADMIN"), "case is preserved, so /ADMIN stays /ADMIN"),
        ("/admin/", Ok("/admin/"), "a single trailing slash is preserved"),
        ("", Ok("/"), "an empty path means the root"),
        (&exactly_max, Ok(&exactly_max), "a path of exactly MAX_PATH_LEN bytes is accepted"),
        (&one_over_max, Err(TooLong { len: MAX_PATH_LEN + 1 }), "a path one byte over MAX_PATH_LEN is refused"),
        (&dots_over_max, Err(TooLong { len: MAX_PATH_LEN + 1 }), "the limit applies to the raw bytes, even if they would normalize to '/'"),
        // --- slashes
        ("//admin", Ok("/admin"), "a doubled leading slash is merged"),
        ("/a///b", Ok("/a/b"), "a run of slashes inside the path is merged"),
        ("/a//", Ok("/a/"), "a run of trailing slashes becomes a single trailing slash"),
        ("///", Ok("/"), "only slashes is the root"),
        // --- dot segments
        ("/admin/../public", Ok("/public"), "dot-dot climbs out of admin into public"),
        ("/a/./b", Ok("/a/b"), "a single dot segment is removed"),
        ("/a/b/..", Ok("/a/"), "a trailing dot-dot leaves a trailing slash"),
        ("/a/.", Ok("/a/"), "a trailing dot leaves a trailing slash"),
        ("/..", Ok("/"), "dot-dot at the root stays at the root"),
        ("/../x", Ok("/x"), "dot-dot cannot climb above the root"),
        ("/../../etc/passwd", Ok("/etc/passwd"), "repeated dot-dots cannot reach outside the root"),
        ("/./", Ok("/"), "a dot under the root is the root"),
        ("/api//v1/./users/", Ok("/api/v1/users/"), "merging and dot removal combine and keep the trailing slash"),
        ("/a/b/../../c", Ok("/c"), "two dot-dots pop two segments"),
        ("/a/...", Ok("/a/..."), "three dots are an ordinary segment"),
        ("/a/.hidden", Ok("/a/.hidden"), "a dot-file name is an ordinary segment"),
        ("/a/..b", Ok("/a/..b"), "a segment that merely starts with two dots is ordinary"),
        // --- percent-decoding of unreserved characters
        ("/%61dmin", Ok("/admin"), "an encoded unreserved letter is decoded, so /%61dmin is /admin"),
        ("/%2e%2e/admin", Ok("/admin"), "an encoded dot-dot is a dot-dot"),
        ("/public/%2e%2e/admin", Ok("/admin"), "an encoded dot-dot climbs out of public"),
        ("/a/%2E/b", Ok("/a/b"), "an encoded dot with uppercase hex is a dot segment"),
        ("/a/.%2e", Ok("/"), "a half-encoded dot-dot is a dot-dot"),
        ("/%7e", Ok("/~"), "an encoded tilde is decoded"),
        ("/%7E%2D%5F", Ok("/~-_"), "encoded unreserved punctuation is decoded"),
        ("/%41%5a%30", Ok("/AZ0"), "encoded letters and digits are decoded with their case"),
        // --- other escapes stay encoded, uppercased
        ("/%3a", Ok("/%3A"), "an encoded colon stays encoded with uppercase hex"),
        ("/%252e%252e/", Ok("/%252e%252e/"), "decoding happens once: %25 stays encoded and the literal '2e' after it is left alone"),
        ("/caf%C3%A9", Ok("/caf%C3%A9"), "an encoded UTF-8 character stays encoded"),
        ("/caf%c3%a9", Ok("/caf%C3%A9"), "an encoded UTF-8 character gets uppercase hex"),
        ("/a%20b", Ok("/a%20b"), "an encoded space stays encoded"),
        ("/a%3fb", Ok("/a%3Fb"), "an encoded question mark stays encoded (it is not a query)"),
        // --- allowed literal characters
        ("/a;b=c", Ok("/a;b=c"), "path parameters on an ordinary segment are kept"),
        ("/!$&'()*+,;=", Ok("/!$&'()*+,;="), "all sub-delims are kept literally"),
        ("/user@host:8080", Ok("/user@host:8080"), "'@' and ':' are kept literally"),
        ("/a-b_c.d~e", Ok("/a-b_c.d~e"), "unreserved punctuation is kept literally"),
        // --- encoded separators and controls are refused
        ("/admin%2F..", Err(EncodedSlash { position: 6 }), "an encoded slash is refused"),
        ("/admin%2f..", Err(EncodedSlash { position: 6 }), "an encoded slash in lowercase hex is refused"),
        ("/a%5cb", Err(EncodedBackslash { position: 2 }), "an encoded backslash is refused"),
        ("/a%5Cb", Err(EncodedBackslash { position: 2 }), "an encoded backslash in uppercase hex is refused"),
        ("/%00", Err(EncodedControl { byte: 0, position: 1 }), "an encoded NUL is refused"),
        ("/%0a", Err(EncodedControl { byte: 0x0a, position: 1 }), "an encoded line feed is refused"),
        ("/x%7f", Err(EncodedControl { byte: 0x7f, position: 2 }), "an encoded DEL is refused"),
        // --- malformed escapes are refused
        ("/%", Err(InvalidEncoding { position: 1 }), "a lone percent at the end is refused"),
        ("/%4", Err(InvalidEncoding { position: 1 }), "a percent with one hex digit is refused"),
        ("/%zz", Err(InvalidEncoding { position: 1 }), "a percent followed by non-hex is refused"),
        ("/a%g1", Err(InvalidEncoding { position: 2 }), "a percent whose first digit is not hex is refused"),
        // --- forbidden raw characters are refused
        ("/a\\b", Err(Backslash { position: 2 }), "a raw backslash is refused because some servers read it as '/'"),
        ("/café", Err(ForbiddenChar { ch: 'é', position: 4 }), "a raw non-ASCII character is refused"),
        ("/a b", Err(ForbiddenChar { ch: ' ', position: 2 }), "a raw space is refused"),
        ("/a?b", Err(ForbiddenChar { ch: '?', position: 2 }), "a raw question mark is refused (the caller splits off the query)"),
        ("/a#b", Err(ForbiddenChar { ch: '#', position: 2 }), "a raw hash is refused (fragments are never sent)"),
        ("/a\"b", Err(ForbiddenChar { ch: '"', position: 2 }), "a raw double quote is refused"),
        ("/a<b>", Err(ForbiddenChar { ch: '<', position: 2 }), "a raw angle bracket is refused"),
        ("/{x}|^`", Err(ForbiddenChar { ch: '{', position: 1 }), "a raw brace is refused"),
        ("/a\tb", Err(ForbiddenChar { ch: '\t', position: 2 }), "a raw tab is refused"),
        ("/a\0b", Err(ForbiddenChar { ch: '\0', position: 2 }), "a raw NUL is refused"),
        ("/a\x7fb", Err(ForbiddenChar { ch: '\x7f', position: 2 }), "a raw DEL is refused"),
        ("/%61 b", Err(ForbiddenChar { ch: ' ', position: 4 }), "positions count raw bytes, before decoding"),
        // --- not an absolute path
        ("admin", Err(NotAbsolute), "a path without a leading slash is refused"),
        ("*", Err(NotAbsolute), "the asterisk form is refused (it belongs to OPTIONS, handled earlier)"),
        ("http://x/", Err(NotAbsolute), "the absolute form is refused (the caller handles it)"),
        ("%2Fadmin", Err(NotAbsolute), "an encoded leading slash is not a leading slash"),
        // --- dot segments with parameters are refused
        ("/public/..;/admin", Err(DotSegmentWithParams { position: 8 }), "dot-dot with an empty parameter is the Tomcat bypass and is refused"),
        ("/.;/admin", Err(DotSegmentWithParams { position: 1 }), "dot with an empty parameter is refused"),
        ("/a/..;jsessionid=1", Err(DotSegmentWithParams { position: 3 }), "a trailing dot-dot with parameters is refused"),
        ("/public/%2e%2e;/admin", Err(DotSegmentWithParams { position: 8 }), "an encoded dot-dot with parameters is refused"),
        ("/public/..%3b/admin", Err(DotSegmentWithParams { position: 8 }), "dot-dot with an encoded ';' is refused too"),
        ("/a/...;x", Ok("/a/...;x"), "three dots with parameters are an ordinary segment"),
        ("/a/b;..", Ok("/a/b;.."), "dots after the ';' are only a parameter"),
    ];

    assert!(cases.len() >= 40, "the table must keep at least 40 rows");
    let mut failures = Vec::new();
    for (input, expected, sentence) in cases {
        let got = normalize_path(input);
        let got = got
            .as_ref()
            .map(NormalizedPath::as_str)
            .map_err(Clone::clone);
        if got != *expected {
            let shown: String = input.chars().take(60).collect();
            failures.push(format!(
                "{sentence}\n    input:    {shown:?}\n    expected: {expected:?}\n    got:      {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn normalized_path_accessors_agree() {
    let p = normalize_path("/a/../b/").expect("valid path");
    assert_eq!(p.as_str(), "/b/");
    assert_eq!(p.as_ref(), "/b/");
    assert_eq!(p.to_string(), "/b/");
    assert_eq!(p.clone().into_string(), String::from("/b/"));
}

#[test]
fn reasons_are_distinct_stable_labels() {
    let all = [
        TooLong { len: 1 },
        NotAbsolute,
        ForbiddenChar {
            ch: ' ',
            position: 0,
        },
        Backslash { position: 0 },
        InvalidEncoding { position: 0 },
        EncodedSlash { position: 0 },
        EncodedBackslash { position: 0 },
        EncodedControl {
            byte: 0,
            position: 0,
        },
        DotSegmentWithParams { position: 0 },
    ];
    let reasons: Vec<&str> = all.iter().map(PathError::reason).collect();
    assert_eq!(
        reasons,
        [
            "too_long",
            "not_absolute",
            "forbidden_char",
            "backslash",
            "invalid_encoding",
            "encoded_slash",
            "encoded_backslash",
            "encoded_control",
            "dot_segment_with_params",
        ]
    );
    for e in &all {
        let expected = if matches!(e, TooLong { .. }) {
            414
        } else {
            400
        };
        assert_eq!(e.http_status(), expected, "{e:?}");
    }
}

#[test]
fn messages_say_what_and_where_and_what_to_do() {
    let msg = |raw: &str| {
        normalize_path(raw)
            .expect_err("must be refused")
            .to_string()
    };
    assert_eq!(
        msg("/admin%2F.."),
        "path contains an encoded '/' (%2F) at byte 6; the mesh refuses it because servers \
         disagree on its meaning: send the literal path instead"
    );
    let too_long = msg(&"/".repeat(MAX_PATH_LEN + 1));
    assert!(
        too_long.contains("8193 bytes") && too_long.contains("8192"),
        "{too_long}"
    );
    let forbidden = msg("/a b");
    assert!(forbidden.contains("' ' (U+0020) at byte 2"), "{forbidden}");
    assert!(forbidden.contains("%20"), "{forbidden}");
    let control = msg("/a\nb");
    assert!(control.contains("'\\n' (U+000A)"), "{control}");
    let encoded_control = msg("/%1b");
    assert!(
        encoded_control.contains("(%1B) at byte 1"),
        "{encoded_control}"
    );
    assert!(msg("/%").contains("%25"));
    assert!(msg("/a\\b").contains("byte 2"));
    assert!(msg("/..;/x").contains("Tomcat"));
    assert!(msg("x").contains("start with '/'"));
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// Pieces that make interesting, mostly valid paths: separators, dot segments
/// in every encoding, parameters, escapes of every class.
fn path_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", "a", "B", "%61", "%41", ";", ";x=1", "%3a",
        "%3B", "%25", "2e", "~", "%7e", "%C3%A9", "@", ":", "!", "-", "_", "%20", "%2f", "%5c",
        "%00", "%", "%4", "\\", " ", "é", "?",
    ])
}

fn absolute_path_like() -> impl Strategy<Value = String> {
    prop::collection::vec(path_piece(), 0..24).prop_map(|v| format!("/{}", v.concat()))
}

fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        absolute_path_like(),
        prop::collection::vec(path_piece(), 0..24).prop_map(|v| v.concat()),
    ]
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| format!("/{}", String::from_utf8_lossy(&b))),
        path_like(),
    ]
}

/// Checks every documented guarantee of a normalized output.
fn check_output(raw: &str, out: &str) -> Result<(), TestCaseError> {
    prop_assert!(out.starts_with('/'), "{out:?} does not start with '/'");
    prop_assert!(!out.contains("//"), "{out:?} contains '//'");
    prop_assert!(!out.contains("/./"), "{out:?} contains '/./'");
    prop_assert!(!out.contains("/../"), "{out:?} contains '/../'");
    prop_assert!(!out.ends_with("/."), "{out:?} ends with '/.'");
    prop_assert!(!out.ends_with("/.."), "{out:?} ends with '/..'");
    prop_assert!(
        out.len() <= raw.len().max(1),
        "{out:?} is longer than {raw:?}"
    );
    let bytes = out.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = out.get(i + 1..i + 3).unwrap_or("");
            prop_assert!(
                hex.len() == 2 && hex.bytes().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')),
                "{out:?}: escape at {i} is not two uppercase hex digits"
            );
            let value = u8::from_str_radix(hex, 16).unwrap_or(0);
            prop_assert!(
                !is_unreserved(value)
                    && value >= 0x20
                    && value != 0x7f
                    && value != b'/'
                    && value != b'\\',
                "{out:?}: escape at {i} should have been decoded or refused"
            );
            i += 3;
        } else {
            prop_assert!(
                b == b'/' || is_pchar_literal(b),
                "{out:?}: byte {i} is not allowed"
            );
            i += 1;
        }
    }
    for seg in out.split('/').skip(1) {
        let head = seg.split(';').next().unwrap_or("");
        prop_assert!(
            head != "." && head != "..",
            "{out:?} has dot segment {seg:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics_and_outputs_keep_their_guarantees(raw in any_string()) {
        if let Ok(out) = normalize_path(&raw) {
            check_output(&raw, out.as_str())?;
        }
    }

    #[test]
    fn normalization_is_idempotent(raw in any_string()) {
        if let Ok(once) = normalize_path(&raw) {
            let twice = normalize_path(once.as_str());
            prop_assert_eq!(twice.as_ref(), Ok(&once), "raw: {:?}", raw);
        }
    }

    #[test]
    fn path_like_outputs_keep_their_guarantees(raw in path_like()) {
        if let Ok(out) = normalize_path(&raw) {
            check_output(&raw, out.as_str())?;
            let again = normalize_path(out.as_str());
            prop_assert_eq!(again.as_ref(), Ok(&out));
        }
    }

    #[test]
    fn nothing_climbs_above_the_root(rest in absolute_path_like()) {
        // Prefixing "/.." to an absolute path changes nothing: the root has no parent.
        let plain = normalize_path(&rest).map_err(|e| e.reason());
        let climbed = normalize_path(&format!("/..{rest}")).map_err(|e| e.reason());
        prop_assert_eq!(climbed, plain);
    }

    #[test]
    fn plain_letter_paths_pass_through_unchanged(raw in "(/[a-zA-Z]{1,6}){1,6}/?") {
        // Case is preserved and nothing is rewritten in an already-clean path.
        let out = normalize_path(&raw).map(NormalizedPath::into_string);
        prop_assert_eq!(out, Ok(raw));
    }
}

#[test]
fn rules_match_the_path_without_its_parameters_and_the_app_gets_it_as_sent() {
    for (raw, forwarded, matched) in [
        ("/admin;x", "/admin;x", "/admin"),
        ("/admin;jsessionid=1/users", "/admin;jsessionid=1/users", "/admin/users"),
        ("/a/;x/b", "/a/;x/b", "/a/b"),
        ("/a/;x", "/a/;x", "/a/"),
        ("/;x", "/;x", "/"),
        ("/a/b/", "/a/b/", "/a/b/"),
        ("/a%3Bb", "/a%3Bb", "/a%3Bb"),
    ] {
        let p = normalize_path(raw).unwrap();
        assert_eq!((p.as_str(), p.for_matching()), (forwarded, matched), "{raw}");
    }
}
