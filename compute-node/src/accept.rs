//! Frame acceptance: everything a consumed frame claims, checked against
//! this node before any of it is computed or sent on. A frame that passes
//! can always be answered (its rows fit the messages this node was checked,
//! at start-up, to be able to send); one that fails goes to the dead-letter
//! topic with its [`Reason`]. Pure: the worker passes in the clock and the
//! results topic's partition count.

use setlist_core::wire::{Activations, Body, Frame, Limits, Values, WireError};

/// Why a frame, or the output of one, went to the dead-letter topic: the
/// `reason` label of the node's counters and the `setlist-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a valid frame at all (the wire format's own error is the detail).
    Undecodable,
    WrongModelVersion,
    /// Addressed to another stage than the one this node runs.
    WrongStage,
    /// A body this part does not read: top-k, another dtype or width, or
    /// more than one position for an output shard.
    WrongShape,
    /// No room left for this node's hop.
    TooManyHops,
    /// A row longer than the model's `max_history`.
    HistoryTooLong,
    /// A track id (input or exclusion) outside the catalogue.
    TrackOutOfRange,
    /// `reply_to` names no partition of the results topic.
    UnknownReplyPartition,
    /// A deadline further ahead than any service allows, which would keep
    /// the row alive forever.
    DeadlineTooFar,
    /// The output of an accepted frame does not fit a Kafka message.
    OutputTooLarge,
    /// Kafka refused the output of an accepted frame for a reason tied to
    /// that output (an invalid record, say), not to the brokers.
    OutputRefused,
}

impl Reason {
    /// Every reason, so /metrics shows each at 0 before it first happens.
    pub const ALL: [Reason; 11] = [
        Reason::Undecodable,
        Reason::WrongModelVersion,
        Reason::WrongStage,
        Reason::WrongShape,
        Reason::TooManyHops,
        Reason::HistoryTooLong,
        Reason::TrackOutOfRange,
        Reason::UnknownReplyPartition,
        Reason::DeadlineTooFar,
        Reason::OutputTooLarge,
        Reason::OutputRefused,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::WrongModelVersion => "wrong_model_version",
            Reason::WrongStage => "wrong_stage",
            Reason::WrongShape => "wrong_shape",
            Reason::TooManyHops => "too_many_hops",
            Reason::HistoryTooLong => "history_too_long",
            Reason::TrackOutOfRange => "track_out_of_range",
            Reason::UnknownReplyPartition => "unknown_reply_partition",
            Reason::DeadlineTooFar => "deadline_too_far",
            Reason::OutputTooLarge => "output_too_large",
            Reason::OutputRefused => "output_refused",
        }
    }
}

/// A frame this node will not compute or an output it could not send: the
/// reason and a sentence saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// The values this part reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Stage 0: catalogue indices.
    TrackIds,
    /// Every later stage and the shards: f32 or f16 activations this wide.
    Floats { dim: u32 },
}

/// Positions per row this part reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// A stage: each request's history, at most the model's `max_history`.
    UpTo(u32),
    /// An output shard: the last stage's hidden state, one position.
    One,
}

/// What this node accepts: one part of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub model_version: String,
    /// The stage number frames for this node carry (the output shards read
    /// stage = number of stages).
    pub stage: u32,
    pub input: Input,
    pub positions: Positions,
    pub catalogue_size: u32,
    /// The furthest ahead of this node's clock a row's deadline may be.
    pub max_deadline_ahead_ms: u64,
}

impl Expected {
    /// Checks a decoded (or undecodable) frame at `now_unix_ms`, against
    /// the results topic's partition count when it is known. On success the
    /// body is taken out of the frame and returned beside it.
    pub fn accept(
        &self,
        decoded: Result<Frame, WireError>,
        now_unix_ms: u64,
        results_partitions: Option<u32>,
    ) -> Result<(Frame, Activations), Rejection> {
        let mut frame = decoded.map_err(|e| Rejection::new(Reason::Undecodable, e.to_string()))?;
        if frame.model_version != self.model_version {
            return Err(Rejection::new(
                Reason::WrongModelVersion,
                format!(
                    "the frame is for model {}, this node serves {}",
                    frame.model_version, self.model_version
                ),
            ));
        }
        if u32::from(frame.stage) != self.stage {
            return Err(Rejection::new(
                Reason::WrongStage,
                format!(
                    "the frame is for stage {}, this node reads stage {}",
                    frame.stage, self.stage
                ),
            ));
        }
        let activations = match std::mem::replace(&mut frame.body, Body::TopK(Vec::new())) {
            Body::Activations(a) => a,
            Body::TopK(_) => {
                return Err(Rejection::new(
                    Reason::WrongShape,
                    "a top-k frame on a stage topic",
                ));
            }
        };
        self.check_shape(&activations)?;
        // This node appends its own hop; the output must still encode.
        if frame.hops.len() >= Limits::V1.max_hops {
            return Err(Rejection::new(
                Reason::TooManyHops,
                format!(
                    "the frame has {} hops; with this node's it would exceed the limit of {}",
                    frame.hops.len(),
                    Limits::V1.max_hops
                ),
            ));
        }
        self.check_positions(&activations)?;
        self.check_tracks(&frame, &activations)?;
        check_reply_to(frame.reply_to, results_partitions)?;
        self.check_deadlines(&frame, now_unix_ms)?;
        Ok((frame, activations))
    }

    fn check_shape(&self, activations: &Activations) -> Result<(), Rejection> {
        let fits = match (self.input, &activations.values) {
            (Input::TrackIds, Values::TrackIds(_)) => true,
            (Input::Floats { dim }, Values::F32(_) | Values::F16(_)) => activations.dim == dim,
            _ => false,
        };
        if fits {
            return Ok(());
        }
        let what = match self.input {
            Input::TrackIds => "track ids".to_string(),
            Input::Floats { dim } => format!("activations of width {dim}"),
        };
        Err(Rejection::new(
            Reason::WrongShape,
            format!(
                "this node reads {what}, the frame holds {:?} of width {}",
                activations.dtype(),
                activations.dim
            ),
        ))
    }

    fn check_positions(&self, activations: &Activations) -> Result<(), Rejection> {
        let lengths = activations.lengths.iter().enumerate();
        match self.positions {
            Positions::One => match lengths.clone().find(|&(_, &len)| len != 1) {
                None => Ok(()),
                Some((row, len)) => Err(Rejection::new(
                    Reason::WrongShape,
                    format!(
                        "row {row} has {len} positions; output shards read one position per request"
                    ),
                )),
            },
            Positions::UpTo(max_history) => {
                match lengths.clone().find(|&(_, &len)| len > max_history) {
                    None => Ok(()),
                    Some((row, len)) => Err(Rejection::new(
                        Reason::HistoryTooLong,
                        format!(
                            "row {row} has {len} positions; the model reads at most {max_history} (its max_history)"
                        ),
                    )),
                }
            }
        }
    }

    fn check_tracks(&self, frame: &Frame, activations: &Activations) -> Result<(), Rejection> {
        let songs = self.catalogue_size;
        let outside = |what: &str, track: u32| {
            Rejection::new(
                Reason::TrackOutOfRange,
                format!("{what} track {track} is outside the catalogue of {songs} songs"),
            )
        };
        if let Values::TrackIds(ids) = &activations.values
            && let Some(&bad) = ids.iter().find(|&&t| t >= songs)
        {
            return Err(outside("input", bad));
        }
        match frame
            .rows
            .iter()
            .flat_map(|row| row.exclude.iter())
            .find(|&&t| t >= songs)
        {
            Some(&bad) => Err(outside("excluded", bad)),
            None => Ok(()),
        }
    }

    fn check_deadlines(&self, frame: &Frame, now_unix_ms: u64) -> Result<(), Rejection> {
        let latest = now_unix_ms.saturating_add(self.max_deadline_ahead_ms);
        match frame.rows.iter().find(|row| row.deadline_unix_ms > latest) {
            None => Ok(()),
            Some(row) => Err(Rejection::new(
                Reason::DeadlineTooFar,
                format!(
                    "request {:032x} has its deadline {} ms from now; a node accepts at most {} ms (max_deadline_ms)",
                    row.request_id,
                    row.deadline_unix_ms - now_unix_ms,
                    self.max_deadline_ahead_ms
                ),
            )),
        }
    }
}

/// `reply_to` must name a partition of the results topic. Above `i32::MAX`
/// it names none whatever the topic (Kafka's partition numbers are i32);
/// below it, only the brokers' metadata can say, so an unknown count lets
/// the frame through and Kafka's refusal, if it comes, dead-letters it.
fn check_reply_to(reply_to: u32, results_partitions: Option<u32>) -> Result<(), Rejection> {
    let count = match results_partitions {
        Some(count) if reply_to >= count => count,
        _ if i32::try_from(reply_to).is_err() => 0,
        _ => return Ok(()),
    };
    Err(Rejection::new(
        Reason::UnknownReplyPartition,
        format!(
            "the frame asks for its answers on results partition {reply_to}, but the results topic has {count} partitions; is a dispatcher started with a wrong --reply-partition?"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::wire::{Hop, RowMeta, Scored};

    const NOW: u64 = 1_700_000_000_000;

    fn stage0() -> Expected {
        Expected {
            model_version: "m1".into(),
            stage: 0,
            input: Input::TrackIds,
            positions: Positions::UpTo(50),
            catalogue_size: 100,
            max_deadline_ahead_ms: 65_000,
        }
    }

    fn shard() -> Expected {
        Expected {
            stage: 3,
            input: Input::Floats { dim: 4 },
            positions: Positions::One,
            ..stage0()
        }
    }

    fn row(id: u128) -> RowMeta {
        RowMeta {
            request_id: id,
            deadline_unix_ms: NOW + 1000,
            k: 5,
            exclude: vec![1, 2],
        }
    }

    fn ids_frame(histories: &[&[u32]]) -> Frame {
        Frame {
            model_version: "m1".into(),
            stage: 0,
            reply_to: 0,
            trace_context: String::new(),
            hops: vec![Hop::default()],
            rows: (0..histories.len() as u128).map(row).collect(),
            body: Body::Activations(setlist_core::wire::track_ids(histories, 1000)),
        }
    }

    fn hidden_frame(rows: usize, dim: u32) -> Frame {
        Frame {
            stage: 3,
            rows: (0..rows as u128).map(row).collect(),
            body: Body::Activations(Activations {
                dim,
                lengths: vec![1; rows],
                values: Values::F32(vec![0.5; rows * dim as usize]),
            }),
            ..ids_frame(&[&[1]])
        }
    }

    fn reason(expected: &Expected, frame: Frame, partitions: Option<u32>) -> Reason {
        expected
            .accept(Ok(frame), NOW, partitions)
            .unwrap_err()
            .reason
    }

    #[test]
    fn a_frame_for_this_part_is_accepted_with_its_body() {
        let (frame, activations) = stage0()
            .accept(Ok(ids_frame(&[&[1, 2, 3], &[99]])), NOW, Some(1))
            .unwrap();
        assert_eq!(frame.rows.len(), 2);
        assert_eq!(activations.lengths, vec![3, 1]);
        assert_eq!(activations.values, Values::TrackIds(vec![1, 2, 3, 99]));
        let mut halves = hidden_frame(2, 4);
        if let Body::Activations(a) = &mut halves.body {
            *a = a.to_f16();
        }
        assert!(shard().accept(Ok(halves), NOW, Some(1)).is_ok());
    }

    #[test]
    fn undecodable_bytes_are_refused_with_the_wire_error() {
        let error = Frame::decode(b"not a frame").unwrap_err();
        let rejection = stage0().accept(Err(error.clone()), NOW, None).unwrap_err();
        assert_eq!(rejection.reason, Reason::Undecodable);
        assert_eq!(rejection.detail, error.to_string());
    }

    #[test]
    fn another_model_or_stage_is_refused() {
        let mut frame = ids_frame(&[&[1]]);
        frame.model_version = "m2".into();
        let rejection = stage0().accept(Ok(frame), NOW, None).unwrap_err();
        assert_eq!(
            rejection,
            Rejection::new(
                Reason::WrongModelVersion,
                "the frame is for model m2, this node serves m1"
            )
        );
        let mut frame = ids_frame(&[&[1]]);
        frame.stage = 1;
        assert_eq!(reason(&stage0(), frame, None), Reason::WrongStage);
    }

    #[test]
    fn a_body_this_part_does_not_read_is_refused() {
        // Floats on stage 0, ids or the wrong width on a shard, top-k anywhere.
        let floats_on_stage0 = Frame {
            stage: 0,
            ..hidden_frame(1, 4)
        };
        assert_eq!(
            reason(&stage0(), floats_on_stage0, None),
            Reason::WrongShape
        );
        let ids_on_shard = Frame {
            stage: 3,
            ..ids_frame(&[&[1]])
        };
        assert_eq!(reason(&shard(), ids_on_shard, None), Reason::WrongShape);
        let rejection = shard()
            .accept(Ok(hidden_frame(1, 8)), NOW, None)
            .unwrap_err();
        assert_eq!(
            rejection.detail,
            "this node reads activations of width 4, the frame holds F32 of width 8"
        );
        let mut topk = ids_frame(&[&[1]]);
        topk.body = Body::TopK(vec![vec![Scored {
            track: 1,
            score: 1.0,
        }]]);
        assert_eq!(reason(&stage0(), topk, None), Reason::WrongShape);
        let mut two_positions = hidden_frame(1, 4);
        if let Body::Activations(a) = &mut two_positions.body {
            a.lengths = vec![2];
            a.values = Values::F32(vec![0.0; 8]);
        }
        assert_eq!(reason(&shard(), two_positions, None), Reason::WrongShape);
    }

    #[test]
    fn rows_longer_than_max_history_are_refused() {
        let long: Vec<u32> = (0..51).collect();
        let rejection = stage0()
            .accept(Ok(ids_frame(&[&[1], &long])), NOW, None)
            .unwrap_err();
        assert_eq!(
            rejection,
            Rejection::new(
                Reason::HistoryTooLong,
                "row 1 has 51 positions; the model reads at most 50 (its max_history)"
            )
        );
        let full: Vec<u32> = (0..50).collect();
        assert!(stage0().accept(Ok(ids_frame(&[&full])), NOW, None).is_ok());
    }

    #[test]
    fn tracks_outside_the_catalogue_are_refused_in_the_input_and_the_exclusions() {
        let rejection = stage0()
            .accept(Ok(ids_frame(&[&[1, 100]])), NOW, None)
            .unwrap_err();
        assert_eq!(
            rejection,
            Rejection::new(
                Reason::TrackOutOfRange,
                "input track 100 is outside the catalogue of 100 songs"
            )
        );
        let mut frame = hidden_frame(2, 4);
        frame.rows[1].exclude.push(u32::MAX);
        let rejection = shard().accept(Ok(frame), NOW, None).unwrap_err();
        assert_eq!(rejection.reason, Reason::TrackOutOfRange);
        assert!(rejection.detail.starts_with("excluded track 4294967295"));
    }

    #[test]
    fn a_full_hop_list_is_refused_because_this_node_could_not_add_its_own() {
        let mut frame = ids_frame(&[&[1]]);
        frame.hops = vec![Hop::default(); Limits::V1.max_hops - 1];
        assert!(stage0().accept(Ok(frame.clone()), NOW, None).is_ok());
        frame.hops.push(Hop::default());
        assert_eq!(reason(&stage0(), frame, None), Reason::TooManyHops);
    }

    #[test]
    fn reply_to_must_name_a_results_partition() {
        let frame = |reply_to| Frame {
            reply_to,
            ..ids_frame(&[&[1]])
        };
        assert!(stage0().accept(Ok(frame(3)), NOW, Some(4)).is_ok());
        let rejection = stage0().accept(Ok(frame(4)), NOW, Some(4)).unwrap_err();
        assert_eq!(
            rejection,
            Rejection::new(
                Reason::UnknownReplyPartition,
                "the frame asks for its answers on results partition 4, but the results topic has 4 partitions; is a dispatcher started with a wrong --reply-partition?"
            )
        );
        // Unknown count: only what no topic can have is refused.
        assert!(stage0().accept(Ok(frame(7)), NOW, None).is_ok());
        let too_big = frame(i32::MAX as u32 + 1);
        assert_eq!(
            reason(&stage0(), too_big, None),
            Reason::UnknownReplyPartition
        );
    }

    #[test]
    fn a_deadline_further_ahead_than_any_service_allows_is_refused() {
        let frame = |deadline_unix_ms| {
            let mut frame = ids_frame(&[&[1], &[2]]);
            frame.rows[1].deadline_unix_ms = deadline_unix_ms;
            frame
        };
        assert!(stage0().accept(Ok(frame(NOW + 65_000)), NOW, None).is_ok());
        let rejection = stage0()
            .accept(Ok(frame(NOW + 65_001)), NOW, None)
            .unwrap_err();
        assert_eq!(
            rejection,
            Rejection::new(
                Reason::DeadlineTooFar,
                "request 00000000000000000000000000000001 has its deadline 65001 ms from now; a node accepts at most 65000 ms (max_deadline_ms)"
            )
        );
        assert_eq!(
            reason(&stage0(), frame(u64::MAX), None),
            Reason::DeadlineTooFar
        );
        // A deadline already past is not this check's business: it expires.
        assert!(stage0().accept(Ok(frame(0)), NOW, None).is_ok());
    }
}
