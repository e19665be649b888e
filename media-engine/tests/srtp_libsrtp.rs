//! Interoperability of `media_engine::srtp` with libsrtp 2 (Debian `libsrtp2-dev`, listed in
//! `.ci/packages/test-srtp.txt`).
//!
//! The test compiles a small C peer against libsrtp, then for every profile, over RTP and
//! RTCP, across several ROC rollovers, with jumps and reordering:
//! - the same plaintext packets are protected by both implementations and must be byte-equal;
//! - what we protect, libsrtp unprotects (back to the plaintext), and vice versa;
//! - replays and tampered packets are rejected by both.
//!
//! It fails (does not skip) when `cc` or libsrtp is missing.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use media_engine::srtp::{SrtpContext, SrtpError, SrtpProfile};

const PEER_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <srtp2/srtp.h>

static int unhex(const char *s, unsigned char *out, int max) {
    int n = 0;
    while (s[0] && s[1] && s[0] != '\n' && n < max) {
        unsigned int b;
        if (sscanf(s, "%2x", &b) != 1) return -1;
        out[n++] = (unsigned char)b;
        s += 2;
    }
    return n;
}

static void set_policy(srtp_policy_t *p, const char *profile, unsigned char *key, int dir) {
    memset(p, 0, sizeof(*p));
    if (strcmp(profile, "AES_CM_128_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_rtp_default(&p->rtp);
        srtp_crypto_policy_set_rtcp_default(&p->rtcp);
    } else if (strcmp(profile, "AES_CM_128_HMAC_SHA1_32") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_rtcp_default(&p->rtcp);
    } else if (strcmp(profile, "AEAD_AES_128_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtcp);
    } else {
        fprintf(stderr, "unknown profile %s\n", profile);
        exit(2);
    }
    if (getenv("SRTCP_AUTH_ONLY")) p->rtcp.sec_serv = sec_serv_auth;
    p->ssrc.type = dir;
    p->key = key;
    p->window_size = 128;
    p->allow_repeat_tx = 0;
    p->next = NULL;
}

int main(int argc, char **argv) {
    static unsigned char key[64];
    static unsigned char buf[4096];
    static char line[16384];
    srtp_t tx, rx;
    srtp_policy_t ptx, prx;
    if (argc != 3) { fprintf(stderr, "usage: peer PROFILE KEYHEX\n"); return 2; }
    if (unhex(argv[2], key, sizeof key) < 28) { fprintf(stderr, "bad key\n"); return 2; }
    if (srtp_init() != srtp_err_status_ok) { fprintf(stderr, "srtp_init\n"); return 2; }
    set_policy(&ptx, argv[1], key, ssrc_any_outbound);
    set_policy(&prx, argv[1], key, ssrc_any_inbound);
    if (srtp_create(&tx, &ptx) != srtp_err_status_ok) { fprintf(stderr, "create tx\n"); return 2; }
    if (srtp_create(&rx, &prx) != srtp_err_status_ok) { fprintf(stderr, "create rx\n"); return 2; }
    while (fgets(line, sizeof line, stdin)) {
        char op = line[0];
        int len = unhex(line + 2, buf, 4000);
        srtp_err_status_t st;
        if (len < 0) { printf("err hex\n"); fflush(stdout); continue; }
        switch (op) {
        case 'p': st = srtp_protect(tx, buf, &len); break;
        case 'u': st = srtp_unprotect(rx, buf, &len); break;
        case 'P': st = srtp_protect_rtcp(tx, buf, &len); break;
        case 'U': st = srtp_unprotect_rtcp(rx, buf, &len); break;
        default: printf("err op\n"); fflush(stdout); continue;
        }
        if (st != srtp_err_status_ok) {
            printf("err %d\n", (int)st);
        } else {
            printf("ok ");
            for (int i = 0; i < len; i++) printf("%02x", buf[i]);
            printf("\n");
        }
        fflush(stdout);
    }
    return 0;
}
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn build_peer() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("srtp-libsrtp-peer");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("peer.c");
    std::fs::write(&src, PEER_C).unwrap();
    let bin = dir.join("peer");
    let out = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg("-lsrtp2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc (install gcc): {e}"));
    assert!(
        out.status.success(),
        "compiling the libsrtp peer failed (is libsrtp2-dev installed? see \
         .ci/packages/test-srtp.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(bin: &PathBuf, profile: SrtpProfile, keying: &[u8], rtcp_auth_only: bool) -> Self {
        let mut cmd = Command::new(bin);
        if rtcp_auth_only {
            cmd.env("SRTCP_AUTH_ONLY", "1");
        }
        let mut child = cmd
            .arg(profile.sdes_name())
            .arg(hex(keying))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs one operation; Ok(bytes) or Err(libsrtp status).
    fn op(&mut self, op: char, pkt: &[u8]) -> Result<Vec<u8>, i32> {
        writeln!(self.stdin, "{op} {}", hex(pkt)).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if let Some(h) = line.strip_prefix("ok ") {
            Ok(unhex(h))
        } else if let Some(code) = line.strip_prefix("err ") {
            Err(code.parse().unwrap_or(-1))
        } else {
            panic!("peer said {line:?}");
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rtp(seq: u16, ssrc: u32, payload_len: usize, with_ext: bool) -> Vec<u8> {
    let mut p = vec![if with_ext { 0x91 } else { 0x80 }, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if with_ext {
        // One CSRC, then a one-word header extension.
        p.extend_from_slice(&0xcafe_f00du32.to_be_bytes());
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
    }
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn rtcp_sr(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0x00, 0x06];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes()); // NTP msw
    p.extend_from_slice(&(n * 7).to_be_bytes()); // NTP lsw
    p.extend_from_slice(&(n * 160).to_be_bytes()); // RTP ts
    p.extend_from_slice(&n.to_be_bytes()); // packets
    p.extend_from_slice(&(n * 160).to_be_bytes()); // octets
    p
}

/// Sequence numbers starting near the wrap, crossing `rollovers` ROC increments, with jumps of
/// up to 3000 and steps of one around each wrap.
fn sequence_plan(rollovers: u32) -> Vec<u16> {
    let mut seqs = Vec::new();
    let mut idx: u64 = 65_000;
    let end = u64::from(rollovers + 1) << 16;
    let mut lcg: u64 = 0x9e37_79b9;
    while idx < end {
        seqs.push(idx as u16);
        let near_wrap = (idx & 0xffff) > 65_400 || (idx & 0xffff) < 100;
        lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let next = idx + if near_wrap { 1 } else { 1 + (lcg >> 33) % 3000 };
        let wrap_at = (idx | 0xffff) + 1;
        // Never jump over a wrap: slow down to steps of one before it.
        idx = if !near_wrap && next >= wrap_at - 100 {
            wrap_at - 120
        } else {
            next
        };
    }
    seqs
}

fn keying(profile: SrtpProfile, fill: u8) -> Vec<u8> {
    (0..profile.master_key_len() + profile.master_salt_len())
        .map(|i| fill.wrapping_add((i as u8).wrapping_mul(37)))
        .collect()
}

fn run_profile(bin: &PathBuf, profile: SrtpProfile) {
    let keying = keying(profile, 0x5a);
    let mut peer = Peer::start(bin, profile, &keying, false);
    let mut our_tx = SrtpContext::from_key_and_salt(profile, &keying).unwrap();
    let mut our_rx = SrtpContext::from_key_and_salt(profile, &keying).unwrap();
    let seqs = sequence_plan(3);
    let name = profile.sdes_name();

    // --- RTP, we protect -> libsrtp unprotects; byte-equal to libsrtp's own protection. ---
    let ssrc_a = 0x1111_2222;
    let mut ours = Vec::new();
    for (n, &seq) in seqs.iter().enumerate() {
        // Mostly small payloads of every length, sometimes large ones (many AES/GHASH batches).
        let len = if n % 50 == 0 { 1200 + n % 17 } else { n % 200 };
        let plain = rtp(seq, ssrc_a, len, n % 5 == 0);
        let mut p = plain.clone();
        our_tx.protect_rtp(&mut p).unwrap();
        let theirs = peer.op('p', &plain).unwrap();
        assert_eq!(p, theirs, "{name}: protected RTP differs at seq {seq}");
        ours.push((plain, p));
    }
    assert_eq!(our_tx.roc(ssrc_a), Some(3), "{name}: three rollovers");
    // Deliver with adjacent swaps where the two are close (inside the replay window): late
    // packets, some across a wrap.
    let mut order: Vec<usize> = (0..ours.len()).collect();
    let mut swapped = vec![false; order.len()];
    let mut wraps = 0;
    for pass in [true, false] {
        for i in 1..order.len() {
            let gap = seqs[i].wrapping_sub(seqs[i - 1]);
            let wrap = seqs[i] < seqs[i - 1];
            let wanted = if pass { wrap } else { i % 7 == 0 };
            if wanted && gap <= 64 && !swapped[i - 1] && !swapped[i] {
                // At every wrap 65535 arrives after 0: its index is estimated with ROC - 1.
                order.swap(i - 1, i);
                swapped[i - 1] = true;
                swapped[i] = true;
                wraps += usize::from(wrap);
            }
        }
    }
    assert_eq!(wraps, 3, "a late packet across each of the three wraps");
    for &i in &order {
        let (plain, prot) = &ours[i];
        let got = peer.op('u', prot).unwrap();
        assert_eq!(&got, plain, "{name}: libsrtp unprotect of our packet {i}");
    }
    // Replay refused by libsrtp.
    assert!(peer.op('u', &ours[ours.len() - 1].1).is_err());

    // --- RTP, libsrtp protects -> we unprotect. ---
    let ssrc_b = 0x3333_4444;
    let mut theirs = Vec::new();
    for (n, &seq) in seqs.iter().enumerate() {
        let len = if n % 40 == 0 {
            1000 + n % 33
        } else {
            160 + n % 3
        };
        let plain = rtp(seq, ssrc_b, len, n % 11 == 0);
        let prot = peer.op('p', &plain).unwrap();
        theirs.push((plain, prot));
    }
    for &i in &order {
        let (plain, prot) = &theirs[i];
        let mut p = prot.clone();
        our_rx
            .unprotect_rtp(&mut p)
            .unwrap_or_else(|e| panic!("{name}: our unprotect of libsrtp packet {i}: {e}"));
        assert_eq!(&p, plain);
    }
    assert_eq!(our_rx.roc(ssrc_b), Some(3));
    let mut replay = theirs[theirs.len() - 1].1.clone();
    assert!(matches!(
        our_rx.unprotect_rtp(&mut replay),
        Err(SrtpError::Replayed { .. })
    ));
    // Tampered: one payload bit flipped.
    let plain = rtp(seqs[seqs.len() - 1].wrapping_add(1), ssrc_b, 50, false);
    let mut tampered = peer.op('p', &plain).unwrap();
    tampered[20] ^= 0x01;
    assert_eq!(
        our_rx.unprotect_rtp(&mut tampered.clone()),
        Err(SrtpError::AuthFailed)
    );
    assert!(peer.op('u', &tampered).is_err());

    // --- RTCP both ways (byte-equal: both start at SRTCP index 1). ---
    let ssrc_c = 0x5555_6666;
    for n in 1..=50u32 {
        let plain = rtcp_sr(ssrc_c, n);
        let mut p = plain.clone();
        our_tx.protect_rtcp(&mut p).unwrap();
        let theirs = peer.op('P', &plain).unwrap();
        assert_eq!(p, theirs, "{name}: protected RTCP differs at #{n}");
        let back = peer.op('U', &p).unwrap();
        assert_eq!(back, plain, "{name}: libsrtp unprotect of our RTCP #{n}");
    }
    let ssrc_d = 0x7777_8888;
    let mut last = Vec::new();
    for n in 1..=50u32 {
        let plain = rtcp_sr(ssrc_d, n);
        let prot = peer.op('P', &plain).unwrap();
        let mut p = prot.clone();
        our_rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, plain, "{name}: our unprotect of libsrtp RTCP #{n}");
        last = prot;
    }
    assert!(matches!(
        our_rx.unprotect_rtcp(&mut last),
        Err(SrtpError::Replayed { .. })
    ));

    // --- SRTCP authenticated but not encrypted (E flag clear), from libsrtp. ---
    let mut auth_only = Peer::start(bin, profile, &keying, true);
    let mut rx = SrtpContext::from_key_and_salt(profile, &keying).unwrap();
    for n in 1..=5u32 {
        let plain = rtcp_sr(0x9999_0000, n);
        let prot = auth_only.op('P', &plain).unwrap();
        assert_eq!(
            &prot[8..plain.len()],
            &plain[8..],
            "{name}: E=0 leaves it clear"
        );
        let mut bad = prot.clone();
        bad[12] ^= 0x80;
        assert_eq!(rx.unprotect_rtcp(&mut bad), Err(SrtpError::AuthFailed));
        let mut p = prot;
        rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, plain, "{name}: our unprotect of unencrypted SRTCP #{n}");
    }
}

#[test]
fn interop_with_libsrtp_all_profiles() {
    let bin = build_peer();
    for profile in [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
    ] {
        run_profile(&bin, profile);
    }
}
