//! The listener's API (`setlist-search`) as `setlist up` runs it: song
//! search, one song, playlist uploads in every format (and broken ones),
//! recommendations through the real dispatcher and pipeline, the flagged
//! fallback when the dispatcher stops answering, status, metrics, the
//! OpenAPI description, and the listener events on the interactions topic.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use setlist_core::topics::Topics;
use setlist_tests::{Up, get_text, http, post, read_jsonl, small_model};
use std::time::{Duration, Instant};

/// Uploads `body` as a playlist file; (status, JSON answer).
fn upload(page: &str, body: &[u8]) -> (u16, Value) {
    let mut response = http()
        .post(&format!("{page}v1/playlists/verify"))
        .send(body)
        .expect("the search API answers");
    let status = response.status().as_u16();
    (
        status,
        response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_json()
            .expect("the answer is JSON"),
    )
}

fn search(page: &str, query: &str) -> (u16, Value) {
    let mut response = http()
        .get(&format!("{page}v1/songs/search"))
        .query("q", query)
        .call()
        .expect("the search API answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap())
}

fn ids(songs: &Value) -> Vec<String> {
    songs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The recognised entries' song ids and how each was matched.
fn recognised(report: &Value) -> Vec<(String, String)> {
    report["playlists"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap())
        .filter(|e| e["recognised"] == true)
        .map(|e| {
            (
                e["song"]["id"].as_str().unwrap().to_string(),
                e["matched_by"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn listeners_search_songs_and_upload_playlists_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, &[]);
    let page = up.page();
    let songs = read_jsonl(&model.join("catalogue.jsonl"));
    let song = |i: usize| &songs[i];
    let title = |i: usize| song(i)["title"].as_str().unwrap().to_string();
    let artist = |i: usize| song(i)["artist"].as_str().unwrap().to_string();
    let id = |i: usize| song(i)["id"].as_str().unwrap().to_string();

    // The page and its assets are served, with their types.
    let mut response = http().get(&page).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        response
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("app.js")
    );
    for asset in ["app.js", "style.css"] {
        assert_eq!(get_text(&format!("{page}{asset}")).0, 200, "{asset}");
    }

    // Title and artist find the song first; a prefix of the title finds it
    // among the matches.
    let (status, found) = search(&page, &format!("{} {} ", title(7), artist(7)));
    assert_eq!(status, 200, "{found}");
    assert_eq!(ids(&found["songs"]).first(), Some(&id(7)), "{found}");
    let prefix: String = title(7).chars().take(4).collect::<String>().to_lowercase();
    let (_, found) = search(&page, &prefix);
    let songs_found = found["songs"].as_array().unwrap();
    assert!(!songs_found.is_empty(), "{found}");
    // Whole-word and prefix matches hold the prefix; typo matches, last,
    // are flagged as such.
    let mut seen_typo = false;
    for s in songs_found {
        let text = format!("{} {} {}", s["title"], s["artist"], s["album"]).to_lowercase();
        match s["matched"].as_str().unwrap() {
            "typo" => seen_typo = true,
            _ => {
                assert!(!seen_typo, "typo matches come last: {found}");
                assert!(text.contains(&prefix), "\"{prefix}\" in {s}");
            }
        }
    }
    assert_eq!(found["typo_tolerant"], seen_typo, "{found}");
    // One letter missing from the longest word of a title and its artist:
    // the song is still found, as a typo match.
    let (typo_song, typo_query) = (0..songs.len())
        .find_map(|i| {
            let t = title(i);
            let word = t.split_whitespace().max_by_key(|w| w.len())?;
            (word.chars().count() >= 6 && word.is_ascii()).then(|| {
                let broken = format!("{}{}", &word[..2], &word[3..]);
                (
                    i,
                    format!("{} {} ", t.replacen(word, &broken, 1), artist(i)),
                )
            })
        })
        .expect("a title with a long word");
    let (_, found) = search(&page, &typo_query);
    assert!(
        ids(&found["songs"]).contains(&id(typo_song)),
        "{typo_query}: {found}"
    );
    assert_eq!(found["typo_tolerant"], true, "{found}");
    // Too short, too long, a bad limit: 400s that say why.
    let (status, refused) = search(&page, "ab");
    assert_eq!(status, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("at least 3"),
        "{refused}"
    );
    let (status, refused) = search(&page, &"x".repeat(201));
    assert_eq!(status, 400, "{refused}");
    let (status, _) = get_text(&format!("{page}v1/songs/search?q=abc&limit=0"));
    assert_eq!(status, 400);

    // One song by id; an unknown one is a 404 that names it.
    let (status, text) = get_text(&format!("{page}v1/songs/{}", id(3)));
    assert_eq!(status, 200);
    let one: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (one["title"].as_str(), one["id"].as_str()),
        (Some(title(3).as_str()), Some(id(3).as_str()))
    );
    let (status, text) = get_text(&format!("{page}v1/songs/nope"));
    assert_eq!(status, 404);
    let refused: Value = serde_json::from_str(&text).unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("\"nope\""),
        "{text}"
    );

    // The same three songs and one unknown, in every format listeners have.
    // Songs whose names survive every format's own syntax: Exportify cuts
    // "Artist Name(s)" at a comma, and "Artist - Title" splits at a dash.
    let plain_names = |i: &usize| {
        !artist(*i).contains(',') && !artist(*i).contains(" - ") && !title(*i).contains(" - ")
    };
    let picks: Vec<usize> = (10..songs.len()).filter(plain_names).take(3).collect();
    let unknown = ("Nobody Here", "Not A Song At All");
    let lines: Vec<(String, String)> = picks
        .iter()
        .map(|&i| (artist(i), title(i)))
        .chain([(unknown.0.to_string(), unknown.1.to_string())])
        .collect();
    let plain: String = lines.iter().map(|(a, t)| format!("{a} - {t}\n")).collect();
    let m3u: String = std::iter::once("#EXTM3U\n".to_string())
        .chain(
            lines
                .iter()
                .enumerate()
                .map(|(n, (a, t))| format!("#EXTINF:180,{a} - {t}\n/music/{n}.mp3\n")),
        )
        .collect();
    let csv_field = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let csv: String =
        std::iter::once("Track URI,Track Name,Artist Name(s),Album Name\n".to_string())
            .chain(lines.iter().map(|(a, t)| {
                format!(
                    "spotify:track:0000000000000000000000,{},{},Album\n",
                    csv_field(t),
                    csv_field(a)
                )
            }))
            .collect();
    let library = json!({"tracks": lines.iter().map(|(a, t)| json!({"artist": a, "track": t, "album": "X", "uri": "spotify:track:1111111111111111111111"})).collect::<Vec<_>>()});
    let account = json!({"playlists": [{"name": "Road trip", "lastModifiedDate": "2024-01-01", "items": lines.iter().map(|(a, t)| json!({"track": {"trackName": t, "artistName": a, "albumName": "X", "trackUri": "spotify:track:2222222222222222222222"}, "episode": null, "localTrack": null})).collect::<Vec<_>>()}]});
    let web_api = json!({"href": "x", "items": lines.iter().map(|(a, t)| json!({"added_at": "2024-01-01T00:00:00Z", "track": {"id": "3333333333333333333333", "name": t, "uri": "spotify:track:3333333333333333333333", "type": "track", "artists": [{"name": a}], "album": {"name": "X"}}})).collect::<Vec<_>>(), "next": null, "total": 4});
    let mpd = json!({"info": {"slice": "0-0"}, "playlists": [{"name": "mix", "pid": 1, "tracks": lines.iter().enumerate().map(|(n, (a, t))| json!({"pos": n, "artist_name": a, "track_name": t, "track_uri": "spotify:track:4444444444444444444444", "album_name": "X"})).collect::<Vec<_>>()}]});
    let expected: Vec<(String, String)> = picks
        .iter()
        .map(|&i| (id(i), "title_artist".to_string()))
        .collect();
    for (format, body) in [
        ("plain_text", plain.clone().into_bytes()),
        ("m3u", m3u.into_bytes()),
        ("exportify_csv", csv.into_bytes()),
        (
            "spotify_account_export",
            serde_json::to_vec(&library).unwrap(),
        ),
        (
            "spotify_account_export",
            serde_json::to_vec(&account).unwrap(),
        ),
        ("spotify_web_api", serde_json::to_vec(&web_api).unwrap()),
        ("mpd_slice", serde_json::to_vec(&mpd).unwrap()),
    ] {
        let (status, report) = upload(&page, &body);
        assert_eq!(status, 200, "{format}: {report}");
        assert_eq!(report["format"], format, "{report}");
        assert_eq!(
            (report["entries"].as_u64(), report["recognised"].as_u64()),
            (Some(4), Some(3)),
            "{format}: {report}"
        );
        assert_eq!(recognised(&report), expected, "{format}: {report}");
        let missed: Vec<&Value> = report["playlists"][0]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["recognised"] == false)
            .collect();
        assert_eq!(missed.len(), 1, "{format}: {report}");
        assert!(
            missed[0]["reason"].as_str().unwrap().contains(unknown.1),
            "{report}"
        );
    }
    // Typos and decorations are recognised fuzzily.
    let fuzzy = format!(
        "{} - {} (Remastered 2011)\n",
        artist(picks[0]),
        title(picks[0])
    );
    let (_, report) = upload(&page, fuzzy.as_bytes());
    assert_eq!(
        recognised(&report),
        [(id(picks[0]), "fuzzy".to_string())],
        "{report}"
    );
    // UTF-16 with a byte-order mark, as Windows saves text.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(plain.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let (status, report) = upload(&page, &utf16);
    assert_eq!(
        (status, report["recognised"].as_u64()),
        (200, Some(3)),
        "{report}"
    );

    // Broken files: a 4xx whose sentence names the line or the limit.
    let truncated = &serde_json::to_vec(&account).unwrap()[..60];
    let mut latin1 = b"Queen - Bohemian Rhapsody\n".to_vec();
    latin1.extend(b"Bj\xf6rk - J\xf3ga\n");
    for (what, body, status, says) in [
        ("empty", b"".to_vec(), 400, "empty"),
        ("truncated JSON", truncated.to_vec(), 400, "line 1"),
        ("Latin-1", latin1, 400, "line 2"),
        ("too big", vec![b'a'; 3 << 20], 413, "2 MiB"),
        (
            "too many entries",
            "A - B\n".repeat(10_001).into_bytes(),
            413,
            "10,000",
        ),
        (
            "not a playlist",
            b"<html><body>hello</body></html>".to_vec(),
            400,
            "M3U",
        ),
        (
            "mixed formats",
            format!("{}\n#EXTM3U\n", serde_json::to_string(&library).unwrap()).into_bytes(),
            400,
            "line",
        ),
    ] {
        let (got, refused) = upload(&page, &body);
        let message = refused["error"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{what}: {refused}");
        assert!(
            message.contains(says),
            "{what}: \"{message}\" should say \"{says}\""
        );
    }

    // Status, the OpenAPI description and the metrics.
    let (status, text) = get_text(&format!("{page}v1/status"));
    assert_eq!(status, 200);
    let state: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(state["model_version"], up.info["model_version"]);
    assert_eq!(
        (state["stages"].as_u64(), state["output_shards"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(state["dispatcher"]["reachable"], true, "{state}");
    assert_eq!(state["limits"]["upload_bytes"], 2 << 20, "{state}");
    assert_eq!(state["limits"]["min_playlist_songs"], 5, "{state}");
    let (_, text) = get_text(&format!("{page}openapi.json"));
    let openapi: Value = serde_json::from_str(&text).unwrap();
    for path in [
        "/v1/songs/search",
        "/v1/songs/{id}",
        "/v1/playlists/verify",
        "/v1/recommendations",
        "/v1/status",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is described");
    }
    let (_, metrics) = get_text(&format!("{page}metrics"));
    assert!(
        metrics.contains("setlist_search_http_request_duration_seconds_count{route=\"/v1/songs/search\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("setlist_search_playlist_entries_total{outcome=\"title_artist\"}"));

    // Every search and upload was published as a listener event.
    let events = listener_events(&up, |events| {
        events
            .iter()
            .any(|e| e["event"] == "playlist_upload" && e["format"] == "mpd_slice")
    });
    let search_event = events
        .iter()
        .find(|e| e["event"] == "search")
        .expect("a search event");
    assert_eq!(search_event["schema"], "setlist.listener-event");
    assert_eq!(search_event["version"], 1);
    assert!(
        search_event["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let upload_event = events
        .iter()
        .find(|e| e["event"] == "playlist_upload" && e["format"] == "m3u")
        .expect("an upload event");
    assert_eq!(
        upload_event["recognised"],
        json!(expected.iter().map(|(i, _)| i).collect::<Vec<_>>())
    );
}

/// The events on the run's interactions topic, once `done` says enough
/// have come (within 30 s).
fn listener_events(up: &Up, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let topics = Topics::new(
        "default",
        "local",
        up.info["model_version"].as_str().unwrap(),
    )
    .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", up.info["kafka"].as_str().unwrap())
        .set("group.id", "listener-events-test")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topics.interactions(), 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut events = Vec::new();
    while !done(&events) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the listener events did not all arrive: {events:?}"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            events.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
        }
    }
    events
}

#[test]
fn recommendations_come_from_the_pipeline_and_from_popularity_when_the_dispatcher_stops() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, &[]);
    let page = up.page();
    let songs = read_jsonl(&model.join("catalogue.jsonl"));
    let playlist: Vec<String> = [3usize, 14, 15, 92, 65]
        .iter()
        .map(|&i| songs[i]["id"].as_str().unwrap().to_string())
        .collect();
    let url = format!("{page}v1/recommendations");

    let (status, answer) = post(&url, &json!({"songs": playlist, "k": 7}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["fallback"], false, "{answer}");
    let shown = answer["songs"].as_array().unwrap();
    assert_eq!(shown.len(), 7, "{answer}");
    for item in shown {
        assert!(
            item["song"]["title"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        assert!(!playlist.contains(&item["song"]["id"].as_str().unwrap().to_string()));
    }
    let parts: Vec<&str> = answer["timings"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["part"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts,
        ["stage-0", "stage-1", "stage-2", "shard-0", "shard-1"],
        "{answer}"
    );

    // Fewer than five songs is refused, saying so.
    let (status, refused) = post(&url, &json!({"songs": &playlist[..4]}));
    assert_eq!(status, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("at least 5"),
        "{refused}"
    );
    let (status, _) = post(&url, &json!({"songs": playlist, "k": 0}));
    assert_eq!(status, 400);

    // A dispatcher that stops answering (frozen, so `setlist up` does not
    // restart it): each listener still gets songs, flagged, within the
    // search API's timeout; after three failures the breaker answers at once.
    let dispatcher = up.process("dispatcher")["pid"].as_u64().unwrap() as i32;
    let pid = nix::unistd::Pid::from_raw(dispatcher);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let asked = Instant::now();
        let (status, answer) = post(&url, &json!({"songs": playlist, "k": 7}));
        let took = asked.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["fallback"], true, "{answer}");
        assert_eq!(answer["songs"].as_array().unwrap().len(), 7, "{answer}");
        assert!(took < Duration::from_millis(1_500 + 500), "{took:?}");
        reasons.push(answer["fallback_reason"].as_str().unwrap().to_string());
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(
        reasons,
        [
            "dispatcher_unreachable",
            "dispatcher_unreachable",
            "dispatcher_unreachable",
            "circuit_open"
        ]
    );
    let (_, metrics) = get_text(&format!("{page}metrics"));
    assert!(
        metrics.contains("setlist_search_fallbacks_total{reason=\"circuit_open\"} 1"),
        "{metrics}"
    );

    let events = listener_events(&up, |events| {
        events
            .iter()
            .filter(|e| e["event"] == "recommendations_shown")
            .count()
            >= 5
    });
    let shown: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "recommendations_shown")
        .collect();
    assert_eq!(shown[0]["fallback"], false);
    assert_eq!(shown[0]["playlist"], json!(playlist));
    assert_eq!(shown[1]["fallback"], true);
}

/// With a model over real data (MPD), listeners find real titles and
/// artists: the catalogue of `mpd-dev`, as `setlist data import` reads it,
/// in the search API's index.
#[test]
fn real_data_mpd_titles_and_artists_are_searchable_with_typos() {
    use setlist_core::catalogue::{Catalogue, Song};
    use setlist_search::index::{Matched, SongIndex};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mpd");
    setlist_tests::setlist_ok(&[
        "data",
        "import",
        "--out",
        setlist_tests::path_str(&data),
        setlist_tests::path_str(&setlist_tests::datasets().join("mpd-dev")),
    ]);
    let dataset = setlist_core::dataset::Dataset::load(&data).unwrap();
    let mut playlists = vec![0u32; dataset.tracks.len()];
    for playlist in &dataset.playlists {
        for &track in &playlist.tracks {
            playlists[track as usize] += 1;
        }
    }
    let catalogue = Catalogue::new(
        dataset
            .tracks
            .iter()
            .zip(playlists)
            .map(|(t, playlists)| Song {
                id: t.id.clone(),
                title: t.title.clone(),
                artist: t.artist.clone(),
                album: t.album.clone(),
                playlists,
            })
            .collect(),
    )
    .unwrap();
    let index = SongIndex::build(None, &catalogue, &|_, _| {}).unwrap();
    // A typo in the band's name still finds the band, flagged as a typo
    // (and Rae Sremmurd's "Black Beatles", as it should).
    let beatles: Vec<(&Song, Matched)> = index
        .search("beatls ", 10)
        .unwrap()
        .iter()
        .map(|h| (catalogue.song(h.song).unwrap(), h.matched))
        .collect();
    assert!(
        beatles.iter().all(|(s, m)| *m == Matched::Typo
            && format!("{} {}", s.artist, s.title)
                .to_lowercase()
                .contains("beatles")),
        "{beatles:?}"
    );
    assert!(
        beatles
            .iter()
            .filter(|(s, _)| s.artist == "The Beatles")
            .count()
            >= 5,
        "{beatles:?}"
    );
    // Accents fold: "beyonce" is Beyoncé, the most played of hers first.
    let beyonce = index.search("beyonce", 10).unwrap();
    assert!(!beyonce.is_empty());
    let songs: Vec<&Song> = beyonce
        .iter()
        .map(|h| catalogue.song(h.song).unwrap())
        .collect();
    assert!(songs.iter().all(|s| s.artist == "Beyoncé"), "{songs:?}");
    assert!(
        songs.windows(2).all(|w| w[0].playlists >= w[1].playlists),
        "most popular first: {songs:?}"
    );
    // Typing a title word by word narrows to the song.
    let bennie = index.search("bennie and the j", 5).unwrap();
    let first = catalogue.song(bennie[0].song).unwrap();
    assert_eq!(first.artist, "Elton John", "{first:?}");
    assert!(first.title.starts_with("Bennie And The Jets"), "{first:?}");
}
