//! Routing rules and trunk selection: a request that is not in-dialog and carries no Route is
//! matched against the configured rules in order (Request-URI user prefix, domain, ingress
//! interface); the first matching rule names a trunk group, and the group's members are
//! ordered by the rule's selection policy (priority, round-robin or weighted). The proxy tries
//! them in that order, failing over on 408/5xx, timeout or connection failure.

use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_config::{Config, Selection};

use crate::transport::Transport;

/// One upstream a request can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// RFC 3263 resolution of a host name.
    pub dns: portcullis_config::TrunkDns,
    /// Name of the egress interface.
    pub interface: String,
    /// Optional listener (outbound socket) name.
    pub listener: Option<String>,
    pub weight: u32,
    pub priority: u32,
}

#[derive(Debug)]
struct Rule {
    name: String,
    user_prefix: Option<String>,
    domain: Option<String>,
    interface: Option<String>,
    selection: Selection,
    members: Vec<TrunkTarget>,
    rr_counter: AtomicUsize,
}

/// What a request looks like to the routing rules.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    pub user: Option<&'a str>,
    pub domain: &'a str,
    pub ingress_interface: &'a str,
}

/// The result of matching: the rule's name and the trunks in failover order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    pub rule: String,
    pub targets: Vec<TrunkTarget>,
}

#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<Rule>,
    /// Every trunk with its group name.
    trunks: Vec<(String, TrunkTarget)>,
}

impl Router {
    pub fn from_config(cfg: &Config) -> Router {
        let trunks: Vec<(String, TrunkTarget)> = cfg
            .trunks
            .iter()
            .map(|t| {
                (
                    t.group.clone(),
                    TrunkTarget {
                        name: t.name.clone(),
                        host: t.host.clone(),
                        port: t.port,
                        transport: match t.transport {
                            portcullis_config::TrunkTransport::Udp => Transport::Udp,
                            portcullis_config::TrunkTransport::Tcp => Transport::Tcp,
                            portcullis_config::TrunkTransport::Tls => Transport::Tls,
                        },
                        dns: t.dns,
                        interface: t.interface.clone(),
                        listener: t.listener.clone(),
                        weight: t.weight.max(1),
                        priority: t.priority,
                    },
                )
            })
            .collect();
        let rules = cfg
            .routes
            .iter()
            .map(|r| {
                let members = trunks
                    .iter()
                    .filter(|(g, _)| *g == r.group)
                    .map(|(_, t)| t.clone())
                    .collect();
                Rule {
                    name: r.name.clone(),
                    user_prefix: r.r#match.user_prefix.clone(),
                    domain: r.r#match.domain.clone(),
                    interface: r.r#match.interface.clone(),
                    selection: r.selection,
                    members,
                    rr_counter: AtomicUsize::new(0),
                }
            })
            .collect();
        Router { rules, trunks }
    }

    /// The trunks of a group in priority order (e.g. the upstream registrar's).
    pub fn group(&self, group: &str) -> Vec<TrunkTarget> {
        let mut t: Vec<TrunkTarget> = self
            .trunks
            .iter()
            .filter(|t| t.0 == group)
            .map(|t| t.1.clone())
            .collect();
        t.sort_by_key(|t| t.priority);
        t
    }

    /// Every configured trunk.
    pub fn trunks(&self) -> impl Iterator<Item = &TrunkTarget> {
        self.trunks.iter().map(|(_, t)| t)
    }

    /// First matching rule, with its trunks in the order they are to be tried.
    pub fn route(&self, q: RouteQuery<'_>) -> Option<RouteDecision> {
        let rule = self.rules.iter().find(|r| r.matches(q))?;
        let mut targets = rule.members.clone();
        match rule.selection {
            Selection::Priority => targets.sort_by_key(|t| t.priority),
            Selection::RoundRobin => {
                if !targets.is_empty() {
                    let n = rule.rr_counter.fetch_add(1, Ordering::Relaxed) % targets.len();
                    targets.rotate_left(n);
                }
            }
            Selection::Weighted => weighted_order(&mut targets, rand::random::<u64>()),
        }
        Some(RouteDecision {
            rule: rule.name.clone(),
            targets,
        })
    }
}

impl Rule {
    fn matches(&self, q: RouteQuery<'_>) -> bool {
        if let Some(p) = &self.user_prefix {
            // Numbers match without RFC 3966 visual separators (-, ., (, )).
            let number: String = q
                .user
                .unwrap_or("")
                .chars()
                .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
                .collect();
            if q.user.is_none() || !number.starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(d) = &self.domain {
            if !d.eq_ignore_ascii_case(q.domain) {
                return false;
            }
        }
        if let Some(i) = &self.interface {
            if i != q.ingress_interface {
                return false;
            }
        }
        true
    }
}

/// Orders targets by repeated weighted draws without replacement, driven by `seed`.
fn weighted_order(targets: &mut [TrunkTarget], seed: u64) {
    let mut rng = crate::xorshift::XorShift(seed);
    for i in 0..targets.len() {
        let total: u64 = targets[i..].iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            return;
        }
        let mut pick = rng.next_u64() % total;
        let mut chosen = i;
        for (j, t) in targets.iter().enumerate().skip(i) {
            let w = u64::from(t.weight);
            if pick < w {
                chosen = j;
                break;
            }
            pick -= w;
        }
        targets.swap(i, chosen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(selection: &str) -> Config {
        let yaml = format!(
            r#"
interfaces:
  - name: outside
    listeners: [{{ name: o-udp, proto: udp, address: 127.0.0.1, port: 5060 }}]
  - name: inside
    listeners: [{{ name: i-udp, proto: udp, address: 127.0.0.2, port: 5060 }}]
trunks:
  - {{ name: a, host: 10.0.0.1, group: core, interface: inside, priority: 2, weight: 1 }}
  - {{ name: b, host: 10.0.0.2, group: core, interface: inside, priority: 1, weight: 3 }}
  - {{ name: c, host: 10.0.0.3, group: intl, interface: inside }}
routes:
  - {{ name: intl, match: {{ user_prefix: "00" }}, group: intl }}
  - {{ name: ex, match: {{ domain: example.com, interface: outside }}, group: core, selection: {selection} }}
"#
        );
        match portcullis_config::load_str(&yaml, "test.yaml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn names(d: &RouteDecision) -> Vec<&str> {
        d.targets.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn first_matching_rule_wins_and_priority_orders_failover() {
        let r = Router::from_config(&cfg("priority"));
        let q = RouteQuery {
            user: Some("0049301234"),
            domain: "example.com",
            ingress_interface: "outside",
        };
        assert_eq!(r.route(q).unwrap().rule, "intl");
        let q = RouteQuery {
            user: Some("4930"),
            domain: "EXAMPLE.com",
            ingress_interface: "outside",
        };
        let d = r.route(q).unwrap();
        assert_eq!(names(&d), vec!["b", "a"]);
        let q = RouteQuery {
            user: Some("4930"),
            domain: "example.com",
            ingress_interface: "inside",
        };
        assert!(r.route(q).is_none());
        let q = RouteQuery {
            user: None,
            domain: "other.org",
            ingress_interface: "outside",
        };
        assert!(r.route(q).is_none());
    }

    #[test]
    fn round_robin_rotates_the_first_member() {
        let r = Router::from_config(&cfg("round_robin"));
        let q = RouteQuery {
            user: None,
            domain: "example.com",
            ingress_interface: "outside",
        };
        let firsts: Vec<String> = (0..4)
            .map(|_| r.route(q).unwrap().targets[0].name.clone())
            .collect();
        assert_eq!(firsts, vec!["a", "b", "a", "b"]);
    }

    #[test]
    fn weighted_draws_follow_weights_and_keep_all_members() {
        let mut counts = [0u32; 2];
        for seed in 1..4001u64 {
            let mut t = vec![
                TrunkTarget {
                    name: "a".into(),
                    host: String::new(),
                    port: 1,
                    transport: Transport::Udp,
                    dns: portcullis_config::TrunkDns::A,
                    interface: String::new(),
                    listener: None,
                    weight: 1,
                    priority: 1,
                },
                TrunkTarget {
                    name: "b".into(),
                    host: String::new(),
                    port: 1,
                    transport: Transport::Udp,
                    dns: portcullis_config::TrunkDns::A,
                    interface: String::new(),
                    listener: None,
                    weight: 3,
                    priority: 1,
                },
            ];
            weighted_order(&mut t, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            assert_eq!(t.len(), 2);
            counts[usize::from(t[0].name == "b")] += 1;
        }
        // b has weight 3 of 4: expect ~3000 of 4000 first picks.
        assert!((2700..3300).contains(&counts[1]), "{counts:?}");
    }
}
