//! Edits and the writer (what a proxy does to a message, RFC 3261 16.6 and 16.7: Request-URI
//! rewrite, Via push/pop, Record-Route insertion, Route pop, Max-Forwards decrement, body
//! replacement with a correct Content-Length).
//!
//! Edits are recorded on the header-line overlay of [`SipMessage`]: an edited line becomes
//! an owned line, untouched lines stay ranges of the raw bytes. [`SipMessage::to_bytes`]
//! walks the overlay, copying every untouched span verbatim (original terminators, folding
//! and compact names included); with no edits it returns the raw bytes without copying.
//! An edited or new line is written as `name: value` CRLF, keeping the name as written
//! (a compact `v:` stays `v:`). Values passed to the edit methods are written as given:
//! they must not contain line breaks other than folding (CRLF followed by SP or HT).

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::{expand_compact, split_commas, HeaderName};
use crate::message::{Line, SipMessage, StartLine};

/// First top-level value of a header value and the remainder after its comma (trimmed).
fn split_first(value: &str) -> Option<(&str, &str)> {
    let mut it = split_commas(value);
    let first = it.next()?;
    let rest = it
        .remainder()
        .trim_matches(|c: char| c.is_ascii_whitespace() || c == ',');
    Some((first, rest))
}

impl SipMessage {
    fn owned(name: HeaderName, raw_name: &str, value: &str) -> Line {
        Line::Owned {
            name,
            raw_name: raw_name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn first_index(&self, name: HeaderName) -> Option<usize> {
        self.lines.iter().position(|l| l.name() == name)
    }

    /// Replaces the Request-URI (requests only; ignored for responses).
    pub fn set_request_uri(&mut self, uri: &str) {
        if self.is_request() {
            self.new_request_uri = Some(uri.to_owned());
            self.edited = true;
        }
    }

    /// Inserts a new header line at the very top of the header section (our Via).
    /// Does nothing for [`HeaderName::Other`], which has no name to write; use
    /// [`Self::insert_header_raw`].
    pub fn prepend_header(&mut self, name: HeaderName, value: &str) {
        if name == HeaderName::Other {
            return;
        }
        self.lines
            .insert(0, Self::owned(name, name.as_str(), value));
        self.edited = true;
    }

    /// Inserts `name: value` before the header line at `index` (position in
    /// [`Self::headers`]); an index at or past the end appends.
    pub fn insert_header_raw(&mut self, index: usize, name: &str, value: &str) {
        let index = index.min(self.lines.len());
        let hn = HeaderName::from_bytes(name.as_bytes());
        self.lines.insert(index, Self::owned(hn, name, value));
        self.edited = true;
    }

    /// Inserts a new line before the first existing line of `name`, or at the top if
    /// there is none (Record-Route).
    pub fn insert_before_first(&mut self, name: HeaderName, value: &str) {
        if name == HeaderName::Other {
            return;
        }
        let at = self.first_index(name).unwrap_or(0);
        self.lines
            .insert(at, Self::owned(name, name.as_str(), value));
        self.edited = true;
    }

    /// Replaces the value of the first line of `name` (keeping its name as written), or
    /// appends the header if absent. Does nothing for [`HeaderName::Other`].
    pub fn set_header(&mut self, name: HeaderName, value: &str) {
        if name == HeaderName::Other {
            return;
        }
        match self.first_index(name) {
            Some(i) => {
                let raw_name = self.header_of(&self.lines[i]).raw_name.to_owned();
                self.lines[i] = Line::Owned {
                    name,
                    raw_name,
                    value: value.to_owned(),
                };
            }
            None => self.lines.push(Self::owned(name, name.as_str(), value)),
        }
        self.edited = true;
    }

    /// Replaces the value of the header line at `index` (position in [`Self::headers`]),
    /// keeping its name as written. Returns false if there is no such line.
    pub fn set_header_at(&mut self, index: usize, value: &str) -> bool {
        let Some(line) = self.lines.get(index) else {
            return false;
        };
        let h = self.header_of(line);
        let (name, raw_name) = (h.name, h.raw_name.to_owned());
        self.lines[index] = Line::Owned {
            name,
            raw_name,
            value: value.to_owned(),
        };
        self.edited = true;
        true
    }

    /// Removes every line of `name`; returns how many were removed.
    pub fn remove_headers(&mut self, name: HeaderName) -> usize {
        let before = self.lines.len();
        self.lines.retain(|l| l.name() != name);
        let removed = before - self.lines.len();
        if removed > 0 {
            self.edited = true;
        }
        removed
    }

    /// Removes every line whose name matches `name` case-insensitively, compact forms
    /// included (for headers without a [`HeaderName`] variant, e.g. topology hiding of
    /// `Server` or `P-Asserted-Identity`); returns how many were removed.
    pub fn remove_headers_by_name(&mut self, name: &str) -> usize {
        let wanted = expand_compact(name.as_bytes()).unwrap_or(name).to_owned();
        let before = self.lines.len();
        let keep: Vec<bool> = self
            .lines
            .iter()
            .map(|l| {
                let raw = self.header_of(l).raw_name;
                let canonical = expand_compact(raw.as_bytes()).unwrap_or(raw);
                !canonical.eq_ignore_ascii_case(&wanted)
            })
            .collect();
        let mut it = keep.into_iter();
        self.lines.retain(|_| it.next().unwrap_or(true));
        let removed = before - self.lines.len();
        if removed > 0 {
            self.edited = true;
        }
        removed
    }

    /// Replaces the value of the first line called `name` (case-insensitive, compact
    /// aware; the name is kept as written), or appends `name: value` if absent. Works for
    /// any header, including those without a [`HeaderName`] variant.
    pub fn set_header_by_name(&mut self, name: &str, value: &str) {
        let wanted = expand_compact(name.as_bytes()).unwrap_or(name);
        let found = self.lines.iter().position(|l| {
            let raw = self.header_of(l).raw_name;
            expand_compact(raw.as_bytes())
                .unwrap_or(raw)
                .eq_ignore_ascii_case(wanted)
        });
        match found {
            Some(i) => {
                let h = self.header_of(&self.lines[i]);
                let (hn, raw_name) = (h.name, h.raw_name.to_owned());
                self.lines[i] = Line::Owned {
                    name: hn,
                    raw_name,
                    value: value.to_owned(),
                };
            }
            None => {
                let hn = HeaderName::from_bytes(name.as_bytes());
                self.lines.push(Self::owned(hn, name, value));
            }
        }
        self.edited = true;
    }

    /// Removes the first comma-separated value of the first line of `name` (removing the
    /// line when nothing is left) and returns it.
    pub fn pop_first_value(&mut self, name: HeaderName) -> Option<String> {
        let i = self.first_index(name)?;
        let h = self.header_of(&self.lines[i]);
        let (first, rest) = match split_first(h.value) {
            Some((f, r)) => (f.to_owned(), r.to_owned()),
            None => (String::new(), String::new()),
        };
        let raw_name = h.raw_name.to_owned();
        if rest.is_empty() {
            self.lines.remove(i);
        } else {
            self.lines[i] = Line::Owned {
                name,
                raw_name,
                value: rest,
            };
        }
        self.edited = true;
        if first.is_empty() {
            None
        } else {
            Some(first)
        }
    }

    /// Replaces only the first comma-separated value of the first line of `name`,
    /// keeping the others. Does nothing if the header is absent.
    pub fn replace_first_value(&mut self, name: HeaderName, value: &str) {
        let Some(i) = self.first_index(name) else {
            return;
        };
        let h = self.header_of(&self.lines[i]);
        let rest = split_first(h.value).map(|(_, r)| r).unwrap_or("");
        let new_value = if rest.is_empty() {
            value.to_owned()
        } else {
            format!("{value}, {rest}")
        };
        let raw_name = h.raw_name.to_owned();
        self.lines[i] = Line::Owned {
            name,
            raw_name,
            value: new_value,
        };
        self.edited = true;
    }

    /// Like [`Self::set_header`], and removes any further lines of that header.
    fn set_single_header(&mut self, name: HeaderName, value: &str) {
        self.set_header(name, value);
        if let Some(first) = self.first_index(name) {
            let mut i = 0;
            self.lines.retain(|l| {
                let keep = i <= first || l.name() != name;
                i += 1;
                keep
            });
        }
    }

    /// Replaces the body, sets Content-Length to its length and, if given, Content-Type
    /// (repeated lines of either header are collapsed into one).
    pub fn set_body(&mut self, body: Bytes, content_type: Option<&str>) {
        self.set_single_header(HeaderName::ContentLength, &body.len().to_string());
        if let Some(ct) = content_type {
            self.set_single_header(HeaderName::ContentType, ct);
        }
        self.new_body = Some(body);
        self.edited = true;
    }

    /// Serialises the message. Without edits this is `raw().clone()` (no copy). With
    /// edits, untouched spans are copied verbatim; bytes after the Content-Length body
    /// (datagram padding) and ignored leading CRLFs are dropped.
    pub fn to_bytes(&self) -> Bytes {
        if !self.edited {
            return self.raw.clone();
        }
        let raw: &[u8] = &self.raw;
        let body = self.body();
        let mut out = BytesMut::with_capacity(raw.len() + 256 + body.len());
        match (&self.start, &self.new_request_uri) {
            (StartLine::Request { uri, .. }, Some(new_uri)) => {
                out.put_slice(&raw[self.start_off..uri.start]);
                out.put_slice(new_uri.as_bytes());
                out.put_slice(&raw[uri.end..self.start_end]);
            }
            _ => out.put_slice(&raw[self.start_off..self.start_end]),
        }
        // Start-line terminator as written (CRLF or LF).
        let term_end = if raw.get(self.start_end) == Some(&b'\r') {
            self.start_end + 2
        } else {
            self.start_end + 1
        };
        out.put_slice(
            raw.get(self.start_end..term_end.min(raw.len()))
                .unwrap_or(b"\r\n"),
        );
        for l in &self.lines {
            match l {
                Line::Raw(r) => out.put_slice(&raw[r.full.clone()]),
                Line::Owned {
                    raw_name, value, ..
                } => {
                    out.put_slice(raw_name.as_bytes());
                    out.put_slice(b": ");
                    out.put_slice(value.as_bytes());
                    out.put_slice(b"\r\n");
                }
            }
        }
        out.put_slice(&raw[self.separator.clone()]);
        out.put_slice(body);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"INVITE sip:bob@b.example SIP/2.0\r\n\
v: SIP/2.0/UDP a.example;branch=z9hG4bK1 , SIP/2.0/TCP c.example;branch=z9hG4bK0\r\n\
Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
Max-Forwards: 70\r\n\
X-Folded: a,\r\n\tb\r\n\
From: <sip:a@a.example>;tag=1\r\n\
To: <sip:bob@b.example>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 3\r\n\
\r\n\
abc";

    fn msg() -> SipMessage {
        SipMessage::parse(Bytes::from_static(REQ)).unwrap()
    }

    #[test]
    fn proxy_edits_touch_only_what_changed() {
        let mut m = msg();
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP sbc.example;branch=z9hG4bKsbc");
        m.set_header(HeaderName::MaxForwards, "69");
        assert_eq!(
            m.pop_first_value(HeaderName::Route).as_deref(),
            Some("<sip:p1.example;lr>")
        );
        m.insert_before_first(HeaderName::RecordRoute, "<sip:sbc.example;lr>");
        m.set_request_uri("sip:bob@10.0.0.2");
        assert!(m.is_edited());
        let out = m.to_bytes();
        let expected = b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\n\
Record-Route: <sip:sbc.example;lr>\r\n\
Via: SIP/2.0/UDP sbc.example;branch=z9hG4bKsbc\r\n\
v: SIP/2.0/UDP a.example;branch=z9hG4bK1 , SIP/2.0/TCP c.example;branch=z9hG4bK0\r\n\
Route: <sip:p2.example;lr>\r\n\
Max-Forwards: 69\r\n\
X-Folded: a,\r\n\tb\r\n\
From: <sip:a@a.example>;tag=1\r\n\
To: <sip:bob@b.example>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 3\r\n\
\r\n\
abc";
        assert_eq!(
            out.as_ref(),
            expected.as_ref(),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // Accessors see the edits, and the output re-parses to the same view.
        assert_eq!(m.top_via().unwrap().host, "sbc.example");
        assert_eq!(m.max_forwards().unwrap(), Some(69));
        let again = SipMessage::parse(out).unwrap();
        assert_eq!(again.vias().unwrap().len(), 3);
        assert_eq!(again.routes().unwrap().len(), 1);
        assert_eq!(again.request_uri(), Some("sip:bob@10.0.0.2"));
    }

    #[test]
    fn response_via_pop_and_replace() {
        let mut m = msg();
        assert_eq!(
            m.pop_first_value(HeaderName::Via).as_deref(),
            Some("SIP/2.0/UDP a.example;branch=z9hG4bK1")
        );
        assert_eq!(m.top_via().unwrap().host, "c.example");
        m.replace_first_value(
            HeaderName::Via,
            "SIP/2.0/TCP c.example;branch=z9hG4bK0;received=1.2.3.4",
        );
        assert_eq!(m.top_via().unwrap().received(), Some("1.2.3.4"));
        assert_eq!(
            m.pop_first_value(HeaderName::Via).as_deref(),
            Some("SIP/2.0/TCP c.example;branch=z9hG4bK0;received=1.2.3.4")
        );
        assert!(m.header(HeaderName::Via).is_none());
        assert_eq!(m.pop_first_value(HeaderName::Via), None);
        let out = m.to_bytes();
        assert!(!out.windows(4).any(|w| w == b"v: S"));
    }

    #[test]
    fn replace_first_keeps_the_rest() {
        let mut m = msg();
        m.replace_first_value(HeaderName::Via, "SIP/2.0/UDP x.example;branch=z9hG4bKx");
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].host, "x.example");
        assert_eq!(vias[1].host, "c.example");
        assert!(m
            .to_bytes()
            .starts_with(b"INVITE sip:bob@b.example SIP/2.0\r\nv: SIP/2.0/UDP x.example"));
    }

    #[test]
    fn body_replacement_fixes_content_length() {
        let mut m = msg();
        m.set_body(
            Bytes::from_static(b"v=0\r\no=x\r\n"),
            Some("application/sdp"),
        );
        let out = SipMessage::parse(m.to_bytes()).unwrap();
        assert_eq!(out.content_length().unwrap(), Some(10));
        assert_eq!(out.body(), b"v=0\r\no=x\r\n");
        assert_eq!(out.content_type(), Some("application/sdp"));
    }

    #[test]
    fn body_replacement_collapses_repeated_content_length() {
        let raw = b"MESSAGE sip:x SIP/2.0\r\nl: 2\r\nContent-Length: 2\r\n\r\nab";
        let mut m = SipMessage::parse(Bytes::from_static(raw)).unwrap();
        m.set_body(Bytes::from_static(b"xyz"), None);
        let out = SipMessage::parse(m.to_bytes()).unwrap();
        assert_eq!(out.header_values(HeaderName::ContentLength), vec!["3"]);
        assert_eq!(out.body(), b"xyz");
    }

    #[test]
    fn remove_and_raw_insert() {
        let mut m = msg();
        assert_eq!(m.remove_headers(HeaderName::Route), 1);
        assert_eq!(m.remove_headers(HeaderName::Route), 0);
        m.insert_header_raw(1, "X-Sbc", "1");
        m.insert_header_raw(999, "Y", "end");
        let names: Vec<String> = m.headers().map(|h| h.raw_name.to_owned()).collect();
        assert_eq!(names[1], "X-Sbc");
        assert_eq!(*names.last().unwrap(), "Y");
        assert_eq!(m.header_by_name("x-sbc"), Some("1"));
        m.prepend_header(HeaderName::Other, "ignored");
        assert_eq!(m.headers().count(), names.len());
    }

    #[test]
    fn edits_by_name_for_headers_without_a_variant() {
        let raw =
            b"OPTIONS sip:x SIP/2.0\r\nServer: pbx 1.0\r\ns: hi\r\nSubject: again\r\nl: 0\r\n\r\n";
        let mut m = SipMessage::parse(Bytes::from_static(raw)).unwrap();
        assert_eq!(m.remove_headers_by_name("subject"), 2);
        assert_eq!(m.remove_headers_by_name("Subject"), 0);
        m.set_header_by_name("server", "sbc");
        m.set_header_by_name("X-New", "1");
        m.set_header_by_name("l", "0");
        let out = m.to_bytes();
        assert_eq!(
            out.as_ref(),
            b"OPTIONS sip:x SIP/2.0\r\nServer: sbc\r\nl: 0\r\nX-New: 1\r\n\r\n".as_ref()
        );
        let again = SipMessage::parse(out).unwrap();
        assert_eq!(again.header(HeaderName::Server), Some("sbc"));
        assert_eq!(again.content_length().unwrap(), Some(0));
    }

    #[test]
    fn no_edit_is_zero_copy() {
        let m = msg();
        let out = m.to_bytes();
        assert_eq!(out.as_ptr(), m.raw().as_ptr());
    }
}
