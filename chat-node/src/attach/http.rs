//! The HTTP side of attachments, served by every chat-node (`PROTOCOL.md` section 10):
//!
//! ```text
//! PUT  /v1/uploads/{id}?exp&sig    a chunk (Content-Range) or the whole file ─▶ parts in the store
//! HEAD /v1/uploads/{id}?exp&sig    Upload-Offset: bytes stored so far (resume from there)
//! GET  /v1/uploads/{id}?exp&sig    {"id","offset","size","state"}
//! DELETE /v1/uploads/{id}?exp&sig  the sender gives up: the file fails (`cancelled`) for every member
//! GET  /v1/attachments/{id}/{name}?exp&sig    the file, streamed (one Range supported)
//! GET  /v1/thumbnails/{id}?exp&sig            the JPEG thumbnail
//! ```
//!
//! Holding a signed URL is the permission: upload URLs go only to the sender (in the `ack`), download
//! URLs only to sessions that may read the room or the direct message. A chunk is read as it arrives
//! into at most one 8 MiB part, which goes to the store before more is read: memory per upload is
//! bounded by one part, whatever the file's size. Every read of the request body has a deadline.

use super::{Attachments, Record, State, valid_id};
use crate::node::Node;
use crate::protocol::now_ms;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_attachments::names::content_disposition;
use switchboard_attachments::sign::{Invalid, Purpose};
use switchboard_attachments::sniff::{self, HEAD_BYTES};
use switchboard_attachments::store::Error as StoreError;
use switchboard_attachments::{CHUNK_BYTES, thumb};

/// Longest wait for the next piece of a request body.
const BODY_IDLE: Duration = Duration::from_secs(30);
/// How long one upload request may hold an attachment's lock (a chunk of 8 MiB, or a whole file sent
/// in one request, at a slow rate); the lock expires by itself after a crash.
const LOCK_TTL: Duration = Duration::from_secs(15 * 60);
/// How long one upload request may run: well inside its lock, so two requests never write one file.
const REQUEST_LIMIT: Duration = Duration::from_secs(12 * 60);
/// A refused upload's body is read and dropped, up to this many bytes and for this long, before the
/// refusal is answered: a client still sending it then reads the answer instead of a broken pipe.
const REFUSED_BODY_DRAIN: (u64, Duration) = (CHUNK_BYTES + 1024 * 1024, Duration::from_secs(5));

/// The routes (merged into the node's router).
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(
            "/v1/uploads/{id}",
            get(upload_status)
                .head(upload_status)
                .put(upload)
                .delete(cancel)
                .options(preflight),
        )
        .route(
            "/v1/attachments/{id}/{name}",
            get(download).options(preflight),
        )
        .route("/v1/thumbnails/{id}", get(thumbnail).options(preflight))
        .layer(axum::middleware::from_fn_with_state(node.clone(), cors))
        .with_state(node)
}

/// An answer other than success.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<(&'static str, Value)>,
}

fn failure(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
        extra: None,
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some((k, v)) = self.extra {
            body[k] = v;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn store_failure(e: &StoreError) -> Failure {
    match e {
        StoreError::NotFound => failure(StatusCode::NOT_FOUND, "not_found", "no such file"),
        other => {
            tracing::warn!(error = %other, "attachment store request failed");
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the attachment store is unavailable; retry",
            )
        }
    }
}

fn backend_failure() -> Failure {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the store is unavailable; retry",
    )
}

/// The node's attachments, or 404 when it has none.
fn attachments(node: &Node) -> Result<&Arc<Attachments>, Failure> {
    node.attachments.get().ok_or_else(|| {
        failure(
            StatusCode::NOT_FOUND,
            "attachments_disabled",
            "this node keeps no attachments",
        )
    })
}

/// The node's attachments, once the URL's id and signed query (`exp`, `sig`) hold for `purpose`.
fn signed<'a>(
    node: &'a Node,
    purpose: Purpose,
    id: &str,
    query: &HashMap<String, String>,
) -> Result<&'a Arc<Attachments>, Failure> {
    let att = attachments(node)?;
    if !valid_id(id) {
        return Err(failure(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such attachment",
        ));
    }
    let exp = query.get("exp").and_then(|e| e.parse::<u64>().ok());
    let sig = query.get("sig");
    let (Some(exp), Some(sig)) = (exp, sig) else {
        return Err(failure(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a signed URL (exp, sig) is required",
        ));
    };
    att.signer()
        .check(purpose, id, exp, sig, now_ms())
        .map_err(|e| match e {
            Invalid::Forged => failure(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            Invalid::Expired => failure(StatusCode::GONE, "expired", e.to_string()),
        })?;
    Ok(att)
}

async fn record(node: &Node, att: &Attachments, id: &str) -> Result<Record, Failure> {
    let mut found = att
        .load(node, &[id.to_owned()])
        .await
        .map_err(|_| backend_failure())?;
    found
        .pop()
        .flatten()
        .ok_or_else(|| failure(StatusCode::NOT_FOUND, "not_found", "no such attachment"))
}

fn progress(r: &Record) -> Value {
    json!({"id": r.id, "offset": r.offset, "size": r.size, "state": r.state})
}

async fn upload_status(
    AxumState(node): AxumState<Arc<Node>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        let att = signed(&node, Purpose::Upload, &id, &query)?;
        let r = record(&node, att, &id).await?;
        let mut response = axum::Json(progress(&r)).into_response();
        let h = response.headers_mut();
        h.insert("upload-offset", HeaderValue::from(r.offset));
        h.insert("upload-length", HeaderValue::from(r.size));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok::<_, Failure>(response)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// How long a cancel waits for an upload request of the same file to let go (the sender aborts it
/// first; the node notices when the body breaks off).
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The sender gives an upload up: its parts are deleted, its quota comes back and every member is told
/// it failed (`cancelled`). A finished file stays (`409 already_complete`); cancelling twice is fine.
async fn cancel(
    AxumState(node): AxumState<Arc<Node>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        let att = signed(&node, Purpose::Upload, &id, &query)?.clone();
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        let token = loop {
            match att.lock(&node, &id, LOCK_TTL).await {
                Ok(Some(token)) => break token,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => {
                    return Err(failure(
                        StatusCode::CONFLICT,
                        "upload_in_progress",
                        "a request is still uploading this attachment; abort it first",
                    ));
                }
                Err(_) => return Err(backend_failure()),
            }
        };
        let result = async {
            let r = record(&node, &att, &id).await?;
            match r.state {
                State::Ready => Err(Failure {
                    extra: Some(("attachment", att.view(&r))),
                    ..failure(
                        StatusCode::CONFLICT,
                        "already_complete",
                        "this attachment is complete",
                    )
                }),
                State::Failed => Ok(axum::Json(progress(&r)).into_response()),
                State::Pending => {
                    let r = att
                        .fail(
                            &node,
                            r,
                            "cancelled",
                            "the sender cancelled the upload".to_owned(),
                        )
                        .await;
                    Ok(axum::Json(progress(&r)).into_response())
                }
            }
        }
        .await;
        att.unlock(&node, &id, token).await;
        result
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// `Content-Range: bytes START-END/TOTAL`.
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64, u64)>, Failure> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        failure(
            StatusCode::BAD_REQUEST,
            "bad_range",
            "Content-Range must be `bytes START-END/TOTAL`",
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    let rest = v.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let n = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let (start, end, total) = (n(start)?, n(end)?, n(total)?);
    if end < start || end >= total {
        return Err(bad());
    }
    Ok(Some((start, end, total)))
}

async fn upload(
    AxumState(node): AxumState<Arc<Node>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    let answer = async {
        let att = signed(&node, Purpose::Upload, &id, &query)?.clone();
        let _permit = att.upload_permit().ok_or_else(|| {
            failure(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "this node is receiving as many uploads as it may; retry",
            )
        })?;
        let token = att
            .lock(&node, &id, LOCK_TTL)
            .await
            .map_err(|_| backend_failure())?
            .ok_or_else(|| {
                failure(
                    StatusCode::CONFLICT,
                    "upload_in_progress",
                    "another request is uploading this attachment",
                )
            })?;
        let body = body.take().unwrap_or_default();
        let result = receive(&node, &att, &id, &headers, body).await;
        att.unlock(&node, &id, token).await;
        result
    };
    let response = answer.await.unwrap_or_else(IntoResponse::into_response);
    if let Some(body) = body {
        // Refused before the body was looked at.
        drain(body).await;
    }
    response
}

/// Reads and drops what is left of a request body, within [`REFUSED_BODY_DRAIN`].
async fn drain(body: Body) {
    let (most, within) = REFUSED_BODY_DRAIN;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(within, async {
        let mut read = 0;
        while read <= most {
            match stream.next().await {
                Some(Ok(data)) => read += data.len() as u64,
                _ => return,
            }
        }
    })
    .await;
}

/// One upload request, under the attachment's lock.
async fn receive(
    node: &Node,
    att: &Attachments,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let mut r = record(node, att, id).await?;
    match r.state {
        State::Ready => {
            return Err(Failure {
                extra: Some(("attachment", att.view(&r))),
                ..failure(
                    StatusCode::CONFLICT,
                    "already_complete",
                    "this attachment is complete",
                )
            });
        }
        State::Failed => {
            return Err(failure(
                StatusCode::GONE,
                "failed",
                format!(
                    "this attachment failed ({}): {}",
                    r.error.as_deref().unwrap_or("failed"),
                    r.reason.as_deref().unwrap_or("")
                ),
            ));
        }
        State::Pending => {}
    }
    let (start, end) = match content_range(headers)? {
        Some((_, _, total)) if total != r.size => {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "size_mismatch",
                format!("the file was declared {} bytes, not {total}", r.size),
            ));
        }
        Some((start, end, _)) => (start, end + 1),
        None => (0, r.size),
    };
    if start != r.offset {
        return Err(Failure {
            extra: Some(("offset", r.offset.into())),
            ..failure(
                StatusCode::CONFLICT,
                "offset_mismatch",
                format!("{} bytes are stored; send from there", r.offset),
            )
        });
    }
    if end < r.size && (end - start) % CHUNK_BYTES != 0 {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "bad_chunk",
            format!("every chunk but the last must be a multiple of {CHUNK_BYTES} bytes"),
        ));
    }
    if r.upload.is_none() {
        let upload = att
            .config
            .store
            .begin(&r.object_key())
            .await
            .map_err(|e| store_failure(&e))?;
        r.upload = Some(upload);
        att.save(node, &r, false)
            .await
            .map_err(|_| backend_failure())?;
    }
    let upload = r.upload.clone().unwrap_or_default();
    let mut stream = body.into_data_stream();
    let mut part = BytesMut::new();
    let mut received: u64 = start;
    // A request may not outlive its lock: past this, whole parts are kept and the client resumes.
    let must_end = tokio::time::Instant::now() + REQUEST_LIMIT;
    loop {
        if tokio::time::Instant::now() > must_end {
            return Err(Failure {
                extra: Some(("offset", r.offset.into())),
                ..failure(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "one request may take {} minutes; resume from the stored offset",
                        REQUEST_LIMIT.as_secs() / 60
                    ),
                )
            });
        }
        let next = tokio::time::timeout(BODY_IDLE, stream.next()).await;
        let data: Option<Bytes> = match next {
            Err(_) => {
                return Err(failure(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "no bytes for {}s; resume from the stored offset",
                        BODY_IDLE.as_secs()
                    ),
                ));
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, id, "upload body broke off");
                None
            }
            Ok(Some(Ok(d))) => Some(d),
        };
        let Some(mut data) = data else { break };
        if received + data.len() as u64 > end {
            return Err(failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("more bytes than the {} declared", end - start),
            ));
        }
        received += data.len() as u64;
        node.metrics.upload_bytes.inc_by(data.len() as u64);
        while !data.is_empty() {
            let room = (CHUNK_BYTES as usize).saturating_sub(part.len());
            let take = room.min(data.len());
            part.extend_from_slice(&data.split_to(take));
            if r.offset == 0
                && r.found.is_none()
                && (part.len() >= HEAD_BYTES || part.len() as u64 == r.size)
            {
                check_type(node, att, &mut r, &part).await?;
            }
            if part.len() as u64 == CHUNK_BYTES {
                store_part(node, att, &mut r, &upload, part.split().freeze()).await?;
            }
        }
    }
    if received < end {
        // The body ended early (a dropped connection): whole parts are kept, the rest is resent.
        return Err(Failure {
            extra: Some(("offset", r.offset.into())),
            ..failure(
                StatusCode::BAD_REQUEST,
                "incomplete",
                format!(
                    "the request ended after {} of {} bytes",
                    received - start,
                    end - start
                ),
            )
        });
    }
    if !part.is_empty() {
        if r.offset == 0 && r.found.is_none() {
            check_type(node, att, &mut r, &part).await?;
        }
        store_part(node, att, &mut r, &upload, part.freeze()).await?;
    }
    // Every path here stored a part, and each part's record is saved with it.
    if r.offset < r.size {
        return Ok(axum::Json(progress(&r)).into_response());
    }
    finish(node, att, r).await
}

/// Checks the first bytes: refused types fail the attachment at once (members are told).
async fn check_type(
    node: &Node,
    att: &Attachments,
    r: &mut Record,
    head: &[u8],
) -> Result<(), Failure> {
    match sniff::check(&att.config.types, &r.declared, head) {
        Ok(found) => {
            r.found = Some(found.to_owned());
            if sniff::is_image(found)
                && let Some((w, h)) = thumb::dimensions(head)
            {
                r.width = Some(w);
                r.height = Some(h);
            }
            Ok(())
        }
        Err(refused) => {
            let reason = refused.to_string();
            att.fail(node, r.clone(), "wrong_type", reason.clone())
                .await;
            Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "wrong_type",
                reason,
            ))
        }
    }
}

async fn store_part(
    node: &Node,
    att: &Attachments,
    r: &mut Record,
    upload: &str,
    data: Bytes,
) -> Result<(), Failure> {
    let index = r.parts.len();
    let len = data.len() as u64;
    let part = att
        .config
        .store
        .put_part(&r.object_key(), upload, index, data)
        .await
        .map_err(|e| store_failure(&e))?;
    r.parts.push(part);
    r.offset += len;
    // Recorded after every part, so a resume (on any node) starts after it.
    att.save(node, r, false)
        .await
        .map_err(|_| backend_failure())?;
    Ok(())
}

/// The last byte is stored: join the parts, make the thumbnail, tell the members.
async fn finish(node: &Node, att: &Attachments, mut r: Record) -> Result<Response, Failure> {
    let upload = r.upload.clone().unwrap_or_default();
    if let Err(e) = att
        .config
        .store
        .complete(&r.object_key(), &upload, &r.parts)
        .await
    {
        return Err(store_failure(&e));
    }
    r.upload = None;
    r.parts.clear();
    if r.found.as_deref().is_some_and(sniff::is_image) {
        r.thumb = att.make_thumbnail(&r).await;
    }
    r.state = State::Ready;
    att.save(node, &r, false)
        .await
        .map_err(|_| backend_failure())?;
    if let Err(e) = node.backend.due_remove(super::PENDING, &r.id).await {
        tracing::debug!(error = %e, "taking a finished attachment off the due list failed");
    }
    node.metrics.attachments_ready.inc();
    att.publish(node, &r).await;
    let mut answer = progress(&r);
    answer["attachment"] = att.view(&r);
    Ok(axum::Json(answer).into_response())
}

/// One `Range: bytes=A-B` / `bytes=A-` / `bytes=-N` of an object of `size` bytes.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, Failure> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        failure(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "bad_range",
            format!("one range within 0-{} is served", size.saturating_sub(1)),
        )
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Err(unsatisfiable());
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| unsatisfiable());
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, true) => (parse(a)?, size.saturating_sub(1)),
        (false, false) => (parse(a)?, parse(b)?.min(size.saturating_sub(1))),
        (true, false) => {
            let n = parse(b)?.min(size);
            (size - n, size.saturating_sub(1))
        }
        (true, true) => return Err(unsatisfiable()),
    };
    if size == 0 || start > end || start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

async fn download(
    AxumState(node): AxumState<Arc<Node>>,
    Path((id, _name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let att = signed(&node, Purpose::Download, &id, &query)?;
        let r = ready(&node, att, &id).await?;
        let found = r
            .found
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let inline = sniff::inline(&found);
        let content_type = match (inline, found.as_str()) {
            (true, "text/plain") => "text/plain; charset=utf-8".to_owned(),
            (true, t) => t.to_owned(),
            (false, _) => "application/octet-stream".to_owned(),
        };
        let wanted = range(&headers, r.size)?;
        let (size, stream) = att
            .config
            .store
            .get(&r.object_key(), wanted.map(|(a, b)| a..b + 1))
            .await
            .map_err(|e| store_failure(&e))?;
        let mut response = Response::new(Body::from_stream(stream));
        let h = response.headers_mut();
        secure_headers(h, &query);
        set(h, header::CONTENT_TYPE, &content_type);
        set(
            h,
            header::CONTENT_DISPOSITION,
            &content_disposition(inline, &r.name),
        );
        set(h, header::ACCEPT_RANGES, "bytes");
        match wanted {
            Some((a, b)) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let h = response.headers_mut();
                set(h, header::CONTENT_RANGE, &format!("bytes {a}-{b}/{size}"));
                set(h, header::CONTENT_LENGTH, &(b - a + 1).to_string());
            }
            None => set(
                response.headers_mut(),
                header::CONTENT_LENGTH,
                &size.to_string(),
            ),
        }
        Ok::<_, Failure>(response)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn thumbnail(
    AxumState(node): AxumState<Arc<Node>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        let att = signed(&node, Purpose::Thumbnail, &id, &query)?;
        let r = ready(&node, att, &id).await?;
        if !r.thumb {
            return Err(failure(
                StatusCode::NOT_FOUND,
                "not_found",
                "this attachment has no thumbnail",
            ));
        }
        let (size, stream) = att
            .config
            .store
            .get(&r.thumb_key(), None)
            .await
            .map_err(|e| store_failure(&e))?;
        let mut response = Response::new(Body::from_stream(stream));
        let h = response.headers_mut();
        secure_headers(h, &query);
        set(h, header::CONTENT_TYPE, "image/jpeg");
        set(h, header::CONTENT_LENGTH, &size.to_string());
        Ok::<_, Failure>(response)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn ready(node: &Node, att: &Attachments, id: &str) -> Result<Record, Failure> {
    let r = record(node, att, id).await?;
    if r.state != State::Ready {
        return Err(failure(
            StatusCode::NOT_FOUND,
            "not_ready",
            "this attachment is not uploaded (yet)",
        ));
    }
    Ok(r)
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// What keeps a downloaded file from acting as a page of ours, and how long it may be cached.
fn secure_headers(h: &mut HeaderMap, query: &HashMap<String, String>) {
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'",
    );
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "cross-origin",
    );
    let left = query
        .get("exp")
        .and_then(|e| e.parse::<u64>().ok())
        .map_or(0, |exp| exp.saturating_sub(now_ms()) / 1000);
    set(
        h,
        header::CACHE_CONTROL,
        &format!("private, max-age={left}"),
    );
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// CORS for the origins the node lets open `/ws`: uploads with `Content-Range` and downloads by
/// `fetch` from a page served elsewhere (the registry's).
async fn cors(
    AxumState(node): AxumState<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let policy = registry::origins::CorsPolicy {
        methods: "GET, HEAD, PUT, DELETE, OPTIONS",
        allow_headers: Some("content-range, content-type, range"),
        expose_headers: Some("upload-offset, upload-length, content-range, content-disposition"),
    };
    registry::origins::answer_cors(&node.settings.origins, policy, request, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn content_ranges_are_read_strictly() {
        let h = headers(header::CONTENT_RANGE, "bytes 0-8388607/10000000");
        assert_eq!(
            content_range(&h).ok().flatten(),
            Some((0, 8_388_607, 10_000_000))
        );
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "0-1/2",
            "bytes a-b/c",
            "bytes */10",
        ] {
            let h = headers(header::CONTENT_RANGE, bad);
            assert!(content_range(&h).is_err(), "{bad}");
        }
        assert!(matches!(content_range(&HeaderMap::new()), Ok(None)));
    }

    #[test]
    fn download_ranges() {
        let r = |v: &str| range(&headers(header::RANGE, v), 100).ok().flatten();
        assert_eq!(r("bytes=0-9"), Some((0, 9)));
        assert_eq!(r("bytes=90-"), Some((90, 99)));
        assert_eq!(r("bytes=-10"), Some((90, 99)));
        assert_eq!(r("bytes=95-200"), Some((95, 99)));
        assert!(range(&headers(header::RANGE, "bytes=100-"), 100).is_err());
        assert!(range(&headers(header::RANGE, "bytes=0-1,5-6"), 100).is_err());
        assert!(matches!(range(&HeaderMap::new(), 100), Ok(None)));
    }
}
