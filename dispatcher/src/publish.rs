//! The publisher: gathers queued requests into shared stage-0 frames and
//! hands them to the broker, with up to `max_in_flight` deliveries
//! outstanding at once, so one slow acknowledgement holds back nothing
//! else; past that bound it stops taking from the queue, which then fills
//! (by bytes) and refuses new requests. A delivery the broker refuses
//! fails the requests it carried, which may then be retried.

use crate::api::DISPATCHER_HOP;
use crate::metrics::Metrics;
use crate::queue::{Queued, Receiver, Submission};
use crate::supervise::{self, Heartbeat};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use setlist_core::telemetry::now_unix_us;
use setlist_core::trace::{TraceParent, request_ids};
use setlist_core::wire::{Body, Frame, Hop, track_ids};
use setlist_service::otel;
use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, Span};

/// How often an idle publisher still beats its heartbeat.
const IDLE_BEAT: Duration = Duration::from_secs(1);

/// Where frames go: the broker's stage-0 topic, or a test's stand-in.
pub trait Deliver: Send + Sync {
    /// Resolves once the broker has the frame, or has refused it (why).
    fn deliver(&self, frame: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
}

/// What every stage-0 frame of this dispatcher carries.
#[derive(Debug, Clone)]
pub struct FrameSettings {
    pub model_version: String,
    pub reply_to: u32,
    pub max_history: usize,
    pub max_message_bytes: usize,
}

pub struct Publisher<D> {
    pub deliver: D,
    pub frames: FrameSettings,
    pub max_batch_rows: usize,
    /// Longest a request waits for others to share its frame.
    pub max_wait: Duration,
    /// Deliveries outstanding at once (a batch's pieces go out together,
    /// so this may be passed by the pieces of one batch).
    pub max_in_flight: usize,
    pub metrics: Metrics,
}

/// One Kafka message's worth of requests.
#[derive(Debug)]
pub struct Piece {
    pub ids: Vec<u128>,
    pub bytes: Vec<u8>,
    /// When the last of its requests stops waiting.
    pub until: Instant,
}

enum Delivery {
    Delivered,
    Refused(String),
    /// Every request it carried has ended; the broker's answer is moot.
    Moot,
}

/// The span of one batch's publishing when spans are exported (else none,
/// at no cost): in the trace of the batch's first request, whose frames
/// name it as their parent, as the child of that request's span in this
/// process; linked to the request spans of the batch's other traces.
fn publish_span(batch: &[Submission]) -> Span {
    let Some(first) = batch.first().filter(|_| otel::enabled()) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        "publish",
        request_ids = %request_ids(batch.iter().map(|s| s.row.request_id)),
        rows = batch.len(),
    );
    let mut linked = HashSet::from([first.row.request_id]);
    for submission in &batch[1..] {
        let id = submission.row.request_id;
        if linked.insert(id)
            && let Some(request) = otel::request_span(id)
        {
            otel::link(&span, request);
        }
    }
    otel::join_request(&span, first.row.request_id);
    span
}

impl<D: Deliver> Publisher<D> {
    /// A batch as frames that each fit one Kafka message.
    pub fn encode(&self, batch: &[Submission]) -> Result<Vec<Piece>, String> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let histories: Vec<&[u32]> = batch.iter().map(|s| s.history.as_slice()).collect();
        // A frame carries many requests but one trace context: its first
        // request's, sent on by this publish (by its `publish` span when
        // spans are exported, see `publish_span`); the rows carry every id.
        let trace = otel::outgoing(TraceParent {
            trace_id: first.row.request_id,
            ..TraceParent::new_root()
        })
        .to_string();
        let frame = Frame {
            model_version: self.frames.model_version.clone(),
            stage: 0,
            reply_to: self.frames.reply_to,
            trace_context: trace,
            hops: vec![Hop {
                stage: DISPATCHER_HOP,
                queue_us: 0,
                compute_us: 0,
                sent_unix_us: now_unix_us(),
            }],
            rows: batch.iter().map(|s| s.row.clone()).collect(),
            body: Body::Activations(track_ids(&histories, self.frames.max_history)),
        };
        let until = batch
            .iter()
            .map(|s| s.deadline)
            .max()
            .unwrap_or(first.deadline);
        frame
            .split_to_fit(self.frames.max_message_bytes)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|piece| {
                Ok(Piece {
                    ids: piece.rows.iter().map(|r| r.request_id).collect(),
                    bytes: piece.encode().map_err(|e| e.to_string())?,
                    until,
                })
            })
            .collect()
    }

    async fn deliver_piece(&self, piece: Piece) -> (Vec<u128>, Delivery) {
        let delivery =
            match tokio::time::timeout_at(piece.until, self.deliver.deliver(piece.bytes)).await {
                Ok(Ok(())) => Delivery::Delivered,
                Ok(Err(error)) => Delivery::Refused(error),
                Err(_) => Delivery::Moot,
            };
        (piece.ids, delivery)
    }

    /// Publishes what `queue` holds until it closes; `failed` is told the
    /// requests whose frame could not be published.
    pub async fn run(
        &self,
        queue: &mut Receiver,
        heartbeat: &Heartbeat,
        failed: &(dyn Fn(&[u128]) + Send + Sync),
    ) {
        let mut batch: Vec<Queued> = Vec::new();
        let mut flush_at: Option<Instant> = None;
        let mut closed = false;
        let mut deliveries = FuturesUnordered::new();
        let mut idle = tokio::time::interval(IDLE_BEAT);
        loop {
            heartbeat.beat(std::time::Instant::now());
            self.metrics
                .publishes_in_flight
                .set(deliveries.len() as i64);
            let room = deliveries.len() < self.max_in_flight;
            let due = !batch.is_empty()
                && (closed
                    || batch.len() >= self.max_batch_rows
                    || flush_at.is_some_and(|t| Instant::now() >= t));
            if due && room {
                let submissions: Vec<Submission> =
                    batch.drain(..).map(|queued| queued.submission).collect();
                flush_at = None;
                self.metrics.frame_rows.observe(submissions.len() as f64);
                let ids: Vec<u128> = submissions.iter().map(|s| s.row.request_id).collect();
                let span = publish_span(&submissions);
                match span.in_scope(|| self.encode(&submissions)) {
                    Ok(pieces) => {
                        tracing::debug!(request_ids = %request_ids(ids), frames = pieces.len(), "publishing to stage 0");
                        // The span ends once the broker has every piece.
                        deliveries.extend(
                            pieces
                                .into_iter()
                                .map(|p| self.deliver_piece(p).instrument(span.clone())),
                        )
                    }
                    Err(error) => {
                        let _in_span = span.enter();
                        tracing::error!(%error, request_ids = %request_ids(ids.iter().copied()), "cannot fit a request into a Kafka message");
                        self.metrics.publish_errors.inc();
                        failed(&ids);
                    }
                }
                continue;
            }
            if closed && batch.is_empty() && deliveries.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                Some((ids, delivery)) = deliveries.next(), if !deliveries.is_empty() => {
                    if let Delivery::Refused(error) = delivery {
                        tracing::warn!(%error, request_ids = %request_ids(ids.iter().copied()), "publishing to stage 0 failed");
                        self.metrics.publish_errors.inc();
                        failed(&ids);
                    }
                }
                received = queue.recv(), if !closed && room && batch.len() < self.max_batch_rows => {
                    match received {
                        Some(queued) => {
                            if batch.is_empty() {
                                flush_at = Some(Instant::now() + self.max_wait);
                            }
                            batch.push(queued);
                            while batch.len() < self.max_batch_rows
                                && let Ok(queued) = queue.try_recv()
                            {
                                batch.push(queued);
                            }
                        }
                        None => closed = true,
                    }
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() && !due => {}
                _ = idle.tick() => {}
            }
        }
    }

    /// [`Publisher::run`], restarted whenever it panics (the requests of
    /// the batch and deliveries it held end at their deadlines).
    pub async fn run_supervised(
        &self,
        mut queue: Receiver,
        heartbeat: &Heartbeat,
        failed: &(dyn Fn(&[u128]) + Send + Sync),
    ) {
        while let Err(panic) = AssertUnwindSafe(self.run(&mut queue, heartbeat, failed))
            .catch_unwind()
            .await
        {
            supervise::restarted("publisher", &self.metrics.task_restarts, panic.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{SubmissionQueue, submission_queue};
    use setlist_core::wire::RowMeta;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::{mpsc, oneshot};

    /// A broker whose every acknowledgement the test gives by hand.
    struct HandAcked {
        calls: mpsc::UnboundedSender<(u128, oneshot::Sender<Result<(), String>>)>,
        panic_once: AtomicBool,
    }

    impl Deliver for HandAcked {
        async fn deliver(&self, frame: Vec<u8>) -> Result<(), String> {
            if self.panic_once.swap(false, Ordering::Relaxed) {
                panic!("the broker client blew up");
            }
            let first = Frame::decode(&frame).unwrap().rows[0].request_id;
            let (ack, acked) = oneshot::channel();
            self.calls.send((first, ack)).unwrap();
            acked
                .await
                .unwrap_or_else(|_| Err("never acknowledged".into()))
        }
    }

    type Calls = mpsc::UnboundedReceiver<(u128, oneshot::Sender<Result<(), String>>)>;

    struct Harness {
        queue: SubmissionQueue,
        calls: Calls,
        failed: mpsc::UnboundedReceiver<Vec<u128>>,
        metrics: Metrics,
    }

    fn start(max_in_flight: usize, panic_once: bool) -> Harness {
        let (calls_in, calls) = mpsc::unbounded_channel();
        let (failed_in, failed) = mpsc::unbounded_channel();
        let metrics = Metrics::new();
        let publisher = Arc::new(Publisher {
            deliver: HandAcked {
                calls: calls_in,
                panic_once: AtomicBool::new(panic_once),
            },
            frames: FrameSettings {
                model_version: "m1".into(),
                reply_to: 0,
                max_history: 4,
                max_message_bytes: 1 << 20,
            },
            max_batch_rows: 64,
            max_wait: Duration::ZERO,
            max_in_flight,
            metrics: metrics.clone(),
        });
        let (queue, receiver) = submission_queue(1 << 20);
        tokio::spawn(async move {
            let heartbeat = Heartbeat::new(std::time::Instant::now());
            let failed = move |ids: &[u128]| failed_in.send(ids.to_vec()).unwrap();
            publisher
                .run_supervised(receiver, &heartbeat, &failed)
                .await;
        });
        Harness {
            queue,
            calls,
            failed,
            metrics,
        }
    }

    fn submit(queue: &SubmissionQueue, id: u128) {
        queue
            .try_submit(Submission {
                row: RowMeta {
                    request_id: id,
                    deadline_unix_ms: u64::MAX,
                    k: 5,
                    exclude: vec![],
                },
                history: vec![1, 2],
                deadline: Instant::now() + Duration::from_secs(3600),
            })
            .unwrap();
    }

    /// Lets the publisher (on this test's single thread) run until it waits.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Issue 7, item 8: publishing used to wait for each acknowledgement
    /// before sending the next frame.
    #[tokio::test]
    async fn deliveries_overlap_up_to_the_bound() {
        let mut h = start(2, false);
        submit(&h.queue, 1);
        let (id, first_ack) = h.calls.recv().await.unwrap();
        assert_eq!(id, 1);
        submit(&h.queue, 2);
        let (id, second_ack) = h.calls.recv().await.unwrap();
        assert_eq!(id, 2, "sent while the first is still unacknowledged");
        submit(&h.queue, 3);
        settle().await;
        assert!(
            h.calls.try_recv().is_err(),
            "two deliveries are outstanding: the third waits"
        );
        assert_eq!(h.metrics.publishes_in_flight.get(), 2);
        second_ack.send(Ok(())).unwrap();
        let (id, _third_ack) = h.calls.recv().await.unwrap();
        assert_eq!(id, 3);
        first_ack.send(Ok(())).unwrap();
        settle().await;
        assert!(h.failed.try_recv().is_err(), "nothing failed");
    }

    #[tokio::test]
    async fn a_refused_delivery_fails_the_requests_it_carried() {
        let mut h = start(4, false);
        submit(&h.queue, 7);
        let (_, ack) = h.calls.recv().await.unwrap();
        ack.send(Err("broker said no".into())).unwrap();
        assert_eq!(h.failed.recv().await.unwrap(), vec![7]);
        assert_eq!(h.metrics.publish_errors.get(), 1);
    }

    /// Issue 7, item 7: a panic in the batcher used to end publishing for good.
    #[tokio::test]
    async fn a_panicking_publisher_is_restarted() {
        let mut h = start(4, true);
        submit(&h.queue, 1);
        settle().await;
        assert_eq!(
            h.metrics
                .task_restarts
                .with_label_values(&["publisher"])
                .get(),
            1
        );
        submit(&h.queue, 2);
        let (id, _ack) = h.calls.recv().await.unwrap();
        assert_eq!(id, 2, "publishing goes on after the restart");
    }
}
