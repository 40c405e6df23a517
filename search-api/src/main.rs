//! `setlist-search`: serves the listener's page and API over one model's
//! catalogue, calling the dispatcher for recommendations.

use anyhow::{Context, Result};
use setlist_search::config::Config;
use setlist_search::http;
use setlist_search::service::{Search, Served};
use setlist_service::shutdown;
use setlist_service::slices::Wanted;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config::load()?;
    // Kept until the process ends: dropped, it sends the last spans.
    let _telemetry = setlist_service::otel::init(config.log_format, "setlist-search")?;
    shutdown::die_with_parent();
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let slices = config
        .slices()
        .fetch(
            &config.slice_cache,
            Wanted::Catalogue,
            config.model_version.as_deref(),
        )
        .await
        .with_context(|| format!("cannot open the slices at {}", config.slices()))?
        .set;
    let served = Served::from_slices(slices, &config)?;
    let search = Arc::new(tokio::task::block_in_place(|| {
        Search::start(&config, served)
    })?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, model_version = %search.model_version, songs = search.catalogue.len(), "serving the listener's page and /v1/songs/search");
    let stopping = search.clone();
    axum::serve(listener, http::router(search))
        .with_graceful_shutdown(async move {
            shutdown::signal().await;
            tracing::info!(limit = ?shutdown_timeout, "stop signal: answering the requests in flight, then exiting");
            stopping.stopping.store(true, Ordering::Relaxed);
            shutdown::exit_after(shutdown_timeout, 1);
        })
        .await?;
    Ok(())
}
