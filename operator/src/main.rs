//! `setlist-operator`: `crd` prints the CustomResourceDefinition; `run`
//! reconciles RecommenderClusters while this replica holds the leader Lease;
//! `bench` measures the operator on a real API server.

use anyhow::{Context as _, Result};
use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use kube::runtime::events::{Recorder, Reporter};
use setlist_core::telemetry::LogFormat;
use setlist_operator::leader::{Elector, LeaseTiming};
use setlist_operator::metrics::Metrics;
use setlist_operator::reconcile::{self, Context};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "setlist-operator",
    version,
    about = "Reconciles RecommenderCluster resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the RecommenderCluster CustomResourceDefinition (YAML).
    Crd,
    /// Reconcile RecommenderClusters (with the in-cluster service account,
    /// or KUBECONFIG's context elsewhere).
    Run(RunArgs),
    /// Measure the operator on KUBECONFIG's API server: installs the CRD,
    /// reconciles in this process in a fresh namespace (deleted at the
    /// end), and times creating clusters and changing their specs until
    /// every object is applied. No pod runs: give it a test control plane.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// RecommenderClusters created at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    clusters: u32,
    /// Pipeline stages of each cluster (2 replicas each).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=17))]
    stages: u32,
    /// Output shards of each cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Spec changes to one cluster, each timed alone (odd rounds change
    /// the stages' replicas, even ones the model).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Print one JSON object with every number instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "SETLIST_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SETLIST_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The namespace of the leader Lease (on Kubernetes: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, env = "SETLIST_LEASE_NAME", default_value = "setlist-operator")]
    lease_name: String,
    /// This replica's name in the Lease and in Events (default: the pod's
    /// name, else host and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader's Lease lasts unrenewed before another replica
    /// takes over.
    #[arg(long, env = "SETLIST_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", setlist_operator::crd_yaml()),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(args))?,
        Command::Bench(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(bench(args))?,
    }
    Ok(())
}

async fn bench(args: BenchArgs) -> Result<()> {
    // The operator's own log only when asked for: its info lines would
    // bury the report.
    if std::env::var_os("RUST_LOG").is_some() {
        setlist_core::telemetry::init_logging(LogFormat::Text);
    }
    let report = setlist_operator::bench::run(setlist_operator::bench::Options {
        clusters: args.clusters,
        stages: args.stages,
        shards: args.shards,
        rounds: args.rounds,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    setlist_core::telemetry::init_logging(args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API: run inside a cluster, or set KUBECONFIG")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let registry = metrics.registry.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "alive\n" }))
        // Ready while waiting for the Lease too: a standby replica is
        // healthy, it just does not reconcile.
        .route("/readyz", get(|| async { "ready\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { setlist_core::telemetry::render(&registry) }
            }),
        );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    tracing::info!(listen = %args.listen, %identity, "setlist-operator started");

    let lease = args.lease_seconds.max(3);
    let timing = LeaseTiming {
        lease_duration: Duration::from_secs(lease),
        renew_deadline: Duration::from_secs(lease * 2 / 3),
        retry_period: Duration::from_secs((lease / 7).max(1)),
    };
    let elector = Elector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        timing,
    );
    let mut leadership = tokio::select! {
        leadership = elector.acquire() => leadership.context("cannot take part in leader election")?,
        _ = setlist_service::shutdown::signal() => return Ok(()),
    };
    metrics.leader.set(1);
    tracing::info!(%identity, lease = %args.lease_name, "leading: reconciling");

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "setlist-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    let context = Arc::new(Context::new(client, recorder, metrics.clone()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(async move {
        reconcile::run(context, args.watch_namespace.as_deref(), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
    });
    let lost = tokio::select! {
        _ = setlist_service::shutdown::signal() => None,
        lost = leadership.lost() => Some(lost),
    };
    let _ = stop.send(true);
    // Passes in flight finish; none may hold shutdown for long.
    let _ = tokio::time::timeout(Duration::from_secs(20), controller).await;
    metrics.leader.set(0);
    match lost {
        None => {
            leadership.release().await;
            tracing::info!("stopped; the lease is released");
            Ok(())
        }
        Some(lost) => anyhow::bail!(
            "leadership lost ({lost}): stopping so that this replica starts again as a candidate"
        ),
    }
}
