//! Recommendations for a listener's playlist: the dispatcher's answer when
//! it gives one in time, else the catalogue's most popular songs, flagged
//! as a fallback with the reason. A circuit breaker stops the calls while
//! the dispatcher keeps failing, so listeners get the fallback at once
//! instead of waiting out a timeout each.

use crate::metrics::Metrics;
use setlist_core::api::{RecommendationRequest, RecommendationResponse, Timings};
use setlist_core::breaker::{Breaker, Decision, State, Ticket, Verdict};
use setlist_core::catalogue::Catalogue;
use setlist_core::query;
use setlist_core::trace::{TRACEPARENT, TraceParent};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why this API answered without the dispatcher.
pub const CIRCUIT_OPEN: &str = "circuit_open";
pub const DISPATCHER_UNREACHABLE: &str = "dispatcher_unreachable";
pub const DISPATCHER_REFUSED: &str = "dispatcher_refused";

/// How long an open breaker's probe may stay unanswered before the next
/// request probes instead.
const PROBE_TIMEOUT_EXTRA: Duration = Duration::from_millis(500);

/// What one call to the dispatcher came to.
#[derive(Debug)]
pub enum Called {
    Answered(RecommendationResponse),
    /// No answer: the reason (one of the constants above) and what happened.
    Failed {
        reason: &'static str,
        detail: String,
    },
}

/// What a call's outcome says about the dispatcher, for the breaker.
pub fn verdict(called: &Called) -> Verdict {
    match called {
        Called::Answered(_) => Verdict::Success,
        Called::Failed {
            reason: DISPATCHER_REFUSED,
            ..
        } => Verdict::Inconclusive,
        Called::Failed { .. } => Verdict::Failure,
    }
}

/// The popularity answer for `tracks` when the dispatcher gave none: the `k`
/// most popular songs not in the playlist, flagged with `reason`.
pub fn fallback(
    catalogue: &Catalogue,
    model_version: &str,
    tracks: &[String],
    k: usize,
    reason: &str,
) -> RecommendationResponse {
    let resolved = query::resolve(catalogue, tracks);
    let mut exclude = resolved.known.clone();
    exclude.sort_unstable();
    let scored = catalogue.popular(k, &exclude);
    RecommendationResponse {
        recommendations: query::recommendations(catalogue, &scored),
        model_version: model_version.to_string(),
        fallback: true,
        fallback_reason: Some(reason.to_string()),
        unknown_tracks: resolved.unknown,
        cached: false,
        timings: Timings::default(),
    }
}

/// Calls the dispatcher, guarded by the breaker.
pub struct Dispatcher {
    http: reqwest::Client,
    url: String,
    deadline_ms: u64,
    timeout: Duration,
    breaker: Arc<Mutex<Breaker>>,
    metrics: Metrics,
}

/// Reports a call the breaker let through exactly once; a call abandoned
/// (the listener left, the handler was dropped) reports `Inconclusive`, so
/// a probe whose client went away frees the half-open slot.
struct Report<'a> {
    dispatcher: &'a Dispatcher,
    ticket: Ticket,
    verdict: Verdict,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        self.dispatcher.record(self.ticket, self.verdict);
    }
}

impl Dispatcher {
    pub fn new(
        base_url: &str,
        deadline_ms: u64,
        timeout: Duration,
        breaker_failures: u32,
        breaker_cooldown: Duration,
        metrics: Metrics,
    ) -> Dispatcher {
        Dispatcher {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("an HTTP client with a timeout"),
            url: format!("{}/v1/recommendations", base_url.trim_end_matches('/')),
            deadline_ms,
            timeout,
            breaker: Arc::new(Mutex::new(Breaker::new(
                breaker_failures,
                breaker_cooldown,
                timeout + PROBE_TIMEOUT_EXTRA,
            ))),
            metrics,
        }
    }

    pub fn breaker_state(&self) -> State {
        self.breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .state()
    }

    fn record(&self, ticket: Ticket, verdict: Verdict) {
        let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        breaker.record(ticket, verdict, Instant::now());
        self.metrics.breaker_state.set(match breaker.state() {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        });
    }

    /// The dispatcher's answer for `tracks`, or why there is none; the
    /// call carries `trace`'s trace in its `traceparent`, from the current
    /// span when spans are exported ([`setlist_service::otel::outgoing`]).
    pub async fn recommend(&self, tracks: &[String], k: usize, trace: TraceParent) -> Called {
        let decision = self
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now());
        let ticket = match decision {
            Decision::Pass(ticket) => ticket,
            Decision::Reject => {
                return Called::Failed {
                    reason: CIRCUIT_OPEN,
                    detail: "the dispatcher has been failing; calls resume after a cooldown".into(),
                };
            }
        };
        let mut report = Report {
            dispatcher: self,
            ticket,
            verdict: Verdict::Inconclusive,
        };
        let called = self.call(tracks, k, trace).await;
        report.verdict = verdict(&called);
        called
    }

    async fn call(&self, tracks: &[String], k: usize, trace: TraceParent) -> Called {
        let request = RecommendationRequest {
            tracks: tracks.to_vec(),
            k,
            exclude: Vec::new(),
            deadline_ms: Some(self.deadline_ms),
        };
        let unreachable = |detail: String| Called::Failed {
            reason: DISPATCHER_UNREACHABLE,
            detail,
        };
        let response = match self
            .http
            .post(&self.url)
            // When spans are exported, the dispatcher's is this request's child.
            .header(
                TRACEPARENT,
                setlist_service::otel::outgoing(trace).to_string(),
            )
            .json(&request)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return unreachable(format!(
                    "no answer from {} within {} ms",
                    self.url,
                    self.timeout.as_millis()
                ));
            }
            Err(e) => return unreachable(format!("cannot reach {}: {e}", self.url)),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return unreachable(format!("{} broke off its answer: {e}", self.url)),
        };
        if status.is_server_error() {
            return unreachable(format!(
                "{} answered {status}: {}",
                self.url,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        if !status.is_success() {
            return Called::Failed {
                reason: DISPATCHER_REFUSED,
                detail: format!(
                    "{} refused the request ({status}): {}",
                    self.url,
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ),
            };
        }
        match serde_json::from_slice(&body) {
            Ok(answer) => Called::Answered(answer),
            Err(e) => unreachable(format!(
                "{} answered something else than recommendations: {e}",
                self.url
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::catalogue::Song;

    fn catalogue() -> Catalogue {
        Catalogue::new(
            (0..10)
                .map(|i| Song {
                    id: format!("s{i}"),
                    title: format!("Song {i}"),
                    artist: "A".into(),
                    album: None,
                    playlists: 100 - i,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn the_fallback_is_the_most_popular_songs_not_in_the_playlist() {
        let answer = fallback(
            &catalogue(),
            "m1",
            &["s0".into(), "s2".into(), "nope".into()],
            3,
            CIRCUIT_OPEN,
        );
        let ids: Vec<&str> = answer
            .recommendations
            .iter()
            .map(|r| r.track.as_str())
            .collect();
        assert_eq!(ids, ["s1", "s3", "s4"]);
        assert!(answer.fallback);
        assert_eq!(answer.fallback_reason.as_deref(), Some("circuit_open"));
        assert_eq!(answer.unknown_tracks, ["nope"]);
    }

    #[test]
    fn only_a_failing_dispatcher_counts_against_it() {
        let failed = |reason| Called::Failed {
            reason,
            detail: String::new(),
        };
        assert_eq!(verdict(&failed(DISPATCHER_UNREACHABLE)), Verdict::Failure);
        // A 4xx says the request was wrong, not that the dispatcher is down.
        assert_eq!(verdict(&failed(DISPATCHER_REFUSED)), Verdict::Inconclusive);
    }

    /// A dispatcher that does not listen: calls fail fast, the breaker opens
    /// after the configured failures and then answers at once.
    #[tokio::test]
    async fn a_dead_dispatcher_opens_the_breaker() {
        let port = setlist_core::ports::free_loopback_ports(1).unwrap();
        let metrics = Metrics::new();
        let dispatcher = Dispatcher::new(
            &format!("http://127.0.0.1:{port}"),
            1000,
            Duration::from_millis(1500),
            2,
            Duration::from_secs(60),
            metrics.clone(),
        );
        let tracks = vec!["s1".to_string()];
        for _ in 0..2 {
            match dispatcher
                .recommend(&tracks, 5, TraceParent::new_root())
                .await
            {
                Called::Failed { reason, .. } => assert_eq!(reason, DISPATCHER_UNREACHABLE),
                other => panic!("{other:?}"),
            }
        }
        match dispatcher
            .recommend(&tracks, 5, TraceParent::new_root())
            .await
        {
            Called::Failed { reason, .. } => assert_eq!(reason, CIRCUIT_OPEN),
            other => panic!("{other:?}"),
        }
        assert_eq!(metrics.breaker_state.get(), 1);
    }

    /// A call whose listener leaves (the future is dropped mid-call) is
    /// reported, as inconclusive: a half-open probe never stays held.
    #[tokio::test]
    async fn an_abandoned_probe_frees_the_half_open_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Accepts and never answers.
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let dispatcher = Dispatcher::new(
            &format!("http://{address}"),
            1000,
            Duration::from_millis(1000),
            1,
            Duration::from_millis(1),
            Metrics::new(),
        );
        let tracks = vec!["s1".to_string()];
        // One timed-out call opens the breaker; after the cooldown the next
        // call is the probe.
        assert!(matches!(
            dispatcher
                .recommend(&tracks, 5, TraceParent::new_root())
                .await,
            Called::Failed {
                reason: DISPATCHER_UNREACHABLE,
                ..
            }
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let probe = tokio::time::timeout(
            Duration::from_millis(100),
            dispatcher.recommend(&tracks, 5, TraceParent::new_root()),
        );
        assert!(
            probe.await.is_err(),
            "the probe is still waiting when its listener leaves"
        );
        assert!(
            !matches!(dispatcher.breaker_state(), State::HalfOpen { .. }),
            "the abandoned probe no longer holds the half-open slot: {:?}",
            dispatcher.breaker_state()
        );
    }
}
