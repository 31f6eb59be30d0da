//! The properties the fuzz targets check, in one place: libFuzzer runs them on generated inputs
//! (`fuzz_targets/`), and chat-node's test suite runs them on every kept input under `corpus/` on the
//! stable toolchain (`wire/tests/fuzz_corpus.rs`), so a crash input saved there stays a test.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use switchboard_wire::auth::Authenticator;
use switchboard_wire::identity::identify_hello;
use switchboard_wire::names::valid_user;
use switchboard_wire::protocol::parse;

/// Longest `req` the node echoes, in characters (PROTOCOL.md section 3).
const MAX_REQ_CHARS: usize = 64;
const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b";
const OTHER_SECRET: &[u8] = b"another-secret-another-secret-32b";

/// What an input came to, so the corpus test can see that the seeds reach both outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not an input the target looks at (not UTF-8, an unused mode byte).
    Skipped,
    /// A frame / an identity.
    Accepted,
    /// A refusal.
    Refused,
}

fn verdict<T, E>(result: &Result<T, E>) -> Verdict {
    if result.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// Client frames → `switchboard_wire::protocol::parse`: any text a client can send as a WebSocket text
/// frame is either a frame or a precise refusal, never a panic, and an echoed `req` is a number or a
/// short string.
pub fn frame(data: &[u8]) -> Verdict {
    // WebSocket text frames are UTF-8 (the library refuses anything else before the parser sees it).
    let Ok(text) = std::str::from_utf8(data) else {
        return Verdict::Skipped;
    };
    let parsed = parse(text);
    let outcome = verdict(&parsed);
    let req = match parsed {
        Ok((_, req)) | Err((_, req)) => req,
    };
    match req {
        None | Some(Value::Number(_)) => {}
        Some(Value::String(s)) => {
            assert!(s.chars().count() <= MAX_REQ_CHARS, "req echoed unbounded")
        }
        Some(other) => panic!("req of an unexpected kind: {other}"),
    }
    outcome
}

/// The handshake: the first frame through `switchboard_wire::identity::identify_hello`, in open mode and in
/// token mode with an HS256 key. The first byte picks what the rest is:
/// - `0`: the frame text itself, given to an open node and to a token node;
/// - `1`: a token's header and claims JSON (split at the first NUL byte), signed with the node's
///   secret, so verification reaches the claim checks (`exp`, `nbf`, `sub`, `rooms`, …);
/// - `2`: the same, signed with another secret: a forged token, which must always be refused.
///
/// The verdict is the open node's (mode `0`) or the token node's (`1`, `2`).
pub fn hello(data: &[u8]) -> Verdict {
    let Some((&mode, rest)) = data.split_first() else {
        return Verdict::Skipped;
    };
    match mode {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return Verdict::Skipped;
            };
            let open = runtime().block_on(identify_hello(&Authenticator::Open, text));
            if let Ok(identity) = &open {
                assert!(
                    valid_user(&identity.user),
                    "open mode accepted {:?}",
                    identity.user
                );
            }
            if let Ok(identity) = runtime().block_on(identify_hello(token_node(), text)) {
                panic!(
                    "a hello without a token we signed was accepted as {:?}",
                    identity.user
                );
            }
            verdict(&open)
        }
        1 | 2 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let secret = if mode == 1 { SECRET } else { OTHER_SECRET };
            let frame = serde_json::json!({"type": "hello", "token": sign(header, claims, secret)});
            let token = runtime().block_on(identify_hello(token_node(), &frame.to_string()));
            match &token {
                Ok(identity) if mode == 1 => {
                    assert!(
                        valid_user(&identity.user),
                        "token accepted for {:?}",
                        identity.user
                    );
                    assert!(
                        identity.expires_at.is_some(),
                        "a token session without expiry"
                    );
                }
                Ok(identity) => panic!("a forged token was accepted as {:?}", identity.user),
                Err(_) => {}
            }
            verdict(&token)
        }
        _ => Verdict::Skipped,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

fn token_node() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| Authenticator::hmac(SECRET))
}

/// An HS256 JWT over the raw `header` and `claims` bytes.
fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Longest message the `ws` target's reader accepts.
const WS_MAX: usize = 1024;

/// Bytes a client sends on an upgraded socket → `switchboard_wire::ws::WsReader`: any input comes to
/// messages and at most one error, then the end, never a panic or a hang; a text message is UTF-8 (by
/// its type) and within the limit, a control frame's payload at most 125 bytes, and no message is made
/// out of nothing (each takes at least a two-byte header of the input).
pub fn ws(data: &[u8]) -> Verdict {
    use futures_util::StreamExt as _;
    use switchboard_wire::ws::{Message, WsReader};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return Verdict::Skipped;
    };
    runtime.block_on(async {
        let mut reader = WsReader::new(data, WS_MAX);
        let (mut messages, mut errors) = (0, 0);
        while let Some(next) = reader.next().await {
            match next {
                Ok(Message::Text(t)) => assert!(t.len() <= WS_MAX, "text over the limit"),
                Ok(Message::Ping(p) | Message::Pong(p)) => {
                    assert!(p.len() <= 125, "control payload over 125 bytes")
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
            messages += 1;
            assert!(
                2 * messages <= data.len() + 2,
                "more messages than the input holds"
            );
        }
        assert!(errors <= 1, "the stream goes on after an error");
        if errors == 0 && messages > 0 {
            Verdict::Accepted
        } else {
            Verdict::Refused
        }
    })
}
