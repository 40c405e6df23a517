//! The listener's page in a real browser: headless Chromium, driven through
//! Debian's `chromedriver` (WebDriver) by fantoccini, against a real
//! `setlist up` on a small model. Every step asserts what the listener sees
//! (the page's text), waiting for it with a bound; nothing sleeps to pass.
//!
//! With `SETLIST_SCREENSHOTS=<dir>` the test also saves the page at
//! 1280×900 and 360×800 (`listener-desktop.png`, `listener-phone.png`; the
//! ones in docs/screenshots/ come from such a run).

use fantoccini::actions::{InputSource, KeyAction, KeyActions, MouseActions, PointerAction};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use setlist_tests::{Up, path_str, processes_mentioning, read_jsonl, small_model};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one thing the listener waits for may take.
const WAIT: Duration = Duration::from_secs(30);
/// The search API's deadline for the dispatcher in this test: ample for a
/// cold pipeline on a busy 2-core machine, short enough that a stopped
/// dispatcher turns into a fallback quickly (the page waits 15 s).
const DEADLINE_MS: u64 = 5_000;
const INSTALL: &str = "run ./setlist test, which installs chromium and chromium-driver (or: apt-get install -y chromium chromium-driver)";

/// The first of `names` found on PATH, or the test fails saying how
/// to install it.
fn find_program(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} is not installed, and this test needs it to drive a real browser: {INSTALL}",
        names.join(" or ")
    );
}

/// `chromedriver` on a free port, with the browser's profile in a folder of
/// its own; stopped, with every browser process it started, when dropped.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
    profile: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = find_program(&["chromedriver"]);
        find_program(&["chromium", "chromium-browser"]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let port = setlist_core::ports::free_loopback_ports(1).expect("a free port on loopback");
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} does not start ({e}): {INSTALL}", chromedriver.display())
            });
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            profile: tempfile::tempdir().unwrap(),
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let ready = setlist_tests::http()
                .get(&format!("{}/status", driver.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if ready {
                return driver;
            }
            assert!(
                started.elapsed() < WAIT,
                "chromedriver is not ready after {WAIT:?}; its log:\n{}",
                driver.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn session(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": path_str(&find_program(&["chromium", "chromium-browser"])),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start chromium ({e}): {INSTALL}; chromedriver's log:\n{}",
                    self.log_text()
                )
            })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser that outlived its driver: found by its own profile folder.
        for process in processes_mentioning(self.profile.path()) {
            let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
        }
    }
}

/// The dispatcher, stopped (SIGSTOP) so the search API gets no answer, and
/// continued again when dropped whatever happens.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("the dispatcher can be stopped");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// Evaluates `script` (a function body that returns JSON) in the page.
async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("the page runs a script ({e}): {script}"))
}

/// The visible text of the element with `id` ("" while it is hidden).
async fn text(client: &Client, id: &str) -> String {
    let script = format!(
        "const e = document.getElementById({}); return e && !e.closest('[hidden]') ? e.innerText : '';",
        json!(id)
    );
    eval(client, &script)
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Polls `probe` until it gives `Some`, or fails the test after `WAIT`
/// saying what it waited for and what the page showed.
async fn until<T, F, Fut>(client: &Client, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if started.elapsed() > WAIT {
            let page = eval(client, "return document.body.innerText;").await;
            panic!(
                "waited {WAIT:?} for {what}; the page shows:\n{}",
                page.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element `id` shows text containing `wanted`; returns it.
async fn until_text(client: &Client, id: &str, wanted: &str) -> String {
    until(client, &format!("#{id} to say \"{wanted}\""), || async {
        let now = text(client, id).await;
        now.contains(wanted).then_some(now)
    })
    .await
}

/// Presses one key, as a listener does, wherever the focus is.
async fn press(client: &Client, key: char) {
    let actions = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    client
        .perform_actions(actions)
        .await
        .expect("keys reach the page");
}

async fn focused_id(client: &Client) -> String {
    eval(
        client,
        "return document.activeElement ? document.activeElement.id : '';",
    )
    .await
    .as_str()
    .unwrap_or("")
    .to_string()
}

/// Titles of the items matching `selector`, in page order.
async fn titles(client: &Client, selector: &str) -> Vec<String> {
    let script = format!(
        "return [...document.querySelectorAll({})].map(e => e.querySelector('.song-title').textContent);",
        json!(selector)
    );
    serde_json::from_value(eval(client, &script).await).unwrap()
}

/// Song ids (`data-song-id`) of the items matching `selector`, in page order.
async fn song_ids(client: &Client, selector: &str) -> Vec<String> {
    let script = format!(
        "return [...document.querySelectorAll({})].map(e => e.dataset.songId);",
        json!(selector)
    );
    serde_json::from_value(eval(client, &script).await).unwrap()
}

/// Sets the page's viewport (not the window, whose frame is larger) to
/// `width` × `height` CSS pixels.
async fn viewport(client: &Client, width: u32, height: u32) {
    client.set_window_size(width, height).await.unwrap();
    let inner = eval(client, "return [window.innerWidth, window.innerHeight];").await;
    let (w, h) = (
        inner[0].as_u64().unwrap() as u32,
        inner[1].as_u64().unwrap() as u32,
    );
    client
        .set_window_size(
            width + width.saturating_sub(w),
            height + height.saturating_sub(h),
        )
        .await
        .unwrap();
}

async fn screenshot(client: &Client, dir: &Path, name: &str, width: u32, height: u32) {
    viewport(client, width, height).await;
    eval(client, "window.scrollTo(0, 0); return null;").await;
    // The pointer off the content, so no hover shows in the picture.
    let away = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
        duration: None,
        x: 0.0,
        y: 0.0,
    });
    client.perform_actions(away).await.unwrap();
    let png = client
        .screenshot()
        .await
        .expect("chromium takes a screenshot");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// The word (4+ letters) in most titles of the catalogue: a query with
/// plenty of results. Ties go to the first in alphabetical order.
fn common_title_word(songs: &[Value]) -> (String, usize) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for song in songs {
        let title = song["title"].as_str().unwrap().to_lowercase();
        let mut words: Vec<&str> = title
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 4)
            .collect();
        words.sort_unstable();
        words.dedup();
        for word in words {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .expect("the catalogue has titles")
}

/// `word` with its last letter changed so that no word of the catalogue
/// starts with it: a query only typo tolerance answers.
fn misspelling(word: &str, songs: &[Value]) -> String {
    let words: Vec<String> = songs
        .iter()
        .flat_map(|s| {
            ["title", "artist", "album"].map(|f| s[f].as_str().unwrap_or("").to_lowercase())
        })
        .flat_map(|text| {
            text.split(|c: char| !c.is_alphanumeric())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let stem = &word[..word.len() - 1];
    ['q', 'x', 'z', 'j']
        .iter()
        .map(|last| format!("{stem}{last}"))
        .find(|candidate| !words.iter().any(|w| w.starts_with(candidate.as_str())))
        .unwrap_or_else(|| panic!("a misspelling of \"{word}\" that no word starts with"))
}

#[test]
fn listener_page_in_chromium_searches_picks_recommends_uploads_and_shows_the_fallback() {
    // The browser first: without it there is nothing to test, and the
    // failure says how to install it before minutes go into a model.
    let driver = Driver::start();
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let songs = read_jsonl(&model.join("catalogue.jsonl"));
    let up = Up::start(
        &model,
        &[
            &format!("--search-arg=--deadline-ms={DEADLINE_MS}"),
            &format!(
                "--search-arg=--dispatcher-timeout-ms={}",
                DEADLINE_MS + 1_000
            ),
        ],
    );
    let page = up.page();
    let model_version = up.info["model_version"].as_str().unwrap().to_string();
    let dispatcher = up.process("dispatcher")["pid"].as_i64().unwrap() as i32;
    let screenshots = std::env::var_os("SETLIST_SCREENSHOTS").map(PathBuf::from);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = driver.session().await;
        let scenario = tokio::spawn(listener(
            client.clone(),
            Scenario {
                page,
                model_version,
                dispatcher,
                songs,
                dir: dir.path().to_path_buf(),
                screenshots,
            },
        ));
        let outcome = scenario.await;
        let _ = client.close().await;
        if let Err(failure) = outcome {
            std::panic::resume_unwind(failure.into_panic());
        }
    });
}

struct Scenario {
    page: String,
    model_version: String,
    dispatcher: i32,
    songs: Vec<Value>,
    dir: PathBuf,
    screenshots: Option<PathBuf>,
}

async fn listener(client: Client, run: Scenario) {
    let c = &client;
    viewport(c, 1280, 900).await;
    c.goto(&run.page).await.expect("the page opens");
    let cluster = until_text(c, "cluster-text", "pipeline ready").await;
    assert!(
        cluster.contains(&format!("Model {}", run.model_version))
            && cluster.contains("3 stages × 2 output shards"),
        "the status line names the model and its parts: {cluster}"
    );
    assert_eq!(
        text(c, "recommend-hint").await,
        "Add 5 more songs to get recommendations (at least 5)."
    );

    // The keyboard alone: Tab to the skip link, Enter lands in the search box.
    press(c, char::from(Key::Tab)).await;
    press(c, char::from(Key::Enter)).await;
    until(c, "the skip link to focus the search box", || async {
        (focused_id(c).await == "search-input").then_some(())
    })
    .await;

    // Two characters are not a query yet; the page says so.
    let (word, titled) = common_title_word(&run.songs);
    assert!(
        titled >= 5,
        "\"{word}\" is in {titled} titles; the test needs 5"
    );
    let typed: String = word.chars().take(2).collect();
    c.active_element()
        .await
        .unwrap()
        .send_keys(&typed)
        .await
        .unwrap();
    until_text(c, "search-hint", "Type 1 more character to search.").await;
    let rest: String = word.chars().skip(2).collect();
    c.active_element()
        .await
        .unwrap()
        .send_keys(&rest)
        .await
        .unwrap();
    let hint = until_text(c, "search-hint", &format!("found for “{word}”")).await;
    let found = song_ids(c, "[data-testid=search-result]").await;
    assert!(
        found.len() >= 5,
        "{hint}: at least 5 results for \"{word}\" ({titled} titles hold it)"
    );
    // Each result shows its song's title, artist and album, as the catalogue has them.
    let by_id: BTreeMap<&str, &Value> = run
        .songs
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s))
        .collect();
    for (index, id) in found.iter().enumerate() {
        let song = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("result {id} is a catalogue song"));
        let shown = text(c, &format!("search-result-{index}")).await;
        for field in ["title", "artist", "album"] {
            if let Some(value) = song[field].as_str() {
                assert!(
                    shown.contains(value),
                    "result {index} shows its {field} \"{value}\": {shown}"
                );
            }
        }
    }
    let result_titles = titles(c, "[data-testid=search-result]").await;

    // Pick five: ↓ then Enter, each time; the focus stays in the search box.
    for picked in 1..=5 {
        press(c, char::from(Key::Down)).await;
        press(c, char::from(Key::Enter)).await;
        let wanted = format!("({picked} song{})", if picked == 1 { "" } else { "s" });
        until_text(c, "playlist-count", &wanted).await;
        if picked == 4 {
            assert_eq!(
                text(c, "recommend-hint").await,
                "Add 1 more song to get recommendations (at least 5)."
            );
            assert_eq!(
                eval(
                    c,
                    "return document.getElementById('recommend-button').disabled;"
                )
                .await,
                true
            );
        }
    }
    assert_eq!(
        focused_id(c).await,
        "search-input",
        "the keyboard stays in the search box"
    );
    assert_eq!(
        titles(c, "[data-testid=playlist-item]").await,
        result_titles[..5].to_vec()
    );
    let announced = text(c, "playlist-announce").await;
    assert!(
        announced.starts_with(&format!("Added {}", result_titles[4])),
        "{announced}"
    );
    let picked = text(c, "search-result-0").await;
    assert!(
        picked.contains("✓ in playlist"),
        "a picked result says so: {picked}"
    );
    until_text(
        c,
        "recommend-hint",
        "Ready: recommendations follow your 5 songs",
    )
    .await;

    // A reload keeps the playlist.
    c.refresh().await.unwrap();
    until_text(c, "playlist-count", "(5 songs)").await;
    let playlist = song_ids(c, "[data-testid=playlist-item]").await;
    assert_eq!(playlist, found[..5].to_vec());

    // Recommendations from the model, with their timings.
    c.find(Locator::Id("recommend-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = until(c, "the recommendations", || async {
        let status = text(c, "rec-status").await;
        (status.contains("recommended")
            || status.contains("suggested")
            || !text(c, "rec-error").await.is_empty())
        .then_some(status)
    })
    .await;
    assert!(
        status.contains("recommended for your playlist"),
        "the model answered: {status} {} {}",
        text(c, "rec-fallback").await,
        text(c, "rec-error").await
    );
    assert_eq!(
        text(c, "rec-fallback").await,
        "",
        "no fallback badge while the pipeline is up"
    );
    let recommended = song_ids(c, "[data-testid=rec-item]").await;
    assert!(
        !recommended.is_empty() && recommended.len() <= 10,
        "{recommended:?}"
    );
    assert!(
        recommended.iter().all(|id| !playlist.contains(id)),
        "never a song of the playlist"
    );
    assert!(text(c, "rec-list").await.contains("+ Add"));
    assert_eq!(
        text(c, "rec-model").await,
        format!("Model {}.", run.model_version)
    );
    let timings = text(c, "rec-timings").await;
    for part in ["stage-0", "stage-1", "stage-2", "shard-0", "shard-1"] {
        assert!(timings.contains(part), "a timing row for {part}: {timings}");
    }
    assert!(
        timings.contains("ms in all") && timings.contains("compute"),
        "{timings}"
    );

    // Another round: one recommended song into the playlist.
    let first = &recommended[0];
    c.find(Locator::Css(&format!(
        "[data-testid=rec-add][data-song-id=\"{first}\"]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until_text(c, "playlist-count", "(6 songs)").await;
    until_text(c, "rec-list", "✓ In playlist").await;

    // Upload an M3U file: three catalogue songs, a song no catalogue has,
    // and a path that names no song.
    let fresh: Vec<&Value> = run
        .songs
        .iter()
        .filter(|s| {
            let id = s["id"].as_str().unwrap();
            // "Artist - Title" must split where the test means it to.
            let plain = |f: &str| !s[f].as_str().unwrap_or("").contains(" - ");
            !playlist.iter().any(|p| p == id) && id != first && plain("title") && plain("artist")
        })
        .take(3)
        .collect();
    let mut m3u = String::from("#EXTM3U\n#PLAYLIST:Browser test\n");
    for song in &fresh {
        m3u.push_str(&format!(
            "#EXTINF:200,{} - {}\n/music/{}.mp3\n",
            song["artist"].as_str().unwrap(),
            song["title"].as_str().unwrap(),
            song["id"].as_str().unwrap().replace(':', "_")
        ));
    }
    m3u.push_str("#EXTINF:180,Zzyzx Qwvb - Xqzt Vvbnm\n/music/nothing.mp3\n/music/untitled.mp3\n");
    let file = run.dir.join("road-trip.m3u");
    std::fs::write(&file, &m3u).unwrap();
    c.find(Locator::Id("upload-input"))
        .await
        .unwrap()
        .send_keys(path_str(&file))
        .await
        .unwrap();
    let summary = until_text(c, "upload-summary", "recognised").await;
    assert!(
        summary.contains("road-trip.m3u")
            && summary.contains("M3U/M3U8: 3 of 4 entries recognised, 1 line skipped."),
        "{summary}"
    );
    let report = text(c, "upload-report").await;
    assert!(
        report.contains("Browser test"),
        "the playlist's name: {report}"
    );
    for song in &fresh {
        let title = song["title"].as_str().unwrap();
        assert!(
            report.contains(&format!(
                "→ {title} by {}",
                song["artist"].as_str().unwrap()
            )),
            "the report shows the matched song {title}: {report}"
        );
    }
    assert_eq!(
        report.matches("matched by title and artist").count(),
        3,
        "{report}"
    );
    assert!(
        report.contains("Zzyzx Qwvb - Xqzt Vvbnm"),
        "the unknown entry is listed: {report}"
    );
    let last_line = format!("Line {}:", m3u.lines().count());
    assert!(
        report.contains("Skipped (1)") && report.contains(&last_line),
        "the skipped path, on the file's last line: {report}"
    );
    let not_recognised = eval(
        c,
        "return [...document.querySelectorAll('[data-testid=upload-entry][data-recognised=false]')].map(e => e.innerText);",
    )
    .await;
    assert_eq!(
        not_recognised.as_array().map(Vec::len),
        Some(1),
        "{not_recognised}"
    );
    assert!(!text(c, "upload-add").await.is_empty());
    c.find(Locator::Id("upload-add"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_text(c, "upload-status", "Added 3 songs to your playlist.").await;
    until_text(c, "playlist-count", "(9 songs)").await;

    // A typo: songs still come, and say they matched with it forgiven.
    let misspelled = misspelling(&word, &run.songs);
    let search = c.find(Locator::Id("search-input")).await.unwrap();
    // Empty after the reload (the box does not autocomplete), or emptied.
    let left = eval(
        c,
        "return [...document.getElementById('search-input').value].length;",
    )
    .await;
    let erase =
        |n: usize| -> String { std::iter::repeat_n(char::from(Key::Backspace), n).collect() };
    let typed = format!("{}{misspelled}", erase(left.as_u64().unwrap() as usize));
    search.send_keys(&typed).await.unwrap();
    let hint = until_text(c, "search-hint", &format!("found for “{misspelled}”")).await;
    assert!(
        hint.contains("Some results match only with a typo forgiven."),
        "{hint}"
    );
    let shown = text(c, "search-results").await;
    assert!(
        shown.contains("close spelling (typo forgiven)"),
        "the typo-forgiven songs say so: {shown}"
    );
    search.send_keys(&erase(misspelled.len())).await.unwrap();
    until_text(c, "search-hint", "Type at least 3 characters to search.").await;

    // The search again: the songs picked before the reload say so.
    search.send_keys(&word).await.unwrap();
    until_text(c, "search-hint", &format!("found for “{word}”")).await;
    press(c, char::from(Key::Down)).await;
    let first_result = text(c, "search-result-0").await;
    assert!(first_result.contains("✓ in playlist"), "{first_result}");

    if let Some(dir) = &run.screenshots {
        screenshot(c, dir, "listener-desktop.png", 1280, 900).await;
        screenshot(c, dir, "listener-phone.png", 360, 800).await;
        viewport(c, 1280, 900).await;
    }

    // The pipeline stops answering: the dispatcher is frozen.
    let _stopped = Stopped::stop(run.dispatcher);
    c.find(Locator::Id("recommend-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let badge = until_text(c, "rec-fallback", "Fallback:").await;
    assert!(
        badge.contains("these are the most popular songs instead")
            && !badge.contains("could not answer"),
        "the badge says why in words: {badge}"
    );
    // A frozen dispatcher is one the search API cannot reach (the breaker
    // opens only after three such failures).
    let reason = eval(
        c,
        "return document.getElementById('rec-fallback').dataset.reason;",
    )
    .await;
    assert_eq!(reason, "dispatcher_unreachable", "{badge}");
    assert!(
        badge.contains("the recommendation service cannot be reached"),
        "{badge}"
    );
    until_text(c, "rec-status", "suggested (popular songs, not personal)").await;
    assert!(
        !song_ids(c, "[data-testid=rec-item]").await.is_empty(),
        "popular songs are shown"
    );
    // The cluster line turns too, at its next refresh.
    until_text(c, "cluster-text", "pipeline unreachable").await;
    let state = eval(
        c,
        "return document.getElementById('cluster-status').dataset.state;",
    )
    .await;
    assert_eq!(state, "down");
}
