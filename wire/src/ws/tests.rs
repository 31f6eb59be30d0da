use super::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;

/// A client frame: masked with a fixed key.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    unmask_into(&mut out, payload, mask);
    out
}

/// What a reader makes of `bytes` (written in pieces of `piece` bytes, then end of stream).
async fn read_all(bytes: Vec<u8>, piece: usize, max: usize) -> Vec<Result<Message, String>> {
    let (mut client, server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(piece) {
            if client.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut reader = WsReader::new(server, max);
    let mut got = Vec::new();
    while let Some(m) = reader.next().await {
        got.push(m.map_err(|e| e.to_string()));
    }
    writer.abort();
    got
}

fn text(s: &str) -> Result<Message, String> {
    Ok(Message::Text(Utf8Bytes::from(s.to_owned())))
}

#[tokio::test]
async fn messages_are_read_whole_however_the_bytes_arrive() {
    let big = "x".repeat(70_000);
    let mut bytes = client_frame(true, OP_TEXT, b"hello");
    bytes.extend(client_frame(false, OP_TEXT, b"frag"));
    bytes.extend(client_frame(true, OP_PING, b"p"));
    bytes.extend(client_frame(false, OP_CONTINUATION, b"men"));
    bytes.extend(client_frame(true, OP_CONTINUATION, b"ted"));
    bytes.extend(client_frame(true, OP_TEXT, "é".repeat(100).as_bytes()));
    bytes.extend(client_frame(true, OP_TEXT, big.as_bytes()));
    bytes.extend(client_frame(true, OP_BINARY, b"\x00\x01"));
    bytes.extend(client_frame(true, OP_PONG, b""));
    bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
    let want = vec![
        text("hello"),
        Ok(Message::Ping(Bytes::from_static(b"p"))),
        text("fragmented"),
        text(&"é".repeat(100)),
        text(&big),
        Ok(Message::Binary),
        Ok(Message::Pong(Bytes::new())),
        Ok(Message::Close(None)),
    ];
    for piece in [1, 3, 7, 64, 100_000] {
        assert_eq!(
            read_all(bytes.clone(), piece, 100_000).await,
            want,
            "in pieces of {piece}"
        );
    }
}

#[tokio::test]
async fn violations_end_the_stream_with_their_error() {
    let unmasked = {
        let mut f = client_frame(true, OP_TEXT, b"hi");
        f[1] &= 0x7f;
        f
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (unmasked, "client frames must be masked"),
        (
            client_frame(true, OP_TEXT, &[b'a'; 101]),
            "message larger than the limit",
        ),
        (
            [
                client_frame(false, OP_TEXT, &[b'a'; 60]),
                client_frame(true, OP_CONTINUATION, &[b'a'; 60]),
            ]
            .concat(),
            "message larger than the limit",
        ),
        (
            client_frame(true, OP_TEXT, b"\xff\xfe"),
            "text message is not UTF-8",
        ),
        (
            client_frame(true, OP_CONTINUATION, b"x"),
            "continuation without a message",
        ),
        (
            [
                client_frame(false, OP_TEXT, b"a"),
                client_frame(true, OP_TEXT, b"b"),
            ]
            .concat(),
            "new message inside a fragmented one",
        ),
        (
            client_frame(false, OP_PING, b""),
            "fragmented control frame",
        ),
        (
            client_frame(true, OP_PING, &[0; 126]),
            "control frame longer than 125 bytes",
        ),
        (client_frame(true, 0x3, b""), "unknown opcode"),
        (
            {
                let mut f = client_frame(true, OP_TEXT, b"hi");
                f[0] |= 0x40;
                f
            },
            "reserved bits set",
        ),
    ];
    for (bytes, what) in cases {
        let got = read_all(bytes, 5, 100).await;
        assert_eq!(got.len(), 1, "{what}: one error, then nothing: {got:?}");
        let err = got[0].as_ref().expect_err(what);
        assert!(err.contains(what), "{err} should say {what}");
    }
}

#[tokio::test]
async fn a_frame_cut_short_by_the_end_of_the_stream_is_an_error_and_a_clean_end_is_none() {
    let frame = client_frame(true, OP_TEXT, b"hello");
    let got = read_all(frame[..frame.len() - 1].to_vec(), 4, 100).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].as_ref().is_err_and(|e| e.contains("socket")));
    assert_eq!(read_all(Vec::new(), 4, 100).await, vec![]);
}

#[tokio::test]
async fn an_idle_reader_holds_no_buffer() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut reader = WsReader::new(server, 1000);
    let frame = client_frame(true, OP_TEXT, b"hello");
    // A frame in two parts: the first part is held, then nothing once it is whole.
    client.write_all(&frame[..4]).await.expect("write");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(20), reader.next())
            .await
            .is_err()
    );
    assert!(reader.pending.capacity() > 0, "an unfinished frame is held");
    client.write_all(&frame[4..]).await.expect("write");
    assert_eq!(
        reader.next().await.map(|m| m.map_err(|e| e.to_string())),
        Some(text("hello"))
    );
    assert_eq!(reader.pending.capacity(), 0);
    assert_eq!(reader.partial.capacity(), 0);
}

#[tokio::test]
async fn a_tungstenite_client_talks_with_the_node_framing() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let (read, write) = tokio::io::split(server_io);
    let mut reader = WsReader::new(read, 1 << 20);
    let mut writer = WsWriter::new(write);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;

    let long = "y".repeat(70_000);
    for body in ["hi", &"z".repeat(300), &long] {
        client
            .send(tungstenite::Message::text(body))
            .await
            .expect("client send");
        let got = reader.next().await.expect("a message").expect("valid");
        assert_eq!(got, Message::Text(Utf8Bytes::from(body.to_owned())));
    }
    client
        .send(tungstenite::Message::Ping(Bytes::from_static(
            b"are you there",
        )))
        .await
        .expect("ping");
    assert_eq!(
        reader.next().await.expect("a message").expect("valid"),
        Message::Ping(Bytes::from_static(b"are you there"))
    );

    // A batch of frames, written once.
    for body in ["one", &"two".repeat(50), &long] {
        writer
            .feed(Message::Text(Utf8Bytes::from(body.to_owned())))
            .await
            .expect("feed");
    }
    writer
        .feed(Message::Pong(Bytes::from_static(b"are you there")))
        .await
        .expect("pong");
    writer
        .feed(Message::Ping(Bytes::new()))
        .await
        .expect("ping");
    writer.flush().await.expect("flush");
    assert_eq!(writer.buf.capacity(), 0, "nothing held once written");
    for body in ["one", &"two".repeat(50), &long] {
        let got = client.next().await.expect("a message").expect("valid");
        assert_eq!(got, tungstenite::Message::text(body));
    }
    assert_eq!(
        client.next().await.expect("pong").expect("valid"),
        tungstenite::Message::Pong(Bytes::from_static(b"are you there"))
    );
    // tungstenite answers the ping by itself on its next read.
    assert!(matches!(
        client.next().await.expect("ping").expect("valid"),
        tungstenite::Message::Ping(_)
    ));
    writer
        .send(Message::Close(Some((4008, "slow consumer"))))
        .await
        .expect("close");
    match client.next().await.expect("close").expect("valid") {
        tungstenite::Message::Close(Some(c)) => {
            assert_eq!(u16::from(c.code), 4008);
            assert_eq!(c.reason.as_str(), "slow consumer");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[test]
fn a_long_close_reason_is_cut_at_a_character_boundary_within_the_control_frame_limit() {
    let reason: &'static str = Box::leak("é".repeat(100).into_boxed_str());
    let mut writer = WsWriter::new(Vec::<u8>::new());
    Pin::new(&mut writer)
        .start_send(Message::Close(Some((1000, reason))))
        .expect("encode");
    let frame = &writer.buf;
    assert_eq!(frame[0], 0x88);
    let len = usize::from(frame[1]);
    assert!(len <= MAX_CONTROL);
    assert_eq!(frame.len(), 2 + len);
    assert!(std::str::from_utf8(&frame[4..]).is_ok());
}
