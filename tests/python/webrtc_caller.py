"""Portcullis e2e: a WebRTC caller built on aiortc (a real WebRTC stack: full ICE, DTLS-SRTP
with OpenSSL, libsrtp, rtcp-mux, BUNDLE). It calls through sbcd with the offer aiortc
generates, applies the SBC's answer (ICE-lite + DTLS), sends audio and counts what comes
back (the callee echoes RTP), then hangs up. Prints one JSON line.

usage: webrtc_caller.py SBC_IP LOCAL_IP SECONDS
"""
import asyncio
import json
import logging
import os
import re
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from sipua import Call


if os.environ.get("PEER_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)


async def main():
    sbc_ip, local_ip, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
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

    await pc.setLocalDescription(await pc.createOffer())
    call = Call(sbc_ip, local_ip)
    loop = asyncio.get_running_loop()
    code, answer = await loop.run_in_executor(None, call.invite,
                                              pc.localDescription.sdp)
    result = {"invite": code}
    if code != 200:
        print(json.dumps(result), flush=True)
        return 1
    m = re.search(r"^m=audio \d+ (\S+)", answer, re.M)
    result["answer_proto"] = m.group(1) if m else None
    result["answer_ice_lite"] = "a=ice-lite" in answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    deadline = loop.time() + 10
    while pc.connectionState != "connected" and loop.time() < deadline:
        await asyncio.sleep(0.1)
    result["connection"] = pc.connectionState
    await asyncio.sleep(seconds)
    stats = await pc.getStats()
    inbound = [s for s in stats.values() if s.type == "inbound-rtp"]
    outbound = [s for s in stats.values() if s.type == "outbound-rtp"]
    result["packets_received"] = sum(s.packetsReceived for s in inbound)
    result["packets_sent"] = sum(s.packetsSent for s in outbound)
    result["frames_decoded"] = frames["n"]
    result["bye"] = await loop.run_in_executor(None, call.bye)
    await pc.close()
    print(json.dumps(result), flush=True)
    return 0


sys.exit(asyncio.run(main()))
