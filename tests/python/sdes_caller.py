"""Portcullis e2e: a scripted SDES-SRTP caller (RFC 4568) built on pylibsrtp (libsrtp 2).

Calls through sbcd over UDP with an RTP/SAVP offer carrying its own a=crypto key, takes the
SBC's key from the answer, sends SRTP, decrypts what comes back (the callee echoes), and
meanwhile lets an "attacker" socket send packets with bad authentication tags to the SBC's
relay port. Prints one JSON line with what it saw, then hangs up.

usage: sdes_caller.py SBC_IP LOCAL_IP PACKETS
"""
import base64
import json
import os
import random
import re
import socket
import struct
import sys
import time

from pylibsrtp import Policy, Session

sbc_ip, local_ip, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIP_PORT, MEDIA_PORT, ATTACK_PORT = 5070, 24000, 24002
key = os.urandom(30)
call_id = "sdes-%d@%s" % (random.randrange(1 << 30), local_ip)
tag = "c%d" % random.randrange(1 << 30)

sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sip.bind((local_ip, SIP_PORT))
sip.settimeout(5)
media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
media.bind((local_ip, MEDIA_PORT))
media.settimeout(0.05)
attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attacker.bind((local_ip, ATTACK_PORT))
attacker.settimeout(0.01)


def request(method, uri, cseq, extra="", body=""):
    branch = "z9hG4bK-%d" % random.randrange(1 << 30)
    msg = (
        "%s %s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP %s:%d;rport;branch=%s\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:srtp@%s>;tag=%s\r\n"
        "To: <sip:callee@core.invalid>%s\r\n"
        "Call-ID: %s\r\n"
        "CSeq: %d %s\r\n"
        "Contact: <sip:srtp@%s:%d>\r\n"
        "%s"
        "Content-Length: %d\r\n\r\n%s"
        % (method, uri, local_ip, SIP_PORT, branch, local_ip, tag, to_tag_param, call_id,
           cseq, method, local_ip, SIP_PORT, extra, len(body), body)
    )
    sip.sendto(msg.encode(), (sbc_ip, 5060))


def final_response(method):
    while True:
        data, _ = sip.recvfrom(65535)
        text = data.decode(errors="replace")
        m = re.match(r"SIP/2.0 (\d+)", text)
        if not m or ("CSeq:" not in text) or (" %s" % method) not in text.split("CSeq:")[1].split("\r\n")[0]:
            continue
        code = int(m.group(1))
        if code >= 200:
            return code, text


def header(text, name):
    return [l.split(":", 1)[1].strip() for l in text.split("\r\n\r\n")[0].split("\r\n")
            if l.lower().startswith(name.lower() + ":")]


to_tag_param = ""
sdp = (
    "v=0\r\no=srtp 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
    "m=audio %d RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n"
    % (local_ip, local_ip, MEDIA_PORT, base64.b64encode(key).decode())
)
request("INVITE", "sip:callee@core.invalid", 1, "Content-Type: application/sdp\r\n", sdp)
code, ok = final_response("INVITE")
result = {"invite": code}
if code != 200:
    print(json.dumps(result), flush=True)
    sys.exit(1)
to_tag_param = ";tag=" + re.search(r"^To:.*;tag=([^;\s>]+)", ok, re.M | re.I).group(1)
answer = ok.split("\r\n\r\n", 1)[1]
result["answer_proto"] = re.search(r"^m=audio \d+ (\S+)", answer, re.M).group(1)
relay_port = int(re.search(r"^m=audio (\d+)", answer, re.M).group(1))
relay_ip = re.search(r"^c=IN IP4 (\S+)", answer, re.M).group(1)
crypto = re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", answer, re.M)
result["answer_has_crypto"] = crypto is not None
contact = re.search(r"<([^>]+)>", header(ok, "Contact")[0]).group(1)
routes = [v.strip() for h in header(ok, "Record-Route") for v in h.split(",")]
route_hdr = "".join("Route: %s\r\n" % r for r in reversed(routes))
request("ACK", contact, 1, route_hdr)
if crypto is None:
    print(json.dumps(result), flush=True)
    sys.exit(1)
sbc_key = base64.b64decode(crypto.group(1))

tx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                           srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
rx = Session(policy=Policy(key=sbc_key, ssrc_type=Policy.SSRC_ANY_INBOUND,
                           srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
ssrc = random.randrange(1 << 32)
sent, echoed, unexpected, undecryptable, forged_sent, attacker_got = set(), 0, 0, 0, 0, 0
deadline = time.time() + 20
for seq in range(1, count + 1):
    payload = bytes([0xd5]) * 160
    rtp = struct.pack("!BBHII", 0x80, 8, seq, seq * 160, ssrc) + payload
    media.sendto(tx.protect(rtp), (relay_ip, relay_port))
    sent.add(seq)
    # The attacker: a packet that looks like SRTP with a wrong tag, from another port.
    forged = struct.pack("!BBHII", 0x80, 8, seq + 5000, seq * 160, ssrc) + os.urandom(170)
    attacker.sendto(forged, (relay_ip, relay_port))
    forged_sent += 1
    end = time.time() + 0.02
    while time.time() < end:
        try:
            data, _ = media.recvfrom(4096)
        except socket.timeout:
            break
        try:
            plain = rx.unprotect(data)
        except Exception:
            undecryptable += 1
            continue
        s = struct.unpack("!H", plain[2:4])[0]
        if s in sent and plain[12:] == payload:
            echoed += 1
        else:
            unexpected += 1
    try:
        attacker.recvfrom(4096)
        attacker_got += 1
    except socket.timeout:
        pass
# Late echoes.
end = time.time() + 1.0
while time.time() < end:
    try:
        data, _ = media.recvfrom(4096)
    except socket.timeout:
        continue
    try:
        plain = rx.unprotect(data)
    except Exception:
        undecryptable += 1
        continue
    s = struct.unpack("!H", plain[2:4])[0]
    if s in sent and plain[12:] == bytes([0xd5]) * 160:
        echoed += 1
    else:
        unexpected += 1
result.update(sent=len(sent), echoed=echoed, unexpected=unexpected,
              undecryptable=undecryptable, forged_sent=forged_sent, attacker_got=attacker_got)
request("BYE", contact, 2, route_hdr)
code, _ = final_response("BYE")
result["bye"] = code
print(json.dumps(result), flush=True)
