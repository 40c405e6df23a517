//! `setlist data`: import real playlist data, generate a synthetic data set,
//! and describe a data set folder.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use setlist_core::dataset::{
    self, Dataset, Format, ImportOptions, MAX_PLAYLIST_TRACKS, SessionOptions, SynthConfig,
};
use setlist_core::progress::Progress;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Import real playlist data (MPD slices, playlist CSV, Spotify 19k,
    /// Last.fm-1K) into a data set folder.
    Import(ImportArgs),
    /// Generate a synthetic data set with structure a model can learn; the
    /// same seed gives the same data set.
    Generate(GenerateArgs),
    /// Print the sizes and fingerprint of a data set folder.
    Stats(StatsArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// Format of the inputs; `auto` tells each file's format from its first
    /// line and extension.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Folder to write the data set into; created if needed, and an earlier
    /// data set there is replaced.
    #[arg(long)]
    out: PathBuf,
    /// Last.fm: a pause longer than this many minutes starts a new listening
    /// session.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=525_600))]
    session_gap_minutes: u64,
    /// Last.fm: sessions with fewer tracks than this are left out.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=MAX_PLAYLIST_TRACKS as u64))]
    min_session_tracks: u64,
    /// Files or folders to import; a folder's files of the format are read
    /// in name order. All inputs form one catalogue.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    /// Spotify Million Playlist Dataset slice JSON.
    Mpd,
    /// playlist_id,position,track_id,track_name,artist_name[,album_name]
    Csv,
    /// song_info_RA_19k.csv of the Spotify 19k editorial playlists.
    #[value(name = "spotify19k")]
    Spotify19k,
    /// Last.fm-1K listening histories (TSV), cut into sessions.
    #[value(name = "lastfm")]
    LastFm,
}

impl FormatArg {
    fn format(self) -> Option<Format> {
        match self {
            FormatArg::Auto => None,
            FormatArg::Mpd => Some(Format::Mpd),
            FormatArg::Csv => Some(Format::Csv),
            FormatArg::Spotify19k => Some(Format::Spotify19k),
            FormatArg::LastFm => Some(Format::LastFm),
        }
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Folder to write the data set into; created if needed, and an earlier
    /// data set there is replaced.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    /// Catalogue size.
    #[arg(long, default_value_t = SynthConfig::default().tracks as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    tracks: u64,
    #[arg(long, default_value_t = SynthConfig::default().playlists as u64, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    playlists: u64,
    /// Genres; playlists drift between neighbouring ones.
    #[arg(long, default_value_t = SynthConfig::default().genres as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    genres: u64,
    /// About the mean playlist length.
    #[arg(long, default_value_t = SynthConfig::default().mean_playlist_length as u64, value_parser = clap::value_parser!(u64).range(1..=MAX_PLAYLIST_TRACKS as u64))]
    mean_length: u64,
}

#[derive(Args)]
pub struct StatsArgs {
    /// A data set folder written by `setlist data import` or `generate`.
    dir: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(command: DataCommand, progress: &dyn Progress) -> Result<()> {
    match command {
        DataCommand::Import(args) => {
            let options = ImportOptions {
                format: args.format.format(),
                sessions: SessionOptions {
                    gap_seconds: args.session_gap_minutes * 60,
                    min_tracks: usize::try_from(args.min_session_tracks)?,
                },
            };
            let dataset = dataset::import(&args.inputs, &options, progress)
                .context("the import failed; nothing was written")?;
            save(&dataset, &args.out)
        }
        DataCommand::Generate(args) => {
            let config = SynthConfig {
                seed: args.seed,
                tracks: usize::try_from(args.tracks)?,
                playlists: usize::try_from(args.playlists)?,
                genres: usize::try_from(args.genres)?,
                mean_playlist_length: usize::try_from(args.mean_length)?,
                ..SynthConfig::default()
            };
            save(&dataset::generate(&config), &args.out)
        }
        DataCommand::Stats(args) => {
            let dataset = Dataset::load(&args.dir)
                .with_context(|| format!("cannot read the data set in {}", args.dir.display()))?;
            if args.json {
                println!("{}", summary_json(&dataset)?);
            } else {
                print!("{}", summary(&dataset));
            }
            Ok(())
        }
    }
}

fn save(dataset: &Dataset, out: &Path) -> Result<()> {
    dataset
        .save(out)
        .with_context(|| format!("cannot write the data set into {}", out.display()))?;
    println!("wrote {}", out.display());
    print!("{}", summary(dataset));
    Ok(())
}

fn summary(dataset: &Dataset) -> String {
    let s = dataset.stats();
    format!(
        "  source       {}\n  tracks       {}\n  playlists    {}\n  entries      {}\n  \
         lengths      {} min, {} median, {} max\n  artists      {}\n  fingerprint  {}\n",
        dataset.source,
        thousands(s.tracks),
        thousands(s.playlists),
        thousands(s.entries),
        thousands(s.min_length),
        s.median_length,
        thousands(s.max_length),
        thousands(s.artists),
        dataset.fingerprint()
    )
}

fn summary_json(dataset: &Dataset) -> Result<String> {
    let mut value = serde_json::to_value(dataset.stats())?;
    value["source"] = dataset.source.clone().into();
    value["fingerprint"] = dataset.fingerprint().into();
    Ok(serde_json::to_string_pretty(&value)?)
}

/// `1234567` as `1,234,567`, so counts read at a glance.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (354_350, "354,350"),
            (1_234_567, "1,234,567"),
        ];
        for (n, text) in cases {
            assert_eq!(thousands(n), text);
        }
    }
}
