//! `setlist-dispatcher`: serves /v1/recommendations and /v1/jobs over the
//! pipeline; always answers within the deadline.

use anyhow::{Context, Result};
use setlist_dispatcher::config::Config;
use setlist_dispatcher::{http, service::Dispatcher};
use std::sync::atomic::Ordering;

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config::load()?;
    setlist_core::telemetry::init_logging(config.log_format);
    setlist_service::shutdown::die_with_parent();
    let listen = config.listen;
    let dispatcher = Dispatcher::start(config)?;
    tracing::info!(model_version = %dispatcher.model_version, stages = dispatcher.stages, shards = dispatcher.shards, songs = dispatcher.catalogue.len(), "dispatcher started");
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /v1/recommendations");
    let stopping = dispatcher.clone();
    axum::serve(listener, http::router(dispatcher))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.health.stopping.store(true, Ordering::Relaxed);
        })
        .await?;
    Ok(())
}
