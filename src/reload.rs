//! Rebuilding the rule set while serving: re-read the configuration and every rule file
//! off the request path, then swap the new engine in whole. On any error the rules in
//! force stay in force.

use std::path::Path;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::Engine;
use crate::server::Shared;

/// Outcome of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// New rules are in force.
    Applied,
    /// Something failed to load; the previous rules stay in force.
    Failed,
}

/// Reloads the rules named by the configuration at `path` and swaps them into `shared`.
///
/// Parsing runs on the blocking thread pool. Settings that need a restart (`[server]`,
/// `[log]`) are compared with `running` and reported, never half-applied.
pub async fn reload(path: &Path, running: &Config, shared: &Arc<Shared>) -> Outcome {
    let path_owned = path.to_path_buf();
    let previous = shared.engine.load_full();
    let built = tokio::task::spawn_blocking(move || {
        let config = Config::load(&path_owned).map_err(|e| e.to_string())?;
        let engine = Engine::load(&config.rules, &config.path, Some(&previous))
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((config, engine))
    })
    .await;
    let (config, engine) = match built {
        Ok(Ok(built)) => built,
        Ok(Err(message)) => {
            for line in message.lines() {
                error!(target: "spoa_guard::reload", "{line}");
            }
            warn!("reload failed; the previous rules stay in force");
            return Outcome::Failed;
        }
        Err(join) => {
            error!(error = %join, "reload task failed; the previous rules stay in force");
            return Outcome::Failed;
        }
    };
    if config.server.listen != running.server.listen
        || config.server.max_frame_size != running.server.max_frame_size
        || config.server.max_connections != running.server.max_connections
    {
        warn!("[server] settings changed: they take effect after a restart");
    }
    let summary = crate::engine::Summary::of(&engine);
    shared.engine.store(Arc::new(engine));
    info!(rules = %summary, "rules reloaded");
    Outcome::Applied
}
