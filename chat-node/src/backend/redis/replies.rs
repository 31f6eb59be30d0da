//! Reading script replies: numbers, flat `id, frame, …` lists of stored entries, and the post result
//! `"seq|id|ts"`. A reply of the wrong shape is [`Error::Protocol`], never a panic.

use super::super::{Error, Posted, Result, Stored};
use fred::types::Value;
use tungstenite::Utf8Bytes;

/// A non-negative integer from an integer, a double or a numeric string reply; 0 otherwise.
pub(super) fn to_u64(v: &Value) -> u64 {
    match v {
        Value::Integer(i) => (*i).max(0) as u64,
        Value::Double(d) => d.max(0.0) as u64,
        other => other
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |f| f.max(0.0) as u64),
    }
}

/// The sequence of a stream entry id `"<seq>-1"`.
pub(super) fn seq_of_id(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An array reply (nil reads as empty).
pub(super) fn into_array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        other => Err(Error::Protocol(format!(
            "expected an array, got {:?}",
            other.kind()
        ))),
    }
}

/// Stored entries from a flat `id, frame, id, frame, …` reply.
pub(super) fn stored_pairs(v: Value) -> Result<Vec<Stored>> {
    let arr = into_array(v)?;
    let mut out = Vec::with_capacity(arr.len() / 2);
    let mut it = arr.into_iter();
    while let (Some(id), Some(frame)) = (it.next(), it.next()) {
        let seq = id.as_str().map(|s| seq_of_id(&s)).unwrap_or(0);
        let bytes = frame
            .into_bytes()
            .ok_or_else(|| Error::Protocol("history entry without a frame".into()))?;
        let frame = Utf8Bytes::try_from(bytes)
            .map_err(|_| Error::Protocol("history frame is not UTF-8".into()))?;
        out.push(Stored { seq, frame });
    }
    Ok(out)
}

/// The reply of `post.lua`: the outcome, and the `"<seq> <frame>"` payload when the script left the
/// publish to the caller.
pub(super) fn parse_posted(v: Value) -> Result<(Posted, Option<bytes::Bytes>)> {
    let mut arr = into_array(v)?;
    let payload = if arr.len() > 2 {
        arr.pop().and_then(Value::into_bytes)
    } else {
        None
    };
    let fresh = arr.first().map(to_u64) == Some(1);
    let text = arr
        .get(1)
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::Protocol("post result without a body".into()))?;
    let mut parts = text.splitn(3, '|');
    let (Some(seq), Some(id), Some(ts)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Protocol(format!("malformed post result {text:?}")));
    };
    let posted = Posted {
        seq: seq.parse().map_err(|_| Error::Protocol("bad seq".into()))?,
        id: id.to_owned(),
        ts: ts.parse().map_err(|_| Error::Protocol("bad ts".into()))?,
        duplicate: !fresh,
    };
    Ok((posted, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_results_parse() {
        let v = Value::Array(vec![Value::Integer(0), Value::String("7|abc|123".into())]);
        assert_eq!(
            parse_posted(v).ok(),
            Some((
                Posted {
                    seq: 7,
                    id: "abc".into(),
                    ts: 123,
                    duplicate: true
                },
                None
            ))
        );
        assert_eq!(seq_of_id("42-1"), 42);
    }
}
