//! `SecureLeg` against real foreign peers over loopback UDP, with a tiny test-side socket loop
//! standing in for the relay (the "other leg" is an echo: every decrypted packet comes back
//! under our SSRC, re-protected by the leg, to `destination()`):
//!
//! - **DTLS-SRTP + ICE with aiortc** (PyPI; its DTLS is OpenSSL through pyOpenSSL, its SRTP
//!   libsrtp through pylibsrtp): aiortc as DTLS client and as server, both SRTP profiles.
//!   While ICE and the handshake run, an attacker socket on another port sends a fresh
//!   ClientHello every 20 ms (S-23). The handshake completes, aiortc's SRTP and SRTCP come out
//!   decrypted, our echoes are decrypted by aiortc (RTP and RTCP), the attacker's hellos are
//!   counted as rejected, and the attacker receives nothing.
//! - **SDES with libsrtp** (pylibsrtp): a scripted peer parses our `a=crypto` and gives its
//!   own; before each genuine packet an attacker socket sends a copy with a broken tag, and
//!   after it a replay. Only genuine packets pass, the latch stays on the peer (the attacker
//!   receives no echo), libsrtp decrypts our echoes, RTP and RTCP.
//!
//! The Python packages come from `tests/dtls_requirements.txt` (aiortc, which brings
//! pylibsrtp), installed into the venv `tests/dtls_aiortc.rs` uses, under the cargo target
//! dir (reused across runs; a failed install fails the test with pip's output).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use media_engine::dtls::{DtlsCertificate, DtlsConfig, DtlsEndpoint, Fingerprint, Role};
use media_engine::secure::{
    IceCredentials, Inbound, LegSecurity, SdesCrypto, SecureConfig, SecureEvent, SecureLeg,
};
use media_engine::srtp::SrtpProfile;

const DTLS_PEER_PY: &str = r#"
import asyncio, struct, sys
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
    ice._connection.ice_controlling = True  # the SBC is ICE-lite
    cert = RTCCertificate.generateCertificate()
    dtls = RTCDtlsTransport(ice, [cert])
    fp = [f for f in cert.getFingerprints() if f.algorithm == "sha-256"][0]
    local = gatherer.getLocalParameters()
    print("LOCAL %s %s %s" % (local.usernameFragment, local.password, fp.value), flush=True)
    # Wait for the SBC's leg to exist ("the SDP answer").
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await ice.addRemoteCandidate(RTCIceCandidate(
        component=1, foundation="1", ip="127.0.0.1", port=port, priority=2130706431,
        protocol="udp", type="host"))
    await ice.addRemoteCandidate(None)
    await asyncio.wait_for(
        ice.start(RTCIceParameters(usernameFragment=ufrag, password=pwd, iceLite=True)), 15)
    print("ICE %s" % ice.state, flush=True)
    rtp_q, rtcp_q = asyncio.Queue(), asyncio.Queue()
    async def on_rtp(data, arrival_time_ms):
        await rtp_q.put(data)
    async def on_rtcp(data):
        await rtcp_q.put(data)
    dtls._handle_rtp_data = on_rtp
    dtls._handle_rtcp_data = on_rtcp
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
        back = RtpPacket.parse(await asyncio.wait_for(rtp_q.get(), 5))
        print("ECHO %d %08x %s %d" % (back.sequence_number, back.ssrc,
                                      back.payload[:4].hex(), len(back.payload)), flush=True)
    # An RTCP sender report (PT 200) goes out as SRTCP; its echo comes back as SRTCP.
    sr = struct.pack("!BBHIQIII", 0x80, 200, 6, 0x41494F52, 0x1111111111111111, 160, 5, 800)
    await dtls._send_rtp(sr)
    back = await asyncio.wait_for(rtcp_q.get(), 5)
    print("RTCPECHO %d %08x %d" % (back[1], struct.unpack("!I", back[4:8])[0], len(back)),
          flush=True)
    await dtls.stop()
    await ice.stop()

asyncio.run(main())
"#;

const SDES_PEER_PY: &str = r#"
import base64, socket, struct, sys
from pylibsrtp import Policy, Session

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}

def crypto(attr):
    tag, suite, params = attr.split()[:3]
    return PROFILES[suite], base64.b64decode(params.split(":", 1)[1].split("|")[0])

port, sbc_attr, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
profile, sbc_key = crypto(sbc_attr)
# Our own a=crypto: a fixed key is fine for a test.
own_key = bytes(range(1, 1 + len(sbc_key)))
print("CRYPTO 1 %s inline:%s" % (sbc_attr.split()[1], base64.b64encode(own_key).decode()),
      flush=True)
tx = Session(Policy(key=own_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
rx = Session(Policy(key=sbc_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind(("127.0.0.1", 0))
peer.settimeout(5)
attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attacker.bind(("127.0.0.1", 0))
attacker.setblocking(False)
print("ADDRS %d %d" % (peer.getsockname()[1], attacker.getsockname()[1]), flush=True)
sys.stdin.readline()
sbc = ("127.0.0.1", port)
prev = None
def send(plain, rtcp):
    global prev
    p = tx.protect_rtcp(plain) if rtcp else tx.protect(plain)
    bad = bytearray(p)
    bad[-1] ^= 1
    attacker.sendto(bytes(bad), sbc)          # forged tag, before the genuine packet
    peer.sendto(p, sbc)
    if prev is not None:
        attacker.sendto(prev, sbc)            # replay of the previous genuine packet
    prev = p
for seq in range(count):
    hdr = struct.pack("!BBHII", 0x80, 0, 2000 + seq, seq * 160, 0x50594C53)
    send(hdr + bytes([seq]) * 160, False)
    back = rx.unprotect(peer.recv(2048))
    s, ssrc = struct.unpack("!HxxxxI", back[2:12])
    print("ECHO %d %08x %s %d" % (s, ssrc, back[12:16].hex(), len(back) - 12), flush=True)
sr = struct.pack("!BBHIQIII", 0x80, 200, 6, 0x50594C53, 0x2222222222222222, 160, count, 800)
send(sr, True)
back = rx.unprotect_rtcp(peer.recv(2048))
print("RTCPECHO %d %08x %d" % (back[1], struct.unpack("!I", back[4:8])[0], len(back)), flush=True)
got = 0
try:
    while True:
        attacker.recv(2048)
        got += 1
except BlockingIOError:
    pass
print("ATTACKER_GOT %d" % got, flush=True)
"#;

/// The SSRC our echo uses ("SBC!").
const OUR_SSRC: u32 = 0x5342_4321;
const PACKETS: usize = 5;

fn venv_python() -> PathBuf {
    common::venv_python(
        "aiortc-venv",
        "tests/dtls_requirements.txt",
        "aiortc, pylibsrtp",
    )
}

/// A Python peer.
type Peer = common::LinePeer;

/// Writes `script` as `name` and runs it with `args` (stdin piped for `go`).
fn spawn_script(python: &Path, name: &str, script: &str, args: &[String]) -> Peer {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, script).unwrap();
    Peer::spawn(
        Command::new(python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped()),
    )
}

/// The relay stand-in: feeds the leg from its socket, sends what it queues, and echoes every
/// decrypted packet (our SSRC, re-protected) to `destination()`. Runs until `done` or the
/// deadline. Returns the leg's events.
fn run_leg(
    leg: &mut SecureLeg,
    sock: &UdpSocket,
    peer: &mut Peer,
    deadline: Duration,
    tick: &mut dyn FnMut(&SecureLeg),
    done: &dyn Fn(&Peer) -> bool,
) -> Vec<SecureEvent> {
    let end = Instant::now() + deadline;
    let mut events = Vec::new();
    let mut buf = [0u8; 4096];
    // After `done`, 300 ms more without `tick` so that everything sent is processed.
    let mut finish: Option<Instant> = None;
    while Instant::now() < end && finish.is_none_or(|f| Instant::now() < f) {
        peer.poll();
        if finish.is_none() && done(peer) {
            finish = Some(Instant::now() + Duration::from_millis(300));
        }
        if finish.is_none() {
            tick(leg);
        }
        let now = Instant::now();
        if leg.poll_timeout().is_some_and(|t| now >= t) {
            leg.handle_timeout(now);
        }
        while let Some((to, d)) = leg.poll_transmit() {
            sock.send_to(&d, to).unwrap();
        }
        events.extend(std::iter::from_fn(|| leg.poll_event()));
        let Ok((n, src)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Inbound::Media { mut plain, .. } = leg.handle_inbound(Instant::now(), src, &buf[..n])
        {
            // The "other leg" echoes under its own SSRC (RTP bytes 8..12, RTCP 4..8).
            let at = if (192..=223).contains(&plain[1]) {
                4
            } else {
                8
            };
            plain[at..at + 4].copy_from_slice(&OUR_SSRC.to_be_bytes());
            if let (Some(out), Some(to)) = (leg.protect_outbound(&plain), leg.destination()) {
                sock.send_to(&out, to).unwrap();
            }
        }
    }
    events.extend(std::iter::from_fn(|| leg.poll_event()));
    events
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s
}

fn check_echoes(peer: &Peer, what: &str, first_seq: usize) {
    let out = peer.output();
    let echoes = peer.lines_with("ECHO ");
    assert_eq!(echoes.len(), PACKETS, "{what}:\n{out}");
    for (i, line) in echoes.iter().enumerate() {
        let b = format!("{i:02x}");
        assert_eq!(
            *line,
            format!("{} {OUR_SSRC:08x} {b}{b}{b}{b} 160", first_seq + i),
            "{what}"
        );
    }
    assert_eq!(
        peer.lines_with("RTCPECHO "),
        vec![format!("200 {OUR_SSRC:08x} 28")],
        "{what}:\n{out}"
    );
}

/// One aiortc call; `aiortc_role` is what the `a=setup` exchange gave aiortc.
fn aiortc_call(aiortc_role: Role, profile: SrtpProfile) {
    let what = format!("aiortc {aiortc_role:?} / {profile:?}");
    let python = venv_python();
    let sock = bind();
    let port = sock.local_addr().unwrap().port();
    let attacker = bind();
    let attacker_addr = attacker.local_addr().unwrap();
    let leg_cert =
        Arc::new(DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap());
    let (ufrag, pwd) = ("SBCs", "sbc-secure-leg-ice-password-0123");
    let sdp_fp = leg_cert.fingerprint().to_sdp();
    let hex = sdp_fp.split_once(' ').map(|(_, h)| h).unwrap_or_default();
    let mut peer = spawn_script(
        &python,
        "secure_aiortc_peer.py",
        DTLS_PEER_PY,
        &[
            port.to_string(),
            ufrag.into(),
            pwd.into(),
            hex.into(),
            match aiortc_role {
                Role::Client => "client".into(),
                Role::Server => "server".into(),
            },
            PACKETS.to_string(),
        ],
    );
    let local = peer.wait_line("LOCAL ", Duration::from_secs(20));
    let mut f = local.split(' ');
    let (their_ufrag, their_pwd, their_hex) = (
        f.next().unwrap().to_owned(),
        f.next().unwrap().to_owned(),
        f.next().unwrap().to_owned(),
    );
    let config = SecureConfig {
        dtls: DtlsConfig {
            srtp_profiles: vec![profile],
            ..DtlsConfig::default()
        },
        ..SecureConfig::default()
    };
    let mut leg = SecureLeg::with_config(
        LegSecurity::DtlsSrtp {
            role: aiortc_role.opposite(),
            certificate: Arc::clone(&leg_cert),
            remote_fingerprints: vec![
                Fingerprint::parse_sdp(&format!("sha-256 {their_hex}")).unwrap()
            ],
            ice: Some(IceCredentials {
                local_ufrag: ufrag.into(),
                local_pwd: pwd.into(),
                remote_ufrag: their_ufrag,
                remote_pwd: their_pwd,
            }),
        },
        None,
        Instant::now(),
        &config,
    )
    .unwrap();

    // The attacker: ClientHellos (each with its own certificate and random) from its own
    // port: three before ICE starts, then every 5 ms, and at every turn of the loop while
    // the legitimate handshake is in progress.
    let leg_addr: SocketAddr = sock.local_addr().unwrap();
    let hellos: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let cert =
                DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(60)).unwrap();
            let mut ep = DtlsEndpoint::new(
                Role::Client,
                &cert,
                [leg_cert.fingerprint().clone()],
                &DtlsConfig::default(),
                Instant::now(),
            )
            .unwrap();
            ep.poll_transmit().unwrap()
        })
        .collect();
    let mut sent = 0usize;
    for _ in 0..3 {
        attacker.send_to(&hellos[sent % 4], leg_addr).unwrap();
        sent += 1;
    }
    peer.go();
    let mut during = 0usize;
    let mut last_hello = Instant::now();
    let mut tick = |leg: &SecureLeg| {
        let handshaking = leg.dtls_stats().is_some_and(|d| d.datagrams_in > 0) && !leg.is_ready();
        if handshaking || last_hello.elapsed() >= Duration::from_millis(5) {
            attacker.send_to(&hellos[sent % 4], leg_addr).unwrap();
            sent += 1;
            during += usize::from(handshaking);
            last_hello = Instant::now();
        }
    };
    let events = run_leg(
        &mut leg,
        &sock,
        &mut peer,
        Duration::from_secs(45),
        &mut tick,
        &|p: &Peer| {
            !p.lines_with("RTCPECHO ").is_empty()
                || p.seen.iter().any(|l| l.starts_with("DTLS failed"))
        },
    );
    std::thread::sleep(Duration::from_millis(100));
    peer.poll();
    let out = peer.output();
    assert!(out.contains("ICE completed"), "{what}:\n{out}");
    assert!(out.contains("DTLS connected"), "{what}:\n{out}");
    assert!(
        events.contains(&SecureEvent::DtlsConnected),
        "{what}: {events:?}\n{out}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SecureEvent::IceSelected(a) if a.port() != attacker_addr.port())),
        "{what}: {events:?}"
    );
    check_echoes(&peer, &what, 1000);
    let st = leg.stats();
    assert_eq!(st.srtp_in, PACKETS as u64, "{what}: {st:?}");
    assert_eq!(st.srtcp_in, 1, "{what}: {st:?}");
    assert_eq!(
        st.auth_failures + st.replays + st.malformed,
        0,
        "{what}: {st:?}"
    );
    eprintln!("{what}: attacker hellos sent {sent} ({during} during the handshake); {st:?}");
    assert!(
        during >= 1,
        "{what}: no attacker hello during the handshake ({sent} sent)"
    );
    // Every attacker datagram was a ClientHello, and every one was rejected.
    assert_eq!(st.hello_rejected, sent as u64, "{what}: {st:?}");
    assert_eq!(st.dtls_rejected, sent as u64, "{what}: {st:?}");
    let rejected_events = events
        .iter()
        .filter(|e| **e == SecureEvent::HelloRejected(attacker_addr))
        .count();
    assert_eq!(rejected_events, sent, "{what}");
    attacker.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        attacker.recv_from(&mut buf).is_err(),
        "{what}: the attacker received something"
    );
}

#[test]
fn aiortc_dtls_ice_with_hello_race_attacker_aiortc_client() {
    // aiortc offered actpass, we answered passive (or we offered actpass and it answered
    // active): aiortc sends the ClientHello, which is exactly where S-23 bites.
    aiortc_call(Role::Client, SrtpProfile::AesCm128HmacSha1_80);
    aiortc_call(Role::Client, SrtpProfile::AeadAes128Gcm);
}

#[test]
fn aiortc_dtls_ice_with_hello_race_attacker_aiortc_server() {
    aiortc_call(Role::Server, SrtpProfile::AeadAes128Gcm);
}

fn sdes_call(suite: SrtpProfile) {
    let what = format!("SDES {suite:?}");
    let python = venv_python();
    let sock = bind();
    let port = sock.local_addr().unwrap().port();
    let ours = SdesCrypto::generate(1, suite);
    let mut peer = spawn_script(
        &python,
        "secure_sdes_peer.py",
        SDES_PEER_PY,
        &[port.to_string(), ours.to_attr_value(), PACKETS.to_string()],
    );
    let theirs = SdesCrypto::parse(&peer.wait_line("CRYPTO ", Duration::from_secs(20))).unwrap();
    assert_eq!(theirs.suite, suite);
    let addrs = peer.wait_line("ADDRS ", Duration::from_secs(5));
    let mut ports = addrs.split(' ').map(|p| p.parse::<u16>().unwrap());
    let peer_addr = SocketAddr::from(([127, 0, 0, 1], ports.next().unwrap()));
    let attacker_addr = SocketAddr::from(([127, 0, 0, 1], ports.next().unwrap()));
    // No SDP address: the latch is learned from authenticated media only.
    let mut leg = SecureLeg::new(
        LegSecurity::Sdes {
            local: ours,
            remote: theirs,
        },
        None,
        Instant::now(),
    )
    .unwrap();
    peer.go();
    let events = run_leg(
        &mut leg,
        &sock,
        &mut peer,
        Duration::from_secs(20),
        &mut |_: &SecureLeg| {},
        &|p: &Peer| !p.lines_with("ATTACKER_GOT ").is_empty(),
    );
    let out = peer.output();
    check_echoes(&peer, &what, 2000);
    assert_eq!(
        peer.lines_with("ATTACKER_GOT "),
        vec!["0"],
        "{what}:\n{out}"
    );
    assert_eq!(leg.destination(), Some(peer_addr), "{what}");
    assert_eq!(events, vec![SecureEvent::Latched(peer_addr)], "{what}");
    assert_ne!(peer_addr, attacker_addr);
    let st = leg.stats();
    // Per genuine packet (5 RTP + 1 RTCP) one forged copy before it; a replay after each but
    // the first.
    assert_eq!(st.srtp_in, PACKETS as u64, "{what}: {st:?}");
    assert_eq!(st.srtcp_in, 1, "{what}: {st:?}");
    assert_eq!(st.auth_failures, PACKETS as u64 + 1, "{what}: {st:?}");
    assert_eq!(st.replays, PACKETS as u64, "{what}: {st:?}");
    assert_eq!(st.latch_moves, 1, "{what}: {st:?}");
}

#[test]
fn sdes_with_libsrtp_peer_and_forging_attacker() {
    sdes_call(SrtpProfile::AesCm128HmacSha1_80);
    sdes_call(SrtpProfile::AeadAes128Gcm);
}
