//! The agent as a service process: telling systemd it is ready (and, after a restart
//! without a gap, that it is the main process now), and starting its own successor on
//! `SIGUSR2`.
//!
//! `sd_notify` is a datagram to `$NOTIFY_SOCKET` (a path, or an abstract name written
//! with a leading `@`); a dozen lines, so no crate for it. Without the variable (not
//! under systemd `Type=notify`) nothing is sent.

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;

use tracing::{debug, info, warn};

/// Tells systemd this process is ready and is the service's main process (it may be
/// the successor of the one systemd started: `NotifyAccess=all` lets it say so).
pub(super) fn notify_ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("MAINPID={}\nREADY=1\n", std::process::id());
    match send(&socket, message.as_bytes()) {
        Ok(()) => debug!("told systemd: ready"),
        Err(err) => warn!(error = %err, "cannot notify systemd ($NOTIFY_SOCKET)"),
    }
}

fn send(socket: &OsString, message: &[u8]) -> std::io::Result<()> {
    let bytes = socket.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(PathBuf::from(socket))?,
    };
    let datagram = UnixDatagram::unbound()?;
    datagram.send_to_addr(message, &addr)?;
    Ok(())
}

/// Starts a new agent with this one's binary path and arguments: it takes the listeners
/// over (see [`crate::handover`]) and this one then drains and stops. The binary is the
/// one at the path this process was started from, so installing a new binary first and
/// then sending `SIGUSR2` upgrades without a gap.
pub(super) fn start_successor() {
    let Some(binary) = binary_path() else {
        warn!("SIGUSR2: cannot find this agent's binary; not restarting");
        return;
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match std::process::Command::new(&binary).args(&args).spawn() {
        Ok(child) => info!(
            pid = child.id(),
            binary = %binary.display(),
            "SIGUSR2: started a new agent; it takes over and this one stops"
        ),
        Err(err) => {
            warn!(error = %err, binary = %binary.display(), "SIGUSR2: cannot start a new agent")
        }
    }
}

/// The path this process's binary was started from: `/proc/self/exe`, without the
/// ` (deleted)` the kernel appends once the file has been replaced by an upgrade.
fn binary_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let text = exe.to_str()?;
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(&path.clone().into_os_string(), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
