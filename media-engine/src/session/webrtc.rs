//! WebRTC termination in offer/answer (RFC 8829 profile as the relay speaks it): toward a
//! party that uses `UDP/TLS/RTP/SAVPF` while the other side is plain RTP, the relay is an
//! ICE-lite agent (RFC 8445 2.5, RFC 8839) with a host candidate on its relay port and a
//! DTLS-SRTP endpoint (RFC 5763/5764, RFC 8842) with the engine's certificate; RTCP is
//! multiplexed (RFC 5761) and the one audio section is bundled (`a=mid`, `a=group:BUNDLE`).
//!
//! This module reads the peer's ICE/DTLS parameters from its SDP and writes ours; the keys
//! and checks themselves are the relay's (`crate::secure::SecureLeg`).

use std::net::IpAddr;
use std::sync::Arc;

use crate::dtls::{answer_setup, dtls_role, DtlsCertificate, Fingerprint, Role, Setup};
use crate::sdp::{Direction, Line, MediaSection, Sdp};
use crate::secure::IceCredentials;

/// WebRTC state of one party's stream when the relay terminates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebrtcLeg {
    /// What we said in `a=setup`.
    pub local_setup: Setup,
    /// What the party said (`None` until its SDP arrives).
    pub remote_setup: Option<Setup>,
    pub remote_fingerprints: Vec<Fingerprint>,
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub remote_ice: Option<(String, String)>,
    /// The party's `a=mid` (we answer with it), or ours when we offer.
    pub mid: Option<String>,
}

impl WebrtcLeg {
    /// A leg for which we write the offer (`actpass`, fresh ICE credentials, `mid`).
    pub fn offering(mid: String) -> WebrtcLeg {
        let (ice_ufrag, ice_pwd) = random_ice();
        WebrtcLeg {
            local_setup: Setup::ActPass,
            remote_setup: None,
            remote_fingerprints: Vec::new(),
            ice_ufrag,
            ice_pwd,
            remote_ice: None,
            mid: Some(mid),
        }
    }

    /// A leg answering the party's offer.
    pub fn answering(peer: PeerParams) -> WebrtcLeg {
        let (ice_ufrag, ice_pwd) = random_ice();
        let remote = peer.setup.unwrap_or(Setup::ActPass);
        WebrtcLeg {
            local_setup: answer_setup(remote),
            remote_setup: Some(remote),
            remote_fingerprints: peer.fingerprints,
            ice_ufrag,
            ice_pwd,
            remote_ice: peer.ice,
            mid: peer.mid,
        }
    }

    /// Takes the party's answer to our offer.
    pub fn learn_answer(&mut self, peer: PeerParams) {
        self.remote_setup = Some(peer.setup.unwrap_or(Setup::Active));
        self.remote_fingerprints = peer.fingerprints;
        self.remote_ice = peer.ice;
    }

    /// Our DTLS role once both setups are known and compatible.
    pub fn role(&self) -> Option<Role> {
        dtls_role(self.local_setup, self.remote_setup?).ok()
    }

    /// Everything the relay needs, once the party's parameters are known.
    pub fn relay_keys(&self, certificate: &Arc<DtlsCertificate>) -> Option<DtlsKeys> {
        if self.remote_fingerprints.is_empty() {
            return None;
        }
        Some(DtlsKeys {
            role: self.role()?,
            certificate: certificate.clone(),
            remote_fingerprints: self.remote_fingerprints.clone(),
            ice: self.remote_ice.as_ref().map(|(u, p)| IceCredentials {
                local_ufrag: self.ice_ufrag.clone(),
                local_pwd: self.ice_pwd.clone(),
                remote_ufrag: u.clone(),
                remote_pwd: p.clone(),
            }),
        })
    }
}

/// What the relay needs to terminate DTLS-SRTP (and ICE-lite) toward a party.
#[derive(Debug, Clone)]
pub struct DtlsKeys {
    pub role: Role,
    pub certificate: Arc<DtlsCertificate>,
    pub remote_fingerprints: Vec<Fingerprint>,
    /// `None`: the party does no ICE (DTLS from its SDP address only).
    pub ice: Option<IceCredentials>,
}

impl PartialEq for DtlsKeys {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role
            && self.certificate.fingerprint() == other.certificate.fingerprint()
            && self.remote_fingerprints == other.remote_fingerprints
            && self.ice == other.ice
    }
}

impl Eq for DtlsKeys {}

/// A party's ICE/DTLS parameters for one media section (media level first, then session
/// level, RFC 8839 5.4 / RFC 8122 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerParams {
    pub setup: Option<Setup>,
    pub fingerprints: Vec<Fingerprint>,
    pub ice: Option<(String, String)>,
    pub mid: Option<String>,
}

fn attr_values<'a>(lines: impl Iterator<Item = &'a Line<'a>>, name: &str) -> Vec<String> {
    lines
        .filter(|l| l.attr_name() == Some(name))
        .map(|l| {
            l.value()
                .split_once(':')
                .map_or(String::new(), |(_, v)| v.trim().to_string())
        })
        .collect()
}

pub(crate) fn read_peer(sdp: &Sdp<'_>, index: usize) -> PeerParams {
    let Some(sec) = sdp.media().get(index) else {
        return PeerParams::default();
    };
    let pick = |name: &str| -> Vec<String> {
        let media = attr_values(sec.attributes(), name);
        if media.is_empty() {
            attr_values(sdp.session_attributes(), name)
        } else {
            media
        }
    };
    let setup = pick("setup").first().and_then(|s| Setup::parse(s));
    let fingerprints = pick("fingerprint")
        .iter()
        .filter_map(|f| Fingerprint::parse_sdp(f).ok())
        .collect();
    let ice = match (pick("ice-ufrag").first(), pick("ice-pwd").first()) {
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u.clone(), p.clone())),
        _ => None,
    };
    let mid = attr_values(sec.attributes(), "mid").into_iter().next();
    PeerParams {
        setup,
        fingerprints,
        ice,
        mid,
    }
}

/// Writes our ICE-lite/DTLS attributes into a media section that is otherwise rewritten
/// already (proto, port, c=, rtcp-mux).
pub(crate) fn write_media(
    sec: &mut MediaSection<'_>,
    leg: &WebrtcLeg,
    certificate: &DtlsCertificate,
    addr: IpAddr,
    port: u16,
    direction: Direction,
) {
    // WebRTC stacks want the direction spelled out (a missing one is sendrecv by RFC 8866,
    // but e.g. aiortc then neither sends nor receives); the effective one, session level
    // included, is written at media level.
    if sec.direction().is_none() {
        sec.push_line(Line::attribute(direction.as_str(), None));
    }
    sec.retain_attributes(|name, _| {
        !matches!(
            name,
            "ice-ufrag" | "ice-pwd" | "fingerprint" | "setup" | "candidate" | "mid" | "crypto"
        )
    });
    if let Some(mid) = &leg.mid {
        sec.push_line(Line::attribute("mid", Some(mid)));
    }
    sec.push_line(Line::attribute("ice-ufrag", Some(&leg.ice_ufrag)));
    sec.push_line(Line::attribute("ice-pwd", Some(&leg.ice_pwd)));
    sec.push_line(Line::attribute(
        "fingerprint",
        Some(&certificate.fingerprint().to_sdp()),
    ));
    sec.push_line(Line::attribute("setup", Some(leg.local_setup.as_str())));
    // Host candidate on the relay port (RFC 8839 5.1; priority per RFC 8445 5.1.2.1 for a
    // host candidate, component 1).
    sec.push_line(Line::attribute(
        "candidate",
        Some(&format!("1 1 udp 2130706431 {addr} {port} typ host")),
    ));
    sec.push_line(Line::attribute("end-of-candidates", None));
    if !sec.has_attribute("rtcp-mux") {
        sec.push_line(Line::attribute("rtcp-mux", None));
    }
}

/// Session-level attributes of an SDP toward a WebRTC party: `a=ice-lite`, and a BUNDLE
/// group of the first WebRTC section only (`mids`: those sections' mids, in order). The relay
/// gives every section its own transport (port, ICE credentials, DTLS), so it cannot carry
/// several sections on one: grouping them would make a browser send all of them to the
/// first section's port. The others stay out of the group, each with its own address (RFC
/// 8843 7.3.2), which a browser's default "balanced" bundle policy accepts.
pub(crate) fn write_session(sdp: &mut Sdp<'_>, mids: &[String]) {
    sdp.retain_session_attributes(|name, line| {
        !(name == "ice-lite"
            || name == "ice-options"
            || name == "fingerprint"
            || name == "setup"
            || (name == "group" && line.value().starts_with("group:BUNDLE")))
    });
    sdp.push_session_line(Line::attribute("ice-lite", None));
    if let Some(first) = mids.first() {
        sdp.push_session_line(Line::attribute("group", Some(&format!("BUNDLE {first}"))));
    }
}

/// ICE credentials (RFC 8839 5.4: ufrag >= 4, pwd >= 22 ice-chars).
fn random_ice() -> (String, String) {
    use ring::rand::SecureRandom;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 32];
    // The OS generator does not fail on Linux once booted; a failure leaves zeros, which
    // still form valid (if predictable) credentials, and is logged.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("OS random generator failed; ICE credentials are not random");
    }
    let s: String = bytes
        .iter()
        .map(|b| CHARS[usize::from(*b) % 64] as char)
        .collect();
    (s[..8].to_string(), s[8..32].to_string())
}
