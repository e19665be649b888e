//! DTLS-SRTP against a real WebRTC stack: aiortc (PyPI, pinned in
//! `tests/dtls_requirements.txt`; its DTLS is OpenSSL through pyOpenSSL, its SRTP libsrtp
//! through pylibsrtp), over loopback UDP, with our ICE-lite agent answering aiortc's checks on
//! the same port (RFC 7983 demultiplexing by first byte).
//!
//! For each `a=setup` exchange of S-21 (aiortc offering actpass and us answering active or
//! passive, us offering actpass and aiortc answering active or passive), each side takes the
//! role [`dtls_role`] gives it, aiortc is told our fingerprint and we are told aiortc's, and:
//! - the handshake completes on both sides with the SRTP profile we allow;
//! - aiortc sends SRTP; we unprotect every packet with the keys our endpoint exported, send
//!   it back re-protected with our keys under our own SSRC, and aiortc (libsrtp) unprotects
//!   and reports each echo: two-way media.
//!
//! And S-22: told a wrong fingerprint for aiortc, our endpoint fails the handshake with
//! `FingerprintMismatch` and aiortc's DTLS transport ends `failed`.
//!
//! The test installs aiortc into a venv under the cargo target dir (reused across runs; it
//! fails with pip's output if the install fails).

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use media_engine::dtls::{
    dtls_role, DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsEvent, FailureReason, Fingerprint,
    Role, Setup, SrtpKeyingMaterial,
};
use media_engine::ice::{stun, IceLiteAgent};
use media_engine::srtp::{SrtpContext, SrtpProfile};

const PEER_PY: &str = r#"
import asyncio, sys
import aioice.ice
# Loopback only (house rules); aioice skips 127.0.0.1 by default.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
from aiortc import (RTCCertificate, RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport,
                    RTCIceCandidate, RTCIceGatherer, RTCIceParameters, RTCIceTransport)
from aiortc.rtp import RtpPacket

async def main():
    port, ufrag, pwd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    remote_fp, role, count = sys.argv[4], sys.argv[5], int(sys.argv[6])
    gatherer = RTCIceGatherer()
    await gatherer.gather()
    ice = RTCIceTransport(gatherer)
    # The remote (us) is ICE-lite, so aiortc is the controlling agent.
    ice._connection.ice_controlling = True
    cert = RTCCertificate.generateCertificate()
    dtls = RTCDtlsTransport(ice, [cert])
    fp = [f for f in cert.getFingerprints() if f.algorithm == "sha-256"][0]
    local = gatherer.getLocalParameters()
    print("LOCAL %s %s" % (local.usernameFragment, fp.value), flush=True)
    await ice.addRemoteCandidate(RTCIceCandidate(
        component=1, foundation="1", ip="127.0.0.1", port=port, priority=2130706431,
        protocol="udp", type="host"))
    await ice.addRemoteCandidate(None)
    await asyncio.wait_for(
        ice.start(RTCIceParameters(usernameFragment=ufrag, password=pwd, iceLite=True)), 15)
    print("ICE %s" % ice.state, flush=True)
    received = asyncio.Queue()
    async def on_rtp(data, arrival_time_ms):
        await received.put(data)
    dtls._handle_rtp_data = on_rtp
    # The role the a=setup exchange gave aiortc (as RTCPeerConnection would set it).
    dtls._set_role(role)
    await asyncio.wait_for(dtls.start(RTCDtlsParameters(
        fingerprints=[RTCDtlsFingerprint(algorithm="sha-256", value=remote_fp)])), 20)
    print("DTLS %s" % dtls.state, flush=True)
    if dtls.state != "connected":
        return
    for seq in range(count):
        pkt = RtpPacket(payload_type=0, sequence_number=1000 + seq, timestamp=seq * 160,
                        ssrc=0x41494F52, payload=bytes([seq]) * 160)
        await dtls._send_rtp(pkt.serialize())
        back = RtpPacket.parse(await asyncio.wait_for(received.get(), 5))
        print("ECHO %d %08x %s %d" % (back.sequence_number, back.ssrc,
                                      back.payload[:4].hex(), len(back.payload)), flush=True)
    await dtls.stop()
    await ice.stop()

asyncio.run(main())
"#;

const PACKETS: usize = 5;
/// The SSRC our echo uses ("SBC!").
const OUR_SSRC: u32 = 0x5342_4321;

fn venv_python() -> PathBuf {
    common::venv_python("aiortc-venv", "tests/dtls_requirements.txt", "aiortc")
}

/// The aiortc process.
type Peer = common::LinePeer;

fn spawn_peer(
    python: &Path,
    port: u16,
    ufrag: &str,
    pwd: &str,
    our_fp: &Fingerprint,
    aiortc_role: Role,
) -> Peer {
    let script = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aiortc_dtls_peer.py");
    std::fs::write(&script, PEER_PY).unwrap();
    // aiortc wants the bare hex value (its algorithm is given separately).
    let sdp = our_fp.to_sdp();
    let hex = sdp.split_once(' ').map(|(_, h)| h).unwrap_or_default();
    Peer::spawn(
        Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(ufrag)
            .arg(pwd)
            .arg(hex)
            .arg(match aiortc_role {
                Role::Client => "client",
                Role::Server => "server",
            })
            .arg(PACKETS.to_string())
            .stdin(Stdio::null()),
    )
}

struct Run {
    event: Option<DtlsEvent>,
    /// Sequence numbers of aiortc's SRTP packets we unprotected.
    unprotected: Vec<u16>,
    /// aiortc's real fingerprint, as it printed it.
    peer_fp: Option<Fingerprint>,
    peer: Peer,
}

/// One call: ICE-lite + DTLS + SRTP echo on one UDP port against aiortc. `wrong_fp` makes
/// "its SDP" carry another certificate's fingerprint.
fn call(our_setup: Setup, their_setup: Setup, cfg: &DtlsConfig, wrong_fp: bool) -> Run {
    let python = venv_python();
    let our_role = dtls_role(our_setup, their_setup).unwrap();
    assert_eq!(
        dtls_role(their_setup, our_setup).unwrap(),
        our_role.opposite()
    );
    let ours = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let (ufrag, pwd) = ("SBCd", "sbc-dtls-ice-password-0123456789");
    let mut agent = IceLiteAgent::new(ufrag, pwd);
    let mut peer = spawn_peer(
        &python,
        port,
        ufrag,
        pwd,
        ours.fingerprint(),
        our_role.opposite(),
    );

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut ep: Option<DtlsEndpoint> = None;
    let mut event = None;
    let mut keys: Option<(SrtpContext, SrtpContext)> = None;
    let mut unprotected = Vec::new();
    let mut peer_fp = None;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        peer.poll();
        if ep.is_none() {
            // "The SDP" with aiortc's ufrag and fingerprint has arrived.
            let local = peer.seen.iter().find_map(|l| l.strip_prefix("LOCAL "));
            if let Some((peer_ufrag, hex)) = local.and_then(|l| l.split_once(' ')) {
                agent.set_remote_credentials(peer_ufrag, "unused-by-a-lite-agent");
                let mut fp = Fingerprint::parse_sdp(&format!("sha-256 {hex}")).unwrap();
                peer_fp = Some(fp.clone());
                if wrong_fp {
                    fp = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(60))
                        .unwrap()
                        .fingerprint()
                        .clone();
                }
                ep = Some(DtlsEndpoint::new(our_role, &ours, [fp], cfg, Instant::now()).unwrap());
            }
        }
        let done_peer = peer.seen.iter().any(|l| l.starts_with("DTLS failed"))
            || peer.seen.iter().filter(|l| l.starts_with("ECHO ")).count() == PACKETS;
        if event.is_some() && done_peer {
            break;
        }
        if let (Some(ep), Some(to)) = (ep.as_mut(), agent.selected()) {
            while let Some(d) = ep.poll_transmit() {
                sock.send_to(&d, to).unwrap();
            }
            while let Some(e) = ep.poll_event() {
                if let DtlsEvent::Connected(k) = &e {
                    keys = Some((k.inbound_context().unwrap(), k.outbound_context().unwrap()));
                }
                event.get_or_insert(e);
            }
            if ep.poll_timeout().is_some_and(|t| Instant::now() >= t) {
                ep.handle_timeout(Instant::now());
            }
        }
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let now = Instant::now();
        let data = &buf[..n];
        match data.first() {
            Some(0..=3) if stun::is_stun(data) => {
                let out = agent.handle_stun(now, src, data);
                if let Some(resp) = out.response {
                    sock.send_to(&resp, src).unwrap();
                }
                agent.drain_events().for_each(drop);
            }
            // DTLS, only from the address ICE validated.
            Some(20..=63) => {
                if let Some(ep) = ep.as_mut().filter(|_| agent.is_validated(now, src)) {
                    ep.handle_datagram(data, now);
                }
            }
            // SRTP: unprotect, echo re-protected under our SSRC.
            Some(128..=191) => {
                let Some((inbound, outbound)) = keys.as_mut() else {
                    continue;
                };
                let mut pkt = data.to_vec();
                inbound
                    .unprotect_rtp(&mut pkt)
                    .unwrap_or_else(|e| panic!("aiortc's SRTP did not unprotect: {e}"));
                let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
                let i = usize::from(seq.wrapping_sub(1000));
                assert_eq!(pkt.len(), 12 + 160, "plaintext RTP length");
                assert!(pkt[12..].iter().all(|&b| usize::from(b) == i), "payload");
                unprotected.push(seq);
                pkt[8..12].copy_from_slice(&OUR_SSRC.to_be_bytes());
                outbound.protect_rtp(&mut pkt).unwrap();
                sock.send_to(&pkt, src).unwrap();
            }
            _ => panic!("unexpected datagram from {src}: {data:02x?}"),
        }
    }
    // Give aiortc a moment to print its last lines.
    std::thread::sleep(Duration::from_millis(100));
    peer.poll();
    Run {
        event,
        unprotected,
        peer_fp,
        peer,
    }
}

fn expect_connected(run: &Run, what: &str) -> SrtpKeyingMaterial {
    match &run.event {
        Some(DtlsEvent::Connected(k)) => k.clone(),
        other => panic!("{what}: {other:?}\naiortc:\n{}", run.peer.output()),
    }
}

#[test]
fn aiortc_setup_matrix_two_way_srtp() {
    // (our a=setup, aiortc's a=setup), covering both directions of offer/answer.
    let cases = [
        // aiortc offers actpass, we answer active (RFC 5763's recommended answer): we are client.
        (Setup::Active, Setup::ActPass, SrtpProfile::AeadAes128Gcm),
        // aiortc offers actpass, we answer passive: we are server.
        (
            Setup::Passive,
            Setup::ActPass,
            SrtpProfile::AesCm128HmacSha1_80,
        ),
        // We offer actpass, aiortc answers active: we are server.
        (Setup::ActPass, Setup::Active, SrtpProfile::AeadAes128Gcm),
        // We offer actpass, aiortc answers passive: we are client.
        (
            Setup::ActPass,
            Setup::Passive,
            SrtpProfile::AesCm128HmacSha1_80,
        ),
    ];
    for (ours, theirs, profile) in cases {
        let what = format!("ours {ours} / aiortc {theirs} / {profile:?}");
        let cfg = DtlsConfig {
            srtp_profiles: vec![profile],
            ..DtlsConfig::default()
        };
        let run = call(ours, theirs, &cfg, false);
        let k = expect_connected(&run, &what);
        assert_eq!(k.profile, profile, "{what}");
        assert_eq!(k.role, dtls_role(ours, theirs).unwrap(), "{what}");
        let out = run.peer.output();
        assert!(out.contains("DTLS connected"), "{what}:\n{out}");
        assert_eq!(
            run.unprotected,
            (1000..1000 + PACKETS as u16).collect::<Vec<_>>(),
            "{what}: aiortc's SRTP packets\n{out}"
        );
        // aiortc (libsrtp) unprotected each of our echoes: right sequence number, our SSRC,
        // the payload it sent.
        let echoes: Vec<&String> = run
            .peer
            .seen
            .iter()
            .filter(|l| l.starts_with("ECHO "))
            .collect();
        assert_eq!(echoes.len(), PACKETS, "{what}:\n{out}");
        for (i, line) in echoes.iter().enumerate() {
            let b = format!("{i:02x}");
            assert_eq!(
                **line,
                format!("ECHO {} {OUR_SSRC:08x} {b}{b}{b}{b} 160", 1000 + i),
                "{what}"
            );
        }
    }
}

#[test]
fn aiortc_with_wrong_fingerprint_is_rejected() {
    for ours in [Setup::Active, Setup::Passive] {
        let run = call(ours, Setup::ActPass, &DtlsConfig::default(), true);
        let out = run.peer.output();
        match &run.event {
            Some(DtlsEvent::Failed(FailureReason::FingerprintMismatch { expected, got })) => {
                // We name aiortc's real certificate, and it is not the one "its SDP" gave.
                assert_eq!(Some(got), run.peer_fp.as_ref(), "{ours}");
                assert!(!expected.contains(got));
            }
            other => panic!("{ours}: expected a fingerprint mismatch, got {other:?}\n{out}"),
        }
        assert!(run.unprotected.is_empty());
        assert!(
            out.contains("DTLS failed"),
            "{ours}: aiortc's transport did not fail:\n{out}"
        );
        assert!(!out.contains("ECHO"), "{ours}:\n{out}");
    }
}
