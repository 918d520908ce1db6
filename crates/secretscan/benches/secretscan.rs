//! Throughput of `secretscan` on generated code-like text with a few planted secrets,
//! against a naive baseline (every rule's regex over the whole buffer, no keyword
//! prefilter), in the same run. `SECRETSCAN_BENCH_MB` sets the size (default 200).
//!
//! Then normalization: `scan` against `scan_deep` (every decoded view) on the same
//! inputs, cut into 1 MiB requests as pipelock scans them: the code-like text, and a
//! traffic mix (model API calls in JSON with escaped code, form posts and URLs with
//! percent-encoding, a base64 image, non-ASCII prose, one encoded secret per request).
//! `SECRETSCAN_BENCH_PARTS=1` (or `json`, `image`, `form`) times one request's parts
//! alone instead. `SECRETSCAN_BENCH_ONE=stream` (or `code-scan`, `code-deep`,
//! `mix-scan`, `mix-deep`) makes that one pass once and nothing else, for a profiler
//! (`valgrind --tool=callgrind` counts its instructions), and prints its time alone
//! (without making the corpus), so that two builds can be timed pass by pass.
//!
//! Run: `cargo bench --bench secretscan`.

use std::time::Instant;

use base64::Engine as _;
use bottle_secretscan::{Limits, RuleSet, StreamScanner};
use regex::bytes::Regex;

const WORDS: &[&str] = &[
    "let", "fn", "return", "self", "config", "value", "token", "key", "request", "response",
    "client", "server", "handle", "error", "result", "String", "Vec", "map", "iter", "into",
    "async", "await", "match", "Some", "None", "Ok", "Err", "impl", "struct", "pub", "use",
    "crate", "super", "data", "buffer", "len", "secret", "auth", "header", "body", "path",
];

fn generate(size: usize) -> (Vec<u8>, usize) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(size + 1024);
    let planted = [
        "let gh = \"ghp_Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3\";\n",
        "AWS_ACCESS_KEY_ID=AKIAQ7RZ4TX2MBW6NC3P\n",
        "const K: &str = \"sk_live_4eC39HqLyjWDarjtT1zdp7dc\";\n",
        "api_key = \"Xk93hdP0q2LmZ7wVb4TnR8sYc1JfG6uE\"\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n",
    ];
    let mut lines = 0usize;
    let mut count = 0;
    while out.len() < size {
        lines += 1;
        if lines.is_multiple_of(400_000) {
            out.extend_from_slice(planted[count % planted.len()].as_bytes());
            count += 1;
            continue;
        }
        let indent = (next() % 4) as usize * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        let n = 3 + (next() % 8) as usize;
        for i in 0..n {
            let w = WORDS[(next() % WORDS.len() as u64) as usize];
            out.extend_from_slice(w.as_bytes());
            out.push(match (i, next() % 5) {
                (_, 0) => b'.',
                (_, 1) => b'(',
                _ => b' ',
            });
        }
        out.extend_from_slice(b";\n");
    }
    (out, count)
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

fn main() {
    let mb: usize = std::env::var("SECRETSCAN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (data, planted) = generate(mb << 20);
    let rules = RuleSet::builtin();
    if let Ok(which) = std::env::var("SECRETSCAN_BENCH_ONE") {
        one(&rules, &which, data);
        return;
    }

    let t = Instant::now();
    let mut s = StreamScanner::new(&rules);
    let mut found = Vec::new();
    for chunk in data.chunks(64 << 10) {
        found.extend(s.push(chunk));
    }
    found.extend(s.finish());
    let stream_secs = t.elapsed().as_secs_f64();

    // Naive: every rule's regex over the whole buffer, no prefilter.
    let naive: Vec<Regex> = rules
        .rules()
        .iter()
        .map(|r| Regex::new(r.regex_source()).expect("compiles"))
        .collect();
    let t = Instant::now();
    let mut naive_hits = 0usize;
    for re in &naive {
        naive_hits += re.find_iter(&data).count();
    }
    let naive_secs = t.elapsed().as_secs_f64();

    println!(
        "secretscan: {} MiB, {} rules, {planted} planted secrets",
        data.len() >> 20,
        rules.rules().len()
    );
    println!(
        "  streaming scanner (64 KiB chunks, prefilter): {:.2} s, {:.0} MiB/s, {} findings",
        stream_secs,
        mbps(data.len(), stream_secs),
        found.len()
    );
    println!(
        "  naive baseline (all regexes, whole buffer):   {:.2} s, {:.0} MiB/s, {} raw matches",
        naive_secs,
        mbps(data.len(), naive_secs),
        naive_hits
    );
    println!("  speed-up: {:.1}x", naive_secs / stream_secs);
    assert!(found.len() >= planted, "every planted secret is found");

    if std::env::var("SECRETSCAN_BENCH_PARTS").is_ok() {
        parts(&rules);
        return;
    }
    let mix = traffic_mix(data.len());
    for (name, corpus) in [("code-like text", &data), ("traffic mix", &mix)] {
        deep_vs_raw(&rules, name, corpus);
    }
}

/// One pass of one measurement (`SECRETSCAN_BENCH_ONE`), for a profiler.
fn one(rules: &RuleSet, which: &str, code: Vec<u8>) {
    let corpus = match which.split('-').next() {
        Some("mix") => traffic_mix(code.len()),
        _ => code,
    };
    let t = Instant::now();
    let n = pass(rules, which, &corpus);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{which}: {} MiB, {n} findings, {secs:.3} s, {:.0} MiB/s",
        corpus.len() >> 20,
        mbps(corpus.len(), secs)
    );
}

/// The pass itself, apart from making the corpus (`--toggle-collect='*::pass'`).
#[inline(never)]
fn pass(rules: &RuleSet, which: &str, corpus: &[u8]) -> usize {
    let limits = Limits::default();
    match which {
        "stream" => {
            let mut s = StreamScanner::new(rules);
            let mut n = 0;
            for chunk in corpus.chunks(64 << 10) {
                n += s.push(chunk).len();
            }
            n + s.finish().len()
        }
        "code-scan" | "mix-scan" => corpus.chunks(1 << 20).map(|r| rules.scan(r).len()).sum(),
        "code-deep" | "mix-deep" => corpus
            .chunks(1 << 20)
            .map(|r| {
                rules
                    .scan_deep(r, &limits)
                    .expect("within the budget")
                    .len()
            })
            .sum(),
        other => panic!(
            "SECRETSCAN_BENCH_ONE={other}: stream, code-scan, code-deep, mix-scan or mix-deep"
        ),
    }
}

/// The fastest of `n` runs of `f` (the machine is shared: the minimum is the cost).
fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("n > 0"))
}

/// `scan` and `scan_deep` over the same 1 MiB requests, best of 3.
fn deep_vs_raw(rules: &RuleSet, name: &str, corpus: &[u8]) {
    let limits = Limits::default();
    let (raw_secs, raw) = best_of(3, || {
        corpus
            .chunks(1 << 20)
            .map(|r| rules.scan(r).len())
            .sum::<usize>()
    });
    let (deep_secs, (deep, decoded)) = best_of(3, || {
        let (mut deep, mut decoded) = (0, 0);
        for r in corpus.chunks(1 << 20) {
            let f = rules.scan_deep(r, &limits).expect("within the budget");
            decoded += f.iter().filter(|f| !f.via.is_empty()).count();
            deep += f.len();
        }
        (deep, decoded)
    });
    println!(
        "normalization on {name}, {} MiB in 1 MiB requests (best of 3):",
        corpus.len() >> 20
    );
    println!(
        "  scan (bytes as given):          {raw_secs:.2} s, {:.0} MiB/s, {raw} findings",
        mbps(corpus.len(), raw_secs)
    );
    println!(
        "  scan_deep (every decoded view): {deep_secs:.2} s, {:.0} MiB/s, {deep} findings ({decoded} only decoded), x{:.2} the time",
        mbps(corpus.len(), deep_secs),
        deep_secs / raw_secs
    );
}

/// Requests an agent sends: JSON model API calls carrying code (escaped newlines and
/// quotes, some `\uXXXX`), form posts and URLs (percent-encoding, `+`), a base64
/// screenshot, prose with non-ASCII; each MiB holds one percent- or base64-encoded key.
fn traffic_mix(size: usize) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let code_line = |n: u64| {
        let w = |k: u64| WORDS[((n >> (k * 6)) % WORDS.len() as u64) as usize];
        format!(
            "    let {} = {}.{}(\\\"{}\\\", {});\\n",
            w(0),
            w(1),
            w(2),
            w(3),
            w(4)
        )
    };
    let mut out = Vec::with_capacity(size + (1 << 20));
    let mut secrets = 0u64;
    while out.len() < size {
        let start = out.len();
        // One request: mostly a model API call.
        out.extend_from_slice(br#"{"model":"claude-sonnet","max_tokens":4096,"messages":[{"role":"user","content":"Please fix this function:\n```rust\n"#);
        while out.len() - start < 600 << 10 {
            out.extend_from_slice(code_line(next()).as_bytes());
        }
        out.extend_from_slice(
            "```\\nMerci, caf\\u00e9 \\u2014 gr\\u00fc\\u00dfe. Grüße, 東京 ".as_bytes(),
        );
        out.extend_from_slice(br#""},{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":""#);
        let img: Vec<u8> = (0..150 << 10).map(|_| next() as u8).collect();
        out.extend_from_slice(b64.encode(&img).as_bytes());
        out.extend_from_slice(b"\"}}]}]}\n");
        while out.len() - start < (1 << 20) - 4096 {
            out.extend_from_slice(b"GET /search?q=how+to+parse%20json%20in%20rust&page=2&lang=en-US HTTP/1.1\r\nname=Jane+Doe&comment=Hello%2C+world%21&redirect=https%3A%2F%2Fexample.com%2Fa%3Fb%3D1\n");
        }
        secrets += 1;
        let key: String = std::iter::once("AKIA".to_string())
            .chain((0..16).map(|_| {
                let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(next() % 32) as usize];
                (c as char).to_string()
            }))
            .collect();
        if secrets.is_multiple_of(2) {
            let enc: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
            out.extend_from_slice(format!("x-trace={enc}\n").as_bytes());
        } else {
            out.extend_from_slice(format!("blob={}\n", b64.encode(&key)).as_bytes());
        }
        out.resize(start + (1 << 20), b' ');
    }
    out
}

/// `scan` against `scan_deep` on each part of one traffic-mix request, best of 10.
fn parts(rules: &RuleSet) {
    let mix = traffic_mix(1 << 20);
    let req = &mix[..1 << 20];
    let img_start = req.windows(7).position(|w| w == b"\"data\":").unwrap() + 8;
    let img_end = img_start + req[img_start..].iter().position(|&b| b == b'"').unwrap();
    let form_start = img_end + 10;
    let only = std::env::var("SECRETSCAN_BENCH_PARTS").unwrap_or_default();
    for (name, part) in [
        ("json", &req[..img_start]),
        ("image", &req[img_start..img_end]),
        ("form", &req[form_start..]),
    ] {
        if only != "1" && only != name {
            continue;
        }
        let (raw, _) = best_of(10, || rules.scan(part));
        let (deep, r) = best_of(10, || rules.scan_deep(part, &Limits::default()));
        if let Err(e) = r {
            println!("{name}: {e}");
        }
        println!(
            "{name}: {} KiB raw {:.0} MiB/s deep {:.0} MiB/s",
            part.len() >> 10,
            mbps(part.len(), raw),
            mbps(part.len(), deep)
        );
    }

    // The injection detector on inputs that would make a careless scanner quadratic:
    // 8x the input should cost about 8x (quadratic: 64x). Fastest of five runs each.
    println!("injection scan, 128 KiB vs 1 MiB of one shape (linear is 8x):");
    for shape in bottle_secretscan::injection::PATHOLOGICAL_SHAPES {
        let small = shape.repeat((128 << 10) / shape.len());
        let big = small.repeat(8);
        let time = |x: &str| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let _ = bottle_secretscan::injection::scan_response(x);
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let (a, b) = (time(&small), time(&big));
        println!(
            "  {shape:?}: {:.2} ms -> {:.2} ms, {:.1}x",
            a * 1e3,
            b * 1e3,
            b / a
        );
    }
}
