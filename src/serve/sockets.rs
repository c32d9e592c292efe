//! The listening sockets of a starting agent: taken over from the running agent of the
//! same configuration when there is one ([`crate::handover`]), bound otherwise; and the
//! copies this agent hands to the next one.

use std::os::fd::OwnedFd;

use tracing::{info, warn};

use super::StartError;
use crate::handover::{self, TakenOver};
use crate::util::{Listen, Listener};

/// See the module docs.
#[derive(Debug)]
pub(super) struct Sockets {
    /// The rendezvous name of this configuration.
    pub name: String,
    /// What the running agent handed over, until each socket is claimed.
    taken: Option<TakenOver>,
    /// A copy of every socket this agent listens on, to hand over in turn.
    pub handed: Vec<(Listen, OwnedFd)>,
}

impl Sockets {
    /// Takes over the sockets of the agent running with the configuration file
    /// `config`, if any; a failed takeover is logged and the agent binds its own.
    pub async fn new(config: &std::path::Path) -> Sockets {
        let name = handover::name_for(config);
        let asking = name.clone();
        let taken = match tokio::task::spawn_blocking(move || handover::take_over(&asking)).await {
            Ok(Ok(Some(taken))) => {
                let listens: Vec<String> =
                    taken.listeners.iter().map(|(l, _)| l.to_string()).collect();
                info!(listeners = %listens.join(", "), "taking over from the running agent");
                Some(taken)
            }
            Ok(Ok(None)) => None,
            Ok(Err(err)) => {
                warn!(error = %err, "not taking over; binding the listeners");
                None
            }
            Err(_) => None,
        };
        Sockets {
            name,
            taken,
            handed: Vec::new(),
        }
    }

    /// The listener on `listen` (`what`: its configuration key): the running agent's
    /// socket if it had one there, else `bind()`.
    pub fn listen(
        &mut self,
        what: &'static str,
        listen: &Listen,
        bind: impl FnOnce() -> std::io::Result<Listener>,
    ) -> Result<Listener, StartError> {
        let inherited = self.taken.as_mut().and_then(|t| t.take(listen));
        let listener = match inherited.map(|fd| Listener::from_fd(listen, fd)) {
            Some(Ok(listener)) => Ok(listener),
            Some(Err(err)) => {
                warn!(error = %err, %listen, "cannot use the socket handed over; binding");
                bind()
            }
            None => bind(),
        };
        let listener = listener.map_err(|source| StartError::Bind {
            what,
            listen: listen.to_string(),
            source,
        })?;
        match listener.clone_fd() {
            Ok(fd) => self.handed.push((listen.clone(), fd)),
            Err(err) => warn!(error = %err, %listen, "a restart will not take this listener over"),
        }
        Ok(listener)
    }

    /// Tells the running agent this one serves now (it drains and stops).
    pub fn accepting(&mut self) {
        if let Some(taken) = self.taken.take() {
            taken.accepting();
            info!("took over: the previous agent drains and stops");
        }
    }
}
