//! The ICE-lite agent against a real full ICE agent: aiortc's `aioice` (PyPI, pinned in
//! `tests/ice_requirements.txt`), on loopback.
//!
//! The test installs aioice into a venv under the cargo target dir (reused across runs; it
//! fails with the pip output if the install fails), starts a Python peer that gathers a
//! loopback host candidate and connects as the controlling agent to our UDP socket, which
//! runs `IceLiteAgent` (sans-IO) in a plain loop. Checked:
//! - aioice's checks are answered (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT are
//!   verified by aioice), first before our side knows the remote credentials (S-18), then
//!   with them: aioice's consent checks (interval shortened to 0.3 s) keep succeeding for
//!   1.5 s after it connected, or aioice would close the connection;
//! - USE-CANDIDATE nominates aioice's address, aioice's `connect()` completes, and a datagram
//!   it sends is echoed back to the nominated address only;
//! - once the peer is gone its consent expires (consent lifetime shortened to 1 s for the
//!   test; the 30 s default is covered in `ice_stun.rs` with synthetic time) and the
//!   selection is cleared.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use media_engine::ice::{stun, IceEvent, IceLiteAgent};

const PEER_PY: &str = r#"
import asyncio, sys
import aioice
import aioice.ice

# Loopback only (the house rules keep test traffic on loopback); aioice skips 127.0.0.1
# by default.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
# Consent checks (RFC 7675) every 0.3 s instead of 5 s, so the test sees several quickly.
aioice.ice.CONSENT_INTERVAL = 0.3

async def main():
    port, ufrag, pwd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    conn = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await conn.gather_candidates()
    local = conn.local_candidates[0]
    print("LOCAL %s %d %s" % (local.host, local.port, conn.local_username), flush=True)
    conn.remote_username = ufrag
    conn.remote_password = pwd
    await conn.add_remote_candidate(aioice.Candidate(
        foundation="1", component=1, transport="udp", priority=2130706431,
        host="127.0.0.1", port=port, type="host"))
    await conn.add_remote_candidate(None)
    await asyncio.wait_for(conn.connect(), 15)
    print("CONNECTED", flush=True)
    # Let consent checks run for a while; aioice closes the connection if they fail.
    await asyncio.sleep(1.5)
    await conn.send(b"media-ping")
    data = await asyncio.wait_for(conn.recv(), 5)
    print("ECHO %s" % data.decode(), flush=True)
    await conn.close()

asyncio.run(main())
"#;

fn venv_python() -> PathBuf {
    common::venv_python("aioice-venv", "tests/ice_requirements.txt", "aioice")
}

#[test]
fn aioice_connects_nominates_and_loses_consent() {
    let python = venv_python();
    let script = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aioice_peer.py");
    std::fs::write(&script, PEER_PY).unwrap();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let (ufrag, pwd) = ("SBCl", "sbc-lite-password-0123456789");
    let mut agent = IceLiteAgent::new(ufrag, pwd);

    let mut child = Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .arg(ufrag)
        .arg(pwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut peer_addr: Option<SocketAddr> = None;
    let mut peer_ufrag: Option<String> = None;
    let mut nominated = None;
    let mut validated = Vec::new();
    let mut echoed = false;
    let mut got_echo = false;
    let mut answered_before_creds = 0;
    let mut answered_after_creds = 0;
    // aioice's ufrag, as its SDP would carry it.
    let mut sdp_ufrag: Option<String> = None;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && !got_echo {
        while let Ok(line) = lines.try_recv() {
            if let Some(rest) = line.strip_prefix("LOCAL ") {
                let f: Vec<&str> = rest.split(' ').collect();
                peer_addr = format!("{}:{}", f[0], f[1]).parse().ok();
                sdp_ufrag = Some(f[2].to_owned());
            } else if let Some(data) = line.strip_prefix("ECHO ") {
                assert_eq!(data, "media-ping");
                got_echo = true;
            }
        }
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let now = Instant::now();
        let data = &buf[..n];
        if stun::is_stun(data) {
            // The "SDP answer" with aioice's credentials is applied only after one check was
            // answered without them (S-18: STUN before the answer).
            if peer_ufrag.is_none() && answered_before_creds > 0 {
                if let Some(u) = &sdp_ufrag {
                    agent.set_remote_credentials(u, "unused-by-a-lite-agent");
                    peer_ufrag = Some(u.clone());
                }
            }
            let out = agent.handle_stun(now, src, data);
            assert_eq!(out.dropped, None, "aioice's check from {src} was dropped");
            if let Some(resp) = out.response {
                if peer_ufrag.is_none() {
                    answered_before_creds += 1;
                } else {
                    answered_after_creds += 1;
                }
                sock.send_to(&resp, src).unwrap();
            }
            for e in agent.drain_events() {
                match e {
                    IceEvent::Validated(a) => validated.push(a),
                    IceEvent::Nominated(a) => nominated = Some(a),
                    IceEvent::ConsentExpired(a) => panic!("consent expired early for {a}"),
                }
            }
        } else {
            // Media: relayed back only to the nominated, consent-fresh address.
            assert_eq!(
                agent.selected(),
                Some(src),
                "media from a non-nominated source"
            );
            assert!(agent.is_validated(now, src));
            sock.send_to(data, src).unwrap();
            echoed = true;
        }
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        got_echo && echoed,
        "aioice did not complete (exit {status}):\n{err}"
    );
    assert!(status.success(), "aioice peer failed: {err}");
    let peer_addr = peer_addr.expect("aioice printed its candidate");
    assert_eq!(nominated, Some(peer_addr));
    assert_eq!(validated, vec![peer_addr]);
    assert!(answered_before_creds >= 1);
    assert!(
        answered_after_creds >= 2,
        "consent checks answered with the remote credentials set: {answered_after_creds}"
    );
    let stats = agent.stats();
    assert!(stats.checks_answered >= 2, "{stats:?}");
    assert_eq!(
        stats.dropped_bad_integrity + stats.dropped_unknown_username,
        0
    );

    // The peer is gone: consent expires, the selection is cleared.
    agent.set_consent_timeout(Duration::from_secs(1));
    let expiry_deadline = Instant::now() + Duration::from_secs(5);
    let mut expired = None;
    while Instant::now() < expiry_deadline && expired.is_none() {
        let wake = agent.poll_timeout().expect("a consent timer is pending");
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
        agent.handle_timeout(Instant::now());
        expired = agent.drain_events().find_map(|e| match e {
            IceEvent::ConsentExpired(a) => Some(a),
            _ => None,
        });
    }
    assert_eq!(expired, Some(peer_addr));
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.poll_timeout(), None);
}
