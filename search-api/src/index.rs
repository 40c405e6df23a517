//! The song index: every song of the catalogue in a tantivy full-text index,
//! searched as the listener types.
//!
//! - Titles, artists and albums are split into words, lower-cased and folded
//!   to ASCII ("Beyoncé" is found by "beyonce"), the query the same way.
//! - Every word of the query must be a word of the song's title, artist or
//!   album; the last word, still being typed, may be a prefix of one (an
//!   edge n-gram field holds every word's prefixes, so a prefix is one
//!   posting list and a query one intersection of posting lists).
//! - Relevance comes in three tiers, each filled only if the ones before
//!   hold fewer songs than asked for: every word whole; the last word a
//!   prefix; small typos forgiven (one edit in words of 4–7 letters, two
//!   from 8: "beatls" finds "Beatles"). Within a tier, the most popular song
//!   first.
//! - Documents are stored most popular first, so a tier is the first
//!   matches of one posting-list intersection: a query costs about what its
//!   answer holds, not what its words match (a 3-letter prefix matches a
//!   tenth of a million-song catalogue).
//!
//! An index is built once per catalogue and reused: [`SongIndex::open_or_build`]
//! keys its folder by the model version and the catalogue's checksum.

use serde::{Deserialize, Serialize};
use setlist_core::catalogue::Catalogue;
use std::path::Path;
use std::sync::Arc;
use tantivy::collector::TopDocs;
use tantivy::index::{IndexSettings, IndexSortByField, Order, SegmentId};
use tantivy::query::{BooleanQuery, EnableScoring, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
    WhitespaceTokenizer,
};
use tantivy::{
    DocId, DocSet, Index, IndexReader, ReloadPolicy, Score, SegmentReader, TERMINATED,
    TantivyDocument, Term,
};

/// Bumped whenever the schema or the analysis changes: an index built by
/// another version is rebuilt, never misread.
const SCHEMA_VERSION: u32 = 4;
const FOLDED: &str = "setlist_folded";
const WORDS: &str = "setlist_words";
/// Prefixes indexed per word: from 2 letters (a query needs 3 characters,
/// but its last word may be shorter) to this many.
const MAX_PREFIX: usize = 16;
/// Words longer than this are not indexed (no song title has one; a
/// 10,000-letter "word" would only bloat the index).
const MAX_WORD_BYTES: usize = 64;
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

/// How a song matched a query, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Matched {
    /// Every word of the query is a word of the song.
    Words,
    /// The last word is a prefix of one of the song's.
    Prefix,
    /// Only with typos forgiven.
    Typo,
}

/// One song found: its catalogue index and how it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub song: u32,
    pub matched: Matched,
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
    words: Field,
    prefix: Field,
}

/// The index and a reader over it; cheap to share (`Clone`).
#[derive(Clone)]
pub struct SongIndex {
    reader: IndexReader,
    fields: Fields,
    folded: TextAnalyzer,
    /// Per segment, each document's song (catalogue index): read once, so
    /// ranking never decodes a fast field per matching document.
    songs_of: Arc<Vec<(SegmentId, Vec<u32>)>>,
    /// Each song's popularity (training playlists), by catalogue index.
    popularity: Arc<Vec<u32>>,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    // No field norms: a song whose album repeats its title is not a worse
    // match for its artist's name than one without an album. Relevance is
    // which words match and how rare they are (BM25's idf).
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(FOLDED)
            .set_index_option(IndexRecordOption::WithFreqs)
            .set_fieldnorms(false),
    );
    let prefixes = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let fields = Fields {
        song: builder.add_u64_field("song", FAST),
        popularity: builder.add_u64_field("popularity", FAST),
        words: builder.add_text_field("words", words),
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
            return SongIndex::open(&dir, catalogue);
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
        SongIndex::open(&dir, catalogue)
    }

    fn open(dir: &Path, catalogue: &Catalogue) -> Result<SongIndex, IndexError> {
        let tantivy = |source| IndexError::Tantivy {
            path: dir.display().to_string(),
            source,
        };
        let index = Index::open_in_dir(dir).map_err(tantivy)?;
        SongIndex::with_index(index, catalogue).map_err(tantivy)
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
        let builder = Index::builder().schema(schema).settings(IndexSettings {
            sort_by_field: Some(IndexSortByField {
                field: "popularity".into(),
                order: Order::Desc,
            }),
            ..IndexSettings::default()
        });
        let index = match dir {
            Some(dir) => builder.create_in_dir(dir).map_err(tantivy)?,
            None => builder.create_in_ram().map_err(tantivy)?,
        };
        register_analyzers(&index);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(threads, threads * 64_000_000)
            .map_err(tantivy)?;
        let mut analyzer = folded_analyzer();
        let total = catalogue.len();
        let mut words_text = String::new();
        let mut prefix_text = String::new();
        for (i, song) in catalogue.songs().iter().enumerate() {
            words_text.clear();
            for text in [Some(&song.title), Some(&song.artist), song.album.as_ref()]
                .into_iter()
                .flatten()
            {
                words_text.push_str(text);
                words_text.push(' ');
            }
            prefix_text.clear();
            prefixes(&words(&mut analyzer, &words_text), &mut prefix_text);
            let mut doc = TantivyDocument::default();
            doc.add_u64(fields.song, i as u64);
            doc.add_u64(fields.popularity, u64::from(song.playlists));
            doc.add_text(fields.words, &words_text);
            doc.add_text(fields.prefix, &prefix_text);
            writer.add_document(doc).map_err(tantivy)?;
            if (i + 1) % 100_000 == 0 {
                progress(i + 1, total);
            }
        }
        writer.commit().map_err(tantivy)?;
        // One segment: a query walks one set of posting lists, not one per
        // segment the writer happened to flush.
        let segments = index.searchable_segment_ids().map_err(tantivy)?;
        if segments.len() > 1 {
            writer.merge(&segments).wait().map_err(tantivy)?;
        }
        writer.wait_merging_threads().map_err(tantivy)?;
        progress(total, total);
        SongIndex::with_index(index, catalogue).map_err(tantivy)
    }

    fn with_index(index: Index, catalogue: &Catalogue) -> tantivy::Result<SongIndex> {
        register_analyzers(&index);
        let fields = schema().1;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        let mut songs_of = Vec::new();
        for segment in searcher.segment_readers() {
            let column = segment.fast_fields().u64("song")?.first_or_default_col(0);
            let songs = (0..segment.max_doc())
                .map(|doc| column.get_val(doc) as u32)
                .collect();
            songs_of.push((segment.segment_id(), songs));
        }
        Ok(SongIndex {
            reader,
            fields,
            folded: folded_analyzer(),
            songs_of: Arc::new(songs_of),
            popularity: Arc::new(catalogue.songs().iter().map(|s| s.playlists).collect()),
        })
    }

    fn songs_of(&self, segment: SegmentId) -> &[u32] {
        self.songs_of
            .iter()
            .find(|(id, _)| *id == segment)
            .map_or(&[], |(_, songs)| songs)
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

    /// The best `limit` songs for `query`: those that hold every word, then
    /// those where the last word is a prefix, then those that match with
    /// typos forgiven; the most popular first within each.
    pub fn search(&self, query: &str, limit: usize) -> tantivy::Result<Vec<Hit>> {
        let words = self.query_words(query);
        if words.words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let whole = QueryWords {
            last_is_prefix: false,
            ..words.clone()
        };
        let mut tiers = vec![(self.query(&whole, false), Matched::Words)];
        if words.last_is_prefix {
            tiers.push((self.query(&words, false), Matched::Prefix));
        }
        tiers.push((self.query(&words, true), Matched::Typo));
        let mut hits: Vec<Hit> = Vec::with_capacity(limit);
        for (query, matched) in tiers {
            if hits.len() == limit {
                break;
            }
            // Songs already found match again in later tiers: ask for
            // enough to fill the rest after dropping them.
            for song in self.most_popular(&query, limit)? {
                if hits.len() < limit && !hits.iter().any(|h| h.song == song) {
                    hits.push(Hit { song, matched });
                }
            }
        }
        Ok(hits)
    }

    /// The `limit` most popular songs that match `query`: the first
    /// matching documents, as documents are stored most popular first.
    fn most_popular(&self, query: &dyn Query, limit: usize) -> tantivy::Result<Vec<u32>> {
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let mut found = Vec::new();
        for segment in searcher.segment_readers() {
            let songs = self.songs_of(segment.segment_id());
            let mut matches = weight.scorer(segment, 1.0)?;
            let mut taken = 0;
            let mut doc = matches.doc();
            while doc != TERMINATED && taken < limit {
                if let Some(&song) = songs.get(doc as usize) {
                    found.push(song);
                    taken += 1;
                }
                doc = matches.advance();
            }
        }
        // An index of one segment (as built) needs no merging; one of
        // several is merged here by popularity.
        if searcher.segment_readers().len() > 1 {
            found.sort_by_key(|&song| std::cmp::Reverse(self.popularity_of(song)));
            found.truncate(limit);
        }
        Ok(found)
    }

    fn popularity_of(&self, song: u32) -> u32 {
        self.popularity.get(song as usize).copied().unwrap_or(0)
    }

    /// Scored search: the best `limit` by BM25 in half-point steps, then
    /// popularity.
    fn ranked(&self, query: &dyn Query, limit: usize) -> tantivy::Result<Vec<u32>> {
        let searcher = self.reader.searcher();
        let (songs_of, popularity) = (self.songs_of.clone(), self.popularity.clone());
        let ranked = TopDocs::with_limit(limit).tweak_score(move |segment: &SegmentReader| {
            let id = segment.segment_id();
            let (songs_of, popularity) = (songs_of.clone(), popularity.clone());
            move |doc: DocId, score: Score| {
                let songs = songs_of
                    .iter()
                    .find(|(segment, _)| *segment == id)
                    .map_or(&[][..], |(_, songs)| songs);
                let song = songs.get(doc as usize).copied().unwrap_or(u32::MAX);
                let popular = popularity.get(song as usize).copied().unwrap_or(0);
                // Half-point steps: scores that differ by less are a tie,
                // which popularity breaks.
                ((score * 2.0).round() as i64, popular)
            }
        });
        let top = searcher.search(query, &ranked)?;
        Ok(top
            .into_iter()
            .filter_map(|(_, address)| {
                let segment = searcher.segment_reader(address.segment_ord).segment_id();
                self.songs_of(segment).get(address.doc_id as usize).copied()
            })
            .collect())
    }

    /// Every word must match; the last one, if still being typed, as a
    /// prefix. With `typo`, each word of 4 letters or more may also match
    /// with one edit (two from 8 letters), at [`FUZZY_WEIGHT`].
    fn query(&self, words: &QueryWords, typo: bool) -> BooleanQuery {
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
                (Occur::Must, self.word_query(word, prefix, typo))
            })
            .collect();
        BooleanQuery::new(clauses)
    }

    /// One word of the title, the artist or the album: exactly, as a prefix
    /// (`prefix`), or, with `typo`, within one edit (4–7 letters) or two
    /// (8 and more) of one, or of a prefix.
    fn word_query(&self, word: &str, prefix: bool, typo: bool) -> Box<dyn Query> {
        let f = &self.fields;
        let letters = word.chars().count();
        if typo && letters >= 4 {
            let distance = if letters >= 8 { 2 } else { 1 };
            let term = Term::from_field_text(f.words, word);
            return Box::new(if prefix {
                FuzzyTermQuery::new_prefix(term, distance, true)
            } else {
                FuzzyTermQuery::new(term, distance, true)
            });
        }
        if prefix && letters >= 2 {
            let cut = word
                .char_indices()
                .nth(MAX_PREFIX)
                .map_or(word.len(), |(i, _)| i);
            let term = Term::from_field_text(f.prefix, &word[..cut]);
            return Box::new(TermQuery::new(term, IndexRecordOption::Basic));
        }
        let term = Term::from_field_text(f.words, word);
        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
    }

    /// Songs that may be what `text` (a whole title and artist, say from an
    /// uploaded playlist) names, best first: two thirds of its words must
    /// match, each exactly or with a typo; more and rarer matching words
    /// rank higher. A caller checks the candidates itself.
    pub fn candidates(&self, text: &str, limit: usize) -> tantivy::Result<Vec<u32>> {
        let words = words(&mut self.folded.clone(), text);
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let needed = (words.len() * 2).div_ceil(3).max(1);
        let clauses = words
            .iter()
            .map(|word| {
                let term = Term::from_field_text(self.fields.words, word);
                let exact: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                // Exact and typo clauses together: an exact match scores
                // (BM25), a typo only counts.
                let either = BooleanQuery::new(vec![
                    (Occur::Should, exact),
                    (Occur::Should, self.word_query(word, false, true)),
                ]);
                (Occur::Should, Box::new(either) as Box<dyn Query>)
            })
            .collect();
        let query = BooleanQuery::with_minimum_required_clauses(clauses, needed);
        self.ranked(&query, limit)
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

    fn matched(index: &SongIndex, query: &str) -> Vec<(u32, Matched)> {
        index
            .search(query, 10)
            .unwrap()
            .into_iter()
            .map(|h| (h.song, h.matched))
            .collect()
    }

    #[test]
    fn every_word_must_match_and_the_last_one_may_be_a_prefix() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        assert_eq!(index.songs(), 8);
        assert_eq!(matched(&index, "let it be"), [(0, Matched::Words)]);
        // "let it b": a last word of one letter waits until it is a prefix.
        assert_eq!(found(&index, "let it b"), vec![0]);
        assert_eq!(matched(&index, "let he"), [(5, Matched::Prefix)]);
        // A prefix matches in any field (the artist here), most popular
        // first; then typo matches ("Beat It" is one edit from "beatl").
        assert_eq!(
            matched(&index, "beatl"),
            [
                (1, Matched::Prefix),
                (0, Matched::Prefix),
                (7, Matched::Prefix),
                (3, Matched::Typo)
            ]
        );
        assert!(found(&index, "zzz").is_empty());
    }

    #[test]
    fn whole_words_come_before_prefixes_and_prefixes_before_typos() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        // "beat": the word of "Beat It" first, then the songs with a word
        // that starts with it, most popular first, then typo matches.
        let hits = matched(&index, "beat");
        assert_eq!(hits[0], (3, Matched::Words));
        assert_eq!(
            hits[1..4].to_vec(),
            [
                (1, Matched::Prefix),
                (0, Matched::Prefix),
                (7, Matched::Prefix)
            ]
        );
        // "Beautiful Day": "beau" is one edit from "beat".
        assert!(hits[4..].contains(&(6, Matched::Typo)), "{hits:?}");
        // Asking for fewer cuts the later tiers first.
        let two: Vec<u32> = index
            .search("beat", 2)
            .unwrap()
            .iter()
            .map(|h| h.song)
            .collect();
        assert_eq!(two, [3, 1]);
    }

    #[test]
    fn diacritics_and_case_fold() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        assert_eq!(found(&index, "BEYONCE"), vec![2]);
        assert_eq!(found(&index, "beyoncé halo"), vec![2]);
        assert_eq!(found(&index, "sasha fier"), vec![2]);
    }

    #[test]
    fn small_typos_are_forgiven() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        // "beatls": one letter missing from a whole word.
        let hits = matched(&index, "beatls ");
        assert_eq!(
            hits,
            [(1, Matched::Typo), (0, Matched::Typo), (7, Matched::Typo)]
        );
        // Typos in two words of two, the last one still being typed.
        assert_eq!(matched(&index, "yesterdy beatels"), [(7, Matched::Typo)]);
    }

    #[test]
    fn equal_matches_rank_by_popularity() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        assert_eq!(found(&index, "the beatles "), vec![1, 0, 7]);
    }

    #[test]
    fn candidates_rank_by_how_many_and_how_rare_the_matching_words_are() {
        let index = SongIndex::build(None, &catalogue(), &|_, _| {}).unwrap();
        // All three words rank first; two of three suffice.
        assert_eq!(index.candidates("let it be", 5).unwrap().first(), Some(&0));
        let candidates = index.candidates("let it go", 5).unwrap();
        assert!(candidates.contains(&5), "{candidates:?}");
        assert!(candidates.contains(&0), "{candidates:?}");
        assert_eq!(index.candidates("bohemian", 5).unwrap(), Vec::<u32>::new());
        assert_eq!(index.candidates("halo beyonse", 5).unwrap(), vec![2]);
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
