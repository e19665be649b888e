//! RFC 4475 torture tests: every message of sections 3.1.1 (valid), 3.1.2 (invalid),
//! 3.2 (transaction layer), 3.3 (application layer) and 3.4 (backward compatibility),
//! transcribed byte for byte into `tests/rfc4475/<name>.sip`, checked against the layer
//! of this crate that must accept or reject it. See `tests/rfc4475/README.md`.

use std::path::PathBuf;

use portcullis_sip::{Bytes, HeaderName, Method, ParseError, SipMessage};

/// What this crate must do with a fixture.
#[derive(Debug)]
enum Expect {
    /// Parses, and validate_request/validate_response accepts it (the RFC calls it valid,
    /// or its problem belongs to a layer above this crate).
    Valid,
    /// SipMessage::parse rejects it.
    ParseError(ParseError),
    /// Parses (the bytes are framed) but validate_* rejects it.
    Invalid(fn(&ParseError) -> bool),
}

use Expect::*;

fn fixture(name: &str) -> Bytes {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "rfc4475",
        &format!("{name}.sip"),
    ]
    .iter()
    .collect();
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn validate(m: &SipMessage) -> Result<(), ParseError> {
    if m.is_request() {
        m.validate_request()
    } else {
        m.validate_response()
    }
}

fn cases() -> Vec<(&'static str, Expect)> {
    vec![
        // 3.1.1 valid messages
        ("wsinv", Valid),
        ("intmeth", Valid),
        ("esc01", Valid),
        ("escnull", Valid),
        ("esc02", Valid),
        ("lwsdisp", Valid),
        ("longreq", Valid),
        ("dblreq", Valid),
        ("semiuri", Valid),
        ("transports", Valid),
        ("mpart01", Valid),
        ("unreason", Valid),
        ("noreason", Valid),
        // 3.1.2 invalid messages
        (
            "badinv01",
            Invalid(|e| matches!(e, ParseError::BadHeaderValue { header: "Via", .. })),
        ),
        ("clerr", ParseError(ParseError::Truncated)),
        ("ncl", ParseError(ParseError::BadContentLength)),
        (
            "scalar02",
            Invalid(|e| matches!(e, ParseError::BadHeaderValue { header: "CSeq", .. })),
        ),
        (
            "scalarlg",
            Invalid(|e| matches!(e, ParseError::BadHeaderValue { header: "CSeq", .. })),
        ),
        (
            "quotbal",
            Invalid(|e| matches!(e, ParseError::BadHeaderValue { header: "To", .. })),
        ),
        (
            "ltgtruri",
            Invalid(|e| matches!(e, ParseError::BadRequestUri(_))),
        ),
        (
            "lwsruri",
            ParseError(ParseError::BadRequestUri("white space in Request-URI")),
        ),
        (
            "lwsstart",
            ParseError(ParseError::BadRequestUri("white space in Request-URI")),
        ),
        ("trws", ParseError(ParseError::BadStartLine)),
        (
            "escruri",
            Invalid(|e| *e == ParseError::BadRequestUri("headers not allowed in Request-URI")),
        ),
        // Proxy validation accepts; validate_date() rejects (see below).
        ("baddate", Valid),
        (
            "regbadct",
            Invalid(|e| {
                matches!(
                    e,
                    ParseError::BadHeaderValue {
                        header: "Contact",
                        ..
                    }
                )
            }),
        ),
        (
            "badaspec",
            Invalid(|e| matches!(e, ParseError::BadHeaderValue { header: "To", .. })),
        ),
        (
            "baddn",
            Invalid(|e| matches!(e, ParseError::BadHeaderValue { header: "From", .. })),
        ),
        ("badvers", Invalid(|e| *e == ParseError::BadVersion)),
        (
            "mismatch01",
            Invalid(|e| *e == ParseError::CSeqMethodMismatch),
        ),
        (
            "mismatch02",
            Invalid(|e| *e == ParseError::CSeqMethodMismatch),
        ),
        ("bigcode", ParseError(ParseError::BadStatusCode)),
        // 3.2 transaction layer: syntactically valid, the transaction layer decides.
        ("badbranch", Valid),
        // 3.3 application layer
        (
            "insuf",
            Invalid(|e| matches!(e, ParseError::MissingHeader(_))),
        ),
        ("unkscm", Valid),
        ("novelsc", Valid),
        ("unksm2", Valid),
        ("bext01", Valid),
        ("invut", Valid),
        ("regaut01", Valid),
        (
            "multi01",
            Invalid(|e| matches!(e, ParseError::DuplicateHeader(_))),
        ),
        ("mcl01", ParseError(ParseError::ConflictingContentLength)),
        ("bcast", Valid),
        ("zeromf", Valid),
        ("cparam01", Valid),
        ("cparam02", Valid),
        ("regescrt", Valid),
        ("sdp01", Valid),
        // 3.4 backward compatibility (RFC 2543 syntax over UDP, no Content-Length)
        ("inv2543", Valid),
    ]
}

#[test]
fn every_fixture_is_accepted_or_rejected_by_the_right_layer() {
    let mut failures = Vec::new();
    for (name, expect) in cases() {
        let raw = fixture(name);
        let parsed = SipMessage::parse(raw.clone());
        let outcome = match (&expect, &parsed) {
            (ParseError(want), Err(got)) if want == got => Ok(()),
            (ParseError(want), other) => Err(format!(
                "want parse error {want:?}, got {:?}",
                other.as_ref().map(|_| "Ok")
            )),
            (_, Err(e)) => Err(format!("unexpected parse error {e:?}")),
            (Valid, Ok(m)) => validate(m).map_err(|e| format!("validate rejected: {e:?}")),
            (Invalid(pred), Ok(m)) => match validate(m) {
                Err(e) if pred(&e) => Ok(()),
                Err(e) => Err(format!("validate rejected for the wrong reason: {e:?}")),
                Ok(()) => Err("validate accepted an invalid message".to_owned()),
            },
        };
        if let Ok(m) = &parsed {
            // Unedited messages serialise to exactly their input.
            if m.to_bytes() != raw {
                failures.push(format!("{name}: to_bytes differs from input"));
            }
        }
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_is_covered() {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "rfc4475"]
        .iter()
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".sip").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = cases().iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    assert_eq!(listed.len(), 49);
}

fn parse(name: &str) -> SipMessage {
    SipMessage::parse(fixture(name)).unwrap()
}

#[test]
fn wsinv_details() {
    let m = parse("wsinv");
    assert_eq!(
        m.request_uri(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    let to = m.to().unwrap();
    assert_eq!(to.uri, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    assert_eq!(m.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.content_length().unwrap(), Some(150));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].transport, vias[0].host, vias[0].branch()),
        ("UDP", "192.0.2.2", Some("390skdjuw"))
    );
    assert_eq!(
        (vias[1].transport, vias[1].host, vias[1].branch()),
        ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8"))
    );
    assert_eq!(
        (vias[2].transport, vias[2].host, vias[2].branch()),
        ("UDP", "192.168.255.111", Some("z9hG4bK30239"))
    );
    assert_eq!(m.header_by_name("Subject"), Some(""));
    assert_eq!(
        m.header_by_name("newfangledheader"),
        Some("newfangled value\r\n continued newfangled value")
    );
    assert_eq!(
        m.header_by_name("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    let routes = m.routes().unwrap();
    assert_eq!(routes.len(), 1);
    assert!(routes[0].parse_uri().unwrap().is_loose_route());
    let contacts = m.contacts().unwrap();
    assert_eq!(contacts.len(), 1);
    let portcullis_sip::Contact::Addr(c) = &contacts[0] else {
        panic!("star")
    };
    assert_eq!(c.display_name, Some(r#"Quoted string \"\""#));
    assert_eq!(c.params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(c.params.get("secondparam"), Some(None));
    assert_eq!(c.params.get("q"), Some(Some("0.33")));
    assert_eq!(m.headers().count(), 14);
    assert_eq!(m.body().len(), 150);
}

#[test]
fn intmeth_details() {
    let m = parse("intmeth");
    let method = m.method().unwrap();
    assert_eq!(
        method.as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(m.cseq().unwrap().method, *method);
    let ruri = portcullis_sip::SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(
        ruri.user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        ruri.password,
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(ruri.host, "example.com");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        m.to().unwrap().display_name,
        Some("BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f")
    );
    assert_eq!(
        m.from().unwrap().display_name,
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(m.from().unwrap().tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        m.from().unwrap().params.get("fromParam''~+*_!.-%"),
        Some(Some("\"работающий\""))
    );
    assert_eq!(
        m.call_id().unwrap(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    assert_eq!(
        m.header_by_name("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
}

#[test]
fn escapes_are_kept_not_decoded() {
    let m = parse("esc01");
    let ruri = portcullis_sip::SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.user, Some("sips%3Auser%40example.com"));
    assert_eq!(ruri.host, "example.net");
    assert_eq!(m.header(HeaderName::ContentType), Some("application/sdp"));
    let m = parse("esc02");
    assert_eq!(m.contacts().unwrap().len(), 2);
    assert_eq!(
        m.header_by_name("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    let m = parse("escnull");
    assert_eq!(m.contacts().unwrap().len(), 2);
    let m = parse("semiuri");
    let ruri = portcullis_sip::SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.user, Some("user;par=u%40example.net"));
    assert_eq!(m.header_values_by_name("Accept").len(), 6);
}

#[test]
fn long_values_and_many_vias() {
    let m = parse("longreq");
    assert_eq!(m.vias().unwrap().len(), 34);
    assert_eq!(m.top_via().unwrap().host, "sip33.example.com");
    assert_eq!(m.vias().unwrap()[33].received(), Some("192.0.2.5"));
    assert!(m.from().unwrap().tag().unwrap().len() > 150);
    assert!(m.call_id().unwrap().starts_with("longreq.onereally"));
}

#[test]
fn datagram_tail_and_odd_start_lines() {
    let m = parse("dblreq");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.body(), b"");
    let m = parse("noreason");
    assert_eq!((m.status(), m.reason()), (Some(100), Some("")));
    let m = parse("unreason");
    assert_eq!(
        m.reason(),
        Some("= 2**3 * 5**2 но сто девяносто девять - простое")
    );
    let m = parse("transports");
    let t: Vec<_> = m
        .vias()
        .unwrap()
        .iter()
        .map(|v| v.transport.to_owned())
        .collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let m = parse("mpart01");
    assert_eq!(m.body().len(), 553);
    assert_eq!(
        m.content_type(),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
    let m = parse("inv2543");
    assert_eq!(m.content_length().unwrap(), None);
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.max_forwards().unwrap(), None);
}

#[test]
fn bad_date_is_reported_only_by_the_date_check() {
    let m = parse("baddate");
    assert!(matches!(
        m.validate_date(),
        Err(ParseError::BadHeaderValue { header: "Date", .. })
    ));
    assert_eq!(parse("mpart01").validate_date(), Ok(()));
    assert_eq!(parse("wsinv").validate_date(), Ok(()));
}

#[test]
fn application_layer_values_are_readable() {
    let m = parse("bext01");
    assert_eq!(
        m.require(),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(m.header_values(HeaderName::ProxyRequire).len(), 2);
    let m = parse("zeromf");
    assert_eq!(m.max_forwards().unwrap(), Some(0));
    let m = parse("cparam01");
    let portcullis_sip::Contact::Addr(c) = m.contacts().unwrap()[0] else {
        panic!()
    };
    assert_eq!(c.uri, "sip:+19725552222@gw1.example.net");
    assert!(c.params.has("unknownparam"));
    let m = parse("cparam02");
    let portcullis_sip::Contact::Addr(c) = m.contacts().unwrap()[0] else {
        panic!()
    };
    assert!(c.params.is_empty());
    assert!(c.parse_uri().unwrap().params.has("unknownparam"));
    let m = parse("regescrt");
    let portcullis_sip::Contact::Addr(c) = m.contacts().unwrap()[0] else {
        panic!()
    };
    assert_eq!(
        c.parse_uri().unwrap().headers,
        Some("Route=%3Csip:sip.example.com%3E")
    );
    let m = parse("badbranch");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"));
    let m = parse("bcast");
    assert_eq!(m.vias().unwrap()[1].host, "255.255.255.255");
}
