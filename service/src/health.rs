//! `/healthz`, `/readyz` and `/metrics`, the same in every process.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::Registry;
use std::sync::Arc;

/// What `/readyz` answers: `Ok(why ready)` is a 200, `Err(why not)` a 503;
/// either way the sentence is the body.
pub type Readiness = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The three endpoints: alive as long as the process serves HTTP, ready as
/// `readiness` says, and the registry's metrics in the text format.
pub fn routes(readiness: Readiness, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "alive\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness() {
                        Ok(text) => (StatusCode::OK, text + "\n"),
                        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text + "\n"),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { setlist_core::telemetry::render(&registry) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    async fn get_text(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_the_check_and_metrics_render() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("things_total", "Things.").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let router = routes(
            Arc::new(move || {
                if flag.load(Ordering::Relaxed) {
                    Ok("ready: yes".into())
                } else {
                    Err("not ready: waiting".into())
                }
            }),
            registry,
        );
        assert_eq!(
            get_text(&router, "/healthz").await,
            (StatusCode::OK, "alive\n".into())
        );
        assert_eq!(
            get_text(&router, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: waiting\n".into()
            )
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get_text(&router, "/readyz").await.0, StatusCode::OK);
        let (_, metrics) = get_text(&router, "/metrics").await;
        assert!(metrics.contains("things_total 1"), "{metrics}");
    }
}
