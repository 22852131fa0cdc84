//! Line framing with a size cap, so one hostile peer cannot make the daemon buffer without
//! bound.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Largest line either side accepts, newline excluded: 1 MiB.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a line longer than {MAX_FRAME_BYTES} bytes was sent")]
    TooLarge,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads newline-terminated frames from a buffered stream.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    /// When the first byte of the line being read arrived (a peer that starts a line and
    /// never ends it holds a connection as surely as one that sends nothing). Tokio's
    /// clock, as the time limits it is compared with (and paused with them in tests).
    line_started: Option<tokio::time::Instant>,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_FRAME_BYTES)
    }

    pub fn with_limit(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            max,
            line_started: None,
        }
    }

    /// When the line read in part began, if one is.
    pub fn line_started(&self) -> Option<tokio::time::Instant> {
        self.line_started
    }

    /// The buffered stream, e.g. to read and drop what a peer still sends after an error.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next frame without its line ending, or `None` at a clean end of stream.
    /// Blank lines are skipped. After `TooLarge` the stream is out of sync: close it.
    ///
    /// Cancel-safe: a line read in part stays buffered here, so the call can be a branch
    /// of `select!` and the next call goes on where this one stopped.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                // A last line without a newline still counts.
                return Ok(self.take_line());
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if self.buf.len() + chunk.len() > self.max {
                return Err(FrameError::TooLarge);
            }
            if self.line_started.is_none() && !chunk.iter().all(u8::is_ascii_whitespace) {
                self.line_started = Some(tokio::time::Instant::now());
            }
            self.buf.extend_from_slice(chunk);
            let used = done.unwrap_or(available.len());
            self.inner.consume(used);
            if done.is_some()
                && let Some(line) = self.take_line()
            {
                return Ok(Some(line));
            }
        }
    }

    /// The buffered line without a trailing `\r`, or `None` (and an empty buffer) when
    /// it is blank.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        self.line_started = None;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            self.buf.clear();
            return None;
        }
        Some(std::mem::take(&mut self.buf))
    }
}

/// Writes one value as a single line and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: serde::Serialize>(
    writer: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_line(writer, line).await
}

/// Writes an already serialized value (no newline in it) as one line and flushes it.
pub async fn write_line<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut line: Vec<u8>,
) -> std::io::Result<()> {
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn splits_lines_and_skips_blank_ones() {
        let data: &[u8] = b"{\"a\":1}\r\n\n  \n{\"b\":2}\nlast";
        let mut r = FrameReader::new(BufReader::with_capacity(3, data));
        assert_eq!(r.next_frame().await.unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(r.next_frame().await.unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(r.next_frame().await.unwrap().unwrap(), b"last");
        assert!(r.next_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_read_cancelled_mid_line_loses_nothing() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = FrameReader::new(BufReader::new(rx));
        tx.write_all(b"{\"first\":").await.unwrap();
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.next_frame()).await;
        assert!(cancelled.is_err(), "no whole line yet");
        tx.write_all(b"1}\n").await.unwrap();
        assert_eq!(r.next_frame().await.unwrap().unwrap(), b"{\"first\":1}");
    }

    #[tokio::test]
    async fn knows_when_an_unfinished_line_began() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = FrameReader::new(BufReader::new(rx));
        assert!(r.line_started().is_none());
        tx.write_all(b"\n  \n").await.unwrap();
        let blank =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.next_frame()).await;
        assert!(
            blank.is_err() && r.line_started().is_none(),
            "blank lines start nothing"
        );
        tx.write_all(b"{\"half\":").await.unwrap();
        let half = tokio::time::timeout(std::time::Duration::from_millis(20), r.next_frame()).await;
        assert!(half.is_err());
        let began = r.line_started().expect("a line has begun");
        tx.write_all(b"1}\n").await.unwrap();
        assert_eq!(r.next_frame().await.unwrap().unwrap(), b"{\"half\":1}");
        assert!(r.line_started().is_none(), "and ended");
        assert!(began.elapsed() < std::time::Duration::from_secs(5));
    }

    #[tokio::test]
    async fn refuses_an_oversized_line_without_buffering_it() {
        let data = [b'x'; 100];
        let mut r = FrameReader::with_limit(BufReader::with_capacity(8, &data[..]), 50);
        assert!(matches!(r.next_frame().await, Err(FrameError::TooLarge)));
    }

    #[tokio::test]
    async fn a_line_exactly_at_the_cap_is_accepted() {
        let mut data = vec![b'x'; 50];
        data.push(b'\n');
        let mut r = FrameReader::with_limit(BufReader::new(&data[..]), 50);
        assert_eq!(r.next_frame().await.unwrap().unwrap().len(), 50);
    }
}
