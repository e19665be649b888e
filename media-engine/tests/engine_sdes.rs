//! SDES-SRTP termination in the offer/answer engine (RFC 4568): an SRTP offerer bridged to a
//! plain RTP answerer and the reverse; the keys the relay needs are in the stream plans, the
//! SDP each side sees carries only its own protocol.

use media_engine::secure::SdesCrypto;
use media_engine::srtp::SrtpProfile;
use media_engine::{AnswerRequest, EngineError, Flags, MediaEngine, MediaInterface, OfferRequest};

const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

fn engine() -> MediaEngine {
    let iface = |name: &str, addr: &str, min: u16| MediaInterface {
        name: name.into(),
        address: addr.parse().unwrap(),
        advertised_address: None,
        port_min: min,
        port_max: min + 99,
    };
    MediaEngine::new(vec![
        iface("outside", "192.0.2.1", 30000),
        iface("inside", "10.0.0.1", 40000),
    ])
    .unwrap()
}

fn body(addr: &str, port: u16, proto: &str, extra: &[String]) -> Vec<u8> {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.into_bytes()
}

fn flags(transport: &str) -> Flags {
    Flags {
        transport: Some(transport.into()),
        ..Flags::default()
    }
}

fn cryptos(sdp: &[u8]) -> Vec<SdesCrypto> {
    String::from_utf8_lossy(sdp)
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| SdesCrypto::parse(v).unwrap())
        .collect()
}

fn m_line(sdp: &[u8]) -> String {
    String::from_utf8_lossy(sdp)
        .lines()
        .find(|l| l.starts_with("m="))
        .unwrap()
        .to_string()
}

#[test]
fn srtp_offerer_to_plain_answerer() {
    let mut e = engine();
    let theirs = format!("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}");
    let offer_sdp = body(
        "203.0.113.7",
        5004,
        "RTP/SAVP",
        &[
            "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"
                .into(),
            theirs,
        ],
    );
    let o = e
        .offer(&OfferRequest {
            call_id: "c1",
            from_tag: "a",
            to_tag: None,
            via_branch: Some("b1"),
            sdp: &offer_sdp,
            ingress_interface: "outside",
            egress_interface: "inside",
            flags: flags("RTP/AVP"),
        })
        .unwrap();
    assert!(
        m_line(&o.sdp).contains(" RTP/AVP 0 101"),
        "{}",
        m_line(&o.sdp)
    );
    assert!(cryptos(&o.sdp).is_empty(), "no key toward the plain leg");
    let ans_sdp = body("10.0.0.9", 6000, "RTP/AVP", &[]);
    let a = e
        .answer(&AnswerRequest {
            call_id: "c1",
            from_tag: "a",
            to_tag: "b",
            via_branch: Some("b1"),
            sdp: &ans_sdp,
            flags: Flags::default(),
        })
        .unwrap();
    assert!(
        m_line(&a.sdp).contains(" RTP/SAVP 0 101"),
        "{}",
        m_line(&a.sdp)
    );
    let ours = cryptos(&a.sdp);
    assert_eq!(ours.len(), 1, "one answered key");
    // The unsupported AES-256 line is skipped; tag 3 is answered with a fresh key.
    assert_eq!(
        (ours[0].tag, ours[0].suite),
        (3, SrtpProfile::AesCm128HmacSha1_80)
    );
    let remote = SdesCrypto::parse(&format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")).unwrap();
    assert_ne!(ours[0].key_salt, remote.key_salt);
    let keys = a.streams[0].sides[0]
        .sdes
        .clone()
        .expect("offerer side terminated");
    assert_eq!(keys.remote, remote);
    assert_eq!(keys.local, ours[0]);
    assert!(a.streams[0].sides[1].sdes.is_none(), "plain side");

    // A re-offer with the same key keeps ours (SRTP contexts go on).
    let o2 = e
        .offer(&OfferRequest {
            call_id: "c1",
            from_tag: "a",
            to_tag: Some("b"),
            via_branch: None,
            sdp: &offer_sdp,
            ingress_interface: "outside",
            egress_interface: "inside",
            flags: flags("RTP/AVP"),
        })
        .unwrap();
    assert_eq!(
        o2.streams[0].sides[0].sdes.as_ref().map(|k| &k.local),
        Some(&ours[0])
    );
}

#[test]
fn plain_offerer_to_srtp_answerer() {
    let mut e = engine();
    let offer_sdp = body("192.0.2.50", 4000, "RTP/AVP", &[]);
    let o = e
        .offer(&OfferRequest {
            call_id: "c2",
            from_tag: "a",
            to_tag: None,
            via_branch: Some("b1"),
            sdp: &offer_sdp,
            ingress_interface: "outside",
            egress_interface: "inside",
            flags: flags("RTP/SAVP"),
        })
        .unwrap();
    assert!(m_line(&o.sdp).contains(" RTP/SAVP 0 101"));
    let offered = cryptos(&o.sdp);
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].suite, SrtpProfile::AesCm128HmacSha1_80);
    // The answerer accepts tag 1 with its own key.
    let theirs = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}");
    let ans_sdp = body("10.0.0.9", 6000, "RTP/SAVP", &[theirs]);
    let a = e
        .answer(&AnswerRequest {
            call_id: "c2",
            from_tag: "a",
            to_tag: "b",
            via_branch: Some("b1"),
            sdp: &ans_sdp,
            flags: Flags::default(),
        })
        .unwrap();
    assert!(
        m_line(&a.sdp).contains(" RTP/AVP 0 101"),
        "{}",
        m_line(&a.sdp)
    );
    assert!(
        cryptos(&a.sdp).is_empty(),
        "no key toward the plain offerer"
    );
    let keys = a.streams[0].sides[1]
        .sdes
        .clone()
        .expect("answerer side terminated");
    assert_eq!(keys.local, offered[0]);
    assert_eq!(keys.remote.tag, 1);
    assert!(a.streams[0].sides[0].sdes.is_none());
}

#[test]
fn unusable_keys_are_refused_with_488() {
    let mut e = engine();
    let offer_sdp = body("203.0.113.7", 5004, "RTP/SAVP", &[]);
    let err = e
        .offer(&OfferRequest {
            call_id: "c3",
            from_tag: "a",
            to_tag: None,
            via_branch: None,
            sdp: &offer_sdp,
            ingress_interface: "outside",
            egress_interface: "inside",
            flags: flags("RTP/AVP"),
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::Unsupported { .. }), "{err:?}");
    assert_eq!(err.sip_status(), 488);
    assert_eq!(e.call_count(), 0, "nothing left behind");

    // An SRTP answer that does not accept our key.
    let plain = body("192.0.2.50", 4000, "RTP/AVP", &[]);
    e.offer(&OfferRequest {
        call_id: "c4",
        from_tag: "a",
        to_tag: None,
        via_branch: Some("x"),
        sdp: &plain,
        ingress_interface: "outside",
        egress_interface: "inside",
        flags: flags("RTP/SAVP"),
    })
    .unwrap();
    let wrong = body(
        "10.0.0.9",
        6000,
        "RTP/SAVP",
        &[format!("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")],
    );
    let err = e
        .answer(&AnswerRequest {
            call_id: "c4",
            from_tag: "a",
            to_tag: "b",
            via_branch: Some("x"),
            sdp: &wrong,
            flags: Flags::default(),
        })
        .unwrap_err();
    assert_eq!(err.sip_status(), 488, "{err:?}");
}
