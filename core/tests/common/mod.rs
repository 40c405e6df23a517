//! What the real-data test files share.

use std::path::{Path, PathBuf};

/// The folder of real data sets `SETLIST_DATASETS` names; a test run
/// without it fails with instructions rather than pass having checked
/// nothing.
pub fn datasets() -> PathBuf {
    let Some(dir) = std::env::var_os("SETLIST_DATASETS") else {
        panic!(
            "set SETLIST_DATASETS to the folder of the real data sets (for example \
             SETLIST_DATASETS=../shared/datasets) to run the real_data tests, or leave them out \
             with `-- --skip real_data`"
        );
    };
    let dir = PathBuf::from(dir);
    // Tests run in the crate's folder, but a relative path is meant from the
    // project's root, where `.ci/run` and people set it.
    let from_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&dir);
    let found = [dir.clone(), from_root].into_iter().find(|d| d.is_dir());
    found.unwrap_or_else(|| panic!("SETLIST_DATASETS={} is not a folder", dir.display()))
}
