//! Parse benchmark with its anchor measured in the same run: our parser (parse + reading
//! Call-ID, CSeq, top Via branch and To tag) against rsip 0.4 parsing the same ~1 KB INVITE.
//!
//! Run: `cargo run --release -p portcullis-sip --example parse_vs_rsip`

use std::hint::black_box;
use std::time::Instant;

use portcullis_sip::{Bytes, SipMessage};

const INVITE: &[u8] = include_bytes!("../benches/invite.sip");

fn ours(raw: &Bytes) -> usize {
    let Ok(m) = SipMessage::parse(raw.clone()) else {
        return 0;
    };
    let call_id = m.call_id().map(str::len).unwrap_or(0);
    let cseq = m.cseq().map(|c| c.seq as usize).unwrap_or(0);
    let branch = m
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::len))
        .unwrap_or(0);
    let to_tag = m.to().ok().and_then(|t| t.tag().map(str::len)).unwrap_or(0);
    call_id + cseq + branch + to_tag
}

fn anchor(raw: &[u8]) -> usize {
    match rsip::SipMessage::try_from(raw) {
        Ok(m) => m.body().len() + 1,
        Err(_) => 0,
    }
}

fn ns_per_op(iterations: u32, mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut acc = 0usize;
    for _ in 0..iterations {
        acc = acc.wrapping_add(black_box(f()));
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let raw = Bytes::from_static(INVITE);
    assert!(
        ours(&raw) > 0,
        "our parser must parse the benchmark message"
    );
    assert!(anchor(INVITE) > 0, "rsip must parse the benchmark message");
    let n = 200_000;
    // Warm up, then take the best of 5 rounds for each.
    ns_per_op(n / 4, || ours(&raw));
    ns_per_op(n / 4, || anchor(INVITE));
    let best = |f: &mut dyn FnMut() -> usize| {
        (0..5)
            .map(|_| ns_per_op(n, &mut *f))
            .fold(f64::MAX, f64::min)
    };
    let o = best(&mut || ours(&raw));
    let a = best(&mut || anchor(INVITE));
    println!("message: {} bytes", INVITE.len());
    println!("portcullis-sip parse+read: {o:8.1} ns/op");
    println!("rsip 0.4 parse (anchor):   {a:8.1} ns/op");
    println!("ratio anchor/ours:         {:8.2}x", a / o);
}
