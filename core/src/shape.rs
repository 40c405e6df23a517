//! The shape of the next-song model (embedding → stacked LSTM layers →
//! output projection over the catalogue): its config, its layers and the
//! named parameters each holds. Shapes only, no tensors: the partition plan,
//! slice manifests and every service read these without libtorch; the
//! arithmetic lives in `setlist-model`.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Limits on model sizes: large enough for a 10M-song catalogue, small enough
/// that a typo in a config file fails at once instead of exhausting memory.
pub const MAX_CATALOGUE: u32 = 50_000_000;
pub const MAX_DIM: u32 = 8_192;
pub const MAX_LSTM_LAYERS: u32 = 16;
pub const MAX_HISTORY: u32 = 1_000;

/// The shape of the model. Stored as `config.json` in every model directory
/// and slice manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Songs the model scores (rows of the embedding and of the output).
    pub catalogue_size: u32,
    pub embedding_dim: u32,
    pub hidden_dim: u32,
    pub lstm_layers: u32,
    /// The model reads at most this many of a playlist's last tracks.
    pub max_history: u32,
    /// Each LSTM layer whose input is as wide as its output adds its input to
    /// its output (a skip connection), so the last track's own embedding
    /// reaches the output directly instead of only through the gates.
    #[serde(default)]
    pub residual: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("model config field \"{field}\" is {value}, but it must be between {min} and {max}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

/// What one layer of the pipeline is. Layer 0 is the embedding, layers
/// 1..=M the LSTMs; the output projection is not a pipeline layer because it
/// is split by song range into output shards instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Embedding,
    Lstm,
}

/// One named parameter and its shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
}

impl ParamSpec {
    fn new(name: impl Into<String>, shape: &[i64]) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    pub kind: LayerKind,
    pub params: Vec<ParamSpec>,
}

impl LayerSpec {
    /// f32 bytes of the layer's parameters.
    pub fn bytes(&self) -> u64 {
        self.params.iter().map(|p| p.elements() * 4).sum()
    }
}

impl ModelConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field, value: u32, max: u32| {
            if value == 0 || value > max {
                Err(ConfigError {
                    field,
                    value: value.into(),
                    min: 1,
                    max: max.into(),
                })
            } else {
                Ok(())
            }
        };
        check("catalogue_size", self.catalogue_size, MAX_CATALOGUE)?;
        check("embedding_dim", self.embedding_dim, MAX_DIM)?;
        check("hidden_dim", self.hidden_dim, MAX_DIM)?;
        check("lstm_layers", self.lstm_layers, MAX_LSTM_LAYERS)?;
        check("max_history", self.max_history, MAX_HISTORY)
    }

    /// The pipeline layers in order: the embedding, then each LSTM.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let (v, e, h) = (
            self.catalogue_size as i64,
            self.embedding_dim as i64,
            self.hidden_dim as i64,
        );
        let mut layers = vec![LayerSpec {
            kind: LayerKind::Embedding,
            params: vec![ParamSpec::new("embedding.weight", &[v, e])],
        }];
        for l in 0..self.lstm_layers {
            let input = if l == 0 { e } else { h };
            layers.push(LayerSpec {
                kind: LayerKind::Lstm,
                params: vec![
                    ParamSpec::new(format!("lstm.{l}.weight_ih"), &[4 * h, input]),
                    ParamSpec::new(format!("lstm.{l}.weight_hh"), &[4 * h, h]),
                    ParamSpec::new(format!("lstm.{l}.bias_ih"), &[4 * h]),
                    ParamSpec::new(format!("lstm.{l}.bias_hh"), &[4 * h]),
                ],
            });
        }
        layers
    }

    /// The output projection's parameters for the songs in `songs`.
    pub fn output_params(&self, songs: Range<u32>) -> Vec<ParamSpec> {
        let rows = (songs.end - songs.start) as i64;
        vec![
            ParamSpec::new(OUTPUT_WEIGHT, &[rows, self.hidden_dim as i64]),
            ParamSpec::new(OUTPUT_BIAS, &[rows]),
        ]
    }

    /// Every parameter of the whole model.
    pub fn all_params(&self) -> Vec<ParamSpec> {
        let mut params: Vec<ParamSpec> = self.layers().into_iter().flat_map(|l| l.params).collect();
        params.extend(self.output_params(0..self.catalogue_size));
        params
    }

    /// f32 bytes of the whole model.
    pub fn bytes(&self) -> u64 {
        self.all_params().iter().map(|p| p.elements() * 4).sum()
    }

    /// Width of the activations a layer produces.
    pub fn layer_output_dim(&self, layer: usize) -> u32 {
        if layer == 0 {
            self.embedding_dim
        } else {
            self.hidden_dim
        }
    }
}

pub const OUTPUT_WEIGHT: &str = "output.weight";
pub const OUTPUT_BIAS: &str = "output.bias";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeightsError {
    #[error("tensor \"{0}\" is missing")]
    Missing(String),
    #[error("tensor \"{0}\" is not part of this slice")]
    Unexpected(String),
    #[error("tensor \"{name}\" has shape {found:?}, but the model config says {expected:?}")]
    Shape {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("tensor \"{name}\" holds {found}, but Setlist stores f32")]
    Kind { name: String, found: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig {
            catalogue_size: 1000,
            embedding_dim: 32,
            hidden_dim: 64,
            lstm_layers: 2,
            max_history: 50,
            residual: false,
        }
    }

    #[test]
    fn layers_follow_the_architecture() {
        let layers = config().layers();
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[0].params[0].shape, vec![1000, 32]);
        assert_eq!(layers[1].params[0].shape, vec![256, 32]);
        assert_eq!(layers[2].params[0].shape, vec![256, 64]);
        assert_eq!(layers[2].params[1].name, "lstm.1.weight_hh");
    }

    #[test]
    fn bytes_count_every_parameter() {
        let c = config();
        let lstm0 = 256 * 32 + 256 * 64 + 2 * 256;
        let lstm1 = 256 * 64 + 256 * 64 + 2 * 256;
        let expected = 4 * (1000 * 32 + lstm0 + lstm1 + 1000 * 64 + 1000);
        assert_eq!(c.bytes(), expected as u64);
    }

    #[test]
    fn validation_names_the_field_and_the_limit() {
        let mut c = config();
        c.lstm_layers = 0;
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, "lstm_layers");
        assert_eq!(
            err.to_string(),
            "model config field \"lstm_layers\" is 0, but it must be between 1 and 16"
        );
        c.lstm_layers = 2;
        c.catalogue_size = MAX_CATALOGUE + 1;
        assert_eq!(c.validate().unwrap_err().field, "catalogue_size");
    }
}
