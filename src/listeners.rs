//! The listening sockets (SPEC §1): bound by portcullis itself before pingora
//! starts, so an address that cannot be bound (in use, no permission) ends
//! the process with a non-zero exit naming the address instead of pingora's
//! "in use, will try again" loop, and `/readyz` can never answer 200 while a
//! listener is missing.
//!
//! [`Listening`] wraps a pingora service: when pingora starts it, the
//! wrapper puts its bound sockets in pingora's table of listening sockets
//! (the one a zero-downtime upgrade fills), where the service finds them by
//! address instead of binding. It also decides when the service hears of
//! the shutdown: the proxy at SIGTERM, the admin listener never (it keeps
//! answering `/readyz` 503 through the drain and closes when the process
//! exits, last).

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::IntoRawFd;

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::sync::watch;

/// A socket bound and listening, waiting for its service.
pub struct Bound {
    /// The address as configured: pingora finds the socket by this string.
    address: String,
    listener: TcpListener,
}

/// Binds `address` (the value of config key `key`); the error names both.
pub fn bind(key: &str, address: &str) -> Result<Bound, String> {
    let fail = |why: String| format!("cannot listen on {address} ({key}): {why}");
    let addr: SocketAddr = address
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("resolves to nothing".into()))?;
    // std sets SO_REUSEADDR on Unix, as pingora does: a socket in TIME_WAIT
    // does not block a restart, a live listener does
    let listener = TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    // tokio takes the socket over as it is and needs it non-blocking
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Bound {
        address: address.to_string(),
        listener,
    })
}

impl Bound {
    /// The address the socket is bound to (the port the OS chose for `:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// When the wrapped service hears of the shutdown.
pub enum Close {
    /// At SIGTERM, like any pingora service: it stops accepting.
    AtShutdown,
    /// Never: it answers until the process exits (the admin listener).
    AtExit,
}

/// A pingora service that listens on sockets bound beforehand.
pub struct Listening<S> {
    inner: S,
    bound: Vec<Bound>,
    close: Close,
    /// Held for [`Close::AtExit`]: the service's shutdown watch, never sent
    /// to (a dropped sender would read as a shutdown).
    never: Option<watch::Sender<bool>>,
}

impl<S> Listening<S> {
    pub fn new(inner: S, bound: Vec<Bound>, close: Close) -> Self {
        Listening {
            inner,
            bound,
            close,
            never: None,
        }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Listening<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        if let Some(fds) = &fds {
            let mut table = fds.lock();
            for bound in self.bound.drain(..) {
                // the table owns the socket from here (and hands it on at an upgrade)
                table.add(bound.address, bound.listener.into_raw_fd());
            }
        }
        let shutdown = match self.close {
            Close::AtShutdown => shutdown,
            Close::AtExit => {
                let (tx, rx) = watch::channel(false);
                self.never = Some(tx);
                rx
            }
        };
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_is_an_error_naming_it_and_its_key() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind("proxy.listen", &addr).err().unwrap();
        assert!(e.contains(&addr), "{e}");
        assert!(e.contains("proxy.listen"), "{e}");
        assert!(e.to_ascii_lowercase().contains("in use"), "{e}");
    }

    #[test]
    fn a_free_address_is_bound_and_listening() {
        let b = bind("admin.listen", "127.0.0.1:0").unwrap();
        let addr = b.local_addr().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_ok());
    }
}
