//! `order-acceptance health`: the container's health probe. It asks the worker's own
//! `/healthz` endpoint over HTTP, so the image needs no curl, and it reads no configuration, so
//! it works whatever the environment holds.

use std::time::Duration;

/// Where the worker serves `/healthz` in the container (`server.listen = 0.0.0.0:9090`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/healthz";

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(
        "GET {url} failed: {cause}. Is the worker running, with server.listen set (ORDER_ACCEPTANCE__SERVER__LISTEN)?"
    )]
    Unreachable { url: String, cause: String },
    #[error("GET {url} answered {status}, not 200 OK: the worker reports itself unhealthy")]
    Unhealthy {
        url: String,
        status: reqwest::StatusCode,
    },
}

/// Succeeds when `url` answers 200 within `timeout`.
pub async fn probe(url: &url::Url, timeout: Duration) -> Result<(), HealthError> {
    let unreachable = |error: reqwest::Error| HealthError::Unreachable {
        url: url.to_string(),
        cause: error_chain(&error),
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let response = client.get(url.clone()).send().await.map_err(unreachable)?;
    match response.status() {
        reqwest::StatusCode::OK => Ok(()),
        status => Err(HealthError::Unhealthy {
            url: url.to_string(),
            status,
        }),
    }
}

/// The error and its causes on one line: reqwest's own message ("error sending request") does not
/// say that the connection was refused; its sources do.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
