//! The fuzz invariant. It lives in the library so that `cargo test` checks it
//! on generated inputs too; `fuzz/fuzz_targets/decode_frame.rs` only calls it.

use super::split::slice;
use super::{Body, Frame, Values, WireError, peek_header};

/// Panics if decoding `bytes` breaks an invariant: a frame that decodes must
/// peek to the same header, re-encode to exactly `bytes`, decode again to an
/// equal frame, and split into valid pieces that hold the same rows.
/// Bytes that do not decode are fine; the decoder itself must not panic.
pub fn fuzz_decode_roundtrip(bytes: &[u8]) {
    let peeked = peek_header(bytes);
    let Ok(frame) = Frame::decode(bytes) else {
        return;
    };
    assert_eq!(
        peeked,
        Ok(frame.header()),
        "peek_header disagrees with decode"
    );

    let encoded = frame.encode().expect("a decoded frame must re-encode");
    assert_eq!(
        encoded.len(),
        frame.encoded_len(),
        "encoded_len is not exact"
    );
    // Every field is fixed-width or length-prefixed and values keep their bit
    // patterns, so there is exactly one encoding of each frame.
    assert!(
        encoded == bytes,
        "re-encoding a decoded frame changed its bytes"
    );

    let again = Frame::decode(&encoded).expect("a re-encoded frame must decode");
    assert_same(&again, &frame);

    // Half the size forces a split of any frame with two similar rows.
    let budget = encoded.len() / 2;
    match frame.clone().split_to_fit(budget) {
        Ok(pieces) => check_split(&frame, &pieces, budget),
        Err(WireError::RowTooLarge {
            bytes,
            budget: reported,
            ..
        }) => {
            assert!(bytes > reported, "RowTooLarge for a row that fits");
        }
        Err(other) => panic!("splitting a valid frame failed: {other}"),
    }
}

/// Equality under which a NaN activation equals itself: `PartialEq` is IEEE
/// equality, so values are compared by bit pattern.
pub(super) fn assert_same(a: &Frame, b: &Frame) {
    assert_eq!(shape(a), shape(b));
    assert_eq!(value_bits(&a.body), value_bits(&b.body));
}

/// Checks that `pieces` is a split of `whole` within `budget`: each piece is
/// valid, fits, repeats the header, and together they hold the rows in order.
pub(super) fn check_split(whole: &Frame, pieces: &[Frame], budget: usize) {
    for piece in pieces {
        assert!(piece.encoded_len() <= budget, "a piece exceeds the budget");
        piece.encode().expect("every piece must encode");
        assert_eq!(piece.header(), whole.header());
        assert_eq!(piece.trace_context, whole.trace_context);
        assert_eq!(piece.hops, whole.hops);
    }
    let rows: Vec<_> = pieces.iter().flat_map(|p| p.rows.iter().cloned()).collect();
    assert_eq!(rows, whole.rows, "split lost or reordered rows");
    let bits: Vec<u32> = pieces.iter().flat_map(|p| value_bits(&p.body)).collect();
    assert_eq!(
        bits,
        value_bits(&whole.body),
        "split lost or reordered values"
    );
    match &whole.body {
        Body::Activations(a) => {
            let lengths: Vec<u32> = pieces
                .iter()
                .flat_map(|p| match &p.body {
                    Body::Activations(piece) => piece.lengths.clone(),
                    Body::TopK(_) => panic!("split changed the frame kind"),
                })
                .collect();
            assert_eq!(lengths, a.lengths);
        }
        Body::TopK(lists) => {
            let joined: Vec<_> = pieces
                .iter()
                .flat_map(|p| match &p.body {
                    Body::TopK(piece) => piece.clone(),
                    Body::Activations(_) => panic!("split changed the frame kind"),
                })
                .collect();
            assert_eq!(&joined, lists);
        }
    }
}

/// The frame without its activation values (the dtype stays).
fn shape(frame: &Frame) -> Frame {
    let mut shape = frame.clone();
    if let Body::Activations(a) = &mut shape.body {
        a.values = slice(&a.values, 0..0);
    }
    shape
}

fn value_bits(body: &Body) -> Vec<u32> {
    match body {
        Body::Activations(a) => match &a.values {
            Values::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            Values::F16(v) => v.iter().map(|x| u32::from(x.to_bits())).collect(),
            Values::TrackIds(v) => v.clone(),
        },
        Body::TopK(_) => Vec::new(),
    }
}
