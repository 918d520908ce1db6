//! Inflating a compressed HTTP body (`Content-Encoding`) before it is scanned, with a
//! cap on the output so that a decompression bomb costs the sender, not the proxy.
//! gzip and deflate (zlib, or raw deflate as some clients send it) by flate2 on
//! miniz_oxide, br by brotli-decompressor, zstd by ruzstd: all pure Rust, so the static
//! build needs no C library.
//!
//! [`compressed`] and [`inflate_partial`] are for data that only *looks* compressed (a
//! gzip or zlib stream inside a body, or inside base64): normalization inflates it as
//! far as it is valid.

use std::io::Read;

/// Why a body cannot be inflated. Never carries body bytes.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("content-encoding {0:?} is not one pipelock can inspect")]
    Unknown(String),
    #[error("more than {max} content-encodings are stacked")]
    TooManyLayers { max: usize },
    #[error("the inflated body is over the {cap}-byte cap")]
    TooLarge { cap: usize },
    #[error("the body is not valid {encoding}")]
    Corrupt {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Content-encodings stacked deeper than this are refused.
pub const MAX_ENCODINGS: usize = 4;
/// The largest zstd window accepted (RFC 9659 asks decoders for 8 MiB).
const ZSTD_WINDOW: u64 = 8 << 20;

/// Inflate `body` as its `Content-Encoding` header says (`gzip`, `x-gzip`, `deflate`,
/// `br`, `zstd`, `identity`, or a list such as `gzip, br`, applied in the order
/// listed and so undone in reverse). Output over `cap` bytes, an unknown coding or a
/// corrupt stream is an error.
pub fn inflate(content_encoding: &str, body: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let codings: Vec<String> = content_encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.len() > MAX_ENCODINGS {
        return Err(InflateError::TooManyLayers { max: MAX_ENCODINGS });
    }
    for c in &codings {
        if !matches!(c.as_str(), "gzip" | "x-gzip" | "deflate" | "br" | "zstd") {
            return Err(InflateError::Unknown(c.chars().take(40).collect()));
        }
    }
    let mut data = body.to_vec();
    for c in codings.iter().rev() {
        data = one(c, &data, cap)?;
    }
    if data.len() > cap {
        return Err(InflateError::TooLarge { cap });
    }
    Ok(data)
}

fn one(coding: &str, data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    match coding {
        "gzip" | "x-gzip" => capped(flate2::read::MultiGzDecoder::new(data), cap, "gzip"),
        "deflate" => {
            // RFC 9110 deflate is zlib; some clients send raw deflate.
            let zlib = data.len() >= 2
                && data[0] & 0x0F == 8
                && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0;
            if zlib {
                capped(flate2::read::ZlibDecoder::new(data), cap, "deflate")
            } else {
                capped(flate2::read::DeflateDecoder::new(data), cap, "deflate")
            }
        }
        "br" => capped(
            brotli_decompressor::Decompressor::new(data, 4096),
            cap,
            "br",
        ),
        _ => zstd(data, cap),
    }
}

/// Read all of `r`, failing once it gives more than `cap` bytes.
fn capped(r: impl Read, cap: usize, encoding: &'static str) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| InflateError::Corrupt { encoding, source })?;
    if out.len() > cap {
        return Err(InflateError::TooLarge { cap });
    }
    Ok(out)
}

/// zstd, frame after frame (a body may hold several).
fn zstd(mut data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    let corrupt = |e: std::io::Error| InflateError::Corrupt {
        encoding: "zstd",
        source: e,
    };
    if data.is_empty() {
        return Err(corrupt(std::io::ErrorKind::UnexpectedEof.into()));
    }
    while !data.is_empty() {
        let dec = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
            &mut data,
            ZSTD_WINDOW.min(cap as u64 + 1).max(1 << 10),
        )
        .map_err(|e| corrupt(std::io::Error::other(e)))?;
        let room = cap.saturating_sub(out.len()) as u64 + 1;
        dec.take(room).read_to_end(&mut out).map_err(corrupt)?;
        if out.len() > cap {
            return Err(InflateError::TooLarge { cap });
        }
    }
    Ok(out)
}

/// The stream a decoded view starts with, if any: `"gzip"` (magic `1f 8b`, deflate) or
/// `"zlib"` (CMF `78`, a valid header check, no preset dictionary).
pub(super) fn compressed(data: &[u8]) -> Option<&'static str> {
    match data {
        [0x1f, 0x8b, 0x08, ..] => Some("gzip"),
        [0x78, flg, ..] if flg & 0x20 == 0 && (0x7800 | u16::from(*flg)) % 31 == 0 => Some("zlib"),
        _ => None,
    }
}

/// Inflate a stream that [`compressed`] named, as far as it is valid (a truncated or
/// corrupt stream gives what came before the fault: the agent cannot hide a secret by
/// breaking the end). More than `cap` bytes is an error.
pub(super) fn inflate_partial(data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    let limit = cap as u64 + 1;
    // An error ends the stream; what was read before it is in `out`.
    let _ = match compressed(data) {
        Some("gzip") => flate2::read::MultiGzDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        Some(_) => flate2::read::ZlibDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        None => return Ok(out),
    };
    if out.len() > cap {
        return Err(InflateError::TooLarge { cap });
    }
    Ok(out)
}
