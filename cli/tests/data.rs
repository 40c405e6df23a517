//! `setlist data` as a person runs it: the real binary, its output and its
//! exit status.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch folder removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("setlist-cli-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn setlist(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_setlist"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn stats_json(dir: &Path) -> serde_json::Value {
    let out = setlist(&["data", "stats", "--json", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn generate_is_reproducible_from_its_seed() {
    let scratch = Scratch::new("generate");
    let run = |name: &str, seed: &str| {
        let dir = scratch.path(name);
        let args = [
            "data",
            "generate",
            "--out",
            dir.to_str().unwrap(),
            "--seed",
            seed,
            "--tracks",
            "300",
            "--playlists",
            "50",
            "--genres",
            "4",
        ];
        let out = setlist(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("playlists    50"),
            "{}",
            text(&out.stdout)
        );
        stats_json(&dir)
    };
    let (a, b, c) = (run("a", "7"), run("b", "7"), run("c", "8"));
    assert_eq!(a["tracks"], 300);
    assert_eq!(a["playlists"], 50);
    assert_eq!(a["fingerprint"], b["fingerprint"]);
    assert_ne!(a["fingerprint"], c["fingerprint"]);
}

#[test]
fn import_writes_a_data_set_and_prints_its_stats() {
    let scratch = Scratch::new("import");
    let csv = scratch.path("playlists.csv");
    fs::write(
        &csv,
        "playlist_id,position,track_id,track_name,artist_name\np,1,b,B,Y\np,0,a,A,X\nq,0,a,A,X\n",
    )
    .unwrap();
    let out_dir = scratch.path("out");
    let out = setlist(&[
        "data",
        "import",
        "--out",
        out_dir.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("wrote {}", out_dir.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("tracks       2") && stdout.contains("entries      3"),
        "{stdout}"
    );
    let stats = stats_json(&out_dir);
    assert_eq!(
        (stats["playlists"].as_u64(), stats["median_length"].as_f64()),
        (Some(2), Some(1.5))
    );
}

#[test]
fn errors_are_sentences_and_exit_non_zero() {
    let scratch = Scratch::new("errors");
    let csv = scratch.path("p.csv");
    fs::write(
        &csv,
        "playlist_id,position,track_id,track_name,artist_name\np,first,a,A,X\n",
    )
    .unwrap();
    let out_dir = scratch.path("out");
    let out = setlist(&[
        "data",
        "import",
        "--format",
        "csv",
        "--out",
        out_dir.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the import failed; nothing was written"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.csv line 2: field \"position\": \"first\" is not a position"),
        "{stderr}"
    );
    assert!(!out_dir.exists());

    let out = setlist(&["data", "stats", scratch.path("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no dataset.json"),
        "{}",
        text(&out.stderr)
    );

    let out = setlist(&[
        "data",
        "generate",
        "--out",
        out_dir.to_str().unwrap(),
        "--tracks",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "clap refuses the value");
    assert!(
        text(&out.stderr).contains("--tracks"),
        "{}",
        text(&out.stderr)
    );
}
