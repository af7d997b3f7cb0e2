//! The embedded SQLite backend (rusqlite, bundled SQLite): WAL, foreign keys
//! on, embedded versioned migrations. One connection behind a mutex, used
//! only inside `spawn_blocking`, so the proxy's event loop never waits on
//! disk. The statements are [`super::sql`]'s, run with `$n` spelled `?n`.
//!
//! Every call has a deadline (`database.timeout_ms`) that covers the wait
//! for the connection and the query: the wait is bounded in async code, the
//! query by SQLite's busy timeout (another process holding the write lock)
//! and a progress handler that interrupts a statement running past the
//! deadline. An interrupted call rolls back, so a call either completes or
//! changes nothing: a 503 never hides a write that happened anyway.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};

use super::sql::{Backend, Call, Conn, Row, SqlStore, Value};
use super::{StoreError, StoreResult, now};

/// Embedded migrations, applied in order once each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_api_keys.sql")),
    (3, include_str!("migrations/sqlite/0003_mfa_lockout.sql")),
    (4, include_str!("migrations/sqlite/0004_accounts.sql")),
    (5, include_str!("migrations/sqlite/0005_oidc.sql")),
    (6, include_str!("migrations/sqlite/0006_passkeys.sql")),
];

/// Virtual-machine steps between two deadline checks of a running statement.
const PROGRESS_STEPS: i32 = 1000;

/// The store on one SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

pub struct Sqlite {
    conn: Arc<tokio::sync::Mutex<Connection>>,
    /// Deadline of every call.
    timeout: Duration,
}

impl SqlStore<Sqlite> {
    /// Opens or creates the database file (and its folder) and migrates it,
    /// with the default deadline of 3 s per call.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        Self::open_with_timeout(path, super::DEFAULT_TIMEOUT).await
    }

    /// [`SqliteStore::open`] with `timeout` as the deadline of every call.
    pub async fn open_with_timeout(path: &Path, timeout: Duration) -> StoreResult<SqliteStore> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(format!("create folder: {e}")))?;
            }
            let mut conn = Connection::open(&path).map_err(map_err)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(map_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(map_err)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(map_err)?;
            // every statement of `store::sql` stays prepared
            conn.set_prepared_statement_cache_capacity(128);
            migrate(&mut conn).map_err(map_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Other(format!("open task: {e}")))??;
        Ok(SqlStore {
            backend: Sqlite {
                conn: Arc::new(tokio::sync::Mutex::new(conn)),
                timeout,
            },
        })
    }
}

impl Sqlite {
    /// Runs `f` with the connection on the blocking pool, within the
    /// deadline: waiting for the connection, for another process' write lock
    /// and the statements themselves all stop at it with `Unavailable`.
    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        let ms = self.timeout.as_millis();
        let mut conn = tokio::time::timeout_at(deadline.into(), self.conn.clone().lock_owned())
            .await
            .map_err(|_| {
                crate::metrics::store_deadline_exceeded();
                StoreError::Unavailable(format!("no connection free within {ms} ms (deadline)"))
            })?;
        tokio::task::spawn_blocking(move || {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                crate::metrics::store_deadline_exceeded();
                return Err(StoreError::Unavailable(format!(
                    "not started within {ms} ms (deadline)"
                )));
            }
            conn.busy_timeout(left).map_err(map_err)?;
            conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline))
                .map_err(map_err)?;
            let result = f(&mut conn).map_err(|e| match e {
                StoreError::Unavailable(why) if Instant::now() + BUSY_SLACK >= deadline => {
                    crate::metrics::store_deadline_exceeded();
                    StoreError::Unavailable(format!("{why} (deadline of {ms} ms)"))
                }
                other => other,
            });
            conn.progress_handler(0, None::<fn() -> bool>)
                .map_err(map_err)?;
            // a call never leaves a transaction open behind it
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK").map_err(map_err)?;
            }
            result
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task: {e}")))?
    }
}

#[async_trait]
impl Backend for Sqlite {
    type Conn = Connection;

    async fn run<T, F>(&self, _what: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Connection) -> Call<'c, T> + Send + 'static,
    {
        self.call(move |conn| {
            // every statement runs to completion on this thread: the call
            // is done at its first poll
            match std::pin::pin!(f(conn)).poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(result) => result,
                Poll::Pending => Err(StoreError::Other("SQLite call suspended".into())),
            }
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    async fn close(&self) -> StoreResult<()> {
        self.call(|c| {
            c.pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .map_err(map_err)
        })
        .await
    }
}

/// Our statements are written with PostgreSQL's `$n`; SQLite's is `?n`.
fn sqlite_sql(sql: &str) -> Cow<'_, str> {
    debug_assert!(converts(sql), "statement does not convert to SQLite: {sql}");
    if sql.contains('$') {
        Cow::Owned(sql.replace('$', "?"))
    } else {
        Cow::Borrowed(sql)
    }
}

/// Whether replacing `$` by `?` is exactly the placeholder rewrite: no `?`
/// already, and every `$` starts a parameter number.
fn converts(sql: &str) -> bool {
    !sql.contains('?')
        && sql
            .split('$')
            .skip(1)
            .all(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Texts(_) | Value::Ints(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "arrays are PostgreSQL's".into(),
                ));
            }
        })
    }
}

fn value_of(v: ValueRef<'_>) -> StoreResult<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec()).map_err(|e| StoreError::Other(e.to_string()))?,
        ),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        ValueRef::Real(_) => return Err(StoreError::Other("unexpected REAL column".into())),
    })
}

/// Each method does its work before returning its future: nothing waits.
impl Conn for Connection {
    const FOR_UPDATE: &'static str = "";
    const INSERTION_ORDER: &'static str = "rowid";
    const POSTGRES: bool = false;

    async fn query(&mut self, sql: &str, params: &[Value]) -> StoreResult<Vec<Row>> {
        let mut stmt = self.prepare_cached(&sqlite_sql(sql)).map_err(map_err)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(map_err)? {
            let values = (0..columns)
                .map(|i| value_of(r.get_ref(i).map_err(map_err)?))
                .collect::<StoreResult<_>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> StoreResult<u64> {
        let mut stmt = self.prepare_cached(&sqlite_sql(sql)).map_err(map_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    async fn begin(&mut self, immediate: bool) -> StoreResult<()> {
        let sql = if immediate {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        self.execute_batch(sql).map_err(map_err)
    }

    async fn end<T: Send>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        let ended = match &result {
            Ok(_) => self.execute_batch("COMMIT"),
            Err(_) => self.execute_batch("ROLLBACK"),
        };
        // a COMMIT refused (busy) leaves the transaction open: `call` rolls it back
        ended.map_err(map_err)?;
        result
    }
}

/// SQLite's busy handler sleeps in steps of up to 100 ms and gives up when the
/// next step would pass its timeout, so a wait bounded by the deadline can end
/// up to one step before it: that is still the deadline.
const BUSY_SLACK: Duration = Duration::from_millis(100);

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now()],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => match f.code {
            ErrorCode::ConstraintViolation => {
                // SQLITE_CONSTRAINT_FOREIGNKEY
                if f.extended_code == 787 {
                    StoreError::NotFound(msg.clone().unwrap_or_else(|| "reference".into()))
                } else {
                    StoreError::Conflict(msg.clone().unwrap_or_else(|| "unique".into()))
                }
            }
            ErrorCode::DatabaseBusy
            | ErrorCode::OperationInterrupted
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        },
        _ => StoreError::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::tests::new_user;

    /// The rewrite is only the placeholders; anything else is refused (and
    /// `sqlite_sql` asserts it of every statement the store suite runs).
    #[test]
    fn statements_convert_placeholders_only() {
        assert_eq!(
            sqlite_sql("UPDATE t SET a = $2 WHERE id = $1 AND b = $12"),
            "UPDATE t SET a = ?2 WHERE id = ?1 AND b = ?12"
        );
        assert_eq!(sqlite_sql("SELECT 1"), "SELECT 1");
        assert!(!converts("SELECT $x"));
        assert!(!converts("SELECT ?1"));
        assert!(!converts("SELECT 1 $"));
    }

    // The behaviour shared with PostgreSQL is tested in `store::tests`; this
    // is what only a file-backed store has.
    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/p.db");
        let tid = {
            let s = SqliteStore::open(&path).await.unwrap();
            let t = s.ensure_tenant("default").await.unwrap();
            s.create_user(new_user(t.id, "a@example.com"))
                .await
                .unwrap();
            s.close().await.unwrap();
            t.id
        };
        let s = SqliteStore::open(&path).await.unwrap();
        assert!(
            s.user_by_email(tid, "A@example.com")
                .await
                .unwrap()
                .is_some()
        );
    }

    /// Another process holding the write lock (the CLI, a backup): a write
    /// gives up at the deadline with `Unavailable`, reads go on (WAL), and
    /// the store works again once the lock is gone.
    #[tokio::test]
    async fn a_write_lock_held_elsewhere_ends_a_call_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let deadline = Duration::from_millis(300);
        let s = SqliteStore::open_with_timeout(&path, deadline)
            .await
            .unwrap();
        let t = s.ensure_tenant("default").await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let start = Instant::now();
        let e = s
            .create_user(new_user(t.id, "a@example.com"))
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("deadline"), "{e}");
        assert!(
            took >= deadline - BUSY_SLACK && took < deadline + Duration::from_millis(700),
            "{took:?}"
        );
        assert!(s.tenant_by_slug("default").await.unwrap().is_some());

        other.execute_batch("ROLLBACK").unwrap();
        s.create_user(new_user(t.id, "a@example.com"))
            .await
            .unwrap();
    }
}
