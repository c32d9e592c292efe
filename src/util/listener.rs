//! Listening sockets: where one listens ([`Listen`]: `address:port` or `unix:/path`), the
//! bound socket of either kind with the backlog HAProxy 3.x needs ([`Listener`]), and the
//! accept side of both behind one type. Shared by the SPOP server and the operations
//! listeners.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

/// A listen address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidListen {
    /// `unix:` without a path.
    #[error("\"unix:\" needs a socket path, e.g. unix:/run/spoa-guard.sock")]
    NoPath,
    /// Neither an address nor `unix:`.
    #[error("{0:?} is not an address:port (e.g. 127.0.0.1:12345) or unix:/path")]
    Address(String),
}

impl FromStr for Listen {
    type Err = InvalidListen;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(InvalidListen::NoPath);
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        text.trim()
            .parse::<SocketAddr>()
            .map(Listen::Tcp)
            .map_err(|_| InvalidListen::Address(text.to_string()))
    }
}

impl TryFrom<String> for Listen {
    type Error = InvalidListen;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Listen> for String {
    fn from(listen: Listen) -> String {
        listen.to_string()
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket, with its path (removed when the listener is dropped, unless another
    /// socket has replaced it there).
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Where it is.
        path: PathBuf,
        /// Its inode, to recognise it at `path`.
        inode: u64,
    },
}

/// Who may connect to a unix socket: its mode and, optionally, its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// File mode bits (`0o600`).
    pub mode: u32,
    /// Group id to give the socket to.
    pub gid: Option<u32>,
}

impl Listener {
    /// Binds `listen` with the given backlog; a unix socket keeps the mode the umask
    /// gives it.
    ///
    /// # Errors
    ///
    /// As [`Listener::bind_with`].
    pub fn bind(listen: &Listen, backlog: u32) -> io::Result<Listener> {
        Listener::bind_with(listen, backlog, None)
    }

    /// Binds `listen` with the given backlog; a unix socket gets `access`.
    ///
    /// A unix socket is bound under a temporary name next to its path, given its mode
    /// and group, and only then renamed into place: nobody can connect before the mode
    /// is right, and the socket appears at its path atomically. A stale socket file
    /// (nobody accepting on it) is replaced; a live one is an error, so two agents never
    /// steal each other's socket.
    ///
    /// # Errors
    ///
    /// Address in use, permission denied, and other socket errors.
    pub fn bind_with(
        listen: &Listen,
        backlog: u32,
        access: Option<SocketAccess>,
    ) -> io::Result<Listener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match listen {
            Listen::Tcp(addr) => {
                let socket = Socket::new(
                    Domain::for_address(*addr),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*addr).into())?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(socket.into())?))
            }
            Listen::Unix(path) => {
                refuse_live_socket(path)?;
                let temp = temp_path(path);
                let _ = std::fs::remove_file(&temp);
                let bound = bind_unix(&temp, backlog, access).and_then(|listener| {
                    std::fs::rename(&temp, path)?;
                    Ok(listener)
                });
                let listener = bound.inspect_err(|_| {
                    let _ = std::fs::remove_file(&temp);
                })?;
                let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                    inode,
                })
            }
        }
    }

    /// The TCP address actually bound (useful with port 0), if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix { .. } => None,
        }
    }
}

/// Binds and listens on the unix socket `path`, with `access`.
fn bind_unix(path: &Path, backlog: i32, access: Option<SocketAccess>) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    if let Some(access) = access {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))?;
        if let Some(gid) = access.gid {
            std::os::unix::fs::chown(path, None, Some(gid))?;
        }
    }
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    UnixListener::from_std(std_listener)
}

/// `path` with `.bind-PID` appended: where a unix socket is bound before it is renamed
/// into place.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".bind-{}", std::process::id()));
    path.with_file_name(name)
}

/// Set once this process has handed its listening sockets to a new agent: from then on
/// they are the new agent's, and their unix socket files are left in place.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Marks this process's listening sockets as handed over (a handed-over unix socket is not removed when its listener drops).
pub fn handed_over() {
    HANDED_OVER.store(true, Ordering::Relaxed);
}

impl Listener {
    /// A listener on a socket handed over by another process, which must listen on
    /// `listen` (checked: the port for TCP, the family for a unix socket).
    ///
    /// # Errors
    ///
    /// A socket that is not a listening socket of that address.
    pub fn from_fd(listen: &Listen, fd: OwnedFd) -> io::Result<Listener> {
        let socket = Socket::from(fd);
        let local = socket.local_addr()?;
        let matches = match listen {
            Listen::Tcp(addr) => local.as_socket().is_some_and(|a| {
                a.ip() == addr.ip() && (addr.port() == 0 || a.port() == addr.port())
            }),
            // Bound under a temporary name and renamed into place: the name the
            // socket reports is not its path any more.
            Listen::Unix(_) => local.domain() == Domain::UNIX,
        };
        if !matches {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the socket handed over does not listen on {listen}"),
            ));
        }
        socket.set_nonblocking(true)?;
        match listen {
            Listen::Tcp(_) => Ok(Listener::Tcp(TcpListener::from_std(socket.into())?)),
            Listen::Unix(path) => {
                let listener = UnixListener::from_std(socket.into())?;
                let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                    inode,
                })
            }
        }
    }

    /// A second descriptor of the listening socket, to hand over.
    ///
    /// # Errors
    ///
    /// Out of descriptors.
    pub fn clone_fd(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Listener::Unix { listener, .. } => listener.as_fd().try_clone_to_owned(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only the socket this listener created (a newer process may have replaced it),
        // and only while it is this process's.
        if HANDED_OVER.load(Ordering::Relaxed) {
            return;
        }
        if let Self::Unix { path, inode, .. } = self {
            let ours = std::fs::metadata(&*path).is_ok_and(|m| m.ino() == *inode);
            if ours {
                let _ = std::fs::remove_file(&*path);
            }
        }
    }
}

/// An error if a process accepts on the unix socket `path`; a stale file is left for
/// the rename to replace.
fn refuse_live_socket(path: &Path) -> io::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        )),
        Err(_) => Ok(()),
    }
}

/// A connection accepted by a [`Listener`].
pub enum Accepted {
    /// Over TCP, with the peer's address.
    Tcp(tokio::net::TcpStream, SocketAddr),
    /// Over a unix socket.
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Listener::Unix { listener, .. } => {
                listener.accept().await.map(|(s, _)| Accepted::Unix(s))
            }
        }
    }
}
