//! Detection across formats, the JSON formats, and the limits and errors
//! every format shares. Each line format's own cases are beside its reader.

use super::render::{Track, render};
use super::*;

fn track(artist: &str, title: &str, album: Option<&str>, id: Option<&str>) -> Track {
    Track {
        title: title.to_owned(),
        artist: artist.to_owned(),
        album: album.map(str::to_owned),
        id: id.map(str::to_owned),
    }
}

/// A playlist with what trips parsers: accents, CJK, quotes, commas,
/// ampersands, dashes in titles, a missing album and a missing id.
fn road_trip() -> Vec<Track> {
    vec![
        track(
            "Daft Punk",
            "One More Time",
            Some("Discovery"),
            Some("0DiWol3AO6WpXZgp0goxAV"),
        ),
        track(
            "Beyoncé",
            "Halo",
            Some("I Am... Sasha Fierce"),
            Some("4JehYebiI9JE8sR8MisGVb"),
        ),
        track(
            "Sigur Rós",
            "Hoppípolla",
            None,
            Some("6eTGxxQxiTFE6LjZu6PcZM"),
        ),
        track(
            "Simon & Garfunkel",
            "The Sound of Silence - Acoustic",
            Some("Wednesday Morning, 3 A.M."),
            None,
        ),
        track(
            "The \"Quoted\" Band",
            "Say \"Hi\", then ‘Bye’",
            Some("Quotes, Commas; Semicolons"),
            Some("1h2xVEoJORqrg71HocgqXd"),
        ),
        track(
            "東京事変",
            "群青日和",
            Some("教育"),
            Some("3ZFTkvIE7kyPt6Nu3PEa7V"),
        ),
    ]
}

fn parsed(text: &str) -> PlaylistFile {
    parse(text.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn err(text: &str) -> PlaylistFileError {
    parse(text.as_bytes(), &Limits::default()).expect_err(text)
}

fn title_artist(file: &PlaylistFile) -> Vec<(Option<String>, Option<String>)> {
    file.entries()
        .map(|e| (e.title.clone(), e.artist.clone()))
        .collect()
}

#[test]
fn each_format_is_detected_and_reads_the_same_songs() {
    let tracks = road_trip();
    let expected: Vec<_> = tracks
        .iter()
        .map(|t| (Some(t.title.clone()), Some(t.artist.clone())))
        .collect();
    for format in Format::ALL {
        let text = render(format, "Road trip", &tracks);
        let file = parsed(&text);
        assert_eq!(file.format, format, "{text}");
        assert_eq!(title_artist(&file), expected, "{format}");
        assert!(file.skipped.is_empty(), "{format}: {:?}", file.skipped);
        assert_eq!(file.playlists.len(), 1, "{format}");
        let name = file.playlists[0].name.as_deref();
        match format {
            Format::SpotifyWebApi | Format::ExportifyCsv | Format::PlainText => {
                assert_eq!(name, None, "{format}");
            }
            _ => assert_eq!(name, Some("Road trip"), "{format}"),
        }
        // Ids and albums where the format carries them.
        let ids: Vec<_> = file.entries().map(|e| e.id.clone()).collect();
        let albums: Vec<_> = file.entries().map(|e| e.album.clone()).collect();
        match format {
            Format::PlainText => assert!(ids.iter().all(Option::is_none)),
            _ => assert_eq!(
                ids,
                tracks.iter().map(Track::uri).collect::<Vec<_>>(),
                "{format}"
            ),
        }
        match format {
            Format::M3u | Format::PlainText => assert!(albums.iter().all(Option::is_none)),
            _ => assert_eq!(
                albums,
                tracks.iter().map(|t| t.album.clone()).collect::<Vec<_>>(),
                "{format}"
            ),
        }
        // Lines: where each item's object starts, or its row or line.
        let lines: Vec<&str> = text.lines().collect();
        for (e, t) in file.entries().zip(&tracks) {
            let line = lines[e.line - 1];
            match format {
                Format::SpotifyAccountExport | Format::SpotifyWebApi | Format::MpdSlice => {
                    assert_eq!(line.trim(), "{", "{format} entry {e:?}");
                }
                Format::ExportifyCsv => {
                    assert!(line.contains(&t.title.replace('"', "\"\"")), "{line}");
                }
                Format::M3u => assert!(line.starts_with("#EXTINF:") && line.contains(&t.title)),
                Format::PlainText => assert_eq!(line, format!("{} - {}", t.artist, t.title)),
            }
        }
    }
}

#[test]
fn report_text_is_what_the_listener_would_recognise() {
    let tracks = road_trip();
    for format in Format::ALL {
        let file = parsed(&render(format, "Road trip", &tracks));
        let texts: Vec<&str> = file.entries().map(|e| e.text.as_str()).collect();
        assert_eq!(texts[0], "Daft Punk - One More Time", "{format}");
        assert_eq!(
            texts[4], "The \"Quoted\" Band - Say \"Hi\", then ‘Bye’",
            "{format}"
        );
    }
    let long = format!("A - {}", "é".repeat(250));
    let file = parsed(&long);
    let text = &file.playlists[0].entries[0].text;
    assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
    assert!(text.ends_with("é…"));
}

#[test]
fn every_format_reads_the_same_from_utf16_and_with_a_bom() {
    let tracks = road_trip();
    for format in Format::ALL {
        let text = render(format, "Road trip", &tracks);
        let plain = parsed(&text);
        let crlf = text.replace('\n', "\r\n");
        let mut encodings = vec![
            [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
            crlf.as_bytes().to_vec(),
        ];
        let mut le = vec![0xFF, 0xFE];
        le.extend(crlf.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        encodings.push(le);
        encodings.push(be);
        for bytes in encodings {
            let file = parse(&bytes, &Limits::default()).unwrap();
            assert_eq!(file, plain, "{format}");
        }
    }
}

#[test]
fn the_account_export_reads_every_kind_of_item() {
    let text = r#"{
  "playlists": [
    {
      "name": "Mixed \"bag\"",
      "lastModifiedDate": "2023-01-02",
      "items": [
        {
          "track": {
            "trackName": "Halo",
            "artistName": "Beyoncé",
            "albumName": "I Am... Sasha Fierce",
            "trackUri": "spotify:track:4JehYebiI9JE8sR8MisGVb"
          },
          "episode": null,
          "localTrack": null,
          "addedDate": "2023-01-01"
        },
        {"track": null, "episode": {"episodeName": "Daily news", "showName": "The Show", "episodeUri": "spotify:episode:512ojhOuo1ktJprKbVcKyQ"}, "localTrack": null},
        {"track": null, "episode": null, "localTrack": {"uri": "spotify:local:Daft+Punk:Discovery:One+More+Time:320"}},
        {"track": null, "episode": null, "localTrack": null, "audiobook": {"audiobookName": "A book"}},
        {"track": null, "episode": null, "localTrack": null},
        {"track": {"trackName": "", "artistName": "Nobody", "trackUri": ""}},
        {"track": {"trackName": "Only a name"}, "extra": [1, {"deep": [true, false, null]}]}
      ],
      "description": null,
      "numberOfFollowers": 0
    },
    {"items": [], "name": "Empty"},
    {"name": "Last", "items": [{"track": {"trackUri": "https://open.spotify.com/track/0DiWol3AO6WpXZgp0goxAV?si=1"}}]}
  ]
}"#;
    let file = parsed(text);
    assert_eq!(file.format, Format::SpotifyAccountExport);
    let names: Vec<_> = file.playlists.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(names, [Some("Mixed \"bag\""), Some("Empty"), Some("Last")]);
    let first = &file.playlists[0].entries;
    let expected = [
        Entry {
            line: 7,
            id: Some("spotify:track:4JehYebiI9JE8sR8MisGVb".to_owned()),
            title: Some("Halo".to_owned()),
            artist: Some("Beyoncé".to_owned()),
            album: Some("I Am... Sasha Fierce".to_owned()),
            text: "Beyoncé - Halo".to_owned(),
        },
        Entry {
            line: 19,
            id: Some("spotify:local:Daft+Punk:Discovery:One+More+Time:320".to_owned()),
            title: Some("One More Time".to_owned()),
            artist: Some("Daft Punk".to_owned()),
            album: Some("Discovery".to_owned()),
            text: "Daft Punk - One More Time".to_owned(),
        },
        Entry {
            line: 23,
            id: None,
            title: Some("Only a name".to_owned()),
            artist: None,
            album: None,
            text: "Only a name".to_owned(),
        },
    ];
    assert_eq!(first.len(), expected.len());
    for (got, want) in first.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    assert!(file.playlists[1].entries.is_empty());
    assert_eq!(
        file.playlists[2].entries[0].id.as_deref(),
        Some("spotify:track:0DiWol3AO6WpXZgp0goxAV")
    );
    let skipped: Vec<(usize, &str)> = file
        .skipped
        .iter()
        .map(|s| (s.line, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            (18, "a podcast episode (\"Daily news\"), not a song"),
            (20, "an audiobook, not a song"),
            (21, "the item has no track (\"track\" is null)"),
            (22, "the track has neither \"trackName\" nor \"trackUri\""),
        ]
    );
}

#[test]
fn your_library_is_one_playlist() {
    let text = r#"{"tracks": [
      {"artist": "Muse", "album": "Simulation Theory", "track": "Pressure", "uri": "spotify:track:3eSyMBd7ERw68NVB3jlRmW"},
      {"artist": "Guns N' Roses", "album": "Greatest Hits", "track": "November Rain", "uri": ""}
    ],
    "albums": [{"artist": "Muse", "album": "Drones", "uri": "spotify:album:x"}],
    "shows": [], "episodes": [], "bannedTracks": [], "artists": [], "bannedArtists": [], "other": []}"#;
    let file = parsed(text);
    assert_eq!(file.format, Format::SpotifyAccountExport);
    assert_eq!(file.playlists.len(), 1);
    assert_eq!(file.playlists[0].name.as_deref(), Some("Your Library"));
    let got: Vec<_> = file
        .entries()
        .map(|e| {
            (
                e.line,
                e.id.as_deref(),
                e.title.as_deref(),
                e.artist.as_deref(),
                e.album.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                2,
                Some("spotify:track:3eSyMBd7ERw68NVB3jlRmW"),
                Some("Pressure"),
                Some("Muse"),
                Some("Simulation Theory")
            ),
            (
                3,
                None,
                Some("November Rain"),
                Some("Guns N' Roses"),
                Some("Greatest Hits")
            ),
        ]
    );
    assert!(file.skipped.is_empty());
}

#[test]
fn web_api_pages_and_playlists() {
    let page = r#"{"href": "x", "limit": 3, "offset": 0, "total": 250,
 "next": "https://api.spotify.com/v1/playlists/x/tracks?offset=3&limit=3",
 "items": [
  {"added_at": "2020-01-01T00:00:00Z", "track": {"name": "Toxic", "uri": "spotify:track:6I9VzXrHxO9rA9A5euc8Ak", "id": "6I9VzXrHxO9rA9A5euc8Ak",
    "artists": [{"name": "Britney Spears"}, {"name": "Other"}], "album": {"name": "In The Zone"}, "type": "track"}},
  {"added_at": "2020-01-01T00:00:00Z", "track": null},
  {"added_at": "2020-01-01T00:00:00Z", "track": {"name": "Episode 1", "type": "episode", "uri": "spotify:episode:512ojhOuo1ktJprKbVcKyQ"}},
  {"added_at": "2020-01-01T00:00:00Z", "is_local": true, "track": {"name": "My demo", "uri": "spotify:local:Me::My+demo:100", "id": null, "artists": [{"name": "Me"}], "album": {"name": ""}, "type": "track"}}
 ]}"#;
    let file = parsed(page);
    assert_eq!(file.format, Format::SpotifyWebApi);
    let got: Vec<_> = file
        .entries()
        .map(|e| {
            (
                e.line,
                e.id.as_deref(),
                e.title.as_deref(),
                e.artist.as_deref(),
                e.album.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                4,
                Some("spotify:track:6I9VzXrHxO9rA9A5euc8Ak"),
                Some("Toxic"),
                Some("Britney Spears"),
                Some("In The Zone")
            ),
            (
                8,
                Some("spotify:local:Me::My+demo:100"),
                Some("My demo"),
                Some("Me"),
                None
            ),
        ]
    );
    let skipped: Vec<(usize, &str)> = file
        .skipped
        .iter()
        .map(|s| (s.line, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            (6, "the track was removed from Spotify (\"track\" is null)"),
            (7, "a podcast episode (\"Episode 1\"), not a song"),
            (
                2,
                "this page holds only 4 of the playlist's 250 songs; the others are on later pages (\"next\"): fetch every page and upload them together as one \"items\" list"
            ),
        ]
    );

    // A whole playlist object, its name after its tracks; bare ids become URIs.
    let playlist = r#"{"collaborative": false, "id": "p", "tracks": {"href": "x", "items": [
        {"track": {"name": "Creep", "id": "70LcF31zb1H0PyJoS1Sx1r", "artists": [{"name": "Radiohead"}], "album": null}}
    ], "next": null, "total": 1}, "name": "Nineties", "owner": {"id": "me"}, "type": "playlist"}"#;
    let file = parsed(playlist);
    assert_eq!(file.format, Format::SpotifyWebApi);
    assert_eq!(file.playlists[0].name.as_deref(), Some("Nineties"));
    let e = &file.playlists[0].entries[0];
    assert_eq!(
        e.id.as_deref(),
        Some("spotify:track:70LcF31zb1H0PyJoS1Sx1r")
    );
    assert_eq!(
        (e.title.as_deref(), e.artist.as_deref(), e.album.as_deref()),
        (Some("Creep"), Some("Radiohead"), None)
    );
    assert!(file.skipped.is_empty());

    // Items that are track objects themselves (an album's tracks), and a list
    // of playlists, whose items are not songs.
    let album = r#"{"items": [{"name": "Intro", "artists": [{"name": "The xx"}], "uri": "spotify:track:2usrT8QIbIk9y0NEtQwS4j", "type": "track"}]}"#;
    assert_eq!(
        title_artist(&parsed(album)),
        [(Some("Intro".to_owned()), Some("The xx".to_owned()))]
    );
    let lists = r#"{"items": [{"name": "Mine", "uri": "spotify:playlist:37i9dQZF1DXcBWIGoYBM5M", "type": "playlist", "tracks": {"total": 3}}]}"#;
    let file = parsed(lists);
    assert_eq!(file.entries().count(), 0);
    assert!(
        file.skipped[0]
            .reason
            .starts_with("a link to a Spotify playlist"),
        "{:?}",
        file.skipped
    );
}

#[test]
fn mpd_slices_keep_list_order_and_every_playlist() {
    let text = r#"{"info": {"slice": "0-999"}, "playlists": [
 {"name": "classics", "pid": 2365, "num_tracks": 2, "tracks": [
  {"pos": 1, "artist_name": "Elton John", "track_uri": "spotify:track:5Wj1rJnCLpMHdLaxsFtJLs", "track_name": "Bennie And The Jets - Remastered 2014", "album_name": "Goodbye Yellow Brick Road"},
  {"pos": 0, "artist_name": "America", "track_uri": "spotify:track:4IU1RL4BKvFyXtbTwaHAvW", "track_name": "Ventura Highway"}]},
 {"name": "second", "pid": 1, "tracks": []}]}"#;
    let file = parsed(text);
    assert_eq!(file.format, Format::MpdSlice);
    assert_eq!(file.playlists.len(), 2);
    let got: Vec<_> = file.playlists[0]
        .entries
        .iter()
        .map(|e| (e.line, e.title.as_deref(), e.album.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                3,
                Some("Bennie And The Jets - Remastered 2014"),
                Some("Goodbye Yellow Brick Road")
            ),
            (4, Some("Ventura Highway"), None),
        ]
    );
    assert_eq!(file.playlists[1].name.as_deref(), Some("second"));
}

#[test]
fn json_of_the_wrong_shape_says_what_it_resembles_and_lacks() {
    let cases = [
        (
            r#"{"info": {"slice": "0-999"}}"#,
            "line 1: the file looks like MPD slice JSON but it has no \"playlists\" list: upload the file exactly as it was exported",
        ),
        (
            "{\n\"href\": \"x\", \"limit\": 100, \"total\": 0}",
            "line 1: the file looks like Spotify Web API playlist tracks but it has no \"items\" list",
        ),
        (
            r#"{"name": "x", "owner": {}, "snapshot_id": "s"}"#,
            "the file looks like Spotify Web API playlist tracks but it is a playlist without its \"tracks\"",
        ),
        (
            r#"{"albums": [], "shows": []}"#,
            "the file looks like Spotify account data export but it has no \"tracks\" list",
        ),
        (
            "{\"playlists\": {\"a\": 1}}",
            "line 1: the file looks like Spotify account data export but its \"playlists\" is an object, not a list",
        ),
        (
            "{\"info\": {}, \"playlists\": 3}",
            "the file looks like MPD slice JSON but its \"playlists\" is a number, not a list",
        ),
        (
            "{\"playlists\": [\n 7]}",
            "line 2: the file looks like Spotify account data export but a playlist on line 2 is a number, not an object",
        ),
        (
            "{\"playlists\": [{\"name\": \"a\"}]}",
            "line 1: the file looks like Spotify account data export but the playlist on line 1 has neither \"items\" (a Spotify account data export) nor \"tracks\" (an MPD slice)",
        ),
        (
            "{\"playlists\": [{\"items\": []},\n{\"tracks\": []}]}",
            "line 2: the file looks like Spotify account data export but the playlist on line 2 has \"tracks\" (MPD slice JSON), unlike the one on line 1",
        ),
        (
            "{\"playlists\": [{\"items\": [\n\"Halo\"]}]}",
            "line 2: the file looks like Spotify account data export but an item of \"items\" on line 2 is text, not an object",
        ),
        (
            "{\"playlists\": [{\"items\": [\n{\"song\": {}}]}]}",
            "line 2: the file looks like Spotify account data export but the item on line 2 has none of \"track\", \"episode\" or \"localTrack\"",
        ),
        (
            "{\"playlists\": [{\"items\": [{\"track\": {\n\"trackName\": 5}}]}]}",
            "line 2: the file looks like Spotify account data export but \"trackName\" is a number, not text",
        ),
        (
            "{\"playlists\": [{\"tracks\": [{\"pos\": 0}]}]}",
            "the file looks like MPD slice JSON but the track on line 1 has none of \"track_name\", \"artist_name\" or \"track_uri\"",
        ),
        (
            "{\"items\": [{\"added_at\": \"x\"}]}",
            "the file looks like Spotify Web API playlist tracks but the item on line 1 has no \"track\"",
        ),
        (
            "{\"items\": [{\"track\": \"x\"}]}",
            "the file looks like Spotify Web API playlist tracks but \"track\" on line 1 is text, not an object",
        ),
        (
            "{\"name\": \"p\", \"tracks\": {\"href\": \"x\", \"total\": 3}}",
            "the file looks like Spotify Web API playlist tracks but its \"tracks\" has no \"items\" (the file is the playlist without its songs)",
        ),
        (
            "{\"items\": [], \"playlists\": []}",
            "the file looks like Spotify Web API playlist tracks but it has both \"items\" (line 1) and \"playlists\", which belong to different formats",
        ),
        (
            "{\"tracks\": 5}",
            "the file looks like Spotify Web API playlist tracks but its \"tracks\" is a number, not a list or an object",
        ),
        (
            "{\"version\": 2, \"dependencies\": {}}",
            "the content is not a playlist format Setlist reads (Spotify account data export, Spotify Web API playlist tracks, MPD slice JSON, Exportify CSV, M3U/M3U8, or \"Artist - Title\" lines); it is JSON with the fields \"version\", \"dependencies\": export the playlist in one of these formats",
        ),
        ("{}", "it is an empty JSON object"),
        (
            "[{\"track\": {}}]",
            "it is a JSON list, not one of the JSON objects these formats write",
        ),
    ];
    for (text, expected) in cases {
        let e = err(text).to_string();
        assert!(
            e.contains(expected),
            "{text}\n  got: {e}\n want: {expected}"
        );
    }
}

#[test]
fn truncated_json_is_refused_with_the_line_where_it_ends() {
    let tracks = road_trip();
    for format in [
        Format::SpotifyAccountExport,
        Format::SpotifyWebApi,
        Format::MpdSlice,
    ] {
        let text = render(format, "Road trip", &tracks);
        // Cut in the middle of the third song's title, and between songs.
        let third = text.find(&tracks[2].title).unwrap() + 4;
        let cut = &text[..third];
        let e = err(cut);
        assert_eq!(
            e,
            PlaylistFileError::JsonTruncated {
                line: cut.lines().count(),
                inside: "a string"
            },
            "{format}"
        );
        assert!(e.to_string().ends_with("JSON ends in the middle of a string: the file looks truncated; download or export it again"));
        let between = text.rfind("},").unwrap() + 2;
        let e = err(&text[..between]);
        assert!(
            matches!(e, PlaylistFileError::JsonTruncated { line, .. } if line == text[..between].lines().count()),
            "{format}: {e}"
        );
        let end = text.trim_end().len() - 1;
        assert!(matches!(
            err(&text[..end]),
            PlaylistFileError::JsonTruncated {
                inside: "an object",
                ..
            }
        ));
    }
}

#[test]
fn mixed_formats_are_refused_or_skipped_by_line() {
    let tracks = road_trip();
    let json = render(Format::MpdSlice, "Road trip", &tracks);
    let lines = json.lines().count();
    let mixed = json.clone() + "#EXTINF:200,Daft Punk - One More Time\n/music/x.mp3\n";
    assert_eq!(
        err(&mixed),
        PlaylistFileError::JsonTrailing {
            line: lines + 1,
            found: "#EXTINF:200,Daft Punk - One More Time".to_owned()
        }
    );
    assert!(
        err(&mixed)
            .to_string()
            .contains("upload the JSON file alone")
    );
    let two = json.clone() + &json;
    assert!(matches!(err(&two), PlaylistFileError::JsonTrailing { line, .. } if line == lines + 1));
    // A plain list with M3U lines in it: songs are read, the rest skipped.
    let plain = "Daft Punk - One More Time\n#EXTINF:200,A - B\n/music/x.mp3\n{\"a\": 1}\n";
    let file = parsed(plain);
    assert_eq!(file.format, Format::PlainText);
    assert_eq!(file.entries().count(), 1);
    let lines: Vec<usize> = file.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [3, 4]);
}

#[test]
fn empty_blank_and_non_text_files_are_refused() {
    let limits = Limits::default();
    assert_eq!(parse(b"", &limits), Err(PlaylistFileError::Empty));
    assert_eq!(
        parse(b"\xEF\xBB\xBF", &limits),
        Err(PlaylistFileError::Empty)
    );
    assert_eq!(parse(b"\xFF\xFE", &limits), Err(PlaylistFileError::Empty));
    assert_eq!(parse(b" \r\n\t\n ", &limits), Err(PlaylistFileError::Blank));
    assert_eq!(
        err("").to_string(),
        "the file is empty: choose the playlist file and upload it again"
    );
    assert!(matches!(
        parse(b"A - B\n\x89PNG\r\n", &limits),
        Err(PlaylistFileError::NotUtf8 { line: 2, byte: 1 })
    ));
    for markup in [
        "<?xml version=\"1.0\"?><playlist/>",
        "  <html><body>Daft Punk - One More Time</body></html>",
    ] {
        let e = err(markup).to_string();
        assert!(e.contains("; it looks like XML or HTML"), "{e}");
    }
}

#[test]
fn limits_are_enforced_and_named() {
    let tracks = road_trip();
    for format in Format::ALL {
        let text = render(format, "Road trip", &tracks);
        let size = Limits {
            max_bytes: text.len() - 1,
            ..Limits::default()
        };
        assert_eq!(
            parse(text.as_bytes(), &size),
            Err(PlaylistFileError::TooLarge {
                bytes: text.len(),
                limit: text.len() - 1
            }),
            "{format}"
        );
        let entries = Limits {
            max_entries: 5,
            ..Limits::default()
        };
        let e = parse(text.as_bytes(), &entries).unwrap_err();
        assert_eq!(
            e,
            PlaylistFileError::TooManyEntries {
                found: 6,
                complete: true,
                limit: 5
            },
            "{format}"
        );
        let fields = Limits {
            max_field_bytes: 20,
            ..Limits::default()
        };
        let e = parse(text.as_bytes(), &fields).unwrap_err();
        assert!(
            matches!(&e, PlaylistFileError::FieldTooLong { limit: 20, .. }),
            "{format}: {e}"
        );
    }
}

/// A compact MPD slice of `n` songs.
fn big_mpd(n: usize) -> String {
    let track = r#"{"track_name": "x", "artist_name": "A"}"#;
    format!(
        "{{\"playlists\": [{{\"name\": \"big\", \"tracks\": [\n{}\n]}}]}}",
        vec![track; n].join(",\n")
    )
}

#[test]
fn big_files_are_refused_in_the_words_of_the_limit() {
    let e = err(&big_mpd(12_500));
    assert_eq!(
        e.to_string(),
        "the file holds 12,500 entries; the limit is 10,000: split the playlist into files of at most 10,000 songs"
    );
    // Cut short after the limit: the count is what there is.
    let text = big_mpd(10_500);
    let e = err(&text[..text.len() - 200]);
    assert!(
        matches!(e, PlaylistFileError::TooManyEntries { complete: false, found, .. } if found > 10_000),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("the file holds at least 10,"),
        "{e}"
    );
    let long = render(
        Format::MpdSlice,
        "big",
        &[track("A", &"é".repeat(450), None, None)],
    );
    let line = 1 + long
        .lines()
        .position(|l| l.contains("\"track_name\""))
        .unwrap();
    assert_eq!(
        err(&long).to_string(),
        format!(
            "line {line}: \"track_name\" is 900 bytes; the limit is 512: shorten it or remove that song"
        )
    );
    let over = "x".repeat((2 << 20) + 1);
    assert_eq!(
        err(&over).to_string(),
        "the file is 2.1 MiB; the limit is 2 MiB: split the playlist into smaller files"
    );
    let playlists = format!(
        "{{\"playlists\": [{}]}}",
        vec!["{\"items\": []}"; 10_001].join(",")
    );
    assert_eq!(
        err(&playlists).to_string(),
        "the file holds more than 10,000 playlists; the limit is 10,000: upload fewer playlists at a time"
    );
}

#[test]
fn errors_know_their_line() {
    assert_eq!(err("{\n\"a\": [").line(), Some(2));
    assert_eq!(err("").line(), None);
    assert_eq!(
        PlaylistFileError::CsvRow {
            line: 3,
            found: 1,
            expected: 2
        }
        .line(),
        Some(3)
    );
}

#[test]
fn formats_serialize_as_snake_case_and_display_for_people() {
    let json: Vec<String> = Format::ALL
        .iter()
        .map(|f| serde_json::to_string(f).unwrap())
        .collect();
    assert_eq!(
        json,
        [
            "\"spotify_account_export\"",
            "\"spotify_web_api\"",
            "\"mpd_slice\"",
            "\"exportify_csv\"",
            "\"m3u\"",
            "\"plain_text\""
        ]
    );
    for f in Format::ALL {
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            format!("\"{}\"", f.as_str())
        );
        assert_eq!(
            serde_json::from_str::<Format>(&format!("\"{}\"", f.as_str())).unwrap(),
            f
        );
    }
    assert_eq!(
        Format::SpotifyAccountExport.to_string(),
        "Spotify account data export"
    );
    assert_eq!(Format::M3u.to_string(), "M3U/M3U8");
    let file = parsed("A - B\n");
    let value = serde_json::to_value(&file).unwrap();
    assert_eq!(value["format"], "plain_text");
    assert_eq!(value["playlists"][0]["entries"][0]["text"], "A - B");
    assert_eq!(
        Limits::default(),
        Limits {
            max_bytes: 2 << 20,
            max_entries: 10_000,
            max_field_bytes: 512
        }
    );
}

#[test]
fn the_fuzz_seeds_parse_to_their_formats() {
    let seeds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/parse_playlist_file");
    let expected = [
        ("Playlist1.json", Format::SpotifyAccountExport, 2, 1),
        ("YourLibrary.json", Format::SpotifyAccountExport, 1, 0),
        ("web-api-page.json", Format::SpotifyWebApi, 1, 2),
        ("mpd.slice.json", Format::MpdSlice, 2, 0),
        ("exportify.csv", Format::ExportifyCsv, 2, 0),
        ("playlist.m3u8", Format::M3u, 2, 0),
        ("list.txt", Format::PlainText, 3, 0),
    ];
    for (name, format, entries, skipped) in expected {
        let bytes = std::fs::read(seeds.join(name)).unwrap();
        let file = parse(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (file.format, file.entries().count(), file.skipped.len()),
            (format, entries, skipped),
            "{name}: {file:?}"
        );
        fuzz::fuzz_parse(&bytes);
    }
}

#[test]
fn a_latin1_file_of_any_format_is_refused_with_its_line() {
    let tracks = road_trip();
    for format in Format::ALL {
        let text = render(format, "Road trip", &tracks);
        // "Beyoncé" as Windows-1252 / Latin-1 would write it.
        let at = text.find("Beyonc").unwrap() + "Beyonc".len();
        let mut bytes = text.as_bytes().to_vec();
        bytes.splice(at..at + "é".len(), [0xE9]);
        let line = 1 + text[..at].matches('\n').count();
        let byte = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
        assert_eq!(
            parse(&bytes, &Limits::default()),
            Err(PlaylistFileError::NotUtf8 { line, byte }),
            "{format}"
        );
    }
}

#[test]
fn line_formats_cut_short_keep_what_is_there() {
    // A line format cannot tell a cut line from a short one: the songs up to
    // the cut are read, the last one as far as it goes.
    let tracks = road_trip();
    for format in [Format::M3u, Format::PlainText] {
        let text = render(format, "Road trip", &tracks);
        let cut = text.find("Hoppípolla").unwrap() + "Hopp".len();
        let file = parsed(&text[..cut]);
        assert_eq!(file.format, format);
        let titles: Vec<_> = file.entries().filter_map(|e| e.title.clone()).collect();
        assert_eq!(titles, ["One More Time", "Halo", "Hopp"], "{format}");
    }
    // Cut inside a multi-byte character: the line is named.
    let text = render(Format::PlainText, "Road trip", &tracks);
    let inside = text.find("í").unwrap() + 1;
    assert!(matches!(
        parse(&text.as_bytes()[..inside], &Limits::default()),
        Err(PlaylistFileError::CutCharacter { line: 5 })
    ));
}
