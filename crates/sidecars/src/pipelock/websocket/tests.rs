//! Tests of the WebSocket relay: the frame parser, reassembly, inflation and the
//! handshake rules as units; a proptest fuzz of the parser and assembler; the relay
//! through the real pipelock proxy (plain HTTP in a CONNECT tunnel, and TLS
//! interception) against real WebSocket upstreams that record what they received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use hyper::header::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::*;
use crate::certs::Authority;
use crate::egress::testkit::{TestPki, connect_tunnel, server_tls, tls_client};
use crate::egress::upstream::tls_config;
use crate::pipelock::audit::MemoryAudit;
use crate::pipelock::config::{Config, DlpConfig};
use crate::pipelock::server::{Intercept, Proxy, serve};
use crate::pipelock::ssrf::MapResolve;

// ---------------------------------------------------------------------------------
// Frames as a peer writes them.

const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);
const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CONT: u8 = 0;
const CLOSE: u8 = 8;
const PING: u8 = 9;

/// One frame: `rsv` is the three RSV bits (RSV1 = 4).
fn frame(fin: bool, rsv: u8, op: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | op];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A client's frame (masked).
fn cf(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, op, MASK, payload)
}

/// A header alone with a 64-bit length.
fn long_header(op: u8, len: u64, mask: bool) -> Vec<u8> {
    let mut out = vec![0x80 | op, if mask { 0xff } else { 0x7f }];
    out.extend_from_slice(&len.to_be_bytes());
    if mask {
        out.extend_from_slice(&[1, 2, 3, 4]);
    }
    out
}

/// What came out of a parser and assembler: ("text" | "binary" | "ping" ..., content).
type Out = Vec<(String, Vec<u8>)>;

fn name(op: OpCode) -> String {
    match op {
        OpCode::Data(Data::Text) => "text",
        OpCode::Data(Data::Binary) => "binary",
        OpCode::Control(Control::Ping) => "ping",
        OpCode::Control(Control::Pong) => "pong",
        OpCode::Control(Control::Close) => "close",
        _ => "other",
    }
    .to_string()
}

struct Pipe {
    parser: FrameParser,
    assembler: Assembler,
}

impl Pipe {
    fn new(dir: Direction, deflate: bool, inflate: Option<bool>, max: usize) -> Pipe {
        let limits = Limits { max_message: max };
        Pipe {
            parser: FrameParser::new(dir, deflate, limits),
            assembler: Assembler::new(limits, inflate),
        }
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Out) -> Result<(), Refusal> {
        self.parser.buffer().extend_from_slice(bytes);
        while let Some(f) = self.parser.next_frame()? {
            match self.assembler.push(f)? {
                None => {}
                Some(Item::Control(f)) => out.push((name(f.opcode), f.payload.to_vec())),
                Some(Item::Message(m)) => out.push((name(m.opcode), m.content().to_vec())),
            }
        }
        Ok(())
    }
}

/// Feed `bytes` whole to a fresh client-side pipe without deflate.
fn up(bytes: &[u8]) -> Result<Out, Refusal> {
    let mut out = Vec::new();
    Pipe::new(Direction::Up, false, None, MAX_MESSAGE).feed(bytes, &mut out)?;
    Ok(out)
}

fn down(bytes: &[u8]) -> Result<Out, Refusal> {
    let mut out = Vec::new();
    Pipe::new(Direction::Down, false, None, MAX_MESSAGE).feed(bytes, &mut out)?;
    Ok(out)
}

fn item(kind: &str, content: &[u8]) -> (String, Vec<u8>) {
    (kind.to_string(), content.to_vec())
}

// ---------------------------------------------------------------------------------
// The parser and assembler.

#[test]
fn a_masked_client_text_frame_is_unmasked_whole_or_byte_by_byte() {
    let bytes = cf(true, TEXT, b"hello pipelock");
    assert_eq!(up(&bytes).unwrap(), vec![item("text", b"hello pipelock")]);
    let mut pipe = Pipe::new(Direction::Up, false, None, MAX_MESSAGE);
    let mut out = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        pipe.feed(&[*b], &mut out).unwrap();
        assert_eq!(
            out.is_empty(),
            i + 1 < bytes.len(),
            "a frame before its end"
        );
    }
    assert_eq!(out, vec![item("text", b"hello pipelock")]);
    assert_eq!(pipe.parser.buffered(), 0);
}

#[test]
fn lengths_in_16_and_64_bits_are_read() {
    for n in [125usize, 126, 65535, 65536, 70_000] {
        let payload = vec![b'x'; n];
        assert_eq!(up(&cf(true, BINARY, &payload)).unwrap()[0].1.len(), n);
        assert_eq!(
            down(&frame(true, 0, BINARY, None, &payload)).unwrap()[0]
                .1
                .len(),
            n
        );
    }
}

#[test]
fn masking_is_required_up_and_refused_down() {
    assert_eq!(
        up(&frame(true, 0, TEXT, None, b"hi")),
        Err(Refusal::Unmasked)
    );
    assert_eq!(down(&cf(true, TEXT, b"hi")), Err(Refusal::Masked));
    assert_eq!(
        down(&frame(true, 0, TEXT, None, b"hi")).unwrap(),
        vec![item("text", b"hi")]
    );
}

#[test]
fn fragments_are_reassembled_with_control_frames_passed_between() {
    let mut bytes = cf(false, TEXT, b"ab");
    bytes.extend(cf(true, PING, b"p1"));
    bytes.extend(cf(false, CONT, b"cd"));
    bytes.extend(cf(true, PING, b"p2"));
    bytes.extend(cf(true, CONT, b"ef"));
    bytes.extend(cf(true, BINARY, b"\x00\x01"));
    assert_eq!(
        up(&bytes).unwrap(),
        vec![
            item("ping", b"p1"),
            item("ping", b"p2"),
            item("text", b"abcdef"),
            item("binary", b"\x00\x01"),
        ]
    );
    // Unfinished: nothing comes out but the control frame.
    let mut bytes = cf(false, BINARY, b"ab");
    bytes.extend(cf(true, PING, b""));
    bytes.extend(cf(false, CONT, b"cd"));
    assert_eq!(up(&bytes).unwrap(), vec![item("ping", b"")]);
}

#[test]
fn fragment_order_is_enforced() {
    assert_eq!(up(&cf(true, CONT, b"x")), Err(Refusal::Continuation));
    let mut bytes = cf(false, TEXT, b"a");
    bytes.extend(cf(true, TEXT, b"b"));
    assert_eq!(up(&bytes), Err(Refusal::Interleaved));
    let mut bytes = cf(true, TEXT, b"a");
    bytes.extend(cf(true, CONT, b"b"));
    assert_eq!(up(&bytes), Err(Refusal::Continuation));
}

#[test]
fn rsv_bits_need_a_negotiated_extension() {
    // No extension: every RSV bit is refused, on data and control frames.
    for rsv in 1..8u8 {
        assert_eq!(
            up(&frame(true, rsv, TEXT, MASK, b"x")),
            Err(Refusal::Reserved(rsv)),
            "rsv {rsv:#b}"
        );
        assert_eq!(
            down(&frame(true, rsv, PING, None, b"")),
            Err(Refusal::Reserved(rsv))
        );
    }
    // permessage-deflate: RSV1 only on the first frame of a data message.
    let deflate = |bytes: &[u8]| {
        let mut out = Vec::new();
        Pipe::new(Direction::Up, true, None, MAX_MESSAGE)
            .feed(bytes, &mut out)
            .map(|()| out)
    };
    assert!(deflate(&frame(true, 4, TEXT, MASK, b"x")).is_ok());
    assert!(deflate(&frame(true, 4, BINARY, MASK, b"x")).is_ok());
    assert_eq!(
        deflate(&frame(true, 2, TEXT, MASK, b"x")),
        Err(Refusal::Reserved(2))
    );
    assert_eq!(
        deflate(&frame(true, 1, TEXT, MASK, b"x")),
        Err(Refusal::Reserved(1))
    );
    assert_eq!(
        deflate(&frame(true, 4, PING, MASK, b"")),
        Err(Refusal::Reserved(4))
    );
    let mut bytes = frame(false, 4, TEXT, MASK, b"x");
    bytes.extend(frame(true, 4, CONT, MASK, b"y"));
    assert_eq!(deflate(&bytes), Err(Refusal::Reserved(4)));
}

#[test]
fn undefined_opcodes_are_refused() {
    for op in (3..=7).chain(11..=15) {
        assert_eq!(up(&cf(true, op, b"x")), Err(Refusal::Opcode(op)), "{op}");
        assert_eq!(
            down(&frame(true, 0, op, None, b"")),
            Err(Refusal::Opcode(op))
        );
    }
}

#[test]
fn control_frames_are_short_final_and_well_formed() {
    assert!(up(&cf(true, PING, &[b'p'; 125])).is_ok());
    assert_eq!(
        up(&cf(true, PING, &[b'p'; 126])),
        Err(Refusal::ControlTooLarge(126))
    );
    assert_eq!(
        up(&long_header(PING, 1 << 40, true)),
        Err(Refusal::ControlTooLarge(1 << 40))
    );
    assert_eq!(up(&cf(false, PING, b"p")), Err(Refusal::FragmentedControl));
    assert_eq!(up(&cf(true, CLOSE, b"\x03")), Err(Refusal::Close));
    assert_eq!(up(&cf(true, CLOSE, b"")).unwrap(), vec![item("close", b"")]);
    assert_eq!(
        up(&cf(true, CLOSE, b"\x03\xe8bye")).unwrap(),
        vec![item("close", b"\x03\xe8bye")]
    );
}

#[test]
fn over_long_frames_are_refused_from_the_header_alone() {
    // 64-bit lengths: over the cap, and with the most significant bit set.
    for (len, want) in [
        (
            (MAX_MESSAGE + 1) as u64,
            Refusal::FrameTooLarge((MAX_MESSAGE + 1) as u64, MAX_MESSAGE),
        ),
        (
            i64::MAX as u64,
            Refusal::FrameTooLarge(i64::MAX as u64, MAX_MESSAGE),
        ),
        (u64::MAX, Refusal::Length),
        (1 << 63, Refusal::Length),
    ] {
        let head = long_header(BINARY, len, true);
        let mut p = FrameParser::new(Direction::Up, false, Limits::default());
        p.buffer().extend_from_slice(&head);
        assert_eq!(p.next_frame().unwrap_err(), want);
        assert!(p.buf.capacity() < 2 * READ_CHUNK, "nothing reserved");
    }
    // Exactly the cap is a frame like any other (header only so far: waits).
    let mut p = FrameParser::new(Direction::Up, false, Limits::default());
    p.buffer()
        .extend_from_slice(&long_header(BINARY, MAX_MESSAGE as u64, true));
    assert!(p.next_frame().unwrap().is_none());
}

#[test]
fn a_message_over_the_cap_is_refused() {
    let mut pipe = Pipe::new(Direction::Up, false, None, 1024);
    let mut out = Vec::new();
    pipe.feed(&cf(false, BINARY, &[1; 600]), &mut out).unwrap();
    assert_eq!(
        pipe.feed(&cf(true, CONT, &[1; 600]), &mut out),
        Err(Refusal::MessageTooLarge(1024))
    );
    assert_eq!(
        up_capped(&cf(true, BINARY, &[1; 1025]), 1024),
        Err(Refusal::FrameTooLarge(1025, 1024))
    );
    assert!(up_capped(&cf(true, BINARY, &[1; 1024]), 1024).is_ok());
}

fn up_capped(bytes: &[u8], max: usize) -> Result<Out, Refusal> {
    let mut out = Vec::new();
    Pipe::new(Direction::Up, false, None, max).feed(bytes, &mut out)?;
    Ok(out)
}

#[test]
fn truncated_frames_wait_for_more() {
    let bytes = cf(true, TEXT, &[b'a'; 300]);
    for cut in [0, 1, 2, 3, 4, 7, 8, 100, bytes.len() - 1] {
        let mut p = FrameParser::new(Direction::Up, false, Limits::default());
        p.buffer().extend_from_slice(&bytes[..cut]);
        assert!(p.next_frame().unwrap().is_none(), "cut at {cut}");
        p.buffer().extend_from_slice(&bytes[cut..]);
        assert_eq!(p.next_frame().unwrap().unwrap().payload.len(), 300);
    }
    // A 64-bit length header cut inside its length field.
    let head = long_header(BINARY, 70_000, true);
    let mut p = FrameParser::new(Direction::Up, false, Limits::default());
    p.buffer().extend_from_slice(&head[..6]);
    assert!(p.next_frame().unwrap().is_none());
}

#[test]
fn debug_output_shows_lengths_not_payloads() {
    let mut p = FrameParser::new(Direction::Up, false, Limits::default());
    p.buffer()
        .extend_from_slice(&cf(true, TEXT, b"sekrit-value"));
    let f = p.next_frame().unwrap().unwrap();
    assert!(!format!("{f:?}").contains("sekrit"), "{f:?}");
    let mut a = Assembler::new(Limits::default(), None);
    let m = a.push(f).unwrap().unwrap();
    assert!(!format!("{m:?}").contains("sekrit"), "{m:?}");
}

// ---------------------------------------------------------------------------------
// permessage-deflate.

/// A permessage-deflate sender: raw DEFLATE, sync-flushed, tail stripped.
struct Deflater(Compress);

impl Deflater {
    fn new() -> Deflater {
        Deflater(Compress::new(Compression::default(), false))
    }

    fn message(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut pos = 0;
        loop {
            out.reserve(data.len() / 2 + 1024);
            let before = self.0.total_in();
            self.0
                .compress_vec(&data[pos..], &mut out, FlushCompress::Sync)
                .unwrap();
            pos += (self.0.total_in() - before) as usize;
            if pos == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&DEFLATE_TAIL));
        out.truncate(out.len() - 4);
        out
    }
}

fn inflate_up(messages: &[Vec<u8>], no_context_takeover: bool) -> Result<Out, Refusal> {
    let mut pipe = Pipe::new(Direction::Up, true, Some(no_context_takeover), 1 << 20);
    let mut out = Vec::new();
    for m in messages {
        pipe.feed(&frame(true, 4, TEXT, MASK, m), &mut out)?;
    }
    Ok(out)
}

#[test]
fn compressed_messages_are_inflated_with_the_window_kept() {
    let mut z = Deflater::new();
    let first = z.message(b"the quick brown fox jumps over the lazy dog");
    let second = z.message(b"the quick brown fox jumps over the lazy dog");
    assert!(second.len() < first.len(), "the second refers to the first");
    let out = inflate_up(&[first.clone(), second.clone()], false).unwrap();
    assert_eq!(out[0].1, b"the quick brown fox jumps over the lazy dog");
    assert_eq!(out[1].1, out[0].1);
    // A sender that declared no context takeover must not refer back: a receiver that
    // keeps its window anyway would read what pipelock did not, so it is refused.
    assert_eq!(
        inflate_up(&[first.clone(), second], true),
        Err(Refusal::ContextTakeover)
    );
    // Messages that stand alone pass with it.
    let alone = Deflater::new().message(b"the quick brown fox jumps over the lazy dog");
    let out = inflate_up(&[first, alone], true).unwrap();
    assert_eq!(out[1].1, out[0].1);
    // Fragmented: RSV1 on the first frame only, the compressed bytes split anywhere.
    let mut z = Deflater::new();
    let m = z.message(b"fragmented and compressed");
    let mut bytes = frame(false, 4, TEXT, MASK, &m[..3]);
    bytes.extend(cf(true, PING, b""));
    bytes.extend(frame(true, 0, CONT, MASK, &m[3..]));
    let mut pipe = Pipe::new(Direction::Up, true, Some(false), 1 << 20);
    let mut out = Vec::new();
    pipe.feed(&bytes, &mut out).unwrap();
    assert_eq!(out[1], item("text", b"fragmented and compressed"));
    // Uncompressed messages stay allowed with the extension on.
    let mut out = Vec::new();
    pipe.feed(&cf(true, TEXT, b"plain"), &mut out).unwrap();
    assert_eq!(out, vec![item("text", b"plain")]);
}

#[test]
fn a_deflate_bomb_is_cut_at_the_cap() {
    let zeros = vec![0u8; 8 << 20];
    let bomb = Deflater::new().message(&zeros);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let mut pipe = Pipe::new(Direction::Up, true, Some(false), 1 << 20);
    let mut out = Vec::new();
    assert_eq!(
        pipe.feed(&frame(true, 4, BINARY, MASK, &bomb), &mut out),
        Err(Refusal::InflatedTooLarge(1 << 20))
    );
    // Exactly at the cap inflates.
    let at_cap = Deflater::new().message(&zeros[..1 << 20]);
    let mut pipe = Pipe::new(Direction::Up, true, Some(false), 1 << 20);
    pipe.feed(&frame(true, 4, BINARY, MASK, &at_cap), &mut out)
        .unwrap();
    assert_eq!(out[0].1.len(), 1 << 20);
}

#[test]
fn broken_deflate_streams_are_refused() {
    // BTYPE 11 is reserved.
    assert_eq!(inflate_up(&[vec![0xff; 16]], false), Err(Refusal::Inflate));
    // A final block followed by more data.
    let mut z = Compress::new(Compression::default(), false);
    let mut done = Vec::with_capacity(256);
    z.compress_vec(b"final", &mut done, FlushCompress::Finish)
        .unwrap();
    assert_eq!(inflate_up(&[done.clone()], false).unwrap()[0].1, b"final");
    done.extend_from_slice(b"hidden after the end");
    assert_eq!(inflate_up(&[done], false), Err(Refusal::Inflate));
    // After a final block the window starts afresh: the next message inflates.
    let mut z = Compress::new(Compression::default(), false);
    let mut first = Vec::with_capacity(256);
    z.compress_vec(b"one", &mut first, FlushCompress::Finish)
        .unwrap();
    let second = Deflater::new().message(b"two");
    let out = inflate_up(&[first, second], false).unwrap();
    assert_eq!(out[1].1, b"two");
}

#[test]
fn an_uninspected_direction_passes_compressed_bytes_as_they_are() {
    let m = Deflater::new().message(b"from the upstream");
    let mut pipe = Pipe::new(Direction::Down, true, None, 1 << 20);
    pipe.parser
        .buffer()
        .extend_from_slice(&frame(true, 4, TEXT, None, &m));
    let f = pipe.parser.next_frame().unwrap().unwrap();
    let Some(Item::Message(msg)) = pipe.assembler.push(f).unwrap() else {
        panic!("a message")
    };
    assert!(msg.compressed && msg.inflated.is_none());
    assert_eq!(&msg.payload[..], &m[..]);
}

// ---------------------------------------------------------------------------------
// The handshake.

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn the_101_response_decides_what_can_be_read() {
    let ws = ("upgrade", "websocket");
    let neg = |ext: &[&str]| {
        let mut pairs = vec![ws];
        pairs.extend(ext.iter().map(|e| ("sec-websocket-extensions", *e)));
        negotiated(&headers(&pairs))
    };
    assert_eq!(
        negotiated(&headers(&[("upgrade", "h2c")])),
        Err(HandshakeError::NotWebSocket)
    );
    assert_eq!(negotiated(&headers(&[])), Err(HandshakeError::NotWebSocket));
    assert_eq!(
        negotiated(&headers(&[("upgrade", "WebSocket")])),
        Ok(Extensions::default())
    );
    assert_eq!(
        neg(&["permessage-deflate"]).unwrap().deflate,
        Some(Deflate::default())
    );
    assert_eq!(
        neg(&["permessage-deflate; client_no_context_takeover; server_max_window_bits=10"])
            .unwrap()
            .deflate,
        Some(Deflate {
            client_no_context_takeover: true,
            server_no_context_takeover: false
        })
    );
    assert_eq!(
        neg(&["Permessage-Deflate;Server_No_Context_Takeover;client_max_window_bits=\"15\""])
            .unwrap()
            .deflate,
        Some(Deflate {
            client_no_context_takeover: false,
            server_no_context_takeover: true
        })
    );
    assert_eq!(
        neg(&["x-webkit-deflate-frame"]),
        Err(HandshakeError::Unsupported("x-webkit-deflate-frame".into()))
    );
    assert!(matches!(
        neg(&["permessage-deflate, x-custom; a=1"]),
        Err(HandshakeError::Unsupported(_))
    ));
    for bad in [
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; x=1",
    ] {
        assert!(neg(&[bad]).is_err(), "{bad}");
    }
    assert_eq!(
        neg(&["permessage-deflate", "permessage-deflate"]),
        Err(HandshakeError::BadDeflate)
    );
    assert!(neg(&["permessage-deflate; =1"]).is_err());
}

#[test]
fn only_permessage_deflate_is_offered_upstream() {
    let offer = |v: &[&str]| {
        let mut h = headers(
            &v.iter()
                .map(|v| ("sec-websocket-extensions", *v))
                .collect::<Vec<_>>(),
        );
        offer_known_extensions(&mut h);
        h.get("sec-websocket-extensions")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        offer(&["permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"]),
        Some("permessage-deflate; client_max_window_bits".into())
    );
    assert_eq!(
        offer(&["x-a", "permessage-deflate; server_no_context_takeover"]),
        Some("permessage-deflate; server_no_context_takeover".into())
    );
    assert_eq!(offer(&["x-webkit-deflate-frame"]), None);
    assert_eq!(offer(&["permessage-deflate; \"bad"]), None);
    assert_eq!(offer(&[]), None);
}

#[test]
fn only_a_websocket_upgrade_counts() {
    assert!(is_upgrade(&headers(&[("upgrade", "websocket")])));
    assert!(is_upgrade(&headers(&[("upgrade", "foo, WebSocket")])));
    assert!(!is_upgrade(&headers(&[("upgrade", "h2c")])));
    assert!(!is_upgrade(&headers(&[("upgrade", "websocketx")])));
    assert!(!is_upgrade(&headers(&[])));
}

fn github_token() -> String {
    format!("ghp_{}", "Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3")
}

#[test]
fn scan_finds_a_token_and_passes_benign_text() {
    let rules = RuleSet::builtin();
    let msg = format!("{{\"type\":\"input\",\"data\":\"{}\"}}", github_token());
    let f = scan(&rules, msg.as_bytes()).unwrap().expect("a finding");
    assert_eq!(f.rule_id, "github-pat");
    assert_eq!(f.offset, 24);
    assert!(
        scan(&rules, b"{\"type\":\"input\",\"data\":\"ls -la\"}")
            .unwrap()
            .is_none()
    );
    assert!(scan(&rules, b"").unwrap().is_none());
    // Encoded, it is found all the same: frames are scanned as request bodies are.
    let encoded = format!("{{\"data\":\"{}\"}}", hex::encode(github_token()));
    let f = scan(&rules, encoded.as_bytes())
        .unwrap()
        .expect("found after decoding");
    assert_eq!(f.via, "hex");
}

#[test]
fn close_reasons_fit_a_control_frame() {
    let p = close_payload(1008, &"é".repeat(100));
    assert!(p.len() <= MAX_CONTROL);
    assert_eq!(&p[..2], &1008u16.to_be_bytes());
    assert!(std::str::from_utf8(&p[2..]).is_ok());
}

// ---------------------------------------------------------------------------------
// Fuzz: arbitrary bytes, cut anywhere, never panic and never hold more than one frame
// (at most the cap) plus what was fed since.

fn bounded_run(dir: Direction, deflate: bool, inflate: Option<bool>, max: usize, chunks: &[&[u8]]) {
    let mut pipe = Pipe::new(dir, deflate, inflate, max);
    let mut out = Vec::new();
    for chunk in chunks {
        let result = pipe.feed(chunk, &mut out);
        assert!(pipe.parser.buffered() <= max + 14 + chunk.len());
        if let Some((_, _, open)) = &pipe.assembler.open {
            assert!(open.len() <= max);
        }
        assert!(out.iter().all(|(_, c)| c.len() <= max));
        if result.is_err() {
            return;
        }
        out.clear();
    }
}

/// 1024 cases per property by default (about 3 s each in a debug build);
/// `PROPTEST_CASES` sets more for a longer run.
fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    /// Raw bytes in arbitrary cuts, both directions, deflate on and off.
    #[test]
    fn parser_survives_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(0usize..4096, 0..12),
        dir_up in any::<bool>(),
        deflate in any::<bool>(),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        let dir = if dir_up { Direction::Up } else { Direction::Down };
        bounded_run(dir, deflate, deflate.then_some(false), 1024, &chunks);
    }

    /// Well-framed sequences with arbitrary flags, opcodes and payloads (often
    /// compressed-looking), so the assembler and inflater are reached, not only the
    /// header checks.
    #[test]
    fn assembler_survives_arbitrary_frame_sequences(
        frames in proptest::collection::vec(
            (any::<bool>(), 0u8..8, 0u8..16, proptest::collection::vec(any::<u8>(), 0..700)),
            0..16,
        ),
        no_context_takeover in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        for (fin, rsv, op, payload) in &frames {
            bytes.extend(frame(*fin, *rsv, *op, MASK, payload));
        }
        bounded_run(Direction::Up, true, Some(no_context_takeover), 1024, &[&bytes]);
    }

    /// Real compressed messages of arbitrary content, flipped bytes, cut anywhere.
    #[test]
    fn inflater_survives_damaged_streams(
        text in proptest::collection::vec(any::<u8>(), 0..2048),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let mut m = Deflater::new().message(&text);
        for (at, x) in flips {
            if !m.is_empty() {
                let i = at % m.len();
                m[i] ^= x;
            }
        }
        let bytes = frame(true, 4, BINARY, MASK, &m);
        bounded_run(Direction::Up, true, Some(false), 1024, &[&bytes]);
    }

    /// The extension header parser on arbitrary text.
    #[test]
    fn extension_parsing_survives_arbitrary_text(text in "[ -~]{0,200}") {
        if let Ok(v) = HeaderValue::from_str(&text) {
            let mut h = HeaderMap::new();
            h.insert(hyper::header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, v);
            let _ = negotiated(&h);
            offer_known_extensions(&mut h);
        }
    }
}

// ---------------------------------------------------------------------------------
// Through the real proxy.

const HOST: &str = "ws.test";

struct World {
    pipelock: SocketAddr,
    bottle: TestPki,
    up_pki: TestPki,
    audit: Arc<MemoryAudit>,
}

async fn world() -> World {
    let up_pki = TestPki::new(&[HOST]);
    let bottle = TestPki::new(&["unused.test"]);
    let cfg = Config {
        allow: vec![HOST.into()],
        allow_cidrs: vec!["127.0.0.1/32".into()],
        dlp: DlpConfig {
            enabled: true,
            ..Default::default()
        },
        upstream_ca: Some(up_pki.ca_pem.clone()),
        ..Default::default()
    };
    let audit = Arc::new(MemoryAudit::default());
    let tls = Intercept {
        authority: Authority::from_pem(&bottle.ca_pem, &bottle.ca_key_pem).unwrap(),
        client: Arc::new(tls_config(cfg.upstream_ca.as_deref().map(str::as_bytes), &[]).unwrap()),
    };
    let resolver = MapResolve::default().with(HOST, &["127.0.0.1"]);
    let proxy = Proxy::from_config(&cfg, Arc::new(resolver), audit.clone())
        .unwrap()
        .with_tls(tls);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pipelock = l.local_addr().unwrap();
    tokio::spawn(serve(l, Arc::new(proxy)));
    World {
        pipelock,
        bottle,
        up_pki,
        audit,
    }
}

/// What a WebSocket upstream received.
type Received = Arc<Mutex<Vec<WsMessage>>>;

/// A real WebSocket server (tokio-tungstenite) that records every message and echoes
/// text and binary; with `tls`, behind TLS with the upstream test PKI's leaf.
async fn ws_upstream(tls: Option<&TestPki>) -> (u16, Received) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let acceptor = tls.map(|p| {
        tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(&p.leaf_pem, &p.leaf_key_pem).unwrap()))
    });
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let (g, acceptor) = (g.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(sock).await
                            && let Ok(ws) = tokio_tungstenite::accept_async(s).await
                        {
                            record_and_echo(ws, g).await;
                        }
                    }
                    None => {
                        if let Ok(ws) = tokio_tungstenite::accept_async(sock).await {
                            record_and_echo(ws, g).await;
                        }
                    }
                }
            });
        }
    });
    (port, got)
}

async fn record_and_echo<S>(mut ws: tokio_tungstenite::WebSocketStream<S>, got: Received)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = ws.next().await {
        got.lock().unwrap().push(m.clone());
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            break;
        }
    }
}

/// Read a response head byte by byte.
async fn head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A hand-driven WebSocket client in a CONNECT tunnel (plain HTTP inside): the
/// handshake, then frames written as given and read with the module's parser.
struct Client {
    s: TcpStream,
    frames: Pipe,
}

impl Client {
    async fn open(w: &World, port: u16, extensions: Option<&str>) -> (Client, String) {
        let target = format!("{HOST}:{port}");
        let mut s = connect_tunnel(w.pipelock, &target).await.unwrap();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!(
                "GET /chat HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n{ext}\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let h = head(&mut s).await;
        let deflate = h.to_ascii_lowercase().contains("permessage-deflate");
        let frames = Pipe::new(Direction::Down, deflate, deflate.then_some(false), 1 << 20);
        (Client { s, frames }, h)
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The proxy may already have closed: a refused write is part of the test.
        let _ = self.s.write_all(bytes).await;
    }

    /// Frames and messages until `n` came, the connection closed, or 5 s passed.
    async fn read(&mut self, n: usize) -> Out {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.s.read(&mut buf)).await {
                Ok(Ok(k)) if k > 0 => self.frames.feed(&buf[..k], &mut out).unwrap(),
                _ => break,
            }
        }
        out
    }

    /// The close frame pipelock sent: (code, reason).
    async fn closed(&mut self) -> (u16, String) {
        let out = self.read(usize::MAX).await;
        let (_, p) = out
            .into_iter()
            .find(|(k, _)| k == "close")
            .expect("a close frame");
        (
            u16::from_be_bytes([p[0], p[1]]),
            String::from_utf8_lossy(&p[2..]).into_owned(),
        )
    }
}

/// Wait until the upstream's record settles (the relay closed it, or nothing more).
async fn settled(got: &Received) -> Vec<WsMessage> {
    for _ in 0..50 {
        if got.lock().unwrap().iter().any(|m| m.is_close()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got.lock().unwrap().clone()
}

fn data_messages(got: &[WsMessage]) -> Vec<Vec<u8>> {
    got.iter()
        .filter(|m| m.is_text() || m.is_binary())
        .map(|m| m.clone().into_data().to_vec())
        .collect()
}

#[tokio::test]
async fn benign_messages_pass_untouched_both_ways() {
    let w = world().await;
    let (port, got) = ws_upstream(None).await;
    let (mut c, h) = Client::open(&w, port, None).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    c.send(&cf(true, TEXT, b"hello pipelock")).await;
    // Fragmented, with a ping in between: one message upstream, a pong back.
    let mut frag = cf(false, BINARY, b"\x00\x01");
    frag.extend(cf(true, PING, b"are you there"));
    frag.extend(cf(false, CONT, b"\x02"));
    frag.extend(cf(true, CONT, b"\x03"));
    c.send(&frag).await;
    let out = c.read(3).await;
    assert_eq!(
        out,
        vec![
            item("text", b"hello pipelock"),
            item("pong", b"are you there"),
            item("binary", b"\x00\x01\x02\x03"),
        ]
    );
    c.send(&cf(true, CLOSE, b"\x03\xe8")).await;
    let out = c.read(1).await;
    assert_eq!(out, vec![item("close", b"\x03\xe8")]);
    let got = settled(&got).await;
    assert_eq!(
        data_messages(&got),
        vec![b"hello pipelock".to_vec(), b"\x00\x01\x02\x03".to_vec()]
    );
    drop(c);
    let mut done = None;
    for _ in 0..100 {
        done = w
            .audit
            .events()
            .into_iter()
            .find(|e| e.part == Some("websocket"));
        if done.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = done.expect("a close line");
    assert_eq!((done.decision, done.reason), ("close", "done"));
    assert!(done.bytes_up.unwrap() > 0 && done.bytes_down.unwrap() > 0);
    assert!(w.audit.events().iter().all(|e| e.decision != "deny"));
}

/// One hostile client message per case: the upstream must receive none of it, the
/// client gets a 1008 close, the audit a deny line without the secret.
#[tokio::test]
async fn hostile_messages_never_reach_the_upstream() {
    let token = github_token();
    let (a, b) = token.split_at(12);
    let (b, c) = b.split_at(10);
    let mut fragmented = cf(false, TEXT, format!("key={a}").as_bytes());
    fragmented.extend(cf(true, PING, b""));
    fragmented.extend(cf(false, CONT, b.as_bytes()));
    fragmented.extend(cf(true, CONT, c.as_bytes()));
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        (
            "token in a text frame",
            cf(true, TEXT, format!("{{\"k\":\"{token}\"}}").as_bytes()),
            "dlp",
            Some("github-pat"),
        ),
        (
            "token in a binary frame",
            cf(true, BINARY, token.as_bytes()),
            "dlp",
            Some("github-pat"),
        ),
        (
            "token split over fragments",
            fragmented,
            "dlp",
            Some("github-pat"),
        ),
        (
            "token in a ping",
            cf(true, PING, token.as_bytes()),
            "dlp",
            Some("github-pat"),
        ),
        (
            "RSV1 without an extension",
            frame(true, 4, TEXT, MASK, b"looks compressed"),
            "websocket",
            None,
        ),
        (
            "unmasked client frame",
            frame(true, 0, TEXT, None, b"unmasked"),
            "websocket",
            None,
        ),
        (
            "reserved opcode",
            cf(true, 3, b"opcode three"),
            "websocket",
            None,
        ),
        (
            "frame over the cap",
            long_header(BINARY, (MAX_MESSAGE + 1) as u64, true),
            "websocket",
            None,
        ),
    ];
    for (what, bytes, reason, rule) in cases {
        let w = world().await;
        let (port, got) = ws_upstream(None).await;
        let (mut c, h) = Client::open(&w, port, None).await;
        assert!(h.starts_with("HTTP/1.1 101"), "{what}: {h}");
        // A benign message first: the connection works until the hostile one.
        c.send(&cf(true, TEXT, b"benign")).await;
        assert_eq!(c.read(1).await, vec![item("text", b"benign")], "{what}");
        c.send(&bytes).await;
        let (code, why) = c.closed().await;
        assert_eq!(code, 1008, "{what}");
        let got = settled(&got).await;
        assert_eq!(data_messages(&got), vec![b"benign".to_vec()], "{what}");
        assert!(
            got.iter()
                .all(|m| !m.is_ping() || m.clone().into_data().is_empty()),
            "{what}: a ping with a payload reached the upstream: {got:?}"
        );
        let close = got.iter().find_map(|m| match m {
            WsMessage::Close(Some(f)) => Some(u16::from(f.code)),
            _ => None,
        });
        assert_eq!(close, Some(1008), "{what}: the upstream is closed too");
        assert!(
            got.iter().all(|m| !m.to_string().contains("DLP")),
            "{what}: the upstream is not told the rule"
        );
        let deny = w
            .audit
            .events()
            .into_iter()
            .find(|e| e.decision == "deny")
            .unwrap_or_else(|| panic!("{what}: no deny line"));
        assert_eq!(deny.reason, reason, "{what}");
        assert_eq!(deny.part, Some("websocket-up"), "{what}");
        assert_eq!(deny.rule.as_deref(), rule, "{what}");
        assert_eq!(deny.host, HOST);
        if let Some(rule) = rule {
            assert!(why.contains(rule), "{what}: {why}");
        }
        let logged = serde_json::to_string(&w.audit.events()).unwrap();
        assert!(!logged.contains(&token[4..]), "{what}: {logged}");
        assert!(!why.contains(&token[4..]), "{what}");
    }
}

/// A hand-rolled upstream that answers the upgrade with `extensions` (none when
/// empty), sends `then`, and records its request head and the raw bytes it received.
async fn raw_upstream(
    extensions: &'static str,
    then: Vec<u8>,
) -> (u16, Arc<Mutex<(String, Vec<u8>)>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Arc<Mutex<(String, Vec<u8>)>> = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (g, then) = (g.clone(), then.clone());
            tokio::spawn(async move {
                let h = head(&mut s).await;
                g.lock().unwrap().0 = h;
                let ext = if extensions.is_empty() {
                    String::new()
                } else {
                    format!("Sec-WebSocket-Extensions: {extensions}\r\n")
                };
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                     {ext}\r\n"
                );
                if s.write_all(resp.as_bytes()).await.is_err() || s.write_all(&then).await.is_err()
                {
                    return;
                }
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    g.lock().unwrap().1.extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, got)
}

#[tokio::test]
async fn compressed_messages_are_inflated_and_scanned() {
    let w = world().await;
    let (port, got) =
        raw_upstream("permessage-deflate; client_no_context_takeover", Vec::new()).await;
    let (mut c, h) = Client::open(
        &w,
        port,
        Some("permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"),
    )
    .await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    let mut z = Deflater::new();
    let benign = z.message(b"{\"prompt\":\"hello\"}");
    c.send(&frame(true, 4, TEXT, MASK, &benign)).await;
    let z_reset = &mut Deflater::new();
    let hostile = z_reset.message(format!("{{\"k\":\"{}\"}}", github_token()).as_bytes());
    // Fragmented too: the token is only visible after reassembly and inflation.
    let mut bytes = frame(false, 4, TEXT, MASK, &hostile[..5]);
    bytes.extend(frame(true, 0, CONT, MASK, &hostile[5..]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(&bytes).await;
    let (code, why) = c.closed().await;
    assert_eq!(code, 1008);
    assert!(why.contains("github-pat"), "{why}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (req, raw) = got.lock().unwrap().clone();
    let req = req.to_ascii_lowercase();
    assert!(
        req.contains("sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"),
        "{req}"
    );
    assert!(!req.contains("x-webkit"), "{req}");
    // What the upstream got: the benign message, compressed bytes as sent, then a close.
    let mut out = Vec::new();
    Pipe::new(Direction::Up, true, Some(true), 1 << 20)
        .feed(&raw, &mut out)
        .unwrap();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], item("text", b"{\"prompt\":\"hello\"}"));
    assert_eq!(out[1].0, "close");
    assert_eq!(&out[1].1[..2], &1008u16.to_be_bytes());
    let deny = w
        .audit
        .events()
        .into_iter()
        .find(|e| e.decision == "deny")
        .unwrap();
    assert_eq!(
        (deny.reason, deny.rule.as_deref()),
        ("dlp", Some("github-pat"))
    );
}

#[tokio::test]
async fn an_extension_pipelock_cannot_read_is_refused_at_the_handshake() {
    let w = world().await;
    let (port, _) = raw_upstream("x-custom-compress", Vec::new()).await;
    let (_, h) = Client::open(&w, port, Some("x-custom-compress")).await;
    assert!(h.starts_with("HTTP/1.1 502"), "{h}");
    let deny = w
        .audit
        .events()
        .into_iter()
        .find(|e| e.decision == "deny")
        .unwrap();
    assert_eq!(deny.reason, "websocket");
}

/// A hostile upstream is bounded too: a masked frame, RSV bits or a huge length from
/// it closes the connection (1008 to the client), audited as `websocket-down`.
#[tokio::test]
async fn a_hostile_upstream_is_parsed_and_bounded() {
    for (what, bytes) in [
        ("masked", cf(true, TEXT, b"masked from a server")),
        ("rsv1", frame(true, 4, TEXT, None, b"x")),
        ("huge", long_header(BINARY, u64::MAX >> 1, false)),
        ("long control", frame(true, 0, PING, None, &[0; 200])),
    ] {
        let w = world().await;
        let mut then = frame(true, 0, TEXT, None, b"welcome");
        then.extend(bytes);
        let (port, got) = raw_upstream("", then).await;
        let (mut c, h) = Client::open(&w, port, None).await;
        assert!(h.starts_with("HTTP/1.1 101"), "{what}: {h}");
        let out = c.read(usize::MAX).await;
        assert_eq!(out.first(), Some(&item("text", b"welcome")), "{what}");
        let close = out.iter().find(|(k, _)| k == "close").expect("a close");
        assert_eq!(&close.1[..2], &1008u16.to_be_bytes(), "{what}");
        assert_eq!(out.len(), 2, "{what}: {out:?}");
        let deny = w
            .audit
            .events()
            .into_iter()
            .find(|e| e.decision == "deny")
            .unwrap();
        assert_eq!(deny.reason, "websocket", "{what}");
        assert_eq!(deny.part, Some("websocket-down"), "{what}");
        // The upstream got a close too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut out = Vec::new();
        Pipe::new(Direction::Up, false, None, 1 << 20)
            .feed(&got.lock().unwrap().1, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "{what}: {out:?}");
        assert_eq!(out[0].0, "close");
    }
}

/// Another Upgrade (h2c, or anything) is not relayed: the header is dropped, the
/// request goes as plain HTTP.
#[tokio::test]
async fn other_upgrades_are_not_passed_on() {
    let w = world().await;
    let (plain, seen) = crate::pipelock::tests::upstream().await;
    let target = format!("{HOST}:{}", plain.port());
    let mut t = connect_tunnel(w.pipelock, &target).await.unwrap();
    t.write_all(
        format!(
            "GET /x HTTP/1.1\r\nHost: {target}\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let heads = seen.lock().unwrap().heads.join("\n").to_ascii_lowercase();
    assert!(!heads.contains("h2c"), "{heads}");
}

/// wss through TLS interception with a real WebSocket client (tokio-tungstenite).
#[tokio::test]
async fn intercepted_wss_is_inspected_with_a_real_client() {
    let w = world().await;
    let (port, got) = ws_upstream(Some(&w.up_pki)).await;
    let target = format!("{HOST}:{port}");
    let open = || async {
        let t = connect_tunnel(w.pipelock, &target).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(HOST.to_string()).unwrap();
        let tls = tls_client(&w.bottle.ca_pem, false)
            .connect(name, t)
            .await
            .unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(format!("wss://{target}/socket"), tls)
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        ws
    };
    let mut ws = open().await;
    ws.send(WsMessage::text("benign over wss")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo, WsMessage::text("benign over wss"));
    ws.send(WsMessage::text(format!("token {}", github_token())))
        .await
        .unwrap();
    let close = loop {
        match ws.next().await {
            Some(Ok(WsMessage::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("github-pat"), "{}", close.reason);
    let got = settled(&got).await;
    assert_eq!(data_messages(&got), vec![b"benign over wss".to_vec()]);
    let deny = w
        .audit
        .events()
        .into_iter()
        .find(|e| e.decision == "deny")
        .unwrap();
    assert_eq!(deny.tls, Some("intercept"));
    assert_eq!(deny.part, Some("websocket-up"));
}
