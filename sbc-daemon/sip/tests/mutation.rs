//! Bounded random-mutation robustness test (runs in CI; the coverage-guided fuzzer lives in
//! `fuzz/`). Mutates the RFC 4475 fixtures and a typical INVITE with byte flips,
//! truncations, insertions of syntax-relevant bytes, deletions and slice duplication,
//! with a fixed seed, and checks that parsing, every accessor, the validators, the edits,
//! the writer and stream framing never panic, and that:
//! - an unedited message serialises to exactly its input;
//! - an edited message serialises to bytes that parse again and show the edits.

use portcullis_sip::{frame, Bytes, Contact, Framing, HeaderName, SipMessage, SipUri};

const ITERATIONS: usize = 20_000;

/// xorshift64* — deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = b"\r\n:;,\"<>=@ \t%0123456789/?[]\\\x00\x7f\xff\xc3";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(rng.below(len + 1)),
            2 => {
                let i = rng.below(len + 1);
                let c = INTERESTING[rng.below(INTERESTING.len())];
                v.insert(i, c);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(8.min(len - i));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(32.min(len - i));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => {}
        }
    }
    v
}

/// Reads everything a proxy could read; results are ignored, panics are not.
fn read_all(m: &SipMessage) {
    let _ = (
        m.is_request(),
        m.method(),
        m.request_uri(),
        m.status(),
        m.reason(),
        m.version(),
    );
    for h in m.headers() {
        let _ = (h.name, h.raw_name, h.value);
        let _ = m.header_by_name(h.raw_name);
        let _ = m.header_values_by_name(h.raw_name);
        let _ = m.header_values(h.name);
    }
    if let Ok(vias) = m.vias() {
        for v in vias {
            let _ = (
                v.branch(),
                v.received(),
                v.rport(),
                v.maddr(),
                v.ttl(),
                v.params.iter().count(),
            );
        }
    }
    let _ = m.top_via();
    for na in [m.from(), m.to()].into_iter().flatten() {
        let _ = (
            na.tag(),
            na.parse_uri()
                .map(|u| (u.transport(), u.maddr(), u.is_loose_route())),
        );
    }
    let _ = (
        m.call_id(),
        m.cseq(),
        m.max_forwards(),
        m.content_length(),
        m.content_type(),
    );
    let _ = (m.expires(), m.supported(), m.require(), m.body());
    assert_eq!(m.body_bytes().as_ref(), m.body());
    if let Ok(cs) = m.contacts() {
        for c in cs {
            if let Contact::Addr(na) = c {
                let _ = na.parse_uri();
            }
        }
    }
    for list in [m.routes(), m.record_routes(), m.paths()]
        .into_iter()
        .flatten()
    {
        for na in list {
            let _ = na.parse_uri().map(|u| u.is_loose_route());
        }
    }
    if let Some(uri) = m.request_uri() {
        let _ = SipUri::parse(uri);
    }
    let _ = (
        m.validate_request(),
        m.validate_response(),
        m.validate_date(),
    );
}

fn exercise(input: &[u8]) {
    let _ = frame(input, 4096);
    if let Framing::Message(n) = frame(input, 65_535) {
        let _ = SipMessage::parse(Bytes::copy_from_slice(&input[..n]));
    }
    let raw = Bytes::copy_from_slice(input);
    let Ok(mut m) = SipMessage::parse(raw.clone()) else {
        return;
    };
    read_all(&m);
    assert_eq!(
        m.to_bytes(),
        raw,
        "unedited message must serialise to its input"
    );
    // Stream framing agrees with the parser on where a message with Content-Length ends.
    if !input.starts_with(b"\r") && !input.starts_with(b"\n") {
        if let Ok(Some(_)) = m.content_length() {
            match frame(input, usize::MAX) {
                Framing::Message(n) => {
                    let framed = SipMessage::parse(Bytes::copy_from_slice(&input[..n]))
                        .expect("framed prefix of a parseable message parses");
                    assert_eq!(framed.body(), m.body());
                }
                other => panic!(
                    "frame() says {other:?} for a parseable message:\n{}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
    }

    // What a proxy does to a request, or to a response on its way back.
    if m.is_request() {
        m.prepend_header(
            HeaderName::Via,
            "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKfuzz",
        );
        m.set_header(HeaderName::MaxForwards, "69");
        let _ = m.pop_first_value(HeaderName::Route);
        m.insert_before_first(HeaderName::RecordRoute, "<sip:192.0.2.99;lr>");
        m.set_request_uri("sip:target@192.0.2.100");
    } else {
        let _ = m.pop_first_value(HeaderName::Via);
        m.replace_first_value(
            HeaderName::Via,
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx;received=192.0.2.2",
        );
    }
    m.insert_header_raw(3, "X-Fuzz", "1");
    let _ = m.remove_headers_by_name("s");
    m.set_header_by_name("Server", "sbc");
    read_all(&m);
    let out = m.to_bytes();
    let again = SipMessage::parse(out.clone()).unwrap_or_else(|e| {
        panic!(
            "edited output does not parse ({e}):\n{}\n--- from ---\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(input)
        )
    });
    assert_eq!(again.header_by_name("X-Fuzz"), Some("1"));
    assert_eq!(again.header(HeaderName::Server), Some("sbc"));
    assert_eq!(again.header_by_name("Subject"), None);
    if again.is_request() {
        assert_eq!(again.max_forwards().ok().flatten(), Some(69));
        assert_eq!(again.request_uri(), Some("sip:target@192.0.2.100"));
        assert_eq!(
            again
                .top_via()
                .ok()
                .and_then(|v| v.branch().map(str::to_owned))
                .as_deref(),
            Some("z9hG4bKfuzz")
        );
    }
    assert_eq!(again.body(), m.body());
    m.set_body(Bytes::from_static(b"v=0\r\n"), Some("application/sdp"));
    let again = SipMessage::parse(m.to_bytes()).expect("body replacement must stay parseable");
    assert_eq!(again.body(), b"v=0\r\n");
    assert_eq!(again.content_length().ok().flatten(), Some(5));
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    seeds.push(include_bytes!("../benches/invite.sip").to_vec());
    seeds
}

#[test]
fn seeds_survive_unmutated() {
    for s in seeds() {
        exercise(&s);
    }
}

#[test]
fn random_mutations_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut parsed = 0;
    for _ in 0..ITERATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        if SipMessage::parse(Bytes::copy_from_slice(&input)).is_ok() {
            parsed += 1;
        }
        exercise(&input);
    }
    // The mutations must not be so destructive that nothing parses any more.
    assert!(
        parsed > ITERATIONS / 10,
        "only {parsed} of {ITERATIONS} mutants parsed"
    );
}
