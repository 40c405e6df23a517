//! `setlist plan` and `setlist slice`.

use anyhow::{Context, Result};
use clap::Args;
use setlist_core::plan::PartitionPlan;
use setlist_core::slice::SliceSet;
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

fn load(args: &PlanArgs) -> Result<(Model, PartitionPlan)> {
    let model = Model::load(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    let plan = PartitionPlan::new(&model.config, args.stages, args.output_shards)?;
    Ok((model, plan))
}

pub fn run_plan(args: PlanArgs) -> Result<()> {
    let (model, plan) = load(&args)?;
    println!(
        "model {}: {:.2} MiB in all; largest part {:.2} MiB",
        model.manifest.model_version,
        model.config.bytes() as f64 / (1 << 20) as f64,
        plan.largest_part_bytes() as f64 / (1 << 20) as f64
    );
    print!("{plan}");
    Ok(())
}

pub fn run_slice(args: SliceArgs) -> Result<()> {
    let (model, plan) = load(&args.plan)?;
    let manifest = setlist_model::slice::write_slices(&model, &plan, &args.out)?;
    print!("{plan}");
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
