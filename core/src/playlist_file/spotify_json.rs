//! The JSON formats, told apart by the keys they use:
//!
//! | top-level key | inside | format |
//! |---|---|---|
//! | `"playlists"` | playlists with `"items"` | Spotify account data export (`Playlist1.json`) |
//! | `"tracks"`, a list | `{"artist", "album", "track", "uri"}` | Spotify account data export (`YourLibrary.json`) |
//! | `"items"` | `{"added_at", "track": {...}}` | Spotify Web API page |
//! | `"tracks"`, an object with `"items"` | as above | Spotify Web API playlist object |
//! | `"playlists"` | playlists with `"tracks"` | MPD slice |
//!
//! Keys may come in any order and unknown keys are ignored. What is refused
//! and what is skipped:
//!
//! - Refused (shape): a container of the wrong kind (`"playlists"` that is
//!   not a list), an item that is not an object or has none of its format's
//!   fields, a playlist with neither `"items"` nor `"tracks"`, keys of two
//!   formats in one file, a Web API playlist whose `"tracks"` has no
//!   `"items"`, and JSON with none of the keys above (which says what it
//!   resembles and what it lacks).
//! - Skipped: an item without a song: `"track": null` (removed), a podcast
//!   episode, an audiobook, a track with neither name nor URI.
//! - Noted: a Web API page with `"next"` set (the playlist goes on).

use super::json::{Kind, Reader};
use super::{Collector, Format, Label, PlaylistFileError as E, Song, ids};

/// Reads the JSON in `src`, which starts with `{` or `[`.
pub(super) fn read(src: &str, c: &mut Collector<'_>) -> Result<Format, E> {
    let mut r = Reader::new(src);
    match r.peek()? {
        Kind::Object => {}
        Kind::Array => {
            return Err(E::NotAPlaylist {
                hint: Some(
                    "it is a JSON list, not one of the JSON objects these formats write".to_owned(),
                ),
            });
        }
        other => {
            return Err(E::NotAPlaylist {
                hint: Some(format!("it is a single JSON value ({})", other.noun())),
            });
        }
    }
    let top_line = r.line();
    let mut top = Top::default();
    let mut page = Page::default();
    r.object(|r, key, line| {
        if top.keys.len() < 64 {
            top.keys.push(key.to_owned());
        }
        match key {
            "playlists" => {
                top.claim("playlists", line, None)?;
                top.format = Some(read_playlists(r, c, line, top.has("info"))?);
            }
            "items" => {
                top.claim("items", line, Some(Format::SpotifyWebApi))?;
                c.start(None)?;
                page.items_line = Some(line);
                read_web_items(r, c, line, &mut page)?;
            }
            "tracks" => match r.peek()? {
                Kind::Array => {
                    top.claim("tracks", line, Some(Format::SpotifyAccountExport))?;
                    c.start(Some("Your Library".to_owned()))?;
                    read_library(r, c)?;
                }
                Kind::Object => {
                    top.claim("tracks", line, Some(Format::SpotifyWebApi))?;
                    top.web_playlist = Some(c.start(None)?);
                    read_web_page(r, c, line)?;
                }
                Kind::Null => r.skip()?,
                other => {
                    return Err(E::Shape {
                        line,
                        format: Format::SpotifyWebApi,
                        problem: format!(
                            "its \"tracks\" is {}, not a list or an object",
                            other.noun()
                        ),
                    });
                }
            },
            // Checked only if the file turns out to be a Web API playlist.
            "name" => {
                if let Ok(Some(name)) = r.text_or_null()? {
                    top.name = Some((name.into_owned(), line));
                }
            }
            "next" => page.read_next(r, line)?,
            "total" => page.total = r.count()?,
            _ => r.skip()?,
        }
        Ok(())
    })?;
    r.finish()?;

    let Some(format) = top.format else {
        return Err(top.unknown(top_line));
    };
    if let (Some(playlist), Some((name, line))) = (top.web_playlist, top.name.take()) {
        let name = c.field(line, Label::Key("name"), &name)?;
        c.name(playlist, name);
    }
    if top.container.map(|(key, _)| key) == Some("items") {
        page.note(c);
    }
    Ok(format)
}

/// What the top-level object held.
#[derive(Default)]
struct Top {
    /// The key holding the songs, and its line.
    container: Option<(&'static str, usize)>,
    format: Option<Format>,
    /// Other keys, for recognising what a file without songs resembles.
    keys: Vec<String>,
    name: Option<(String, usize)>,
    /// The playlist a Web API playlist object's name belongs to.
    web_playlist: Option<usize>,
}

impl Top {
    fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Takes `key` as the file's song container; a second one means the file
    /// mixes formats.
    fn claim(&mut self, key: &'static str, line: usize, format: Option<Format>) -> Result<(), E> {
        if let Some((first, first_line)) = self.container {
            return Err(E::Shape {
                line,
                format: self
                    .format
                    .or(format)
                    .unwrap_or(Format::SpotifyAccountExport),
                problem: format!(
                    "it has both \"{first}\" (line {first_line}) and \"{key}\", which belong to \
                     different formats"
                ),
            });
        }
        self.container = Some((key, line));
        self.format = format;
        Ok(())
    }

    /// The error for an object with no songs container: what it resembles
    /// and what it lacks, or not a playlist at all.
    fn unknown(&self, line: usize) -> E {
        let any = |keys: &[&str]| keys.iter().any(|k| self.has(k));
        let shape = |format, problem: &str| E::Shape {
            line,
            format,
            problem: problem.to_owned(),
        };
        if any(&["info"]) {
            return shape(Format::MpdSlice, "it has no \"playlists\" list");
        }
        if any(&["snapshot_id", "owner", "collaborative", "followers"]) {
            return shape(
                Format::SpotifyWebApi,
                "it is a playlist without its \"tracks\"",
            );
        }
        if any(&["href", "limit", "offset", "previous"]) {
            return shape(Format::SpotifyWebApi, "it has no \"items\" list");
        }
        if any(&[
            "albums",
            "artists",
            "shows",
            "episodes",
            "bannedTracks",
            "bannedArtists",
        ]) {
            return shape(
                Format::SpotifyAccountExport,
                "it has no \"tracks\" list (this part of YourLibrary.json holds no songs)",
            );
        }
        let hint = if self.keys.is_empty() {
            "it is an empty JSON object".to_owned()
        } else {
            let names: Vec<String> = self.keys.iter().take(5).map(|k| format!("{k:?}")).collect();
            format!("it is JSON with the fields {}", names.join(", "))
        };
        E::NotAPlaylist { hint: Some(hint) }
    }
}

/// What a Web API page says about itself.
#[derive(Default)]
struct Page {
    items_line: Option<usize>,
    items: usize,
    next: Option<usize>,
    total: Option<u64>,
}

impl Page {
    fn read_next(&mut self, r: &mut Reader<'_>, line: usize) -> Result<(), E> {
        if let Ok(Some(next)) = r.text_or_null()?
            && !next.trim().is_empty()
        {
            self.next = Some(line);
        }
        Ok(())
    }

    /// A page that says the playlist goes on gets a note.
    fn note(&self, c: &mut Collector<'_>) {
        let Some(line) = self.next else { return };
        let songs = match self.total {
            Some(total) if total > self.items as u64 => {
                format!("{} of the playlist's {total} songs", self.items)
            }
            _ => format!("{} songs", self.items),
        };
        c.note(
            line,
            format!(
                "this page holds only {songs}; the others are on later pages (\"next\"): fetch \
                 every page and upload them together as one \"items\" list"
            ),
        );
    }
}

/// A string field, checked against the limit; `None` when null or empty.
fn text(
    r: &mut Reader<'_>,
    c: &Collector<'_>,
    key_line: usize,
    label: Label<'_>,
    format: Format,
) -> Result<Option<String>, E> {
    let line = r.line().max(key_line);
    match r.text_or_null()? {
        Ok(Some(value)) => c.field(line, label, &value),
        Ok(None) => Ok(None),
        Err(kind) => Err(E::Shape {
            line,
            format,
            problem: format!("{label} is {}, not text", kind.noun()),
        }),
    }
}

/// Reads an object, keeping the text of `names` (checked against the limit)
/// and skipping the rest. Also says whether any of `names` was there.
fn fields<const N: usize>(
    r: &mut Reader<'_>,
    c: &Collector<'_>,
    format: Format,
    outer: Option<&str>,
    names: [&str; N],
) -> Result<([Option<String>; N], bool), E> {
    let mut values = [const { None }; N];
    let mut any = false;
    r.object(|r, key, line| {
        if let Some(i) = names.iter().position(|n| *n == key) {
            any = true;
            let label = match outer {
                Some(outer) => Label::Nested(outer, key),
                None => Label::Key(key),
            };
            let value = text(r, c, line, label, format)?;
            if let Some(slot) = values.get_mut(i) {
                *slot = value;
            }
        }
        Ok(())
    })?;
    Ok((values, any))
}

fn not_an_object(line: usize, format: Format, what: &str, kind: Kind) -> E {
    E::Shape {
        line,
        format,
        problem: format!("{what} on line {line} is {}, not an object", kind.noun()),
    }
}

/// `"playlists": [...]` of an account data export or an MPD slice; the first
/// playlist decides which, and the others must agree.
fn read_playlists(
    r: &mut Reader<'_>,
    c: &mut Collector<'_>,
    line: usize,
    has_info: bool,
) -> Result<Format, E> {
    let guess = if has_info {
        Format::MpdSlice
    } else {
        Format::SpotifyAccountExport
    };
    let kind = r.peek()?;
    if kind != Kind::Array {
        return Err(E::Shape {
            line,
            format: guess,
            problem: format!("its \"playlists\" is {}, not a list", kind.noun()),
        });
    }
    let mut decided: Option<(Format, usize)> = None;
    r.array(|r| {
        let line = r.line();
        let kind = r.peek()?;
        if kind != Kind::Object {
            let format = decided.map_or(guess, |(f, _)| f);
            return Err(not_an_object(line, format, "a playlist", kind));
        }
        let playlist = c.start(None)?;
        let mut this: Option<Format> = None;
        let mut name = None;
        r.object(|r, key, key_line| {
            let format = match key {
                "items" => Format::SpotifyAccountExport,
                "tracks" => Format::MpdSlice,
                "name" => {
                    let format = this.or(decided.map(|(f, _)| f)).unwrap_or(guess);
                    name = text(r, c, key_line, Label::Key("name"), format)?;
                    return Ok(());
                }
                _ => return Ok(()),
            };
            if let Some(other) = this.or(decided.map(|(f, _)| f))
                && other != format
            {
                let first = decided.map_or(line, |(_, l)| l);
                return Err(E::Shape {
                    line: key_line,
                    format: other,
                    problem: format!(
                        "the playlist on line {line} has \"{key}\" ({format}), unlike the one on \
                         line {first}"
                    ),
                });
            }
            this = Some(format);
            decided.get_or_insert((format, line));
            match format {
                Format::MpdSlice => read_mpd_tracks(r, c, key_line),
                _ => read_export_items(r, c, key_line),
            }
        })?;
        c.name(playlist, name);
        if this.is_none() {
            return Err(E::Shape {
                line,
                format: decided.map_or(guess, |(f, _)| f),
                problem: format!(
                    "the playlist on line {line} has neither \"items\" (a Spotify account data \
                     export) nor \"tracks\" (an MPD slice)"
                ),
            });
        }
        Ok(())
    })?;
    Ok(decided.map_or(guess, |(f, _)| f))
}

/// A list of items that must be objects; `item` reads each, given its line.
fn items(
    r: &mut Reader<'_>,
    line: usize,
    format: Format,
    key: &str,
    mut item: impl FnMut(&mut Reader<'_>, usize) -> Result<(), E>,
) -> Result<(), E> {
    match r.peek()? {
        Kind::Array => {}
        Kind::Null => return r.skip(),
        kind => {
            return Err(E::Shape {
                line,
                format,
                problem: format!("its \"{key}\" is {}, not a list", kind.noun()),
            });
        }
    }
    r.array(|r| {
        let line = r.line();
        match r.peek()? {
            Kind::Object => item(r, line),
            kind => Err(not_an_object(
                line,
                format,
                &format!("an item of \"{key}\""),
                kind,
            )),
        }
    })
}

/// `Playlist1.json` items: `{"track": {...} | null, "episode", "localTrack",
/// "audiobook", "addedDate"}`.
fn read_export_items(r: &mut Reader<'_>, c: &mut Collector<'_>, line: usize) -> Result<(), E> {
    const F: Format = Format::SpotifyAccountExport;
    items(r, line, F, "items", |r, line| {
        let mut track = None;
        let mut local = None;
        let mut episode = None;
        let mut audiobook = false;
        let mut known = false;
        r.object(|r, key, key_line| {
            let kind = match key {
                "track" | "localTrack" | "episode" | "audiobook" => r.peek()?,
                _ => return Ok(()),
            };
            known = true;
            match kind {
                Kind::Null => return r.skip(),
                Kind::Object => {}
                kind => return Err(not_an_object(key_line, F, &format!("\"{key}\""), kind)),
            }
            match key {
                "track" => {
                    let names = ["trackName", "artistName", "albumName", "trackUri"];
                    track = Some(fields(r, c, F, None, names)?.0);
                }
                "localTrack" => {
                    let names = ["trackName", "artistName", "albumName", "uri"];
                    local = Some(fields(r, c, F, Some("localTrack"), names)?.0);
                }
                "episode" => {
                    let names = ["episodeName", "showName"];
                    episode = Some(fields(r, c, F, Some("episode"), names)?.0);
                }
                _ => {
                    audiobook = true;
                    r.skip()?;
                }
            }
            Ok(())
        })?;
        if let Some([title, artist, album, uri]) = track.or(local) {
            let song = with_local(Song {
                line,
                id: uri.map(ids::normalize),
                title,
                artist,
                album,
                text: None,
            });
            c.song(song, "the track has neither \"trackName\" nor \"trackUri\"");
        } else if let Some([name, show]) = episode {
            let what = name
                .or(show)
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default();
            c.skip(line, format!("a podcast episode{what}, not a song"));
        } else if audiobook {
            c.skip(line, "an audiobook, not a song");
        } else if known {
            c.skip(line, "the item has no track (\"track\" is null)");
        } else {
            return Err(E::Shape {
                line,
                format: F,
                problem: format!(
                    "the item on line {line} has none of \"track\", \"episode\" or \"localTrack\""
                ),
            });
        }
        Ok(())
    })
}

/// Fills what a `spotify:local:` id says and the fields lack.
fn with_local(mut song: Song) -> Song {
    if let Some(ids::Spotify::Local {
        artist,
        album,
        title,
        ..
    }) = song.id.as_deref().and_then(ids::classify)
    {
        let part = |text: String| (!text.trim().is_empty()).then(|| text.trim().to_owned());
        song.title = song.title.or_else(|| part(title));
        song.artist = song.artist.or_else(|| part(artist));
        song.album = song.album.or_else(|| part(album));
    }
    song
}

/// `YourLibrary.json`'s `"tracks"`: `{"artist", "album", "track", "uri"}`.
fn read_library(r: &mut Reader<'_>, c: &mut Collector<'_>) -> Result<(), E> {
    const F: Format = Format::SpotifyAccountExport;
    let line = r.line();
    items(r, line, F, "tracks", |r, line| {
        let ([title, artist, album, uri], any) =
            fields(r, c, F, None, ["track", "artist", "album", "uri"])?;
        if !any {
            return Err(E::Shape {
                line,
                format: F,
                problem: format!(
                    "the track on line {line} has none of \"track\", \"artist\", \"album\" or \"uri\""
                ),
            });
        }
        let song = with_local(Song {
            line,
            id: uri.map(ids::normalize),
            title,
            artist,
            album,
            text: None,
        });
        c.song(song, "the track has neither \"track\" nor \"uri\"");
        Ok(())
    })
}

/// An MPD playlist's `"tracks"`: `{"pos", "artist_name", "track_uri",
/// "track_name", "album_name", ...}`, in list order (`pos` is not checked).
fn read_mpd_tracks(r: &mut Reader<'_>, c: &mut Collector<'_>, line: usize) -> Result<(), E> {
    const F: Format = Format::MpdSlice;
    items(r, line, F, "tracks", |r, line| {
        let names = ["track_name", "artist_name", "album_name", "track_uri"];
        let ([title, artist, album, uri], any) = fields(r, c, F, None, names)?;
        if !any {
            return Err(E::Shape {
                line,
                format: F,
                problem: format!(
                    "the track on line {line} has none of \"track_name\", \"artist_name\" or \
                     \"track_uri\""
                ),
            });
        }
        let song = Song {
            line,
            id: uri.map(ids::normalize),
            title,
            artist,
            album,
            text: None,
        };
        c.song(
            song,
            "the track has neither \"track_name\" nor \"track_uri\"",
        );
        Ok(())
    })
}

/// A Web API playlist object's `"tracks"`: a page object.
fn read_web_page(r: &mut Reader<'_>, c: &mut Collector<'_>, line: usize) -> Result<(), E> {
    let mut page = Page::default();
    r.object(|r, key, key_line| match key {
        "items" => {
            page.items_line = Some(key_line);
            read_web_items(r, c, key_line, &mut page)
        }
        "next" => page.read_next(r, key_line),
        "total" => {
            page.total = r.count()?;
            Ok(())
        }
        _ => Ok(()),
    })?;
    if page.items_line.is_none() {
        return Err(E::Shape {
            line,
            format: Format::SpotifyWebApi,
            problem: "its \"tracks\" has no \"items\" (the file is the playlist without its \
                      songs): fetch GET /v1/playlists/{id}/tracks and upload that"
                .to_owned(),
        });
    }
    page.note(c);
    Ok(())
}

/// A Web API track object, or what an item holds besides `"track"`.
#[derive(Default)]
struct WebTrack {
    name: Option<String>,
    uri: Option<String>,
    id: Option<String>,
    kind: Option<String>,
    artist: Option<String>,
    album: Option<String>,
    any: bool,
}

/// Reads one key of a track object into `t`; other keys are skipped.
fn web_track_key(
    r: &mut Reader<'_>,
    c: &Collector<'_>,
    t: &mut WebTrack,
    outer: &str,
    key: &str,
    line: usize,
) -> Result<(), E> {
    const F: Format = Format::SpotifyWebApi;
    let label = Label::Nested(outer, key);
    match key {
        "name" => t.name = text(r, c, line, label, F)?,
        "uri" => t.uri = text(r, c, line, label, F)?,
        "id" => t.id = text(r, c, line, label, F)?,
        "type" => t.kind = text(r, c, line, label, F)?,
        "artists" => match r.peek()? {
            Kind::Array => {
                let mut first = true;
                r.array(|r| {
                    if first && r.peek()? == Kind::Object {
                        let ([name], _) = fields(r, c, F, Some("artists"), ["name"])?;
                        t.artist = name;
                    }
                    first = false;
                    Ok(())
                })?;
            }
            _ => return r.skip(),
        },
        "album" => match r.peek()? {
            Kind::Object => {
                let ([name], _) = fields(r, c, F, Some("album"), ["name"])?;
                t.album = name;
            }
            _ => return r.skip(),
        },
        _ => return Ok(()),
    }
    if matches!(key, "name" | "uri" | "id") {
        t.any = true;
    }
    Ok(())
}

/// Web API items: `{"added_at", "track": {...} | null}`; an item that is a
/// track object itself (an album's or a search's tracks) is read as one.
fn read_web_items(
    r: &mut Reader<'_>,
    c: &mut Collector<'_>,
    line: usize,
    page: &mut Page,
) -> Result<(), E> {
    const F: Format = Format::SpotifyWebApi;
    items(r, line, F, "items", |r, line| {
        page.items += 1;
        let mut track: Option<WebTrack> = None;
        let mut null_track = false;
        let mut itself = WebTrack::default();
        r.object(|r, key, key_line| {
            if key != "track" {
                return web_track_key(r, c, &mut itself, "item", key, key_line);
            }
            match r.peek()? {
                Kind::Null => {
                    null_track = true;
                    r.skip()
                }
                Kind::Object => {
                    let mut t = WebTrack::default();
                    r.object(|r, key, key_line| {
                        web_track_key(r, c, &mut t, "track", key, key_line)
                    })?;
                    track = Some(t);
                    Ok(())
                }
                kind => Err(not_an_object(key_line, F, "\"track\"", kind)),
            }
        })?;
        let t = match track {
            Some(t) => t,
            None if null_track => {
                c.skip(
                    line,
                    "the track was removed from Spotify (\"track\" is null)",
                );
                return Ok(());
            }
            None if itself.any => itself,
            None => {
                return Err(E::Shape {
                    line,
                    format: F,
                    problem: format!("the item on line {line} has no \"track\""),
                });
            }
        };
        match t.kind.as_deref() {
            Some("episode") => {
                let what = t.name.map(|n| format!(" ({n:?})")).unwrap_or_default();
                c.skip(line, format!("a podcast episode{what}, not a song"));
                return Ok(());
            }
            // A list of playlists, albums, ... (GET /v1/me/playlists).
            Some(kind) if kind != "track" => {
                c.skip(line, ids::Spotify::reason(kind));
                return Ok(());
            }
            _ => {}
        }
        let id = t.uri.or(t.id).map(ids::normalize);
        let song = with_local(Song {
            line,
            id,
            title: t.name,
            artist: t.artist,
            album: t.album,
            text: None,
        });
        c.song(song, "the track has neither \"name\" nor \"uri\"");
        Ok(())
    })
}
