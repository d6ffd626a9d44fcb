//! The codec on the per-statement path: splitting what a client sent into
//! messages and reading the ones the gateway inspects (an extended-protocol
//! transaction as pgbench -M extended sends it), and splitting and reading
//! a result as the target sends it.

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_pg::codec::frame::split_frame;
use portcullis_pg::codec::{build, message, result};
use std::hint::black_box;

fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.put_slice(body);
}

/// Parse, Bind (one text parameter), Describe, Execute, Sync.
fn extended_transaction() -> BytesMut {
    let mut out = BytesMut::new();
    build::parse(
        &mut out,
        "",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    );
    let mut bind = Vec::new();
    bind.extend_from_slice(b"\0\0");
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&5i32.to_be_bytes());
    bind.extend_from_slice(b"48213");
    bind.extend_from_slice(&0i16.to_be_bytes());
    message(&mut out, b'B', &bind);
    message(&mut out, b'D', b"P\0");
    message(&mut out, b'E', b"\0\0\0\0\0");
    message(&mut out, b'S', b"");
    out
}

/// RowDescription (one int4 column), a DataRow, CommandComplete, ReadyForQuery.
fn one_row_result() -> BytesMut {
    let mut out = BytesMut::new();
    let mut description = Vec::new();
    description.extend_from_slice(&1i16.to_be_bytes());
    description.extend_from_slice(b"abalance\0");
    description.extend_from_slice(&16401i32.to_be_bytes());
    description.extend_from_slice(&3i16.to_be_bytes());
    description.extend_from_slice(&23i32.to_be_bytes());
    description.extend_from_slice(&4i16.to_be_bytes());
    description.extend_from_slice(&(-1i32).to_be_bytes());
    description.extend_from_slice(&0i16.to_be_bytes());
    message(&mut out, b'T', &description);
    result::write_data_row(&mut out, &[Some(b"-4123")]);
    message(&mut out, b'C', b"SELECT 1\0");
    build::ready_for_query(&mut out, b'I');
    out
}

/// Splits a copy of `bytes` into messages and reads each with `read`, as
/// the relay does with what arrives; returns what was read, so that nothing
/// is optimised away.
fn split_and_read(bytes: &BytesMut, read: impl Fn(u8, &[u8]) -> usize) -> usize {
    let mut buf = black_box(bytes).clone();
    let mut total = 0usize;
    while let Ok(Some(frame)) = split_frame(&mut buf) {
        total += read(frame.tag, frame.body());
    }
    total
}

fn codec(c: &mut Criterion) {
    let client = extended_transaction();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(client.len() as u64));
    group.bench_function("client_extended_transaction", |b| {
        b.iter(|| {
            split_and_read(&client, |tag, body| match tag {
                b'P' => message::parse(body).map_or(0, |p| p.query.len()),
                b'B' => message::bind_parameters(body, 32, 256).map_or(0, |p| p.len()),
                b'E' => message::execute(body).map_or(0, str::len),
                _ => 1,
            })
        })
    });
    let target = one_row_result();
    group.throughput(Throughput::Bytes(target.len() as u64));
    group.bench_function("target_one_row_result", |b| {
        b.iter(|| {
            split_and_read(&target, |tag, body| match tag {
                b'T' => result::row_description(body).map_or(0, |d| d.len()),
                b'D' => result::data_row(body).map_or(0, |r| r.len()),
                _ => 1,
            })
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
