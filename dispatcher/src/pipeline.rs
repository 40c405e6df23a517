//! The dispatcher's side of the pipeline: the requests waiting for it, the
//! circuit breaker, the retry budget and how fast it has answered lately,
//! and the thin async loop that runs one request's [`Flight`] against them.
//! Publishing is the caller's (`submit`), so all of this runs without Kafka
//! in the tests.
//!
//! A request registers itself in the request table and holds an
//! [`InFlight`] guard for as long as it waits; whatever ends the wait (an
//! answer, the deadline, or the HTTP handler being dropped because the
//! client went away) drops the guard, which removes the entry and, if the
//! request had told the breaker nothing yet, reports it as inconclusive, so
//! a probe whose client left frees the half-open slot at once.

use crate::api::FallbackReason;
use crate::flight::{Event, Flight, MAX_ATTEMPTS, Next, RetryReason};
use crate::latency::LatencyFloor;
use crate::lock;
use crate::metrics::Metrics;
use crate::queue::{QueueFull, Submission};
use crate::requests::{Answer, Offer, RequestTable};
use crate::retry::RetryBudget;
use rand::RngExt;
use setlist_core::breaker::{Breaker, Decision, State as BreakerState, Ticket, Verdict};
use setlist_core::telemetry::now_unix_us;
use setlist_core::trace::RequestId;
use setlist_core::wire::{Hop, RowMeta, Scored};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The fallback needs a moment to build; stop waiting this long before the deadline.
const FALLBACK_MARGIN: Duration = Duration::from_millis(2);
/// How long the fastest answer is remembered (one to two of these).
const LATENCY_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub shards: usize,
    /// How long the pipeline may take to answer one attempt before the
    /// attempt counts as failed.
    pub pipeline_timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub breaker_probe_timeout: Duration,
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_second: f64,
}

/// What the request table tells a waiting request.
#[derive(Debug)]
enum Report {
    Answered(Answer),
    PublishFailed,
}

type Reporter = mpsc::Sender<Report>;

/// What the model is asked: the history it reads, what it must not
/// recommend (sorted), and how many songs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub history: Vec<u32>,
    pub exclude: Vec<u32>,
    pub k: usize,
}

pub struct Pipeline {
    requests: Mutex<RequestTable<Reporter>>,
    breaker: Mutex<Breaker>,
    budget: Mutex<RetryBudget>,
    latency: Mutex<LatencyFloor>,
    pipeline_timeout: Duration,
    metrics: Metrics,
}

impl Pipeline {
    pub fn new(settings: &PipelineSettings, metrics: Metrics) -> Pipeline {
        let now = Instant::now().into_std();
        Pipeline {
            requests: Mutex::new(RequestTable::new(settings.shards)),
            breaker: Mutex::new(Breaker::new(
                settings.breaker_failures,
                settings.breaker_cooldown,
                settings.breaker_probe_timeout,
            )),
            budget: Mutex::new(RetryBudget::new(
                settings.retry_budget_ratio,
                settings.retry_budget_min_per_second,
                now,
            )),
            latency: Mutex::new(LatencyFloor::new(LATENCY_WINDOW, now)),
            pipeline_timeout: settings.pipeline_timeout,
            metrics,
        }
    }

    /// Asks the pipeline, publishing through `submit`, and waits for the
    /// answer until just before `deadline`; an error says why the fallback
    /// must answer instead.
    /// Asks the pipeline for `query`'s answer by `deadline`, under the
    /// request id `wanted` (the trace id) unless another request in flight
    /// holds it already.
    pub async fn ask(
        &self,
        query: &Query,
        deadline: Instant,
        wanted: RequestId,
        submit: impl Fn(Submission) -> Result<(), QueueFull>,
    ) -> Result<Answer, FallbackReason> {
        let now = Instant::now();
        let give_up = deadline
            .checked_sub(FALLBACK_MARGIN)
            .unwrap_or(deadline)
            .max(now);
        let fastest = lock(&self.latency).fastest(now.into_std());
        if fastest.is_some_and(|fastest| give_up - now < fastest) {
            return Err(FallbackReason::DeadlineTooShort);
        }
        let decision = lock(&self.breaker).allow(now.into_std());
        self.show_breaker();
        let Decision::Pass(ticket) = decision else {
            return Err(FallbackReason::CircuitOpen);
        };
        let (reporter, mut reports) = mpsc::channel(MAX_ATTEMPTS as usize + 1);
        let (flight, mut next) = Flight::new(give_up.into_std(), self.pipeline_timeout);
        let mut guard = InFlight {
            id: self.register(query.k, reporter, wanted),
            pipeline: self,
            ticket,
            flight,
            reported: None,
        };
        let row = RowMeta {
            request_id: guard.id,
            deadline_unix_ms: now_unix_us() / 1000 + (deadline - now).as_millis() as u64,
            k: query.k as u16,
            exclude: query.exclude.clone(),
        };
        let mut answer = None;
        loop {
            let event = match next {
                Next::Done(result) => {
                    return result.and_then(|()| answer.ok_or(FallbackReason::Deadline));
                }
                Next::Publish => {
                    let submission = Submission {
                        row: row.clone(),
                        history: query.history.clone(),
                        deadline,
                    };
                    match submit(submission) {
                        Ok(()) => Event::Published,
                        Err(QueueFull) => Event::Refused,
                    }
                }
                Next::WaitUntil(until) => {
                    match tokio::time::timeout_at(Instant::from_std(until), reports.recv()).await {
                        Ok(Some(Report::Answered(a))) => {
                            answer = Some(a);
                            Event::Answered
                        }
                        Ok(Some(Report::PublishFailed)) => Event::PublishFailed,
                        Err(_) => Event::Woke,
                        // The table holds a reporter for as long as the guard lives.
                        Ok(None) => return Err(FallbackReason::Deadline),
                    }
                }
            };
            let now = Instant::now().into_std();
            let first_attempt = event == Event::Published && guard.flight.published() == 0;
            next = guard.flight.on(event, now, &mut |reason, left| {
                self.may_retry(reason, left, now)
            });
            if first_attempt {
                lock(&self.budget).deposit();
            }
            if let Some(latency) = guard.flight.latency(now) {
                lock(&self.latency).record(latency, now);
            }
            guard.report(now);
        }
    }

    fn register(&self, k: usize, reporter: Reporter, wanted: RequestId) -> u128 {
        let mut requests = lock(&self.requests);
        let id = if requests.insert(wanted.0, k, reporter.clone()) {
            wanted.0
        } else {
            let id = loop {
                let id: u128 = rand::rng().random();
                if requests.insert(id, k, reporter.clone()) {
                    break id;
                }
            };
            // Two requests of one trace at once (a client reusing its
            // traceparent): the frames need one id per request.
            tracing::info!(pipeline_request_id = %RequestId(id), "another request of this trace is in flight; this one has its own id in the pipeline");
            id
        };
        self.metrics.requests_in_flight.set(requests.len() as i64);
        id
    }

    /// Whether a failed attempt may be published again: only while the
    /// pipeline could still answer in the time left, and the budget holds
    /// a retry.
    fn may_retry(&self, reason: RetryReason, left: Duration, now: std::time::Instant) -> bool {
        let too_late = lock(&self.latency)
            .fastest(now)
            .is_some_and(|fastest| left < fastest);
        let refused = if too_late {
            Some("no_time")
        } else if !lock(&self.budget).try_withdraw(now) {
            Some("budget")
        } else {
            None
        };
        match refused {
            Some(why) => {
                self.metrics.retries_refused.with_label_values(&[why]).inc();
                false
            }
            None => {
                self.metrics
                    .retries
                    .with_label_values(&[reason.as_str()])
                    .inc();
                true
            }
        }
    }

    /// One output shard's results for the requests of a frame.
    pub fn offer(&self, shard: usize, rows: &[RowMeta], lists: Vec<Vec<Scored>>, hops: &[Hop]) {
        let mut requests = lock(&self.requests);
        for (row, list) in rows.iter().zip(lists) {
            match requests.offer(row.request_id, shard, list, hops.to_vec()) {
                Offer::Complete(reporter, answer) => {
                    // Room for every report a request can get; a full or
                    // closed channel means no one is listening any more.
                    let _ = reporter.try_send(Report::Answered(answer));
                }
                Offer::Partial => {}
                Offer::Duplicate => self.metrics.duplicate_results.inc(),
                Offer::Late => self.metrics.late_results.inc(),
                Offer::UnknownShard => {
                    tracing::warn!(shard, "ignoring results of a shard this plan does not have");
                    return;
                }
            }
        }
    }

    /// The broker refused frames carrying these requests.
    pub fn fail(&self, ids: &[u128]) {
        let requests = lock(&self.requests);
        for &id in ids {
            if let Some(reporter) = requests.fail(id) {
                let _ = reporter.try_send(Report::PublishFailed);
            }
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state()
    }

    /// Requests waiting for the pipeline now.
    pub fn in_flight(&self) -> usize {
        lock(&self.requests).len()
    }

    fn show_breaker(&self) {
        let state = match self.breaker_state() {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        };
        self.metrics.breaker_state.set(state);
    }
}

/// One request waiting for the pipeline; see the module documentation.
struct InFlight<'a> {
    pipeline: &'a Pipeline,
    id: u128,
    ticket: Ticket,
    flight: Flight,
    /// The last verdict told to the breaker.
    reported: Option<Verdict>,
}

impl InFlight<'_> {
    /// Tells the breaker as soon as the request has shown something about
    /// the pipeline (a failed attempt, then perhaps a late answer), not at
    /// the end of a long deadline.
    fn report(&mut self, now: std::time::Instant) {
        let verdict = self.flight.verdict();
        if verdict != Verdict::Inconclusive && self.reported != Some(verdict) {
            lock(&self.pipeline.breaker).record(self.ticket, verdict, now);
            self.reported = Some(verdict);
            self.pipeline.show_breaker();
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut requests = lock(&self.pipeline.requests);
            requests.remove(self.id);
            requests.len()
        };
        self.pipeline.metrics.requests_in_flight.set(waiting as i64);
        if self.reported.is_none() {
            lock(&self.pipeline.breaker).record(
                self.ticket,
                Verdict::Inconclusive,
                Instant::now().into_std(),
            );
            self.pipeline.show_breaker();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use setlist_core::trace::TraceParent;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, LazyLock};

    fn settings() -> PipelineSettings {
        PipelineSettings {
            shards: 1,
            pipeline_timeout: Duration::from_secs(5),
            breaker_failures: 1,
            breaker_cooldown: Duration::ZERO,
            breaker_probe_timeout: Duration::from_secs(60),
            retry_budget_ratio: 0.0,
            retry_budget_min_per_second: 0.0,
        }
    }

    fn query() -> &'static Query {
        static QUERY: LazyLock<Query> = LazyLock::new(|| Query {
            history: vec![1, 2],
            exclude: vec![1, 2],
            k: 3,
        });
        &QUERY
    }

    fn scored(track: u32) -> Vec<Scored> {
        vec![Scored { track, score: 1.0 }]
    }

    fn row(id: u128) -> RowMeta {
        RowMeta {
            request_id: id,
            deadline_unix_ms: 0,
            k: 3,
            exclude: vec![],
        }
    }

    fn any_id() -> RequestId {
        TraceParent::new_root().request_id()
    }

    fn in_ms(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// A `submit` that hands each published request id to the test.
    fn recorder() -> (
        impl Fn(Submission) -> Result<(), QueueFull> + Clone,
        mpsc::UnboundedReceiver<u128>,
    ) {
        let (sent, published) = mpsc::unbounded_channel();
        let submit = move |s: Submission| {
            sent.send(s.row.request_id).unwrap();
            Ok(())
        };
        (submit, published)
    }

    #[tokio::test]
    async fn a_request_goes_by_its_trace_id_unless_another_in_flight_holds_it() {
        let pipeline = Pipeline::new(&settings(), Metrics::new());
        let (submit, mut published) = recorder();
        let trace = any_id();
        let first = pipeline.ask(query(), in_ms(60_000), trace, submit.clone());
        let second = pipeline.ask(query(), in_ms(60_000), trace, submit);
        let answering = async {
            let a = published.recv().await.unwrap();
            let b = published.recv().await.unwrap();
            assert_eq!(a, trace.0, "the first request carries its trace id");
            assert_ne!(b, a, "the second gets its own id");
            pipeline.offer(0, &[row(a)], vec![scored(7)], &[]);
            pipeline.offer(0, &[row(b)], vec![scored(8)], &[]);
        };
        let (first, second, ()) = tokio::join!(first, second, answering);
        assert_eq!(first.unwrap().scored, scored(7));
        assert_eq!(second.unwrap().scored, scored(8));
    }

    /// Opens the breaker (threshold 1, no cooldown) with one request whose
    /// frame the broker refused.
    async fn open(pipeline: &Pipeline) {
        let (submit, mut published) = recorder();
        let asking = pipeline.ask(query(), in_ms(60_000), any_id(), submit);
        let failing = async {
            let id = published.recv().await.unwrap();
            pipeline.fail(&[id]);
        };
        let (result, ()) = tokio::join!(asking, failing);
        assert_eq!(result.unwrap_err(), FallbackReason::PublishFailed);
        assert!(matches!(
            pipeline.breaker_state(),
            BreakerState::Open { .. }
        ));
    }

    #[tokio::test]
    async fn an_answer_is_merged_and_returned() {
        let pipeline = Pipeline::new(
            &PipelineSettings {
                shards: 2,
                ..settings()
            },
            Metrics::new(),
        );
        let (submit, mut published) = recorder();
        let asking = pipeline.ask(query(), in_ms(60_000), any_id(), submit);
        let answering = async {
            let id = published.recv().await.unwrap();
            pipeline.offer(0, &[row(id)], vec![scored(5)], &[]);
            pipeline.offer(0, &[row(id)], vec![scored(5)], &[]);
            pipeline.offer(1, &[row(id)], vec![scored(9)], &[]);
        };
        let (answer, ()) = tokio::join!(asking, answering);
        assert_eq!(
            answer
                .unwrap()
                .scored
                .iter()
                .map(|s| s.track)
                .collect::<Vec<_>>(),
            [5, 9]
        );
        assert_eq!(pipeline.metrics.duplicate_results.get(), 1);
        assert_eq!(pipeline.in_flight(), 0);
    }

    /// Issue 7, item 5: the pending entry used to be removed only after the
    /// await, so a client that disconnected left it behind forever.
    #[tokio::test]
    async fn a_client_that_leaves_leaves_nothing_behind() {
        let pipeline = Pipeline::new(&settings(), Metrics::new());
        let (submit, mut published) = recorder();
        let asking = pipeline.ask(query(), in_ms(60_000), any_id(), submit);
        assert!(
            asking.now_or_never().is_none(),
            "still waiting when dropped"
        );
        let id = published.recv().await.unwrap();
        assert_eq!(pipeline.in_flight(), 0);
        assert_eq!(pipeline.metrics.requests_in_flight.get(), 0);
        pipeline.offer(0, &[row(id)], vec![scored(5)], &[]);
        assert_eq!(pipeline.metrics.late_results.get(), 1);
        assert_eq!(
            pipeline.breaker_state(),
            BreakerState::Closed { failures: 0 }
        );
    }

    /// Issue 7, item 5: a half-open probe whose client left used to keep
    /// the breaker from ever closing.
    #[tokio::test]
    async fn a_probe_whose_client_leaves_frees_the_half_open_slot() {
        let pipeline = Pipeline::new(&settings(), Metrics::new());
        open(&pipeline).await;
        let submitted = Arc::new(AtomicUsize::new(0));
        let counting = {
            let submitted = submitted.clone();
            move |_: Submission| {
                submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        let probe = pipeline.ask(query(), in_ms(60_000), any_id(), counting.clone());
        assert!(probe.now_or_never().is_none());
        assert_eq!(
            submitted.load(Ordering::Relaxed),
            1,
            "the probe was published"
        );
        let next = pipeline.ask(query(), in_ms(60_000), any_id(), counting);
        assert!(next.now_or_never().is_none());
        assert_eq!(
            submitted.load(Ordering::Relaxed),
            2,
            "the next request probes instead of getting circuit_open"
        );
    }

    /// Issue 7, item 4: thirty requests with a 10 ms deadline used to open
    /// the breaker for everyone.
    #[tokio::test]
    async fn short_deadlines_get_their_own_fallback_and_change_no_one_elses_answer() {
        let pipeline = Pipeline::new(&settings(), Metrics::new());
        let (submit, mut published) = recorder();
        let short: Vec<_> = (0..30)
            .map(|_| pipeline.ask(query(), in_ms(10), any_id(), submit.clone()))
            .collect();
        for result in futures::future::join_all(short).await {
            assert_eq!(result.unwrap_err(), FallbackReason::Deadline);
        }
        assert_eq!(
            pipeline.breaker_state(),
            BreakerState::Closed { failures: 0 }
        );
        while published.try_recv().is_ok() {}
        let asking = pipeline.ask(query(), in_ms(60_000), any_id(), submit);
        let answering = async {
            let id = published.recv().await.unwrap();
            pipeline.offer(0, &[row(id)], vec![scored(5)], &[]);
        };
        let (answer, ()) = tokio::join!(asking, answering);
        assert!(answer.is_ok(), "the next normal request gets the model");
    }

    #[tokio::test]
    async fn a_deadline_below_the_fastest_recent_answer_is_not_published() {
        let pipeline = Pipeline::new(&settings(), Metrics::new());
        let (submit, mut published) = recorder();
        let asking = pipeline.ask(query(), in_ms(60_000), any_id(), submit.clone());
        let answering = async {
            let id = published.recv().await.unwrap();
            // The pipeline takes 50 ms to answer: a deadline of 20 ms
            // cannot be met by it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            pipeline.offer(0, &[row(id)], vec![scored(5)], &[]);
        };
        assert!(tokio::join!(asking, answering).0.is_ok());
        let result = pipeline.ask(query(), in_ms(20), any_id(), submit).await;
        assert_eq!(result.unwrap_err(), FallbackReason::DeadlineTooShort);
        assert!(published.try_recv().is_err(), "nothing was published");
        assert_eq!(
            pipeline.breaker_state(),
            BreakerState::Closed { failures: 0 }
        );
    }

    /// Issue 7, item 6: retries go through the budget and are counted.
    #[tokio::test]
    async fn a_timed_out_attempt_is_retried_only_within_the_budget() {
        let quick = PipelineSettings {
            pipeline_timeout: Duration::from_millis(10),
            breaker_failures: 100,
            ..settings()
        };
        let pipeline = Pipeline::new(&quick, Metrics::new());
        let (submit, mut published) = recorder();
        let result = pipeline
            .ask(query(), in_ms(300), any_id(), submit.clone())
            .await;
        assert_eq!(result.unwrap_err(), FallbackReason::Deadline);
        assert_eq!(published.try_recv().ok().map(|_| ()), Some(()));
        assert!(published.try_recv().is_err(), "no budget, no retry");
        let refused = &pipeline.metrics.retries_refused;
        assert_eq!(refused.with_label_values(&["budget"]).get(), 1);
        assert_eq!(
            pipeline.breaker_state(),
            BreakerState::Closed { failures: 1 }
        );

        let generous = Pipeline::new(
            &PipelineSettings {
                retry_budget_min_per_second: 1.0,
                ..quick
            },
            Metrics::new(),
        );
        let asking = generous.ask(query(), in_ms(60_000), any_id(), submit);
        let answering = async {
            let first = published.recv().await.unwrap();
            let retry = published.recv().await.unwrap();
            assert_eq!(first, retry, "a retry is the same request");
            generous.offer(0, &[row(retry)], vec![scored(5)], &[]);
        };
        assert!(tokio::join!(asking, answering).0.is_ok());
        let retries = &generous.metrics.retries;
        assert_eq!(retries.with_label_values(&["pipeline_timeout"]).get(), 1);
        assert_eq!(
            generous.breaker_state(),
            BreakerState::Closed { failures: 0 },
            "the late success closes over the failed attempt"
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_overloaded_not_a_pipeline_failure() {
        let pipeline = Pipeline::new(&settings(), Metrics::new());
        let result = pipeline
            .ask(query(), in_ms(60_000), any_id(), |_| Err(QueueFull))
            .await;
        assert_eq!(result.unwrap_err(), FallbackReason::Overloaded);
        assert_eq!(
            pipeline.breaker_state(),
            BreakerState::Closed { failures: 0 }
        );
        assert_eq!(pipeline.in_flight(), 0);
    }
}
