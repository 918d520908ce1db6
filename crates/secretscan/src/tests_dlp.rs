//! DLP rules an agent cannot walk around: the evasions of issue 16 pinned (an appended
//! character, `example` inside a secret, placeholders only as whole values), the
//! validators (Luhn, IBAN, base58check, bech32, secp256k1, BIP-39) with valid and
//! invalid values built at run time, a false-positive corpus of real traffic shapes,
//! and [`crate::high_entropy_tokens`]. No live-looking secret is in this file: every one
//! is assembled from `rnd` and checksums when the test runs.

use super::*;
use crate::test_support::rnd;
use crate::tests::{ALNUM, B64, DIGITS, HEX, URLSAFE};
use crate::validators::{Validator, iban_mod97, luhn};
use proptest::prelude::*;

// ---------------------------------------------------------------- value builders

/// A Luhn-valid card number of `len` digits starting with `prefix`.
pub(crate) fn pan(prefix: &str, len: usize, seed: u64) -> String {
    let body = format!("{prefix}{}", rnd(seed, len - 1 - prefix.len(), DIGITS));
    (0..10)
        .map(|c| format!("{body}{c}"))
        .find(|p| luhn(&p.bytes().map(|b| b - b'0').collect::<Vec<_>>()))
        .expect("one check digit fits")
}

/// The same number with a wrong check digit.
pub(crate) fn bad_luhn(pan: &str) -> String {
    let mut b = pan.as_bytes().to_vec();
    let last = b.len() - 1;
    b[last] = b'0' + (b[last] - b'0' + 1) % 10;
    String::from_utf8(b).unwrap()
}

/// A valid IBAN of `country` with `bban`.
pub(crate) fn iban(country: &str, bban: &str) -> String {
    let rem = iban_mod97(format!("{country}00{bban}").as_bytes()).unwrap();
    format!("{country}{:02}{bban}", 98 - rem)
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    rnd(seed, n * 2, HEX)
        .as_bytes()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// A WIF private key (mainnet).
pub(crate) fn wif(seed: u64, compressed: bool) -> String {
    let mut p = vec![0x80];
    let mut k = bytes(seed, 32);
    k[0] &= 0x7f; // below the group order
    p.extend(k);
    if compressed {
        p.push(1);
    }
    bs58::encode(p).with_check().into_string()
}

/// Bitcoin's base58 digits.
const BASE58_DIGITS: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A P2PKH address.
pub(crate) fn p2pkh(seed: u64) -> String {
    let mut p = vec![0x00];
    p.extend(bytes(seed, 20));
    bs58::encode(p).with_check().into_string()
}

/// A segwit v0 (P2WPKH) address.
fn p2wpkh(seed: u64) -> String {
    bech32::segwit::encode_v0(bech32::hrp::BC, &bytes(seed, 20)).unwrap()
}

/// A taproot (bech32m) address.
fn p2tr(seed: u64) -> String {
    bech32::segwit::encode_v1(bech32::hrp::BC, &bytes(seed, 32)).unwrap()
}

/// A BIP-39 phrase from `n` bytes of entropy (16 -> 12 words, 32 -> 24).
pub(crate) fn mnemonic(seed: u64, n: usize) -> String {
    bip39::Mnemonic::from_entropy(&bytes(seed, n))
        .unwrap()
        .to_string()
}

/// One character changed in the middle (breaks a checksum).
pub(crate) fn corrupt(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = b.len() / 2;
    b[i] = if b[i] == b'z' { b'y' } else { b'z' };
    String::from_utf8(b).unwrap()
}

/// The built-in rules with the keywordless rules' start gates off.
fn ungated() -> &'static RuleSet {
    static RULES: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let mut rules = RuleSet::builtin();
        for r in &mut rules.rules {
            r.lead = None;
        }
        rules
    })
}

fn ids(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|x| x.rule_id.as_str()).collect()
}

/// The built-in rules, compiled once for all tests here.
fn builtin() -> &'static RuleSet {
    static RULES: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    RULES.get_or_init(RuleSet::builtin)
}

fn found(text: &str, id: &str) -> bool {
    ids(&builtin().scan(text.as_bytes())).contains(&id)
}

// ---------------------------------------------------------------- evasions

#[test]
fn a_key_followed_by_anything_is_still_a_key() {
    let cases = [
        (
            "aws-access-key-id",
            format!("AKIA{}", rnd(1, 16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
        ),
        ("github-pat", format!("ghp_{}", rnd(3, 36, ALNUM))),
        ("github-oauth", format!("gho_{}", rnd(4, 36, ALNUM))),
        ("npm-access-token", format!("npm_{}", rnd(26, 36, ALNUM))),
        ("gcp-api-key", format!("AIza{}", rnd(22, 35, URLSAFE))),
        ("stripe-live-key", format!("sk_live_{}", rnd(17, 24, ALNUM))),
        (
            "openai-api-key",
            format!("sk-{}T3BlbkFJ{}", rnd(18, 20, ALNUM), rnd(19, 20, ALNUM)),
        ),
        (
            "sendgrid-api-key",
            format!("SG.{}.{}", rnd(46, 22, URLSAFE), rnd(47, 43, URLSAFE)),
        ),
        (
            "aws-secret-access-key",
            format!("aws_secret_access_key={}", rnd(2, 40, B64)),
        ),
        ("bitcoin-wif-key", wif(70, true)),
        ("bitcoin-wif-key", wif(71, false)),
        ("bitcoin-address", p2pkh(72)),
        ("bitcoin-address", p2wpkh(73)),
        ("iban", iban("GB", &format!("WEST{}", rnd(74, 14, DIGITS)))),
    ];
    for (id, key) in cases {
        for suffix in ["", "X", "a", "0", "Z9", "_", "-x", ".example", "EXAMPLE"] {
            for prefix in ["", " ", "x"] {
                if id.starts_with("bitcoin") || id == "iban" {
                    // Validated shapes keep a leading word boundary (see builtin.toml).
                    if prefix == "x" {
                        continue;
                    }
                }
                let text = format!("v={prefix}{key}{suffix}\n");
                assert!(
                    found(&text, id),
                    "{id} walked out with {prefix:?}..{suffix:?}"
                );
            }
        }
    }
}

#[test]
fn example_inside_a_secret_does_not_excuse_it() {
    let body = rnd(9, 64, B64);
    let pem = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nComment: example\n{body}\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
    );
    assert!(found(&pem, "private-key"));
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: placeholder dummy changeme\n{body}\n"
    );
    assert!(found(&pem, "private-key"));
    for word in [
        "example",
        "EXAMPLE",
        "placeholder",
        "dummy",
        "changeme",
        "xxxxxxxx",
    ] {
        let t = format!("api_key={}.{word}", rnd(27, 32, ALNUM));
        assert!(found(&t, "generic-api-key"), "{t}");
        let t = format!("token: ghp_{}{word}", rnd(3, 36, ALNUM));
        assert!(found(&t, "github-pat"), "{t}");
    }
}

#[test]
fn placeholders_are_whole_values_only() {
    // Whole documented values pass...
    for t in [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "api_key = \"your-api-key-here\"",
        "API_KEY=YOUR_API_KEY_HERE",
        "token: ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk_live_000000000000000000000000",
        "xoxb-000000000000-000000000000-xxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        let f = builtin().scan(t.as_bytes());
        assert!(f.is_empty(), "{t}: {f:?}");
    }
    // ...and anything more is a candidate again.
    for t in [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLF".to_string(),
        format!("api_key = \"your-api-key-here-{}\"", rnd(80, 24, ALNUM)),
        format!("token: ghp_xxxxxxxxxxxxxxxxxx{}", rnd(81, 18, ALNUM)),
        format!("xoxb-000000000000-000000000000-{}", rnd(82, 24, ALNUM)),
    ] {
        assert!(!builtin().scan(t.as_bytes()).is_empty(), "{t}");
    }
}

#[test]
fn stopwords_in_custom_rules_match_whole_secrets() {
    let toml = r#"
        [[rules]]
        id = "acme"
        regex = '''acme_[a-z0-9]{12,40}'''
        keywords = ["acme_"]
        [[rules.allowlists]]
        stopwords = ["acme_example00000"]
    "#;
    let rules = RuleSet::from_toml(toml).unwrap();
    assert!(rules.scan(b"acme_example00000").is_empty());
    assert!(!rules.scan(b"acme_example00000z9q8w7e6r5t4").is_empty());
    assert!(!rules.scan(b"acme_k2j4h5g6f7d8example").is_empty());
}

#[test]
fn keywordless_rules_need_a_validator() {
    let e = RuleSet::from_toml("[[rules]]\nid='a'\nregex='[0-9]{16}'").unwrap_err();
    assert!(e.to_string().contains("no validator"), "{e}");
    let e =
        RuleSet::from_toml("[[rules]]\nid='a'\nregex='[0-9]{16}'\nvalidator='crc'").unwrap_err();
    let chain = bottle_contract::ErrorChain(&e).to_string();
    assert!(chain.contains("unknown validator \"crc\""), "{chain}");
    let r = RuleSet::from_toml("[[rules]]\nid='pan'\nregex='[0-9]{16}'\nvalidator='luhn'").unwrap();
    assert_eq!(ids(&r.scan(pan("4", 16, 5).as_bytes())), ["pan"]);
}

// ---------------------------------------------------------------- validators

#[test]
fn cards_by_brand_and_luhn() {
    for (prefix, len) in [
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("2720", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("65", 16),
        ("3530", 16),
        ("36", 14),
        ("62", 16),
    ] {
        let p = pan(prefix, len, len as u64 * 7 + prefix.len() as u64);
        assert!(found(&format!("cc {p} ok"), "card-number"), "{p}");
        assert!(
            !found(&format!("cc {} ok", bad_luhn(&p)), "card-number"),
            "{p}"
        );
        // Grouped as printed on the card.
        if len == 16 {
            let g = format!("{} {} {} {}", &p[..4], &p[4..8], &p[8..12], &p[12..]);
            assert!(found(&g, "card-number"), "{g}");
            let g = g.replace(' ', "-");
            assert!(found(&g, "card-number"), "{g}");
        }
    }
    // Not a brand: a Luhn-valid number with a prefix no network uses, a 13-digit Visa
    // (collides with phone numbers), a digit more or less.
    for p in [pan("1", 16, 3), pan("9", 16, 4), pan("4", 13, 5)] {
        assert!(!found(&p, "card-number"), "{p}");
    }
    let p = pan("4", 16, 6);
    assert!(!found(&format!("{p}7"), "card-number"));
    assert!(!found(&format!("7{p}"), "card-number"));
    assert!(found(&format!("x{p}x"), "card-number"));
}

#[test]
fn test_cards_are_caught_in_data_exports_only() {
    // One test number in a payment-sandbox call: not a finding.
    for t in [
        "card[number]=4242424242424242&card[exp_month]=12&card[cvc]=123",
        "{\"number\": \"4111 1111 1111 1111\", \"exp\": \"12/30\"}",
        "Use 5555555555554444 for a Mastercard in test mode.",
    ] {
        assert!(!found(t, "card-number"), "{t}");
    }
    // Rows of records: a data export, test numbers included.
    let csv = "name,email,card,exp\nAnn,a@x.io,4111111111111111,12/30\nBob,b@x.io,4242424242424242,01/31\n";
    let f = builtin().scan(csv.as_bytes());
    assert_eq!(ids(&f), ["card-number", "card-number"], "{f:?}");
    let json = "[{\"id\":1,\"pan\":\"4111111111111111\"},{\"id\":2,\"pan\":\"4111111111111111\"}]";
    assert_eq!(ids(&builtin().scan(json.as_bytes())).len(), 2);
    // A real-shaped number beside a test one: both.
    let mixed = format!("4242424242424242,{}", pan("5", 16, 9));
    assert_eq!(ids(&builtin().scan(mixed.as_bytes())).len(), 2);
}

#[test]
fn iban_checksums_and_lengths() {
    for (cc, bban) in [
        ("DE", rnd(90, 18, DIGITS)),
        ("GB", format!("NWBK{}", rnd(91, 14, DIGITS))),
        ("FR", rnd(92, 23, DIGITS)),
        ("NL", format!("ABNA{}", rnd(93, 10, DIGITS))),
        ("NO", rnd(94, 11, DIGITS)),
    ] {
        let good = iban(cc, &bban);
        assert!(found(&format!("pay to {good}."), "iban"), "{good}");
        // Printed in groups of four.
        let grouped: Vec<String> = good
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        assert!(found(&grouped.join(" "), "iban"), "{grouped:?}");
        assert!(!found(&corrupt(&good), "iban"), "{good}");
        // Too short for the country.
        assert!(!found(&good[..good.len() - 1], "iban"), "{good}");
    }
    assert_eq!(iban_mod97(b"GB82WEST12345698765432"), Some(1));
}

/// The IBAN rule runs only over segments whose shapes allow an IBAN
/// (`validators::shapes`): every IBAN the validator accepts passes that gate, the
/// shortest country's too, grouped by any spaces, with anything appended.
#[test]
fn iban_gate_passes_every_accepted_iban() {
    for (i, (cc, n)) in [("NO", 11), ("DE", 18), ("FR", 23), ("MT", 27)]
        .into_iter()
        .enumerate()
    {
        let good = iban(cc, &rnd(200 + i as u64, n, DIGITS));
        let (head, rest) = good.split_at(4);
        let spaced = |sep: &str, width: usize| {
            let groups: Vec<String> = rest
                .as_bytes()
                .chunks(width)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            format!("{head}{sep}{}", groups.join(sep))
        };
        for value in [
            good.clone(),
            spaced(" ", 4),
            spaced("  ", 4),
            spaced(" ", 1),
            format!("{good}X"),
        ] {
            for text in [value.clone(), format!("iban: {value}.")] {
                let at = text.find(&value).unwrap();
                assert!(
                    Validator::Iban.check(text.as_bytes(), at..at + value.len()),
                    "{text}"
                );
                assert!(
                    crate::validators::shapes(text.as_bytes(), text.len()).iban,
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn bitcoin_keys_and_addresses() {
    let v = |name: &str, s: &str| -> bool {
        let val: Validator = name.parse().unwrap();
        val.check(s.as_bytes(), 0..s.len())
    };
    for seed in 0..20 {
        assert!(v("wif", &wif(seed, true)));
        assert!(v("wif", &wif(seed, false)));
        assert!(!v("wif", &corrupt(&wif(seed, true))));
        assert!(v("btc-address", &p2pkh(seed)));
        assert!(v("btc-address", &p2wpkh(seed)));
        assert!(v("btc-address", &p2tr(seed)));
        assert!(v("btc-address", &p2wpkh(seed).to_uppercase()));
        assert!(!v("btc-address", &corrupt(&p2pkh(seed))));
        assert!(!v("btc-address", &corrupt(&p2wpkh(seed))));
        // An address is not a key, and the other way round.
        assert!(!v("wif", &p2pkh(seed)));
        assert!(!v("btc-address", &wif(seed, true)));
    }
    assert!(found(&format!("addr={}", p2tr(5)), "bitcoin-address"));
    assert!(found(&format!("addr={}", p2wpkh(5)), "bitcoin-address"));
}

#[test]
fn secp256k1_keys() {
    let v: Validator = "secp256k1-key".parse().unwrap();
    let k = rnd(7, 64, HEX);
    assert!(v.check(k.as_bytes(), 0..64));
    let zero = "0".repeat(64);
    assert!(!v.check(zero.as_bytes(), 0..64));
    let n = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141";
    assert!(!v.check(n.as_bytes(), 0..64));
    let below = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140";
    assert!(v.check(below.as_bytes(), 0..64));
    assert!(found(
        &format!("ETH_PRIVATE_KEY: \"{k}\""),
        "ethereum-private-key"
    ));
    assert!(found(
        &format!("wallet_key => 0x{k}"),
        "ethereum-private-key"
    ));
    assert!(!found(
        &format!("blockHash: \"0x{k}\""),
        "ethereum-private-key"
    ));
}

#[test]
fn seed_phrases() {
    for (seed, n) in [(1, 16), (2, 20), (3, 24), (4, 28), (5, 32)] {
        let m = mnemonic(seed, n);
        assert!(found(&m, "bip39-seed-phrase"), "{m}");
        assert!(found(
            &format!("backup: {}\n", m.replace(' ', "\n")),
            "bip39-seed-phrase"
        ));
        assert!(found(&m.to_uppercase(), "bip39-seed-phrase"));
        assert!(found(&m.replace(' ', ", "), "bip39-seed-phrase"));
        // Form-encoded in a query string: `+` for each space, no keyword near it.
        assert!(
            found(
                &format!("GET /q?words={}&x=1", m.replace(' ', "+")),
                "bip39-seed-phrase"
            ),
            "{m}"
        );
        // Padded with list words before it (shifts the regex's 24-word matches).
        let pad = "abandon ".repeat(seed as usize * 7);
        assert!(
            found(&format!("{pad}{m} abandon abandon"), "bip39-seed-phrase"),
            "{pad}{m}"
        );
    }
    // 11 words: too few.
    let m = mnemonic(6, 16);
    let eleven: Vec<&str> = m.split(' ').take(11).collect();
    assert!(!found(&eleven.join(" "), "bip39-seed-phrase"));
    assert!(!found(&eleven.join("+"), "bip39-seed-phrase"));
    // A `+`-joined query of ordinary words is no phrase.
    assert!(!found(
        "GET /search?q=how+to+make+bread+with+flour+water+salt+and+yeast+at+home+today",
        "bip39-seed-phrase"
    ));
}

// ---------------------------------------------------------------- false positives

/// Request and response bodies of real traffic shapes.
pub(crate) fn traffic() -> Vec<(&'static str, String)> {
    let uuid = |s: u64| {
        let h = rnd(s, 32, HEX);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..]
        )
    };
    let mut v = vec![
        (
            "crates.io download and index",
            format!(
                "GET /crates/serde/serde-1.0.197.crate HTTP/1.1\r\nHost: static.crates.io\r\nUser-Agent: cargo/1.95.0 (abc1234 2026-01-01)\r\n\r\n\
                 {{\"name\":\"serde\",\"vers\":\"1.0.197\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
                rnd(100, 64, HEX)
            ),
        ),
        (
            "npm packument",
            format!(
                "{{\"name\":\"left-pad\",\"dist-tags\":{{\"latest\":\"1.3.0\"}},\"versions\":{{\"1.3.0\":{{\"dist\":{{\
                 \"integrity\":\"sha512-{}==\",\"shasum\":\"{}\",\
                 \"tarball\":\"https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz\"}}}}}}}}",
                rnd(101, 86, B64),
                rnd(102, 40, HEX)
            ),
        ),
        (
            "PyPI simple index",
            format!(
                "<a href=\"https://files.pythonhosted.org/packages/{}/{}/{}/requests-2.31.0-py3-none-any.whl#sha256={}\" \
                 data-requires-python=\"&gt;=3.7\">requests-2.31.0-py3-none-any.whl</a>",
                rnd(103, 2, HEX),
                rnd(104, 2, HEX),
                rnd(105, 60, HEX),
                rnd(106, 64, HEX)
            ),
        ),
        ("git upload-pack request", {
            let mut s = String::new();
            for i in 0..200 {
                s.push_str(&format!("0032want {}\n", rnd(200 + i, 40, HEX)));
            }
            for i in 0..200 {
                s.push_str(&format!("0032have {}\n", rnd(500 + i, 40, HEX)));
            }
            s.push_str("00000009done\n");
            s
        }),
        ("git ref advertisement", {
            let mut s = String::from("001e# service=git-upload-pack\n0000");
            s.push_str(&format!(
                "0155{} HEAD\0multi_ack thin-pack side-band side-band-64k ofs-delta shallow \
                 no-progress include-tag multi_ack_detailed symref=HEAD:refs/heads/main agent=git/2.43.0\n",
                rnd(300, 40, HEX)
            ));
            for i in 0..100 {
                s.push_str(&format!(
                    "003f{} refs/heads/feature-{i}\n",
                    rnd(301 + i, 40, HEX)
                ));
            }
            s.push_str("0000");
            s
        }),
        (
            "model API request",
            format!(
                "{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":4096,\"metadata\":{{\"user_id\":\"{}\"}},\
                 \"messages\":[{{\"role\":\"user\",\"content\":\"Refactor the parser so that every error carries its \
                 source span, then update the tests and make sure clippy stays clean.\"}},\
                 {{\"role\":\"assistant\",\"content\":[{{\"type\":\"tool_use\",\"id\":\"toolu_01{}\",\"name\":\"bash\",\
                 \"input\":{{\"command\":\"cargo test -p parser 2>&1 | tail -20\"}}}}]}}]}}",
                uuid(400),
                rnd(401, 22, ALNUM)
            ),
        ),
        (
            "model API response",
            format!(
                "{{\"id\":\"msg_01{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\
                 \"content\":[{{\"type\":\"text\",\"text\":\"All 214 tests pass. The parser now keeps byte offsets \
                 1714070400 through 1714070999 in its spans.\"}}],\"stop_reason\":\"end_turn\",\
                 \"usage\":{{\"input_tokens\":20951,\"output_tokens\":503}}}}\n\
                 {{\"id\":\"chatcmpl-{}\",\"object\":\"chat.completion\",\"created\":1714070400,\
                 \"system_fingerprint\":\"fp_{}\",\"choices\":[]}}",
                rnd(402, 22, ALNUM),
                rnd(403, 29, ALNUM),
                rnd(404, 10, HEX)
            ),
        ),
        ("JSON with UUIDs and hashes", {
            let mut s = String::from("[");
            for i in 0..50 {
                s.push_str(&format!(
                    "{{\"id\":\"{}\",\"sha1\":\"{}\",\"sha256\":\"{}\",\"etag\":\"W/\\\"{}\\\"\",\
                     \"size\":{},\"ts\":\"2026-01-0{}T12:00:00.{}Z\",\"n\":{}}},",
                    uuid(600 + i),
                    rnd(700 + i, 40, HEX),
                    rnd(800 + i, 64, HEX),
                    rnd(900 + i, 32, HEX),
                    rnd(1000 + i, 7, DIGITS),
                    i % 9 + 1,
                    rnd(1100 + i, 6, DIGITS),
                    rnd(1200 + i, 19, DIGITS).trim_start_matches('0')
                ));
            }
            s.push_str("{}]");
            s
        }),
        (
            "base64 image",
            format!(
                "{{\"type\":\"image\",\"source\":{{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBORw0KGgo{}=\"}}}}",
                rnd(1300, 60_000, B64)
            ),
        ),
        (
            "JWKS and a JWT header alone",
            format!(
                "{{\"keys\":[{{\"kty\":\"RSA\",\"kid\":\"{}\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"{}\",\"e\":\"AQAB\"}}]}}\n\
                 header eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9 only",
                rnd(1400, 40, HEX),
                rnd(1401, 342, URLSAFE)
            ),
        ),
        (
            "English prose",
            "The build cluster keeps three spare nodes ready; when demand rises above normal load \
             the scheduler moves queued jobs across every region without manual review, which \
             keeps average latency under budget during peak hours and avoids costly outages.\n\
             abandon ability able about above absent absorb abstract absurd abuse access accident\n"
                .to_string(),
        ),
        ("source code", {
            let mut s = String::new();
            for i in 0..100 {
                s.push_str(&format!(
                    "    let api_key = std::env::var(\"API_KEY_{i}\")?;\n    let secret_key = config.secret_key;\n    \
                     let private_key = load_key(&path)?; // 0x{}\n    assert_eq!(hash, 0x{});\n",
                    rnd(1500 + i, 16, HEX),
                    rnd(1600 + i, 8, HEX)
                ));
            }
            s
        }),
    ];
    v.push((
        "all of it, concatenated",
        v.iter().map(|(_, s)| s.as_str()).collect(),
    ));
    v
}

#[test]
fn real_traffic_shapes_have_no_findings() {
    let rules = builtin();
    for (what, body) in traffic() {
        let f = rules.scan(body.as_bytes());
        assert!(f.is_empty(), "{what}: {f:?}");
    }
}

// ---------------------------------------------------------------- entropy in URLs

fn urls_benign() -> Vec<String> {
    vec![
        "https://static.crates.io/crates/serde/serde-1.0.197.crate".into(),
        "https://index.crates.io/se/rd/serde".into(),
        format!(
            "https://index.crates.io/config.json?cksum={}",
            rnd(1, 64, HEX)
        ),
        "https://registry.npmjs.org/@types%2fnode/-/node-20.11.5.tgz".into(),
        "https://registry.npmjs.org/@babel/core".into(),
        format!(
            "https://files.pythonhosted.org/packages/{}/{}/{}/requests-2.31.0-py3-none-any.whl#sha256={}",
            rnd(2, 2, HEX),
            rnd(3, 2, HEX),
            rnd(4, 60, HEX),
            rnd(5, 64, HEX)
        ),
        "https://pypi.org/simple/typing-extensions/".into(),
        "https://github.com/rust-lang/cargo.git/info/refs?service=git-upload-pack".into(),
        format!(
            "https://github.com/tokio-rs/tokio/commit/{}",
            rnd(6, 40, HEX)
        ),
        format!(
            "https://codeload.github.com/tokio-rs/tokio/tar.gz/{}",
            rnd(7, 40, HEX)
        ),
        format!(
            "https://registry-1.docker.io/v2/library/ubuntu/blobs/sha256:{}",
            rnd(8, 64, HEX)
        ),
        "https://api.anthropic.com/v1/messages?beta=true".into(),
        format!(
            "https://api.anthropic.com/v1/messages/batches/msgbatch_01{}",
            rnd(9, 20, ALNUM)
        ),
        format!("https://api.openai.com/v1/threads/{}/runs", uuid_like(10)),
        "https://www.google.com/search?q=how+to+configure+rustfmt+edition+2024&hl=en".into(),
        "https://docs.rs/tokio/latest/tokio/sync/struct.Mutex.html#method.lock".into(),
        "https://en.wikipedia.org/wiki/Shannon_(unit)".into(),
        "https://example-preview-git-feature-new-login-page-acme.vercel.app/dashboard".into(),
        "https://my-load-balancer-1234567890.us-east-1.elb.amazonaws.com/health".into(),
        format!(
            "https://bucket.s3.amazonaws.com/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            rnd(11, 64, HEX)
        ),
        "/v1/messages?limit=20&before_id=abc".into(),
        "https://crates.io/api/v1/crates?page=2&per_page=100&sort=recent-downloads".into(),
        "https://github.com/user/repo/blob/main/src/really_long_module_name/with_many_words.rs"
            .into(),
        "https://api.github.com/repos/rust-lang/rust/pulls?state=open&per_page=100".into(),
    ]
}

fn uuid_like(s: u64) -> String {
    let h = rnd(s, 32, HEX);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[test]
fn entropy_flags_random_tokens_in_every_part() {
    let cases = [
        (
            format!("https://collector.example/c/{}", rnd(1, 32, ALNUM)),
            entropy::RULE_PATH,
        ),
        (
            format!("https://collector.example/c?d={}", rnd(2, 40, B64)),
            entropy::RULE_QUERY,
        ),
        (
            format!("https://collector.example/c?{}=1", rnd(3, 28, ALNUM)),
            entropy::RULE_QUERY,
        ),
        (
            format!(
                "https://{}.tunnel.example/",
                rnd(4, 26, b"abcdefghijklmnopqrstuvwxyz0123456789")
            ),
            entropy::RULE_HOST,
        ),
        (
            format!("https://{}.tunnel.example/", rnd(5, 32, HEX)),
            entropy::RULE_HOST,
        ),
        (
            format!("https://u:{}@host.example/", rnd(6, 30, ALNUM)),
            entropy::RULE_USERINFO,
        ),
        (format!("/upload/{}/x", rnd(7, 48, HEX)), entropy::RULE_PATH),
        (
            format!("https://x.example/a/{}.png", rnd(8, 24, URLSAFE)),
            entropy::RULE_PATH,
        ),
    ];
    for (url, id) in cases {
        let f = high_entropy_tokens(&url);
        assert!(f.iter().any(|x| x.rule_id == id), "{url}: {f:?}");
        for x in &f {
            let tok = &url[x.offset as usize..][..x.len];
            assert!(!format!("{x} {x:?}").contains(tok));
        }
    }
    // Recall over many random tokens of the minimum length.
    let missed = (0..200)
        .filter(|&s| {
            high_entropy_tokens(&format!("https://x.example/{}", rnd(s, 24, ALNUM))).is_empty()
        })
        .count();
    assert!(missed <= 10, "{missed} of 200 random 24-byte tokens missed");
}

#[test]
fn entropy_passes_real_urls() {
    for url in urls_benign() {
        let f = high_entropy_tokens(&url);
        assert!(f.is_empty(), "{url}: {f:?}");
    }
}

#[test]
fn entropy_points_at_the_token() {
    let tok = rnd(9, 40, ALNUM);
    let url = format!(
        "https://h.example/a/b?x=1&data={tok}&y=2#frag{}",
        rnd(10, 40, ALNUM)
    );
    let f = high_entropy_tokens(&url);
    assert_eq!(f.len(), 1, "the fragment is not sent: {f:?}");
    assert_eq!(&url[f[0].offset as usize..][..f[0].len], tok);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Arbitrary input never panics a validator, the entropy check or the scanner.
    #[test]
    fn arbitrary_input_is_safe(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
        for v in ["luhn", "iban", "wif", "btc-address", "secp256k1-key", "bip39"] {
            let v: Validator = v.parse().unwrap();
            let end = cut.min(data.len());
            let _ = v.check(&data, 0..end);
            let _ = v.check(&data, end..data.len());
            let _ = v.check(&data, data.len()..data.len() + 5);
        }
        let _ = high_entropy_tokens(&String::from_utf8_lossy(&data));
        let _ = builtin().scan(&data);
    }

    /// The start gates of the keywordless rules (`crate::lead`) skip only segments
    /// where no finding can start: the same findings as with them off, on text made
    /// of the values those rules look for, broken ones, digits, random base64 and the
    /// separators between them.
    #[test]
    fn keywordless_start_gates_lose_nothing(parts in proptest::collection::vec((0u8..13, any::<u64>()), 1..48)) {
        use base64::Engine as _;
        let mut text = String::new();
        for (kind, seed) in parts {
            text.push_str(&match kind {
                0 => wif(seed, seed % 2 == 0),
                1 => p2pkh(seed),
                2 => p2wpkh(seed),
                3 => p2tr(seed),
                4 => pan(["4", "51", "37", "6011"][(seed % 4) as usize], 16, seed),
                5 => pan("4", 16, seed).as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" "),
                6 => iban("DE", &rnd(seed, 18, DIGITS)),
                7 => mnemonic(seed, 16),
                8 => base64::engine::general_purpose::STANDARD.encode(bytes(seed, 16 + (seed % 300) as usize)),
                9 => ["+", "/", " ", "\n", "-", ".", "=", "\"", ",", "_", "0x"][(seed % 11) as usize].to_string(),
                10 => corrupt(&wif(seed, true)),
                11 => seed.to_string(),
                _ => rnd(seed, 64, HEX),
            });
        }
        let gated = builtin().scan(text.as_bytes());
        let ungated = ungated().scan(text.as_bytes());
        prop_assert_eq!(gated, ungated, "{}", text);
    }

    /// The WIF and address regexes tried only at each place a value can start, anchored
    /// there, find what the regexes find over whole segments: keys and addresses next
    /// to each other and to base58, base64 and bech32 text, non-ASCII letters the
    /// address regex takes (the Kelvin sign in `(?i)k`), separators, and filler that
    /// moves them across segment boundaries.
    #[test]
    fn anchored_keywordless_search_loses_nothing(parts in proptest::collection::vec((0u8..12, any::<u64>()), 1..40)) {
        use base64::Engine as _;
        const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        let mut text = String::new();
        for (kind, seed) in parts {
            text.push_str(&match kind {
                0 => " ".repeat((seed % 2100) as usize),
                1 => wif(seed, seed % 2 == 0),
                2 => rnd(seed, 20 + (seed % 45) as usize, BASE58_DIGITS),
                3 => p2pkh(seed),
                4 => ["+", "/", " ", "\u{212A}", "\u{17F}", "é", "_", "-", "0", "l", "1", "3"][(seed % 12) as usize].to_string(),
                5 => p2wpkh(seed),
                6 => format!("{}{}", ["bc1", "BC1", "tb1", "bc1q\u{212A}"][(seed % 4) as usize], rnd(seed, 6 + (seed % 60) as usize, BECH32)),
                7 => p2tr(seed),
                8 => base64::engine::general_purpose::STANDARD.encode(bytes(seed, 16 + (seed % 300) as usize)),
                9 => corrupt(&wif(seed, true)),
                10 => corrupt(&p2pkh(seed)),
                // A P2SH address (`3...`, the `3` a bech32 character too) after a
                // Kelvin sign inside a bech32 run: inside the address regex's match.
                _ => {
                    let mut p = vec![0x05];
                    p.extend(bytes(seed, 20));
                    let p2sh = bs58::encode(p).with_check().into_string();
                    format!("bc1q{}\u{212A}{p2sh}", rnd(seed, 8, BECH32))
                }
            });
        }
        let gated = builtin().scan(text.as_bytes());
        let ungated = ungated().scan(text.as_bytes());
        prop_assert_eq!(gated, ungated, "{}", text);
    }

    /// The base58check validators decode a candidate once, where they decoded (and
    /// hashed) each of its prefixes with `bs58`: the same verdict on valid keys and
    /// addresses of each version, with base58 digits after them, leading `1`s, one
    /// digit changed, and random base58.
    #[test]
    fn base58_validators_decode_once(
        kind in 0u8..7,
        seed in any::<u64>(),
        ones in 0usize..3,
        tail in 0usize..12,
        broken in any::<bool>(),
    ) {
        let payload = |version: u8, n: usize| {
            let mut p = vec![version];
            let mut k = bytes(seed, n);
            k[0] &= 0x7f;
            p.extend(k);
            p
        };
        let mut text = "1".repeat(ones);
        text.push_str(&match kind {
            0 => wif(seed, true),
            1 => wif(seed, false),
            2 => p2pkh(seed),
            3 => bs58::encode(payload(0x05, 20)).with_check().into_string(),
            4 => bs58::encode(payload(0x6f, 20)).with_check().into_string(),
            5 => bs58::encode(payload(0xef, 32)).with_check().into_string(),
            _ => rnd(seed, 20 + (seed % 40) as usize, BASE58_DIGITS),
        });
        text.push_str(&rnd(seed ^ 0x5eed, tail, BASE58_DIGITS));
        if broken {
            text = corrupt(&text);
        }
        let s = text.as_bytes();
        let check = |s: &[u8]| bs58::decode(s).with_check(None).into_vec().ok();
        let wif_before = [52, 51].iter().any(|&n| {
            s.len() >= n
                && check(&s[..n]).is_some_and(|p| {
                    matches!(p.first(), Some(0x80 | 0xef))
                        && match p.len() {
                            33 => Validator::Secp256k1Key.check(hex::encode(&p[1..]).as_bytes(), 0..64),
                            34 => p[33] == 1 && Validator::Secp256k1Key.check(hex::encode(&p[1..33]).as_bytes(), 0..64),
                            _ => false,
                        }
                })
        });
        let address_before = (25..=s.len().min(35)).rev().any(|n| {
            check(&s[..n]).is_some_and(|p| p.len() == 21 && matches!(p[0], 0x00 | 0x05 | 0x6f | 0xc4))
        });
        prop_assert_eq!(Validator::Wif.check(s, 0..s.len()), wif_before, "{}", text);
        prop_assert_eq!(Validator::BtcAddress.check(s, 0..s.len()), address_before, "{}", text);
    }

    #[test]
    fn url_shaped_input_is_safe(s in "[a-z]{1,5}://[ -~]{0,200}") {
        for f in high_entropy_tokens(&s) {
            prop_assert!(f.offset as usize + f.len <= s.len());
        }
    }
}

/// Real keys are random, and a random value is sometimes ordered by chance: a fixed
/// entropy threshold excused `AKIAAFFA5CZQQ555JKZA` (2.96 bits, under the rule's 3.0).
/// CI's hostile agent walked a random key out base64-encoded in a header, and this was
/// the one cause a probe of that case over 3,000 random keys found. Thousands of random
/// values of each rule's shape, at its shortest length, must all be found.
#[test]
fn a_random_value_of_a_rules_shape_is_found() {
    use crate::tests::UPPER32;
    let rules = RuleSet::builtin();
    type Shape = fn(u64) -> String;
    let shapes: [(&str, Shape); 9] = [
        ("aws-access-key-id", |s| {
            format!("AKIA{}", rnd(s, 16, UPPER32))
        }),
        ("github-pat", |s| format!("ghp_{}", rnd(s, 36, ALNUM))),
        ("huggingface-token", |s| {
            format!("hf_{}", rnd(s, 34, &ALNUM[..52]))
        }),
        ("databricks-token", |s| format!("dapi{}", rnd(s, 32, HEX))),
        ("generic-api-key", |s| {
            format!("api_key = \"{}\"", rnd(s, 32, HEX))
        }),
        ("generic-api-key", |s| {
            format!("api_key = \"{}\"", rnd(s, 20, HEX))
        }),
        ("generic-api-key", |s| {
            format!("client_secret: {}", rnd(s, 16, ALNUM))
        }),
        ("generic-api-key", |s| {
            format!("auth_token={}", rnd(s, 24, URLSAFE))
        }),
        ("aws-secret-access-key", |s| {
            format!("aws_secret_access_key = {}", rnd(s, 40, B64))
        }),
    ];
    for (rule, shape) in shapes {
        let missed: Vec<String> = (0..4000u64)
            .map(shape)
            .filter(|v| !rules.scan(v.as_bytes()).iter().any(|f| f.rule_id == rule))
            .collect();
        assert!(
            missed.is_empty(),
            "{rule}: {} of 4000 random values excused, as {:?}",
            missed.len(),
            &missed[..1]
        );
    }
    // The probe's key, plain and in a header as base64 (the case CI's agent won).
    use base64::Engine as _;
    let k = "AKIAAFFA5CZQQ555JKZA";
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k);
    for t in [
        k.to_string(),
        format!("https://up.test/echo\nx-data: {b64}\naccept: */*\n"),
    ] {
        let found = rules.scan_deep(t.as_bytes(), &Limits::default()).unwrap();
        assert!(
            found.iter().any(|f| f.rule_id == "aws-access-key-id"),
            "{t}"
        );
    }
    // Ordered values are still excused: placeholders sit far below random.
    for t in [
        "api_key = \"abababababababababababab\"",
        "api_key = \"0000111100001111\"",
        "AKIAABABABABABABABAB",
    ] {
        assert!(rules.scan(t.as_bytes()).is_empty(), "{t}");
    }
}

/// The floor's mean is the sampled mean of random values (hex 16: 3.21 bits; base32
/// 20: 3.79; alphanumerics 32: 4.55; 1e5 draws each).
#[test]
fn the_expected_entropy_of_a_random_value_is_exact() {
    for (n, k, sampled) in [(16, 16, 3.21), (20, 32, 3.79), (32, 62, 4.55)] {
        let e = crate::rules::expected_random_entropy(n, k);
        assert!((e - sampled).abs() < 0.02, "n={n} k={k}: {e} vs {sampled}");
    }
}
