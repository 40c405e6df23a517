//! Synthetic playlists with structure a next-song model can learn, for demos
//! and tests where no real data is at hand.
//!
//! The catalogue: genres on a ring (each has two neighbours); artists belong
//! to a genre; each artist has albums with ordered track lists; popularity is
//! Zipf-like (the r-th most popular track is drawn with weight 1/r), and
//! popular artists have more popular tracks. A playlist starts in
//! one genre and drifts to neighbouring genres as it goes; it often plays a
//! few tracks of one album in album order, or a run of one artist.
//!
//! Generation is bit-for-bit reproducible for a seed on every platform: one
//! ChaCha8 stream, integer ranges of fixed width, and only the float
//! operations IEEE 754 defines exactly (no `exp`, `ln` or `powf`).

use super::{Dataset, DatasetBuilder, MAX_PLAYLIST_TRACKS, MAX_TRACKS};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub seed: u64,
    /// Catalogue size (at least 1).
    pub tracks: usize,
    pub playlists: usize,
    /// Genres on the ring (at least 1; fewer if there are fewer artists).
    pub genres: usize,
    /// About the mean length; most playlists fall between the minimum and
    /// twice the mean, and one in ten runs longer, up to the maximum.
    pub mean_playlist_length: usize,
    pub min_playlist_length: usize,
    pub max_playlist_length: usize,
}

impl Default for SynthConfig {
    /// Sized for a demo that trains in a minute or two.
    fn default() -> Self {
        SynthConfig {
            seed: 42,
            tracks: 5_000,
            playlists: 3_000,
            genres: 12,
            mean_playlist_length: 40,
            min_playlist_length: 5,
            max_playlist_length: 120,
        }
    }
}

/// Chance per block of tracks that the playlist moves to a neighbouring genre.
const DRIFT: f64 = 0.08;
const ALBUM_SIZES: Range<u64> = 6..15;
const ALBUMS_PER_ARTIST: usize = 3;

/// Generates the data set `config` describes. Settings out of range are
/// brought into range (see [`SynthConfig`]) rather than refused.
pub fn generate(config: &SynthConfig) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let catalogue = Catalogue::new(config, &mut rng);
    let source = format!(
        "synthetic (seed {}, {} tracks, {} playlists, {} genres, mean length {})",
        config.seed,
        catalogue.tracks.len(),
        config.playlists,
        catalogue.genres.len(),
        config.mean_playlist_length
    );
    let mut builder = DatasetBuilder::new(source);
    for (i, track) in catalogue.tracks.iter().enumerate() {
        let album = &catalogue.albums[track.album];
        let artist = &catalogue.artists[album.artist].name;
        builder.track(
            &format!("synth:track:{i:06}"),
            &track.title,
            artist,
            Some(&album.name),
        );
    }
    let lengths = Lengths::new(config, catalogue.tracks.len());
    for i in 0..config.playlists {
        let (genre, tracks) = catalogue.playlist(&lengths, &mut rng);
        let name = format!("{} {}", catalogue.genres[genre].name, word(&mut rng, 2..3));
        builder.playlist(format!("synth:playlist:{i:06}"), Some(name), tracks);
    }
    builder.finish()
}

struct SynthTrack {
    title: String,
    album: usize,
    genre: usize,
}

struct Album {
    name: String,
    artist: usize,
    /// Catalogue indices, in album order.
    tracks: Range<usize>,
}

struct Artist {
    name: String,
    genre: usize,
    tracks: Weighted,
}

struct Genre {
    name: String,
    tracks: Weighted,
    albums: Weighted,
    artists: Weighted,
}

struct Catalogue {
    tracks: Vec<SynthTrack>,
    albums: Vec<Album>,
    artists: Vec<Artist>,
    genres: Vec<Genre>,
}

impl Catalogue {
    fn new(config: &SynthConfig, rng: &mut ChaCha8Rng) -> Catalogue {
        let total = config.tracks.clamp(1, MAX_TRACKS);
        let mut sizes = Vec::new();
        let mut assigned = 0;
        while assigned < total {
            let size = (rng.random_range(ALBUM_SIZES.clone()) as usize).min(total - assigned);
            sizes.push(size);
            assigned += size;
        }
        let artist_count = (sizes.len() / ALBUMS_PER_ARTIST)
            .max(config.genres.min(sizes.len()))
            .max(1);
        let genre_count = config.genres.clamp(1, artist_count);

        // Zipf-like artist popularity over a random ranking.
        let mut ranking: Vec<usize> = (0..artist_count).collect();
        shuffle(&mut ranking, rng);
        let mut popularity = vec![0.0; artist_count];
        for (rank, &artist) in ranking.iter().enumerate() {
            popularity[artist] = 1.0 / (rank + 1) as f64;
        }
        let artist_genres: Vec<usize> = (0..artist_count)
            .map(|a| {
                if a < genre_count {
                    a
                } else {
                    below(rng, genre_count)
                }
            })
            .collect();

        // Every artist gets an album; popular artists get more of the rest.
        let by_popularity = Weighted::new((0..artist_count).collect(), popularity.clone());
        let mut owners: Vec<(usize, usize)> = (0..sizes.len())
            .map(|album| {
                (
                    if album < artist_count {
                        album
                    } else {
                        by_popularity.pick(rng)
                    },
                    album,
                )
            })
            .collect();
        // Catalogue order is artist by artist, album by album, in album
        // order, so an album's tracks have consecutive indices.
        owners.sort_unstable();

        let mut names = HashSet::new();
        let artist_names: Vec<String> = (0..artist_count)
            .map(|_| unique(&mut names, rng, artist_name))
            .collect();
        let mut tracks = Vec::with_capacity(total);
        let mut albums = Vec::with_capacity(sizes.len());
        let mut scores = Vec::with_capacity(total);
        for &(artist, album) in &owners {
            let start = tracks.len();
            let single = below(rng, sizes[album]);
            for position in 0..sizes[album] {
                let title = phrase(rng, 3);
                tracks.push(SynthTrack {
                    title,
                    album: albums.len(),
                    genre: artist_genres[artist],
                });
                let lead = if position == single { 4.0 } else { 1.0 };
                scores.push(popularity[artist] * lead * (0.5 + rng.random::<f64>()));
            }
            let name = phrase(rng, 3);
            albums.push(Album {
                name,
                artist,
                tracks: start..tracks.len(),
            });
        }

        // Zipf over tracks, ranked by their artist's popularity with some luck.
        let mut order: Vec<usize> = (0..total).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut weight = vec![0.0; total];
        for (rank, &track) in order.iter().enumerate() {
            weight[track] = 1.0 / (rank + 1) as f64;
        }

        let album_weight = |album: &Album| album.tracks.clone().map(|t| weight[t]).sum::<f64>();
        let artists: Vec<Artist> = artist_names
            .into_iter()
            .enumerate()
            .map(|(a, name)| {
                let own: Vec<usize> = albums
                    .iter()
                    .filter(|al| al.artist == a)
                    .flat_map(|al| al.tracks.clone())
                    .collect();
                let weights = own.iter().map(|&t| weight[t]).collect();
                Artist {
                    name,
                    genre: artist_genres[a],
                    tracks: Weighted::new(own, weights),
                }
            })
            .collect();
        let mut genre_names = HashSet::new();
        let genres = (0..genre_count)
            .map(|g| {
                let own_tracks: Vec<usize> = (0..total).filter(|&t| tracks[t].genre == g).collect();
                let own_albums: Vec<usize> = (0..albums.len())
                    .filter(|&al| artists[albums[al].artist].genre == g)
                    .collect();
                let own_artists: Vec<usize> = (0..artist_count)
                    .filter(|&a| artists[a].genre == g)
                    .collect();
                Genre {
                    name: unique(&mut genre_names, rng, genre_name),
                    tracks: Weighted::new(
                        own_tracks.clone(),
                        own_tracks.iter().map(|&t| weight[t]).collect(),
                    ),
                    albums: Weighted::new(
                        own_albums.clone(),
                        own_albums
                            .iter()
                            .map(|&al| album_weight(&albums[al]))
                            .collect(),
                    ),
                    artists: Weighted::new(
                        own_artists.clone(),
                        own_artists
                            .iter()
                            .map(|&a| artists[a].tracks.total())
                            .collect(),
                    ),
                }
            })
            .collect();
        Catalogue {
            tracks,
            albums,
            artists,
            genres,
        }
    }

    /// One playlist: its starting genre and its tracks, without repeats.
    fn playlist(&self, lengths: &Lengths, rng: &mut ChaCha8Rng) -> (usize, Vec<u32>) {
        let length = lengths.sample(rng);
        let start = below(rng, self.genres.len());
        let mut genre = start;
        let mut tracks = Vec::with_capacity(length);
        let mut used = HashSet::with_capacity(length);
        let mut push = |track: usize, tracks: &mut Vec<u32>| {
            if tracks.len() < length && used.insert(track) {
                tracks.push(track as u32);
            }
        };
        // Popular tracks repeat, so a few draws come up empty; the bound
        // only matters for a catalogue smaller than the playlist.
        for _ in 0..length * 4 + 20 {
            if tracks.len() >= length {
                break;
            }
            if !tracks.is_empty() && rng.random_bool(DRIFT) {
                genre = self.neighbour(genre, rng);
            }
            let here = &self.genres[genre];
            match below(rng, 100) {
                0..30 => {
                    let album = &self.albums[here.albums.pick(rng)];
                    let size = album.tracks.len();
                    let from = if rng.random_bool(0.5) {
                        0
                    } else {
                        below(rng, size)
                    };
                    let run = 2 + below(rng, 4);
                    for track in album.tracks.clone().skip(from).take(run) {
                        push(track, &mut tracks);
                    }
                }
                30..50 => {
                    let artist = &self.artists[here.artists.pick(rng)];
                    for _ in 0..2 + below(rng, 3) {
                        push(artist.tracks.pick(rng), &mut tracks);
                    }
                }
                _ => push(here.tracks.pick(rng), &mut tracks),
            }
        }
        (start, tracks)
    }

    fn neighbour(&self, genre: usize, rng: &mut ChaCha8Rng) -> usize {
        let count = self.genres.len();
        match count {
            1 => genre,
            2 => 1 - genre,
            _ if rng.random_bool(0.5) => (genre + 1) % count,
            _ => (genre + count - 1) % count,
        }
    }
}

/// Playlist lengths: a triangle from the minimum to twice the mean less the
/// minimum (so its mean is the mean), plus a tail of long playlists.
struct Lengths {
    min: usize,
    mean: usize,
    max: usize,
}

impl Lengths {
    fn new(config: &SynthConfig, tracks: usize) -> Lengths {
        let max = config
            .max_playlist_length
            .clamp(1, MAX_PLAYLIST_TRACKS)
            .min(tracks);
        let min = config.min_playlist_length.clamp(1, max);
        let mean = config.mean_playlist_length.clamp(min, max);
        Lengths { min, mean, max }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let length = if rng.random_bool(0.1) {
            self.mean + below(rng, self.max - self.mean + 1)
        } else {
            let spread = 2 * (self.mean - self.min) + 1;
            self.min + (below(rng, spread) + below(rng, spread)) / 2
        };
        length.clamp(self.min, self.max)
    }
}

/// Items drawn in proportion to their weights.
struct Weighted {
    items: Vec<usize>,
    cumulative: Vec<f64>,
}

impl Weighted {
    fn new(items: Vec<usize>, weights: Vec<f64>) -> Weighted {
        let cumulative = weights
            .iter()
            .scan(0.0, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        Weighted { items, cumulative }
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// Draws one item; every genre, album and artist has at least one track,
    /// so the lists are never empty.
    fn pick(&self, rng: &mut ChaCha8Rng) -> usize {
        let x = rng.random::<f64>() * self.total();
        let i = self.cumulative.partition_point(|&c| c <= x);
        self.items[i.min(self.items.len() - 1)]
    }
}

/// A uniform index below `n`, drawn the same way on 32- and 64-bit targets.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    rng.random_range(0..n as u64) as usize
}

fn shuffle(items: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

const ONSETS: [&str; 22] = [
    "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl",
    "st", "tr", "sh", "ch",
];
const VOWELS: [&str; 9] = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "y"];
const CODAS: [&str; 8] = ["", "", "", "n", "r", "l", "s", "m"];
const GENRE_ENDINGS: [&str; 8] = [
    "wave", "core", "step", "pop", "rock", "soul", "folk", "beat",
];

/// A pronounceable made-up word of `syllables` syllables, capitalised.
fn word(rng: &mut ChaCha8Rng, syllables: Range<usize>) -> String {
    let syllables = syllables.start + below(rng, syllables.len());
    let mut word = String::new();
    for _ in 0..syllables {
        word.push_str(ONSETS[below(rng, ONSETS.len())]);
        word.push_str(VOWELS[below(rng, VOWELS.len())]);
        word.push_str(CODAS[below(rng, CODAS.len())]);
    }
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// One to `max_words` words.
fn phrase(rng: &mut ChaCha8Rng, max_words: usize) -> String {
    let words = 1 + below(rng, max_words);
    (0..words)
        .map(|_| word(rng, 1..4))
        .collect::<Vec<_>>()
        .join(" ")
}

fn artist_name(rng: &mut ChaCha8Rng) -> String {
    match below(rng, 5) {
        0 => format!("The {}s", word(rng, 2..3)),
        1 | 2 => format!("{} {}", word(rng, 2..3), word(rng, 2..3)),
        _ => word(rng, 2..4),
    }
}

fn genre_name(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}{}",
        word(rng, 2..3),
        GENRE_ENDINGS[below(rng, GENRE_ENDINGS.len())]
    )
}

/// A name not given before; after a few clashes a number settles it.
fn unique(
    taken: &mut HashSet<String>,
    rng: &mut ChaCha8Rng,
    make: impl Fn(&mut ChaCha8Rng) -> String,
) -> String {
    let mut name = make(rng);
    for attempt in 2.. {
        if taken.insert(name.clone()) {
            break;
        }
        name = if attempt < 10 {
            make(rng)
        } else {
            format!("{} {attempt}", make(rng))
        };
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn small() -> SynthConfig {
        SynthConfig {
            tracks: 2_000,
            playlists: 800,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn same_seed_same_data_set_other_seed_other_data_set() {
        let a = generate(&small());
        assert_eq!(a, generate(&small()));
        assert_eq!(a.fingerprint(), generate(&small()).fingerprint());
        let b = generate(&SynthConfig {
            seed: 43,
            ..small()
        });
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.tracks[0].title, b.tracks[0].title);
    }

    /// Pins the output of the default settings, so a change to the generator
    /// (or to a dependency's random stream) is a deliberate one.
    #[test]
    fn default_settings_give_a_known_data_set() {
        let d = generate(&SynthConfig::default());
        let stats = d.stats();
        assert_eq!((stats.tracks, stats.playlists), (5_000, 3_000));
        assert!(
            (5..=120).contains(&stats.min_length) && stats.max_length <= 120,
            "{stats:?}"
        );
        assert!((35.0..=45.0).contains(&stats.median_length), "{stats:?}");
        let mean = stats.entries as f64 / stats.playlists as f64;
        assert!((38.0..=48.0).contains(&mean), "{mean}");
        assert!(
            d.tracks
                .iter()
                .enumerate()
                .all(|(i, t)| t.id == format!("synth:track:{i:06}"))
        );
        assert!(
            d.tracks
                .iter()
                .all(|t| t.album.is_some() && !t.title.is_empty())
        );
        assert_eq!(
            d.fingerprint(),
            "5e9896fd8930d7814d3317c6bdca09cafd97d2fb22e5a2f7df9348bba6d075dc"
        );
    }

    fn pairs(d: &Dataset) -> impl Iterator<Item = (usize, usize)> + '_ {
        d.playlists
            .iter()
            .flat_map(|p| p.tracks.windows(2).map(|w| (w[0] as usize, w[1] as usize)))
    }

    #[test]
    fn playlists_play_albums_in_order_and_runs_of_artists() {
        let d = generate(&small());
        let total = pairs(&d).count() as f64;
        let album_steps = pairs(&d)
            .filter(|&(a, b)| b == a + 1 && d.tracks[a].album == d.tracks[b].album)
            .count();
        let artist_runs = pairs(&d)
            .filter(|&(a, b)| d.tracks[a].artist == d.tracks[b].artist)
            .count();
        assert!(
            album_steps as f64 / total > 0.2,
            "album runs: {album_steps} of {total}"
        );
        assert!(
            artist_runs as f64 / total > 0.4,
            "artist runs: {artist_runs} of {total}"
        );
        let no_repeats = d
            .playlists
            .iter()
            .all(|p| p.tracks.iter().collect::<HashSet<_>>().len() == p.tracks.len());
        assert!(no_repeats);
    }

    #[test]
    fn playlists_drift_to_neighbouring_genres() {
        let config = small();
        let d = generate(&config);
        let catalogue = Catalogue::new(&config, &mut ChaCha8Rng::seed_from_u64(config.seed));
        let genre = |t: u32| catalogue.tracks[t as usize].genre;
        let count = catalogue.genres.len();
        let distance = |a: usize, b: usize| {
            let d = (a + count - b) % count;
            d.min(count - d)
        };

        let changes: Vec<usize> = pairs(&d)
            .map(|(a, b)| distance(genre(a as u32), genre(b as u32)))
            .filter(|&step| step > 0)
            .collect();
        let total = pairs(&d).count();
        assert!(
            changes.len() * 10 < total,
            "mostly within a genre: {} of {total}",
            changes.len()
        );
        let neighbours = changes.iter().filter(|&&step| step == 1).count();
        assert!(
            neighbours * 10 > changes.len() * 9,
            "{neighbours} of {} are steps to a neighbour",
            changes.len()
        );
        let drifted = d
            .playlists
            .iter()
            .filter(|p| {
                p.tracks.len() >= 30 && genre(p.tracks[0]) != genre(*p.tracks.last().unwrap())
            })
            .count();
        let long = d.playlists.iter().filter(|p| p.tracks.len() >= 30).count();
        assert!(
            drifted * 3 > long,
            "{drifted} of {long} long playlists end in another genre"
        );
    }

    #[test]
    fn popularity_is_zipf_like() {
        let d = generate(&small());
        let mut plays: HashMap<u32, usize> = HashMap::new();
        for p in &d.playlists {
            for &t in &p.tracks {
                *plays.entry(t).or_default() += 1;
            }
        }
        let mut counts: Vec<usize> = plays.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let entries: usize = counts.iter().sum();
        let top: usize = counts[..d.tracks.len() / 10].iter().sum();
        // A track appears at most once per playlist, so, as in real playlist
        // data, the head is flatter than the 1/r the draws follow; the skew
        // shows in the share of the head and in the tail's fall.
        assert!(
            top * 100 > entries * 30,
            "the top tenth of tracks has {top} of {entries} plays"
        );
        let median = counts[counts.len() / 2];
        assert!(
            counts[0] > 5 * median,
            "{} plays at the top, {median} at the median",
            counts[0]
        );
        assert!(
            counts[99] > 3 * counts[999],
            "rank 100: {}, rank 1000: {}",
            counts[99],
            counts[999]
        );
    }

    #[test]
    fn odd_settings_still_give_a_valid_data_set() {
        let odd = [
            SynthConfig {
                tracks: 1,
                playlists: 3,
                genres: 5,
                ..SynthConfig::default()
            },
            SynthConfig {
                tracks: 0,
                playlists: 0,
                genres: 0,
                ..SynthConfig::default()
            },
            SynthConfig {
                tracks: 30,
                playlists: 10,
                genres: 100,
                mean_playlist_length: 500,
                min_playlist_length: 0,
                max_playlist_length: 0,
                ..SynthConfig::default()
            },
            SynthConfig {
                tracks: 200,
                playlists: 20,
                genres: 2,
                mean_playlist_length: 1,
                min_playlist_length: 50,
                max_playlist_length: 10,
                ..SynthConfig::default()
            },
        ];
        for config in odd {
            let d = generate(&config);
            assert!(!d.tracks.is_empty(), "{config:?}");
            assert_eq!(d.playlists.len(), config.playlists);
            let dir = tempfile::tempdir().unwrap();
            d.save(dir.path())
                .unwrap_or_else(|e| panic!("{config:?}: {e}"));
        }
    }
}
