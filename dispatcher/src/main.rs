//! `setlist-dispatcher`: serves /v1/recommendations and /v1/jobs over the
//! pipeline; always answers within the deadline.

use anyhow::{Context, Result};
use setlist_dispatcher::config::Config;
use setlist_dispatcher::{http, service::Dispatcher};
use setlist_service::shutdown;
use setlist_service::slices::Wanted;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config::load()?;
    // Kept until the process ends: dropped, it sends the last spans.
    let _telemetry = setlist_service::otel::init(config.log_format, "setlist-dispatcher")?;
    shutdown::die_with_parent();
    let listen = config.listen;
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let fetched = config
        .slices()
        .fetch(
            &config.slice_cache,
            Wanted::Catalogue,
            config.model_version.as_deref(),
        )
        .await?;
    let dispatcher = Dispatcher::start(config, fetched.set)?;
    tracing::info!(model_version = %dispatcher.model_version, stages = dispatcher.stages, shards = dispatcher.shards, songs = dispatcher.catalogue.len(), "dispatcher started");
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /v1/recommendations");
    let stopping = dispatcher.clone();
    axum::serve(listener, http::router(dispatcher))
        .with_graceful_shutdown(async move {
            shutdown::signal().await;
            tracing::info!(limit = ?shutdown_timeout, "stop signal: answering the requests in flight, then exiting");
            stopping.health.stopping.store(true, Ordering::Relaxed);
            // Requests in flight end by their deadlines, but a broker that is
            // gone can hold up the Kafka clients' teardown for good.
            shutdown::exit_after(shutdown_timeout, 1);
        })
        .await?;
    Ok(())
}
