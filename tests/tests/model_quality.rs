//! The quality promise on real data: the default model, trained by the
//! default `setlist train` on mpd-dev, beats session-kNN on HitRate@20 and
//! the first-order Markov chain on MRR@20, on the same held-out playlists.

use setlist_tests::{datasets, evaluate, path_str, setlist_ok};

#[test]
fn real_data_mpd_default_model_beats_the_baselines() {
    let mpd = datasets().join("mpd-dev");
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    setlist_ok(&[
        "data",
        "import",
        "--out",
        path_str(&p("data")),
        path_str(&mpd),
    ]);
    setlist_ok(&[
        "train",
        "--data",
        path_str(&p("data")),
        "--out",
        path_str(&p("model")),
    ]);
    let (table, metrics) = evaluate(&p("model"), &p("data"));
    eprintln!("{table}");
    let get = |ranker: &str, field: &str| {
        metrics
            .iter()
            .find(|m| m["ranker"].as_str().unwrap().starts_with(ranker))
            .unwrap()[field]
            .as_f64()
            .unwrap()
    };
    assert!(
        get("lstm", "cases") > 10_000.0,
        "the split leaves enough predictions to compare"
    );
    assert!(
        get("lstm", "hit_rate") > get("session-knn", "hit_rate"),
        "HR@20: model {:.4} vs session-kNN {:.4}",
        get("lstm", "hit_rate"),
        get("session-knn", "hit_rate")
    );
    assert!(
        get("lstm", "mrr") > get("markov", "mrr"),
        "MRR@20: model {:.4} vs Markov {:.4}",
        get("lstm", "mrr"),
        get("markov", "mrr")
    );
}
