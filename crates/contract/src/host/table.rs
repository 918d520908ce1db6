//! The grammar's tables of cases, public (feature `test-util`) so that every entry
//! point's tests run the same rows: manifest validation, agent proposals, egress and
//! pipelock each map a row to what their own entry point must do with the input.
//!
//! How an entry point reads a [`GRAMMAR_TABLE`] row:
//! - a position taking patterns (`egress.allow`, proposals, the sidecars' allowlists)
//!   accepts the input iff [`Expect::pattern`] is `Some`, and stores that text;
//! - a position taking one name (`egress.routes[].host`) accepts iff
//!   [`Expect::name`] is `Some`, and stores that text;
//! - a request's host at run time (pipelock) is accepted iff [`Expect::host`] is
//!   `Some`: a name to check against the allowlist, or an address for `allow_cidrs`.

use super::{Cidr, Host, HostErrorKind as K, HostName, HostPattern};

/// What the grammar makes of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A host name, normalised to this text: [`Host::parse`] gives [`Host::Name`],
    /// [`HostName::parse`] the name, [`HostPattern::parse`] [`HostPattern::Exact`].
    Name(&'static str),
    /// An IP literal denoting this address (as `std` writes it): [`Host::parse`] gives
    /// [`Host::Ip`]; [`HostName::parse`] and [`HostPattern::parse`] refuse it with
    /// [`K::IpAddress`].
    Ip(&'static str),
    /// `*.` this name: [`HostPattern::parse`] gives [`HostPattern::Below`] of it;
    /// [`Host::parse`] and [`HostName::parse`] refuse it (wildcard not allowed).
    Below(&'static str),
    /// Refused by all three; this is [`HostPattern::parse`]'s error kind (the others
    /// may give another, e.g. [`K::WildcardNotAllowed`] for `*`).
    Refused(K),
}

impl Expect {
    /// The canonical text a pattern position stores, when it accepts the input.
    pub fn pattern(&self) -> Option<String> {
        match *self {
            Expect::Name(n) => Some(n.to_owned()),
            Expect::Below(n) => Some(format!("*.{n}")),
            Expect::Ip(_) | Expect::Refused(_) => None,
        }
    }

    /// The canonical text a name position stores, when it accepts the input.
    pub fn name(&self) -> Option<&'static str> {
        match *self {
            Expect::Name(n) => Some(n),
            _ => None,
        }
    }

    /// The host a request naming the input goes to, as [`Host`] displays it (IPv6 in
    /// brackets), when the input is a host at all.
    pub fn host(&self) -> Option<String> {
        match *self {
            Expect::Name(n) => Some(n.to_owned()),
            Expect::Ip(ip) => ip
                .parse()
                .ok()
                .map(|ip: std::net::IpAddr| Host::Ip(ip).to_string()),
            Expect::Below(_) | Expect::Refused(_) => None,
        }
    }

    /// Check this crate's three parsers against the row, and that what they accept
    /// parses back to itself from its display. `Err` says what differs.
    pub fn check(&self, input: &str) -> Result<(), String> {
        let host = Host::parse(input);
        let name = HostName::parse(input);
        let pattern = HostPattern::parse(input);
        let ok = match *self {
            Expect::Name(n) => {
                host.as_ref()
                    .ok()
                    .and_then(Host::name)
                    .map(HostName::as_str)
                    == Some(n)
                    && name.as_ref().map(HostName::as_str) == Ok(n)
                    && matches!(&pattern, Ok(HostPattern::Exact(x)) if x.as_str() == n)
            }
            Expect::Ip(ip) => {
                let ip: Option<std::net::IpAddr> = ip.parse().ok();
                ip.is_some()
                    && host.as_ref().ok().and_then(Host::ip) == ip
                    && name.as_ref().map_err(|e| e.kind()) == Err(K::IpAddress)
                    && pattern.as_ref().map_err(|e| e.kind()) == Err(K::IpAddress)
            }
            Expect::Below(n) => {
                host.is_err()
                    && name.is_err()
                    && matches!(&pattern, Ok(HostPattern::Below(x)) if x.as_str() == n)
            }
            Expect::Refused(kind) => {
                host.is_err()
                    && name.is_err()
                    && pattern.as_ref().map_err(|e| e.kind()) == Err(kind)
            }
        };
        if !ok {
            return Err(format!(
                "{input:?}: expected {self:?}, got host {host:?}, name {name:?}, pattern {pattern:?}"
            ));
        }
        round_trip(input)
    }
}

/// Whatever the parsers accept parses back, from its display, to the same value.
pub fn round_trip(input: &str) -> Result<(), String> {
    fn again<T: std::fmt::Display + PartialEq + std::fmt::Debug, E: std::fmt::Debug>(
        input: &str,
        parsed: Result<T, E>,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<(), String> {
        match parsed {
            Ok(v) => match parse(&v.to_string()) {
                Ok(w) if w == v => Ok(()),
                other => Err(format!(
                    "{input:?} parsed to {v:?}, whose text gives {other:?}"
                )),
            },
            Err(_) => Ok(()),
        }
    }
    again(input, Host::parse(input), Host::parse)?;
    again(input, HostName::parse(input), HostName::parse)?;
    again(input, HostPattern::parse(input), HostPattern::parse)?;
    again(input, Cidr::parse(input), Cidr::parse)
}

macro_rules! l63 {
    () => {
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    };
}

/// A label of 63 bytes (the most), in a name.
pub const LABEL_63: &str = concat!(l63!(), ".com");
/// A label of 64 bytes, one too many.
pub const LABEL_64: &str = concat!(l63!(), "a.com");
/// A name of 253 bytes (the most).
pub const NAME_253: &str = concat!(
    l63!(),
    ".",
    l63!(),
    ".",
    l63!(),
    ".bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
);
/// The same with the trailing dot: still 253 bytes once it is dropped.
pub const NAME_253_DOT: &str = concat!(
    l63!(),
    ".",
    l63!(),
    ".",
    l63!(),
    ".bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb."
);
/// A name of 254 bytes, one too many.
pub const NAME_254: &str = concat!(
    l63!(),
    ".",
    l63!(),
    ".",
    l63!(),
    ".bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
);

/// Every case of the host grammar: input, and what it is.
pub const GRAMMAR_TABLE: &[(&str, Expect)] = &[
    // Decision 1: case, trailing dot.
    ("example.com", Expect::Name("example.com")),
    ("Example.COM", Expect::Name("example.com")),
    ("example.com.", Expect::Name("example.com")),
    ("Example.COM.", Expect::Name("example.com")),
    ("example.com..", Expect::Refused(K::EmptyLabel)),
    ("a.b.example.com", Expect::Name("a.b.example.com")),
    // Decision 2: IDNA.
    ("bücher.de", Expect::Name("xn--bcher-kva.de")),
    ("BÜCHER.de", Expect::Name("xn--bcher-kva.de")),
    ("xn--bcher-kva.de", Expect::Name("xn--bcher-kva.de")),
    ("XN--BCHER-KVA.DE", Expect::Name("xn--bcher-kva.de")),
    ("faß.de", Expect::Name("xn--fa-hia.de")),
    ("ｅｘａｍｐｌｅ．ｃｏｍ", Expect::Name("example.com")),
    ("example。com", Expect::Name("example.com")),
    ("exam\u{ad}ple.com", Expect::Name("example.com")),
    ("xn--a.com", Expect::Refused(K::Idna)),
    ("\u{fffd}.com", Expect::Refused(K::Idna)),
    // Decision 3: IP literals, every notation.
    ("a.123", Expect::Refused(K::EndsInNumber)),
    ("a.0x1", Expect::Refused(K::EndsInNumber)),
    ("a.08", Expect::Refused(K::EndsInNumber)),
    ("123.com", Expect::Name("123.com")),
    ("0xdeadbeef.com", Expect::Name("0xdeadbeef.com")),
    ("127.0.0.1", Expect::Ip("127.0.0.1")),
    ("127.0.0.1.", Expect::Ip("127.0.0.1")),
    ("0x7f.1", Expect::Ip("127.0.0.1")),
    ("0X7F.1", Expect::Ip("127.0.0.1")),
    ("127.1", Expect::Ip("127.0.0.1")),
    ("2130706433", Expect::Ip("127.0.0.1")),
    ("0x7f000001", Expect::Ip("127.0.0.1")),
    ("0177.0.0.1", Expect::Ip("127.0.0.1")),
    ("017700000001", Expect::Ip("127.0.0.1")),
    ("127.0.1", Expect::Ip("127.0.0.1")),
    ("10.0x10.0377.1", Expect::Ip("10.16.255.1")),
    ("0x", Expect::Ip("0.0.0.0")),
    ("１２７．０．０．１", Expect::Ip("127.0.0.1")),
    ("256.0.0.1", Expect::Refused(K::EndsInNumber)),
    ("1.2.3.256", Expect::Refused(K::EndsInNumber)),
    ("1.2.65535", Expect::Ip("1.2.255.255")),
    ("1.2.65536", Expect::Refused(K::EndsInNumber)),
    ("1.2.3.4.5", Expect::Refused(K::EndsInNumber)),
    ("4294967295", Expect::Ip("255.255.255.255")),
    ("4294967296", Expect::Refused(K::EndsInNumber)),
    (
        "99999999999999999999999999",
        Expect::Refused(K::EndsInNumber),
    ),
    ("08", Expect::Refused(K::EndsInNumber)),
    ("[::1]", Expect::Ip("::1")),
    ("::1", Expect::Ip("::1")),
    ("::ffff:127.0.0.1", Expect::Ip("::ffff:127.0.0.1")),
    ("[::ffff:127.0.0.1]", Expect::Ip("::ffff:127.0.0.1")),
    ("[FE80::1]", Expect::Ip("fe80::1")),
    ("[fe80::1%25eth0]", Expect::Refused(K::BadIpv6)),
    ("[example.com]", Expect::Refused(K::BadIpv6)),
    ("[::1", Expect::Refused(K::BadIpv6)),
    ("[::1]:443", Expect::Refused(K::Port)),
    // Decision 4: single labels.
    ("intranet", Expect::Name("intranet")),
    ("localhost", Expect::Name("localhost")),
    ("LOCALHOST.", Expect::Name("localhost")),
    // Decision 5: labels and lengths.
    ("a..b", Expect::Refused(K::EmptyLabel)),
    (".a", Expect::Refused(K::EmptyLabel)),
    ("..", Expect::Refused(K::EmptyLabel)),
    (".", Expect::Refused(K::EmptyLabel)),
    ("-a.com", Expect::Refused(K::Hyphen)),
    ("a-.com", Expect::Refused(K::Hyphen)),
    ("a.-com", Expect::Refused(K::Hyphen)),
    ("a--b.com", Expect::Name("a--b.com")),
    ("a-b.com", Expect::Name("a-b.com")),
    ("a_b.com", Expect::Refused(K::BadChar)),
    ("a.com:443", Expect::Refused(K::Port)),
    ("bücher.de:443", Expect::Refused(K::Port)),
    ("a.com:", Expect::Refused(K::BadChar)),
    ("https://a.com", Expect::Refused(K::BadChar)),
    ("a.com/x", Expect::Refused(K::BadChar)),
    ("user@a.com", Expect::Refused(K::BadChar)),
    ("ex%61mple.com", Expect::Refused(K::BadChar)),
    ("a\u{0}.com", Expect::Refused(K::BadChar)),
    (LABEL_63, Expect::Name(LABEL_63)),
    (LABEL_64, Expect::Refused(K::LabelTooLong)),
    (NAME_253, Expect::Name(NAME_253)),
    (NAME_253_DOT, Expect::Name(NAME_253)),
    (NAME_254, Expect::Refused(K::TooLong)),
    ("", Expect::Refused(K::Empty)),
    (" ", Expect::Refused(K::BadChar)),
    ("\t", Expect::Refused(K::BadChar)),
    (" example.com", Expect::Refused(K::BadChar)),
    ("example.com ", Expect::Refused(K::BadChar)),
    ("example.com\n", Expect::Refused(K::BadChar)),
    ("exa mple.com", Expect::Refused(K::BadChar)),
    // Decision 6: patterns.
    ("*.example.com", Expect::Below("example.com")),
    ("*.Example.COM.", Expect::Below("example.com")),
    ("*.bücher.de", Expect::Below("xn--bcher-kva.de")),
    ("*.a.b.example.com", Expect::Below("a.b.example.com")),
    ("*", Expect::Refused(K::BareWildcard)),
    ("*.", Expect::Refused(K::BareWildcard)),
    ("*.com", Expect::Refused(K::WildcardTld)),
    ("*.intranet", Expect::Refused(K::WildcardTld)),
    ("*.com.", Expect::Refused(K::WildcardTld)),
    ("a.*.com", Expect::Refused(K::WildcardPosition)),
    ("*a.com", Expect::Refused(K::WildcardPosition)),
    ("a*.com", Expect::Refused(K::WildcardPosition)),
    ("**.a.com", Expect::Refused(K::WildcardPosition)),
    ("*.*.a.com", Expect::Refused(K::WildcardPosition)),
    ("＊.a.com", Expect::Refused(K::WildcardPosition)),
    ("*..a.com", Expect::Refused(K::EmptyLabel)),
    ("*.127.0.0.1", Expect::Refused(K::IpAddress)),
    ("*.[::1]", Expect::Refused(K::IpAddress)),
    ("*.a.123", Expect::Refused(K::EndsInNumber)),
    ("*.a.com:443", Expect::Refused(K::Port)),
    ("*.a_b.com", Expect::Refused(K::BadChar)),
];

/// Pattern, host (parsed with [`Host::parse`]), and whether the pattern admits it.
pub const MATCH_TABLE: &[(&str, &str, bool)] = &[
    ("*.example.com", "example.com", false),
    ("*.example.com", "a.example.com", true),
    ("*.example.com", "a.b.example.com", true),
    ("*.example.com", "A.Example.COM.", true),
    ("*.example.com", "badexample.com", false),
    ("*.example.com", "example.com.evil.org", false),
    ("*.example.com", "example.org", false),
    ("example.com", "example.com", true),
    ("example.com", "EXAMPLE.com.", true),
    ("example.com", "a.example.com", false),
    ("a.example.com", "example.com", false),
    ("bücher.de", "BÜCHER.de", true),
    ("bücher.de", "xn--bcher-kva.de", true),
    ("*.bücher.de", "shop.xn--bcher-kva.de", true),
    ("intranet", "intranet", true),
    ("intranet", "intranet.corp", false),
    ("*.example.com", "127.0.0.1", false),
    ("localhost", "127.0.0.1", false),
];

/// Route prefix, request path, and whether the path lies under the prefix.
pub const PATH_PREFIX_TABLE: &[(&str, &str, bool)] = &[
    ("/v1", "/v1", true),
    ("/v1", "/v1/", true),
    ("/v1", "/v1/x", true),
    ("/v1", "/v1?q=1", true),
    ("/v1", "/v10", false),
    ("/v1", "/v", false),
    ("/v1", "/V1", false),
    ("/v1", "/v1#f", false),
    ("/v1", "/v1%2fx", false),
    ("/v1", "", false),
    ("/v1", "/x/v1", false),
    ("/v1/", "/v1", true),
    ("/v1/", "/v1/x", true),
    ("/v1/", "/v10", false),
    ("/v1//", "/v1/x", true),
    ("/v1/x", "/v1", false),
    ("/v1/x", "/v1/x/y", true),
    ("", "/anything", true),
    ("", "", true),
    ("/", "/anything", true),
    ("/", "", true),
    ("/", "*", false),
    ("//", "/a", true),
];

/// What [`Cidr::parse`] makes of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrExpect {
    /// A block, displayed as this canonical text.
    Block(&'static str),
    /// Refused with this kind.
    Refused(K),
}

/// CIDR inputs and what they are.
pub const CIDR_TABLE: &[(&str, CidrExpect)] = &[
    ("10.0.0.0/8", CidrExpect::Block("10.0.0.0/8")),
    ("10.0.0.1/8", CidrExpect::Refused(K::CidrHostBits)),
    ("10.0.0.1/32", CidrExpect::Block("10.0.0.1/32")),
    ("10.0.0.1", CidrExpect::Block("10.0.0.1/32")),
    ("0.0.0.0/0", CidrExpect::Block("0.0.0.0/0")),
    ("1.0.0.0/0", CidrExpect::Refused(K::CidrHostBits)),
    ("10.0.0.0/08", CidrExpect::Block("10.0.0.0/8")),
    ("10.0.0.0/33", CidrExpect::Refused(K::CidrLength)),
    ("10.0.0.0/", CidrExpect::Refused(K::CidrLength)),
    ("10.0.0.0/+8", CidrExpect::Refused(K::CidrLength)),
    ("10.0.0.0/-8", CidrExpect::Refused(K::CidrLength)),
    ("10.0.0.0/1000", CidrExpect::Refused(K::CidrLength)),
    ("10.0.0.0/8/8", CidrExpect::Refused(K::CidrLength)),
    ("10.0.0.0/8 ", CidrExpect::Refused(K::CidrLength)),
    ("fc00::/7", CidrExpect::Block("fc00::/7")),
    ("FC00::/7", CidrExpect::Block("fc00::/7")),
    ("fd00::1/8", CidrExpect::Refused(K::CidrHostBits)),
    ("::1", CidrExpect::Block("::1/128")),
    ("::/0", CidrExpect::Block("::/0")),
    ("::/129", CidrExpect::Refused(K::CidrLength)),
    (
        "::ffff:10.0.0.0/104",
        CidrExpect::Block("::ffff:10.0.0.0/104"),
    ),
    ("nope/8", CidrExpect::Refused(K::CidrAddress)),
    ("010.0.0.0/8", CidrExpect::Refused(K::CidrAddress)),
    ("0x0a.0.0.0/8", CidrExpect::Refused(K::CidrAddress)),
    ("10/8", CidrExpect::Refused(K::CidrAddress)),
    ("[::1]/128", CidrExpect::Refused(K::CidrAddress)),
    (" 10.0.0.0/8", CidrExpect::Refused(K::CidrAddress)),
    ("fe80::1%eth0/128", CidrExpect::Refused(K::CidrAddress)),
    ("", CidrExpect::Refused(K::CidrAddress)),
];

/// Block, address, and whether the block holds the address.
pub const CIDR_CONTAINS_TABLE: &[(&str, &str, bool)] = &[
    ("10.0.0.0/8", "10.1.2.3", true),
    ("10.0.0.0/8", "11.0.0.0", false),
    ("10.0.0.0/8", "::ffff:10.0.0.1", false),
    ("10.0.0.0/8", "::ffff:11.0.0.1", false),
    ("10.0.0.0/8", "::10.0.0.1", false),
    ("10.0.0.0/8", "64:ff9b::10.0.0.1", false),
    ("0.0.0.0/0", "1.2.3.4", true),
    ("0.0.0.0/0", "::1", false),
    ("::/0", "10.0.0.1", false),
    ("::/0", "::1", true),
    ("::ffff:0:0/96", "10.0.0.1", false),
    ("::ffff:0:0/96", "::ffff:10.0.0.1", true),
    ("fc00::/7", "fd12::1", true),
    ("fc00::/7", "fe80::1", false),
    ("10.0.0.1", "10.0.0.1", true),
    ("10.0.0.1", "10.0.0.2", false),
    ("203.0.113.0/24", "203.0.113.255", true),
    ("203.0.113.0/24", "203.0.114.0", false),
];
