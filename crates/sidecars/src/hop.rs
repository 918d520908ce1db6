//! Headers that belong to one hop (RFC 9110 7.6.1), stripped by both proxies before a
//! request or response goes on: one list, one function, so egress and pipelock cannot
//! disagree about what crosses them. What each keeps is a [`Keep`].

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Connection-specific headers that never cross a proxy.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// What a proxy keeps across the hop.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep {
    /// `Connection: upgrade` and `Upgrade`, when an upgrade is being spliced.
    pub upgrade: bool,
    /// `Trailer` and `TE: trailers`: egress passes a request's trailers on to pipelock,
    /// which scans them (and does not send them further, so it keeps neither).
    pub trailers: bool,
}

/// Remove `h`'s hop-by-hop headers: those `Connection` names and the fixed list.
pub fn strip(h: &mut HeaderMap, keep: Keep) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep.upgrade && n == header::UPGRADE))
        .filter(|n| !(keep.trailers && (n == header::TE || n == header::TRAILER)))
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        if !(keep.upgrade && n == "upgrade") {
            h.remove(n);
        }
    }
    if !keep.trailers {
        h.remove(header::TRAILER);
    }
    if !keep.trailers || h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
    if keep.upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn each_proxy_keeps_only_what_it_asks_for() {
        let all = [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("proxy-authorization", "Basic x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("x-end-to-end", "kept"),
        ];
        let mut h = headers(&all);
        strip(&mut h, Keep::default());
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-end-to-end"]
        );

        let mut h = headers(&all);
        strip(
            &mut h,
            Keep {
                upgrade: true,
                trailers: true,
            },
        );
        let mut kept: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(
            kept,
            ["connection", "te", "trailer", "upgrade", "x-end-to-end"]
        );
        assert_eq!(h[header::CONNECTION], "upgrade");

        // TE other than `trailers` is a hop's business only.
        let mut h = headers(&[("te", "gzip")]);
        strip(
            &mut h,
            Keep {
                upgrade: false,
                trailers: true,
            },
        );
        assert!(h.is_empty());
    }
}
