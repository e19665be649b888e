//! SDP (RFC 8866) model: a parsed description that keeps every line, its order and the
//! lines it does not understand, with a writer that changes only what it must.
//!
//! Parsing borrows from the input buffer (each line is a `Cow<str>` over the original text);
//! edits replace single lines with owned text. Serialising an unmodified description gives the
//! input back byte for byte when the input used CRLF line endings; LF-only input is accepted and
//! written with CRLF (RFC 8866 5). Typed views (`o=`, `c=`, `m=`, attributes in [`attr`]) are
//! parsed on demand and return [`SdpError`] on malformed text; nothing here panics on input.

pub mod attr;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

pub use attr::{Attr, Direction};

/// Largest SDP body accepted (bytes). A Chromium offer with simulcast is ~10 KB.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Most media sections accepted in one description.
pub const MAX_MEDIA_SECTIONS: usize = 64;

/// Why an SDP body was refused or a typed view could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body is empty")]
    Empty,
    #[error("SDP body is {len} bytes, more than the {max} accepted")]
    TooLarge { len: usize, max: usize },
    #[error("SDP has more than {max} media sections")]
    TooManyMedia { max: usize },
    #[error("SDP line {line} is not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("SDP line {line} is malformed: {reason}")]
    MalformedLine { line: usize, reason: &'static str },
    #[error("SDP must start with v=0 (line 1 is {found:?})")]
    BadVersion { found: String },
    #[error("SDP has no o= (origin) line in the session section")]
    MissingOrigin,
    #[error("malformed o= line {text:?}: {reason}")]
    BadOrigin { text: String, reason: &'static str },
    #[error("malformed t= line {text:?}")]
    BadTiming { text: String },
    #[error("malformed c= line {text:?}: {reason}")]
    BadConnection { text: String, reason: &'static str },
    #[error("malformed m= line {text:?}: {reason}")]
    BadMedia { text: String, reason: &'static str },
    #[error("malformed a={name} attribute {text:?}: {reason}")]
    BadAttribute {
        name: String,
        text: String,
        reason: &'static str,
    },
}

/// One SDP line, `<type>=<value>`, without its line ending.
///
/// Invariant: the text is at least two bytes long, the first byte is an ASCII letter and the
/// second is `=`, so slicing at 2 is always a character boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    text: Cow<'a, str>,
}

impl<'a> Line<'a> {
    /// A new (owned) line of type `kind` with `value`. `kind` must be an ASCII letter;
    /// anything else is replaced by `x` so the invariant holds.
    pub fn new(kind: char, value: &str) -> Line<'static> {
        let kind = if kind.is_ascii_alphabetic() {
            kind
        } else {
            'x'
        };
        let mut text = String::with_capacity(value.len() + 2);
        text.push(kind);
        text.push('=');
        text.push_str(value);
        Line {
            text: Cow::Owned(text),
        }
    }

    /// An attribute line `a=<name>` or `a=<name>:<value>`.
    pub fn attribute(name: &str, value: Option<&str>) -> Line<'static> {
        match value {
            Some(v) => Line::new('a', &format!("{name}:{v}")),
            None => Line::new('a', name),
        }
    }

    /// The line type letter (`v`, `o`, `c`, `m`, `a`, ...).
    pub fn kind(&self) -> u8 {
        self.text.as_bytes()[0]
    }

    /// Everything after `<type>=`.
    pub fn value(&self) -> &str {
        &self.text[2..]
    }

    /// The whole line as it will be written (without line ending).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when this line still borrows the original input (was not edited).
    pub fn is_original(&self) -> bool {
        matches!(self.text, Cow::Borrowed(_))
    }

    /// For an `a=` line: the attribute name (text before the first `:`).
    pub fn attr_name(&self) -> Option<&str> {
        if self.kind() != b'a' {
            return None;
        }
        let v = self.value();
        Some(v.split_once(':').map_or(v, |(n, _)| n))
    }

    /// For an `a=` line: the typed view. `None` for non-attribute lines.
    pub fn attr(&self) -> Option<Result<Attr<'_>, SdpError>> {
        if self.kind() != b'a' {
            return None;
        }
        Some(Attr::parse(self.value()))
    }

    fn into_owned(self) -> Line<'static> {
        Line {
            text: Cow::Owned(self.text.into_owned()),
        }
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    pub username: &'a str,
    pub session_id: &'a str,
    pub session_version: u64,
    pub net_type: &'a str,
    pub addr_type: &'a str,
    pub address: &'a str,
}

impl<'a> Origin<'a> {
    pub fn parse(value: &'a str) -> Result<Self, SdpError> {
        let bad = |reason| SdpError::BadOrigin {
            text: value.to_string(),
            reason,
        };
        let mut it = value.split(' ');
        let mut next = |what| it.next().filter(|s| !s.is_empty()).ok_or(bad(what));
        let username = next("missing username")?;
        let session_id = next("missing sess-id")?;
        let version = next("missing sess-version")?;
        let net_type = next("missing nettype")?;
        let addr_type = next("missing addrtype")?;
        let address = next("missing unicast-address")?;
        if it.next().is_some() {
            return Err(bad("too many fields"));
        }
        let session_version = version
            .parse::<u64>()
            .map_err(|_| bad("sess-version is not a number"))?;
        Ok(Origin {
            username,
            session_id,
            session_version,
            net_type,
            addr_type,
            address,
        })
    }

    /// The address as an IP, when it is one (it may be a host name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

/// `t=<start-time> <stop-time>` (NTP seconds; `0 0` is an unbounded session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
}

impl Timing {
    pub fn parse(value: &str) -> Result<Self, SdpError> {
        let bad = || SdpError::BadTiming {
            text: value.to_string(),
        };
        let (a, b) = value.trim().split_once(' ').ok_or_else(bad)?;
        Ok(Timing {
            start: a.trim().parse().map_err(|_| bad())?,
            stop: b.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// `c=<nettype> <addrtype> <connection-address>`; a multicast suffix (`/ttl[/n]`) is kept in
/// `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection<'a> {
    pub net_type: &'a str,
    pub addr_type: &'a str,
    pub address: &'a str,
    pub suffix: Option<&'a str>,
}

impl<'a> Connection<'a> {
    pub fn parse(value: &'a str) -> Result<Self, SdpError> {
        let bad = |reason| SdpError::BadConnection {
            text: value.to_string(),
            reason,
        };
        let mut it = value.split(' ');
        let mut next = |what| it.next().filter(|s| !s.is_empty()).ok_or(bad(what));
        let net_type = next("missing nettype")?;
        let addr_type = next("missing addrtype")?;
        let full = next("missing connection-address")?;
        if it.next().is_some() {
            return Err(bad("too many fields"));
        }
        let (address, suffix) = match full.split_once('/') {
            Some((a, s)) => (a, Some(s)),
            None => (full, None),
        };
        if address.is_empty() {
            return Err(bad("empty connection-address"));
        }
        Ok(Connection {
            net_type,
            addr_type,
            address,
            suffix,
        })
    }

    /// The address as an IP, when it is one (it may be a host name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    /// `0.0.0.0` (RFC 2543 hold) or `::`.
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine<'a> {
    pub media: &'a str,
    pub port: u16,
    pub port_count: Option<u16>,
    pub proto: &'a str,
    pub formats: Vec<&'a str>,
}

impl<'a> MediaLine<'a> {
    pub fn parse(value: &'a str) -> Result<Self, SdpError> {
        let bad = |reason| SdpError::BadMedia {
            text: value.to_string(),
            reason,
        };
        let mut it = value.split(' ').filter(|s| !s.is_empty());
        let media = it.next().ok_or(bad("missing media type"))?;
        let port_field = it.next().ok_or(bad("missing port"))?;
        let proto = it.next().ok_or(bad("missing proto"))?;
        let formats: Vec<&str> = it.collect();
        if formats.is_empty() {
            return Err(bad("no formats"));
        }
        let (port, count) = match port_field.split_once('/') {
            Some((p, n)) => (p, Some(n)),
            None => (port_field, None),
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("port is not 0-65535"))?;
        let port_count = match count {
            Some(n) => Some(
                n.parse::<u16>()
                    .map_err(|_| bad("number of ports is not a number"))?,
            ),
            None => None,
        };
        Ok(MediaLine {
            media,
            port,
            port_count,
            proto,
            formats,
        })
    }

    /// RTP-based protocol (`RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`, ...): formats are
    /// payload type numbers.
    pub fn is_rtp(&self) -> bool {
        is_rtp_proto(self.proto)
    }
}

impl fmt::Display for MediaLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.media, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt in &self.formats {
            write!(f, " {fmt}")?;
        }
        Ok(())
    }
}

/// True for RTP-based transport protocols.
pub fn is_rtp_proto(proto: &str) -> bool {
    proto.split('/').any(|p| p == "RTP")
}

/// One media section: the `m=` line followed by its `i=`, `c=`, `b=`, `k=` and `a=` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection<'a> {
    /// `lines[0]` is the `m=` line.
    lines: Vec<Line<'a>>,
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    session: Vec<Line<'a>>,
    media: Vec<MediaSection<'a>>,
}

impl<'a> Sdp<'a> {
    /// Parse an SDP body. Accepts CRLF and LF line endings; blank lines are ignored.
    pub fn parse(input: &'a [u8]) -> Result<Self, SdpError> {
        if input.is_empty() {
            return Err(SdpError::Empty);
        }
        if input.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge {
                len: input.len(),
                max: MAX_SDP_LEN,
            });
        }
        let mut session: Vec<Line<'a>> = Vec::with_capacity(16);
        let mut media: Vec<MediaSection<'a>> = Vec::new();
        for (idx, raw) in input.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(raw).map_err(|_| SdpError::NotUtf8 { line: line_no })?;
            let b = text.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
                return Err(SdpError::MalformedLine {
                    line: line_no,
                    reason: "expected <letter>=<value>",
                });
            }
            if b.iter().any(|&c| c == b'\r' || c == 0) {
                return Err(SdpError::MalformedLine {
                    line: line_no,
                    reason: "bare CR or NUL inside a line",
                });
            }
            let line = Line {
                text: Cow::Borrowed(text),
            };
            if session.is_empty() && media.is_empty() {
                if text != "v=0" {
                    return Err(SdpError::BadVersion {
                        found: text.chars().take(40).collect(),
                    });
                }
                session.push(line);
                continue;
            }
            match line.kind() {
                b'm' => {
                    MediaLine::parse(line.value())?;
                    if media.len() >= MAX_MEDIA_SECTIONS {
                        return Err(SdpError::TooManyMedia {
                            max: MAX_MEDIA_SECTIONS,
                        });
                    }
                    media.push(MediaSection {
                        lines: Vec::with_capacity(16),
                    });
                }
                b'c' => {
                    Connection::parse(line.value())?;
                }
                b'o' if media.is_empty() => {
                    Origin::parse(line.value())?;
                }
                b'v' => {
                    return Err(SdpError::MalformedLine {
                        line: line_no,
                        reason: "second v= line",
                    })
                }
                _ => {}
            }
            match media.last_mut() {
                Some(m) => m.lines.push(line),
                None => session.push(line),
            }
        }
        if session.is_empty() {
            return Err(SdpError::Empty);
        }
        let sdp = Sdp { session, media };
        if sdp.session_line(b'o').is_none() {
            return Err(SdpError::MissingOrigin);
        }
        Ok(sdp)
    }

    /// Serialise with CRLF line endings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// Append the serialised description to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for line in self.lines() {
            out.extend_from_slice(line.text().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Exact length of [`Sdp::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        self.lines().map(|l| l.text().len() + 2).sum()
    }

    /// Every line in order.
    pub fn lines(&self) -> impl Iterator<Item = &Line<'a>> {
        self.session
            .iter()
            .chain(self.media.iter().flat_map(|m| m.lines.iter()))
    }

    /// Session-level lines (before the first `m=`).
    pub fn session_lines(&self) -> &[Line<'a>] {
        &self.session
    }

    /// The first session-level line of type `kind`.
    pub fn session_line(&self, kind: u8) -> Option<&Line<'a>> {
        self.session.iter().find(|l| l.kind() == kind)
    }

    /// The origin (`o=`) line.
    pub fn origin(&self) -> Result<Origin<'_>, SdpError> {
        let line = self.session_line(b'o').ok_or(SdpError::MissingOrigin)?;
        Origin::parse(line.value())
    }

    /// Replace the origin's address (and address type to match).
    pub fn set_origin_address(&mut self, ip: IpAddr) -> Result<(), SdpError> {
        let new = {
            let mut o = self.origin()?;
            let addr = ip.to_string();
            o.addr_type = addr_type(ip);
            format!(
                "{} {} {} {} {} {}",
                o.username, o.session_id, o.session_version, o.net_type, o.addr_type, addr
            )
        };
        if let Some(line) = self.session.iter_mut().find(|l| l.kind() == b'o') {
            if line.value() != new {
                *line = Line::new('o', &new);
            }
        }
        Ok(())
    }

    /// Session name (`s=`), if present.
    pub fn session_name(&self) -> Option<&str> {
        self.session_line(b's').map(Line::value)
    }

    /// The first timing line (`t=`), if present.
    pub fn timing(&self) -> Option<Result<Timing, SdpError>> {
        self.session_line(b't').map(|l| Timing::parse(l.value()))
    }

    /// Session-level connection (`c=`), if any.
    pub fn connection(&self) -> Option<Result<Connection<'_>, SdpError>> {
        self.session_line(b'c')
            .map(|l| Connection::parse(l.value()))
    }

    /// Rewrite every session-level `c=` to `ip`. Returns true if there was one.
    pub fn set_connection(&mut self, ip: IpAddr) -> bool {
        set_connection_lines(&mut self.session, ip)
    }

    /// Session-level attributes (`a=`) lines.
    pub fn session_attributes(&self) -> impl Iterator<Item = &Line<'a>> {
        self.session.iter().filter(|l| l.kind() == b'a')
    }

    /// Keep only the session-level attributes for which `keep(name, line)` is true.
    pub fn retain_session_attributes(&mut self, mut keep: impl FnMut(&str, &Line<'a>) -> bool) {
        self.session
            .retain(|l| l.attr_name().is_none_or(|name| keep(name, l)));
    }

    /// Append a session-level line (after the existing ones).
    pub fn push_session_line(&mut self, line: Line<'static>) {
        self.session.push(line);
    }

    pub fn media(&self) -> &[MediaSection<'a>] {
        &self.media
    }

    pub fn media_mut(&mut self) -> &mut [MediaSection<'a>] {
        &mut self.media
    }

    /// A copy that owns all its text (no borrow of the input).
    pub fn into_owned(self) -> Sdp<'static> {
        Sdp {
            session: self.session.into_iter().map(Line::into_owned).collect(),
            media: self
                .media
                .into_iter()
                .map(|m| MediaSection {
                    lines: m.lines.into_iter().map(Line::into_owned).collect(),
                })
                .collect(),
        }
    }
}

impl<'a> MediaSection<'a> {
    /// All lines, `m=` first.
    pub fn lines(&self) -> &[Line<'a>] {
        &self.lines
    }

    /// The parsed `m=` line.
    pub fn media_line(&self) -> Result<MediaLine<'_>, SdpError> {
        match self.lines.first() {
            Some(l) => MediaLine::parse(l.value()),
            None => Err(SdpError::BadMedia {
                text: String::new(),
                reason: "empty media section",
            }),
        }
    }

    /// Replace the `m=` line with `m`. Writes only if the text changes.
    pub fn set_media_line(&mut self, m: &MediaLine<'_>) {
        let text = m.to_string();
        if let Some(first) = self.lines.first_mut() {
            if first.value() != text {
                *first = Line::new('m', &text);
            }
        }
    }

    /// Replace the `m=` line with `value` (the text after `m=`), which must parse.
    pub fn set_media_value(&mut self, value: &str) -> Result<(), SdpError> {
        MediaLine::parse(value)?;
        if let Some(first) = self.lines.first_mut() {
            if first.value() != value {
                *first = Line::new('m', value);
            }
        }
        Ok(())
    }

    /// Media-level connection line, if any.
    pub fn connection(&self) -> Option<Result<Connection<'_>, SdpError>> {
        self.lines
            .iter()
            .find(|l| l.kind() == b'c')
            .map(|l| Connection::parse(l.value()))
    }

    /// Rewrite every media-level `c=` to `ip`. Returns true if there was one.
    pub fn set_connection(&mut self, ip: IpAddr) -> bool {
        set_connection_lines(&mut self.lines, ip)
    }

    /// Insert a `c=` line at its RFC 8866 position (after `m=` and `i=`).
    pub fn insert_connection(&mut self, ip: IpAddr) {
        let pos = self
            .lines
            .iter()
            .position(|l| !matches!(l.kind(), b'm' | b'i'))
            .unwrap_or(self.lines.len());
        self.lines
            .insert(pos, Line::new('c', &format!("IN {} {ip}", addr_type(ip))));
    }

    /// Attribute lines of this section.
    pub fn attributes(&self) -> impl Iterator<Item = &Line<'a>> {
        self.lines.iter().filter(|l| l.kind() == b'a')
    }

    /// The first attribute named `name` (case-sensitive, as RFC 8866 attribute names are
    /// compared by their registered spelling).
    pub fn attribute(&self, name: &str) -> Option<&Line<'a>> {
        self.attributes().find(|l| l.attr_name() == Some(name))
    }

    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// Keep only the attribute lines for which `keep(name, line)` is true; other lines stay.
    pub fn retain_attributes(&mut self, mut keep: impl FnMut(&str, &Line<'a>) -> bool) {
        let mut first = true;
        self.lines.retain(|l| {
            let is_m = first;
            first = false;
            is_m || l.attr_name().is_none_or(|name| keep(name, l))
        });
    }

    /// Keep only the non-`m=` lines for which `keep` is true (any type).
    pub fn retain_lines(&mut self, mut keep: impl FnMut(&Line<'a>) -> bool) {
        let mut first = true;
        self.lines.retain(|l| {
            let is_m = first;
            first = false;
            is_m || keep(l)
        });
    }

    /// Replace the first attribute named `name` with `line`; returns false if none.
    pub fn replace_attribute(&mut self, name: &str, line: Line<'static>) -> bool {
        match self.lines.iter_mut().find(|l| l.attr_name() == Some(name)) {
            Some(l) => {
                if l.text() != line.text() {
                    *l = line;
                }
                true
            }
            None => false,
        }
    }

    /// Append a line at the end of the section.
    pub fn push_line(&mut self, line: Line<'static>) {
        self.lines.push(line);
    }

    /// The direction attribute of this section, if it has one.
    pub fn direction(&self) -> Option<Direction> {
        self.attributes()
            .find_map(|l| l.attr_name().and_then(Direction::from_name))
    }
}

/// `IP4` or `IP6`.
pub fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn set_connection_lines(lines: &mut [Line<'_>], ip: IpAddr) -> bool {
    let mut found = false;
    let new = format!("IN {} {ip}", addr_type(ip));
    for l in lines.iter_mut().filter(|l| l.kind() == b'c') {
        found = true;
        if l.value() != new {
            *l = Line::new('c', &new);
        }
    }
    found
}

/// The session-level direction attribute, if any.
pub fn session_direction(sdp: &Sdp<'_>) -> Option<Direction> {
    sdp.session_attributes()
        .find_map(|l| l.attr_name().and_then(Direction::from_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = "v=0\r\no=- 1 2 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=x-unknown:keep me\r\na=sendrecv\r\n";

    #[test]
    fn unmodified_crlf_round_trips_byte_identically() {
        let sdp = Sdp::parse(PHONE.as_bytes()).unwrap();
        assert_eq!(sdp.to_bytes(), PHONE.as_bytes());
        assert_eq!(sdp.encoded_len(), PHONE.len());
        assert!(sdp.lines().all(Line::is_original));
    }

    #[test]
    fn lf_input_is_written_with_crlf() {
        let lf = PHONE.replace("\r\n", "\n");
        let sdp = Sdp::parse(lf.as_bytes()).unwrap();
        assert_eq!(sdp.to_bytes(), PHONE.as_bytes());
        // no final line ending at all
        let trimmed = lf.trim_end();
        let sdp = Sdp::parse(trimmed.as_bytes()).unwrap();
        assert_eq!(sdp.to_bytes(), PHONE.as_bytes());
    }

    #[test]
    fn typed_views() {
        let sdp = Sdp::parse(PHONE.as_bytes()).unwrap();
        let o = sdp.origin().unwrap();
        assert_eq!(o.session_version, 2);
        assert_eq!(sdp.session_name(), Some("-"));
        assert_eq!(sdp.timing().unwrap().unwrap(), Timing { start: 0, stop: 0 });
        assert!(Timing::parse("0").is_err());
        assert_eq!(o.ip(), Some("192.168.1.10".parse().unwrap()));
        let c = sdp.connection().unwrap().unwrap();
        assert_eq!(c.address, "192.168.1.10");
        let m = sdp.media()[0].media_line().unwrap();
        assert_eq!(m.media, "audio");
        assert_eq!(m.port, 4000);
        assert_eq!(m.formats, vec!["0", "8", "101"]);
        assert!(m.is_rtp());
        assert_eq!(sdp.media()[0].direction(), Some(Direction::SendRecv));
        assert!(sdp.media()[0].has_attribute("x-unknown"));
    }

    #[test]
    fn edits_touch_only_their_lines() {
        let mut sdp = Sdp::parse(PHONE.as_bytes()).unwrap();
        sdp.set_origin_address("203.0.113.5".parse().unwrap())
            .unwrap();
        sdp.set_connection("203.0.113.5".parse().unwrap());
        let m0 = &mut sdp.media_mut()[0];
        let mut ml = m0.media_line().unwrap();
        ml.port = 30000;
        let ml = MediaLine {
            formats: ml.formats.clone(),
            ..ml
        };
        let text = ml.to_string();
        m0.set_media_line(&MediaLine::parse(&text).unwrap());
        let out = String::from_utf8(sdp.to_bytes()).unwrap();
        let expected = PHONE
            .replace("o=- 1 2 IN IP4 192.168.1.10", "o=- 1 2 IN IP4 203.0.113.5")
            .replace("c=IN IP4 192.168.1.10", "c=IN IP4 203.0.113.5")
            .replace("m=audio 4000", "m=audio 30000");
        assert_eq!(out, expected);
        let originals = sdp.lines().filter(|l| l.is_original()).count();
        assert_eq!(originals, sdp.lines().count() - 3);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"v=1\r\n", "version"),
            (b"x\r\n", "version"),
            (b"v=0\r\ns=-\r\n", "origin"),
            (b"v=0\r\no=- 1 2 IN IP4\r\n", "origin"),
            (b"v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n", "origin"),
            (b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\nm=audio\r\n", "media"),
            (
                b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
                "media",
            ),
            (b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\nc=IN\r\n", "conn"),
            (b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\n=x\r\n", "line"),
            (b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\na=\xff\r\n", "utf8"),
            (b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\na=x\ry\r\n", "cr"),
            (b"v=0\r\nv=0\r\no=- 1 2 IN IP4 1.2.3.4\r\n", "v"),
        ];
        for (input, what) in cases {
            assert!(Sdp::parse(input).is_err(), "{what}: {input:?} accepted");
        }
        let big = vec![b'a'; MAX_SDP_LEN + 1];
        assert!(matches!(Sdp::parse(&big), Err(SdpError::TooLarge { .. })));
    }

    #[test]
    fn too_many_media_sections() {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n");
        for _ in 0..=MAX_MEDIA_SECTIONS {
            s.push_str("m=audio 0 RTP/AVP 0\r\n");
        }
        assert!(matches!(
            Sdp::parse(s.as_bytes()),
            Err(SdpError::TooManyMedia { .. })
        ));
    }

    /// Bounded random mutation: flips, inserts and deletes bytes of valid SDPs and checks that
    /// parsing plus every typed view returns a value or an error, never a panic, and that a
    /// successful parse round-trips.
    #[test]
    fn random_mutations_never_panic() {
        let seeds: [&[u8]; 2] = [
            PHONE.as_bytes(),
            include_bytes!("../../tests/fixtures/webrtc-chromium.offer.in.sdp"),
        ];
        let mut rng = crate::test_support::XorShift(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        let alphabet = b"v=oscmat0123456789 :/\r\n\xff\x00-.IPN";
        let mut parsed_ok = 0;
        for i in 0..4000 {
            let mut buf = seeds[i % seeds.len()].to_vec();
            let edits = 1 + (next() % 8) as usize;
            for _ in 0..edits {
                if buf.is_empty() {
                    break;
                }
                let pos = (next() as usize) % buf.len();
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => buf[pos] = byte,
                    1 => buf.insert(pos, byte),
                    _ => {
                        buf.remove(pos);
                    }
                }
            }
            if let Ok(sdp) = Sdp::parse(&buf) {
                parsed_ok += 1;
                let _ = sdp.origin();
                let _ = sdp.connection();
                let _ = sdp.timing();
                for m in sdp.media() {
                    let _ = m.media_line();
                    let _ = m.connection();
                    for a in m.attributes() {
                        let _ = a.attr();
                    }
                }
                let bytes = sdp.to_bytes();
                let again = Sdp::parse(&bytes).expect("re-parse of written SDP");
                assert_eq!(again.to_bytes(), bytes);
            }
        }
        // The mutations must leave a fair share parseable, or the test exercises nothing.
        assert!(parsed_ok > 100, "only {parsed_ok} mutated inputs parsed");
    }
}
