//! Throughput of `secretscan` on generated code-like text with a few planted secrets,
//! against a naive baseline (every rule's regex over the whole buffer, no keyword
//! prefilter), in the same run. `SECRETSCAN_BENCH_MB` sets the size (default 200).
//!
//! Run: `cargo bench --bench secretscan`.

use std::time::Instant;

use bottle_secretscan::{RuleSet, StreamScanner};
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
}
