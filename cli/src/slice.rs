//! `setlist plan` and `setlist slice`.

use anyhow::{Context, Result};
use clap::Args;
use setlist_core::plan::{
    DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_MESSAGE_BYTES, FrameBatch, LinkFrames, PartitionPlan,
};
use setlist_core::slice::SliceSet;
use setlist_core::wire::Limits;
use setlist_model::artifact::Model;
use setlist_model::pipeline::{self, LocalPipeline};
use std::path::PathBuf;

#[derive(Args)]
pub struct PlanArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Pipeline stages (compute nodes in a chain).
    #[arg(long, default_value_t = 3)]
    stages: u32,
    /// Song-range shards of the output projection.
    #[arg(long, default_value_t = 2)]
    output_shards: u32,
    /// The largest Kafka message the nodes and the dispatcher will produce
    /// (their max_message_bytes): every request must fit one.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Requests per batch the frame sizes are shown for (the nodes' max_batch_rows).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_ROWS)]
    max_batch_rows: usize,
    /// Size the stages' activations as f16 (the nodes' half_precision).
    #[arg(long)]
    half_precision: bool,
}

#[derive(Args)]
pub struct SliceArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Where to write the slices; it must not exist yet.
    #[arg(long)]
    out: PathBuf,
    /// Random histories checked against the whole model after slicing (0 skips the check).
    #[arg(long, default_value_t = 256)]
    verify: usize,
}

/// Partitioned scores may differ from the whole model's by float rounding
/// only; this is the promise docs/wire-format.md and the README make.
pub const SCORE_TOLERANCE: f32 = 1e-5;

fn load(args: &PlanArgs) -> Result<(Model, PartitionPlan, Vec<LinkFrames>)> {
    anyhow::ensure!(
        (1..=Limits::V1.max_rows).contains(&args.max_batch_rows),
        "--max-batch-rows is {}; it must be between 1 and {}",
        args.max_batch_rows,
        Limits::V1.max_rows
    );
    let model = Model::load(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    let plan = PartitionPlan::new(&model.config, args.stages, args.output_shards)?;
    let batch = FrameBatch {
        rows: args.max_batch_rows,
        half_precision: args.half_precision,
    };
    let frames = plan.frame_sizes(&model.config, batch);
    Ok((model, plan, frames))
}

/// The largest frame on each link, and how many messages of at most
/// `max_message_bytes` a batch of them takes.
fn frames_text(frames: &[LinkFrames], max_message_bytes: usize) -> String {
    let mut text = format!(
        "largest frames (every position, exclusion and hop the wire format allows), against max_message_bytes {max_message_bytes}:\n"
    );
    for link in frames {
        let messages = link
            .messages(max_message_bytes)
            .map_or("does not fit".to_string(), |n| match n {
                1 => "1 message".to_string(),
                n => format!("{n} messages"),
            });
        text.push_str(&format!("  {link}: {messages}\n"));
    }
    text
}

/// Prints the plan and its largest frames, and refuses a plan one of whose
/// requests cannot fit a Kafka message: its nodes would refuse their slices.
fn show(plan: &PartitionPlan, frames: &[LinkFrames], args: &PlanArgs) -> Result<()> {
    print!("{plan}");
    print!("{}", frames_text(frames, args.max_message_bytes));
    for link in frames {
        link.check(args.max_message_bytes, "--max-message-bytes")?;
    }
    Ok(())
}

pub fn run_plan(args: PlanArgs) -> Result<()> {
    let (model, plan, frames) = load(&args)?;
    println!(
        "model {}: {:.2} MiB in all; largest part {:.2} MiB",
        model.manifest.model_version,
        model.config.bytes() as f64 / (1 << 20) as f64,
        plan.largest_part_bytes() as f64 / (1 << 20) as f64
    );
    show(&plan, &frames, &args)
}

pub fn run_slice(args: SliceArgs) -> Result<()> {
    let (model, plan, frames) = load(&args.plan)?;
    show(&plan, &frames, &args.plan)?;
    let manifest = setlist_model::slice::write_slices(&model, &plan, &args.out)?;
    println!(
        "wrote {} slices of model {} to {}",
        manifest.slices.len(),
        manifest.model_version,
        args.out.display()
    );
    if args.verify > 0 {
        // Re-read what was written, so the check covers the files, their
        // checksums and the wire format, not just the arithmetic.
        let set = SliceSet::open(&args.out, Some(&manifest.model_version))?;
        let sliced = LocalPipeline::load(&set)?;
        let max_len = model.config.max_history as usize;
        let histories =
            pipeline::random_histories(model.config.catalogue_size, args.verify, max_len, 1);
        let agreement = pipeline::compare(&model, &sliced, &histories, 20)?;
        anyhow::ensure!(
            agreement.holds(SCORE_TOLERANCE),
            "the slices disagree with the whole model: {agreement:?}; this is a bug, please report it"
        );
        println!(
            "verified: {} random histories give the same top-20 as the whole model (largest score difference {:.1e})",
            agreement.histories, agreement.max_score_difference
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::shape::ModelConfig;

    #[test]
    fn every_link_is_shown_and_one_that_cannot_fit_is_named() {
        let config = ModelConfig {
            catalogue_size: 1000,
            embedding_dim: 16,
            hidden_dim: 32,
            lstm_layers: 2,
            max_history: 50,
            residual: false,
        };
        let plan = PartitionPlan::new(&config, 2, 2).unwrap();
        let batch = FrameBatch {
            rows: 64,
            half_precision: false,
        };
        let frames = plan.frame_sizes(&config, batch);
        let text = frames_text(&frames, 1_000_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[1].starts_with("  dispatcher -> stage 0 "), "{text}");
        assert!(lines[2].contains("50 x 16 f32 values"), "{text}");
        assert!(lines[4].ends_with(": 4 messages"), "{text}");
        // 44 000 bytes hold a request of track ids, not one of activations.
        let text = frames_text(&frames, 44_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].ends_with(": 64 messages"),
            "one request each: {text}"
        );
        assert!(lines[2].ends_with(": does not fit"), "{text}");
        let error = frames
            .iter()
            .find_map(|f| f.check(44_000, "--max-message-bytes").err())
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("one request on the link stage 0 -> stage 1 can be "),
            "{error}"
        );
        assert!(error.contains("raise --max-message-bytes"), "{error}");
    }
}
