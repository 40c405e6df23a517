//! Training the next-song model: the vocabulary, the train/test split, and
//! the optimisation loop.

use crate::artifact::TrainingRecord;
use crate::{Weights, ops};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use setlist_core::catalogue::{Catalogue, Song};
use setlist_core::dataset::{Dataset, Playlist};
use setlist_core::progress::Progress;
use setlist_core::shape::{ModelConfig, OUTPUT_BIAS, OUTPUT_WEIGHT};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Instant;
use tch::{Kind, Reduction, Tensor, nn, nn::OptimizerConfig};

/// Which playlists are held out for evaluation. Decided per playlist from a
/// hash of the seed and the playlist id, so the split is the same whatever
/// the order or the machine, and adding playlists never moves old ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub seed: u64,
    /// Fraction of playlists held out, in [0, 0.9].
    pub holdout: f64,
}

impl Split {
    pub fn is_test(&self, playlist_id: &str) -> bool {
        if self.holdout <= 0.0 {
            return false;
        }
        let mut hash = Sha256::new();
        hash.update(self.seed.to_le_bytes());
        hash.update(playlist_id.as_bytes());
        let digest = hash.finalize();
        let draw = u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"));
        (draw as f64 / u64::MAX as f64) < self.holdout
    }

    /// The playlists of `dataset` on each side of the split: (train, test).
    pub fn apply<'a>(&self, dataset: &'a Dataset) -> (Vec<&'a Playlist>, Vec<&'a Playlist>) {
        dataset.playlists.iter().partition(|p| !self.is_test(&p.id))
    }
}

/// The songs the model knows: training tracks that appear in at least
/// `min_playlists` training playlists (rarer ones cannot be learnt, and the
/// evaluation protocol drops them too). Model index i is dataset track
/// `tracks[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub tracks: Vec<u32>,
    /// In how many training playlists each model song appears.
    pub playlist_counts: Vec<u32>,
    index: HashMap<u32, u32>,
}

impl Vocabulary {
    pub fn build(catalogue_len: usize, playlists: &[&Playlist], min_playlists: u32) -> Vocabulary {
        let mut counts = vec![0u32; catalogue_len];
        let mut seen_in = vec![u32::MAX; catalogue_len];
        for (p, playlist) in playlists.iter().enumerate() {
            for &t in &playlist.tracks {
                // Count each playlist once per track, however often it repeats the track.
                if seen_in[t as usize] != p as u32 {
                    seen_in[t as usize] = p as u32;
                    counts[t as usize] += 1;
                }
            }
        }
        let tracks: Vec<u32> = (0..catalogue_len as u32)
            .filter(|&t| counts[t as usize] >= min_playlists.max(1))
            .collect();
        let playlist_counts = tracks.iter().map(|&t| counts[t as usize]).collect();
        let index = tracks
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i as u32))
            .collect();
        Vocabulary {
            tracks,
            playlist_counts,
            index,
        }
    }

    /// The model's songs: the vocabulary's tracks with their metadata.
    pub fn catalogue(&self, dataset: &Dataset) -> Catalogue {
        let songs = self
            .tracks
            .iter()
            .zip(&self.playlist_counts)
            .map(|(&t, &playlists)| {
                let track = &dataset.tracks[t as usize];
                Song {
                    id: track.id.clone(),
                    title: track.title.clone(),
                    artist: track.artist.clone(),
                    album: track.album.clone(),
                    playlists,
                }
            })
            .collect();
        Catalogue::new(songs).expect("dataset track ids are unique")
    }

    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// The model index of a dataset track, if the model knows it.
    pub fn model_index(&self, dataset_track: u32) -> Option<u32> {
        self.index.get(&dataset_track).copied()
    }

    /// A playlist in model indices, unknown tracks left out.
    pub fn encode(&self, playlist: &Playlist) -> Vec<u32> {
        playlist
            .tracks
            .iter()
            .filter_map(|&t| self.model_index(t))
            .collect()
    }
}

/// How to train. The defaults are the ones `docs/model-quality.md` measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: u32,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub dropout: f64,
    /// Sampled softmax with this many shared negatives per batch; `None`
    /// computes the full softmax over the catalogue.
    pub negatives: Option<u32>,
    /// Catalogues larger than this use sampled softmax when `negatives` is unset.
    pub full_softmax_limit: u32,
    /// Train one matrix as both the embedding and the output projection
    /// (needs embedding_dim == hidden_dim). A song then has one vector for
    /// "what came before" and "what comes next", which sparse playlist data
    /// learns far better; the saved model still holds both tensors, so
    /// slicing and serving do not change.
    pub tie_embeddings: bool,
    /// Lower the learning rate along a cosine from `learning_rate` to 5 % of
    /// it over the planned steps: large steps early, fine ones at the end,
    /// which sharpens the ranking at the top (MRR).
    pub cosine_decay: bool,
    pub grad_clip: f64,
    pub seed: u64,
    /// Stops after the epoch that crosses this many minutes.
    pub max_minutes: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 12,
            batch_size: 64,
            learning_rate: 5e-3,
            dropout: 0.3,
            negatives: None,
            full_softmax_limit: 20_000,
            tie_embeddings: true,
            cosine_decay: true,
            grad_clip: 5.0,
            seed: 7,
            max_minutes: None,
        }
    }
}

impl TrainConfig {
    /// Shared negatives per batch, or `None` for the full softmax.
    pub fn negatives_for(&self, catalogue_size: u32) -> Option<u32> {
        self.negatives
            .or_else(|| (catalogue_size > self.full_softmax_limit).then_some(4096))
    }
}

/// The layer sizes of a model; the catalogue size comes from the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelShape {
    pub embedding_dim: u32,
    pub hidden_dim: u32,
    pub lstm_layers: u32,
    pub max_history: u32,
    /// See [`ModelConfig::residual`].
    pub residual: bool,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            embedding_dim: 256,
            hidden_dim: 256,
            lstm_layers: 2,
            max_history: 50,
            residual: true,
        }
    }
}

impl ModelShape {
    pub fn config(&self, catalogue_size: u32) -> ModelConfig {
        ModelConfig {
            catalogue_size,
            embedding_dim: self.embedding_dim,
            hidden_dim: self.hidden_dim,
            lstm_layers: self.lstm_layers,
            max_history: self.max_history,
            residual: self.residual,
        }
    }
}

/// Everything `setlist train` needs to know; the YAML form of `--config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    pub model: ModelShape,
    pub training: TrainConfig,
    pub split: Split,
    /// Songs in fewer training playlists than this are left out of the model.
    pub min_playlists: u32,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            model: ModelShape::default(),
            training: TrainConfig::default(),
            split: Split {
                seed: 7,
                holdout: 0.1,
            },
            min_playlists: 2,
        }
    }
}

/// A freshly trained model, ready to be saved.
pub struct Trained {
    pub config: ModelConfig,
    pub weights: Weights,
    pub catalogue: Catalogue,
    pub record: TrainingRecord,
}

/// The whole of `setlist train`: split, vocabulary, training.
pub fn train_model(
    dataset: &Dataset,
    spec: &TrainSpec,
    progress: &dyn Progress,
) -> Result<Trained, TrainError> {
    if !(0.0..=0.9).contains(&spec.split.holdout) {
        return Err(TrainError::BadConfig {
            field: "holdout",
            value: spec.split.holdout.to_string(),
            expected: "it must be between 0 and 0.9",
        });
    }
    let (train_playlists, _) = spec.split.apply(dataset);
    let vocabulary = Vocabulary::build(dataset.tracks.len(), &train_playlists, spec.min_playlists);
    if vocabulary.is_empty() {
        return Err(TrainError::NoSequences);
    }
    let config = spec.model.config(vocabulary.len() as u32);
    let sequences: Vec<Vec<u32>> = train_playlists
        .iter()
        .map(|p| vocabulary.encode(p))
        .collect();
    let (weights, report) = train(
        &config,
        &spec.training,
        &sequences,
        &vocabulary.playlist_counts,
        progress,
    )?;
    let record = TrainingRecord {
        dataset_source: dataset.source.clone(),
        dataset_fingerprint: dataset.fingerprint(),
        split: spec.split,
        min_playlists: spec.min_playlists,
        config: spec.training.clone(),
        report,
    };
    Ok(Trained {
        config,
        weights,
        catalogue: vocabulary.catalogue(dataset),
        record,
    })
}

/// What happened during training, stored with the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochReport>,
    pub seconds: f64,
    pub sequences: usize,
    pub targets: u64,
    pub softmax: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: u32,
    pub loss: f64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("there is nothing to train on: no playlist has two or more known tracks")]
    NoSequences,
    #[error("training config field \"{field}\" is {value}; {expected}")]
    BadConfig {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Model(#[from] setlist_core::shape::ConfigError),
    #[error("libtorch failed during training: {0}")]
    Torch(#[from] tch::TchError),
}

/// Cuts playlists (in model indices) into training windows of at most
/// `max_history + 1` tracks, overlapping by one track so that every
/// transition is a target exactly once.
pub fn training_windows(playlists: &[Vec<u32>], max_history: usize) -> Vec<Vec<u32>> {
    let span = max_history + 1;
    let mut windows = Vec::new();
    for playlist in playlists.iter().filter(|p| p.len() >= 2) {
        let mut start = 0;
        while start + 1 < playlist.len() {
            let end = (start + span).min(playlist.len());
            windows.push(playlist[start..end].to_vec());
            start = end - 1;
        }
    }
    windows
}

/// Trains a model from scratch. `popularity` (per model song) seeds the
/// output bias, so training starts from the popularity ranking instead of
/// noise, and shapes the sampled-softmax negatives.
pub fn train(
    config: &ModelConfig,
    tc: &TrainConfig,
    playlists: &[Vec<u32>],
    popularity: &[u32],
    progress: &dyn Progress,
) -> Result<(Weights, TrainReport), TrainError> {
    config.validate()?;
    validate(tc)?;
    let windows = training_windows(playlists, config.max_history as usize);
    if windows.is_empty() {
        return Err(TrainError::NoSequences);
    }
    tch::manual_seed(tc.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(tc.seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    if tc.tie_embeddings && config.embedding_dim != config.hidden_dim {
        return Err(TrainError::BadConfig {
            field: "tie_embeddings",
            value: "true".into(),
            expected: "tied embeddings need embedding_dim equal to hidden_dim; make them equal or set tie_embeddings to false",
        });
    }
    let weights = init_weights(&vs, config, popularity, tc.seed, tc.tie_embeddings);
    let mut optimizer = nn::Adam::default().build(&vs, tc.learning_rate)?;
    let negatives = tc.negatives_for(config.catalogue_size);
    let sampler = negatives.map(|n| NegativeSampler::new(popularity, n));
    let targets: u64 = windows.iter().map(|w| w.len() as u64 - 1).sum();
    let steps_per_epoch = windows.len().div_ceil(tc.batch_size);
    let started = Instant::now();
    let mut report = TrainReport {
        epochs: Vec::new(),
        seconds: 0.0,
        sequences: windows.len(),
        targets,
        softmax: match negatives {
            Some(n) => format!("sampled ({n} shared negatives)"),
            None => "full".to_string(),
        },
    };
    let mut order: Vec<usize> = (0..windows.len()).collect();
    let total_steps = (steps_per_epoch * tc.epochs as usize) as f64;
    let mut step = 0usize;
    for epoch in 1..=tc.epochs {
        let epoch_started = Instant::now();
        order.shuffle(&mut rng);
        progress.start(
            &format!("epoch {epoch}/{}", tc.epochs),
            steps_per_epoch as u64,
        );
        let (mut loss_sum, mut loss_targets) = (0.0, 0u64);
        for batch in order.chunks(tc.batch_size) {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| windows[i].as_slice()).collect();
            let (loss, n) = batch_loss(
                config,
                &weights,
                tc.dropout,
                &rows,
                sampler.as_ref(),
                &mut rng,
            );
            if tc.cosine_decay {
                let done = step as f64 / total_steps;
                let floor = 0.05 * tc.learning_rate;
                optimizer.set_lr(
                    floor
                        + (tc.learning_rate - floor)
                            * 0.5
                            * (1.0 + (std::f64::consts::PI * done).cos()),
                );
            }
            step += 1;
            optimizer.zero_grad();
            loss.backward();
            optimizer.clip_grad_norm(tc.grad_clip);
            optimizer.step();
            loss_sum += loss.double_value(&[]) * n as f64;
            loss_targets += n;
            progress.advance(1);
        }
        progress.finish();
        let epoch_report = EpochReport {
            epoch,
            loss: loss_sum / loss_targets.max(1) as f64,
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        progress.message(&format!(
            "epoch {epoch}: loss {:.4} ({:.0} s)",
            epoch_report.loss, epoch_report.seconds
        ));
        report.epochs.push(epoch_report);
        if tc
            .max_minutes
            .is_some_and(|m| started.elapsed().as_secs_f64() >= m * 60.0)
        {
            progress.message(&format!(
                "stopping after epoch {epoch}: the time budget is spent"
            ));
            break;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    let trained = weights
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect();
    Ok((trained, report))
}

fn validate(tc: &TrainConfig) -> Result<(), TrainError> {
    let bad = |field, value: String, expected| {
        Err(TrainError::BadConfig {
            field,
            value,
            expected,
        })
    };
    if tc.epochs == 0 || tc.epochs > 10_000 {
        return bad(
            "epochs",
            tc.epochs.to_string(),
            "it must be between 1 and 10000",
        );
    }
    if tc.batch_size == 0 || tc.batch_size > 65_536 {
        return bad(
            "batch_size",
            tc.batch_size.to_string(),
            "it must be between 1 and 65536",
        );
    }
    if tc.learning_rate.is_nan() || tc.learning_rate <= 0.0 || tc.learning_rate > 1.0 {
        return bad(
            "learning_rate",
            tc.learning_rate.to_string(),
            "it must be in (0, 1]",
        );
    }
    if !(0.0..0.95).contains(&tc.dropout) {
        return bad("dropout", tc.dropout.to_string(), "it must be in [0, 0.95)");
    }
    if tc.negatives.is_some_and(|n| n == 0 || n > 1_000_000) {
        return bad(
            "negatives",
            format!("{:?}", tc.negatives),
            "it must be between 1 and 1000000",
        );
    }
    if tc.grad_clip.is_nan() || tc.grad_clip <= 0.0 {
        return bad("grad_clip", tc.grad_clip.to_string(), "it must be positive");
    }
    Ok(())
}

/// The model's initial weights as trainable variables of `vs`. Tied, the
/// output projection is the embedding variable itself.
fn init_weights(
    vs: &nn::VarStore,
    config: &ModelConfig,
    popularity: &[u32],
    seed: u64,
    tied: bool,
) -> Weights {
    let mut weights: Weights = crate::initial_weights(config, Some(popularity), seed)
        .into_iter()
        .filter(|(name, _)| !(tied && name == OUTPUT_WEIGHT))
        .map(|(name, initial)| {
            // Variable stores separate path components with dots themselves.
            let (path, leaf) = name
                .rsplit_once('.')
                .expect("parameter names have a layer and a tensor part");
            let var = path
                .split('.')
                .fold(vs.root(), |p, part| p / part)
                .var_copy(leaf, &initial);
            (name, var)
        })
        .collect();
    if tied {
        let embedding = weights["embedding.weight"].shallow_clone();
        weights.insert(OUTPUT_WEIGHT.to_string(), embedding);
    }
    weights
}

/// Draws shared negatives in proportion to popularity^0.75 (word2vec's choice:
/// popular songs are the hard negatives, rare ones still appear).
struct NegativeSampler {
    probabilities: Tensor,
    log_q: Tensor,
    count: i64,
}

impl NegativeSampler {
    fn new(popularity: &[u32], count: u32) -> Self {
        let weights: Vec<f32> = popularity
            .iter()
            .map(|&c| (c as f32 + 1.0).powf(0.75))
            .collect();
        let probabilities = Tensor::from_slice(&weights);
        let probabilities = &probabilities / probabilities.sum(Kind::Float);
        let count = (count as i64).min(popularity.len() as i64);
        let log_q = (&probabilities * count as f64).log();
        NegativeSampler {
            probabilities,
            log_q,
            count,
        }
    }
}

/// Mean cross-entropy of predicting each next track, and how many targets it covers.
fn batch_loss(
    config: &ModelConfig,
    weights: &Weights,
    dropout: f64,
    rows: &[&[u32]],
    sampler: Option<&NegativeSampler>,
    rng: &mut ChaCha8Rng,
) -> (Tensor, u64) {
    let inputs: Vec<&[u32]> = rows.iter().map(|r| &r[..r.len() - 1]).collect();
    let (ids, lengths) = ops::pad_tracks(&inputs, usize::MAX);
    let width = ids.size()[1] as usize;
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for t in 0..lengths[r] as usize {
            positions.push((r * width + t) as i64);
            targets.push(row[t + 1] as i64);
        }
    }
    let layers = 0..config.lstm_layers as usize + 1;
    let sequence = ops::run_layers(config, weights, layers, &ids, Some(dropout));
    let hidden = sequence
        .reshape([-1, config.hidden_dim as i64])
        .index_select(0, &Tensor::from_slice(&positions));
    let targets = Tensor::from_slice(&targets);
    let loss = match sampler {
        None => ops::scores(weights, &hidden).cross_entropy_loss::<Tensor>(
            &targets,
            None,
            Reduction::Mean,
            -100,
            0.0,
        ),
        Some(sampler) => sampled_softmax_loss(weights, &hidden, &targets, sampler, rng),
    };
    (loss, positions.len() as u64)
}

/// Sampled softmax with the logQ correction, so the sampled loss estimates
/// the full one without bias towards unpopular songs.
fn sampled_softmax_loss(
    weights: &Weights,
    hidden: &Tensor,
    targets: &Tensor,
    sampler: &NegativeSampler,
    rng: &mut ChaCha8Rng,
) -> Tensor {
    let w = &weights[OUTPUT_WEIGHT];
    let b = &weights[OUTPUT_BIAS];
    // libtorch's own generator is seeded by `tch::manual_seed`; drawing a seed
    // from ours keeps negatives reproducible whatever else used libtorch's.
    tch::manual_seed(rng.random::<i64>());
    let negatives = sampler.probabilities.multinomial(sampler.count, true);
    let positive = (hidden * w.index_select(0, targets)).sum_dim_intlist(1, false, Kind::Float)
        + b.index_select(0, targets)
        - sampler.log_q.index_select(0, targets);
    let negative = hidden.matmul(&w.index_select(0, &negatives).tr())
        + b.index_select(0, &negatives)
        - sampler.log_q.index_select(0, &negatives);
    // A negative that is the target itself is not a negative.
    let hits = targets.unsqueeze(1).eq_tensor(&negatives.unsqueeze(0));
    let negative = negative.masked_fill(&hits, f64::NEG_INFINITY);
    let logits = Tensor::cat(&[positive.unsqueeze(1), negative], 1);
    let zeros = Tensor::zeros([logits.size()[0]], (Kind::Int64, logits.device()));
    logits.cross_entropy_loss::<Tensor>(&zeros, None, Reduction::Mean, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_transition_once() {
        let playlist: Vec<u32> = (0..120).collect();
        let windows = training_windows(&[playlist, vec![5], vec![1, 2]], 50);
        assert_eq!(
            windows.iter().map(|w| w.len()).collect::<Vec<_>>(),
            vec![51, 51, 20, 2]
        );
        let transitions: usize = windows.iter().map(|w| w.len() - 1).sum();
        assert_eq!(transitions, 119 + 1);
        assert_eq!(windows[1][0], 50);
        assert_eq!(windows[2][0], 100);
    }

    #[test]
    fn split_is_stable_and_near_the_fraction() {
        let split = Split {
            seed: 3,
            holdout: 0.2,
        };
        let test = (0..10_000)
            .filter(|i| split.is_test(&format!("p{i}")))
            .count();
        assert!((1_800..2_200).contains(&test), "{test} of 10000 held out");
        assert_eq!(split.is_test("p17"), split.is_test("p17"));
        let other = Split {
            seed: 4,
            holdout: 0.2,
        };
        assert!(
            (0..1000).any(|i| split.is_test(&format!("p{i}")) != other.is_test(&format!("p{i}")))
        );
        assert!(!(0..1000).any(|i| {
            Split {
                seed: 3,
                holdout: 0.0,
            }
            .is_test(&format!("p{i}"))
        }));
    }

    #[test]
    fn training_config_errors_name_the_field() {
        let tc = TrainConfig {
            dropout: 1.5,
            ..TrainConfig::default()
        };
        let err = validate(&tc).unwrap_err().to_string();
        assert_eq!(
            err,
            "training config field \"dropout\" is 1.5; it must be in [0, 0.95)"
        );
    }
}
