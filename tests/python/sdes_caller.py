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

from sipua import Call

sbc_ip, local_ip, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIP_PORT, MEDIA_PORT, ATTACK_PORT = 5070, 24000, 24002
key = os.urandom(30)

media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
media.bind((local_ip, MEDIA_PORT))
media.settimeout(0.05)
attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attacker.bind((local_ip, ATTACK_PORT))
attacker.settimeout(0.01)

sdp = (
    "v=0\r\no=srtp 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
    "m=audio %d RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n"
    % (local_ip, local_ip, MEDIA_PORT, base64.b64encode(key).decode())
)
call = Call(sbc_ip, local_ip, SIP_PORT)
code, answer = call.invite(sdp)
result = {"invite": code}
if code != 200:
    print(json.dumps(result), flush=True)
    sys.exit(1)
result["answer_proto"] = re.search(r"^m=audio \d+ (\S+)", answer, re.M).group(1)
relay_port = int(re.search(r"^m=audio (\d+)", answer, re.M).group(1))
relay_ip = re.search(r"^c=IN IP4 (\S+)", answer, re.M).group(1)
crypto = re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", answer, re.M)
result["answer_has_crypto"] = crypto is not None
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
result["bye"] = call.bye()
print(json.dumps(result), flush=True)
