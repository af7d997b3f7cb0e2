//! The shared PostgreSQL store (tokio-postgres, deadpool-postgres pool) for
//! several replicas on one database: the same schema and semantics as the
//! SQLite store, migrations applied once under an advisory lock, and
//! revocations propagated between replicas with LISTEN/NOTIFY.
//!
//! Every wait is bounded by `database.timeout_ms`: taking a pooled
//! connection, opening one and each LISTEN step give up at it with
//! `Unavailable`; [`super::deadline::Bounded`], which [`super::open`] wraps
//! around this store, bounds each call as a whole (connection wait and query
//! together), and [`PgStore`]'s `after_deadline` then empties the pool of
//! idle connections, which may be stuck in a partition, so the next call
//! opens a fresh one.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::Error as PgError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use uuid::Uuid;

use super::{
    AdminUserUpdate, ApiKey, ApiKeyWithOwner, AuditEvent, BUILT_IN_ROLES, BackupCode, MfaRecord,
    MfaToken, NewApiKey, NewSession, NewUser, OneTimeKind, OneTimeToken, ProfileUpdate,
    RefreshOutcome, Role, Session, SigningKeyRecord, Store, StoreError, StoreEvent, StoreResult,
    Tenant, User, UserQuery, UserStatus, now,
};

/// Embedded migrations, the same versions as SQLite's, applied in order once each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_api_keys.sql")),
    (3, include_str!("migrations/postgres/0003_mfa_lockout.sql")),
    (4, include_str!("migrations/postgres/0004_accounts.sql")),
];

/// `pg_advisory_xact_lock` key serialising migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c; // "portcull"
/// The LISTEN/NOTIFY channel for [`StoreEvent`]s.
const CHANNEL: &str = "portcullis_events";
/// `/readyz` gives up on the database after this (or the deadline, if shorter).
const PING_TIMEOUT: Duration = Duration::from_secs(1);

pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// `database.timeout_ms`: the longest wait for a pooled connection, a
    /// new connection, a recycle check, and each LISTEN step.
    timeout: Duration,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and migrates,
    /// with the default deadline of 3 s.
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        Self::open_with_timeout(url, super::DEFAULT_TIMEOUT).await
    }

    /// [`PgStore::open`] with `timeout` bounding every wait.
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
        let store = PgStore {
            pool,
            config,
            timeout,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
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

/// A statement's parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Statements prepared once per pooled connection (deadpool's statement
/// cache) rather than on every call, which costs a round trip each time.
/// Only for statements whose text is drawn from a fixed set: the cache keeps
/// every text it sees, so SQL with values spliced in (`list_users`' filter
/// and page) goes through the uncached methods.
#[async_trait]
trait Prepared: GenericClient + Sync {
    async fn cached_query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn cached_query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }

    async fn cached_query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn cached_execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

impl<C: GenericClient + Sync> Prepared for C {}

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

fn role_err(role: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| match pg_err(e) {
        StoreError::NotFound(_) => StoreError::NotFound(format!("role {role}")),
        other => other,
    }
}

fn uuid_at(r: &Row, i: usize) -> StoreResult<Uuid> {
    let s: String = r.try_get(i).map_err(pg_err)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::Other(format!("bad uuid: {e}")))
}

fn opt_uuid_at(r: &Row, i: usize) -> StoreResult<Option<Uuid>> {
    let s: Option<String> = r.try_get(i).map_err(pg_err)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Other(format!("bad uuid: {e}"))))
        .transpose()
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

const TENANT_COLUMNS: &str = "id, slug, name, created_at";

fn tenant_from_row(r: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: uuid_at(r, 0)?,
        slug: r.get(1),
        name: r.get(2),
        created_at: r.get(3),
    })
}

const SESSION_COLUMNS: &str = "s.id, s.tenant_id, s.user_id, s.amr, s.created_at, s.revoked_at";

fn session_from_row(r: &Row) -> StoreResult<Session> {
    Ok(Session {
        id: uuid_at(r, 0)?,
        tenant_id: uuid_at(r, 1)?,
        user_id: uuid_at(r, 2)?,
        amr: json_list(&r.get::<_, String>(3)),
        created_at: r.get(4),
        revoked_at: r.get(5),
    })
}

const USER_COLUMNS: &str = "id, tenant_id, email, password_hash, first_name, family_name, name, \
     status, email_verified, mfa_enabled, created_at, updated_at, locked_until";

fn user_from_row(r: &Row) -> StoreResult<User> {
    let status: String = r.get(7);
    Ok(User {
        id: uuid_at(r, 0)?,
        tenant_id: uuid_at(r, 1)?,
        email: r.get(2),
        password_hash: r.get(3),
        first_name: r.get(4),
        family_name: r.get(5),
        name: r.get(6),
        status: UserStatus::parse(&status).unwrap_or(UserStatus::Disabled),
        email_verified: r.get(8),
        mfa_enabled: r.get(9),
        roles: Vec::new(),
        permissions: Vec::new(),
        locked_until: r.get(12),
        created_at: r.get(10),
        updated_at: r.get(11),
    })
}

const API_KEY_COLUMNS: &str = "k.id, k.tenant_id, k.user_id, k.name, k.description, \
     k.key_prefix, k.scopes, k.created_at, k.expires_at, k.revoked_at, k.last_used_at";

fn api_key_from_row(r: &Row) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: uuid_at(r, 0)?,
        tenant_id: uuid_at(r, 1)?,
        user_id: uuid_at(r, 2)?,
        name: r.get(3),
        description: r.get(4),
        key_prefix: r.get(5),
        scopes: r.get::<_, Option<String>>(6).as_deref().map(json_list),
        created_at: r.get(7),
        expires_at: r.get(8),
        revoked_at: r.get(9),
        last_used_at: r.get(10),
    })
}

fn role_from_row(r: &Row) -> Role {
    Role {
        name: r.get(0),
        permissions: json_list(&r.get::<_, String>(1)),
        built_in: r.get(2),
    }
}

/// Fills in the user's roles and the union of their permissions.
async fn load_roles<C: GenericClient + Sync>(c: &C, user: &mut User) -> StoreResult<()> {
    let rows = c
        .cached_query(
            "SELECT r.name, r.permissions FROM user_roles ur
               JOIN roles r ON r.tenant_id = ur.tenant_id AND r.name = ur.role
              WHERE ur.user_id = $1 ORDER BY r.name",
            &[&user.id.to_string()],
        )
        .await
        .map_err(pg_err)?;
    let mut perms = BTreeSet::new();
    user.roles.clear();
    for r in rows {
        user.roles.push(r.get(0));
        perms.extend(json_list(&r.get::<_, String>(1)));
    }
    user.permissions = perms.into_iter().collect();
    Ok(())
}

/// Gives the user `roles` of the tenant; `NotFound("role …")` for an unknown one.
async fn grant_roles<C: GenericClient + Sync>(
    c: &C,
    user_id: &String,
    tenant_id: &String,
    roles: &[String],
) -> StoreResult<()> {
    for role in roles {
        c.cached_execute(
            "INSERT INTO user_roles (user_id, tenant_id, role) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[user_id, tenant_id, role],
        )
        .await
        .map_err(role_err(role))?;
    }
    Ok(())
}

async fn user_by<C: GenericClient + Sync>(
    c: &C,
    clause: &str,
    args: &[&String],
) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}");
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|a| *a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = c.cached_query_opt(&sql, &params).await.map_err(pg_err)?;
    match row {
        Some(r) => {
            let mut u = user_from_row(&r)?;
            load_roles(c, &mut u).await?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

async fn insert_tenant<C: GenericClient + Sync>(
    c: &C,
    slug: &str,
    name: &str,
) -> StoreResult<Tenant> {
    let t = Tenant {
        id: Uuid::now_v7(),
        slug: slug.to_string(),
        name: name.to_string(),
        created_at: now(),
    };
    let tid = t.id.to_string();
    c.cached_execute(
        "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)",
        &[&tid, &t.slug, &t.name, &t.created_at],
    )
    .await
    .map_err(pg_err)?;
    for (role, perms) in BUILT_IN_ROLES {
        let perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
        c.cached_execute(
            "INSERT INTO roles (tenant_id, name, permissions, built_in, created_at, updated_at)
             VALUES ($1, $2, $3, TRUE, $4, $4)",
            &[&tid, role, &to_json_list(&perms), &t.created_at],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(t)
}

async fn revoke<C: GenericClient + Sync>(
    c: &C,
    id: &str,
    reason: &str,
    at: i64,
) -> StoreResult<bool> {
    let n = c
        .cached_execute(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3
              WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &at, &reason],
        )
        .await
        .map_err(pg_err)?;
    Ok(n > 0)
}

async fn insert_backup_codes<C: GenericClient + Sync>(
    c: &C,
    user_id: &str,
    hashes: &[String],
) -> StoreResult<()> {
    c.cached_execute("DELETE FROM backup_codes WHERE user_id = $1", &[&user_id])
        .await
        .map_err(pg_err)?;
    for h in hashes {
        c.cached_execute(
            "INSERT INTO backup_codes (user_id, code_hash) VALUES ($1, $2)",
            &[&user_id, h],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
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

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let t = insert_tenant(&tx, slug, name).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(t)
    }

    async fn ensure_tenant(&self, slug: &str) -> StoreResult<Tenant> {
        let c = self.client().await?;
        if let Some(r) = c
            .cached_query_opt(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1"),
                &[&slug],
            )
            .await
            .map_err(pg_err)?
        {
            return tenant_from_row(&r);
        }
        drop(c);
        match self.create_tenant(slug, slug).await {
            // another replica created it meanwhile
            Err(StoreError::Conflict(_)) => self
                .tenant_by_slug(slug)
                .await?
                .ok_or_else(|| StoreError::Other("tenant vanished".into())),
            other => other,
        }
    }

    async fn tenant_by_id(&self, id: Uuid) -> StoreResult<Option<Tenant>> {
        let c = self.client().await?;
        c.cached_query_opt(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"),
            &[&id.to_string()],
        )
        .await
        .map_err(pg_err)?
        .map(|r| tenant_from_row(&r))
        .transpose()
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        let c = self.client().await?;
        c.cached_query_opt(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1"),
            &[&slug],
        )
        .await
        .map_err(pg_err)?
        .map(|r| tenant_from_row(&r))
        .transpose()
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let c = self.client().await?;
        c.cached_query(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, slug"),
            &[],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let id = Uuid::now_v7().to_string();
        let tid = new.tenant_id.to_string();
        let at = now();
        tx.cached_execute(
            "INSERT INTO users (id, tenant_id, email, password_hash, first_name, family_name,
                                name, status, email_verified, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $9)",
            &[
                &id,
                &tid,
                &new.email,
                &new.password_hash,
                &new.first_name,
                &new.family_name,
                &new.name,
                &new.email_verified,
                &at,
            ],
        )
        .await
        .map_err(pg_err)?;
        grant_roles(&tx, &id, &tid, &new.roles).await?;
        let user = user_by(&tx, "id = $1", &[&id])
            .await?
            .ok_or_else(|| StoreError::Other("user vanished".into()))?;
        tx.commit().await.map_err(pg_err)?;
        Ok(user)
    }

    async fn user_by_id(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<User>> {
        let c = self.client().await?;
        user_by(
            &c,
            "id = $1 AND tenant_id = $2",
            &[&id.to_string(), &tenant_id.to_string()],
        )
        .await
    }

    async fn user_by_email(&self, tenant_id: Uuid, email: &str) -> StoreResult<Option<User>> {
        let c = self.client().await?;
        user_by(
            &c,
            "tenant_id = $1 AND email = $2",
            &[&tenant_id.to_string(), &email.to_ascii_lowercase()],
        )
        .await
    }

    async fn count_users(&self, tenant_id: Uuid) -> StoreResult<u64> {
        let c = self.client().await?;
        let r = c
            .cached_query_one(
                "SELECT COUNT(*) FROM users WHERE tenant_id = $1",
                &[&tenant_id.to_string()],
            )
            .await
            .map_err(pg_err)?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    async fn update_profile(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: ProfileUpdate,
    ) -> StoreResult<User> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let (uid, tid) = (id.to_string(), tenant_id.to_string());
        let n = tx
            .cached_execute(
                "UPDATE users SET
                    first_name = COALESCE($3::text, first_name),
                    family_name = COALESCE($4::text, family_name),
                    name = COALESCE($5::text, name),
                    email = COALESCE($6::text, email),
                    email_verified = CASE WHEN $6::text IS NOT NULL AND $6::text <> email
                                          THEN FALSE ELSE email_verified END,
                    updated_at = $7
                  WHERE id = $1 AND tenant_id = $2",
                &[
                    &uid,
                    &tid,
                    &update.first_name,
                    &update.family_name,
                    &update.name,
                    &update.email,
                    &now(),
                ],
            )
            .await
            .map_err(pg_err)?;
        if n == 0 {
            return Err(StoreError::NotFound("user".into()));
        }
        let user = user_by(&tx, "id = $1", &[&uid])
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))?;
        tx.commit().await.map_err(pg_err)?;
        Ok(user)
    }

    async fn set_password(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        password_hash: &str,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        let n = c
            .cached_execute(
                "UPDATE users SET password_hash = $3, updated_at = $4
                  WHERE id = $1 AND tenant_id = $2",
                &[
                    &id.to_string(),
                    &tenant_id.to_string(),
                    &password_hash,
                    &now(),
                ],
            )
            .await
            .map_err(pg_err)?;
        if n == 0 {
            return Err(StoreError::NotFound("user".into()));
        }
        Ok(())
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<Session> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let at = now();
        let sid = s.id.to_string();
        tx.cached_execute(
            "INSERT INTO sessions (id, tenant_id, user_id, amr, created_at, ip, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &sid,
                &s.tenant_id.to_string(),
                &s.user_id.to_string(),
                &to_json_list(&s.amr),
                &at,
                &s.ip,
                &s.user_agent,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.cached_execute(
            "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&s.refresh_hash, &sid, &at, &s.refresh_expires_at],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Session {
            id: s.id,
            tenant_id: s.tenant_id,
            user_id: s.user_id,
            amr: s.amr,
            created_at: at,
            revoked_at: None,
        })
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        let c = self.client().await?;
        c.cached_query_opt(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1"),
            &[&id.to_string()],
        )
        .await
        .map_err(pg_err)?
        .map(|r| session_from_row(&r))
        .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
        at: i64,
    ) -> StoreResult<RefreshOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // the row locks make two concurrent presentations of one token take turns
        let found = tx
            .cached_query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS}, rt.expires_at, rt.used_at
                       FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
                      WHERE rt.hash = $1 FOR UPDATE"
                ),
                &[&old_hash],
            )
            .await
            .map_err(pg_err)?;
        let found = match found {
            Some(r) => Some((
                session_from_row(&r)?,
                r.get::<_, i64>(6),
                r.get::<_, Option<i64>>(7),
            )),
            None => None,
        };
        let outcome = match found {
            None => RefreshOutcome::Unknown,
            Some((session, _, _)) if session.revoked_at.is_some() => RefreshOutcome::Revoked,
            Some((session, _, Some(_used))) => {
                revoke(&tx, &session.id.to_string(), "refresh_token_reused", at).await?;
                RefreshOutcome::Reused {
                    session_id: session.id,
                    user_id: session.user_id,
                    tenant_id: session.tenant_id,
                }
            }
            Some((_, expires_at, None)) if expires_at <= at => RefreshOutcome::Expired,
            Some((session, _, None)) => {
                tx.cached_execute(
                    "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1",
                    &[&old_hash, &at],
                )
                .await
                .map_err(pg_err)?;
                tx.cached_execute(
                    "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                    &[&new_hash, &session.id.to_string(), &at, &new_expires_at],
                )
                .await
                .map_err(pg_err)?;
                let user = user_by(
                    &tx,
                    "id = $1 AND tenant_id = $2",
                    &[&session.user_id.to_string(), &session.tenant_id.to_string()],
                )
                .await?
                .map(Box::new);
                RefreshOutcome::Rotated { session, user }
            }
        };
        tx.commit().await.map_err(pg_err)?;
        Ok(outcome)
    }

    async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<Session>> {
        let c = self.client().await?;
        c.cached_query_opt(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM refresh_tokens rt
                   JOIN sessions s ON s.id = rt.session_id WHERE rt.hash = $1"
            ),
            &[&hash],
        )
        .await
        .map_err(pg_err)?
        .map(|r| session_from_row(&r))
        .transpose()
    }

    async fn revoke_session(&self, id: Uuid, reason: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        revoke(&c, &id.to_string(), reason, now()).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let c = self.client().await?;
        let keep = keep.map(|k| k.to_string()).unwrap_or_default();
        let rows = c
            .cached_query(
                "UPDATE sessions SET revoked_at = $3, revoked_reason = $4
                  WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2
                 RETURNING id",
                &[&user_id.to_string(), &keep, &now(), &reason],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| uuid_at(r, 0)).collect()
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let c = self.client().await?;
        let rows = c
            .cached_query(
                "SELECT kid, algorithm, private_der, created_at, retired_at
                   FROM signing_keys ORDER BY created_at DESC, seq DESC",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| SigningKeyRecord {
                kid: r.get(0),
                algorithm: r.get(1),
                private_der: r.get(2),
                created_at: r.get(3),
                retired_at: r.get(4),
            })
            .collect())
    }

    async fn rotate_signing_key(&self, key: SigningKeyRecord, at: i64) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // one rotation at a time across replicas
        tx.cached_execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE", &[])
            .await
            .map_err(pg_err)?;
        tx.cached_execute(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL",
            &[&at],
        )
        .await
        .map_err(pg_err)?;
        tx.cached_execute(
            "INSERT INTO signing_keys (kid, algorithm, private_der, created_at)
             VALUES ($1, $2, $3, $4)",
            &[&key.kid, &key.algorithm, &key.private_der, &key.created_at],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn record_audit(&self, e: AuditEvent) -> StoreResult<()> {
        let c = self.client().await?;
        c.cached_execute(
            "INSERT INTO audit_events (id, tenant_id, at, type, user_id, ip, user_agent,
                                       outcome, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &e.id.to_string(),
                &e.tenant_id.map(|t| t.to_string()),
                &e.at,
                &e.kind,
                &e.user_id.map(|u| u.to_string()),
                &e.ip,
                &e.user_agent,
                &e.outcome,
                &e.details.to_string(),
            ],
        )
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn close(&self) -> StoreResult<()> {
        self.pool.close();
        Ok(())
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
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let uid = user_id.to_string();
        // serialise the user's failures (replicas count them together)
        let exists = tx
            .cached_query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&uid])
            .await
            .map_err(pg_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound("user".into()));
        }
        tx.cached_execute(
            "INSERT INTO login_failures (user_id, at) VALUES ($1, $2)",
            &[&uid, &at],
        )
        .await
        .map_err(pg_err)?;
        let recent: i64 = tx
            .cached_query_one(
                "SELECT COUNT(*) FROM login_failures WHERE user_id = $1 AND at > $2",
                &[&uid, &(at - window)],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let locked = if max > 0 && recent >= max as i64 {
            let until = at + lock_for;
            tx.cached_execute(
                "UPDATE users SET locked_until = $2 WHERE id = $1",
                &[&uid, &until],
            )
            .await
            .map_err(pg_err)?;
            tx.cached_execute("DELETE FROM login_failures WHERE user_id = $1", &[&uid])
                .await
                .map_err(pg_err)?;
            Some(until)
        } else {
            tx.cached_execute(
                "DELETE FROM login_failures WHERE user_id = $1 AND at <= $2",
                &[&uid, &(at - window)],
            )
            .await
            .map_err(pg_err)?;
            None
        };
        tx.commit().await.map_err(pg_err)?;
        Ok(locked)
    }

    async fn clear_login_failures(&self, user_id: Uuid) -> StoreResult<()> {
        let c = self.client().await?;
        let uid = user_id.to_string();
        c.cached_execute("DELETE FROM login_failures WHERE user_id = $1", &[&uid])
            .await
            .map_err(pg_err)?;
        c.cached_execute(
            "UPDATE users SET locked_until = NULL WHERE id = $1 AND locked_until IS NOT NULL",
            &[&uid],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    // TOTP MFA

    async fn mfa(&self, user_id: Uuid) -> StoreResult<Option<MfaRecord>> {
        let c = self.client().await?;
        Ok(c.cached_query_opt(
            "SELECT secret, confirmed, last_step FROM mfa_secrets WHERE user_id = $1",
            &[&user_id.to_string()],
        )
        .await
        .map_err(pg_err)?
        .map(|r| MfaRecord {
            secret: r.get(0),
            confirmed: r.get(1),
            last_step: r.get(2),
        }))
    }

    async fn begin_mfa(
        &self,
        user_id: Uuid,
        secret: &str,
        backup_code_hashes: Vec<String>,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let uid = user_id.to_string();
        let confirmed: Option<bool> = tx
            .cached_query_opt(
                "SELECT confirmed FROM mfa_secrets WHERE user_id = $1 FOR UPDATE",
                &[&uid],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0));
        if confirmed == Some(true) {
            return Err(StoreError::Conflict("mfa already enabled".into()));
        }
        tx.cached_execute(
            "INSERT INTO mfa_secrets (user_id, secret, confirmed, created_at)
             VALUES ($1, $2, FALSE, $3)
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                 confirmed = FALSE, last_step = NULL, created_at = excluded.created_at",
            &[&uid, &secret, &now()],
        )
        .await
        .map_err(pg_err)?;
        insert_backup_codes(&tx, &uid, &backup_code_hashes).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn accept_totp_step(&self, user_id: Uuid, step: i64, confirm: bool) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let uid = user_id.to_string();
        let n = tx
            .cached_execute(
                "UPDATE mfa_secrets SET last_step = $2,
                        confirmed = CASE WHEN $3::boolean THEN TRUE ELSE confirmed END
                  WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)",
                &[&uid, &step, &confirm],
            )
            .await
            .map_err(pg_err)?;
        if n > 0 && confirm {
            tx.cached_execute(
                "UPDATE users SET mfa_enabled = TRUE, updated_at = $2 WHERE id = $1",
                &[&uid, &now()],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn disable_mfa(&self, user_id: Uuid) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let uid = user_id.to_string();
        tx.cached_execute("DELETE FROM mfa_secrets WHERE user_id = $1", &[&uid])
            .await
            .map_err(pg_err)?;
        tx.cached_execute("DELETE FROM backup_codes WHERE user_id = $1", &[&uid])
            .await
            .map_err(pg_err)?;
        tx.cached_execute(
            "UPDATE users SET mfa_enabled = FALSE, updated_at = $2 WHERE id = $1",
            &[&uid, &now()],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn unused_backup_codes(&self, user_id: Uuid) -> StoreResult<Vec<BackupCode>> {
        let c = self.client().await?;
        Ok(c.cached_query(
            "SELECT id, code_hash FROM backup_codes
                  WHERE user_id = $1 AND used_at IS NULL ORDER BY id",
            &[&user_id.to_string()],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| BackupCode {
            id: r.get(0),
            code_hash: r.get(1),
        })
        .collect())
    }

    async fn use_backup_code(&self, user_id: Uuid, id: i64) -> StoreResult<bool> {
        let c = self.client().await?;
        c.cached_execute(
            "UPDATE backup_codes SET used_at = $3
              WHERE id = $1 AND user_id = $2 AND used_at IS NULL",
            &[&id, &user_id.to_string(), &now()],
        )
        .await
        .map(|n| n > 0)
        .map_err(pg_err)
    }

    async fn replace_backup_codes(&self, user_id: Uuid, hashes: Vec<String>) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        insert_backup_codes(&tx, &user_id.to_string(), &hashes).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn has_sealed_mfa_secrets(&self) -> StoreResult<bool> {
        let c = self.client().await?;
        Ok(c.cached_query_one(
            "SELECT EXISTS(SELECT 1 FROM mfa_secrets WHERE secret NOT LIKE 'b32:%')",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0))
    }

    // MFA login tokens

    async fn create_mfa_token(
        &self,
        hash: &str,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.cached_execute(
            "DELETE FROM mfa_tokens WHERE expires_at < $1",
            &[&(now() - 3600)],
        )
        .await
        .map_err(pg_err)?;
        c.cached_execute(
            "INSERT INTO mfa_tokens (hash, user_id, tenant_id, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &hash,
                &user_id.to_string(),
                &tenant_id.to_string(),
                &expires_at,
            ],
        )
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn mfa_token(&self, hash: &str) -> StoreResult<Option<MfaToken>> {
        let c = self.client().await?;
        c.cached_query_opt(
            "SELECT user_id, tenant_id, expires_at, failures, used_at FROM mfa_tokens WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(pg_err)?
        .map(|r| {
            Ok(MfaToken {
                user_id: uuid_at(&r, 0)?,
                tenant_id: uuid_at(&r, 1)?,
                expires_at: r.get(2),
                failures: r.get::<_, i32>(3).max(0) as u32,
                used: r.get::<_, Option<i64>>(4).is_some(),
            })
        })
        .transpose()
    }

    async fn mfa_token_failure(&self, hash: &str) -> StoreResult<u32> {
        let c = self.client().await?;
        Ok(c.cached_query_opt(
            "UPDATE mfa_tokens SET failures = failures + 1 WHERE hash = $1 RETURNING failures",
            &[&hash],
        )
        .await
        .map_err(pg_err)?
        .map(|r| r.get::<_, i32>(0).max(0) as u32)
        .unwrap_or(u32::MAX))
    }

    async fn consume_mfa_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        let c = self.client().await?;
        c.cached_execute(
            "UPDATE mfa_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
            &[&hash, &at],
        )
        .await
        .map(|n| n > 0)
        .map_err(pg_err)
    }

    // administration

    async fn list_users(&self, tenant_id: Uuid, query: UserQuery) -> StoreResult<(Vec<User>, u64)> {
        let c = self.client().await?;
        let (clause, args) = query.filter(tenant_id, pg_placeholder);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let total: i64 = c
            .query_one(
                &format!("SELECT COUNT(*) FROM users WHERE {clause}"),
                &params,
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let offset = query.offset();
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {clause}
              ORDER BY created_at, id LIMIT {} OFFSET {offset}",
            query.limit
        );
        let rows = c.query(&sql, &params).await.map_err(pg_err)?;
        let mut users = rows
            .iter()
            .map(user_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        for u in &mut users {
            load_roles(&c, u).await?;
        }
        Ok((users, total as u64))
    }

    async fn admin_update_user(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: AdminUserUpdate,
    ) -> StoreResult<User> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let (uid, tid) = (id.to_string(), tenant_id.to_string());
        let n = tx
            .cached_execute(
                "UPDATE users SET first_name = COALESCE($3::text, first_name),
                        family_name = COALESCE($4::text, family_name),
                        status = COALESCE($5::text, status), updated_at = $6
                  WHERE id = $1 AND tenant_id = $2",
                &[
                    &uid,
                    &tid,
                    &update.first_name,
                    &update.family_name,
                    &update.status.map(|s| s.as_str()),
                    &now(),
                ],
            )
            .await
            .map_err(pg_err)?;
        if n == 0 {
            return Err(StoreError::NotFound("user".into()));
        }
        if let Some(roles) = &update.roles {
            tx.cached_execute("DELETE FROM user_roles WHERE user_id = $1", &[&uid])
                .await
                .map_err(pg_err)?;
            grant_roles(&tx, &uid, &tid, roles).await?;
        }
        let user = user_by(&tx, "id = $1", &[&uid])
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))?;
        tx.commit().await.map_err(pg_err)?;
        Ok(user)
    }

    async fn delete_user(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        c.cached_execute(
            "DELETE FROM users WHERE id = $1 AND tenant_id = $2",
            &[&id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map(|n| n > 0)
        .map_err(pg_err)
    }

    async fn set_email_verified(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<User> {
        let c = self.client().await?;
        let (uid, tid) = (id.to_string(), tenant_id.to_string());
        c.cached_execute(
            "UPDATE users SET email_verified = TRUE, updated_at = $3 WHERE id = $1 AND tenant_id = $2",
            &[&uid, &tid, &now()],
        )
        .await
        .map_err(pg_err)?;
        user_by(&c, "id = $1 AND tenant_id = $2", &[&uid, &tid])
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))
    }

    async fn list_roles(&self, tenant_id: Uuid) -> StoreResult<Vec<Role>> {
        let c = self.client().await?;
        Ok(c.cached_query(
            "SELECT name, permissions, built_in FROM roles WHERE tenant_id = $1
                  ORDER BY built_in DESC, name",
            &[&tenant_id.to_string()],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(role_from_row)
        .collect())
    }

    async fn create_role(&self, tenant_id: Uuid, role: Role) -> StoreResult<Role> {
        let c = self.client().await?;
        let at = now();
        c.cached_execute(
            "INSERT INTO roles (tenant_id, name, permissions, built_in, created_at, updated_at)
             VALUES ($1, $2, $3, FALSE, $4, $4)",
            &[
                &tenant_id.to_string(),
                &role.name,
                &to_json_list(&role.permissions),
                &at,
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(Role {
            built_in: false,
            ..role
        })
    }

    async fn update_role(
        &self,
        tenant_id: Uuid,
        name: &str,
        permissions: Vec<String>,
    ) -> StoreResult<Role> {
        let c = self.client().await?;
        c.cached_query_opt(
            "UPDATE roles SET permissions = $3, updated_at = $4 WHERE tenant_id = $1 AND name = $2
             RETURNING name, permissions, built_in",
            &[
                &tenant_id.to_string(),
                &name,
                &to_json_list(&permissions),
                &now(),
            ],
        )
        .await
        .map_err(pg_err)?
        .map(|r| role_from_row(&r))
        .ok_or_else(|| StoreError::NotFound("role".into()))
    }

    async fn delete_role(&self, tenant_id: Uuid, name: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        c.cached_execute(
            "DELETE FROM roles WHERE tenant_id = $1 AND name = $2 AND NOT built_in",
            &[&tenant_id.to_string(), &name],
        )
        .await
        .map(|n| n > 0)
        .map_err(pg_err)
    }

    async fn audit_events_of(
        &self,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let c = self.client().await?;
        let rows = c
            .cached_query(
                "SELECT id, tenant_id, at, type, user_id, ip, user_agent, outcome, details
                   FROM audit_events WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id = $2::text)
                  ORDER BY at DESC, seq DESC LIMIT $3",
                &[
                    &tenant_id.to_string(),
                    &user_id.map(|u| u.to_string()),
                    &(limit as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: uuid_at(r, 0)?,
                    tenant_id: opt_uuid_at(r, 1)?,
                    at: r.get(2),
                    kind: r.get(3),
                    user_id: opt_uuid_at(r, 4)?,
                    ip: r.get(5),
                    user_agent: r.get(6),
                    outcome: r.get(7),
                    details: serde_json::from_str(&r.get::<_, String>(8))
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
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
        let c = self.client().await?;
        c.cached_execute(
            "DELETE FROM one_time_tokens WHERE expires_at < $1",
            &[&(now() - 86_400)],
        )
        .await
        .map_err(pg_err)?;
        c.cached_execute(
            "INSERT INTO one_time_tokens (hash, kind, user_id, tenant_id, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &hash,
                &kind.as_str(),
                &user_id.to_string(),
                &tenant_id.to_string(),
                &expires_at,
            ],
        )
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
    ) -> StoreResult<Option<OneTimeToken>> {
        let c = self.client().await?;
        c.cached_query_opt(
            "SELECT user_id, tenant_id, expires_at, used_at FROM one_time_tokens
              WHERE hash = $1 AND kind = $2",
            &[&hash, &kind.as_str()],
        )
        .await
        .map_err(pg_err)?
        .map(|r| {
            Ok(OneTimeToken {
                user_id: uuid_at(&r, 0)?,
                tenant_id: uuid_at(&r, 1)?,
                expires_at: r.get(2),
                used: r.get::<_, Option<i64>>(3).is_some(),
            })
        })
        .transpose()
    }

    async fn consume_one_time_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        let c = self.client().await?;
        c.cached_execute(
            "UPDATE one_time_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
            &[&hash, &at],
        )
        .await
        .map(|n| n > 0)
        .map_err(pg_err)
    }

    // api keys

    async fn create_api_key(&self, k: NewApiKey) -> StoreResult<ApiKey> {
        let c = self.client().await?;
        c.cached_execute(
            "INSERT INTO api_keys (id, tenant_id, user_id, name, description, key_prefix,
                                   key_hash, scopes, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &k.id.to_string(),
                &k.tenant_id.to_string(),
                &k.user_id.to_string(),
                &k.name,
                &k.description,
                &k.key_prefix,
                &k.key_hash,
                &k.scopes.as_deref().map(to_json_list),
                &k.created_at,
                &k.expires_at,
            ],
        )
        .await
        .map_err(pg_err)?;
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
    }

    async fn api_keys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        let c = self.client().await?;
        c.cached_query(
            &format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k
                  WHERE k.tenant_id = $1 AND k.user_id = $2 AND k.revoked_at IS NULL
                  ORDER BY k.created_at DESC, k.seq DESC"
            ),
            &[&tenant_id.to_string(), &user_id.to_string()],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(api_key_from_row)
        .collect()
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyWithOwner>> {
        let c = self.client().await?;
        let Some(r) = c
            .cached_query_opt(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.key_hash = $1"),
                &[&hash],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let key = api_key_from_row(&r)?;
        let owner = user_by(
            &c,
            "id = $1 AND tenant_id = $2",
            &[&key.user_id.to_string(), &key.tenant_id.to_string()],
        )
        .await?;
        Ok(owner.map(|owner| ApiKeyWithOwner { key, owner }))
    }

    async fn revoke_api_key(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        c.cached_execute(
            "UPDATE api_keys SET revoked_at = $4
              WHERE id = $1 AND tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
            &[
                &id.to_string(),
                &tenant_id.to_string(),
                &user_id.to_string(),
                &now(),
            ],
        )
        .await
        .map(|n| n > 0)
        .map_err(pg_err)
    }

    async fn record_api_key_use(&self, uses: Vec<(Uuid, i64)>) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = uses.iter().map(|(id, _)| id.to_string()).collect();
        let ats: Vec<i64> = uses.iter().map(|(_, at)| *at).collect();
        let c = self.client().await?;
        c.cached_execute(
            "UPDATE api_keys k SET last_used_at = u.at
               FROM (SELECT id, max(at) AS at FROM unnest($1::text[], $2::bigint[]) AS t(id, at)
                      GROUP BY id) u
              WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
            &[&ids, &ats],
        )
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    // revocation propagation

    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        let payload = serde_json::to_string(event).map_err(|e| StoreError::Other(e.to_string()))?;
        let c = self.client().await?;
        c.cached_execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map(|_| ())
            .map_err(pg_err)
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

fn pg_placeholder(n: usize) -> String {
    format!("${n}")
}
