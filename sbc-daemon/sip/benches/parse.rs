//! Parse and edit benchmarks on a typical ~1 KB INVITE (`benches/invite.sip`: SDP body,
//! 16 headers incl. 2 Vias, Record-Route, Contact, Allow, Supported, User-Agent).
//!
//! Run: `cargo bench -p portcullis-sip --bench parse`. Goal: parse + reading Call-ID,
//! CSeq, top Via branch and To tag <= 1 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_sip::{Bytes, HeaderName, SipMessage};

const INVITE: &[u8] = include_bytes!("invite.sip");

fn parse_and_read(c: &mut Criterion) {
    let raw = Bytes::from_static(INVITE);
    let mut g = c.benchmark_group("invite");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("parse_only", |b| {
        b.iter(|| SipMessage::parse(black_box(raw.clone())).map(|m| m.is_request()))
    });
    g.bench_function("parse_and_read_call_id_cseq_branch_to_tag", |b| {
        b.iter(|| {
            let m = SipMessage::parse(black_box(raw.clone())).ok()?;
            let call_id = m.call_id().ok()?.len();
            let cseq = m.cseq().ok()?.seq;
            let branch = m.top_via().ok()?.branch()?.len();
            let to_tag = m.to().ok()?.tag().map_or(0, str::len);
            Some(call_id + cseq as usize + branch + to_tag)
        })
    });
    g.bench_function("parse_edit_serialise_via_and_max_forwards", |b| {
        b.iter(|| {
            let mut m = SipMessage::parse(black_box(raw.clone())).ok()?;
            let mf = m.max_forwards().ok()??;
            m.prepend_header(
                HeaderName::Via,
                "SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-sbc-1;rport",
            );
            m.set_header(HeaderName::MaxForwards, &(mf - 1).to_string());
            Some(m.to_bytes())
        })
    });
    let parsed = SipMessage::parse(raw.clone()).expect("bench message parses");
    g.bench_function("serialise_after_edit_only", |b| {
        b.iter_batched(
            || {
                let mut m = parsed.clone();
                m.prepend_header(
                    HeaderName::Via,
                    "SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-sbc-1;rport",
                );
                m.set_header(HeaderName::MaxForwards, "68");
                m
            },
            |m| m.to_bytes(),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parse_and_read);
criterion_main!(benches);
