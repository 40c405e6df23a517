//! What the line formats (M3U and plain text) share: lines, "Artist - Title",
//! and file paths.

/// Lines with their 1-based numbers, without `\r\n`/`\n` endings; a file with
/// only `\r` endings (classic Mac) is split on those.
pub(super) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let separator = if !text.contains('\n') && text.contains('\r') {
        '\r'
    } else {
        '\n'
    };
    text.split(separator)
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate()
        .map(|(i, line)| (i + 1, line))
}

/// The dashes between artist and title: hyphen, en dash, em dash, each with a
/// space on both sides.
const SEPARATORS: [&str; 3] = [" - ", " \u{2013} ", " \u{2014} "];

/// "Artist - Title" split at its first separator, both sides trimmed.
pub(super) fn split_artist_title(text: &str) -> Option<(&str, &str)> {
    let (at, separator) = SEPARATORS
        .iter()
        .filter_map(|s| text.find(s).map(|at| (at, *s)))
        .min_by_key(|&(at, _)| at)?;
    let artist = text.get(..at)?.trim();
    let title = text.get(at + separator.len()..)?.trim();
    Some((artist, title))
}

/// Audio file extensions players put in M3U files.
const AUDIO: [&str; 17] = [
    "mp3", "flac", "m4a", "aac", "ogg", "oga", "opus", "wav", "wma", "aif", "aiff", "alac", "ape",
    "mpc", "wv", "mp4", "m4b",
];

/// Whether a line is a file path or URL rather than a song name: it starts
/// like one (`/`, `\`, `./`, `~/`, `C:\`, `file:`, `http(s)://`) or ends with
/// an audio file extension. "AC/DC - Thunderstruck" is not a path.
pub(super) fn looks_like_path(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let drive = matches!(bytes, [letter, b':', b'\\' | b'/', ..] if letter.is_ascii_alphabetic());
    drive
        || ["/", "\\", "./", "../", "~/", "file:", "http://", "https://"]
            .iter()
            .any(|p| lower.starts_with(p))
        || extension(&lower).is_some_and(|e| AUDIO.contains(&e))
}

/// The extension of the last path segment: 1 to 5 ASCII letters or digits.
fn extension(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    let ok = !stem.is_empty()
        && (1..=5).contains(&ext.len())
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(ext)
}

/// The file name of a path or URL, URL-decoded for URLs, without its
/// extension: `C:\Music\Daft Punk - One More Time.mp3` → `Daft Punk - One More
/// Time`.
pub(super) fn file_stem(path: &str) -> String {
    let url = path.contains("://") || path.to_ascii_lowercase().starts_with("file:");
    let path = if url {
        path.split(['?', '#']).next().unwrap_or_default()
    } else {
        path
    };
    let name = path
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let name = if url {
        super::ids::url_decode(name)
    } else {
        name.to_owned()
    };
    match extension(&name) {
        Some(ext) => name
            .get(..name.len() - ext.len() - 1)
            .unwrap_or_default()
            .to_owned(),
        None => name,
    }
}

/// "Artist - Title" of a file name, dropping a leading track number
/// ("07 - Artist - Title"); `None` when the name has no separator.
pub(super) fn artist_title_of_file(stem: &str) -> Option<(&str, &str)> {
    let (first, rest) = split_artist_title(stem)?;
    let numbered = !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit());
    match (numbered, split_artist_title(rest)) {
        (true, Some(inner)) => Some(inner),
        _ => Some((first, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_from_one_without_endings() {
        let got: Vec<_> = lines("a\r\nb\n\nc").collect();
        assert_eq!(got, [(1, "a"), (2, "b"), (3, ""), (4, "c")]);
        let mac: Vec<_> = lines("a\rb\r").collect();
        assert_eq!(mac, [(1, "a"), (2, "b"), (3, "")]);
    }

    #[test]
    fn artist_and_title_split_at_the_first_dash() {
        assert_eq!(split_artist_title("A - B"), Some(("A", "B")));
        assert_eq!(split_artist_title("A – B - C"), Some(("A", "B - C")));
        assert_eq!(
            split_artist_title("Jay-Z — 99 Problems"),
            Some(("Jay-Z", "99 Problems"))
        );
        assert_eq!(split_artist_title("A-B"), None);
        assert_eq!(split_artist_title(" - B"), Some(("", "B")));
        assert_eq!(split_artist_title("Stand by Me"), None);
    }

    #[test]
    fn paths_and_file_names() {
        for path in [
            "/home/me/Music/a.mp3",
            "C:\\Music\\Daft Punk - One More Time.mp3",
            "c:/music/x",
            "..\\x.flac",
            "Music/Daft Punk - One More Time.FLAC",
            "https://example.com/stream",
            "file:///home/me/a%20b.ogg",
        ] {
            assert!(looks_like_path(path), "{path}");
        }
        for song in [
            "AC/DC - Thunderstruck",
            "Daft Punk - One More Time",
            "Mr. Brightside",
            "Bros. - When Will I Be Famous?",
        ] {
            assert!(!looks_like_path(song), "{song}");
        }
        assert_eq!(
            file_stem("C:\\Music\\Daft Punk - One More Time.mp3"),
            "Daft Punk - One More Time"
        );
        assert_eq!(
            file_stem("file:///m/Sigur%20R%C3%B3s%20-%20Hopp%C3%ADpolla.flac?x=1"),
            "Sigur Rós - Hoppípolla"
        );
        assert_eq!(file_stem("/m/Mr. Brightside"), "Mr. Brightside");
        assert_eq!(file_stem("/m/.hidden"), ".hidden");
        assert_eq!(
            artist_title_of_file("07 - Daft Punk - Digital Love"),
            Some(("Daft Punk", "Digital Love"))
        );
        assert_eq!(artist_title_of_file("311 - Amber"), Some(("311", "Amber")));
        assert_eq!(artist_title_of_file("Amber"), None);
    }
}
