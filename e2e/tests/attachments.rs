//! Attachments end to end (issue: attachments): two chat-nodes over a real Redis, a real S3 server
//! (MinIO on loopback), clients on both nodes, uploads and downloads over HTTP to any node.
//!
//! Each test starts its own MinIO and topology and stops by itself; every wait is bounded.

use bytes::Bytes;
use e2e::client::{ChatClient, Frame, frame_type};
use e2e::topology::{Topology, TopologyConfig};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_attachments::CHUNK_BYTES;
use switchboard_testkit::s3::S3Server;

const WAIT: Duration = Duration::from_secs(15);
/// How long to keep listening after an update to be sure no second copy comes.
const QUIET: Duration = Duration::from_millis(1500);

async fn cluster(extra: &[&str]) -> (S3Server, Topology) {
    let s3 = S3Server::start().await.expect("start MinIO");
    let topo = Topology::start(
        TopologyConfig::scaled(2, 1)
            .with_s3(&s3)
            .with_node_args(extra.iter().copied()),
    )
    .await
    .expect("start the topology");
    (s3, topo)
}

async fn connect(topo: &Topology, node: usize, user: &str) -> ChatClient {
    let mut c = topo.connect(node, user).await.expect("connect");
    c.take_buffered();
    c
}

async fn join(c: &mut ChatClient, room: &str) {
    c.join(room, None).await.expect("join");
}

/// alice on node 0 and bob on node 1, both in `lobby`.
async fn two_members(topo: &Topology) -> (ChatClient, ChatClient) {
    let mut alice = connect(topo, 0, "alice").await;
    let mut bob = connect(topo, 1, "bob").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;
    (alice, bob)
}

/// Sends one file to `lobby`; returns its upload URL and id.
async fn send_one(c: &mut ChatClient, name: &str, size: usize, ty: &str) -> (String, String) {
    let ack = send_files(c, "lobby", "", &[(name, size, ty)]).await;
    let url = upload_urls(&ack).remove(0);
    let id = ack["attachments"][0]["id"].as_str().expect("id").to_owned();
    (url, id)
}

/// A real PNG of `w`×`h`.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode PNG");
    out.into_inner()
}

/// A ZIP-looking file of `len` bytes (the magic, then noise).
fn zip(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
    v[..4].copy_from_slice(b"PK\x03\x04");
    v
}

/// `send` with attachments; returns the reply (ack or error).
async fn send_files(
    c: &mut ChatClient,
    room: &str,
    body: &str,
    files: &[(&str, usize, &str)],
) -> Frame {
    let attachments: Vec<Value> = files
        .iter()
        .map(|(name, size, ty)| json!({"name": name, "size": size, "type": ty}))
        .collect();
    c.request(
        json!({"type": "send", "room": room, "body": body, "attachments": attachments}),
        WAIT,
    )
    .await
    .expect("reply to send")
}

fn upload_urls(ack: &Frame) -> Vec<String> {
    assert_eq!(frame_type(ack), Some("ack"), "{ack}");
    ack["attachments"]
        .as_array()
        .expect("upload tickets")
        .iter()
        .map(|t| t["upload_url"].as_str().expect("upload_url").to_owned())
        .collect()
}

struct Answer {
    status: u16,
    json: Value,
}

async fn put(base: &str, url: &str, body: Vec<u8>, range: Option<(u64, u64, u64)>) -> Answer {
    let client = reqwest::Client::new();
    let mut req = client.put(format!("{base}{url}")).body(body);
    if let Some((a, b, t)) = range {
        req = req.header("content-range", format!("bytes {a}-{b}/{t}"));
    }
    let res = req.send().await.expect("PUT");
    let status = res.status().as_u16();
    let json = res.json().await.unwrap_or(Value::Null);
    Answer { status, json }
}

async fn get(
    base: &str,
    url: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Bytes) {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{base}{url}"));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let res = req.send().await.expect("GET");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body"))
}

/// The `attachment` updates for `id` that arrive within `QUIET` after the first one.
async fn updates_for(c: &mut ChatClient, id: &str) -> Vec<Frame> {
    let is = |f: &Frame| frame_type(f) == Some("attachment") && f["attachment"]["id"] == id;
    let first = c
        .wait_for_named(&format!("an update of {id}"), is, WAIT)
        .await
        .expect("update");
    let mut all = vec![first];
    while let Ok(f) = c.wait_for(is, QUIET).await {
        all.push(f);
    }
    all
}

fn message_ids(c: &mut ChatClient) -> Vec<(u64, Value)> {
    c.buffered()
        .iter()
        .filter(|f| frame_type(f) == Some("message"))
        .map(|f| (f["seq"].as_u64().unwrap_or(0), f.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_keeps_its_place_and_every_member_on_every_node_gets_one_update() {
    let (_s3, topo) = cluster(&[]).await;
    let (a_http, b_http) = (topo.node_http_url(0), topo.node_http_url(1));
    let (mut alice, mut bob) = two_members(&topo).await;

    let big = zip(20 * 1024 * 1024 + 12345);
    let picture = png(640, 400);
    let ack = send_files(
        &mut alice,
        "lobby",
        "holiday",
        &[
            ("trip.zip", big.len(), "application/zip"),
            ("../beach.png", picture.len(), "image/png"),
        ],
    )
    .await;
    let first_seq = ack["seq"].as_u64().expect("seq");
    let urls = upload_urls(&ack);
    let ids: Vec<String> = ack["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Text sent after the files is stored after them, whenever the upload ends.
    for i in 0..3 {
        alice
            .send("lobby", &format!("after {i}"), None)
            .await
            .expect("send text");
    }
    // The picture goes in one request to bob's node, the archive in chunks to alice's — with one
    // broken-off chunk resumed from the stored offset.
    let a = put(&b_http, &urls[1], picture.clone(), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["state"], "ready");
    let chunk = CHUNK_BYTES as usize;
    let a = put(
        &a_http,
        &urls[0],
        big[..chunk].to_vec(),
        Some((0, CHUNK_BYTES - 1, big.len() as u64)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    // the second chunk announces 8 MiB but carries less: nothing of it is kept
    let a = put(
        &a_http,
        &urls[0],
        big[chunk..chunk + 1000].to_vec(),
        Some((CHUNK_BYTES, 2 * CHUNK_BYTES - 1, big.len() as u64)),
    )
    .await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (400, Some("incomplete")),
        "{}",
        a.json
    );
    let head = reqwest::Client::new()
        .head(format!("{b_http}{}", urls[0]))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(
        head.headers()["upload-offset"],
        CHUNK_BYTES.to_string().as_str()
    );
    // a chunk from the wrong offset is refused with the right one
    let a = put(
        &a_http,
        &urls[0],
        big[..chunk].to_vec(),
        Some((0, CHUNK_BYTES - 1, big.len() as u64)),
    )
    .await;
    assert_eq!(
        (a.status, a.json["offset"].as_u64()),
        (409, Some(CHUNK_BYTES)),
        "{}",
        a.json
    );
    for (start, end) in [(chunk, 2 * chunk), (2 * chunk, big.len())] {
        let a = put(
            &b_http,
            &urls[0],
            big[start..end].to_vec(),
            Some((start as u64, end as u64 - 1, big.len() as u64)),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.json);
    }

    for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        for id in &ids {
            let updates = updates_for(c, id).await;
            assert_eq!(
                updates.len(),
                1,
                "{who} got one update of {id}: {updates:?}"
            );
            let u = &updates[0];
            assert_eq!(u["room"], "lobby");
            assert_eq!(u["seq"].as_u64(), Some(first_seq));
            assert_eq!(u["attachment"]["state"], "ready", "{u}");
        }
        let seqs: Vec<u64> = message_ids(c).into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            seqs,
            (first_seq..first_seq + 4).collect::<Vec<_>>(),
            "{who}: order kept"
        );
        let (_, first) = message_ids(c).into_iter().next().expect("the message");
        assert_eq!(first["attachments"][0]["state"], "pending");
        assert_eq!(
            first["attachments"][1]["name"], "beach.png",
            "the name is sanitised"
        );
    }

    // Bob downloads from his node; the bytes are the bytes, ranges work, the picture has a thumbnail.
    let history = bob
        .request(
            json!({"type": "history", "room": "lobby", "limit": 10}),
            WAIT,
        )
        .await
        .expect("history");
    let message = history["messages"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["seq"].as_u64() == Some(first_seq))
                .cloned()
        })
        .expect("the message in history");
    let zip_view = &message["attachments"][0];
    let png_view = &message["attachments"][1];
    assert_eq!(
        zip_view["state"], "ready",
        "history has the current state: {message}"
    );
    assert_eq!(png_view["type"], "image/png");
    assert_eq!(
        (png_view["width"].as_u64(), png_view["height"].as_u64()),
        (Some(640), Some(400))
    );
    let (status, headers, body) = get(&b_http, zip_view["url"].as_str().expect("url"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "the downloaded archive is the uploaded one");
    assert_eq!(
        headers["content-type"], "application/octet-stream",
        "archives are downloads"
    );
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap_or("")
            .starts_with("attachment;")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (status, headers, body) = get(
        &a_http,
        zip_view["url"].as_str().expect("url"),
        Some("bytes=100-199"),
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(&body[..], &big[100..200]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 100-199/{}", big.len()).as_str()
    );
    let (status, headers, body) = get(&a_http, png_view["url"].as_str().expect("url"), None).await;
    assert_eq!((status, &body[..]), (200, &picture[..]));
    assert_eq!(headers["content-type"], "image/png");
    let (status, headers, thumb) = get(
        &b_http,
        png_view["thumbnail_url"].as_str().expect("thumbnail"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(&thumb[..3], b"\xff\xd8\xff");

    // A finished upload takes no more bytes.
    let a = put(&a_http, &urls[1], picture, None).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (409, Some("already_complete"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_what_it_claims_fails_for_every_member_once() {
    let (_s3, topo) = cluster(&[]).await;
    let (mut alice, mut bob) = two_members(&topo).await;
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n".repeat(50);
    let (url, id) = send_one(&mut alice, "cat.png", pdf.len(), "image/png").await;
    let a = put(&topo.node_http_url(1), &url, pdf.clone(), None).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (415, Some("wrong_type")),
        "{}",
        a.json
    );
    assert!(
        a.json["message"]
            .as_str()
            .unwrap_or("")
            .contains("application/pdf"),
        "{}",
        a.json
    );
    for c in [&mut alice, &mut bob] {
        let updates = updates_for(c, &id).await;
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert_eq!(updates[0]["attachment"]["state"], "failed");
        assert_eq!(updates[0]["attachment"]["error"], "wrong_type");
    }
    let a = put(&topo.node_http_url(0), &url, pdf, None).await;
    assert_eq!((a.status, a.json["error"].as_str()), (410, Some("failed")));

    // The sender gives up another one: every member is told, once.
    let (url, id) = send_one(&mut alice, "movie.mp4", 5_000_000, "video/mp4").await;
    let deleted = reqwest::Client::new()
        .delete(format!("{}{url}", topo.node_http_url(0)))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 200);
    for c in [&mut alice, &mut bob] {
        let updates = updates_for(c, &id).await;
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert_eq!(updates[0]["attachment"]["error"], "cancelled");
    }
    let again = reqwest::Client::new()
        .delete(format!("{}{url}", topo.node_http_url(1)))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(again.status().as_u16(), 200, "cancelling twice is fine");
    // history shows it failed; nothing was kept to download
    let history = bob
        .request(json!({"type": "history", "room": "lobby"}), WAIT)
        .await
        .expect("history");
    let att = &history["messages"][0]["attachments"][0];
    assert_eq!(att["state"], "failed", "{history}");
    assert!(att.get("url").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_quota_and_signatures_are_enforced_with_clear_errors() {
    let (_s3, topo) = cluster(&[
        "--max-attachment-bytes",
        "3000000",
        "--attachment-quota-bytes",
        "5000000",
    ])
    .await;
    let http = topo.node_http_url(0);
    let mut alice = connect(&topo, 0, "alice").await;
    join(&mut alice, "lobby").await;
    let code = |f: &Frame| f["code"].as_str().map(str::to_owned);
    let r = send_files(
        &mut alice,
        "lobby",
        "",
        &[("big.zip", 3_000_001, "application/zip")],
    )
    .await;
    assert_eq!(code(&r).as_deref(), Some("too_large"), "{r}");
    let r = send_files(&mut alice, "lobby", "", &[("x.svg", 10, "image/svg+xml")]).await;
    assert_eq!(code(&r).as_deref(), Some("unsupported_type"), "{r}");
    let many: Vec<(&str, usize, &str)> = (0..11).map(|_| ("a.png", 10, "image/png")).collect();
    let r = send_files(&mut alice, "lobby", "", &many).await;
    assert_eq!(code(&r).as_deref(), Some("invalid_attachment"), "{r}");
    let r = send_files(&mut alice, "lobby", "", &[("empty.png", 0, "image/png")]).await;
    assert_eq!(code(&r).as_deref(), Some("invalid_attachment"), "{r}");
    let r = alice
        .request(json!({"type": "send", "room": "lobby"}), WAIT)
        .await
        .expect("reply");
    assert_eq!(
        code(&r).as_deref(),
        Some("bad_frame"),
        "a body is required without files: {r}"
    );
    // nothing refused was stored
    let history = alice
        .request(json!({"type": "history", "room": "lobby"}), WAIT)
        .await
        .expect("history");
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(0),
        "{history}"
    );

    // The quota counts what was declared in the last 24 h.
    let ok = send_files(
        &mut alice,
        "lobby",
        "",
        &[("a.zip", 2_500_000, "application/zip")],
    )
    .await;
    let url = upload_urls(&ok).remove(0);
    let r = send_files(
        &mut alice,
        "lobby",
        "",
        &[("b.zip", 2_500_001, "application/zip")],
    )
    .await;
    assert_eq!(code(&r).as_deref(), Some("quota_exceeded"), "{r}");

    // Uploads: no more bytes than declared, the declared total, signatures for this purpose only.
    let a = put(&http, &url, zip(2_500_001), None).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (413, Some("too_large")),
        "{}",
        a.json
    );
    let a = put(&http, &url, zip(100), Some((0, 99, 2_600_000))).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (400, Some("size_mismatch")),
        "{}",
        a.json
    );
    let unsigned = url.split('?').next().unwrap_or_default().to_owned();
    let a = put(&http, &unsigned, zip(2_500_000), None).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (403, Some("forbidden"))
    );
    let last = if url.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &url[..url.len() - 1]);
    let a = put(&http, &forged, zip(2_500_000), None).await;
    assert_eq!(a.status, 403, "a changed signature: {}", a.json);
    let stretched = url.replacen("exp=", "exp=9", 1);
    let a = put(&http, &stretched, zip(2_500_000), None).await;
    assert_eq!(a.status, 403, "a later expiry written by hand: {}", a.json);
    // the upload URL does not open the download
    let id = ok["attachments"][0]["id"].as_str().expect("id");
    let query = url.split('?').nth(1).unwrap_or_default();
    let (status, _, _) = get(&http, &format!("/v1/attachments/{id}/a.zip?{query}"), None).await;
    assert_eq!(status, 403);
    let a = put(&http, &url, zip(2_500_000), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    // A failed upload gives its bytes back: after one, the same size fits again.
    let ok2 = send_files(
        &mut alice,
        "lobby",
        "",
        &[("c.png", 2_400_000, "image/png")],
    )
    .await;
    let a = put(&http, &upload_urls(&ok2)[0], zip(2_400_000), None).await;
    assert_eq!(a.status, 415);
    let r = send_files(
        &mut alice,
        "lobby",
        "",
        &[("d.zip", 2_400_000, "application/zip")],
    )
    .await;
    assert_eq!(
        frame_type(&r),
        Some("ack"),
        "the failed file's bytes came back to the quota: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_and_the_two_parties_of_a_dm_get_the_files() {
    let (_s3, topo) = cluster(&[]).await;
    let http = topo.node_http_url(1);
    let mut alice = connect(&topo, 0, "alice").await;
    let mut bob = connect(&topo, 1, "bob").await;
    let mut carol = connect(&topo, 1, "carol").await;
    // A private room carol is not let into: she cannot join, so no frame of it reaches her.
    let r = carol
        .request(json!({"type": "join", "room": "private:ops"}), WAIT)
        .await
        .expect("reply");
    assert_eq!(r["code"], "forbidden");
    let r = carol
        .request(json!({"type": "history", "room": "private:ops"}), WAIT)
        .await
        .expect("reply");
    assert_eq!(r["code"], "not_joined");

    let picture = png(64, 64);
    let r = alice
        .request(
            json!({"type": "dm", "to": "bob", "body": "for you",
                   "attachments": [{"name": "p.png", "size": picture.len(), "type": "image/png"}]}),
            WAIT,
        )
        .await
        .expect("dm_ack");
    assert_eq!(frame_type(&r), Some("dm_ack"), "{r}");
    let url = r["attachments"][0]["upload_url"]
        .as_str()
        .expect("upload url")
        .to_owned();
    let id = r["attachments"][0]["id"].as_str().expect("id").to_owned();
    let dm = bob.expect_type("dm", WAIT).await.expect("the dm");
    assert_eq!(dm["attachments"][0]["id"], id.as_str());
    let a = put(&http, &url, picture.clone(), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    for c in [&mut alice, &mut bob] {
        let u = updates_for(c, &id).await;
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0]["from"].as_str(), u[0]["to"].as_str()),
            (Some("alice"), Some("bob"))
        );
        let (status, _, body) = get(
            &http,
            u[0]["attachment"]["url"].as_str().expect("url"),
            None,
        )
        .await;
        assert_eq!((status, &body[..]), (200, &picture[..]));
    }
    let stray = carol
        .wait_for(
            |f| frame_type(f) == Some("attachment") || frame_type(f) == Some("dm"),
            QUIET,
        )
        .await;
    assert!(stray.is_err(), "carol got nothing of it: {stray:?}");
    // without the signature nobody downloads it
    let (status, _, _) = get(&http, &format!("/v1/attachments/{id}/p.png"), None).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_node_kill_returns_attachments_in_their_current_state() {
    let (_s3, mut topo) = cluster(&[]).await;
    let mut alice = connect(&topo, 0, "alice").await;
    let mut bob = connect(&topo, 1, "bob").await;
    join(&mut alice, "lobby").await;
    let joined = bob.join("lobby", None).await.expect("join");
    let seen = joined.last_seq;
    let picture = png(300, 200);
    let ack = send_files(
        &mut alice,
        "lobby",
        "three files",
        &[
            ("ready.png", picture.len(), "image/png"),
            ("wrong.png", 100, "image/png"),
            ("later.zip", 1000, "application/zip"),
        ],
    )
    .await;
    let urls = upload_urls(&ack);
    bob.wait_message("lobby", |m| m.body == "three files", WAIT)
        .await
        .expect("live message");
    // Bob's node dies; meanwhile one upload completes and one fails.
    topo.kill_node(1).expect("kill node 1");
    let http = topo.node_http_url(0);
    assert_eq!(
        put(&http, &urls[0], picture.clone(), None).await.status,
        200
    );
    assert_eq!(put(&http, &urls[1], vec![0u8; 100], None).await.status, 415);
    // He comes back on the other node and recovers everything after what he saw.
    let mut bob = connect(&topo, 0, "bob").await;
    let joined = bob.join("lobby", Some(seen)).await.expect("rejoin");
    assert!(joined.last_seq > seen);
    let m = bob
        .wait_for_named(
            "the recovered message",
            |f| frame_type(f) == Some("message"),
            WAIT,
        )
        .await
        .expect("recovered");
    let states: Vec<&str> = m["attachments"]
        .as_array()
        .expect("attachments")
        .iter()
        .map(|a| a["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["ready", "failed", "pending"], "{m}");
    let (status, _, body) = get(
        &http,
        m["attachments"][0]["url"].as_str().expect("url"),
        None,
    )
    .await;
    assert_eq!((status, &body[..]), (200, &picture[..]));
    // The one still pending completes now, and the recovered session hears of it.
    assert_eq!(put(&http, &urls[2], zip(1000), None).await.status, 200);
    let id = m["attachments"][2]["id"].as_str().expect("id").to_owned();
    let u = updates_for(&mut bob, &id).await;
    assert_eq!(u.len(), 1);
    assert_eq!(u[0]["attachment"]["state"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_never_completed_is_failed_and_its_parts_deleted() {
    let (s3, topo) = cluster(&["--upload-timeout", "2s"]).await;
    let (mut alice, mut bob) = two_members(&topo).await;
    let file = zip(CHUNK_BYTES as usize + 500);
    let (url, id) = send_one(&mut alice, "half.zip", file.len(), "application/zip").await;
    let a = put(
        &topo.node_http_url(0),
        &url,
        file[..CHUNK_BYTES as usize].to_vec(),
        Some((0, CHUNK_BYTES - 1, file.len() as u64)),
    )
    .await;
    assert_eq!(a.status, 200);
    for c in [&mut alice, &mut bob] {
        let u = updates_for(c, &id).await;
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(u[0]["attachment"]["error"], "expired", "{}", u[0]);
    }
    let a = put(
        &topo.node_http_url(1),
        &url,
        file[CHUNK_BYTES as usize..].to_vec(),
        Some((CHUNK_BYTES, file.len() as u64 - 1, file.len() as u64)),
    )
    .await;
    assert_eq!(a.status, 410);
    // Nothing of the 8 MiB part is left in the bucket's data directory (MinIO moves deleted data to
    // its own trash, which it empties in the background: that is deleted as far as S3 goes).
    let mut big_files = Vec::new();
    let mut dirs = vec![s3.data_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() && !p.ends_with(".trash") => dirs.push(p),
                Ok(m) if m.len() > 1024 * 1024 => big_files.push(p),
                _ => {}
            }
        }
    }
    assert!(big_files.is_empty(), "parts left behind: {big_files:?}");
    drop(topo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_keeps_attachments_in_a_local_directory_with_no_other_service() {
    let topo = Topology::start(TopologyConfig::standalone())
        .await
        .expect("standalone");
    let http = topo.node_http_url(0);
    let mut alice = connect(&topo, 0, "alice").await;
    let mut bob = connect(&topo, 0, "bob").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;
    assert_eq!(
        alice.welcome().map(|w| w["limits"]["attachments"].clone()),
        Some(json!(true))
    );
    let picture = png(500, 500);
    let ack = send_files(
        &mut alice,
        "lobby",
        "look",
        &[("sun.png", picture.len(), "image/png")],
    )
    .await;
    let a = put(&http, &upload_urls(&ack)[0], picture.clone(), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let id = ack["attachments"][0]["id"].as_str().expect("id").to_owned();
    let u = updates_for(&mut bob, &id).await;
    let view = &u[0]["attachment"];
    let (status, _, body) = get(&http, view["url"].as_str().expect("url"), None).await;
    assert_eq!((status, &body[..]), (200, &picture[..]));
    let (status, _, thumb) = get(&http, view["thumbnail_url"].as_str().expect("thumb"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        switchboard_attachments::thumb::dimensions(&thumb),
        Some((320, 320))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_store_refuses_files_and_still_chats() {
    let topo = Topology::start(TopologyConfig::scaled(1, 1))
        .await
        .expect("topology");
    let mut alice = connect(&topo, 0, "alice").await;
    join(&mut alice, "lobby").await;
    let r = send_files(&mut alice, "lobby", "x", &[("a.png", 10, "image/png")]).await;
    assert_eq!(r["code"], "attachments_disabled", "{r}");
    alice
        .send("lobby", "text still works", None)
        .await
        .expect("send");
}
