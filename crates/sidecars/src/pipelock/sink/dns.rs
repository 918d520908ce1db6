//! The little DNS the sink speaks: read the question of a query (bounded, never
//! panicking on garbage) and answer it with REFUSED. Nothing is ever resolved, so no
//! name asked here leaves the bottle; [`encoded`] tells the audit which names look like
//! they carry data (someone inside is trying DNS as a channel), and the audit writer
//! hashes such labels rather than writing them down.

use bottle_secretscan::HostReason;
use bottle_secretscan::hostname::encoded_labels;

/// Longest name on the wire (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;
/// Compression pointers followed before giving up.
const MAX_JUMPS: usize = 8;
/// The DNS header.
const HEADER: usize = 12;
/// RCODE REFUSED.
const REFUSED: u8 = 5;

/// The question of one query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The name asked for, lower-cased, without the root dot; bytes outside
    /// `[a-z0-9-_*]` are written `\DDD` as `dig` does. `.` for the root.
    pub name: String,
    pub qtype: u16,
    /// Where the question (name, type, class) ends in the message.
    question_end: usize,
}

/// Why a message is not a query the sink can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("truncated message")]
    Truncated,
    #[error("not a query")]
    NotAQuery,
    #[error("no question")]
    NoQuestion,
    #[error("bad label")]
    BadLabel,
    #[error("bad compression pointer")]
    BadPointer,
    #[error("name too long")]
    NameTooLong,
}

/// The first question of `msg`, a DNS query (without the TCP length prefix).
pub fn parse_query(msg: &[u8]) -> Result<Query, DnsError> {
    let header = msg.get(..HEADER).ok_or(DnsError::Truncated)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    if header[2] & 0x80 != 0 {
        return Err(DnsError::NotAQuery);
    }
    if u16::from_be_bytes([header[4], header[5]]) == 0 {
        return Err(DnsError::NoQuestion);
    }
    let (name, after_name) = read_name(msg, HEADER)?;
    let fixed = msg
        .get(after_name..after_name + 4)
        .ok_or(DnsError::Truncated)?;
    Ok(Query {
        id,
        name,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        question_end: after_name + 4,
    })
}

/// The name at `start` and the offset just past it (past its first pointer, if any).
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut wire_len = 0usize;
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                wire_len += 1;
                if wire_len > MAX_NAME {
                    return Err(DnsError::NameTooLong);
                }
                let end = end.unwrap_or(pos + 1);
                if name.is_empty() {
                    name.push('.');
                }
                return Ok((name, end));
            }
            0x00 => {
                let len = usize::from(len);
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(DnsError::Truncated)?;
                wire_len += 1 + len;
                if wire_len > MAX_NAME {
                    return Err(DnsError::NameTooLong);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    push_escaped(&mut name, b);
                }
                pos += 1 + len;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                // Only backwards, never into the header: no loops, nothing made up.
                jumps += 1;
                if target < HEADER || target >= pos || jumps > MAX_JUMPS {
                    return Err(DnsError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            // 0x40 and 0x80: extended and reserved label types.
            _ => return Err(DnsError::BadLabel),
        }
    }
}

/// Appends `b` to a presentation-form name: lower-cased, `\DDD` for anything odd.
fn push_escaped(name: &mut String, b: u8) {
    let c = b.to_ascii_lowercase();
    if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'*') {
        name.push(char::from(c));
    } else {
        name.push_str(&format!("\\{b:03}"));
    }
}

/// Does the name of `q` look like it carries encoded data? The sink knows no
/// allowlist: the labels left of the last two (where most registrable domains end)
/// are judged as the part an agent chose.
pub fn encoded(q: &Query) -> Option<HostReason> {
    let labels = q.name.matches('.').count() + 1;
    if labels <= 2 {
        return encoded_labels(&q.name).filter(|r| matches!(r, HostReason::Label { .. }));
    }
    let cut = q.name.rmatch_indices('.').nth(1).map_or(0, |(i, _)| i);
    encoded_labels(&q.name[..cut])
}

/// The REFUSED answer to `msg`, whose question is `q`: same id, opcode, RD and
/// question; no records.
pub fn refused(msg: &[u8], q: &Query) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question_end);
    out.extend_from_slice(&q.id.to_be_bytes());
    let opcode_rd = msg.get(2).copied().unwrap_or(0) & 0x79;
    out.push(0x80 | opcode_rd);
    out.push(REFUSED);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(msg.get(HEADER..q.question_end).unwrap_or_default());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` (type A, RD set), as `dig` sends it.
    pub(crate) fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn a_query_for_example_com_is_read_and_refused() {
        let m = query(0x1234, "Example.COM");
        let q = parse_query(&m).expect("query");
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name, "example.com");
        assert_eq!(q.qtype, 1);
        let r = refused(&m, &q);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2], 0x81, "QR and RD");
        assert_eq!(r[3], REFUSED);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], &m[12..]);
    }

    #[test]
    fn edns_records_after_the_question_are_ignored() {
        let mut m = query(7, "example.com");
        m[11] = 1; // ARCOUNT
        m.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        let q = parse_query(&m).expect("query");
        assert_eq!(q.name, "example.com");
        assert_eq!(refused(&m, &q).len(), query(7, "example.com").len());
    }

    #[test]
    fn odd_bytes_are_escaped_and_the_root_is_a_dot() {
        let mut m = query(1, "x");
        m[13] = b'.';
        assert_eq!(parse_query(&m).expect("query").name, "\\046");
        let root = query(1, "");
        assert_eq!(parse_query(&root).expect("query").name, ".");
        let mut esc = query(1, "ab");
        esc[14] = 0x1b;
        assert_eq!(parse_query(&esc).expect("query").name, "a\\027");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(parse_query(&[]), Err(DnsError::Truncated));
        assert_eq!(parse_query(&[0; 11]), Err(DnsError::Truncated));
        let m = query(1, "example.com");
        for cut in 0..m.len() {
            assert!(parse_query(&m[..cut]).is_err(), "cut at {cut}");
        }
        let mut answer = m.clone();
        answer[2] |= 0x80;
        assert_eq!(parse_query(&answer), Err(DnsError::NotAQuery));
        let mut none = m.clone();
        none[5] = 0;
        assert_eq!(parse_query(&none), Err(DnsError::NoQuestion));
        let mut ext = m.clone();
        ext[12] = 0x47;
        assert_eq!(parse_query(&ext), Err(DnsError::BadLabel));
        // A label longer than the message.
        let mut long = m.clone();
        long[12] = 63;
        assert_eq!(parse_query(&long), Err(DnsError::Truncated));
    }

    #[test]
    fn compression_pointers_must_point_backwards_past_the_header() {
        // To itself: a loop.
        let mut m = query(1, "");
        m.truncate(12);
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m), Err(DnsError::BadPointer));
        // Into the header.
        m[12..14].copy_from_slice(&[0xC0, 2]);
        assert_eq!(parse_query(&m), Err(DnsError::BadPointer));
        // Forwards.
        m[12..14].copy_from_slice(&[0xC0, 16]);
        assert_eq!(parse_query(&m), Err(DnsError::BadPointer));
        // Backwards, but into the name itself: a loop, cut by the jump limit.
        let mut lp = m[..12].to_vec();
        lp.extend_from_slice(&[3, b'w', b'w', b'w', 0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&lp), Err(DnsError::BadPointer));
        // A pointer cut in half.
        let mut half = m[..12].to_vec();
        half.extend_from_slice(&[1, b'a', 0xC0]);
        assert_eq!(parse_query(&half), Err(DnsError::Truncated));
    }

    #[test]
    fn names_carrying_data_are_told_apart() {
        let q = |n: &str| parse_query(&query(1, n)).expect("query");
        for plain in [
            "example.com",
            "registry.npmjs.org",
            "a.b.c.example.com",
            "x",
            ".",
        ] {
            assert_eq!(encoded(&q(plain)), None, "{plain}");
        }
        for carrying in [
            "6b6579206f6620313620627974657321.attacker.example",
            "akiaq7rz.4tx2mbw6nc3p.x.attacker.example",
            "a.b.c.d.e.attacker.example",
            "deadbeefdeadbeef00.example",
        ] {
            assert!(encoded(&q(carrying)).is_some(), "{carrying}");
        }
    }

    #[test]
    fn names_longer_than_255_bytes_are_refused() {
        let label = "a".repeat(63);
        let name = [label.as_str(); 5].join(".");
        assert_eq!(parse_query(&query(1, &name)), Err(DnsError::NameTooLong));
        let ok = [label.as_str(); 3].join(".");
        assert!(parse_query(&query(1, &ok)).is_ok());
    }
}
