//! The promise of partitioning: for every number of stages and output shards
//! the plan allows, the pipeline of slices gives the same top-k as the whole
//! model, with scores within 1e-5.

use setlist_core::plan::PartitionPlan;
use setlist_core::shape::ModelConfig;
use setlist_core::slice::{SliceError, SliceSet};
use setlist_model::artifact::Model;
use setlist_model::ops::{RowQuery, Scored};
use setlist_model::pipeline::{self, LocalPipeline, Recommender};
use setlist_model::slice::{self, LoadParts};

const TOLERANCE: f32 = 1e-5;

fn small_model(seed: u64) -> Model {
    let config = ModelConfig {
        catalogue_size: 97,
        embedding_dim: 12,
        hidden_dim: 20,
        lstm_layers: 3,
        max_history: 9,
        residual: false,
    };
    Model::random(config, seed).unwrap()
}

/// Equal widths, so every LSTM layer, the first included, has a skip connection.
fn residual_model(seed: u64) -> Model {
    let config = ModelConfig {
        embedding_dim: 20,
        residual: true,
        ..small_model(seed).config
    };
    Model::random(config, seed).unwrap()
}

fn tracks(list: &[Scored]) -> Vec<u32> {
    list.iter().map(|s| s.track).collect()
}

#[test]
fn every_allowed_plan_matches_the_whole_model() {
    assert_every_plan_matches(&small_model(11), 1..=97);
}

#[test]
fn skip_connections_survive_every_stage_boundary() {
    let model = residual_model(13);
    let plain = ModelConfig {
        residual: false,
        ..model.config.clone()
    };
    // The same seed and shapes give the same weights.
    let without = Model::random(plain, 13).unwrap();
    let history: &[u32] = &[4, 8, 15, 16];
    let q = [RowQuery {
        k: 10,
        exclude: history,
    }];
    assert_ne!(
        model.recommend(&[history], &q),
        without.recommend(&[history], &q),
        "the skip connections change the arithmetic"
    );
    assert_every_plan_matches(&model, [1, 2, 5, 97]);
}

fn assert_every_plan_matches(model: &Model, shard_counts: impl IntoIterator<Item = u32> + Clone) {
    let histories = pipeline::random_histories(97, 24, 15, 5);
    let max_stages = PartitionPlan::max_stages(&model.config);
    let max_shards = PartitionPlan::max_output_shards(&model.config);
    assert_eq!((max_stages, max_shards), (4, 97));
    for stages in 1..=max_stages {
        for shards in shard_counts.clone() {
            let plan = PartitionPlan::new(&model.config, stages, shards).unwrap();
            let sliced = LocalPipeline::from_model(model, &plan);
            let agreement = pipeline::compare(model, &sliced, &histories, 20).unwrap();
            assert!(
                agreement.holds(TOLERANCE),
                "{stages} stages, {shards} shards: {agreement:?}"
            );
        }
    }
}

#[test]
fn k_larger_than_a_shard_and_than_the_catalogue_still_merges_correctly() {
    let model = small_model(3);
    let plan = PartitionPlan::new(&model.config, 2, 10).unwrap();
    let sliced = LocalPipeline::from_model(&model, &plan);
    let history: &[u32] = &[1, 2, 3];
    for k in [15, 94, 200] {
        let q = [RowQuery {
            k,
            exclude: history,
        }];
        let whole = model.recommend(&[history], &q);
        let parts = Recommender::recommend(&sliced, &[history], &q).unwrap();
        assert_eq!(whole[0].len(), k.min(94), "k = {k}");
        assert_eq!(tracks(&whole[0]), tracks(&parts[0]), "k = {k}");
        assert!(
            !tracks(&whole[0]).iter().any(|t| history.contains(t)),
            "the input is never recommended"
        );
    }
}

#[test]
fn slice_files_round_trip_and_match_the_whole_model() {
    let model = small_model(7);
    let dir = tempfile::tempdir().unwrap();
    let plan = PartitionPlan::new(&model.config, 3, 4).unwrap();
    let out = dir.path().join("slices");
    let manifest = slice::write_slices(&model, &plan, &out).unwrap();
    assert_eq!(manifest.slices.len(), 7);
    let set = SliceSet::open(&out, Some(&model.manifest.model_version)).unwrap();
    let loaded = LocalPipeline::load(&set).unwrap();
    let histories = pipeline::random_histories(97, 64, 20, 9);
    let agreement = pipeline::compare(&model, &loaded, &histories, 20).unwrap();
    assert!(agreement.holds(TOLERANCE), "{agreement:?}");
    // Each shard file holds only its own rows (plus a small header).
    let shard_bytes: u64 = manifest
        .slices
        .iter()
        .filter(|s| s.file.starts_with("shard"))
        .map(|s| s.bytes)
        .sum();
    let output_bytes = (97 * 20 + 97) * 4;
    assert!(
        shard_bytes < output_bytes + 4 * 1024,
        "{shard_bytes} bytes of shards for {output_bytes} of output"
    );
}

#[test]
fn f16_activations_stay_close_but_are_not_promised_exact() {
    let model = small_model(5);
    let plan = PartitionPlan::new(&model.config, 4, 2).unwrap();
    let mut sliced = LocalPipeline::from_model(&model, &plan);
    sliced.half = true;
    let histories = pipeline::random_histories(97, 32, 9, 2);
    let agreement = pipeline::compare(&model, &sliced, &histories, 20).unwrap();
    assert!(agreement.max_score_difference < 1e-2, "{agreement:?}");
}

#[test]
fn a_slice_refuses_a_wrong_version_checksum_or_shape() {
    let model = small_model(13);
    let dir = tempfile::tempdir().unwrap();
    let plan = PartitionPlan::new(&model.config, 2, 2).unwrap();
    let out = dir.path().join("slices");
    slice::write_slices(&model, &plan, &out).unwrap();

    let err = SliceSet::open(&out, Some("m000000000000")).unwrap_err();
    assert!(matches!(err, SliceError::WrongVersion { .. }), "{err}");
    assert!(
        err.to_string().contains("this node serves m000000000000"),
        "{err}"
    );

    let set = SliceSet::open(&out, None).unwrap();
    let err = set.load_stage(2).err().expect("there is no stage 2");
    assert!(err.to_string().contains("the plan has no stage-2"), "{err}");

    // A flipped byte in a slice file: the checksum catches it.
    let file = out.join("stage-1.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let err = set.load_stage(1).err().expect("a damaged slice is refused");
    assert!(err.to_string().contains("the file is damaged"), "{err}");

    // A slice swapped for another with a matching checksum but the wrong tensors.
    let manifest_path = out.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let shard0 = out.join("shard-0.safetensors");
    std::fs::copy(out.join("stage-0.safetensors"), &shard0).unwrap();
    let sha = setlist_core::artifact::sha256_file(&shard0).unwrap();
    for s in manifest["slices"].as_array_mut().unwrap() {
        if s["file"] == "shard-0.safetensors" {
            s["sha256"] = serde_json::Value::String(sha.clone());
        }
    }
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    let set = SliceSet::open(&out, None).unwrap();
    let err = set
        .load_shard(0)
        .err()
        .expect("a slice with the wrong tensors is refused");
    assert!(err.to_string().contains("is missing"), "{err}");
}
