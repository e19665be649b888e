//! Reading the facts of an SDP (addresses, ports, rtcp-mux, direction, codecs per media
//! section) and rewriting a description so that media flows through the relay.
//!
//! Rewrites: `o=` address, `c=` (session and media level), `m=` port/proto/formats, `a=rtcp`
//! (RFC 3605), `a=rtcp-mux` (RFC 5761); ICE attributes (RFC 8839) are always removed because
//! the candidates point at the peer, not at the relay; DTLS and WebRTC-only attributes are
//! removed when the produced SDP is for a plain RTP leg (scenario S-16). Everything else is
//! left as it was, in place.

use std::net::{IpAddr, SocketAddr};

use super::codec::{codecs_of, Codec};
use crate::ports::RelayPorts;
use crate::sdp::{self, Attr, Direction, Line, MediaLine, MediaSection, Sdp, SdpError};

/// What one media section of a received SDP says.
#[derive(Debug, Clone)]
pub(crate) struct StreamFacts {
    pub media: String,
    pub proto: String,
    pub port: u16,
    pub rtp: bool,
    pub peer_rtp: Option<SocketAddr>,
    pub peer_rtcp: Option<SocketAddr>,
    pub mux: bool,
    pub mux_only: bool,
    pub direction: Direction,
    /// `c=0.0.0.0` / `c=::` without ICE: RFC 2543 style hold.
    pub zero_hold: bool,
    pub codecs: Vec<Codec>,
    /// Values of the section's `a=crypto` attributes (RFC 4568), in order.
    pub crypto: Vec<String>,
}

impl StreamFacts {
    /// The sender of this SDP puts the stream on hold (RFC 6337 5.3: sendonly or inactive, or
    /// the RFC 2543 zero address).
    pub fn is_hold(&self) -> bool {
        self.port != 0
            && (self.zero_hold
                || matches!(self.direction, Direction::SendOnly | Direction::Inactive))
    }
}

/// Read the per-stream facts of `sdp`.
pub(crate) fn read_facts(sdp: &Sdp<'_>) -> Result<Vec<StreamFacts>, SdpError> {
    let sess_conn = sdp.connection().transpose()?;
    let sess_ip = sess_conn.as_ref().and_then(|c| c.ip());
    let sess_dir = sdp::session_direction(sdp);
    let sess_ice = sdp
        .session_attributes()
        .any(|l| matches!(l.attr_name(), Some("ice-ufrag" | "ice-lite")));
    let mut out = Vec::with_capacity(sdp.media().len());
    for sec in sdp.media() {
        let m = sec.media_line()?;
        let ip = match sec.connection().transpose()? {
            Some(c) => c.ip(),
            None => sess_ip,
        };
        let ice = sess_ice || sec.has_attribute("ice-ufrag") || sec.has_attribute("candidate");
        let zero = ip.is_some_and(|ip| ip.is_unspecified());
        let direction = sec.direction().or(sess_dir).unwrap_or(Direction::SendRecv);
        let mux_only = sec.has_attribute("rtcp-mux-only");
        let mux = mux_only || sec.has_attribute("rtcp-mux");
        let usable_ip = ip.filter(|ip| !ip.is_unspecified());
        let peer_rtp = usable_ip
            .filter(|_| m.port != 0)
            .map(|ip| SocketAddr::new(ip, m.port));
        let rtcp_attr = match sec.attribute("rtcp").and_then(Line::attr) {
            Some(Ok(Attr::Rtcp(r))) => Some((r.port, r.address.and_then(|a| a.parse().ok()))),
            Some(Err(e)) => return Err(e),
            _ => None,
        };
        let peer_rtcp = if mux || peer_rtp.is_none() {
            None
        } else if let Some((port, addr)) = rtcp_attr {
            addr.or(usable_ip)
                .filter(|ip: &IpAddr| !ip.is_unspecified())
                .map(|ip| SocketAddr::new(ip, port))
        } else {
            peer_rtp.and_then(|p| Some(SocketAddr::new(p.ip(), p.port().checked_add(1)?)))
        };
        let codecs = if m.is_rtp() {
            codecs_of(sec)?
        } else {
            Vec::new()
        };
        out.push(StreamFacts {
            media: m.media.to_string(),
            proto: m.proto.to_string(),
            port: m.port,
            rtp: m.is_rtp(),
            peer_rtp,
            peer_rtcp,
            mux,
            mux_only,
            direction,
            zero_hold: zero && !ice,
            codecs,
            crypto: sec
                .attributes()
                .filter(|l| l.attr_name() == Some("crypto"))
                .filter_map(|l| l.value().split_once(':').map(|(_, v)| v.to_string()))
                .collect(),
        });
    }
    Ok(out)
}

/// True for protocols that WebRTC uses (DTLS-SRTP with feedback).
pub(crate) fn is_webrtc_proto(proto: &str) -> bool {
    proto.contains("TLS") || proto.ends_with("SAVPF")
}

pub(crate) fn is_dtls(proto: &str) -> bool {
    proto.contains("TLS")
}

fn is_feedback(proto: &str) -> bool {
    proto.ends_with("AVPF")
}

pub(crate) fn is_secure(proto: &str) -> bool {
    proto.contains("SAVP")
}

/// RTP protocol the relay cannot convert from/to without terminating crypto.
pub(crate) fn needs_crypto_termination(from: &str, to: &str) -> bool {
    from != to && (is_secure(from) || is_secure(to))
}

const ICE_ATTRS: &[&str] = &[
    "candidate",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "remote-candidates",
    "ice-pacing",
];

const WEBRTC_ONLY_ATTRS: &[&str] = &[
    "ssrc",
    "ssrc-group",
    "msid",
    "msid-semantic",
    "extmap",
    "extmap-allow-mixed",
    "mid",
    "bundle-only",
    "rid",
    "simulcast",
    "sctp-port",
    "max-message-size",
];

/// Whether the attribute `name` (line `line`) must go when an SDP written in `in_proto` is
/// re-written for `out_proto`.
pub(crate) fn strip_attribute(
    name: &str,
    line: &Line<'_>,
    in_proto: &str,
    out_proto: &str,
) -> bool {
    if ICE_ATTRS.contains(&name) {
        return true;
    }
    let leaving_dtls = is_dtls(in_proto) && !is_dtls(out_proto);
    if leaving_dtls && matches!(name, "fingerprint" | "setup" | "tls-id") {
        return true;
    }
    let leaving_feedback = is_feedback(in_proto) && !is_feedback(out_proto);
    if leaving_feedback && matches!(name, "rtcp-fb" | "rtcp-rsize") {
        return true;
    }
    let leaving_webrtc = is_webrtc_proto(in_proto) && !is_webrtc_proto(out_proto);
    if leaving_webrtc {
        if WEBRTC_ONLY_ATTRS.contains(&name) {
            return true;
        }
        if name == "group" && line.value().starts_with("group:BUNDLE") {
            return true;
        }
    }
    if name == "crypto" && is_secure(in_proto) && !is_secure(out_proto) {
        return true;
    }
    false
}

/// Rewrite the session part: origin address, session `c=` and session-level attributes.
pub(crate) fn rewrite_session(
    sdp: &mut Sdp<'_>,
    addr: IpAddr,
    keep_origin: bool,
    keep_zero_connection: bool,
    in_proto: &str,
    out_proto: &str,
) -> Result<(), SdpError> {
    if !keep_origin {
        sdp.set_origin_address(addr)?;
    }
    let zero = matches!(sdp.connection(), Some(Ok(c)) if c.is_unspecified());
    if !(zero && keep_zero_connection) {
        sdp.set_connection(addr);
    }
    sdp.retain_session_attributes(|name, line| !strip_attribute(name, line, in_proto, out_proto));
    Ok(())
}

/// How one media section is to be written.
pub(crate) struct MediaRewrite<'s> {
    pub ports: RelayPorts,
    pub addr: IpAddr,
    pub in_proto: &'s str,
    pub out_proto: &'s str,
    /// Formats to keep (in `m=` order); `None` keeps all.
    pub keep_formats: Option<&'s [u8]>,
    /// Signal rtcp-mux in the produced section.
    pub mux: bool,
    /// Keep a zero `c=` address (hold) as it is.
    pub keep_zero: bool,
    /// The session has a `c=` line that applies to this section.
    pub session_has_connection: bool,
}

/// Rewrite an active (non-zero port) media section.
pub(crate) fn rewrite_media(
    sec: &mut MediaSection<'_>,
    rw: &MediaRewrite<'_>,
) -> Result<(), SdpError> {
    let m_text = {
        let m = sec.media_line()?;
        let formats: Vec<&str> = match rw.keep_formats {
            Some(keep) => m
                .formats
                .iter()
                .copied()
                .filter(|f| sdp::attr::parse_pt(f).is_some_and(|pt| keep.contains(&pt)))
                .collect(),
            None => m.formats.clone(),
        };
        MediaLine {
            media: m.media,
            port: rw.ports.rtp,
            port_count: None,
            proto: rw.out_proto,
            formats,
        }
        .to_string()
    };
    sec.set_media_value(&m_text)?;

    let zero = matches!(sec.connection(), Some(Ok(c)) if c.is_unspecified());
    let keep_hold_address = zero && rw.keep_zero;
    if !keep_hold_address {
        let had_connection = sec.set_connection(rw.addr);
        if !had_connection && !rw.session_has_connection {
            sec.insert_connection(rw.addr);
        }
    }

    let keep_pt = |value: &str| -> bool {
        let Some(keep) = rw.keep_formats else {
            return true;
        };
        let fmt = value
            .split_once(':')
            .map_or("", |(_, v)| v)
            .split(' ')
            .next()
            .unwrap_or("");
        // rtcp-fb:* applies to all formats.
        fmt == "*" || sdp::attr::parse_pt(fmt).is_none_or(|pt| keep.contains(&pt))
    };
    sec.retain_attributes(|name, line| {
        if strip_attribute(name, line, rw.in_proto, rw.out_proto) {
            return false;
        }
        match name {
            "rtpmap" | "fmtp" | "rtcp-fb" => keep_pt(line.value()),
            "rtcp-mux" | "rtcp-mux-only" => rw.mux,
            _ => true,
        }
    });
    if rw.mux && !sec.has_attribute("rtcp-mux") {
        sec.push_line(Line::attribute("rtcp-mux", None));
    }

    // a=rtcp (RFC 3605): point it at our RTCP port (or the RTP port when multiplexed).
    let rtcp_port = rw.ports.rtcp.unwrap_or(rw.ports.rtp);
    let with_addr = format!("{rtcp_port} IN {} {}", sdp::addr_type(rw.addr), rw.addr);
    let existing = match sec.attribute("rtcp").and_then(Line::attr) {
        Some(Ok(Attr::Rtcp(r))) => Some(r.address.is_some()),
        _ => None,
    };
    match existing {
        Some(true) => {
            sec.replace_attribute("rtcp", Line::attribute("rtcp", Some(&with_addr)));
        }
        Some(false) => {
            sec.replace_attribute(
                "rtcp",
                Line::attribute("rtcp", Some(&rtcp_port.to_string())),
            );
        }
        None => {
            if let Some(p) = rw.ports.rtcp {
                if Some(p) != rw.ports.rtp.checked_add(1) {
                    sec.push_line(Line::attribute("rtcp", Some(&with_addr)));
                }
            }
        }
    }
    Ok(())
}

/// Write a disabled stream: port 0, given protocol, `c=` pointing at the relay (the peer's
/// address must not leak), no `a=rtcp`, WebRTC/ICE attributes stripped; with `bare`, every
/// attribute goes (a stream the other leg cannot carry at all).
pub(crate) fn disable_media(
    sec: &mut MediaSection<'_>,
    addr: IpAddr,
    in_proto: &str,
    out_proto: &str,
    bare: bool,
) -> Result<(), SdpError> {
    let m_text = {
        let m = sec.media_line()?;
        MediaLine {
            port: 0,
            port_count: None,
            proto: out_proto,
            ..m
        }
        .to_string()
    };
    sec.set_media_value(&m_text)?;
    let zero = matches!(sec.connection(), Some(Ok(c)) if c.is_unspecified());
    if !zero {
        sec.set_connection(addr);
    }
    if bare {
        sec.retain_lines(|l| l.kind() == b'c');
    } else {
        sec.retain_attributes(|name, line| {
            name != "rtcp" && !strip_attribute(name, line, in_proto, out_proto)
        });
    }
    Ok(())
}
