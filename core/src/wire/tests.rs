//! Hand-built frames. The golden frames are written out field by field (not
//! with `to_le_bytes`), so an order or endianness slip in the codec cannot hide
//! in the expectation; each error test breaks one field of them.

use half::f16;

use super::*;

type Fields = Vec<(&'static str, Vec<u8>)>;

fn join(fields: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(_, bytes)| bytes.iter().copied())
        .collect()
}

/// The fields joined, with the field `name` replaced by `bytes`.
fn with(mut fields: Fields, name: &str, bytes: &[u8]) -> Vec<u8> {
    let field = fields
        .iter_mut()
        .find(|(n, _)| *n == name)
        .expect("no such field");
    field.1 = bytes.to_vec();
    join(&fields)
}

fn activation_fields() -> Fields {
    vec![
        ("magic", b"STLF".to_vec()),
        ("version", vec![1, 0]),
        ("kind", vec![1]),
        ("flags", vec![0]),
        ("model_version", vec![2, 0, b'm', b'1']),
        ("stage", vec![2, 0]),
        ("reply_to", vec![7, 0, 0, 0]),
        ("trace_context", vec![2, 0, b't', b'c']),
        ("hop_count", vec![1, 0]),
        (
            "hop",
            vec![1, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0],
        ),
        ("row_count", vec![2, 0, 0, 0]),
        // request_id 0x0f0e..0100, deadline 1000, k 3, exclude [5]
        (
            "row0",
            [
                (0..16).collect(),
                vec![0xe8, 0x03, 0, 0, 0, 0, 0, 0],
                vec![3, 0],
                vec![1, 0, 0, 0],
                vec![5, 0, 0, 0],
            ]
            .concat(),
        ),
        // request_id u128::MAX, deadline 0, k 1, no exclusions
        (
            "row1",
            [vec![0xff; 16], vec![0; 8], vec![1, 0], vec![0; 4]].concat(),
        ),
        ("dtype", vec![0]),
        ("dim", vec![2, 0, 0, 0]),
        ("lengths", vec![1, 0, 0, 0, 2, 0, 0, 0]),
        // 1.0, -2.0 | 0.5, 0.25, 3.0, -0.0
        (
            "values",
            vec![
                0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x3f, 0, 0, 0x80, 0x3e, 0, 0, 0x40, 0x40,
                0, 0, 0, 0x80,
            ],
        ),
    ]
}

fn activation_frame() -> Frame {
    Frame {
        model_version: "m1".into(),
        stage: 2,
        reply_to: 7,
        trace_context: "tc".into(),
        hops: vec![Hop {
            stage: 1,
            queue_us: 10,
            compute_us: 20,
            sent_unix_us: 30,
        }],
        rows: vec![
            RowMeta {
                request_id: 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100,
                deadline_unix_ms: 1000,
                k: 3,
                exclude: vec![5],
            },
            RowMeta {
                request_id: u128::MAX,
                deadline_unix_ms: 0,
                k: 1,
                exclude: vec![],
            },
        ],
        body: Body::Activations(Activations {
            dim: 2,
            lengths: vec![1, 2],
            values: Values::F32(vec![1.0, -2.0, 0.5, 0.25, 3.0, -0.0]),
        }),
    }
}

fn topk_fields() -> Fields {
    vec![
        ("magic", b"STLF".to_vec()),
        ("version", vec![1, 0]),
        ("kind", vec![2]),
        ("flags", vec![0]),
        ("model_version", vec![2, 0, b'm', b'1']),
        ("stage", vec![1, 0]),
        ("reply_to", vec![7, 0, 0, 0]),
        ("trace_context", vec![0, 0]),
        ("hop_count", vec![0, 0]),
        ("row_count", vec![1, 0, 0, 0]),
        // request_id 1, deadline 0, k 2, no exclusions
        (
            "row0",
            [vec![1], vec![0; 15], vec![0; 8], vec![2, 0], vec![0; 4]].concat(),
        ),
        ("topk_count", vec![2, 0]),
        // (42, 0.5), (7, 0.25)
        (
            "entries",
            vec![42, 0, 0, 0, 0, 0, 0, 0x3f, 7, 0, 0, 0, 0, 0, 0x80, 0x3e],
        ),
    ]
}

fn topk_frame() -> Frame {
    Frame {
        model_version: "m1".into(),
        stage: 1,
        reply_to: 7,
        trace_context: String::new(),
        hops: vec![],
        rows: vec![RowMeta {
            request_id: 1,
            deadline_unix_ms: 0,
            k: 2,
            exclude: vec![],
        }],
        body: Body::TopK(vec![vec![
            Scored {
                track: 42,
                score: 0.5,
            },
            Scored {
                track: 7,
                score: 0.25,
            },
        ]]),
    }
}

fn activations_of(frame: &mut Frame) -> &mut Activations {
    match &mut frame.body {
        Body::Activations(a) => a,
        Body::TopK(_) => panic!("not an activations frame"),
    }
}

#[test]
fn golden_activations_bytes() {
    let bytes = join(&activation_fields());
    let frame = activation_frame();
    assert_eq!(frame.encode().unwrap(), bytes);
    assert_eq!(frame.encoded_len(), bytes.len());
    let decoded = Frame::decode(&bytes).unwrap();
    assert_eq!(decoded, frame);
    // PartialEq says -0.0 == 0.0; the sign must survive too.
    assert_eq!(decoded.encode().unwrap(), bytes);
}

#[test]
fn golden_topk_bytes() {
    let bytes = join(&topk_fields());
    assert_eq!(topk_frame().encode().unwrap(), bytes);
    assert_eq!(topk_frame().encoded_len(), bytes.len());
    assert_eq!(Frame::decode(&bytes).unwrap(), topk_frame());
}

#[test]
fn peek_header_reads_only_the_front() {
    let bytes = join(&activation_fields());
    // Everything after reply_to is cut off, and peek does not care.
    let header = peek_header(&bytes[..18]).unwrap();
    assert_eq!(header, activation_frame().header());
    assert_eq!(
        header,
        Header {
            kind: Kind::Activations,
            model_version: "m1",
            stage: 2,
            reply_to: 7,
        }
    );
    assert!(matches!(
        peek_header(&bytes[..17]),
        Err(WireError::Truncated {
            field: "reply_to",
            ..
        })
    ));
}

#[test]
fn row_range_gives_value_offsets() {
    let frame = activation_frame();
    let Body::Activations(a) = &frame.body else {
        unreachable!()
    };
    assert_eq!(a.row_range(0), 0..2);
    assert_eq!(a.row_range(1), 2..6);
}

#[test]
fn truncated_names_the_field_and_sizes() {
    let bytes = join(&activation_fields());
    assert_eq!(
        Frame::decode(&bytes[..bytes.len() - 1]),
        Err(WireError::Truncated {
            field: "values",
            needed: 24,
            available: 23,
        })
    );
    for len in 0..bytes.len() {
        assert!(
            matches!(
                Frame::decode(&bytes[..len]),
                Err(WireError::Truncated { .. })
            ),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn bad_magic() {
    let bytes = with(activation_fields(), "magic", b"STLG");
    assert_eq!(
        Frame::decode(&bytes),
        Err(WireError::BadMagic { found: *b"STLG" })
    );
}

#[test]
fn unsupported_version() {
    let bytes = with(activation_fields(), "version", &[2, 0]);
    let err = Frame::decode(&bytes).unwrap_err();
    assert_eq!(
        err,
        WireError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    assert_eq!(peek_header(&bytes).unwrap_err(), err);
}

#[test]
fn unknown_kind() {
    let bytes = with(activation_fields(), "kind", &[3]);
    assert_eq!(Frame::decode(&bytes), Err(WireError::UnknownKind(3)));
}

#[test]
fn unknown_dtype() {
    let bytes = with(activation_fields(), "dtype", &[3]);
    assert_eq!(Frame::decode(&bytes), Err(WireError::UnknownDtype(3)));
}

#[test]
fn reserved_flags() {
    let bytes = with(activation_fields(), "flags", &[0x80]);
    assert_eq!(Frame::decode(&bytes), Err(WireError::ReservedFlags(0x80)));
}

#[test]
fn limit_exceeded_row_count_fails_before_reading_rows() {
    // A header claiming 4 billion rows and nothing after it.
    let bytes = with(activation_fields(), "row_count", &[0xff; 4]);
    let header_len = bytes.len() - join(&activation_fields()[11..]).len();
    let bytes = &bytes[..header_len];
    assert_eq!(
        Frame::decode(bytes),
        Err(WireError::LimitExceeded {
            field: "row_count",
            limit: 4096,
            found: u64::from(u32::MAX),
        })
    );
    // Without the row limit, the count is refused against the bytes left
    // (30 per row at least), still before anything is allocated for it.
    let unlimited = Limits {
        max_rows: usize::MAX,
        ..Limits::V1
    };
    assert_eq!(
        Frame::decode_with(bytes, &unlimited),
        Err(WireError::Truncated {
            field: "rows",
            needed: u64::from(u32::MAX) * 30,
            available: 0,
        })
    );
}

#[test]
fn limit_exceeded_per_field() {
    let exclude = [
        (0..16).collect(),
        vec![0; 8],
        vec![3, 0],
        10_001u32.to_le_bytes().to_vec(),
    ]
    .concat();
    let cases = [
        (
            with(activation_fields(), "row0", &exclude),
            "exclude_count",
            10_000,
            10_001,
        ),
        (
            with(activation_fields(), "dim", &65_537u32.to_le_bytes()),
            "dim",
            65_536,
            65_537,
        ),
        (
            with(activation_fields(), "lengths", &[1, 0, 0, 0, 1, 0x10, 0, 0]),
            "length",
            4096,
            4097,
        ),
        (
            with(
                topk_fields(),
                "row0",
                &[vec![1], vec![0; 23], vec![1, 0], vec![0; 4]].concat(),
            ),
            "topk_count",
            1,
            2,
        ),
    ];
    for (bytes, field, limit, found) in cases {
        assert_eq!(
            Frame::decode(&bytes),
            Err(WireError::LimitExceeded {
                field,
                limit,
                found
            }),
            "{field}"
        );
    }
    let mut long = activation_frame();
    long.model_version = "x".repeat(65);
    assert_eq!(
        long.encode(),
        Err(WireError::LimitExceeded {
            field: "model_version",
            limit: 64,
            found: 65,
        })
    );
}

#[test]
fn limit_exceeded_frame_bytes_is_checked_first() {
    let bytes = join(&activation_fields());
    let tight = Limits {
        max_frame_bytes: 10,
        ..Limits::V1
    };
    assert_eq!(
        Frame::decode_with(&bytes, &tight),
        Err(WireError::LimitExceeded {
            field: "frame_bytes",
            limit: 10,
            found: bytes.len() as u64,
        })
    );
}

#[test]
fn below_minimum() {
    let k0 = [vec![0xff; 16], vec![0; 8], vec![0, 0], vec![0; 4]].concat();
    assert_eq!(
        Frame::decode(&with(activation_fields(), "row1", &k0)),
        Err(WireError::BelowMinimum {
            field: "k",
            minimum: 1,
            found: 0,
        })
    );
    let no_version = with(activation_fields(), "model_version", &[0, 0]);
    assert_eq!(
        peek_header(&no_version),
        Err(WireError::BelowMinimum {
            field: "model_version",
            minimum: 1,
            found: 0,
        })
    );
}

#[test]
fn invalid_utf8() {
    let bytes = with(activation_fields(), "trace_context", &[2, 0, 0xff, 0xfe]);
    assert_eq!(
        Frame::decode(&bytes),
        Err(WireError::InvalidUtf8 {
            field: "trace_context"
        })
    );
}

#[test]
fn value_count_mismatch_is_refused_by_encode() {
    // The decoder derives the value count from the lengths, so only a
    // hand-assembled Frame can disagree with itself.
    let mut frame = activation_frame();
    activations_of(&mut frame).values = Values::F32(vec![0.0; 5]);
    assert_eq!(
        frame.encode(),
        Err(WireError::ValueCountMismatch {
            field: "values",
            expected: 6,
            found: 5,
        })
    );
    let mut frame = activation_frame();
    activations_of(&mut frame).lengths.push(1);
    assert_eq!(
        frame.encode(),
        Err(WireError::ValueCountMismatch {
            field: "lengths",
            expected: 2,
            found: 3,
        })
    );
}

#[test]
fn topk_not_sorted() {
    let swapped = [7, 0, 0, 0, 0, 0, 0x80, 0x3e, 42, 0, 0, 0, 0, 0, 0, 0x3f];
    let err = WireError::TopKNotSorted {
        row: 0,
        position: 1,
    };
    assert_eq!(
        Frame::decode(&with(topk_fields(), "entries", &swapped)),
        Err(err.clone())
    );
    let mut frame = topk_frame();
    let Body::TopK(lists) = &mut frame.body else {
        unreachable!()
    };
    lists[0].reverse();
    assert_eq!(frame.encode(), Err(err));
}

#[test]
fn trailing_bytes() {
    let mut bytes = join(&activation_fields());
    bytes.extend([0, 0]);
    assert_eq!(Frame::decode(&bytes), Err(WireError::TrailingBytes(2)));
}

#[test]
fn invalid_dim_for_track_ids_and_nan_scores() {
    let bytes = with(activation_fields(), "dtype", &[2]);
    assert_eq!(
        Frame::decode(&bytes),
        Err(WireError::Invalid {
            field: "dim",
            reason: "must be 1 when the values are track ids",
        })
    );
    let nan = [42, 0, 0, 0, 0, 0, 0xc0, 0x7f, 7, 0, 0, 0, 0, 0, 0x80, 0x3e];
    assert_eq!(
        Frame::decode(&with(topk_fields(), "entries", &nan)),
        Err(WireError::Invalid {
            field: "score",
            reason: "must not be NaN",
        })
    );
}

#[test]
fn messages_name_the_field_and_the_limit() {
    let err = WireError::LimitExceeded {
        field: "row_count",
        limit: 4096,
        found: 5000,
    };
    assert_eq!(
        err.to_string(),
        "row_count is 5000, above the limit of 4096"
    );
    let err = WireError::Truncated {
        field: "values",
        needed: 24,
        available: 23,
    };
    assert_eq!(
        err.to_string(),
        "frame is truncated: values needs 24 bytes but only 23 remain"
    );
}

#[test]
fn split_keeps_a_fitting_frame_whole() {
    let frame = activation_frame();
    let len = frame.encoded_len();
    assert_eq!(frame.clone().split_to_fit(len).unwrap(), vec![frame]);
}

#[test]
fn split_by_bytes() {
    let frame = activation_frame();
    let len = frame.encoded_len();
    // 51 fixed bytes (header, hop, dtype, dim) + 46 for row 0 + 50 for row 1.
    assert_eq!(len, 51 + 46 + 50);
    let pieces = frame.clone().split_to_fit(len - 1).unwrap();
    fuzz::check_split(&frame, &pieces, len - 1);
    let lens: Vec<_> = pieces.iter().map(Frame::encoded_len).collect();
    assert_eq!(lens, [51 + 46, 51 + 50]);
}

#[test]
fn split_by_row_count() {
    let rows = Limits::V1.max_rows + 10;
    let mut frame = topk_frame();
    frame.rows = vec![frame.rows[0].clone(); rows];
    frame.body = Body::TopK(vec![vec![]; rows]);
    assert!(matches!(
        frame.encode(),
        Err(WireError::LimitExceeded {
            field: "row_count",
            ..
        })
    ));
    let pieces = frame.clone().split_to_fit(usize::MAX).unwrap();
    assert_eq!(
        pieces.iter().map(|p| p.rows.len()).collect::<Vec<_>>(),
        [4096, 10]
    );
    fuzz::check_split(&frame, &pieces, Limits::V1.max_frame_bytes);
}

#[test]
fn row_too_large() {
    assert_eq!(
        activation_frame().split_to_fit(100),
        Err(WireError::RowTooLarge {
            row: 1,
            bytes: 51 + 50,
            budget: 100,
        })
    );
}

#[test]
fn f16_widening_then_narrowing_is_exact() {
    let all: Vec<f16> = (0..=u16::MAX)
        .map(f16::from_bits)
        .filter(|v| !v.is_nan())
        .collect();
    let a = Activations {
        dim: 1,
        lengths: vec![all.len() as u32],
        values: Values::F16(all.clone()),
    };
    let Values::F16(back) = a.to_f32().to_f16().values else {
        unreachable!()
    };
    assert!(
        back.iter()
            .zip(&all)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
}

#[test]
fn f16_narrowing_error_is_bounded() {
    // 11 significant bits: round-to-nearest is within 2^-11 relative in the
    // normal range, and within half the smallest subnormal (2^-25) below it.
    let values: Vec<f32> = (-2_000..=2_000)
        .map(|i| (i as f32 * 0.37).exp() * if i % 2 == 0 { 1.0 } else { -1.0 })
        .filter(|v| v.abs() <= 65_504.0)
        .collect();
    let a = Activations {
        dim: 1,
        lengths: vec![values.len() as u32],
        values: Values::F32(values.clone()),
    };
    let narrowed = a.to_f16();
    assert_eq!(narrowed.dtype(), Dtype::F16);
    let Values::F32(back) = narrowed.to_f32().values else {
        unreachable!()
    };
    for (x, y) in values.iter().zip(&back) {
        let bound = if x.abs() >= 6.103_515_6e-5 {
            x.abs() / 2048.0
        } else {
            2f32.powi(-25)
        };
        assert!((x - y).abs() <= bound, "{x} came back as {y}");
    }
    let big = Activations {
        dim: 1,
        lengths: vec![1],
        values: Values::F32(vec![1e6]),
    };
    let Values::F16(inf) = big.to_f16().values else {
        unreachable!()
    };
    assert!(inf[0].is_infinite());
}

#[test]
fn conversions_leave_track_ids_alone() {
    let ids = Activations {
        dim: 1,
        lengths: vec![2],
        values: Values::TrackIds(vec![3, 4]),
    };
    assert_eq!(ids.to_f16(), ids);
    assert_eq!(ids.to_f32(), ids);
}

/// A typical batch: `rows` requests of 50 positions each, each excluding its
/// 50 input songs, traced, after one stage.
fn typical(rows: usize, dim: u32, values: impl Fn(usize) -> Values) -> Frame {
    Frame {
        model_version: "demo-v1".into(),
        stage: 1,
        reply_to: 3,
        trace_context: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        hops: vec![Hop::default()],
        rows: vec![
            RowMeta {
                request_id: 1,
                deadline_unix_ms: 0,
                k: 10,
                exclude: (0..50).collect(),
            };
            rows
        ],
        body: Body::Activations(Activations {
            dim,
            lengths: vec![50; rows],
            values: values(rows * 50 * dim as usize),
        }),
    }
}

/// The numbers quoted in docs/wire-format.md.
#[test]
fn documented_sizes() {
    let f32s = |n| Values::F32(vec![0.0; n]);
    let f16s = |n| Values::F16(vec![f16::ZERO; n]);
    assert_eq!(typical(8, 256, f32s).encoded_len(), 411_581);
    assert_eq!(typical(8, 256, f16s).encoded_len(), 206_781);
    assert_eq!(
        typical(8, 1, |n| Values::TrackIds(vec![0; n])).encoded_len(),
        3_581
    );
    assert_eq!(typical(32, 256, f32s).encoded_len(), 1_645_997);
    assert_eq!(typical(32, 256, f16s).encoded_len(), 826_797);
    let mut topk = typical(8, 1, |n| Values::TrackIds(vec![0; n]));
    topk.body = Body::TopK(vec![
        vec![
            Scored {
                track: 0,
                score: 0.0
            };
            10
        ];
        8
    ]);
    assert_eq!(topk.encoded_len(), 2_600);
    // Kafka's default 1 MiB message: 20 f32 rows or 40 f16 rows per piece.
    let kafka = 1 << 20;
    let pieces = typical(32, 256, f32s).split_to_fit(kafka).unwrap();
    assert_eq!(
        pieces.iter().map(|p| p.rows.len()).collect::<Vec<_>>(),
        [20, 12]
    );
    let pieces = typical(64, 256, f16s).split_to_fit(kafka).unwrap();
    assert_eq!(
        pieces.iter().map(|p| p.rows.len()).collect::<Vec<_>>(),
        [40, 24]
    );
}

/// The shape of [`typical`]'s frames, for the size arithmetic without a frame.
fn typical_shape(rows: usize, body: BodyShape) -> FrameShape {
    FrameShape {
        model_version_bytes: "demo-v1".len(),
        trace_context_bytes: 55,
        hops: 1,
        rows,
        exclude_per_row: 50,
        body,
    }
}

#[test]
fn frame_shapes_size_frames_exactly_without_building_them() {
    let f32s = |n| Values::F32(vec![0.0; n]);
    let f16s = |n| Values::F16(vec![f16::ZERO; n]);
    let ids = |n| Values::TrackIds(vec![0; n]);
    let activations = |dtype, dim| BodyShape::Activations {
        dtype,
        dim,
        positions_per_row: 50,
    };
    for rows in [1, 8, 32] {
        let cases: [(Frame, BodyShape); 3] = [
            (typical(rows, 256, f32s), activations(Dtype::F32, 256)),
            (typical(rows, 256, f16s), activations(Dtype::F16, 256)),
            (typical(rows, 1, ids), activations(Dtype::TrackIds, 1)),
        ];
        for (frame, body) in cases {
            assert_eq!(typical_shape(rows, body).encoded_len(), frame.encoded_len());
        }
        let mut topk = typical(rows, 1, ids);
        topk.body = Body::TopK(vec![
            vec![
                Scored {
                    track: 0,
                    score: 0.0
                };
                10
            ];
            rows
        ]);
        let body = BodyShape::TopK {
            entries_per_row: 10,
        };
        assert_eq!(typical_shape(rows, body).encoded_len(), topk.encoded_len());
    }
}

#[test]
fn frame_shapes_count_the_messages_split_to_fit_makes() {
    let kafka = 1 << 20;
    let f32s = |n| Values::F32(vec![0.0; n]);
    for rows in [1, 20, 21, 32, 64] {
        let shape = typical_shape(
            rows,
            BodyShape::Activations {
                dtype: Dtype::F32,
                dim: 256,
                positions_per_row: 50,
            },
        );
        let pieces = typical(rows, 256, f32s).split_to_fit(kafka).unwrap();
        assert_eq!(shape.messages(kafka), Some(pieces.len()), "{rows} rows");
    }
    let one = typical_shape(
        1,
        BodyShape::Activations {
            dtype: Dtype::F32,
            dim: 256,
            positions_per_row: 50,
        },
    );
    let too_small = one.encoded_len() - 1;
    assert_eq!(one.messages(too_small), None);
    assert!(matches!(
        typical(1, 256, f32s).split_to_fit(too_small),
        Err(WireError::RowTooLarge { .. })
    ));
}

#[test]
fn the_largest_shape_takes_every_limit() {
    let shape = FrameShape::largest(
        2,
        BodyShape::TopK {
            entries_per_row: 1000,
        },
        &Limits::V1,
    );
    let frame = Frame {
        model_version: "m".repeat(64),
        stage: 0,
        reply_to: 0,
        trace_context: "t".repeat(256),
        hops: vec![Hop::default(); 64],
        rows: vec![
            RowMeta {
                request_id: 0,
                deadline_unix_ms: 0,
                k: 1000,
                exclude: vec![0; 10_000],
            };
            2
        ],
        body: Body::TopK(vec![
            vec![
                Scored {
                    track: 0,
                    score: 0.0
                };
                1000
            ];
            2
        ]),
    };
    assert_eq!(shape.encoded_len(), frame.encode().unwrap().len());
}
