//! Header names and header-value lexing (RFC 3261 7.3, 25.1 and 20).
//!
//! Owns: canonical [`HeaderName`]s with case-insensitive lookup and compact forms
//! (RFC 3261 7.3.3 plus the compact forms registered by RFC 3515, 3841, 3892, 3903,
//! 4028, 4474 and 6665), the borrowed [`Header`] line view, and the small lexical helpers
//! every typed view uses: linear white space including folded lines (`LWS`), quoted strings
//! and the comma splitting of list headers that respects quotes and `<...>`.

/// Canonical header names; compact forms map to the full name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    /// Via / v
    Via,
    /// From / f
    From,
    /// To / t
    To,
    /// Call-ID / i
    CallId,
    /// CSeq
    CSeq,
    /// Contact / m
    Contact,
    /// Route
    Route,
    /// Record-Route
    RecordRoute,
    /// Max-Forwards
    MaxForwards,
    /// Content-Length / l
    ContentLength,
    /// Content-Type / c
    ContentType,
    /// Expires
    Expires,
    /// Supported / k
    Supported,
    /// Require
    Require,
    /// Proxy-Require
    ProxyRequire,
    /// Unsupported
    Unsupported,
    /// Allow
    Allow,
    /// Path (RFC 3327)
    Path,
    /// Authorization
    Authorization,
    /// Proxy-Authorization
    ProxyAuthorization,
    /// WWW-Authenticate
    WwwAuthenticate,
    /// Proxy-Authenticate
    ProxyAuthenticate,
    /// User-Agent
    UserAgent,
    /// Server
    Server,
    /// Event / o (RFC 6665)
    Event,
    /// Refer-To / r (RFC 3515)
    ReferTo,
    /// Session-Expires / x (RFC 4028)
    SessionExpires,
    /// Min-Expires
    MinExpires,
    /// Retry-After
    RetryAfter,
    /// Any header without a variant here; use the raw name.
    Other,
}

/// Compact forms (RFC 3261 7.3.3 and extensions) and the full names they stand for.
const COMPACT_FORMS: [(u8, &str); 20] = [
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Full header name for a one-letter compact form, if it is one.
pub fn expand_compact(name: &[u8]) -> Option<&'static str> {
    match name {
        [c] => {
            let c = c.to_ascii_lowercase();
            COMPACT_FORMS
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, full)| *full)
        }
        _ => None,
    }
}

impl HeaderName {
    /// Case-insensitive lookup of a raw header name, compact forms included.
    #[inline]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b'o' => Event,
                b'r' => ReferTo,
                b'x' => SessionExpires,
                _ => Other,
            };
        }
        // Dispatch on (length, first letter): at most two full compares.
        let Some(first) = name.first() else {
            return Other;
        };
        let candidates: &[HeaderName] = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => &[To],
            (3, b'v') => &[Via],
            (4, b'f') => &[From],
            (4, b'c') => &[CSeq],
            (4, b'p') => &[Path],
            (5, b'r') => &[Route],
            (5, b'a') => &[Allow],
            (5, b'e') => &[Event],
            (6, b's') => &[Server],
            (7, b'c') => &[CallId, Contact],
            (7, b'e') => &[Expires],
            (7, b'r') => &[Require],
            (8, b'r') => &[ReferTo],
            (9, b's') => &[Supported],
            (10, b'u') => &[UserAgent],
            (11, b'u') => &[Unsupported],
            (11, b'm') => &[MinExpires],
            (11, b'r') => &[RetryAfter],
            (12, b'r') => &[RecordRoute],
            (12, b'm') => &[MaxForwards],
            (12, b'c') => &[ContentType],
            (13, b'p') => &[ProxyRequire],
            (13, b'a') => &[Authorization],
            (14, b'c') => &[ContentLength],
            (15, b's') => &[SessionExpires],
            (16, b'w') => &[WwwAuthenticate],
            (18, b'p') => &[ProxyAuthenticate],
            (19, b'p') => &[ProxyAuthorization],
            _ => &[],
        };
        for &c in candidates {
            if c.as_str().as_bytes().eq_ignore_ascii_case(name) {
                return c;
            }
        }
        Other
    }

    /// Canonical full name ("" for [`HeaderName::Other`]).
    pub fn as_str(&self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            Contact => "Contact",
            Route => "Route",
            RecordRoute => "Record-Route",
            MaxForwards => "Max-Forwards",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            Expires => "Expires",
            Supported => "Supported",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Unsupported => "Unsupported",
            Allow => "Allow",
            Path => "Path",
            Authorization => "Authorization",
            ProxyAuthorization => "Proxy-Authorization",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthenticate => "Proxy-Authenticate",
            UserAgent => "User-Agent",
            Server => "Server",
            Event => "Event",
            ReferTo => "Refer-To",
            SessionExpires => "Session-Expires",
            MinExpires => "Min-Expires",
            RetryAfter => "Retry-After",
            Other => "",
        }
    }

    /// True for headers whose value is a comma-separated list (RFC 3261 7.3.1), so
    /// [`crate::SipMessage::header_values`] splits them. Singleton headers and the
    /// authentication headers (whose parameters are comma-separated) are not split.
    pub fn is_list(&self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Contact
                | Route
                | RecordRoute
                | Supported
                | Require
                | ProxyRequire
                | Unsupported
                | Allow
                | Path
        )
    }
}

/// Header names that are lists but have no [`HeaderName`] variant (compared on the
/// canonical full name, case-insensitively).
pub(crate) fn other_is_list(canonical: &str) -> bool {
    const LISTS: [&str; 10] = [
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Accept-Contact",
        "Reject-Contact",
        "Security-Client",
    ];
    LISTS.iter().any(|n| n.eq_ignore_ascii_case(canonical))
}

/// One header line as it appears in the message (a line may hold several
/// comma-separated values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Canonical name ([`HeaderName::Other`] for names without a variant).
    pub name: HeaderName,
    /// The name exactly as written (compact form kept).
    pub raw_name: &'a str,
    /// Raw value, trimmed of surrounding whitespace; may contain folded CRLF + WSP.
    pub value: &'a str,
}

/// Linear white space including line folding (SP, HT, CR, LF).
#[inline]
pub(crate) fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims LWS (including folded line breaks) at both ends.
#[inline]
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Index just past a quoted string starting at `start` (which must be `"`), honouring
/// `\` quoted-pairs. `None` if unterminated.
pub(crate) fn skip_quoted(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value at top-level commas (outside quotes and `<...>`), trimming LWS
/// and skipping empty elements. Unterminated quotes or brackets swallow the rest of the
/// value into the last element, so nothing is lost.
pub(crate) fn split_commas(value: &str) -> SplitCommas<'_> {
    SplitCommas { s: value, pos: 0 }
}

/// Iterator of [`split_commas`].
pub(crate) struct SplitCommas<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> SplitCommas<'a> {
    /// The unsplit text after the element last returned (after its comma).
    pub(crate) fn remainder(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }
}

impl<'a> Iterator for SplitCommas<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.s.as_bytes();
        loop {
            if self.pos >= b.len() {
                return None;
            }
            let start = self.pos;
            let mut i = start;
            let mut angle = false;
            while i < b.len() {
                match b[i] {
                    b'"' if !angle => match skip_quoted(b, i) {
                        Some(end) => i = end,
                        None => i = b.len(),
                    },
                    b'<' => {
                        angle = true;
                        i += 1;
                    }
                    b'>' => {
                        angle = false;
                        i += 1;
                    }
                    b',' if !angle => break,
                    _ => i += 1,
                }
            }
            let end = i.min(b.len());
            self.pos = end + 1;
            let item = trim_lws(self.s.get(start..end).unwrap_or(""));
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

/// Parses a decimal number of at most `max` (no sign, no spaces, at least one digit).
pub(crate) fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        // Leading zeros beyond 20 digits are legal but absurd; reject to stay bounded.
        if s.is_empty() || s.trim_start_matches('0').len() > 20 {
            return None;
        }
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        if v > max {
            return None;
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_compact_aware() {
        assert_eq!(HeaderName::from_bytes(b"via"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"VIA"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"c"), HeaderName::ContentType);
        assert_eq!(HeaderName::from_bytes(b"k"), HeaderName::Supported);
        assert_eq!(HeaderName::from_bytes(b"m"), HeaderName::Contact);
        assert_eq!(HeaderName::from_bytes(b"f"), HeaderName::From);
        assert_eq!(HeaderName::from_bytes(b"t"), HeaderName::To);
        assert_eq!(HeaderName::from_bytes(b"o"), HeaderName::Event);
        assert_eq!(HeaderName::from_bytes(b"r"), HeaderName::ReferTo);
        assert_eq!(HeaderName::from_bytes(b"x"), HeaderName::SessionExpires);
        assert_eq!(HeaderName::from_bytes(b"s"), HeaderName::Other);
        assert_eq!(
            HeaderName::from_bytes(b"www-authenticate"),
            HeaderName::WwwAuthenticate
        );
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        assert_eq!(expand_compact(b"u"), Some("Allow-Events"));
        assert_eq!(expand_compact(b"Y"), Some("Identity"));
        assert_eq!(expand_compact(b"q"), None);
    }

    #[test]
    fn every_variant_round_trips_through_its_name() {
        use HeaderName::*;
        for n in [
            Via,
            From,
            To,
            CallId,
            CSeq,
            Contact,
            Route,
            RecordRoute,
            MaxForwards,
            ContentLength,
            ContentType,
            Expires,
            Supported,
            Require,
            ProxyRequire,
            Unsupported,
            Allow,
            Path,
            Authorization,
            ProxyAuthorization,
            WwwAuthenticate,
            ProxyAuthenticate,
            UserAgent,
            Server,
            Event,
            ReferTo,
            SessionExpires,
            MinExpires,
            RetryAfter,
        ] {
            assert_eq!(HeaderName::from_bytes(n.as_str().as_bytes()), n, "{n:?}");
            assert_eq!(
                HeaderName::from_bytes(n.as_str().to_ascii_uppercase().as_bytes()),
                n
            );
        }
    }

    #[test]
    fn comma_split_respects_quotes_and_brackets() {
        let v: Vec<_> = split_commas(r#""a, b" <sip:x@y;p=1,2>;q=1 , <sip:z>,, sip:w"#).collect();
        assert_eq!(v, vec![r#""a, b" <sip:x@y;p=1,2>;q=1"#, "<sip:z>", "sip:w"]);
        let v: Vec<_> = split_commas("SIP/2.0/UDP a\r\n , SIP/2.0/TCP b").collect();
        assert_eq!(v, vec!["SIP/2.0/UDP a", "SIP/2.0/TCP b"]);
        let v: Vec<_> = split_commas(r#""unterminated, x"#).collect();
        assert_eq!(v, vec![r#""unterminated, x"#]);
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("0", 10), Some(0));
        assert_eq!(parse_decimal("10", 10), Some(10));
        assert_eq!(parse_decimal("11", 10), None);
        assert_eq!(parse_decimal("", 10), None);
        assert_eq!(parse_decimal("1a", 10), None);
        assert_eq!(parse_decimal("36893488147419103232", u64::MAX), None);
        assert_eq!(parse_decimal("000000000000000000000001", 10), Some(1));
    }
}
