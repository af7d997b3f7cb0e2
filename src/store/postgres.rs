//! The shared PostgreSQL backend (tokio-postgres, deadpool-postgres pool)
//! for several replicas on one database: [`super::sql`]'s statements and
//! rules, migrations applied once under an advisory lock, and revocations
//! propagated between replicas with LISTEN/NOTIFY.
//!
//! Every wait is bounded by `database.timeout_ms`: taking a pooled
//! connection, opening one and each LISTEN step give up at it with
//! `Unavailable`; each call as a whole (connection wait and query together)
//! is bounded by [`super::deadline::bounded`], after which the pool is
//! emptied of idle connections, which may be stuck in a partition, so the
//! next call opens a fresh one.

use std::error::Error;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, NoTls};

use super::sql::{Backend, Call, Conn, Row, SqlStore, Value};
use super::{StoreError, StoreEvent, StoreResult, now};

/// Embedded migrations, the same versions as SQLite's, applied in order once each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_api_keys.sql")),
    (3, include_str!("migrations/postgres/0003_mfa_lockout.sql")),
    (4, include_str!("migrations/postgres/0004_accounts.sql")),
    (5, include_str!("migrations/postgres/0005_oidc.sql")),
    (6, include_str!("migrations/postgres/0006_passkeys.sql")),
];

/// `pg_advisory_xact_lock` key serialising migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c; // "portcull"
/// The LISTEN/NOTIFY channel for [`StoreEvent`]s.
const CHANNEL: &str = "portcullis_events";
/// `/readyz` gives up on the database after this (or the deadline, if shorter).
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The store on a shared PostgreSQL database.
pub type PgStore = SqlStore<Postgres>;

pub struct Postgres {
    pool: Pool,
    config: tokio_postgres::Config,
    /// `database.timeout_ms`: the deadline of a call, and the longest wait
    /// for a pooled connection, a new connection, a recycle check, and each
    /// LISTEN step.
    timeout: Duration,
}

impl SqlStore<Postgres> {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and migrates,
    /// with the default deadline of 3 s.
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        Self::open_with_timeout(url, super::DEFAULT_TIMEOUT).await
    }

    /// [`PgStore::open`] with `timeout` bounding every call and wait.
    pub async fn open_with_timeout(url: &str, timeout: Duration) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Other(format!("database.url: {e}")))?;
        config.connect_timeout(timeout);
        config.application_name("portcullis");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Other(format!("pool: {e}")))?;
        let backend = Postgres {
            pool,
            config,
            timeout,
        };
        backend.migrate().await?;
        Ok(SqlStore { backend })
    }
}

impl Postgres {
    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // replicas starting together wait here for the first one's migrations
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(pg_err)?;
        for (version, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(pg_err)?
                .is_some();
            if !done {
                tx.batch_execute(sql).await.map_err(pg_err)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[version, &now()],
                )
                .await
                .map_err(pg_err)?;
            }
        }
        tx.commit().await.map_err(pg_err)
    }

    /// One LISTEN connection's life: returns when it breaks.
    async fn listen_once(
        &self,
        events: &tokio::sync::mpsc::UnboundedSender<StoreEvent>,
    ) -> Result<(), String> {
        let (client, mut conn) = tokio::time::timeout(self.timeout, self.config.connect(NoTls))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(Some(n.payload().to_string())).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(None);
                        tracing::warn!(error = %e, "store event connection lost");
                        return;
                    }
                    None => {
                        let _ = tx.send(None);
                        return;
                    }
                }
            }
        });
        let listen = tokio::time::timeout(
            self.timeout,
            client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await;
        if !matches!(listen, Ok(Ok(()))) {
            driver.abort();
            return Err("LISTEN failed".into());
        }
        tracing::info!("listening for store events");
        // anything published while we were away is unknown: flush
        if events.send(StoreEvent::Resync).is_err() {
            driver.abort();
            return Ok(());
        }
        // a keep-alive query notices a silently dead connection
        let mut keepalive = tokio::time::interval(Duration::from_secs(5));
        keepalive.tick().await;
        let result = loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Some(payload)) => match serde_json::from_str::<StoreEvent>(&payload) {
                        Ok(ev) => {
                            if events.send(ev).is_err() {
                                break Ok(());
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable store event"),
                    },
                    _ => break Err("connection closed".to_string()),
                },
                _ = keepalive.tick() => {
                    match tokio::time::timeout(self.timeout, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        _ => break Err("keep-alive failed".to_string()),
                    }
                }
                _ = events.closed() => break Ok(()),
            }
        };
        driver.abort();
        result
    }
}

#[async_trait]
impl Backend for Postgres {
    type Conn = PgConn;

    async fn run<T, F>(&self, what: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConn) -> Call<'c, T> + Send + 'static,
    {
        let call = async {
            let mut conn = PgConn {
                client: Some(self.client().await?),
                in_tx: false,
            };
            f(&mut conn).await
        };
        super::deadline::bounded(self.timeout, what, call, || self.after_deadline()).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let result = tokio::time::timeout(PING_TIMEOUT.min(self.timeout), async {
            let c = self.client().await?;
            c.simple_query("SELECT 1").await.map_err(pg_err)?;
            Ok(())
        })
        .await;
        match result {
            Ok(answer) => answer,
            Err(_) => {
                // the connection it took may be stuck: do not hand it out again
                self.after_deadline();
                Err(StoreError::Unavailable("ping timed out".into()))
            }
        }
    }

    fn after_deadline(&self) {
        // The call that gave up returned its connection to the pool when it
        // was dropped; it and every other idle one may sit in a partition.
        let dropped = self.pool.retain(|_, _| false).removed.len();
        tracing::warn!(
            idle_connections_dropped = dropped,
            "store call gave up at the deadline; pooled connections dropped"
        );
    }

    async fn close(&self) -> StoreResult<()> {
        self.pool.close();
        Ok(())
    }

    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        let payload = serde_json::to_string(event).map_err(|e| StoreError::Other(e.to_string()))?;
        self.run("publish", move |c| {
            Box::pin(async move {
                c.execute(
                    "SELECT pg_notify($1, $2)",
                    &[CHANNEL.into(), payload.into()],
                )
                .await
                .map(|_| ())
            })
        })
        .await
    }

    async fn listen(&self, events: tokio::sync::mpsc::UnboundedSender<StoreEvent>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            match self.listen_once(&events).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "store events: reconnecting"),
            }
            if events.is_closed() {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// A pooled connection for one call. Statements are prepared once per
/// connection (deadpool's statement cache): the store's texts are a fixed set.
pub struct PgConn {
    /// Taken only when dropped.
    client: Option<Object>,
    in_tx: bool,
}

impl PgConn {
    fn client(&self) -> StoreResult<&Object> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Other("connection gone".into()))
    }

    async fn batch(&mut self, sql: &str) -> StoreResult<()> {
        self.client()?.batch_execute(sql).await.map_err(pg_err)
    }
}

impl Drop for PgConn {
    /// A call dropped inside a transaction (its deadline) takes its
    /// connection out of the pool: closing it rolls the transaction back.
    fn drop(&mut self) {
        if self.in_tx
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const INSERTION_ORDER: &'static str = "seq";
    const POSTGRES: bool = true;

    async fn query(&mut self, sql: &str, params: &[Value]) -> StoreResult<Vec<Row>> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await.map_err(pg_err)?;
        let rows = c
            .query(&statement, &pg_params(params))
            .await
            .map_err(pg_err)?;
        rows.iter().map(row_of).collect()
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> StoreResult<u64> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await.map_err(pg_err)?;
        c.execute(&statement, &pg_params(params))
            .await
            .map_err(pg_err)
    }

    async fn begin(&mut self, _immediate: bool) -> StoreResult<()> {
        self.in_tx = true;
        self.batch("BEGIN").await
    }

    async fn end<T: Send>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        let sql = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.batch(sql).await?;
        self.in_tx = false;
        result
    }
}

/// Binds with the type PostgreSQL inferred; a mismatch is an error, not a cast.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql_checked(ty, out),
            Value::Int(n) => n.to_sql_checked(ty, out),
            Value::Text(s) => s.to_sql_checked(ty, out),
            Value::Bool(b) => b.to_sql_checked(ty, out),
            Value::Bytes(b) => b.to_sql_checked(ty, out),
            Value::Texts(v) => v.to_sql_checked(ty, out),
            Value::Ints(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row_of(r: &tokio_postgres::Row) -> StoreResult<Row> {
    let value = |i: usize| -> Result<Option<Value>, tokio_postgres::Error> {
        let ty = r.columns()[i].type_();
        Ok(if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|n| Value::Int(n.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Value::Bool)
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
        } else {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        })
    };
    (0..r.len())
        .map(|i| Ok(value(i).map_err(pg_err)?.unwrap_or(Value::Null)))
        .collect::<StoreResult<_>>()
        .map(Row)
}

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound(e.to_string()),
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("57P")
                || c.code().starts_with("53") =>
        {
            StoreError::Unavailable(e.to_string())
        }
        Some(_) => StoreError::Other(e.to_string()),
        // no SQLSTATE: the connection broke or could not be made
        None => StoreError::Unavailable(e.to_string()),
    }
}
