//! The song index: every song of the catalogue in a tantivy full-text index,
//! searched as the listener types.
//!
//! - Titles, artists and albums are split into words, lower-cased and folded
//!   to ASCII ("Beyoncé" is found by "beyonce"), the query the same way.
//! - Every word of the query must match a word of the title, the artist or
//!   the album (title counts most, then artist, then album); the last word,
//!   still being typed, matches as a prefix (an edge n-gram field holds every
//!   word's prefixes, so a prefix is one posting list, not a term scan).
//! - Only when that finds fewer songs than asked for does a second pass
//!   allow small typos: one edit in words of 4–7 letters, two from 8
//!   ("beatls" finds "Beatles"). Exact matches stay ahead of typo matches.
//! - Within a pass, songs rank by relevance (BM25, in steps of half a point
//!   so that near-equal scores count as equal), then by popularity.
//!
//! An index is built once per catalogue and reused: [`SongIndex::open_or_build`]
//! keys its folder by the model version and the catalogue's checksum.

use serde::{Deserialize, Serialize};
use setlist_core::catalogue::Catalogue;
use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
    WhitespaceTokenizer,
};
use tantivy::{
    DocId, Index, IndexReader, ReloadPolicy, Score, SegmentReader, TantivyDocument, Term,
};

/// Bumped whenever the schema or the analysis changes: an index built by
/// another version is rebuilt, never misread.
const SCHEMA_VERSION: u32 = 1;
const FOLDED: &str = "setlist_folded";
const WORDS: &str = "setlist_words";
/// Prefixes indexed per word: from 2 letters (a query needs 3 characters,
/// but its last word may be shorter) to this many.
const MAX_PREFIX: usize = 16;
/// Words longer than this are not indexed (no song title has one; a
/// 10,000-letter "word" would only bloat the index).
const MAX_WORD_BYTES: usize = 64;
const TITLE_BOOST: Score = 3.0;
const ARTIST_BOOST: Score = 2.0;
const ALBUM_BOOST: Score = 1.0;
/// A typo match weighs this much of an exact one.
const FUZZY_WEIGHT: Score = 0.5;
const MARKER: &str = "setlist-index.json";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the song index at {path}: {source}")]
    Tantivy {
        path: String,
        source: tantivy::TantivyError,
    },
    #[error("the song index at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One song found: its catalogue index, how well it matched, and whether
/// only a typo-tolerant match found it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub song: u32,
    pub score: f32,
    pub typo: bool,
}

/// What an index folder holds, so that a folder built for another
/// catalogue or by another version is never used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    schema_version: u32,
    model_version: String,
    catalogue_sha256: String,
    songs: usize,
}

#[derive(Clone)]
struct Fields {
    song: Field,
    popularity: Field,
    title: Field,
    artist: Field,
    album: Field,
    prefix: Field,
}

/// The index and a reader over it; cheap to share (`Clone`).
#[derive(Clone)]
pub struct SongIndex {
    reader: IndexReader,
    fields: Fields,
    folded: TextAnalyzer,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(FOLDED)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let prefixes = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS)
            .set_index_option(IndexRecordOption::Basic),
    );
    let fields = Fields {
        song: builder.add_u64_field("song", FAST),
        popularity: builder.add_u64_field("popularity", FAST),
        title: builder.add_text_field("title", words.clone()),
        artist: builder.add_text_field("artist", words.clone()),
        album: builder.add_text_field("album", words),
        prefix: builder.add_text_field("prefix", prefixes),
    };
    (builder.build(), fields)
}

fn folded_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn register_analyzers(index: &Index) {
    index.tokenizers().register(FOLDED, folded_analyzer());
    index.tokenizers().register(
        WORDS,
        TextAnalyzer::builder(WhitespaceTokenizer::default()).build(),
    );
}

/// `text` as the index sees it: folded words, in order.
fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |token| words.push(token.text.clone()));
    words
}

/// Every word's prefixes of 2 to [`MAX_PREFIX`] characters, space-separated.
fn prefixes(words: &[String], out: &mut String) {
    for word in words {
        let ends = word
            .char_indices()
            .map(|(i, _)| i)
            .skip(2)
            .chain(std::iter::once(word.len()))
            .take(MAX_PREFIX - 1);
        for end in ends {
            out.push_str(&word[..end]);
            out.push(' ');
        }
    }
}

/// A query's words and whether the last one is still being typed (no
/// space or punctuation after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryWords {
    pub words: Vec<String>,
    pub last_is_prefix: bool,
}

impl SongIndex {
    /// The index for `catalogue` under `root` if one was built for it (same
    /// model version, catalogue checksum and schema), else a new one built
    /// there, reporting progress as `(songs indexed, total)`.
    pub fn open_or_build(
        root: &Path,
        model_version: &str,
        catalogue_sha256: &str,
        catalogue: &Catalogue,
        progress: &dyn Fn(usize, usize),
    ) -> Result<SongIndex, IndexError> {
        let marker = Marker {
            schema_version: SCHEMA_VERSION,
            model_version: model_version.to_string(),
            catalogue_sha256: catalogue_sha256.to_string(),
            songs: catalogue.len(),
        };
        let sha = catalogue_sha256.get(..12).unwrap_or(catalogue_sha256);
        let dir = root.join(format!("{model_version}-{sha}-s{SCHEMA_VERSION}"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| IndexError::Io { path, source }
        };
        if let Ok(text) = std::fs::read_to_string(dir.join(MARKER))
            && serde_json::from_str::<Marker>(&text).ok().as_ref() == Some(&marker)
        {
            return SongIndex::open(&dir);
        }
        std::fs::create_dir_all(root).map_err(io(root))?;
        let building = root.join(format!(".building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).map_err(io(&building))?;
        let index = SongIndex::build(Some(&building), catalogue, progress)?;
        drop(index);
        let text = serde_json::to_string_pretty(&marker).expect("a marker serialises");
        std::fs::write(building.join(MARKER), text).map_err(io(&building))?;
        // Another process may have built the same index meanwhile; either
        // copy is right, so the one already in place is kept.
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        SongIndex::open(&dir)
    }

    fn open(dir: &Path) -> Result<SongIndex, IndexError> {
        let tantivy = |source| IndexError::Tantivy {
            path: dir.display().to_string(),
            source,
        };
        let index = Index::open_in_dir(dir).map_err(tantivy)?;
        SongIndex::with_index(index).map_err(tantivy)
    }

    /// Indexes every song of `catalogue`, in a folder or (`None`) in memory.
    pub fn build(
        dir: Option<&Path>,
        catalogue: &Catalogue,
        progress: &dyn Fn(usize, usize),
    ) -> Result<SongIndex, IndexError> {
        let shown = dir.map_or("memory".to_string(), |d| d.display().to_string());
        let tantivy = |source| IndexError::Tantivy {
            path: shown.clone(),
            source,
        };
        let (schema, fields) = schema();
        let index = match dir {
            Some(dir) => Index::create_in_dir(dir, schema).map_err(tantivy)?,
            None => Index::create_in_ram(schema),
        };
        register_analyzers(&index);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(threads, threads * 64_000_000)
            .map_err(tantivy)?;
        let mut analyzer = folded_analyzer();
        let total = catalogue.len();
        let mut prefix_text = String::new();
        for (i, song) in catalogue.songs().iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_u64(fields.song, i as u64);
            doc.add_u64(fields.popularity, u64::from(song.playlists));
            doc.add_text(fields.title, &song.title);
            doc.add_text(fields.artist, &song.artist);
            prefix_text.clear();
            prefixes(&words(&mut analyzer, &song.title), &mut prefix_text);
            prefixes(&words(&mut analyzer, &song.artist), &mut prefix_text);
            if let Some(album) = &song.album {
                doc.add_text(fields.album, album);
                prefixes(&words(&mut analyzer, album), &mut prefix_text);
            }
            doc.add_text(fields.prefix, &prefix_text);
            writer.add_document(doc).map_err(tantivy)?;
            if (i + 1) % 100_000 == 0 {
                progress(i + 1, total);
            }
        }
        writer.commit().map_err(tantivy)?;
        writer.wait_merging_threads().map_err(tantivy)?;
        progress(total, total);
        SongIndex::with_index(index).map_err(tantivy)
    }

    fn with_index(index: Index) -> tantivy::Result<SongIndex> {
        register_analyzers(&index);
        let fields = schema().1;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SongIndex {
            reader,
            fields,
            folded: folded_analyzer(),
        })
    }

    /// How many songs the index holds.
    pub fn songs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The words of `query` as the index sees them.
    pub fn query_words(&self, query: &str) -> QueryWords {
        let words = words(&mut self.folded.clone(), query);
        let last_is_prefix = query.chars().last().is_some_and(|c| c.is_alphanumeric());
        QueryWords {
            words,
            last_is_prefix,
        }
    }

    /// The best `limit` songs for `query`: exact and prefix matches first,
    /// then, if those are fewer than `limit`, typo matches.
    pub fn search(&self, query: &str, limit: usize) -> tantivy::Result<Vec<Hit>> {
        let words = self.query_words(query);
        if words.words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut hits = self.run(&self.query(&words, false), limit, false)?;
        if hits.len() < limit {
            let typo = self.query(&words, true);
            for hit in self.run(&typo, limit, true)? {
                if hits.len() == limit {
                    break;
                }
                if !hits.iter().any(|h| h.song == hit.song) {
                    hits.push(hit);
                }
            }
        }
        Ok(hits)
    }

    fn run(&self, query: &dyn Query, limit: usize, typo: bool) -> tantivy::Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let ranked = TopDocs::with_limit(limit).tweak_score(move |segment: &SegmentReader| {
            let popularity = segment
                .fast_fields()
                .u64("popularity")
                .map(|c| c.first_or_default_col(0));
            move |doc: DocId, score: Score| {
                let popularity = popularity.as_ref().map_or(0, |c| c.get_val(doc));
                // Half-point steps: scores that differ by less are a tie,
                // which popularity breaks.
                ((score * 2.0).round() as i64, popularity, score)
            }
        });
        let top = searcher.search(query, &ranked)?;
        let mut hits = Vec::with_capacity(top.len());
        for ((_, _, score), address) in top {
            let segment = searcher.segment_reader(address.segment_ord);
            let song = segment.fast_fields().u64("song")?.first_or_default_col(0);
            hits.push(Hit {
                song: song.get_val(address.doc_id) as u32,
                score,
                typo,
            });
        }
        Ok(hits)
    }

    /// Every word must match; the last one, if still being typed, as a
    /// prefix. With `typo`, each word of 4 letters or more may also match
    /// with one edit (two from 8 letters), at [`FUZZY_WEIGHT`].
    fn query(&self, words: &QueryWords, typo: bool) -> BooleanQuery {
        let f = &self.fields;
        let word_fields = [
            (f.title, TITLE_BOOST),
            (f.artist, ARTIST_BOOST),
            (f.album, ALBUM_BOOST),
        ];
        let last = words.words.len() - 1;
        // A single letter still being typed ("let it b") narrows nothing the
        // other words do not: it is left out until it is a prefix.
        let typed = |(i, word): &(usize, &String)| {
            !(*i == last && *i > 0 && words.last_is_prefix && word.chars().count() < 2)
        };
        let clauses = words
            .words
            .iter()
            .enumerate()
            .filter(typed)
            .map(|(i, word)| {
                let prefix = i == last && words.last_is_prefix;
                let mut either: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for (field, boost) in word_fields {
                    let term = Term::from_field_text(field, word);
                    either.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                            boost,
                        )),
                    ));
                    let letters = word.chars().count();
                    if typo && letters >= 4 {
                        let distance = if letters >= 8 { 2 } else { 1 };
                        let fuzzy = if prefix {
                            FuzzyTermQuery::new_prefix(term, distance, true)
                        } else {
                            FuzzyTermQuery::new(term, distance, true)
                        };
                        either.push((
                            Occur::Should,
                            Box::new(BoostQuery::new(Box::new(fuzzy), boost * FUZZY_WEIGHT)),
                        ));
                    }
                }
                if prefix && word.chars().count() >= 2 {
                    let cut = word
                        .char_indices()
                        .nth(MAX_PREFIX)
                        .map_or(word.len(), |(i, _)| i);
                    let term = Term::from_field_text(f.prefix, &word[..cut]);
                    either.push((
                        Occur::Should,
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    ));
                }
                (
                    Occur::Must,
                    Box::new(BooleanQuery::new(either)) as Box<dyn Query>,
                )
            })
            .collect();
        BooleanQuery::new(clauses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::catalogue::Song;

    fn song(id: &str, title: &str, artist: &str, album: Option<&str>, playlists: u32) -> Song {
        Song {
            id: id.into(),
            title: title.into(),
            artist: artist.into(),
            album: album.map(Into::into),
            playlists,
        }
    }

    fn catalogue() -> Catalogue {
        Catalogue::new(vec![
            song("s0", "Let It Be", "The Beatles", Some("Let It Be"), 50),
            song("s1", "Hey Jude", "The Beatles", None, 80),
            song("s2", "Halo", "Beyoncé", Some("I Am... Sasha Fierce"), 70),
            song("s3", "Beat It", "Michael Jackson", Some("Thriller"), 90),
            song("s4", "Heat Waves", "Glass Animals", Some("Dreamland"), 60),
            song(
                "s5",
                "Let Her Go",
                "Passenger",
                Some("All the Little Lights"),
                40,
            ),
            song("s6", "Beautiful Day", "U2", None, 30),
            song("s7", "Yesterday", "The Beatles", Some("Help!"), 20),
        ])
        .unwrap()
    }

    fn found(index: &SongIndex, query: &str) -> Vec<u32> {
        index
            .search(query, 10)
            .unwrap()
            .into_iter()
            .map(|h| h.song)
            .collect()
    }

    #[test]
    fn every_word_must_match_and_the_last_one_as_a_prefix() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        assert_eq!(index.songs(), 8);
        // "let it b": a last word of one letter waits until it is a prefix.
        assert_eq!(found(&index, "let it be"), vec![0]);
        assert_eq!(found(&index, "let it b"), vec![0]);
        assert_eq!(found(&index, "let he"), vec![5]);
        // A prefix matches in any field: the artist here.
        let hits = index.search("beatl", 10).unwrap();
        let exact: Vec<u32> = hits.iter().filter(|h| !h.typo).map(|h| h.song).collect();
        assert_eq!(exact.len(), 3, "{hits:?}");
        assert!(exact.iter().all(|s| [0, 1, 7].contains(s)), "{hits:?}");
        assert!(found(&index, "zzz").is_empty());
    }

    #[test]
    fn diacritics_and_case_fold() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        assert_eq!(found(&index, "BEYONCE"), vec![2]);
        assert_eq!(found(&index, "beyoncé halo"), vec![2]);
        assert_eq!(found(&index, "sasha fier"), vec![2]);
    }

    #[test]
    fn small_typos_are_forgiven_after_the_exact_matches() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        // "beatls": one letter missing from a whole word.
        let hits = index.search("beatls", 10).unwrap();
        let songs: Vec<u32> = hits.iter().map(|h| h.song).collect();
        assert_eq!(songs.len(), 3, "{hits:?}");
        assert!(songs.iter().all(|s| [0, 1, 7].contains(s)), "{hits:?}");
        assert!(hits.iter().all(|h| h.typo));
        // "yesterdy hte beatles": typos in two words of three.
        assert_eq!(found(&index, "yesterdy beatles "), vec![7]);
        // Exact matches come first: "beat" is a prefix of "Beat It" and
        // "Beatles" and "Beautiful" is a typo away; with room for all, the
        // exact ones lead.
        let hits = index.search("beat", 10).unwrap();
        assert!(hits.iter().take_while(|h| !h.typo).count() >= 4, "{hits:?}");
    }

    #[test]
    fn equal_relevance_ranks_by_popularity() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        // The three Beatles songs match "beatles" in the artist field alike.
        assert_eq!(found(&index, "the beatles "), vec![1, 0, 7]);
    }

    #[test]
    fn an_index_is_built_once_per_catalogue_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let built = std::cell::Cell::new(0);
        let count = |done: usize, total: usize| {
            if done == total {
                built.set(built.get() + 1);
            }
        };
        let catalogue = catalogue();
        let first = SongIndex::open_or_build(dir.path(), "m1", "abc", &catalogue, &count).unwrap();
        assert_eq!(found(&first, "halo"), vec![2]);
        let again = SongIndex::open_or_build(dir.path(), "m1", "abc", &catalogue, &count).unwrap();
        assert_eq!(found(&again, "halo"), vec![2]);
        assert_eq!(built.get(), 1, "the second open reuses the index");
        SongIndex::open_or_build(dir.path(), "m2", "abc", &catalogue, &count).unwrap();
        assert_eq!(built.get(), 2, "another model version gets its own index");
    }

    #[test]
    fn queries_are_split_like_the_index() {
        let index = SongIndex::build(None, &Catalogue::new(vec![]).unwrap(), &|_, _| {}).unwrap();
        assert_eq!(
            index.query_words("Rock & Roll Héart"),
            QueryWords {
                words: vec!["rock".into(), "roll".into(), "heart".into()],
                last_is_prefix: true
            }
        );
        assert!(!index.query_words("let it be ").last_is_prefix);
        assert!(index.search("!!!", 5).unwrap().is_empty());
    }
}
