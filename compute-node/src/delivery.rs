//! What happens to the messages a node produces: what is kept about each
//! until its delivery report comes, and whether a refusal is
//! the message's fault (dead-letter it and go on) or the brokers' (stop,
//! leaving the batch to be processed again).

use crate::accept::{Reason, Rejection};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use setlist_core::wire::{Body, Frame};

/// What is kept about a produced message until Kafka settles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Output of an accepted frame: the rows it carries, without their
    /// activations (see [`rows_only`]), to dead-letter should Kafka refuse it.
    Output { rows: Frame, source: String },
    /// A dead letter: if Kafka refuses it too, it is counted and logged,
    /// never dead-lettered again.
    DeadLetter { reason: Reason, source: String },
}

/// When Kafka refuses a message for a reason tied to that message (too
/// large for the broker, a partition the topic does not have, an invalid
/// record), the reason to dead-letter its rows with; `None` when the brokers
/// are the problem (unreachable, timed out, not authorised, no such topic),
/// which a retry elsewhere may not have, so the node stops without storing
/// the batch's offsets.
pub fn frame_tied(error: &KafkaError) -> Option<Reason> {
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::InvalidMessageSize
        | RDKafkaErrorCode::MessageBatchTooLarge => Some(Reason::OutputTooLarge),
        RDKafkaErrorCode::UnknownPartition => Some(Reason::UnknownReplyPartition),
        RDKafkaErrorCode::InvalidMessage | RDKafkaErrorCode::InvalidRecord => {
            Some(Reason::OutputRefused)
        }
        _ => None,
    }
}

/// A frame's header and rows with no body to speak of (an empty top-k list
/// per row): what a dead letter of an output holds, because the output
/// itself could not be sent and its activations are not kept.
pub fn rows_only(frame: &Frame) -> Frame {
    Frame {
        model_version: frame.model_version.clone(),
        stage: frame.stage,
        reply_to: frame.reply_to,
        trace_context: frame.trace_context.clone(),
        hops: frame.hops.clone(),
        rows: frame.rows.clone(),
        body: Body::TopK(vec![Vec::new(); frame.rows.len()]),
    }
}

/// The headers of a dead letter: why, in a word and a sentence, where the
/// frame was consumed, and the original size when the payload is cut.
pub fn dead_letter_headers(
    rejection: &Rejection,
    source: &str,
    cut_from: Option<usize>,
) -> OwnedHeaders {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "setlist-reason",
            value: Some(rejection.reason.label()),
        })
        .insert(Header {
            key: "setlist-detail",
            value: Some(&rejection.detail),
        })
        .insert(Header {
            key: "setlist-source",
            value: Some(source),
        });
    match cut_from {
        Some(bytes) => headers.insert(Header {
            key: "setlist-truncated-from",
            value: Some(&bytes.to_string()),
        }),
        None => headers,
    }
}

/// The part of a refused payload a dead letter carries: all of it when it
/// fits `max_bytes`, else its first `max_bytes` (enough to read the header)
/// and the original length, so a dead letter can always be sent.
pub fn dead_letter_payload(payload: &[u8], max_bytes: usize) -> (&[u8], Option<usize>) {
    if payload.len() <= max_bytes {
        (payload, None)
    } else {
        (&payload[..max_bytes], Some(payload.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;
    use setlist_core::wire::{Activations, RowMeta, Values};

    #[test]
    fn refusals_tied_to_the_message_are_dead_lettered_and_broker_failures_stop() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            frame_tied(&produce(RDKafkaErrorCode::MessageSizeTooLarge)),
            Some(Reason::OutputTooLarge)
        );
        assert_eq!(
            frame_tied(&produce(RDKafkaErrorCode::UnknownPartition)),
            Some(Reason::UnknownReplyPartition)
        );
        assert_eq!(
            frame_tied(&produce(RDKafkaErrorCode::InvalidRecord)),
            Some(Reason::OutputRefused)
        );
        for broker in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert_eq!(frame_tied(&produce(broker)), None, "{broker:?}");
        }
        assert_eq!(frame_tied(&KafkaError::Canceled), None);
    }

    #[test]
    fn a_rows_only_frame_keeps_the_rows_and_encodes_small() {
        let frame = Frame {
            model_version: "m1".into(),
            stage: 2,
            reply_to: 1,
            trace_context: "t".into(),
            hops: Vec::new(),
            rows: vec![
                RowMeta {
                    request_id: 9,
                    deadline_unix_ms: 5,
                    k: 3,
                    exclude: vec![1],
                };
                2
            ],
            body: Body::Activations(Activations {
                dim: 1000,
                lengths: vec![1, 1],
                values: Values::F32(vec![0.0; 2000]),
            }),
        };
        let rows = rows_only(&frame);
        let decoded = Frame::decode(&rows.encode().unwrap()).unwrap();
        assert_eq!((decoded.stage, decoded.reply_to), (2, 1));
        assert_eq!(decoded.rows, frame.rows);
        assert_eq!(decoded.body, Body::TopK(vec![Vec::new(), Vec::new()]));
        assert!(rows.encoded_len() < 200);
    }

    #[test]
    fn a_payload_too_large_to_dead_letter_is_cut_and_says_so() {
        assert_eq!(dead_letter_payload(b"abc", 3), (&b"abc"[..], None));
        assert_eq!(dead_letter_payload(b"abcdef", 4), (&b"abcd"[..], Some(6)));
        let rejection = Rejection::new(Reason::Undecodable, "bad magic");
        let headers = dead_letter_headers(&rejection, "t/0/7", Some(6));
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|h| (h.key, h.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("setlist-reason", &b"undecodable"[..]),
                ("setlist-detail", b"bad magic"),
                ("setlist-source", b"t/0/7"),
                ("setlist-truncated-from", b"6"),
            ]
        );
    }
}
