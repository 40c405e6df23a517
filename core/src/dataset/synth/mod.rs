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
//! Names read like a real catalogue's, so people can search it: genres are
//! real ones ("Jazz", "Drum & Bass"; numbered, "Jazz II", beyond the 24 that
//! exist), and artists, albums, songs and playlists are named from patterns
//! and word lists flavoured by genre (`synth/names.rs`). Artist names are unique
//! in the catalogue, and album names and song titles unique per artist, all
//! ignoring case, so "Artist - Title" names one song; a name that keeps
//! clashing gets a number ("Neon Rain (Part II)").
//!
//! Generation is bit-for-bit reproducible for a seed on every platform: one
//! ChaCha8 stream, integer ranges of fixed width, and only the float
//! operations IEEE 754 defines exactly (no `exp`, `ln` or `powf`).

// The word lists are long; the generator reads better without them.
mod names;

use super::{Dataset, DatasetBuilder, MAX_PLAYLIST_TRACKS, MAX_TRACKS};
use names::{COMMON, GENRES, Words};
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
        let name = catalogue.genres[genre]
            .style
            .make(&mut rng, |w| w.playlists);
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
    style: Style,
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

        let styles: Vec<Style> = (0..genre_count)
            .map(|g| Style::new(g, genre_count))
            .collect();
        let mut taken = HashSet::new();
        let artist_names: Vec<String> = artist_genres
            .iter()
            .map(|&g| {
                unique(
                    &mut taken,
                    rng,
                    |rng| styles[g].make(rng, |w| w.artists),
                    |name, n| format!("{name} {n}"),
                )
            })
            .collect();
        let mut tracks = Vec::with_capacity(total);
        let mut albums: Vec<Album> = Vec::with_capacity(sizes.len());
        let mut scores = Vec::with_capacity(total);
        let mut titles = HashSet::new();
        let mut album_names = HashSet::new();
        for &(artist, album) in &owners {
            // Names need only be unique per artist, and an artist's albums
            // come one after another.
            if albums
                .last()
                .is_some_and(|previous| previous.artist != artist)
            {
                titles.clear();
                album_names.clear();
            }
            let style = &styles[artist_genres[artist]];
            let start = tracks.len();
            let single = below(rng, sizes[album]);
            for position in 0..sizes[album] {
                let title = unique(
                    &mut titles,
                    rng,
                    |rng| style.make(rng, |w| w.titles),
                    |title, n| format!("{title} (Part {n})"),
                );
                tracks.push(SynthTrack {
                    title,
                    album: albums.len(),
                    genre: artist_genres[artist],
                });
                let lead = if position == single { 4.0 } else { 1.0 };
                scores.push(popularity[artist] * lead * (0.5 + rng.random::<f64>()));
            }
            let name = unique(
                &mut album_names,
                rng,
                |rng| style.make(rng, |w| w.albums),
                |name, n| format!("{name}, Vol. {n}"),
            );
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
                // Every artist has an album, and albums are in artist order.
                let first = albums.partition_point(|al| al.artist < a);
                let end = albums.partition_point(|al| al.artist <= a);
                let own: Vec<usize> =
                    (albums[first].tracks.start..albums[end - 1].tracks.end).collect();
                let weights = own.iter().map(|&t| weight[t]).collect();
                Artist {
                    name,
                    genre: artist_genres[a],
                    tracks: Weighted::new(own, weights),
                }
            })
            .collect();
        let genres = styles
            .into_iter()
            .enumerate()
            .map(|(g, style)| {
                let own_tracks: Vec<usize> = (0..total).filter(|&t| tracks[t].genre == g).collect();
                let own_albums: Vec<usize> = (0..albums.len())
                    .filter(|&al| artists[albums[al].artist].genre == g)
                    .collect();
                let own_artists: Vec<usize> = (0..artist_count)
                    .filter(|&a| artists[a].genre == g)
                    .collect();
                Genre {
                    style,
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

/// A genre's name, and the words its artists, albums, songs and playlists
/// are named from.
struct Style {
    name: String,
    words: &'static Words,
}

impl Style {
    /// Genre `genre` of `count` on the ring: fewer than [`GENRES`] are spread
    /// evenly over it, so the ring still closes on plausible neighbours; more
    /// repeat each genre with a number.
    fn new(genre: usize, count: usize) -> Style {
        let base = genre * GENRES.len() / count;
        let (name, words) = GENRES[base];
        let variant = genre - (base * count).div_ceil(GENRES.len()) + 1;
        Style {
            name: match variant {
                1 => name.to_owned(),
                _ => format!("{name} {}", roman(variant)),
            },
            words,
        }
    }

    /// A name from one of the `patterns`.
    fn make(
        &self,
        rng: &mut ChaCha8Rng,
        patterns: fn(&Words) -> &'static [&'static str],
    ) -> String {
        self.fill(pick(rng, patterns(&COMMON), patterns(self.words)), rng)
    }

    /// `pattern` with each `{slot}` filled with a word.
    fn fill(&self, pattern: &str, rng: &mut ChaCha8Rng) -> String {
        let mut name = String::with_capacity(2 * pattern.len());
        let mut rest = pattern;
        while let Some((text, after)) = rest.split_once('{') {
            let (slot, after) = after.split_once('}').expect("every { has its }");
            name.push_str(text);
            name.push_str(match slot {
                "genre" => self.name.as_str(),
                _ => pick(rng, COMMON.list(slot), self.words.list(slot)),
            });
            rest = after;
        }
        name.push_str(rest);
        name
    }
}

/// A common item or one of the genre's own, half the time each where both
/// lists have some, so a genre's names sound like it.
fn pick(
    rng: &mut ChaCha8Rng,
    common: &'static [&'static str],
    own: &'static [&'static str],
) -> &'static str {
    let list = if own.is_empty() || (!common.is_empty() && rng.random_bool(0.5)) {
        common
    } else {
        own
    };
    list[below(rng, list.len())]
}

/// A name not in `taken` (which holds names in lower case, as people type
/// them): up to twenty fresh ones, then the last numbered from II on. An
/// artist with thousands of songs has used up the small patterns ("Farewell
/// to {place}"), so it can take a few draws to land on a large one.
fn unique(
    taken: &mut HashSet<String>,
    rng: &mut ChaCha8Rng,
    make: impl Fn(&mut ChaCha8Rng) -> String,
    numbered: impl Fn(&str, &str) -> String,
) -> String {
    let mut name = String::new();
    for _ in 0..20 {
        name = make(rng);
        if taken.insert(name.to_lowercase()) {
            return name;
        }
    }
    (2..)
        .map(|n| numbered(&name, &roman(n)))
        .find(|candidate| taken.insert(candidate.to_lowercase()))
        .expect("some number is free")
}

fn roman(mut n: usize) -> String {
    const DIGITS: [(usize, &str); 13] = [
        (1000, "M"),
        (900, "CM"),
        (500, "D"),
        (400, "CD"),
        (100, "C"),
        (90, "XC"),
        (50, "L"),
        (40, "XL"),
        (10, "X"),
        (9, "IX"),
        (5, "V"),
        (4, "IV"),
        (1, "I"),
    ];
    let mut numeral = String::new();
    for (value, digits) in DIGITS {
        while n >= value {
            numeral.push_str(digits);
            n -= value;
        }
    }
    numeral
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
    fn same_seed_same_data_set_other_seed_other_names() {
        let a = generate(&small());
        assert_eq!(a, generate(&small()));
        assert_eq!(a.fingerprint(), generate(&small()).fingerprint());
        let b = generate(&SynthConfig {
            seed: 43,
            ..small()
        });
        assert_ne!(a.fingerprint(), b.fingerprint());
        let songs = |d: &Dataset| -> HashSet<(String, String)> {
            d.tracks
                .iter()
                .map(|t| (t.title.clone(), t.artist.clone()))
                .collect()
        };
        let shared = songs(&a).intersection(&songs(&b)).count();
        assert!(shared * 100 < a.tracks.len(), "{shared} songs in both");
        let artists = |d: &Dataset| -> HashSet<String> {
            d.tracks.iter().map(|t| t.artist.clone()).collect()
        };
        let shared = artists(&a).intersection(&artists(&b)).count();
        assert!(
            shared * 10 < artists(&a).len(),
            "{shared} artist names in both"
        );
    }

    /// Pins the output of the default settings, so a change to the generator
    /// (or to a dependency's random stream) is a deliberate one: the demo
    /// model is trained on it, and a new value needs a new `DEMO_VERSION` in
    /// cli/src/up.rs. The only check that every platform draws the same.
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
            "654c6b7ccbcca5cdee6d4ed9b891f639ee639ce8ccec899b2337983565c3bacc"
        );
    }

    /// What a name is made of: its words without the punctuation around them
    /// or a possessive "'s".
    fn words(name: &str) -> impl Iterator<Item = &str> {
        name.split_whitespace()
            .map(|w| {
                let w = w.trim_matches(|c: char| "(),:?¿!".contains(c));
                w.strip_suffix("'s").unwrap_or(w)
            })
            .filter(|w| !w.is_empty())
    }

    /// COMMON and every genre's own lists.
    fn flavours() -> Vec<&'static Words> {
        let mut flavours: Vec<&'static Words> = vec![&COMMON];
        for (_, words) in GENRES {
            if !flavours.iter().any(|&f| std::ptr::eq(f, words)) {
                flavours.push(words);
            }
        }
        flavours
    }

    const SLOTS: [&str; 11] = [
        "adj",
        "noun",
        "plural",
        "form",
        "verb",
        "place",
        "first",
        "last",
        "nick",
        "instrument",
        "key",
    ];
    const PATTERNS: [fn(&Words) -> &'static [&'static str]; 4] =
        [|w| w.artists, |w| w.albums, |w| w.titles, |w| w.playlists];

    /// Every word the lists and the patterns' text hold, and those of the
    /// numbers that settle clashes.
    fn vocabulary() -> HashSet<&'static str> {
        let mut vocabulary: HashSet<&str> =
            GENRES.iter().flat_map(|(name, _)| words(name)).collect();
        vocabulary.extend(["Part", "Vol."]);
        for flavour in flavours() {
            for slot in SLOTS {
                vocabulary.extend(flavour.list(slot).iter().flat_map(|entry| words(entry)));
            }
            for patterns in PATTERNS {
                for pattern in patterns(flavour) {
                    let mut rest = *pattern;
                    while let Some((text, after)) = rest.split_once('{') {
                        vocabulary.extend(words(text));
                        rest = after.split_once('}').unwrap().1;
                    }
                    vocabulary.extend(words(rest));
                }
            }
        }
        vocabulary
    }

    fn is_roman(word: &str) -> bool {
        word.chars().all(|c| "IVXLCDM".contains(c))
    }

    #[test]
    fn names_are_made_of_listed_words() {
        let vocabulary = vocabulary();
        let default = generate(&SynthConfig::default());
        let large = generate(&SynthConfig {
            tracks: 200_000,
            playlists: 1_000,
            genres: 30,
            ..SynthConfig::default()
        });
        for d in [&default, &large] {
            let names = d
                .tracks
                .iter()
                .flat_map(|t| [&t.title, &t.artist, t.album.as_ref().unwrap()])
                .chain(d.playlists.iter().map(|p| p.name.as_ref().unwrap()));
            for name in names {
                assert!(
                    words(name).all(|w| vocabulary.contains(w) || is_roman(w)),
                    "{name:?} has a word from no list"
                );
            }
        }
        let names: Vec<&str> = default
            .tracks
            .iter()
            .flat_map(|t| [t.title.as_str(), t.artist.as_str()])
            .collect();
        for (what, found) in [
            ("accents", names.iter().any(|n| !n.is_ascii())),
            ("apostrophes", names.iter().any(|n| n.contains('\''))),
            ("ampersands", names.iter().any(|n| n.contains(" & "))),
            ("commas", names.iter().any(|n| n.contains(", "))),
        ] {
            assert!(found, "no names with {what} to exercise search");
        }
    }

    #[test]
    fn every_pattern_fills() {
        let classical = Style::new(0, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for flavour in flavours() {
            let style = Style {
                words: flavour,
                ..Style::new(0, 1)
            };
            for patterns in PATTERNS {
                for pattern in patterns(&COMMON).iter().chain(patterns(flavour)) {
                    let name = style.fill(pattern, &mut rng);
                    assert!(!name.contains(['{', '}']), "{pattern} gave {name}");
                }
            }
        }
        assert_eq!(classical.fill("{genre} Mix", &mut rng), "Classical Mix");
    }

    #[test]
    fn word_lists_are_clean() {
        /// Folds case and the accents the lists use, as search will.
        fn fold(word: &str) -> String {
            word.to_lowercase()
                .chars()
                .map(|c| match c {
                    'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
                    'é' | 'è' | 'ê' | 'ë' => 'e',
                    'í' | 'ì' | 'î' | 'ï' => 'i',
                    'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => 'o',
                    'ú' | 'ù' | 'û' | 'ü' => 'u',
                    'ñ' => 'n',
                    'ç' => 'c',
                    c => c,
                })
                .collect()
        }
        let mut folded: HashMap<String, String> = HashMap::new();
        for word in vocabulary() {
            let key = fold(word);
            assert!(key.is_ascii(), "fold() misses a letter of {word}");
            // Names are unique ignoring case; no two words may differ in
            // accents only, or names unique that way would clash in search.
            let lower = word.to_lowercase();
            if let Some(other) = folded.insert(key, lower.clone()) {
                assert_eq!(other, lower, "{word} and {other} differ in accents only");
            }
        }
        for flavour in flavours().into_iter().skip(1) {
            let lists = SLOTS
                .iter()
                .map(|&slot| (slot, COMMON.list(slot), flavour.list(slot)))
                .chain(PATTERNS.iter().map(|p| ("pattern", p(&COMMON), p(flavour))));
            for (slot, common, own) in lists {
                let mut seen = HashSet::new();
                for entry in common.iter().chain(own) {
                    assert!(seen.insert(entry), "{entry} twice in the {slot} lists");
                }
            }
            // "{adj} {noun}" would otherwise give "Midnight Midnight".
            for adjective in COMMON.adjectives.iter().chain(flavour.adjectives) {
                assert!(
                    !COMMON.nouns.contains(adjective) && !flavour.nouns.contains(adjective),
                    "{adjective} is an adjective and a noun"
                );
            }
        }
    }

    #[test]
    fn genres_have_real_names_and_keep_the_ring() {
        let names = |count: usize| -> Vec<String> {
            (0..count).map(|g| Style::new(g, count).name).collect()
        };
        let real: Vec<&str> = GENRES.iter().map(|(name, _)| *name).collect();
        assert_eq!(names(24), real);
        assert_eq!(
            names(12),
            real.iter()
                .step_by(2)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        );
        for count in 1..=24 {
            let names = names(count);
            assert!(
                names.iter().all(|n| real.contains(&n.as_str())),
                "{names:?}"
            );
            assert_eq!(names.iter().collect::<HashSet<_>>().len(), count);
        }
        let many = names(50);
        assert_eq!(
            many[..4],
            ["Classical", "Classical II", "Classical III", "Film Score"]
        );
        assert_eq!(many.iter().collect::<HashSet<_>>().len(), 50);

        let config = SynthConfig {
            genres: 24,
            ..small()
        };
        let catalogue = Catalogue::new(&config, &mut ChaCha8Rng::seed_from_u64(config.seed));
        let genres: Vec<&str> = catalogue
            .genres
            .iter()
            .map(|g| g.style.name.as_str())
            .collect();
        assert_eq!(genres, real);
    }

    #[test]
    fn artists_and_their_songs_and_albums_have_unique_names() {
        for config in [
            SynthConfig::default(),
            SynthConfig {
                tracks: 200_000,
                ..SynthConfig::default()
            },
        ] {
            let catalogue = Catalogue::new(&config, &mut ChaCha8Rng::seed_from_u64(config.seed));
            let lower = |name: &str| name.to_lowercase();
            let artists: HashSet<String> =
                catalogue.artists.iter().map(|a| lower(&a.name)).collect();
            assert_eq!(artists.len(), catalogue.artists.len());
            let mut songs = HashSet::new();
            let mut albums = HashSet::new();
            for album in &catalogue.albums {
                assert!(
                    albums.insert((album.artist, lower(&album.name))),
                    "{}",
                    album.name
                );
                for track in album.tracks.clone() {
                    let title = &catalogue.tracks[track].title;
                    assert!(songs.insert((album.artist, lower(title))), "{title}");
                }
            }
        }
        // The data set carries the same names.
        let d = generate(&SynthConfig::default());
        let songs: HashSet<(&str, &str)> = d
            .tracks
            .iter()
            .map(|t| (t.title.as_str(), t.artist.as_str()))
            .collect();
        assert_eq!(songs.len(), d.tracks.len());
    }

    #[test]
    fn clashing_names_get_numbers() {
        let mut taken = HashSet::new();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let names: Vec<String> = (0..4)
            .map(|_| {
                unique(
                    &mut taken,
                    &mut rng,
                    |_| "Neon Rain".to_owned(),
                    |name, n| format!("{name} (Part {n})"),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "Neon Rain",
                "Neon Rain (Part II)",
                "Neon Rain (Part III)",
                "Neon Rain (Part IV)"
            ]
        );
        assert_eq!(
            unique(
                &mut taken,
                &mut rng,
                |_| "NEON RAIN".to_owned(),
                |name, n| format!("{name} (Part {n})")
            ),
            "NEON RAIN (Part V)"
        );
        assert_eq!(roman(1994), "MCMXCIV");
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
