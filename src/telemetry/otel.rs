//! OpenTelemetry traces over OTLP/HTTP (protobuf), on only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set: then the spans (one per HTTP request, and any others the code opens) are batched and
//! sent to `<endpoint>/v1/traces` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) from the SDK's own
//! thread. Unset, nothing is built: no exporter, no thread, no propagator.

use std::sync::OnceLock;

use axum::http::HeaderMap;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// Turns export on.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The `service.name` of the exported spans; default [`DEFAULT_SERVICE_NAME`].
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
pub const DEFAULT_SERVICE_NAME: &str = "omnistock";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The layer that exports spans, if `OTEL_EXPORTER_OTLP_ENDPOINT` is set; an error if it is set
/// but the exporter cannot be built (e.g. the endpoint is not a URL).
pub fn layer<S>() -> Result<Option<OpenTelemetryLayer<S, Tracer>>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if env(ENDPOINT_VAR).is_none() {
        return Ok(None);
    }
    // The builder reads the endpoint, headers and timeout from the standard OTEL_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OpenTelemetry exporter ({ENDPOINT_VAR}): {e}"))?;
    let service = env(SERVICE_NAME_VAR).unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("omnistock");
    if PROVIDER.set(provider).is_err() {
        // A second subscriber is never installed (tests init once per process): keep the first.
        return Ok(None);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Makes `span` a child of the caller's trace when the request carries a W3C `traceparent`
/// (only when exporting: otherwise there is nothing to join).
pub fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Fails only if the span is disabled, and then there is nothing to export either.
    let _ = span.set_parent(parent);
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Sends the spans still buffered and stops the exporter's thread (blocks up to a few seconds:
/// call it from a blocking context, once the daemon has stopped).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry: flushing the last spans failed");
        }
    }
}
