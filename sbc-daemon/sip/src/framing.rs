//! Message framing on stream transports (TCP, TLS): RFC 3261 18.3 (Content-Length is
//! mandatory on streams and delimits the body), RFC 3261 7.5 (CRLFs before a start line are
//! ignored) and RFC 5626 4.4.1 (double-CRLF keep-alive ping, single-CRLF pong).
//!
//! [`frame`] looks at the front of a receive buffer and says how many bytes form the next
//! unit; the transport removes them and calls again. It never allocates.

use crate::error::ParseError;
use crate::header::{expand_compact, parse_decimal};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// A complete message occupies `buf[..n]`.
    Message(usize),
    /// A `"\r\n\r\n"` keep-alive ping of `n` bytes; the transport answers `"\r\n"`.
    KeepAlivePing(usize),
    /// A lone `"\r\n"` (pong, or an ignorable CRLF before a start line) of `n` bytes.
    KeepAlivePong(usize),
    /// More bytes are needed.
    Partial,
    /// The stream is corrupt; close the connection.
    Invalid(ParseError),
}

/// End of the header section: index just past the empty line (CRLF CRLF, or LF LF
/// tolerated), if present.
fn head_end(buf: &[u8]) -> Option<usize> {
    for nl in memchr::memchr_iter(b'\n', buf) {
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
    }
    None
}

/// Finds Content-Length (or `l`) in a header section, joining folded continuation lines.
fn find_content_length(head: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    let mut current: Option<Vec<u8>> = None;
    let finish = |digits: Vec<u8>, found: &mut Option<usize>| -> Result<(), ParseError> {
        let text = std::str::from_utf8(&digits).map_err(|_| ParseError::BadContentLength)?;
        let v =
            parse_decimal(text, u64::from(u32::MAX)).ok_or(ParseError::BadContentLength)? as usize;
        match *found {
            Some(prev) if prev != v => Err(ParseError::ConflictingContentLength),
            _ => {
                *found = Some(v);
                Ok(())
            }
        }
    };
    // Skip the start line.
    for line in head.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            if let Some(v) = current.as_mut() {
                let piece = line.trim_ascii();
                if !v.is_empty() && !piece.is_empty() {
                    v.push(b' ');
                }
                v.extend_from_slice(piece);
            }
            continue;
        }
        if let Some(v) = current.take() {
            finish(v, &mut found)?;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"content-length")
            || expand_compact(name) == Some("Content-Length")
        {
            current = Some(line[colon + 1..].trim_ascii().to_vec());
        }
    }
    if let Some(v) = current.take() {
        finish(v, &mut found)?;
    }
    Ok(found)
}

/// Frames the next unit at the front of `buf` (see [`Framing`]). A header section or a
/// whole message larger than `max_message_size` is `Invalid(TooLarge)`; a message without
/// Content-Length is `Invalid(MissingContentLength)`.
///
/// Each call scans `buf` from the start (memchr-based), so a peer trickling one byte per
/// segment costs O(n^2) over a message; `max_message_size` bounds n.
pub fn frame(buf: &[u8], max_message_size: usize) -> Framing {
    if buf.is_empty() {
        return Framing::Partial;
    }
    if buf.starts_with(b"\r\n") {
        if buf.starts_with(b"\r\n\r\n") {
            return Framing::KeepAlivePing(4);
        }
        if buf.len() == 3 && buf[2] == b'\r' {
            return Framing::Partial;
        }
        return Framing::KeepAlivePong(2);
    }
    if buf[0] == b'\r' && buf.len() == 1 {
        return Framing::Partial;
    }
    let Some(end) = head_end(buf) else {
        if buf.len() > max_message_size {
            return Framing::Invalid(ParseError::TooLarge);
        }
        return Framing::Partial;
    };
    if end > max_message_size {
        return Framing::Invalid(ParseError::TooLarge);
    }
    let cl = match find_content_length(&buf[..end]) {
        Ok(Some(cl)) => cl,
        Ok(None) => return Framing::Invalid(ParseError::MissingContentLength),
        Err(e) => return Framing::Invalid(e),
    };
    let total = match end.checked_add(cl) {
        Some(t) if t <= max_message_size => t,
        _ => return Framing::Invalid(ParseError::TooLarge),
    };
    if buf.len() < total {
        Framing::Partial
    } else {
        Framing::Message(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabc";

    #[test]
    fn frames_messages_byte_by_byte() {
        let mut stream = Vec::new();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"OPTIONS sip:y SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        for n in 0..MSG.len() {
            assert_eq!(frame(&stream[..n], 4096), Framing::Partial, "prefix {n}");
        }
        assert_eq!(frame(&stream, 4096), Framing::Message(MSG.len()));
        assert_eq!(
            frame(&stream[MSG.len()..], 4096),
            Framing::Message(stream.len() - MSG.len())
        );
    }

    #[test]
    fn keepalives() {
        assert_eq!(frame(b"\r\n\r\n", 100), Framing::KeepAlivePing(4));
        assert_eq!(frame(b"\r\n\r\nOPTIONS", 100), Framing::KeepAlivePing(4));
        assert_eq!(frame(b"\r\n", 100), Framing::KeepAlivePong(2));
        assert_eq!(frame(b"\r\nOPTIONS", 100), Framing::KeepAlivePong(2));
        assert_eq!(frame(b"\r\n\r", 100), Framing::Partial);
        assert_eq!(frame(b"\r", 100), Framing::Partial);
    }

    #[test]
    fn folded_content_length() {
        let m = b"OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n 3\r\nVia: x\r\n\r\nabc";
        assert_eq!(frame(m, 4096), Framing::Message(m.len()));
    }

    #[test]
    fn invalid_streams() {
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\r\n\r\n", 100),
            Framing::Invalid(ParseError::MissingContentLength)
        );
        assert_eq!(frame(MSG, 20), Framing::Invalid(ParseError::TooLarge));
        assert_eq!(
            frame(&[b'A'; 200], 100),
            Framing::Invalid(ParseError::TooLarge)
        );
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nl: 99999999999\r\n\r\n", 100),
            Framing::Invalid(ParseError::BadContentLength)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n",
                100
            ),
            Framing::Invalid(ParseError::ConflictingContentLength)
        );
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nl: 10\r\n\r\nabc", 12),
            Framing::Invalid(ParseError::TooLarge)
        );
    }
}
