//! Topology hiding (S-05, S-07), per interface: nothing of another interface's topology is
//! sent on an interface whose policy has `topology_hiding`. For a message leaving on such an
//! interface X that came from another interface Y:
//!
//! - requests carry only our Via (the others are kept in the server transaction and put
//!   back on the responses), only our X-side Record-Route (the full set is kept and put back
//!   on the responses going to Y), and a Contact replaced by an SBC URI on X carrying a
//!   dialog token;
//! - responses carry only the Record-Route entries of X's side and our X-side entry, and a
//!   Contact replaced by a dialog-token URI;
//! - requests that come back from X to a dialog-token URI get the real Y Contact as
//!   Request-URI and the Y-side route set as Route headers.
//!
//! IP literals in informational headers (Call-Info, Warning, Alert-Info, Error-Info,
//! Server, User-Agent, Organization, P-*) are replaced by the SBC's address on X. SDP
//! `o=`/`c=` are rewritten by the media engine when media is anchored. Host names and
//! networks listed in the interface's `hide_hosts` are replaced in the Request-URI, From, To
//! and the other non-routing headers; the Call-ID is replaced when `call_id_masking` is on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_sip::{HeaderName, NameAddr, SipMessage, SipUri};

use super::addressing::ListenerInfo;
use super::Proxy;
use crate::transport::Transport;

/// Prefix of dialog tokens (user part of the SBC URIs that replace hidden Contacts).
pub(super) const DIALOG_PREFIX: &str = "dg";

/// How long an idle hidden dialog is remembered.
const DIALOG_IDLE: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub(super) struct HiddenDialog {
    /// The hidden party's real Contact URI.
    contact: String,
    /// Route set from the SBC toward the hidden party (beyond our own entries).
    route: Vec<String>,
    last_used: Instant,
}

#[derive(Debug, Default)]
pub(super) struct HiddenDialogs {
    by_token: HashMap<String, HiddenDialog>,
    by_key: HashMap<(String, String), String>,
}

impl HiddenDialogs {
    fn token_for(
        &mut self,
        now: Instant,
        call_id: &str,
        contact: &str,
        route: Vec<String>,
    ) -> String {
        let key = (call_id.to_string(), contact.to_string());
        if let Some(t) = self.by_key.get(&key) {
            if let Some(d) = self.by_token.get_mut(t) {
                d.last_used = now;
                if !route.is_empty() {
                    d.route = route;
                }
                return t.clone();
            }
        }
        let t = format!("{DIALOG_PREFIX}{:016x}", rand::random::<u64>());
        self.by_token.insert(
            t.clone(),
            HiddenDialog {
                contact: contact.to_string(),
                route,
                last_used: now,
            },
        );
        self.by_key.insert(key, t.clone());
        t
    }

    pub(super) fn purge(&mut self, now: Instant) {
        self.by_token.retain(|_, d| d.last_used + DIALOG_IDLE > now);
        let live = &self.by_token;
        self.by_key.retain(|_, t| live.contains_key(t));
    }
}

/// The URI of a Record-Route/Route value.
fn value_uri(v: &str) -> Option<String> {
    NameAddr::parse(v, "Record-Route")
        .ok()
        .map(|na| na.uri.to_string())
}

impl Proxy {
    pub(super) fn hides(&self, iface: &str) -> bool {
        self.settings
            .policies
            .get(iface)
            .is_some_and(|p| p.topology_hiding)
    }

    /// Index of our Record-Route entry for an interface other than `x_iface`.
    fn own_entry_not_on(&self, rr: &[String], x_iface: &str) -> Option<usize> {
        rr.iter().position(|v| {
            value_uri(v)
                .and_then(|u| {
                    let parsed = SipUri::parse(&u).ok()?;
                    self.local.own_listener_for(&parsed)
                })
                .and_then(|l| self.local.listener(l))
                .is_some_and(|l| l.interface != x_iface)
        })
    }

    /// The SBC URI on `x` that stands for a hidden Contact.
    fn token_contact(
        &mut self,
        now: Instant,
        call_id: &str,
        na: &NameAddr<'_>,
        route: Vec<String>,
        x: &ListenerInfo,
    ) -> String {
        let token = self.hidden.token_for(now, call_id, na.uri, route);
        let transport = if x.transport == Transport::Udp {
            String::new()
        } else {
            format!(";transport={}", x.transport.param())
        };
        let params = na.params.as_str();
        format!("<sip:{token}@{}{transport}>{params}", x.hostport())
    }

    /// A request about to leave on hiding interface `x` (from another interface): strips
    /// Vias (kept by server transaction `server`), Record-Routes other than ours on `x`
    /// (the full set is kept too) and hides the Contact. Call before our Via is added.
    pub(super) fn hide_request(
        &mut self,
        now: Instant,
        server: u64,
        msg: &mut SipMessage,
        x: &ListenerInfo,
    ) {
        let vias: Vec<String> = msg
            .header_values(HeaderName::Via)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rr: Vec<String> = msg
            .header_values(HeaderName::RecordRoute)
            .iter()
            .map(|s| s.to_string())
            .collect();
        msg.remove_headers(HeaderName::Via);
        let mut route_to_y = Vec::new();
        // When we record-routed, rr[0] is our X-side entry (inserted last) and the Y side's
        // entries follow our Y-side one.
        let ours_first = rr
            .first()
            .and_then(|v| value_uri(v))
            .and_then(|u| {
                SipUri::parse(&u)
                    .ok()
                    .and_then(|p| self.local.own_listener_for(&p))
            })
            .and_then(|l| self.local.listener(l))
            .is_some_and(|l| l.interface == x.interface);
        if !rr.is_empty() {
            if let Some(y) = self.own_entry_not_on(&rr, &x.interface) {
                route_to_y = rr[y + 1..].to_vec();
            }
            msg.remove_headers(HeaderName::RecordRoute);
            if ours_first {
                msg.insert_before_first(HeaderName::RecordRoute, &rr[0]);
            }
        }
        if let Some(s) = self.servers.get_mut(&server) {
            s.hidden_vias = Some(vias);
            if ours_first {
                s.full_rr = Some(rr);
            }
        }
        self.hide_contact(now, msg, route_to_y, x);
        self.mask_informational_headers(msg, x);
        if self.masks_call_id(&x.interface) {
            self.mask_call_id(now, msg);
        }
    }

    fn hide_contact(
        &mut self,
        now: Instant,
        msg: &mut SipMessage,
        route_to_y: Vec<String>,
        x: &ListenerInfo,
    ) {
        let call_id = msg.call_id().unwrap_or("").to_string();
        let Some(contact) = msg
            .header_values(HeaderName::Contact)
            .first()
            .map(|s| s.to_string())
        else {
            return;
        };
        let Ok(na) = NameAddr::parse(&contact, "Contact") else {
            return;
        };
        let hidden = self.token_contact(now, &call_id, &na, route_to_y, x);
        msg.remove_headers(HeaderName::Contact);
        msg.set_header(HeaderName::Contact, &hidden);
    }

    /// A response to a hidden request, on its way back to the other side: its Vias and
    /// full Record-Route set are put back.
    pub(super) fn restore_response(&self, sid: u64, msg: &mut SipMessage) {
        let Some(s) = self.servers.get(&sid) else {
            return;
        };
        if let Some(vias) = &s.hidden_vias {
            msg.remove_headers(HeaderName::Via);
            for v in vias.iter().rev() {
                msg.prepend_header(HeaderName::Via, v);
            }
        }
        if let Some(rr) = &s.full_rr {
            if msg.header(HeaderName::RecordRoute).is_some() {
                msg.remove_headers(HeaderName::RecordRoute);
                for v in rr.iter().rev() {
                    msg.insert_before_first(HeaderName::RecordRoute, v);
                }
            }
        }
    }

    /// A response about to leave on hiding interface `x` that came from another interface:
    /// Record-Route entries of the other side removed, Contact hidden.
    pub(super) fn hide_response(&mut self, now: Instant, msg: &mut SipMessage, x: &ListenerInfo) {
        let rr: Vec<String> = msg
            .header_values(HeaderName::RecordRoute)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut route_to_y = Vec::new();
        if let Some(y) = self.own_entry_not_on(&rr, &x.interface) {
            // Entries before ours were added on the Y side; the route toward Y visits them
            // nearest first.
            route_to_y = rr[..y].iter().rev().cloned().collect();
            msg.remove_headers(HeaderName::RecordRoute);
            for v in rr[y + 1..].iter().rev() {
                msg.insert_before_first(HeaderName::RecordRoute, v);
            }
        }
        // A registrar's 2xx echoes the Path (RFC 3327), i.e. the other side's route to the
        // client: it stays behind.
        msg.remove_headers(HeaderName::Path);
        // The Contacts of a REGISTER response are the client's own bindings (restored by
        // the registration proxy), not a dialog's remote target.
        let register = msg
            .cseq()
            .is_ok_and(|c| c.method == portcullis_sip::Method::Register);
        if !register {
            self.hide_contact(now, msg, route_to_y, x);
        }
        self.mask_informational_headers(msg, x);
    }

    /// A request to a dialog-token URI: the real Contact becomes the Request-URI and the
    /// route set toward it is appended to the Route set (after our own entries, which the
    /// routing step consumes). Returns true if the request was one.
    pub(super) fn unhide_request(&mut self, now: Instant, msg: &mut SipMessage) -> bool {
        let token = msg
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user.map(str::to_string))
            .filter(|u| u.starts_with(DIALOG_PREFIX));
        let Some(d) = token.and_then(|t| self.hidden.by_token.get_mut(&t)) else {
            return false;
        };
        d.last_used = now;
        let contact = d.contact.clone();
        let route = d.route.clone();
        msg.set_request_uri(&contact);
        if !route.is_empty() {
            let mut routes: Vec<String> = msg
                .header_values(HeaderName::Route)
                .iter()
                .map(|s| s.to_string())
                .collect();
            routes.extend(route);
            super::rewrite_routes(msg, &routes);
        }
        true
    }
}

/// Headers that may carry addresses of the hidden side besides the routing headers
/// (S-07): replaced IP literals in them never leave on a hiding interface.
fn is_informational_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "call-info"
            | "warning"
            | "alert-info"
            | "error-info"
            | "server"
            | "user-agent"
            | "organization"
    ) || n.starts_with("p-")
}

/// Replaces every IPv4 literal in `text` with `with`.
pub(super) fn mask_ipv4(text: &str, with: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.'))
        {
            let start = i;
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'.') {
                j += 1;
            }
            let candidate = text[start..j].trim_end_matches('.');
            let end = start + candidate.len();
            let followed_by_alnum = bytes.get(end).is_some_and(|b| b.is_ascii_alphabetic());
            if !followed_by_alnum && candidate.parse::<std::net::Ipv4Addr>().is_ok() {
                out.push_str(with);
                i = end;
                continue;
            }
            out.push_str(&text[start..j]);
            i = j;
            continue;
        }
        let ch_len = text[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Host names and networks of the other side that must not appear on a hiding interface
/// (`policy.hide_hosts`).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostPatterns {
    names: Vec<String>,
    nets: Vec<(std::net::IpAddr, u8)>,
}

impl HostPatterns {
    /// From validated configuration strings (anything else is ignored).
    pub(crate) fn parse(list: &[String]) -> HostPatterns {
        let mut p = HostPatterns::default();
        for item in list {
            if let Some((ip, len)) = item.split_once('/') {
                if let (Ok(ip), Ok(len)) = (ip.parse(), len.parse()) {
                    p.nets.push((ip, len));
                }
            } else if let Ok(ip) = item.parse::<std::net::IpAddr>() {
                p.nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else {
                p.names
                    .push(item.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        p
    }

    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty() && self.nets.is_empty()
    }

    fn hides_ip(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        self.nets.iter().any(|(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    fn hides_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| {
            name == *n
                || (name.len() > n.len()
                    && name.ends_with(n.as_str())
                    && name.as_bytes()[name.len() - n.len() - 1] == b'.')
        })
    }

    /// `text` with every hidden host (a name or subdomain, an IPv4 literal, a bracketed
    /// IPv6 literal) replaced by `with`.
    pub(super) fn mask(&self, text: &str, with: &str) -> String {
        let is_host_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == '[' {
                if let Some(end) = rest.find(']') {
                    let inner = &rest[1..end];
                    if inner
                        .parse::<std::net::Ipv6Addr>()
                        .is_ok_and(|ip| self.hides_ip(ip.into()))
                    {
                        out.push_str(with);
                        rest = &rest[end + 1..];
                        continue;
                    }
                }
            }
            if is_host_char(c) {
                let len = rest
                    .find(|ch: char| !is_host_char(ch))
                    .unwrap_or(rest.len());
                let token = &rest[..len];
                let host = token.trim_end_matches('.');
                let hidden = match host.parse::<std::net::Ipv4Addr>() {
                    Ok(ip) => self.hides_ip(ip.into()),
                    Err(_) => {
                        host.contains(|ch: char| ch.is_ascii_alphabetic()) && self.hides_name(host)
                    }
                };
                if hidden {
                    out.push_str(with);
                    out.push_str(&token[host.len()..]);
                } else {
                    out.push_str(token);
                }
                rest = &rest[len..];
                continue;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// Headers `hide_hosts` never touches: routing headers (replaced as a whole by topology
/// hiding) and identifiers the other side must get back unchanged.
fn keeps_hosts(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "via"
            | "v"
            | "route"
            | "record-route"
            | "path"
            | "contact"
            | "m"
            | "call-id"
            | "i"
            | "cseq"
            | "content-length"
            | "l"
            | "content-type"
            | "c"
            | "max-forwards"
            | "replaces"
            | "join"
            | "in-reply-to"
    )
}

impl Proxy {
    /// IP literals in informational headers (Call-Info, Warning, P-*, ...) replaced by the
    /// SBC's address on `x`; the interface's `hide_hosts` replaced in the Request-URI,
    /// From, To and every other non-routing header.
    pub(super) fn mask_informational_headers(&self, msg: &mut SipMessage, x: &ListenerInfo) {
        let none = HostPatterns::default();
        let patterns = self
            .settings
            .hidden_hosts
            .get(&x.interface)
            .unwrap_or(&none);
        let with = x.advertised_host.as_str();
        let hits: Vec<(usize, String)> = msg
            .headers()
            .enumerate()
            .filter_map(|(i, h)| {
                let mut v = h.value.to_string();
                if is_informational_header(h.raw_name) {
                    v = mask_ipv4(&v, with);
                }
                if !patterns.is_empty() && !keeps_hosts(h.raw_name) {
                    v = patterns.mask(&v, with);
                }
                (v != h.value).then_some((i, v))
            })
            .collect();
        for (i, value) in hits {
            msg.set_header_at(i, &value);
        }
        if !patterns.is_empty() {
            if let Some(uri) = msg.request_uri().map(str::to_string) {
                let masked = patterns.mask(&uri, with);
                if masked != uri {
                    msg.set_request_uri(&masked);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{mask_ipv4, HostPatterns};

    #[test]
    fn hidden_hosts_are_replaced_as_whole_host_tokens() {
        let p = HostPatterns::parse(&[
            "corp.internal".into(),
            "198.51.100.0/24".into(),
            "2001:db8::/32".into(),
            "10.1.1.1".into(),
        ]);
        assert_eq!(
            p.mask("<sip:pbx@pbx.corp.internal>;tag=1", "sbc.example"),
            "<sip:pbx@sbc.example>;tag=1"
        );
        assert_eq!(
            p.mask(
                "\"CORP.INTERNAL\" <sip:a@Corp.Internal.:5060;transport=tcp>",
                "s"
            ),
            "\"s\" <sip:a@s.:5060;transport=tcp>"
        );
        // Not a subdomain, only a suffix: kept.
        assert_eq!(
            p.mask("sip:a@notcorp.internal", "s"),
            "sip:a@notcorp.internal"
        );
        assert_eq!(
            p.mask("sip:a@corp.internal.example.com", "s"),
            "sip:a@corp.internal.example.com"
        );
        assert_eq!(
            p.mask(
                "sip:1@198.51.100.7:5060 sip:2@198.51.101.7 10.1.1.1 10.1.1.10",
                "s"
            ),
            "sip:1@s:5060 sip:2@198.51.101.7 s 10.1.1.10"
        );
        assert_eq!(p.mask("sip:a@[2001:db8::5]:5060", "s"), "sip:a@s:5060");
        assert_eq!(p.mask("sip:a@[2001:db9::5]", "s"), "sip:a@[2001:db9::5]");
        assert_eq!(p.mask("naïve 198.51.100.1", "s"), "naïve s");
        assert!(HostPatterns::parse(&[]).is_empty());
    }

    #[test]
    fn ipv4_literals_are_masked_and_nothing_else() {
        assert_eq!(
            mask_ipv4("<http://10.1.2.3/p.png>;purpose=icon", "sbc"),
            "<http://sbc/p.png>;purpose=icon"
        );
        assert_eq!(mask_ipv4("399 198.51.100.3 \"x\"", "sbc"), "399 sbc \"x\"");
        assert_eq!(
            mask_ipv4("v1.2.3.4 and 1.2.3.4a and 300.1.1.1 and 2.5", "sbc"),
            "v1.2.3.4 and 1.2.3.4a and 300.1.1.1 and 2.5"
        );
        assert_eq!(mask_ipv4("a 1.2.3.4. end", "sbc"), "a sbc. end");
    }
}

/// Call-ID masking (S-05, optional per interface): on an interface with
/// `call_id_masking`, the Call-ID of the other side is replaced by an opaque one, and
/// restored on everything that comes back.
#[derive(Debug, Default)]
pub(super) struct CallIdMasks {
    /// masked -> (original, last use)
    by_masked: HashMap<String, (String, Instant)>,
    /// Call-IDs created on the masking side itself (its own calls keep their Call-ID).
    native: HashMap<String, Instant>,
}

impl CallIdMasks {
    pub(super) fn purge(&mut self, now: Instant) {
        self.by_masked.retain(|_, (_, t)| *t + DIALOG_IDLE > now);
        self.native.retain(|_, t| *t + DIALOG_IDLE > now);
    }
}

impl Proxy {
    pub(super) fn masks_call_id(&self, iface: &str) -> bool {
        self.settings
            .policies
            .get(iface)
            .is_some_and(|p| p.topology_hiding && p.call_id_masking)
    }

    /// Replaces the Call-ID by its masked form.
    pub(super) fn mask_call_id(&mut self, now: Instant, msg: &mut SipMessage) {
        let Ok(original) = msg.call_id().map(str::to_string) else {
            return;
        };
        if self.call_id_masks.by_masked.contains_key(&original)
            || self.call_id_masks.native.contains_key(&original)
        {
            return;
        }
        let masked = format!(
            "{}{:016x}",
            MASK_PREFIX,
            super::fnv1a(&[original.as_bytes(), &self.nonce.to_be_bytes()])
        );
        self.call_id_masks
            .by_masked
            .insert(masked.clone(), (original, now));
        msg.set_header(HeaderName::CallId, &masked);
    }

    /// Restores the original Call-ID of a message that came from a masking interface.
    pub(super) fn unmask_call_id(&mut self, now: Instant, msg: &mut SipMessage) {
        let Ok(cid) = msg.call_id() else {
            return;
        };
        if let Some((original, last)) = self.call_id_masks.by_masked.get_mut(cid) {
            *last = now;
            let original = original.clone();
            msg.set_header(HeaderName::CallId, &original);
        } else {
            self.call_id_masks.native.insert(cid.to_string(), now);
        }
    }

    /// Masks the Call-ID of a payload about to leave on `iface` when that interface masks.
    pub(super) fn mask_payload_for(&mut self, now: Instant, iface: &str, payload: Bytes) -> Bytes {
        if !self.masks_call_id(iface) {
            return payload;
        }
        match SipMessage::parse(payload.clone()) {
            Ok(mut m) => {
                self.mask_call_id(now, &mut m);
                m.to_bytes()
            }
            Err(_) => payload,
        }
    }
}

/// Prefix of masked Call-IDs.
const MASK_PREFIX: &str = "pcm";
