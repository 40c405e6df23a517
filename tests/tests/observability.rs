//! The SRE's view of a running `setlist up`, with the real tools: a real
//! Prometheus (started by `setlist up --prometheus`) finds every process
//! through the file-SD targets `setlist up` writes, `promtool check metrics`
//! accepts every process's /metrics, every dashboard query returns series
//! from the live system, and freezing a compute node makes the pipeline
//! alerts fire, then resolve once it is back. And one request is followed
//! through every process's log by its id.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use setlist_tests::prometheus::{dashboard_queries, promtool};
use setlist_tests::{DistinctPlaylists, Up, catalogue_ids, http, path_str, small_model};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Two stages and one shard: three nodes, the dispatcher, the search API.
const PIPELINE: [&str; 4] = ["--stages", "2", "--output-shards", "1"];

fn trained(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    small_model(&dir)
}

fn wait_until<T>(what: &str, bound: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn get_json(url: &str) -> Value {
    http()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_json()
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A playlist of at least five different songs, as the search API wants.
fn playlist(playlists: &mut DistinctPlaylists) -> Vec<String> {
    loop {
        let mut songs = playlists.fresh();
        songs.extend(playlists.fresh());
        songs.sort();
        songs.dedup();
        if songs.len() >= 5 {
            return songs;
        }
    }
}

/// The whole run's logs under `up`'s work dir, by process name.
fn log_of(up: &Up, name: &str) -> String {
    let path = up.process(name)["log"].as_str().unwrap().to_string();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn one_request_is_followed_through_every_process_by_its_id() {
    let model = trained("trace");
    let up = Up::start_serving_with_env(
        ["--model", path_str(&model)],
        &PIPELINE,
        &[(
            "RUST_LOG",
            "info,setlist_search=debug,setlist_dispatcher=debug,setlist_node=debug",
        )],
    );
    let ids = catalogue_ids(&model);
    let songs = playlist(&mut DistinctPlaylists::new(&ids));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut response = http()
        .post(&format!("{}v1/recommendations", up.page()))
        .header("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send_json(json!({ "songs": songs, "k": 5 }))
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        trace_id,
        "the caller learns the id its trace gave the request"
    );
    let answer: Value = response.body_mut().read_json().unwrap();
    assert_eq!(answer["fallback"], false, "a model answer: {answer}");

    let processes: Vec<String> = up.info["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(processes.len(), 5, "{processes:?}");
    // The logs are written as the request passes; the last lines may lag.
    let lines_of = |name: &str| -> Vec<String> {
        log_of(&up, name)
            .lines()
            .filter(|l| l.contains(trace_id))
            .map(str::to_string)
            .collect()
    };
    for name in &processes {
        let lines = wait_until(
            &format!("a line of {name}'s log with the request's id"),
            Duration::from_secs(10),
            || Some(lines_of(name)).filter(|l| !l.is_empty()),
        );
        eprintln!("{name}:\n  {}", lines.join("\n  "));
        if name.starts_with("stage-") || name.starts_with("shard-") {
            // The frame carries the W3C context on, a new span in the trace.
            assert!(
                lines.iter().any(|l| l.contains("trace_context=00-")
                    && l.contains(&format!("00-{trace_id}-"))
                    && !l.contains("00f067aa0ba902b7")),
                "{name} logs the frame's trace context, sent on by the dispatcher: {lines:?}"
            );
        }
    }
    let search = lines_of("search");
    assert!(
        search.iter().any(|l| l.contains("recommended")),
        "{search:?}"
    );
    let dispatcher = lines_of("dispatcher");
    for step in ["publishing to stage 0", "a shard's result", "answered"] {
        assert!(
            dispatcher.iter().any(|l| l.contains(step)),
            "the dispatcher's log says {step:?} about the request: {dispatcher:?}"
        );
    }

    // A caller's own 32-hex x-request-id is the id too; anything else gets
    // a new one, returned to the caller and found in the logs the same way.
    let own = "0123456789abcdef0123456789abcdef";
    let songs = playlist(&mut DistinctPlaylists::new(&ids[1..]));
    let response = http()
        .post(&format!("{}v1/recommendations", up.page()))
        .header("x-request-id", own)
        .send_json(json!({ "songs": songs, "k": 5 }))
        .unwrap();
    assert_eq!(response.headers().get("x-request-id").unwrap(), own);
    let response = http()
        .post(&format!("{}v1/recommendations", up.page()))
        .header("x-request-id", "not-a-trace-id")
        .send_json(json!({ "songs": songs, "k": 5 }))
        .unwrap();
    let given = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        given.len() == 32 && given != own && given.bytes().all(|b| b.is_ascii_hexdigit()),
        "{given}"
    );
    wait_until(
        "the new id in the dispatcher's log",
        Duration::from_secs(10),
        || log_of(&up, "dispatcher").contains(&given).then_some(()),
    );
}

/// The rules on a clock 15 times faster: every duration in a range
/// selector, a subquery and a `for:` divided by 15 (at least 2 s), so an
/// alert that takes minutes in production fires here in seconds, through
/// the very same expressions.
fn on_a_fast_clock(rules: &str) -> String {
    const FACTOR: u64 = 15;
    let seconds = |digits: &str, unit: char| -> Option<u64> {
        let n: u64 = digits.parse().ok()?;
        Some(match unit {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            'd' => n * 86400,
            _ => return None,
        })
    };
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let trimmed = line.trim_start();
        let scaled = if let Some(value) = trimmed.strip_prefix("for: ") {
            let (digits, unit) = value.split_at(value.len() - 1);
            let unit = unit.chars().next().unwrap();
            let s = seconds(digits, unit).expect("a for: duration in s, m, h or d");
            format!(
                "{}for: {}s",
                &line[..line.len() - trimmed.len()],
                (s / FACTOR).max(2)
            )
        } else {
            // Durations right after `[` or a subquery's `:` inside brackets.
            let mut scaled = String::new();
            let mut rest = line;
            while let Some(at) = rest.find(['[', ':']) {
                let (head, tail) = rest.split_at(at + 1);
                scaled.push_str(head);
                let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
                let unit = tail[digits.len()..].chars().next();
                let closes = tail[digits.len()..].chars().nth(1);
                match (unit, closes) {
                    (Some(unit @ ('s' | 'm' | 'h' | 'd')), Some(']' | ':'))
                        if !digits.is_empty() =>
                    {
                        let s = seconds(&digits, unit).unwrap();
                        scaled.push_str(&format!("{}s", (s / FACTOR).max(2)));
                        rest = &tail[digits.len() + 1..];
                    }
                    _ => rest = tail,
                }
            }
            scaled.push_str(rest);
            scaled
        };
        out.push_str(&scaled);
        out.push('\n');
    }
    out
}

#[test]
fn the_fast_clock_scales_ranges_subqueries_and_for() {
    let rules = "      - alert: A\n        expr: rate(x[5m]) > 0 and deriv(y[10m:1m]) > 0 and z{a=\"b:c\"}\n        for: 2m\n";
    assert_eq!(
        on_a_fast_clock(rules),
        "      - alert: A\n        expr: rate(x[20s]) > 0 and deriv(y[40s:4s]) > 0 and z{a=\"b:c\"}\n        for: 8s\n"
    );
}

/// The alerts Prometheus has firing now, by name.
fn firing(prometheus: &str) -> Vec<String> {
    let alerts = get_json(&format!("{prometheus}/api/v1/alerts"));
    alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
        .collect()
}

fn query(prometheus: &str, expr: &str) -> Value {
    let mut response = http()
        .post(&format!("{prometheus}/api/v1/query"))
        .send_form([("query", expr)])
        .unwrap();
    let body: Value = response.body_mut().read_json().unwrap();
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"].clone()
}

#[test]
fn prometheus_sees_every_process_and_the_pipeline_alerts_fire_and_resolve() {
    let model = trained("prometheus");
    let mut args = PIPELINE.to_vec();
    let listen = format!(
        "127.0.0.1:{}",
        setlist_core::ports::free_loopback_ports(1).unwrap()
    );
    args.extend([
        "--prometheus",
        "--scrape-interval=1",
        "--prometheus-listen",
        &listen,
    ]);
    let up = Up::start_serving(["--model", path_str(&model)], &args);
    let prometheus = up.info["prometheus"].as_str().unwrap().to_string();
    let targets: Value = serde_json::from_str(
        &std::fs::read_to_string(up.info["scrape_targets"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let processes = up.info["processes"].as_array().unwrap();
    assert_eq!(
        targets.as_array().unwrap().len(),
        processes.len() - 1,
        "every process but Prometheus itself is a target: {targets}"
    );

    // promtool lints every process's exposition: units, _total, help, types.
    for process in processes.iter().filter(|p| p["name"] != "prometheus") {
        let url = format!("{}/metrics", process["url"].as_str().unwrap());
        let text = http()
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let mut check = std::process::Command::new(promtool())
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {url}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The alert rules on a fast clock, reloaded in the running Prometheus.
    let rules_file = PathBuf::from(up.info["scrape_config"].as_str().unwrap())
        .with_file_name("setlist-alerts.yml");
    let rules = std::fs::read_to_string(&rules_file).unwrap();
    std::fs::write(&rules_file, on_a_fast_clock(&rules)).unwrap();
    let prometheus_pid = up.process("prometheus")["pid"].as_u64().unwrap() as i32;
    kill(Pid::from_raw(prometheus_pid), Signal::SIGHUP).unwrap();
    wait_until("the fast rules loaded", Duration::from_secs(30), || {
        let rules = get_json(&format!("{prometheus}/api/v1/rules"));
        rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .any(|r| r["name"] == "SetlistPipelineDown" && r["duration"].as_f64() < Some(60.0))
            .then_some(())
    });
    wait_until("every target up", Duration::from_secs(60), || {
        let result = query(&prometheus, "up");
        let all = result.as_array().unwrap();
        (all.len() == targets.as_array().unwrap().len() && all.iter().all(|s| s["value"][1] == "1"))
            .then_some(())
    });

    // Listeners at work: new playlists (model answers), repeats (cached),
    // through the search API and straight to the dispatcher.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let ids = catalogue_ids(&model);
        let page = up.page();
        let dispatcher = up.dispatcher();
        std::thread::spawn(move || {
            let mut playlists = DistinctPlaylists::new(&ids);
            let mut previous = playlist(&mut playlists);
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let songs = if n % 3 == 2 {
                    previous.clone()
                } else {
                    playlist(&mut playlists)
                };
                let (url, body) = if n % 2 == 0 {
                    (
                        format!("{page}v1/recommendations"),
                        json!({ "songs": songs, "k": 5 }),
                    )
                } else {
                    (
                        format!("{dispatcher}/v1/recommendations"),
                        json!({ "tracks": songs, "k": 5 }),
                    )
                };
                let _ = http().post(&url).send_json(body);
                previous = songs;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Every dashboard query returns series from the live system, but the
    // operator's: it runs only on Kubernetes (its metrics are linted by the
    // operator's own tests).
    let queries: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .filter(|(_, expr)| !expr.contains("setlist_operator_"))
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    let mut empty: Vec<(String, String)> = queries.clone();
    let started = Instant::now();
    while !empty.is_empty() && started.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_secs(2));
        empty.retain(|(_, expr)| query(&prometheus, expr).as_array().unwrap().is_empty());
    }
    assert!(
        empty.is_empty(),
        "dashboard queries with no series from the live system after 90 s:\n{}",
        empty
            .iter()
            .map(|(title, expr)| format!("  {title}: {expr}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let pipeline_alerts = ["SetlistPipelineDown", "SetlistComputeNodeDown"];
    let now = firing(&prometheus);
    assert!(
        !pipeline_alerts.iter().any(|a| now.contains(&a.to_string())),
        "a healthy pipeline fires nothing of {pipeline_alerts:?}: {now:?}"
    );

    // A stage's only node freezes: its scrape fails, and every request
    // waits out its deadline into a fallback.
    let frozen = up.process("stage-1-0")["pid"].as_u64().unwrap() as i32;
    kill(Pid::from_raw(frozen), Signal::SIGSTOP).unwrap();
    let fired = wait_until(
        "the pipeline alerts firing",
        Duration::from_secs(120),
        || {
            let now = firing(&prometheus);
            pipeline_alerts
                .iter()
                .all(|a| now.contains(&a.to_string()))
                .then_some(now)
        },
    );
    eprintln!("firing with stage-1-0 frozen: {fired:?}");

    // It dies; `setlist up` starts it again, as Kubernetes would.
    kill(Pid::from_raw(frozen), Signal::SIGKILL).unwrap();
    let _ = kill(Pid::from_raw(frozen), Signal::SIGCONT);
    let resolved = wait_until(
        "the pipeline alerts resolved",
        Duration::from_secs(180),
        || {
            let now = firing(&prometheus);
            (!pipeline_alerts.iter().any(|a| now.contains(&a.to_string()))).then_some(now)
        },
    );
    eprintln!("firing after the restart: {resolved:?}");
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}
