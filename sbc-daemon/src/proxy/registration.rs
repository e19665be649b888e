//! Registration proxying toward an upstream registrar (issue: SBC signalling, S-10): the
//! REGISTER's Contacts are replaced by SBC-owned URIs carrying a token (or a Path header
//! with a flow token is added, RFC 3327), expiries are throttled per interface policy,
//! refreshes are answered from the cache while the upstream registration lasts, and the
//! 200 OK relayed back restores the client's own Contacts and expiry.

use std::collections::VecDeque;
use std::time::Instant;

use portcullis_config::RegistrationMode;
use portcullis_sip::{Contact, HeaderName, SipMessage};

use super::{Hop, Proxy};
use crate::registrar::upstream::TOKEN_PREFIX;
use crate::transport::{Source, Transport};

/// What the server transaction of a proxied REGISTER remembers for its 200 OK.
#[derive(Debug, Clone)]
pub(super) struct RegContext {
    pub tokens: Vec<String>,
    /// Expiry granted to the client when throttling (0: not throttled).
    pub client_expires: u32,
    pub deregister: bool,
    pub aor: String,
}

/// Default expiry when a REGISTER names none (RFC 3261 10.2.1.1 leaves it to the registrar;
/// used only to decide throttling).
const DEFAULT_EXPIRES: u32 = 3600;

impl Proxy {
    /// Handles a REGISTER to be proxied to the upstream registrar group.
    pub(super) fn register_upstream(
        &mut self,
        now: Instant,
        id: u64,
        mut msg: SipMessage,
        src: Source,
    ) {
        let Some((group, mode)) = self.upstream_registrar.clone() else {
            return;
        };
        let iface = self.iface_name(src.listener).to_string();
        let (client_expires, upstream_expires) = self
            .settings
            .policies
            .get(&iface)
            .map(|p| {
                (
                    p.registration_client_expires,
                    p.registration_upstream_expires,
                )
            })
            .unwrap_or((0, 3600));
        let Some(aor) = msg.to().ok().and_then(|t| {
            t.parse_uri()
                .ok()
                .map(|u| format!("{}@{}", u.user.unwrap_or(""), u.host.to_ascii_lowercase()))
        }) else {
            self.respond_local(now, id, 400, "Bad To", &[]);
            return;
        };
        let call_id = msg.call_id().unwrap_or("").to_string();
        let header_expires = msg.expires().ok().flatten();
        let contacts: Vec<(String, String, u32, bool)> = match msg.contacts() {
            Ok(list) => list
                .iter()
                .map(|c| match c {
                    Contact::Star => (String::new(), String::new(), 0, true),
                    Contact::Addr(na) => {
                        let exp = match na.params.get("expires") {
                            Some(Some(v)) => v.trim().parse::<u32>().unwrap_or(DEFAULT_EXPIRES),
                            _ => header_expires.unwrap_or(DEFAULT_EXPIRES),
                        };
                        let params: String = na
                            .params
                            .iter()
                            .filter(|(k, _)| !k.eq_ignore_ascii_case("expires"))
                            .map(|(k, v)| match v {
                                Some(v) => format!(";{k}={v}"),
                                None => format!(";{k}"),
                            })
                            .collect();
                        (na.uri.to_string(), params, exp, false)
                    }
                })
                .collect(),
            Err(_) => {
                self.respond_local(now, id, 400, "Bad Contact", &[]);
                return;
            }
        };

        // The upstream registrar's trunks, in failover order.
        let hops = self.group_hops(&group);
        let Some(first) = hops.front() else {
            self.respond_local(now, id, 503, "Registrar Unavailable", &[]);
            return;
        };
        let Some(egress) = self.local.listener(first.listener).cloned() else {
            return;
        };

        if src.transport == Transport::Udp && super::nat::detect(&msg, src.remote).nated {
            self.keepalives.add(src);
        }
        let star = contacts.iter().any(|c| c.3);
        let deregister = star || (!contacts.is_empty() && contacts.iter().all(|c| c.2 == 0));
        let throttle = client_expires > 0 && !deregister;
        let mut tokens = Vec::new();
        if star {
            tokens = self.reg_cache.tokens_of(&aor, &src);
        } else {
            for (uri, params, _, _) in &contacts {
                tokens.push(
                    self.reg_cache
                        .token_for(now, &aor, uri, params, src, &call_id),
                );
            }
        }

        // A refresh inside the upstream window is answered here (registration throttling).
        if throttle
            && self
                .reg_cache
                .can_answer_locally(now, &tokens, &src, &call_id, client_expires)
        {
            let values: Vec<String> = tokens
                .iter()
                .filter_map(|t| self.reg_cache.get(t))
                .map(|b| {
                    format!(
                        "<{}>{};expires={}",
                        b.contact_uri, b.contact_params, client_expires
                    )
                })
                .collect();
            for t in &tokens {
                self.reg_cache.touch(now, t, client_expires);
            }
            self.metrics.registration(true);
            let extra: Vec<(&str, &str)> = values.iter().map(|v| ("Contact", v.as_str())).collect();
            self.respond_local(now, id, 200, "OK", &extra);
            return;
        }

        // Rewrite toward the registrar.
        if !star && !contacts.is_empty() {
            let transport_param = if egress.transport == Transport::Udp {
                String::new()
            } else {
                format!(";transport={}", egress.transport.param())
            };
            match mode {
                RegistrationMode::Contact => {
                    let values: Vec<String> = contacts
                        .iter()
                        .zip(&tokens)
                        .map(|((_, params, exp, _), tok)| {
                            let e = if throttle && *exp > 0 {
                                upstream_expires
                            } else {
                                *exp
                            };
                            format!(
                                "<sip:{tok}@{}{transport_param}>{params};expires={e}",
                                egress.hostport()
                            )
                        })
                        .collect();
                    msg.remove_headers(HeaderName::Contact);
                    msg.set_header(HeaderName::Contact, &values.join(", "));
                }
                RegistrationMode::Path => {
                    let flow = self.flow_tokens.encode(&src);
                    msg.insert_before_first(
                        HeaderName::Path,
                        &format!("<sip:{flow}@{}{transport_param};lr>", egress.hostport()),
                    );
                    if throttle {
                        let values: Vec<String> = contacts
                            .iter()
                            .map(|(uri, params, exp, _)| {
                                let e = if *exp > 0 { upstream_expires } else { 0 };
                                format!("<{uri}>{params};expires={e}")
                            })
                            .collect();
                        msg.remove_headers(HeaderName::Contact);
                        msg.set_header(HeaderName::Contact, &values.join(", "));
                    }
                }
            }
            if throttle && header_expires.is_some_and(|e| e > 0) {
                msg.set_header(HeaderName::Expires, &upstream_expires.to_string());
            }
        }
        self.metrics.registration(false);
        if let Some(s) = self.servers.get_mut(&id) {
            s.reg = Some(RegContext {
                tokens,
                client_expires: if throttle { client_expires } else { 0 },
                deregister,
                aor,
            });
        }
        self.start_forwarding(now, id, msg, hops, false, false);
    }

    /// The trunks of a group that are up, in priority order, as hops.
    pub(super) fn group_hops(&self, group: &str) -> VecDeque<Hop> {
        let mut hops = VecDeque::new();
        for t in self.router.group(group) {
            if !self.health.is_up(&t.name) {
                continue;
            }
            hops.extend(self.trunk_hops(&t));
        }
        hops
    }

    /// Rewrites the registrar's 2xx for the client: SBC URIs back to the client's Contacts,
    /// throttled expiry, and the cache updated.
    pub(super) fn rewrite_register_ok(
        &mut self,
        now: Instant,
        ctx: &RegContext,
        msg: &mut SipMessage,
    ) {
        if ctx.deregister {
            for t in &ctx.tokens {
                self.reg_cache.remove(t);
            }
        }
        let header_expires = msg.expires().ok().flatten();
        let Ok(contacts) = msg.contacts() else {
            return;
        };
        let mut values = Vec::new();
        let mut changed = false;
        for c in &contacts {
            let Contact::Addr(na) = c else { continue };
            let granted = match na.params.get("expires") {
                Some(Some(v)) => v.trim().parse::<u32>().unwrap_or(0),
                _ => header_expires.unwrap_or(DEFAULT_EXPIRES),
            };
            let uri = na.parse_uri().ok();
            let token = uri
                .as_ref()
                .and_then(|u| u.user)
                .filter(|u| u.starts_with(TOKEN_PREFIX))
                .map(str::to_string)
                .or_else(|| {
                    // Path mode: the client's own Contact came back; find its token.
                    ctx.tokens
                        .iter()
                        .find(|t| {
                            self.reg_cache
                                .get(t)
                                .is_some_and(|b| b.contact_uri.eq_ignore_ascii_case(na.uri))
                        })
                        .cloned()
                });
            match token.and_then(|t| self.reg_cache.get(&t).cloned().map(|b| (t, b))) {
                Some((t, b)) if b.aor == ctx.aor => {
                    let client = if ctx.client_expires > 0 {
                        ctx.client_expires.min(granted)
                    } else {
                        granted
                    };
                    self.reg_cache.confirm(now, &t, granted, client);
                    values.push(format!(
                        "<{}>{};expires={}",
                        b.contact_uri, b.contact_params, client
                    ));
                    changed = true;
                }
                _ => values.push(na.raw.to_string()),
            }
        }
        if changed {
            msg.remove_headers(HeaderName::Contact);
            msg.set_header(HeaderName::Contact, &values.join(", "));
            if ctx.client_expires > 0 && header_expires.is_some() {
                msg.set_header(HeaderName::Expires, &ctx.client_expires.to_string());
            }
        }
    }
}
