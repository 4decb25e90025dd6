//! The HTTP API (docs/api.md). Bodies are parsed here, not by an extractor, so that every
//! refusal is a JSON error that names what is wrong.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::request::CreateRequest;
use crate::store::Record;
use crate::supervisor::{Daemon, Refusal};

type Shared = Arc<Daemon>;

/// The routes.
pub fn router(daemon: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/sandboxes", post(create).get(list))
        .route("/v1/sandboxes/{key}", get(inspect).delete(forget))
        .route("/v1/sandboxes/{key}/stop", post(stop))
        .route("/v1/sandboxes/{key}/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { refuse(Refusal::NotFound("no such endpoint".into())) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"error": "this endpoint does not take that method (see docs/api.md)"})),
            )
        })
        .with_state(daemon)
}

fn refuse(refusal: Refusal) -> Response {
    let (status, message) = match refusal {
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, m),
        Refusal::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Refusal::Conflict(m) => (StatusCode::CONFLICT, m),
        Refusal::Failed(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    (status, Json(json!({ "error": message }))).into_response()
}

fn answer(result: Result<Record, Refusal>, status: StatusCode) -> Response {
    match result {
        Ok(record) => (status, Json(record)).into_response(),
        Err(refusal) => refuse(refusal),
    }
}

/// `a=1&b=x%20y` as pairs, percent-decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let escaped = match bytes.get(i + 1..i + 3) {
                Some(&[high, low]) if bytes[i] == b'%' => hex(high).zip(hex(low)),
                _ => None,
            };
            match (bytes[i], escaped) {
                (_, Some((high, low))) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                (b'+', None) => {
                    out.push(b' ');
                    i += 1;
                }
                (other, None) => {
                    out.push(other);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

async fn health(State(daemon): State<Shared>) -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "sandboxes": daemon.list().len(),
    }))
    .into_response()
}

async fn create(State(daemon): State<Shared>, body: Bytes) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => return refuse(Refusal::Invalid(format!("request body: {err}"))),
    };
    // serde's type errors quote the value; env values are secrets, so judge env here.
    if let Some(env) = value.get("env") {
        let strings = env
            .as_object()
            .is_some_and(|map| map.values().all(serde_json::Value::is_string));
        if !strings {
            return refuse(Refusal::Invalid(
                "env: expected an object whose values are strings (values are not shown)".into(),
            ));
        }
    }
    let request: CreateRequest = match serde_json::from_value(value) {
        Ok(request) => request,
        Err(err) => return refuse(Refusal::Invalid(format!("request body: {err}"))),
    };
    match daemon.create(request).await {
        Ok(record) => (
            StatusCode::CREATED,
            Json(json!({"id": record.id, "name": record.name, "state": record.state})),
        )
            .into_response(),
        Err(refusal) => refuse(refusal),
    }
}

async fn list(State(daemon): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let mut wanted = Vec::new();
    for (key, value) in query_pairs(query.as_deref()) {
        match (key.as_str(), value.split_once('=')) {
            ("label", Some((k, v))) => wanted.push((k.to_string(), v.to_string())),
            _ => {
                return refuse(Refusal::Invalid(format!(
                    "query {key}={value}: expected label=KEY=VALUE"
                )))
            }
        }
    }
    let sandboxes: Vec<Record> = daemon
        .list()
        .into_iter()
        .filter(|r| wanted.iter().all(|(k, v)| r.labels.get(k) == Some(v)))
        .collect();
    Json(json!({ "sandboxes": sandboxes })).into_response()
}

async fn inspect(State(daemon): State<Shared>, Path(key): Path<String>) -> Response {
    answer(daemon.find(&key), StatusCode::OK)
}

async fn stop(State(daemon): State<Shared>, Path(key): Path<String>, body: Bytes) -> Response {
    let grace = if body.iter().all(u8::is_ascii_whitespace) {
        10
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(map)) => {
                if let Some(unknown) = map.keys().find(|k| *k != "grace_seconds") {
                    return refuse(Refusal::Invalid(format!(
                        "request body: unknown field `{unknown}`, expected `grace_seconds`"
                    )));
                }
                match map.get("grace_seconds") {
                    None => 10,
                    Some(value) => match value.as_u64().filter(|g| *g <= 600) {
                        Some(grace) => grace,
                        None => {
                            return refuse(Refusal::Invalid(format!(
                                "grace_seconds: {value} is not a whole number from 0 to 600"
                            )))
                        }
                    },
                }
            }
            _ => {
                return refuse(Refusal::Invalid(
                    "request body: expected a JSON object".into(),
                ))
            }
        }
    };
    answer(
        daemon.stop(&key, Duration::from_secs(grace)).await,
        StatusCode::OK,
    )
}

async fn forget(State(daemon): State<Shared>, Path(key): Path<String>) -> Response {
    match daemon.delete(&key) {
        Ok(()) => Json(json!({ "deleted": key })).into_response(),
        Err(refusal) => refuse(refusal),
    }
}

async fn logs(
    State(daemon): State<Shared>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let record = match daemon.find(&key) {
        Ok(record) => record,
        Err(refusal) => return refuse(refusal),
    };
    let mut tail = None;
    for (name, value) in query_pairs(query.as_deref()) {
        match (name.as_str(), value.parse::<usize>()) {
            ("tail", Ok(n)) => tail = Some(n),
            _ => {
                return refuse(Refusal::Invalid(format!(
                    "query {name}={value}: expected tail=N"
                )))
            }
        }
    }
    let path = daemon.store().log(&record.id);
    let text = match tokio::task::spawn_blocking(move || read_tail(&path, tail)).await {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => return refuse(Refusal::Failed(format!("cannot read the log: {err}"))),
        Err(err) => return refuse(Refusal::Failed(format!("cannot read the log: {err}"))),
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// At most this much of a log is read for one answer.
const LOG_ANSWER_MAX: u64 = 8 << 20;

/// The end of a log: its last `lines` lines, or all of it, within [`LOG_ANSWER_MAX`]
/// bytes read from the end (never the whole file into memory).
fn read_tail(path: &std::path::Path, lines: Option<usize>) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(err) => return Err(err),
    };
    let start = file.metadata()?.len().saturating_sub(LOG_ANSWER_MAX);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(LOG_ANSWER_MAX).read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        // The first line was cut by the window.
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    Ok(match lines {
        Some(n) => {
            let all: Vec<&str> = text.lines().collect();
            let mut kept = all[all.len().saturating_sub(n)..].join("\n");
            if !kept.is_empty() {
                kept.push('\n');
            }
            kept
        }
        None => text,
    })
}

async fn events(State(daemon): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let mut replay = false;
    for (name, value) in query_pairs(query.as_deref()) {
        match (name.as_str(), value.as_str()) {
            ("since", "0") => replay = true,
            _ => {
                return refuse(Refusal::Invalid(format!(
                    "query {name}={value}: expected since=0"
                )))
            }
        }
    }
    // Subscribe before reading the file, so nothing falls between the two.
    let receiver = daemon.events().subscribe();
    // The history is streamed from the file in pieces, never read whole.
    let history = if replay {
        tokio::fs::File::open(daemon.events().path()).await.ok()
    } else {
        None
    };
    let first = futures::stream::unfold(history, |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut chunk = vec![0u8; 64 << 10];
        match file.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::convert::Infallible>(chunk), Some(file)))
            }
        }
    });
    let live = futures::stream::unfold(receiver, |mut receiver| async move {
        use tokio::sync::broadcast::error::RecvError;
        let line = match receiver.recv().await {
            Ok(line) => line,
            Err(RecvError::Lagged(missed)) => json!({
                "Type": "SystemEvent",
                "Operation": "events",
                "Data": format!("this client fell behind: {missed} event(s) not sent (all are in events.jsonl)"),
            })
            .to_string(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(format!("{line}\n").into_bytes()), receiver))
    });
    use futures::StreamExt;
    let body = Body::from_stream(first.chain(live).take_until(daemon.shutting_down()));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn metrics(State(daemon): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        daemon.render_metrics(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_split_and_decoded() {
        assert_eq!(
            query_pairs(Some("label=hub.jupyter.org%2Fusername%3Dalice&tail=5&x")),
            vec![
                ("label".into(), "hub.jupyter.org/username=alice".into()),
                ("tail".into(), "5".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(
            query_pairs(Some("a=%zz%4")),
            vec![("a".into(), "%zz%4".into())]
        );
        assert!(query_pairs(None).is_empty());
    }
}
