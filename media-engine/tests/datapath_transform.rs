//! Transformed (secure) legs in the userspace relay, on real loopback sockets, with a toy
//! transform standing in for SRTP: the first byte of the plain packet is kept, the rest is
//! XORed with a key and a one-byte check is appended. Shows the relay's contract: only
//! what the transform accepts reaches the plain leg (with the transform's source), packets
//! toward the secure leg are protected and go to the transform's destination, the
//! transform's own datagrams and timers are served, and a secure pair is never offloaded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_engine::datapath::{
    Datapath, DatapathConfig, DatapathKind, FlowPairSpec, LearnPolicy, LegSpec, LegTransform,
    RelayIo, TransformInbound,
};

const KEY: u8 = 0x5a;

fn check(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn protect(plain: &[u8]) -> Vec<u8> {
    let mut v = plain.to_vec();
    for b in v.iter_mut().skip(1) {
        *b ^= KEY;
    }
    let c = check(&v);
    v.push(c);
    v
}

#[derive(Default)]
struct Seen {
    timeouts: u32,
    rejected: u32,
}

struct Toy {
    dest: Option<SocketAddr>,
    pending: Vec<(SocketAddr, Vec<u8>)>,
    next_timer: Instant,
    seen: Arc<Mutex<Seen>>,
}

impl LegTransform for Toy {
    fn inbound(&mut self, _now: Instant, src: SocketAddr, data: &[u8]) -> TransformInbound {
        if data.first() == Some(&0) {
            // "STUN": answered from the leg's socket, never relayed.
            self.pending.push((src, b"\x01pong".to_vec()));
            return TransformInbound::Consumed;
        }
        let Some((tag, body)) = data.split_last() else {
            return TransformInbound::Dropped;
        };
        if body.is_empty() || check(body) != *tag {
            self.seen.lock().unwrap().rejected += 1;
            return TransformInbound::Dropped;
        }
        let mut plain = body.to_vec();
        for b in plain.iter_mut().skip(1) {
            *b ^= KEY;
        }
        // Authenticated: media to this party goes where it comes from.
        self.dest = Some(src);
        TransformInbound::Media { plain, source: src }
    }
    fn outbound(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        Some(protect(plain))
    }
    fn destination(&self) -> Option<SocketAddr> {
        self.dest
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.pending.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_timer)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.seen.lock().unwrap().timeouts += 1;
        self.next_timer = now + Duration::from_millis(100);
    }
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    p.extend(std::iter::repeat_n(0xd5u8, 40));
    p
}

fn sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn free_local() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn recv(s: &UdpSocket) -> Option<(SocketAddr, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (from, buf[..n].to_vec()))
}

#[test]
fn secure_leg_is_decrypted_authenticated_and_protected_both_ways() {
    let dp = Datapath::start(
        &DatapathConfig {
            kind: DatapathKind::Userspace,
            ..DatapathConfig::default()
        },
        None,
    )
    .unwrap();
    let (secure_party, plain_party, attacker) = (sock(), sock(), sock());
    let (ra, rb) = (free_local(), free_local());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let toy = Toy {
        dest: None,
        pending: Vec::new(),
        next_timer: Instant::now(),
        seen: seen.clone(),
    };
    let spec = FlowPairSpec {
        a: LegSpec {
            local: ra,
            // The SDP address is not trusted for a secure leg: the transform decides.
            peer: None,
            learn: LearnPolicy::Off,
        },
        b: LegSpec {
            local: rb,
            peer: Some(plain_party.local_addr().unwrap()),
            learn: LearnPolicy::Off,
        },
        rtcp: None,
    };
    let id = dp
        .create_pair_with(spec, [Some(Box::new(toy)), None])
        .unwrap();

    // Plain toward the secure party before it authenticated anywhere: no destination, dropped.
    plain_party.send_to(&rtp(1), rb).unwrap();
    secure_party
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        recv(&secure_party).is_none(),
        "nothing without a destination"
    );

    // Protected media from the secure party arrives plain, from the relay's b socket.
    for seq in 10..15 {
        secure_party.send_to(&protect(&rtp(seq)), ra).unwrap();
        let (from, got) = recv(&plain_party).expect("relayed to the plain party");
        assert_eq!(from, rb);
        assert_eq!(got, rtp(seq));
    }
    // And the reverse is protected, toward the authenticated source.
    secure_party
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for seq in 20..25 {
        plain_party.send_to(&rtp(seq), rb).unwrap();
        let (from, got) = recv(&secure_party).expect("relayed to the secure party");
        assert_eq!(from, ra);
        assert_eq!(got, protect(&rtp(seq)));
    }

    // An attacker with a bad check: not relayed, and media keeps going to the real party.
    let mut forged = protect(&rtp(30));
    *forged.last_mut().unwrap() ^= 1;
    attacker.send_to(&forged, ra).unwrap();
    plain_party
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(recv(&plain_party).is_none(), "forged packet relayed");
    plain_party.send_to(&rtp(31), rb).unwrap();
    let (_, got) = recv(&secure_party).expect("still to the real party");
    assert_eq!(got, protect(&rtp(31)));
    attacker
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(recv(&attacker).is_none(), "the attacker got media");

    // The transform's own datagrams go out of the secure leg's socket.
    secure_party.send_to(b"\x00ping", ra).unwrap();
    let (from, got) = recv(&secure_party).expect("control answer");
    assert_eq!((from, got.as_slice()), (ra, &b"\x01pong"[..]));

    // Timers run; rejected packets were counted by the transform only.
    std::thread::sleep(Duration::from_millis(300));
    let s = seen.lock().unwrap();
    assert!(s.timeouts >= 2, "timeouts: {}", s.timeouts);
    assert_eq!(s.rejected, 1);
    drop(s);

    let c = dp.pair(id).unwrap();
    assert_eq!(c.a_to_b.packets, 5, "decrypted packets relayed a->b");
    assert_eq!(
        c.b_to_a.packets, 6,
        "packets relayed b->a (the one before auth dropped)"
    );

    // The secure party moves (authenticated from a new address, e.g. NAT rebinding): media
    // follows it, and with io_uring the relay sends to it from a socket connected there.
    let moved = sock();
    moved.send_to(&protect(&rtp(40)), ra).unwrap();
    plain_party
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(
        recv(&plain_party).expect("relayed after the move").1,
        rtp(40)
    );
    let before = dp.userspace_stats().connected_sends;
    for seq in 41..46 {
        plain_party.send_to(&rtp(seq), rb).unwrap();
        let (from, got) = recv(&moved).expect("media follows the authenticated move");
        assert_eq!((from, got), (ra, protect(&rtp(seq))));
    }
    let connected = dp.userspace_stats().connected_sends - before;
    match dp.relay_io() {
        RelayIo::IoUring => assert_eq!(connected, 5, "sent from the connected socket"),
        _ => assert_eq!(connected, 0),
    }
    assert!(recv(&secure_party).is_none(), "the old address got media");
    assert!(!c.a_to_b_in_xdp && !c.b_to_a_in_xdp);
    assert!(dp.remove_pair(id).is_some());
}
