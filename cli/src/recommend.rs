//! `setlist recommend`: batch (offline) scoring of JSONL queries.

use anyhow::{Context, Result};
use clap::Args;
use setlist_core::query::{self, BatchAnswer, BatchError, BatchQuery, Limits};
use setlist_core::slice::SliceSet;
use setlist_model::artifact::Model;
use setlist_model::ops::RowQuery;
use setlist_model::pipeline::{LocalPipeline, Recommender};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "slices"])))]
pub struct RecommendArgs {
    /// Model directory: score with the whole model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Slice directory: score through the partitioned pipeline, in process.
    #[arg(long)]
    slices: Option<PathBuf>,
    /// JSONL queries, one `{"id": "...", "tracks": ["<track id>", ...]}` per line ("-" for stdin).
    #[arg(long)]
    input: PathBuf,
    /// Recommendations per query.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// JSONL answers, one line per input line, in input order ("-" for stdout).
    #[arg(long)]
    output: PathBuf,
    /// Queries scored per forward pass.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch: u64,
}

/// A parsed input line waiting for its batch.
enum Pending {
    Query {
        query: BatchQuery,
        known: Vec<u32>,
        unknown: usize,
    },
    Invalid(BatchError),
}

pub fn run(args: RecommendArgs) -> Result<()> {
    let limits = Limits::default();
    limits.check_k(args.k).context("--k is out of range")?;
    let recommender: Box<dyn Recommender> = match (&args.model, &args.slices) {
        (Some(dir), _) => Box::new(
            Model::load(dir).with_context(|| format!("cannot load the model {}", dir.display()))?,
        ),
        (None, Some(dir)) => {
            let set = SliceSet::open(dir, None)
                .with_context(|| format!("cannot open the slices {}", dir.display()))?;
            Box::new(LocalPipeline::load(&set)?)
        }
        (None, None) => unreachable!("clap requires --model or --slices"),
    };
    let input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(
            File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?,
        )
    };
    let output: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(
            File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        )
    };
    let mut out = BufWriter::new(output);
    let mut reader = BufReader::new(input);
    let catalogue = recommender.catalogue();
    let (mut lines, mut invalid, mut fallbacks, mut unknown_total) =
        (0usize, 0usize, 0usize, 0usize);
    let mut pending: Vec<Pending> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        // Read at most one byte past the limit, so a huge line is refused
        // without holding it in memory.
        let read = (&mut reader)
            .take(limits.max_request_bytes as u64 + 1)
            .read_line(&mut line)
            .with_context(|| format!("cannot read {} line {}", args.input.display(), lines + 1))?;
        let end_of_input = read == 0;
        if !end_of_input {
            lines += 1;
            if line.len() > limits.max_request_bytes && !line.ends_with('\n') {
                skip_rest_of_line(&mut reader)?;
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                pending.push(match limits.parse_line(text, args.k) {
                    Ok(query) => {
                        let resolved = query::resolve(catalogue, &query.tracks);
                        unknown_total += resolved.unknown.len();
                        Pending::Query {
                            unknown: resolved.unknown.len(),
                            known: resolved.known,
                            query,
                        }
                    }
                    Err(e) => {
                        invalid += 1;
                        Pending::Invalid(BatchError {
                            id: query_id(text),
                            line: lines,
                            error: e.to_string(),
                        })
                    }
                });
            }
        }
        if pending.len() >= args.batch as usize || (end_of_input && !pending.is_empty()) {
            fallbacks += answer_batch(recommender.as_ref(), args.k, &mut pending, &mut out)?;
        }
        if end_of_input {
            break;
        }
    }
    out.flush()?;
    eprintln!(
        "{lines} lines: {} answered ({fallbacks} by the popularity fallback), {invalid} invalid; {unknown_total} unknown track ids ignored",
        lines - invalid
    );
    anyhow::ensure!(
        invalid == 0,
        "{invalid} input lines were invalid; their output lines carry an \"error\""
    );
    Ok(())
}

fn skip_rest_of_line(reader: &mut impl BufRead) -> Result<()> {
    let mut sink = Vec::new();
    reader.read_until(b'\n', &mut sink)?;
    Ok(())
}

/// The id of a line that failed validation, when it has one, so the error
/// line can be matched to its query.
fn query_id(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(value.get("id")?.as_str()?.chars().take(512).collect())
}

/// Scores the pending queries in one forward pass and writes every pending
/// line's answer in input order. Returns how many used the fallback.
fn answer_batch(
    recommender: &dyn Recommender,
    k: usize,
    pending: &mut Vec<Pending>,
    out: &mut impl Write,
) -> Result<usize> {
    let scored_rows: Vec<(&[u32], RowQuery)> = pending
        .iter()
        .filter_map(|p| match p {
            Pending::Query { known, .. } if !known.is_empty() => {
                Some((known.as_slice(), RowQuery { k, exclude: known }))
            }
            _ => None,
        })
        .collect();
    let histories: Vec<&[u32]> = scored_rows.iter().map(|(h, _)| *h).collect();
    let queries: Vec<RowQuery> = scored_rows.iter().map(|(_, q)| *q).collect();
    let mut scored = if histories.is_empty() {
        Vec::new()
    } else {
        recommender.recommend(&histories, &queries)?
    }
    .into_iter();
    let catalogue = recommender.catalogue();
    let mut fallbacks = 0;
    for p in pending.drain(..) {
        match p {
            Pending::Query {
                query,
                known,
                unknown,
            } => {
                let fallback = known.is_empty();
                let best = if fallback {
                    fallbacks += 1;
                    catalogue.popular(k, &[])
                } else {
                    scored.next().expect("one answer per scored query")
                };
                let answer = BatchAnswer {
                    id: query.id,
                    recommendations: query::recommendations(catalogue, &best),
                    fallback,
                    unknown_tracks: unknown,
                };
                serde_json::to_writer(&mut *out, &answer)?;
            }
            Pending::Invalid(error) => serde_json::to_writer(&mut *out, &error)?,
        }
        out.write_all(b"\n")?;
    }
    Ok(fallbacks)
}
