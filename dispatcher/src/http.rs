//! The HTTP surface: synchronous recommendations, asynchronous jobs and
//! status behind one set of limits (a per-request timeout, a concurrency
//! limit and load shedding, as `tower` layers that answer a JSON 503 with
//! `Retry-After`), plus the health endpoints every Setlist process shares.

use crate::jobs::{Found, Job};
use crate::service::Dispatcher;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use setlist_core::api::{self, RecommendationRequest};
use setlist_core::query::{Limits, QueryError};
use setlist_core::trace::TraceParent;
use setlist_service::http::{error, guarded, read_within, traced, unavailable};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

const MAX_WAIT_SECONDS: u64 = 30;

#[derive(Clone)]
struct App {
    dispatcher: Arc<Dispatcher>,
    limits: Limits,
}

impl App {
    /// Reads the body, keeping no more than the limit (see [`read_within`]),
    /// and checks the request. Also returns
    /// the body's size, what a job holds while it runs.
    async fn parse(&self, body: Body) -> Result<(RecommendationRequest, usize), Response> {
        let limit = self.limits.max_request_bytes;
        let refuse = |status, message| {
            self.dispatcher.metrics.invalid_requests.inc();
            error(status, message)
        };
        let bytes = match read_within(body, limit).await {
            Some(bytes) => bytes,
            None => {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over the limit of {limit} bytes"),
                ));
            }
        };
        match api::parse_request(&bytes, &self.limits) {
            Ok(request) => Ok((request, bytes.len())),
            Err(e @ QueryError::TooLarge { .. }) => {
                Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))
            }
            Err(e) => Err(refuse(StatusCode::BAD_REQUEST, e.to_string())),
        }
    }
}

async fn recommend(
    State(app): State<App>,
    Extension(trace): Extension<TraceParent>,
    body: Body,
) -> Response {
    let request = match app.parse(body).await {
        Ok((request, _)) => request,
        Err(response) => return response,
    };
    let deadline = request
        .deadline_ms
        .unwrap_or(app.dispatcher.config.default_deadline_ms);
    Json(app.dispatcher.recommend(&request, deadline, trace).await).into_response()
}

async fn create_job(
    State(app): State<App>,
    Extension(trace): Extension<TraceParent>,
    body: Body,
) -> Response {
    let (request, bytes) = match app.parse(body).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let dispatcher = &app.dispatcher;
    let Ok(job) = dispatcher.jobs.create(bytes) else {
        return unavailable(
            &dispatcher.metrics.shed_requests,
            "jobs_full",
            format!(
                "running jobs already hold {} bytes of requests, the most this dispatcher takes; retry in a few seconds",
                dispatcher.config.running_jobs_bytes
            ),
        );
    };
    let deadline = request
        .deadline_ms
        .unwrap_or(dispatcher.config.job_deadline_ms);
    let accepted = Job {
        id: job.id().to_string(),
        state: crate::jobs::JobState::Pending,
        result: None,
        error: None,
    };
    let dispatcher = dispatcher.clone();
    // If this task panics, dropping `job` marks it FAILED.
    tokio::spawn(
        async move {
            job.start();
            job.done(dispatcher.recommend(&request, deadline, trace).await);
        }
        .instrument(tracing::Span::current()),
    );
    (StatusCode::ACCEPTED, Json(accepted)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    wait_seconds: Option<u64>,
}

async fn get_job(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Response {
    let wait = query.wait_seconds.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("wait_seconds is {wait}; it must be at most {MAX_WAIT_SECONDS}"),
        );
    }
    match app.dispatcher.jobs.find(&id) {
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "there is no job {id}; finished jobs are kept for {} minutes (less when many are kept)",
                app.dispatcher.jobs.ttl().as_secs() / 60
            ),
        ),
        Some(Found::Finished(json)) => json_bytes(json),
        Some(Found::Running(mut job)) => {
            let _ =
                tokio::time::timeout(Duration::from_secs(wait), job.wait_for(Job::finished)).await;
            let current = job.borrow().clone();
            Json(current).into_response()
        }
    }
}

fn json_bytes(json: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn status(State(app): State<App>) -> Response {
    Json(app.dispatcher.status()).into_response()
}

pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    let limits = Limits::default();
    // Longer than any request may ask for (the deadline, or a job's
    // long-poll): it stops only what hangs, such as a body that never ends.
    let timeout = Duration::from_millis(limits.max_deadline_ms) + Duration::from_secs(5);
    let app = App {
        dispatcher: dispatcher.clone(),
        limits,
    };
    let api = Router::new()
        .route("/v1/recommendations", post(recommend))
        .route("/v1/jobs", post(create_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/status", get(status))
        .route_layer(axum::middleware::from_fn(traced))
        // The handlers enforce the body limit themselves, with a JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(app);
    let ready = dispatcher.clone();
    // Health and metrics stay outside the limits: an overloaded dispatcher
    // must still say so.
    guarded(
        api,
        "the dispatcher",
        dispatcher.config.max_concurrent_requests,
        timeout,
        dispatcher.metrics.shed_requests.clone(),
    )
    .merge(setlist_service::health::routes(
        Arc::new(move || ready.readiness()),
        dispatcher.metrics.registry.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use axum::body::to_bytes;
    use axum::http::Request;
    use setlist_core::api::ErrorBody;
    use tokio::sync::{mpsc, oneshot};
    use tower::ServiceExt;

    async fn call(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            retry_after,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// A router whose `/hold` answers only when the test says so (and says
    /// when it has started), and whose `/quick` answers at once.
    fn holding() -> (Router, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
        let (started, holds) = mpsc::unbounded_channel();
        let router = Router::new()
            .route(
                "/hold",
                get(move || {
                    let started = started.clone();
                    async move {
                        let (release, released) = oneshot::channel();
                        started.send(release).unwrap();
                        let _ = released.await;
                        "released"
                    }
                }),
            )
            .route("/quick", get(|| async { "quick" }));
        (router, holds)
    }

    /// Issue 7, item 9: load is shed with a clear 503 and Retry-After, not
    /// queued until memory grows.
    #[tokio::test]
    async fn requests_past_the_concurrency_limit_get_a_json_503_with_retry_after() {
        let metrics = Metrics::new();
        let (router, mut holds) = holding();
        let router = guarded(
            router,
            "the dispatcher",
            1,
            Duration::from_secs(3600),
            metrics.shed_requests.clone(),
        );
        let held = tokio::spawn({
            let router = router.clone();
            async move { call(&router, "/hold").await }
        });
        let release = holds.recv().await.unwrap();
        let (status, retry_after, body) = call(&router, "/quick").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        let body: ErrorBody = serde_json::from_str(&body).unwrap();
        assert!(
            body.error.contains("serving 1 requests already"),
            "{}",
            body.error
        );
        assert_eq!(
            metrics
                .shed_requests
                .with_label_values(&["overloaded"])
                .get(),
            1
        );
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap().0, StatusCode::OK);
        assert_eq!(
            call(&router, "/quick").await.0,
            StatusCode::OK,
            "room again"
        );
    }

    #[tokio::test]
    async fn a_request_that_never_ends_is_stopped_with_a_503() {
        let metrics = Metrics::new();
        let (router, _holds) = holding();
        let router = guarded(
            router,
            "the dispatcher",
            10,
            Duration::from_millis(1),
            metrics.shed_requests.clone(),
        );
        let (status, retry_after, body) = call(&router, "/hold").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(body.contains("was stopped"), "{body}");
        assert_eq!(
            metrics.shed_requests.with_label_values(&["timeout"]).get(),
            1
        );
    }
}
