//! Codec descriptions read from a media section, and the matching rule used to decide whether
//! an answered format is one that was offered (RFC 3264 6.1).
//!
//! Two formats are the same codec when encoding name (case-insensitive), clock rate and channel
//! count agree. fmtp parameters are compared only where they define the format: H.264
//! `packetization-mode` and the profile of `profile-level-id` (RFC 6184 8.2.2), AMR/AMR-WB
//! `octet-align` and `mode-set` (RFC 4867 8.3.1), iLBC `mode` (RFC 3952), VP9 `profile-id`.
//! Everything else (G.711 and friends, telephone-event events, Opus options) is ignored, so an
//! fmtp-only difference never removes a codec (scenario S-13).

use crate::sdp::{Attr, MediaSection, SdpError};

/// One format of an RTP media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `opus`); `None` for a dynamic type without rtpmap.
    pub name: Option<String>,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: Option<String>,
}

/// RFC 3551 static payload types: (pt, name, clock, channels).
const STATIC: &[(u8, &str, u32, u16)] = &[
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

impl Codec {
    /// Telephone events (RFC 4733) and comfort noise (RFC 3389) are not media codecs: an audio
    /// stream carrying only these has no sound (scenario S-14).
    pub fn is_auxiliary(&self) -> bool {
        self.name.as_deref().is_some_and(|n| {
            n.eq_ignore_ascii_case("telephone-event") || n.eq_ignore_ascii_case("CN")
        })
    }

    /// Same codec in the sense of RFC 3264 offer/answer (see module docs).
    pub fn matches(&self, other: &Codec) -> bool {
        let (Some(a), Some(b)) = (&self.name, &other.name) else {
            // A dynamic type without rtpmap on one side: only the number can say it is the
            // same format (lenient toward answers that omit the rtpmap of an offered type).
            return self.payload_type == other.payload_type;
        };
        if !a.eq_ignore_ascii_case(b)
            || self.clock_rate != other.clock_rate
            || self.channels != other.channels
        {
            return false;
        }
        let p1 = FmtpParams::new(self.fmtp.as_deref());
        let p2 = FmtpParams::new(other.fmtp.as_deref());
        let name = a.to_ascii_uppercase();
        match name.as_str() {
            "H264" => {
                p1.get_or("packetization-mode", "0") == p2.get_or("packetization-mode", "0")
                    && profile_idc(p1.get_or("profile-level-id", "420010"))
                        == profile_idc(p2.get_or("profile-level-id", "420010"))
            }
            "AMR" | "AMR-WB" => {
                p1.get_or("octet-align", "0") == p2.get_or("octet-align", "0")
                    && mode_sets_overlap(p1.get("mode-set"), p2.get("mode-set"))
            }
            "ILBC" => p1.get_or("mode", "30") == p2.get_or("mode", "30"),
            "VP9" => p1.get_or("profile-id", "0") == p2.get_or("profile-id", "0"),
            _ => true,
        }
    }
}

struct FmtpParams<'a>(Vec<(&'a str, &'a str)>);

impl<'a> FmtpParams<'a> {
    fn new(fmtp: Option<&'a str>) -> Self {
        FmtpParams(
            fmtp.unwrap_or("")
                .split(';')
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim(), v.trim()))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn get_or(&self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }
}

/// profile_idc of an H.264 profile-level-id (first byte, hex); the level may legitimately
/// differ between offer and answer.
fn profile_idc(plid: &str) -> String {
    plid.get(..2).unwrap_or(plid).to_ascii_lowercase()
}

/// Absent mode-set means "all modes"; two explicit sets must share a mode.
fn mode_sets_overlap(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let sa: Vec<&str> = a.split(',').map(str::trim).collect();
            b.split(',').map(str::trim).any(|m| sa.contains(&m))
        }
        _ => true,
    }
}

/// The codecs of an RTP media section, in `m=` order. Formats that are not payload type
/// numbers are skipped; a malformed rtpmap is an error.
pub fn codecs_of(section: &MediaSection<'_>) -> Result<Vec<Codec>, SdpError> {
    let m = section.media_line()?;
    let mut rtpmaps = Vec::new();
    let mut fmtps: Vec<(&str, &str)> = Vec::new();
    for line in section.attributes() {
        match line.attr_name() {
            Some("rtpmap") => {
                if let Some(Ok(Attr::Rtpmap(r))) = line.attr() {
                    rtpmaps.push((r.payload_type, r.encoding, r.clock_rate, r.channels));
                } else if let Some(Err(e)) = line.attr() {
                    return Err(e);
                }
            }
            Some("fmtp") => {
                if let Some(Ok(Attr::Fmtp(f))) = line.attr() {
                    fmtps.push((f.format, f.params));
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(m.formats.len());
    for f in &m.formats {
        let Some(pt) = crate::sdp::attr::parse_pt(f) else {
            continue;
        };
        let fmtp = fmtps
            .iter()
            .find(|(fmt, _)| fmt.trim() == *f)
            .map(|(_, p)| p.to_string());
        let codec = match rtpmaps.iter().find(|r| r.0 == pt) {
            Some(&(_, enc, clock, ch)) => Codec {
                payload_type: pt,
                name: Some(enc.to_string()),
                clock_rate: clock,
                channels: ch.unwrap_or(1),
                fmtp,
            },
            None => match STATIC.iter().find(|s| s.0 == pt) {
                Some(&(_, name, clock, ch)) => Codec {
                    payload_type: pt,
                    name: Some(name.to_string()),
                    clock_rate: clock,
                    channels: ch,
                    fmtp,
                },
                None => Codec {
                    payload_type: pt,
                    name: None,
                    clock_rate: 0,
                    channels: 1,
                    fmtp,
                },
            },
        };
        out.push(codec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pt: u8, name: &str, clock: u32, fmtp: Option<&str>) -> Codec {
        Codec {
            payload_type: pt,
            name: Some(name.into()),
            clock_rate: clock,
            channels: 1,
            fmtp: fmtp.map(Into::into),
        }
    }

    #[test]
    fn fmtp_insensitive_codecs_match_despite_fmtp() {
        assert!(c(0, "PCMU", 8000, Some("abc=no")).matches(&c(0, "pcmu", 8000, None)));
        assert!(c(101, "telephone-event", 8000, Some("0-16")).matches(&c(
            96,
            "telephone-event",
            8000,
            Some("0-15")
        )));
        assert!(!c(101, "telephone-event", 8000, None).matches(&c(
            101,
            "telephone-event",
            48000,
            None
        )));
        let mut opus = c(111, "opus", 48000, Some("minptime=10;useinbandfec=1"));
        opus.channels = 2;
        let mut opus2 = c(107, "opus", 48000, None);
        opus2.channels = 2;
        assert!(opus.matches(&opus2));
        assert!(!opus.matches(&c(107, "opus", 48000, None))); // channel count differs
    }

    #[test]
    fn defining_fmtp_params_are_compared() {
        let h1 = c(
            96,
            "H264",
            90000,
            Some("packetization-mode=1;profile-level-id=42e01f"),
        );
        let h2 = c(
            97,
            "H264",
            90000,
            Some("profile-level-id=42e028; packetization-mode=1"),
        );
        let h3 = c(98, "H264", 90000, Some("profile-level-id=42e01f"));
        let h4 = c(
            99,
            "H264",
            90000,
            Some("packetization-mode=1;profile-level-id=640c1f"),
        );
        assert!(h1.matches(&h2));
        assert!(!h1.matches(&h3));
        assert!(!h1.matches(&h4));
        let a1 = c(96, "AMR", 8000, Some("octet-align=1"));
        let a2 = c(97, "AMR", 8000, Some("octet-align=0"));
        let a3 = c(97, "AMR", 8000, None);
        assert!(!a1.matches(&a2));
        assert!(a2.matches(&a3));
        let m1 = c(96, "AMR-WB", 16000, Some("mode-set=0,1,2"));
        let m2 = c(96, "AMR-WB", 16000, Some("mode-set=2"));
        let m3 = c(96, "AMR-WB", 16000, Some("mode-set=8"));
        assert!(m1.matches(&m2));
        assert!(!m1.matches(&m3));
        assert!(!c(97, "iLBC", 8000, Some("mode=20")).matches(&c(97, "iLBC", 8000, None)));
        assert!(c(97, "iLBC", 8000, Some("mode=30")).matches(&c(98, "ILBC", 8000, None)));
    }

    #[test]
    fn missing_rtpmap_matches_by_number() {
        let bare = Codec {
            payload_type: 96,
            name: None,
            clock_rate: 0,
            channels: 1,
            fmtp: None,
        };
        assert!(bare.matches(&c(96, "opus", 48000, None)));
        assert!(!bare.matches(&c(97, "opus", 48000, None)));
    }

    #[test]
    fn auxiliary() {
        assert!(c(101, "telephone-event", 8000, None).is_auxiliary());
        assert!(c(13, "CN", 8000, None).is_auxiliary());
        assert!(!c(0, "PCMU", 8000, None).is_auxiliary());
    }
}
