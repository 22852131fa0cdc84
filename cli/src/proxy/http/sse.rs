//! The events of a `text/event-stream` answer, decoded by `sse-stream` and bounded: an
//! event over [`MAX_MESSAGE_BYTES`] is an error, never a buffer that grows without end.

use std::pin::Pin;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use sse_stream::{Sse, SseByteStream};

use super::MAX_MESSAGE_BYTES;

/// Why an event stream ended before its server closed it.
#[derive(Debug)]
pub(super) enum SseError {
    /// An event (or a line) over [`MAX_MESSAGE_BYTES`].
    TooLong,
    /// A field value that is not UTF-8 (what the SSE format requires).
    NotUtf8,
    /// The connection broke: why.
    Broke(String),
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLong => write!(f, "an event longer than {MAX_MESSAGE_BYTES} bytes"),
            SseError::NotUtf8 => write!(f, "an event that is not UTF-8"),
            SseError::Broke(why) => write!(f, "{why}"),
        }
    }
}

/// One event with data: its type (`None` when the stream gave none) and its data.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Event {
    pub(super) kind: Option<String>,
    pub(super) data: String,
}

impl Event {
    /// A JSON-RPC message of the MCP transports: the default event type, `message`.
    fn is_message(&self) -> bool {
        // An empty `event:` field is the default type too (WHATWG SSE, "dispatch").
        self.kind
            .as_deref()
            .is_none_or(|kind| kind.is_empty() || kind == "message")
    }
}

/// The events of one stream, in order.
pub(super) struct Events {
    inner: Pin<Box<dyn Stream<Item = Result<Sse, sse_stream::Error>> + Send>>,
}

impl Events {
    /// The events of a server's answer, read as they arrive.
    pub(super) fn of(response: reqwest::Response) -> Events {
        let chunks = futures_util::stream::try_unfold(response, |mut response| async move {
            Ok::<_, reqwest::Error>(response.chunk().await?.map(|chunk| (chunk, response)))
        });
        Events::from_chunks(chunks)
    }

    /// The events of a stream of byte chunks, each chunk counted against the bound
    /// before the decoder sees it.
    fn from_chunks<S, D, E>(chunks: S) -> Events
    where
        S: Stream<Item = Result<D, E>> + Send + 'static,
        D: Buf + AsRef<[u8]> + Send + 'static,
        E: std::fmt::Display,
    {
        Events::bounded(chunks, MAX_MESSAGE_BYTES)
    }

    /// As [`Self::from_chunks`], with events of at most `max` bytes.
    fn bounded<S, D, E>(chunks: S, max: usize) -> Events
    where
        S: Stream<Item = Result<D, E>> + Send + 'static,
        D: Buf + AsRef<[u8]> + Send + 'static,
        E: std::fmt::Display,
    {
        // `sse-stream` keeps an unfinished line and the data of the event being read
        // without a limit, and has no setting for one; so the bound is kept here, on its
        // input, which is where the bytes it would hold come from. It fails the stream
        // before the decoder holds more than the bound plus one chunk (hyper's reads are
        // a few hundred KiB at most).
        let mut bound = EventBound::new(max);
        let bounded = chunks.map(move |chunk| match chunk {
            Ok(chunk) => bound.feed(chunk.as_ref()).map(|()| chunk),
            Err(e) => Err(Input::Broke(e.to_string())),
        });
        Events {
            inner: Box::pin(SseByteStream::new(bounded)),
        }
    }

    /// The next event that has data; `None` when the stream has ended.
    pub(super) async fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        loop {
            let sse = match self.inner.next().await {
                None => return Ok(None),
                Some(Ok(sse)) => sse,
                Some(Err(sse_stream::Error::Body(e))) => {
                    return Err(match e.downcast_ref::<Input>() {
                        Some(Input::TooLong) => SseError::TooLong,
                        Some(Input::Broke(why)) => SseError::Broke(why.clone()),
                        None => SseError::Broke(e.to_string()),
                    });
                }
                Some(Err(sse_stream::Error::Utf8Parse(_))) => return Err(SseError::NotUtf8),
                Some(Err(e)) => return Err(SseError::Broke(e.to_string())),
            };
            // Blocks without data (only an id, a retry or an event type) carry no message.
            if let Some(data) = sse.data {
                return Ok(Some(Event {
                    kind: sse.event,
                    data,
                }));
            }
        }
    }

    /// The data of the next JSON-RPC message, skipping events of other types (a
    /// server's `ping`, say); `None` when the stream has ended.
    pub(super) async fn next_message(&mut self) -> Result<Option<String>, SseError> {
        while let Some(event) = self.next_event().await? {
            if event.is_message() {
                return Ok(Some(event.data));
            }
        }
        Ok(None)
    }
}

/// What the decoder's input stream fails with: the bound, or the connection.
#[derive(Debug)]
enum Input {
    TooLong,
    Broke(String),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::TooLong => SseError::TooLong.fmt(f),
            Input::Broke(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Input {}

/// Counts the bytes since the last event boundary (an empty line: LF, CR or CRLF line
/// endings, as the SSE format allows), and fails as soon as they pass the bound. Only
/// boundaries are looked for: the decoding stays the crate's.
struct EventBound {
    max: usize,
    since_boundary: usize,
    /// The last byte ended a line (or none came yet): a line ending now is an empty line.
    at_line_start: bool,
    /// The last byte was a CR: an LF now belongs to that line ending.
    after_cr: bool,
}

impl EventBound {
    fn new(max: usize) -> Self {
        EventBound {
            max,
            since_boundary: 0,
            at_line_start: true,
            after_cr: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Input> {
        while let Some(&first) = bytes.first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(0) => {
                    if self.at_line_start {
                        self.since_boundary = 0;
                    } else {
                        self.at_line_start = true;
                        self.since_boundary += 1;
                    }
                    self.after_cr = first == b'\r';
                    bytes = &bytes[1..];
                }
                found => {
                    let line = found.unwrap_or(bytes.len());
                    self.at_line_start = false;
                    self.since_boundary += line;
                    bytes = &bytes[line..];
                }
            }
            if self.since_boundary > self.max {
                return Err(Input::TooLong);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;

    use super::*;

    /// A bound small enough for quick tests (the real one is tested once, below).
    const SMALL: usize = 64 * 1024;

    /// The events of `chunks` under a bound of `max` bytes, as (type, data), until the
    /// end or an error.
    async fn decode_within(
        chunks: Vec<Vec<u8>>,
        max: usize,
    ) -> (Vec<(Option<String>, String)>, Option<SseError>) {
        let stream =
            futures_util::stream::iter(chunks).map(|c| Ok::<_, Infallible>(Bytes::from(c)));
        let mut events = Events::bounded(stream, max);
        let mut out = Vec::new();
        loop {
            match events.next_event().await {
                Ok(Some(e)) => out.push((e.kind, e.data)),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    async fn decode(chunks: Vec<Vec<u8>>) -> (Vec<(Option<String>, String)>, Option<SseError>) {
        decode_within(chunks, SMALL).await
    }

    fn chunks(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[tokio::test]
    async fn events_split_across_chunks() {
        let input = chunks(&[
            b"event: message\r\ndata: {\"a\"",
            b":1}\r\n\r\nid: 7\ndata: x\n",
            b"data: y\n\n: comment\n\n",
            b"event: ping\ndata: z\n\nid: 8\n\nevent: endpoint\rdata: /messages?s=1\r\r",
            b"data: unfinished at the end",
        ]);
        let (events, error) = decode(input).await;
        assert!(error.is_none());
        let message = |d: &str| (None, d.to_string());
        assert_eq!(
            events,
            [
                (Some("message".into()), "{\"a\":1}".into()),
                message("x\ny"),
                (Some("ping".into()), "z".into()),
                (Some("endpoint".into()), "/messages?s=1".into()),
            ]
        );
        // Messages only: the default type, or `message`.
        let input = b"data: 1\n\nevent: ping\ndata: 2\n\nevent:\ndata: 3\n\n";
        let mut events = Events::from_chunks(futures_util::stream::iter([Ok::<_, Infallible>(
            Bytes::from_static(input),
        )]));
        assert_eq!(events.next_message().await.unwrap().unwrap(), "1");
        assert_eq!(events.next_message().await.unwrap().unwrap(), "3");
        assert!(events.next_message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_endless_line_is_an_error_not_a_growing_buffer() {
        // One line that never ends: at most the bound (plus the chunk in hand) is taken in.
        let mut input = vec![b"data: ".to_vec()];
        input.extend((0..64).map(|_| vec![b'x'; 1024 * 1024]));
        let fed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = fed.clone();
        let stream = futures_util::stream::iter(input).map(move |c| {
            counted.fetch_add(c.len(), std::sync::atomic::Ordering::Relaxed);
            Ok::<_, Infallible>(Bytes::from(c))
        });
        let err = Events::from_chunks(stream).next_event().await.unwrap_err();
        assert!(matches!(err, SseError::TooLong));
        assert_eq!(err.to_string(), "an event longer than 16777216 bytes");
        let fed = fed.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            fed <= MAX_MESSAGE_BYTES + 1024 * 1024 + 6,
            "took {fed} bytes in"
        );
    }

    #[tokio::test]
    async fn an_event_of_many_lines_counts_them_all() {
        for ending in ["\n", "\r", "\r\n"] {
            let line = format!("data: {}{ending}", "y".repeat(1024));
            let (events, error) = decode(vec![line.into_bytes(); 100]).await;
            assert!(events.is_empty());
            assert!(matches!(error, Some(SseError::TooLong)), "{error:?}");
        }
        // Comment lines between the fields of one event count too (the decoder skips
        // them, but a server sending only those must not hold a stream for ever).
        let line = format!(": {}\n", "c".repeat(1024));
        let (_, error) = decode(vec![line.into_bytes(); 100]).await;
        assert!(matches!(error, Some(SseError::TooLong)), "{error:?}");
    }

    #[tokio::test]
    async fn each_event_starts_from_nothing_again() {
        // 3 x 40 events, 40 times the bound in all, in every line-ending style, arrive whole.
        let data = "y".repeat(SMALL - 16);
        let mut input = Vec::new();
        for ending in ["\n", "\r\n", "\r"] {
            for _ in 0..40 {
                input.push(format!("data: {data}{ending}").into_bytes());
                input.push(ending.as_bytes().to_vec());
            }
        }
        let (events, error) = decode(input).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(events.len(), 120);
        assert!(events.iter().all(|(_, d)| d.len() == data.len()));
        // Right at the bound is an event; one byte over is not, even in a chunk of its own.
        let at = |n: usize| format!("data: {}\n\n", "z".repeat(n - "data: \n".len()));
        let (events, error) = decode(vec![at(SMALL).into_bytes()]).await;
        assert!(error.is_none() && events.len() == 1, "{error:?}");
        let (_, error) = decode(vec![at(SMALL + 1).into_bytes()]).await;
        assert!(matches!(error, Some(SseError::TooLong)), "{error:?}");
        // Keep-alive comments between events hold nothing either.
        let (events, error) = decode(vec![b": ping\n\n".to_vec(); SMALL]).await;
        assert!(error.is_none() && events.is_empty(), "{error:?}");
    }

    #[tokio::test]
    async fn a_broken_connection_or_bad_bytes_say_so() {
        let stream = futures_util::stream::iter([
            Ok(Bytes::from_static(b"data: 1\n\n")),
            Err("connection reset"),
            Ok(Bytes::from_static(b"data: 2\n\n")),
        ]);
        let mut events = Events::from_chunks(stream);
        assert_eq!(events.next_message().await.unwrap().unwrap(), "1");
        let err = events.next_message().await.unwrap_err();
        assert_eq!(err.to_string(), "connection reset");
        let (_, error) = decode(vec![b"data: \xff\xfe\n\n".to_vec()]).await;
        assert!(matches!(error, Some(SseError::NotUtf8)), "{error:?}");
    }
}
