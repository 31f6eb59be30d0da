//! Limits and refusals: each documented error frame or close code (1009, 4001, 4002, 4003, 4008,
//! 4029, `too_large`, `rate_limited`, `bad_frame`, ...) hits only the connection that earned it while
//! the others carry on.

use std::time::Duration;

use e2e::client::{ChatClient, ConnectOptions, Error, consecutive, frame_type};
use e2e::topology::Topology;
use serde_json::json;
use switchboard_runtime::report;

use super::{T, connect, name};

/// A raw WebSocket client of node `a`: the upgrade (with `?user=` in open mode, a `hello` with a
/// token after it in token mode), then the socket.
async fn raw_socket(t: &Topology, a: usize, user: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = t.node_ws_url(a);
    let host = addr
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let token = t.token(user);
    let query = if token.is_some() {
        String::new()
    } else {
        format!("?user={user}")
    };
    let request = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.expect("request");
    // The answer, byte by byte up to its blank line (the frames after it stay in the socket).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(T, s.read_u8())
            .await
            .expect("answer in time")
            .expect("answer");
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455 section 1.3's example key and its accept value.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    if let Some(token) = token {
        let hello = json!({"type": "hello", "token": token}).to_string();
        s.write_all(&masked(0x81, hello.as_bytes()))
            .await
            .expect("hello");
    }
    s
}

/// Reads frames until a close frame: its code, and the payload of every pong before it.
async fn read_until_close(s: &mut tokio::net::TcpStream) -> (u16, Vec<Vec<u8>>) {
    use tokio::io::AsyncReadExt;
    let mut pongs = Vec::new();
    loop {
        let mut head = [0u8; 2];
        tokio::time::timeout(T, s.read_exact(&mut head))
            .await
            .expect("a frame in time")
            .expect("a frame");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => usize::from(s.read_u16().await.expect("length")),
            127 => s.read_u64().await.expect("length") as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).await.expect("payload");
        match head[0] & 0x0f {
            0x8 => return (u16::from_be_bytes([payload[0], payload[1]]), pongs),
            0xA => pongs.push(payload),
            _ => {}
        }
    }
}

/// A client frame masked with a fixed key.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![first];
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => f.push(0x80 | n as u8),
        Ok(n) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => panic!("test frames are short"),
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    f
}

/// WebSocket protocol violations close only that connection, with their code (1002 for an unmasked
/// frame, 1007 for text that is not UTF-8); a ping is answered with its payload.
pub async fn websocket_violations_close_1002_and_1007(t: &Topology, a: usize) {
    use tokio::io::AsyncWriteExt;
    let mut other = connect(t, a, &name("other")).await;

    let plain = reqwest::get(format!("{}/ws?user=plain", t.node_http_url(a)))
        .await
        .expect("plain GET");
    assert_eq!(
        plain.status(),
        426,
        "a GET without the upgrade is told to upgrade"
    );

    let mut s = raw_socket(t, a, &name("pinger")).await;
    s.write_all(&masked(0x89, b"are you there"))
        .await
        .expect("ping");
    s.write_all(&masked(0x88, &1000u16.to_be_bytes()))
        .await
        .expect("close");
    let (code, pongs) = read_until_close(&mut s).await;
    assert_eq!(code, 1000);
    assert_eq!(pongs, [b"are you there".to_vec()]);

    let mut s = raw_socket(t, a, &name("unmasked")).await;
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.expect("frame");
    assert_eq!(read_until_close(&mut s).await.0, 1002);

    let mut s = raw_socket(t, a, &name("latin1")).await;
    s.write_all(&masked(0x81, b"caf\xe9")).await.expect("frame");
    assert_eq!(read_until_close(&mut s).await.0, 1007);

    other.ping().await.expect("others carry on");
}

/// A frame above `max_frame_bytes` closes that connection with 1009; others carry on.
pub async fn oversize_frame_closes_1009(t: &Topology, a: usize) {
    let mut other = connect(t, a, &name("other")).await;
    let mut big = connect(t, a, &name("big")).await;
    let body = "x".repeat(70_000);
    let _ = big
        .send_frame(&json!({"type": "send", "room": "r", "body": body}))
        .await;
    let (code, _) = big.wait_closed(T).await.expect("closed");
    assert_eq!(code, 1009);
    other.ping().await.expect("others carry on");
}

/// A body above `max_body_chars` is `too_large`; the session stays usable.
pub async fn long_body_is_too_large(t: &Topology, a: usize) {
    let room = name("room");
    let mut c = connect(t, a, &name("long")).await;
    c.join(&room, None).await.expect("join");
    let err = c
        .send(&room, &"y".repeat(4001), None)
        .await
        .expect_err("too long");
    assert_eq!(err.server_code(), Some("too_large"), "{err}");
    let ok = c
        .send(&room, &"y".repeat(4000), None)
        .await
        .expect("at the limit is fine");
    assert_eq!(ok.seq, 1, "the refused body was not stored");
    let err = c.send(&room, "", None).await.expect_err("empty body");
    assert_eq!(err.server_code(), Some("invalid_body"), "{err}");
}

/// A flood is `rate_limited` (with `retry_after_ms`), perhaps closed 4029; others carry on.
pub async fn flood_is_rate_limited(t: &Topology, a: usize) {
    let mut other = connect(t, a, &name("other")).await;
    let mut flood = connect(t, a, &name("flood")).await;
    for i in 0..120 {
        if flood
            .send_frame(&json!({"type": "ping", "req": i}))
            .await
            .is_err()
        {
            break;
        }
    }
    match flood.expect_error("rate_limited", T).await {
        Ok(err) => assert!(
            err["retry_after_ms"].is_u64(),
            "rate_limited says when to retry: {err}"
        ),
        Err(Error::Closed { code, .. }) => {
            assert_eq!(code, 4029, "a flood may be closed with 4029")
        }
        Err(e) => panic!("expected rate_limited, got {}", report::chain(&e)),
    }
    other.ping().await.expect("others carry on");
}

/// A member that does not read is closed with 4008 while the others receive everything.
///
/// The sender stops as soon as the node counts a dropped slow consumer (or after `MAX` messages),
/// then the slow member reads what is queued for it and must find the 4008 close behind it.
pub async fn slow_consumer_is_dropped_others_carry_on(t: &Topology, a: usize, b: usize) {
    const MAX: usize = 4000;
    let room = name("room");
    let mut sender = connect(t, a, &name("sender")).await;
    let mut fast = connect(t, b, &name("fast")).await;
    let mut slow = ChatClient::connect_with(
        &t.node_ws_url(a),
        ConnectOptions {
            recv_buffer: Some(4096),
            ..t.options(&name("slow"))
        },
    )
    .await
    .expect("connect slow");
    for c in [&mut sender, &mut fast, &mut slow] {
        c.join(&room, None).await.expect("join");
    }
    let reader = {
        let room = room.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let m = fast.wait_message(&room, |_| true, T).await?;
                let end = m.body == "end";
                got.push(m);
                if end {
                    return Ok::<_, Error>(got);
                }
            }
        })
    };
    let body = "z".repeat(3900);
    let mut sent = 0;
    while sent < MAX {
        // Pipelined in batches of 10 (well inside the outbound queue), then wait for the last ack.
        for _ in 0..10 {
            let frame = json!({"type": "send", "room": room, "body": format!("{sent}:{body}")});
            sender.send_frame(&frame).await.expect("sender carries on");
            sent += 1;
        }
        let last = sent as u64;
        sender
            .wait_for(
                |f| frame_type(f) == Some("ack") && f["seq"] == json!(last),
                T,
            )
            .await
            .expect("sender's acks");
        sender.take_buffered();
        if metric(t, a, "slow_consumers_dropped").await > 0.0 {
            break;
        }
    }
    sender
        .send(&room, "end", None)
        .await
        .expect("sender carries on");
    let (code, reason) = slow
        .wait_closed(Duration::from_secs(30))
        .await
        .expect("slow member closed");
    assert_eq!(
        code, 4008,
        "slow consumer close code (reason {reason:?}) after {sent} messages"
    );
    let got = reader
        .await
        .expect("reader task")
        .expect("the fast member gets every message");
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert!(
        consecutive(&seqs) && seqs.len() == sent + 1,
        "fast member: every message in order"
    );
}

/// The sum of the samples of node `i`'s metrics whose name contains `name` (0 when absent).
pub async fn metric(t: &Topology, i: usize, name: &str) -> f64 {
    let url = format!("{}/metrics", t.node_http_url(i));
    let Ok(response) = reqwest::get(&url).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(key, _)| key.contains(name))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// Bad user names close with 4001; bad room names are `invalid_name`.
pub async fn invalid_names_are_refused(t: &Topology, a: usize) {
    for bad in [
        "-leading",
        "waytoolong-abcdefghijklmnopqrstuvwxyz",
        "sp%20ace",
    ] {
        // In token mode the bad name is the token's `sub`.
        let attempt = match t.token(bad) {
            Some(token) => ChatClient::connect_token(&t.node_ws_url(a), &token).await,
            None => ChatClient::connect(&t.node_ws_url(a), bad).await,
        };
        match attempt {
            Err(Error::Closed { code, .. }) => assert_eq!(code, 4001, "user {bad:?}"),
            other => panic!("user {bad:?}: expected close 4001, got {other:?}"),
        }
    }
    let mut c = connect(t, a, &name("names")).await;
    for bad in ["-room", "has space", "slash/room", &"r".repeat(65)] {
        let err = c.join(bad, None).await.expect_err("bad room");
        assert_eq!(
            err.server_code(),
            Some("invalid_name"),
            "room {bad:?}: {err}"
        );
    }
    let err = c
        .dm("-nobody", "hi", None)
        .await
        .expect_err("bad dm target");
    assert_eq!(err.server_code(), Some("invalid_name"), "{err}");
    c.join("ok.room:1_a-b", None)
        .await
        .expect("every allowed character");
}

/// Malformed, unknown, binary and out-of-room frames get their error codes; the session survives.
pub async fn bad_frames_get_error_codes(t: &Topology, a: usize) {
    let mut c = connect(t, a, &name("frames")).await;
    c.send_text("{not json").await.expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("malformed JSON is bad_frame");
    c.send_text(r#"{"room":"x"}"#).await.expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("no type is bad_frame");
    c.send_text(r#"{"type":"join","room":7}"#)
        .await
        .expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("wrong field type is bad_frame");
    c.send_binary(vec![1, 2, 3]).await.expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("binary is bad_frame");
    let reply = c
        .request(json!({"type": "teleport"}), T)
        .await
        .expect("reply");
    assert_eq!(reply["code"], json!("unknown_type"), "{reply}");
    let room = name("room");
    for frame in [
        json!({"type": "send", "room": room, "body": "x"}),
        json!({"type": "history", "room": room}),
    ] {
        let reply = c.request(frame, T).await.expect("reply");
        assert_eq!(reply["code"], json!("not_joined"), "{reply}");
    }
    c.ping().await.expect("still usable");
}

/// Without `?user=` and without `hello`, the node closes with 4002 after its 10 s wait.
pub async fn missing_hello_closes_4002(t: &Topology, a: usize) {
    let mut c = ChatClient::open(&t.node_ws_url(a)).await.expect("open");
    let (code, _) = c
        .wait_closed(Duration::from_secs(25))
        .await
        .expect("closed");
    assert_eq!(code, 4002);
}

/// With a short idle timeout, a silent connection is closed with 4003.
pub async fn idle_connection_closes_4003(t: &Topology, a: usize) {
    let mut c = connect(t, a, &name("idle")).await;
    let (code, _) = c
        .wait_closed(Duration::from_secs(30))
        .await
        .expect("closed");
    assert_eq!(code, 4003);
}

/// Read markers a room keeps (`chat-node` `READ_MARKERS_CAP`).
const READ_MARKERS_CAP: usize = 1000;

/// A room poisoned with the longest messages there are (every character escaped on the wire) and more
/// throwaway read markers than a room keeps — each claiming `u64::MAX` — stays usable: `join` answers
/// with bounded members and markers that never pass `last_seq`, every message is reachable through
/// history pages, and chat goes on. The node runs with `--handshakes-per-ip 0` (all from 127.0.0.1).
pub async fn poisoned_room_stays_usable(t: &Topology, a: usize, b: usize) {
    use futures_util::StreamExt as _;
    const LONG: u64 = 30;
    let room = name("poison");
    let mut poisoner = connect(t, a, &name("poisoner")).await;
    poisoner.join(&room, None).await.expect("join");
    let body = "\u{1}".repeat(4000);
    for i in 0..LONG {
        poisoner
            .send(&room, &body, Some(&format!("p{i}")))
            .await
            .expect("a long message");
    }
    let throwaway = READ_MARKERS_CAP + 100;
    let done = futures_util::stream::iter(0..throwaway)
        .map(|i| {
            let room = room.clone();
            async move {
                let mut c = connect(t, if i % 2 == 0 { a } else { b }, &name("tw")).await;
                c.join(&room, None).await.expect("a throwaway joins");
                c.read(&room, u64::MAX)
                    .await
                    .expect("a marker past the end");
                c.ping().await.expect("the marker was handled");
                let _ = c.close().await;
            }
        })
        .buffer_unordered(16)
        .count()
        .await;
    assert_eq!(done, throwaway);

    let mut fresh = connect(t, b, &name("fresh")).await;
    let joined = fresh
        .join(&room, None)
        .await
        .expect("join the poisoned room");
    assert_eq!(joined.last_seq, LONG);
    assert!(
        !joined.read.is_empty() && joined.read.len() <= READ_MARKERS_CAP,
        "{} markers",
        joined.read.len()
    );
    assert!(
        joined.read.values().all(|&s| s <= joined.last_seq),
        "markers never pass last_seq"
    );
    assert!(joined.members_total >= joined.members.len());
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..LONG {
        let page = fresh
            .history(&room, before, Some(200))
            .await
            .expect("a history page of long messages");
        assert!(
            !page.messages.is_empty(),
            "a page holds at least one message"
        );
        assert!(
            page.messages.iter().all(|m| m.body == body),
            "bodies arrive whole"
        );
        seen.splice(0..0, page.messages.iter().map(|m| m.seq));
        before = page.messages.first().map(|m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=LONG).collect::<Vec<_>>(),
        "every message, once, in order"
    );
    fresh
        .send(&room, "still usable", None)
        .await
        .expect("chat goes on");
    poisoner
        .wait_message(&room, |m| m.body == "still usable", T)
        .await
        .expect("and reaches the others");
}

/// A socket that keeps asking for history pages of long messages and never reads is closed as a slow
/// consumer — the node neither blocks on it nor holds its replies — while others carry on. The close
/// frame cannot reach a client that reads nothing: when it reads again it finds a 4008 close or the
/// connection reset (`PROTOCOL.md` section 7).
pub async fn a_client_that_never_reads_is_cut_loose(t: &Topology, a: usize) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let room = name("pages");
    let mut writer = connect(t, a, &name("writer")).await;
    writer.join(&room, None).await.expect("join");
    let body = "x".repeat(4000);
    for i in 0..30 {
        writer
            .send(&room, &body, Some(&format!("w{i}")))
            .await
            .expect("a long message");
    }
    let before = metric(t, a, "slow_consumers_dropped").await;
    let connections = metric(t, a, "switchboard_connections").await;
    let reader = connect(t, a, &name("noread")).await;
    let (mut tx, mut rx) = reader.into_inner().split();
    tx.send(Message::text(
        json!({"type": "join", "room": room}).to_string(),
    ))
    .await
    .expect("join");
    let ask = json!({"type": "history", "room": room, "limit": 50}).to_string();
    // Inside the rate limit, for at most 30 s: until the node gives up on the socket.
    for _ in 0..600 {
        if metric(t, a, "slow_consumers_dropped").await > before {
            break;
        }
        if tx.send(Message::text(ask.clone())).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(t, a, "slow_consumers_dropped").await > before,
        "the node closed the socket that never reads"
    );
    writer.ping().await.expect("others carry on");
    switchboard_testkit::eventually("the slot is released", Duration::from_secs(10), || async {
        (metric(t, a, "switchboard_connections").await <= connections).then_some(())
    })
    .await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break None,
            }
        }
    })
    .await
    .expect("the socket is closed, not left open");
    assert!(
        matches!(end, None | Some(4008)),
        "closed with 4008 or reset, not {end:?}"
    );
}
