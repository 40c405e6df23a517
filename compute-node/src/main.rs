//! `setlist-node`: one pipeline stage or output shard of the model. It loads
//! only its slice, consumes its stage topic in a consumer group, and serves
//! /healthz, /readyz and /metrics.

mod accept;
mod batch;
mod config;
mod delivery;
mod health;
mod kafka;
mod ledger;
mod metadata;
mod metrics;
mod throttle;
mod worker;

use anyhow::{Context, Result};
use config::Config;
use health::Health;
use metrics::Metrics;
use setlist_core::plan::{FrameBatch, Link};
use setlist_core::slice::{Part, SliceManifest};
use setlist_model::slice::LoadParts;
use setlist_service::shutdown;
use setlist_service::slices::Wanted;
use std::sync::Arc;
use worker::{Slice, Worker};

/// Opens the slice set (from a URI: fetches the manifest and this part
/// alone into the slice cache), checks that every request this part can
/// send fits `max_message_bytes` (before loading any tensor: a node that
/// could not send its output must not start consuming), then loads and
/// verifies the slice.
async fn load_slice(config: &Config) -> Result<(Slice, SliceManifest)> {
    let part = config.part();
    let fetched = config
        .slices()
        .fetch(
            &config.slice_cache,
            Wanted::Part(part),
            config.model_version.as_deref(),
        )
        .await?;
    let set = fetched.set;
    let manifest = &set.manifest;
    let batch = FrameBatch {
        rows: config.max_batch_rows,
        half_precision: config.half_precision,
    };
    let link = Link::output_of(part, manifest.plan.stages.len() as u32);
    let frames = manifest.plan.link_frames(&manifest.config, link, batch);
    frames.check(config.max_message_bytes, "max_message_bytes")?;
    tracing::info!(
        %link,
        one_request_bytes = frames.one_request_bytes(),
        batch_rows = config.max_batch_rows,
        batch_bytes = frames.batch_bytes(),
        messages_per_batch = frames.messages(config.max_message_bytes),
        max_message_bytes = config.max_message_bytes,
        "the largest output fits"
    );
    let slice = match part {
        Part::Stage(k) => Slice::Stage(set.load_stage(k)?),
        Part::OutputShard(s) => Slice::Shard(set.load_shard(s)?),
    };
    Ok((slice, set.manifest))
}

/// Stop signals this soon after the first are the same request repeated.
const REPEATED_SIGNAL: std::time::Duration = std::time::Duration::from_millis(500);

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let config = Config::load()?;
    // Kept until the process ends: dropped, it sends the last spans.
    let _telemetry = setlist_service::otel::init(config.log_format, "setlist-node")?;
    shutdown::die_with_parent();
    let part = config.part().to_string();
    let health = Arc::new(Health::default());
    let readiness: setlist_service::health::Readiness = {
        let health = health.clone();
        Arc::new(move || health.readiness())
    };
    let metrics = Arc::new(Metrics::new(&part, readiness.clone()));
    let worker = match load_slice(&config).await {
        Ok((slice, manifest)) => {
            tracing::info!(%part, model_version = %manifest.model_version, slices = %config.slices(), "slice loaded and verified");
            metrics
                .model_info
                .with_label_values(&[manifest.model_version.as_str()])
                .set(1);
            let worker = Worker::new(
                slice,
                &manifest,
                config.clone(),
                metrics.clone(),
                health.clone(),
            )?;
            let threads = config.threads as i32;
            Some(
                std::thread::Builder::new()
                    .name(format!("{part}-worker"))
                    .spawn(move || {
                        // OpenMP's thread count belongs to the thread that
                        // sets it: set it where the forward passes run, or
                        // they get one OpenMP thread per core, which spin
                        // between passes against every other process.
                        tch::set_num_threads(threads);
                        worker.run()
                    })?,
            )
        }
        Err(error) => {
            // Stay up and say why on /readyz: an orchestrator replaces the
            // node or its slices; restarting in a loop would hide the reason.
            tracing::error!(%part, error = format!("{error:#}"), "refusing the slice; this node will not serve");
            health.refuse(format!("{error:#}"));
            None
        }
    };
    let app = setlist_service::health::routes(readiness, metrics.registry.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let stopping = health.clone();
    let shutdown_timeout = config.shutdown_timeout();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown::signal().await;
                let first = std::time::Instant::now();
                tracing::info!(limit = ?shutdown_timeout, "stop signal: shutting down (a second one exits at once)");
                stopping.begin_stopping(shutdown_timeout);
                tokio::spawn(async move {
                    loop {
                        shutdown::signal().await;
                        // When `setlist up` dies, the kernel sends the
                        // parent-death signal again as each of its threads
                        // exits, milliseconds apart: not a second request.
                        if first.elapsed() >= REPEATED_SIGNAL {
                            break;
                        }
                    }
                    tracing::warn!("a second stop signal: exiting without finishing the shutdown");
                    std::process::exit(1);
                });
            })
            .await
    });
    let outcome = match worker {
        Some(handle) => {
            // The worker ends on a stop signal (after its bounded shutdown)
            // or on a broker-level failure; either way the process ends with it.
            let result = tokio::task::spawn_blocking(move || handle.join()).await?;
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
