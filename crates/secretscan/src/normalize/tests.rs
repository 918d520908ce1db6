//! Tests of normalization: every encoding of real-format keys is found, nested ones
//! too, ordinary traffic shapes add nothing, bad input never panics (proptest), and
//! `inflate` undoes each coding within its cap. Secret-shaped strings are assembled at
//! run time.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;

use super::*;
use crate::test_support::rnd;

const UPPER32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn rules() -> &'static RuleSet {
    static R: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    R.get_or_init(RuleSet::builtin)
}

fn aws_key() -> String {
    format!("AKIA{}", rnd(101, 16, UPPER32))
}

fn gh_token() -> String {
    format!("ghp_{}", rnd(102, 36, ALNUM))
}

/// An AWS secret key with `/` and `+` in it, after its keyword.
fn aws_secret_line() -> String {
    let mut s = rnd(103, 40, B64).into_bytes();
    s[7] = b'/';
    s[19] = b'+';
    format!(
        "aws_secret_access_key = {}",
        String::from_utf8(s).expect("ascii")
    )
}

fn percent_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Percent-encode every third byte, and what a URL encoder always would.
fn percent_some(s: &str) -> String {
    s.bytes()
        .enumerate()
        .map(|(i, b)| {
            if i % 3 == 1 || !b.is_ascii_alphanumeric() {
                format!("%{b:02x}")
            } else {
                (b as char).to_string()
            }
        })
        .collect()
}

fn form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b == b'_' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn qp(s: &str) -> String {
    // Every other byte escaped, and a soft line break in the middle.
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        if i == s.len() / 2 {
            out.push_str("=\r\n");
        }
        if i % 2 == 0 {
            out.push_str(&format!("={b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

fn json_u(s: &str) -> String {
    s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
}

fn json_u_some(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 4 == 0 {
                format!("\\u{:04X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn x_escapes(s: &str) -> String {
    s.bytes().map(|b| format!("\\x{b:02x}")).collect()
}

fn rust_u(s: &str) -> String {
    s.chars()
        .map(|c| format!("\\u{{{:x}}}", c as u32))
        .collect()
}

fn octal(s: &str) -> String {
    s.bytes().map(|b| format!("\\{b:03o}")).collect()
}

fn html(s: &str) -> String {
    s.bytes()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                format!("&#x{b:x};")
            } else {
                format!("&#{b};")
            }
        })
        .collect()
}

fn zero_width(s: &str) -> String {
    let marks = [
        '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}',
    ];
    s.chars()
        .enumerate()
        .flat_map(|(i, c)| [c, marks[i % marks.len()]])
        .collect()
}

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() {
                char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

fn math_bold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' => char::from_u32(0x1D400 + (c as u32 - 'A' as u32)).unwrap_or(c),
            'a'..='z' => char::from_u32(0x1D41A + (c as u32 - 'a' as u32)).unwrap_or(c),
            '0'..='9' => char::from_u32(0x1D7CE + (c as u32 - '0' as u32)).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn hex_lower(s: &str) -> String {
    hex::encode(s)
}

fn hex_upper(s: &str) -> String {
    hex::encode_upper(s)
}

/// RFC 4648 base32, upper case, no padding.
fn base32_upper(s: &str) -> String {
    crate::test_support::base32(s.as_bytes()).to_ascii_uppercase()
}

/// UTF-16 code units of `s` as a (Rust) string of their bytes: NUL and ASCII.
fn utf16(s: &str, be: bool) -> String {
    s.encode_utf16()
        .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
        .map(char::from)
        .collect()
}

type Enc = fn(&str) -> String;

/// Every encoding, with the `via` it must be found through.
fn encodings() -> Vec<(&'static str, Enc, &'static str)> {
    vec![
        ("percent all", percent_all, "percent"),
        ("percent some", percent_some, "percent"),
        ("form", form, "form"),
        ("base64", |s| STANDARD.encode(s), "base64"),
        ("base64 no pad", |s| STANDARD_NO_PAD.encode(s), "base64"),
        ("base64 url", |s| URL_SAFE.encode(s), "base64"),
        ("base64 url no pad", |s| URL_SAFE_NO_PAD.encode(s), "base64"),
        (
            "base64 shifted",
            |s| format!("q{}", STANDARD.encode(s)),
            "base64",
        ),
        (
            "base64 shifted 2",
            |s| format!("x9{}", STANDARD.encode(s)),
            "base64",
        ),
        (
            "base64 shifted 3",
            |s| format!("abc{}", URL_SAFE.encode(s)),
            "base64",
        ),
        ("hex", hex_lower, "hex"),
        ("hex upper", hex_upper, "hex"),
        ("hex shifted", |s| format!("f{}", hex::encode(s)), "hex"),
        ("base32", base32_upper, "base32"),
        (
            "base32 lower",
            |s| base32_upper(s).to_ascii_lowercase(),
            "base32",
        ),
        (
            "base32 padded, shifted",
            |s| {
                let mut e = format!("AB{}", base32_upper(s));
                while e.len() % 8 != 0 {
                    e.push('=');
                }
                e
            },
            "base32",
        ),
        ("quoted-printable", qp, "qp"),
        ("utf-16le", |s| utf16(s, false), "utf16"),
        ("utf-16be", |s| utf16(s, true), "utf16"),
        ("json \\u", json_u, "escape"),
        ("json \\u some", json_u_some, "escape"),
        ("\\x", x_escapes, "escape"),
        ("\\u{}", rust_u, "escape"),
        ("octal", octal, "escape"),
        ("html", html, "html"),
        ("zero-width", zero_width, "unicode"),
        ("fullwidth", fullwidth, "unicode"),
        ("math bold", math_bold, "unicode"),
    ]
}

/// `(rule, plain text)` pairs planted in the tests.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("aws-access-key-id", aws_key()),
        ("github-pat", gh_token()),
        ("aws-secret-access-key", aws_secret_line()),
    ]
}

fn deep(data: &[u8]) -> Vec<Finding> {
    rules()
        .scan_deep(data, &Limits::default())
        .expect("within budget")
}

#[test]
fn the_plain_secrets_are_found_raw() {
    for (rule, s) in secrets() {
        let f = deep(format!("x {s} y").as_bytes());
        assert!(
            f.iter().any(|f| f.rule_id == rule && f.via.is_empty()),
            "{rule}: {f:?}"
        );
    }
}

#[test]
fn every_encoding_of_every_secret_is_found_with_its_encoded_span() {
    let mut missed = Vec::new();
    let mut tested = std::collections::BTreeSet::new();
    for (rule, secret) in secrets() {
        for (name, enc, via) in encodings() {
            let encoded = enc(&secret);
            if rules()
                .scan(encoded.as_bytes())
                .iter()
                .any(|f| f.rule_id == rule)
            {
                continue; // this encoding leaves this secret as it is (form of a bare key)
            }
            tested.insert(name);
            let prefix = "POST /upload?x=1 {\"data\": \"";
            let body = format!("{prefix}{encoded}\"}}\n");
            let found = deep(body.as_bytes());
            let hit = found.iter().find(|f| f.rule_id == rule);
            let Some(f) = hit else {
                missed.push(format!("{rule} as {name}"));
                continue;
            };
            assert!(
                f.via.split('>').any(|v| v == via),
                "{rule} {name}: via {}",
                f.via
            );
            let (start, end) = (prefix.len() as u64, (prefix.len() + encoded.len()) as u64);
            assert!(
                f.offset >= start.saturating_sub(1)
                    && f.offset + f.len as u64 <= end + 1
                    && f.len > 0,
                "{rule} {name}: span {}+{} outside {start}..{end}",
                f.offset,
                f.len
            );
        }
    }
    assert!(missed.is_empty(), "missed: {missed:?}");
    assert_eq!(
        tested.len(),
        encodings().len(),
        "every encoding hides some secret"
    );
}

#[test]
fn nested_encodings_are_found() {
    let key = aws_key();
    let tok = gh_token();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            percent_all(&STANDARD.encode(&key)),
            "aws-access-key-id",
            "percent>base64",
        ),
        (
            // encodeURIComponent(btoa(..)): `+`, `/` and `=` percent-encoded.
            percent_some(&STANDARD.encode(format!("{}\n", aws_secret_line()))),
            "aws-secret-access-key",
            "percent>base64",
        ),
        (
            STANDARD.encode(hex::encode(&tok)),
            "github-pat",
            "base64>hex",
        ),
        (json_u(&percent_all(&tok)), "github-pat", "escape>percent"),
        (
            json_u_some(&percent_some(&URL_SAFE_NO_PAD.encode(&tok))),
            "github-pat",
            "escape>percent>base64",
        ),
        (
            STANDARD.encode(format!("{{\"k\": \"{}\"}}", json_u(&key))),
            "aws-access-key-id",
            "base64>escape",
        ),
        (
            STANDARD.encode(STANDARD.encode(STANDARD.encode(&tok))),
            "github-pat",
            "base64>base64>base64",
        ),
        (
            zero_width(&percent_some(&tok)),
            "github-pat",
            "unicode>percent",
        ),
        (
            format!(
                "{{\"args\": \"{}\"}}",
                fullwidth(&tok).replace('_', "\\u005f")
            ),
            "github-pat",
            "",
        ),
        (
            // A JSON document inside a JSON string: the keyword's quotes are escaped.
            format!(
                "{{\"arguments\": \"{{\\\"aws_secret_access_key\\\": \\\"{}\\\"}}\"}}",
                aws_secret_line()
                    .rsplit(' ')
                    .next()
                    .unwrap_or_default()
                    .replace('/', "\\/")
            ),
            "aws-secret-access-key",
            "escape",
        ),
    ];
    for (data, rule, via) in cases {
        let found = deep(data.as_bytes());
        let f = found.iter().find(|f| f.rule_id == rule);
        assert!(
            f.is_some(),
            "{rule} via {via} not found in {data:?}: {found:?}"
        );
        if let Some(f) = f
            && !via.is_empty()
        {
            assert_eq!(f.via, via, "{data}");
        }
    }
}

#[test]
fn a_secret_deep_in_a_large_body_is_found_and_mapped_back() {
    let filler =
        "{\"role\": \"user\", \"content\": \"fn main() {\\n    println!(\\\"hi\\\");\\n}\"}\n";
    let mut body = filler.repeat(2000);
    let at = body.len();
    let enc = percent_all(&gh_token());
    body.push_str(&enc);
    body.push_str(&filler.repeat(2000));
    let found = deep(body.as_bytes());
    let f = found
        .iter()
        .find(|f| f.rule_id == "github-pat")
        .expect("found");
    assert_eq!(f.via, "percent");
    assert_eq!((f.offset as usize, f.len), (at, enc.len()));
}

/// Traffic shapes that must not fire: decoding adds no finding to what the bytes as
/// given already give (and those give none except a JWT's own rule).
#[test]
fn benign_traffic_adds_no_findings() {
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"
        .iter()
        .copied()
        .chain(rnd(7, 30_000, ALNUM).bytes().map(|b| b.wrapping_mul(37)))
        .collect();
    let jwt = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        URL_SAFE_NO_PAD
            .encode(r#"{"sub":"1234567890","name":"John Doe","iat":1516239022,"aud":"api"}"#),
        URL_SAFE_NO_PAD.encode(rnd(8, 256, ALNUM))
    );
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let shapes: Vec<(&str, String)> = vec![
        (
            "uuids",
            "{\"id\": \"3f2b8c1e-9d4a-4f6b-8e2a-1c5d7b9e0f3a\", \"parent\": \"a1b2c3d4-e5f6-4789-abcd-ef0123456789\"}"
                .into(),
        ),
        ("sha256", format!("sha256:{sha}\n\"integrity\": \"sha256-{}\"", STANDARD.encode(hex::decode(sha).unwrap_or_default()))),
        ("png", format!("{{\"type\": \"image\", \"data\": \"{}\"}}", STANDARD.encode(&png))),
        (
            "npm tarball",
            "GET https://registry.npmjs.org/@types/node/-/node-20.11.30.tgz HTTP/1.1\nGET https://files.pythonhosted.org/packages/5b/1c/7d3f0a7c4b2e8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9/requests-2.31.0-py3-none-any.whl#sha256=58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f".into(),
        ),
        (
            "git smart http",
            "0032want 3a1f5e9c0b7d2e4f6a8c1b3d5e7f9a0b2c4d6e8f\n0032have 0b2c4d6e8f3a1f5e9c0b7d2e4f6a8c1b3d5e7f9a\n00000009done\n".into(),
        ),
        (
            "model api call",
            format!(
                "{{\"model\":\"claude\",\"messages\":[{{\"role\":\"user\",\"content\":\"Fix this:\\n```rust\\nfn main() {{\\n    let url = \\\"https://example.com/a%20b?q=1&r=2\\\";\\n    println!(\\\"{{}}\\\", url);\\n}}\\n```\\nThanks \\u00e9\\u4e2d\\ud83d\\ude00\"}}],\"stream\":true,\"metadata\":{{\"user_id\":\"{}\"}}}}",
                rnd(9, 64, b"0123456789abcdef")
            ),
        ),
        (
            "form post",
            "name=Jane+Doe&comment=Hello%2C+world%21+caf%C3%A9&redirect=https%3A%2F%2Fexample.com%2Fpath%3Fa%3D1&page=42&id=55".into(),
        ),
        ("code", "let x =\n    compute(a, b);\nif y == 0x41 { z = \"\\x41\" }\n".repeat(50)),
        ("non-ascii prose", "Grüße aus Köln — “quoted” text, ½ cup, ﬁne, emoji 👨‍👩‍👧 and ①.\n".repeat(20)),
        ("jwt", format!("Authorization: Bearer {jwt}\n")),
        (
            "mime",
            format!(
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 au lait, soft =\r\nbreak and a=3Db.\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                STANDARD.encode("The quick brown fox jumps over the lazy dog, many times over.")
            ),
        ),
    ];
    for (name, data) in shapes {
        let raw = rules().scan(data.as_bytes());
        let found = deep(data.as_bytes());
        assert_eq!(found, raw, "{name}: decoding added findings");
        if name != "jwt" {
            assert!(raw.is_empty(), "{name}: {raw:?}");
        }
    }
}

#[test]
fn malformed_and_truncated_escapes_do_not_panic() {
    let cases: Vec<&[u8]> = vec![
        b"%",
        b"%4",
        b"%G1",
        b"abc%",
        b"=",
        b"=4",
        b"=\r",
        b"\\",
        b"\\u",
        b"\\u12",
        b"\\uD800",
        b"\\uD800\\u0041",
        b"\\uDC00",
        b"\\u{}",
        b"\\u{110000}",
        b"\\u{1234567}",
        b"\\x",
        b"\\x4",
        b"\\400",
        b"&#",
        b"&#;",
        b"&#x;",
        b"&#x110000;",
        b"&#0;",
        b"&#99999999999;",
        b"&am",
        b"\xff\xfe\xfd",
        b"\xe2\x80",
        b"\xef\xbc",
        b"\xf0\x9d\x90",
        b"\xc3",
        b"QUtJQVE3UlpO=",
        b"====",
        b"A",
        b"\x00\x00\x00",
    ];
    for c in cases {
        let _ = deep(c);
        let _ = text(c);
        let mut long = c.repeat(500);
        long.extend_from_slice(b"AKIA");
        let _ = deep(&long);
    }
}

#[test]
fn the_budget_refuses_rather_than_passes() {
    // Dense strong escapes decode to a view as long as the input; a budget below that
    // is exceeded.
    let data = percent_all(&"A".repeat(50_000));
    let tight = Limits {
        max_output: 4_000,
        min_output: 0,
        ..Limits::default()
    };
    assert_eq!(
        rules().scan_deep(data.as_bytes(), &tight),
        Err(NormalizeError::Budget { budget: 4_000 })
    );
    // Nesting past max_depth is not decoded, and not an error.
    let mut nested = gh_token();
    for _ in 0..6 {
        nested = STANDARD.encode(nested);
    }
    let shallow = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    assert!(
        rules()
            .scan_deep(nested.as_bytes(), &shallow)
            .unwrap()
            .is_empty()
    );
    assert_eq!(Limits::default().budget(10), 1 << 20);
    assert_eq!(Limits::default().budget(1 << 30), 64 << 20);
}

#[test]
fn text_drops_invisibles_and_folds_compatibility_forms() {
    assert!(matches!(text(b"plain ascii"), Cow::Borrowed("plain ascii")));
    let s = format!(
        "{} \u{200B}ignore\u{202E} previous\u{FE0F} ﬁle ①",
        fullwidth("IGNORE")
    );
    assert_eq!(text(s.as_bytes()), "IGNORE ignore previous file 1");
    assert_eq!(text(b"a\xffb"), "a\u{FFFD}b");
    assert!(is_invisible('\u{E0041}') && is_invisible('\u{00AD}') && !is_invisible('a'));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

#[test]
fn inflate_undoes_each_coding_and_stacks() {
    let body = format!("{{\"token\": \"{}\"}}", gh_token())
        .repeat(20)
        .into_bytes();
    let cap = 1 << 20;
    for (ce, enc) in [
        ("gzip", gzip(&body)),
        ("x-gzip", gzip(&body)),
        ("deflate", zlib(&body)),
        ("deflate", raw_deflate(&body)),
        ("br", br(&body)),
        ("zstd", zstd(&body)),
        ("identity", body.clone()),
        ("", body.clone()),
        ("gzip, br", br(&gzip(&body))),
        ("zstd,gzip , deflate", zlib(&gzip(&zstd(&body)))),
        ("GZIP", gzip(&body)),
    ] {
        assert_eq!(inflate(ce, &enc, cap).unwrap(), body, "{ce}");
        let found = deep(&inflate(ce, &enc, cap).unwrap());
        assert!(found.iter().any(|f| f.rule_id == "github-pat"), "{ce}");
    }
    // Two gzip members, two zstd frames.
    let two = [gzip(b"first "), gzip(b"second")].concat();
    assert_eq!(inflate("gzip", &two, cap).unwrap(), b"first second");
    let two = [zstd(b"first "), zstd(b"second")].concat();
    assert_eq!(inflate("zstd", &two, cap).unwrap(), b"first second");
}

#[test]
fn inflate_refuses_bombs_unknown_codings_and_garbage() {
    let zeros = vec![0u8; 8 << 20];
    for (ce, enc) in [
        ("gzip", gzip(&zeros)),
        ("deflate", zlib(&zeros)),
        ("br", br(&zeros)),
        ("zstd", zstd(&zeros)),
        ("gzip, gzip", gzip(&gzip(&zeros))),
    ] {
        assert!(enc.len() < 1 << 20, "{ce}: {} bytes", enc.len());
        assert!(
            matches!(
                inflate(ce, &enc, 1 << 20),
                Err(InflateError::TooLarge { cap: 1048576 })
            ),
            "{ce}"
        );
    }
    assert!(
        matches!(inflate("compress", b"x", 10), Err(InflateError::Unknown(c)) if c == "compress")
    );
    assert!(matches!(
        inflate("gzip, snappy", b"x", 10),
        Err(InflateError::Unknown(_))
    ));
    assert!(matches!(
        inflate("gzip,gzip,gzip,gzip,gzip", b"x", 10),
        Err(InflateError::TooManyLayers { .. })
    ));
    for ce in ["gzip", "deflate", "br", "zstd"] {
        assert!(
            matches!(
                inflate(ce, b"\x1f\x8b this is not compressed", 1 << 20),
                Err(InflateError::Corrupt { .. }) | Err(InflateError::TooLarge { .. })
            ),
            "{ce}"
        );
        let mut truncated = match ce {
            "gzip" => gzip(&zeros[..4096]),
            "deflate" => zlib(&zeros[..4096]),
            "br" => br(&zeros[..4096]),
            _ => zstd(&zeros[..4096]),
        };
        truncated.truncate(truncated.len() / 2);
        assert!(inflate(ce, &truncated, 1 << 20).is_err(), "{ce} truncated");
    }
    let e = inflate("gzip", b"garbage", 10).unwrap_err();
    assert!(!e.to_string().contains("garbage"));
}

/// Bytes that reach the escape and run paths often.
fn escapy() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop_oneof![
        Just(b"%".to_vec()),
        Just(b"%4".to_vec()),
        Just(b"%41".to_vec()),
        Just(b"%2B".to_vec()),
        Just(b"+".to_vec()),
        Just(b"=".to_vec()),
        Just(b"=\r\n".to_vec()),
        Just(b"=3D".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\u00".to_vec()),
        Just(b"\\u0041".to_vec()),
        Just(b"\\uD83D".to_vec()),
        Just(b"\\uDE00".to_vec()),
        Just(b"\\u{1F600}".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b"\\101".to_vec()),
        Just(b"&#x41;".to_vec()),
        Just(b"&#65".to_vec()),
        Just("\u{200B}".as_bytes().to_vec()),
        Just("\u{FF21}".as_bytes().to_vec()),
        Just("\u{FDFA}".as_bytes().to_vec()),
        Just(b"\xef\xbc".to_vec()),
        Just(b"QUtJQVE3UlpO".to_vec()),
        Just(b"AKIA".to_vec()),
        Just(b"ghp_".to_vec()),
        Just(b"aws_secret_access_key=".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
        "[A-Za-z0-9+/_-]{0,40}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(atoms, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn scan_deep_and_text_never_panic_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let tight = Limits { max_output: 1 << 16, min_output: 0, ..Limits::default() };
        let _ = rules().scan_deep(&data, &tight);
        let _ = text(&data);
    }

    #[test]
    fn scan_deep_never_panics_on_escape_soup(data in escapy()) {
        match rules().scan_deep(&data, &Limits::default()) {
            Ok(found) => {
                for f in found {
                    prop_assert!(f.offset as usize + f.len <= data.len(), "{f:?} past {}", data.len());
                }
            }
            Err(NormalizeError::Budget { .. }) => {}
        }
        let _ = text(&data);
    }

    #[test]
    fn inflate_never_panics_and_keeps_its_cap(data in proptest::collection::vec(any::<u8>(), 0..2048), which in 0usize..5) {
        let ce = ["gzip", "deflate", "br", "zstd", "gzip, br"][which];
        if let Ok(out) = inflate(ce, &data, 4096) {
            prop_assert!(out.len() <= 4096);
        }
        // A valid stream with garbage mixed in.
        let mut s = match which { 0 => gzip(&data), 1 => zlib(&data), 2 => br(&data), _ => zstd(&data) };
        if let Some(b) = s.get_mut(data.len() % 7 + 2) { *b ^= 0x5a; }
        if let Ok(out) = inflate(ce, &s, 4096) {
            prop_assert!(out.len() <= 4096);
        }
    }
}

/// An AWS key id is upper case and digits only: lower-cased it is the same key, found
/// through the `upper` view; lower-case text around such keywords is left alone.
#[test]
fn a_lower_cased_upper_case_only_key_is_folded_back() {
    let key = aws_key();
    let lower = key.to_ascii_lowercase();
    for data in [
        format!("GET /q?d={lower} HTTP/1.1\r\n"),
        format!("{{\"k\": \"x{lower}yz\"}}"),
        percent_all(&lower),
        STANDARD.encode(format!("id={lower}\n")),
    ] {
        let found = deep(data.as_bytes());
        assert!(
            found
                .iter()
                .any(|f| f.rule_id == "aws-access-key-id" && f.via.contains("upper")),
            "{data}: {found:?}"
        );
    }
    let f = deep(format!("d={lower}&e=1").as_bytes());
    assert!(
        f.iter().any(|f| (f.offset, f.len) == (2, 20)),
        "span of the run: {f:?}"
    );
    // Lower-case text with the keywords in it, and hashes: nothing.
    for benign in [
        "the asia pacific region and akia sounds; southeastasia1region2central3 ok",
        "sha1 3a1f5e9c0b7d2e4f6a8c1b3d5e7f9a0b2c4d6e8f asiaeast2 akiaxx",
        "https://asia-northeast1-docker.pkg.dev/project/repo/image@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ] {
        assert_eq!(deep(benign.as_bytes()), vec![], "{benign}");
    }
}

#[test]
fn only_rules_matching_no_lower_case_are_folded() {
    use crate::rules::upper_only;
    assert!(upper_only(
        "((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})"
    ));
    assert!(upper_only(r"\bAKIA[A-Z0-9]{16}\d\s"));
    for lower in [
        "(?i)AKIA[A-Z]{16}",
        "ghp_[0-9A-Za-z]{36}",
        r"AKIA\w{16}",
        r"AKIA\S{16}",
        "AKIA.{16}",
        "AKIA[^ ]{16}",
        r"AKIA\p{Lu}",
    ] {
        assert!(!upper_only(lower), "{lower}");
    }
    assert_eq!(
        rules().fold_keywords,
        vec!["akia", "asia", "abia", "acca", "a3t"]
    );
}

/// UTF-16 text: found in either byte order amid other bytes; binary with zeros in it
/// (a PNG, a zero-filled buffer, UTF-16 that is not ASCII) makes no view.
#[test]
fn utf16_text_is_read_without_its_zero_bytes() {
    let tok = gh_token();
    for be in [false, true] {
        let mut data = b"\x89PNG\0\0\x01junk ".to_vec();
        data.extend(
            utf16(&format!("token={tok}\n"), be)
                .chars()
                .map(|c| c as u8),
        );
        data.extend_from_slice(b"\xff\xfe tail");
        let found = deep(&data);
        let f = found
            .iter()
            .find(|f| f.rule_id == "github-pat")
            .unwrap_or_else(|| panic!("be={be}: {found:?}"));
        assert_eq!(f.via, "utf16");
        // After the 12-byte prefix and `token=`.
        let start = 12 + 2 * 6;
        assert!(
            f.offset as usize >= start - 1
                && f.offset as usize + f.len <= start + 2 * tok.len() + 1,
            "be={be}: span {}+{}",
            f.offset,
            f.len
        );
    }
    let mut benign = vec![0u8; 4096];
    benign.extend(
        utf16("Grüße aus Köln, 中文, ①", false)
            .chars()
            .map(|c| c as u8),
    );
    benign.extend(
        utf16("plain words here, nothing secret.", true)
            .chars()
            .map(|c| c as u8),
    );
    assert_eq!(deep(&benign), vec![]);
    // A short stretch makes no view.
    let mut short = Vec::new();
    let mut used = None;
    runs::utf16_runs(&utf16("abc", false).bytes().collect::<Vec<_>>(), |a, b| {
        used = Some((a, b))
    });
    short.push(used);
    assert_eq!(short, vec![None]);
}

/// A gzip or zlib stream inside the data (a gzip body inside a gzip body, gzip in
/// base64 in JSON) is inflated and scanned; a truncated one as far as it goes; a bomb
/// refuses the input; look-alikes that do not inflate add nothing.
#[test]
fn compressed_streams_inside_are_inflated() {
    let tok = gh_token();
    let text = format!(
        "{}token: {tok}\n{}",
        "fn main() { work(); }\n".repeat(30),
        "// tail\n".repeat(30)
    );
    let gz = gzip(text.as_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("gzip", gz.clone(), "inflate"),
        ("gzip in gzip", gzip(&gz), "inflate>inflate"),
        ("zlib", zlib(text.as_bytes()), "inflate"),
        (
            "gzip in base64 in json",
            format!("{{\"blob\": \"{}\"}}", STANDARD.encode(&gz)).into_bytes(),
            "inflate",
        ),
        ("truncated gzip", gz[..gz.len() - 12].to_vec(), "inflate"),
    ];
    for (name, data, via) in cases {
        let found = deep(&data);
        let f = found
            .iter()
            .find(|f| f.rule_id == "github-pat")
            .unwrap_or_else(|| panic!("{name}: {found:?}"));
        assert_eq!(f.via, via, "{name}");
    }
    // A bomb: 64 MiB of zeros in a small gzip, over the budget.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(matches!(
        rules().scan_deep(&bomb, &Limits::default()),
        Err(NormalizeError::Budget { .. })
    ));
    // Look-alikes: a gzip header then junk, base64 runs starting `H4sI` and `eJ`.
    let mut fake = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
    fake.extend(rnd(11, 200, ALNUM).bytes());
    assert_eq!(deep(&fake), rules().scan(&fake));
    let words = format!(
        "H4sI{} eJzz{} x^abc",
        rnd(12, 60, ALNUM),
        rnd(13, 60, ALNUM)
    );
    assert_eq!(deep(words.as_bytes()), vec![]);
}

/// Sorted, disjoint spans of `data` from random cut points.
fn spans_of(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut c: Vec<usize> = cuts.iter().map(|&x| x % (len + 1)).collect();
    c.sort_unstable();
    c.dedup();
    c.chunks_exact(2)
        .map(|w| (w[0], w[1]))
        .filter(|&(a, b)| a < b)
        .collect()
}

fn esc_fields(e: &escapes::Escapes, x: &escapes::Esc) -> (usize, usize, Vec<u8>, bool) {
    (x.pos, x.len, e.decoded(x).to_vec(), x.strong)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    /// The short lists of the input as given are the full list cut down: the anchor
    /// list holds every strong escape and every one in its spans, with the strength
    /// the full list gives it; the island list is exactly the full list's escapes that
    /// start in the islands (its parse skips the text between them).
    #[test]
    fn kept_escapes_are_the_full_list_cut_down(
        data in escapy(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let spans = spans_of(data.len(), &cuts);
        let inside = |p: usize| spans.iter().any(|&(a, b)| a <= p && p < b);
        for kind in escapes::Kind::ALL {
            let full = escapes::find(kind, &data);
            let all: Vec<_> = full.list.iter().map(|x| esc_fields(&full, x)).collect();

            let a = escapes::find_kept(kind, &data, escapes::Keep::Anchors(escapes::Within::new(spans.clone())));
            let got: Vec<_> = a.list.iter().map(|x| esc_fields(&a, x)).collect();
            for x in &got {
                prop_assert!(all.contains(x), "{kind:?}: {x:?} not in the full list");
            }
            for x in all.iter().filter(|x| x.3 || inside(x.0)) {
                prop_assert!(got.contains(x), "{kind:?}: anchor {x:?} missing");
            }

            // Backslash and HTML in the input as given: parsed only at the places a
            // strong escape can start and in the spans, which holds the same anchors.
            if let Some(starts) = escapes::strong_starts(kind, &data) {
                for x in all.iter().filter(|x| x.3) {
                    prop_assert!(starts.contains(&x.0), "{kind:?}: strong {x:?} at no start");
                }
                let mut at: Vec<_> = spans.iter().copied().chain(starts.iter().map(|&s| (s, s + 1))).collect();
                at.sort_unstable();
                let s = escapes::find_kept(kind, &data, escapes::Keep::Inside(escapes::Within::new(merge(at.into_iter()))));
                let got: Vec<_> = s.list.iter().map(|x| esc_fields(&s, x)).collect();
                for x in &got {
                    prop_assert!(all.contains(x), "{kind:?}: {x:?} not in the full list");
                }
                for x in all.iter().filter(|x| x.3 || inside(x.0)) {
                    prop_assert!(got.contains(x), "{kind:?}: anchor {x:?} missing");
                }
            }

            let i = escapes::find_kept(kind, &data, escapes::Keep::Inside(escapes::Within::new(spans.clone())));
            let got: Vec<_> = i.list.iter().map(|x| { let f = esc_fields(&i, x); (f.0, f.1, f.2) }).collect();
            let want: Vec<_> = all.iter().filter(|x| inside(x.0) || matches!(kind, escapes::Kind::QuotedPrintable | escapes::Kind::Unicode)).map(|x| (x.0, x.1, x.2.clone())).collect();
            prop_assert_eq!(got, want, "{:?}", kind);
        }
    }

    /// The places a strong backslash escape can start, from one pass over the pairs,
    /// are every occurrence of the seven patterns (a search for each): backslashes
    /// before every kind of byte, in runs, across the 256-byte steps and at the end,
    /// and after blocks without one.
    #[test]
    fn backslash_starts_are_every_pattern(
        data in prop_oneof![
            escapy(),
            proptest::collection::vec(proptest::sample::select(b"\\/ux0123489nt\"a".to_vec()), 0..1200),
            // Stretches of hundreds of bytes without a backslash (an image) between
            // them: found again after each.
            proptest::collection::vec(prop_oneof![
                200 => Just(b'a'),
                1 => Just(b'\\'),
                2 => Just(b'u'),
            ], 0..3000),
        ],
    ) {
        let mut want: Vec<usize> = [&b"\\/"[..], b"\\u", b"\\x", b"\\0", b"\\1", b"\\2", b"\\3"]
            .iter()
            .flat_map(|p| memchr::memmem::find_iter(&data, p).collect::<Vec<_>>())
            .collect();
        want.sort_unstable();
        prop_assert_eq!(escapes::backslash_starts(&data), want);
    }
}

/// Text of mostly `alphabet` bytes, some `breaks` and some of any byte, up to `max`
/// long.
fn alphabet_soup(
    alphabet: &'static [u8],
    breaks: &'static [u8],
    max: usize,
) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(alphabet.to_vec()),
            1 => proptest::sample::select(breaks.to_vec()),
            1 => any::<u8>(),
        ],
        0..max,
    )
}

proptest! {
    /// The base64 context of a strong `/`, `+` or `=` (walked only as far as it still
    /// needs) gives the strength that counting up to `RUN` bytes of the class on each
    /// side gives: escapes of every length at every place, in runs of the class of
    /// every length, across `%`, `\\` and other bytes.
    #[test]
    fn base64_context_walks_only_what_it_needs(
        data in alphabet_soup(b"aZ09+/-_%\\", b" .=\"", 120),
        picks in proptest::collection::vec((any::<usize>(), 1usize..13, proptest::sample::select(b"/+=aZ ".to_vec()), any::<bool>()), 0..8),
    ) {
        const RUN: usize = runs::BASE64_MIN;
        let class = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'+' | b'/' | b'_' | b'-' | b'\\');
        let mut out = escapes::Escapes::default();
        for (pos, len, dec, strong) in picks {
            let pos = pos % (data.len() + 1);
            let len = len.min(data.len() - pos);
            out.list.push(escapes::Esc { pos, len, dec: out.bytes.len(), dec_len: 1, strong });
            out.bytes.push(dec);
        }
        let want: Vec<bool> = out.list.iter().map(|e| {
            if !e.strong || !matches!(out.bytes[e.dec], b'/' | b'+' | b'=') {
                return e.strong;
            }
            let left = data[..e.pos].iter().rev().take(RUN).take_while(|&&b| class(b)).count();
            let right = data[e.pos + e.len..].iter().take(RUN).take_while(|&&b| class(b)).count();
            left + e.len + right >= RUN
        }).collect();
        escapes::base64_context(&data, &mut out);
        prop_assert_eq!(out.list.iter().map(|e| e.strong).collect::<Vec<_>>(), want);
    }
}

proptest! {
    /// Named HTML references (compared with a name only when the byte after the `&`
    /// is a name's second one, in either case) are the ones a comparison with every
    /// name at every `&` finds: names in any case, cut short, run together, and the
    /// `&page=` of a form.
    #[test]
    fn named_html_references_equal_every_comparison(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "&amp;", "&AMP;", "&lt;", "&Lt;", "&gt;", "&quot;", "&QuOt;", "&apos;", "&nbsp;",
            "&nbsp", "&am", "&l", "&", "&&", "&page=2", "&lang=en", "&q", "a", ";", " ",
        ]), 0..40),
    ) {
        let data = parts.concat().into_bytes();
        const NAMED: [(&str, &str); 6] =
            [("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&apos;", "'"), ("&nbsp;", " ")];
        let mut want = Vec::new();
        let mut i = 0;
        while let Some(p) = data[i..].iter().position(|&b| b == b'&').map(|o| i + o) {
            let rest = &data[p..];
            match NAMED.iter().find(|(n, _)| rest.len() >= n.len() && rest[..n.len()].eq_ignore_ascii_case(n.as_bytes())) {
                Some((n, d)) => {
                    want.push((p, n.len(), d.as_bytes().to_vec()));
                    i = p + n.len();
                }
                None => i = p + 1,
            }
        }
        let found = escapes::find(escapes::Kind::Html, &data);
        let got: Vec<_> = found.list.iter().map(|x| (x.pos, x.len, found.decoded(x).to_vec())).collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    /// The next escape's first byte, from a block's mask kept between calls, is
    /// where `memchr2` finds it: bytes that differ from the needles by one bit or by
    /// a borrow (`$`, `&`, `0x80 | %`, 0, 0xFF), runs of needles, sparse needles past
    /// a block, asked from ascending places (some twice, some jumping a block).
    #[test]
    fn triggers_equal_memchr(
        data in proptest::collection::vec(prop_oneof![
            8 => proptest::sample::select(b"%+\\&$*,#\x00\xff\xa5\xab\\=a".to_vec()),
            8 => Just(b'a'),
        ], 0..600),
        thin in 1usize..150,
        steps in proptest::collection::vec(0usize..90, 1..20),
        pair in proptest::sample::select(vec![(b'%', b'+'), (b'%', b'%'), (b'\\', b'\\'), (b'&', b'&'), (b'=', b'=')]),
    ) {
        // Every `thin`-th byte kept: needles a few bytes apart or blocks apart.
        let data: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(k, &c)| if k % thin == 0 { c } else { b'a' })
            .collect();
        let (a, b) = pair;
        let mut triggers = escapes::Triggers::new(a, b);
        let mut at = 0;
        for step in steps {
            let want = data.get(at..).and_then(|d| memchr::memchr2(a, b, d)).map(|o| at + o);
            prop_assert_eq!(triggers.next(&data, at), want);
            at += step;
        }
    }
}

proptest! {
    /// The UTF-8 groups are judged only when an escape leads a sequence: judged again
    /// regardless, every escape keeps its strength (characters written in percent,
    /// `\\x` and quoted-printable bytes, whole, cut short and mixed with others).
    #[test]
    fn utf8_groups_only_where_a_sequence_starts(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "%EF%BC%A1", "\\xef\\xbc\\xa1", "=EF=BC=A1", "%C3%A9", "%EF%BC", "%EF", "%A1",
            "%F0%9F", "\\xc3", "=3D", "%41", "%2B", "\\u00e9", "a", " ", "=\n",
        ]), 0..30),
    ) {
        let data = parts.concat().into_bytes();
        for kind in escapes::Kind::ALL {
            let found = escapes::find(kind, &data);
            let strong: Vec<bool> = found.list.iter().map(|x| x.strong).collect();
            prop_assert_eq!(escapes::regrouped(&found), strong, "{:?}", kind);
        }
    }
}

/// Maximal runs of `class` of at least `min` bytes, a byte at a time.
fn runs_slow(data: &[u8], min: usize, class: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let s = i;
        while i < data.len() && class(data[i]) {
            i += 1;
        }
        if i - s >= min.max(1) {
            out.push((s, i - s));
        }
        i += usize::from(i == s);
    }
    out
}

proptest! {
    /// The base64 runs (their ends found sixteen bytes at a time) are the runs a byte
    /// walk finds: words of the alphabet between spaces, dots and quotes, long runs
    /// across block edges, and bytes of every kind.
    #[test]
    fn base64_runs_equal_byte_walks(
        data in alphabet_soup(b"aZ09+/-_", b" .\"=%", 700),
        min in 1usize..60,
    ) {
        let mut fast = Vec::new();
        runs::base64_runs(&data, min, |s, l| fast.push((s, l)));
        let class = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'/' | b'_');
        prop_assert_eq!(fast, runs_slow(&data, min, class));
    }

    /// The run finder (the `upper` fold of a deeper view) and the ASCII skip
    /// (Unicode escapes) find what a byte-at-a-time walk finds.
    #[test]
    fn skip_ahead_walks_equal_byte_walks(
        data in proptest::collection::vec(prop_oneof![
            4 => proptest::sample::select(b"abcxyz019AZ-_ ".to_vec()),
            1 => any::<u8>(),
        ], 0..600),
        min in 1usize..30,
        from in 0usize..700,
    ) {
        let class = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut fast = Vec::new();
        runs::class_runs(&data, min, class, |s, l| fast.push((s, l)));
        prop_assert_eq!(fast, runs_slow(&data, min, class));

        let from = from.min(data.len());
        let slow = data[from..].iter().position(|&b| b >= 0x80).map_or(data.len(), |p| from + p);
        prop_assert_eq!(escapes::skip_ascii(&data, from), slow);
    }
}

/// Text around keywords and their escapes: keywords whole, cut, upper-cased and with
/// a byte escaped (`%61`, `\u0061`, `\x61`, `&#97;`, a zero-width space or a soft line
/// break inside), secrets plain and encoded, weak escapes (`\n`, `\"`, `+`, `%20`),
/// line breaks, and long filler that puts island and view edges between them.
fn keyword_soup() -> impl Strategy<Value = Vec<u8>> {
    let keywords: Vec<String> = rules().keywords.patterns().to_vec();
    let secrets: Vec<String> = vec![
        aws_key(),
        gh_token(),
        aws_secret_line(),
        percent_all(&aws_key()),
        percent_some(&gh_token()),
        form(&aws_secret_line()),
        json_u_some(&aws_key()),
        STANDARD.encode(aws_key()),
        STANDARD.encode(gh_token()),
        hex_lower(&aws_key()),
        zero_width(&gh_token()),
        aws_key().to_ascii_lowercase(),
    ];
    let escaped = |k: &str, i: usize, how: usize| {
        let b = k.as_bytes();
        let i = i % b.len().max(1);
        let mut out = b[..i].to_vec();
        if let Some(&c) = b.get(i) {
            let e = match how % 6 {
                0 => format!("%{c:02x}"),
                1 => format!("\\u{:04x}", c),
                2 => format!("\\x{c:02X}"),
                3 => format!("&#{c};"),
                4 => format!("\u{200B}{}", c as char),
                _ => format!("=\r\n{}", c as char),
            };
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(&b[i + 1..]);
        }
        out
    };
    let kw = proptest::sample::select(keywords);
    let atom = prop_oneof![
        4 => (kw.clone(), 0usize..20, any::<bool>()).prop_map(|(k, cut, up)| {
            let k = &k.as_bytes()[..cut.min(k.len())];
            if up { k.to_ascii_uppercase() } else { k.to_vec() }
        }),
        4 => (kw, 0usize..20, 0usize..6).prop_map(move |(k, i, how)| escaped(&k, i, how)),
        2 => proptest::sample::select(secrets).prop_map(String::into_bytes),
        3 => proptest::sample::select(vec![
            "\\n", "\\\"", "+", "%20", "%2B", "%3D", "=", ": ", " = \"", "\n", "\r\n", "\\u00e9",
            "\\/", "&amp;", "é", "\u{FF21}", "\0", "x", "1234 5678 9012 3456",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => (0usize..3, 1usize..7000).prop_map(|(c, n)| vec![[b' ', b'a', b'/'][c]; n]),
        2 => "[A-Za-z0-9+/_=-]{0,60}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(atom, 0..120).prop_map(|v| v.concat())
}

/// `PROPTEST_CASES`, or `default` (a case of `keyword_soup` scans up to some 100 KB
/// three times over).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// A view's keyword hits taken from its parent's where it is unchanged (the
    /// automaton only around what it made) give the same findings as the automaton
    /// over every view whole; `admit` also checks, in tests, that every view's hits
    /// are the automaton's over the whole view.
    #[test]
    fn view_hits_from_the_parent_equal_whole_views(data in keyword_soup()) {
        let limits = Limits::default();
        let whole = rules().scan_deep_with(&data, &limits, true);
        let from_parent = rules().scan_deep_with(&data, &limits, false);
        prop_assert_eq!(from_parent, whole);
    }
}
