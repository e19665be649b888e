//! Minimal SIP message inspection for assertions on what peers actually saw (sipp message
//! traces). Deliberately independent of the product's own parser.

/// Direction of a traced message, from the point of view of the tracing peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One SIP message from a sipp `-trace_msg` log.
#[derive(Debug, Clone)]
pub struct TracedMessage {
    pub direction: Direction,
    /// "UDP" or "TCP" as written by sipp.
    pub transport: String,
    /// The message with line breaks normalised to `\n`.
    pub text: String,
}

const SEPARATOR: &str = "-----------------------------------------------";

/// Parses a sipp `-trace_msg` log.
pub fn parse_trace(log: &str) -> Vec<TracedMessage> {
    let mut out = Vec::new();
    let log = log.replace('\r', "");
    for block in log.split(&format!("\n{SEPARATOR}")) {
        let block = block.strip_prefix(SEPARATOR).unwrap_or(block);
        let mut lines = block.lines();
        // First line: rest of the separator line (timestamp); then the event line.
        let _timestamp = lines.next();
        let Some(event) = lines.next() else { continue };
        let direction = if event.contains("message received") {
            Direction::Received
        } else if event.contains("message sent") {
            Direction::Sent
        } else {
            continue;
        };
        let transport = event.split_whitespace().next().unwrap_or("").to_string();
        let body: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
        let text = body.join("\n").trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        out.push(TracedMessage {
            direction,
            transport,
            text,
        });
    }
    out
}

fn long_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "v" => "via",
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        _ => return lower,
    };
    long.to_string()
}

/// Splits a header value at commas that are outside `<...>` and quotes.
pub fn split_top_level(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, ch) in value.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                parts.push(value[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim().to_string());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

impl TracedMessage {
    /// The start line.
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// Request method, if this is a request.
    pub fn method(&self) -> Option<&str> {
        let first = self.first_line();
        if first.starts_with("SIP/2.0") {
            return None;
        }
        first.split_whitespace().next()
    }

    /// Request-URI, if this is a request.
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.first_line().split_whitespace().nth(1)
    }

    /// Status code, if this is a response.
    pub fn status(&self) -> Option<u16> {
        let first = self.first_line();
        let rest = first.strip_prefix("SIP/2.0 ")?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// True for a request with this method.
    pub fn is_request(&self, method: &str) -> bool {
        self.method() == Some(method)
    }

    /// True for a response with this status whose CSeq method is `cseq_method`.
    pub fn is_response(&self, status: u16, cseq_method: &str) -> bool {
        self.status() == Some(status) && self.cseq_method().as_deref() == Some(cseq_method)
    }

    /// Raw values of every header line called `name` (long or compact form), in order.
    pub fn header_lines(&self, name: &str) -> Vec<String> {
        let want = long_name(name);
        let mut out = Vec::new();
        for line in self.text.lines().skip(1) {
            if line.is_empty() {
                break;
            }
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            if long_name(n.trim()) == want {
                out.push(v.trim().to_string());
            }
        }
        out
    }

    /// Values of header `name`, comma-separated lists split into elements, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.header_lines(name)
            .iter()
            .flat_map(|v| split_top_level(v))
            .collect()
    }

    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    /// The method in CSeq.
    pub fn cseq_method(&self) -> Option<String> {
        let line = self.header_lines("CSeq").into_iter().next()?;
        line.split_whitespace().nth(1).map(str::to_string)
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<String> {
        self.header_lines("Call-ID").into_iter().next()
    }

    /// Via values, top first.
    pub fn vias(&self) -> Vec<String> {
        self.header_values("Via")
    }

    /// The `branch` parameter of the topmost Via.
    pub fn top_via_branch(&self) -> Option<String> {
        let top = self.vias().into_iter().next()?;
        via_param(&top, "branch")
    }
}

/// Value of parameter `name` in a Via value (`None` if absent; `Some("")` if valueless).
pub fn via_param(via: &str, name: &str) -> Option<String> {
    via.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "----------------------------------------------- 2026-11-23 18:38:33.654101\r\n\
UDP message received [715] bytes :\r\n\r\n\
INVITE sip:callee@core.invalid SIP/2.0\r\n\
Record-Route: <sip:198.51.100.1;r2=on;lr>\r\n\
Record-Route: <sip:192.0.2.1;r2=on;lr>\r\n\
v: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKabc, SIP/2.0/UDP 192.0.2.2:5060;rport=5060;branch=z9hG4bK-1\r\n\
CSeq: 1 INVITE\r\n\
Call-ID: 1-2@192.0.2.2\r\n\
Content-Length: 0\r\n\r\n\r\n\
----------------------------------------------- 2026-11-23 18:38:33.654948\r\n\
UDP message sent (488 bytes):\r\n\r\n\
SIP/2.0 180 Ringing\r\n\
CSeq: 1 INVITE\r\n\r\n";

    #[test]
    fn parses_sipp_trace() {
        let msgs = parse_trace(LOG);
        assert_eq!(msgs.len(), 2);
        let inv = &msgs[0];
        assert_eq!(inv.direction, Direction::Received);
        assert_eq!(inv.transport, "UDP");
        assert!(inv.is_request("INVITE"));
        assert_eq!(inv.request_uri(), Some("sip:callee@core.invalid"));
        assert_eq!(inv.vias().len(), 2);
        assert_eq!(inv.top_via_branch().as_deref(), Some("z9hG4bKabc"));
        assert_eq!(inv.header_values("Record-Route").len(), 2);
        assert_eq!(inv.call_id().as_deref(), Some("1-2@192.0.2.2"));
        assert_eq!(msgs[1].direction, Direction::Sent);
        assert!(msgs[1].is_response(180, "INVITE"));
        assert_eq!(msgs[1].method(), None);
    }

    #[test]
    fn splits_only_top_level_commas() {
        assert_eq!(
            split_top_level("<sip:a;x=1,2>, \"b,c\" <sip:d>"),
            vec!["<sip:a;x=1,2>", "\"b,c\" <sip:d>"]
        );
    }

    #[test]
    fn via_params() {
        let v = "SIP/2.0/UDP 192.0.2.2:5060;rport=5060;received=192.0.2.2;branch=z9hG4bK1";
        assert_eq!(via_param(v, "rport").as_deref(), Some("5060"));
        assert_eq!(via_param(v, "received").as_deref(), Some("192.0.2.2"));
        assert_eq!(
            via_param("SIP/2.0/UDP h;rport", "rport").as_deref(),
            Some("")
        );
        assert_eq!(via_param(v, "maddr"), None);
    }
}
