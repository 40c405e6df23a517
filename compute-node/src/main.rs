//! `setlist-node`: one pipeline stage or output shard of the model. It loads
//! only its slice, consumes its stage topic in a consumer group, and serves
//! /healthz, /readyz and /metrics.

mod config;
mod metrics;
mod worker;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use config::Config;
use metrics::Metrics;
use setlist_core::slice::{Part, SliceSet};
use setlist_model::slice::LoadParts;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use worker::{Health, Slice, Worker};

/// Everything the HTTP endpoints read.
struct Node {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Why the slice could not be loaded, if it could not.
    slice_error: Mutex<Option<String>>,
}

impl Node {
    /// Ready means serving: slice loaded, input partitions assigned, broker
    /// reachable, not shutting down. The reason is the body of /readyz.
    fn readiness(&self) -> Result<String, String> {
        if let Some(error) = &*self.slice_error.lock().expect("readiness lock") {
            return Err(format!("not ready: the slice was refused: {error}"));
        }
        let h = &self.health;
        if h.stopping.load(Ordering::Relaxed) {
            return Err("not ready: shutting down".into());
        }
        if !h.broker_reachable.load(Ordering::Relaxed) {
            return Err("not ready: the Kafka brokers are not reachable".into());
        }
        match h.assigned_partitions.load(Ordering::Relaxed) {
            0 => Err(
                "not ready: no input partitions assigned yet (joining the consumer group)".into(),
            ),
            n => Ok(format!("ready: {n} input partitions assigned")),
        }
    }
}

async fn healthz() -> &'static str {
    "alive\n"
}

async fn readyz(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    let readiness = node.readiness();
    node.metrics.ready.set(i64::from(readiness.is_ok()));
    match readiness {
        Ok(text) => (StatusCode::OK, text + "\n"),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text + "\n"),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> String {
    node.metrics.ready.set(i64::from(node.readiness().is_ok()));
    setlist_core::telemetry::render(&node.metrics.registry)
}

fn load_slice(config: &Config) -> Result<(Slice, setlist_core::slice::SliceManifest)> {
    let set = SliceSet::open(&config.slices, config.model_version.as_deref())?;
    let slice = match config.part() {
        Part::Stage(k) => Slice::Stage(set.load_stage(k)?),
        Part::OutputShard(s) => Slice::Shard(set.load_shard(s)?),
    };
    Ok((slice, set.manifest))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let config = Config::load()?;
    setlist_core::telemetry::init_logging(config.log_format);
    setlist_service::shutdown::die_with_parent();
    let part = config.part().to_string();
    tch::set_num_threads(config.threads as i32);
    let node = Arc::new(Node {
        metrics: Arc::new(Metrics::new(&part)),
        health: Arc::new(Health::default()),
        slice_error: Mutex::new(None),
    });
    let worker = match load_slice(&config) {
        Ok((slice, manifest)) => {
            tracing::info!(%part, model_version = %manifest.model_version, slices = %config.slices.display(), "slice loaded and verified");
            let worker = Worker::new(
                slice,
                &manifest,
                config.clone(),
                node.metrics.clone(),
                node.health.clone(),
            )?;
            Some(
                std::thread::Builder::new()
                    .name(format!("{part}-worker"))
                    .spawn(move || worker.run())?,
            )
        }
        Err(error) => {
            // Stay up and say why on /readyz: an orchestrator replaces the
            // node or its slices; restarting in a loop would hide the reason.
            tracing::error!(%part, error = format!("{error:#}"), "refusing the slice; this node will not serve");
            *node.slice_error.lock().expect("readiness lock") = Some(format!("{error:#}"));
            None
        }
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(node.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let health = node.health.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                health.stopping.store(true, Ordering::Relaxed);
            })
            .await
    });
    let outcome = match worker {
        Some(handle) => {
            // The worker ends on a stop signal (after committing) or on a
            // fatal error; either way the process ends with it.
            let result = tokio::task::spawn_blocking(move || handle.join()).await?;
            node.health.stopping.store(true, Ordering::Relaxed);
            match result {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("the worker thread panicked")),
            }
        }
        None => {
            server.await??;
            return Ok(());
        }
    };
    server.abort();
    outcome
}
