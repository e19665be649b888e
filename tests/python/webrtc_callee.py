"""Portcullis e2e: a WebRTC callee built on aiortc. Waits for the INVITE sbcd sends (the
relay's offer: ICE-lite, DTLS actpass, rtcp-mux, BUNDLE), answers it with aiortc's answer,
sends audio, counts what it receives, answers re-INVITEs with the same description and
the caller's BYE. Prints one JSON line.

usage: webrtc_callee.py LOCAL_IP SIP_PORT MAX_SECONDS
"""
import asyncio
import json
import re
import socket
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack


def head_lines(text, name):
    head = text.split("\r\n\r\n")[0]
    return [l for l in head.split("\r\n") if l.lower().startswith(name.lower() + ":")]


def response(request, code, reason, to_tag, extra="", body=""):
    lines = ["SIP/2.0 %d %s" % (code, reason)]
    lines += head_lines(request, "Via")
    lines += head_lines(request, "Record-Route")
    lines += head_lines(request, "From")
    to = head_lines(request, "To")[0]
    if ";tag=" not in to:
        to += ";tag=" + to_tag
    lines.append(to)
    lines += head_lines(request, "Call-ID")
    lines += head_lines(request, "CSeq")
    return ("\r\n".join(lines) + "\r\n" + extra
            + "Content-Length: %d\r\n\r\n%s" % (len(body.encode()), body)).encode()


async def main():
    local_ip, port, max_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_ip, port))
    sock.setblocking(False)
    result = {}
    deadline = loop.time() + max_s

    async def recv():
        while loop.time() < deadline:
            try:
                data, src = sock.recvfrom(65535)
                return data.decode(errors="replace"), src
            except BlockingIOError:
                await asyncio.sleep(0.01)
        return None, None

    text, src = await recv()
    while text is not None and not text.startswith("INVITE "):
        text, src = await recv()
    if text is None:
        print(json.dumps({"invite": False}), flush=True)
        return 1
    invite, peer = text, src
    offer = invite.split("\r\n\r\n", 1)[1]
    result["offer_proto"] = re.search(r"^m=audio \d+ (\S+)", offer, re.M).group(1)
    result["offer_ice_lite"] = "a=ice-lite" in offer
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    frames = {"n": 0}

    @pc.on("track")
    def on_track(track):
        async def consume():
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                frames["n"] += 1
        asyncio.ensure_future(consume())

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    ok = response(invite, 200, "OK", "aiortc1",
                  "Contact: <sip:callee@%s:%d>\r\nContent-Type: application/sdp\r\n" % (local_ip, port),
                  pc.localDescription.sdp)
    sock.sendto(ok, peer)
    bye = None
    while loop.time() < deadline:
        text, src = await recv()
        if text is None:
            break
        if text.startswith("INVITE "):
            if head_lines(text, "CSeq") == head_lines(invite, "CSeq"):
                sock.sendto(ok, src)  # retransmitted initial INVITE
            else:
                # A re-INVITE (hold/resume): the same session, our description unchanged.
                result["reinvites"] = result.get("reinvites", 0) + 1
                sock.sendto(response(text, 200, "OK", "aiortc1",
                                     "Contact: <sip:callee@%s:%d>\r\nContent-Type: application/sdp\r\n"
                                     % (local_ip, port), pc.localDescription.sdp), src)
        elif text.startswith("BYE "):
            bye = (text, src)
            break
    stats = await pc.getStats()
    result["connection"] = pc.connectionState
    result["packets_received"] = sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")
    result["packets_sent"] = sum(s.packetsSent for s in stats.values() if s.type == "outbound-rtp")
    result["frames_decoded"] = frames["n"]
    result["bye"] = bye is not None
    if bye:
        sock.sendto(response(bye[0], 200, "OK", "aiortc1"), bye[1])
    await pc.close()
    print(json.dumps(result), flush=True)
    return 0


sys.exit(asyncio.run(main()))
