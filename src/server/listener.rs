//! Listening sockets: TCP or unix, bound with the backlog HAProxy 3.x needs, and the
//! accept side of both behind one type.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

use super::Listen;

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket, with its path (removed when the listener is dropped).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen` with the given backlog.
    ///
    /// A stale unix socket file (nobody accepting on it) is removed first; a live one is
    /// an error, so two agents never steal each other's socket.
    ///
    /// # Errors
    ///
    /// Address in use, permission denied, and other socket errors.
    pub fn bind(listen: &Listen, backlog: u32) -> io::Result<Listener> {
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
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                let std_listener: std::os::unix::net::UnixListener = socket.into();
                Ok(Listener::Unix(
                    UnixListener::from_std(std_listener)?,
                    path.clone(),
                ))
            }
        }
    }

    /// The TCP address actually bound (useful with port 0), if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// A connection accepted by a [`Listener`].
pub(crate) enum Accepted {
    /// Over TCP, with the peer's address.
    Tcp(tokio::net::TcpStream, SocketAddr),
    /// Over a unix socket.
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// Waits for the next connection.
    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}
