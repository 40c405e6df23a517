//! The fuzz invariant. It lives in the library so that `cargo test` checks it
//! on generated inputs too; `fuzz/fuzz_targets/parse_playlist_file.rs` only
//! calls it.

use super::{Limits, MAX_TEXT_CHARS, PlaylistFile, parse};

/// Panics if parsing `bytes` breaks an invariant, under the default limits
/// and under small ones: parsing is deterministic, and a file that parses
/// keeps within the limits, with every entry on a line of the file, an id or
/// a title, trimmed non-empty fields, and a short non-empty report text.
/// Bytes that do not parse are fine; the parser itself must not panic.
pub fn fuzz_parse(bytes: &[u8]) {
    let small = Limits {
        max_bytes: 4096,
        max_entries: 8,
        // Above the 36 bytes of a Spotify URI, which a bare id becomes.
        max_field_bytes: 40,
    };
    for limits in [Limits::default(), small] {
        let first = parse(bytes, &limits);
        assert_eq!(first, parse(bytes, &limits), "parsing is not deterministic");
        if let Ok(file) = first {
            check(bytes, &limits, &file);
        }
    }
}

fn check(bytes: &[u8], limits: &Limits, file: &PlaylistFile) {
    // Decoded UTF-16 has at most as many lines as its bytes have newlines;
    // a file of only carriage returns is split on those.
    let count = |byte: u8| bytes.iter().filter(|&&b| b == byte).count();
    let lines = 1 + count(b'\n').max(count(b'\r'));
    let entries = file.entries().count();
    assert!(
        entries + file.skipped.len() <= limits.max_entries * 2,
        "{entries} entries and {} skipped over the limit of {}",
        file.skipped.len(),
        limits.max_entries
    );
    assert!(entries <= limits.max_entries);
    for e in file.entries() {
        assert!(
            (1..=lines).contains(&e.line),
            "entry line {} of {lines}",
            e.line
        );
        assert!(
            e.id.is_some() || e.title.is_some(),
            "{e:?} has neither id nor title"
        );
        for field in [&e.id, &e.title, &e.artist, &e.album].into_iter().flatten() {
            assert!(!field.is_empty() && field.trim() == field, "{e:?}");
            assert!(field.len() <= limits.max_field_bytes, "{e:?}");
        }
        assert!(
            !e.text.is_empty() && e.text.chars().count() <= MAX_TEXT_CHARS,
            "{e:?}"
        );
        assert!(!e.text.chars().any(char::is_control), "{e:?}");
    }
    for s in &file.skipped {
        assert!(
            (1..=lines).contains(&s.line),
            "skipped line {} of {lines}",
            s.line
        );
        assert!(!s.reason.is_empty());
    }
    for p in &file.playlists {
        if let Some(name) = &p.name {
            assert!(!name.is_empty() && name.len() <= limits.max_field_bytes);
        }
    }
}
