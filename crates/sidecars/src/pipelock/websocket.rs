//! WebSocket inspection: after an HTTP/1.1 `Upgrade: websocket` that pipelock relayed
//! (see `server::Proxy::inner`), the two upgraded streams go through [`Relay`] instead
//! of being spliced, so a WebSocket is no way around DLP.
//!
//! Both directions are parsed as RFC 6455 frames ([`FrameParser`]): client frames must
//! be masked and upstream frames must not be; RSV bits are refused unless
//! permessage-deflate (RFC 7692) was negotiated, and then only RSV1 on the first frame
//! of a data message; reserved opcodes, control frames over 125 bytes or fragmented,
//! a continuation with no message open, a new message inside an open one and a frame or
//! message over [`MAX_MESSAGE`] are refused. [`Assembler`] reassembles fragmented
//! messages (control frames may come in between and are passed on at once) and inflates
//! a compressed one with the same cap. Every complete client message, text or binary,
//! and every client control payload (a ping can carry a token too) goes through [`scan`]
//! before a byte of it is sent on; an incomplete message is never sent. The upstream's
//! messages are parsed and bounded the same way (a hostile upstream cannot make pipelock
//! hold more than the cap) but not scanned: DLP is about what leaves, and scanning what
//! reaches the agent is the job of the response inspection.
//!
//! A refusal closes the connection: the client gets a close frame with code 1008
//! (policy violation) and a reason naming the rule or the fault, the upstream a close
//! 1008 that names neither, and the audit a `deny` line (reason `dlp` with the rule and offset, or
//! `websocket` with the fault) whose `part` names the direction. The offending message
//! and the frames of an unfinished one are dropped.
//!
//! Forwarding re-encodes: a cleared message goes out as one frame (a fresh mask towards
//! the upstream), a compressed one with its compressed bytes unchanged, so the deflate
//! contexts of the two ends, which pipelock mirrors but does not share, stay in step.
//!
//! Why [`MAX_MESSAGE`] is 16 MiB: it is tungstenite's default frame cap (so what a
//! common peer sends in one frame fits), many times what interactive protocols send
//! (chat and model streaming events, LSP, notebook kernels), and it bounds what one
//! connection can make pipelock hold: the message as sent plus its inflated form
//! towards the upstream and the message as sent from it, each at most the cap (up to
//! twice that for a moment while fragments are copied together), plus a read buffer of
//! [`READ_CHUNK`] each way.
//!
//! Crates: `tungstenite` parses and writes frame headers here ([`FrameHeader::parse`]
//! validates opcodes and reads 16- and 64-bit lengths from a buffer without consuming a
//! partial header). Its `WebSocket` and `tokio-tungstenite`'s stream are not used: they
//! refuse every frame with an RSV bit (no permessage-deflate, which browsers and Node's
//! `ws` negotiate by default), unmask, reassemble and re-frame with no access to the
//! raw frames, and do not keep a compressed payload to forward untouched; their raw
//! `FrameSocket` is blocking I/O. Reassembly, the checks above and the relay are here;
//! inflation is `flate2`'s raw `Decompress`, fed with an output buffer that never grows
//! past the cap.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use hyper::header::{self, HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, watch};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::audit::{Audit, Event};
use bottle_secretscan::{Finding, RuleSet};

#[cfg(test)]
mod tests;

/// The largest frame and the largest message (as sent, and inflated) relayed: 16 MiB.
pub const MAX_MESSAGE: usize = 16 << 20;
/// The largest control frame payload (RFC 6455 section 5.5).
pub const MAX_CONTROL: usize = 125;
/// How much is read from a peer at a time.
pub const READ_CHUNK: usize = 64 << 10;
/// The close code pipelock sends when it refuses: policy violation.
pub const POLICY_VIOLATION: u16 = 1008;
/// After a refusal, how long the other direction may take to finish the frame it is
/// writing before both connections are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The tail a permessage-deflate sender strips from each message (RFC 7692 7.2.1).
const DEFLATE_TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Which way frames travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client (the agent) to upstream: masked frames, scanned.
    Up,
    /// Upstream to client: unmasked frames, bounded.
    Down,
}

impl Direction {
    /// The audit event's `part` for this direction.
    pub fn part(self) -> &'static str {
        match self {
            Direction::Up => "websocket-up",
            Direction::Down => "websocket-down",
        }
    }
}

/// Caps on what one direction may make pipelock hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload, reassembled message and inflated message, in bytes.
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: MAX_MESSAGE,
        }
    }
}

/// The permessage-deflate parameters the upstream accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deflate {
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The upstream resets its compressor after each message.
    pub server_no_context_takeover: bool,
}

/// What the handshake negotiated, from the upstream's 101 response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    pub deflate: Option<Deflate>,
}

/// Why an upgrade cannot be relayed with inspection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the upstream switched protocols without a WebSocket upgrade")]
    NotWebSocket,
    /// The name is the upstream's, from its own response.
    #[error("the upstream negotiated the WebSocket extension {0:?}, which pipelock cannot inspect")]
    Unsupported(String),
    #[error("the upstream's permessage-deflate parameters are invalid")]
    BadDeflate,
}

/// Does this request (or 101 response) ask for a WebSocket upgrade?
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Keep only the permessage-deflate offers of a request's `Sec-WebSocket-Extensions`,
/// so that the upstream cannot pick an extension pipelock cannot read. An offer that
/// does not parse drops the header (no extension is always a valid handshake).
pub fn offer_known_extensions(headers: &mut HeaderMap) {
    let offers: Option<Vec<String>> = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    let Some(offers) = offers else { return };
    let mut kept = Vec::new();
    for offer in offers.iter().flat_map(|v| v.split(',')) {
        let Some((name, _)) = parse_extension(offer) else {
            return;
        };
        if name.eq_ignore_ascii_case("permessage-deflate") {
            kept.push(offer.trim());
        }
    }
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join(", "))
    {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
}

/// An extension parameter: its name and value (without quotes), if it has one.
type Param<'a> = (&'a str, Option<&'a str>);

/// One extension of a `Sec-WebSocket-Extensions` list: its name and parameters, or
/// None when it does not parse.
fn parse_extension(text: &str) -> Option<(&str, Vec<Param<'_>>)> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let mut parts = text.split(';').map(str::trim);
    let name = parts.next().filter(|n| token(n))?;
    let mut params = Vec::new();
    for p in parts {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim(), Some(Some(v).filter(|v| token(v))?))
            }
            None => (p, None),
        };
        if !token(k) {
            return None;
        }
        params.push((k, v));
    }
    Some((name, params))
}

/// What the upstream's 101 response negotiated. Anything but at most one valid
/// permessage-deflate is refused: pipelock would not be able to read the frames.
pub fn negotiated(response: &HeaderMap) -> Result<Extensions, HandshakeError> {
    if !is_upgrade(response) {
        return Err(HandshakeError::NotWebSocket);
    }
    let mut ext = Extensions::default();
    for value in response.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
        let text = value
            .to_str()
            .map_err(|_| HandshakeError::Unsupported("(not text)".into()))?;
        for item in text.split(',').filter(|i| !i.trim().is_empty()) {
            let (name, params) = parse_extension(item)
                .ok_or_else(|| HandshakeError::Unsupported(excerpt(item.trim())))?;
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                return Err(HandshakeError::Unsupported(excerpt(name)));
            }
            if ext.deflate.is_some() {
                return Err(HandshakeError::BadDeflate);
            }
            ext.deflate = Some(deflate_params(&params)?);
        }
    }
    Ok(ext)
}

fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The parameters of an accepted permessage-deflate (RFC 7692 section 7.1): each at
/// most once, window bits 8 to 15. Any window works for the inflater (it keeps 32 KiB).
fn deflate_params(params: &[Param<'_>]) -> Result<Deflate, HandshakeError> {
    let mut d = Deflate::default();
    let mut seen = Vec::new();
    for (k, v) in params {
        let k = k.to_ascii_lowercase();
        if seen.contains(&k) {
            return Err(HandshakeError::BadDeflate);
        }
        match (k.as_str(), v) {
            ("client_no_context_takeover", None) => d.client_no_context_takeover = true,
            ("server_no_context_takeover", None) => d.server_no_context_takeover = true,
            ("client_max_window_bits" | "server_max_window_bits", Some(bits))
                if bits.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b))
                    && !bits.starts_with('0') => {}
            _ => return Err(HandshakeError::BadDeflate),
        }
        seen.push(k);
    }
    Ok(d)
}

/// Why a frame or message was refused. The text names the fault, never payload bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a frame with RSV bits {0:#05b} set that no negotiated extension defines")]
    Reserved(u8),
    #[error("a frame with the undefined opcode {0:#x}")]
    Opcode(u8),
    #[error("an unmasked frame from the client")]
    Unmasked,
    #[error("a masked frame from the upstream")]
    Masked,
    #[error("a frame whose 64-bit length has its most significant bit set")]
    Length,
    #[error("a frame of {0} bytes, over the {1}-byte cap")]
    FrameTooLarge(u64, usize),
    #[error("a message over the {0}-byte cap")]
    MessageTooLarge(usize),
    #[error("a control frame of {0} bytes (at most 125)")]
    ControlTooLarge(u64),
    #[error("a fragmented control frame")]
    FragmentedControl,
    #[error("a continuation frame with no message begun")]
    Continuation,
    #[error("a new message begun before the previous one ended")]
    Interleaved,
    #[error("a close frame with a one-byte payload")]
    Close,
    #[error("a compressed message that does not inflate")]
    Inflate,
    #[error("a compressed message that inflates past the {0}-byte cap")]
    InflatedTooLarge(usize),
    #[error(
        "a compressed message that refers to an earlier one after no context takeover was agreed"
    )]
    ContextTakeover,
    #[error("a message whose decoded forms exceed the DLP scanning budget")]
    Undecodable,
}

/// One frame, unmasked. Debug shows the payload's length, not its bytes.
pub struct Frame {
    pub fin: bool,
    /// Set on the first frame of a compressed message.
    pub rsv1: bool,
    pub opcode: OpCode,
    pub payload: BytesMut,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("fin", &self.fin)
            .field("rsv1", &self.rsv1)
            .field("opcode", &self.opcode)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// A sans-I/O frame parser for one direction: bytes in ([`Self::buffer`]), frames out
/// ([`Self::next_frame`]). A header is checked before its payload is buffered, so the
/// buffer never holds more than one frame (at most the cap) and one read.
pub struct FrameParser {
    dir: Direction,
    deflate: bool,
    limits: Limits,
    buf: BytesMut,
    /// The header of the frame whose payload is awaited, and its length.
    pending: Option<(FrameHeader, usize)>,
}

impl FrameParser {
    /// `deflate`: permessage-deflate was negotiated, so RSV1 may start a message.
    pub fn new(dir: Direction, deflate: bool, limits: Limits) -> FrameParser {
        FrameParser {
            dir,
            deflate,
            limits,
            buf: BytesMut::new(),
            pending: None,
        }
    }

    /// Where read bytes go; room for one read is reserved first.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, None until more bytes are needed, or the refusal.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Refusal> {
        if self.pending.is_none() {
            let mut cursor = Cursor::new(&self.buf[..]);
            let parsed = match FrameHeader::parse(&mut cursor) {
                Ok(p) => p,
                Err(tungstenite::Error::Protocol(ProtocolError::InvalidOpcode(op))) => {
                    return Err(Refusal::Opcode(op));
                }
                Err(_) => return Err(Refusal::Opcode(self.buf.first().map_or(0, |b| b & 0xf))),
            };
            let Some((head, len)) = parsed else {
                return Ok(None);
            };
            let used = usize::try_from(cursor.position()).map_err(|_| Refusal::Length)?;
            let len = self.check(&head, len)?;
            self.buf.advance(used);
            self.pending = Some((head, len));
        }
        let Some((_, len)) = &self.pending else {
            return Ok(None);
        };
        let len = *len;
        if self.buf.len() < len {
            return Ok(None);
        }
        let Some((head, _)) = self.pending.take() else {
            return Ok(None);
        };
        let mut payload = self.buf.split_to(len);
        if let Some(mask) = head.mask {
            apply_mask(&mut payload, mask);
        }
        Ok(Some(Frame {
            fin: head.is_final,
            rsv1: head.rsv1,
            opcode: head.opcode,
            payload,
        }))
    }

    /// The checks on a header, before its payload is read; the payload length.
    fn check(&self, head: &FrameHeader, len: u64) -> Result<usize, Refusal> {
        let rsv = u8::from(head.rsv1) << 2 | u8::from(head.rsv2) << 1 | u8::from(head.rsv3);
        let first_data = matches!(head.opcode, OpCode::Data(Data::Text | Data::Binary));
        if head.rsv2 || head.rsv3 || (head.rsv1 && !(self.deflate && first_data)) {
            return Err(Refusal::Reserved(rsv));
        }
        match (self.dir, head.mask.is_some()) {
            (Direction::Up, false) => return Err(Refusal::Unmasked),
            (Direction::Down, true) => return Err(Refusal::Masked),
            _ => {}
        }
        if len > i64::MAX as u64 {
            return Err(Refusal::Length);
        }
        if let OpCode::Control(_) = head.opcode {
            if !head.is_final {
                return Err(Refusal::FragmentedControl);
            }
            if len > MAX_CONTROL as u64 {
                return Err(Refusal::ControlTooLarge(len));
            }
        }
        match usize::try_from(len) {
            Ok(n) if n <= self.limits.max_message => Ok(n),
            _ => Err(Refusal::FrameTooLarge(len, self.limits.max_message)),
        }
    }
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A complete data message. Debug shows lengths, not bytes.
pub struct Message {
    /// Text or binary.
    pub opcode: OpCode,
    /// The payload as sent: compressed when `compressed`.
    pub payload: BytesMut,
    pub compressed: bool,
    /// The inflated payload, when compressed and this direction inflates.
    pub inflated: Option<Vec<u8>>,
}

impl Message {
    /// What the message says: the inflated payload, or the payload as sent.
    pub fn content(&self) -> &[u8] {
        self.inflated.as_deref().unwrap_or(&self.payload)
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("opcode", &self.opcode)
            .field("len", &self.payload.len())
            .field("compressed", &self.compressed)
            .field("inflated", &self.inflated.as_ref().map(Vec::len))
            .finish()
    }
}

/// What [`Assembler::push`] hands on.
#[derive(Debug)]
pub enum Item {
    /// A control frame: passed on at once, even inside a fragmented message.
    Control(Frame),
    /// A complete data message.
    Message(Message),
}

/// Reassembles one direction's data frames into messages, inflating compressed ones
/// when it has an inflater.
pub struct Assembler {
    limits: Limits,
    inflater: Option<Inflater>,
    /// The message begun and not finished: opcode, compressed, payload so far.
    open: Option<(OpCode, bool, BytesMut)>,
}

impl Assembler {
    /// `inflate`: None to pass compressed messages on as they are (deflate not
    /// negotiated, or this direction is not scanned); `Some(no_context_takeover)`, the
    /// sender's parameter, to inflate them.
    pub fn new(limits: Limits, inflate: Option<bool>) -> Assembler {
        Assembler {
            limits,
            inflater: inflate.map(Inflater::new),
            open: None,
        }
    }

    /// Take one frame; a complete message or control frame when there is one.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Item>, Refusal> {
        match frame.opcode {
            OpCode::Control(c) => {
                if c == Control::Close && frame.payload.len() == 1 {
                    return Err(Refusal::Close);
                }
                Ok(Some(Item::Control(frame)))
            }
            OpCode::Data(Data::Continue) => {
                let Some((_, _, payload)) = self.open.as_mut() else {
                    return Err(Refusal::Continuation);
                };
                if payload.len() + frame.payload.len() > self.limits.max_message {
                    return Err(Refusal::MessageTooLarge(self.limits.max_message));
                }
                payload.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Ok(None);
                }
                let Some((opcode, compressed, payload)) = self.open.take() else {
                    return Err(Refusal::Continuation);
                };
                self.finish(opcode, compressed, payload).map(Some)
            }
            OpCode::Data(Data::Text | Data::Binary) => {
                if self.open.is_some() {
                    return Err(Refusal::Interleaved);
                }
                if frame.fin {
                    return self
                        .finish(frame.opcode, frame.rsv1, frame.payload)
                        .map(Some);
                }
                self.open = Some((frame.opcode, frame.rsv1, frame.payload));
                Ok(None)
            }
            OpCode::Data(Data::Reserved(op)) => Err(Refusal::Opcode(op)),
        }
    }

    fn finish(
        &mut self,
        opcode: OpCode,
        compressed: bool,
        payload: BytesMut,
    ) -> Result<Item, Refusal> {
        let inflated = match (&mut self.inflater, compressed) {
            (Some(z), true) => Some(z.inflate(&payload, self.limits.max_message)?),
            _ => None,
        };
        Ok(Item::Message(Message {
            opcode,
            payload,
            compressed,
            inflated,
        }))
    }
}

/// A permessage-deflate receiver's inflater: raw DEFLATE, its window kept from one
/// message to the next, as a receiver that keeps its context decodes. When the sender
/// declared no context takeover, each message must also inflate alone to the same
/// bytes: otherwise a receiver that keeps its window anyway would read something else
/// than pipelock scanned (and this inflater, unlike zlib, reads a reference to before
/// its window as zeros instead of failing).
struct Inflater {
    z: Decompress,
    alone: Option<Decompress>,
}

impl Inflater {
    fn new(no_context_takeover: bool) -> Inflater {
        Inflater {
            z: Decompress::new(false),
            alone: no_context_takeover.then(|| Decompress::new(false)),
        }
    }

    /// Inflate one message; more than `cap` bytes out, or a stream that does not
    /// decode, is refused. The output never holds more than `cap` bytes.
    fn inflate(&mut self, payload: &[u8], cap: usize) -> Result<Vec<u8>, Refusal> {
        let mut out: Vec<u8> = Vec::new();
        let ended = drive(&mut self.z, payload, |chunk| {
            if out.len() + chunk.len() > cap {
                return Err(Refusal::InflatedTooLarge(cap));
            }
            if out.capacity() - out.len() < chunk.len() {
                let more = out.len().max(chunk.len()).max(4096).min(cap - out.len());
                out.reserve_exact(more);
            }
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        if ended {
            // A final block ends the stream: the next message starts a new one.
            self.z.reset(false);
        }
        if let Some(alone) = &mut self.alone {
            alone.reset(false);
            let mut at = 0;
            drive(alone, payload, |chunk| {
                if out.get(at..at + chunk.len()) != Some(chunk) {
                    return Err(Refusal::ContextTakeover);
                }
                at += chunk.len();
                Ok(())
            })
            .map_err(|_| Refusal::ContextTakeover)?;
            if at != out.len() {
                return Err(Refusal::ContextTakeover);
            }
        }
        Ok(out)
    }
}

/// Run one message (its payload, then the tail the sender stripped, RFC 7692 7.2.2)
/// through `z`, handing the output to `sink` in pieces of at most 32 KiB. True when a
/// final block ended the stream; data after a final block is refused.
fn drive(
    z: &mut Decompress,
    payload: &[u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), Refusal>,
) -> Result<bool, Refusal> {
    let mut scratch = [0u8; 32 << 10];
    for (input, is_tail) in [(payload, false), (&DEFLATE_TAIL[..], true)] {
        let mut pos = 0;
        loop {
            let (in0, out0) = (z.total_in(), z.total_out());
            let status = z
                .decompress(&input[pos..], &mut scratch, FlushDecompress::Sync)
                .map_err(|_| Refusal::Inflate)?;
            let used = usize::try_from(z.total_in() - in0).map_err(|_| Refusal::Inflate)?;
            let made = usize::try_from(z.total_out() - out0).map_err(|_| Refusal::Inflate)?;
            pos += used;
            sink(scratch.get(..made).ok_or(Refusal::Inflate)?)?;
            if status == Status::StreamEnd {
                if pos < input.len() && !is_tail {
                    return Err(Refusal::Inflate);
                }
                return Ok(true);
            }
            if made == scratch.len() {
                continue; // the output was full: more may be pending
            }
            if pos >= input.len() {
                break;
            }
            if used == 0 && made == 0 {
                return Err(Refusal::Inflate);
            }
        }
    }
    Ok(false)
}

/// The DLP verdict on one complete client message or control payload (text or binary,
/// inflated), in every decoded form (`RuleSet::scan_deep`, as for request bodies): the
/// one call that decides. Decoded forms over the budget refuse the message.
pub fn scan(rules: &RuleSet, message: &[u8]) -> Result<Option<Finding>, Refusal> {
    rules
        .scan_deep(message, &bottle_secretscan::Limits::default())
        .map(super::server::most_specific)
        .map_err(|_| Refusal::Undecodable)
}

/// Why a direction stopped the connection.
enum Violation {
    Refused(Refusal),
    Dlp(Finding, OpCode),
}

/// How a direction ended without a violation.
struct End {
    bytes: u64,
    error: Option<String>,
}

/// The inspecting relay of one upgraded connection.
pub struct Relay {
    pub extensions: Extensions,
    /// DLP rules for what the client sends; None when DLP is off (frames are still
    /// parsed and bounded both ways).
    pub rules: Option<Arc<RuleSet>>,
    pub audit: Arc<dyn Audit>,
    /// The upgrade request's audit event (method, host, port, tls): the template of
    /// the relay's lines.
    pub event: Event,
    pub limits: Limits,
}

impl Relay {
    /// Relay between `client` and `upstream` until both ends are done or a refusal;
    /// records one audit line: the refusal, or the close with the bytes each way.
    pub async fn run<C, U>(self, client: C, upstream: U)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
        U: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (client_rx, client_tx) = tokio::io::split(client);
        let (up_rx, up_tx) = tokio::io::split(upstream);
        let (client_tx, up_tx) = (Mutex::new(client_tx), Mutex::new(up_tx));
        let (stop_tx, stop) = watch::channel(false);
        let deflate = self.extensions.deflate;
        let rules = self.rules.as_deref();
        let up = pump(
            Direction::Up,
            client_rx,
            &up_tx,
            FrameParser::new(Direction::Up, deflate.is_some(), self.limits),
            Assembler::new(
                self.limits,
                deflate
                    .filter(|_| rules.is_some())
                    .map(|d| d.client_no_context_takeover),
            ),
            rules,
            stop.clone(),
        );
        let down = pump(
            Direction::Down,
            up_rx,
            &client_tx,
            FrameParser::new(Direction::Down, deflate.is_some(), self.limits),
            Assembler::new(self.limits, None),
            None,
            stop,
        );
        let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
        let (mut up_end, mut down_end) = (None, None);
        let violation = loop {
            tokio::select! {
                r = &mut up, if up_end.is_none() => match r {
                    Ok(e) => up_end = Some(e),
                    Err(v) => break Some((Direction::Up, v)),
                },
                r = &mut down, if down_end.is_none() => match r {
                    Ok(e) => down_end = Some(e),
                    Err(v) => break Some((Direction::Down, v)),
                },
            }
            if up_end.is_some() && down_end.is_some() {
                break None;
            }
        };
        let mut ev = self.event.clone();
        let Some((dir, violation)) = violation else {
            let (up_end, down_end) = (
                up_end.unwrap_or_else(End::none),
                down_end.unwrap_or_else(End::none),
            );
            ev.decision = "close";
            ev.reason = "done";
            ev.part = Some("websocket");
            ev.bytes_up = Some(up_end.bytes);
            ev.bytes_down = Some(down_end.bytes);
            ev.detail = up_end.error.or(down_end.error);
            self.audit.record(ev);
            return;
        };
        // Let the other direction finish a frame it is writing, then close both ends.
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if up_end.is_none() && dir != Direction::Up {
                let _ = (&mut up).await;
            }
            if down_end.is_none() && dir != Direction::Down {
                let _ = (&mut down).await;
            }
        })
        .await;
        ev.decision = "deny";
        ev.part = Some(dir.part());
        let reason = match &violation {
            Violation::Dlp(f, opcode) => {
                ev.reason = "dlp";
                ev.rule = Some(f.rule_id.clone());
                ev.offset = Some(f.offset);
                ev.detail = Some(format!("{} {}", opcode, kind(*opcode)));
                format!("pipelock: blocked by DLP rule {}", f.rule_id)
            }
            Violation::Refused(r) => {
                ev.reason = "websocket";
                ev.detail = Some(r.to_string());
                format!("pipelock: {r}")
            }
        };
        // The client learns why; the upstream, which may be the attacker's, only that
        // the connection broke policy.
        close_end(
            &client_tx,
            Direction::Down,
            &close_payload(POLICY_VIOLATION, &reason),
        )
        .await;
        close_end(
            &up_tx,
            Direction::Up,
            &close_payload(POLICY_VIOLATION, "policy violation"),
        )
        .await;
        self.audit.record(ev);
    }
}

impl End {
    fn none() -> End {
        End {
            bytes: 0,
            error: None,
        }
    }
}

fn kind(op: OpCode) -> &'static str {
    match op {
        OpCode::Data(_) => "message",
        OpCode::Control(_) => "frame",
    }
}

/// A close payload: the code, then a reason cut to the 123 bytes a control frame holds.
fn close_payload(code: u16, reason: &str) -> BytesMut {
    let mut p = BytesMut::with_capacity(MAX_CONTROL);
    p.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// Send a close frame and shut the writer, unless it is still held by a stuck writer;
/// bounded in time.
async fn close_end<W: AsyncWrite + Unpin>(tx: &Mutex<W>, dir: Direction, payload: &BytesMut) {
    let Ok(mut w) = tx.try_lock() else { return };
    let mut payload = payload.clone();
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = write_frame(
            &mut *w,
            dir,
            OpCode::Control(Control::Close),
            false,
            &mut payload,
        )
        .await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// Encode and write one final frame travelling `dir` (masked towards the upstream,
/// `payload` masked in place).
async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    dir: Direction,
    opcode: OpCode,
    rsv1: bool,
    payload: &mut [u8],
) -> std::io::Result<()> {
    let mask = (dir == Direction::Up).then(rand::random::<[u8; 4]>);
    let head = FrameHeader {
        is_final: true,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask,
    };
    let mut out = Vec::with_capacity(14);
    head.format(payload.len() as u64, &mut out)
        .map_err(std::io::Error::other)?;
    if let Some(mask) = mask {
        apply_mask(payload, mask);
    }
    w.write_all(&out).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// One direction: read frames from `src`, check and reassemble them, scan what the
/// client sends, write what passes to `dst`. Ends on EOF (shutting `dst`), a read or
/// write error, or `stop`; a refusal is returned without writing the message.
#[allow(clippy::too_many_arguments)]
async fn pump<R, W>(
    dir: Direction,
    mut src: R,
    dst: &Mutex<W>,
    mut parser: FrameParser,
    mut assembler: Assembler,
    rules: Option<&RuleSet>,
    mut stop: watch::Receiver<bool>,
) -> Result<End, Violation>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut bytes = 0u64;
    let ended = |bytes, error: Option<String>| Ok(End { bytes, error });
    loop {
        while let Some(frame) = parser.next_frame().map_err(Violation::Refused)? {
            let (opcode, rsv1, mut payload) = match assembler
                .push(frame)
                .map_err(Violation::Refused)?
            {
                None => continue,
                Some(Item::Control(f)) => {
                    if let Some(rules) = rules
                        && let Some(found) = scan(rules, &f.payload).map_err(Violation::Refused)?
                    {
                        return Err(Violation::Dlp(found, f.opcode));
                    }
                    (f.opcode, false, f.payload)
                }
                Some(Item::Message(m)) => {
                    if let Some(rules) = rules
                        && let Some(found) = scan(rules, m.content()).map_err(Violation::Refused)?
                    {
                        return Err(Violation::Dlp(found, m.opcode));
                    }
                    (m.opcode, m.compressed, m.payload)
                }
            };
            let mut w = dst.lock().await;
            if let Err(e) = write_frame(&mut *w, dir, opcode, rsv1, &mut payload).await {
                return ended(bytes, Some(format!("{}: {e}", dir.part())));
            }
        }
        if *stop.borrow() {
            return ended(bytes, None);
        }
        let read = tokio::select! {
            r = src.read_buf(parser.buffer()) => r,
            _ = stop.changed() => return ended(bytes, None),
        };
        match read {
            Ok(0) => {
                let _ = dst.lock().await.shutdown().await;
                return ended(bytes, None);
            }
            Ok(n) => bytes += n as u64,
            Err(e) => return ended(bytes, Some(format!("{}: {e}", dir.part()))),
        }
    }
}
