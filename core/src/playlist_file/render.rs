//! Renders a playlist into each format the way the tools that write it do,
//! for the detection, round-trip and mutation tests.

use super::Format;
use serde_json::{Value, json};

/// A song to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Track {
    pub title: String,
    pub artist: String,
    pub album: Option<String>,
    /// The 22-character Spotify id.
    pub id: Option<String>,
}

impl Track {
    pub(super) fn uri(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("spotify:track:{id}"))
    }
}

/// A second artist, so "first artist" logic is exercised.
pub(super) const FEATURED: &str = "Featured Guest";

pub(super) fn render(format: Format, name: &str, tracks: &[Track]) -> String {
    match format {
        Format::SpotifyAccountExport => export(name, tracks),
        Format::SpotifyWebApi => web_page(tracks),
        Format::MpdSlice => mpd(name, tracks),
        Format::ExportifyCsv => exportify(tracks),
        Format::M3u => m3u(name, tracks),
        Format::PlainText => plain(name, tracks),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// `Playlist1.json`.
fn export(name: &str, tracks: &[Track]) -> String {
    let items: Vec<Value> = tracks
        .iter()
        .map(|t| {
            json!({
                "track": {
                    "trackName": t.title,
                    "artistName": t.artist,
                    "albumName": t.album.clone().unwrap_or_default(),
                    "trackUri": t.uri().unwrap_or_default(),
                },
                "episode": null,
                "localTrack": null,
                "audiobook": null,
                "addedDate": "2024-05-01",
            })
        })
        .collect();
    pretty(&json!({
        "playlists": [{
            "name": name,
            "lastModifiedDate": "2024-05-02",
            "items": items,
            "description": null,
            "numberOfFollowers": 0,
        }]
    }))
}

/// A `GET /v1/playlists/{id}/tracks` page.
fn web_page(tracks: &[Track]) -> String {
    let items: Vec<Value> = tracks
        .iter()
        .map(|t| {
            json!({
                "added_at": "2024-05-01T10:00:00Z",
                "added_by": {"id": "someone", "type": "user"},
                "is_local": false,
                "primary_color": null,
                "track": {
                    "album": t.album.as_ref().map(|a| json!({"name": a, "album_type": "album", "images": []})),
                    "artists": [{"name": t.artist, "type": "artist"}, {"name": FEATURED, "type": "artist"}],
                    "available_markets": ["DE", "SE", "US"],
                    "duration_ms": 200_000,
                    "explicit": false,
                    "id": t.id,
                    "name": t.title,
                    "popularity": 50,
                    "type": "track",
                    "uri": t.uri(),
                    "is_local": false,
                },
                "video_thumbnail": {"url": null},
            })
        })
        .collect();
    pretty(&json!({
        "href": "https://api.spotify.com/v1/playlists/x/tracks?offset=0&limit=100",
        "items": items,
        "limit": 100,
        "next": null,
        "offset": 0,
        "previous": null,
        "total": tracks.len(),
    }))
}

/// A complete MPD slice.
fn mpd(name: &str, tracks: &[Track]) -> String {
    let items: Vec<Value> = tracks
        .iter()
        .enumerate()
        .map(|(pos, t)| {
            let mut track = json!({
                "pos": pos,
                "artist_name": t.artist,
                "track_uri": t.uri().unwrap_or_default(),
                "artist_uri": "spotify:artist:2wIVse2owClT7go1WT98tk",
                "track_name": t.title,
                "album_uri": "spotify:album:6vV5UrXcfyQD1wu4Qo2I9K",
                "duration_ms": 226_863,
            });
            if let (Some(album), Some(object)) = (&t.album, track.as_object_mut()) {
                object.insert("album_name".to_owned(), json!(album));
            }
            track
        })
        .collect();
    pretty(&json!({
        "info": {"generated_on": "2017-12-03 08:41:42.057563", "slice": "0-999", "version": "v1"},
        "playlists": [{
            "name": name,
            "collaborative": "false",
            "pid": 0,
            "modified_at": 1_493_424_000,
            "num_tracks": tracks.len(),
            "tracks": items,
        }]
    }))
}

/// Exportify's current columns (album before artists).
fn exportify(tracks: &[Track]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    let header = [
        "Track URI",
        "Track Name",
        "Album Name",
        "Artist Name(s)",
        "Release Date",
        "Duration (ms)",
        "Popularity",
        "Added By",
        "Added At",
    ];
    let _ = writer.write_record(header);
    for t in tracks {
        let artists = format!("{}, {FEATURED}", t.artist);
        let _ = writer.write_record([
            t.uri().unwrap_or_default().as_str(),
            &t.title,
            t.album.as_deref().unwrap_or_default(),
            &artists,
            "2001-03-12",
            "320357",
            "70",
            "spotify:user:someone",
            "2024-05-01T10:00:00Z",
        ]);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// An M3U8 with `#EXTINF` lines; paths are Spotify URIs where there is an id.
fn m3u(name: &str, tracks: &[Track]) -> String {
    let mut out = format!("#EXTM3U\n#PLAYLIST:{name}\n");
    for (i, t) in tracks.iter().enumerate() {
        out.push_str(&format!("#EXTINF:{},{} - {}\n", 180 + i, t.artist, t.title));
        match t.uri() {
            Some(uri) => out.push_str(&format!("{uri}\n")),
            None => out.push_str(&format!("/music/track{i:03}.mp3\n")),
        }
    }
    out
}

fn plain(name: &str, tracks: &[Track]) -> String {
    let mut out = format!("# {name}\n\n");
    for t in tracks {
        out.push_str(&format!("{} - {}\n", t.artist, t.title));
    }
    out
}
