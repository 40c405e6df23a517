//! `setlist train` and `setlist evaluate`.

use anyhow::{Context, Result};
use clap::Args;
use setlist_core::dataset::Dataset;
use setlist_core::progress::Progress;
use setlist_model::artifact::Model;
use setlist_model::eval;
use setlist_model::train::{self, TrainSpec};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TrainArgs {
    /// Data set directory (from `setlist data import` or `setlist data generate`).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the model directory; it must not exist yet.
    #[arg(long)]
    out: PathBuf,
    /// YAML file with `model`, `training`, `split` and `min_playlists`
    /// (see docs/model-quality.md); the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    embedding_dim: Option<u32>,
    #[arg(long)]
    hidden_dim: Option<u32>,
    #[arg(long)]
    lstm_layers: Option<u32>,
    /// The model reads at most this many of a playlist's last tracks.
    #[arg(long)]
    max_history: Option<u32>,
    /// Skip connections around each LSTM layer whose input is as wide as its
    /// output (`true` by default; `--residual false` for a plain stack).
    #[arg(long)]
    residual: Option<bool>,
    #[arg(long)]
    epochs: Option<u32>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    dropout: Option<f64>,
    /// Sampled softmax with this many shared negatives per batch.
    #[arg(long, conflicts_with = "full_softmax")]
    negatives: Option<u32>,
    /// Always compute the full softmax, whatever the catalogue size.
    #[arg(long)]
    full_softmax: bool,
    /// Train separate embedding and output matrices (tied is the default).
    #[arg(long)]
    untied: bool,
    /// Keep the learning rate constant instead of the cosine decay.
    #[arg(long)]
    constant_lr: bool,
    /// Seed for initialisation and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after the epoch that crosses this many minutes.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Fraction of playlists held out for `setlist evaluate` (0 trains on all).
    #[arg(long)]
    holdout: Option<f64>,
    #[arg(long)]
    split_seed: Option<u64>,
    /// Leave out songs found in fewer training playlists than this.
    #[arg(long)]
    min_playlists: Option<u32>,
    /// libtorch threads (default: every core this process may use). The
    /// thread count changes the weights slightly, so keep it to reproduce a
    /// model exactly.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
}

/// Maximum size of a training config file: it is a handful of numbers.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

fn read_spec(path: &Path) -> Result<TrainSpec> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_CONFIG_BYTES,
        "{} is {size} bytes; a training config may be at most {MAX_CONFIG_BYTES} bytes",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid training config", path.display()))
}

impl TrainArgs {
    fn spec(&self) -> Result<TrainSpec> {
        let mut spec = match &self.config {
            Some(path) => read_spec(path)?,
            None => TrainSpec::default(),
        };
        let set =
            |target: &mut u32, value: Option<u32>| value.into_iter().for_each(|v| *target = v);
        set(&mut spec.model.embedding_dim, self.embedding_dim);
        set(&mut spec.model.hidden_dim, self.hidden_dim);
        set(&mut spec.model.lstm_layers, self.lstm_layers);
        set(&mut spec.model.max_history, self.max_history);
        spec.model.residual = self.residual.unwrap_or(spec.model.residual);
        set(&mut spec.training.epochs, self.epochs);
        set(&mut spec.min_playlists, self.min_playlists);
        let t = &mut spec.training;
        t.batch_size = self.batch_size.unwrap_or(t.batch_size);
        t.learning_rate = self.learning_rate.unwrap_or(t.learning_rate);
        t.dropout = self.dropout.unwrap_or(t.dropout);
        t.seed = self.seed.unwrap_or(t.seed);
        t.max_minutes = self.max_minutes.or(t.max_minutes);
        if self.constant_lr {
            t.cosine_decay = false;
        }
        if self.untied {
            t.tie_embeddings = false;
        }
        if self.full_softmax {
            t.negatives = None;
            t.full_softmax_limit = u32::MAX;
        } else if self.negatives.is_some() {
            t.negatives = self.negatives;
        }
        spec.split.holdout = self.holdout.unwrap_or(spec.split.holdout);
        spec.split.seed = self.split_seed.unwrap_or(spec.split.seed);
        Ok(spec)
    }
}

pub fn run_train(args: TrainArgs, progress: &dyn Progress) -> Result<()> {
    let spec = args.spec()?;
    anyhow::ensure!(
        !args.out.exists(),
        "{} already exists; choose another --out or remove it first",
        args.out.display()
    );
    let dataset = Dataset::load(&args.data)
        .with_context(|| format!("cannot load the data set {}", args.data.display()))?;
    let threads = args.threads.map_or_else(every_core, |t| t as usize);
    tch::set_num_threads(threads as i32);
    eprintln!(
        "training on {threads} libtorch thread{} (OpenMP threads wait: {})",
        if threads == 1 { "" } else { "s" },
        std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "libgomp's default".into())
    );
    let trained = train::train_model(
        &dataset,
        &spec,
        &Forecast::new(progress, spec.training.epochs),
    )?;
    eprintln!(
        "model: {} songs, embedding {}, hidden {}, {} LSTM layers, {:.1} MiB; {} softmax",
        trained.config.catalogue_size,
        trained.config.embedding_dim,
        trained.config.hidden_dim,
        trained.config.lstm_layers,
        trained.config.bytes() as f64 / (1 << 20) as f64,
        trained.record.report.softmax,
    );
    let manifest = Model::save(
        &args.out,
        &trained.config,
        &trained.weights,
        &trained.catalogue,
        &trained.record,
    )?;
    println!(
        "wrote model {} to {} ({:.0} s of training)",
        manifest.model_version,
        args.out.display(),
        trained.record.report.seconds
    );
    Ok(())
}

/// Every core this process may use (its CPU affinity and cgroup quota
/// included), as libtorch would choose by default were it to know the quota.
pub fn every_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How long the whole training takes at the speed of its first steps, on
/// this machine as busy as it is now: `elapsed` for `done` of `total` steps.
fn forecast(elapsed: Duration, done: u64, total: u64) -> Duration {
    elapsed.mul_f64(total as f64 / done.max(1) as f64)
}

/// Passes training progress on and, once the first steps are timed, says how
/// long the whole training will take at that speed: a line even where no
/// progress bar shows (stderr piped into `tee`), and true on this machine,
/// where a fixed estimate could only be true on ours.
pub struct Forecast<'a> {
    inner: &'a dyn Progress,
    epochs: u32,
    state: Mutex<ForecastState>,
}

#[derive(Default)]
struct ForecastState {
    /// When the first epoch started, and its steps.
    started: Option<(Instant, u64)>,
    done: u64,
    said: bool,
}

impl<'a> Forecast<'a> {
    /// Timing the first steps needs this long, so one slow first step does
    /// not make the forecast.
    const MEASURE: Duration = Duration::from_secs(3);

    pub fn new(inner: &'a dyn Progress, epochs: u32) -> Forecast<'a> {
        Forecast {
            inner,
            epochs,
            state: Mutex::new(ForecastState::default()),
        }
    }
}

impl Progress for Forecast<'_> {
    fn start(&self, what: &str, total: u64) {
        let mut state = self.state.lock().expect("forecast lock");
        state.started.get_or_insert((Instant::now(), total));
        self.inner.start(what, total);
    }

    fn advance(&self, n: u64) {
        self.inner.advance(n);
        let mut state = self.state.lock().expect("forecast lock");
        state.done += n;
        let Some((started, steps)) = state.started else {
            return;
        };
        let elapsed = started.elapsed();
        if !state.said && (elapsed >= Self::MEASURE || state.done >= steps) {
            state.said = true;
            let total = forecast(elapsed, state.done, steps * u64::from(self.epochs));
            self.inner.message(&format!(
                "at this machine's current speed, training takes about {:.0} s ({} epochs)",
                total.as_secs_f64(),
                self.epochs
            ));
        }
    }

    fn message(&self, line: &str) {
        self.inner.message(line);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// Model directory (from `setlist train`, with a holdout).
    #[arg(long)]
    model: PathBuf,
    /// The data set the model was trained on.
    #[arg(long)]
    data: PathBuf,
    /// Length of the recommendation list scored.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    k: u64,
    /// Neighbours of session-kNN.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    neighbours: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run_evaluate(args: EvaluateArgs, progress: &dyn Progress) -> Result<()> {
    let model = Model::load(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    let dataset = Dataset::load(&args.data)
        .with_context(|| format!("cannot load the data set {}", args.data.display()))?;
    let k = args.k as usize;
    let results = eval::evaluate_model(&model, &dataset, k, args.neighbours as usize, progress)?;
    println!(
        "model {} on {} held-out predictions (split seed {}, holdout {})",
        model.manifest.model_version,
        results[0].cases,
        model.training.split.seed,
        model.training.split.holdout
    );
    println!("| ranker | HR@{k} | MRR@{k} | seconds |");
    println!("|---|---:|---:|---:|");
    for m in &results {
        println!(
            "| {} | {:.4} | {:.4} | {:.1} |",
            m.ranker, m.hit_rate, m.mrr, m.seconds
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forecast_scales_the_first_steps_to_all_of_them() {
        let first = Duration::from_secs(3);
        assert_eq!(forecast(first, 30, 600), Duration::from_secs(60));
        assert_eq!(forecast(first, 600, 600), first);
        // Nothing done yet is treated as one step, not a division by zero.
        assert_eq!(forecast(first, 0, 10), Duration::from_secs(30));
    }
}
