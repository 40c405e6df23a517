//! One request's way through the pipeline, as a pure state machine: when
//! to publish it, how long to wait, when an attempt has failed, whether a
//! retry is justified, and what the whole says about the pipeline (the
//! breaker's [`Verdict`]). The shell (`pipeline`) does the I/O and feeds
//! it events with the time.
//!
//! An attempt has *failed* when the broker refused its frame or the
//! pipeline did not answer within `pipeline_timeout`, the pipeline's own
//! expected time; only then is a retry justified, and it is published only
//! if the caller's retry budget allows. A request whose own deadline comes
//! first simply ends (`deadline`): that is not the pipeline failing.

use crate::api::FallbackReason;
use setlist_core::breaker::Verdict;
use std::time::{Duration, Instant};

/// The first attempt and at most one retry, as the design promises.
pub const MAX_ATTEMPTS: u8 = 2;

/// What happened, as told by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The request went into the submission queue.
    Published,
    /// The submission queue had no room for it.
    Refused,
    /// The broker refused a frame that carried it.
    PublishFailed,
    /// The wait asked for by [`Next::WaitUntil`] ended without news.
    Woke,
    /// Every output shard answered.
    Answered,
}

/// What the shell does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Publish,
    WaitUntil(Instant),
    Done(Result<(), FallbackReason>),
}

/// Why a retry was considered; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    PipelineTimeout,
    PublishFailed,
}

impl RetryReason {
    pub const ALL: [RetryReason; 2] = [RetryReason::PipelineTimeout, RetryReason::PublishFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::PipelineTimeout => "pipeline_timeout",
            RetryReason::PublishFailed => "publish_failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Flight {
    give_up: Instant,
    pipeline_timeout: Duration,
    published: u8,
    /// Published attempts that may still answer.
    live: u8,
    /// When the latest attempt counts as failed, until that is handled.
    expect_by: Option<Instant>,
    first_published: Option<Instant>,
    failed: bool,
    answered: bool,
}

impl Flight {
    /// A request that must be answered by `give_up` (its deadline, less the
    /// moment the fallback needs); the shell starts by publishing it.
    pub fn new(give_up: Instant, pipeline_timeout: Duration) -> (Flight, Next) {
        let flight = Flight {
            give_up,
            pipeline_timeout,
            published: 0,
            live: 0,
            expect_by: None,
            first_published: None,
            failed: false,
            answered: false,
        };
        (flight, Next::Publish)
    }

    /// Handles `event` at `now`. `may_retry` is asked (with the reason and
    /// the time left) only when a failed attempt would justify a retry; it
    /// says whether the budget allows one.
    pub fn on(
        &mut self,
        event: Event,
        now: Instant,
        may_retry: &mut dyn FnMut(RetryReason, Duration) -> bool,
    ) -> Next {
        match event {
            Event::Published => {
                self.published += 1;
                self.live += 1;
                self.first_published.get_or_insert(now);
                self.expect_by = Some(now + self.pipeline_timeout);
                self.wait()
            }
            Event::Refused if self.live > 0 => self.wait(),
            Event::Refused => Next::Done(Err(FallbackReason::Overloaded)),
            Event::PublishFailed => {
                self.failed = true;
                self.live = self.live.saturating_sub(1);
                if self.live == 0 {
                    self.expect_by = None;
                }
                self.after_failure(now, RetryReason::PublishFailed, may_retry)
            }
            Event::Woke if now >= self.give_up => Next::Done(Err(FallbackReason::Deadline)),
            Event::Woke if self.expect_by.is_some_and(|t| now >= t) => {
                self.expect_by = None;
                self.failed = true;
                self.after_failure(now, RetryReason::PipelineTimeout, may_retry)
            }
            Event::Woke => self.wait(),
            Event::Answered => {
                self.answered = true;
                Next::Done(Ok(()))
            }
        }
    }

    fn after_failure(
        &mut self,
        now: Instant,
        reason: RetryReason,
        may_retry: &mut dyn FnMut(RetryReason, Duration) -> bool,
    ) -> Next {
        if self.published < MAX_ATTEMPTS
            && now < self.give_up
            && may_retry(reason, self.give_up - now)
        {
            Next::Publish
        } else if self.live > 0 {
            // A late answer to an attempt that timed out is still an answer.
            self.wait()
        } else {
            Next::Done(Err(FallbackReason::PublishFailed))
        }
    }

    fn wait(&self) -> Next {
        Next::WaitUntil(self.expect_by.map_or(self.give_up, |t| t.min(self.give_up)))
    }

    /// Attempts published so far.
    pub fn published(&self) -> u8 {
        self.published
    }

    /// What this request says about the pipeline so far.
    pub fn verdict(&self) -> Verdict {
        if self.answered {
            Verdict::Success
        } else if self.failed {
            Verdict::Failure
        } else {
            Verdict::Inconclusive
        }
    }

    /// How long the pipeline took, for an answer to the only attempt (with
    /// a retry, which attempt answered is unknown).
    pub fn latency(&self, now: Instant) -> Option<Duration> {
        match (self.answered, self.published, self.first_published) {
            (true, 1, Some(at)) => Some(now.saturating_duration_since(at)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(300);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A flight that must end by 1,000 ms, published at 0.
    fn published(t0: Instant) -> Flight {
        let (mut flight, next) = Flight::new(ms(t0, 1000), TIMEOUT);
        assert_eq!(next, Next::Publish);
        assert_eq!(
            flight.on(Event::Published, t0, &mut never),
            Next::WaitUntil(ms(t0, 300))
        );
        flight
    }

    fn never(_: RetryReason, _: Duration) -> bool {
        panic!("no retry is justified here")
    }

    fn allow(_: RetryReason, _: Duration) -> bool {
        true
    }

    fn refuse(_: RetryReason, _: Duration) -> bool {
        false
    }

    #[test]
    fn an_answer_in_time_is_a_success() {
        let t0 = Instant::now();
        let mut flight = published(t0);
        assert_eq!(
            flight.on(Event::Answered, ms(t0, 40), &mut never),
            Next::Done(Ok(()))
        );
        assert_eq!(flight.verdict(), Verdict::Success);
        assert_eq!(flight.latency(ms(t0, 40)), Some(Duration::from_millis(40)));
    }

    /// Issue 7, item 4: a request with a deadline shorter than the pipeline
    /// needs ends at its deadline and says nothing about the pipeline.
    #[test]
    fn a_deadline_before_the_pipeline_timeout_is_not_a_failure() {
        let t0 = Instant::now();
        let (mut flight, _) = Flight::new(ms(t0, 8), TIMEOUT);
        assert_eq!(
            flight.on(Event::Published, t0, &mut never),
            Next::WaitUntil(ms(t0, 8))
        );
        assert_eq!(
            flight.on(Event::Woke, ms(t0, 8), &mut never),
            Next::Done(Err(FallbackReason::Deadline))
        );
        assert_eq!(flight.verdict(), Verdict::Inconclusive);
    }

    /// Issue 7, item 6: the old dispatcher re-published every request at
    /// half its deadline; now only a failed attempt is retried, and only
    /// when the budget allows.
    #[test]
    fn a_timed_out_attempt_is_retried_once_when_the_budget_allows() {
        let t0 = Instant::now();
        let mut flight = published(t0);
        let mut asked = Vec::new();
        let next = flight.on(Event::Woke, ms(t0, 300), &mut |reason, left| {
            asked.push((reason, left));
            true
        });
        assert_eq!(next, Next::Publish);
        assert_eq!(
            asked,
            [(RetryReason::PipelineTimeout, Duration::from_millis(700))]
        );
        assert_eq!(
            flight.verdict(),
            Verdict::Failure,
            "the pipeline missed its time"
        );
        assert_eq!(
            flight.on(Event::Published, ms(t0, 300), &mut never),
            Next::WaitUntil(ms(t0, 600))
        );
        assert_eq!(
            flight.on(Event::Woke, ms(t0, 600), &mut never),
            Next::WaitUntil(ms(t0, 1000)),
            "no third attempt; either attempt may still answer"
        );
        assert_eq!(
            flight.on(Event::Answered, ms(t0, 700), &mut never),
            Next::Done(Ok(()))
        );
        assert_eq!(flight.verdict(), Verdict::Success);
        assert_eq!(
            flight.latency(ms(t0, 700)),
            None,
            "which attempt answered is unknown"
        );
    }

    #[test]
    fn without_budget_the_first_attempt_is_still_waited_for() {
        let t0 = Instant::now();
        let mut flight = published(t0);
        assert_eq!(
            flight.on(Event::Woke, ms(t0, 300), &mut refuse),
            Next::WaitUntil(ms(t0, 1000))
        );
        assert_eq!(
            flight.on(Event::Answered, ms(t0, 450), &mut never),
            Next::Done(Ok(()))
        );
        let mut flight = published(t0);
        flight.on(Event::Woke, ms(t0, 300), &mut refuse);
        assert_eq!(
            flight.on(Event::Woke, ms(t0, 1000), &mut never),
            Next::Done(Err(FallbackReason::Deadline))
        );
        assert_eq!(flight.verdict(), Verdict::Failure);
    }

    #[test]
    fn a_publish_failure_is_retried_or_ends_the_request() {
        let t0 = Instant::now();
        let mut flight = published(t0);
        assert_eq!(
            flight.on(Event::PublishFailed, ms(t0, 5), &mut allow),
            Next::Publish
        );
        flight.on(Event::Published, ms(t0, 5), &mut never);
        assert_eq!(
            flight.on(Event::PublishFailed, ms(t0, 9), &mut never),
            Next::Done(Err(FallbackReason::PublishFailed)),
            "nothing left that could answer"
        );
        assert_eq!(flight.verdict(), Verdict::Failure);

        let mut flight = published(t0);
        assert_eq!(
            flight.on(Event::PublishFailed, ms(t0, 5), &mut refuse),
            Next::Done(Err(FallbackReason::PublishFailed))
        );
    }

    #[test]
    fn a_full_queue_ends_a_first_attempt_but_not_a_retry() {
        let t0 = Instant::now();
        let (mut flight, _) = Flight::new(ms(t0, 1000), TIMEOUT);
        assert_eq!(
            flight.on(Event::Refused, t0, &mut never),
            Next::Done(Err(FallbackReason::Overloaded))
        );
        assert_eq!(flight.verdict(), Verdict::Inconclusive);

        let mut flight = published(t0);
        assert_eq!(
            flight.on(Event::Woke, ms(t0, 300), &mut allow),
            Next::Publish
        );
        assert_eq!(
            flight.on(Event::Refused, ms(t0, 300), &mut never),
            Next::WaitUntil(ms(t0, 1000)),
            "the first attempt may still answer"
        );
    }

    #[test]
    fn no_retry_is_asked_for_once_the_deadline_has_passed() {
        let t0 = Instant::now();
        let (mut flight, _) = Flight::new(ms(t0, 100), TIMEOUT);
        flight.on(Event::Published, t0, &mut never);
        assert_eq!(
            flight.on(Event::PublishFailed, ms(t0, 100), &mut never),
            Next::Done(Err(FallbackReason::PublishFailed))
        );
    }

    #[test]
    fn an_early_wake_keeps_waiting() {
        let t0 = Instant::now();
        let mut flight = published(t0);
        assert_eq!(
            flight.on(Event::Woke, ms(t0, 100), &mut never),
            Next::WaitUntil(ms(t0, 300))
        );
    }
}
