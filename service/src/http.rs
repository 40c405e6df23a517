//! What every Setlist HTTP API puts around its routes: JSON errors, a body
//! read within a limit, and the request limits (a per-request timeout, a
//! concurrency limit and load shedding, as `tower` layers that answer a JSON
//! 503 with `Retry-After`).

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Json, Router};
use prometheus::IntCounterVec;
use setlist_core::api::ErrorBody;
use std::time::Duration;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

/// What a client refused for load should wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

/// A 503 that says when to come back, counted in `shed` by `reason`.
pub fn unavailable(shed: &IntCounterVec, reason: &str, message: String) -> Response {
    shed.with_label_values(&[reason]).inc();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
        Json(ErrorBody { error: message }),
    )
        .into_response()
}

/// How much of a body over the limit is read and thrown away before the 413
/// goes out, and for how long: a client still sending when the connection
/// closes sees a broken pipe instead of the answer that says why.
const DISCARD_BYTES: usize = 16 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// The body, if it is at most `limit` bytes. A larger one is not kept: the
/// rest of it is read and dropped (within the bounds above) so the client
/// can read the refusal.
pub async fn read_within(body: Body, limit: usize) -> Option<Bytes> {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.ok()?;
        if kept.len() + chunk.len() > limit {
            let mut seen = kept.len() + chunk.len();
            drop(kept);
            let _ = tokio::time::timeout(DISCARD_TIME, async {
                while let Some(Ok(chunk)) = chunks.next().await {
                    seen += chunk.len();
                    if seen > DISCARD_BYTES {
                        break;
                    }
                }
            })
            .await;
            return None;
        }
        kept.extend_from_slice(&chunk);
    }
    Some(kept.into())
}

/// Puts `router` behind the request limits: each request gets at most
/// `timeout`, at most `max_concurrent` are served at once, and the ones
/// beyond are refused at once (not queued) with a JSON 503 and
/// `Retry-After`, before they cost memory. `service` names the server in
/// the refusal ("the dispatcher"); `shed` counts refusals by reason.
pub fn guarded(
    router: Router,
    service: &'static str,
    max_concurrent: usize,
    timeout: Duration,
    shed: IntCounterVec,
) -> Router {
    let refuse = move |failure: BoxError| {
        let shed = shed.clone();
        async move {
            if failure.is::<tower::load_shed::error::Overloaded>() {
                unavailable(
                    &shed,
                    "overloaded",
                    format!(
                        "{service} is serving {max_concurrent} requests already, the most it takes at once; retry in a second"
                    ),
                )
            } else if failure.is::<tower::timeout::error::Elapsed>() {
                unavailable(
                    &shed,
                    "timeout",
                    format!(
                        "the request took longer than {} s and was stopped; retry it",
                        timeout.as_secs()
                    ),
                )
            } else {
                tracing::error!(error = %failure, "request failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the request failed: {failure}"),
                )
            }
        }
    };
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(refuse))
            .load_shed()
            // One limit for every route: a layer per route would multiply it.
            .layer(GlobalConcurrencyLimitLayer::new(max_concurrent))
            .timeout(timeout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A body over the limit gets a 413 that the client can read, so the
    /// body is read to its end (within bounds) but not kept.
    #[tokio::test]
    async fn an_oversized_body_is_read_to_its_end_but_not_kept() {
        let (sender, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = Body::from_stream(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
        let feeder = tokio::spawn(async move {
            for _ in 0..8 {
                sender
                    .send(Ok(Bytes::from(vec![b'x'; 1000])))
                    .await
                    .unwrap();
            }
        });
        assert_eq!(read_within(body, 2500).await, None);
        // Every chunk was taken, not just those up to the limit (the feeder
        // would wait on a full channel otherwise).
        tokio::time::timeout(Duration::from_secs(5), feeder)
            .await
            .expect("the whole body was read")
            .unwrap();
        let small = Body::from("{\"tracks\": []}");
        assert_eq!(
            read_within(small, 2500).await.as_deref(),
            Some(&b"{\"tracks\": []}"[..])
        );
    }
}
