//! The quality promise on real data: the default model, trained by the
//! default `setlist train` on mpd-dev, beats session-kNN on HitRate@20 and
//! the first-order Markov chain on MRR@20, on the same held-out playlists.

use serde_json::Value;
use setlist_tests::{datasets, path_str, setlist_ok};
use std::fs;

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
    let table = setlist_ok(&[
        "evaluate",
        "--model",
        path_str(&p("model")),
        "--data",
        path_str(&p("data")),
        "--json",
        path_str(&p("eval.json")),
    ]);
    eprintln!("{table}");
    let metrics: Vec<Value> =
        serde_json::from_str(&fs::read_to_string(p("eval.json")).unwrap()).unwrap();
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
