//! The host grammar: what a host name, a host pattern, an IP literal, a CIDR block and a
//! route path prefix are, for every entry point of bottle (the manifest's
//! `egress.allow`, `egress.routes[].host` and `egress.allow_cidrs`; the hosts an agent
//! proposes; egress's and pipelock's allowlists; the host a request names at run time).
//! One grammar, so a host that one of them accepts is the same host for all of them.
//!
//! # Decisions
//!
//! 1. **Case and trailing dot.** Case is folded to lower case and one trailing dot is
//!    dropped: `Example.COM.` is `example.com`. A second trailing dot is an empty label.
//!    Nothing is trimmed: whitespace anywhere is refused (callers that read text with
//!    stray blanks trim before parsing).
//! 2. **Internationalised names** are accepted and kept in their ASCII (A-label) form,
//!    by UTS-46 processing (the `idna` crate, non-transitional, as browsers do):
//!    `bücher.de` is `xn--bcher-kva.de`. Input that is not valid IDNA (a bad `xn--`
//!    label, a disallowed code point) is refused ([`HostError::Idna`]).
//! 3. **IP literals are not names.** After the UTS-46 mapping (so full-width digits
//!    and dots count), a name whose last label is a number in the WHATWG URL sense
//!    (all digits, or `0x…` hex) is read as IPv4 exactly as the URL standard reads it:
//!    up to four parts, each decimal, `0`-prefixed octal or `0x` hex, the last one
//!    filling the remaining bytes (`127.1`, `0x7f.1`, `2130706433`, `0177.0.0.1` are
//!    all `127.0.0.1`). IPv6 literals are recognised with or without brackets
//!    (`[::1]`, `::1`, `::ffff:127.0.0.1`). [`Host::parse`] returns such input as
//!    [`Host::Ip`] with the address a browser or curl would connect to (IPv4-mapped
//!    IPv6 stays IPv6; [`IpAddr::to_canonical`] unmaps it). [`HostName::parse`] and
//!    [`HostPattern::parse`] refuse it with [`HostError::IpAddress`], and a name that
//!    ends in a number but is no valid address (`a.123`, `256.256.256.256`, `a.0x1`)
//!    with [`HostError::EndsInNumber`]: both messages say it is an IP address and that
//!    IP ranges go through `allow_cidrs`.
//! 4. **Single-label names** (`intranet`, `localhost`) are names. What keeps private
//!    ranges out is the SSRF check on resolved addresses, not the grammar.
//! 5. **Labels** are LDH after IDNA (ASCII letters, digits, `-`), do not start or end
//!    with `-`, and are 1..=63 bytes; the whole name (without the trailing dot) is at
//!    most 253 bytes. Empty labels (`a..b`, `.a`, `..`) are refused, and so are `_`,
//!    whitespace, every other character, and a port (`a.com:443`, [`HostError::Port`]).
//!    Input over [`MAX_INPUT`] bytes is refused before any processing.
//! 6. **Patterns** are [`HostPattern::Exact`] or [`HostPattern::Below`]. `*.example.com`
//!    matches every name strictly below `example.com` (one or more labels more) and not
//!    `example.com` itself. A bare `*` is refused, so is `*.` followed by a single label
//!    (`*.com`, `*.intranet`: a whole top-level domain), and so is `*` anywhere else
//!    (`a.*.com`, `*a.com`, `**.a.com`). The caller decides whether a position takes a
//!    pattern ([`HostPattern::parse`]) or only a name ([`HostName::parse`]).
//! 7. **CIDR blocks** ([`Cidr::parse`]): `addr/len` or a bare address (`/32`, `/128`),
//!    addresses in the strict dotted-decimal / RFC 4291 text form only; a length over
//!    the family's maximum is refused, and so is a block with host bits set
//!    (`10.0.0.1/8`, the message names `10.0.0.0/8`). Display is canonical (always with
//!    the length). [`Cidr::contains`] never crosses families: an IPv4
//!    block holds no IPv6 address, an IPv4-mapped one (`::ffff:10.0.0.1`) included,
//!    and an IPv6 block no IPv4 address (so `::/0` does not open all of IPv4). A
//!    mapped address is an IPv6 address to the allowlist; the SSRF check refuses it
//!    unless a block such as `::ffff:10.0.0.1/128` names it (fail closed).
//! 8. **Route path prefixes** ([`path_prefix_matches`]): trailing `/` of the prefix are
//!    ignored; `path` lies under it when it equals it or continues with `/` or `?`
//!    (`/v1` holds `/v1`, `/v1/x`, `/v1?q`, not `/v10`). An empty prefix or `/` holds
//!    every path that starts with `/` or `?` (and the empty path), but not `*`. Egress injects a route's credential under this rule and pipelock
//!    exempts that header from DLP under it: both call this one function.
//!
//! Errors are one enum, [`HostError`], whose messages quote the input (at most
//! [`QUOTE_MAX`] characters of it, control characters escaped). Nothing here panics on
//! any input, and no work or allocation is more than linear in the input.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The longest host name, in bytes of its ASCII form without the trailing dot.
pub const MAX_NAME: usize = 253;
/// The longest label, in bytes of its ASCII form.
pub const MAX_LABEL: usize = 63;
/// The longest input looked at; longer input is refused as [`HostError::TooLong`]
/// before IDNA processing (four UTF-8 bytes per character of the longest name, and
/// some room for characters UTS-46 ignores).
pub const MAX_INPUT: usize = 1024;
/// How many characters of the input an error message quotes.
pub const QUOTE_MAX: usize = 300;

/// Why text is not a host, a host name, a host pattern or a CIDR block.
///
/// Every message is a sentence that quotes the input (see [`QUOTE_MAX`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing was given.
    #[error("the host name is empty")]
    Empty,
    /// Longer than [`MAX_NAME`] bytes in ASCII form, or than [`MAX_INPUT`] as given.
    #[error("`{input}` is {len} bytes long: a host name is at most 253 bytes")]
    TooLong {
        /// The input, quoted.
        input: String,
        /// Its length in bytes (ASCII form when it got that far).
        len: usize,
    },
    /// A label longer than [`MAX_LABEL`] bytes.
    #[error("`{input}`: the label `{label}` is {len} bytes long, a label is at most 63")]
    LabelTooLong {
        /// The input, quoted.
        input: String,
        /// The label, quoted.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// `a..b`, `.a`, `a.b..`.
    #[error("`{input}` has an empty label: labels are separated by single dots")]
    EmptyLabel {
        /// The input, quoted.
        input: String,
    },
    /// A label starts or ends with `-`.
    #[error("`{input}`: the label `{label}` starts or ends with `-`")]
    Hyphen {
        /// The input, quoted.
        input: String,
        /// The label, quoted.
        label: String,
    },
    /// A character other than letters, digits, `-` and `.` (after IDNA).
    #[error("`{input}` contains {what}: a host name has only letters, digits, `-` and `.`")]
    BadChar {
        /// The input, quoted.
        input: String,
        /// The character, described (`` `_` ``, `whitespace`, `the control character U+0000`).
        what: String,
    },
    /// `host:port`.
    #[error("`{input}` has a port: give the host alone, without `:port`")]
    Port {
        /// The input, quoted.
        input: String,
    },
    /// Not valid under UTS-46 (a disallowed code point, a bad `xn--` label).
    #[error("`{input}` is not a valid internationalised domain name (UTS-46)")]
    Idna {
        /// The input, quoted.
        input: String,
    },
    /// An IP literal where only a name is allowed.
    #[error(
        "`{input}` is an IP address ({ip}), not a host name: IP ranges are allowed with `allow_cidrs`"
    )]
    IpAddress {
        /// The input, quoted.
        input: String,
        /// The address it denotes.
        ip: IpAddr,
    },
    /// The last label is a number, so URL parsers read the whole as an IPv4 address,
    /// and it is not a valid one.
    #[error(
        "`{input}` ends in a number, so it reads as an IP address, and not a valid one: a host name's last label is not numeric (IP ranges are allowed with `allow_cidrs`)"
    )]
    EndsInNumber {
        /// The input, quoted.
        input: String,
    },
    /// `[...]` that is not an IPv6 address.
    #[error("`{input}` is bracketed like an IPv6 address but is not one")]
    BadIpv6 {
        /// The input, quoted.
        input: String,
    },
    /// `*` alone (or `*.`).
    #[error("a bare `*` would allow every host: list host names or `*.suffix`")]
    BareWildcard,
    /// `*.` followed by a single label.
    #[error(
        "`{input}` would allow a whole top-level domain: `*.` must be followed by at least two labels"
    )]
    WildcardTld {
        /// The input, quoted.
        input: String,
    },
    /// `*` other than as the whole first label of a pattern.
    #[error("`{input}`: `*` is allowed only as the whole first label, as in `*.example.com`")]
    WildcardPosition {
        /// The input, quoted.
        input: String,
    },
    /// A wildcard where only a host is allowed.
    #[error("`{input}`: a wildcard is not allowed here, only a host name")]
    WildcardNotAllowed {
        /// The input, quoted.
        input: String,
    },
    /// The address part of a CIDR block is not an IP address.
    #[error(
        "`{input}` is not a CIDR block: `{addr}` is not an IP address (write e.g. `10.1.0.0/16` or `fd00::/8`)"
    )]
    CidrAddress {
        /// The input, quoted.
        input: String,
        /// The address part, quoted.
        addr: String,
    },
    /// The length of a CIDR block is not a number up to the family's maximum.
    #[error("`{input}` is not a CIDR block: the prefix length must be a number from 0 to {max}")]
    CidrLength {
        /// The input, quoted.
        input: String,
        /// 32 or 128.
        max: u8,
    },
    /// Host bits set below the prefix length.
    #[error("`{input}` has host bits set: the block is written `{canonical}`")]
    CidrHostBits {
        /// The input, quoted.
        input: String,
        /// The block with the host bits cleared.
        canonical: Cidr,
    },
}

/// The kind of a [`HostError`], without its data (for tables and for matching).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostErrorKind {
    /// [`HostError::Empty`].
    Empty,
    /// [`HostError::TooLong`].
    TooLong,
    /// [`HostError::LabelTooLong`].
    LabelTooLong,
    /// [`HostError::EmptyLabel`].
    EmptyLabel,
    /// [`HostError::Hyphen`].
    Hyphen,
    /// [`HostError::BadChar`].
    BadChar,
    /// [`HostError::Port`].
    Port,
    /// [`HostError::Idna`].
    Idna,
    /// [`HostError::IpAddress`].
    IpAddress,
    /// [`HostError::EndsInNumber`].
    EndsInNumber,
    /// [`HostError::BadIpv6`].
    BadIpv6,
    /// [`HostError::BareWildcard`].
    BareWildcard,
    /// [`HostError::WildcardTld`].
    WildcardTld,
    /// [`HostError::WildcardPosition`].
    WildcardPosition,
    /// [`HostError::WildcardNotAllowed`].
    WildcardNotAllowed,
    /// [`HostError::CidrAddress`].
    CidrAddress,
    /// [`HostError::CidrLength`].
    CidrLength,
    /// [`HostError::CidrHostBits`].
    CidrHostBits,
}

impl HostError {
    /// Which kind of error this is.
    pub fn kind(&self) -> HostErrorKind {
        use HostErrorKind as K;
        match self {
            HostError::Empty => K::Empty,
            HostError::TooLong { .. } => K::TooLong,
            HostError::LabelTooLong { .. } => K::LabelTooLong,
            HostError::EmptyLabel { .. } => K::EmptyLabel,
            HostError::Hyphen { .. } => K::Hyphen,
            HostError::BadChar { .. } => K::BadChar,
            HostError::Port { .. } => K::Port,
            HostError::Idna { .. } => K::Idna,
            HostError::IpAddress { .. } => K::IpAddress,
            HostError::EndsInNumber { .. } => K::EndsInNumber,
            HostError::BadIpv6 { .. } => K::BadIpv6,
            HostError::BareWildcard => K::BareWildcard,
            HostError::WildcardTld { .. } => K::WildcardTld,
            HostError::WildcardPosition { .. } => K::WildcardPosition,
            HostError::WildcardNotAllowed { .. } => K::WildcardNotAllowed,
            HostError::CidrAddress { .. } => K::CidrAddress,
            HostError::CidrLength { .. } => K::CidrLength,
            HostError::CidrHostBits { .. } => K::CidrHostBits,
        }
    }
}

/// `text` for an error message: at most [`QUOTE_MAX`] characters, control characters
/// and whitespace other than a space escaped, `…` when cut.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(QUOTE_MAX * 4));
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_MAX {
            out.push('…');
            break;
        }
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A destination host: a name, or an IP literal in any notation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A host name (never an IP literal).
    Name(HostName),
    /// An IP literal, as the address it denotes.
    Ip(IpAddr),
}

impl Host {
    /// Parse a host as a request or a user names it: a name (decisions 1, 2, 4, 5) or
    /// an IP literal in any notation (decision 3). Wildcards are refused.
    pub fn parse(raw: &str) -> Result<Host, HostError> {
        if raw.contains('*') {
            return Err(HostError::WildcardNotAllowed { input: quote(raw) });
        }
        parse_host(raw, raw)
    }

    /// The name, when this is one.
    pub fn name(&self) -> Option<&HostName> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }

    /// The address, when this is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::Ip(ip) => Some(*ip),
        }
    }
}

/// A name as it appears in a URL's host: IPv6 in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n.as_str()),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        }
    }
}

impl FromStr for Host {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Host, HostError> {
        Host::parse(s)
    }
}

/// A valid host name: lower case, ASCII (A-label) form, no trailing dot, never an IP
/// literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    /// Parse a host name; IP literals (decision 3) and wildcards are refused.
    pub fn parse(raw: &str) -> Result<HostName, HostError> {
        match Host::parse(raw)? {
            Host::Name(n) => Ok(n),
            Host::Ip(ip) => Err(HostError::IpAddress {
                input: quote(raw),
                ip,
            }),
        }
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Is this name strictly below `base` (`a.b.example.com` below `example.com`, and
    /// `example.com` not below itself)?
    pub fn is_below(&self, base: &HostName) -> bool {
        self.0
            .strip_suffix(base.as_str())
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostName {
    type Err = HostError;
    fn from_str(s: &str) -> Result<HostName, HostError> {
        HostName::parse(s)
    }
}

/// An allowlist entry: one name, or every name below one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(HostName),
    /// `*.base`: every name strictly below `base`, not `base` itself.
    Below(HostName),
}

impl HostPattern {
    /// Parse a name or a `*.suffix` pattern (decision 6).
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        if raw == "*" || raw == "*." {
            return Err(HostError::BareWildcard);
        }
        let misplaced = || HostError::WildcardPosition { input: quote(raw) };
        // A `*` that UTS-46 mapped from another character lands in the wrong place.
        let reposition = |e: HostError| match e {
            HostError::WildcardNotAllowed { .. } => misplaced(),
            e => e,
        };
        let (wild, text) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if text.contains('*') {
            return Err(misplaced());
        }
        let name = match parse_host(text, raw).map_err(reposition)? {
            Host::Name(n) => n,
            Host::Ip(ip) => {
                return Err(HostError::IpAddress {
                    input: quote(raw),
                    ip,
                });
            }
        };
        if !wild {
            Ok(HostPattern::Exact(name))
        } else if name.as_str().contains('.') {
            Ok(HostPattern::Below(name))
        } else {
            Err(HostError::WildcardTld { input: quote(raw) })
        }
    }

    /// Does the pattern admit `name`?
    pub fn matches(&self, name: &HostName) -> bool {
        match self {
            HostPattern::Exact(n) => n == name,
            HostPattern::Below(base) => name.is_below(base),
        }
    }

    /// Does the pattern admit `host`? Never an IP literal (those go through CIDRs).
    pub fn matches_host(&self, host: &Host) -> bool {
        host.name().is_some_and(|n| self.matches(n))
    }

    /// The name, or the name the wildcard is below.
    pub fn base(&self) -> &HostName {
        match self {
            HostPattern::Exact(n) | HostPattern::Below(n) => n,
        }
    }
}

/// `name` or `*.base`.
impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n.as_str()),
            HostPattern::Below(n) => write!(f, "*.{n}"),
        }
    }
}

impl FromStr for HostPattern {
    type Err = HostError;
    fn from_str(s: &str) -> Result<HostPattern, HostError> {
        HostPattern::parse(s)
    }
}

/// The grammar proper: `text` is parsed, errors quote `whole` (the input as given,
/// which is longer than `text` for a pattern's `*.`). A `*` is reported as
/// [`HostError::WildcardNotAllowed`].
fn parse_host(text: &str, whole: &str) -> Result<Host, HostError> {
    let input = || quote(whole);
    if text.is_empty() {
        return Err(if whole.is_empty() {
            HostError::Empty
        } else {
            HostError::EmptyLabel { input: input() }
        });
    }
    if text.len() > MAX_INPUT {
        return Err(HostError::TooLong {
            input: input(),
            len: text.len(),
        });
    }
    if let Some(inner) = text.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(v6) => v6
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| HostError::BadIpv6 { input: input() }),
            None if text.rsplit_once("]:").is_some_and(|(_, p)| is_port(p)) => {
                Err(HostError::Port { input: input() })
            }
            None => Err(HostError::BadIpv6 { input: input() }),
        };
    }
    if text.contains(':') {
        if let Ok(ip) = text.parse::<Ipv6Addr>() {
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        if has_port(text) {
            return Err(HostError::Port { input: input() });
        }
    }
    let ascii: Cow<'_, str> =
        idna::domain_to_ascii_cow(text.as_bytes(), idna::AsciiDenyList::EMPTY)
            .map_err(|_| HostError::Idna { input: input() })?;
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    if name.is_empty() {
        return Err(HostError::EmptyLabel { input: input() });
    }
    if name.split('.').any(str::is_empty) {
        return Err(HostError::EmptyLabel { input: input() });
    }
    if let Some(ip) = whatwg_ipv4(name) {
        return match ip {
            Some(ip) => Ok(Host::Ip(IpAddr::V4(ip))),
            None => Err(HostError::EndsInNumber { input: input() }),
        };
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(bad_char(c, input()));
    }
    if name.len() > MAX_NAME {
        return Err(HostError::TooLong {
            input: input(),
            len: name.len(),
        });
    }
    for label in name.split('.') {
        if label.len() > MAX_LABEL {
            return Err(HostError::LabelTooLong {
                input: input(),
                label: quote(label),
                len: label.len(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::Hyphen {
                input: input(),
                label: quote(label),
            });
        }
    }
    Ok(Host::Name(HostName(name.to_owned())))
}

/// `host:digits` (not an IPv6 address: the caller tried that first).
fn has_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && is_port(port))
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn bad_char(c: char, input: String) -> HostError {
    let what = match c {
        '*' => return HostError::WildcardNotAllowed { input },
        c if c.is_whitespace() => "whitespace".to_owned(),
        c if c.is_control() => format!("the control character U+{:04X}", u32::from(c)),
        '`' => "a backtick".to_owned(),
        c => format!("`{c}`"),
    };
    HostError::BadChar { input, what }
}

/// The WHATWG URL standard's reading of a host (already mapped by UTS-46, no trailing
/// dot, no empty label): `None` when its last label is not a number (a name);
/// `Some(Some(ip))` for the IPv4 address it denotes; `Some(None)` when it ends in a
/// number but is no valid address (the URL parser's failure).
fn whatwg_ipv4(name: &str) -> Option<Option<Ipv4Addr>> {
    let last = name.rsplit('.').next().unwrap_or(name);
    let ends_in_number = last.bytes().all(|b| b.is_ascii_digit()) || ipv4_number(last).is_some();
    if !ends_in_number {
        return None;
    }
    let mut numbers = [0u64; 4];
    let mut count = 0;
    for part in name.split('.') {
        let Some(slot) = numbers.get_mut(count) else {
            return Some(None);
        };
        match ipv4_number(part) {
            Some(n) => *slot = n,
            None => return Some(None),
        }
        count += 1;
    }
    let (init, last) = numbers[..count].split_at(count - 1);
    if init.iter().any(|&n| n > 255) {
        return Some(None);
    }
    let room = 8 * (5 - count as u32);
    if last[0] >= 1u64 << room {
        return Some(None);
    }
    let mut ip = last[0];
    for (i, &n) in init.iter().enumerate() {
        ip += n << (8 * (3 - i as u32));
    }
    Some(u32::try_from(ip).ok().map(Ipv4Addr::from))
}

/// The WHATWG IPv4 number parser: decimal, `0x` hex (`0x` alone is 0), `0`-prefixed
/// octal. Values saturate (any value over 2^32 is refused by the caller anyway).
fn ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (radix, digits) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (16, hex)
        } else if part.len() > 1 && part.starts_with('0') {
            (8, &part[1..])
        } else {
            (10, part)
        };
    digits.chars().try_fold(0u64, |acc, c| {
        let d = c.to_digit(radix)?;
        Some(
            acc.saturating_mul(u64::from(radix))
                .saturating_add(u64::from(d)),
        )
    })
}

/// A CIDR block in canonical form (no host bits set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// The hosts a bottle may reach without a route: `egress.allow`'s patterns and
/// `egress.allow_cidrs`' blocks. Egress and pipelock both decide with [`Allowlist::allows`],
/// so what one lets through the other does not refuse as "not allowed".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Exact names and `*.suffix` patterns.
    pub entries: Vec<HostPattern>,
    /// Blocks an IP literal may be in.
    pub cidrs: Vec<Cidr>,
}

impl Allowlist {
    /// A name when a pattern matches it; an IP literal (in any notation: it is parsed)
    /// when a block holds it, never through a name pattern.
    pub fn allows(&self, host: &Host) -> bool {
        match host {
            Host::Ip(ip) => self.cidrs.iter().any(|c| c.contains(*ip)),
            Host::Name(n) => self.entries.iter().any(|e| e.matches(n)),
        }
    }
}

impl Cidr {
    /// Parse `addr/len` or a bare address (a `/32` or `/128` block), decision 7.
    pub fn parse(raw: &str) -> Result<Cidr, HostError> {
        let (text, len) = match raw.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (raw, None),
        };
        let addr: IpAddr = text.parse().map_err(|_| HostError::CidrAddress {
            input: quote(raw),
            addr: quote(text),
        })?;
        let max = max_prefix(addr);
        let prefix = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&p| {
                    (1..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()) && p <= max
                })
                .ok_or_else(|| HostError::CidrLength {
                    input: quote(raw),
                    max,
                })?,
        };
        let canonical = Cidr {
            addr: network(addr, prefix),
            prefix,
        };
        if canonical.addr == addr {
            Ok(canonical)
        } else {
            Err(HostError::CidrHostBits {
                input: quote(raw),
                canonical,
            })
        }
    }

    /// The block of `addr` with `prefix` bits; refused like [`Cidr::parse`] refuses
    /// `addr/prefix`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, HostError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(HostError::CidrLength {
                input: quote(&format!("{addr}/{prefix}")),
                max,
            });
        }
        let canonical = Cidr {
            addr: network(addr, prefix),
            prefix,
        };
        if canonical.addr == addr {
            Ok(canonical)
        } else {
            Err(HostError::CidrHostBits {
                input: quote(&format!("{addr}/{prefix}")),
                canonical,
            })
        }
    }

    /// An IPv4 block for constant tables (`Cidr::v4(10, 0, 0, 0, 8)`).
    ///
    /// # Panics
    ///
    /// When `prefix` is over 32 or host bits are set: in a `const` item that is a
    /// compile error. Use [`Cidr::new`] for values known only at run time.
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        let bits = u32::from_be_bytes([a, b, c, d]);
        assert!(prefix <= 32, "an IPv4 prefix length is at most 32");
        let mask = match u32::MAX.checked_shl(32 - prefix as u32) {
            Some(m) => m,
            None => 0,
        };
        assert!(bits & !mask == 0, "host bits set in a CIDR block");
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Is `ip` inside the block? Never across families (decision 7): an IPv4-mapped
    /// IPv6 address is not in an IPv4 block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && network(ip, self.prefix) == self.addr
    }
}

/// `addr/len`, canonical.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Cidr, HostError> {
        Cidr::parse(s)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with the bits after the first `prefix` cleared (`prefix` at most the maximum).
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Does `path` lie under the route prefix `prefix` (decision 8)? `/v1` holds `/v1`,
/// `/v1/x` and `/v1?q`, not `/v10`; trailing `/` of the prefix are ignored; an empty
/// prefix or `/` holds every path that starts with `/` or `?`.
pub fn path_prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
}

mod serde_impls {
    //! Serialize as the canonical text; deserialize by parsing it.

    use super::{Cidr, Host, HostName, HostPattern};

    macro_rules! as_text {
        ($($t:ty),*) => {$(
            impl serde::Serialize for $t {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.collect_str(self)
                }
            }
            impl<'de> serde::Deserialize<'de> for $t {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                    <$t>::parse(&text).map_err(serde::de::Error::custom)
                }
            }
        )*};
    }
    as_text!(Host, HostName, HostPattern, Cidr);
}

#[cfg(any(test, feature = "test-util"))]
pub mod table;

#[cfg(test)]
mod tests;
