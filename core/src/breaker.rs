//! The circuit breaker: when what a service calls keeps failing (the
//! pipeline, for the dispatcher; the dispatcher, for the search API), stop
//! waiting on it (answer from the fallback at once) until a probe request
//! succeeds. A pure state machine; the caller supplies the time.
//!
//! Only evidence about the pipeline moves it: a [`Verdict::Failure`] is an
//! attempt the pipeline did not answer within its own expected time, or a
//! frame the broker refused. A request that ran out of its *own* deadline
//! first (a listener asking for 10 ms), or whose client went away, is
//! [`Verdict::Inconclusive`]: it says nothing about the pipeline and changes
//! no one else's answers.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The pipeline answers; `failures` in a row so far.
    Closed { failures: u32 },
    /// The pipeline is failing; no request goes to it until `until`.
    Open { until: Instant },
    /// One probe request (`probe`) is in flight since `since`; the others
    /// get the fallback.
    HalfOpen { probe: u64, since: Instant },
}

/// What a finished (or abandoned) request says about the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The pipeline answered.
    Success,
    /// The pipeline did not answer within its expected time, or publishing
    /// to it failed.
    Failure,
    /// Nothing learned: the request's own deadline came first, its client
    /// left, or it never reached the pipeline.
    Inconclusive,
}

/// Which request the breaker let through, so that what it reports is
/// weighed by what it was: only the current probe decides a half-open
/// breaker, and a report from a probe the breaker already gave up on is
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Regular,
    Probe(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the request to the pipeline and report how it went with the ticket.
    Pass(Ticket),
    /// Answer from the fallback without waiting.
    Reject,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
    probes: u64,
}

impl Breaker {
    /// Opens after `threshold` failures in a row, for `cooldown`; a probe
    /// that has not reported within `probe_timeout` no longer holds the
    /// half-open slot (the next request probes instead), so a lost probe
    /// cannot keep the breaker from ever closing.
    pub fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Breaker {
        Breaker {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
            probes: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn allow(&mut self, now: Instant) -> Decision {
        match self.state {
            State::Closed { .. } => Decision::Pass(Ticket::Regular),
            State::Open { until } if now >= until => self.probe(now),
            State::HalfOpen { since, .. } if now >= since + self.probe_timeout => self.probe(now),
            State::Open { .. } | State::HalfOpen { .. } => Decision::Reject,
        }
    }

    fn probe(&mut self, now: Instant) -> Decision {
        self.probes += 1;
        self.state = State::HalfOpen {
            probe: self.probes,
            since: now,
        };
        Decision::Pass(Ticket::Probe(self.probes))
    }

    /// Records what a request the breaker let through says. Any success
    /// closes the breaker (the pipeline answers); failures count only while
    /// closed or from the current probe; an inconclusive probe frees the
    /// half-open slot for the next request.
    pub fn record(&mut self, ticket: Ticket, verdict: Verdict, now: Instant) {
        let current_probe = match (self.state, ticket) {
            (State::HalfOpen { probe, .. }, Ticket::Probe(p)) => probe == p,
            _ => false,
        };
        self.state = match (self.state, verdict) {
            (_, Verdict::Success) => State::Closed { failures: 0 },
            (State::Closed { failures }, Verdict::Failure) if failures + 1 < self.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (State::Closed { .. }, Verdict::Failure) => State::Open {
                until: now + self.cooldown,
            },
            (State::HalfOpen { .. }, Verdict::Failure) if current_probe => State::Open {
                until: now + self.cooldown,
            },
            (State::HalfOpen { .. }, Verdict::Inconclusive) if current_probe => {
                State::Open { until: now }
            }
            (state, _) => state,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(2);
    const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(threshold, COOLDOWN, PROBE_TIMEOUT)
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// Opens `b` (threshold 1) at `t0` and lets the cooldown pass: the next
    /// request is a probe.
    fn opened(t0: Instant) -> Breaker {
        let mut b = breaker(1);
        b.record(Ticket::Regular, Verdict::Failure, t0);
        b
    }

    fn probe_ticket(decision: Decision) -> Ticket {
        match decision {
            Decision::Pass(ticket @ Ticket::Probe(_)) => ticket,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = breaker(3);
        for _ in 0..2 {
            assert_eq!(b.allow(t0), Decision::Pass(Ticket::Regular));
            b.record(Ticket::Regular, Verdict::Failure, t0);
        }
        assert_eq!(b.state(), State::Closed { failures: 2 });
        b.record(Ticket::Regular, Verdict::Failure, t0);
        assert_eq!(b.allow(secs(t0, 1.0)), Decision::Reject);
        let probe = probe_ticket(b.allow(secs(t0, 2.0)));
        assert_eq!(
            b.allow(secs(t0, 2.0)),
            Decision::Reject,
            "one probe at a time"
        );
        b.record(probe, Verdict::Failure, secs(t0, 2.5));
        assert_eq!(
            b.allow(secs(t0, 4.0)),
            Decision::Reject,
            "a failed probe opens it again for a whole cooldown"
        );
        let probe = probe_ticket(b.allow(secs(t0, 4.5)));
        b.record(probe, Verdict::Success, secs(t0, 4.6));
        assert_eq!(b.allow(secs(t0, 4.6)), Decision::Pass(Ticket::Regular));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker(2);
        b.record(Ticket::Regular, Verdict::Failure, t0);
        b.record(Ticket::Regular, Verdict::Success, t0);
        b.record(Ticket::Regular, Verdict::Failure, t0);
        assert_eq!(b.allow(t0), Decision::Pass(Ticket::Regular));
    }

    /// Issue 7, item 4: thirty requests that ran out of their own 10 ms
    /// deadline used to open the breaker for everyone.
    #[test]
    fn requests_that_miss_their_own_deadline_never_open_it() {
        let t0 = Instant::now();
        let mut b = breaker(5);
        for _ in 0..30 {
            let Decision::Pass(ticket) = b.allow(t0) else {
                panic!("the breaker rejected a request")
            };
            b.record(ticket, Verdict::Inconclusive, t0);
        }
        assert_eq!(b.state(), State::Closed { failures: 0 });
        b.record(Ticket::Regular, Verdict::Failure, t0);
        b.record(Ticket::Regular, Verdict::Inconclusive, t0);
        assert_eq!(
            b.state(),
            State::Closed { failures: 1 },
            "inconclusive requests do not reset the count either"
        );
    }

    /// Issue 7, item 5: a probe whose client left used to hold the
    /// half-open slot forever.
    #[test]
    fn an_inconclusive_probe_frees_the_slot_at_once() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let probe = probe_ticket(b.allow(secs(t0, 2.0)));
        b.record(probe, Verdict::Inconclusive, secs(t0, 2.1));
        let next = probe_ticket(b.allow(secs(t0, 2.1)));
        assert_ne!(next, probe, "the next request is a new probe");
    }

    #[test]
    fn a_probe_that_never_reports_frees_the_slot_after_the_probe_timeout() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let lost = probe_ticket(b.allow(secs(t0, 2.0)));
        assert_eq!(b.allow(secs(t0, 2.9)), Decision::Reject);
        let next = probe_ticket(b.allow(secs(t0, 3.0)));
        assert_ne!(next, lost);
        b.record(lost, Verdict::Failure, secs(t0, 3.1));
        assert_eq!(
            b.state(),
            State::HalfOpen {
                probe: match next {
                    Ticket::Probe(p) => p,
                    Ticket::Regular => unreachable!(),
                },
                since: secs(t0, 3.0)
            },
            "the lost probe reporting late does not decide for the new one"
        );
        b.record(next, Verdict::Success, secs(t0, 3.2));
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn stale_failures_do_not_extend_an_open_breaker() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        b.record(Ticket::Regular, Verdict::Failure, secs(t0, 1.5));
        assert_eq!(
            b.state(),
            State::Open {
                until: secs(t0, 2.0)
            }
        );
        let probe = probe_ticket(b.allow(secs(t0, 2.0)));
        b.record(Ticket::Regular, Verdict::Failure, secs(t0, 2.1));
        assert!(
            matches!(b.state(), State::HalfOpen { .. }),
            "only the probe decides a half-open breaker"
        );
        b.record(probe, Verdict::Failure, secs(t0, 2.2));
        assert_eq!(
            b.state(),
            State::Open {
                until: secs(t0, 4.2)
            }
        );
    }

    #[test]
    fn any_answer_from_the_pipeline_closes_it() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        b.record(Ticket::Regular, Verdict::Success, secs(t0, 0.5));
        assert_eq!(b.allow(secs(t0, 0.5)), Decision::Pass(Ticket::Regular));
    }
}
