//! ClientHello and HelloVerifyRequest on the wire (RFC 6347 4.2.1 and 4.3.2, RFC 5246
//! 7.4.1.2): just enough to run the cookie exchange ourselves, statelessly, in front of
//! `rtc-dtls` (see `endpoint`), and to restart a handshake from a verified ClientHello.
//!
//! Everything here reads network data: lengths are checked before every access, nothing
//! panics on any input.

/// Length of our HelloVerifyRequest cookie. It is also the length of the one random fill
/// `rtc-dtls` 0.21 makes for its own cookie (`conn::COOKIE_LENGTH`, drawn in
/// `flight0.rs`), which is how the endpoint makes the library use the same cookie.
pub(crate) const COOKIE_LEN: usize = 20;
/// Length of `Random` (RFC 5246 7.4.1.2).
pub(crate) const RANDOM_LEN: usize = 32;
const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CLIENT_HELLO: u8 = 1;
const HELLO_VERIFY_REQUEST: u8 = 3;
/// Content type of handshake records.
const HANDSHAKE: u8 = 22;
/// DTLS 1.2 (RFC 6347 4.1), which the HelloVerifyRequest carries like `rtc-dtls`'s own.
const DTLS_1_2: [u8; 2] = [0xfe, 0xfd];
/// Largest record sequence number (48 bits).
const MAX_RECORD_SEQ: u64 = (1 << 48) - 1;

/// A datagram that is exactly one plaintext (epoch 0) handshake record holding exactly one
/// unfragmented ClientHello with well-formed vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientHello<'a> {
    /// The record's protocol version bytes.
    pub(crate) record_version: [u8; 2],
    /// The record's 48-bit sequence number.
    pub(crate) record_seq: u64,
    /// The handshake message sequence number (0 for a first ClientHello, 1 after a
    /// HelloVerifyRequest).
    pub(crate) message_seq: u16,
    /// `Random`: the same in both ClientHellos of one handshake (RFC 6347 4.2.1), so it names
    /// the handshake.
    pub(crate) random: [u8; RANDOM_LEN],
    /// The cookie (empty in a first ClientHello).
    pub(crate) cookie: &'a [u8],
    /// The message body, after the handshake header.
    body: &'a [u8],
    /// Offset in `body` of the cookie's length byte.
    cookie_at: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 2)?;
    Some(usize::from(u16::from_be_bytes([s[0], s[1]])))
}

fn u24_at(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 3)?;
    usize::try_from(u32::from_be_bytes([0, s[0], s[1], s[2]])).ok()
}

/// Parses `d` as a datagram holding a single ClientHello (see [`ClientHello`]); `None` for
/// anything else (other records, a fragment, several messages, bad vector lengths).
pub(crate) fn parse_client_hello(d: &[u8]) -> Option<ClientHello<'_>> {
    let header = d.get(..RECORD_HEADER)?;
    if header[0] != HANDSHAKE || header[1] != 0xfe || header[3] != 0 || header[4] != 0 {
        return None;
    }
    let record_len = u16_at(header, 11)?;
    let hs = &d[RECORD_HEADER..];
    if hs.len() != record_len || hs.len() < HANDSHAKE_HEADER || hs[0] != CLIENT_HELLO {
        return None;
    }
    let length = u24_at(hs, 1)?;
    let message_seq = u16::from_be_bytes([hs[4], hs[5]]);
    let (offset, frag_len) = (u24_at(hs, 6)?, u24_at(hs, 9)?);
    if offset != 0 || frag_len != length || hs.len() != HANDSHAKE_HEADER + length {
        return None;
    }
    let body = &hs[HANDSHAKE_HEADER..];
    // client_version, random
    if body.first() != Some(&0xfe) {
        return None;
    }
    let random: [u8; RANDOM_LEN] = body.get(2..2 + RANDOM_LEN)?.try_into().ok()?;
    let mut at = 2 + RANDOM_LEN;
    // session_id <0..32>
    let sid_len = usize::from(*body.get(at)?);
    if sid_len > 32 {
        return None;
    }
    at += 1 + sid_len;
    // cookie <0..2^8-1>
    let cookie_at = at;
    let cookie_len = usize::from(*body.get(at)?);
    let cookie = body.get(at + 1..at + 1 + cookie_len)?;
    at += 1 + cookie_len;
    // cipher_suites <2..2^16-2>
    let suites = u16_at(body, at)?;
    if suites == 0 || suites % 2 != 0 {
        return None;
    }
    at += 2 + suites;
    // compression_methods <1..2^8-1>
    let methods = usize::from(*body.get(at)?);
    if methods == 0 {
        return None;
    }
    at += 1 + methods;
    // extensions <0..2^16-1>, optional
    match body.len().checked_sub(at)? {
        0 => {}
        rest => {
            if u16_at(body, at)? + 2 != rest {
                return None;
            }
        }
    }
    Some(ClientHello {
        record_version: [header[1], header[2]],
        record_seq: u64::from_be_bytes([
            0, 0, header[5], header[6], header[7], header[8], header[9], header[10],
        ]),
        message_seq,
        random,
        cookie,
        body,
        cookie_at,
    })
}

fn put_u24(out: &mut Vec<u8>, v: usize) {
    let b = u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&b[1..]);
}

fn put_record_header(out: &mut Vec<u8>, version: [u8; 2], seq: u64, len: usize) {
    out.push(HANDSHAKE);
    out.extend_from_slice(&version);
    out.extend_from_slice(&[0, 0]); // epoch 0
    out.extend_from_slice(&(seq.min(MAX_RECORD_SEQ)).to_be_bytes()[2..]);
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
}

fn put_handshake_header(out: &mut Vec<u8>, typ: u8, message_seq: u16, len: usize) {
    out.push(typ);
    put_u24(out, len);
    out.extend_from_slice(&message_seq.to_be_bytes());
    put_u24(out, 0);
    put_u24(out, len);
}

/// Largest ClientHello reassembled from fragments (Chrome's, with a post-quantum key share,
/// is about 1.4 kB).
const MAX_HELLO_LEN: usize = 8 * 1024;

/// What one ClientHello datagram amounts to (see [`HelloReassembly::push`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HelloPiece {
    /// An unfragmented ClientHello: use the datagram as it is.
    Whole,
    /// The last missing fragment: the whole message, rebuilt as one unfragmented record.
    Complete(Vec<u8>),
    /// A fragment kept until the others arrive.
    Pending,
    /// Not a single-record ClientHello (fragment); dropped.
    Invalid,
}

/// Reassembles a ClientHello that the client split over several records (RFC 6347 4.2.3),
/// as Chrome does once its key share no longer fits one datagram. One message at a time,
/// bounded in size; a fragment of another message replaces what was kept (the client
/// retransmits the whole flight anyway).
#[derive(Debug, Default)]
pub(crate) struct HelloReassembly {
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    message_seq: u16,
    version: [u8; 2],
    /// Highest record sequence number among the fragments.
    record_seq: u64,
    body: Vec<u8>,
    have: Vec<bool>,
    missing: usize,
}

impl HelloReassembly {
    /// Takes one datagram that carries a ClientHello record.
    pub(crate) fn push(&mut self, d: &[u8]) -> HelloPiece {
        self.push_inner(d).unwrap_or(HelloPiece::Invalid)
    }

    fn push_inner(&mut self, d: &[u8]) -> Option<HelloPiece> {
        let header = d.get(..RECORD_HEADER)?;
        if header[0] != HANDSHAKE || header[1] != 0xfe || header[3] != 0 || header[4] != 0 {
            return None;
        }
        let hs = &d[RECORD_HEADER..];
        if hs.len() != u16_at(header, 11)? || hs.len() < HANDSHAKE_HEADER || hs[0] != CLIENT_HELLO {
            return None;
        }
        let length = u24_at(hs, 1)?;
        let message_seq = u16::from_be_bytes([hs[4], hs[5]]);
        let (offset, frag_len) = (u24_at(hs, 6)?, u24_at(hs, 9)?);
        if hs.len() != HANDSHAKE_HEADER + frag_len {
            return None;
        }
        if offset == 0 && frag_len == length {
            return Some(HelloPiece::Whole);
        }
        if length > MAX_HELLO_LEN || frag_len == 0 || offset.checked_add(frag_len)? > length {
            return None;
        }
        let record_seq = u64::from_be_bytes([
            0, 0, header[5], header[6], header[7], header[8], header[9], header[10],
        ]);
        let same = self
            .partial
            .as_ref()
            .is_some_and(|p| p.message_seq == message_seq && p.body.len() == length);
        if !same {
            self.partial = Some(Partial {
                message_seq,
                version: [header[1], header[2]],
                record_seq,
                body: vec![0; length],
                have: vec![false; length],
                missing: length,
            });
        }
        let p = self.partial.as_mut()?;
        let frag = &hs[HANDSHAKE_HEADER..];
        for (i, b) in frag.iter().enumerate() {
            let at = offset + i;
            if !p.have[at] {
                p.have[at] = true;
                p.missing -= 1;
            }
            p.body[at] = *b;
        }
        p.record_seq = p.record_seq.max(record_seq);
        p.version = [header[1], header[2]];
        if p.missing > 0 {
            return Some(HelloPiece::Pending);
        }
        let p = self.partial.take()?;
        let mut out = Vec::with_capacity(RECORD_HEADER + HANDSHAKE_HEADER + length);
        put_record_header(&mut out, p.version, p.record_seq, HANDSHAKE_HEADER + length);
        put_handshake_header(&mut out, CLIENT_HELLO, p.message_seq, length);
        out.extend_from_slice(&p.body);
        Some(HelloPiece::Complete(out))
    }
}

impl ClientHello<'_> {
    /// The first ClientHello of this handshake as the client sent it before the cookie
    /// exchange: the same message without the cookie, message sequence 0, in one record with
    /// sequence number `record_seq` (RFC 6347 4.2.1: the client repeats every other field).
    pub(crate) fn without_cookie(&self, record_seq: u64) -> Vec<u8> {
        let rest = &self.body[self.cookie_at + 1 + self.cookie.len()..];
        let body_len = self.cookie_at + 1 + rest.len();
        let mut out = Vec::with_capacity(RECORD_HEADER + HANDSHAKE_HEADER + body_len);
        put_record_header(
            &mut out,
            self.record_version,
            record_seq,
            HANDSHAKE_HEADER + body_len,
        );
        put_handshake_header(&mut out, CLIENT_HELLO, 0, body_len);
        out.extend_from_slice(&self.body[..self.cookie_at]);
        out.push(0);
        out.extend_from_slice(rest);
        out
    }
}

/// Splits an unfragmented ClientHello datagram into `n` single-record fragments.
#[cfg(test)]
pub(crate) fn fragments(whole: &[u8], n: usize) -> Vec<Vec<u8>> {
    let body = &whole[RECORD_HEADER + HANDSHAKE_HEADER..];
    let hs = &whole[RECORD_HEADER..RECORD_HEADER + HANDSHAKE_HEADER];
    let message_seq = u16::from_be_bytes([hs[4], hs[5]]);
    let step = body.len().div_ceil(n);
    body.chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let mut out = Vec::new();
            put_record_header(
                &mut out,
                [0xfe, 0xff],
                10 + i as u64,
                HANDSHAKE_HEADER + chunk.len(),
            );
            out.push(CLIENT_HELLO);
            put_u24(&mut out, body.len());
            out.extend_from_slice(&message_seq.to_be_bytes());
            put_u24(&mut out, i * step);
            put_u24(&mut out, chunk.len());
            out.extend_from_slice(chunk);
            out
        })
        .collect()
}

/// A HelloVerifyRequest carrying `cookie` (message sequence 0), in a record with sequence
/// number 0.
///
/// RFC 6347 4.2.1 has the server reuse the ClientHello's record sequence number, but the
/// ClientHello may be forged and its number is then the attacker's choice: a high one, once
/// the real client accepted that HelloVerifyRequest, would put the server's next records
/// (ServerHello onwards, numbered from 1 by the library) below the client's replay window
/// and the handshake would stall. 0 is what the library's own HelloVerifyRequest carries.
/// All of an endpoint's HelloVerifyRequests are identical (one cookie), so a client dropping
/// a repeat as a replay loses nothing.
pub(crate) fn hello_verify_request(cookie: &[u8]) -> Vec<u8> {
    let cookie = &cookie[..cookie.len().min(255)];
    let body_len = 2 + 1 + cookie.len();
    let mut out = Vec::with_capacity(RECORD_HEADER + HANDSHAKE_HEADER + body_len);
    put_record_header(&mut out, DTLS_1_2, 0, HANDSHAKE_HEADER + body_len);
    put_handshake_header(&mut out, HELLO_VERIFY_REQUEST, 0, body_len);
    out.extend_from_slice(&DTLS_1_2);
    out.push(u8::try_from(cookie.len()).unwrap_or(0));
    out.extend_from_slice(cookie);
    out
}

/// The cookie of a datagram whose first record is a HelloVerifyRequest, if it is one.
pub(crate) fn hello_verify_cookie(d: &[u8]) -> Option<&[u8]> {
    if d.first() != Some(&HANDSHAKE) || d.get(RECORD_HEADER) != Some(&HELLO_VERIFY_REQUEST) {
        return None;
    }
    let body = d.get(RECORD_HEADER + HANDSHAKE_HEADER..)?;
    let n = usize::from(*body.get(2)?);
    body.get(3..3 + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello like a browser's: session id empty, a cookie, two suites, null
    /// compression, one extension.
    fn hello(cookie: &[u8], sid: &[u8]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend((0..32).map(|i| i as u8));
        body.push(sid.len() as u8);
        body.extend_from_slice(sid);
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 4, 0xc0, 0x2b, 0xc0, 0x0a]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&[0, 8, 0x00, 0x0e, 0, 4, 0, 2, 0, 1]);
        let mut out = Vec::new();
        put_record_header(&mut out, [0xfe, 0xff], 7, HANDSHAKE_HEADER + body.len());
        put_handshake_header(
            &mut out,
            CLIENT_HELLO,
            u16::from(!cookie.is_empty()),
            body.len(),
        );
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn client_hello_fields() {
        let d = hello(&[9; 20], &[]);
        let ch = parse_client_hello(&d).unwrap();
        assert_eq!(ch.record_version, [0xfe, 0xff]);
        assert_eq!(ch.record_seq, 7);
        assert_eq!(ch.message_seq, 1);
        assert_eq!(ch.random[31], 31);
        assert_eq!(ch.cookie, &[9; 20]);
        let first = ch.without_cookie(6);
        let ch1 = parse_client_hello(&first).unwrap();
        assert_eq!(first, {
            let mut h = hello(&[], &[]);
            h[10] = 6;
            h
        });
        assert_eq!(
            (ch1.message_seq, ch1.record_seq, ch1.cookie),
            (0, 6, &[][..])
        );
        assert_eq!(ch1.random, ch.random);
        // A session id is skipped (and kept).
        let d = hello(&[5; 3], &[1; 32]);
        let ch = parse_client_hello(&d).unwrap();
        assert_eq!(ch.cookie, &[5; 3]);
        assert_eq!(
            parse_client_hello(&ch.without_cookie(0)).unwrap().cookie,
            &[]
        );
    }

    #[test]
    fn hello_verify_request_round_trip() {
        let d = hello_verify_request(&[7; 20]);
        assert_eq!(d.len(), 13 + 12 + 3 + 20);
        assert_eq!(&d[..3], &[22, 0xfe, 0xfd]);
        assert_eq!(&d[3..11], &[0; 8], "epoch 0, record sequence 0");
        assert_eq!(hello_verify_cookie(&d), Some(&[7u8; 20][..]));
        // It is a well-formed record with one handshake message for the record screen too.
        assert!(parse_client_hello(&d).is_none());
        assert_eq!(hello_verify_cookie(&hello(&[], &[])), None);
        assert_eq!(hello_verify_cookie(&d[..20]), None);
    }

    #[test]
    fn malformed_hellos_are_refused_without_panic() {
        let good = hello(&[9; 20], &[]);
        // Every truncation.
        for n in 0..good.len() {
            assert!(parse_client_hello(&good[..n]).is_none(), "truncated to {n}");
            let _ = hello_verify_cookie(&good[..n]);
        }
        // Trailing bytes (another record, or junk).
        let mut long = good.clone();
        long.extend_from_slice(&good);
        assert!(parse_client_hello(&long).is_none());
        // Each length field too large and too small, other types, epochs, fragments.
        let edits: &[(usize, u8)] = &[
            (0, 23),        // not a handshake record
            (3, 1),         // epoch 1
            (12, 0xff),     // record length
            (13, 2),        // ServerHello
            (16, 0xff),     // message length
            (21, 1),        // fragment offset
            (24, 0),        // fragment length
            (25, 0x03),     // client_version
            (25 + 34, 33),  // session id too long
            (25 + 35, 21),  // cookie overruns
            (25 + 35, 255), // cookie far beyond
            (25 + 57, 0),   // cipher suites length 0x0004 -> 0x0000
            (25 + 57, 3),   // cipher suites odd
            (25 + 62, 0),   // no compression method
            (25 + 65, 9),   // extensions length
        ];
        for &(at, v) in edits {
            let mut d = good.clone();
            assert_ne!(d[at], v, "edit at {at} changes nothing");
            d[at] = v;
            assert!(parse_client_hello(&d).is_none(), "edit at {at} accepted");
        }
        // Random bytes behind a plausible header never panic.
        let mut rng = crate::test_support::XorShift(0x1234_5678);
        for _ in 0..2000 {
            let mut d = good.clone();
            for _ in 0..4 {
                let x = rng.next_u64();
                let i = (x as usize) % d.len();
                d[i] = (x >> 32) as u8;
            }
            if let Some(ch) = parse_client_hello(&d) {
                let again = ch.without_cookie(1);
                assert!(parse_client_hello(&again).is_some());
            }
            let _ = hello_verify_cookie(&d);
        }
    }

    #[test]
    fn fragmented_hello_is_reassembled_in_any_order() {
        let whole = hello(&[7; COOKIE_LEN], &[1, 2, 3]);
        let mut r = HelloReassembly::default();
        assert_eq!(r.push(&whole), HelloPiece::Whole);
        let mut frags = fragments(&whole, 3);
        frags.swap(0, 2);
        assert_eq!(r.push(&frags[0]), HelloPiece::Pending);
        // A repeat changes nothing.
        assert_eq!(r.push(&frags[0]), HelloPiece::Pending);
        assert_eq!(r.push(&frags[1]), HelloPiece::Pending);
        let HelloPiece::Complete(rebuilt) = r.push(&frags[2]) else {
            panic!("not complete");
        };
        let a = parse_client_hello(&whole).unwrap();
        let b = parse_client_hello(&rebuilt).expect("rebuilt hello parses");
        assert_eq!((a.random, a.cookie, a.body), (b.random, b.cookie, b.body));
        assert_eq!(b.record_seq, 12, "highest fragment record number");
        assert_eq!(b.record_version, [0xfe, 0xff]);
    }

    #[test]
    fn bad_fragments_are_refused_without_panic() {
        let whole = hello(&[], &[]);
        let frags = fragments(&whole, 2);
        let mut r = HelloReassembly::default();
        // Fragment beyond the message, oversized message, empty fragment, truncations.
        let mut beyond = frags[1].clone();
        beyond[RECORD_HEADER + 6..RECORD_HEADER + 9].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(r.push(&beyond), HelloPiece::Invalid);
        let mut huge = frags[0].clone();
        huge[RECORD_HEADER + 1..RECORD_HEADER + 4].copy_from_slice(&[0x10, 0, 0]);
        assert_eq!(r.push(&huge), HelloPiece::Invalid);
        for f in &frags {
            for cut in 0..f.len() {
                let _ = r.push(&f[..cut]);
            }
        }
        // A fragment of another message replaces the partial one; the real pair completes.
        let other = fragments(&hello(&[9; COOKIE_LEN], &[]), 2);
        assert_eq!(r.push(&other[0]), HelloPiece::Pending);
        assert_eq!(r.push(&frags[0]), HelloPiece::Pending);
        assert!(matches!(r.push(&frags[1]), HelloPiece::Complete(_)));
    }

    #[test]
    fn mutated_fragments_never_panic() {
        // Deterministic xorshift: 20,000 fragments with random bytes flipped, cut or
        // lengths rewritten, interleaved with genuine ones, into one reassembler.
        let mut rng = crate::test_support::XorShift(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next_u64();
        let whole = hello(&[5; COOKIE_LEN], &[8; 16]);
        let frags = fragments(&whole, 3);
        let mut r = HelloReassembly::default();
        let mut completed = 0;
        for i in 0..20_000 {
            let mut f = frags[i % frags.len()].clone();
            if i % 4 != 0 {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % f.len();
                    f[at] = next() as u8;
                }
                if next() % 8 == 0 {
                    f.truncate((next() as usize) % (f.len() + 1));
                }
            }
            if let HelloPiece::Complete(d) = r.push(&f) {
                completed += 1;
                let _ = parse_client_hello(&d);
            }
        }
        assert!(
            completed > 0,
            "genuine fragments still complete now and then"
        );
    }
}
