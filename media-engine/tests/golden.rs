//! Golden-file tests: typical SDPs rewritten by the engine, compared byte for byte with the
//! expected output under `tests/fixtures/` (`<case>.offer.in.sdp` -> `<case>.offer.out.sdp`,
//! and for cases with an answer `<case>.answer.in.sdp` -> `<case>.answer.out.sdp`).
//!
//! The expected files were generated once with `MEDIA_ENGINE_BLESS=1` and then reviewed by
//! hand line by line (see the comments in each case below for what to look for).

use std::path::PathBuf;

use media_engine::{
    AnswerRequest, Flags, MediaEngine, MediaInterface, OfferRequest, RtcpMuxPolicy,
};

fn engine() -> MediaEngine {
    MediaEngine::new(vec![
        MediaInterface {
            name: "outside".into(),
            address: "192.0.2.1".parse().unwrap(),
            // 1:1 NAT: SDP toward the outside carries the public address (S-20).
            advertised_address: Some("203.0.113.5".parse().unwrap()),
            port_min: 30000,
            port_max: 30099,
        },
        MediaInterface {
            name: "inside".into(),
            address: "10.0.0.1".parse().unwrap(),
            advertised_address: None,
            port_min: 40000,
            port_max: 40099,
        },
    ])
    .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check(name: &str, got: &[u8]) {
    if std::env::var_os("MEDIA_ENGINE_BLESS").is_some() {
        std::fs::write(fixture(name), got).unwrap();
        return;
    }
    let want = read(name);
    assert_eq!(
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(&want),
        "output differs from {name}"
    );
}

fn run(case: &str, ingress: &str, egress: &str, flags: Flags) -> MediaEngine {
    let mut e = engine();
    let offer = read(&format!("{case}.offer.in.sdp"));
    let r = e
        .offer(&OfferRequest {
            call_id: case,
            from_tag: "caller",
            to_tag: None,
            via_branch: Some("z9hG4bK-1"),
            sdp: &offer,
            ingress_interface: ingress,
            egress_interface: egress,
            flags,
        })
        .unwrap();
    check(&format!("{case}.offer.out.sdp"), &r.sdp);
    let answer_name = format!("{case}.answer.in.sdp");
    if fixture(&answer_name).exists() {
        let answer = read(&answer_name);
        let r = e
            .answer(&AnswerRequest {
                call_id: case,
                from_tag: "caller",
                to_tag: "callee",
                via_branch: Some("z9hG4bK-1"),
                sdp: &answer,
                flags: Flags::default(),
            })
            .unwrap();
        check(&format!("{case}.answer.out.sdp"), &r.sdp);
    }
    e
}

/// Yealink-like desk phone outside calls an Asterisk-like PBX inside. Offer: o=/c= become the
/// inside media address, m= port an inside relay port, everything else untouched. Answer: the
/// phone sees the outside *advertised* address and an outside relay port.
#[test]
fn desk_phone_to_pbx() {
    run("desk-phone", "outside", "inside", Flags::default());
}

/// Asterisk-like PBX inside (rtcp-mux offered) calls a Polycom-like phone outside that answers
/// with LF line endings, a session-level direction and no rtcp-mux: the answer to the PBX has
/// no rtcp-mux either, CRLF line endings, and the unknown x-polycom attribute kept.
#[test]
fn pbx_to_phone() {
    let e = run("pbx", "inside", "outside", Flags::default());
    let info = e.query("pbx").unwrap();
    // Neither side multiplexes: both legs hold an RTCP port again.
    for leg in &info.legs {
        let s = &leg.streams[0];
        assert!(!s.rtcp_mux, "{leg:?}");
        let p = s.local_ports.unwrap();
        assert_eq!(p.rtcp, Some(p.rtp + 1), "{leg:?}");
    }
}

/// Carrier trunk with audio (AMR-WB with defining fmtp), two H.264 video formats with a
/// non-adjacent a=rtcp (RFC 3605, rewritten), and a disabled port-0 m-line kept in place.
/// The answer carries a CN format that was never offered (removed) and picks the H.264
/// packetization-mode=0 format by its defining parameters.
#[test]
fn trunk_with_video() {
    run("trunk-video", "outside", "inside", Flags::default());
}

/// Chromium WebRTC offer (BUNDLE, ICE candidates, DTLS fingerprint, extmap, rtcp-fb, ssrc,
/// data channel) bridged to a plain RTP/AVP leg: minimal SDP, < 1300 bytes (S-16).
#[test]
fn webrtc_to_plain() {
    let input = read("webrtc-chromium.offer.in.sdp");
    assert!(
        (3000..=5000).contains(&input.len()),
        "fixture is {} bytes",
        input.len()
    );
    run(
        "webrtc-chromium",
        "outside",
        "inside",
        Flags {
            transport: Some("RTP/AVP".into()),
            rtcp_mux: RtcpMuxPolicy::Demux,
            ..Flags::default()
        },
    );
    let out = read("webrtc-chromium.offer.out.sdp");
    assert!(out.len() < 1300, "stripped SDP is {} bytes", out.len());
    let text = String::from_utf8(out).unwrap();
    for gone in [
        "a=candidate",
        "a=ice-",
        "a=end-of-candidates",
        "a=fingerprint",
        "a=setup",
        "a=ssrc",
        "a=msid",
        "a=extmap",
        "a=rtcp-fb",
        "a=mid",
        "a=group:BUNDLE",
        "a=rtcp-mux",
        "SAVPF",
        "198.51.100.23",
        "192.168.1.34",
    ] {
        assert!(!text.contains(gone), "{gone} left in:\n{text}");
    }
    for kept in [
        "m=audio 40000 RTP/AVP 111 63 9 0 8 13 110 126\r\n",
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=rtpmap:9 G722/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:8 PCMA/8000\r\n",
        "a=rtpmap:126 telephone-event/8000\r\n",
        "c=IN IP4 10.0.0.1\r\n",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    ] {
        assert!(text.contains(kept), "{kept:?} missing in:\n{text}");
    }
}

/// Every input fixture parses and serialises back unchanged (CRLF ones byte for byte; the LF
/// one as the same lines with CRLF).
#[test]
fn fixtures_round_trip_unmodified() {
    let dir = fixture("");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".sdp") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        let sdp = media_engine::Sdp::parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let crlf = String::from_utf8(raw.clone())
            .unwrap()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        assert_eq!(sdp.to_bytes(), crlf.as_bytes(), "{name}");
        if raw.windows(2).any(|w| w == b"\r\n") {
            assert_eq!(sdp.to_bytes(), raw, "{name} is not byte-identical");
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} fixtures found");
}
