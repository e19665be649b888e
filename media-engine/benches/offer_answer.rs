//! Offer + answer + delete throughput and memory per session for a typical desk-phone call
//! (the golden `desk-phone` SDPs: 5 audio formats offered, PCMU + telephone-event answered).
//!
//! Run: `cargo bench -p media-engine --bench offer_answer`. Prints:
//! - criterion timings for `offer`, `offer+answer+delete`;
//! - a plain-loop figure in calls per second (offer+answer+delete each);
//! - live heap bytes per established session (after offer+answer), counted by a global
//!   allocator wrapper.
//!
//! The rtpengine comparison (offer/answer/delete over its NG port, same machine) is not done
//! here yet: it needs rtpengine installed and an NG client, which belongs to the end-to-end
//! benchmark in `tests/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use media_engine::{AnswerRequest, Flags, MediaEngine, MediaInterface, OfferRequest};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const OFFER: &[u8] = include_bytes!("../tests/fixtures/desk-phone.offer.in.sdp");
const ANSWER: &[u8] = include_bytes!("../tests/fixtures/desk-phone.answer.in.sdp");

fn engine() -> MediaEngine {
    MediaEngine::new(vec![
        MediaInterface {
            name: "outside".into(),
            address: "192.0.2.1".parse().unwrap(),
            advertised_address: Some("203.0.113.5".parse().unwrap()),
            port_min: 20000,
            port_max: 59999,
        },
        MediaInterface {
            name: "inside".into(),
            address: "10.0.0.1".parse().unwrap(),
            advertised_address: None,
            port_min: 20000,
            port_max: 59999,
        },
    ])
    .unwrap()
}

fn offer_req(call_id: &str) -> OfferRequest<'_> {
    OfferRequest {
        call_id,
        from_tag: "as8f7a6s",
        to_tag: None,
        via_branch: Some("z9hG4bK-524287-1"),
        sdp: OFFER,
        ingress_interface: "outside",
        egress_interface: "inside",
        flags: Flags::default(),
    }
}

fn answer_req(call_id: &str) -> AnswerRequest<'_> {
    AnswerRequest {
        call_id,
        from_tag: "as8f7a6s",
        to_tag: "9fxced76sl",
        via_branch: Some("z9hG4bK-524287-1"),
        sdp: ANSWER,
        flags: Flags::default(),
    }
}

fn one_call(e: &mut MediaEngine, call_id: &str) -> usize {
    let o = e
        .offer(&offer_req(call_id))
        .map(|r| r.sdp.len())
        .unwrap_or(0);
    let a = e
        .answer(&answer_req(call_id))
        .map(|r| r.sdp.len())
        .unwrap_or(0);
    e.delete(call_id, "as8f7a6s", Some("9fxced76sl"));
    o + a
}

fn figures() {
    // Throughput in a plain loop (criterion's numbers are printed below as well).
    let mut e = engine();
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("{i:08x}-bench@192.0.2.10"))
        .collect();
    for id in &ids {
        black_box(one_call(&mut e, id));
    }
    let rounds = 100;
    let start = Instant::now();
    for _ in 0..rounds {
        for id in &ids {
            black_box(one_call(&mut e, id));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let calls = (rounds * ids.len()) as f64;
    println!(
        "media-engine: offer+answer+delete of a desk-phone call: {:.0} calls/s ({:.2} us per call, {:.0} SDP operations/s)",
        calls / secs,
        secs / calls * 1e6,
        3.0 * calls / secs
    );

    // Memory per established session.
    let mut e = engine();
    let n = 10_000;
    let ids: Vec<String> = (0..n).map(|i| format!("{i:08x}-mem@192.0.2.10")).collect();
    let before = LIVE.load(Ordering::Relaxed);
    for id in &ids {
        let o = e.offer(&offer_req(id)).expect("offer");
        let a = e.answer(&answer_req(id)).expect("answer");
        drop((o, a));
    }
    let after = LIVE.load(Ordering::Relaxed);
    let per = (after - before) as f64 / n as f64;
    println!(
        "media-engine: live heap per established session (offer+answer, {n} sessions): {per:.0} bytes"
    );
    for id in &ids {
        e.delete(id, "as8f7a6s", None);
    }
    let usage = e.port_usage();
    assert!(usage.iter().all(|u| u.used == 0), "ports leaked: {usage:?}");
}

fn bench(c: &mut Criterion) {
    figures();
    let mut g = c.benchmark_group("desk-phone");
    g.bench_function("re-offer on an existing call", |b| {
        let mut e = engine();
        b.iter(|| {
            let r = e.offer(&offer_req("offer-only@bench")).map(|r| r.sdp.len());
            black_box(r)
        })
    });
    g.bench_function("offer+answer+delete", |b| {
        let mut e = engine();
        b.iter(|| black_box(one_call(&mut e, "oad@bench")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
