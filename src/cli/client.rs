//! The HTTP client of the CLI: one request to a running agent's operations listener
//! (`top` → `[metrics]`) or admin listener (`ban`, `bans`, `rules`, … → `[admin]`), over
//! TCP or a unix socket, with a deadline, and errors that say what to check.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::util::Listen;

/// How long one request may take, unless the caller says otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request got no answer, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there.
    #[error("cannot connect to {at}: {source}{hint}")]
    Connect {
        /// Where.
        at: Listen,
        /// Why.
        source: std::io::Error,
        /// What to check.
        hint: &'static str,
    },
    /// HTTP failed.
    #[error("{at}: {source}")]
    Http {
        /// Where.
        at: Listen,
        /// Why.
        source: hyper::Error,
    },
    /// The request could not be built (a path with characters HTTP does not allow).
    #[error("{0}")]
    Request(String),
    /// No answer in time.
    #[error("{at}: no answer within {timeout:?}")]
    Timeout {
        /// Where.
        at: Listen,
        /// How long it waited.
        timeout: Duration,
    },
}

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as one line of text (an error's reason).
    pub fn reason(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.lines().next().unwrap_or_default().trim().to_string()
    }
}

/// One request to an agent listener.
#[derive(Debug)]
pub struct Call<'a> {
    /// Where the listener is.
    pub at: &'a Listen,
    /// What to say when nothing listens there (`" (is [admin] listen set?)"`).
    pub hint: &'static str,
    /// `Authorization: Bearer` token, for a TCP admin listener.
    pub token: Option<&'a str>,
    /// How long to wait.
    pub timeout: Duration,
}

impl Call<'_> {
    /// Sends `method path` with an optional JSON `body` and reads the whole answer.
    ///
    /// # Errors
    ///
    /// No connection, an HTTP failure, no answer within the timeout.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let exchange = async {
            match self.at {
                Listen::Tcp(addr) => {
                    let stream = TcpStream::connect(addr)
                        .await
                        .map_err(|source| self.connect_error(source))?;
                    self.exchange(stream, method, path, body).await
                }
                Listen::Unix(socket) => {
                    let stream = UnixStream::connect(socket)
                        .await
                        .map_err(|source| self.connect_error(source))?;
                    self.exchange(stream, method, path, body).await
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                at: self.at.clone(),
                timeout: self.timeout,
            })?
    }

    fn connect_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Connect {
            at: self.at.clone(),
            source,
            hint: self.hint,
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| ClientError::Http {
            at: self.at.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection);
        let host = match self.at {
            Listen::Tcp(addr) => addr.to_string(),
            Listen::Unix(_) => "localhost".to_string(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host);
        if let Some(token) = self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request(format!("{path}: {e}")))?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// `text` with everything but unreserved characters percent-encoded, for a query value
/// or a path segment.
pub fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
