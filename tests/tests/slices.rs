//! Slices from a URI: fetched over real HTTP (a static file server in the
//! test, counting what is asked of it) and from `file://`, checked against
//! the manifest, cached; `setlist publish`; and a whole pipeline under
//! `setlist up --slices http://…` whose nodes each download only their part.
//!
//! S3, GCS and Azure cannot be reached from these machines; they share
//! `object_store`'s code path with HTTP here.

use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use setlist_core::artifact;
use setlist_core::catalogue::Song;
use setlist_core::plan::PartitionPlan;
use setlist_core::shape::ModelConfig;
use setlist_core::slice::{
    FORMAT_VERSION, Part, SLICES_FORMAT, SliceEntry, SliceManifest, part_params, parts,
};
use setlist_service::slices::{Fetched, SIZE_SLACK_BYTES, SliceSource, SliceSourceError, Wanted};
use setlist_tests::{
    Up, binary, catalogue_ids, path_str, post, read_jsonl, setlist, setlist_ok, small_model,
};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A static file server on loopback: serves the files under `root` by
/// path, and records the path of every request.
struct FileServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl FileServer {
    fn start(root: &Path) -> FileServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (root, log) = (root.to_path_buf(), requests.clone());
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (root, log) = (root.clone(), log.clone());
            async move {
                log.lock().unwrap().push(uri.path().to_string());
                match fs::read(root.join(uri.path().trim_start_matches('/'))) {
                    Ok(bytes) => (StatusCode::OK, bytes).into_response(),
                    Err(_) => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let port = setlist_core::ports::free_loopback_ports(1).expect("a free port on loopback");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        FileServer {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            _runtime: runtime,
        }
    }

    /// The paths asked for since the last call.
    fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn fetch(
    source: &str,
    cache: &Path,
    wanted: Wanted,
    version: Option<&str>,
) -> Result<Fetched, SliceSourceError> {
    let source = SliceSource::parse(source).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(source.fetch(cache, wanted, version))
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A slices directory as `setlist slice` writes one (2 stages, 1 shard),
/// with stand-in bytes for the tensors: fetching checks sha256 and sizes,
/// not tensors, and needs no libtorch.
fn stand_in_slices(dir: &Path, version: &str) -> SliceManifest {
    fs::create_dir_all(dir).unwrap();
    let config = ModelConfig {
        catalogue_size: 3,
        embedding_dim: 8,
        hidden_dim: 8,
        lstm_layers: 1,
        max_history: 10,
        residual: false,
    };
    let plan = PartitionPlan::new(&config, 2, 1).unwrap();
    let slices = parts(&plan)
        .map(|part| {
            let file = format!("{part}.safetensors");
            let path = dir.join(&file);
            fs::write(&path, format!("the tensors of {part} ").repeat(500)).unwrap();
            SliceEntry {
                part,
                sha256: artifact::sha256_file(&path).unwrap(),
                bytes: fs::metadata(&path).unwrap().len(),
                tensors: part_params(&config, &plan, part).unwrap(),
                file,
            }
        })
        .collect();
    let songs: Vec<String> = (0..3)
        .map(|i| {
            serde_json::to_string(&Song {
                id: format!("song-{i}"),
                title: format!("Song {i}"),
                artist: "Someone".into(),
                album: None,
                playlists: i,
            })
            .unwrap()
        })
        .collect();
    fs::write(dir.join("catalogue.jsonl"), songs.join("\n") + "\n").unwrap();
    let manifest = SliceManifest {
        format: SLICES_FORMAT.into(),
        format_version: FORMAT_VERSION,
        model_version: version.into(),
        config,
        plan,
        slices,
        catalogue_sha256: artifact::sha256_file(&dir.join("catalogue.jsonl")).unwrap(),
    };
    artifact::write_json(&dir.join("manifest.json"), &manifest).unwrap();
    manifest
}

#[test]
fn over_http_a_node_downloads_the_manifest_and_its_part_once_then_reuses_them() {
    let www = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    stand_in_slices(&www.path().join("models/m1"), "m1");
    let server = FileServer::start(www.path());
    let uri = format!("{}/models/m1", server.url);

    let fetched = fetch(&uri, cache.path(), Wanted::Part(Part::Stage(1)), None).unwrap();
    assert_eq!(
        server.take_requests(),
        ["/models/m1/manifest.json", "/models/m1/stage-1.safetensors"]
    );
    assert_eq!(fetched.downloaded, ["manifest.json", "stage-1.safetensors"]);
    assert_eq!(fetched.set.dir, cache.path().join("m1"));
    assert_eq!(
        files(&fetched.set.dir),
        ["manifest.json", "stage-1.safetensors"],
        "nothing else is downloaded, and no temporary file is left"
    );
    // What the node loads next is verified against the manifest.
    fetched.set.verified_part(Part::Stage(1)).unwrap();

    // Again: the manifest only (it may have changed); the part is cached.
    let again = fetch(&uri, cache.path(), Wanted::Part(Part::Stage(1)), None).unwrap();
    assert_eq!(server.take_requests(), ["/models/m1/manifest.json"]);
    assert_eq!(again.downloaded, ["manifest.json"]);
    assert_eq!(again.reused, ["stage-1.safetensors"]);

    // A cached copy that no longer matches is downloaded again.
    let cached = fetched.set.dir.join("stage-1.safetensors");
    let mut bytes = fs::read(&cached).unwrap();
    bytes[7] ^= 1;
    fs::write(&cached, bytes).unwrap();
    fetch(&uri, cache.path(), Wanted::Part(Part::Stage(1)), None).unwrap();
    assert_eq!(
        server.take_requests(),
        ["/models/m1/manifest.json", "/models/m1/stage-1.safetensors"]
    );
    fetched.set.verified_part(Part::Stage(1)).unwrap();

    // The dispatcher and the search API: the manifest and the catalogue.
    let fetched = fetch(&uri, cache.path(), Wanted::Catalogue, None).unwrap();
    assert_eq!(
        server.take_requests(),
        ["/models/m1/manifest.json", "/models/m1/catalogue.jsonl"]
    );
    assert_eq!(fetched.set.load_catalogue().unwrap().len(), 3);
}

#[test]
fn a_damaged_part_is_refused_with_both_checksums_and_nothing_is_cached() {
    let www = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let manifest = stand_in_slices(www.path(), "m1");
    let served = www.path().join("shard-0.safetensors");
    let mut bytes = fs::read(&served).unwrap();
    bytes[100] ^= 0x20;
    fs::write(&served, &bytes).unwrap();
    let server = FileServer::start(www.path());

    let error = fetch(
        &server.url,
        cache.path(),
        Wanted::Part(Part::OutputShard(0)),
        None,
    )
    .unwrap_err()
    .to_string();
    let expected = &manifest.slices[2].sha256;
    let found = artifact::sha256_file(&served).unwrap();
    assert_eq!(
        error,
        format!(
            "{0}/shard-0.safetensors: the sha256 is {found}, but the manifest says {expected}; the published shard-0.safetensors is damaged or belongs to other slices: publish the slices again (`setlist publish --slices DIR --to {0} --force`)",
            server.url
        )
    );
    assert_eq!(
        files(&cache.path().join("m1")),
        ["manifest.json"],
        "the damaged file is not kept"
    );

    // A file longer than the manifest says stops downloading past the slack.
    bytes.extend(vec![0u8; SIZE_SLACK_BYTES as usize + 1]);
    fs::write(&served, &bytes).unwrap();
    let error = fetch(
        &server.url,
        cache.path(),
        Wanted::Part(Part::OutputShard(0)),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(&format!(
            "{}/shard-0.safetensors is larger than the {} bytes its manifest allows",
            server.url,
            manifest.slices[2].bytes + SIZE_SLACK_BYTES
        )),
        "{error}"
    );
}

#[test]
fn missing_files_and_other_versions_are_refused_before_any_part_is_downloaded() {
    let www = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    stand_in_slices(www.path(), "m1");
    let server = FileServer::start(www.path());

    let error = fetch(
        &format!("{}/nothing/here", server.url),
        cache.path(),
        Wanted::Manifest,
        None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        format!(
            "{0}/nothing/here/manifest.json does not exist: publish the slices there (`setlist publish --slices DIR --to {0}/nothing/here`) or correct the URI",
            server.url
        )
    );

    server.take_requests();
    let error = fetch(
        &server.url,
        cache.path(),
        Wanted::Part(Part::Stage(0)),
        Some("m2"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("these slices are of model version m1, but this node serves m2"),
        "{error}"
    );
    assert_eq!(server.take_requests(), ["/manifest.json"]);

    fs::remove_file(www.path().join("stage-0.safetensors")).unwrap();
    let error = fetch(
        &server.url,
        cache.path(),
        Wanted::Part(Part::Stage(0)),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(&format!(
            "{}/stage-0.safetensors does not exist",
            server.url
        )),
        "{error}"
    );
}

#[test]
fn a_local_directory_is_read_in_place_and_a_file_uri_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let slices = dir.path().join("slices");
    stand_in_slices(&slices, "m1");

    let fetched = fetch(
        path_str(&slices),
        &cache,
        Wanted::Part(Part::Stage(0)),
        None,
    )
    .unwrap();
    assert_eq!(fetched.set.dir, slices);
    assert!(fetched.downloaded.is_empty());
    assert!(!cache.exists(), "a local directory is not copied");

    let uri = format!("file://{}", slices.display());
    let fetched = fetch(&uri, &cache, Wanted::Part(Part::Stage(0)), None).unwrap();
    assert_eq!(
        files(&cache.join("m1")),
        ["manifest.json", "stage-0.safetensors"]
    );
    fetched.set.verified_part(Part::Stage(0)).unwrap();
}

#[test]
fn an_unknown_scheme_is_refused_naming_the_supported_ones() {
    let schemes = "give a slices directory, or a URI with one of file://, http://, https://, s3://, gs:// or az://";
    let out = setlist(&["publish", "--slices", "/nowhere", "--to", "ftp://host/m1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "\"ftp://host/m1\": Setlist cannot read slices from \"ftp://\"; {schemes}"
        )),
        "{stderr}"
    );
    let out = std::process::Command::new(binary("setlist-node"))
        .args(["--slices=ftp://host/m1", "--part=stage-0", "--kafka=k:9092"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("setting \"slices\": \"ftp://host/m1\": Setlist cannot read slices"),
        "{stderr}"
    );
    assert!(stderr.contains(schemes), "{stderr}");
}

fn tracks(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["track"].as_str().unwrap().to_string())
        .collect()
}

/// The ML engineer's path to a cluster: slice, `setlist publish` to a
/// folder (file://), which a web server serves; then `setlist up --slices
/// http://…`, whose nodes each fetch only their own part, answers like the
/// whole model.
#[test]
fn published_slices_serve_a_pipeline_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let slices = dir.path().join("slices");
    setlist_ok(&[
        "slice",
        "--model",
        path_str(&model),
        "--stages",
        "3",
        "--output-shards",
        "2",
        "--out",
        path_str(&slices),
    ]);
    let www = dir.path().join("www");
    let to = format!("file://{}/m", www.display());
    let printed = setlist_ok(&["publish", "--slices", path_str(&slices), "--to", &to]);
    let manifest: SliceManifest =
        serde_json::from_str(&fs::read_to_string(slices.join("manifest.json")).unwrap()).unwrap();
    let version = &manifest.model_version;
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 8, "{printed}");
    assert!(lines[0].starts_with(&format!("uploaded {to}/catalogue.jsonl (")));
    assert!(lines[6].starts_with(&format!("uploaded {to}/manifest.json (")));
    assert_eq!(lines[7], format!("published model {version} to {to}"));
    for name in files(&slices) {
        assert_eq!(
            fs::read(www.join("m").join(&name)).unwrap(),
            fs::read(slices.join(&name)).unwrap(),
            "{name} is published as it is"
        );
    }

    // A part fetched back from the folder is the one sliced.
    let cache = dir.path().join("cache");
    let fetched = fetch(&to, &cache, Wanted::Part(Part::Stage(2)), Some(version)).unwrap();
    assert_eq!(
        files(&fetched.set.dir),
        ["manifest.json", "stage-2.safetensors"]
    );
    fetched.set.verified_part(Part::Stage(2)).unwrap();

    // Another model version's slices are not replaced without --force.
    let published = www.join("m/manifest.json");
    let mut other: Value = serde_json::from_str(&fs::read_to_string(&published).unwrap()).unwrap();
    other["model_version"] = json!("mother");
    fs::write(&published, other.to_string()).unwrap();
    let out = setlist(&["publish", "--slices", path_str(&slices), "--to", &to]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{to} holds the slices of model version mother; publishing {version} there would replace them"
        )),
        "{stderr}"
    );
    setlist_ok(&[
        "publish",
        "--slices",
        path_str(&slices),
        "--to",
        &to,
        "--force",
    ]);
    assert_eq!(
        fs::read(&published).unwrap(),
        fs::read(slices.join("manifest.json")).unwrap()
    );

    let server = FileServer::start(&www);
    let up = Up::start_serving(["--slices", &format!("{}/m", server.url)], &[]);
    assert_eq!(up.info["model_version"], json!(version));
    let requests = server.take_requests();
    for part in parts(&manifest.plan) {
        let path = format!("/m/{part}.safetensors");
        assert_eq!(
            requests.iter().filter(|r| **r == path).count(),
            1,
            "{part}'s node alone downloads {part}: {requests:?}"
        );
    }
    assert_eq!(
        requests
            .iter()
            .filter(|r| *r == "/m/catalogue.jsonl")
            .count(),
        1,
        "the catalogue is downloaded once and shared through the cache: {requests:?}"
    );

    let ids = catalogue_ids(&model);
    let playlists: Vec<Vec<String>> = (0..5)
        .map(|i| {
            (0..=i)
                .map(|j| ids[(i * 37 + j * 11) % ids.len()].clone())
                .collect()
        })
        .collect();
    let queries = dir.path().join("queries.jsonl");
    let lines: Vec<String> = playlists
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": i.to_string(), "tracks": p}).to_string())
        .collect();
    fs::write(&queries, lines.join("\n")).unwrap();
    let answers = dir.path().join("answers.jsonl");
    setlist_ok(&[
        "recommend",
        "--model",
        path_str(&model),
        "--input",
        path_str(&queries),
        "--k",
        "10",
        "--output",
        path_str(&answers),
    ]);
    for (playlist, expected) in playlists.iter().zip(read_jsonl(&answers)) {
        let (status, answer) = post(
            &format!("{}/v1/recommendations", up.dispatcher()),
            &json!({"tracks": playlist, "k": 10, "deadline_ms": 20000}),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["fallback"], false, "the model answered: {answer}");
        assert_eq!(tracks(&answer), tracks(&expected));
    }
}
