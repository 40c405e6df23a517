//! Honest offline evaluation of next-track prediction (the protocol of
//! Ludewig et al., UMUAI 2021): held-out playlists, every position predicted
//! from the tracks before it, HitRate@k and MRR@k, for the model and for
//! strong simple baselines on the same split.

use crate::artifact::Model;
use crate::ops::RowQuery;
use serde::{Deserialize, Serialize};
use setlist_core::catalogue::Catalogue;
use setlist_core::progress::Progress;
use std::collections::HashMap;
use std::time::Instant;

/// Ranks candidate next songs for playlist histories (model indices).
/// Implementations never return a song of the history.
pub trait NextSongRanker {
    fn name(&self) -> &str;
    fn rank(&self, histories: &[&[u32]], k: usize) -> Vec<Vec<u32>>;
}

/// One prediction to score: the tracks so far and the true next track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case<'a> {
    pub history: &'a [u32],
    pub next: u32,
}

/// Every position of every playlist: predict track i from tracks 0..i.
pub fn cases(playlists: &[Vec<u32>]) -> Vec<Case<'_>> {
    playlists
        .iter()
        .flat_map(|p| {
            (1..p.len()).map(move |i| Case {
                history: &p[..i],
                next: p[i],
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub ranker: String,
    pub k: usize,
    pub cases: usize,
    pub hit_rate: f64,
    pub mrr: f64,
    pub seconds: f64,
}

/// HitRate@k and MRR@k of `ranker` over `cases`, scored in batches.
pub fn score(
    ranker: &dyn NextSongRanker,
    cases: &[Case],
    k: usize,
    progress: &dyn Progress,
) -> Metrics {
    const BATCH: usize = 256;
    let started = Instant::now();
    progress.start(ranker.name(), cases.len() as u64);
    let (mut hits, mut reciprocal) = (0usize, 0.0f64);
    for batch in cases.chunks(BATCH) {
        let histories: Vec<&[u32]> = batch.iter().map(|c| c.history).collect();
        for (case, ranked) in batch.iter().zip(ranker.rank(&histories, k)) {
            if let Some(rank) = ranked.iter().take(k).position(|&t| t == case.next) {
                hits += 1;
                reciprocal += 1.0 / (rank + 1) as f64;
            }
        }
        progress.advance(batch.len() as u64);
    }
    progress.finish();
    let n = cases.len().max(1) as f64;
    Metrics {
        ranker: ranker.name().to_string(),
        k,
        cases: cases.len(),
        hit_rate: hits as f64 / n,
        mrr: reciprocal / n,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The neural model, as served: the last `max_history` tracks in, the whole
/// history excluded from the answer.
pub struct ModelRanker<'a>(pub &'a Model);

impl NextSongRanker for ModelRanker<'_> {
    fn name(&self) -> &str {
        "lstm model"
    }

    fn rank(&self, histories: &[&[u32]], k: usize) -> Vec<Vec<u32>> {
        let queries: Vec<RowQuery> = histories
            .iter()
            .map(|h| RowQuery { k, exclude: h })
            .collect();
        self.0
            .recommend(histories, &queries)
            .into_iter()
            .map(|r| r.into_iter().map(|s| s.track).collect())
            .collect()
    }
}

/// The most popular songs (by training playlists) not yet in the playlist.
pub struct Popularity<'a>(pub &'a Catalogue);

impl NextSongRanker for Popularity<'_> {
    fn name(&self) -> &str {
        "popularity"
    }

    fn rank(&self, histories: &[&[u32]], k: usize) -> Vec<Vec<u32>> {
        histories
            .iter()
            .map(|h| self.0.popular(k, h).into_iter().map(|s| s.track).collect())
            .collect()
    }
}

/// First-order Markov chain: the songs that most often followed the last
/// track in training playlists. No back-off: where the last track has no
/// known successor, it recommends fewer (or no) songs.
pub struct Markov {
    successors: HashMap<u32, Vec<u32>>,
}

impl Markov {
    pub fn fit(playlists: &[Vec<u32>]) -> Markov {
        let mut counts: HashMap<u32, HashMap<u32, u32>> = HashMap::new();
        for p in playlists {
            for pair in p.windows(2) {
                *counts
                    .entry(pair[0])
                    .or_default()
                    .entry(pair[1])
                    .or_default() += 1;
            }
        }
        let successors = counts
            .into_iter()
            .map(|(from, next)| {
                let mut next: Vec<(u32, u32)> = next.into_iter().collect();
                next.sort_by_key(|&(t, c)| (std::cmp::Reverse(c), t));
                (from, next.into_iter().map(|(t, _)| t).collect())
            })
            .collect();
        Markov { successors }
    }
}

impl NextSongRanker for Markov {
    fn name(&self) -> &str {
        "markov (last track)"
    }

    fn rank(&self, histories: &[&[u32]], k: usize) -> Vec<Vec<u32>> {
        histories
            .iter()
            .map(|h| {
                let next = h.last().and_then(|t| self.successors.get(t));
                next.map(|n| {
                    n.iter()
                        .copied()
                        .filter(|t| !h.contains(t))
                        .take(k)
                        .collect()
                })
                .unwrap_or_default()
            })
            .collect()
    }
}

/// Session-based k-nearest neighbours: the `neighbours` training playlists
/// most similar to the history (cosine over track sets) vote for their
/// tracks with their similarity.
pub struct SessionKnn {
    playlists: Vec<Vec<u32>>,
    containing: HashMap<u32, Vec<u32>>,
    neighbours: usize,
    name: String,
}

impl SessionKnn {
    pub fn fit(playlists: &[Vec<u32>], neighbours: usize) -> SessionKnn {
        let playlists: Vec<Vec<u32>> = playlists
            .iter()
            .map(|p| {
                let mut set = p.clone();
                set.sort_unstable();
                set.dedup();
                set
            })
            .collect();
        let mut containing: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, p) in playlists.iter().enumerate() {
            for &t in p {
                containing.entry(t).or_default().push(i as u32);
            }
        }
        SessionKnn {
            playlists,
            containing,
            neighbours,
            name: format!("session-knn (k={neighbours})"),
        }
    }

    fn rank_one(&self, history: &[u32], k: usize) -> Vec<u32> {
        let mut set = history.to_vec();
        set.sort_unstable();
        set.dedup();
        let mut overlap: HashMap<u32, u32> = HashMap::new();
        for t in &set {
            for &p in self
                .containing
                .get(t)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                *overlap.entry(p).or_default() += 1;
            }
        }
        let norm = (set.len() as f64).sqrt();
        let mut similar: Vec<(u32, f64)> = overlap
            .into_iter()
            .map(|(p, n)| {
                (
                    p,
                    n as f64 / (norm * (self.playlists[p as usize].len() as f64).sqrt()),
                )
            })
            .collect();
        similar.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        similar.truncate(self.neighbours);
        let mut votes: HashMap<u32, f64> = HashMap::new();
        for (p, similarity) in similar {
            for &t in &self.playlists[p as usize] {
                *votes.entry(t).or_default() += similarity;
            }
        }
        let mut ranked: Vec<(u32, f64)> = votes
            .into_iter()
            .filter(|(t, _)| set.binary_search(t).is_err())
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().take(k).map(|(t, _)| t).collect()
    }
}

impl NextSongRanker for SessionKnn {
    fn name(&self) -> &str {
        &self.name
    }

    fn rank(&self, histories: &[&[u32]], k: usize) -> Vec<Vec<u32>> {
        histories.iter().map(|h| self.rank_one(h, k)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(
        "the model was trained on data with fingerprint {trained}, but this data set has {given}; evaluate with the data set the model was trained on"
    )]
    OtherData { trained: String, given: String },
    #[error(
        "the model was trained on every playlist (holdout 0), so nothing is left to test it on; train with --holdout 0.1"
    )]
    NoHoldout,
    #[error("no held-out playlist has two or more tracks the model knows; hold out more playlists")]
    NoCases,
}

/// Scores the model and the three baselines on the model's own held-out
/// playlists. Baselines see exactly the training playlists the model saw,
/// restricted to the songs it knows.
pub fn evaluate_model(
    model: &Model,
    dataset: &setlist_core::dataset::Dataset,
    k: usize,
    neighbours: usize,
    progress: &dyn Progress,
) -> Result<Vec<Metrics>, EvalError> {
    let record = &model.training;
    let given = dataset.fingerprint();
    if given != record.dataset_fingerprint {
        return Err(EvalError::OtherData {
            trained: record.dataset_fingerprint.clone(),
            given,
        });
    }
    if record.split.holdout <= 0.0 {
        return Err(EvalError::NoHoldout);
    }
    let model_index: Vec<Option<u32>> = dataset
        .tracks
        .iter()
        .map(|t| model.catalogue.index_of(&t.id))
        .collect();
    let encode = |p: &setlist_core::dataset::Playlist| -> Vec<u32> {
        p.tracks
            .iter()
            .filter_map(|&t| model_index[t as usize])
            .collect()
    };
    let (train, test) = record.split.apply(dataset);
    let train: Vec<Vec<u32>> = train.into_iter().map(encode).collect();
    let test: Vec<Vec<u32>> = test.into_iter().map(encode).collect();
    let cases = cases(&test);
    if cases.is_empty() {
        return Err(EvalError::NoCases);
    }
    let popularity = Popularity(&model.catalogue);
    let markov = Markov::fit(&train);
    let knn = SessionKnn::fit(&train, neighbours);
    let rankers: [&dyn NextSongRanker; 4] = [&ModelRanker(model), &popularity, &markov, &knn];
    Ok(rankers
        .iter()
        .map(|r| score(*r, &cases, k, progress))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::catalogue::Song;
    use setlist_core::progress::Silent;

    #[test]
    fn cases_predict_every_position_from_its_prefix() {
        let playlists = vec![vec![1, 2, 3], vec![4], vec![5, 6]];
        let c = cases(&playlists);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[1],
            Case {
                history: &[1, 2],
                next: 3
            }
        );
        assert_eq!(
            c[2],
            Case {
                history: &[5],
                next: 6
            }
        );
    }

    struct Fixed(Vec<u32>);
    impl NextSongRanker for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn rank(&self, histories: &[&[u32]], _k: usize) -> Vec<Vec<u32>> {
            histories.iter().map(|_| self.0.clone()).collect()
        }
    }

    #[test]
    fn hit_rate_and_mrr_follow_their_definitions() {
        let playlists = vec![vec![9, 7], vec![9, 8], vec![9, 3], vec![9, 5]];
        let m = score(&Fixed(vec![7, 8, 1]), &cases(&playlists), 2, &Silent);
        // 7 at rank 1, 8 at rank 2, 3 absent, 5 absent.
        assert_eq!(m.cases, 4);
        assert!((m.hit_rate - 0.5).abs() < 1e-12);
        assert!((m.mrr - (1.0 + 0.5) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn markov_ranks_successors_by_count_and_skips_the_history() {
        let m = Markov::fit(&[vec![1, 2], vec![1, 3], vec![1, 3], vec![2, 1]]);
        assert_eq!(m.rank(&[&[5, 1]], 5), vec![vec![3, 2]]);
        assert_eq!(m.rank(&[&[3, 1]], 5), vec![vec![2]]);
        assert_eq!(m.rank(&[&[7]], 5), vec![Vec::<u32>::new()]);
    }

    #[test]
    fn session_knn_votes_with_cosine_similarity() {
        let train = vec![vec![1, 2, 3], vec![1, 2, 4], vec![5, 6], vec![1, 7, 8, 9]];
        let knn = SessionKnn::fit(&train, 2);
        // Neighbours of {1,2}: [1,2,3] and [1,2,4] (cosine 2/√6 each) beat [1,7,8,9] (1/√8).
        let ranked = knn.rank(&[&[1, 2]], 10);
        assert_eq!(ranked, vec![vec![3, 4]]);
    }

    #[test]
    fn popularity_skips_the_history() {
        let songs = (0..4)
            .map(|i| Song {
                id: i.to_string(),
                title: String::new(),
                artist: String::new(),
                album: None,
                playlists: 10 - i,
            })
            .collect();
        let catalogue = Catalogue::new(songs).unwrap();
        assert_eq!(Popularity(&catalogue).rank(&[&[0, 2]], 5), vec![vec![1, 3]]);
    }
}
