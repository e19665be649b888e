//! Media anchoring in the proxy (RFC 3264 offer/answer through the media engine): SDP
//! offers in INVITE/UPDATE (and re-INVITEs) are rewritten to the SBC's relay addresses on
//! the egress interface, answers in 18x/2xx on the ingress one, and the datapath is
//! programmed from the resulting stream plans; BYE, CANCEL and a failed INVITE release the
//! session. The proxy stays sans-IO: datapath work is emitted as [`MediaCommand`]s.
//!
//! Not yet: late offers (SDP first in the 2xx, answer in the ACK) pass through unanchored,
//! and media timeouts (BYE to both legs) need the dialog state a later slice adds.

use media_engine::{AnswerRequest, Flags, MediaEngine, MediaInterface, OfferRequest, StreamPlan};
use portcullis_config::Config;
use portcullis_sip::SipMessage;
use tracing::{debug, warn};

use super::Proxy;

/// Datapath work for the IO layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Relay these streams for the call (replacing what was relayed for it before).
    Program {
        call_id: String,
        streams: Vec<StreamPlan>,
    },
    /// Stop relaying for the call and free its sockets.
    Release { call_id: String },
}

/// The media engine with the interfaces it serves.
pub(super) fn engine_from_config(cfg: &Config) -> Option<MediaEngine> {
    let interfaces: Vec<MediaInterface> = cfg
        .interfaces
        .iter()
        .filter_map(|i| {
            let m = i.media.as_ref()?;
            Some(MediaInterface {
                name: i.name.clone(),
                address: m.address,
                advertised_address: m.advertised_address,
                port_min: m.port_min,
                port_max: m.port_max,
            })
        })
        .collect();
    if interfaces.is_empty() {
        return None;
    }
    match MediaEngine::new(interfaces) {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(error = %e, "media engine disabled: invalid media interfaces");
            None
        }
    }
}

fn is_sdp(msg: &SipMessage) -> bool {
    !msg.body().is_empty()
        && msg
            .content_type()
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

fn tag_of(v: Option<String>) -> String {
    v.unwrap_or_default()
}

impl Proxy {
    /// Whether a call between these interfaces has its media anchored: both have a media
    /// address, and either side's policy asks for anchoring (media bypass only when neither
    /// does).
    pub(super) fn anchors(&self, a: &str, b: &str) -> bool {
        if self.media.is_none() {
            return false;
        }
        let has_media = |i: &str| self.media_interfaces.iter().any(|m| m == i);
        let policy = |i: &str| {
            self.settings
                .policies
                .get(i)
                .is_some_and(|p| p.anchor_media)
        };
        has_media(a) && has_media(b) && (policy(a) || policy(b))
    }

    /// Offer flags toward `egress` from its media profile: the transport protocol of the
    /// produced SDP (RTP/AVP or RTP/SAVP; SRTP is terminated by the relay where they differ).
    fn offer_flags(&self, egress: &str) -> Flags {
        use portcullis_config::MediaProfile;
        let transport = match self.media_profiles.get(egress) {
            Some(MediaProfile::Plain) => Some("RTP/AVP".to_string()),
            Some(MediaProfile::Sdes) => Some("RTP/SAVP".to_string()),
            Some(MediaProfile::Webrtc) => Some("UDP/TLS/RTP/SAVPF".to_string()),
            Some(MediaProfile::Keep) | None => None,
        };
        Flags {
            transport,
            ..Flags::default()
        }
    }

    /// Rewrites the SDP offer of a request about to be sent from `ingress` to `egress`.
    /// Returns the SIP status to answer with when the offer cannot be anchored.
    pub(super) fn media_offer(
        &mut self,
        msg: &mut SipMessage,
        branch: &str,
        ingress: &str,
        egress: &str,
    ) -> Result<bool, u16> {
        if !is_sdp(msg) || !self.anchors(ingress, egress) {
            return Ok(false);
        }
        let call_id = msg.call_id().unwrap_or("").to_string();
        let from_tag = tag_of(msg.from().ok().and_then(|f| f.tag().map(str::to_string)));
        let to_tag = msg.to().ok().and_then(|t| t.tag().map(str::to_string));
        let sdp = msg.body().to_vec();
        // Session limit per interface (new calls only).
        let is_new = self
            .media
            .as_ref()
            .is_some_and(|e| e.query(&call_id).is_none());
        if is_new {
            for iface in [ingress, egress] {
                let limit = self.media_limits.get(iface).copied().unwrap_or(0);
                let used = self.media_calls.get(iface).map_or(0, |c| c.len());
                if limit > 0 && used >= limit as usize {
                    warn!(
                        call_id,
                        interface = iface,
                        limit,
                        "media session limit reached"
                    );
                    return Err(503);
                }
            }
        }
        let flags = self.offer_flags(egress);
        let Some(engine) = self.media.as_mut() else {
            return Ok(false);
        };
        let req = OfferRequest {
            call_id: &call_id,
            from_tag: &from_tag,
            to_tag: to_tag.as_deref(),
            via_branch: Some(branch),
            sdp: &sdp,
            ingress_interface: ingress,
            egress_interface: egress,
            flags,
        };
        match engine.offer(&req) {
            Ok(resp) => {
                msg.set_body(bytes::Bytes::from(resp.sdp), Some("application/sdp"));
                let hold = resp.hold;
                if to_tag.is_some() {
                    // A re-offer in an established dialog: the ports stay, the peers may
                    // change (hold, new address), so the relay is reprogrammed now.
                    self.media_out.push_back(MediaCommand::Program {
                        call_id: call_id.clone(),
                        streams: resp.streams,
                    });
                }
                self.metrics.media_sessions(engine.call_count());
                for iface in [ingress, egress] {
                    self.media_calls
                        .entry(iface.to_string())
                        .or_default()
                        .insert(call_id.clone());
                }
                self.dialog_hold(&call_id, hold);
                Ok(true)
            }
            Err(e) => {
                warn!(call_id, error = %e, "SDP offer cannot be anchored");
                Err(e.sip_status())
            }
        }
    }

    /// Rewrites the SDP answer of a response to an anchored offer and programs the relay.
    pub(super) fn media_answer(&mut self, msg: &mut SipMessage, branch: &str) {
        if !is_sdp(msg) {
            return;
        }
        let call_id = msg.call_id().unwrap_or("").to_string();
        let from_tag = tag_of(msg.from().ok().and_then(|f| f.tag().map(str::to_string)));
        let to_tag = tag_of(msg.to().ok().and_then(|t| t.tag().map(str::to_string)));
        let sdp = msg.body().to_vec();
        let Some(engine) = self.media.as_mut() else {
            return;
        };
        let req = AnswerRequest {
            call_id: &call_id,
            from_tag: &from_tag,
            to_tag: &to_tag,
            via_branch: Some(branch),
            sdp: &sdp,
            flags: Flags::default(),
        };
        match engine.answer(&req) {
            Ok(resp) => {
                msg.set_body(bytes::Bytes::from(resp.sdp), Some("application/sdp"));
                if resp.hold {
                    self.dialog_hold(&call_id, true);
                }
                self.media_out.push_back(MediaCommand::Program {
                    call_id,
                    streams: resp.streams,
                });
            }
            Err(e) => {
                // S-14 and friends: the answer is forwarded as it is (media not anchored
                // for this exchange) and counted.
                warn!(call_id, error = %e, "SDP answer cannot be anchored; forwarding it unchanged");
                self.metrics.media_answer_failed();
            }
        }
    }

    /// Releases the media of a call (BYE, CANCEL, failed INVITE).
    pub(super) fn media_release(&mut self, call_id: &str, from_tag: &str, to_tag: Option<&str>) {
        self.late_offers.remove(call_id);
        let Some(engine) = self.media.as_mut() else {
            return;
        };
        let outcome = engine.delete(call_id, from_tag, to_tag);
        debug!(call_id, ?outcome, "media session released");
        self.metrics.media_sessions(engine.call_count());
        if engine.query(call_id).is_none() {
            for calls in self.media_calls.values_mut() {
                calls.remove(call_id);
            }
            self.media_out.push_back(MediaCommand::Release {
                call_id: call_id.to_string(),
            });
        }
    }

    /// Next datapath command for the IO layer.
    pub fn poll_media(&mut self) -> Option<MediaCommand> {
        self.media_out.pop_front()
    }

    /// Relay ports in use and free per interface (for metrics).
    pub fn media_port_usage(&self) -> Vec<media_engine::PortUsage> {
        self.media
            .as_ref()
            .map(|e| e.port_usage())
            .unwrap_or_default()
    }
}

/// A late offer (RFC 3264 with the offer in the 2xx and the answer in the ACK) waiting for
/// its ACK.
#[derive(Debug, Clone)]
pub(super) struct LateOffer {
    /// Tag of the callee (the offerer).
    pub offerer_tag: String,
    /// Tag of the caller (the answerer).
    pub answerer_tag: String,
}

impl Proxy {
    /// A 2xx with SDP to an INVITE that carried none: the SDP is the callee's offer toward
    /// the caller; the answer comes in the ACK.
    pub(super) fn media_late_offer(
        &mut self,
        msg: &mut SipMessage,
        callee_iface: &str,
        caller_iface: &str,
    ) {
        if !is_sdp(msg) || !self.anchors(caller_iface, callee_iface) {
            return;
        }
        let call_id = msg.call_id().unwrap_or("").to_string();
        let caller_tag = tag_of(msg.from().ok().and_then(|f| f.tag().map(str::to_string)));
        let callee_tag = tag_of(msg.to().ok().and_then(|t| t.tag().map(str::to_string)));
        let sdp = msg.body().to_vec();
        let flags = self.offer_flags(caller_iface);
        let Some(engine) = self.media.as_mut() else {
            return;
        };
        let req = OfferRequest {
            call_id: &call_id,
            from_tag: &callee_tag,
            to_tag: Some(&caller_tag),
            via_branch: None,
            sdp: &sdp,
            ingress_interface: callee_iface,
            egress_interface: caller_iface,
            flags,
        };
        match engine.offer(&req) {
            Ok(resp) => {
                msg.set_body(bytes::Bytes::from(resp.sdp), Some("application/sdp"));
                self.metrics.media_sessions(engine.call_count());
                self.late_offers.insert(
                    call_id,
                    LateOffer {
                        offerer_tag: callee_tag,
                        answerer_tag: caller_tag,
                    },
                );
            }
            Err(e) => {
                warn!(call_id, error = %e, "late SDP offer cannot be anchored; forwarding it unchanged")
            }
        }
    }

    /// The ACK answering a late offer: its SDP is rewritten and the relay programmed.
    pub(super) fn media_late_answer(&mut self, msg: &mut SipMessage) {
        let call_id = msg.call_id().unwrap_or("").to_string();
        let Some(late) = self.late_offers.remove(&call_id) else {
            return;
        };
        if !is_sdp(msg) {
            return;
        }
        let sdp = msg.body().to_vec();
        let Some(engine) = self.media.as_mut() else {
            return;
        };
        let req = AnswerRequest {
            call_id: &call_id,
            from_tag: &late.offerer_tag,
            to_tag: &late.answerer_tag,
            via_branch: None,
            sdp: &sdp,
            flags: Flags::default(),
        };
        match engine.answer(&req) {
            Ok(resp) => {
                msg.set_body(bytes::Bytes::from(resp.sdp), Some("application/sdp"));
                self.media_out.push_back(MediaCommand::Program {
                    call_id,
                    streams: resp.streams,
                });
            }
            Err(e) => {
                warn!(call_id, error = %e, "SDP answer in the ACK cannot be anchored; forwarding it unchanged");
                self.metrics.media_answer_failed();
            }
        }
    }
}
