//! Spans exported over OpenTelemetry (OTLP/HTTP) when an endpoint is
//! configured, on top of the same logs as [`setlist_core::telemetry`].
//!
//! Nothing is exported, and nothing more runs, unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set: then the `tracing` spans of the process (at `INFO` and above,
//! whatever `RUST_LOG` says of the logs) go to that endpoint in batches, as
//! protobuf (`http/protobuf`, the default) or JSON (`http/json`, from
//! `OTEL_EXPORTER_OTLP_PROTOCOL`). docs/tracing.md says what is exported.
//!
//! A request's trace id is its request id ([`setlist_core::trace`]), so a
//! span that starts a request's work in a process is put in that trace: as
//! the child of the caller's span named in a `traceparent` ([`set_parent`]),
//! or as the trace's root with the request's id ([`start_trace`]).

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use setlist_core::telemetry::LogFormat;
use setlist_core::trace::TraceParent;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The base URL of an OTLP/HTTP receiver; traces go to its `v1/traces`.
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The full URL traces go to (used as it is); wins over [`ENDPOINT`].
pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `http/protobuf` (the default) or `http/json`.
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// [`PROTOCOL`] for traces alone; wins over it.
pub const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// `true` turns exporting off whatever the endpoint says.
pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// How long a stopping process waits for its last spans to be sent.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A setting that stops the exporter from being built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtelError {
    #[error("{variable}={value:?} is not an OTLP/HTTP endpoint: {reason}")]
    Endpoint {
        variable: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "{variable}={value:?}: OTLP over gRPC is not supported; export over HTTP instead: unset it or set it to http/protobuf (or http/json), and point the endpoint at the collector's OTLP/HTTP port (usually 4318)"
    )]
    Grpc {
        variable: &'static str,
        value: String,
    },
    #[error(
        "{variable}={value:?} is not an OTLP protocol; use http/protobuf (the default) or http/json"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("cannot start the OTLP span exporter: {0}")]
    Exporter(String),
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The URL the spans are posted to.
    pub url: String,
    pub protocol: Protocol,
}

/// What the `OTEL_*` variables (read through `var`) ask for: `None` when no
/// endpoint is set (or `OTEL_SDK_DISABLED=true`). An empty variable counts
/// as unset, as the OpenTelemetry specification says.
pub fn export_from(var: impl Fn(&str) -> Option<String>) -> Result<Option<Export>, OtelError> {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if var(SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let url = match (var(TRACES_ENDPOINT), var(ENDPOINT)) {
        (Some(url), _) => checked_url(TRACES_ENDPOINT, &url)?,
        (None, Some(base)) => {
            let mut url = checked_url(ENDPOINT, &base)?;
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            let path = format!("{}v1/traces", url.path());
            url.set_path(&path);
            url
        }
        (None, None) => return Ok(None),
    };
    let protocol = match [TRACES_PROTOCOL, PROTOCOL]
        .into_iter()
        .find_map(|name| var(name).map(|value| (name, value)))
    {
        None => Protocol::HttpBinary,
        Some((variable, value)) => match value.trim() {
            "http/protobuf" => Protocol::HttpBinary,
            "http/json" => Protocol::HttpJson,
            "grpc" => return Err(OtelError::Grpc { variable, value }),
            _ => return Err(OtelError::Protocol { variable, value }),
        },
    };
    Ok(Some(Export {
        url: url.to_string(),
        protocol,
    }))
}

/// `value` as an `http://` or `https://` URL with a host.
fn checked_url(variable: &'static str, value: &str) -> Result<url::Url, OtelError> {
    let refuse = |reason: String| OtelError::Endpoint {
        variable,
        value: value.to_string(),
        reason,
    };
    let url = url::Url::parse(value.trim()).map_err(|e| {
        refuse(format!(
            "{e}; give a URL such as http://localhost:4318 (a collector's OTLP/HTTP port)"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(format!(
            "the scheme must be http or https, not {:?}; give a URL such as http://localhost:4318",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("it names no host".into()));
    }
    Ok(url)
}

/// Whether this process exports spans.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans: when not, the helpers here do
/// nothing and spans made only to be exported need not be made.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Keeps the exporter for as long as it lives; dropped, it sends the spans
/// still waiting (within a bound) and stops the exporter.
#[must_use = "the exporter stops when the guard is dropped"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        ENABLED.store(false, Ordering::Relaxed);
        // Off any async runtime: the blocking HTTP client must not be used,
        // or dropped, on one.
        let stopped = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
            .map(|handle| handle.join());
        match stopped {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "the last spans may not have been exported")
            }
            _ => tracing::warn!("the span exporter could not be stopped; the last spans are lost"),
        }
    }
}

/// Logs to stderr as [`setlist_core::telemetry::init_logging`] does and,
/// when the `OTEL_*` variables name an endpoint, exports this process's
/// spans there as `service_name`. Keep the guard until the process ends.
/// A second initialisation (tests, embedded use) keeps the first one.
pub fn init(format: LogFormat, service_name: &str) -> Result<TelemetryGuard, OtelError> {
    let export =
        export_from(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))?;
    let Some(export) = export else {
        setlist_core::telemetry::init_logging(format);
        return Ok(TelemetryGuard::default());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(export.url.clone())
        .with_protocol(export.protocol)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(ChosenTraceIds::default())
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build();
    let exported = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("setlist"))
        .with_threads(false)
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    // The same logs as `init_logging`, their filter theirs alone: RUST_LOG
    // says what is logged, not what is exported.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(exported)
        .try_init();
    let mut guard = TelemetryGuard {
        provider: Some(provider),
    };
    if installed.is_err() {
        drop(guard.provider.take().map(|p| p.shutdown()));
        return Ok(guard);
    }
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(url = %export.url, protocol = ?export.protocol, service = service_name, "exporting spans over OTLP");
    Ok(guard)
}

thread_local! {
    /// The trace id the next root span started on this thread gets.
    static NEXT_TRACE_ID: Cell<Option<u128>> = const { Cell::new(None) };
}

/// Random ids, except for a root span started by [`start_trace`], whose
/// trace id is the request's.
#[derive(Debug, Default)]
struct ChosenTraceIds(RandomIdGenerator);

impl IdGenerator for ChosenTraceIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .take()
            .map_or_else(|| self.0.new_trace_id(), TraceId::from)
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

fn span_context(trace: TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace.trace_id),
        SpanId::from(trace.parent_id),
        if trace.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        },
        true,
        TraceState::NONE,
    )
}

/// Makes `span` (not yet entered) the child of the remote span `parent`
/// names, in its trace.
pub fn set_parent(span: &Span, parent: TraceParent) {
    if enabled() {
        let remote = opentelemetry::Context::new().with_remote_span_context(span_context(parent));
        let _ = span.set_parent(remote);
    }
}

/// Makes `span` (not yet entered) the root of the trace `trace_id`: the
/// first span of a request that came without a `traceparent`.
pub fn start_trace(span: &Span, trace_id: u128) {
    if enabled() && trace_id != 0 {
        let _ = span.set_parent(opentelemetry::Context::new());
        NEXT_TRACE_ID.set(Some(trace_id));
        // Starts the span here, on this thread, which takes the id.
        let _ = span.context();
        NEXT_TRACE_ID.set(None);
    }
}

/// Links `span` to the span `to` names (in another trace, say).
pub fn link(span: &Span, to: TraceParent) {
    if enabled() {
        span.add_link(span_context(to));
    }
}

/// The `traceparent` naming `span` itself, when it is exported.
pub fn context_of(span: &Span) -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span = context.span();
    let context = span.span_context();
    context.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
        parent_id: u64::from_be_bytes(context.span_id().to_bytes()),
        sampled: context.is_sampled(),
    })
}

/// The `traceparent` to send on a call made for `trace`: the current span
/// as the parent when it is exported (so the callee's span is its child),
/// else `trace` sent on by a new span id, as without exporting.
pub fn outgoing(trace: TraceParent) -> TraceParent {
    context_of(&Span::current())
        .filter(|current| current.trace_id == trace.trace_id)
        .unwrap_or_else(|| trace.child())
}

/// This process's request spans in flight, by trace id, so that work done
/// for a request elsewhere in the process (a batch published by another
/// task) can name the request's span as its parent.
static REQUESTS: LazyLock<Mutex<HashMap<u128, TraceParent>>> = LazyLock::new(Default::default);

/// The span of a request of trace `trace_id` this process is serving now,
/// if spans are exported.
pub fn request_span(trace_id: u128) -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    REQUESTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&trace_id)
        .copied()
}

/// Puts `span` (not yet entered) in trace `trace_id`: as the child of the
/// request span of that trace this process is serving, else as the
/// trace's root.
pub fn join_request(span: &Span, trace_id: u128) {
    match request_span(trace_id) {
        Some(request) => set_parent(span, request),
        None => start_trace(span, trace_id),
    }
}

/// Keeps a request span findable by [`request_span`] while it lives.
#[derive(Debug)]
pub struct Serving(Option<TraceParent>);

/// Makes `span`, a request's, findable by [`request_span`] until the
/// returned value is dropped (a second request of the trace in flight at
/// once replaces it).
pub fn serving(span: &Span) -> Serving {
    let context = context_of(span);
    if let Some(context) = context {
        REQUESTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(context.trace_id, context);
    }
    Serving(context)
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(context) = self.0 {
            let mut requests = REQUESTS.lock().unwrap_or_else(PoisonError::into_inner);
            if requests.get(&context.trace_id) == Some(&context) {
                requests.remove(&context.trace_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(vars: &[(&str, &str)]) -> Result<Option<Export>, OtelError> {
        export_from(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn no_endpoint_no_export() {
        assert_eq!(export(&[]), Ok(None));
        assert_eq!(export(&[(ENDPOINT, " "), (PROTOCOL, "grpc")]), Ok(None));
        assert_eq!(
            export(&[(ENDPOINT, "http://collector:4318"), (SDK_DISABLED, "true")]),
            Ok(None)
        );
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_traces_one_is_used_as_it_is() {
        for (base, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otlp.example/api",
                "https://otlp.example/api/v1/traces",
            ),
        ] {
            assert_eq!(
                export(&[(ENDPOINT, base)]),
                Ok(Some(Export {
                    url: url.into(),
                    protocol: Protocol::HttpBinary
                })),
                "{base}"
            );
        }
        let traces = "http://tempo:4318/otlp/traces";
        assert_eq!(
            export(&[
                (ENDPOINT, "http://elsewhere:4318"),
                (TRACES_ENDPOINT, traces)
            ])
            .unwrap()
            .unwrap()
            .url,
            traces
        );
    }

    #[test]
    fn the_protocol_is_protobuf_or_json_over_http() {
        let with = |vars: &[(&str, &str)]| {
            let mut all = vec![(ENDPOINT, "http://collector:4318")];
            all.extend_from_slice(vars);
            export(&all).map(|e| e.unwrap().protocol)
        };
        assert_eq!(with(&[]), Ok(Protocol::HttpBinary));
        assert_eq!(
            with(&[(PROTOCOL, "http/protobuf")]),
            Ok(Protocol::HttpBinary)
        );
        assert_eq!(with(&[(PROTOCOL, "http/json")]), Ok(Protocol::HttpJson));
        assert_eq!(
            with(&[(PROTOCOL, "grpc"), (TRACES_PROTOCOL, "http/json")]),
            Ok(Protocol::HttpJson)
        );
        let grpc = with(&[(PROTOCOL, "grpc")]).unwrap_err();
        assert_eq!(
            grpc,
            OtelError::Grpc {
                variable: PROTOCOL,
                value: "grpc".into()
            }
        );
        let message = grpc.to_string();
        assert!(
            message.contains(PROTOCOL)
                && message.contains("not supported")
                && message.contains("http/protobuf"),
            "{message}"
        );
        let other = with(&[(TRACES_PROTOCOL, "thrift")]).unwrap_err();
        assert!(
            matches!(
                other,
                OtelError::Protocol {
                    variable: TRACES_PROTOCOL,
                    ..
                }
            ),
            "{other}"
        );
    }

    #[test]
    fn a_bad_endpoint_is_refused_naming_its_variable() {
        for (variable, value) in [
            (ENDPOINT, "collector:4318"),
            (ENDPOINT, "localhost"),
            (ENDPOINT, "http://"),
            (TRACES_ENDPOINT, "ftp://collector/v1/traces"),
            (TRACES_ENDPOINT, "not a url"),
            (ENDPOINT, "unix:/run/otel.sock"),
        ] {
            let error = export(&[(variable, value)]).unwrap_err();
            assert!(
                matches!(&error, OtelError::Endpoint { variable: v, .. } if *v == variable),
                "{value}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.starts_with(variable) && message.contains(value),
                "{message}"
            );
        }
    }

    #[test]
    fn without_exporting_the_helpers_change_nothing() {
        let trace = TraceParent::new_root();
        let sent = outgoing(trace);
        assert_eq!(sent.trace_id, trace.trace_id);
        assert_eq!(context_of(&Span::current()), None);
        assert_eq!(request_span(trace.trace_id), None);
    }
}
