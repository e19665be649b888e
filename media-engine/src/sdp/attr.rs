//! Typed views of SDP attributes (`a=` lines) that the engine reads or rewrites.
//!
//! rtpmap/fmtp/ptime (RFC 8866 6), rtcp (RFC 3605), rtcp-mux (RFC 5761), direction
//! (RFC 3264 5.1), candidate/ice-* (RFC 8839), fingerprint/setup (RFC 8122), mid/group
//! (RFC 5888, RFC 8843), ssrc (RFC 5576), msid (RFC 8830), extmap (RFC 8285), rtcp-fb
//! (RFC 4585) and crypto (RFC 4568). Unknown attributes are [`Attr::Other`].

use super::SdpError;
use std::fmt;

/// Media direction (RFC 3264 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn from_name(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The party using this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The party using this direction wants to receive media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap<'a> {
    pub payload_type: u8,
    pub encoding: &'a str,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

/// `a=fmtp:<fmt> <params>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp<'a> {
    pub format: &'a str,
    pub params: &'a str,
}

impl<'a> Fmtp<'a> {
    /// `key=value` pairs separated by `;` (keys compared case-insensitively by callers).
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.params.split(';').filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            Some(match p.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (p, ""),
            })
        })
    }
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp<'a> {
    pub port: u16,
    pub net_type: Option<&'a str>,
    pub addr_type: Option<&'a str>,
    pub address: Option<&'a str>,
}

/// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub foundation: &'a str,
    pub component: u16,
    pub transport: &'a str,
    pub priority: u32,
    pub address: &'a str,
    pub port: u16,
    pub typ: &'a str,
    /// Extension attributes after the type (raddr, rport, generation, ...).
    pub rest: &'a str,
}

/// `a=setup:` (RFC 4145/8122).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

/// `a=crypto:<tag> <suite> <key-params> [<session-params>]` (RFC 4568)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto<'a> {
    pub tag: u32,
    pub suite: &'a str,
    pub key_params: &'a str,
    pub session_params: Option<&'a str>,
}

/// `a=extmap:<id>[/<direction>] <uri> [<extension attributes>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extmap<'a> {
    pub id: u16,
    pub direction: Option<Direction>,
    pub uri: &'a str,
    pub ext: Option<&'a str>,
}

/// A typed attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr<'a> {
    Rtpmap(Rtpmap<'a>),
    Fmtp(Fmtp<'a>),
    Rtcp(Rtcp<'a>),
    RtcpMux,
    RtcpMuxOnly,
    RtcpRsize,
    Direction(Direction),
    Candidate(Candidate<'a>),
    EndOfCandidates,
    IceUfrag(&'a str),
    IcePwd(&'a str),
    IceOptions(&'a str),
    IceLite,
    Fingerprint {
        hash: &'a str,
        value: &'a str,
    },
    Setup(Setup),
    Mid(&'a str),
    Group {
        semantics: &'a str,
        ids: Vec<&'a str>,
    },
    Ssrc {
        ssrc: u32,
        attribute: &'a str,
    },
    SsrcGroup {
        semantics: &'a str,
        ssrcs: Vec<u32>,
    },
    Msid {
        stream: &'a str,
        track: Option<&'a str>,
    },
    MsidSemantic(&'a str),
    Extmap(Extmap<'a>),
    RtcpFb {
        format: &'a str,
        value: &'a str,
    },
    Crypto(Crypto<'a>),
    Ptime(u32),
    MaxPtime(u32),
    Other {
        name: &'a str,
        value: Option<&'a str>,
    },
}

impl<'a> Attr<'a> {
    /// Parse the value of an `a=` line (the text after `a=`).
    pub fn parse(text: &'a str) -> Result<Attr<'a>, SdpError> {
        let (name, value) = match text.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        let bad = |reason: &'static str| SdpError::BadAttribute {
            name: name.to_string(),
            text: text.to_string(),
            reason,
        };
        let need = || value.ok_or_else(|| bad("missing value"));
        let fields = |v: &'a str| v.split(' ').filter(|s| !s.is_empty());
        Ok(match name {
            "rtpmap" => {
                let v = need()?;
                let (pt, enc) = v.split_once(' ').ok_or_else(|| bad("missing encoding"))?;
                let payload_type = parse_pt(pt).ok_or_else(|| bad("payload type not 0-127"))?;
                let mut parts = enc.trim().split('/');
                let encoding = parts
                    .next()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| bad("missing encoding name"))?;
                let clock_rate = parts
                    .next()
                    .and_then(|c| c.parse::<u32>().ok())
                    .filter(|&c| c > 0)
                    .ok_or_else(|| bad("missing or bad clock rate"))?;
                let channels = match parts.next() {
                    Some(c) => Some(c.parse::<u16>().map_err(|_| bad("bad channel count"))?),
                    None => None,
                };
                if parts.next().is_some() {
                    return Err(bad("too many fields"));
                }
                Attr::Rtpmap(Rtpmap {
                    payload_type,
                    encoding,
                    clock_rate,
                    channels,
                })
            }
            "fmtp" => {
                let v = need()?;
                let (format, params) = v.split_once(' ').unwrap_or((v, ""));
                if format.is_empty() {
                    return Err(bad("missing format"));
                }
                Attr::Fmtp(Fmtp {
                    format,
                    params: params.trim(),
                })
            }
            "rtcp" => {
                let v = need()?;
                let mut it = fields(v);
                let port = it
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| bad("bad port"))?;
                let net_type = it.next();
                let addr_type = it.next();
                let address = it.next();
                if net_type.is_some() && address.is_none() {
                    return Err(bad("incomplete address"));
                }
                Attr::Rtcp(Rtcp {
                    port,
                    net_type,
                    addr_type,
                    address,
                })
            }
            "rtcp-mux" => Attr::RtcpMux,
            "rtcp-mux-only" => Attr::RtcpMuxOnly,
            "rtcp-rsize" => Attr::RtcpRsize,
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => {
                Attr::Direction(Direction::from_name(name).ok_or_else(|| bad("direction"))?)
            }
            "candidate" => {
                let v = need()?;
                let mut it = v.splitn(9, ' ');
                let mut next = |what| it.next().filter(|s| !s.is_empty()).ok_or_else(|| bad(what));
                let foundation = next("missing foundation")?;
                let component = next("missing component")?
                    .parse()
                    .map_err(|_| bad("bad component"))?;
                let transport = next("missing transport")?;
                let priority = next("missing priority")?
                    .parse()
                    .map_err(|_| bad("bad priority"))?;
                let address = next("missing address")?;
                let port = next("missing port")?.parse().map_err(|_| bad("bad port"))?;
                if next("missing typ")? != "typ" {
                    return Err(bad("expected typ"));
                }
                let typ = next("missing candidate type")?;
                let rest = it.next().unwrap_or("");
                Attr::Candidate(Candidate {
                    foundation,
                    component,
                    transport,
                    priority,
                    address,
                    port,
                    typ,
                    rest,
                })
            }
            "end-of-candidates" => Attr::EndOfCandidates,
            "ice-ufrag" => Attr::IceUfrag(need()?),
            "ice-pwd" => Attr::IcePwd(need()?),
            "ice-options" => Attr::IceOptions(need()?),
            "ice-lite" => Attr::IceLite,
            "fingerprint" => {
                let (hash, value) = need()?
                    .split_once(' ')
                    .ok_or_else(|| bad("missing fingerprint"))?;
                Attr::Fingerprint {
                    hash,
                    value: value.trim(),
                }
            }
            "setup" => Attr::Setup(match need()? {
                "active" => Setup::Active,
                "passive" => Setup::Passive,
                "actpass" => Setup::ActPass,
                "holdconn" => Setup::HoldConn,
                _ => return Err(bad("unknown role")),
            }),
            "mid" => Attr::Mid(need()?),
            "group" => {
                let mut it = fields(need()?);
                let semantics = it.next().ok_or_else(|| bad("missing semantics"))?;
                Attr::Group {
                    semantics,
                    ids: it.collect(),
                }
            }
            "ssrc" => {
                let v = need()?;
                let (id, attribute) = v.split_once(' ').unwrap_or((v, ""));
                let ssrc = id.parse().map_err(|_| bad("bad ssrc"))?;
                Attr::Ssrc { ssrc, attribute }
            }
            "ssrc-group" => {
                let mut it = fields(need()?);
                let semantics = it.next().ok_or_else(|| bad("missing semantics"))?;
                let ssrcs = it
                    .map(|s| s.parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| bad("bad ssrc"))?;
                Attr::SsrcGroup { semantics, ssrcs }
            }
            "msid" => {
                let mut it = fields(need()?);
                let stream = it.next().ok_or_else(|| bad("missing stream id"))?;
                Attr::Msid {
                    stream,
                    track: it.next(),
                }
            }
            "msid-semantic" => Attr::MsidSemantic(need()?.trim()),
            "extmap" => {
                let v = need()?;
                let mut it = v.splitn(3, ' ');
                let idf = it.next().unwrap_or("");
                let uri = it
                    .next()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| bad("missing uri"))?;
                let (id, direction) = match idf.split_once('/') {
                    Some((i, d)) => (
                        i,
                        Some(Direction::from_name(d).ok_or_else(|| bad("bad direction"))?),
                    ),
                    None => (idf, None),
                };
                let id = id
                    .parse::<u16>()
                    .ok()
                    .filter(|&i| (1..=255).contains(&i))
                    .ok_or_else(|| bad("bad id"))?;
                Attr::Extmap(Extmap {
                    id,
                    direction,
                    uri,
                    ext: it.next(),
                })
            }
            "rtcp-fb" => {
                let v = need()?;
                let (format, value) = v.split_once(' ').ok_or_else(|| bad("missing value"))?;
                Attr::RtcpFb { format, value }
            }
            "crypto" => {
                let mut it = fields(need()?);
                let tag = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("bad tag"))?;
                let suite = it.next().ok_or_else(|| bad("missing suite"))?;
                let key_params = it.next().ok_or_else(|| bad("missing key params"))?;
                Attr::Crypto(Crypto {
                    tag,
                    suite,
                    key_params,
                    session_params: it.next(),
                })
            }
            "ptime" => Attr::Ptime(parse_ms(need()?).ok_or_else(|| bad("bad ptime"))?),
            "maxptime" => Attr::MaxPtime(parse_ms(need()?).ok_or_else(|| bad("bad maxptime"))?),
            _ => Attr::Other { name, value },
        })
    }
}

/// RTP payload type number 0-127.
pub fn parse_pt(s: &str) -> Option<u8> {
    s.trim().parse::<u8>().ok().filter(|&p| p <= 127)
}

fn parse_ms(s: &str) -> Option<u32> {
    let s = s.trim();
    // Some phones send fractional ptime ("20.0"); keep the integer part.
    let int = s.split_once('.').map_or(s, |(i, _)| i);
    int.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_attributes() {
        assert_eq!(
            Attr::parse("rtpmap:111 opus/48000/2").unwrap(),
            Attr::Rtpmap(Rtpmap {
                payload_type: 111,
                encoding: "opus",
                clock_rate: 48000,
                channels: Some(2)
            })
        );
        let Attr::Fmtp(f) = Attr::parse("fmtp:111 minptime=10;useinbandfec=1").unwrap() else {
            panic!("fmtp")
        };
        assert_eq!(
            f.pairs().collect::<Vec<_>>(),
            vec![("minptime", "10"), ("useinbandfec", "1")]
        );
        assert_eq!(
            Attr::parse("rtcp:9 IN IP4 0.0.0.0").unwrap(),
            Attr::Rtcp(Rtcp {
                port: 9,
                net_type: Some("IN"),
                addr_type: Some("IP4"),
                address: Some("0.0.0.0")
            })
        );
        assert!(matches!(
            Attr::parse("candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host generation 0")
                .unwrap(),
            Attr::Candidate(Candidate {
                port: 54321,
                typ: "host",
                ..
            })
        ));
        assert_eq!(
            Attr::parse("sendonly").unwrap(),
            Attr::Direction(Direction::SendOnly)
        );
        assert_eq!(
            Attr::parse("setup:actpass").unwrap(),
            Attr::Setup(Setup::ActPass)
        );
        assert!(matches!(
            Attr::parse("extmap:3/sendrecv urn:x").unwrap(),
            Attr::Extmap(Extmap {
                id: 3,
                direction: Some(Direction::SendRecv),
                ..
            })
        ));
        assert!(matches!(
            Attr::parse("group:BUNDLE 0 1").unwrap(),
            Attr::Group { semantics: "BUNDLE", ref ids } if ids == &["0", "1"]
        ));
        assert_eq!(Attr::parse("ptime:20.0").unwrap(), Attr::Ptime(20));
        assert!(matches!(
            Attr::parse("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc").unwrap(),
            Attr::Crypto(Crypto { tag: 1, .. })
        ));
        assert!(matches!(
            Attr::parse("x-foo:bar").unwrap(),
            Attr::Other {
                name: "x-foo",
                value: Some("bar")
            }
        ));
    }

    #[test]
    fn malformed_attributes_are_errors() {
        for bad in [
            "rtpmap:200 PCMU/8000",
            "rtpmap:0",
            "rtpmap:0 PCMU",
            "rtpmap:0 PCMU/0",
            "rtpmap:0 PCMU/8000/x",
            "rtcp:abc",
            "rtcp:9 IN",
            "candidate:1 1 udp",
            "candidate:1 1 udp 1 1.2.3.4 5 host",
            "setup:sideways",
            "ssrc:x cname:y",
            "extmap:0 urn:x",
            "extmap:1",
            "ptime:x",
            "fingerprint:sha-256",
            "ice-ufrag",
        ] {
            assert!(Attr::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
