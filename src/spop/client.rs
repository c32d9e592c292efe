//! A small HAProxy-side SPOP client: HELLO, then NOTIFY frames answered by ACKs.
//!
//! It is what tests, benchmarks and the load generator use to talk to an agent (this one
//! or any other). It works over any async byte stream, so it can run over TCP, a unix
//! socket or an in-memory duplex pipe.

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use super::codec::SpopCodec;
use super::error::Error;
use super::frame::{Action, Frame, KvList, Message, Payload};
use super::hello::{self, DEFAULT_FRAME_SIZE};

/// A connection to an agent after a successful HELLO exchange.
#[derive(Debug)]
pub struct Client<T> {
    framed: Framed<T, SpopCodec>,
    agent_hello: KvList,
}

impl Client<TcpStream> {
    /// Connects over TCP and performs the HELLO exchange, offering HAProxy's default
    /// max-frame-size.
    ///
    /// # Errors
    ///
    /// Connection failures, and an answer other than AGENT-HELLO (an AGENT-DISCONNECT
    /// is reported as [`Error::Unexpected`]).
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Self::handshake(stream, DEFAULT_FRAME_SIZE).await
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Client<T> {
    /// Sends a HAPROXY-HELLO offering `max_frame_size` over `io` and waits for the
    /// AGENT-HELLO. The agent's max-frame-size then limits frames in both directions.
    ///
    /// # Errors
    ///
    /// I/O errors, a malformed answer, or an answer other than AGENT-HELLO.
    pub async fn handshake(io: T, max_frame_size: u32) -> Result<Self, Error> {
        let mut framed = Framed::new(io, SpopCodec::new(max_frame_size));
        framed
            .send(hello::haproxy_hello(max_frame_size, false))
            .await?;
        let agent_hello = match framed.next().await {
            Some(Ok(Frame {
                payload: Payload::AgentHello(kv),
                ..
            })) => kv,
            Some(Ok(_)) => return Err(Error::Unexpected("expected AGENT-HELLO")),
            Some(Err(err)) => return Err(err),
            None => return Err(Error::Unexpected("connection closed during HELLO")),
        };
        if let Some(size) = agent_hello.get("max-frame-size").and_then(|v| v.as_u64()) {
            let size = u32::try_from(size)
                .unwrap_or(max_frame_size)
                .min(max_frame_size);
            framed.codec_mut().set_max_frame_size(size);
        }
        Ok(Self {
            framed,
            agent_hello,
        })
    }

    /// The agent's HELLO key/values.
    pub fn agent_hello(&self) -> &KvList {
        &self.agent_hello
    }

    /// The negotiated max-frame-size.
    pub fn max_frame_size(&self) -> u32 {
        self.framed.codec().max_frame_size()
    }

    /// Sends one NOTIFY and waits for the next frame, which must be its ACK.
    ///
    /// # Errors
    ///
    /// I/O errors, a closed connection, or a frame other than the matching ACK.
    pub async fn notify(
        &mut self,
        stream_id: u64,
        frame_id: u64,
        messages: Vec<Message>,
    ) -> Result<Vec<Action>, Error> {
        self.send(Frame::new(stream_id, frame_id, Payload::Notify(messages)))
            .await?;
        match self.recv().await? {
            Some(Frame {
                stream_id: s,
                frame_id: f,
                payload: Payload::Ack(actions),
                ..
            }) if s == stream_id && f == frame_id => Ok(actions),
            Some(_) => Err(Error::Unexpected("expected the ACK of the NOTIFY")),
            None => Err(Error::Unexpected("connection closed before the ACK")),
        }
    }

    /// Queues a frame without flushing, for pipelining; see [`Client::flush`].
    ///
    /// # Errors
    ///
    /// I/O errors and frames over the negotiated size.
    pub async fn feed(&mut self, frame: Frame) -> Result<(), Error> {
        self.framed.feed(frame).await
    }

    /// Writes out queued frames.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.framed.flush().await
    }

    /// Sends one frame and flushes.
    ///
    /// # Errors
    ///
    /// I/O errors and frames over the negotiated size.
    pub async fn send(&mut self, frame: Frame) -> Result<(), Error> {
        self.framed.send(frame).await
    }

    /// The next frame from the agent; `None` when it closed the connection.
    ///
    /// # Errors
    ///
    /// I/O errors and malformed frames.
    pub async fn recv(&mut self) -> Result<Option<Frame>, Error> {
        self.framed.next().await.transpose()
    }

    /// The next frame if one can be had without waiting: already buffered, or readable
    /// from the stream right now. `None` means "nothing yet"; `Some(Ok(None))` the end.
    ///
    /// # Errors
    ///
    /// As [`Client::recv`].
    pub fn try_recv(&mut self) -> Option<Result<Option<Frame>, Error>> {
        self.framed.next().now_or_never().map(Option::transpose)
    }

    /// The underlying framed stream, for tests that need raw access.
    pub fn into_inner(self) -> Framed<T, SpopCodec> {
        self.framed
    }
}
