//! The partition plan: which pipeline layers each compute stage runs, and
//! which songs each output shard scores. A pure function of the model's
//! shape, so every component (CLI, nodes, operator) computes the same plan.

use crate::shape::ModelConfig;
use crate::slice::Part;
use crate::wire::{BodyShape, Dtype, FrameShape, Limits};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// More output shards than this would make each shard's matrix multiply too
/// small to be worth a network hop; the limit also bounds the fan-in the
/// dispatcher merges per request.
pub const MAX_OUTPUT_SHARDS: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    pub stages: Vec<StagePlan>,
    pub output_shards: Vec<ShardPlan>,
}

/// A compute stage: pipeline layers `first_layer..end_layer` (0 is the
/// embedding, 1..=M the LSTMs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlan {
    pub index: u32,
    pub first_layer: u32,
    pub end_layer: u32,
    pub bytes: u64,
}

/// An output shard: the output projection rows for songs `first_song..end_song`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub index: u32,
    pub first_song: u32,
    pub end_song: u32,
    pub bytes: u64,
}

impl StagePlan {
    pub fn layers(&self) -> Range<usize> {
        self.first_layer as usize..self.end_layer as usize
    }
}

impl ShardPlan {
    pub fn songs(&self) -> Range<u32> {
        self.first_song..self.end_song
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "stages is {requested}, but this model has {layers} pipeline layers (an embedding and {lstm} LSTM layers), so it must be between 1 and {layers}"
    )]
    Stages {
        requested: u32,
        layers: u32,
        lstm: u32,
    },
    #[error(
        "output shards is {requested}, but it must be between 1 and {max} for a catalogue of {catalogue} songs"
    )]
    OutputShards {
        requested: u32,
        max: u32,
        catalogue: u32,
    },
    #[error(transparent)]
    Model(#[from] crate::shape::ConfigError),
}

impl PartitionPlan {
    /// The most stages `config` can be split into.
    pub fn max_stages(config: &ModelConfig) -> u32 {
        config.lstm_layers + 1
    }

    /// The most output shards `config` can be split into.
    pub fn max_output_shards(config: &ModelConfig) -> u32 {
        config.catalogue_size.min(MAX_OUTPUT_SHARDS)
    }

    /// Splits the pipeline layers into `stages` contiguous groups whose
    /// largest holds as few parameter bytes as possible, and the output
    /// projection into `output_shards` song ranges of equal size (±1 song).
    pub fn new(
        config: &ModelConfig,
        stages: u32,
        output_shards: u32,
    ) -> Result<PartitionPlan, PlanError> {
        config.validate()?;
        let layer_bytes: Vec<u64> = config.layers().iter().map(|l| l.bytes()).collect();
        let layers = layer_bytes.len() as u32;
        if stages == 0 || stages > layers {
            return Err(PlanError::Stages {
                requested: stages,
                layers,
                lstm: config.lstm_layers,
            });
        }
        let max_shards = Self::max_output_shards(config);
        if output_shards == 0 || output_shards > max_shards {
            return Err(PlanError::OutputShards {
                requested: output_shards,
                max: max_shards,
                catalogue: config.catalogue_size,
            });
        }
        let bounds = balanced_bounds(&layer_bytes, stages as usize);
        let stages = bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| StagePlan {
                index: i as u32,
                first_layer: w[0] as u32,
                end_layer: w[1] as u32,
                bytes: layer_bytes[w[0]..w[1]].iter().sum(),
            })
            .collect();
        let songs = config.catalogue_size;
        let (base, extra) = (songs / output_shards, songs % output_shards);
        let mut first_song = 0;
        let output_shards = (0..output_shards)
            .map(|i| {
                let end_song = first_song + base + u32::from(i < extra);
                let bytes = config
                    .output_params(first_song..end_song)
                    .iter()
                    .map(|p| p.elements() * 4)
                    .sum();
                let shard = ShardPlan {
                    index: i,
                    first_song,
                    end_song,
                    bytes,
                };
                first_song = end_song;
                shard
            })
            .collect();
        Ok(PartitionPlan {
            stages,
            output_shards,
        })
    }

    /// The largest stage or shard, in bytes: what one node must hold.
    pub fn largest_part_bytes(&self) -> u64 {
        let stages = self.stages.iter().map(|s| s.bytes);
        stages
            .chain(self.output_shards.iter().map(|s| s.bytes))
            .max()
            .unwrap_or(0)
    }
}

/// The compute node's default for the largest Kafka message it produces,
/// which `setlist plan` and `setlist slice` check a plan against unless told
/// otherwise; under Kafka's default limit of about 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The compute node's default for the requests it runs in one forward pass.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 64;

/// A link of the pipeline: the frames one part sends the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Into stage k: track ids from the dispatcher for stage 0, activations
    /// of every position from stage k - 1 after it.
    ToStage(u32),
    /// The last stage's hidden state (one position per request), to every
    /// output shard.
    ToShards,
    /// An output shard's top-k, to the dispatcher replica that asked.
    ToDispatcher,
}

impl Link {
    /// The link that `part`'s output travels on, in a plan of `stages` stages.
    pub fn output_of(part: Part, stages: u32) -> Link {
        match part {
            Part::Stage(k) if k + 1 < stages => Link::ToStage(k + 1),
            Part::Stage(_) => Link::ToShards,
            Part::OutputShard(_) => Link::ToDispatcher,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::ToStage(0) => write!(f, "dispatcher -> stage 0"),
            Link::ToStage(k) => write!(f, "stage {} -> stage {k}", k - 1),
            Link::ToShards => write!(f, "last stage -> output shards"),
            Link::ToDispatcher => write!(f, "output shards -> dispatcher"),
        }
    }
}

/// The batches a plan's frame sizes are computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBatch {
    /// Requests per frame.
    pub rows: usize,
    /// Whether the stages send their activations as f16.
    pub half_precision: bool,
}

/// The largest frames one link carries: a batch of [`FrameBatch::rows`]
/// requests that each have the model's `max_history` positions and every
/// exclusion, hop and header byte the wire format allows. A frame that
/// passes a node's checks is never larger, row for row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFrames {
    pub link: Link,
    pub shape: FrameShape,
}

impl LinkFrames {
    /// The largest frame holding a single request: what must fit one Kafka
    /// message, because a frame is split between requests, never inside one.
    pub fn one_request_bytes(&self) -> usize {
        FrameShape {
            rows: 1,
            ..self.shape
        }
        .encoded_len()
    }

    /// The largest frame of a whole batch, before it is split to fit.
    pub fn batch_bytes(&self) -> usize {
        self.shape.encoded_len()
    }

    /// How many messages of at most `max_message_bytes` such a batch takes,
    /// or `None` if one request alone does not fit.
    pub fn messages(&self, max_message_bytes: usize) -> Option<usize> {
        self.shape.messages(max_message_bytes)
    }

    /// The request in words, for sizes and errors.
    fn request(&self) -> String {
        let body = match self.shape.body {
            BodyShape::Activations {
                dtype: Dtype::TrackIds,
                positions_per_row,
                ..
            } => format!("{positions_per_row} track ids"),
            BodyShape::Activations {
                dtype,
                dim,
                positions_per_row,
            } => {
                let kind = if dtype == Dtype::F16 { "f16" } else { "f32" };
                format!("{positions_per_row} x {dim} {kind} values")
            }
            BodyShape::TopK { entries_per_row } => format!("{entries_per_row} scored tracks"),
        };
        format!("{body} and {} excluded tracks", self.shape.exclude_per_row)
    }

    /// `Ok` if every request fits a message of `max_message_bytes`; the
    /// error names the limit as `setting`, the way its user spells it.
    pub fn check(
        &self,
        max_message_bytes: usize,
        setting: &'static str,
    ) -> Result<(), FrameTooLarge> {
        let bytes = self.one_request_bytes();
        if bytes <= max_message_bytes.min(Limits::V1.max_frame_bytes) {
            return Ok(());
        }
        let f32_activations = matches!(
            self.shape.body,
            BodyShape::Activations {
                dtype: Dtype::F32,
                ..
            }
        );
        Err(FrameTooLarge {
            link: self.link,
            bytes,
            request: self.request(),
            setting,
            max_message_bytes,
            hint: if f32_activations {
                ", send the activations as f16"
            } else {
                ""
            },
        })
    }
}

impl fmt::Display for LinkFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<28} one request {:>9} bytes, {} requests {:>10} bytes ({})",
            self.link.to_string(),
            self.one_request_bytes(),
            self.shape.rows,
            self.batch_bytes(),
            self.request()
        )
    }
}

/// One request is larger than a Kafka message may be, so no frame holding
/// it can be sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "one request on the link {link} can be {bytes} bytes ({request}, with every hop and header the wire format allows), over {setting} of {max_message_bytes}; raise {setting} (and the brokers' message.max.bytes) to at least {bytes}{hint}, or use a model with a shorter max_history or smaller layers"
)]
pub struct FrameTooLarge {
    pub link: Link,
    pub bytes: usize,
    pub request: String,
    pub setting: &'static str,
    pub max_message_bytes: usize,
    hint: &'static str,
}

impl PartitionPlan {
    /// The links of the pipeline in order: into each stage, to the shards,
    /// back to the dispatcher.
    pub fn links(&self) -> Vec<Link> {
        let stages = self.stages.len() as u32;
        let mut links: Vec<Link> = (0..stages).map(Link::ToStage).collect();
        links.extend([Link::ToShards, Link::ToDispatcher]);
        links
    }

    /// The largest frames on `link` for batches of `batch`.
    pub fn link_frames(&self, config: &ModelConfig, link: Link, batch: FrameBatch) -> LinkFrames {
        let activations = if batch.half_precision {
            Dtype::F16
        } else {
            Dtype::F32
        };
        let body = match link {
            Link::ToStage(0) => BodyShape::Activations {
                dtype: Dtype::TrackIds,
                dim: 1,
                positions_per_row: config.max_history,
            },
            Link::ToStage(k) => BodyShape::Activations {
                dtype: activations,
                dim: self.stages.get(k as usize).map_or(config.hidden_dim, |s| {
                    config.layer_output_dim(s.first_layer as usize - 1)
                }),
                positions_per_row: config.max_history,
            },
            Link::ToShards => BodyShape::Activations {
                dtype: activations,
                dim: config.layer_output_dim(config.lstm_layers as usize),
                positions_per_row: 1,
            },
            Link::ToDispatcher => BodyShape::TopK {
                entries_per_row: Limits::V1.max_k,
            },
        };
        LinkFrames {
            link,
            shape: FrameShape::largest(batch.rows, body, &Limits::V1),
        }
    }

    /// The largest frames on every link, in pipeline order.
    pub fn frame_sizes(&self, config: &ModelConfig, batch: FrameBatch) -> Vec<LinkFrames> {
        self.links()
            .into_iter()
            .map(|link| self.link_frames(config, link, batch))
            .collect()
    }
}

/// Boundaries `0 = b0 < b1 < … < bn = len` of `n` contiguous non-empty
/// groups minimising the largest group's sum (linear partition, by dynamic
/// programming: the layer count is small). Among equally good splits the one
/// with the earliest boundaries wins, so the plan is deterministic.
fn balanced_bounds(sizes: &[u64], n: usize) -> Vec<usize> {
    let len = sizes.len();
    let mut prefix = vec![0u64; len + 1];
    for (i, &size) in sizes.iter().enumerate() {
        prefix[i + 1] = prefix[i] + size;
    }
    let sum = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[g][j]: the smallest possible largest sum when the first j layers form g groups.
    let mut best = vec![vec![u64::MAX; len + 1]; n + 1];
    let mut cut = vec![vec![0usize; len + 1]; n + 1];
    best[0][0] = 0;
    for g in 1..=n {
        for j in g..=len {
            for s in (g - 1)..j {
                if best[g - 1][s] == u64::MAX {
                    continue;
                }
                let cost = best[g - 1][s].max(sum(s, j));
                if cost < best[g][j] {
                    best[g][j] = cost;
                    cut[g][j] = s;
                }
            }
        }
    }
    let mut bounds = vec![len];
    let mut j = len;
    for g in (1..=n).rev() {
        j = cut[g][j];
        bounds.push(j);
    }
    bounds.reverse();
    bounds
}

/// A pipeline layer in words: 0 is the embedding, 1..=M the LSTMs.
pub fn layer_name(layer: usize) -> String {
    if layer == 0 {
        "embedding".to_string()
    } else {
        format!("lstm {layer}")
    }
}

impl fmt::Display for PartitionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        for s in &self.stages {
            let layers: Vec<String> = s.layers().map(layer_name).collect();
            writeln!(
                f,
                "stage {:<3} {:>10.2} MiB  {}",
                s.index,
                mib(s.bytes),
                layers.join(", ")
            )?;
        }
        for s in &self.output_shards {
            writeln!(
                f,
                "shard {:<3} {:>10.2} MiB  songs {}..{}",
                s.index,
                mib(s.bytes),
                s.first_song,
                s.end_song
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(layers: u32, songs: u32) -> ModelConfig {
        ModelConfig {
            catalogue_size: songs,
            embedding_dim: 16,
            hidden_dim: 32,
            lstm_layers: layers,
            max_history: 50,
            residual: false,
        }
    }

    /// Every way to cut `len` layers into `n` contiguous groups.
    fn all_bounds(len: usize, n: usize) -> Vec<Vec<usize>> {
        if n == 1 {
            return vec![vec![0, len]];
        }
        let mut out = Vec::new();
        for first_end in 1..=len - (n - 1) {
            for rest in all_bounds(len - first_end, n - 1) {
                let mut b = vec![0];
                b.extend(rest.iter().map(|x| x + first_end));
                out.push(b);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn balanced_bounds_are_optimal(sizes in prop::collection::vec(1u64..1_000_000, 1..8), n_seed in 0usize..8) {
            let n = n_seed % sizes.len() + 1;
            let bounds = balanced_bounds(&sizes, n);
            prop_assert_eq!(bounds.len(), n + 1);
            prop_assert_eq!(bounds[0], 0);
            prop_assert_eq!(bounds[n], sizes.len());
            prop_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "groups are non-empty: {:?}", bounds);
            let largest = |b: &[usize]| b.windows(2).map(|w| sizes[w[0]..w[1]].iter().sum::<u64>()).max().unwrap();
            let optimum = all_bounds(sizes.len(), n).iter().map(|b| largest(b)).min().unwrap();
            prop_assert_eq!(largest(&bounds), optimum);
        }

        #[test]
        fn every_allowed_plan_covers_the_model(layers in 1u32..6, songs in 1u32..5000, s_seed in 0u32..1000, n_seed in 0u32..10) {
            let c = config(layers, songs);
            let stages = n_seed % PartitionPlan::max_stages(&c) + 1;
            let shards = s_seed % PartitionPlan::max_output_shards(&c) + 1;
            let plan = PartitionPlan::new(&c, stages, shards).unwrap();
            prop_assert_eq!(plan.stages.len() as u32, stages);
            prop_assert_eq!(plan.stages[0].first_layer, 0);
            prop_assert_eq!(plan.stages.last().unwrap().end_layer, layers + 1);
            prop_assert!(plan.stages.windows(2).all(|w| w[0].end_layer == w[1].first_layer));
            prop_assert_eq!(plan.output_shards[0].first_song, 0);
            prop_assert_eq!(plan.output_shards.last().unwrap().end_song, songs);
            prop_assert!(plan.output_shards.windows(2).all(|w| w[0].end_song == w[1].first_song));
            let sizes: Vec<u32> = plan.output_shards.iter().map(|s| s.end_song - s.first_song).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            let total: u64 = plan.stages.iter().map(|s| s.bytes).sum::<u64>()
                + plan.output_shards.iter().map(|s| s.bytes).sum::<u64>();
            prop_assert_eq!(total, c.bytes());
        }
    }

    #[test]
    fn a_large_embedding_gets_a_stage_of_its_own() {
        let c = ModelConfig {
            catalogue_size: 1_000_000,
            embedding_dim: 256,
            hidden_dim: 256,
            lstm_layers: 2,
            max_history: 50,
            residual: false,
        };
        let plan = PartitionPlan::new(&c, 2, 4).unwrap();
        assert_eq!(
            (plan.stages[0].first_layer, plan.stages[0].end_layer),
            (0, 1)
        );
        assert_eq!(
            (plan.stages[1].first_layer, plan.stages[1].end_layer),
            (1, 3)
        );
        assert_eq!(plan.output_shards[3].songs(), 750_000..1_000_000);
    }

    fn batch(rows: usize, half_precision: bool) -> FrameBatch {
        FrameBatch {
            rows,
            half_precision,
        }
    }

    #[test]
    fn every_link_carries_what_its_receiver_reads() {
        let c = config(2, 1000);
        let plan = PartitionPlan::new(&c, 3, 2).unwrap();
        assert_eq!(
            plan.links(),
            [
                Link::ToStage(0),
                Link::ToStage(1),
                Link::ToStage(2),
                Link::ToShards,
                Link::ToDispatcher
            ]
        );
        let bodies: Vec<BodyShape> = plan
            .frame_sizes(&c, batch(8, true))
            .iter()
            .map(|f| f.shape.body)
            .collect();
        let floats = |dim, positions_per_row| BodyShape::Activations {
            dtype: Dtype::F16,
            dim,
            positions_per_row,
        };
        assert_eq!(
            bodies,
            [
                BodyShape::Activations {
                    dtype: Dtype::TrackIds,
                    dim: 1,
                    positions_per_row: 50
                },
                floats(16, 50),
                floats(32, 50),
                floats(32, 1),
                BodyShape::TopK {
                    entries_per_row: 1000
                },
            ]
        );
        assert_eq!(Link::output_of(Part::Stage(1), 3), Link::ToStage(2));
        assert_eq!(Link::output_of(Part::Stage(2), 3), Link::ToShards);
        assert_eq!(Link::output_of(Part::OutputShard(1), 3), Link::ToDispatcher);
    }

    #[test]
    fn the_largest_request_is_every_position_exclusion_and_hop() {
        let c = config(2, 1000);
        let plan = PartitionPlan::new(&c, 3, 1).unwrap();
        let frames = plan.link_frames(&c, Link::ToStage(2), batch(64, false));
        // Header: 24 fixed bytes, a 64-byte model version, a 256-byte trace
        // context, 64 hops of 18 bytes; activations add dtype and dim.
        let fixed = 24 + 64 + 256 + 64 * 18 + 5;
        // A row: 30 bytes, 10 000 exclusions, its length, 50 x 32 f32 values.
        let row = 30 + 4 * 10_000 + 4 + 50 * 32 * 4;
        assert_eq!(frames.one_request_bytes(), fixed + row);
        assert_eq!(frames.batch_bytes(), fixed + 64 * row);
        // 21 such requests fit in 1 000 000 bytes, so 64 take 4 messages.
        assert_eq!(frames.messages(1_000_000), Some(4));
        assert_eq!(frames.messages(fixed + row - 1), None);
        let halves = plan.link_frames(&c, Link::ToStage(2), batch(64, true));
        assert_eq!(halves.one_request_bytes(), fixed + row - 50 * 32 * 2);
    }

    #[test]
    fn a_request_larger_than_a_message_is_refused_with_the_numbers() {
        let c = ModelConfig {
            hidden_dim: 1024,
            ..config(2, 1000)
        };
        let plan = PartitionPlan::new(&c, 3, 1).unwrap();
        let frames = plan.link_frames(&c, Link::ToStage(2), batch(64, false));
        let bytes = frames.one_request_bytes();
        let check = |frames: &LinkFrames, max| frames.check(max, "max_message_bytes");
        assert!(check(&frames, bytes).is_ok());
        assert_eq!(
            check(&frames, 65_536).unwrap_err().to_string(),
            format!(
                "one request on the link stage 1 -> stage 2 can be {bytes} bytes (50 x 1024 f32 values and 10000 excluded tracks, with every hop and header the wire format allows), over max_message_bytes of 65536; raise max_message_bytes (and the brokers' message.max.bytes) to at least {bytes}, send the activations as f16, or use a model with a shorter max_history or smaller layers"
            )
        );
        // Neither track ids nor top-k lists get smaller in f16.
        let ids = plan.link_frames(&c, Link::ToStage(0), batch(64, false));
        let error = ids
            .check(1000, "--max-message-bytes")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("f16"), "{error}");
        assert!(error.contains("over --max-message-bytes of 1000; raise --max-message-bytes"));
        assert!(check(&frames, usize::MAX).is_ok());
        let short = ModelConfig {
            max_history: 1,
            ..c
        };
        let shards = plan.link_frames(&short, Link::ToShards, batch(1, false));
        assert!(check(&shards, 65_536).is_ok());
    }

    #[test]
    fn impossible_plans_say_what_is_allowed() {
        let c = config(2, 10);
        assert_eq!(
            PartitionPlan::new(&c, 4, 1).unwrap_err().to_string(),
            "stages is 4, but this model has 3 pipeline layers (an embedding and 2 LSTM layers), so it must be between 1 and 3"
        );
        assert_eq!(
            PartitionPlan::new(&c, 1, 11).unwrap_err().to_string(),
            "output shards is 11, but it must be between 1 and 10 for a catalogue of 10 songs"
        );
        assert!(PartitionPlan::new(&c, 0, 1).is_err());
        assert!(PartitionPlan::new(&c, 1, 0).is_err());
    }
}
