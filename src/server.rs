//! Assembles the pingora server: the proxy service, the admin listener, the
//! optional demo echo upstream, the key-reload and API-key-use tasks, with SPEC §1's
//! start and shutdown: every listener is bound before anything runs (an
//! address that cannot be bound is a non-zero exit naming it); SIGTERM:
//! readiness 503, the proxy listener closes, in-flight requests finish
//! within `server.grace_period_seconds`, the admin listener answers
//! throughout and closes last, exit 0.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;

use crate::app::App;
use crate::config::UpstreamProtocol;
use crate::echo::EchoApp;
use crate::listeners::{self, Close, Listening};
use crate::pipeline::authn::api_key::USE_FLUSH_INTERVAL;
use crate::proxy::Proxy;
use crate::proxy::admin::AdminApp;
use crate::tls::ServerCert;

/// Resolves `upstream.address` once; the hot path clones this peer.
pub fn upstream_peer(app: &App) -> Result<HttpPeer, String> {
    let cfg = &app.config.upstream;
    let addr: SocketAddr = cfg
        .address
        .to_socket_addrs()
        .map_err(|e| format!("upstream.address `{}`: {e}", cfg.address))?
        .next()
        .ok_or_else(|| format!("upstream.address `{}` resolves to nothing", cfg.address))?;
    let mut peer = HttpPeer::new(addr, cfg.tls, server_name(cfg));
    peer.options.connection_timeout = Some(Duration::from_millis(cfg.connect_timeout_ms));
    peer.options.read_timeout = Some(Duration::from_millis(cfg.read_timeout_ms));
    peer.options.write_timeout = Some(Duration::from_millis(cfg.read_timeout_ms));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    match cfg.protocol {
        UpstreamProtocol::Http1 => {}
        // HTTP/2, with prior knowledge in clear text or by ALPN over TLS:
        // one connection carries many streams
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = 100;
        }
    }
    if cfg.tls {
        // pingora verifies nothing for a peer without a server name; ours
        // always has one (the host of the address by default)
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        if !cfg.ca_file.is_empty() {
            let mut roots = pingora::tls::RootCertStore::empty();
            pingora::tls::load_ca_file_into_store(&cfg.ca_file, &mut roots)
                .map_err(|e| format!("upstream.ca_file `{}`: {e}", cfg.ca_file))?;
            if roots.is_empty() {
                return Err(format!(
                    "upstream.ca_file `{}` holds no PEM certificate",
                    cfg.ca_file
                ));
            }
        }
    }
    Ok(peer)
}

/// `upstream.sni`, or the host of `upstream.address`.
fn server_name(cfg: &crate::config::UpstreamSection) -> String {
    if !cfg.sni.is_empty() {
        return cfg.sni.clone();
    }
    let host = cfg
        .address
        .rsplit_once(':')
        .map_or(cfg.address.as_str(), |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

fn threads(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Runs until a signal ends it. `echo_listen` adds the demo echo upstream.
pub fn run(app: Arc<App>, echo_listen: Option<String>) -> Result<(), String> {
    let cfg = app.config.clone();
    let peer = upstream_peer(&app)?;
    let server_cert = ServerCert::load(&cfg.proxy)?;
    let proxy_socket = listeners::bind("proxy.listen", &cfg.proxy.listen)?;
    let admin_socket = listeners::bind("admin.listen", &cfg.admin.listen)?;
    let echo_socket = echo_listen
        .as_deref()
        .map(|listen| listeners::bind("the demo echo upstream", listen))
        .transpose()?;
    let run_dir = std::env::temp_dir().join(format!("portcullis-{}", std::process::id()));
    let conf = ServerConf {
        threads: threads(cfg.server.threads),
        work_stealing: false,
        grace_period_seconds: Some(cfg.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(cfg.server.graceful_shutdown_timeout_seconds),
        pid_file: run_dir.join("pid").display().to_string(),
        upgrade_sock: run_dir.join("upgrade.sock").display().to_string(),
        // the roots the upstream's certificate is verified against
        ca_file: (cfg.upstream.tls && !cfg.upstream.ca_file.is_empty())
            .then(|| cfg.upstream.ca_file.clone()),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Proxy::new(app.clone(), peer),
        "proxy",
    );
    // HTTP/2 with prior knowledge (h2c, what gRPC clients speak in clear
    // text) beside HTTP/1.1 on the same port, told apart by the h2 preface
    if let Some(logic) = proxy.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        logic.server_options = Some(options);
    }
    match &server_cert {
        None => proxy.add_tcp(&cfg.proxy.listen),
        Some(cert) => {
            // TLS 1.2 and 1.3 (rustls), h2 or HTTP/1.1 by ALPN; the
            // certificate is read through `cert` at every handshake
            // the paths stay empty: the resolver replaces them
            let mut tls =
                TlsSettings::intermediate("", "").map_err(|e| format!("proxy TLS: {e}"))?;
            tls.set_cert_resolver(cert.clone());
            tls.enable_h2();
            proxy.add_tls_with_settings(&cfg.proxy.listen, None, tls);
        }
    }
    server.add_service(Listening::new(proxy, vec![proxy_socket], Close::AtShutdown));

    let mut admin = Service::new("admin".to_string(), AdminApp::new(app.clone()));
    admin.add_tcp(&cfg.admin.listen);
    admin.threads = Some(1);
    // probes see the drain (/readyz 503) instead of a refused connection
    server.add_service(Listening::new(admin, vec![admin_socket], Close::AtExit));

    if let (Some(listen), Some(socket)) = (echo_listen, echo_socket) {
        let mut echo = Service::new("echo".to_string(), EchoApp);
        echo.add_tcp(&listen);
        echo.threads = Some(1);
        server.add_service(Listening::new(echo, vec![socket], Close::AtExit));
    }

    let mut reload = background_service("key-reload", KeyReload { app: app.clone() });
    reload.threads = Some(1);
    server.add_service(reload);

    let mut hup = background_service(
        "sighup-reload",
        crate::reload::SighupReload {
            app: app.clone(),
            server_cert,
        },
    );
    hup.threads = Some(1);
    server.add_service(hup);
    let mut events = background_service("store-events", StoreEvents { app: app.clone() });
    events.threads = Some(1);
    server.add_service(events);

    let mut key_use = background_service("api-key-use", ApiKeyUseFlush { app: app.clone() });
    key_use.threads = Some(1);
    server.add_service(key_use);

    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        proxy = %cfg.proxy.listen,
        admin = %cfg.admin.listen,
        upstream = %cfg.upstream.address,
        "portcullis listening"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { app: app.clone() }),
    });
    close_store(&app);
    Ok(())
}

fn close_store(app: &App) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    if let Err(e) = rt.block_on(app.api_keys.flush_use()) {
        tracing::warn!(error = %e, "writing API key last use");
    }
    if let Err(e) = rt.block_on(app.store.close()) {
        tracing::warn!(error = %e, "closing the store");
    }
}

/// pingora's own Unix signal handling, plus: readiness drops at SIGTERM, and
/// the process exits as soon as the last in-flight request is done instead
/// of always sleeping the whole grace period.
struct Signals {
    app: Arc<App>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                self.app.start_draining();
                exit_when_drained(self.app.clone());
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// Watches the in-flight count after SIGTERM; once it reaches zero (after
/// pingora closed the listeners) the store is flushed and the process exits 0.
fn exit_when_drained(app: Arc<App>) {
    let grace = Duration::from_secs(app.config.server.grace_period_seconds);
    std::thread::spawn(move || {
        let start = Instant::now();
        // let pingora stop the listeners first
        std::thread::sleep(Duration::from_millis(100));
        while app.in_flight() > 0 && start.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        if app.in_flight() == 0 {
            tracing::info!(
                after_ms = start.elapsed().as_millis() as u64,
                "drained, exiting"
            );
            close_store(&app);
            std::process::exit(0);
        }
    });
}

/// Re-reads the signing keys every 30 s so a `keys rotate` made elsewhere
/// (CLI, another replica) is picked up.
struct KeyReload {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for KeyReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.app.keys.reload().await {
                        tracing::warn!(error = %e, "reloading signing keys");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Writes the API keys' last use, noted in memory on the request path, once
/// per [`USE_FLUSH_INTERVAL`] (and once more when the store closes): a key
/// costs at most one store write a minute however busy it is, and
/// `lastUsedAt` in the store lags by at most that (the list adds what this
/// replica noted since). A crash loses at most one interval of last-use times.
struct ApiKeyUseFlush {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for ApiKeyUseFlush {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(USE_FLUSH_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.app.api_keys.flush_use().await {
                        tracing::warn!(error = %e, "writing API key last use");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Applies the revocations other replicas publish through the store
/// (PostgreSQL LISTEN/NOTIFY; nothing with SQLite) to this replica's caches.
struct StoreEvents {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for StoreEvents {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let store = self.app.store.clone();
        let listener = tokio::spawn(async move { store.listen(tx).await });
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.app.revocations.apply(&ev).await,
                    // the store has no events (SQLite): nothing more to do
                    None => {
                        let _ = shutdown.changed().await;
                        break;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        listener.abort();
    }
}
