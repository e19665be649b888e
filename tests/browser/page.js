// The browser side of the real-browser e2e tests: a JsSIP user agent that registers over
// WebSocket (WSS) to sbcd, then places or answers one audio call, watches the media with
// RTCPeerConnection.getStats() and reports everything to driver.mjs through the CDP binding
// `portcullisReport` (one JSON object per report). Configuration comes in the URL fragment:
//
//   ws_url         wss://host:port of sbcd's listener
//   uri            our AOR (sip:alice@host)
//   mode           "call": call `target`; "answer": wait (answer_wait_ms) for a call and answer it
//   hangup         "browser": hang up once media is seen (min_packets inbound packets and a
//                  non-zero audio level) or after media_wait_ms; "remote": wait
//                  (remote_wait_ms) for the other side's BYE
//
// The last report is {event: "result", ...}: registration, how the call ended and by whom,
// the SDP both ways and the highest inbound-rtp figures seen.
'use strict';

(function main() {
  const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const send = (obj) => window.portcullisReport(JSON.stringify({ t_ms: ms(), ...obj }));
  const result = {
    event: 'result',
    mode: cfg.mode,
    registered: false,
    register_error: null,
    call_started: false,
    confirmed: false,
    failed: null,
    ended_by: null,
    end_cause: null,
    local_sdp: [],
    remote_sdp: [],
    stats: {
      max_packets_received: 0,
      max_audio_level: 0,
      total_audio_energy: 0,
      packets_sent: 0,
      dtls_state: null,
      srtp_cipher: null,
      ice_state: null,
      codec: null,
    },
    timeline: [],
  };
  const mark = (what) => {
    result.timeline.push(`${ms()} ${what}`);
    send({ event: 'progress', what });
  };
  let finished = false;
  let ua = null;
  const finish = (why) => {
    if (finished) return;
    finished = true;
    mark(`finish: ${why}`);
    // Unregister and close the WebSocket cleanly, then report.
    try {
      if (ua) ua.stop();
    } catch (e) {
      mark(`ua.stop: ${e}`);
    }
    setTimeout(() => send(result), 700);
  };
  window.addEventListener('error', (e) => send({ event: 'fatal', error: String(e.message) }));

  const mediaConstraints = {
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    video: false,
  };
  const pcConfig = { iceServers: [], rtcpMuxPolicy: 'require', bundlePolicy: 'max-bundle' };

  async function sample(pc) {
    const st = result.stats;
    const report = await pc.getStats();
    const codecs = {};
    let inboundCodec = null;
    report.forEach((r) => {
      if (r.type === 'codec') codecs[r.id] = `${r.mimeType}/${r.clockRate}`;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        st.max_packets_received = Math.max(st.max_packets_received, r.packetsReceived || 0);
        st.max_audio_level = Math.max(st.max_audio_level, r.audioLevel || 0);
        st.total_audio_energy = Math.max(st.total_audio_energy, r.totalAudioEnergy || 0);
        inboundCodec = r.codecId;
      }
      if (r.type === 'outbound-rtp' && r.kind === 'audio') {
        st.packets_sent = Math.max(st.packets_sent, r.packetsSent || 0);
      }
      if (r.type === 'transport') {
        st.dtls_state = r.dtlsState || st.dtls_state;
        st.srtp_cipher = r.srtpCipher || st.srtp_cipher;
        st.ice_state = r.iceState || st.ice_state;
      }
    });
    if (inboundCodec && codecs[inboundCodec]) st.codec = codecs[inboundCodec];
    return st;
  }

  function mediaSeen() {
    const st = result.stats;
    return st.max_packets_received >= cfg.min_packets && st.max_audio_level > 0;
  }

  function watch(session) {
    let pc = null;
    let timer = null;
    let lastProgress = 0;
    const attach = (conn) => {
      pc = conn;
      pc.addEventListener('track', (e) => {
        const audio = document.getElementById('remote');
        audio.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
        audio.play().catch((err) => mark(`audio.play: ${err}`));
      });
      pc.addEventListener('iceconnectionstatechange', () => mark(`ice ${pc.iceConnectionState}`));
      pc.addEventListener('connectionstatechange', () => mark(`pc ${pc.connectionState}`));
      timer = setInterval(async () => {
        if (!pc || pc.signalingState === 'closed') return;
        try {
          await sample(pc);
        } catch (e) {
          return;
        }
        if (ms() - lastProgress > 1000) {
          lastProgress = ms();
          send({ event: 'stats', stats: result.stats });
        }
      }, 200);
    };
    if (session.connection) attach(session.connection);
    session.on('peerconnection', (e) => attach(e.peerconnection));
    session.on('sdp', (e) => {
      (e.originator === 'local' ? result.local_sdp : result.remote_sdp).push({ type: e.type, sdp: e.sdp });
    });
    session.on('progress', (e) => mark(`progress ${e.response ? e.response.status_code : ''}`));
    session.on('accepted', () => mark('accepted'));
    session.on('confirmed', () => {
      result.confirmed = true;
      mark('confirmed');
      if (cfg.hangup === 'browser') {
        const deadline = ms() + cfg.media_wait_ms;
        const check = setInterval(() => {
          if (session.isEnded()) {
            clearInterval(check);
            return;
          }
          if (mediaSeen() || ms() >= deadline) {
            clearInterval(check);
            mark(mediaSeen() ? 'media seen: hanging up' : 'no media in time: hanging up');
            session.terminate();
          }
        }, 100);
      } else {
        setTimeout(() => {
          if (!session.isEnded()) {
            mark('no BYE from the remote side in time: hanging up');
            session.terminate();
          }
        }, cfg.remote_wait_ms);
      }
    });
    const ended = (kind) => (e) => {
      if (timer) clearInterval(timer);
      if (kind === 'failed') result.failed = e.cause;
      result.ended_by = e.originator;
      result.end_cause = e.cause;
      mark(`${kind} by ${e.originator}: ${e.cause}${e.message && e.message.status_code ? ` (${e.message.status_code})` : ''}`);
      finish(kind);
    };
    session.on('ended', ended('ended'));
    session.on('failed', ended('failed'));
  }

  try {
    const socket = new JsSIP.WebSocketInterface(cfg.ws_url);
    ua = new JsSIP.UA({
      sockets: [socket],
      uri: cfg.uri,
      register: true,
      register_expires: 300,
      session_timers: false,
      user_agent: 'portcullis-e2e JsSIP',
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 2,
    });
  } catch (e) {
    send({ event: 'fatal', error: `JsSIP setup: ${e}` });
    return;
  }
  ua.on('connected', () => mark('websocket connected'));
  ua.on('disconnected', () => mark('websocket disconnected'));
  ua.on('registrationFailed', (e) => {
    result.register_error = `${e.cause}${e.response ? ` ${e.response.status_code}` : ''}`;
    mark(`registration failed: ${result.register_error}`);
    finish('registration failed');
  });
  ua.on('newRTCSession', (e) => {
    if (e.originator !== 'remote') return;
    result.call_started = true;
    mark('incoming call');
    watch(e.session);
    e.session.answer({ mediaConstraints, pcConfig });
  });
  ua.on('registered', () => {
    if (result.registered) return;
    result.registered = true;
    send({ event: 'registered' });
    mark('registered');
    if (cfg.mode === 'call') {
      result.call_started = true;
      const session = ua.call(cfg.target, { mediaConstraints, pcConfig });
      watch(session);
    } else {
      setTimeout(() => {
        if (!result.call_started) finish('no incoming call in time');
      }, cfg.answer_wait_ms);
    }
  });
  ua.start();
})();
