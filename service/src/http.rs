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
use setlist_core::trace::{RequestId, TRACEPARENT, TraceParent};
use std::time::Duration;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tracing::Instrument;

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
    for reason in ["overloaded", "timeout"] {
        shed.with_label_values(&[reason]);
    }
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

/// The header that tells a caller its request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// The trace a request belongs to: the caller's `traceparent`, else a
/// caller's `x-request-id` in the same 32-hex form, else a new trace.
pub fn trace_of(headers: &axum::http::HeaderMap) -> TraceParent {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(parent) = header(TRACEPARENT).and_then(TraceParent::parse) {
        return parent;
    }
    match header(REQUEST_ID).and_then(RequestId::parse) {
        Some(id) => TraceParent {
            trace_id: id.0,
            ..TraceParent::new_root()
        },
        None => TraceParent::new_root(),
    }
}

/// Middleware: gives every request its [`TraceParent`] (as an extension
/// handlers read), runs it inside a `request` span whose `request_id` every
/// log line about it then carries, and returns the id in `x-request-id`.
/// When spans are exported ([`crate::otel`]), the span is the child of the
/// caller's span named in `traceparent`, else the root of the request's
/// trace, and is findable by [`crate::otel::request_span`] while it lasts.
pub async fn traced(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let trace = trace_of(request.headers());
    let id = trace.request_id().to_string();
    let from_caller = crate::otel::enabled()
        && request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
            .is_some();
    request.extensions_mut().insert(trace);
    let span = tracing::info_span!("request", request_id = %id);
    let _serving = crate::otel::enabled().then(|| {
        if from_caller {
            crate::otel::set_parent(&span, trace);
        } else {
            crate::otel::start_trace(&span, trace.trace_id);
        }
        crate::otel::serving(&span)
    });
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
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
