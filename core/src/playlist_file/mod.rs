//! Playlist files that listeners upload (`POST /v1/playlists/verify`): the
//! format detected from the content (never from a file name), the file parsed
//! into entries within [`Limits`], and errors that name the line and say what
//! to do. Pure and I/O-free: the search API passes the uploaded bytes to
//! [`parse`] and matches the entries against the catalogue, folding text with
//! [`fold`].
//!
//! Formats, detection, limits, and what is skipped versus refused are
//! specified in `docs/playlist-files.md`. [`parse`] never panics, whatever the
//! bytes, and allocates in proportion to the entries it keeps: past
//! `max_entries` it only counts.

use serde::{Deserialize, Serialize};
use std::fmt;

mod decode;
mod error;
mod exportify;
mod fold;
mod fuzz;
mod ids;
mod json;
mod lines;
mod m3u;
mod plain;
mod spotify_json;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod render;
#[cfg(test)]
mod tests;

pub use error::PlaylistFileError;
pub use fold::fold;
#[doc(hidden)]
pub use fuzz::fuzz_parse;
pub use ids::spotify_track_uri;

/// The longest [`Entry::text`], in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// The formats [`parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Spotify's "Download your data": `Playlist1.json` (`{"playlists":
    /// [{"name", "items": [{"track": {"trackName", ...}}]}]}`) or
    /// `YourLibrary.json` (`{"tracks": [{"artist", "album", "track", "uri"}]}`).
    SpotifyAccountExport,
    /// A `GET /v1/playlists/{id}/tracks` page (`{"items": [{"track": ...}]}`)
    /// or a whole playlist object (`{"name", "tracks": {"items": [...]}}`).
    SpotifyWebApi,
    /// A Million Playlist Dataset slice (`{"info", "playlists": [{"name",
    /// "pid", "tracks": [{"track_name", "artist_name", "track_uri"}]}]}`).
    MpdSlice,
    /// Exportify's CSV: a header with "Track URI", "Track Name", "Artist
    /// Name(s)", "Album Name" in any order, `,` or `;` separated.
    ExportifyCsv,
    /// M3U or M3U8: `#EXTINF:<seconds>,Artist - Title` and path lines.
    M3u,
    /// One `Artist - Title` (or Spotify link) per line.
    PlainText,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::SpotifyAccountExport,
        Format::SpotifyWebApi,
        Format::MpdSlice,
        Format::ExportifyCsv,
        Format::M3u,
        Format::PlainText,
    ];

    /// The name in JSON (`"spotify_account_export"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::SpotifyAccountExport => "spotify_account_export",
            Format::SpotifyWebApi => "spotify_web_api",
            Format::MpdSlice => "mpd_slice",
            Format::ExportifyCsv => "exportify_csv",
            Format::M3u => "m3u",
            Format::PlainText => "plain_text",
        }
    }
}

/// For people: "Spotify account data export", "M3U/M3U8", ...
impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::SpotifyAccountExport => "Spotify account data export",
            Format::SpotifyWebApi => "Spotify Web API playlist tracks",
            Format::MpdSlice => "MPD slice JSON",
            Format::ExportifyCsv => "Exportify CSV",
            Format::M3u => "M3U/M3U8",
            Format::PlainText => "\"Artist - Title\" lines",
        })
    }
}

/// What one upload may hold. A file over a limit is refused with an error
/// that names the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The file as uploaded (before decoding UTF-16). Default 2 MiB.
    pub max_bytes: usize,
    /// Items over all playlists of the file: entries and skipped items
    /// together. Default 10,000, as a query's `max_tracks`.
    pub max_entries: usize,
    /// One field's value (a title, an artist, an id, a line of plain text),
    /// in bytes of UTF-8. Default 512, as a query's `max_id_bytes`.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let query = crate::query::Limits::default();
        Limits {
            max_bytes: 2 << 20,
            max_entries: query.max_tracks,
            max_field_bytes: query.max_id_bytes,
        }
    }
}

/// A parsed upload: one or more playlists, and what was there but could not
/// be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaylistFile {
    pub format: Format,
    /// In file order. Formats without playlists of their own (CSV, M3U, plain
    /// text, a Web API page) give exactly one.
    pub playlists: Vec<UploadedPlaylist>,
    /// Over the whole file, in file order: items that are there but hold no
    /// usable song (a podcast episode, a removed track, a path with no
    /// artist and title), and a note where a Web API page says more tracks
    /// are on later pages.
    pub skipped: Vec<Skipped>,
}

impl PlaylistFile {
    /// Every entry of every playlist, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.playlists.iter().flat_map(|p| p.entries.iter())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedPlaylist {
    pub name: Option<String>,
    pub entries: Vec<Entry>,
}

/// One song of an uploaded playlist. At least one of `id` and `title` is
/// set; fields are trimmed, and empty ones are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based line in the decoded file: where the item's object starts
    /// (JSON), the row starts (CSV), the `#EXTINF` line (M3U, else the path
    /// line), or the line (plain text).
    pub line: usize,
    /// `spotify:track:<22 characters>` for any Spotify track URI, link or bare
    /// id; another id the file carries (`spotify:local:...`) as written.
    pub id: Option<String>,
    pub title: Option<String>,
    /// The first (main) artist: Exportify's "Artist Name(s)" list is cut at
    /// its first ','.
    pub artist: Option<String>,
    pub album: Option<String>,
    /// What the listener would recognise, for the report: the line (plain
    /// text), the `#EXTINF` title or file name (M3U), else "Artist - Title",
    /// the title, or the id. At most [`MAX_TEXT_CHARS`] characters, control
    /// characters as spaces.
    pub text: String,
}

/// An item that is in the file but holds no usable song; reported, not fatal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub line: usize,
    /// A sentence for the listener, e.g. `a podcast episode ("Daily"), not a
    /// song`.
    pub reason: String,
}

/// Detects the format of `bytes` from their content and parses them.
///
/// Refuses (with an error that names the line, and the field or limit where
/// one applies): a file over `max_bytes`, empty or blank files, text that is
/// not UTF-8 (UTF-16 with a byte-order mark is decoded), broken or truncated
/// JSON, JSON of the wrong shape, a CSV row with the wrong number of fields, a
/// field over `max_field_bytes`, more than `max_entries` items, and content in
/// no format Setlist reads. Skips, and reports in [`PlaylistFile::skipped`],
/// items that hold no song.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<PlaylistFile, PlaylistFileError> {
    if bytes.is_empty() {
        return Err(PlaylistFileError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(PlaylistFileError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let text = decode::decode(bytes)?;
    if text.is_empty() {
        return Err(PlaylistFileError::Empty);
    }
    if text.trim().is_empty() {
        return Err(PlaylistFileError::Blank);
    }
    let mut c = Collector::new(limits);
    let read = match detect(&text) {
        Detected::Json => spotify_json::read(&text, &mut c),
        Detected::Csv(delimiter) => {
            exportify::read(&text, delimiter, &mut c).map(|()| Format::ExportifyCsv)
        }
        Detected::M3u => m3u::read(&text, &mut c).map(|()| Format::M3u),
        Detected::Plain => plain::read(&text, &mut c).map(|()| Format::PlainText),
        Detected::Markup => Err(PlaylistFileError::NotAPlaylist {
            hint: Some(
                "it looks like XML or HTML (an XSPF playlist, an iTunes library or a web page)"
                    .to_owned(),
            ),
        }),
    };
    match read {
        // Past the limit nothing is kept and what follows is only counted;
        // whatever went wrong there, the limit is what to fix first.
        Err(_) if c.over_limit() => Err(PlaylistFileError::TooManyEntries {
            found: c.items,
            complete: false,
            limit: limits.max_entries,
        }),
        Err(e) => Err(e),
        Ok(format) => c.finish(format),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Json,
    Csv(u8),
    M3u,
    Plain,
    Markup,
}

/// The format by content alone, in this order: JSON (`{`, or `[` opening a
/// JSON value), XML/HTML (`<`, refused), M3U (a first line `#EXTM3U`,
/// `#EXTINF:` or `#PLAYLIST:`), Exportify CSV (a first line that is a header
/// naming a known column), M3U without a header (a first song line that is a
/// file path or URL), else plain text.
fn detect(text: &str) -> Detected {
    let start = text.trim_start();
    let mut chars = start.chars();
    match chars.next() {
        Some('{') => return Detected::Json,
        Some('[') => {
            if matches!(
                chars.as_str().trim_start().chars().next(),
                None | Some('{' | '[' | '"' | ']')
            ) {
                return Detected::Json;
            }
        }
        Some('<') => return Detected::Markup,
        _ => {}
    }
    let mut content = lines::lines(text)
        .map(|(_, l)| l.trim())
        .filter(|l| !l.is_empty());
    let Some(first) = content.next() else {
        return Detected::Plain;
    };
    if m3u::is_header(first) {
        return Detected::M3u;
    }
    if let Some(delimiter) = exportify::detect(first) {
        return Detected::Csv(delimiter);
    }
    let first_song = std::iter::once(first)
        .chain(content)
        .find(|l| !l.starts_with('#'));
    if first_song.is_some_and(|l| ids::classify(l).is_none() && lines::looks_like_path(l)) {
        return Detected::M3u;
    }
    Detected::Plain
}

/// A song as a format reader found it, before it becomes an [`Entry`].
#[derive(Debug, Default)]
struct Song {
    line: usize,
    id: Option<String>,
    title: Option<String>,
    artist: Option<String>,
    album: Option<String>,
    /// The report text when the format has one (a line, an `#EXTINF` title);
    /// else "Artist - Title" is composed.
    text: Option<String>,
}

/// Where the format readers put what they find. It keeps entries up to
/// `max_entries` and only counts the ones after, so a huge file costs no
/// more memory than a file at the limit.
struct Collector<'l> {
    limits: &'l Limits,
    playlists: Vec<UploadedPlaylist>,
    skipped: Vec<Skipped>,
    /// Entries and skipped items so far, kept or not.
    items: usize,
}

/// How a field is named in errors: a JSON key or CSV column (quoted), or a
/// description (`the line`).
#[derive(Debug, Clone, Copy)]
enum Label<'k> {
    Key(&'k str),
    Nested(&'k str, &'k str),
    Text(&'static str),
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Key(key) => write!(f, "\"{key}\""),
            Label::Nested(outer, key) => write!(f, "\"{outer}.{key}\""),
            Label::Text(text) => f.write_str(text),
        }
    }
}

impl<'l> Collector<'l> {
    fn new(limits: &'l Limits) -> Self {
        Collector {
            limits,
            playlists: Vec::new(),
            skipped: Vec::new(),
            items: 0,
        }
    }

    fn over_limit(&self) -> bool {
        self.items > self.limits.max_entries
    }

    /// Starts the playlist that the following entries belong to; its index
    /// is for [`Collector::name`].
    fn start(&mut self, name: Option<String>) -> Result<usize, PlaylistFileError> {
        if self.playlists.len() >= self.limits.max_entries.max(1) {
            return Err(PlaylistFileError::TooManyPlaylists {
                limit: self.limits.max_entries.max(1),
            });
        }
        self.playlists.push(UploadedPlaylist {
            name,
            entries: Vec::new(),
        });
        Ok(self.playlists.len() - 1)
    }

    /// Names a playlist whose name comes after its entries (JSON keys may be
    /// in any order).
    fn name(&mut self, playlist: usize, name: Option<String>) {
        if let Some(p) = self.playlists.get_mut(playlist) {
            p.name = name;
        }
    }

    /// A field's value, trimmed; `None` when empty. Refuses a value over
    /// `max_field_bytes`.
    fn field(
        &self,
        line: usize,
        label: Label<'_>,
        value: &str,
    ) -> Result<Option<String>, PlaylistFileError> {
        if value.len() > self.limits.max_field_bytes {
            return Err(PlaylistFileError::FieldTooLong {
                line,
                field: label.to_string(),
                bytes: value.len(),
                limit: self.limits.max_field_bytes,
            });
        }
        let value = value.trim();
        Ok((!value.is_empty()).then(|| value.to_owned()))
    }

    /// Adds `song`, or skips it: with `unusable` when it has neither an id
    /// nor a title, and with the reason when its id is a Spotify link to
    /// something other than a track (an episode, an album).
    fn song(&mut self, song: Song, unusable: &str) {
        if song.id.is_none() && song.title.is_none() {
            self.skip(song.line, unusable);
            return;
        }
        if let Some(ids::Spotify::Other(kind)) = song.id.as_deref().and_then(ids::classify)
            && kind != "track"
        {
            self.skip(song.line, ids::Spotify::reason(&kind));
            return;
        }
        self.items += 1;
        if self.over_limit() {
            return;
        }
        let text = match song.text.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => clip(text),
            _ => clip(&compose(&song)),
        };
        let entry = Entry {
            line: song.line,
            id: song.id,
            title: song.title,
            artist: song.artist,
            album: song.album,
            text,
        };
        if self.playlists.is_empty() {
            self.playlists.push(UploadedPlaylist {
                name: None,
                entries: Vec::new(),
            });
        }
        if let Some(p) = self.playlists.last_mut() {
            p.entries.push(entry);
        }
    }

    /// An item that is there but holds no song; counts towards the limit.
    fn skip(&mut self, line: usize, reason: impl Into<String>) {
        self.items += 1;
        if !self.over_limit() {
            self.skipped.push(Skipped {
                line,
                reason: reason.into(),
            });
        }
    }

    /// A remark about songs that are not in the file at all (a Web API page
    /// with more pages); does not count as an item.
    fn note(&mut self, line: usize, reason: String) {
        if !self.over_limit() && self.skipped.len() < self.limits.max_entries {
            self.skipped.push(Skipped { line, reason });
        }
    }

    fn finish(self, format: Format) -> Result<PlaylistFile, PlaylistFileError> {
        if self.over_limit() {
            return Err(PlaylistFileError::TooManyEntries {
                found: self.items,
                complete: true,
                limit: self.limits.max_entries,
            });
        }
        let mut playlists = self.playlists;
        if playlists.is_empty()
            && format != Format::SpotifyAccountExport
            && format != Format::MpdSlice
        {
            playlists.push(UploadedPlaylist {
                name: None,
                entries: Vec::new(),
            });
        }
        Ok(PlaylistFile {
            format,
            playlists,
            skipped: self.skipped,
        })
    }
}

/// "Artist - Title", the title, or the id.
fn compose(song: &Song) -> String {
    match (&song.artist, &song.title, &song.id) {
        (Some(artist), Some(title), _) => format!("{artist} - {title}"),
        (None, Some(title), _) => title.clone(),
        (_, None, Some(id)) => id.clone(),
        (_, None, None) => String::new(),
    }
}

/// At most [`MAX_TEXT_CHARS`] characters (the last an ellipsis when cut),
/// with control characters (a line break in a JSON string) as spaces.
fn clip(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_CHARS * 4));
    for (i, c) in text.chars().enumerate() {
        if i + 1 == MAX_TEXT_CHARS && text.chars().nth(MAX_TEXT_CHARS).is_some() {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}
