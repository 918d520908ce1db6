//! Tests of the host grammar: the tables every entry point shares, the error messages,
//! and properties over arbitrary input (no panic, display parses back to itself).

use std::net::IpAddr;

use proptest::prelude::*;

use super::table::{
    CIDR_CONTAINS_TABLE, CIDR_TABLE, CidrExpect, GRAMMAR_TABLE, MATCH_TABLE, PATH_PREFIX_TABLE,
    round_trip,
};
use super::*;

#[test]
fn the_grammar_table() {
    let failures: Vec<String> = GRAMMAR_TABLE
        .iter()
        .filter_map(|(input, expect)| expect.check(input).err())
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_table_harness_notices_a_wrong_row() {
    use super::table::Expect;
    assert!(Expect::Name("example.org").check("example.com").is_err());
    assert!(Expect::Ip("127.0.0.2").check("127.1").is_err());
    assert!(Expect::Below("com").check("*.example.com").is_err());
    assert!(
        Expect::Refused(HostErrorKind::Port)
            .check("a_b.com")
            .is_err()
    );
    assert!(
        Expect::Refused(HostErrorKind::Port)
            .check("example.com")
            .is_err()
    );
    assert_eq!(Expect::Ip("::1").host().as_deref(), Some("[::1]"));
    assert_eq!(Expect::Below("a.com").pattern().as_deref(), Some("*.a.com"));
}

#[test]
fn the_match_table() {
    let failures: Vec<String> = MATCH_TABLE
        .iter()
        .filter(|(pattern, host, want)| {
            let p = HostPattern::parse(pattern).expect("table pattern");
            let h = Host::parse(host).expect("table host");
            let by_name = h.name().is_some_and(|n| p.matches(n));
            p.matches_host(&h) != *want || by_name != *want
        })
        .map(|row| format!("{row:?}"))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_path_prefix_table() {
    let failures: Vec<String> = PATH_PREFIX_TABLE
        .iter()
        .filter(|(prefix, path, want)| path_prefix_matches(prefix, path) != *want)
        .map(|row| format!("{row:?}"))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_cidr_table() {
    let mut failures = Vec::new();
    for (input, expect) in CIDR_TABLE {
        let got = Cidr::parse(input);
        let ok = match expect {
            CidrExpect::Block(text) => got.as_ref().is_ok_and(|c| c.to_string() == *text),
            CidrExpect::Refused(kind) => got.as_ref().map_err(HostError::kind) == Err(*kind),
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expect:?}, got {got:?}"));
        }
        if let Err(e) = round_trip(input) {
            failures.push(e);
        }
    }
    for (block, ip, want) in CIDR_CONTAINS_TABLE {
        let c = Cidr::parse(block).expect("table block");
        let ip: IpAddr = ip.parse().expect("table address");
        if c.contains(ip) != *want {
            failures.push(format!("{block} contains {ip}: expected {want}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn cidr_constructors_agree_with_parse() {
    const LOOPBACK: Cidr = Cidr::v4(127, 0, 0, 0, 8);
    assert_eq!(Cidr::parse("127.0.0.0/8"), Ok(LOOPBACK));
    assert_eq!(LOOPBACK.addr(), IpAddr::from([127, 0, 0, 0]));
    assert_eq!(LOOPBACK.prefix(), 8);
    assert_eq!(
        Cidr::new(IpAddr::from([10, 0, 0, 0]), 8),
        Cidr::parse("10.0.0.0/8")
    );
    assert_eq!(
        Cidr::new(IpAddr::from([10, 0, 0, 1]), 8).map_err(|e| e.kind()),
        Err(HostErrorKind::CidrHostBits)
    );
    assert_eq!(
        Cidr::new(IpAddr::from([10, 0, 0, 0]), 33).map_err(|e| e.kind()),
        Err(HostErrorKind::CidrLength)
    );
}

#[test]
fn messages_say_what_is_wrong_and_quote_the_input() {
    let msg = |r: Result<HostName, HostError>| r.expect_err("refused").to_string();
    assert_eq!(
        msg(HostName::parse("0x7f.1")),
        "`0x7f.1` is an IP address (127.0.0.1), not a host name: IP ranges are allowed with `allow_cidrs`"
    );
    assert!(msg(HostName::parse("a.123")).contains("IP address"));
    assert!(msg(HostName::parse("[::1]")).contains("(::1)"));
    assert_eq!(
        msg(HostName::parse("a.com:443")),
        "`a.com:443` has a port: give the host alone, without `:port`"
    );
    assert_eq!(
        msg(HostName::parse("a_b.com")),
        "`a_b.com` contains `_`: a host name has only letters, digits, `-` and `.`"
    );
    assert_eq!(
        msg(HostName::parse("a\u{0}b")),
        "`a\\u{0}b` contains the control character U+0000: a host name has only letters, digits, `-` and `.`"
    );
    assert!(msg(HostName::parse("*.a.com")).contains("wildcard is not allowed here"));
    assert_eq!(
        Cidr::parse("10.0.0.1/8").unwrap_err().to_string(),
        "`10.0.0.1/8` has host bits set: the block is written `10.0.0.0/8`"
    );
    assert_eq!(
        HostPattern::parse("*.com").unwrap_err().to_string(),
        "`*.com` would allow a whole top-level domain: `*.` must be followed by at least two labels"
    );
    // The pattern's error quotes the whole input, not the part after `*.`.
    assert!(
        HostPattern::parse("*.a..b")
            .unwrap_err()
            .to_string()
            .starts_with("`*.a..b`")
    );
}

#[test]
fn long_input_is_quoted_cut_short() {
    for input in [
        "x".repeat(5000),
        "ü".repeat(5000),
        format!("{}.com", "a".repeat(400)),
    ] {
        let e = Host::parse(&input).unwrap_err();
        let text = e.to_string();
        assert!(text.contains('…'), "{text}");
        assert!(text.chars().count() < QUOTE_MAX + 200, "{text}");
    }
    let e = Cidr::parse(&"1".repeat(5000)).unwrap_err().to_string();
    assert!(e.chars().count() < 2 * QUOTE_MAX + 200);
}

#[test]
fn every_short_string_over_an_awkward_alphabet() {
    const ALPHABET: [char; 15] = [
        'a', 'X', '0', '1', '9', 'x', '.', '-', '*', ':', '[', ']', '/', 'ü', ' ',
    ];
    let mut input = String::new();
    let mut stack = vec![0usize; 0];
    // Every string of up to 4 characters: odometer over ALPHABET.
    loop {
        input.clear();
        input.extend(stack.iter().map(|&i| ALPHABET[i]));
        check_invariants(&input);
        let mut pos = stack.len();
        loop {
            if pos == 0 {
                if stack.len() == 4 {
                    return;
                }
                stack = vec![0; stack.len() + 1];
                break;
            }
            pos -= 1;
            stack[pos] += 1;
            if stack[pos] < ALPHABET.len() {
                break;
            }
            stack[pos] = 0;
        }
    }
}

/// What must hold for any input: no panic, display parses back to itself, and an
/// accepted name satisfies the grammar.
fn check_invariants(input: &str) {
    if let Err(e) = round_trip(input) {
        panic!("{e}");
    }
    if let Ok(n) = HostName::parse(input) {
        let s = n.as_str();
        assert!(s.len() <= MAX_NAME, "{input:?}");
        assert!(
            s.split('.').all(|l| {
                (1..=MAX_LABEL).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            }),
            "{input:?} gave {s:?}"
        );
        assert!(
            !s.rsplit('.')
                .next()
                .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())),
            "{input:?} gave {s:?}, which ends in a number"
        );
        assert!(Host::parse(input).is_ok_and(|h| h.name() == Some(&n)));
        assert_eq!(HostPattern::parse(input), Ok(HostPattern::Exact(n)));
    }
    if let Ok(HostPattern::Below(base)) = HostPattern::parse(input) {
        assert!(base.as_str().contains('.'), "{input:?}");
        assert!(Host::parse(input).is_err());
    }
    let _ = path_prefix_matches(input, input);
    let _ = path_prefix_matches(input, "/v1/x");
    let _ = path_prefix_matches("/v1", input);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings(input in any::<String>()) {
        check_invariants(&input);
    }

    #[test]
    fn host_like_strings(input in "[a-zA-Z0-9.\\-*:\\[\\]_%/ üß。．０-９ｘ\u{ad}]{0,40}") {
        check_invariants(&input);
    }

    #[test]
    fn numeric_strings(input in "(0[xX])?[0-9a-fA-F]{0,12}(\\.(0[xX])?[0-9a-fA-F]{0,5}){0,5}\\.?") {
        check_invariants(&input);
        // Whatever reads as IPv4 agrees with std on the plain dotted quad.
        if let Ok(IpAddr::V4(std_ip)) = input.parse::<IpAddr>() {
            prop_assert_eq!(Host::parse(&input), Ok(Host::Ip(IpAddr::V4(std_ip))));
        }
    }

    #[test]
    fn cidr_strings(addr in any::<IpAddr>(), len in 0u8..=130) {
        let text = format!("{addr}/{len}");
        match Cidr::parse(&text) {
            Ok(c) => {
                prop_assert!(c.contains(addr));
                prop_assert_eq!(Cidr::parse(&c.to_string()), Ok(c));
            }
            Err(HostError::CidrHostBits { canonical, .. }) => {
                prop_assert!(canonical.contains(addr));
                prop_assert_eq!(Cidr::parse(&canonical.to_string()), Ok(canonical));
            }
            Err(e) => prop_assert_eq!(e.kind(), HostErrorKind::CidrLength),
        }
    }

    #[test]
    fn wildcards_admit_exactly_the_names_below(labels in proptest::collection::vec("[a-z][a-z0-9]{0,4}", 1..6), cut in 0usize..6) {
        let name = HostName::parse(&labels.join(".")).expect("generated name");
        let base_labels = &labels[cut.min(labels.len() - 1)..];
        if let Ok(p) = HostPattern::parse(&format!("*.{}", base_labels.join("."))) {
            prop_assert_eq!(p.matches(&name), base_labels.len() < labels.len());
        }
    }
}

#[test]
fn serde_goes_through_the_grammar() {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error, StrDeserializer};

    let de = |s: &'static str| -> StrDeserializer<'static, Error> { s.into_deserializer() };
    assert_eq!(
        HostPattern::deserialize(de("*.Example.COM")).map(|p| p.to_string()),
        Ok("*.example.com".to_owned())
    );
    assert!(HostName::deserialize(de("127.1")).is_err());
    assert!(Cidr::deserialize(de("10.0.0.1/8")).is_err());
}
