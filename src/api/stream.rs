//! Bridges between streamed HTTP bodies and the blocking readers and writers of archive code
//! (image load and save, container copies and exports).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

/// Reads a request body, chunk by chunk, from a blocking task.
pub struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl ChannelReader {
    /// Starts forwarding `body`. Once the reader is dropped (the work failed), the rest of the
    /// upload is still read and dropped, so the client finishes sending and reads the error
    /// instead of a broken pipe.
    pub fn of(mut body: Body) -> ChannelReader {
        let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(16);
        tokio::spawn(async move {
            let mut forwarding = true;
            while let Some(frame) = body.frame().await {
                let item = frame
                    .map_err(|e| e.to_string())
                    .map(|f| f.into_data().unwrap_or_default());
                let failed = item.is_err();
                if forwarding && tx.send(item).await.is_err() {
                    forwarding = false;
                }
                if failed {
                    break;
                }
            }
        });
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Hands written bytes to a response stream.
pub struct ChannelWriter {
    pub tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tar answer written by `write` on a blocking task; a failure part-way ends the stream
/// with an error, so the client sees a broken transfer rather than a short archive.
pub fn tar_response(
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<(), String> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut writer =
            std::io::BufWriter::with_capacity(1 << 20, ChannelWriter { tx: tx.clone() });
        let result = write(&mut writer)
            .and_then(|()| std::io::Write::flush(&mut writer).map_err(|e| e.to_string()));
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
