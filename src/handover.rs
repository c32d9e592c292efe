//! Restarts without a gap: a new agent process started with the same configuration while
//! the old one runs takes over the old one's listening sockets — SPOP, metrics, admin —
//! instead of binding new ones, so no connection attempt ever meets a closed port or an
//! empty accept queue.
//!
//! ```text
//!  new process                                        old process (serving)
//!  load config + rules
//!  connect @spoa-guard-handover-<hash of config path>  ──►  accept (same uid only)
//!  "spoa-guard handover 1"                            ──►
//!                                                     ◄──  listener addresses + their
//!                                                          sockets (SCM_RIGHTS)
//!                                                          save the bans (state file)
//!                                                     ◄──  "saved"
//!  read the state file, start serving on the sockets
//!  "accepting"                                        ──►  stop accepting, answer what it
//!                                                          has, DISCONNECT, exit
//!  bind the handover name once it is free
//! ```
//!
//! Both processes accept from the same sockets until the new one says it is accepting,
//! so nothing queues unanswered while it starts; if it dies before that, the old one
//! just goes on. The rendezvous is a Linux abstract unix socket (no file to clean up,
//! gone with the process), named after the configuration file's canonical path, so only
//! an agent of the same configuration takes over; either side refuses a peer of another
//! user (`SO_PEERCRED`), so no other local user can take the sockets.
//!
//! Hand-written because no crate does this for tokio (Cloudflare's `tableflip` is Go,
//! `shellflip` a whole framework with its own restart model); the system calls are
//! `rustix`'s safe wrappers.

use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::util::Listen;

/// The first line a taker sends.
const REQUEST: &str = "spoa-guard handover 1\n";
/// Most sockets handed over at once (SPOP, metrics, admin, and room to grow).
const MAX_SOCKETS: usize = 8;
/// How long each side waits for the other's next message. The taker's wait for
/// `saved` covers the old agent writing its state file; the old agent's wait for
/// `accepting` covers the new one reading it and starting its listeners.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The sockets one agent hands to another, with the addresses they listen on.
#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    listeners: Vec<Listen>,
}

/// The abstract socket name of the agent whose configuration file is `config`.
pub fn name_for(config: &Path) -> String {
    let path = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    // Stable across processes and builds: the name is how two processes find each other.
    let mut hasher = Fnv64::default();
    path.hash(&mut hasher);
    format!("spoa-guard-handover-{:016x}", hasher.finish())
}

/// FNV-1a: a hash with no per-process seed (std's hashers are seeded).
#[derive(Debug)]
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Why a takeover failed; the new agent then binds its own sockets.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The running agent belongs to another user.
    #[error("the agent holding {name} runs as uid {uid}, not as this user")]
    OtherUser {
        /// The rendezvous name.
        name: String,
        /// Its user.
        uid: u32,
    },
    /// The exchange failed half-way.
    #[error("handover from the running agent failed: {0}")]
    Io(#[from] io::Error),
    /// The running agent said something else.
    #[error("handover from the running agent failed: unexpected answer {0:?}")]
    Protocol(String),
}

/// Sockets taken over from a running agent; tell it [`TakenOver::accepting`] once they
/// are served.
#[derive(Debug)]
pub struct TakenOver {
    /// Each listening socket with its address.
    pub listeners: Vec<(Listen, OwnedFd)>,
    conn: UnixStream,
}

impl TakenOver {
    /// The socket that listens on `listen`, if the old agent had one there.
    pub fn take(&mut self, listen: &Listen) -> Option<OwnedFd> {
        let at = self.listeners.iter().position(|(l, _)| l == listen)?;
        Some(self.listeners.swap_remove(at).1)
    }

    /// Tells the old agent that this one serves now: it stops accepting and drains.
    pub fn accepting(mut self) {
        if let Err(err) = self.conn.write_all(b"accepting\n") {
            warn!(error = %err, "could not tell the old agent to stop; it stops on SIGTERM");
        }
    }
}

/// Asks the agent running with the configuration of rendezvous `name` for its sockets;
/// `Ok(None)` when none runs. Blocking: call it at start, before serving.
///
/// # Errors
///
/// A running agent of another user, or an exchange that failed half-way.
pub fn take_over(name: &str) -> Result<Option<TakenOver>, HandoverError> {
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    let mut conn = match UnixStream::connect_addr(&addr) {
        Ok(conn) => conn,
        Err(_) => return Ok(None),
    };
    check_peer(&conn, name)?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    conn.write_all(REQUEST.as_bytes())?;
    let (offer, fds) = receive_offer(&conn)?;
    if offer.listeners.len() != fds.len() {
        return Err(HandoverError::Protocol(format!(
            "{} addresses for {} sockets",
            offer.listeners.len(),
            fds.len()
        )));
    }
    let mut line = String::new();
    BufReader::new(&mut conn).read_line(&mut line)?;
    if line != "saved\n" {
        return Err(HandoverError::Protocol(line));
    }
    Ok(Some(TakenOver {
        listeners: offer.listeners.into_iter().zip(fds).collect(),
        conn,
    }))
}

/// Reads the offer: one message of JSON with the sockets attached.
fn receive_offer(conn: &UnixStream) -> Result<(Offer, Vec<OwnedFd>), HandoverError> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let text = buf.get(..received.bytes).unwrap_or_default();
    let offer: Offer = serde_json::from_slice(text)
        .map_err(|e| HandoverError::Protocol(format!("not an offer: {e}")))?;
    Ok((offer, fds))
}

/// Refuses a peer of another user (root is trusted).
fn check_peer(conn: &UnixStream, name: &str) -> Result<(), HandoverError> {
    let cred = rustix::net::sockopt::socket_peercred(conn).map_err(io::Error::from)?;
    let (peer, me) = (cred.uid.as_raw(), rustix::process::geteuid().as_raw());
    if peer == me || peer == 0 {
        Ok(())
    } else {
        Err(HandoverError::OtherUser {
            name: name.to_string(),
            uid: peer,
        })
    }
}

/// What the old agent does when it hands over.
pub trait Handing: Send + Sync + 'static {
    /// Saves what the new agent must read before it serves (the ban state file).
    fn save(&self);
    /// Stops accepting and drains: the new agent serves now.
    fn stop(&self);
}

/// Serves takeover requests for the agent listening on `sockets` until `shutdown`;
/// binds `name` as soon as it is free (the agent this one took over holds it until it
/// stops).
pub async fn serve(
    name: String,
    sockets: Vec<(Listen, OwnedFd)>,
    handing: impl Handing,
    shutdown: CancellationToken,
) {
    let Some(listener) = bind_when_free(&name, &shutdown).await else {
        return;
    };
    let handing = std::sync::Arc::new(handing);
    let sockets = std::sync::Arc::new(sockets);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // The exchange is short and bounded by timeouts: blocking I/O on the pool.
        let conn = accepted
            .and_then(|(conn, _)| conn.into_std())
            .and_then(|conn| {
                conn.set_nonblocking(false)?;
                Ok(conn)
            });
        let Ok(conn) = conn else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (sockets, handing_over) = (sockets.clone(), handing.clone());
        let done =
            tokio::task::spawn_blocking(move || hand_over(&conn, &sockets, &*handing_over)).await;
        match done {
            Ok(Ok(())) => {
                info!("handed the listeners over to a new agent; draining and stopping");
                crate::util::listener::handed_over();
                handing.stop();
                return;
            }
            Ok(Err(err)) => {
                warn!(error = %err, "a new agent asked for the listeners but did not take over; still serving");
            }
            Err(_) => {}
        }
    }
}

/// Binds the abstract socket `name`, retrying while the previous agent still holds it.
async fn bind_when_free(
    name: &str,
    shutdown: &CancellationToken,
) -> Option<tokio::net::UnixListener> {
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).ok()?;
    let bind = || -> io::Result<tokio::net::UnixListener> {
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    };
    for attempt in 0u32.. {
        match bind() {
            Ok(listener) => return Some(listener),
            Err(err) if attempt == 300 => {
                warn!(error = %err, name, "cannot bind the handover socket: a restart will not take over the listeners");
                return None;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    None
}

/// One takeover on `conn`: check the peer, send the sockets, save, wait for
/// `accepting`.
fn hand_over(
    conn: &UnixStream,
    sockets: &[(Listen, OwnedFd)],
    handing: &dyn Handing,
) -> Result<(), HandoverError> {
    check_peer(conn, "this agent")?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line != REQUEST {
        return Err(HandoverError::Protocol(line));
    }
    let offer = Offer {
        listeners: sockets.iter().map(|(l, _)| l.clone()).collect(),
    };
    let text = serde_json::to_vec(&offer).map_err(io::Error::other)?;
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(HandoverError::Protocol("too many sockets".into()));
    }
    rustix::net::sendmsg(
        conn,
        &[IoSlice::new(&text)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(io::Error::from)?;
    handing.save();
    let mut writer = conn;
    writer.write_all(b"saved\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    if line == "accepting\n" {
        Ok(())
    } else {
        Err(HandoverError::Protocol(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_the_configuration_path_only() {
        let a = name_for(Path::new("/etc/spoa-guard/spoa-guard.toml"));
        assert_eq!(a, name_for(Path::new("/etc/spoa-guard/spoa-guard.toml")));
        assert_ne!(a, name_for(Path::new("/etc/spoa-guard/other.toml")));
        assert!(a.starts_with("spoa-guard-handover-"));
    }
}
