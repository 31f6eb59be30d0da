//! WebSocket framing (RFC 6455) on an upgraded socket, holding no buffer while the connection is idle.
//!
//! ```text
//!  socket ──read (into this thread's scratch)──▶ [bytes of an unfinished frame] ──▶ WsReader ──▶ Message
//!  Message ──▶ WsWriter ──▶ [frames of one batch] ──write──▶ socket     (the batch's buffer freed after)
//! ```
//!
//! An idle connection is most of what a chat node holds, so neither half keeps a buffer between frames:
//! the reader reads into a scratch buffer of its thread and keeps only the bytes of a frame that has not
//! arrived whole (given back as soon as it has); the writer encodes the frames of one batch into a buffer
//! it frees once they are written (one write for the batch). What is left per connection is the two
//! halves' small state and the socket.
//!
//! Server side only, no extensions: client frames must be masked, control frames short and unfragmented;
//! a message (whole or in fragments) longer than the limit is refused as soon as its header says so
//! ([`WsError::TooBig`], close 1009), other protocol violations are [`WsError::Protocol`] (1002) and a text
//! message that is not UTF-8 is [`WsError::InvalidUtf8`] (1007). Pings are answered by the connection (the
//! reader hands them up, see `chat_node::connection::WsMessage::pong_payload`).

use bytes::Bytes;
use futures_util::{Sink, Stream};
use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::Utf8Bytes;

/// Bytes read from the socket per system call at most (the size of each thread's scratch buffer).
const SCRATCH: usize = 16 * 1024;

/// Encoded bytes a batch may gather before the writer writes them out even if more are coming.
const WRITE_BATCH: usize = 64 * 1024;

/// Longest payload of a control frame (RFC 6455 section 5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A WebSocket message, received or to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message (its content is not kept: the protocol refuses binary).
    Binary,
    /// A ping, with its payload.
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// A close frame: its code and reason when sent by the node (a received one's are not kept).
    Close(Option<(u16, &'static str)>),
}

/// Why reading a message failed.
#[derive(Debug)]
pub enum WsError {
    /// A message or frame longer than the limit (close 1009).
    TooBig,
    /// A violation of RFC 6455 (close 1002).
    Protocol(&'static str),
    /// A text message that is not UTF-8 (close 1007).
    InvalidUtf8,
    /// The socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::TooBig => f.write_str("message larger than the limit"),
            WsError::Protocol(what) => write!(f, "WebSocket protocol violation: {what}"),
            WsError::InvalidUtf8 => f.write_str("text message is not UTF-8"),
            WsError::Io(e) => write!(f, "socket: {e}"),
        }
    }
}

impl std::error::Error for WsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WsError::Io(e) => Some(e),
            _ => None,
        }
    }
}

thread_local! {
    /// Where every connection served by this thread reads its socket into.
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// The reading half: a [`Stream`] of the client's messages.
pub struct WsReader<R> {
    io: R,
    /// Bytes read and not yet taken as frames, from `start` on (empty, without capacity, between frames).
    pending: Vec<u8>,
    start: usize,
    /// The fragments so far of a message arriving in several frames (empty, without capacity, else).
    partial: Vec<u8>,
    /// The opcode of that message (`OP_TEXT` or `OP_BINARY`), or 0 when none is arriving.
    partial_op: u8,
    /// Longest message (and frame) accepted.
    max: usize,
    /// The stream ended (the socket closed or failed, or a violation was reported).
    done: bool,
}

/// A frame's header, parsed.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Offset of the payload from the start of the frame, and the payload's length.
    offset: usize,
    len: usize,
}

/// Parses the header at the start of `buf`: `None` until it is all there.
fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol(
            "reserved bits set (no extension was agreed)",
        ));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let (len, mut offset) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    match opcode {
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if len > MAX_CONTROL as u64 {
                return Err(WsError::Protocol("control frame longer than 125 bytes"));
            }
        }
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        _ => return Err(WsError::Protocol("unknown opcode")),
    }
    if len > max as u64 {
        return Err(WsError::TooBig);
    }
    let Some(mask) = buf
        .get(offset..offset + 4)
        .and_then(|m| <[u8; 4]>::try_from(m).ok())
    else {
        return Ok(None);
    };
    offset += 4;
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        offset,
        len: len as usize,
    }))
}

/// Appends `payload` unmasked with `mask` to `out`.
fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

impl<R> WsReader<R> {
    /// Reads messages of at most `max` bytes from `io`.
    pub fn new(io: R, max: usize) -> Self {
        Self {
            io,
            pending: Vec::new(),
            start: 0,
            partial: Vec::new(),
            partial_op: 0,
            max,
            done: false,
        }
    }

    /// The next message among the bytes already read, if one is whole.
    fn take_message(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let buf = &self.pending[self.start..];
            let Some(h) = parse_header(buf, self.max)? else {
                return Ok(None);
            };
            let Some(payload) = buf.get(h.offset..h.offset + h.len) else {
                return Ok(None);
            };
            let mut data = Vec::with_capacity(payload.len());
            unmask_into(&mut data, payload, h.mask);
            self.start += h.offset + h.len;
            if self.start == self.pending.len() {
                // Every byte read is taken: hold nothing until the next one arrives.
                self.pending = Vec::new();
                self.start = 0;
            }
            let (op, data) = match h.opcode {
                OP_PING => return Ok(Some(Message::Ping(data.into()))),
                OP_PONG => return Ok(Some(Message::Pong(data.into()))),
                OP_CLOSE => return Ok(Some(Message::Close(None))),
                OP_CONTINUATION => {
                    if self.partial_op == 0 {
                        return Err(WsError::Protocol("continuation without a message"));
                    }
                    if self.partial.len() + data.len() > self.max {
                        return Err(WsError::TooBig);
                    }
                    self.partial.extend_from_slice(&data);
                    if !h.fin {
                        continue;
                    }
                    let op = std::mem::replace(&mut self.partial_op, 0);
                    (op, std::mem::take(&mut self.partial))
                }
                op => {
                    if self.partial_op != 0 {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    if !h.fin {
                        self.partial_op = op;
                        self.partial = data;
                        continue;
                    }
                    (op, data)
                }
            };
            return Ok(Some(if op == OP_TEXT {
                Message::Text(
                    Utf8Bytes::try_from(Bytes::from(data)).map_err(|_| WsError::InvalidUtf8)?,
                )
            } else {
                Message::Binary
            }));
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for WsReader<R> {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.take_message() {
                Ok(Some(m)) => return Poll::Ready(Some(Ok(m))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.start > 0 {
                this.pending.drain(..this.start);
                this.start = 0;
            }
            let read = SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => {
                        this.pending.extend_from_slice(buf.filled());
                        Poll::Ready(Ok(buf.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match ready!(read) {
                Ok(0) => {
                    this.done = true;
                    if this.pending.is_empty() && this.partial_op == 0 {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(WsError::Io(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(WsError::Io(e))));
                }
            }
        }
    }
}

/// The writing half: a [`Sink`] of the node's messages. Frames are encoded into one buffer until a
/// flush writes them out and frees it.
pub struct WsWriter<W> {
    io: W,
    buf: Vec<u8>,
    written: usize,
}

impl<W> WsWriter<W> {
    /// Writes frames to `io`.
    pub fn new(io: W) -> Self {
        Self {
            io,
            buf: Vec::new(),
            written: 0,
        }
    }
}

/// Appends one unmasked frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[&[u8]]) {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    out.reserve(len + 10);
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    for p in payload {
        out.extend_from_slice(p);
    }
}

impl<W: AsyncWrite + Unpin> WsWriter<W> {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        // Written: hold nothing until the next batch.
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> Sink<Message> for WsWriter<W> {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.buf.len() >= WRITE_BATCH {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let buf = &mut self.buf;
        match item {
            Message::Text(t) => encode_frame(buf, OP_TEXT, &[t.as_bytes()]),
            Message::Binary => encode_frame(buf, OP_BINARY, &[]),
            Message::Ping(p) => encode_frame(buf, OP_PING, &[&p[..p.len().min(MAX_CONTROL)]]),
            Message::Pong(p) => encode_frame(buf, OP_PONG, &[&p[..p.len().min(MAX_CONTROL)]]),
            Message::Close(None) => encode_frame(buf, OP_CLOSE, &[]),
            Message::Close(Some((code, reason))) => {
                let mut cut = reason.len().min(MAX_CONTROL - 2);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                encode_frame(
                    buf,
                    OP_CLOSE,
                    &[&code.to_be_bytes(), &reason.as_bytes()[..cut]],
                );
            }
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
