//! Spans exported over OTLP: a `setlist up` pointed at an OTLP/HTTP
//! receiver (a stand-in collector here, taking `http/json`) sends it the
//! spans of one request from every process, in the request's trace, each
//! the child of the span that handed the request on: the caller's, the
//! search API's, the dispatcher's request and publish spans, then each
//! stage's compute span in turn. And a setting the exporter cannot use
//! stops a process with an error that names it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use setlist_tests::{DistinctPlaylists, Up, binary, catalogue_ids, http, path_str, small_model};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// What the stand-in collector was sent: the JSON body of each export.
type Received = Arc<Mutex<Vec<Value>>>;

/// An OTLP/HTTP receiver on a free loopback port, taking `http/json`
/// exports at `/v1/traces`, for as long as the test runs. Its base URL.
fn collector(received: Received) -> String {
    async fn traces(
        State(received): State<Received>,
        headers: HeaderMap,
        body: Bytes,
    ) -> ([(header::HeaderName, &'static str); 1], &'static str) {
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/json sends JSON"
        );
        let export: Value = serde_json::from_slice(&body).expect("an OTLP/JSON export");
        received.lock().unwrap().push(export);
        ([(header::CONTENT_TYPE, "application/json")], "{}")
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(traces))
                    .with_state(received);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
    });
    format!("http://{address}")
}

/// One exported span, as the test reads it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a trace's root.
    parent: String,
    attributes: HashMap<String, String>,
}

/// Attributes (`[{key, value: {stringValue|intValue|…}}]`) as text.
fn attributes(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv["key"].as_str()?.to_string();
            let value = kv["value"].as_object()?.values().next()?;
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            Some((key, text))
        })
        .collect()
}

/// Every span received so far.
fn spans(received: &Received) -> Vec<Exported> {
    let mut spans = Vec::new();
    for export in received.lock().unwrap().iter() {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = attributes(&resource["resource"]["attributes"])
                .remove("service.name")
                .unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let text = |field: &str| span[field].as_str().unwrap_or("").to_string();
                    spans.push(Exported {
                        service: service.clone(),
                        name: text("name"),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent: text("parentSpanId"),
                        attributes: attributes(&span["attributes"]),
                    });
                }
            }
        }
    }
    spans
}

/// The spans of one request's trace, by role, once every role has one.
#[derive(Debug)]
struct Trace {
    search: Vec<Exported>,
    dispatcher: Vec<Exported>,
    publish: Vec<Exported>,
    /// `compute` spans by node part (`stage-0`, `stage-1`, `shard-0`).
    compute: HashMap<String, Vec<Exported>>,
}

fn trace_of(received: &Received, trace_id: &str) -> Option<Trace> {
    let all: Vec<Exported> = spans(received)
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let of = |service: &str, name: &str| -> Vec<Exported> {
        all.iter()
            .filter(|s| s.service == service && s.name == name)
            .cloned()
            .collect()
    };
    let mut compute: HashMap<String, Vec<Exported>> = HashMap::new();
    for span in of("setlist-node", "compute") {
        let part = span.attributes.get("part").cloned().unwrap_or_default();
        compute.entry(part).or_default().push(span);
    }
    let trace = Trace {
        search: of("setlist-search", "request"),
        dispatcher: of("setlist-dispatcher", "request"),
        publish: of("setlist-dispatcher", "publish"),
        compute,
    };
    let complete = !trace.search.is_empty()
        && !trace.dispatcher.is_empty()
        && !trace.publish.is_empty()
        && ["stage-0", "stage-1", "shard-0"]
            .iter()
            .all(|part| trace.compute.contains_key(*part));
    complete.then_some(trace)
}

/// Every span of `children` has one of `parents` as its parent.
fn assert_children(children: &[Exported], parents: &[Exported], what: &str) {
    let ids: BTreeSet<&str> = parents.iter().map(|p| p.span_id.as_str()).collect();
    for child in children {
        assert!(
            ids.contains(child.parent.as_str()),
            "{what}: {child:?} is not the child of any of {parents:?}"
        );
    }
}

fn recommend(up: &Up, songs: &[String], header: (&str, &str)) -> Value {
    let mut response = http()
        .post(&format!("{}v1/recommendations", up.page()))
        .header(header.0, header.1)
        .send_json(json!({ "songs": songs, "k": 5 }))
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.body_mut().read_json().unwrap();
    assert_eq!(answer["fallback"], false, "a model answer: {answer}");
    answer
}

#[test]
fn one_request_is_one_trace_across_every_process() {
    let model = trained("otlp");
    let received = Received::default();
    let endpoint = collector(received.clone());
    let up = Up::start_serving_with_env(
        ["--model", path_str(&model)],
        &PIPELINE,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            // Batches sent every 100 ms rather than 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let ids = catalogue_ids(&model);
    let mut playlists = DistinctPlaylists::new(&ids);

    // A caller's traceparent: every span is in its trace, the first one
    // the child of the caller's span.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    recommend(
        &up,
        &playlist(&mut playlists),
        ("traceparent", &format!("00-{trace_id}-{caller}-01")),
    );
    let trace = wait_until(
        "the request's spans from the search API, the dispatcher and every node",
        Duration::from_secs(20),
        || trace_of(&received, trace_id),
    );
    eprintln!("{trace:#?}");
    for span in &trace.search {
        assert_eq!(
            span.parent, caller,
            "the search API's span is the caller's child"
        );
        assert_eq!(
            span.attributes.get("request_id").map(String::as_str),
            Some(trace_id)
        );
    }
    assert_children(
        &trace.dispatcher,
        &trace.search,
        "the dispatcher's request span",
    );
    assert_children(
        &trace.publish,
        &trace.dispatcher,
        "the dispatcher's publish span",
    );
    assert_children(
        &trace.compute["stage-0"],
        &trace.publish,
        "stage 0's compute span",
    );
    assert_children(
        &trace.compute["stage-1"],
        &trace.compute["stage-0"],
        "stage 1's compute span",
    );
    assert_children(
        &trace.compute["shard-0"],
        &trace.compute["stage-1"],
        "the shard's compute span",
    );
    for span in trace.publish.iter().chain(trace.compute.values().flatten()) {
        assert!(
            span.attributes
                .get("request_ids")
                .is_some_and(|ids| ids.contains(trace_id)),
            "a batch's span names the requests it carried: {span:?}"
        );
    }

    // A request without a traceparent: its id (here the caller's own
    // x-request-id) is the id of a trace the search API's span starts.
    let own = "0123456789abcdef0123456789abcdef";
    recommend(&up, &playlist(&mut playlists), ("x-request-id", own));
    let trace = wait_until(
        "the spans of a request that came without a traceparent",
        Duration::from_secs(20),
        || trace_of(&received, own),
    );
    for span in &trace.search {
        assert_eq!(
            span.parent, "",
            "the search API's span is the trace's root: {span:?}"
        );
    }
    assert_children(
        &trace.dispatcher,
        &trace.search,
        "the dispatcher's request span",
    );
    assert_children(
        &trace.publish,
        &trace.dispatcher,
        "the dispatcher's publish span",
    );
    assert_children(
        &trace.compute["stage-0"],
        &trace.publish,
        "stage 0's compute span",
    );
}

/// A process whose exporter settings cannot work refuses to start, with an
/// error naming the variable, before it does anything else.
#[test]
fn an_unusable_exporter_setting_stops_the_process_naming_it() {
    for (variable, value, says) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "not supported"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "thrift",
            "not an OTLP protocol",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "localhost:4318",
            "http or https",
        ),
    ] {
        let mut command = std::process::Command::new(binary("setlist-dispatcher"));
        command
            .args(["--slices", "/nonexistent", "--kafka", "127.0.0.1:1"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
            .env(variable, value);
        let output = command.output().expect("the dispatcher starts");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{variable}={value}: {stderr}");
        assert!(
            stderr.contains(variable) && stderr.contains(says) && !stderr.contains("panicked"),
            "{variable}={value}: {stderr}"
        );
    }
}
