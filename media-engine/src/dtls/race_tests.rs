//! The ClientHello race from the *accepted* address (S-23): forged, stray or bogus
//! ClientHellos reaching a server endpoint before, during and after the legitimate handshake,
//! sans-IO with synthetic time. Source filtering (`crate::secure`) keeps other addresses
//! out; these hellos come from the address the peer validated, so only the endpoint can
//! tell them apart.
//!
//! Every datagram the server sends goes to the accepted address, i.e. to the legitimate
//! client, as it would on the wire: the HelloVerifyRequests provoked by forged hellos reach
//! the real client too.

use std::time::{Duration, Instant, SystemTime};

use super::{
    DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsState, FailureReason, Role,
    MAX_HANDSHAKE_ATTEMPTS, MIN_RESTART_INTERVAL,
};
use crate::srtp::SrtpProfile;

fn cert() -> DtlsCertificate {
    DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap()
}

/// Where the legitimate exchange is when the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the `n`th datagram (counting both directions) goes from client to server.
    ToServer(usize),
    /// Before the `n`th datagram goes from server to client.
    ToClient(usize),
    /// Time moved on (retransmission timers) and the timeouts were handled.
    Tick,
}

/// Lets a test inject datagrams into the server at any point.
type Hook<'a> = &'a mut dyn FnMut(At, &[u8], &mut DtlsEndpoint, Instant);

struct Race {
    server: DtlsEndpoint,
    client: DtlsEndpoint,
    server_events: Vec<DtlsEvent>,
    client_events: Vec<DtlsEvent>,
    start: Instant,
    now: Instant,
    delivered: usize,
    /// The client's ClientHellos reach the server in this many fragments (1: whole).
    hello_fragments: usize,
}

impl Race {
    fn new(server_cert: &DtlsCertificate, client_cert: &DtlsCertificate, start: Instant) -> Self {
        let cfg = DtlsConfig::default();
        Race {
            server: DtlsEndpoint::new(
                Role::Server,
                server_cert,
                [client_cert.fingerprint().clone()],
                &cfg,
                start,
            )
            .unwrap(),
            client: DtlsEndpoint::new(
                Role::Client,
                client_cert,
                [server_cert.fingerprint().clone()],
                &cfg,
                start,
            )
            .unwrap(),
            server_events: Vec::new(),
            client_events: Vec::new(),
            start,
            now: start,
            delivered: 0,
            hello_fragments: 1,
        }
    }

    /// Runs the legitimate exchange until both ends have an outcome and nothing moves, or
    /// the synthetic clock passes `limit`. Bounded in steps.
    fn run(&mut self, limit: Duration, hook: Hook<'_>) {
        for _ in 0..20_000 {
            let mut moved = false;
            assert!(self.delivered < 100_000, "runaway exchange");
            while let Some(d) = self.client.poll_transmit() {
                moved = true;
                hook(At::ToServer(self.delivered), &d, &mut self.server, self.now);
                self.delivered += 1;
                let is_hello = d.first() == Some(&22) && d.get(13) == Some(&1);
                if is_hello && self.hello_fragments > 1 {
                    for f in super::hello::fragments(&d, self.hello_fragments) {
                        self.server.handle_datagram(&f, self.now);
                    }
                } else {
                    self.server.handle_datagram(&d, self.now);
                }
            }
            while let Some(d) = self.server.poll_transmit() {
                moved = true;
                assert!(self.delivered < 100_000, "runaway exchange");
                hook(At::ToClient(self.delivered), &d, &mut self.server, self.now);
                self.delivered += 1;
                self.client.handle_datagram(&d, self.now);
            }
            self.server_events
                .extend(std::iter::from_fn(|| self.server.poll_event()));
            self.client_events
                .extend(std::iter::from_fn(|| self.client.poll_event()));
            let settled = |s: DtlsState| s != DtlsState::Handshaking;
            if !moved && settled(self.client.state()) && settled(self.server.state()) {
                return;
            }
            if !moved {
                let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else { return };
                self.now = self.now.max(next);
                if self.now - self.start > limit {
                    return;
                }
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
                hook(At::Tick, &[], &mut self.server, self.now);
            }
        }
    }

    /// Both ends connected with the same keys, the client exactly once, the server last.
    fn assert_connected(&self, what: &str) {
        let client_keys = match self.client_events.as_slice() {
            [DtlsEvent::Connected(k)] => k,
            other => panic!(
                "{what}: client events {other:?} (server {:?})",
                self.server_events
            ),
        };
        let server_keys = match self.server_events.last() {
            Some(DtlsEvent::Connected(k)) => k,
            _ => panic!("{what}: server events {:?}", self.server_events),
        };
        assert_eq!(client_keys.client_write, server_keys.client_write, "{what}");
        assert_eq!(client_keys.server_write, server_keys.server_write, "{what}");
        assert_eq!(client_keys.profile, server_keys.profile, "{what}");
        assert_eq!(self.client.state(), DtlsState::Connected, "{what}");
        assert_eq!(self.server.state(), DtlsState::Connected, "{what}");
        assert_eq!(
            self.server_events
                .iter()
                .filter(|e| matches!(e, DtlsEvent::Connected(_)))
                .count(),
            1,
            "{what}: {:?}",
            self.server_events
        );
    }
}

/// Bytes 5..11 of a DTLS record header: the 48-bit sequence number.
fn set_record_seq(d: &mut [u8], seq: u64) {
    d[5..11].copy_from_slice(&seq.to_be_bytes()[2..]);
}

/// The first flight (a cookieless ClientHello) of an unrelated client, with its own random
/// and certificate, its record sequence number set to `seq`.
fn stranger_hello(server_cert: &DtlsCertificate, cfg: &DtlsConfig, seq: u64) -> Vec<u8> {
    let mut c = DtlsEndpoint::new(
        Role::Client,
        &cert(),
        [server_cert.fingerprint().clone()],
        cfg,
        Instant::now(),
    )
    .unwrap();
    let mut d = c.poll_transmit().unwrap();
    set_record_seq(&mut d, seq);
    d
}

/// A syntactically valid hello the server cannot accept (an SRTP profile it does not offer).
fn bogus_hello(server_cert: &DtlsCertificate, seq: u64) -> Vec<u8> {
    let cfg = DtlsConfig {
        srtp_profiles: vec![SrtpProfile::AesCm128HmacSha1_32],
        ..DtlsConfig::default()
    };
    stranger_hello(server_cert, &cfg, seq)
}

/// `hello` (one record, one unfragmented ClientHello) rebuilt with `cookie`, handshake
/// message sequence `msg_seq` and record sequence `seq`.
fn with_cookie(hello: &[u8], cookie: &[u8], msg_seq: u16, seq: u64) -> Vec<u8> {
    let body = &hello[13 + 12..];
    let sid_at = 2 + 32;
    let cookie_at = sid_at + 1 + usize::from(body[sid_at]);
    let rest = cookie_at + 1 + usize::from(body[cookie_at]);
    let mut new_body = body[..cookie_at].to_vec();
    new_body.push(u8::try_from(cookie.len()).unwrap());
    new_body.extend_from_slice(cookie);
    new_body.extend_from_slice(&body[rest..]);
    let len = u32::try_from(new_body.len()).unwrap().to_be_bytes();
    let mut hs = vec![1, len[1], len[2], len[3]];
    hs.extend_from_slice(&msg_seq.to_be_bytes());
    hs.extend_from_slice(&[0, 0, 0, len[1], len[2], len[3]]);
    hs.extend_from_slice(&new_body);
    let mut d = hello[..13].to_vec();
    d[11..13].copy_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
    d.extend_from_slice(&hs);
    set_record_seq(&mut d, seq);
    d
}

/// The cookie of a HelloVerifyRequest datagram (one record), if it is one.
fn hvr_cookie(d: &[u8]) -> Option<Vec<u8>> {
    if d.len() < 13 + 12 + 3 || d[0] != 22 || d[13] != 3 {
        return None;
    }
    let body = &d[13 + 12..];
    let n = usize::from(body[2]);
    body.get(3..3 + n).map(<[u8]>::to_vec)
}

const LIMIT: Duration = Duration::from_secs(25);

#[test]
fn forged_hello_before_the_client_starts() {
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    // The client's first flight is held back: the forgery arrives first, and whatever the
    // server answers goes to the client's address before the client has said anything.
    let first = race.client.poll_transmit().unwrap();
    race.server
        .handle_datagram(&stranger_hello(&cs, &DtlsConfig::default(), 0), t0);
    while let Some(d) = race.server.poll_transmit() {
        race.client.handle_datagram(&d, t0);
    }
    race.server.handle_datagram(&first, t0);
    race.run(LIMIT, &mut |_, _, _, _| {});
    race.assert_connected("forged hello first");
}

#[test]
fn forged_hello_overtakes_the_first_flight() {
    // The client sent its ClientHello; a forgery from its address reaches the server first
    // (record sequence 0, like the client's), so the server's answer is to the forgery.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let forged = stranger_hello(&cs, &DtlsConfig::default(), 0);
    race.run(LIMIT, &mut |at, _, server, now| {
        if at == At::ToServer(0) {
            server.handle_datagram(&forged, now);
        }
    });
    race.assert_connected("forged hello overtakes");
}

#[test]
fn forged_hello_right_after_the_first_flight() {
    // The forgery follows the client's ClientHello (another record sequence number) before
    // the server's answer has reached the client.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let forged = stranger_hello(&cs, &DtlsConfig::default(), 5);
    race.run(LIMIT, &mut |at, _, server, now| {
        if at == At::ToClient(1) {
            server.handle_datagram(&forged, now);
        }
    });
    race.assert_connected("forged hello after the first flight");
}

#[test]
fn forged_second_hello_with_a_guessed_cookie() {
    // After the HelloVerifyRequest, a forged ClientHello in the second ClientHello's place
    // (message sequence 1) with a made-up cookie, before the real one.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let forged = with_cookie(
        &stranger_hello(&cs, &DtlsConfig::default(), 0),
        &[0x42; 20],
        1,
        9,
    );
    race.run(LIMIT, &mut |at, d, server, now| {
        if matches!(at, At::ToServer(_)) && d.get(13) == Some(&1) && hvr_cookie(d).is_none() {
            server.handle_datagram(&forged, now);
        }
    });
    race.assert_connected("forged second hello");
}

#[test]
fn bogus_hello_before_and_during_the_handshake() {
    // A valid-looking hello the server would refuse (no common SRTP profile): it must not
    // fail the association the real client is about to use.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    race.server.handle_datagram(&bogus_hello(&cs, 3), t0);
    let mut seq = 100;
    race.run(LIMIT, &mut |at, d, server, now| {
        // Not before the answers to the forgeries themselves (they would never end).
        if matches!(at, At::ToServer(_) | At::ToClient(_)) && hvr_cookie(d).is_none() {
            seq += 1;
            server.handle_datagram(&bogus_hello(&cs, seq), now);
        }
    });
    race.assert_connected("bogus hellos");
}

#[test]
fn forged_hellos_at_every_step() {
    // A forged hello (fresh random, fresh record sequence) before every datagram of the
    // legitimate handshake in either direction and at every timer tick.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let mut seq = 1000;
    race.run(LIMIT, &mut |_, d, server, now| {
        if hvr_cookie(d).is_none() {
            seq += 1;
            server.handle_datagram(&stranger_hello(&cs, &DtlsConfig::default(), seq), now);
        }
    });
    race.assert_connected("forged hellos at every step");
}

#[test]
fn forged_hello_at_each_single_step() {
    // One forgery, at each position of the handshake in turn (datagram index and both
    // directions), with the client's own first record sequence number and with another.
    for seq in [0u64, 77] {
        for k in 0..8 {
            let (cs, cc) = (cert(), cert());
            let t0 = Instant::now();
            let mut race = Race::new(&cs, &cc, t0);
            let forged = stranger_hello(&cs, &DtlsConfig::default(), seq);
            race.run(LIMIT, &mut |at, _, server, now| {
                if at == At::ToServer(k) || at == At::ToClient(k) {
                    server.handle_datagram(&forged, now);
                }
            });
            race.assert_connected(&format!("forgery before datagram {k}, record seq {seq}"));
        }
    }
}

/// The cookie the server hands out (from its answer to a cookieless hello).
fn server_cookie(
    server: &mut DtlsEndpoint,
    server_cert: &DtlsCertificate,
    now: Instant,
) -> Vec<u8> {
    server.handle_datagram(&stranger_hello(server_cert, &DtlsConfig::default(), 0), now);
    let answer = server.poll_transmit().expect("a HelloVerifyRequest");
    assert!(server.poll_transmit().is_none());
    hvr_cookie(&answer).expect("a HelloVerifyRequest")
}

#[test]
fn forged_hellos_are_answered_statelessly_and_counted() {
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let cookie = server_cookie(&mut race.server, &cs, t0);
    assert_eq!(cookie.len(), 20);
    // Any number of cookieless hellos: one identical answer each, no state, no timer beyond
    // the handshake deadline, nothing handed to the library.
    for seq in 1..50 {
        race.server
            .handle_datagram(&stranger_hello(&cs, &DtlsConfig::default(), seq), t0);
        let answer = race.server.poll_transmit().unwrap();
        assert_eq!(hvr_cookie(&answer), Some(cookie.clone()));
        assert_eq!(&answer[3..11], &[0; 8], "epoch 0, record sequence 0");
    }
    // A stale or guessed cookie: answered the same way, and counted.
    let stale = with_cookie(
        &stranger_hello(&cs, &DtlsConfig::default(), 0),
        &[1; 20],
        1,
        60,
    );
    race.server.handle_datagram(&stale, t0);
    assert!(race.server.poll_transmit().is_some());
    // Half of a fragmented ClientHello: kept for reassembly, not answered.
    let fragment =
        super::hello::fragments(&stranger_hello(&cs, &DtlsConfig::default(), 61), 2).swap_remove(0);
    race.server.handle_datagram(&fragment, t0);
    assert!(race.server.poll_transmit().is_none());
    // A fragment of an implausibly large hello: dropped and counted.
    let mut beyond = fragment.clone();
    beyond[14..17].copy_from_slice(&[0x01, 0, 0]);
    race.server.handle_datagram(&beyond, t0);
    assert!(race.server.poll_transmit().is_none());
    let st = race.server.stats();
    assert_eq!(st.hello_verify_sent, 51);
    assert_eq!(st.hello_drops.bad_cookie, 1);
    assert_eq!(st.hello_drops.unparsable, 1);
    assert_eq!(st.datagrams_in, 0, "nothing reached the library");
    assert_eq!(
        race.server.poll_timeout(),
        Some(t0 + DtlsConfig::default().handshake_timeout)
    );
    // The real client still gets through.
    race.run(LIMIT, &mut |_, _, _, _| {});
    race.assert_connected("after forged hellos");
    assert_eq!(race.server.stats().restarts, 0);
}

#[test]
fn hellos_after_connection_change_nothing() {
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    // The cookie the client was given, as an attacker on the path could see it.
    let mut cookie = Vec::new();
    race.run(LIMIT, &mut |at, d, _, _| {
        if let (At::ToClient(_), Some(c)) = (at, hvr_cookie(d)) {
            cookie = c;
        }
    });
    race.assert_connected("plain handshake");
    assert_eq!(cookie.len(), 20);
    let now = race.now;
    let before = race.server.stats();
    let hellos = [
        stranger_hello(&cs, &DtlsConfig::default(), 500),
        bogus_hello(&cs, 501),
        with_cookie(
            &stranger_hello(&cs, &DtlsConfig::default(), 0),
            &[3; 20],
            1,
            502,
        ),
        with_cookie(
            &stranger_hello(&cs, &DtlsConfig::default(), 0),
            &cookie,
            1,
            503,
        ),
    ];
    for (i, h) in hellos.iter().enumerate() {
        race.server
            .handle_datagram(h, now + Duration::from_secs(i as u64));
        assert!(race.server.poll_transmit().is_none(), "hello {i} answered");
        assert!(
            race.server.poll_event().is_none(),
            "hello {i} made an event"
        );
        assert_eq!(race.server.state(), DtlsState::Connected);
        assert_eq!(race.server.poll_timeout(), None);
    }
    let after = race.server.stats();
    assert_eq!(
        after.hello_drops.after_connect - before.hello_drops.after_connect,
        4
    );
    assert_eq!(after.datagrams_in, before.datagrams_in);
    assert_eq!(after.hello_verify_sent, before.hello_verify_sent);
    // A client endpoint has no use for ClientHellos at all.
    race.client
        .handle_datagram(&stranger_hello(&cs, &DtlsConfig::default(), 9), now);
    assert_eq!(race.client.stats().hello_drops.not_server, 1);
    assert_eq!(race.client.state(), DtlsState::Connected);
}

#[test]
fn failed_handshake_does_not_prevent_a_correct_one() {
    // The first client at the accepted address presents a certificate other than the SDP's
    // (S-22): the server fails that handshake. Then the right client starts a new handshake
    // (RFC 6347 4.2.8) before the deadline: it completes.
    let (cs, cc, wrong) = (cert(), cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    race.client = DtlsEndpoint::new(
        Role::Client,
        &wrong,
        [cs.fingerprint().clone()],
        &DtlsConfig::default(),
        t0,
    )
    .unwrap();
    race.run(LIMIT, &mut |_, _, _, _| {});
    assert!(
        matches!(
            race.server_events.as_slice(),
            [DtlsEvent::Failed(FailureReason::FingerprintMismatch { .. })]
        ),
        "{:?}",
        race.server_events
    );
    assert_eq!(race.server.state(), DtlsState::Failed);
    assert_eq!(race.client.state(), DtlsState::Failed, "told by an alert");
    // Its retransmissions and stray records change nothing.
    race.server.handle_datagram(&[22, 0xfe, 0xfd], race.now);
    assert_eq!(race.server.state(), DtlsState::Failed);
    race.client = DtlsEndpoint::new(
        Role::Client,
        &cc,
        [cs.fingerprint().clone()],
        &DtlsConfig::default(),
        race.now,
    )
    .unwrap();
    race.client_events.clear();
    race.run(LIMIT, &mut |_, _, _, _| {});
    race.assert_connected("second handshake");
    assert_eq!(race.server.stats().restarts, 1);
}

#[test]
fn stalled_handshake_gives_way_to_a_new_one() {
    // A client completes the cookie exchange, then its handshake goes nowhere (it vanished,
    // or it was a stray sender behind the same address). The peer's own new handshake
    // replaces it.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let cookie = server_cookie(&mut race.server, &cs, t0);
    let stray = with_cookie(
        &stranger_hello(&cs, &DtlsConfig::default(), 0),
        &cookie,
        1,
        1,
    );
    race.server.handle_datagram(&stray, t0);
    let flight: Vec<Vec<u8>> = std::iter::from_fn(|| race.server.poll_transmit()).collect();
    assert!(!flight.is_empty(), "the stray's handshake started");
    assert!(race.server.stats().datagrams_in > 0);
    race.run(LIMIT, &mut |_, _, _, _| {});
    race.assert_connected("after a stalled handshake");
    assert_eq!(race.server.stats().restarts, 1);
}

#[test]
fn restarts_are_limited() {
    let cs = cert();
    let t0 = Instant::now();
    let mut server = DtlsEndpoint::new(
        Role::Server,
        &cs,
        [cert().fingerprint().clone()],
        &DtlsConfig::default(),
        t0,
    )
    .unwrap();
    let cookie = server_cookie(&mut server, &cs, t0);
    let verified = |seq| {
        with_cookie(
            &stranger_hello(&cs, &DtlsConfig::default(), 0),
            &cookie,
            1,
            seq,
        )
    };
    // A burst: one handshake starts, the rest are too soon.
    for seq in 1..=20 {
        server.handle_datagram(&verified(seq), t0);
    }
    let st = server.stats();
    assert_eq!((st.restarts, st.hello_drops.restart_limited), (0, 19));
    // Spaced out: restarts until the attempts are spent, then never again.
    let mut now = t0;
    for seq in 21..=40 {
        now += MIN_RESTART_INTERVAL;
        server.handle_datagram(&verified(seq), now);
        while server.poll_transmit().is_some() {}
    }
    let st = server.stats();
    assert_eq!(st.restarts, u64::from(MAX_HANDSHAKE_ATTEMPTS) - 1);
    assert_eq!(
        st.hello_drops.restart_limited,
        19 + 20 - (u64::from(MAX_HANDSHAKE_ATTEMPTS) - 1)
    );
    assert_eq!(server.state(), DtlsState::Handshaking);
    // The deadline still ends it.
    let deadline = server.poll_timeout().unwrap();
    assert!(deadline <= t0 + DtlsConfig::default().handshake_timeout);
    server.handle_timeout(t0 + DtlsConfig::default().handshake_timeout);
    assert_eq!(
        std::iter::from_fn(|| server.poll_event()).last(),
        Some(DtlsEvent::Failed(FailureReason::Timeout))
    );
    // After the deadline a failed server takes nothing, not even a verified hello.
    let late = t0 + DtlsConfig::default().handshake_timeout + Duration::from_secs(1);
    let ended = server.stats().dropped_after_end;
    server.handle_datagram(&verified(99), late);
    assert_eq!(server.stats().dropped_after_end, ended + 1);
    assert!(server.poll_transmit().is_none());
}

#[test]
fn plaintext_handshake_records_are_budgeted() {
    // After connection, the client's epoch-0 records (its flight 5) repeated without end:
    // the library sees a bounded number, the association is unaffected.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    let mut flight5 = Vec::new();
    race.run(LIMIT, &mut |at, d, _, _| {
        if matches!(at, At::ToServer(_)) && d.first() == Some(&22) && d.get(13) == Some(&11) {
            flight5.push(d.to_vec());
        }
    });
    race.assert_connected("plain handshake");
    let record = flight5.first().expect("the client's Certificate").clone();
    for _ in 0..400 {
        race.server.handle_datagram(&record, race.now);
        while race.server.poll_transmit().is_some() {}
    }
    let st = race.server.stats();
    assert!(st.dropped_over_budget >= 400 - 128, "{st:?}");
    assert_eq!(race.server.state(), DtlsState::Connected);
    assert!(race.server.poll_event().is_none());
}

#[test]
fn fragmented_client_hellos_complete_the_handshake() {
    // Chrome splits its ClientHello over two records once the post-quantum key share is in
    // it: both hellos of the cookie exchange arrive in fragments.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    for n in [2, 3] {
        let mut race = Race::new(&cs, &cc, t0);
        race.hello_fragments = n;
        race.run(LIMIT, &mut |_, _, _, _| {});
        race.assert_connected("fragmented ClientHellos");
        let st = race.server.stats();
        assert_eq!(st.hello_verify_sent, 1, "{st:?}");
        assert_eq!(st.hello_drops.unparsable, 0, "{st:?}");
    }
}

#[test]
fn forged_fragments_do_not_block_a_fragmented_handshake() {
    // Fragments of a forged hello from the accepted address interleaved with the real ones.
    let (cs, cc) = (cert(), cert());
    let t0 = Instant::now();
    let mut race = Race::new(&cs, &cc, t0);
    race.hello_fragments = 2;
    let forged = super::hello::fragments(&stranger_hello(&cs, &DtlsConfig::default(), 40), 2);
    race.run(LIMIT, &mut |at, _, server, now| {
        if matches!(at, At::ToServer(_)) {
            server.handle_datagram(&forged[0], now);
        }
    });
    race.assert_connected("forged fragments interleaved");
}
