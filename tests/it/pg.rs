//! PostgreSQL for the integration tests: a fresh database per test on the
//! server `PORTCULLIS_TEST_POSTGRES_URL` names (an admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), and [`Forwarder`], a TCP
//! relay in front of it that a test can stop (connections reset, new ones
//! refused: the database is down) or partition (connections accepted and
//! kept open, no byte passes: a network partition), then heal.

use std::time::Duration;

use crate::harness::*;

/// A fresh database, dropped when this goes out of scope.
pub struct TestDb {
    pub rt: tokio::runtime::Runtime,
    pub admin: tokio_postgres::Client,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh database on the PostgreSQL server, noted as `component` having
    /// run `test`; None (after [`component_missing`]) when the server is not
    /// there or refuses the login.
    pub fn create(component: &str, test: &str) -> Option<TestDb> {
        let admin_url = std::env::var("PORTCULLIS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let connected = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&admin_url, tokio_postgres::NoTls),
            )
            .await
        });
        let (admin, conn) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                component_missing(component, test, &format!("PostgreSQL at {admin_url}: {e}"));
                return None;
            }
            Err(_) => {
                component_missing(
                    component,
                    test,
                    &format!("PostgreSQL at {admin_url}: no answer within 2 s"),
                );
                return None;
            }
        };
        component_ran(component, test);
        rt.spawn(conn);
        let name = format!("portcullis_test_{}", rand_hex(16));
        rt.block_on(admin.batch_execute(&format!("CREATE DATABASE {name}")))
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(TestDb {
            rt,
            admin,
            name,
            url,
        })
    }

    /// Ends every connection to the database (what a failover or network blip does).
    pub fn terminate_connections(&self) -> u64 {
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        );
        let rows = self.rt.block_on(self.admin.query(&sql, &[])).unwrap();
        rows.len() as u64
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )));
    }
}

/// What the [`Forwarder`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Bytes pass both ways.
    Open,
    /// Connections are accepted and kept open, no byte passes (held until
    /// the link opens again): a network partition.
    Partitioned,
    /// Open connections are closed and the port refuses new ones: the
    /// database is stopped.
    Down,
}

/// A TCP relay on a loopback port in front of `target`, whose [`Link`] the
/// test sets.
pub struct Forwarder {
    pub addr: std::net::SocketAddr,
    link: tokio::sync::watch::Sender<Link>,
    _rt: tokio::runtime::Runtime,
}

impl Forwarder {
    pub fn start(target: &str) -> Forwarder {
        use std::net::ToSocketAddrs;
        let target = target
            .to_socket_addrs()
            .expect("forwarder target")
            .next()
            .expect("forwarder target address");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("forwarder bind");
        let addr = listener.local_addr().unwrap();
        let (link, rx) = tokio::sync::watch::channel(Link::Open);
        rt.spawn(accept_loop(Some(listener), addr, target, rx));
        Forwarder {
            addr,
            link,
            _rt: rt,
        }
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// `host:port` to put in a database URL.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

async fn accept_loop(
    mut listener: Option<tokio::net::TcpListener>,
    addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    mut link: tokio::sync::watch::Receiver<Link>,
) {
    loop {
        let now = *link.borrow_and_update();
        match (now, listener.as_ref()) {
            (Link::Down, Some(_)) => listener = None,
            (Link::Down, None) => {
                if link.changed().await.is_err() {
                    return;
                }
            }
            (_, None) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => panic!("forwarder cannot listen on {addr} again: {e}"),
            },
            (_, Some(l)) => {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((client, _)) = accepted {
                            tokio::spawn(relay(client, target, link.clone()));
                        }
                    }
                    changed = link.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Waits while partitioned: true once open, false once down.
async fn wait_open(link: &mut tokio::sync::watch::Receiver<Link>) -> bool {
    loop {
        match *link.borrow_and_update() {
            Link::Open => return true,
            Link::Down => return false,
            Link::Partitioned => {}
        }
        if link.changed().await.is_err() {
            return false;
        }
    }
}

async fn wait_down(link: &mut tokio::sync::watch::Receiver<Link>) {
    loop {
        if *link.borrow_and_update() == Link::Down {
            return;
        }
        if link.changed().await.is_err() {
            return;
        }
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    mut link: tokio::sync::watch::Receiver<Link>,
) {
    if !wait_open(&mut link).await {
        return;
    }
    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // either direction ending (or the link going down) closes both sockets
    tokio::select! {
        _ = pump(client_read, server_write, link.clone()) => {}
        _ = pump(server_read, client_write, link) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: tokio::sync::watch::Receiver<Link>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = wait_down(&mut link) => return,
        };
        if !wait_open(&mut link).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
