//! Validation of the names a client chooses: user names, room names and client message ids.
//!
//! Names end up in Redis keys and channel names, so the rules are strict and ASCII-only; they are
//! documented in `PROTOCOL.md` section 2 and enforced here, in one place.

/// Longest user name accepted.
pub const MAX_USER_LEN: usize = 32;
/// Longest room name accepted.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest client-chosen message id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 64;

fn valid(name: &str, max: usize, extra: &[u8]) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(b))
}

/// A user name: 1–32 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub fn valid_user(name: &str) -> bool {
    valid(name, MAX_USER_LEN, b"_.-")
}

/// A room name: 1–64 of `A-Z a-z 0-9 _ . - :`, starting with a letter or digit.
pub fn valid_room(name: &str) -> bool {
    valid(name, MAX_ROOM_LEN, b"_.-:")
}

/// Rooms whose names start with this are private: only users whose token grants the room (the
/// `rooms` claim) may join them, and with them read their history, members and read markers.
pub const PRIVATE_ROOM_PREFIX: &str = "private:";

/// Whether `room` is a private room.
pub fn is_private_room(room: &str) -> bool {
    room.starts_with(PRIVATE_ROOM_PREFIX)
}

/// A client message id: 1–64 printable ASCII characters other than space, `"` and `\`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_the_documented_rules() {
        assert!(valid_user("alice"));
        assert!(valid_user("a"));
        assert!(valid_user("Bob_2.x-y"));
        assert!(valid_user(&"a".repeat(32)));
        assert!(!valid_user(&"a".repeat(33)));
        assert!(!valid_user(""));
        assert!(!valid_user("_alice"));
        assert!(!valid_user("al ice"));
        assert!(!valid_user("al:ice"));
        assert!(!valid_user("élise"));
        assert!(!valid_user("a|b"));
    }

    #[test]
    fn room_names_allow_colons() {
        assert!(valid_room("team:general"));
        assert!(!valid_room(":general"));
        assert!(!valid_room(&"r".repeat(65)));
        assert!(!valid_room("a b"));
        assert!(!valid_room("a*"));
    }

    #[test]
    fn client_ids_reject_quotes_and_spaces() {
        assert!(valid_client_id("c-1"));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("a b"));
        assert!(!valid_client_id("a\"b"));
        assert!(!valid_client_id(&"x".repeat(65)));
    }
}
