//! The SIP message: one-pass indexing of the raw bytes and lazy typed access
//! (RFC 3261 7 "SIP Messages", 7.3 header fields incl. 7.3.1 folding and multiple values,
//! 7.3.3 compact forms, 7.4 bodies, 7.5 framing on datagrams, 18.3 Content-Length; the
//! tolerance required by RFC 4475 3.1.1).
//!
//! [`SipMessage::parse`] validates only the shape: start line, `name: value` header lines
//! (CRLF or bare LF terminated, folded continuations joined to their header), and the
//! body length against Content-Length. It records one small entry per header line and
//! never copies header text. Everything else (Via, From/To, CSeq, ...) is parsed on demand
//! by the accessors, which never panic and return [`ParseError`] on malformed values.
//! Semantic checks live in `validate.rs`, edits and the writer in `edit.rs`.

use std::ops::Range;

use bytes::Bytes;

use crate::cseq::CSeq;
use crate::error::ParseError;
use crate::header::{
    expand_compact, is_lws, other_is_list, parse_decimal, split_commas, trim_lws, Header,
    HeaderName,
};
use crate::method::{is_token_char, Method};
use crate::name_addr::{Contact, NameAddr};
use crate::via::Via;

/// Upper bound on header lines in one message; more is treated as an attack.
pub const MAX_HEADER_LINES: usize = 512;

/// Parsed start line (ranges index the raw bytes).
#[derive(Debug, Clone)]
pub(crate) enum StartLine {
    Request {
        method: Method,
        uri: Range<usize>,
        version: Range<usize>,
    },
    Response {
        version: Range<usize>,
        status: u16,
        reason: Range<usize>,
    },
}

/// A header line found in the raw message.
#[derive(Debug, Clone)]
pub(crate) struct RawLine {
    pub(crate) name: HeaderName,
    pub(crate) raw_name: Range<usize>,
    pub(crate) value: Range<usize>,
    /// Whole line including continuation lines and the final terminator.
    pub(crate) full: Range<usize>,
}

/// A header line of the (possibly edited) message.
#[derive(Debug, Clone)]
pub(crate) enum Line {
    Raw(RawLine),
    Owned {
        name: HeaderName,
        raw_name: String,
        value: String,
    },
}

impl Line {
    pub(crate) fn name(&self) -> HeaderName {
        match self {
            Line::Raw(r) => r.name,
            Line::Owned { name, .. } => *name,
        }
    }
}

/// A SIP request or response: the raw bytes, an index of its header lines, and any
/// pending edits (see the edit methods; [`SipMessage::to_bytes`] applies them).
#[derive(Debug, Clone)]
pub struct SipMessage {
    pub(crate) raw: Bytes,
    /// `None` when the head is valid UTF-8 (accessors read `raw`); otherwise a copy of the
    /// head, same offsets, whose invalid bytes are replaced by `?`.
    pub(crate) sanitized: Option<Box<[u8]>>,
    pub(crate) start: StartLine,
    /// Offset of the start line (after ignored leading CRLFs).
    pub(crate) start_off: usize,
    /// Offset just after the start line's terminator.
    pub(crate) start_end: usize,
    pub(crate) lines: Vec<Line>,
    /// The empty line ending the header section.
    pub(crate) separator: Range<usize>,
    /// Body range in `raw` (first Content-Length bytes after the separator).
    pub(crate) body: Range<usize>,
    pub(crate) new_body: Option<Bytes>,
    pub(crate) new_request_uri: Option<String>,
    pub(crate) edited: bool,
}

/// Finds the next line: returns (content end excluding CR/LF, next line start).
#[inline]
fn next_line(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = memchr::memchr(b'\n', b.get(from..)?)? + from;
    let end = if nl > from && b[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

fn is_sip_version(v: &[u8]) -> bool {
    // "SIP" "/" 1*DIGIT "." 1*DIGIT; "SIP" is case-insensitive in the ABNF.
    if v.len() < 7 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    let rest = &v[4..];
    match rest.iter().position(|&c| c == b'.') {
        Some(dot) => {
            dot > 0
                && dot + 1 < rest.len()
                && rest[..dot].iter().all(u8::is_ascii_digit)
                && rest[dot + 1..].iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

fn parse_start_line(b: &[u8], start: usize, end: usize) -> Result<StartLine, ParseError> {
    let line = &b[start..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = line
            .iter()
            .position(|&c| c == b' ')
            .ok_or(ParseError::BadStartLine)?;
        if !is_sip_version(&line[..sp]) {
            return Err(ParseError::BadStartLine);
        }
        let code = &line[sp + 1..];
        let code_end = code.iter().position(|&c| c == b' ').unwrap_or(code.len());
        let digits = &code[..code_end];
        if digits.len() != 3 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStatusCode);
        }
        let status = digits
            .iter()
            .fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
        if !(100..=699).contains(&status) {
            return Err(ParseError::BadStatusCode);
        }
        let reason_start = (start + sp + 1 + code_end + 1).min(end);
        if b[reason_start..end]
            .iter()
            .any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)
        {
            return Err(ParseError::BadReasonPhrase);
        }
        Ok(StartLine::Response {
            version: start..start + sp,
            status,
            reason: reason_start..end,
        })
    } else {
        // Request-Line = Method SP Request-URI SP SIP-Version, single SPs, no other LWS
        // (RFC 4475 3.1.2.10: trailing white space is rejected too).
        if line.last().is_some_and(|&c| c == b' ' || c == b'\t') {
            return Err(ParseError::BadStartLine);
        }
        let sp1 = line
            .iter()
            .position(|&c| c == b' ')
            .ok_or(ParseError::BadStartLine)?;
        let sp2 = line
            .iter()
            .rposition(|&c| c == b' ')
            .ok_or(ParseError::BadStartLine)?;
        if sp2 <= sp1 + 1 {
            return Err(ParseError::BadStartLine);
        }
        let method = &line[..sp1];
        if method.is_empty() || !method.iter().all(|&c| is_token_char(c)) {
            return Err(ParseError::BadMethod);
        }
        let uri = &line[sp1 + 1..sp2];
        if uri.iter().any(|&c| c <= b' ' || c == 0x7f) {
            return Err(ParseError::BadRequestUri("white space in Request-URI"));
        }
        if !is_sip_version(&line[sp2 + 1..]) {
            return Err(ParseError::BadStartLine);
        }
        let method = match Method::from_bytes(method) {
            Some(m) => m,
            // token chars are ASCII, so this is valid UTF-8.
            None => Method::Other(String::from_utf8_lossy(method).into_owned()),
        };
        Ok(StartLine::Request {
            method,
            uri: start + sp1 + 1..start + sp2,
            version: start + sp2 + 1..end,
        })
    }
}

/// Copy of `b` with every byte that is not part of valid UTF-8 replaced by `?`.
fn sanitize_utf8(b: &[u8]) -> Vec<u8> {
    let mut out = b.to_vec();
    let mut i = 0;
    while i < out.len() {
        match std::str::from_utf8(&out[i..]) {
            Ok(_) => break,
            Err(e) => {
                let bad_at = i + e.valid_up_to();
                let bad_len = e.error_len().unwrap_or(out.len() - bad_at);
                for c in &mut out[bad_at..bad_at + bad_len] {
                    *c = b'?';
                }
                i = bad_at + bad_len;
            }
        }
    }
    out
}

impl SipMessage {
    /// Indexes a whole datagram or a framed stream message.
    ///
    /// Checks the start line, the header-line structure and Content-Length against the
    /// body: a shorter body is [`ParseError::Truncated`]; extra bytes after
    /// Content-Length are not part of the body (RFC 3261 18.3) but stay in [`Self::raw`].
    /// Without Content-Length the body is the rest of the datagram. Leading CRLFs before
    /// the start line are ignored (RFC 3261 7.5).
    pub fn parse(raw: Bytes) -> Result<SipMessage, ParseError> {
        let b: &[u8] = &raw;
        let mut start_off = 0;
        while b.get(start_off..start_off + 2) == Some(b"\r\n") {
            start_off += 2;
        }
        while b.get(start_off) == Some(&b'\n') {
            start_off += 1;
        }
        if start_off >= b.len() {
            return Err(ParseError::Empty);
        }
        let (sl_end, mut pos) = next_line(b, start_off).ok_or(ParseError::UnterminatedHeaders)?;
        let start = parse_start_line(b, start_off, sl_end)?;

        let mut lines: Vec<Line> = Vec::with_capacity(16);
        let mut line_no = 1;
        let mut content_length: Option<Range<usize>> = None;
        let separator;
        loop {
            line_no += 1;
            let (end, next) = next_line(b, pos).ok_or(ParseError::UnterminatedHeaders)?;
            if end == pos {
                separator = pos..next;
                pos = next;
                break;
            }
            let first = b[pos];
            if first == b' ' || first == b'\t' {
                // Folded continuation of the previous header line (RFC 3261 7.3.1).
                match lines.last_mut() {
                    Some(Line::Raw(prev)) => {
                        prev.value.end = end;
                        prev.full.end = next;
                    }
                    _ => return Err(ParseError::BadHeader { line: line_no }),
                }
                pos = next;
                continue;
            }
            if lines.len() >= MAX_HEADER_LINES {
                return Err(ParseError::TooLarge);
            }
            // field-name = token, then *(SP / HTAB) ":" (RFC 3261 7.3.1, HCOLON).
            let line = &b[pos..end];
            let name_end = line
                .iter()
                .position(|&c| !is_token_char(c))
                .unwrap_or(line.len());
            let mut colon = name_end;
            while colon < line.len() && (line[colon] == b' ' || line[colon] == b'\t') {
                colon += 1;
            }
            if name_end == 0 || line.get(colon) != Some(&b':') {
                return Err(ParseError::BadHeader { line: line_no });
            }
            let name = HeaderName::from_bytes(&line[..name_end]);
            lines.push(Line::Raw(RawLine {
                name,
                raw_name: pos..pos + name_end,
                value: pos + colon + 1..end,
                full: pos..next,
            }));
            pos = next;
        }
        // Trim values (folding may have extended them) and check Content-Length.
        for l in lines.iter_mut() {
            if let Line::Raw(r) = l {
                while r.value.start < r.value.end && is_lws(b[r.value.start]) {
                    r.value.start += 1;
                }
                while r.value.end > r.value.start && is_lws(b[r.value.end - 1]) {
                    r.value.end -= 1;
                }
                if r.name == HeaderName::ContentLength {
                    match &content_length {
                        None => content_length = Some(r.value.clone()),
                        Some(prev) if b[prev.clone()] != b[r.value.clone()] => {
                            return Err(ParseError::ConflictingContentLength)
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        let available = b.len() - pos;
        let body = match content_length {
            Some(r) => {
                let text = std::str::from_utf8(&b[r]).map_err(|_| ParseError::BadContentLength)?;
                let cl = parse_decimal(text, u64::from(u32::MAX))
                    .ok_or(ParseError::BadContentLength)? as usize;
                if cl > available {
                    return Err(ParseError::Truncated);
                }
                pos..pos + cl
            }
            None => pos..b.len(),
        };
        let head = &b[..separator.start];
        let sanitized = if head.is_ascii() || std::str::from_utf8(head).is_ok() {
            None
        } else {
            Some(sanitize_utf8(head).into_boxed_slice())
        };
        Ok(SipMessage {
            raw,
            sanitized,
            start,
            start_off,
            start_end: sl_end,
            lines,
            separator,
            body,
            new_body: None,
            new_request_uri: None,
            edited: false,
        })
    }

    /// Text of a range of the head (always valid UTF-8; ranges end on ASCII delimiters).
    #[inline]
    pub(crate) fn text_at(&self, r: Range<usize>) -> &str {
        let src: &[u8] = match &self.sanitized {
            Some(s) => s,
            None => &self.raw,
        };
        src.get(r)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("")
    }

    /// Value text of a header line.
    #[inline]
    pub(crate) fn value_of<'s>(&'s self, l: &'s Line) -> &'s str {
        match l {
            Line::Raw(r) => self.text_at(r.value.clone()),
            Line::Owned { value, .. } => value,
        }
    }

    pub(crate) fn header_of<'s>(&'s self, l: &'s Line) -> Header<'s> {
        match l {
            Line::Raw(r) => Header {
                name: r.name,
                raw_name: self.text_at(r.raw_name.clone()),
                value: self.text_at(r.value.clone()),
            },
            Line::Owned {
                name,
                raw_name,
                value,
            } => Header {
                name: *name,
                raw_name,
                value,
            },
        }
    }

    /// The original bytes, untouched by edits.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// Request method (None for responses).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// Request-URI as written, or as set by [`Self::set_request_uri`].
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(
                self.new_request_uri
                    .as_deref()
                    .unwrap_or_else(|| self.text_at(uri.clone())),
            ),
            StartLine::Response { .. } => None,
        }
    }

    /// Response status code.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// Response reason phrase (may be empty).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(self.text_at(reason.clone())),
            StartLine::Request { .. } => None,
        }
    }

    /// SIP-Version as written ("SIP/2.0").
    pub fn version(&self) -> &str {
        match &self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => {
                self.text_at(version.clone())
            }
        }
    }

    /// Header lines in order, reflecting edits.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> {
        self.lines.iter().map(move |l| self.header_of(l))
    }

    /// Value of the first line of header `name`. For headers without a variant use
    /// [`Self::header_by_name`] (`HeaderName::Other` matches any such header).
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.name() == name)
            .map(|l| self.value_of(l))
    }

    /// Value of the first line whose name matches `name` case-insensitively, compact forms
    /// included (`header_by_name("Allow-Events")` finds `u: ...`).
    pub fn header_by_name(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next()
    }

    fn headers_named<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s str> + use<'s, 'n> {
        let wanted: &'n str = expand_compact(name.as_bytes()).unwrap_or(name);
        self.headers()
            .filter(move |h| {
                let canonical = expand_compact(h.raw_name.as_bytes()).unwrap_or(h.raw_name);
                canonical.eq_ignore_ascii_case(wanted)
            })
            .map(|h| h.value)
    }

    /// All values of header `name` across all its lines, in order. List headers (see
    /// [`HeaderName::is_list`]) are split at top-level commas (outside quotes and `<>`);
    /// other headers (From, To, CSeq, the authentication headers, ...) yield one value
    /// per line.
    pub fn header_values(&self, name: HeaderName) -> Vec<&str> {
        let mut out = Vec::new();
        for l in self.lines.iter().filter(|l| l.name() == name) {
            let v = self.value_of(l);
            if name.is_list() {
                out.extend(split_commas(v));
            } else {
                out.push(v);
            }
        }
        out
    }

    /// Like [`Self::header_values`] for any header name (compact-aware); list headers
    /// without a [`HeaderName`] variant (Accept, Allow-Events, ...) are split too.
    pub fn header_values_by_name(&self, name: &str) -> Vec<&str> {
        let known = HeaderName::from_bytes(name.as_bytes());
        if known != HeaderName::Other {
            return self.header_values(known);
        }
        let canonical = expand_compact(name.as_bytes()).unwrap_or(name);
        let split = other_is_list(canonical);
        let mut out = Vec::new();
        for v in self.headers_named(name) {
            if split {
                out.extend(split_commas(v));
            } else {
                out.push(v);
            }
        }
        out
    }

    /// The body (the first Content-Length bytes after the header section), or the body
    /// set by [`Self::set_body`].
    pub fn body(&self) -> &[u8] {
        match &self.new_body {
            Some(b) => b,
            None => self.raw.get(self.body.clone()).unwrap_or(&[]),
        }
    }

    /// The body as a zero-copy [`Bytes`] handle (a slice of the raw message, or the body
    /// set by [`Self::set_body`]), e.g. to hand SDP to the media engine.
    pub fn body_bytes(&self) -> Bytes {
        match &self.new_body {
            Some(b) => b.clone(),
            None => {
                if self.body.end <= self.raw.len() && self.body.start <= self.body.end {
                    self.raw.slice(self.body.clone())
                } else {
                    Bytes::new()
                }
            }
        }
    }

    /// All Via values, top first.
    pub fn vias(&self) -> Result<Vec<Via<'_>>, ParseError> {
        self.header_values(HeaderName::Via)
            .into_iter()
            .map(Via::parse)
            .collect()
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        let line = self
            .header(HeaderName::Via)
            .ok_or(ParseError::MissingHeader("Via"))?;
        let first = split_commas(line)
            .next()
            .ok_or(ParseError::BadHeaderValue {
                header: "Via",
                reason: "empty value",
            })?;
        Via::parse(first)
    }

    fn name_addr(&self, name: HeaderName) -> Result<NameAddr<'_>, ParseError> {
        let v = self
            .header(name)
            .ok_or(ParseError::MissingHeader(name.as_str()))?;
        NameAddr::parse(v, name.as_str())
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::From)
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::To)
    }

    /// The Call-ID (`word ["@" word]`, no white space).
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self
            .header(HeaderName::CallId)
            .ok_or(ParseError::MissingHeader("Call-ID"))?;
        if v.is_empty() || v.bytes().any(|c| is_lws(c) || c < 0x20) {
            return Err(ParseError::BadHeaderValue {
                header: "Call-ID",
                reason: "empty or contains white space",
            });
        }
        Ok(v)
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(
            self.header(HeaderName::CSeq)
                .ok_or(ParseError::MissingHeader("CSeq"))?,
        )
    }

    /// All Contact values (empty if none).
    pub fn contacts(&self) -> Result<Vec<Contact<'_>>, ParseError> {
        self.header_values(HeaderName::Contact)
            .into_iter()
            .map(Contact::parse)
            .collect()
    }

    fn name_addrs(&self, name: HeaderName) -> Result<Vec<NameAddr<'_>>, ParseError> {
        self.header_values(name)
            .into_iter()
            .map(|v| NameAddr::parse(v, name.as_str()))
            .collect()
    }

    /// All Route values, top first.
    pub fn routes(&self) -> Result<Vec<NameAddr<'_>>, ParseError> {
        self.name_addrs(HeaderName::Route)
    }

    /// All Record-Route values, top first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr<'_>>, ParseError> {
        self.name_addrs(HeaderName::RecordRoute)
    }

    /// All Path values (RFC 3327), top first.
    pub fn paths(&self) -> Result<Vec<NameAddr<'_>>, ParseError> {
        self.name_addrs(HeaderName::Path)
    }

    fn number(&self, name: HeaderName, max: u64) -> Result<Option<u64>, ParseError> {
        match self.header(name) {
            None => Ok(None),
            Some(v) => {
                parse_decimal(trim_lws(v), max)
                    .map(Some)
                    .ok_or(ParseError::BadHeaderValue {
                        header: name.as_str(),
                        reason: "not a decimal number in range",
                    })
            }
        }
    }

    /// Max-Forwards (0..=255, RFC 3261 20.22).
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        Ok(self.number(HeaderName::MaxForwards, 255)?.map(|v| v as u32))
    }

    /// Content-Length.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        match self.number(HeaderName::ContentLength, u64::from(u32::MAX)) {
            Ok(v) => Ok(v.map(|v| v as usize)),
            Err(_) => Err(ParseError::BadContentLength),
        }
    }

    /// Content-Type value as written.
    pub fn content_type(&self) -> Option<&str> {
        self.header(HeaderName::ContentType)
    }

    /// Expires (delta-seconds, 0..=2^32-1).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        Ok(self
            .number(HeaderName::Expires, u64::from(u32::MAX))?
            .map(|v| v as u32))
    }

    /// Supported option tags.
    pub fn supported(&self) -> Vec<&str> {
        self.header_values(HeaderName::Supported)
    }

    /// Require option tags.
    pub fn require(&self) -> Vec<&str> {
        self.header_values(HeaderName::Require)
    }

    /// True once any edit method has been called.
    pub fn is_edited(&self) -> bool {
        self.edited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP p1.example.com\r\n\
v: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
X-Custom: one,\r\n two\r\n\
u: talk, hold\r\n\
Content-Type: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\n";

    #[test]
    fn parses_request_and_reads_typed_headers() {
        let m = SipMessage::parse(Bytes::from_static(INVITE)).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:bob@biloxi.example.com"));
        assert_eq!(m.version(), "SIP/2.0");
        assert_eq!(m.status(), None);
        assert_eq!(
            m.call_id().unwrap(),
            "a84b4c76e66710@pc33.atlanta.example.com"
        );
        assert_eq!(
            m.cseq().unwrap(),
            CSeq {
                seq: 314159,
                method: Method::Invite
            }
        );
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(vias[1].transport, "TCP");
        assert_eq!(vias[2].host, "p2.example.com");
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(m.to().unwrap().tag(), None);
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        assert_eq!(m.content_length().unwrap(), Some(4));
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(m.body(), b"v=0\r");
        assert_eq!(m.header_by_name("x-custom"), Some("one,\r\n two"));
        assert_eq!(m.header_by_name("Allow-Events"), Some("talk, hold"));
        assert_eq!(
            m.header_values_by_name("allow-events"),
            vec!["talk", "hold"]
        );
        assert_eq!(
            m.header_by_name("i"),
            Some("a84b4c76e66710@pc33.atlanta.example.com")
        );
        let names: Vec<_> = m.headers().map(|h| h.raw_name).collect();
        assert_eq!(names[..3], ["Via", "v", "Max-Forwards"]);
        assert_eq!(m.headers().count(), 12);
        assert!(!m.is_edited());
        assert_eq!(m.to_bytes(), Bytes::from_static(INVITE));
    }

    #[test]
    fn response_and_extra_datagram_bytes() {
        let raw = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 2\r\n\r\nabEXTRA";
        let m = SipMessage::parse(Bytes::from_static(raw)).unwrap();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), Some("Ringing"));
        assert_eq!(m.body(), b"ab");
        assert_eq!(m.body_bytes(), Bytes::from_static(b"ab"));
        assert_eq!(m.to_bytes().as_ref(), raw);
    }

    #[test]
    fn bare_lf_and_leading_crlf() {
        let raw = b"\r\nOPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h\nCall-ID: a\n\n";
        let m = SipMessage::parse(Bytes::from_static(raw)).unwrap();
        assert_eq!(m.call_id().unwrap(), "a");
        assert_eq!(m.body(), b"");
    }

    #[test]
    fn structural_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Empty),
            (b"\r\n\r\n", ParseError::Empty),
            (
                b"INVITE sip:x SIP/2.0\r\nVia: a\r\n",
                ParseError::UnterminatedHeaders,
            ),
            (
                b"INVITE  sip:x SIP/2.0\r\n\r\n",
                ParseError::BadRequestUri("white space in Request-URI"),
            ),
            (b"INVITE sip:x\r\n\r\n", ParseError::BadStartLine),
            (b"INV@ITE sip:x SIP/2.0\r\n\r\n", ParseError::BadMethod),
            (b"SIP/2.0 99 Low\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 4294967301 Big\r\n\r\n", ParseError::BadStatusCode),
            (
                b"INVITE sip:x SIP/2.0\r\nNoColon\r\n\r\n",
                ParseError::BadHeader { line: 2 },
            ),
            (
                b"INVITE sip:x SIP/2.0\r\n folded-first\r\n\r\n",
                ParseError::BadHeader { line: 2 },
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nA b: c\r\n\r\n",
                ParseError::BadHeader { line: 2 },
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nl: 5\r\n\r\nabc",
                ParseError::Truncated,
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nl: x\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
                ParseError::ConflictingContentLength,
            ),
        ];
        for (raw, err) in cases {
            assert_eq!(
                SipMessage::parse(Bytes::copy_from_slice(raw)).unwrap_err(),
                *err,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn non_utf8_header_bytes_are_readable_and_forwarded_verbatim() {
        let raw = b"MESSAGE sip:x SIP/2.0\r\nFrom: \"Jos\xe9\" <sip:j@h>;tag=1\r\nl: 0\r\n\r\n";
        let m = SipMessage::parse(Bytes::from_static(raw)).unwrap();
        assert_eq!(m.from().unwrap().display_name, Some("Jos?"));
        assert_eq!(m.to_bytes().as_ref(), raw);
    }

    #[test]
    fn accessor_errors() {
        let raw = b"INVITE sip:x SIP/2.0\r\nMax-Forwards: 300\r\nExpires: 99999999999\r\nCSeq: 1\r\nCall-ID: a b\r\n\r\n";
        let m = SipMessage::parse(Bytes::from_static(raw)).unwrap();
        assert!(m.max_forwards().is_err());
        assert!(m.expires().is_err());
        assert!(m.cseq().is_err());
        assert!(m.call_id().is_err());
        assert_eq!(m.top_via().unwrap_err(), ParseError::MissingHeader("Via"));
        assert_eq!(m.from().unwrap_err(), ParseError::MissingHeader("From"));
        assert!(m.vias().unwrap().is_empty());
    }
}
