//! `setlist publish`: puts a slices directory where compute nodes, the
//! dispatcher and the search API fetch it from (`--slices URI`): object
//! storage, an HTTP server that takes PUT, or a mounted volume (file://).

use anyhow::{Context, Result};
use clap::Args;
use setlist_core::artifact;
use setlist_core::slice::{SliceManifest, SliceSet, parts};
use setlist_service::slices::{CATALOGUE, MANIFEST, SliceSource};
use std::path::PathBuf;

#[derive(Args)]
pub struct PublishArgs {
    /// The slices directory, as `setlist slice` wrote it.
    #[arg(long)]
    slices: PathBuf,
    /// Where to put it: file:///abs/dir, http(s)://host/path,
    /// s3://bucket/prefix, gs://bucket/prefix or az://container/prefix
    /// (credentials from the environment: AWS_*, GOOGLE_*, AZURE_*).
    #[arg(long)]
    to: String,
    /// Replace the slices of another model version published at the same URI
    /// (nodes reading them meanwhile refuse the mix by its checksums).
    #[arg(long)]
    force: bool,
}

/// Every file of the slices, in the order they are uploaded: the manifest
/// last, so a reader that finds a manifest finds every file it names.
fn upload_order(manifest: &SliceManifest) -> Vec<String> {
    std::iter::once(CATALOGUE.to_string())
        .chain(manifest.slices.iter().map(|e| e.file.clone()))
        .chain([MANIFEST.to_string()])
        .collect()
}

/// Refuses to replace the manifest of another model version without
/// `force`: readers of that version would find their files gone.
fn check_overwrite(
    published: Option<&str>,
    ours: &str,
    force: bool,
    to: &str,
) -> Result<(), String> {
    match published {
        Some(theirs) if theirs != ours && !force => Err(format!(
            "{to} holds the slices of model version {theirs}; publishing {ours} there would replace them under whoever reads them: publish to another URI (one per model version), or pass --force"
        )),
        _ => Ok(()),
    }
}

/// The slices directory, opened and with every file's sha256 checked.
fn verified(dir: &std::path::Path) -> Result<SliceSet> {
    let set =
        SliceSet::open(dir, None).with_context(|| format!("cannot publish {}", dir.display()))?;
    for part in parts(&set.manifest.plan) {
        set.verified_part(part)?;
    }
    artifact::verify_file(&dir.join(CATALOGUE), &set.manifest.catalogue_sha256)?;
    Ok(set)
}

pub fn run(args: PublishArgs) -> Result<()> {
    let SliceSource::Remote(to) = SliceSource::parse(&args.to)? else {
        anyhow::bail!(
            "--to {}: give a URI, e.g. file:///absolute/path for a folder, or s3://bucket/prefix",
            args.to
        );
    };
    let set = verified(&args.slices)?;
    let version = &set.manifest.model_version;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = to.open()?;
        match store.published_manifest().await {
            Ok(published) => check_overwrite(
                published.as_ref().map(|m| m.model_version.as_str()),
                version,
                args.force,
                &to.to_string(),
            )
            .map_err(anyhow::Error::msg)?,
            Err(error) if !args.force => {
                return Err(anyhow::Error::new(error).context(format!(
                    "cannot tell what {} holds now; pass --force to replace it",
                    store.uri(MANIFEST)
                )));
            }
            Err(_) => {}
        }
        for name in upload_order(&set.manifest) {
            let bytes = store.upload(&set.dir.join(&name), &name).await?;
            println!("uploaded {} ({bytes} bytes)", store.uri(&name));
        }
        anyhow::Ok(())
    })?;
    println!("published model {version} to {to}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::plan::PartitionPlan;
    use setlist_core::shape::ModelConfig;
    use setlist_core::slice::{FORMAT_VERSION, SLICES_FORMAT, SliceEntry};

    #[test]
    fn the_manifest_is_uploaded_last_after_every_file_it_names() {
        let config = ModelConfig {
            catalogue_size: 100,
            embedding_dim: 8,
            hidden_dim: 8,
            lstm_layers: 2,
            max_history: 10,
            residual: false,
        };
        let plan = PartitionPlan::new(&config, 2, 2).unwrap();
        let slices = parts(&plan)
            .map(|part| SliceEntry {
                part,
                file: format!("{part}.safetensors"),
                sha256: String::new(),
                bytes: 0,
                tensors: Vec::new(),
            })
            .collect();
        let manifest = SliceManifest {
            format: SLICES_FORMAT.into(),
            format_version: FORMAT_VERSION,
            model_version: "mtest".into(),
            config,
            plan,
            slices,
            catalogue_sha256: String::new(),
        };
        assert_eq!(
            upload_order(&manifest),
            [
                "catalogue.jsonl",
                "stage-0.safetensors",
                "stage-1.safetensors",
                "shard-0.safetensors",
                "shard-1.safetensors",
                "manifest.json"
            ]
        );
    }

    #[test]
    fn another_versions_slices_are_replaced_only_with_force() {
        assert_eq!(check_overwrite(None, "m2", false, "s3://b/p"), Ok(()));
        assert_eq!(check_overwrite(Some("m2"), "m2", false, "s3://b/p"), Ok(()));
        assert_eq!(check_overwrite(Some("m1"), "m2", true, "s3://b/p"), Ok(()));
        let error = check_overwrite(Some("m1"), "m2", false, "s3://b/p").unwrap_err();
        assert_eq!(
            error,
            "s3://b/p holds the slices of model version m1; publishing m2 there would replace them under whoever reads them: publish to another URI (one per model version), or pass --force"
        );
    }
}
