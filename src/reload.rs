//! SIGHUP: re-read the config file `serve` was started with and swap in its
//! `[[routes]]` and `log.level`, and the proxy listener's TLS certificate and
//! key from their files, without a restart and without touching open
//! connections. A file that does not load or compile keeps what runs; the
//! log line says why. Every other setting needs a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::app::App;
use crate::config::Config;
use crate::pipeline::authz::RoutePolicies;
use crate::tls::ServerCert;

/// Sets the log filter from a level string (`info`, `debug`, …).
pub type LevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The config file of this process (`None`: defaults and environment only).
static CONFIG_PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
static LOG_LEVEL: OnceLock<LevelSetter> = OnceLock::new();

/// Remembers the config file `serve` loaded, for the next SIGHUP.
pub fn remember_config_path(path: Option<&Path>) {
    let _ = CONFIG_PATH.set(path.map(Path::to_path_buf));
}

/// Installs the log-level setter (a `tracing_subscriber` reload handle).
pub fn set_level_setter(setter: LevelSetter) {
    let _ = LOG_LEVEL.set(setter);
}

/// Re-reads the config file and swaps the route policies and the log level.
/// On error nothing changes.
pub fn reload(app: &App) -> Result<usize, String> {
    let Some(path) = CONFIG_PATH.get() else {
        return Err("only `portcullis serve` reloads its config".into());
    };
    let config = Config::load(path.as_deref()).map_err(|e| e.to_string())?;
    let routes = RoutePolicies::compile(&config)?;
    // the level first: a bad level must not leave half a reload behind
    if std::env::var_os("RUST_LOG").is_none()
        && !config.log.level.is_empty()
        && let Some(set) = LOG_LEVEL.get()
    {
        set(&config.log.level).map_err(|e| format!("log.level: {e}"))?;
    }
    let count = config.routes.len();
    app.pipeline.replace_routes(routes);
    Ok(count)
}

/// Waits for SIGHUP and reloads, until shutdown.
pub struct SighupReload {
    pub app: Arc<App>,
    /// The proxy listener's certificate, when it speaks TLS.
    pub server_cert: Option<Arc<ServerCert>>,
}

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler not installed; reload needs a restart");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    match reload(&self.app) {
                        Ok(routes) => tracing::info!(routes, "SIGHUP: reloaded [[routes]] and log.level"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded; the running policy stays"),
                    }
                    if let Some(cert) = &self.server_cert {
                        match cert.reload() {
                            Ok(()) => tracing::info!("SIGHUP: reloaded the proxy listener's TLS certificate"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the one in use stays"),
                        }
                    }
                }
            }
        }
    }
}
