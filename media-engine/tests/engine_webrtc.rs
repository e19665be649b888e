//! WebRTC termination in the offer/answer engine: a browser-style offer
//! (UDP/TLS/RTP/SAVPF, ICE, DTLS, rtcp-mux, BUNDLE) toward a plain RTP leg and back, and a
//! plain offer toward a WebRTC leg; the relay gets the DTLS/ICE parameters in the plans.

use media_engine::dtls::{Fingerprint, Role};
use media_engine::{
    AnswerRequest, AnswerResponse, Flags, MediaEngine, MediaInterface, OfferRequest, OfferResponse,
};

const FP: &str = "sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";

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

fn browser_offer() -> Vec<u8> {
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 192.0.2.50 50000 typ host\r\n\
         a=ice-ufrag:bRwX\r\na=ice-pwd:9dHV1pWWc4ibEnyAF1S6FXZb\r\na=ice-options:trickle\r\n\
         a=fingerprint:{FP}\r\na=setup:actpass\r\na=mid:0\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\na=msid:- a1\r\n\
         a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=ssrc:1001 cname:abc\r\n"
    )
    .into_bytes()
}

/// [`browser_offer`] with a video section (VP8 and its rtx) in the same BUNDLE group.
fn browser_audio_video_offer() -> String {
    String::from_utf8(browser_offer())
        .unwrap()
        .replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
        + &format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=candidate:1 1 udp 2122260223 192.0.2.50 50004 typ host\r\n\
             a=ice-ufrag:bRwX\r\na=ice-pwd:9dHV1pWWc4ibEnyAF1S6FXZb\r\na=fingerprint:{FP}\r\n\
             a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
        )
}

fn plain(addr: &str, port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    .into_bytes()
}

fn flags(t: &str) -> Flags {
    Flags {
        transport: Some(t.into()),
        ..Flags::default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn attr<'a>(sdp: &'a str, name: &str) -> Vec<&'a str> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter_map(|a| a.strip_prefix(name))
        .filter_map(|a| a.strip_prefix(':').or(Some(a).filter(|a| a.is_empty())))
        .collect()
}

/// The engine's offer of `sdp` from `from_tag`, `ingress` to `egress`, as `transport`.
fn offer_via(
    e: &mut MediaEngine,
    call_id: &str,
    from_tag: &str,
    sdp: &[u8],
    (ingress, egress): (&str, &str),
    transport: &str,
) -> OfferResponse {
    e.offer(&OfferRequest {
        call_id,
        from_tag,
        to_tag: None,
        via_branch: Some("b"),
        sdp,
        ingress_interface: ingress,
        egress_interface: egress,
        flags: flags(transport),
    })
    .unwrap()
}

/// The engine's answer of `sdp` from `to_tag` to the offer of `from_tag`.
fn answer_with(
    e: &mut MediaEngine,
    call_id: &str,
    from_tag: &str,
    to_tag: &str,
    sdp: &[u8],
) -> AnswerResponse {
    e.answer(&AnswerRequest {
        call_id,
        from_tag,
        to_tag,
        via_branch: Some("b"),
        sdp,
        flags: Flags::default(),
    })
    .unwrap()
}

#[test]
fn browser_offer_to_plain_phone_and_answer_back() {
    let mut e = engine();
    let offer = browser_offer();
    let o = offer_via(&mut e, "w1", "br", &offer, ("outside", "inside"), "RTP/AVP");
    let to_phone = text(&o.sdp);
    assert!(to_phone.contains("m=audio 4"), "{to_phone}");
    assert!(to_phone.contains(" RTP/AVP 111 0 8"), "{to_phone}");
    for gone in [
        "fingerprint",
        "setup",
        "ice-ufrag",
        "candidate",
        "group",
        "ssrc",
        "msid",
    ] {
        assert!(
            attr(&to_phone, gone).is_empty(),
            "{gone} toward the phone:\n{to_phone}"
        );
    }
    let ans = plain("10.0.0.9", 6000);
    let a = answer_with(&mut e, "w1", "br", "ph", &ans);
    let to_browser = text(&a.sdp);
    assert!(to_browser.contains(" UDP/TLS/RTP/SAVPF 8"), "{to_browser}");
    assert_eq!(attr(&to_browser, "ice-lite"), [""], "{to_browser}");
    assert_eq!(attr(&to_browser, "group"), ["BUNDLE 0"], "{to_browser}");
    assert_eq!(attr(&to_browser, "mid"), ["0"], "{to_browser}");
    assert_eq!(attr(&to_browser, "setup"), ["active"], "answer to actpass");
    assert_eq!(attr(&to_browser, "rtcp-mux"), [""], "{to_browser}");
    let fp = attr(&to_browser, "fingerprint");
    assert_eq!(fp.len(), 1);
    assert!(fp[0].starts_with("sha-256 "));
    let port = to_browser
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap();
    assert_eq!(
        attr(&to_browser, "candidate"),
        [format!("1 1 udp 2130706431 192.0.2.1 {port} typ host").as_str()]
    );
    assert!(attr(&to_browser, "ice-ufrag")[0].len() >= 4);
    assert!(attr(&to_browser, "ice-pwd")[0].len() >= 22);
    assert!(!to_browser.contains("10.0.0.9"));
    // The relay gets the browser side's parameters.
    let d = a.streams[0].sides[0]
        .dtls
        .clone()
        .expect("browser side terminated");
    assert_eq!(d.role, Role::Client, "active = DTLS client");
    assert_eq!(d.remote_fingerprints, [Fingerprint::parse_sdp(FP).unwrap()]);
    let ice = d.ice.expect("ICE");
    assert_eq!(
        (ice.remote_ufrag.as_str(), ice.remote_pwd.as_str()),
        ("bRwX", "9dHV1pWWc4ibEnyAF1S6FXZb")
    );
    assert_eq!(ice.local_ufrag, attr(&to_browser, "ice-ufrag")[0]);
    assert_eq!(
        d.certificate.fingerprint().to_sdp(),
        fp[0],
        "the relay's certificate is the one in the SDP"
    );
    assert!(
        a.streams[0].sides[0].rtcp_mux,
        "RTCP muxed toward the browser"
    );
    assert!(a.streams[0].sides[1].dtls.is_none());
}

#[test]
fn phone_offer_to_browser_and_its_answer() {
    let mut e = engine();
    let offer = plain("192.0.2.60", 4000);
    let o = offer_via(
        &mut e,
        "w2",
        "ph",
        &offer,
        ("inside", "outside"),
        "UDP/TLS/RTP/SAVPF",
    );
    let to_browser = text(&o.sdp);
    assert!(
        to_browser.contains(" UDP/TLS/RTP/SAVPF 8 101"),
        "{to_browser}"
    );
    assert_eq!(attr(&to_browser, "setup"), ["actpass"]);
    assert_eq!(attr(&to_browser, "ice-lite"), [""]);
    assert_eq!(attr(&to_browser, "rtcp-mux"), [""]);
    assert_eq!(attr(&to_browser, "mid"), ["0"]);
    assert_eq!(attr(&to_browser, "group"), ["BUNDLE 0"]);
    assert_eq!(attr(&to_browser, "candidate").len(), 1);
    assert!(attr(&to_browser, "rtcp").is_empty() || !to_browser.contains("a=rtcp:4"));
    let fp = attr(&to_browser, "fingerprint")[0].to_string();
    // The browser answers active with its own credentials.
    let answer = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 8\r\nc=IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 192.0.2.50 50002 typ host\r\n\
         a=ice-ufrag:Zz9q\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\na=fingerprint:{FP}\r\n\
         a=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:8 PCMA/8000\r\n"
    );
    let a = answer_with(&mut e, "w2", "ph", "br", answer.as_bytes());
    let to_phone = text(&a.sdp);
    assert!(to_phone.contains(" RTP/AVP 8"), "{to_phone}");
    for gone in [
        "fingerprint",
        "setup",
        "ice-ufrag",
        "candidate",
        "group",
        "mid",
    ] {
        assert!(
            attr(&to_phone, gone).is_empty(),
            "{gone} toward the phone:\n{to_phone}"
        );
    }
    let d = a.streams[0].sides[1]
        .dtls
        .clone()
        .expect("browser side terminated");
    assert_eq!(
        d.role,
        Role::Server,
        "actpass answered active: we are the DTLS server"
    );
    assert_eq!(d.certificate.fingerprint().to_sdp(), fp);
    assert_eq!(d.ice.unwrap().remote_ufrag, "Zz9q");
}

/// A browser offering audio and video (BUNDLE 0 1) to a phone that rejects the video: the
/// phone gets both sections plain; the browser's answer keeps audio in the BUNDLE group and
/// rejects the video with port 0, still naming it by its mid (a browser matches answer
/// sections by mid).
#[test]
fn rejected_video_keeps_its_mid_toward_the_browser() {
    let mut e = engine();
    let offer = browser_audio_video_offer();
    let o = offer_via(
        &mut e,
        "v1",
        "br",
        offer.as_bytes(),
        ("outside", "inside"),
        "RTP/AVP",
    );
    let to_phone = text(&o.sdp);
    assert!(to_phone.contains(" RTP/AVP 111 0 8"), "{to_phone}");
    assert!(to_phone.contains(" RTP/AVP 96 97"), "{to_phone}");
    assert!(attr(&to_phone, "mid").is_empty(), "{to_phone}");
    let ans = String::from_utf8(plain("10.0.0.9", 6000)).unwrap() + "m=video 0 RTP/AVP 96\r\n";
    let a = answer_with(&mut e, "v1", "br", "ph", ans.as_bytes());
    let to_browser = text(&a.sdp);
    assert_eq!(attr(&to_browser, "group"), ["BUNDLE 0"], "{to_browser}");
    assert_eq!(attr(&to_browser, "mid"), ["0", "1"], "{to_browser}");
    let video = &to_browser[to_browser.find("m=video").expect("video section")..];
    assert!(
        video.starts_with("m=video 0 UDP/TLS/RTP/SAVPF "),
        "{to_browser}"
    );
    for gone in ["candidate", "fingerprint", "ice-ufrag", "setup"] {
        assert!(
            attr(video, gone).is_empty(),
            "{gone} in the rejected section:\n{video}"
        );
    }
    assert!(
        to_browser.contains(" UDP/TLS/RTP/SAVPF 8\r\n"),
        "{to_browser}"
    );
}

/// A phone offering audio and video to a browser: every section gets a mid of its own (a
/// browser refuses duplicate mids) and its own transport (port, ICE credentials), and only
/// the first is in the BUNDLE group, since the relay cannot carry several sections on one
/// port. The browser's answer rejecting the video reaches the phone as port 0.
#[test]
fn phone_video_offer_to_a_browser_gets_distinct_mids_and_one_bundled_section() {
    let mut e = engine();
    let offer = String::from_utf8(plain("192.0.2.60", 4000)).unwrap()
        + "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    let o = offer_via(
        &mut e,
        "w3",
        "ph",
        offer.as_bytes(),
        ("inside", "outside"),
        "UDP/TLS/RTP/SAVPF",
    );
    let to_browser = text(&o.sdp);
    assert_eq!(attr(&to_browser, "mid"), ["0", "1"], "{to_browser}");
    assert_eq!(attr(&to_browser, "group"), ["BUNDLE 0"], "{to_browser}");
    let ufrags = attr(&to_browser, "ice-ufrag");
    assert_eq!(ufrags.len(), 2, "{to_browser}");
    assert_ne!(ufrags[0], ufrags[1], "a transport per section");
    let ports: Vec<&str> = attr(&to_browser, "candidate")
        .iter()
        .filter_map(|c| c.split(' ').nth(5))
        .collect();
    assert_eq!(ports.len(), 2, "{to_browser}");
    assert_ne!(ports[0], ports[1], "{to_browser}");
    let answer = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 8\r\nc=IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 192.0.2.50 50002 typ host\r\n\
         a=ice-ufrag:Zz9q\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\na=fingerprint:{FP}\r\n\
         a=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:8 PCMA/8000\r\n\
         m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
    );
    let a = answer_with(&mut e, "w3", "ph", "br", answer.as_bytes());
    let to_phone = text(&a.sdp);
    assert!(to_phone.contains("m=audio 4"), "{to_phone}");
    assert!(to_phone.contains("m=video 0 RTP/AVP"), "{to_phone}");
    assert!(attr(&to_phone, "mid").is_empty(), "{to_phone}");
}

/// The browser offers audio and video in one BUNDLE group and the phone takes both: the
/// answer keeps only audio in the group and gives the video its own port (RFC 8843 7.3.2),
/// instead of claiming a bundle the relay would not honour.
#[test]
fn accepted_video_toward_a_browser_is_moved_out_of_the_bundle() {
    let mut e = engine();
    let offer = browser_audio_video_offer();
    offer_via(
        &mut e,
        "v2",
        "br",
        offer.as_bytes(),
        ("outside", "inside"),
        "RTP/AVP",
    );
    let ans = String::from_utf8(plain("10.0.0.9", 6000)).unwrap()
        + "m=video 6002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
    let a = answer_with(&mut e, "v2", "br", "ph", ans.as_bytes());
    let to_browser = text(&a.sdp);
    assert_eq!(attr(&to_browser, "group"), ["BUNDLE 0"], "{to_browser}");
    assert_eq!(attr(&to_browser, "mid"), ["0", "1"], "{to_browser}");
    let ports: Vec<&str> = to_browser
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|m| m.split(' ').nth(1))
        .collect();
    assert_eq!(ports.len(), 2, "{to_browser}");
    assert!(ports.iter().all(|p| *p != "0"), "{to_browser}");
    assert_ne!(ports[0], ports[1], "{to_browser}");
}
