//! RFC 3263 client procedure against a scripted resolver.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Zone {
    naptr: HashMap<String, Vec<NaptrRecord>>,
    srv: HashMap<String, Vec<SrvRecord>>,
    a: HashMap<String, (Vec<IpAddr>, u32)>,
    /// Names whose lookups fail (server trouble, not "no records").
    broken: Vec<String>,
    asked: Mutex<Vec<String>>,
}

impl Zone {
    fn naptr(mut self, name: &str, order: u16, pref: u16, service: &str, repl: &str) -> Self {
        self.naptr
            .entry(name.into())
            .or_default()
            .push(NaptrRecord {
                order,
                preference: pref,
                flags: "S".into(),
                services: service.into(),
                replacement: repl.into(),
                ttl: 300,
            });
        self
    }
    fn srv(mut self, name: &str, prio: u16, weight: u16, port: u16, target: &str) -> Self {
        self.srv.entry(name.into()).or_default().push(SrvRecord {
            priority: prio,
            weight,
            port,
            target: target.into(),
            ttl: 120,
        });
        self
    }
    fn a(mut self, name: &str, ips: &[&str], ttl: u32) -> Self {
        self.a.insert(
            name.into(),
            (ips.iter().map(|s| s.parse().unwrap()).collect(), ttl),
        );
        self
    }
    fn note(&self, q: String) {
        self.asked.lock().unwrap().push(q);
    }
    fn check(&self, name: &str) -> Result<(), DnsError> {
        if self.broken.iter().any(|b| b == name) {
            Err(DnsError::Failed("SERVFAIL".into()))
        } else {
            Ok(())
        }
    }
}

impl Lookup for Zone {
    async fn naptr(&self, name: &str) -> Result<Vec<NaptrRecord>, DnsError> {
        self.note(format!("NAPTR {name}"));
        self.check(name)?;
        self.naptr.get(name).cloned().ok_or(DnsError::NoRecords)
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        self.note(format!("SRV {name}"));
        self.check(name)?;
        self.srv.get(name).cloned().ok_or(DnsError::NoRecords)
    }
    async fn ip(&self, name: &str) -> Result<(Vec<IpAddr>, u32), DnsError> {
        self.note(format!("A {name}"));
        self.check(name)?;
        self.a.get(name).cloned().ok_or(DnsError::NoRecords)
    }
}

fn query(mode: TrunkDns, transport: Transport) -> TrunkQuery {
    TrunkQuery {
        host: "example.com".into(),
        port: transport.default_port(),
        transport,
        mode,
        supported: vec![Transport::Udp, Transport::Tcp],
    }
}

fn run(zone: &Zone, q: &TrunkQuery) -> Result<Resolution, DnsError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(resolve(zone, q))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn naptr_picks_supported_services_in_order_then_srv_then_a() {
    let zone = Zone::default()
        // TLS is preferred by the zone but we do not speak it: skipped.
        .naptr("example.com", 10, 10, "SIPS+D2T", "_sips._tcp.example.com")
        .naptr("example.com", 10, 20, "SIP+D2T", "_sip._tcp.example.com")
        .naptr("example.com", 10, 30, "SIP+D2U", "_sip._udp.example.com")
        // A different order is never considered once order 10 matched.
        .naptr(
            "example.com",
            20,
            10,
            "SIP+D2U",
            "_sip._udp.other.example.com",
        )
        .srv("_sip._tcp.example.com", 10, 0, 5070, "tcp1.example.com")
        .srv("_sip._udp.example.com", 10, 0, 5060, "udp1.example.com")
        .srv(
            "_sip._udp.other.example.com",
            10,
            0,
            5060,
            "other.example.com",
        )
        .a("tcp1.example.com", &["192.0.2.1"], 60)
        .a("udp1.example.com", &["192.0.2.2", "2001:db8::2"], 30)
        .a("other.example.com", &["192.0.2.9"], 60);
    let r = run(&zone, &query(TrunkDns::Naptr, Transport::Udp)).unwrap();
    assert_eq!(r.via, "naptr");
    assert_eq!(
        r.ttl, 30,
        "smallest TTL of the NAPTR, SRV and A records used"
    );
    assert_eq!(
        r.ordered(7),
        vec![
            (sa("192.0.2.1:5070"), Transport::Tcp),
            (sa("192.0.2.2:5060"), Transport::Udp),
            (sa("[2001:db8::2]:5060"), Transport::Udp),
        ]
    );
    assert!(!zone
        .asked
        .lock()
        .unwrap()
        .iter()
        .any(|q| q.contains("other") || q.contains("_sips")));
}

#[test]
fn no_naptr_means_srv_for_each_supported_transport_then_a() {
    let zone = Zone::default()
        .srv("_sip._tcp.example.com", 5, 0, 5080, "t.example.com")
        .a("t.example.com", &["192.0.2.5"], 600);
    let r = run(&zone, &query(TrunkDns::Naptr, Transport::Udp)).unwrap();
    assert_eq!(r.via, "srv");
    assert_eq!(r.ordered(1), vec![(sa("192.0.2.5:5080"), Transport::Tcp)]);
    let asked = zone.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            "NAPTR example.com",
            "SRV _sip._udp.example.com",
            "SRV _sip._tcp.example.com",
            "A t.example.com"
        ]
    );

    // Nothing but an A record: the configured transport at its default port.
    let zone = Zone::default().a("example.com", &["192.0.2.7"], 100);
    let r = run(&zone, &query(TrunkDns::Naptr, Transport::Udp)).unwrap();
    assert_eq!(r.via, "a");
    assert_eq!(r.ttl, 100);
    assert_eq!(r.ordered(1), vec![(sa("192.0.2.7:5060"), Transport::Udp)]);
}

#[test]
fn srv_mode_uses_the_transport_and_falls_back_to_a_with_the_port() {
    let zone = Zone::default()
        .srv("_sip._tcp.example.com", 10, 0, 5090, "x.example.com")
        .a("x.example.com", &["192.0.2.10"], 60)
        .a("example.com", &["192.0.2.11"], 60);
    let r = run(&zone, &query(TrunkDns::Srv, Transport::Tcp)).unwrap();
    assert_eq!(r.ordered(1), vec![(sa("192.0.2.10:5090"), Transport::Tcp)]);
    // UDP has no SRV records: A of the host at the trunk's port.
    let mut q = query(TrunkDns::Srv, Transport::Udp);
    q.port = 5099;
    let r = run(&zone, &q).unwrap();
    assert_eq!(r.via, "a");
    assert_eq!(r.ordered(1), vec![(sa("192.0.2.11:5099"), Transport::Udp)]);
    // a mode never asks for SRV.
    let zone = Zone::default().a("example.com", &["192.0.2.12"], 60);
    let r = run(&zone, &query(TrunkDns::A, Transport::Udp)).unwrap();
    assert_eq!(r.ordered(1), vec![(sa("192.0.2.12:5060"), Transport::Udp)]);
    assert_eq!(zone.asked.lock().unwrap().clone(), ["A example.com"]);
}

#[test]
fn srv_priority_failover_and_unusable_targets() {
    let zone = Zone::default()
        .srv("_sip._udp.example.com", 20, 0, 5060, "backup.example.com")
        .srv("_sip._udp.example.com", 10, 0, 5060, "primary.example.com")
        // Target without addresses and the "no service" target are left out.
        .srv("_sip._udp.example.com", 5, 0, 5060, "ghost.example.com")
        .srv("_sip._udp.example.com", 1, 0, 5060, ".")
        .a("primary.example.com", &["192.0.2.1"], 60)
        .a("backup.example.com", &["192.0.2.2"], 60);
    let r = run(&zone, &query(TrunkDns::Srv, Transport::Udp)).unwrap();
    for seed in 0..50 {
        assert_eq!(
            r.ordered(seed),
            vec![
                (sa("192.0.2.1:5060"), Transport::Udp),
                (sa("192.0.2.2:5060"), Transport::Udp)
            ]
        );
    }
}

#[test]
fn srv_weights_spread_first_choices_proportionally() {
    let zone = Zone::default()
        .srv("_sip._udp.example.com", 10, 300, 5060, "heavy.example.com")
        .srv("_sip._udp.example.com", 10, 100, 5060, "light.example.com")
        .a("heavy.example.com", &["192.0.2.1"], 60)
        .a("light.example.com", &["192.0.2.2"], 60);
    let r = run(&zone, &query(TrunkDns::Srv, Transport::Udp)).unwrap();
    let mut heavy_first = 0;
    let n = 4000u64;
    for seed in 0..n {
        let o = r.ordered(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        assert_eq!(o.len(), 2, "both kept for failover");
        if o[0].0 == sa("192.0.2.1:5060") {
            heavy_first += 1;
        }
    }
    let share = heavy_first as f64 / n as f64;
    assert!(
        (0.70..0.80).contains(&share),
        "heavy first in {share:.3} (want ~0.75)"
    );
}

#[test]
fn failures_and_ip_literals() {
    let zone = Zone {
        broken: vec!["example.com".into()],
        ..Zone::default()
    };
    assert!(matches!(
        run(&zone, &query(TrunkDns::A, Transport::Udp)),
        Err(DnsError::Failed(_))
    ));
    let zone = Zone::default();
    assert_eq!(
        run(&zone, &query(TrunkDns::Naptr, Transport::Udp)),
        Err(DnsError::NoRecords)
    );
    let zone = Zone::default();
    let mut q = query(TrunkDns::Naptr, Transport::Tcp);
    q.host = "[2001:db8::1]".into();
    let r = run(&zone, &q).unwrap();
    assert_eq!(
        r.ordered(1),
        vec![(sa("[2001:db8::1]:5060"), Transport::Tcp)]
    );
    assert!(zone.asked.lock().unwrap().is_empty());
}

#[test]
fn refresh_policy_clamps_ttls_and_retries_after_failures() {
    let p = refresh::RefreshPolicy {
        min_ttl: std::time::Duration::from_secs(5),
        max_ttl: std::time::Duration::from_secs(3600),
        retry: std::time::Duration::from_secs(30),
    };
    let res = |ttl| {
        Ok(Resolution {
            entries: Vec::new(),
            ttl,
            via: "a",
        })
    };
    assert_eq!(p.next(&res(0)).as_secs(), 5);
    assert_eq!(p.next(&res(60)).as_secs(), 60);
    assert_eq!(p.next(&res(u32::MAX)).as_secs(), 3600);
    assert_eq!(p.next(&Err(DnsError::NoRecords)).as_secs(), 30);
    let zero = refresh::RefreshPolicy {
        min_ttl: std::time::Duration::ZERO,
        ..p
    };
    assert_eq!(p.next(&res(0)), zero.next(&res(5)), "sanity");
    assert_eq!(zero.next(&res(0)).as_secs(), 1, "never a busy loop");
}

#[test]
fn addresses_are_capped_and_deduplicated() {
    let mut zone = Zone::default();
    for i in 0..12u16 {
        zone = zone.srv("_sip._udp.example.com", i, 0, 5060, "same.example.com");
    }
    let ips: Vec<String> = (1..=12).map(|i| format!("192.0.2.{i}")).collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    zone = zone.a("same.example.com", &refs, 60);
    let r = run(&zone, &query(TrunkDns::Srv, Transport::Udp)).unwrap();
    let o = r.ordered(3);
    assert_eq!(o.len(), MAX_ADDRESSES);
    let mut d = o.clone();
    d.dedup();
    assert_eq!(d, o);
}
