//! The ML engineer's path through the real `setlist` binary: generate data,
//! train, evaluate, slice (verified), and batch-score with the whole model
//! and with its slices.

use serde_json::Value;
use setlist_tests::{evaluate, path_str, read_jsonl, setlist, setlist_ok};
use std::fs;

#[test]
fn generate_train_slice_and_recommend() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    setlist_ok(&[
        "data",
        "generate",
        "--out",
        path_str(&p("data")),
        "--seed",
        "3",
        "--tracks",
        "600",
        "--playlists",
        "400",
    ]);
    setlist_ok(&[
        "train",
        "--data",
        path_str(&p("data")),
        "--out",
        path_str(&p("model")),
        "--epochs",
        "2",
        "--embedding-dim",
        "16",
        "--hidden-dim",
        "24",
        "--lstm-layers",
        "2",
        "--batch-size",
        "32",
        "--untied",
    ]);
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(p("model/manifest.json")).unwrap()).unwrap();
    let version = manifest["model_version"].as_str().unwrap().to_string();
    for file in [
        "config.json",
        "weights.safetensors",
        "catalogue.jsonl",
        "training.json",
    ] {
        assert_eq!(
            manifest["files"][file].as_str().unwrap().len(),
            64,
            "sha256 of {file}"
        );
    }

    let (report, metrics) = evaluate(&p("model"), &p("data"));
    assert!(report.contains("| lstm model |"), "{report}");
    let names: Vec<&str> = metrics
        .iter()
        .map(|m| m["ranker"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "lstm model",
            "popularity",
            "markov (last track)",
            "session-knn (k=100)"
        ]
    );
    assert!(metrics.iter().all(|m| m["cases"].as_u64().unwrap() > 100));

    let sliced = setlist_ok(&[
        "slice",
        "--model",
        path_str(&p("model")),
        "--stages",
        "3",
        "--output-shards",
        "2",
        "--out",
        path_str(&p("slices")),
    ]);
    assert!(
        sliced.contains("verified: 256 random histories give the same top-20"),
        "{sliced}"
    );

    // Real ids from the catalogue, an unknown id, a query of unknown ids only, and a bad line.
    let catalogue: Vec<Value> = read_jsonl(&p("model/catalogue.jsonl"));
    let id = |i: usize| catalogue[i]["id"].as_str().unwrap().to_string();
    let queries = [
        serde_json::json!({"id": "q1", "tracks": [id(0), id(5), id(9), "synth:track:nope"]})
            .to_string(),
        serde_json::json!({"id": "q2", "tracks": [id(42), id(17)]}).to_string(),
        serde_json::json!({"id": "q3", "tracks": ["unknown-a", "unknown-b"]}).to_string(),
    ];
    fs::write(p("queries.jsonl"), queries.join("\n") + "\n").unwrap();
    setlist_ok(&[
        "recommend",
        "--model",
        path_str(&p("model")),
        "--input",
        path_str(&p("queries.jsonl")),
        "--k",
        "10",
        "--output",
        path_str(&p("whole.jsonl")),
    ]);
    setlist_ok(&[
        "recommend",
        "--slices",
        path_str(&p("slices")),
        "--input",
        path_str(&p("queries.jsonl")),
        "--k",
        "10",
        "--output",
        path_str(&p("sliced.jsonl")),
    ]);
    let whole = read_jsonl(&p("whole.jsonl"));
    let sliced = read_jsonl(&p("sliced.jsonl"));
    assert_eq!(whole.len(), 3);
    let tracks = |answer: &Value| -> Vec<String> {
        answer["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["track"].as_str().unwrap().to_string())
            .collect()
    };
    for (w, s) in whole.iter().zip(&sliced) {
        assert_eq!(w["id"], s["id"]);
        assert_eq!(
            tracks(w),
            tracks(s),
            "the slices answer like the whole model"
        );
        for (a, b) in w["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .zip(s["recommendations"].as_array().unwrap())
        {
            assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() <= 1e-5);
        }
    }
    assert_eq!(tracks(&whole[0]).len(), 10);
    assert!(
        !tracks(&whole[0])
            .iter()
            .any(|t| [id(0), id(5), id(9)].contains(t)),
        "inputs are never recommended"
    );
    assert_eq!(whole[0]["unknown_tracks"], 1);
    assert_eq!(whole[0]["fallback"], false);
    assert_eq!(
        whole[2]["fallback"], true,
        "no known track: the popularity answer, flagged"
    );
    assert_eq!(whole[2]["recommendations"].as_array().unwrap().len(), 10);

    // The whole model's version is the slices' version.
    let slice_manifest: Value =
        serde_json::from_str(&fs::read_to_string(p("slices/manifest.json")).unwrap()).unwrap();
    assert_eq!(slice_manifest["model_version"], version.as_str());
}

#[test]
fn bad_queries_get_an_error_line_each_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    setlist_ok(&[
        "data",
        "generate",
        "--out",
        path_str(&p("data")),
        "--seed",
        "4",
        "--tracks",
        "300",
        "--playlists",
        "200",
    ]);
    setlist_ok(&[
        "train",
        "--data",
        path_str(&p("data")),
        "--out",
        path_str(&p("model")),
        "--epochs",
        "1",
        "--embedding-dim",
        "8",
        "--hidden-dim",
        "8",
        "--lstm-layers",
        "1",
    ]);
    let many: Vec<String> = (0..10_001).map(|i| format!("t{i}")).collect();
    let input = [
        r#"{"id": "ok", "tracks": []}"#.to_string(),
        r#"{"id": "typo", "trakcs": []}"#.to_string(),
        "not json".to_string(),
        serde_json::json!({"id": "long", "tracks": many}).to_string(),
        format!(
            r#"{{"id": "huge", "tracks": ["{}"]}}"#,
            "x".repeat(5 * 1024 * 1024)
        ),
        r#"{"id": "last", "tracks": ["a"]}"#.to_string(),
    ];
    fs::write(p("queries.jsonl"), input.join("\n") + "\n").unwrap();
    let out = setlist(&[
        "recommend",
        "--model",
        path_str(&p("model")),
        "--input",
        path_str(&p("queries.jsonl")),
        "--output",
        path_str(&p("out.jsonl")),
    ]);
    assert!(!out.status.success(), "invalid lines make the run fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 input lines were invalid"), "{stderr}");
    let answers = read_jsonl(&p("out.jsonl"));
    assert_eq!(answers.len(), 6, "one output line per input line");
    assert_eq!(answers[0]["id"], "ok");
    assert_eq!(answers[0]["fallback"], true);
    assert!(
        answers[1]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `trakcs`"),
        "{}",
        answers[1]
    );
    assert_eq!(answers[1]["line"], 2);
    assert!(answers[2]["error"].is_string());
    assert!(
        answers[3]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 10000"),
        "{}",
        answers[3]
    );
    assert!(
        answers[4]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of"),
        "{}",
        answers[4]
    );
    assert_eq!(answers[5]["id"], "last");
    assert_eq!(answers[5]["unknown_tracks"], 1);
}
