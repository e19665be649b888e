"""A minimal SIP user agent client over UDP for scripted media peers in the e2e tests:
INVITE with an SDP body, ACK along the Record-Route set, BYE. Enough for one call through
sbcd; not a general SIP stack."""
import random
import re
import socket


class Call:
    def __init__(self, sbc_ip, local_ip, sip_port=5070, timeout=5.0):
        self.sbc = (sbc_ip, 5060)
        self.local_ip = local_ip
        self.port = sip_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, sip_port))
        self.sock.settimeout(timeout)
        self.call_id = "py-%d@%s" % (random.randrange(1 << 30), local_ip)
        self.tag = "t%d" % random.randrange(1 << 30)
        self.to_tag_param = ""
        self.remote_target = "sip:callee@core.invalid"
        self.route_hdr = ""

    def _send(self, method, uri, cseq, extra="", body="", content_type=None):
        branch = "z9hG4bK-%d" % random.randrange(1 << 30)
        if content_type:
            extra += "Content-Type: %s\r\n" % content_type
        msg = (
            "%s %s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;rport;branch=%s\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:caller@%s>;tag=%s\r\n"
            "To: <sip:callee@core.invalid>%s\r\n"
            "Call-ID: %s\r\n"
            "CSeq: %d %s\r\n"
            "Contact: <sip:caller@%s:%d>\r\n"
            "%s"
            "Content-Length: %d\r\n\r\n%s"
            % (method, uri, self.local_ip, self.port, branch, self.local_ip, self.tag,
               self.to_tag_param, self.call_id, cseq, method, self.local_ip, self.port,
               extra, len(body.encode()), body)
        )
        self.sock.sendto(msg.encode(), self.sbc)

    def _final(self, method):
        while True:
            data, _ = self.sock.recvfrom(65535)
            text = data.decode(errors="replace")
            m = re.match(r"SIP/2.0 (\d+)", text)
            if not m:
                continue
            cseq = re.search(r"^CSeq:\s*\d+\s+(\S+)", text, re.M | re.I)
            if not cseq or cseq.group(1) != method:
                continue
            code = int(m.group(1))
            if code >= 200:
                return code, text

    @staticmethod
    def headers(text, name):
        head = text.split("\r\n\r\n")[0]
        return [l.split(":", 1)[1].strip() for l in head.split("\r\n")
                if l.lower().startswith(name.lower() + ":")]

    def invite(self, sdp):
        """Sends the INVITE, returns (status, answer SDP or ''), ACKs a 2xx."""
        self._send("INVITE", self.remote_target, 1, body=sdp, content_type="application/sdp")
        code, text = self._final("INVITE")
        if code != 200:
            return code, ""
        tag = re.search(r"^To:.*;tag=([^;\s>]+)", text, re.M | re.I)
        self.to_tag_param = ";tag=" + tag.group(1) if tag else ""
        contact = self.headers(text, "Contact")
        if contact:
            self.remote_target = re.search(r"<([^>]+)>", contact[0]).group(1)
        routes = [v.strip() for h in self.headers(text, "Record-Route") for v in h.split(",")]
        self.route_hdr = "".join("Route: %s\r\n" % r for r in reversed(routes))
        self._send("ACK", self.remote_target, 1, self.route_hdr)
        return code, text.split("\r\n\r\n", 1)[1]

    def bye(self):
        self._send("BYE", self.remote_target, 2, self.route_hdr)
        code, _ = self._final("BYE")
        return code
