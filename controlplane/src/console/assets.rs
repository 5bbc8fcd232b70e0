//! The console's stylesheet and its one script, compiled into the binary: no CDN, no build
//! step. The script only opens the live stream, appends what arrives and switches tabs; every
//! page works without it.

use axum::http::header;
use axum::response::IntoResponse;

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// Assets change only with the binary: cache them briefly, revalidating after.
const CACHE: &str = "public, max-age=300";

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        STYLESHEET,
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        SCRIPT,
    )
}
