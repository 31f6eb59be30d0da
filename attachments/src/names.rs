//! File names as clients give them, made safe to store, show and put in a `Content-Disposition`.

/// Longest file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A file name safe to keep and show: no directory part, no control characters, quotes, slashes or
/// backslashes (each becomes `_`), no leading dots (no hidden or `..` names), trimmed, at most
/// [`MAX_NAME_CHARS`] characters, never empty (`file`).
pub fn sanitize(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '"' | '\'' | '/' | '\\' | '<' | '>' | '`') {
                '_'
            } else {
                c
            }
        })
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        "file".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// The name as one URL path segment (percent-encoded UTF-8; unreserved characters kept).
pub fn url_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `Content-Disposition` value (`inline` or `attachment`) with the name as RFC 8187 `filename*` and
/// an ASCII fallback.
pub fn content_disposition(inline: bool, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        url_segment(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_controls_quotes_and_dots_are_taken_out() {
        assert_eq!(sanitize("../../etc/passwd"), "passwd");
        assert_eq!(sanitize("C:\\Users\\me\\cat.png"), "cat.png");
        assert_eq!(sanitize("a\"b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitize("..."), "file");
        assert_eq!(sanitize(".bashrc"), "bashrc");
        assert_eq!(sanitize("   "), "file");
        assert_eq!(sanitize("<script>.html"), "_script_.html");
        assert_eq!(sanitize("Ünïcødé 写真.jpg"), "Ünïcødé 写真.jpg");
        assert_eq!(sanitize(&"x".repeat(400)).chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn disposition_carries_the_name_encoded() {
        assert_eq!(
            content_disposition(false, "写 a.txt"),
            "attachment; filename=\"_ a.txt\"; filename*=UTF-8''%E5%86%99%20a.txt"
        );
        assert!(content_disposition(true, "a.png").starts_with("inline;"));
    }
}
