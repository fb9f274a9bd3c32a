//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the
//! `ToSchema` types they take and answer, so that it cannot drift from the code. Each resource
//! module lists its own operations (`Doc`); this module adds what they share: the description,
//! the API-key security schemes, the reusable error responses, and the errors every
//! authenticated operation may answer.

use std::sync::LazyLock;

use serde_json::json;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::ErrorBody;
use super::{
    availability, channels, docs, health, levels, locations, movements, ops, orders, page,
    reservations, skus, stream, supply, whoami,
};

/// Path parameter descriptions shared by several operations.
pub const LOCATIONIDPATH: &str =
    "Location id, case-sensitive (`^[A-Za-z0-9_-]{1,64}$`, else 422 with field `location_id`).";
pub const SKUPATH: &str = "SKU, case-sensitive; percent-encode spaces and `/` (`GIFT%20CARD%2F500`). An invalid SKU is a 422.";
pub const RESERVATIONIDPATH: &str = "The `reservation_id` (client-given, or `res-…`/`ord-…` generated). One that is not 1-128 printable characters is a 422 with field `id`; an unknown one is a 404.";
pub const CHANNELPATH: &str =
    "A channel name (`^[A-Za-z0-9_-]{1,64}$`, else 422 with field `channel`).";
pub const ATQUERY: &str = "RFC 3339 time: answer available-to-promise at that time instead of now: each location's available now plus the open supply expected at or before `at` that preorders do not hold (never below 0), and the total of those; with `channel`, the channel's share of that ATP. Read from PostgreSQL. Not RFC 3339: 422 with field `at`. Without it, the answer is unchanged.";
pub const CHANNELQUERY: &str = "`all` (default; every location), `online` (only locations that ship: `ship_from` stores, warehouses, the e-shop), or any channel defined with `PUT /v1/channels/{channel}`: each location's `available` is then the channel's share of it (see the channels tag), and the total their sum. An empty value means `all`; an unknown channel is a 404, a name that does not match `^[A-Za-z0-9_-]{1,64}$` a 422 with field `channel`.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "omnistock HTTP API",
        description = include_str!("openapi_intro.md"),
        license(name = "Apache-2.0", url = "https://www.apache.org/licenses/LICENSE-2.0"),
    ),
    servers((
        url = "http://127.0.0.1:8080",
        description = "Default listen address (`OMNISTOCK_HTTP_ADDR`); `make run` uses it with the key `demo-admin-key`."
    )),
    tags(
        (name = "locations", description = "The network of stores, warehouses and the e-shop."),
        (name = "availability", description = "What can be promised, per SKU."),
        (name = "channels", description = "Sales channel pools. A channel's available at one of its locations is min(available - buffer_units, floor(available x max_percent / 100)), never below 0; its total is the sum over its locations. The formula applies to the current available, so a percent is recomputed after every hold; a fixed pool (\"30 of these 100\") is a buffer. `inventory.channels.<channel>` carries `{\"channel\", \"sku\", \"available\", \"changed_at\", \"event_id\"}` whenever a channel's total for a SKU changes."),
        (name = "reservations", description = "Checkout holds on stock."),
        (name = "orders", description = "Order routing with holds."),
        (name = "movements", description = "Movements over HTTP and the ledger behind every number."),
        (name = "skus", description = "Per-SKU settings."),
        (name = "supply", description = "Future supply (purchase orders, transfers in transit) that preorders hold against."),
        (name = "stream", description = "Live level changes (server-sent events)."),
        (name = "operations", description = "Liveness, readiness and metrics for orchestrators and scrapers."),
        (name = "page", description = "The staff page (store app and ops view) served by the daemon."),
        (name = "ops", description = "Sync health per location with traffic lights, for the ops view."),
        (name = "docs", description = "This document and its interactive pages."),
    ),
    security(("bearerAuth" = []), ("apiKeyHeader" = [])),
    components(
        schemas(ErrorBody),
        responses(Malformed, Unauthorized, Forbidden, NotFound, PayloadTooLarge, Invalid, RateLimited, Unavailable, Internal),
    ),
    modifiers(&Shared),
)]
struct ApiDoc;

/// The whole document: the shared parts and every resource's operations.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    for part in [
        locations::Doc::openapi(),
        availability::Doc::openapi(),
        channels::Doc::openapi(),
        reservations::Doc::openapi(),
        orders::Doc::openapi(),
        skus::Doc::openapi(),
        movements::Doc::openapi(),
        stream::Doc::openapi(),
        levels::Doc::openapi(),
        ops::Doc::openapi(),
        whoami::Doc::openapi(),
        supply::Doc::openapi(),
        health::Doc::openapi(),
        page::Doc::openapi(),
        docs::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    add_shared_errors(&mut doc);
    doc
}

/// The document as served and committed (`docs/openapi.json`): pretty JSON, built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let mut text = document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    });
    &JSON
}

/// The security schemes: the same key as a bearer token or in `X-Api-Key` (see `auth`).
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <key>` with a key from `OMNISTOCK_API_KEYS`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKeyHeader",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "The same key in `X-Api-Key` (used when `Authorization` is absent or not `Bearer `).",
            ))),
        );
    }
}

/// Every operation under `/v1` passes the key check, the rate limit and the request deadline,
/// so each may answer 401, 403, 429, 500 and 503; added here once rather than on 33 handlers.
fn add_shared_errors(doc: &mut Document) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            add_errors(op);
        }
    }
}

fn add_errors(op: &mut Operation) {
    for (status, name) in [
        ("401", "Unauthorized"),
        ("403", "Forbidden"),
        ("429", "RateLimited"),
        ("500", "Internal"),
        ("503", "Unavailable"),
    ] {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}

/// An error response: its description, the error body and an example of it.
/// The header an error answer carries beside its body.
#[derive(Clone, Copy, PartialEq)]
enum Extra {
    Nothing,
    RetryAfter,
    ConnectionClose,
}

fn error_response(description: &str, example: serde_json::Value, extra: Extra) -> Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Error")))
        .example(Some(example))
        .build();
    let mut r = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    if extra == Extra::ConnectionClose {
        r = r.header(
            "Connection",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["close"])))
                .description(Some("The body was refused unread, so this connection closes: send the next request on a new one."))
                .build(),
        );
    }
    if extra == Extra::RetryAfter {
        r = r.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
                .description(Some("Seconds to wait before retrying (at least 1); for a 429, before the next request with this key."))
                .build(),
        );
    }
    r.build()
}

macro_rules! error_responses {
    ($($name:ident: $description:expr, $extra:expr, $example:tt;)*) => {$(
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_response($description, json!($example), $extra).into())
            }
        }
    )*};
}

error_responses! {
    Malformed: "`malformed_request`: the body is not JSON, or the query string or a path segment cannot be decoded.", Extra::Nothing,
        {"error": "malformed_request", "message": "body is not valid JSON: expected value at line 1 column 1", "details": null};
    Unauthorized: "`unauthorized`: no API key, or an unknown one.", Extra::Nothing,
        {"error": "unauthorized", "message": "missing API key", "details": null};
    Forbidden: "`forbidden`: the key lacks the scope this operation needs (`details.required_scope`), or is bound to another location (`details.location_id`, its own).", Extra::Nothing,
        {"error": "forbidden", "message": "this API key lacks the `admin` scope", "details": {"required_scope": "admin"}};
    NotFound: "`not_found`: no such id.", Extra::Nothing,
        {"error": "not_found", "message": "reservation \"cart-8812\" not found", "details": null};
    PayloadTooLarge: "`payload_too_large`: the body is over 524288 bytes (512 KiB).", Extra::ConnectionClose,
        {"error": "payload_too_large", "message": "request body is larger than 524288 bytes", "details": null};
    Invalid: "`invalid_request`: valid JSON (or query) with a wrong shape (unknown field, wrong type, number out of range: `details.field` is its JSON path, e.g. `lines[0].quantity`; a missing top-level field or a body that is not an object: `details` null) or an invalid value (`details.field` names it, or for a location `details.fields` lists every bad field), or an invalid id in the path (`details.field` names the path parameter).", Extra::Nothing,
        {"error": "invalid_request", "message": "a line's quantity must be between 1 and 1000000000", "details": {"field": "lines[0].quantity"}};
    RateLimited: "`rate_limited`: this key is over its rate limit.", Extra::RetryAfter,
        {"error": "rate_limited", "message": "rate limit exceeded", "details": {"retry_after_seconds": 1}};
    Unavailable: "`unavailable`: a dependency this call needs (PostgreSQL; for the stream, the daemon is stopping) is down or did not answer in time, PostgreSQL aborted the transaction (deadlock, serialization failure), the request ran past its timeout, or every live-stream slot is taken. Retry after `Retry-After`.", Extra::RetryAfter,
        {"error": "unavailable", "message": "PostgreSQL is unavailable", "details": {"retry_after_seconds": 1}};
    Internal: "`internal`: a bug or broken invariant; logged on the server, the cause is not returned.", Extra::Nothing,
        {"error": "internal", "message": "internal error; see the server log", "details": null};
}
