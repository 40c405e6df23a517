//! Helpers shared by the end-to-end tests: they run Setlist's real binaries,
//! built by `cargo build --release --workspace --bins` (which `./setlist
//! test` does before the tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A workspace binary next to the test executable (`target/<profile>/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --release --workspace --bins`, which `./setlist test` runs)",
        path.display()
    );
    path
}

/// Runs `setlist` with `args`; returns its output whatever the status.
pub fn setlist(args: &[&str]) -> Output {
    Command::new(binary("setlist"))
        .args(args)
        .output()
        .expect("setlist starts")
}

/// Runs `setlist` and fails the test, showing its stderr, unless it succeeds.
pub fn setlist_ok(args: &[&str]) -> String {
    let out = setlist(args);
    assert!(
        out.status.success(),
        "setlist {} failed with {}:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("setlist prints UTF-8")
}

/// The folder of real data sets, from `SETLIST_DATASETS`. Real-data tests
/// call this: without the variable they fail, loudly; `./setlist test`
/// leaves them out (and says so) where the folder does not exist.
pub fn datasets() -> PathBuf {
    let dir = std::env::var_os("SETLIST_DATASETS").map(PathBuf::from).expect(
        "SETLIST_DATASETS is not set: point it at the shared data sets (e.g. ../shared/datasets) or run `./setlist test`, which leaves real-data tests out when there is no data",
    );
    assert!(
        dir.is_dir(),
        "SETLIST_DATASETS={} is not a folder",
        dir.display()
    );
    dir
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
