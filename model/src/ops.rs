//! The model's forward pass as functions over named weights. Training, the
//! whole-model scorer, pipeline stages and output shards all call these, so
//! a partitioned pipeline runs exactly the arithmetic of the whole model.

use crate::Weights;
use setlist_core::query::sort_scored;
use setlist_core::shape::{ModelConfig, OUTPUT_BIAS, OUTPUT_WEIGHT};
use std::ops::Range;
use tch::{Kind, Tensor};

/// A song (model index) and its score; the same type travels in top-k frames.
pub use setlist_core::wire::Scored;

/// What one row of a batch asks of the output: its `k` and the songs it must
/// not be recommended (the playlist's own tracks, the listener's excludes).
#[derive(Debug, Clone, Copy)]
pub struct RowQuery<'a> {
    pub k: usize,
    pub exclude: &'a [u32],
}

fn weight<'a>(weights: &'a Weights, name: &str) -> &'a Tensor {
    // Callers load weights through `check_weights`, so a missing name is a bug here.
    weights
        .get(name)
        .unwrap_or_else(|| panic!("weights lack \"{name}\" although they were checked"))
}

/// Runs pipeline layers `layers` (0 = embedding, 1..=M = LSTMs) over `input`:
/// track ids `[B, T]` (i64) when the range starts at the embedding, else
/// activations `[B, T, D]`. Returns `[B, T, D']`. Rows are right-padded; the
/// layers are causal, so padding never changes the real positions.
/// `dropout` is applied after every layer, for training only.
pub fn run_layers(
    config: &ModelConfig,
    weights: &Weights,
    layers: Range<usize>,
    input: &Tensor,
    dropout: Option<f64>,
) -> Tensor {
    let mut x = input.shallow_clone();
    for layer in layers {
        x = if layer == 0 {
            Tensor::embedding(weight(weights, "embedding.weight"), &x, -1, false, false)
        } else {
            let output = lstm(config, weights, layer - 1, &x, dropout.is_some());
            if config.residual && x.size()[2] == output.size()[2] {
                output + &x
            } else {
                output
            }
        };
        if let Some(p) = dropout {
            x = x.dropout(p, true);
        }
    }
    x
}

fn lstm(
    config: &ModelConfig,
    weights: &Weights,
    ordinal: usize,
    x: &Tensor,
    train: bool,
) -> Tensor {
    let params = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        .map(|p| weight(weights, &format!("lstm.{ordinal}.{p}")));
    let batch = x.size()[0];
    let zeros = Tensor::zeros(
        [1, batch, config.hidden_dim as i64],
        (Kind::Float, x.device()),
    );
    let (output, _, _) = x.lstm(&[&zeros, &zeros], &params, true, 1, 0.0, train, false, true);
    output
}

/// Runs one pipeline stage: its layers, then, when it holds the last LSTM,
/// the hand-off to the output (each row's last position, `[B, H]`).
pub fn run_stage(
    config: &ModelConfig,
    weights: &Weights,
    layers: Range<usize>,
    input: &Tensor,
    lengths: &[i64],
) -> Tensor {
    let last = layers.end == config.lstm_layers as usize + 1;
    let output = run_layers(config, weights, layers, input, None);
    if last {
        last_positions(&output, lengths)
    } else {
        output
    }
}

/// The activation at each row's last real position: `[B, T, D]` → `[B, D]`.
pub fn last_positions(sequence: &Tensor, lengths: &[i64]) -> Tensor {
    let (batch, dim) = (sequence.size()[0], sequence.size()[2]);
    let index = Tensor::from_slice(lengths).to_device(sequence.device()) - 1;
    sequence
        .gather(
            1,
            &index.view([batch, 1, 1]).expand([batch, 1, dim], false),
            false,
        )
        .squeeze_dim(1)
}

/// Scores of the songs an output (shard) holds: `[B, H]` → `[B, songs]`.
pub fn scores(weights: &Weights, hidden: &Tensor) -> Tensor {
    hidden.linear(
        weight(weights, OUTPUT_WEIGHT),
        Some(weight(weights, OUTPUT_BIAS)),
    )
}

/// Each row's best `k` songs among `scores` (`[B, songs]`, whose column 0 is
/// song `first_song`), leaving out the row's excluded songs. Ordered by score
/// descending, then by song index, so equal scores order the same everywhere.
pub fn top_k(scores: &Tensor, first_song: u32, rows: &[RowQuery]) -> Vec<Vec<Scored>> {
    let (batch, songs) = (scores.size()[0], scores.size()[1]);
    assert_eq!(batch as usize, rows.len(), "one query per row");
    let end = first_song as i64 + songs;
    let masked: Vec<i64> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, row)| {
            row.exclude
                .iter()
                .map(|&t| t as i64)
                .filter(|&t| t >= first_song as i64 && t < end)
                .map(move |t| r as i64 * songs + (t - first_song as i64))
        })
        .collect();
    let mut scores = scores.contiguous();
    if !masked.is_empty() {
        scores = scores
            .view([-1])
            .index_fill(0, &Tensor::from_slice(&masked), f64::NEG_INFINITY)
            .view([batch, songs]);
    }
    // One extra candidate lets equal scores at the boundary be ordered by index.
    let want = rows.iter().map(|r| r.k).max().unwrap_or(0) as i64;
    let take = (want + 1).min(songs);
    if take == 0 {
        return vec![Vec::new(); rows.len()];
    }
    let (values, indices) = scores.topk(take, 1, true, true);
    let values =
        Vec::<f32>::try_from(values.contiguous().view([-1])).expect("top-k values are f32");
    let indices =
        Vec::<i64>::try_from(indices.contiguous().view([-1])).expect("top-k indices are i64");
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let span = r * take as usize..(r + 1) * take as usize;
            let mut best: Vec<Scored> = values[span.clone()]
                .iter()
                .zip(&indices[span])
                .filter(|(s, _)| s.is_finite())
                .map(|(&score, &i)| Scored {
                    track: first_song + i as u32,
                    score,
                })
                .collect();
            sort_scored(&mut best);
            best.truncate(row.k);
            best
        })
        .collect()
}

/// Right-pads playlists of track indices into `[B, T]` i64 ids and lengths.
/// Each row keeps only its last `max_history` tracks; empty rows are the
/// caller's to avoid (a model needs at least one track).
pub fn pad_tracks(rows: &[&[u32]], max_history: usize) -> (Tensor, Vec<i64>) {
    let rows: Vec<&[u32]> = rows
        .iter()
        .map(|r| &r[r.len().saturating_sub(max_history)..])
        .collect();
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0i64; rows.len() * width];
    for (r, row) in rows.iter().enumerate() {
        for (t, &track) in row.iter().enumerate() {
            ids[r * width + t] = track as i64;
        }
    }
    let lengths = rows.iter().map(|r| r.len() as i64).collect();
    (
        Tensor::from_slice(&ids).view([rows.len() as i64, width as i64]),
        lengths,
    )
}
