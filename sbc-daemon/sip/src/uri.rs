//! SIP, SIPS and tel URIs (RFC 3261 19.1, 25.1; RFC 3966 for `tel`).
//!
//! Owns [`SipUri`], a zero-copy view of `scheme:[user[:password]@]host[:port][;params][?headers]`,
//! plus the absolute-URI syntax check used for Request-URIs of other schemes
//! (RFC 3261 25.1 `absoluteURI`). Escapes (`%HH`) are checked but not decoded.

use crate::error::ParseError;
use crate::params::{find_semicolon, Params};

/// A parsed `sip:`, `sips:` or `tel:` URI borrowing from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// "sip", "sips" or "tel", as written (scheme comparison is case-insensitive).
    pub scheme: &'a str,
    /// User part (escaped form); for `tel:` the telephone-subscriber number.
    pub user: Option<&'a str>,
    /// Password after `user:` (deprecated by RFC 3261 but legal).
    pub password: Option<&'a str>,
    /// Host name or address; IPv6 references keep their brackets. Empty for `tel:`.
    pub host: &'a str,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters (after the host, or after the number for `tel:`).
    pub params: Params<'a>,
    /// Raw header part after `?`, without the `?`.
    pub headers: Option<&'a str>,
}

impl<'a> SipUri<'a> {
    /// Parses a sip/sips/tel URI. Other schemes give `BadUri("unsupported scheme")`.
    pub fn parse(s: &'a str) -> Result<SipUri<'a>, ParseError> {
        let colon = s.find(':').ok_or(ParseError::BadUri("missing scheme"))?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            parse_sip(scheme, rest)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(scheme, rest)
        } else {
            Err(ParseError::BadUri("unsupported scheme"))
        }
    }

    /// The `transport` URI parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }

    /// True if the URI has the `lr` parameter (loose routing, RFC 3261 16.4).
    pub fn is_loose_route(&self) -> bool {
        self.params.has("lr")
    }

    /// The `maddr` URI parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// True for the `sips` scheme.
    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }
}

fn parse_sip<'a>(scheme: &'a str, rest: &'a str) -> Result<SipUri<'a>, ParseError> {
    if rest.bytes().any(|c| c <= b' ' || c >= 0x7f) {
        return Err(ParseError::BadUri("white space or non-ASCII in URI"));
    }
    // '@' cannot appear unescaped outside userinfo, so the first one ends it.
    let (userinfo, hostpart) = match rest.find('@') {
        Some(at) => {
            if rest[at + 1..].contains('@') {
                return Err(ParseError::BadUri("more than one '@'"));
            }
            (Some(&rest[..at]), &rest[at + 1..])
        }
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(ui) => {
            let (u, p) = match ui.find(':') {
                Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(ParseError::BadUri("empty user part"));
            }
            if !u.bytes().all(is_user_char) || !valid_escapes(u) {
                return Err(ParseError::BadUri("bad character in user part"));
            }
            if let Some(p) = p {
                if !p.bytes().all(is_password_char) || !valid_escapes(p) {
                    return Err(ParseError::BadUri("bad character in password"));
                }
            }
            (Some(u), p)
        }
        None => (None, None),
    };
    let (before_headers, headers) = match hostpart.find('?') {
        Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
        None => (hostpart, None),
    };
    let (hostport, params) = match before_headers.find(';') {
        Some(sc) => (&before_headers[..sc], &before_headers[sc..]),
        None => (before_headers, ""),
    };
    let (host, port) = split_hostport(hostport)?;
    if !valid_escapes(params) || headers.is_some_and(|h| !valid_escapes(h)) {
        return Err(ParseError::BadUri("bad escape"));
    }
    let params = Params::new(params);
    if params.iter().any(|(n, _)| n.is_empty()) {
        return Err(ParseError::BadUri("empty parameter name"));
    }
    Ok(SipUri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn parse_tel<'a>(scheme: &'a str, rest: &'a str) -> Result<SipUri<'a>, ParseError> {
    if rest.bytes().any(|c| c <= b' ' || c >= 0x7f) {
        return Err(ParseError::BadUri("white space or non-ASCII in URI"));
    }
    let (number, params) = match find_semicolon(rest) {
        Some(sc) => (&rest[..sc], &rest[sc..]),
        None => (rest, ""),
    };
    if number.is_empty()
        || !number.bytes().all(|c| {
            c.is_ascii_hexdigit() || matches!(c, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#')
        })
    {
        return Err(ParseError::BadUri("bad telephone number"));
    }
    Ok(SipUri {
        scheme,
        user: Some(number),
        password: None,
        host: "",
        port: None,
        params: Params::new(params),
        headers: None,
    })
}

/// Splits `host[:port]` (IPv6 references in brackets) and validates both.
pub(crate) fn split_hostport(hp: &str) -> Result<(&str, Option<u16>), ParseError> {
    let (host, port) = if hp.starts_with('[') {
        let close = hp
            .find(']')
            .ok_or(ParseError::BadUri("unterminated IPv6 reference"))?;
        let host = &hp[..=close];
        let after = &hp[close + 1..];
        let port = if after.is_empty() {
            None
        } else if let Some(p) = after.strip_prefix(':') {
            Some(p)
        } else {
            return Err(ParseError::BadUri("garbage after IPv6 reference"));
        };
        if !host[1..host.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
            || host.len() < 4
        {
            return Err(ParseError::BadUri("bad IPv6 reference"));
        }
        (host, port)
    } else {
        match hp.find(':') {
            Some(c) => (&hp[..c], Some(&hp[c + 1..])),
            None => (hp, None),
        }
    };
    if !host.starts_with('[') && !valid_hostname(host) {
        return Err(ParseError::BadUri("bad host"));
    }
    let port = match port {
        Some(p) => Some(parse_port(p).ok_or(ParseError::BadUri("bad port"))?),
        None => None,
    };
    Ok((host, port))
}

/// A port: 1 to 5 digits, at most 65535.
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok()
}

/// RFC 3261 `hostname` or `IPv4address`: labels of alphanumerics and '-', separated by
/// single dots, optional trailing dot. Leniency: '_' is accepted in labels, because
/// deployed UAs put host names such as `my_pc` in Via and Contact.
pub(crate) fn valid_hostname(h: &str) -> bool {
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn is_user_char(c: u8) -> bool {
    is_unreserved(c)
        || matches!(
            c,
            b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/'
        )
}

fn is_password_char(c: u8) -> bool {
    is_unreserved(c) || matches!(c, b'%' | b'&' | b'=' | b'+' | b'$' | b',')
}

/// Every `%` is followed by two hex digits.
pub(crate) fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(x), Some(y)) if x.is_ascii_hexdigit() && y.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// RFC 3261 25.1 `absoluteURI` / RFC 3986 URI, loosely: `scheme ":" 1*uric` without white
/// space or control characters. sip/sips/tel URIs are checked in full by [`SipUri::parse`].
pub(crate) fn check_request_uri(s: &str) -> Result<(), ParseError> {
    let colon = s
        .find(':')
        .ok_or(ParseError::BadRequestUri("missing scheme"))?;
    let scheme = &s[..colon];
    let mut chars = scheme.bytes();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) {
        return Err(ParseError::BadRequestUri("bad scheme"));
    }
    if scheme.eq_ignore_ascii_case("sip")
        || scheme.eq_ignore_ascii_case("sips")
        || scheme.eq_ignore_ascii_case("tel")
    {
        return SipUri::parse(s).map(|_| ()).map_err(|e| match e {
            ParseError::BadUri(r) => ParseError::BadRequestUri(r),
            other => other,
        });
    }
    let rest = &s[colon + 1..];
    if rest.is_empty()
        || rest
            .bytes()
            .any(|c| c <= b' ' || c >= 0x7f || c == b'<' || c == b'>' || c == b'"')
    {
        return Err(ParseError::BadRequestUri("bad absolute URI"));
    }
    if !valid_escapes(rest) {
        return Err(ParseError::BadRequestUri("bad escape"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sip_uri() {
        let u =
            SipUri::parse("sip:alice:secret@example.com:5070;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers, Some("subject=x"));
    }

    #[test]
    fn ipv6_and_user_params() {
        let u = SipUri::parse("sips:[2001:db8::10]:5061;maddr=239.255.255.1").unwrap();
        assert_eq!(u.host, "[2001:db8::10]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.maddr(), Some("239.255.255.1"));
        assert!(u.is_sips());
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        let u = SipUri::parse("SIP:host").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.host, "host");
    }

    #[test]
    fn tel_uri() {
        let u = SipUri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.user, Some("+1-201-555-0123"));
        assert_eq!(u.params.get("phone-context"), Some(Some("example.com")));
    }

    #[test]
    fn rejects() {
        for bad in [
            "sip:",
            "sip:@host",
            "sip:a@b@c",
            "sip:host:99999",
            "sip:host:5x",
            "sip:ho st",
            "sip:[::1",
            "sip:user@-bad-.com",
            "sip:user%zz@host",
            "http//x",
            "sip:exa<mple.com",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_uri_check() {
        assert!(check_request_uri("sip:a@b").is_ok());
        assert!(check_request_uri("mailto:a@b.c").is_ok());
        assert!(check_request_uri("urn:service:sos").is_ok());
        assert!(check_request_uri("1sip:x").is_err());
        assert!(check_request_uri("nocolon").is_err());
        assert!(check_request_uri("sip:%").is_err());
    }
}
