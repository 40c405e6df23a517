//! The listener's page (`ui/`), embedded so the binary needs no files
//! beside it and the page always matches the API it calls.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// A page asset: its content type and text.
pub struct Asset(&'static str, &'static str);

pub const INDEX: Asset = Asset(
    "text/html; charset=utf-8",
    include_str!("../../ui/index.html"),
);
pub const APP: Asset = Asset(
    "text/javascript; charset=utf-8",
    include_str!("../../ui/app.js"),
);
pub const STYLE: Asset = Asset(
    "text/css; charset=utf-8",
    include_str!("../../ui/style.css"),
);

pub fn page(asset: Asset) -> Response {
    let Asset(content_type, text) = asset;
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page may only load what it ships with and call its own API.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}
