//! The embedded SQLite store (rusqlite, bundled SQLite): WAL, foreign keys on,
//! embedded versioned migrations. One connection behind a mutex, used only
//! inside `spawn_blocking`, so the proxy's event loop never waits on disk.
//!
//! Every call has a deadline (`database.timeout_ms`) that covers the wait
//! for the connection and the query: the wait is bounded in async code, the
//! query by SQLite's busy timeout (another process holding the write lock)
//! and a progress handler that interrupts a statement running past the
//! deadline. An interrupted call rolls back, so a call either completes or
//! changes nothing: a 503 never hides a write that happened anyway.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    AdminUserUpdate, AuditEvent, BUILT_IN_ROLES, BackupCode, MfaRecord, MfaToken, NewSession,
    NewUser, OneTimeKind, OneTimeToken, ProfileUpdate, RefreshOutcome, Role, Session,
    SigningKeyRecord, Store, StoreError, StoreResult, Tenant, User, UserQuery, UserStatus, now,
};
use super::{ApiKey, ApiKeyWithOwner, NewApiKey};

/// Embedded migrations, applied in order once each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_api_keys.sql")),
    (3, include_str!("migrations/sqlite/0003_mfa_lockout.sql")),
    (4, include_str!("migrations/sqlite/0004_accounts.sql")),
];

/// Virtual-machine steps between two deadline checks of a running statement.
const PROGRESS_STEPS: i32 = 1000;

pub struct SqliteStore {
    conn: Arc<tokio::sync::Mutex<Connection>>,
    /// Deadline of every call.
    timeout: Duration,
}

impl SqliteStore {
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
            migrate(&mut conn).map_err(map_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Other(format!("open task: {e}")))??;
        Ok(SqliteStore {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
            timeout,
        })
    }

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
            result
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task: {e}")))?
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

fn parse_uuid(s: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn tenant_from_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        slug: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
    })
}

const TENANT_COLUMNS: &str = "id, slug, name, created_at";

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        tenant_id: parse_uuid(&r.get::<_, String>(1)?)?,
        user_id: parse_uuid(&r.get::<_, String>(2)?)?,
        amr: json_list(&r.get::<_, String>(3)?),
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

const SESSION_COLUMNS: &str = "s.id, s.tenant_id, s.user_id, s.amr, s.created_at, s.revoked_at";

const USER_COLUMNS: &str = "id, tenant_id, email, password_hash, first_name, family_name, name, \
     status, email_verified, mfa_enabled, created_at, updated_at, locked_until";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let status: String = r.get(7)?;
    Ok(User {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        tenant_id: parse_uuid(&r.get::<_, String>(1)?)?,
        email: r.get(2)?,
        password_hash: r.get(3)?,
        first_name: r.get(4)?,
        family_name: r.get(5)?,
        name: r.get(6)?,
        status: UserStatus::parse(&status).unwrap_or(UserStatus::Disabled),
        email_verified: r.get(8)?,
        mfa_enabled: r.get(9)?,
        roles: Vec::new(),
        permissions: Vec::new(),
        locked_until: r.get(12)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

/// Fills in the user's roles and the union of their permissions.
fn load_roles(conn: &Connection, user: &mut User) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.name, r.permissions FROM user_roles ur
           JOIN roles r ON r.tenant_id = ur.tenant_id AND r.name = ur.role
          WHERE ur.user_id = ?1 ORDER BY r.name",
    )?;
    let rows = stmt.query_map([user.id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut perms = std::collections::BTreeSet::new();
    user.roles.clear();
    for row in rows {
        let (name, p) = row?;
        user.roles.push(name);
        perms.extend(json_list(&p));
    }
    user.permissions = perms.into_iter().collect();
    Ok(())
}

fn user_where(conn: &Connection, clause: &str, args: &[&str]) -> rusqlite::Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let user = stmt
        .query_row(rusqlite::params_from_iter(args.iter()), user_from_row)
        .optional()?;
    match user {
        Some(mut u) => {
            load_roles(conn, &mut u)?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

fn insert_tenant(conn: &Connection, slug: &str, name: &str) -> rusqlite::Result<Tenant> {
    let t = Tenant {
        id: Uuid::now_v7(),
        slug: slug.to_string(),
        name: name.to_string(),
        created_at: now(),
    };
    conn.execute(
        "INSERT INTO tenants (id, slug, name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![t.id.to_string(), t.slug, t.name, t.created_at],
    )?;
    for (role, perms) in BUILT_IN_ROLES {
        let perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
        conn.execute(
            "INSERT INTO roles (tenant_id, name, permissions, built_in, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)",
            params![t.id.to_string(), role, to_json_list(&perms), t.created_at],
        )?;
    }
    Ok(t)
}

/// Gives the user `roles` of the tenant; `NotFound("role …")` for an unknown one.
fn grant_roles(
    conn: &Connection,
    user_id: &str,
    tenant_id: &str,
    roles: &[String],
) -> StoreResult<()> {
    for role in roles {
        conn.execute(
            "INSERT OR IGNORE INTO user_roles (user_id, tenant_id, role) VALUES (?1, ?2, ?3)",
            params![user_id, tenant_id, role],
        )
        .map_err(|e| match map_err(e) {
            StoreError::NotFound(_) => StoreError::NotFound(format!("role {role}")),
            other => other,
        })?;
    }
    Ok(())
}

fn revoke(conn: &Connection, id: &str, reason: &str, at: i64) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3
          WHERE id = ?1 AND revoked_at IS NULL",
        params![id, at, reason],
    )?;
    Ok(n > 0)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        let (slug, name) = (slug.to_string(), name.to_string());
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let t = insert_tenant(&tx, &slug, &name).map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(t)
        })
        .await
    }

    async fn ensure_tenant(&self, slug: &str) -> StoreResult<Tenant> {
        let slug = slug.to_string();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let found = tx
                .query_row(
                    &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = ?1"),
                    [&slug],
                    tenant_from_row,
                )
                .optional()
                .map_err(map_err)?;
            let t = match found {
                Some(t) => t,
                None => insert_tenant(&tx, &slug, &slug).map_err(map_err)?,
            };
            tx.commit().map_err(map_err)?;
            Ok(t)
        })
        .await
    }

    async fn tenant_by_id(&self, id: Uuid) -> StoreResult<Option<Tenant>> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"),
                [id.to_string()],
                tenant_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        let slug = slug.to_string();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = ?1"),
                [slug],
                tenant_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.call(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, slug"
                ))
                .map_err(map_err)?;
            let rows = stmt.query_map([], tenant_from_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let id = Uuid::now_v7();
            let at = now();
            tx.execute(
                "INSERT INTO users (id, tenant_id, email, password_hash, first_name, family_name,
                                    name, status, email_verified, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8, ?9, ?9)",
                params![
                    id.to_string(),
                    new.tenant_id.to_string(),
                    new.email,
                    new.password_hash,
                    new.first_name,
                    new.family_name,
                    new.name,
                    new.email_verified,
                    at
                ],
            )
            .map_err(map_err)?;
            grant_roles(&tx, &id.to_string(), &new.tenant_id.to_string(), &new.roles)?;
            let user = user_where(&tx, "id = ?1", &[&id.to_string()])
                .map_err(map_err)?
                .ok_or_else(|| StoreError::Other("user vanished".into()))?;
            tx.commit().map_err(map_err)?;
            Ok(user)
        })
        .await
    }

    async fn user_by_id(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<User>> {
        self.call(move |c| {
            user_where(
                c,
                "id = ?1 AND tenant_id = ?2",
                &[&id.to_string(), &tenant_id.to_string()],
            )
            .map_err(map_err)
        })
        .await
    }

    async fn user_by_email(&self, tenant_id: Uuid, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_ascii_lowercase();
        self.call(move |c| {
            user_where(
                c,
                "tenant_id = ?1 AND email = ?2",
                &[&tenant_id.to_string(), &email],
            )
            .map_err(map_err)
        })
        .await
    }

    async fn count_users(&self, tenant_id: Uuid) -> StoreResult<u64> {
        self.call(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM users WHERE tenant_id = ?1",
                [tenant_id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }

    async fn update_profile(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: ProfileUpdate,
    ) -> StoreResult<User> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let (uid, tid) = (id.to_string(), tenant_id.to_string());
            let email_changes = update.email.is_some();
            let n = tx
                .execute(
                    "UPDATE users SET
                        first_name = COALESCE(?3, first_name),
                        family_name = COALESCE(?4, family_name),
                        name = COALESCE(?5, name),
                        email = COALESCE(?6, email),
                        email_verified = CASE WHEN ?6 IS NOT NULL AND ?6 <> email
                                              THEN 0 ELSE email_verified END,
                        updated_at = ?7
                      WHERE id = ?1 AND tenant_id = ?2",
                    params![
                        uid,
                        tid,
                        update.first_name,
                        update.family_name,
                        update.name,
                        update.email,
                        now()
                    ],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound("user".into()));
            }
            let _ = email_changes;
            let user = user_where(&tx, "id = ?1", &[&uid])
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound("user".into()))?;
            tx.commit().map_err(map_err)?;
            Ok(user)
        })
        .await
    }

    async fn set_password(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        password_hash: &str,
    ) -> StoreResult<()> {
        let hash = password_hash.to_string();
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET password_hash = ?3, updated_at = ?4
                      WHERE id = ?1 AND tenant_id = ?2",
                    params![id.to_string(), tenant_id.to_string(), hash, now()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound("user".into()));
            }
            Ok(())
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<Session> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let at = now();
            tx.execute(
                "INSERT INTO sessions (id, tenant_id, user_id, amr, created_at, ip, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.id.to_string(),
                    s.tenant_id.to_string(),
                    s.user_id.to_string(),
                    to_json_list(&s.amr),
                    at,
                    s.ip,
                    s.user_agent
                ],
            )
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![s.refresh_hash, s.id.to_string(), at, s.refresh_expires_at],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(Session {
                id: s.id,
                tenant_id: s.tenant_id,
                user_id: s.user_id,
                amr: s.amr,
                created_at: at,
                revoked_at: None,
            })
        })
        .await
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1"),
                [id.to_string()],
                session_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
        at: i64,
    ) -> StoreResult<RefreshOutcome> {
        let (old_hash, new_hash) = (old_hash.to_string(), new_hash.to_string());
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let found = tx
                .query_row(
                    &format!(
                        "SELECT {SESSION_COLUMNS}, rt.expires_at, rt.used_at
                           FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
                          WHERE rt.hash = ?1"
                    ),
                    [&old_hash],
                    |r| {
                        Ok((
                            session_from_row(r)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(map_err)?;
            let outcome = match found {
                None => RefreshOutcome::Unknown,
                Some((session, _, _)) if session.revoked_at.is_some() => RefreshOutcome::Revoked,
                Some((session, _, Some(_used))) => {
                    revoke(&tx, &session.id.to_string(), "refresh_token_reused", at)
                        .map_err(map_err)?;
                    RefreshOutcome::Reused {
                        session_id: session.id,
                        user_id: session.user_id,
                        tenant_id: session.tenant_id,
                    }
                }
                Some((_, expires_at, None)) if expires_at <= at => RefreshOutcome::Expired,
                Some((session, _, None)) => {
                    tx.execute(
                        "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1",
                        params![old_hash, at],
                    )
                    .map_err(map_err)?;
                    tx.execute(
                        "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![new_hash, session.id.to_string(), at, new_expires_at],
                    )
                    .map_err(map_err)?;
                    let user = user_where(
                        &tx,
                        "id = ?1 AND tenant_id = ?2",
                        &[&session.user_id.to_string(), &session.tenant_id.to_string()],
                    )
                    .map_err(map_err)?
                    .map(Box::new);
                    RefreshOutcome::Rotated { session, user }
                }
            };
            tx.commit().map_err(map_err)?;
            Ok(outcome)
        })
        .await
    }

    async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<Session>> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.query_row(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM refresh_tokens rt
                       JOIN sessions s ON s.id = rt.session_id WHERE rt.hash = ?1"
                ),
                [hash],
                session_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn revoke_session(&self, id: Uuid, reason: &str) -> StoreResult<bool> {
        let reason = reason.to_string();
        self.call(move |c| revoke(c, &id.to_string(), &reason, now()).map_err(map_err))
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let reason = reason.to_string();
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let keep = keep.map(|k| k.to_string()).unwrap_or_default();
            let ids: Vec<String> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT id FROM sessions
                          WHERE user_id = ?1 AND revoked_at IS NULL AND id <> ?2",
                    )
                    .map_err(map_err)?;
                let rows = stmt
                    .query_map(params![user_id.to_string(), keep], |r| r.get(0))
                    .map_err(map_err)?;
                rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
            };
            let at = now();
            for id in &ids {
                revoke(&tx, id, &reason, at).map_err(map_err)?;
            }
            tx.commit().map_err(map_err)?;
            Ok(ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
        })
        .await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.call(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT kid, algorithm, private_der, created_at, retired_at
                       FROM signing_keys ORDER BY created_at DESC, rowid DESC",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(SigningKeyRecord {
                        kid: r.get(0)?,
                        algorithm: r.get(1)?,
                        private_der: r.get(2)?,
                        created_at: r.get(3)?,
                        retired_at: r.get(4)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn rotate_signing_key(&self, key: SigningKeyRecord, at: i64) -> StoreResult<()> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            tx.execute(
                "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                [at],
            )
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO signing_keys (kid, algorithm, private_der, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![key.kid, key.algorithm, key.private_der, key.created_at],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn record_audit(&self, e: AuditEvent) -> StoreResult<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit_events (id, tenant_id, at, type, user_id, ip, user_agent,
                                           outcome, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    e.id.to_string(),
                    e.tenant_id.map(|t| t.to_string()),
                    e.at,
                    e.kind,
                    e.user_id.map(|u| u.to_string()),
                    e.ip,
                    e.user_agent,
                    e.outcome,
                    e.details.to_string()
                ],
            )
            .map(|_| ())
            .map_err(map_err)
        })
        .await
    }

    async fn close(&self) -> StoreResult<()> {
        self.call(|c| {
            c.pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .map_err(map_err)
        })
        .await
    }

    // account lockout

    async fn record_login_failure(
        &self,
        user_id: Uuid,
        at: i64,
        window: i64,
        max: u32,
        lock_for: i64,
    ) -> StoreResult<Option<i64>> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let uid = user_id.to_string();
            tx.execute(
                "INSERT INTO login_failures (user_id, at) VALUES (?1, ?2)",
                params![uid, at],
            )
            .map_err(map_err)?;
            let recent: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM login_failures WHERE user_id = ?1 AND at > ?2",
                    params![uid, at - window],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let locked = if max > 0 && recent >= max as i64 {
                let until = at + lock_for;
                tx.execute(
                    "UPDATE users SET locked_until = ?2 WHERE id = ?1",
                    params![uid, until],
                )
                .map_err(map_err)?;
                tx.execute("DELETE FROM login_failures WHERE user_id = ?1", [&uid])
                    .map_err(map_err)?;
                Some(until)
            } else {
                tx.execute(
                    "DELETE FROM login_failures WHERE user_id = ?1 AND at <= ?2",
                    params![uid, at - window],
                )
                .map_err(map_err)?;
                None
            };
            tx.commit().map_err(map_err)?;
            Ok(locked)
        })
        .await
    }

    async fn clear_login_failures(&self, user_id: Uuid) -> StoreResult<()> {
        self.call(move |c| {
            let uid = user_id.to_string();
            c.execute("DELETE FROM login_failures WHERE user_id = ?1", [&uid])
                .map_err(map_err)?;
            c.execute(
                "UPDATE users SET locked_until = NULL WHERE id = ?1 AND locked_until IS NOT NULL",
                [&uid],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    // TOTP MFA

    async fn mfa(&self, user_id: Uuid) -> StoreResult<Option<MfaRecord>> {
        self.call(move |c| {
            c.query_row(
                "SELECT secret, confirmed, last_step FROM mfa_secrets WHERE user_id = ?1",
                [user_id.to_string()],
                |r| {
                    Ok(MfaRecord {
                        secret: r.get(0)?,
                        confirmed: r.get(1)?,
                        last_step: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn begin_mfa(
        &self,
        user_id: Uuid,
        secret: &str,
        backup_code_hashes: Vec<String>,
    ) -> StoreResult<()> {
        let secret = secret.to_string();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let uid = user_id.to_string();
            let confirmed: Option<bool> = tx
                .query_row(
                    "SELECT confirmed FROM mfa_secrets WHERE user_id = ?1",
                    [&uid],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            if confirmed == Some(true) {
                return Err(StoreError::Conflict("mfa already enabled".into()));
            }
            tx.execute(
                "INSERT INTO mfa_secrets (user_id, secret, confirmed, created_at)
                 VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                     confirmed = 0, last_step = NULL, created_at = excluded.created_at",
                params![uid, secret, now()],
            )
            .map_err(map_err)?;
            insert_backup_codes(&tx, &uid, &backup_code_hashes)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn accept_totp_step(&self, user_id: Uuid, step: i64, confirm: bool) -> StoreResult<bool> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let uid = user_id.to_string();
            let n = tx
                .execute(
                    "UPDATE mfa_secrets SET last_step = ?2,
                            confirmed = CASE WHEN ?3 THEN 1 ELSE confirmed END
                      WHERE user_id = ?1 AND (last_step IS NULL OR last_step < ?2)",
                    params![uid, step, confirm],
                )
                .map_err(map_err)?;
            if n > 0 && confirm {
                tx.execute(
                    "UPDATE users SET mfa_enabled = 1, updated_at = ?2 WHERE id = ?1",
                    params![uid, now()],
                )
                .map_err(map_err)?;
            }
            tx.commit().map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn disable_mfa(&self, user_id: Uuid) -> StoreResult<()> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let uid = user_id.to_string();
            tx.execute("DELETE FROM mfa_secrets WHERE user_id = ?1", [&uid])
                .map_err(map_err)?;
            tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [&uid])
                .map_err(map_err)?;
            tx.execute(
                "UPDATE users SET mfa_enabled = 0, updated_at = ?2 WHERE id = ?1",
                params![uid, now()],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn unused_backup_codes(&self, user_id: Uuid) -> StoreResult<Vec<BackupCode>> {
        self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, code_hash FROM backup_codes
                      WHERE user_id = ?1 AND used_at IS NULL ORDER BY id",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([user_id.to_string()], |r| {
                    Ok(BackupCode {
                        id: r.get(0)?,
                        code_hash: r.get(1)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn use_backup_code(&self, user_id: Uuid, id: i64) -> StoreResult<bool> {
        self.call(move |c| {
            c.execute(
                "UPDATE backup_codes SET used_at = ?3
                  WHERE id = ?1 AND user_id = ?2 AND used_at IS NULL",
                params![id, user_id.to_string(), now()],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    async fn replace_backup_codes(&self, user_id: Uuid, hashes: Vec<String>) -> StoreResult<()> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            insert_backup_codes(&tx, &user_id.to_string(), &hashes)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn has_sealed_mfa_secrets(&self) -> StoreResult<bool> {
        self.call(|c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM mfa_secrets WHERE secret NOT LIKE 'b32:%')",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)
        })
        .await
    }

    // MFA login tokens

    async fn create_mfa_token(
        &self,
        hash: &str,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.execute("DELETE FROM mfa_tokens WHERE expires_at < ?1", [now() - 3600])
                .map_err(map_err)?;
            c.execute(
                "INSERT INTO mfa_tokens (hash, user_id, tenant_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, user_id.to_string(), tenant_id.to_string(), expires_at],
            )
            .map(|_| ())
            .map_err(map_err)
        })
        .await
    }

    async fn mfa_token(&self, hash: &str) -> StoreResult<Option<MfaToken>> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT user_id, tenant_id, expires_at, failures, used_at FROM mfa_tokens WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(MfaToken {
                        user_id: parse_uuid(&r.get::<_, String>(0)?)?,
                        tenant_id: parse_uuid(&r.get::<_, String>(1)?)?,
                        expires_at: r.get(2)?,
                        failures: r.get(3)?,
                        used: r.get::<_, Option<i64>>(4)?.is_some(),
                    })
                },
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn mfa_token_failure(&self, hash: &str) -> StoreResult<u32> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.query_row(
                "UPDATE mfa_tokens SET failures = failures + 1 WHERE hash = ?1 RETURNING failures",
                [hash],
                |r| r.get(0),
            )
            .optional()
            .map(|f| f.unwrap_or(u32::MAX))
            .map_err(map_err)
        })
        .await
    }

    async fn consume_mfa_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.execute(
                "UPDATE mfa_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                params![hash, at],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    // administration

    async fn list_users(&self, tenant_id: Uuid, query: UserQuery) -> StoreResult<(Vec<User>, u64)> {
        self.call(move |c| {
            let (clause, args) = query.filter(tenant_id, sqlite_placeholder);
            let total: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM users WHERE {clause}"),
                    rusqlite::params_from_iter(args.iter()),
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let offset = query.offset();
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {clause}
                  ORDER BY created_at, id LIMIT {} OFFSET {offset}",
                query.limit
            );
            let mut stmt = c.prepare(&sql).map_err(map_err)?;
            let mut users = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), user_from_row)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            for u in &mut users {
                load_roles(c, u).map_err(map_err)?;
            }
            Ok((users, total as u64))
        })
        .await
    }

    async fn admin_update_user(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: AdminUserUpdate,
    ) -> StoreResult<User> {
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let (uid, tid) = (id.to_string(), tenant_id.to_string());
            let n = tx
                .execute(
                    "UPDATE users SET first_name = COALESCE(?3, first_name),
                            family_name = COALESCE(?4, family_name),
                            status = COALESCE(?5, status), updated_at = ?6
                      WHERE id = ?1 AND tenant_id = ?2",
                    params![
                        uid,
                        tid,
                        update.first_name,
                        update.family_name,
                        update.status.map(|s| s.as_str()),
                        now()
                    ],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound("user".into()));
            }
            if let Some(roles) = &update.roles {
                tx.execute("DELETE FROM user_roles WHERE user_id = ?1", [&uid])
                    .map_err(map_err)?;
                grant_roles(&tx, &uid, &tid, roles)?;
            }
            let user = user_where(&tx, "id = ?1", &[&uid])
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound("user".into()))?;
            tx.commit().map_err(map_err)?;
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM users WHERE id = ?1 AND tenant_id = ?2",
                params![id.to_string(), tenant_id.to_string()],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    async fn set_email_verified(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<User> {
        self.call(move |c| {
            let (uid, tid) = (id.to_string(), tenant_id.to_string());
            c.execute(
                "UPDATE users SET email_verified = 1, updated_at = ?3 WHERE id = ?1 AND tenant_id = ?2",
                params![uid, tid, now()],
            )
            .map_err(map_err)?;
            user_where(c, "id = ?1 AND tenant_id = ?2", &[&uid, &tid])
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound("user".into()))
        })
        .await
    }

    async fn list_roles(&self, tenant_id: Uuid) -> StoreResult<Vec<Role>> {
        self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT name, permissions, built_in FROM roles WHERE tenant_id = ?1
                      ORDER BY built_in DESC, name",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([tenant_id.to_string()], |r| {
                    Ok(Role {
                        name: r.get(0)?,
                        permissions: json_list(&r.get::<_, String>(1)?),
                        built_in: r.get(2)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn create_role(&self, tenant_id: Uuid, role: Role) -> StoreResult<Role> {
        self.call(move |c| {
            let at = now();
            c.execute(
                "INSERT INTO roles (tenant_id, name, permissions, built_in, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 0, ?4, ?4)",
                params![
                    tenant_id.to_string(),
                    role.name,
                    to_json_list(&role.permissions),
                    at
                ],
            )
            .map_err(map_err)?;
            Ok(Role {
                built_in: false,
                ..role
            })
        })
        .await
    }

    async fn update_role(
        &self,
        tenant_id: Uuid,
        name: &str,
        permissions: Vec<String>,
    ) -> StoreResult<Role> {
        let name = name.to_string();
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE roles SET permissions = ?3, updated_at = ?4 WHERE tenant_id = ?1 AND name = ?2",
                    params![tenant_id.to_string(), name, to_json_list(&permissions), now()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound("role".into()));
            }
            c.query_row(
                "SELECT name, permissions, built_in FROM roles WHERE tenant_id = ?1 AND name = ?2",
                params![tenant_id.to_string(), name],
                |r| {
                    Ok(Role {
                        name: r.get(0)?,
                        permissions: json_list(&r.get::<_, String>(1)?),
                        built_in: r.get(2)?,
                    })
                },
            )
            .map_err(map_err)
        })
        .await
    }

    async fn delete_role(&self, tenant_id: Uuid, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.call(move |c| {
            c.execute(
                "DELETE FROM roles WHERE tenant_id = ?1 AND name = ?2 AND built_in = 0",
                params![tenant_id.to_string(), name],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    async fn audit_events_of(
        &self,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, tenant_id, at, type, user_id, ip, user_agent, outcome, details
                       FROM audit_events WHERE tenant_id = ?1 AND (?2 IS NULL OR user_id = ?2)
                      ORDER BY at DESC, rowid DESC LIMIT ?3",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![tenant_id.to_string(), user_id.map(|u| u.to_string()), limit],
                    |r| {
                        let tenant: Option<String> = r.get(1)?;
                        let user: Option<String> = r.get(4)?;
                        Ok(AuditEvent {
                            id: parse_uuid(&r.get::<_, String>(0)?)?,
                            tenant_id: tenant.as_deref().map(parse_uuid).transpose()?,
                            at: r.get(2)?,
                            kind: r.get(3)?,
                            user_id: user.as_deref().map(parse_uuid).transpose()?,
                            ip: r.get(5)?,
                            user_agent: r.get(6)?,
                            outcome: r.get(7)?,
                            details: serde_json::from_str(&r.get::<_, String>(8)?)
                                .unwrap_or(serde_json::Value::Null),
                        })
                    },
                )
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    // single-use tokens

    async fn create_one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.execute(
                "DELETE FROM one_time_tokens WHERE expires_at < ?1",
                [now() - 86_400],
            )
            .map_err(map_err)?;
            c.execute(
                "INSERT INTO one_time_tokens (hash, kind, user_id, tenant_id, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    hash,
                    kind.as_str(),
                    user_id.to_string(),
                    tenant_id.to_string(),
                    expires_at
                ],
            )
            .map(|_| ())
            .map_err(map_err)
        })
        .await
    }

    async fn one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
    ) -> StoreResult<Option<OneTimeToken>> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT user_id, tenant_id, expires_at, used_at FROM one_time_tokens
                  WHERE hash = ?1 AND kind = ?2",
                params![hash, kind.as_str()],
                |r| {
                    Ok(OneTimeToken {
                        user_id: parse_uuid(&r.get::<_, String>(0)?)?,
                        tenant_id: parse_uuid(&r.get::<_, String>(1)?)?,
                        expires_at: r.get(2)?,
                        used: r.get::<_, Option<i64>>(3)?.is_some(),
                    })
                },
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn consume_one_time_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.execute(
                "UPDATE one_time_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                params![hash, at],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    // api keys

    async fn create_api_key(&self, k: NewApiKey) -> StoreResult<ApiKey> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, tenant_id, user_id, name, description, key_prefix,
                                       key_hash, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    k.id.to_string(),
                    k.tenant_id.to_string(),
                    k.user_id.to_string(),
                    k.name,
                    k.description,
                    k.key_prefix,
                    k.key_hash,
                    k.scopes.as_deref().map(to_json_list),
                    k.created_at,
                    k.expires_at
                ],
            )
            .map_err(map_err)?;
            Ok(ApiKey {
                id: k.id,
                tenant_id: k.tenant_id,
                user_id: k.user_id,
                name: k.name,
                description: k.description,
                key_prefix: k.key_prefix,
                scopes: k.scopes,
                created_at: k.created_at,
                expires_at: k.expires_at,
                revoked_at: None,
                last_used_at: None,
            })
        })
        .await
    }

    async fn api_keys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        self.call(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys k
                      WHERE k.tenant_id = ?1 AND k.user_id = ?2 AND k.revoked_at IS NULL
                      ORDER BY k.created_at DESC, k.rowid DESC"
                ))
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![tenant_id.to_string(), user_id.to_string()],
                    api_key_from_row,
                )
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyWithOwner>> {
        let hash = hash.to_string();
        self.call(move |c| {
            let key = c
                .query_row(
                    &format!("SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.key_hash = ?1"),
                    [hash],
                    api_key_from_row,
                )
                .optional()
                .map_err(map_err)?;
            let Some(key) = key else {
                return Ok(None);
            };
            let owner = user_where(
                c,
                "id = ?1 AND tenant_id = ?2",
                &[&key.user_id.to_string(), &key.tenant_id.to_string()],
            )
            .map_err(map_err)?;
            Ok(owner.map(|owner| ApiKeyWithOwner { key, owner }))
        })
        .await
    }

    async fn revoke_api_key(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE api_keys SET revoked_at = ?4
                      WHERE id = ?1 AND tenant_id = ?2 AND user_id = ?3 AND revoked_at IS NULL",
                    params![
                        id.to_string(),
                        tenant_id.to_string(),
                        user_id.to_string(),
                        now()
                    ],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_api_key_use(&self, uses: Vec<(Uuid, i64)>) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE api_keys SET last_used_at = ?2
                          WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                    )
                    .map_err(map_err)?;
                for (id, at) in &uses {
                    stmt.execute(params![id.to_string(), at]).map_err(map_err)?;
                }
            }
            tx.commit().map_err(map_err)
        })
        .await
    }
}

fn insert_backup_codes(tx: &Connection, user_id: &str, hashes: &[String]) -> StoreResult<()> {
    tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [user_id])
        .map_err(map_err)?;
    for h in hashes {
        tx.execute(
            "INSERT INTO backup_codes (user_id, code_hash) VALUES (?1, ?2)",
            params![user_id, h],
        )
        .map_err(map_err)?;
    }
    Ok(())
}

// api keys

const API_KEY_COLUMNS: &str = "k.id, k.tenant_id, k.user_id, k.name, k.description, \
     k.key_prefix, k.scopes, k.created_at, k.expires_at, k.revoked_at, k.last_used_at";

fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        tenant_id: parse_uuid(&r.get::<_, String>(1)?)?,
        user_id: parse_uuid(&r.get::<_, String>(2)?)?,
        name: r.get(3)?,
        description: r.get(4)?,
        key_prefix: r.get(5)?,
        scopes: r.get::<_, Option<String>>(6)?.as_deref().map(json_list),
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        last_used_at: r.get(10)?,
    })
}

/// The n-th (1-based) query parameter in this backend's SQL.
fn sqlite_placeholder(n: usize) -> String {
    format!("?{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::new_user;

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

    /// The deadline wrapper bounds a call as a whole, whatever the inner
    /// store's own limits.
    #[tokio::test]
    async fn the_deadline_wrapper_gives_up_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let inner = SqliteStore::open_with_timeout(&path, Duration::from_secs(60))
            .await
            .unwrap();
        let s = crate::store::deadline::Bounded::new(inner, Duration::from_millis(200));
        let t = s.ensure_tenant("default").await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let start = Instant::now();
        let e = s
            .create_user(new_user(t.id, "b@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(start.elapsed() < Duration::from_millis(900));
        other.execute_batch("ROLLBACK").unwrap();
    }
}
