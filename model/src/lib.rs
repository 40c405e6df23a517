//! The next-song model's arithmetic, in libtorch through `tch`: weights,
//! the forward pass, training, evaluation, slice files and the in-process
//! pipeline. Only compute nodes and the CLI link this crate; everything a
//! service needs without libtorch is in `setlist-core`.
//!
//! Parameters live in a flat map of named tensors, so the whole model, a
//! pipeline stage and an output shard are all "some of the named tensors"
//! and run through the same functions in [`ops`]. The names are part of the
//! slice file format; see [`ModelConfig::layers`].

pub mod artifact;
pub mod eval;
pub mod ops;
pub mod pipeline;
pub mod slice;
pub mod train;

use setlist_core::shape::{ModelConfig, OUTPUT_BIAS, ParamSpec, WeightsError};
use std::collections::BTreeMap;
use tch::Tensor;

/// Named parameters of (a part of) the model.
pub type Weights = BTreeMap<String, Tensor>;

/// Checks that `weights` holds exactly `expected`, with those shapes.
pub fn check_weights(weights: &Weights, expected: &[ParamSpec]) -> Result<(), WeightsError> {
    for spec in expected {
        let tensor = weights
            .get(&spec.name)
            .ok_or_else(|| WeightsError::Missing(spec.name.clone()))?;
        let shape = tensor.size();
        if shape != spec.shape {
            return Err(WeightsError::Shape {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                found: shape,
            });
        }
        if tensor.kind() != tch::Kind::Float {
            return Err(WeightsError::Kind {
                name: spec.name.clone(),
                found: format!("{:?}", tensor.kind()),
            });
        }
    }
    if let Some(extra) = weights
        .keys()
        .find(|name| !expected.iter().any(|s| &s.name == *name))
    {
        return Err(WeightsError::Unexpected(extra.clone()));
    }
    Ok(())
}

/// Fresh weights for `config`, seeded: the starting point of training, and
/// the "random-weight model" of tests and benchmarks. With `popularity`
/// (training playlists per song) the output bias starts at the centred log
/// popularity, so the untrained model already ranks like the popularity
/// baseline and training learns only what differs from it.
pub fn initial_weights(config: &ModelConfig, popularity: Option<&[u32]>, seed: u64) -> Weights {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(seed as i64);
    let bound = 1.0 / (config.hidden_dim as f64).sqrt();
    let hidden = config.hidden_dim as i64;
    config
        .all_params()
        .into_iter()
        .map(|spec| {
            let options = (tch::Kind::Float, tch::Device::Cpu);
            let tensor = match spec.name.as_str() {
                "embedding.weight" => Tensor::randn(spec.shape.as_slice(), options) * 0.1,
                OUTPUT_BIAS => match popularity {
                    Some(counts) => {
                        let log: Vec<f32> = counts.iter().map(|&c| (c as f32 + 1.0).ln()).collect();
                        let log = Tensor::from_slice(&log);
                        &log - log.mean(tch::Kind::Float)
                    }
                    None => Tensor::randn(spec.shape.as_slice(), options) * 0.1,
                },
                name => {
                    let t = Tensor::rand(spec.shape.as_slice(), options) * (2.0 * bound) - bound;
                    if name.ends_with(".bias_ih") {
                        // A forget-gate bias of 1 keeps early context alive while training starts.
                        let _ = t.narrow(0, hidden, hidden).fill_(1.0);
                    }
                    t
                }
            };
            (spec.name, tensor)
        })
        .collect()
}
