//! The HTTP surface: synchronous recommendations, asynchronous jobs,
//! health, readiness, metrics and status.

use crate::api::{self, ErrorBody, RecommendationRequest, RecommendationResponse};
use crate::service::Dispatcher;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<RecommendationResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Jobs live in memory for `JOB_TTL` after they finish; at most `MAX_JOBS`.
const MAX_JOBS: usize = 100_000;
const JOB_TTL: Duration = Duration::from_secs(600);
const MAX_WAIT_SECONDS: u64 = 30;

struct Jobs {
    entries: Mutex<HashMap<String, (watch::Sender<Job>, Instant)>>,
}

impl Jobs {
    /// Registers a new job, first forgetting finished jobs past their TTL.
    fn create(&self) -> Option<(String, watch::Sender<Job>)> {
        let mut entries = self.entries.lock().expect("jobs lock");
        if entries.len() >= MAX_JOBS {
            entries.retain(|_, (job, created)| {
                !matches!(job.borrow().state, JobState::Done | JobState::Failed)
                    || created.elapsed() < JOB_TTL
            });
            if entries.len() >= MAX_JOBS {
                return None;
            }
        }
        let id = format!("{:032x}", rand::rng().random::<u128>());
        let (sender, _) = watch::channel(Job {
            id: id.clone(),
            state: JobState::Pending,
            result: None,
            error: None,
        });
        entries.insert(id.clone(), (sender.clone(), Instant::now()));
        Some((id, sender))
    }

    fn watch(&self, id: &str) -> Option<watch::Receiver<Job>> {
        self.entries
            .lock()
            .expect("jobs lock")
            .get(id)
            .map(|(job, _)| job.subscribe())
    }
}

#[derive(Clone)]
struct App {
    dispatcher: Arc<Dispatcher>,
    jobs: Arc<Jobs>,
    limits: api::Limits,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

impl App {
    /// Reads at most one byte over the body limit (a larger body is refused
    /// without being held in memory) and checks the request.
    async fn parse(&self, body: Body) -> Result<RecommendationRequest, Response> {
        let limit = self.limits.max_body_bytes;
        let refuse = |status, message| {
            self.dispatcher.metrics.invalid_requests.inc();
            error(status, message)
        };
        let bytes = match axum::body::to_bytes(body, limit + 1).await {
            Ok(bytes) if bytes.len() <= limit => bytes,
            _ => {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over the limit of {limit} bytes"),
                ));
            }
        };
        api::parse_request(&bytes, &self.limits)
            .map_err(|message| refuse(StatusCode::BAD_REQUEST, message))
    }
}

async fn recommend(State(app): State<App>, body: Body) -> Response {
    let request = match app.parse(body).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let deadline = request
        .deadline_ms
        .unwrap_or(app.dispatcher.config.default_deadline_ms);
    Json(app.dispatcher.recommend(&request, deadline).await).into_response()
}

async fn create_job(State(app): State<App>, body: Body) -> Response {
    let request = match app.parse(body).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Some((id, job)) = app.jobs.create() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_JOBS} jobs are held already; fetch finished ones or retry later"),
        );
    };
    let deadline = request
        .deadline_ms
        .unwrap_or(app.dispatcher.config.job_deadline_ms);
    let dispatcher = app.dispatcher.clone();
    let runner = job.clone();
    let task = tokio::spawn(async move {
        runner.send_modify(|j| j.state = JobState::Running);
        let result = dispatcher.recommend(&request, deadline).await;
        runner.send_modify(|j| {
            j.state = JobState::Done;
            j.result = Some(result);
        });
    });
    // A job whose task died still ends: FAILED, with the reason.
    tokio::spawn(async move {
        if let Err(e) = task.await {
            job.send_modify(|j| {
                j.state = JobState::Failed;
                j.error = Some(format!("the job stopped unexpectedly: {e}"));
            });
        }
    });
    let body = Job {
        id,
        state: JobState::Pending,
        result: None,
        error: None,
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
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
    let Some(mut job) = app.jobs.watch(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "there is no job {id}; jobs are kept for {} minutes after they finish",
                JOB_TTL.as_secs() / 60
            ),
        );
    };
    let wait = query.wait_seconds.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("wait_seconds is {wait}; it must be at most {MAX_WAIT_SECONDS}"),
        );
    }
    let finished = |j: &Job| matches!(j.state, JobState::Done | JobState::Failed);
    let _ = tokio::time::timeout(Duration::from_secs(wait), job.wait_for(finished)).await;
    let current = job.borrow().clone();
    Json(current).into_response()
}

async fn healthz() -> &'static str {
    "alive\n"
}

async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    match app.dispatcher.readiness() {
        Ok(text) => (StatusCode::OK, text + "\n"),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text + "\n"),
    }
}

async fn metrics(State(app): State<App>) -> String {
    setlist_core::telemetry::render(&app.dispatcher.metrics.registry)
}

async fn status(State(app): State<App>) -> Response {
    Json(app.dispatcher.status()).into_response()
}

pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    let limits = api::Limits::default();
    let app = App {
        dispatcher,
        jobs: Arc::new(Jobs {
            entries: Mutex::new(HashMap::new()),
        }),
        limits,
    };
    Router::new()
        .route("/v1/recommendations", post(recommend))
        .route("/v1/jobs", post(create_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // The handlers enforce the body limit themselves, with a JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}
