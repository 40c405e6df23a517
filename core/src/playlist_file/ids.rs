//! Spotify ids in the forms listeners and exports write them: URIs
//! (`spotify:track:<id>`), links (`https://open.spotify.com/track/<id>?si=…`,
//! also with `intl-xx/` or `embed/`), and bare 22-character ids.

/// What a piece of text says in Spotify's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Spotify {
    /// `spotify:track:<22 base-62 characters>`.
    Track(String),
    /// `spotify:local:<artist>:<album>:<title>:<seconds>`, a file on the
    /// listener's computer; the parts are URL-decoded and may be empty.
    Local {
        uri: String,
        artist: String,
        album: String,
        title: String,
    },
    /// Another kind of link or URI: `episode`, `album`, `playlist`, ...
    Other(String),
}

impl Spotify {
    /// Why an item holding this is skipped, for [`Spotify::Other`].
    pub(super) fn reason(kind: &str) -> String {
        match kind {
            "episode" => "a podcast episode, not a song".to_owned(),
            "show" => "a podcast, not a song".to_owned(),
            "album" => "a link to a Spotify album, not a song: list the album's songs".to_owned(),
            "playlist" => "a link to a Spotify playlist, which Setlist cannot open: export the \
                           playlist (Exportify, or Spotify's account data) and upload that file"
                .to_owned(),
            "artist" => "a link to a Spotify artist, not a song".to_owned(),
            "track" => "a Spotify track link whose id is not 22 letters and digits: copy the \
                        link again"
                .to_owned(),
            _ => format!("a Spotify {kind} link, not a song"),
        }
    }
}

/// `spotify:track:<id>` for a Spotify track URI, link or bare id; `None` for
/// anything else (other Spotify links included).
pub fn spotify_track_uri(text: &str) -> Option<String> {
    match classify(text.trim()) {
        Some(Spotify::Track(uri)) => Some(uri),
        _ => None,
    }
}

/// The id a file's id field should become: the canonical URI for a Spotify
/// track id in any form, else the value as written.
pub(super) fn normalize(id: String) -> String {
    match classify(&id) {
        Some(Spotify::Track(uri)) => uri,
        _ => id,
    }
}

/// What `text` (one trimmed token, no spaces) is, if it is Spotify's.
pub(super) fn classify(text: &str) -> Option<Spotify> {
    if is_base62_id(text) {
        return Some(Spotify::Track(format!("spotify:track:{text}")));
    }
    if text.contains(char::is_whitespace) {
        return None;
    }
    if let Some(rest) = strip_prefix_ci(text, "spotify:") {
        return Some(uri(text, rest));
    }
    let rest = strip_prefix_ci(text, "https://")
        .or_else(|| strip_prefix_ci(text, "http://"))
        .unwrap_or(text);
    let path = ["open.spotify.com/", "play.spotify.com/"]
        .iter()
        .find_map(|host| strip_prefix_ci(rest, host))?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "embed" && !s.starts_with("intl-"));
    let kind = segments.next()?.to_ascii_lowercase();
    let id = segments.next().unwrap_or_default();
    if kind == "track" && is_base62_id(id) {
        return Some(Spotify::Track(format!("spotify:track:{id}")));
    }
    Some(Spotify::Other(kind))
}

/// `rest` is what follows `spotify:` in `text`.
fn uri(text: &str, rest: &str) -> Spotify {
    let mut parts = rest.splitn(2, ':');
    let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
    let tail = parts.next().unwrap_or_default();
    match kind.as_str() {
        "track" if is_base62_id(tail) => Spotify::Track(format!("spotify:track:{tail}")),
        "local" => {
            let mut fields = tail.splitn(4, ':').map(url_decode);
            let mut next = || fields.next().unwrap_or_default();
            let (artist, album, title) = (next(), next(), next());
            Spotify::Local {
                uri: text.to_owned(),
                artist,
                album,
                title,
            }
        }
        // spotify:user:<name>:playlist:<id>, the old form of a playlist URI.
        "user" if tail.contains(":playlist:") => Spotify::Other("playlist".to_owned()),
        _ => Spotify::Other(kind),
    }
}

fn is_base62_id(text: &str) -> bool {
    text.len() == 22 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn strip_prefix_ci<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// `%XX` and `+` decoding, as local-file URIs and file URLs use; invalid
/// UTF-8 after decoding is replaced, not refused.
pub(super) fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4uLU6hMCjMI75M1A2tKUQC";

    #[test]
    fn every_form_of_a_track_becomes_its_uri() {
        let uri = format!("spotify:track:{ID}");
        for form in [
            uri.clone(),
            ID.to_owned(),
            format!("https://open.spotify.com/track/{ID}"),
            format!("https://open.spotify.com/track/{ID}?si=abc123&utm_source=copy"),
            format!("http://open.spotify.com/intl-de/track/{ID}#x"),
            format!("open.spotify.com/embed/track/{ID}"),
            format!("https://play.spotify.com/track/{ID}"),
            format!("SPOTIFY:TRACK:{ID}"),
        ] {
            assert_eq!(
                spotify_track_uri(&form).as_deref(),
                Some(uri.as_str()),
                "{form}"
            );
        }
        for other in [
            "",
            "Halo",
            "spotify:track:short",
            "https://example.com/track/4uLU6hMCjMI75M1A2tKUQC",
            "4uLU6hMCjMI75M1A2tKUQ",
            "4uLU6hMCjMI75M1A2tKUQC1",
            "4uLU6hMCjMI75M1A2tKU-C",
        ] {
            assert_eq!(spotify_track_uri(other), None, "{other}");
        }
    }

    #[test]
    fn other_spotify_things_are_told_apart() {
        assert_eq!(
            classify("https://open.spotify.com/album/1DFixLWuPkv3KT3TnV35m3?si=x"),
            Some(Spotify::Other("album".to_owned()))
        );
        assert_eq!(
            classify("spotify:episode:512ojhOuo1ktJprKbVcKyQ"),
            Some(Spotify::Other("episode".to_owned()))
        );
        assert_eq!(
            classify("spotify:user:someone:playlist:37i9dQZF1DXcBWIGoYBM5M"),
            Some(Spotify::Other("playlist".to_owned()))
        );
        assert_eq!(
            classify("spotify:local:Daft+Punk:Discovery:One+More+Time%21:320"),
            Some(Spotify::Local {
                uri: "spotify:local:Daft+Punk:Discovery:One+More+Time%21:320".to_owned(),
                artist: "Daft Punk".to_owned(),
                album: "Discovery".to_owned(),
                title: "One More Time!".to_owned(),
            })
        );
        assert_eq!(
            classify("spotify:local::::"),
            Some(Spotify::Local {
                uri: "spotify:local::::".to_owned(),
                artist: String::new(),
                album: String::new(),
                title: String::new(),
            })
        );
        assert_eq!(normalize("mpd:7".to_owned()), "mpd:7");
        assert_eq!(url_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(url_decode("%C3%A9%FF"), "é\u{FFFD}");
    }
}
