//! The HTTP surface: the listener's page, song search, playlist upload,
//! recommendations and status, behind the request limits every Setlist API
//! has, plus health, metrics and the OpenAPI description (generated from
//! these handlers and types, at `/openapi.json`).

use crate::events::ListenerEvent;
use crate::index::Matched;
use crate::metrics;
use crate::recommend::{self, Called};
use crate::service::Search;
use crate::ui;
use crate::verify::{self, MatchedBy, Verdict};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use setlist_core::api::RecommendationResponse;
use setlist_core::catalogue::Song;
use setlist_core::playlist_file::{self, PlaylistFileError};
use setlist_core::trace::TraceParent;
use setlist_service::http::{error, guarded, read_within, traced};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The fewest songs a playlist needs for recommendations: the product's
/// promise to listeners.
pub const MIN_PLAYLIST_SONGS: usize = 5;
pub const MIN_QUERY_CHARS: usize = 3;
pub const MAX_QUERY_CHARS: usize = 200;
pub const MAX_SEARCH_LIMIT: usize = 50;
pub const MAX_RECOMMENDATIONS: usize = 100;
/// A recommendation request's body: 10,000 ids of 512 bytes fit.
const MAX_RECOMMEND_BODY: usize = 6 * 1024 * 1024;

/// An error, as every route answers one.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    /// A sentence that names the field or line and the limit, and says what to do.
    pub error: String,
}

/// A song of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SongView {
    pub id: String,
    pub title: String,
    pub artist: String,
    pub album: Option<String>,
    /// Training playlists that hold the song.
    pub popularity: u32,
}

impl From<&Song> for SongView {
    fn from(song: &Song) -> SongView {
        SongView {
            id: song.id.clone(),
            title: song.title.clone(),
            artist: song.artist.clone(),
            album: song.album.clone(),
            popularity: song.playlists,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct SearchParams {
    /// What the listener typed: at least 3 characters.
    q: String,
    /// How many songs, 1 to 50 (default 10).
    limit: Option<usize>,
}

/// A song found, and how it matched: `words` (every word of the query is
/// one of its words), `prefix` (the last word starts one of them) or `typo`
/// (only with small typos forgiven).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FoundSong {
    #[serde(flatten)]
    pub song: SongView,
    pub matched: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub query: String,
    /// Best first: whole words, then prefixes, then typos; the most
    /// popular first within each.
    pub songs: Vec<FoundSong>,
    /// True when some songs matched only with typos forgiven.
    pub typo_tolerant: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The playlist: song ids, at least 5.
    pub songs: Vec<String>,
    /// How many songs to recommend, 1 to 100 (default 10).
    pub k: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecommendedSong {
    pub song: SongView,
    pub score: f32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StageTimingView {
    /// `stage-K` or `shard-S`.
    pub part: String,
    pub queue_ms: f64,
    pub compute_ms: f64,
    pub transport_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimingsView {
    /// The dispatcher's time for the request.
    pub total_ms: f64,
    pub stages: Vec<StageTimingView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecommendResponse {
    pub songs: Vec<RecommendedSong>,
    pub model_version: String,
    /// True when these are the most popular songs, not the model's answer.
    pub fallback: bool,
    /// Why: `circuit_open`, `dispatcher_unreachable`, `deadline`, … (see the README).
    pub fallback_reason: Option<String>,
    /// Ids of the playlist the catalogue does not know (ignored).
    pub unknown_songs: Vec<String>,
    pub cached: bool,
    pub timings: TimingsView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifiedEntry {
    pub line: usize,
    /// The entry as the listener wrote it.
    pub text: String,
    pub recognised: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<MatchedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub song: Option<SongView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifiedPlaylist {
    pub name: Option<String>,
    pub entries: Vec<VerifiedEntry>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SkippedView {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// `spotify_account_export`, `spotify_web_api`, `mpd_slice`,
    /// `exportify_csv`, `m3u` or `plain_text`, detected from the content.
    pub format: String,
    pub format_name: String,
    pub entries: usize,
    pub recognised: usize,
    pub playlists: Vec<VerifiedPlaylist>,
    /// Items that hold no song (a podcast episode, a removed track).
    pub skipped: Vec<SkippedView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartView {
    pub part: String,
    pub last_answer_ms_ago: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DispatcherView {
    /// Whether its `/v1/status` answered just now.
    pub reachable: bool,
    pub ready: bool,
    /// This API's breaker in front of the dispatcher.
    pub breaker: String,
    pub parts: Vec<PartView>,
}

/// What listeners may send, so a page can say so before it sends it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LimitsView {
    pub min_query_chars: usize,
    pub max_query_chars: usize,
    pub min_playlist_songs: usize,
    pub upload_bytes: usize,
    pub upload_entries: usize,
}

impl Default for LimitsView {
    fn default() -> Self {
        let upload = playlist_file::Limits::default();
        LimitsView {
            min_query_chars: MIN_QUERY_CHARS,
            max_query_chars: MAX_QUERY_CHARS,
            min_playlist_songs: MIN_PLAYLIST_SONGS,
            upload_bytes: upload.max_bytes,
            upload_entries: upload.max_entries,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    pub model_version: String,
    pub songs: usize,
    pub stages: usize,
    pub output_shards: usize,
    pub dispatcher: DispatcherView,
    pub limits: LimitsView,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Setlist search API",
        description = "Song search, playlist verification and recommendations for listeners."
    ),
    paths(search_songs, song, verify_playlist, recommend, status),
    components(schemas(
        ErrorResponse,
        SongView,
        FoundSong,
        SearchResponse,
        RecommendRequest,
        RecommendResponse,
        RecommendedSong,
        TimingsView,
        StageTimingView,
        VerifyResponse,
        VerifiedPlaylist,
        VerifiedEntry,
        SkippedView,
        MatchedBy,
        StatusResponse,
        LimitsView,
        DispatcherView,
        PartView
    ))
)]
pub struct ApiDoc;

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// Songs for what the listener typed: title, artist and album words, the
/// last one as a prefix, small typos forgiven.
#[utoipa::path(
    get,
    path = "/v1/songs/search",
    params(SearchParams),
    responses(
        (status = 200, description = "Songs, best first", body = SearchResponse),
        (status = 400, description = "The query is too short or too long, or the limit out of range", body = ErrorResponse)
    )
)]
async fn search_songs(
    State(search): State<Arc<Search>>,
    Extension(trace): Extension<TraceParent>,
    Query(params): Query<SearchParams>,
) -> Response {
    songs_for(&search, &params, &trace.request_id().to_string())
}

fn songs_for(search: &Search, params: &SearchParams, id: &str) -> Response {
    let query = params.q.trim();
    let chars = query.chars().count();
    if chars < MIN_QUERY_CHARS {
        return bad_request(format!(
            "the query \"q\" has {chars} character{}; search needs at least {MIN_QUERY_CHARS}",
            if chars == 1 { "" } else { "s" }
        ));
    }
    if chars > MAX_QUERY_CHARS {
        return bad_request(format!(
            "the query \"q\" has {chars} characters; it may have at most {MAX_QUERY_CHARS}"
        ));
    }
    let limit = params.limit.unwrap_or(10);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return bad_request(format!(
            "\"limit\" is {limit}; it must be between 1 and {MAX_SEARCH_LIMIT}"
        ));
    }
    let hits = match search.index.search(&params.q, limit) {
        Ok(hits) => hits,
        Err(e) => {
            tracing::error!(error = %e, "search failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the search failed: {e}"),
            );
        }
    };
    let songs: Vec<FoundSong> = hits
        .iter()
        .filter_map(|hit| {
            Some(FoundSong {
                song: SongView::from(search.catalogue.song(hit.song)?),
                matched: match hit.matched {
                    Matched::Words => "words",
                    Matched::Prefix => "prefix",
                    Matched::Typo => "typo",
                }
                .to_string(),
            })
        })
        .collect();
    search.events.record(
        id,
        ListenerEvent::Search {
            query: query.to_string(),
            shown: songs.iter().map(|s| s.song.id.clone()).collect(),
        },
    );
    Json(SearchResponse {
        query: query.to_string(),
        typo_tolerant: hits.iter().any(|h| h.matched == Matched::Typo),
        songs,
    })
    .into_response()
}

/// One song by its id.
#[utoipa::path(
    get,
    path = "/v1/songs/{id}",
    params(("id" = String, Path, description = "The song's id, e.g. spotify:track:…")),
    responses(
        (status = 200, body = SongView),
        (status = 404, body = ErrorResponse)
    )
)]
async fn song(State(search): State<Arc<Search>>, Path(id): Path<String>) -> Response {
    match search
        .catalogue
        .index_of(&id)
        .and_then(|i| search.catalogue.song(i))
    {
        Some(song) => Json(SongView::from(song)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no song with the id \"{id}\" in this catalogue"),
        ),
    }
}

/// Which entries of an uploaded playlist file the catalogue knows. The body
/// is the file itself; its format is detected from the content.
#[utoipa::path(
    post,
    path = "/v1/playlists/verify",
    request_body(content = Vec<u8>, description = "The playlist file: Spotify account export or Web API JSON, MPD slice JSON, Exportify CSV, M3U/M3U8, or Artist - Title lines", content_type = "application/octet-stream"),
    responses(
        (status = 200, body = VerifyResponse),
        (status = 400, description = "Not a playlist Setlist reads, or broken at a named line", body = ErrorResponse),
        (status = 413, description = "Over the size or entry limit", body = ErrorResponse)
    )
)]
async fn verify_playlist(
    State(search): State<Arc<Search>>,
    Extension(trace): Extension<TraceParent>,
    body: Body,
) -> Response {
    let id = trace.request_id().to_string();
    let limits = playlist_file::Limits::default();
    let Some(bytes) = read_within(body, limits.max_bytes).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the file is over the limit of {} MiB; split the playlist",
                limits.max_bytes >> 20
            ),
        );
    };
    let parsed = match playlist_file::parse(&bytes, &limits) {
        Ok(parsed) => parsed,
        Err(e) => {
            let status = match e {
                PlaylistFileError::TooLarge { .. }
                | PlaylistFileError::TooManyEntries { .. }
                | PlaylistFileError::TooManyPlaylists { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, e.to_string());
        }
    };
    // Matching a large file is CPU work: off the async workers.
    let worker = search.clone();
    let verdicts = match tokio::task::spawn_blocking(move || {
        let verdicts = verify::verify(&parsed, &worker.catalogue, &worker.lookup, &worker.index);
        (parsed, verdicts)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("checking the playlist failed: {e}"),
            );
        }
    };
    let (parsed, verdicts) = verdicts;
    let mut recognised_ids = Vec::new();
    let mut entries = 0;
    let playlists = parsed
        .playlists
        .iter()
        .zip(verdicts)
        .map(|(playlist, verdicts)| VerifiedPlaylist {
            name: playlist.name.clone(),
            entries: playlist
                .entries
                .iter()
                .zip(verdicts)
                .map(|(entry, verdict)| {
                    entries += 1;
                    match verdict {
                        Verdict::Recognised { song, by } => {
                            let song = search.catalogue.song(song).map(SongView::from);
                            if let Some(song) = &song {
                                recognised_ids.push(song.id.clone());
                            }
                            search
                                .metrics
                                .playlist_entries
                                .with_label_values(&[by.as_str()])
                                .inc();
                            VerifiedEntry {
                                line: entry.line,
                                text: entry.text.clone(),
                                recognised: true,
                                matched_by: Some(by),
                                song,
                                reason: None,
                            }
                        }
                        Verdict::NotRecognised { reason } => {
                            search
                                .metrics
                                .playlist_entries
                                .with_label_values(&["not_recognised"])
                                .inc();
                            VerifiedEntry {
                                line: entry.line,
                                text: entry.text.clone(),
                                recognised: false,
                                matched_by: None,
                                song: None,
                                reason: Some(reason),
                            }
                        }
                    }
                })
                .collect(),
        })
        .collect();
    let response = VerifyResponse {
        format: parsed.format.as_str().to_string(),
        format_name: parsed.format.to_string(),
        entries,
        recognised: recognised_ids.len(),
        playlists,
        skipped: parsed
            .skipped
            .iter()
            .map(|s| SkippedView {
                line: s.line,
                reason: s.reason.clone(),
            })
            .collect(),
    };
    search.events.record(
        &id,
        ListenerEvent::PlaylistUpload {
            format: response.format.clone(),
            entries,
            recognised: recognised_ids,
        },
    );
    Json(response).into_response()
}

/// Recommendations for a playlist of at least 5 songs: the model's, through
/// the dispatcher, or (flagged, with the reason) the most popular songs when
/// the dispatcher cannot answer in time.
#[utoipa::path(
    post,
    path = "/v1/recommendations",
    request_body = RecommendRequest,
    responses(
        (status = 200, body = RecommendResponse),
        (status = 400, description = "Fewer than 5 songs, or a field out of its limits", body = ErrorResponse),
        (status = 413, body = ErrorResponse)
    )
)]
async fn recommend(
    State(search): State<Arc<Search>>,
    Extension(trace): Extension<TraceParent>,
    body: Body,
) -> Response {
    let id = trace.request_id().to_string();
    let answer = async {
        let Some(bytes) = read_within(body, MAX_RECOMMEND_BODY).await else {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over the limit of {MAX_RECOMMEND_BODY} bytes"),
            ));
        };
        let request: RecommendRequest = serde_json::from_slice(&bytes)
            .map_err(|e| bad_request(format!("the body is not a recommendation request: {e}")))?;
        let k = request.k.unwrap_or(10);
        if !(1..=MAX_RECOMMENDATIONS).contains(&k) {
            return Err(bad_request(format!(
                "field \"k\" is {k}; it must be between 1 and {MAX_RECOMMENDATIONS}"
            )));
        }
        let limits = setlist_core::query::Limits::default();
        limits
            .check_query(&request.songs, &[], k, None)
            .map_err(|e| bad_request(e.to_string()))?;
        let mut distinct = request.songs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < MIN_PLAYLIST_SONGS {
            return Err(bad_request(format!(
                "field \"songs\" has {} different songs; recommendations need at least {MIN_PLAYLIST_SONGS}",
                distinct.len()
            )));
        }
        let answer = match search.dispatcher.recommend(&request.songs, k, trace.child()).await {
            Called::Answered(answer) => answer,
            Called::Failed { reason, detail } => {
                tracing::warn!(reason, detail, "answering from the popularity fallback");
                recommend::fallback(
                    &search.catalogue,
                    &search.model_version,
                    &request.songs,
                    k,
                    reason,
                )
            }
        };
        let response = search.view(answer);
        tracing::debug!(
            songs = response.songs.len(),
            fallback = response.fallback,
            model_version = %response.model_version,
            "recommended"
        );
        search.events.record(
            &id,
            ListenerEvent::RecommendationsShown {
                playlist: request.songs,
                shown: response.songs.iter().map(|s| s.song.id.clone()).collect(),
                model_version: response.model_version.clone(),
                fallback: response.fallback,
            },
        );
        Ok(Json(response).into_response())
    }
    .await;
    answer.unwrap_or_else(|e| e)
}

/// The served model and the pipeline's state, as the page's status line
/// shows it.
#[utoipa::path(
    get,
    path = "/v1/status",
    responses((status = 200, body = StatusResponse))
)]
async fn status(State(search): State<Arc<Search>>) -> Json<StatusResponse> {
    Json(search.status().await)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

impl Search {
    /// The dispatcher's answer as the listener sees it: songs with their
    /// metadata, counted by source.
    pub fn view(&self, answer: RecommendationResponse) -> RecommendResponse {
        let source = if answer.fallback {
            "fallback"
        } else if answer.cached {
            "cached"
        } else {
            "model"
        };
        self.metrics.answers.with_label_values(&[source]).inc();
        if let Some(reason) = &answer.fallback_reason {
            self.metrics.fallbacks.with_label_values(&[reason]).inc();
        }
        RecommendResponse {
            songs: answer
                .recommendations
                .iter()
                .filter_map(|r| {
                    let song = self.catalogue.song(self.catalogue.index_of(&r.track)?)?;
                    Some(RecommendedSong {
                        song: SongView::from(song),
                        score: r.score,
                    })
                })
                .collect(),
            model_version: answer.model_version,
            fallback: answer.fallback,
            fallback_reason: answer.fallback_reason,
            unknown_songs: answer.unknown_tracks,
            cached: answer.cached,
            timings: TimingsView {
                total_ms: answer.timings.total_ms,
                stages: answer
                    .timings
                    .stages
                    .into_iter()
                    .map(|s| StageTimingView {
                        part: s.part,
                        queue_ms: s.queue_ms,
                        compute_ms: s.compute_ms,
                        transport_ms: s.transport_ms,
                    })
                    .collect(),
            },
        }
    }
}

pub fn router(search: Arc<Search>) -> Router {
    // Longer than any request needs (a recommendation's dispatcher timeout,
    // a 2 MiB upload): it stops only what hangs.
    let timeout = search.dispatcher_timeout + Duration::from_secs(10);
    let api = Router::new()
        .route("/v1/songs/search", get(search_songs))
        .route("/v1/songs/{id}", get(song))
        .route("/v1/playlists/verify", post(verify_playlist))
        .route("/v1/recommendations", post(recommend))
        .route("/v1/status", get(status))
        .route_layer(axum::middleware::from_fn(traced))
        // The handlers enforce their body limits themselves, with a JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(search.clone());
    let page = Router::new()
        .route("/", get(|| async { ui::page(ui::INDEX) }))
        .route("/app.js", get(|| async { ui::page(ui::APP) }))
        .route("/style.css", get(|| async { ui::page(ui::STYLE) }))
        .route("/openapi.json", get(openapi));
    let ready = search.clone();
    guarded(
        api.merge(page),
        "the search API",
        search.max_concurrent_requests,
        timeout,
        search.metrics.shed_requests.clone(),
    )
    .route_layer(axum::middleware::from_fn_with_state(
        search.metrics.clone(),
        metrics::record,
    ))
    // Health and metrics stay outside the limits: an overloaded server
    // must still say so.
    .merge(setlist_service::health::routes(
        Arc::new(move || ready.readiness()),
        search.metrics.registry.clone(),
    ))
    .layer(axum::middleware::map_response(
        |mut response: Response| async move {
            response
                .headers_mut()
                .entry(header::CACHE_CONTROL)
                .or_insert(HeaderValue::from_static("no-store"));
            response
        },
    ))
}
