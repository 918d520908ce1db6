//! Checksum validators that a rule names with `validator = "..."` in its TOML, run in
//! the judging step after the regex, entropy and allowlists: a match is a finding only
//! when its validator accepts it. They are what lets a rule for a shape as common as a
//! run of digits (card numbers) or base58 (Bitcoin keys) fire with a low false-positive
//! rate, and so without a keyword next to it.
//!
//! | name | what it accepts |
//! | --- | --- |
//! | `luhn` | a payment card number: issuer prefix and length of a known brand, Luhn checksum; a well-known test number only in a data-export-shaped context (below) |
//! | `iban` | an IBAN: a known country, that country's length, mod-97 = 1 |
//! | `wif` | a Bitcoin private key in wallet import format: base58check, version 0x80 or 0xef, 32 bytes (+ 0x01 when compressed), a valid secp256k1 scalar |
//! | `btc-address` | a Bitcoin address: base58check P2PKH/P2SH (mainnet or testnet) or bech32/bech32m segwit |
//! | `secp256k1-key` | 64 hex digits that are a valid secp256k1 private key (non-zero, below the group order) |
//! | `bip39` | 12 to 24 words of the BIP-39 English list with a valid checksum |
//!
//! A key followed by anything is still a key: the validators of fixed-length formats
//! (WIF, addresses, IBAN) also try the prefix of the right length, so an appended
//! character does not hide one.
//!
//! **Test card numbers.** The documented test numbers of the card networks and
//! processors ([`TEST_PANS`]) are used all day against payment sandboxes, so one alone is
//! not a finding. The same number is a finding when its context (the judging window)
//! is shaped like a data export: it holds two or more card numbers (valid ones, test
//! or not), as a table, a CSV dump or a JSON array of records does.
//!
//! Every validator is bounded: its input is a regex match of bounded length, and the
//! context it scans is the judging window.

use crate::byteset::{self, ByteSet};
use std::str::FromStr;

/// A named validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validator {
    Luhn,
    Iban,
    Wif,
    BtcAddress,
    Secp256k1Key,
    Bip39,
}

/// The validator name in a rule file is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown validator {0:?} (known: luhn, iban, wif, btc-address, secp256k1-key, bip39)")]
pub struct UnknownValidator(pub String);

impl FromStr for Validator {
    type Err = UnknownValidator;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "luhn" => Validator::Luhn,
            "iban" | "mod97" => Validator::Iban,
            "wif" => Validator::Wif,
            "btc-address" => Validator::BtcAddress,
            "secp256k1-key" => Validator::Secp256k1Key,
            "bip39" => Validator::Bip39,
            other => return Err(UnknownValidator(other.to_string())),
        })
    }
}

impl Validator {
    /// Does the secret at `at` in `context` (the judging window) pass?
    pub fn check(self, context: &[u8], at: std::ops::Range<usize>) -> bool {
        let Some(secret) = context.get(at.clone()) else {
            return false;
        };
        match self {
            Validator::Luhn => {
                // A card number is a whole run of digits: one digit more or less is
                // another number (and long numeric ids would collide).
                let digit_before = at.start > 0 && context[at.start - 1].is_ascii_digit();
                let digit_after = context.get(at.end).is_some_and(u8::is_ascii_digit);
                !digit_before && !digit_after && card_number(secret, context)
            }
            Validator::Iban => iban(secret),
            Validator::Wif => wif(secret),
            Validator::BtcAddress => btc_address(secret),
            Validator::Secp256k1Key => secp256k1_hex_key(secret),
            Validator::Bip39 => {
                // A phrase may run past the match (the regex stops at 24 words, and
                // padding words before a phrase shift it): look a phrase further on.
                let end = (at.end + PHRASE_LOOKAHEAD).min(context.len());
                bip39_phrase(&context[at.start..end])
            }
        }
    }
}

// ---------------------------------------------------------------- segment gates

/// Shapes a stretch of bytes holds, found in one linear pass: a keywordless rule's
/// regex only runs over a segment that holds the shape its validator needs (every
/// value a validator accepts has it), so text without them costs one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shapes {
    /// Thirteen digits (every card number, grouped or not).
    pub digits13: bool,
    /// Two uppercase letters then two digits (an IBAN's start), then [`IBAN_MIN`] - 4
    /// more letters or digits, with spaces between them or none (the rest of the
    /// shortest IBAN; the validator drops spaces and takes nothing but `[A-Z0-9]`).
    pub iban: bool,
    /// 25 letters or digits in a row (WIF keys, addresses, hex keys).
    pub alnum25: bool,
    /// Twelve words of 3 to 8 letters that start like words of the BIP-39 English
    /// list (its words are unique in their first four letters), one to three of
    /// space, tab, CR, LF, comma or `+` (a space in a query string) between them (a
    /// seed phrase).
    pub words12: bool,
}

/// Key of a word's first four letters (or three, for a three-letter word), base 27.
fn prefix_key(letters: &[u8]) -> usize {
    let mut k = 0usize;
    for i in 0..4 {
        k = k * 27
            + letters
                .get(i)
                .map_or(0, |c| usize::from(c.to_ascii_lowercase() - b'a') + 1);
    }
    k
}

/// The four-letter prefixes of the BIP-39 English words, as a bitset.
fn bip39_prefixes() -> &'static [u64] {
    static SET: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let mut set = vec![0u64; 27usize.pow(4) / 64 + 1];
        for w in bip39::Language::English.word_list() {
            let k = prefix_key(w.as_bytes());
            set[k / 64] |= 1 << (k % 64);
        }
        set
    })
}

const C_DIGIT: u8 = 1;
const C_UPPER: u8 = 2;
const C_LOWER: u8 = 4;
const C_SEP: u8 = 8;
const C_SPACE: u8 = 16;

const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_digit() {
            C_DIGIT
        } else if c.is_ascii_uppercase() {
            C_UPPER
        } else if c.is_ascii_lowercase() {
            C_LOWER
        } else if c == b' ' {
            C_SEP | C_SPACE
        } else if matches!(c, b'\t' | b'\r' | b'\n' | b',' | b'+') {
            C_SEP
        } else {
            0
        };
        i += 1;
    }
    t
};

/// The shapes `b[..gate]` holds (each test stops at its first hit; a test runs only
/// when a cheaper one before it allows); the digits are counted in all of `b` (the
/// rest of what the regex sees: a card number that starts in the gate may end past
/// it).
pub(crate) fn shapes(b: &[u8], gate: usize) -> Shapes {
    // A count (vectorized, no branch) of all digits stands for the digit tests: a card
    // number holds 13 and an IBAN 2 (a run of two digits costs a probe every other
    // byte, so the IBAN test starts from its letters and digits instead).
    let digits: usize = b
        .chunks(128)
        .map(|c| {
            // Byte lanes (128 cannot overflow one): vectorized sixteen or more at a time.
            usize::from(
                c.iter()
                    .fold(0u8, |n, &c| n + u8::from(c.wrapping_sub(b'0') < 10)),
            )
        })
        .sum();
    let b = &b[..gate.min(b.len())];
    let mut iban = false;
    if digits >= 2 {
        byteset::runs(is_iban_char, b, 0, IBAN_MIN, |s, e| {
            iban = iban_in(b, s, e);
            iban
        });
    }
    let mut words12 = false;
    byteset::runs(is_phrase_char, b, 0, MIN_PHRASE_BYTES, |s, e| {
        words12 = listed_words(&b[s..e], 12);
        words12
    });
    Shapes {
        digits13: digits >= 13,
        iban,
        alnum25: byteset::any_run(is_alnum, b, 25),
        words12,
    }
}

/// Does the run `b[s..e]` of IBAN bytes hold the start of one: two letters, then two
/// digits (the check digits), then the rest ([`iban_rest`])?
fn iban_in(b: &[u8], s: usize, e: usize) -> bool {
    let upper = |i: usize| b[i].is_ascii_uppercase();
    let mut found = false;
    byteset::runs(
        |c: u8| c.is_ascii_digit(),
        &b[s..e],
        0,
        2,
        |d, _| {
            let ds = s + d;
            found = d >= 2 && upper(ds - 1) && upper(ds - 2) && iban_rest(&b[ds + 2..]);
            found
        },
    );
    found
}

/// An IBAN's bytes: upper-case letters, digits and spaces.
fn is_iban_char(c: u8) -> bool {
    c.is_ascii_uppercase() | c.is_ascii_digit() | (c == b' ')
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_digit() | ((c | 0x20).wrapping_sub(b'a') < 26)
}

/// A seed phrase's bytes: letters and separators (`C_UPPER | C_LOWER | C_SEP`).
fn is_phrase_char(c: u8) -> bool {
    ((c | 0x20).wrapping_sub(b'a') < 26)
        | (c == b' ')
        | (c == b'\t')
        | (c == b'\r')
        | (c == b'\n')
        | (c == b',')
        | (c == b'+')
}

/// The shortest IBAN (Norway's), in letters and digits.
const IBAN_MIN: usize = 15;

/// Do `b` start with the rest of an IBAN after its first four characters: at least
/// [`IBAN_MIN`] - 4 upper-case letters or digits, with spaces between them or none?
fn iban_rest(b: &[u8]) -> bool {
    let mut n = 0;
    for &c in b {
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            n += 1;
            if n == IBAN_MIN - 4 {
                return true;
            }
        } else if c != b' ' {
            return false;
        }
    }
    false
}

/// Twelve words of at least 3 letters and a separator each: the shortest seed phrase.
const MIN_PHRASE_BYTES: usize = 12 * 3 + 11;

/// `n` consecutive words that start like BIP-39 words, 3 to 8 letters each, one to
/// three separators (space, tab, CR, LF, comma, `+`) between them.
fn listed_words(b: &[u8], n: u32) -> bool {
    let prefixes = bip39_prefixes();
    let letter = |c: u8| CLASSES[c as usize] & (C_UPPER | C_LOWER) != 0;
    let mut words = 0u32;
    let mut i = 0;
    while i < b.len() {
        // The gap before a word.
        let gap_start = i;
        let mut clean = true;
        while i < b.len() && !letter(b[i]) {
            clean &= CLASSES[b[i] as usize] & C_SEP != 0;
            i += 1;
        }
        let gap = i - gap_start;
        if !clean || gap > 3 || (gap == 0 && gap_start > 0) {
            words = 0;
        }
        // The word.
        let start = i;
        while i < b.len() && letter(b[i]) {
            i += 1;
        }
        let len = i - start;
        if len == 0 {
            break;
        }
        let key = prefix_key(&b[start..start + len.min(4)]);
        if (3..=8).contains(&len) && prefixes[key / 64] & (1 << (key % 64)) != 0 {
            words += 1;
            if words >= n {
                return true;
            }
        } else {
            words = 0;
        }
    }
    false
}

impl Validator {
    /// Does a segment with these shapes possibly hold a value this validator accepts?
    pub(crate) fn possible(self, s: Shapes) -> bool {
        match self {
            Validator::Luhn => s.digits13,
            Validator::Iban => s.iban,
            Validator::Wif | Validator::BtcAddress | Validator::Secp256k1Key => s.alnum25,
            Validator::Bip39 => s.words12,
        }
    }
}

impl Validator {
    /// Can a value this validator accepts start at `rest[0]` (and lie in `rest`)? A
    /// necessary condition, checked where a keywordless rule's regex can start a
    /// match ([`crate::lead::Lead::starts_in`]): a card number's 13 digits, a WIF
    /// key's 51 base58 digits, an address's 25 base58 digits or its bech32 prefix, a
    /// hex key's 64 digits. IBANs and seed phrases keep their segment gate alone.
    pub(crate) fn starts_at(self, rest: &[u8]) -> bool {
        let base58 = |n: usize| rest.len() >= n && rest[..n].iter().all(|&c| is_base58(c));
        match self {
            // `pan_digits`: digits and separators only, 13 digits at least.
            Validator::Luhn => {
                let mut digits = 0;
                for &c in rest {
                    if !is_card_char(c) {
                        return false;
                    }
                    digits += usize::from(c.is_ascii_digit());
                    if digits == 13 {
                        return true;
                    }
                }
                false
            }
            // `wif`: the first 51 or 52 characters are base58check.
            Validator::Wif => base58(51),
            // `btc_address`: bech32 after `bc1`/`tb1` (the shortest segwit address has
            // a version and a 2-byte program: 8 data characters with the checksum),
            // else the first 25 to 35 characters are base58check.
            Validator::BtcAddress => {
                let bech = rest.len() >= 11
                    && (rest[..3].eq_ignore_ascii_case(b"bc1")
                        || rest[..3].eq_ignore_ascii_case(b"tb1"));
                if bech {
                    rest[3..11].iter().all(|&c| is_bech32(c))
                } else {
                    base58(25)
                }
            }
            Validator::Secp256k1Key => {
                let s = rest
                    .strip_prefix(b"0x")
                    .or_else(|| rest.strip_prefix(b"0X"))
                    .unwrap_or(rest);
                s.len() >= 64 && s[..64].iter().all(u8::is_ascii_hexdigit)
            }
            Validator::Iban | Validator::Bip39 => true,
        }
    }
}

/// What is done with a validator's run ([`Validator::run`]): given the run's set (a
/// predicate of comparisons, so that each set's search is its own vectorized copy,
/// [`crate::byteset`]) and its least length.
pub(crate) trait WithRun {
    type Out;
    fn with(self, set: impl ByteSet, min: usize) -> Self::Out;
}

impl Validator {
    /// The run a value this validator accepts lies in, from its first byte: the
    /// bytes of the run and its least length (what [`Validator::starts_at`] asks at
    /// least), given to `w`. None for seed phrases (words of the list, checked past
    /// the match). Inlined: each arm's set and length are constants in its search.
    #[inline(always)]
    pub(crate) fn run<W: WithRun>(self, w: W) -> Option<W::Out> {
        Some(match self {
            Validator::Luhn => w.with(is_card_char, 13),
            Validator::Wif => w.with(is_base58, 51),
            // `bc1` and 8 bech32 characters, or 25 base58 digits.
            Validator::BtcAddress => w.with(is_alnum, 11),
            // `0x` and 64 hex digits, or the 64 digits.
            Validator::Secp256k1Key => w.with(is_alnum, 64),
            // The validator drops spaces and reads 15 or more of `[A-Z0-9]`.
            Validator::Iban => w.with(is_iban_char, 15),
            Validator::Bip39 => return None,
        })
    }
}

/// A card number's bytes: digits and the separators `pan_digits` skips.
fn is_card_char(c: u8) -> bool {
    c.is_ascii_digit() | (c == b' ') | (c == b'-') | (c == b'.')
}

/// A digit of Bitcoin's base58 alphabet.
fn is_base58(c: u8) -> bool {
    is_alnum(c) & (c != b'0') & (c != b'O') & (c != b'I') & (c != b'l')
}

/// A data character of bech32, either case (`1`, `b`, `i`, `o` are not).
fn is_bech32(c: u8) -> bool {
    let c = c.to_ascii_lowercase();
    (c.is_ascii_lowercase() || c.is_ascii_digit()) && !matches!(c, b'1' | b'b' | b'i' | b'o')
}

// ---------------------------------------------------------------- payment cards

/// Documented test card numbers (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay; Stripe's, Adyen's, Braintree's and PayPal's sandboxes use these).
pub const TEST_PANS: &[&str] = &[
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4000056655665556",
    "4000000000000002",
    "4000000000000077",
    "4000000000003220",
    "4000002500003155",
    "4000000000009995",
    "4222222222222",
    "5555555555554444",
    "5105105105105100",
    "5200828282828210",
    "5454545454545454",
    "2223003122003222",
    "2223000048400011",
    "378282246310005",
    "371449635398431",
    "378734493671000",
    "6011111111111117",
    "6011000990139424",
    "6011000000000004",
    "3530111333300000",
    "3566002020360505",
    "3566111111111113",
    "30569309025904",
    "38520000023237",
    "36227206271667",
    "6200000000000005",
    "6205500000000000004",
];

/// The digits of a card-number candidate, or None if it has other than digits and
/// single separators (space, dash, dot) or too many digits.
fn pan_digits(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(19);
    for &b in s {
        match b {
            b'0'..=b'9' => {
                if out.len() == 19 {
                    return None;
                }
                out.push(b - b'0');
            }
            b' ' | b'-' | b'.' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Luhn checksum over decimal digit values.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefix and length of a known card brand.
fn card_brand_ok(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| -> u32 { d.iter().take(k).fold(0u32, |a, &x| a * 10 + u32::from(x)) };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match p1 {
        // Visa: 16 (13 and 19 exist but are rare; 13 collides with phone numbers and
        // 19 with 64-bit ids, as do every brand's 17-19-digit numbers).
        4 => n == 16,
        // Mastercard 51-55 and 2221-2720.
        5 => (51..=55).contains(&p2) && n == 16,
        2 => (2221..=2720).contains(&p4) && n == 16,
        3 => {
            // Amex 34/37 (15); JCB 3528-3589 (16); Diners 300-305, 36, 38, 39 (14, 16).
            ((p2 == 34 || p2 == 37) && n == 15)
                || ((3528..=3589).contains(&p4) && n == 16)
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (n == 14 || n == 16))
        }
        // Discover 6011, 644-649, 65; UnionPay 62 (16).
        6 => (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62) && n == 16,
        _ => false,
    }
}

fn is_card(d: &[u8]) -> bool {
    card_brand_ok(d) && luhn(d)
}

fn is_test_pan(d: &[u8]) -> bool {
    TEST_PANS
        .iter()
        .any(|t| t.len() == d.len() && t.bytes().zip(d).all(|(a, &b)| a - b'0' == b))
}

/// How many card numbers (runs of 13-19 digits, optionally grouped) `context` holds,
/// counting up to `stop`.
fn count_cards(context: &[u8], stop: usize) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < context.len() && count < stop {
        if !context[i].is_ascii_digit() || (i > 0 && context[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // A run of digits with single separators between digits.
        let mut j = i;
        let mut digits = Vec::with_capacity(19);
        while j < context.len() && digits.len() <= 19 {
            let b = context[j];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                j += 1;
            } else if matches!(b, b' ' | b'-' | b'.')
                && context.get(j + 1).is_some_and(u8::is_ascii_digit)
                && j > i
            {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && is_card(&digits) {
            count += 1;
        }
        i = j.max(i + 1);
    }
    count
}

/// A card number; a test number only in a data-export-shaped context.
fn card_number(secret: &[u8], context: &[u8]) -> bool {
    let Some(d) = pan_digits(secret) else {
        return false;
    };
    if !(13..=19).contains(&d.len()) || !is_card(&d) {
        return false;
    }
    !is_test_pan(&d) || count_cards(context, 2) >= 2
}

// ---------------------------------------------------------------- IBAN

/// IBAN lengths per country (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// mod-97 of an IBAN in its compact form (ISO 13616: move the first four characters
/// to the end, letters as 10..35).
pub fn iban_mod97(compact: &[u8]) -> Option<u32> {
    if compact.len() < 5 {
        return None;
    }
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return None,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    Some(rem)
}

fn iban(secret: &[u8]) -> bool {
    let compact: Vec<u8> = secret
        .iter()
        .copied()
        .filter(|b| *b != b' ')
        .take(40)
        .collect();
    if compact.len() < 4 || !compact[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(cc, _)| cc[..] == compact[..2]) else {
        return false;
    };
    // A longer run: the IBAN is its prefix of the country's length.
    compact.len() >= len && iban_mod97(&compact[..len]) == Some(1)
}

// ---------------------------------------------------------------- Bitcoin

/// The order of the secp256k1 group, big-endian.
const SECP256K1_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
    0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41,
];

fn valid_scalar(k: &[u8]) -> bool {
    k.len() == 32 && k.iter().any(|&b| b != 0) && k < &SECP256K1_N[..]
}

/// Bitcoin's base58 digits' values; 0xFF for other bytes.
const BASE58: [u8; 256] = {
    let digits = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < digits.len() {
        t[digits[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Does some prefix `s[..n]`, `n` in `lens`, decode as base58check (as `bs58` with its
/// check decodes it: a zero byte for each leading `1`, then the number's big-endian
/// bytes, the last four the double SHA-256 of the rest) to a payload of one of the
/// lengths `sizes` that `ok` accepts? One decoding of the longest prefix: a prefix's
/// number is the shorter one's times 58 plus its last digit, and a payload is hashed
/// only when its length is one of `sizes` (a random candidate's rarely is), where
/// decoding each prefix hashed each.
fn base58check_prefixes(
    s: &[u8],
    lens: std::ops::RangeInclusive<usize>,
    sizes: &[usize],
    ok: impl Fn(&[u8]) -> bool,
) -> bool {
    use sha2::{Digest, Sha256};
    // Little-endian 32-bit limbs: 64 digits need 375 bits.
    let mut limbs = [0u32; 12];
    let mut used = 0;
    let mut zeros = 0;
    let end = (*lens.end()).min(s.len());
    for (i, &c) in s[..end].iter().enumerate() {
        let digit = BASE58[usize::from(c)];
        if digit == 0xFF {
            // This prefix and every longer one are not base58.
            return false;
        }
        if used == 0 && digit == 0 {
            zeros += 1;
        } else {
            let mut carry = u64::from(digit);
            for l in &mut limbs[..used] {
                let v = u64::from(*l) * 58 + carry;
                *l = v as u32;
                carry = v >> 32;
            }
            if carry > 0 {
                if used == limbs.len() {
                    return false;
                }
                limbs[used] = carry as u32;
                used += 1;
            }
        }
        let n = i + 1;
        if !lens.contains(&n) {
            continue;
        }
        let top = if used == 0 {
            0
        } else {
            4 * (used - 1) + (4 - limbs[used - 1].leading_zeros() as usize / 8)
        };
        let total = zeros + top;
        if total < 4 || !sizes.contains(&(total - 4)) {
            continue;
        }
        let mut bytes = vec![0u8; zeros];
        let be: Vec<u8> = limbs[..used]
            .iter()
            .rev()
            .flat_map(|l| l.to_be_bytes())
            .collect();
        bytes.extend_from_slice(&be[be.len() - top..]);
        let (payload, check) = bytes.split_at(total - 4);
        if Sha256::digest(Sha256::digest(payload))[..4] == *check && ok(payload) {
            return true;
        }
    }
    false
}

/// A WIF payload: version, 32-byte key, and 0x01 when the public key is compressed.
fn wif_payload(p: &[u8]) -> bool {
    matches!(p.first(), Some(0x80 | 0xef))
        && match p.len() {
            33 => valid_scalar(&p[1..]),
            34 => p[33] == 1 && valid_scalar(&p[1..33]),
            _ => false,
        }
}

fn wif(secret: &[u8]) -> bool {
    // Uncompressed keys are 51 characters, compressed 52.
    base58check_prefixes(secret, 51..=52, &[33, 34], wif_payload)
}

/// A P2PKH or P2SH payload: version and a 20-byte hash.
fn address_payload(p: &[u8]) -> bool {
    p.len() == 21 && matches!(p[0], 0x00 | 0x05 | 0x6f | 0xc4)
}

fn bech32_address_exact(s: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(s) else {
        return false;
    };
    match bech32::segwit::decode(s) {
        Ok((hrp, _, _)) => hrp == bech32::hrp::BC || hrp == bech32::hrp::TB,
        Err(_) => false,
    }
}

fn btc_address(secret: &[u8]) -> bool {
    let lower = secret.to_ascii_lowercase();
    if lower.starts_with(b"bc1") || lower.starts_with(b"tb1") {
        // P2WPKH 42, P2WSH and P2TR 62 characters (mainnet; testnet the same).
        return bech32_address_exact(secret)
            || [62, 42]
                .iter()
                .any(|&n| secret.len() > n && bech32_address_exact(&secret[..n]));
    }
    // P2PKH and P2SH: 25 to 34 characters.
    base58check_prefixes(secret, 25..=35, &[21], address_payload)
}

fn secp256k1_hex_key(secret: &[u8]) -> bool {
    let s = secret
        .strip_prefix(b"0x")
        .or_else(|| secret.strip_prefix(b"0X"))
        .unwrap_or(secret);
    if s.len() < 64 {
        return false;
    }
    let mut k = [0u8; 32];
    for (i, pair) in s[..64].chunks_exact(2).enumerate() {
        let (Some(h), Some(l)) = (hex_val(pair[0]), hex_val(pair[1])) else {
            return false;
        };
        k[i] = h << 4 | l;
    }
    valid_scalar(&k)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------- BIP-39

/// How far past a seed-phrase match the validator reads (24 words of at most 8
/// letters and 3 separators).
const PHRASE_LOOKAHEAD: usize = 24 * 11;

/// Word counts of a BIP-39 phrase, longest first.
const PHRASE_LENGTHS: [usize; 5] = [24, 21, 18, 15, 12];

/// The candidate holds 12, 15, 18, 21 or 24 consecutive words of the English list with
/// a valid checksum (any such run inside it: prose around a phrase does not hide it).
/// Any 12 words of the list have a valid checksum with probability 1/16, so a long run
/// of list words is likely to hold one: such runs are rare outside seed phrases, and
/// an agent sending one is sending something shaped like a wallet.
fn bip39_phrase(secret: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(secret) else {
        return false;
    };
    let lang = bip39::Language::English;
    let words: Vec<String> = text
        // `+`, `&` and `=`: a phrase in a query string (`?w=abandon+ability+...&x=1`).
        .split(|c: char| {
            c.is_ascii_whitespace() || matches!(c, ',' | ';' | '"' | '\'' | '+' | '&' | '=')
        })
        .filter(|w| !w.is_empty())
        .take(96)
        .map(str::to_ascii_lowercase)
        .collect();
    let known: Vec<bool> = words.iter().map(|w| lang.find_word(w).is_some()).collect();
    let mut start = 0;
    while start < words.len() {
        if !known[start] {
            start += 1;
            continue;
        }
        let run_end = (start..words.len())
            .find(|&i| !known[i])
            .unwrap_or(words.len());
        for first in start..run_end {
            for n in PHRASE_LENGTHS {
                if first + n <= run_end {
                    let phrase = words[first..first + n].join(" ");
                    if bip39::Mnemonic::parse_in_normalized(lang, &phrase).is_ok() {
                        return true;
                    }
                }
            }
        }
        start = run_end;
    }
    false
}

// ---------------------------------------------------------------- placeholders

/// A value that is all filler: every part of eight or more characters (parts split at
/// non-alphanumeric characters) is one character repeated (`xxxx`, `0000`, `****`) or
/// a plain ascending run (`12345678`, `abcdefgh`), and there is such a part. The whole
/// value decides: one real-looking part makes it a candidate again.
pub fn is_filler(secret: &[u8]) -> bool {
    let mut long = 0;
    for part in secret.split(|b| !b.is_ascii_alphanumeric() && *b != b'*') {
        if part.len() < 8 {
            continue;
        }
        long += 1;
        let repeated = part.iter().all(|&b| b == part[0]);
        let ascending = part
            .windows(2)
            .all(|w| w[1] == w[0].wrapping_add(1) || (w[0] == b'9' && w[1] == b'0'));
        if !repeated && !ascending {
            return false;
        }
    }
    long > 0
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    /// The gates' predicates (comparisons, for vectorized masks) take the bytes of
    /// their classes in the table, no more and no fewer.
    #[test]
    fn gate_predicates_are_the_table_classes() {
        for c in 0..=255u8 {
            let class = |mask: u8| CLASSES[usize::from(c)] & mask != 0;
            assert_eq!(is_iban_char(c), class(C_DIGIT | C_UPPER | C_SPACE), "{c}");
            assert_eq!(is_alnum(c), class(C_DIGIT | C_UPPER | C_LOWER), "{c}");
            assert_eq!(is_phrase_char(c), class(C_UPPER | C_LOWER | C_SEP), "{c}");
            assert_eq!(
                is_base58(c),
                c.is_ascii_alphanumeric() && !b"0OIl".contains(&c),
                "{c}"
            );
            assert_eq!(
                is_card_char(c),
                c.is_ascii_digit() || b" -.".contains(&c),
                "{c}"
            );
        }
    }
}
