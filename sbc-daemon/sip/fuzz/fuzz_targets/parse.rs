//! Fuzz target: parse, read every typed accessor, validate, apply the proxy edits and
//! serialise; an unedited message must serialise to its input and an edited one must
//! parse again. Also exercises stream framing on the same input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_sip::{frame, Bytes, Contact, Framing, HeaderName, SipMessage, SipUri};

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
        let _ = (
            m.header_by_name(h.raw_name),
            m.header_values_by_name(h.raw_name),
        );
        let _ = m.header_values(h.name);
    }
    if let Ok(vias) = m.vias() {
        for v in vias {
            let _ = (v.branch(), v.received(), v.rport(), v.maddr(), v.ttl());
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
            let _ = na.parse_uri();
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

fuzz_target!(|data: &[u8]| {
    let _ = frame(data, 4096);
    let raw = Bytes::copy_from_slice(data);
    let Ok(mut m) = SipMessage::parse(raw.clone()) else {
        return;
    };
    read_all(&m);
    assert_eq!(m.to_bytes(), raw);
    // Stream framing agrees with the parser on where a message with Content-Length ends.
    if !data.starts_with(b"\r") && !data.starts_with(b"\n") {
        if let Ok(Some(_)) = m.content_length() {
            match frame(data, usize::MAX) {
                Framing::Message(n) => {
                    let framed = SipMessage::parse(Bytes::copy_from_slice(&data[..n]))
                        .expect("framed prefix of a parseable message parses");
                    assert_eq!(framed.body(), m.body());
                }
                other => panic!("frame() says {other:?} for a parseable message"),
            }
        }
    }
    if m.is_request() {
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKfuzz");
        m.set_header(HeaderName::MaxForwards, "69");
        let _ = m.pop_first_value(HeaderName::Route);
        m.insert_before_first(HeaderName::RecordRoute, "<sip:192.0.2.99;lr>");
        m.set_request_uri("sip:target@192.0.2.100");
    } else {
        let _ = m.pop_first_value(HeaderName::Via);
        m.replace_first_value(HeaderName::Via, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx");
    }
    m.insert_header_raw(3, "X-Fuzz", "1");
    let _ = m.remove_headers_by_name("s");
    m.set_header_by_name("Server", "sbc");
    m.set_body(Bytes::from_static(b"v=0\r\n"), Some("application/sdp"));
    read_all(&m);
    let again = SipMessage::parse(m.to_bytes()).expect("edited output must parse");
    assert_eq!(again.body(), b"v=0\r\n");
    assert_eq!(again.header_by_name("X-Fuzz"), Some("1"));
});
