//! Dialogs of calls with anchored media, kept so that the SBC can end a call itself: when
//! the relay sees no media for the configured time (longer on hold), both legs get a BYE
//! (issue: media anchoring, lifecycle). Each party's Contact, route set, tags and the hop
//! that reaches it are recorded from the INVITE and its 2xx; in-dialog requests keep the
//! CSeq numbers current.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_sip::{HeaderName, NameAddr, SipMessage, SipUri};
use tracing::info;

use super::{Hop, Proxy};
use crate::transport::Destination;

/// One side of an anchored dialog.
#[derive(Debug, Clone)]
pub(super) struct Party {
    /// The party's From/To header value (with its tag).
    pub header: String,
    pub tag: String,
    /// Where requests to the party go (Request-URI).
    pub contact: String,
    /// Route set from the SBC toward the party (beyond our own entries).
    pub route: Vec<String>,
    /// Next hop toward the party.
    pub hop: Hop,
    /// Highest CSeq the party used.
    pub cseq: u32,
}

#[derive(Debug, Clone)]
pub(super) struct AnchoredDialog {
    pub caller: Party,
    pub callee: Party,
    pub hold: bool,
}

#[derive(Debug, Default)]
pub(super) struct Dialogs {
    pub by_call: HashMap<String, AnchoredDialog>,
}

fn uri_of(v: &str) -> Option<String> {
    NameAddr::parse(v, "Record-Route")
        .ok()
        .map(|n| n.uri.to_string())
}

impl Proxy {
    fn is_own_value(&self, v: &str) -> bool {
        uri_of(v)
            .and_then(|u| {
                SipUri::parse(&u)
                    .ok()
                    .and_then(|p| self.local.own_listener_for(&p))
            })
            .is_some()
    }

    /// Records the dialog of an anchored call when its INVITE is answered with a 2xx.
    /// `invite` is the INVITE as forwarded to the callee, `ok` the callee's 2xx, `caller_hop`
    /// the flow the INVITE came from and `callee_hop` where it went.
    pub(super) fn record_dialog(
        &mut self,
        invite: &SipMessage,
        ok: &SipMessage,
        caller_hop: Hop,
        callee_hop: Hop,
    ) {
        let (Ok(call_id), Ok(from), Ok(to)) = (invite.call_id(), invite.from(), ok.to()) else {
            return;
        };
        let (Some(from_tag), Some(to_tag)) = (from.tag(), to.tag()) else {
            return;
        };
        let contact_of = |m: &SipMessage| {
            m.contacts().ok().and_then(|c| {
                c.iter().find_map(|c| match c {
                    portcullis_sip::Contact::Addr(na) => Some(na.uri.to_string()),
                    portcullis_sip::Contact::Star => None,
                })
            })
        };
        let (Some(caller_contact), Some(callee_contact)) = (contact_of(invite), contact_of(ok))
        else {
            return;
        };
        // Record-Route in the 2xx: [callee side..., ours..., caller side...].
        let rr: Vec<String> = ok
            .header_values(HeaderName::RecordRoute)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let first_own = rr.iter().position(|v| self.is_own_value(v));
        let last_own = rr.iter().rposition(|v| self.is_own_value(v));
        let (to_callee, to_caller) = match (first_own, last_own) {
            (Some(f), Some(l)) => (
                rr[..f].iter().rev().cloned().collect(),
                rr[l + 1..].to_vec(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let dialog = AnchoredDialog {
            caller: Party {
                header: invite.header(HeaderName::From).unwrap_or("").to_string(),
                tag: from_tag.to_string(),
                contact: caller_contact,
                route: to_caller,
                hop: caller_hop,
                cseq,
            },
            callee: Party {
                header: ok.header(HeaderName::To).unwrap_or("").to_string(),
                tag: to_tag.to_string(),
                contact: callee_contact,
                route: to_callee,
                hop: callee_hop,
                cseq: 0,
            },
            hold: false,
        };
        self.dialogs.by_call.insert(call_id.to_string(), dialog);
    }

    /// Keeps CSeq numbers and hold state of anchored dialogs current.
    pub(super) fn dialog_request_seen(&mut self, msg: &SipMessage) {
        let Ok(call_id) = msg.call_id() else {
            return;
        };
        let Some(d) = self.dialogs.by_call.get_mut(call_id) else {
            return;
        };
        let from_tag = msg
            .from()
            .ok()
            .and_then(|f| f.tag().map(str::to_string))
            .unwrap_or_default();
        let seq = msg.cseq().map(|c| c.seq).unwrap_or(0);
        if from_tag == d.caller.tag {
            d.caller.cseq = d.caller.cseq.max(seq);
        } else if from_tag == d.callee.tag {
            d.callee.cseq = d.callee.cseq.max(seq);
        }
    }

    pub(super) fn dialog_hold(&mut self, call_id: &str, hold: bool) {
        if let Some(d) = self.dialogs.by_call.get_mut(call_id) {
            d.hold = hold;
        }
    }

    pub(super) fn forget_dialog(&mut self, call_id: &str) {
        self.dialogs.by_call.remove(call_id);
    }

    /// The relay of `call_id` has seen no media for `idle`. Ends the call with a BYE to
    /// both legs when that exceeds the (hold) timeout; returns whether it did.
    pub fn handle_media_idle(&mut self, now: Instant, call_id: &str, idle: Duration) -> bool {
        let Some(d) = self.dialogs.by_call.get(call_id).cloned() else {
            return false;
        };
        let limit = if d.hold {
            self.media_hold_timeout
        } else {
            self.media_timeout
        };
        if limit.is_zero() || idle < limit {
            return false;
        }
        info!(
            call_id,
            idle_s = idle.as_secs(),
            hold = d.hold,
            "media timeout: ending the call"
        );
        for (to, from) in [(&d.caller, &d.callee), (&d.callee, &d.caller)] {
            let bye = self.build_bye(call_id, to, from);
            self.send_own_request(now, to.hop.clone(), bye);
        }
        self.metrics.media_timeout();
        self.forget_dialog(call_id);
        self.media_release(call_id, &d.caller.tag, None);
        true
    }

    /// A BYE to party `to`, sent on behalf of party `from` (the SBC acts as `from`).
    fn build_bye(&self, call_id: &str, to: &Party, from: &Party) -> Bytes {
        let mut s = format!("BYE {} SIP/2.0\r\n", to.contact);
        for r in &to.route {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str("Max-Forwards: 70\r\n");
        s.push_str(&format!("From: {}\r\n", from.header));
        s.push_str(&format!("To: {}\r\n", to.header));
        s.push_str(&format!("Call-ID: {call_id}\r\n"));
        s.push_str(&format!(
            "CSeq: {} BYE\r\n",
            from.cseq.saturating_add(1).max(1)
        ));
        s.push_str("Reason: SIP;cause=408;text=\"Media timeout\"\r\n");
        if !self.settings.server_name.is_empty() {
            s.push_str(&format!("User-Agent: {}\r\n", self.settings.server_name));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        Bytes::from(s)
    }
}

/// The hop of a party reached over the flow a request came from.
pub(super) fn hop_to_source(src: &crate::transport::Source) -> Hop {
    let mut hop = Hop::to(Destination::Addr(src.remote), src.transport, src.listener);
    hop.flow = Some(super::FlowTarget {
        conn: src.conn,
        source: *src,
        aor: String::new(),
        contact: String::new(),
        bound: false,
    });
    hop
}
