//! Properties over generated frames and bytes. Values are compared by bit
//! pattern ([`fuzz::assert_same`]), so the generators may produce NaN
//! activations; top-k scores are never NaN because the format forbids them.

use half::f16;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::fuzz::{assert_same, check_split};
use super::*;

fn hop() -> impl Strategy<Value = Hop> {
    (any::<u16>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(stage, queue_us, compute_us, sent_unix_us)| Hop {
            stage,
            queue_us,
            compute_us,
            sent_unix_us,
        },
    )
}

fn row() -> impl Strategy<Value = RowMeta> {
    (
        any::<u128>(),
        any::<u64>(),
        1..=1000u16,
        vec(any::<u32>(), 0..8),
    )
        .prop_map(|(request_id, deadline_unix_ms, k, exclude)| RowMeta {
            request_id,
            deadline_unix_ms,
            k,
            exclude,
        })
}

fn activations(rows: usize) -> impl Strategy<Value = Activations> {
    (dtype(), 1..=8u32, vec(1..=4u32, rows)).prop_flat_map(|(dtype, dim, lengths)| {
        let dim = if dtype == Dtype::TrackIds { 1 } else { dim };
        let count = lengths.iter().sum::<u32>() as usize * dim as usize;
        let values = match dtype {
            Dtype::F32 => vec(any::<u32>().prop_map(f32::from_bits), count)
                .prop_map(Values::F32)
                .boxed(),
            Dtype::F16 => vec(any::<u16>().prop_map(f16::from_bits), count)
                .prop_map(Values::F16)
                .boxed(),
            Dtype::TrackIds => vec(any::<u32>(), count).prop_map(Values::TrackIds).boxed(),
        };
        values.prop_map(move |values| Activations {
            dim,
            lengths: lengths.clone(),
            values,
        })
    })
}

fn dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![Just(Dtype::F32), Just(Dtype::F16), Just(Dtype::TrackIds)]
}

fn topk(rows: &[RowMeta]) -> impl Strategy<Value = Vec<Vec<Scored>>> + use<> {
    use proptest::num::f32::{INFINITE, NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    let score = POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE;
    rows.iter()
        .map(|row| {
            vec((any::<u32>(), score), 0..=usize::from(row.k).min(6)).prop_map(|entries| {
                let mut list: Vec<Scored> = entries
                    .into_iter()
                    .map(|(track, score)| Scored { track, score })
                    .collect();
                list.sort_by(|a, b| b.score.total_cmp(&a.score));
                list
            })
        })
        .collect::<Vec<_>>()
}

/// Any valid frame, small enough that a few hundred cases run in well under
/// a second.
fn frame() -> impl Strategy<Value = Frame> {
    (
        "\\PC{1,16}",
        "\\PC{0,64}",
        any::<u16>(),
        any::<u32>(),
        vec(hop(), 0..4),
        vec(row(), 1..6),
    )
        .prop_flat_map(
            |(model_version, trace_context, stage, reply_to, hops, rows)| {
                let body = prop_oneof![
                    activations(rows.len()).prop_map(Body::Activations),
                    topk(&rows).prop_map(Body::TopK),
                ];
                body.prop_map(move |body| Frame {
                    model_version: model_version.clone(),
                    stage,
                    reply_to,
                    trace_context: trace_context.clone(),
                    hops: hops.clone(),
                    rows: rows.clone(),
                    body,
                })
            },
        )
}

#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<Index>().prop_map(Edit::Remove),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match edit {
            Edit::Set(at, byte) => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            Edit::Insert(at, byte) => bytes.insert(at.index(bytes.len() + 1), *byte),
            Edit::Remove(at) => {
                bytes.remove(at.index(bytes.len()));
            }
        }
    }
    bytes
}

/// What a fuzzer would feed the decoder: noise, noise behind a valid
/// header (so it gets past the magic), and valid frames with a few edits.
fn fuzz_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        vec(any::<u8>(), 0..256)
            .prop_map(|tail| [&b"STLF\x01\x00\x01\x00\x02\x00m1"[..], &tail].concat()),
        (frame(), vec(edit(), 0..4))
            .prop_map(|(frame, edits)| apply(frame.encode().unwrap(), &edits)),
    ]
}

/// The frame holding only row `index` of `frame`.
fn only_row(frame: &Frame, index: usize) -> Frame {
    let body = match &frame.body {
        Body::Activations(a) => Body::Activations(Activations {
            dim: a.dim,
            lengths: vec![a.lengths[index]],
            values: split::slice(&a.values, a.row_range(index)),
        }),
        Body::TopK(lists) => Body::TopK(vec![lists[index].clone()]),
    };
    Frame {
        rows: vec![frame.rows[index].clone()],
        body,
        ..frame.clone()
    }
}

proptest! {
    #[test]
    fn valid_frames_round_trip(frame in frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        let decoded = Frame::decode(&bytes).unwrap();
        assert_same(&decoded, &frame);
        prop_assert_eq!(peek_header(&bytes).unwrap(), frame.header());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Frame::decode(&bytes);
        let _ = peek_header(&bytes);
    }

    #[test]
    fn truncations_and_byte_flips_never_panic(frame in frame(), flip in 1..=u8::MAX) {
        let bytes = frame.encode().unwrap();
        for len in 0..bytes.len() {
            prop_assert!(Frame::decode(&bytes[..len]).is_err(), "a {}-byte prefix decoded", len);
        }
        for at in 0..bytes.len() {
            let mut mutated = bytes.clone();
            mutated[at] ^= flip;
            fuzz_decode_roundtrip(&mutated);
        }
    }

    #[test]
    fn split_preserves_rows_within_budget(frame in frame(), fraction in 0.0..1.5f64) {
        let len = frame.encoded_len();
        let budget = (len as f64 * fraction) as usize;
        match frame.clone().split_to_fit(budget) {
            Ok(pieces) => {
                check_split(&frame, &pieces, budget);
                if budget >= len {
                    prop_assert_eq!(pieces.len(), 1);
                }
            }
            Err(WireError::RowTooLarge { row, bytes, budget: reported }) => {
                prop_assert_eq!(reported, budget);
                prop_assert!(bytes > budget);
                prop_assert_eq!(only_row(&frame, row).encoded_len(), bytes);
                prop_assert!((0..row).all(|r| only_row(&frame, r).encoded_len() <= budget));
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The fuzz target's body, on the inputs a fuzzer would try first, so
    /// its invariant is checked by every `cargo test`.
    #[test]
    fn fuzz_body_holds_on_generated_inputs(bytes in fuzz_input()) {
        fuzz_decode_roundtrip(&bytes);
    }
}
