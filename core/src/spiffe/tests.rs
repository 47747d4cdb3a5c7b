//! Tests for SPIFFE ID and trust domain validation.

use std::collections::HashSet;

use proptest::prelude::*;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use serde::de::value::{Error as DeError, StrDeserializer};

use super::*;

/// `None` = valid; `Some(rule)` = rejected with the variant whose `rule()` is `rule`.
type Expect = Option<&'static str>;

fn id_table() -> Vec<(String, Expect)> {
    let long_td = "a".repeat(MAX_TRUST_DOMAIN_LEN);
    let too_long_td = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
    // "spiffe://td/" is 12 bytes; pad the path segment to hit the limits exactly.
    let max_id = format!("spiffe://td/{}", "x".repeat(MAX_SPIFFE_ID_LEN - 12));
    let over_id = format!("spiffe://td/{}", "x".repeat(MAX_SPIFFE_ID_LEN - 11));
    assert_eq!(max_id.len(), MAX_SPIFFE_ID_LEN);
    assert_eq!(over_id.len(), MAX_SPIFFE_ID_LEN + 1);

    let rows: Vec<(&str, Expect)> = vec![
        // --- valid, including the standard's examples ---
        ("spiffe://trustdomain/path/element", None),
        ("spiffe://trust-domain.example_1/a/b", None),
        ("spiffe://td", None),
        ("spiffe://example.org/ns/default/sa/web", None),
        ("spiffe://td/Mixed-Case_09.path", None),
        ("spiffe://td/.../x", None),
        ("spiffe://td/.hidden/..x", None),
        ("spiffe://1.2.3.4/x", None),
        ("spiffe://_-./x", None),
        // --- scheme ---
        ("", Some("empty")),
        ("http://td/x", Some("scheme")),
        ("SPIFFE://td/x", Some("scheme")),
        ("Spiffe://td/x", Some("scheme")),
        ("spiffe:/td/x", Some("scheme")),
        ("spiffe:td", Some("scheme")),
        ("td/x", Some("scheme")),
        (" spiffe://td/x", Some("scheme")),
        // --- trust domain ---
        ("spiffe://", Some("missing_trust_domain")),
        ("spiffe:///path", Some("missing_trust_domain")),
        ("spiffe://TD/x", Some("trust_domain_char")),
        ("spiffe://Example.org", Some("trust_domain_char")),
        ("spiffe://t d/x", Some("trust_domain_char")),
        ("spiffe://td.é/x", Some("trust_domain_char")),
        ("spiffe://[::1]/x", Some("trust_domain_char")),
        ("spiffe://td:8080/x", Some("port")),
        ("spiffe://td:/x", Some("port")),
        ("spiffe://user@td/x", Some("user_info")),
        ("spiffe://user:pw@td/x", Some("user_info")),
        ("spiffe://t%41d/x", Some("percent_encoding")),
        // --- path ---
        ("spiffe://td/", Some("trailing_slash")),
        ("spiffe://td/x/", Some("trailing_slash")),
        ("spiffe://td//x", Some("empty_segment")),
        ("spiffe://td//", Some("empty_segment")),
        ("spiffe://td/./x", Some("dot_segment")),
        ("spiffe://td/../x", Some("dot_segment")),
        ("spiffe://td/x/..", Some("dot_segment")),
        ("spiffe://td/x/.", Some("dot_segment")),
        ("spiffe://td/%41", Some("percent_encoding")),
        ("spiffe://td/a b", Some("path_char")),
        ("spiffe://td/a*b", Some("path_char")),
        ("spiffe://td/é", Some("path_char")),
        ("spiffe://td/a\\b", Some("path_char")),
        // --- query / fragment ---
        ("spiffe://td/x?q", Some("query")),
        ("spiffe://td?q", Some("query")),
        ("spiffe://td/x#f", Some("fragment")),
        ("spiffe://td#f", Some("fragment")),
    ];
    let mut table: Vec<(String, Expect)> = rows
        .into_iter()
        .map(|(input, expect)| (input.to_owned(), expect))
        .collect();
    table.push((format!("spiffe://{long_td}/x"), None));
    table.push((
        format!("spiffe://{too_long_td}/x"),
        Some("trust_domain_length"),
    ));
    table.push((max_id, None));
    table.push((over_id, Some("length")));
    table
}

#[test]
fn parse_table() {
    let table = id_table();
    assert!(table.len() >= 30);
    for (input, expect) in &table {
        let got = SpiffeId::parse(input);
        match (expect, &got) {
            (None, Ok(id)) => {
                assert_eq!(id.as_str(), input);
                assert_eq!(id.to_string(), *input);
                assert_eq!(
                    id.trust_domain().id().as_str(),
                    format!("spiffe://{}", id.trust_domain_name())
                );
            }
            (Some(rule), Err(err)) => assert_eq!(err.rule(), *rule, "input {input:?}: {err}"),
            _ => panic!("input {input:?}: expected {expect:?}, got {got:?}"),
        }
        // Every entry point agrees with parse().
        assert_eq!(input.parse::<SpiffeId>(), got, "FromStr {input:?}");
        assert_eq!(
            SpiffeId::try_from(input.as_str()),
            got,
            "TryFrom<&str> {input:?}"
        );
        assert_eq!(
            SpiffeId::try_from(input.clone()),
            got,
            "TryFrom<String> {input:?}"
        );
    }
}

#[test]
fn trust_domain_table() {
    let rows: Vec<(String, Expect)> = vec![
        ("example.org".into(), None),
        ("spiffe://example.org".into(), None),
        ("cluster.local".into(), None),
        ("a".repeat(MAX_TRUST_DOMAIN_LEN), None),
        ("".into(), Some("missing_trust_domain")),
        ("spiffe://".into(), Some("missing_trust_domain")),
        (
            "a".repeat(MAX_TRUST_DOMAIN_LEN + 1),
            Some("trust_domain_length"),
        ),
        ("Example.org".into(), Some("trust_domain_char")),
        ("example.org/".into(), Some("trust_domain_char")),
        ("td:443".into(), Some("port")),
        ("me@td".into(), Some("user_info")),
        ("t%41d".into(), Some("percent_encoding")),
        ("http://example.org".into(), Some("scheme")),
        ("SPIFFE://example.org".into(), Some("scheme")),
        ("spiffe://example.org/x".into(), Some("trust_domain_path")),
        ("spiffe://example.org/".into(), Some("trailing_slash")),
        ("spiffe://example.org?q".into(), Some("query")),
    ];
    for (input, expect) in &rows {
        let got = TrustDomain::new(input);
        match (expect, &got) {
            (None, Ok(td)) => {
                assert_eq!(
                    td.as_str(),
                    input.strip_prefix("spiffe://").unwrap_or(input)
                );
                assert_eq!(td.to_string(), td.as_str());
                assert_eq!(td.id().path(), "");
                assert_eq!(td.id().trust_domain(), *td);
            }
            (Some(rule), Err(err)) => assert_eq!(err.rule(), *rule, "input {input:?}: {err}"),
            _ => panic!("input {input:?}: expected {expect:?}, got {got:?}"),
        }
        assert_eq!(input.parse::<TrustDomain>(), got);
        assert_eq!(TrustDomain::try_from(input.as_str()), got);
        assert_eq!(TrustDomain::try_from(input.clone()), got);
    }
}

#[test]
fn accessors() {
    let id = SpiffeId::parse("spiffe://example.org/ns/default/sa/web").unwrap();
    assert_eq!(id.trust_domain_name(), "example.org");
    assert_eq!(id.trust_domain(), TrustDomain::new("example.org").unwrap());
    assert_eq!(id.path(), "/ns/default/sa/web");
    assert!(id.is_member_of(&TrustDomain::new("example.org").unwrap()));
    assert!(!id.is_member_of(&TrustDomain::new("example.com").unwrap()));
    assert!(!id.is_member_of(&TrustDomain::new("example.org.evil").unwrap()));

    let bare = SpiffeId::parse("spiffe://example.org").unwrap();
    assert_eq!(bare.path(), "");
    assert_eq!(bare, TrustDomain::new("example.org").unwrap().id());
}

#[test]
fn from_segments_and_service_account() {
    let td = TrustDomain::new("cluster.local").unwrap();
    let id = SpiffeId::from_segments(&td, &["a", "B-c", "d_e.f"]).unwrap();
    assert_eq!(id.as_str(), "spiffe://cluster.local/a/B-c/d_e.f");
    assert_eq!(id.path(), "/a/B-c/d_e.f");
    assert_eq!(SpiffeId::from_segments(&td, &[]).unwrap(), td.id());

    let rule = |segments: &[&str]| SpiffeId::from_segments(&td, segments).unwrap_err().rule();
    assert_eq!(rule(&["a", ""]), "empty_segment");
    assert_eq!(rule(&[""]), "empty_segment");
    assert_eq!(rule(&[".."]), "dot_segment");
    assert_eq!(rule(&["a/b"]), "path_char");
    assert_eq!(rule(&["a?b"]), "path_char");
    assert_eq!(rule(&["%41"]), "percent_encoding");
    let huge = "x".repeat(MAX_SPIFFE_ID_LEN);
    assert_eq!(rule(&[huge.as_str()]), "length");

    let sa = SpiffeId::for_service_account(&td, "default", "web").unwrap();
    assert_eq!(sa.as_str(), "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(sa.kubernetes_service_account(), Some(("default", "web")));
    assert_eq!(
        SpiffeId::for_service_account(&td, "", "web")
            .unwrap_err()
            .rule(),
        "empty_segment"
    );
    assert_eq!(
        SpiffeId::for_service_account(&td, "a/b", "web")
            .unwrap_err()
            .rule(),
        "path_char"
    );
}

#[test]
fn kubernetes_service_account() {
    let k = |s: &str| {
        SpiffeId::parse(s)
            .unwrap()
            .kubernetes_service_account()
            .map(|(n, sa)| (n.to_owned(), sa.to_owned()))
    };
    assert_eq!(k("spiffe://td/ns/a/sa/b"), Some(("a".into(), "b".into())));
    assert_eq!(
        k("spiffe://td/ns/sa/sa/ns"),
        Some(("sa".into(), "ns".into()))
    );
    assert_eq!(k("spiffe://td"), None);
    assert_eq!(k("spiffe://td/ns/a"), None);
    assert_eq!(k("spiffe://td/ns/a/sa"), None);
    assert_eq!(k("spiffe://td/ns/a/sa/b/extra"), None);
    assert_eq!(k("spiffe://td/ns/a/SA/b"), None);
    assert_eq!(k("spiffe://td/x/ns/a/sa/b"), None);
    assert_eq!(k("spiffe://td/namespace/a/sa/b"), None);
}

#[test]
fn error_messages_carry_hints() {
    let msg = |s: &str| SpiffeId::parse(s).unwrap_err().to_string();

    let upper = msg("spiffe://Example.org/x");
    assert!(upper.contains("lowercase"), "{upper}");
    assert!(upper.contains("\"example.org\""), "{upper}");
    assert!(upper.contains("'A'") || upper.contains("'E'"), "{upper}");

    let scheme = msg("SPIFFE://td/x");
    assert!(
        scheme.contains("lowercase scheme \"spiffe://\""),
        "{scheme}"
    );
    assert!(scheme.contains("\"SPIFFE://\""), "{scheme}");

    let trailing = msg("spiffe://td/x/");
    assert!(trailing.contains("trailing slash"), "{trailing}");
    assert!(trailing.contains("remove the final '/'"), "{trailing}");

    let port = msg("spiffe://td:8080/x");
    assert!(port.contains("port") && port.contains("td:8080"), "{port}");

    // User info may be a credential: it is never echoed.
    let userinfo = msg("spiffe://alice:s3cret@td/x");
    assert!(userinfo.contains("user info"), "{userinfo}");
    assert!(
        !userinfo.contains("s3cret") && !userinfo.contains("alice"),
        "{userinfo}"
    );
    let userinfo_scheme = msg("https://alice:s3cret@td/x");
    assert!(!userinfo_scheme.contains("s3cret"), "{userinfo_scheme}");

    let path_char = msg("spiffe://td/a b");
    assert!(
        path_char.contains("\"a b\"") && path_char.contains("a-z A-Z"),
        "{path_char}"
    );

    assert!(msg("spiffe://td/%41").contains("percent-encoding"));
    assert!(msg("").contains("spiffe://<trust-domain>"));

    // Quoted input is truncated.
    let long = msg(&format!("spiffe://td/{} x", "y".repeat(500)));
    assert!(long.len() < 400, "{long}");
}

#[test]
fn rule_labels_are_distinct() {
    let errors = [
        SpiffeIdError::Empty,
        SpiffeIdError::WrongScheme(String::new()),
        SpiffeIdError::MissingTrustDomain,
        SpiffeIdError::TrustDomainTooLong { len: 0 },
        SpiffeIdError::BadTrustDomainChar {
            ch: 'A',
            trust_domain: String::new(),
        },
        SpiffeIdError::Port {
            authority: String::new(),
        },
        SpiffeIdError::UserInfo,
        SpiffeIdError::EmptySegment {
            path: String::new(),
        },
        SpiffeIdError::DotSegment {
            segment: String::new(),
        },
        SpiffeIdError::TrailingSlash {
            path: String::new(),
        },
        SpiffeIdError::BadPathChar {
            ch: ' ',
            segment: String::new(),
        },
        SpiffeIdError::PercentEncoded,
        SpiffeIdError::Query,
        SpiffeIdError::Fragment,
        SpiffeIdError::TooLong { len: 0 },
        SpiffeIdError::TrustDomainHasPath {
            path: String::new(),
        },
    ];
    let labels: HashSet<&str> = errors.iter().map(SpiffeIdError::rule).collect();
    assert_eq!(labels.len(), errors.len());
    for label in labels {
        assert!(
            label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{label}"
        );
    }
}

fn de_id(s: &str) -> Result<SpiffeId, DeError> {
    let de: StrDeserializer<'_, DeError> = s.into_deserializer();
    SpiffeId::deserialize(de)
}

fn de_td(s: &str) -> Result<TrustDomain, DeError> {
    let de: StrDeserializer<'_, DeError> = s.into_deserializer();
    TrustDomain::deserialize(de)
}

#[test]
fn serde_deserialize_validates() {
    assert_eq!(
        de_id("spiffe://td/ns/a/sa/b").unwrap(),
        SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap()
    );
    let err = de_id("spiffe://td/").unwrap_err().to_string();
    assert!(err.contains("trailing slash"), "{err}");
    assert_eq!(de_td("example.org").unwrap().as_str(), "example.org");
    assert_eq!(
        de_td("spiffe://example.org").unwrap().as_str(),
        "example.org"
    );
    let err = de_td("Example.org").unwrap_err().to_string();
    assert!(err.contains("lowercase"), "{err}");
}

/// A valid trust domain name.
fn trust_domain_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

/// A valid path segment (never `.` or `..`).
fn segment_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}".prop_map(|s| {
        if s == "." || s == ".." {
            format!("{s}x")
        } else {
            s
        }
    })
}

proptest! {
    #[test]
    fn segments_round_trip(
        td in trust_domain_strategy(),
        segments in prop::collection::vec(segment_strategy(), 0..8),
    ) {
        let td = TrustDomain::new(&td).unwrap();
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let id = SpiffeId::from_segments(&td, &refs).unwrap();
        let text = id.to_string();
        let reparsed = SpiffeId::parse(&text).unwrap();
        prop_assert_eq!(&reparsed, &id);
        prop_assert_eq!(reparsed.as_str(), text.as_str());
        prop_assert_eq!(reparsed.trust_domain(), td.clone());
        prop_assert!(reparsed.is_member_of(&td));
        let path: Vec<&str> = reparsed.path().split('/').skip(1).collect();
        prop_assert_eq!(path, refs);
        prop_assert_eq!(de_id(&text).unwrap(), id);
        prop_assert_eq!(de_td(td.as_str()).unwrap(), td.clone());
        prop_assert_eq!(TrustDomain::new(td.id().as_str()).unwrap(), td);
    }

    #[test]
    fn parsed_ids_redisplay_identically(
        s in "(spiffe://|SPIFFE://|spiffe:/|http://)?[a-zA-Z0-9._:@%?#/ -]{0,24}",
    ) {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert!(!id.trust_domain_name().is_empty());
            prop_assert!(id.path().is_empty() || id.path().starts_with('/'));
            prop_assert_eq!(format!("spiffe://{}{}", id.trust_domain_name(), id.path()), s);
        }
    }

    #[test]
    fn likely_valid_ids_redisplay_identically(
        s in "spiffe://[a-z0-9._-]{1,10}(/[a-zA-Z0-9._-]{1,5}){0,4}",
    ) {
        match SpiffeId::parse(&s) {
            Ok(id) => prop_assert_eq!(id.to_string(), s),
            // The only things this pattern can get wrong are dot segments.
            Err(e) => prop_assert_eq!(e.rule(), "dot_segment"),
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Ok(id) = SpiffeId::parse(&s) {
            let _ = (id.trust_domain(), id.path(), id.kubernetes_service_account());
        }
        if let Err(e) = SpiffeId::parse(&format!("spiffe://{s}")) {
            let _ = (e.rule(), e.to_string());
        }
        if let Err(e) = TrustDomain::new(&s) {
            let _ = (e.rule(), e.to_string());
        }
        let _ = de_id(&s);
    }
}
