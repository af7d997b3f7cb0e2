//! The one implementation of [`Store`], generic over a [`Backend`]: every
//! statement is written here once, in PostgreSQL's dialect (`$n`; SQLite's
//! [`Conn`] runs it as `?n`), with the rules of [`super::rules`] above it.
//! Chosen over per-backend code so a column or a rule is changed in one place;
//! the backends keep connections, the deadline, migrations and events.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use uuid::Uuid;

use super::rules::{self, Presented, Refresh};
use super::{
    AdminUserUpdate, ApiKey, ApiKeyWithOwner, AuditEvent, BUILT_IN_ROLES, BackupCode, MfaRecord,
    MfaToken, NewApiKey, NewSession, NewUser, OidcCode, OidcLogin, OneTimeKind, OneTimeToken,
    Passkey, PasskeyChallenge, ProfileUpdate, RefreshOutcome, Role, Session, SigningKeyRecord,
    Store, StoreError, StoreEvent, StoreResult, Tenant, User, UserIdentity, UserQuery, UserStatus,
    now,
};

/// A statement parameter or a column value, as both backends speak it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
    /// PostgreSQL arrays (`unnest`), for the one statement only it has.
    Texts(Vec<String>),
    Ints(Vec<i64>),
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from($v: $t) -> Value {
                $e
            }
        })*
    };
}

value_from!(
    i64 => |n| Value::Int(n),
    bool => |b| Value::Bool(b),
    String => |s| Value::Text(s),
    &str => |s| Value::Text(s.to_string()),
    &String => |s| Value::Text(s.clone()),
    Uuid => |u| Value::Text(u.to_string()),
    Vec<u8> => |b| Value::Bytes(b),
);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// A column type a [`Row`] converts to.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

macro_rules! from_value {
    ($($t:ty => $p:pat => $e:expr),* $(,)?) => {
        $(impl FromValue for $t {
            fn from_value(v: &Value) -> Option<$t> {
                match v {
                    $p => Some($e),
                    _ => None,
                }
            }
        })*
    };
}

from_value!(
    i64 => Value::Int(n) => *n,
    String => Value::Text(s) => s.clone(),
    Vec<u8> => Value::Bytes(b) => b.clone(),
);

impl FromValue for bool {
    /// SQLite keeps booleans as integers.
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Int(n) => Some(*n != 0),
            _ => None,
        }
    }
}

impl FromValue for Uuid {
    /// Ids are stored as UUID text.
    fn from_value(v: &Value) -> Option<Uuid> {
        String::from_value(v).and_then(|s| Uuid::parse_str(&s).ok())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row, read by column index.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn get<T: FromValue>(&self, i: usize) -> StoreResult<T> {
        self.0
            .get(i)
            .and_then(T::from_value)
            .ok_or_else(|| StoreError::Other(format!("column {i}: unexpected type or value")))
    }
}

/// A backend's connection, below which there is only SQL.
pub trait Conn: Send {
    /// Appended to a `SELECT` that locks its rows; empty where the
    /// transaction already holds the write lock (SQLite's `BEGIN IMMEDIATE`).
    const FOR_UPDATE: &'static str;
    /// The column that gives a table's insertion order.
    const INSERTION_ORDER: &'static str;
    const POSTGRES: bool;
    fn query(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = StoreResult<Vec<Row>>> + Send;
    /// Rows changed.
    fn execute(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// `immediate` takes the write lock at once (SQLite; PostgreSQL locks rows).
    fn begin(&mut self, immediate: bool) -> impl Future<Output = StoreResult<()>> + Send;
    /// Commits on `Ok`, rolls back on `Err`.
    fn end<T: Send>(
        &mut self,
        result: StoreResult<T>,
    ) -> impl Future<Output = StoreResult<T>> + Send;

    fn query_opt(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = StoreResult<Option<Row>>> + Send {
        async move { Ok(self.query(sql, params).await?.into_iter().next()) }
    }
}

/// One store call's work on a connection.
pub type Call<'c, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'c>>;

/// Connections, the deadline of a call and what is not SQL.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type Conn: Conn;
    /// Runs `f` on a connection within `database.timeout_ms`; `what` names
    /// the call in errors.
    async fn run<T, F>(&self, what: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Self::Conn) -> Call<'c, T> + Send + 'static;
    async fn ping(&self) -> StoreResult<()>;
    async fn close(&self) -> StoreResult<()>;
    async fn publish(&self, _event: &StoreEvent) -> StoreResult<()> {
        Ok(())
    }
    async fn listen(&self, _events: tokio::sync::mpsc::UnboundedSender<StoreEvent>) {}
    fn after_deadline(&self) {}
}

/// The [`Store`] over a backend (`SqliteStore`, `PgStore`).
pub struct SqlStore<B> {
    pub(super) backend: B,
}

/// `run!(store, "name", |c| { body })`: the body on a connection, within the deadline.
macro_rules! run {
    ($s:expr, $what:literal, |$c:ident| $body:expr) => {
        $s.backend
            .run($what, move |$c| Box::pin(async move { $body }))
            .await
    };
}

/// `tx!(c, immediate, { body })`: the body in a transaction, committed when it is `Ok`.
macro_rules! tx {
    ($c:ident, $immediate:expr, $body:block) => {{
        $c.begin($immediate).await?;
        let result = async $body.await;
        $c.end(result).await
    }};
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

const PASSKEY_COLUMNS: &str = "id, tenant_id, user_id, credential_id, public_key, state, transports, \
                               name, created_at, last_used_at";

fn passkey_row(r: &Row) -> StoreResult<Passkey> {
    Ok(Passkey {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        user_id: r.get(2)?,
        credential_id: r.get(3)?,
        public_key: r.get(4)?,
        state: r.get(5)?,
        transports: json_list(&r.get::<String>(6)?),
        name: r.get(7)?,
        created_at: r.get(8)?,
        last_used_at: r.get(9)?,
    })
}

const TENANT_COLUMNS: &str = "id, slug, name, created_at";

fn tenant(r: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        slug: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
    })
}

const SESSION_COLUMNS: &str = "s.id, s.tenant_id, s.user_id, s.amr, s.created_at, s.revoked_at";

fn session(r: &Row) -> StoreResult<Session> {
    Ok(Session {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        user_id: r.get(2)?,
        amr: json_list(&r.get::<String>(3)?),
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

const USER_COLUMNS: &str = "id, tenant_id, email, password_hash, first_name, family_name, name, \
     status, email_verified, mfa_enabled, created_at, updated_at, locked_until";

fn user(r: &Row) -> StoreResult<User> {
    Ok(User {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        email: r.get(2)?,
        password_hash: r.get(3)?,
        first_name: r.get(4)?,
        family_name: r.get(5)?,
        name: r.get(6)?,
        status: UserStatus::parse(&r.get::<String>(7)?).unwrap_or(UserStatus::Disabled),
        email_verified: r.get(8)?,
        mfa_enabled: r.get(9)?,
        roles: Vec::new(),
        permissions: Vec::new(),
        locked_until: r.get(12)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

const API_KEY_COLUMNS: &str = "k.id, k.tenant_id, k.user_id, k.name, k.description, \
     k.key_prefix, k.scopes, k.created_at, k.expires_at, k.revoked_at, k.last_used_at";

fn api_key(r: &Row) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        key_prefix: r.get(5)?,
        scopes: r.get::<Option<String>>(6)?.as_deref().map(json_list),
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        last_used_at: r.get(10)?,
    })
}

fn role(r: &Row) -> StoreResult<Role> {
    Ok(Role {
        name: r.get(0)?,
        permissions: json_list(&r.get::<String>(1)?),
        built_in: r.get(2)?,
    })
}

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// The `users` condition of the admin list after the tenant (`$1`), and its
/// parameters.
fn user_filter(q: &UserQuery, tenant_id: Uuid) -> (String, Vec<Value>) {
    let mut clause = "tenant_id = $1".to_string();
    let mut args = vec![Value::from(tenant_id)];
    if let Some(text) = q.q.as_deref().filter(|q| !q.is_empty()) {
        args.push(Value::Text(format!(
            "%{}%",
            text.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )));
        let p = format!("${}", args.len());
        clause.push_str(&format!(
            " AND (email LIKE {p} ESCAPE '\\' OR lower(coalesce(first_name, '')) LIKE {p} ESCAPE '\\'
                  OR lower(coalesce(family_name, '')) LIKE {p} ESCAPE '\\'
                  OR lower(coalesce(name, '')) LIKE {p} ESCAPE '\\')"
        ));
    }
    let at = |args: &mut Vec<Value>| {
        args.push(Value::Int(now()));
        format!("${}", args.len())
    };
    match q.status.as_deref() {
        Some("active") => {
            let p = at(&mut args);
            clause.push_str(&format!(
                " AND status = 'active' AND (locked_until IS NULL OR locked_until <= {p})"
            ))
        }
        Some("disabled") => clause.push_str(" AND status = 'disabled'"),
        Some("locked") => {
            let p = at(&mut args);
            clause.push_str(&format!(" AND status = 'active' AND locked_until > {p}"))
        }
        _ => {}
    }
    (clause, args)
}

/// Fills in the user's roles and the union of their permissions.
async fn load_roles<C: Conn>(c: &mut C, user: &mut User) -> StoreResult<()> {
    let found = c
        .query(
            "SELECT r.name, r.permissions FROM user_roles ur
               JOIN roles r ON r.tenant_id = ur.tenant_id AND r.name = ur.role
              WHERE ur.user_id = $1 ORDER BY r.name",
            &[user.id.into()],
        )
        .await?;
    let mut perms = std::collections::BTreeSet::new();
    user.roles.clear();
    for r in found {
        user.roles.push(r.get(0)?);
        perms.extend(json_list(&r.get::<String>(1)?));
    }
    user.permissions = perms.into_iter().collect();
    Ok(())
}

async fn user_where<C: Conn>(c: &mut C, clause: &str, args: &[Value]) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}");
    let Some(r) = c.query_opt(&sql, args).await? else {
        return Ok(None);
    };
    let mut u = user(&r)?;
    load_roles(c, &mut u).await?;
    Ok(Some(u))
}

async fn tenant_where<C: Conn>(c: &mut C, column: &str, arg: Value) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE {column} = $1");
    c.query_opt(&sql, &[arg])
        .await?
        .as_ref()
        .map(tenant)
        .transpose()
}

async fn insert_tenant<C: Conn>(c: &mut C, slug: &str, name: &str) -> StoreResult<Tenant> {
    let t = Tenant {
        id: Uuid::now_v7(),
        slug: slug.to_string(),
        name: name.to_string(),
        created_at: now(),
    };
    c.execute(
        "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)",
        &[t.id.into(), slug.into(), name.into(), t.created_at.into()],
    )
    .await?;
    for (role, perms) in BUILT_IN_ROLES {
        let perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
        c.execute(
            "INSERT INTO roles (tenant_id, name, permissions, built_in, created_at, updated_at)
             VALUES ($1, $2, $3, TRUE, $4, $4)",
            &[
                t.id.into(),
                (*role).into(),
                to_json_list(&perms).into(),
                t.created_at.into(),
            ],
        )
        .await?;
    }
    Ok(t)
}

/// Gives the user `roles` of the tenant; `NotFound("role …")` for an unknown one.
async fn grant_roles<C: Conn>(
    c: &mut C,
    user_id: Uuid,
    tenant_id: Uuid,
    roles: &[String],
) -> StoreResult<()> {
    for role in roles {
        c.execute(
            "INSERT INTO user_roles (user_id, tenant_id, role) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[user_id.into(), tenant_id.into(), role.into()],
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => StoreError::NotFound(format!("role {role}")),
            other => other,
        })?;
    }
    Ok(())
}

async fn revoke<C: Conn>(c: &mut C, id: Uuid, reason: &str, at: i64) -> StoreResult<bool> {
    let n = c
        .execute(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3
              WHERE id = $1 AND revoked_at IS NULL",
            &[id.into(), at.into(), reason.into()],
        )
        .await?;
    Ok(n > 0)
}

async fn insert_backup_codes<C: Conn>(
    c: &mut C,
    user_id: Uuid,
    hashes: &[String],
) -> StoreResult<()> {
    c.execute(
        "DELETE FROM backup_codes WHERE user_id = $1",
        &[user_id.into()],
    )
    .await?;
    for h in hashes {
        c.execute(
            "INSERT INTO backup_codes (user_id, code_hash) VALUES ($1, $2)",
            &[user_id.into(), h.into()],
        )
        .await?;
    }
    Ok(())
}

async fn rotate<C: Conn>(
    c: &mut C,
    old_hash: &str,
    new_hash: &str,
    new_expires_at: i64,
    at: i64,
) -> StoreResult<RefreshOutcome> {
    // the row locks make two concurrent presentations of one token take turns
    let sql = format!(
        "SELECT {SESSION_COLUMNS}, rt.expires_at, rt.used_at
           FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
          WHERE rt.hash = $1{}",
        C::FOR_UPDATE
    );
    let found = match c.query_opt(&sql, &[old_hash.into()]).await? {
        Some(r) => Some(Presented {
            session: session(&r)?,
            expires_at: r.get(6)?,
            used_at: r.get(7)?,
        }),
        None => None,
    };
    let decision = rules::refresh(found.as_ref(), at);
    let Some(Presented { session, .. }) = found else {
        return Ok(RefreshOutcome::Unknown);
    };
    Ok(match decision {
        Refresh::Unknown => RefreshOutcome::Unknown,
        Refresh::Revoked => RefreshOutcome::Revoked,
        Refresh::Expired => RefreshOutcome::Expired,
        Refresh::Reused => {
            revoke(c, session.id, "refresh_token_reused", at).await?;
            RefreshOutcome::Reused {
                session_id: session.id,
                user_id: session.user_id,
                tenant_id: session.tenant_id,
            }
        }
        Refresh::Rotate => {
            c.execute(
                "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1",
                &[old_hash.into(), at.into()],
            )
            .await?;
            c.execute(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    new_hash.into(),
                    session.id.into(),
                    at.into(),
                    new_expires_at.into(),
                ],
            )
            .await?;
            let user = user_where(
                c,
                "id = $1 AND tenant_id = $2",
                &[session.user_id.into(), session.tenant_id.into()],
            )
            .await?
            .map(Box::new);
            RefreshOutcome::Rotated { session, user }
        }
    })
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn ping(&self) -> StoreResult<()> {
        self.backend.ping().await
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        let (slug, name) = (slug.to_string(), name.to_string());
        run!(self, "create_tenant", |c| tx!(c, false, {
            insert_tenant(c, &slug, &name).await
        }))
    }

    async fn ensure_tenant(&self, slug: &str) -> StoreResult<Tenant> {
        let slug = slug.to_string();
        run!(self, "ensure_tenant", |c| {
            if let Some(t) = tenant_where(c, "slug", (&slug).into()).await? {
                return Ok(t);
            }
            match tx!(c, true, { insert_tenant(c, &slug, &slug).await }) {
                // another replica created it meanwhile
                Err(StoreError::Conflict(_)) => tenant_where(c, "slug", slug.into())
                    .await?
                    .ok_or_else(|| StoreError::Other("tenant vanished".into())),
                other => other,
            }
        })
    }

    async fn tenant_by_id(&self, id: Uuid) -> StoreResult<Option<Tenant>> {
        run!(self, "tenant_by_id", |c| tenant_where(c, "id", id.into())
            .await)
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        let slug = slug.to_string();
        run!(self, "tenant_by_slug", |c| tenant_where(
            c,
            "slug",
            slug.into()
        )
        .await)
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        run!(self, "list_tenants", |c| {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, slug");
            rows(c.query(&sql, &[]).await?, tenant)
        })
    }

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        run!(self, "create_user", |c| tx!(c, false, {
            let id = Uuid::now_v7();
            let at = now();
            c.execute(
                "INSERT INTO users (id, tenant_id, email, password_hash, first_name, family_name,
                                    name, status, email_verified, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $9)",
                &[
                    id.into(),
                    new.tenant_id.into(),
                    (&new.email).into(),
                    new.password_hash.clone().into(),
                    new.first_name.clone().into(),
                    new.family_name.clone().into(),
                    new.name.clone().into(),
                    new.email_verified.into(),
                    at.into(),
                ],
            )
            .await?;
            grant_roles(c, id, new.tenant_id, &new.roles).await?;
            user_where(c, "id = $1", &[id.into()])
                .await?
                .ok_or_else(|| StoreError::Other("user vanished".into()))
        }))
    }

    async fn user_by_id(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<User>> {
        run!(self, "user_by_id", |c| user_where(
            c,
            "id = $1 AND tenant_id = $2",
            &[id.into(), tenant_id.into()]
        )
        .await)
    }

    async fn user_by_email(&self, tenant_id: Uuid, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_ascii_lowercase();
        run!(self, "user_by_email", |c| user_where(
            c,
            "tenant_id = $1 AND email = $2",
            &[tenant_id.into(), email.into()]
        )
        .await)
    }

    async fn count_users(&self, tenant_id: Uuid) -> StoreResult<u64> {
        run!(self, "count_users", |c| {
            let r = c
                .query_opt(
                    "SELECT COUNT(*) FROM users WHERE tenant_id = $1",
                    &[tenant_id.into()],
                )
                .await?;
            Ok(r.map(|r| r.get::<i64>(0)).transpose()?.unwrap_or(0) as u64)
        })
    }

    async fn update_profile(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: ProfileUpdate,
    ) -> StoreResult<User> {
        run!(self, "update_profile", |c| tx!(c, false, {
            let n = c
                .execute(
                    "UPDATE users SET
                        first_name = COALESCE(CAST($3 AS TEXT), first_name),
                        family_name = COALESCE(CAST($4 AS TEXT), family_name),
                        name = COALESCE(CAST($5 AS TEXT), name),
                        email = COALESCE(CAST($6 AS TEXT), email),
                        email_verified = CASE WHEN CAST($6 AS TEXT) IS NOT NULL
                                               AND CAST($6 AS TEXT) <> email
                                              THEN FALSE ELSE email_verified END,
                        updated_at = $7
                      WHERE id = $1 AND tenant_id = $2",
                    &[
                        id.into(),
                        tenant_id.into(),
                        update.first_name.clone().into(),
                        update.family_name.clone().into(),
                        update.name.clone().into(),
                        update.email.clone().into(),
                        now().into(),
                    ],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound("user".into()));
            }
            user_where(c, "id = $1", &[id.into()])
                .await?
                .ok_or_else(|| StoreError::NotFound("user".into()))
        }))
    }

    async fn set_password(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        password_hash: &str,
    ) -> StoreResult<()> {
        let hash = password_hash.to_string();
        run!(self, "set_password", |c| {
            let n = c
                .execute(
                    "UPDATE users SET password_hash = $3, updated_at = $4
                      WHERE id = $1 AND tenant_id = $2",
                    &[id.into(), tenant_id.into(), hash.into(), now().into()],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound("user".into()));
            }
            Ok(())
        })
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<Session> {
        run!(self, "create_session", |c| tx!(c, false, {
            let at = now();
            c.execute(
                "INSERT INTO sessions (id, tenant_id, user_id, amr, created_at, ip, user_agent)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    s.id.into(),
                    s.tenant_id.into(),
                    s.user_id.into(),
                    to_json_list(&s.amr).into(),
                    at.into(),
                    s.ip.clone().into(),
                    s.user_agent.clone().into(),
                ],
            )
            .await?;
            c.execute(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    (&s.refresh_hash).into(),
                    s.id.into(),
                    at.into(),
                    s.refresh_expires_at.into(),
                ],
            )
            .await?;
            Ok(Session {
                id: s.id,
                tenant_id: s.tenant_id,
                user_id: s.user_id,
                amr: s.amr.clone(),
                created_at: at,
                revoked_at: None,
            })
        }))
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        run!(self, "session", |c| {
            let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
            c.query_opt(&sql, &[id.into()])
                .await?
                .as_ref()
                .map(session)
                .transpose()
        })
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
        at: i64,
    ) -> StoreResult<RefreshOutcome> {
        let (old, new) = (old_hash.to_string(), new_hash.to_string());
        run!(self, "rotate_refresh_token", |c| tx!(c, true, {
            rotate(c, &old, &new, new_expires_at, at).await
        }))
    }

    async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<Session>> {
        let hash = hash.to_string();
        run!(self, "session_of_refresh_token", |c| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM refresh_tokens rt
                   JOIN sessions s ON s.id = rt.session_id WHERE rt.hash = $1"
            );
            c.query_opt(&sql, &[hash.into()])
                .await?
                .as_ref()
                .map(session)
                .transpose()
        })
    }

    async fn revoke_session(&self, id: Uuid, reason: &str) -> StoreResult<bool> {
        let reason = reason.to_string();
        run!(self, "revoke_session", |c| revoke(c, id, &reason, now())
            .await)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let reason = reason.to_string();
        let keep = keep.map(|k| k.to_string()).unwrap_or_default();
        run!(self, "revoke_user_sessions", |c| {
            let found = c
                .query(
                    "UPDATE sessions SET revoked_at = $3, revoked_reason = $4
                      WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2
                     RETURNING id",
                    &[user_id.into(), keep.into(), now().into(), reason.into()],
                )
                .await?;
            rows(found, |r| r.get(0))
        })
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        run!(self, "signing_keys", |c| {
            let sql = format!(
                "SELECT kid, algorithm, private_der, created_at, retired_at
                   FROM signing_keys ORDER BY created_at DESC, {} DESC",
                B::Conn::INSERTION_ORDER
            );
            rows(c.query(&sql, &[]).await?, |r| {
                Ok(SigningKeyRecord {
                    kid: r.get(0)?,
                    algorithm: r.get(1)?,
                    private_der: r.get(2)?,
                    created_at: r.get(3)?,
                    retired_at: r.get(4)?,
                })
            })
        })
    }

    async fn rotate_signing_key(&self, key: SigningKeyRecord, at: i64) -> StoreResult<()> {
        run!(self, "rotate_signing_key", |c| tx!(c, true, {
            if B::Conn::POSTGRES {
                // one rotation at a time across replicas
                c.execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE", &[])
                    .await?;
            }
            c.execute(
                "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL",
                &[at.into()],
            )
            .await?;
            c.execute(
                "INSERT INTO signing_keys (kid, algorithm, private_der, created_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    (&key.kid).into(),
                    (&key.algorithm).into(),
                    key.private_der.clone().into(),
                    key.created_at.into(),
                ],
            )
            .await
            .map(|_| ())
        }))
    }

    async fn record_audit(&self, e: AuditEvent) -> StoreResult<()> {
        run!(self, "record_audit", |c| c
            .execute(
                "INSERT INTO audit_events (id, tenant_id, at, type, user_id, ip, user_agent,
                                           outcome, details)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    e.id.into(),
                    e.tenant_id.into(),
                    e.at.into(),
                    e.kind.into(),
                    e.user_id.into(),
                    e.ip.into(),
                    e.user_agent.into(),
                    e.outcome.into(),
                    e.details.to_string().into(),
                ],
            )
            .await
            .map(|_| ()))
    }

    async fn close(&self) -> StoreResult<()> {
        self.backend.close().await
    }

    async fn record_login_failure(
        &self,
        user_id: Uuid,
        at: i64,
        window: i64,
        max: u32,
        lock_for: i64,
    ) -> StoreResult<Option<i64>> {
        let since = rules::window_start(at, window);
        run!(self, "record_login_failure", |c| tx!(c, true, {
            // serialise the user's failures (replicas count them together)
            let sql = format!("SELECT 1 FROM users WHERE id = $1{}", B::Conn::FOR_UPDATE);
            if c.query_opt(&sql, &[user_id.into()]).await?.is_none() {
                return Err(StoreError::NotFound("user".into()));
            }
            c.execute(
                "INSERT INTO login_failures (user_id, at) VALUES ($1, $2)",
                &[user_id.into(), at.into()],
            )
            .await?;
            let recent: i64 = c
                .query_opt(
                    "SELECT COUNT(*) FROM login_failures WHERE user_id = $1 AND at > $2",
                    &[user_id.into(), since.into()],
                )
                .await?
                .map_or(Ok(0), |r| r.get(0))?;
            let locked = rules::lock_until(recent, max, at, lock_for);
            if let Some(until) = locked {
                c.execute(
                    "UPDATE users SET locked_until = $2 WHERE id = $1",
                    &[user_id.into(), until.into()],
                )
                .await?;
                c.execute(
                    "DELETE FROM login_failures WHERE user_id = $1",
                    &[user_id.into()],
                )
                .await?;
            } else {
                c.execute(
                    "DELETE FROM login_failures WHERE user_id = $1 AND at <= $2",
                    &[user_id.into(), since.into()],
                )
                .await?;
            }
            Ok(locked)
        }))
    }

    async fn clear_login_failures(&self, user_id: Uuid) -> StoreResult<()> {
        run!(self, "clear_login_failures", |c| {
            c.execute(
                "DELETE FROM login_failures WHERE user_id = $1",
                &[user_id.into()],
            )
            .await?;
            c.execute(
                "UPDATE users SET locked_until = NULL WHERE id = $1 AND locked_until IS NOT NULL",
                &[user_id.into()],
            )
            .await
            .map(|_| ())
        })
    }

    async fn mfa(&self, user_id: Uuid) -> StoreResult<Option<MfaRecord>> {
        run!(self, "mfa", |c| {
            let found = c
                .query_opt(
                    "SELECT secret, confirmed, last_step FROM mfa_secrets WHERE user_id = $1",
                    &[user_id.into()],
                )
                .await?;
            found
                .map(|r| {
                    Ok(MfaRecord {
                        secret: r.get(0)?,
                        confirmed: r.get(1)?,
                        last_step: r.get(2)?,
                    })
                })
                .transpose()
        })
    }

    async fn begin_mfa(
        &self,
        user_id: Uuid,
        secret: &str,
        backup_code_hashes: Vec<String>,
    ) -> StoreResult<()> {
        let secret = secret.to_string();
        run!(self, "begin_mfa", |c| tx!(c, true, {
            let sql = format!(
                "SELECT confirmed FROM mfa_secrets WHERE user_id = $1{}",
                B::Conn::FOR_UPDATE
            );
            let confirmed: Option<bool> = c
                .query_opt(&sql, &[user_id.into()])
                .await?
                .map(|r| r.get(0))
                .transpose()?;
            if !rules::may_begin_mfa(confirmed) {
                return Err(StoreError::Conflict("mfa already enabled".into()));
            }
            c.execute(
                "INSERT INTO mfa_secrets (user_id, secret, confirmed, created_at)
                 VALUES ($1, $2, FALSE, $3)
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                     confirmed = FALSE, last_step = NULL, created_at = excluded.created_at",
                &[user_id.into(), (&secret).into(), now().into()],
            )
            .await?;
            insert_backup_codes(c, user_id, &backup_code_hashes).await
        }))
    }

    async fn accept_totp_step(&self, user_id: Uuid, step: i64, confirm: bool) -> StoreResult<bool> {
        run!(self, "accept_totp_step", |c| tx!(c, false, {
            // the replay guard: only a step newer than the last one is accepted
            let n = c
                .execute(
                    "UPDATE mfa_secrets SET last_step = $2,
                            confirmed = CASE WHEN CAST($3 AS BOOLEAN) THEN TRUE ELSE confirmed END
                      WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)",
                    &[user_id.into(), step.into(), confirm.into()],
                )
                .await?;
            if n > 0 && confirm {
                c.execute(
                    "UPDATE users SET mfa_enabled = TRUE, updated_at = $2 WHERE id = $1",
                    &[user_id.into(), now().into()],
                )
                .await?;
            }
            Ok(n > 0)
        }))
    }

    async fn disable_mfa(&self, user_id: Uuid) -> StoreResult<()> {
        run!(self, "disable_mfa", |c| tx!(c, false, {
            for sql in [
                "DELETE FROM mfa_secrets WHERE user_id = $1",
                "DELETE FROM backup_codes WHERE user_id = $1",
            ] {
                c.execute(sql, &[user_id.into()]).await?;
            }
            c.execute(
                "UPDATE users SET mfa_enabled = FALSE, updated_at = $2 WHERE id = $1",
                &[user_id.into(), now().into()],
            )
            .await
            .map(|_| ())
        }))
    }

    async fn unused_backup_codes(&self, user_id: Uuid) -> StoreResult<Vec<BackupCode>> {
        run!(self, "unused_backup_codes", |c| {
            let found = c
                .query(
                    "SELECT id, code_hash FROM backup_codes
                      WHERE user_id = $1 AND used_at IS NULL ORDER BY id",
                    &[user_id.into()],
                )
                .await?;
            rows(found, |r| {
                Ok(BackupCode {
                    id: r.get(0)?,
                    code_hash: r.get(1)?,
                })
            })
        })
    }

    async fn use_backup_code(&self, user_id: Uuid, id: i64) -> StoreResult<bool> {
        run!(self, "use_backup_code", |c| c
            .execute(
                "UPDATE backup_codes SET used_at = $3
                  WHERE id = $1 AND user_id = $2 AND used_at IS NULL",
                &[id.into(), user_id.into(), now().into()],
            )
            .await
            .map(rules::first_use))
    }

    async fn replace_backup_codes(&self, user_id: Uuid, hashes: Vec<String>) -> StoreResult<()> {
        run!(self, "replace_backup_codes", |c| tx!(c, false, {
            insert_backup_codes(c, user_id, &hashes).await
        }))
    }

    async fn has_sealed_mfa_secrets(&self) -> StoreResult<bool> {
        run!(self, "has_sealed_mfa_secrets", |c| c
            .query_opt(
                "SELECT EXISTS(SELECT 1 FROM mfa_secrets WHERE secret NOT LIKE 'b32:%')",
                &[],
            )
            .await?
            .map_or(Ok(false), |r| r.get(0)))
    }

    async fn create_mfa_token(
        &self,
        hash: &str,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        let hash = hash.to_string();
        run!(self, "create_mfa_token", |c| {
            c.execute(
                "DELETE FROM mfa_tokens WHERE expires_at < $1",
                &[(now() - rules::MFA_TOKEN_KEPT).into()],
            )
            .await?;
            c.execute(
                "INSERT INTO mfa_tokens (hash, user_id, tenant_id, expires_at) VALUES ($1, $2, $3, $4)",
                &[hash.into(), user_id.into(), tenant_id.into(), expires_at.into()],
            )
            .await
            .map(|_| ())
        })
    }

    async fn mfa_token(&self, hash: &str) -> StoreResult<Option<MfaToken>> {
        let hash = hash.to_string();
        run!(self, "mfa_token", |c| {
            let found = c
                .query_opt(
                    "SELECT user_id, tenant_id, expires_at, failures, used_at FROM mfa_tokens
                      WHERE hash = $1",
                    &[hash.into()],
                )
                .await?;
            found
                .map(|r| {
                    Ok(MfaToken {
                        user_id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        expires_at: r.get(2)?,
                        failures: rules::mfa_failures(Some(r.get(3)?)),
                        used: r.get::<Option<i64>>(4)?.is_some(),
                    })
                })
                .transpose()
        })
    }

    async fn mfa_token_failure(&self, hash: &str) -> StoreResult<u32> {
        let hash = hash.to_string();
        run!(self, "mfa_token_failure", |c| {
            let counted = c
                .query_opt(
                    "UPDATE mfa_tokens SET failures = failures + 1 WHERE hash = $1 RETURNING failures",
                    &[hash.into()],
                )
                .await?
                .map(|r| r.get(0))
                .transpose()?;
            Ok(rules::mfa_failures(counted))
        })
    }

    async fn consume_mfa_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        let hash = hash.to_string();
        run!(self, "consume_mfa_token", |c| c
            .execute(
                "UPDATE mfa_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
                &[hash.into(), at.into()],
            )
            .await
            .map(rules::first_use))
    }

    async fn list_users(&self, tenant_id: Uuid, query: UserQuery) -> StoreResult<(Vec<User>, u64)> {
        run!(self, "list_users", |c| {
            let (clause, mut args) = user_filter(&query, tenant_id);
            let total: i64 = c
                .query_opt(&format!("SELECT COUNT(*) FROM users WHERE {clause}"), &args)
                .await?
                .map_or(Ok(0), |r| r.get(0))?;
            args.push(Value::Int(query.limit.into()));
            args.push(Value::Int(query.offset()));
            let n = args.len();
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {clause}
                  ORDER BY created_at, id LIMIT ${} OFFSET ${n}",
                n - 1
            );
            let mut users = rows(c.query(&sql, &args).await?, user)?;
            for u in &mut users {
                load_roles(c, u).await?;
            }
            Ok((users, total as u64))
        })
    }

    async fn admin_update_user(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: AdminUserUpdate,
    ) -> StoreResult<User> {
        run!(self, "admin_update_user", |c| tx!(c, false, {
            let n = c
                .execute(
                    "UPDATE users SET first_name = COALESCE(CAST($3 AS TEXT), first_name),
                            family_name = COALESCE(CAST($4 AS TEXT), family_name),
                            status = COALESCE(CAST($5 AS TEXT), status), updated_at = $6
                      WHERE id = $1 AND tenant_id = $2",
                    &[
                        id.into(),
                        tenant_id.into(),
                        update.first_name.clone().into(),
                        update.family_name.clone().into(),
                        update.status.map(|s| s.as_str()).into(),
                        now().into(),
                    ],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound("user".into()));
            }
            if let Some(roles) = &update.roles {
                c.execute("DELETE FROM user_roles WHERE user_id = $1", &[id.into()])
                    .await?;
                grant_roles(c, id, tenant_id, roles).await?;
            }
            user_where(c, "id = $1", &[id.into()])
                .await?
                .ok_or_else(|| StoreError::NotFound("user".into()))
        }))
    }

    async fn delete_user(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool> {
        run!(self, "delete_user", |c| c
            .execute(
                "DELETE FROM users WHERE id = $1 AND tenant_id = $2",
                &[id.into(), tenant_id.into()],
            )
            .await
            .map(|n| n > 0))
    }

    async fn set_email_verified(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<User> {
        run!(self, "set_email_verified", |c| {
            let ids = [id.into(), tenant_id.into()];
            c.execute(
                "UPDATE users SET email_verified = TRUE, updated_at = $3
                  WHERE id = $1 AND tenant_id = $2",
                &[id.into(), tenant_id.into(), now().into()],
            )
            .await?;
            user_where(c, "id = $1 AND tenant_id = $2", &ids)
                .await?
                .ok_or_else(|| StoreError::NotFound("user".into()))
        })
    }

    async fn list_roles(&self, tenant_id: Uuid) -> StoreResult<Vec<Role>> {
        run!(self, "list_roles", |c| {
            let found = c
                .query(
                    "SELECT name, permissions, built_in FROM roles WHERE tenant_id = $1
                      ORDER BY built_in DESC, name",
                    &[tenant_id.into()],
                )
                .await?;
            rows(found, role)
        })
    }

    async fn create_role(&self, tenant_id: Uuid, role: Role) -> StoreResult<Role> {
        run!(self, "create_role", |c| {
            let at = now();
            c.execute(
                "INSERT INTO roles (tenant_id, name, permissions, built_in, created_at, updated_at)
                 VALUES ($1, $2, $3, FALSE, $4, $4)",
                &[
                    tenant_id.into(),
                    (&role.name).into(),
                    to_json_list(&role.permissions).into(),
                    at.into(),
                ],
            )
            .await?;
            Ok(Role {
                built_in: false,
                ..role
            })
        })
    }

    async fn update_role(
        &self,
        tenant_id: Uuid,
        name: &str,
        permissions: Vec<String>,
    ) -> StoreResult<Role> {
        let name = name.to_string();
        run!(self, "update_role", |c| c
            .query_opt(
                "UPDATE roles SET permissions = $3, updated_at = $4
                  WHERE tenant_id = $1 AND name = $2
                 RETURNING name, permissions, built_in",
                &[
                    tenant_id.into(),
                    name.into(),
                    to_json_list(&permissions).into(),
                    now().into(),
                ],
            )
            .await?
            .as_ref()
            .map(role)
            .unwrap_or_else(|| Err(StoreError::NotFound("role".into()))))
    }

    async fn delete_role(&self, tenant_id: Uuid, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        run!(self, "delete_role", |c| c
            .execute(
                "DELETE FROM roles WHERE tenant_id = $1 AND name = $2 AND NOT built_in",
                &[tenant_id.into(), name.into()],
            )
            .await
            .map(|n| n > 0))
    }

    async fn audit_events_of(
        &self,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        run!(self, "audit_events_of", |c| {
            let sql = format!(
                "SELECT id, tenant_id, at, type, user_id, ip, user_agent, outcome, details
                   FROM audit_events
                  WHERE tenant_id = $1 AND (CAST($2 AS TEXT) IS NULL OR user_id = CAST($2 AS TEXT))
                  ORDER BY at DESC, {} DESC LIMIT $3",
                B::Conn::INSERTION_ORDER
            );
            let found = c
                .query(
                    &sql,
                    &[tenant_id.into(), user_id.into(), i64::from(limit).into()],
                )
                .await?;
            rows(found, |r| {
                Ok(AuditEvent {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    at: r.get(2)?,
                    kind: r.get(3)?,
                    user_id: r.get(4)?,
                    ip: r.get(5)?,
                    user_agent: r.get(6)?,
                    outcome: r.get(7)?,
                    details: serde_json::from_str(&r.get::<String>(8)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
        })
    }

    async fn create_one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        let hash = hash.to_string();
        run!(self, "create_one_time_token", |c| {
            c.execute(
                "DELETE FROM one_time_tokens WHERE expires_at < $1",
                &[(now() - rules::ONE_TIME_TOKEN_KEPT).into()],
            )
            .await?;
            c.execute(
                "INSERT INTO one_time_tokens (hash, kind, user_id, tenant_id, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    hash.into(),
                    kind.as_str().into(),
                    user_id.into(),
                    tenant_id.into(),
                    expires_at.into(),
                ],
            )
            .await
            .map(|_| ())
        })
    }

    async fn one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
    ) -> StoreResult<Option<OneTimeToken>> {
        let hash = hash.to_string();
        run!(self, "one_time_token", |c| {
            let found = c
                .query_opt(
                    "SELECT user_id, tenant_id, expires_at, used_at FROM one_time_tokens
                      WHERE hash = $1 AND kind = $2",
                    &[hash.into(), kind.as_str().into()],
                )
                .await?;
            found
                .map(|r| {
                    Ok(OneTimeToken {
                        user_id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        expires_at: r.get(2)?,
                        used: r.get::<Option<i64>>(3)?.is_some(),
                    })
                })
                .transpose()
        })
    }

    async fn consume_one_time_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        let hash = hash.to_string();
        run!(self, "consume_one_time_token", |c| c
            .execute(
                "UPDATE one_time_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
                &[hash.into(), at.into()],
            )
            .await
            .map(rules::first_use))
    }

    async fn create_oidc_login(&self, l: OidcLogin) -> StoreResult<()> {
        run!(self, "create_oidc_login", |c| {
            c.execute(
                "DELETE FROM oidc_logins WHERE expires_at < $1",
                &[now().into()],
            )
            .await?;
            c.execute(
                "INSERT INTO oidc_logins (state_hash, provider, tenant_id, nonce, verifier,
                                          redirect_uri, app_state, binding_hash, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    (&l.state_hash).into(),
                    (&l.provider).into(),
                    l.tenant_id.into(),
                    (&l.nonce).into(),
                    (&l.verifier).into(),
                    (&l.redirect_uri).into(),
                    (&l.app_state).into(),
                    (&l.binding_hash).into(),
                    l.expires_at.into(),
                ],
            )
            .await
            .map(|_| ())
        })
    }

    async fn take_oidc_login(&self, state_hash: &str) -> StoreResult<Option<OidcLogin>> {
        let hash = state_hash.to_string();
        run!(self, "take_oidc_login", |c| {
            let found = c
                .query_opt(
                    "DELETE FROM oidc_logins WHERE state_hash = $1
                     RETURNING state_hash, provider, tenant_id, nonce, verifier,
                               redirect_uri, app_state, binding_hash, expires_at",
                    &[hash.into()],
                )
                .await?;
            found
                .map(|r| {
                    Ok(OidcLogin {
                        state_hash: r.get(0)?,
                        provider: r.get(1)?,
                        tenant_id: r.get(2)?,
                        nonce: r.get(3)?,
                        verifier: r.get(4)?,
                        redirect_uri: r.get(5)?,
                        app_state: r.get(6)?,
                        binding_hash: r.get(7)?,
                        expires_at: r.get(8)?,
                    })
                })
                .transpose()
        })
    }

    async fn create_oidc_code(&self, code: OidcCode) -> StoreResult<()> {
        run!(self, "create_oidc_code", |c| {
            c.execute(
                "DELETE FROM oidc_codes WHERE expires_at < $1",
                &[now().into()],
            )
            .await?;
            c.execute(
                "INSERT INTO oidc_codes (hash, user_id, tenant_id, provider, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    (&code.hash).into(),
                    code.user_id.into(),
                    code.tenant_id.into(),
                    (&code.provider).into(),
                    code.expires_at.into(),
                ],
            )
            .await
            .map(|_| ())
        })
    }

    async fn take_oidc_code(&self, hash: &str) -> StoreResult<Option<OidcCode>> {
        let hash = hash.to_string();
        run!(self, "take_oidc_code", |c| {
            let found = c
                .query_opt(
                    "DELETE FROM oidc_codes WHERE hash = $1
                     RETURNING hash, user_id, tenant_id, provider, expires_at",
                    &[hash.into()],
                )
                .await?;
            found
                .map(|r| {
                    Ok(OidcCode {
                        hash: r.get(0)?,
                        user_id: r.get(1)?,
                        tenant_id: r.get(2)?,
                        provider: r.get(3)?,
                        expires_at: r.get(4)?,
                    })
                })
                .transpose()
        })
    }

    async fn linked_user(
        &self,
        tenant_id: Uuid,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Option<Uuid>> {
        let (provider, subject) = (provider.to_string(), subject.to_string());
        run!(self, "linked_user", |c| {
            let found = c
                .query_opt(
                    "SELECT user_id FROM user_identities
                      WHERE tenant_id = $1 AND provider = $2 AND subject = $3",
                    &[tenant_id.into(), provider.into(), subject.into()],
                )
                .await?;
            found.map(|r| r.get(0)).transpose()
        })
    }

    async fn link_identity(&self, i: UserIdentity) -> StoreResult<()> {
        run!(self, "link_identity", |c| {
            c.execute(
                "INSERT INTO user_identities (id, tenant_id, user_id, provider, subject, email,
                                              created_at, last_login_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id, provider, subject)
                 DO UPDATE SET last_login_at = excluded.last_login_at, email = excluded.email",
                &[
                    i.id.into(),
                    i.tenant_id.into(),
                    i.user_id.into(),
                    (&i.provider).into(),
                    (&i.subject).into(),
                    (&i.email).into(),
                    i.created_at.into(),
                    i.last_login_at.into(),
                ],
            )
            .await
            .map(|_| ())
        })
    }

    async fn identities_of_user(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> StoreResult<Vec<UserIdentity>> {
        run!(self, "identities_of_user", |c| {
            let rows = c
                .query(
                    "SELECT id, tenant_id, user_id, provider, subject, email, created_at,
                            last_login_at
                       FROM user_identities WHERE tenant_id = $1 AND user_id = $2
                      ORDER BY created_at, id",
                    &[tenant_id.into(), user_id.into()],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(UserIdentity {
                        id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        user_id: r.get(2)?,
                        provider: r.get(3)?,
                        subject: r.get(4)?,
                        email: r.get(5)?,
                        created_at: r.get(6)?,
                        last_login_at: r.get(7)?,
                    })
                })
                .collect()
        })
    }

    async fn unlink_identity(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool> {
        run!(self, "unlink_identity", |c| c
            .execute(
                "DELETE FROM user_identities WHERE tenant_id = $1 AND id = $2",
                &[tenant_id.into(), id.into()],
            )
            .await
            .map(|n| n > 0))
    }

    async fn create_passkey_challenge(&self, p: PasskeyChallenge) -> StoreResult<()> {
        run!(self, "create_passkey_challenge", |c| {
            c.execute(
                "DELETE FROM passkey_challenges WHERE expires_at < $1",
                &[now().into()],
            )
            .await?;
            c.execute(
                "INSERT INTO passkey_challenges (challenge, ceremony, tenant_id, user_id, binding,
                                                 state, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (&p.challenge).into(),
                    (&p.ceremony).into(),
                    p.tenant_id.into(),
                    p.user_id.into(),
                    p.binding.clone().into(),
                    p.state.clone().into(),
                    p.expires_at.into(),
                ],
            )
            .await
            .map(|_| ())
        })
    }

    async fn take_passkey_challenge(
        &self,
        challenge: &str,
    ) -> StoreResult<Option<PasskeyChallenge>> {
        let challenge = challenge.to_string();
        run!(self, "take_passkey_challenge", |c| {
            let found = c
                .query_opt(
                    "DELETE FROM passkey_challenges WHERE challenge = $1
                     RETURNING challenge, ceremony, tenant_id, user_id, binding, state, expires_at",
                    &[challenge.into()],
                )
                .await?;
            found
                .map(|r| {
                    Ok(PasskeyChallenge {
                        challenge: r.get(0)?,
                        ceremony: r.get(1)?,
                        tenant_id: r.get(2)?,
                        user_id: r.get(3)?,
                        binding: r.get(4)?,
                        state: r.get(5)?,
                        expires_at: r.get(6)?,
                    })
                })
                .transpose()
        })
    }

    async fn create_passkey(&self, p: Passkey) -> StoreResult<()> {
        run!(self, "create_passkey", |c| {
            c.execute(
                "INSERT INTO passkeys (id, tenant_id, user_id, credential_id, public_key, state,
                                       transports, name, created_at, last_used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    p.id.into(),
                    p.tenant_id.into(),
                    p.user_id.into(),
                    p.credential_id.clone().into(),
                    p.public_key.clone().into(),
                    p.state.clone().into(),
                    to_json_list(&p.transports).into(),
                    (&p.name).into(),
                    p.created_at.into(),
                    p.last_used_at.into(),
                ],
            )
            .await
            .map(|_| ())
        })
    }

    async fn passkeys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<Passkey>> {
        run!(self, "passkeys_of_user", |c| {
            let sql = format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE tenant_id = $1 AND user_id = $2
                  ORDER BY created_at, id"
            );
            let rows = c.query(&sql, &[tenant_id.into(), user_id.into()]).await?;
            rows.iter().map(passkey_row).collect()
        })
    }

    async fn passkey_by_credential_id(&self, credential_id: &[u8]) -> StoreResult<Option<Passkey>> {
        let credential_id = credential_id.to_vec();
        run!(self, "passkey_by_credential_id", |c| {
            let sql = format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1");
            let row = c.query_opt(&sql, &[credential_id.into()]).await?;
            row.as_ref().map(passkey_row).transpose()
        })
    }

    async fn record_passkey_use(
        &self,
        id: Uuid,
        previous: &[u8],
        state: &[u8],
        at: i64,
    ) -> StoreResult<bool> {
        let (previous, state) = (previous.to_vec(), state.to_vec());
        run!(self, "record_passkey_use", |c| c
            .execute(
                "UPDATE passkeys SET state = $2, last_used_at = $3 WHERE id = $1 AND state = $4",
                &[id.into(), state.into(), at.into(), previous.into()],
            )
            .await
            .map(|n| n > 0))
    }

    async fn rename_passkey(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        id: Uuid,
        name: &str,
    ) -> StoreResult<Option<Passkey>> {
        let name = name.to_string();
        run!(self, "rename_passkey", |c| {
            let sql = format!(
                "UPDATE passkeys SET name = $4 WHERE tenant_id = $1 AND user_id = $2 AND id = $3
                 RETURNING {PASSKEY_COLUMNS}"
            );
            let row = c
                .query_opt(
                    &sql,
                    &[tenant_id.into(), user_id.into(), id.into(), name.into()],
                )
                .await?;
            row.as_ref().map(passkey_row).transpose()
        })
    }

    async fn delete_passkey(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        run!(self, "delete_passkey", |c| c
            .execute(
                "DELETE FROM passkeys WHERE tenant_id = $1 AND user_id = $2 AND id = $3",
                &[tenant_id.into(), user_id.into(), id.into()],
            )
            .await
            .map(|n| n > 0))
    }

    async fn create_api_key(&self, k: NewApiKey) -> StoreResult<ApiKey> {
        run!(self, "create_api_key", |c| {
            c.execute(
                "INSERT INTO api_keys (id, tenant_id, user_id, name, description, key_prefix,
                                       key_hash, scopes, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    k.id.into(),
                    k.tenant_id.into(),
                    k.user_id.into(),
                    (&k.name).into(),
                    k.description.clone().into(),
                    (&k.key_prefix).into(),
                    (&k.key_hash).into(),
                    k.scopes.as_deref().map(to_json_list).into(),
                    k.created_at.into(),
                    k.expires_at.into(),
                ],
            )
            .await?;
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
    }

    async fn api_keys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        run!(self, "api_keys_of_user", |c| {
            let sql = format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k
                  WHERE k.tenant_id = $1 AND k.user_id = $2 AND k.revoked_at IS NULL
                  ORDER BY k.created_at DESC, k.{} DESC",
                B::Conn::INSERTION_ORDER
            );
            rows(
                c.query(&sql, &[tenant_id.into(), user_id.into()]).await?,
                api_key,
            )
        })
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyWithOwner>> {
        let hash = hash.to_string();
        run!(self, "api_key_by_hash", |c| {
            let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.key_hash = $1");
            let Some(r) = c.query_opt(&sql, &[hash.into()]).await? else {
                return Ok(None);
            };
            let key = api_key(&r)?;
            let owner = user_where(
                c,
                "id = $1 AND tenant_id = $2",
                &[key.user_id.into(), key.tenant_id.into()],
            )
            .await?;
            Ok(owner.map(|owner| ApiKeyWithOwner { key, owner }))
        })
    }

    async fn revoke_api_key(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        run!(self, "revoke_api_key", |c| c
            .execute(
                "UPDATE api_keys SET revoked_at = $4
                  WHERE id = $1 AND tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
                &[id.into(), tenant_id.into(), user_id.into(), now().into()],
            )
            .await
            .map(|n| n > 0))
    }

    async fn record_api_key_use(&self, uses: Vec<(Uuid, i64)>) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        run!(self, "record_api_key_use", |c| {
            if B::Conn::POSTGRES {
                // one statement, whatever the batch
                let ids = uses.iter().map(|(id, _)| id.to_string()).collect();
                let ats = uses.iter().map(|(_, at)| *at).collect();
                return c
                    .execute(
                        "UPDATE api_keys k SET last_used_at = u.at
                           FROM (SELECT id, max(at) AS at
                                   FROM unnest($1::text[], $2::bigint[]) AS t(id, at)
                                  GROUP BY id) u
                          WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
                        &[Value::Texts(ids), Value::Ints(ats)],
                    )
                    .await
                    .map(|_| ());
            }
            tx!(c, false, {
                for (id, at) in &uses {
                    c.execute(
                        "UPDATE api_keys SET last_used_at = $2
                          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                        &[(*id).into(), (*at).into()],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        self.backend.publish(event).await
    }

    async fn listen(&self, events: tokio::sync::mpsc::UnboundedSender<StoreEvent>) {
        self.backend.listen(events).await
    }

    fn after_deadline(&self) {
        self.backend.after_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_both_backends_spellings() {
        let id = Uuid::now_v7();
        let r = Row(vec![
            Value::Int(1),
            Value::Bool(false),
            Value::from(id),
            Value::Null,
            Value::Text("x".into()),
        ]);
        // SQLite keeps booleans as integers, PostgreSQL as booleans
        assert!(r.get::<bool>(0).unwrap());
        assert!(!r.get::<bool>(1).unwrap());
        assert_eq!(r.get::<Uuid>(2).unwrap(), id);
        assert_eq!(r.get::<Option<i64>>(3).unwrap(), None);
        assert_eq!(r.get::<Option<String>>(4).unwrap().as_deref(), Some("x"));
        assert!(r.get::<i64>(4).is_err());
        assert!(r.get::<Uuid>(4).is_err());
        assert!(r.get::<i64>(9).is_err());
        assert_eq!(Value::from(None::<String>), Value::Null);
    }

    #[test]
    fn the_user_filter_numbers_its_parameters_after_the_tenant() {
        let tenant = Uuid::now_v7();
        let q = UserQuery {
            q: Some("50%_a\\".into()),
            status: Some("locked".into()),
            page: 2,
            limit: 10,
        };
        let (clause, args) = user_filter(&q, tenant);
        assert!(clause.starts_with("tenant_id = $1 AND (email LIKE $2 ESCAPE"));
        assert!(clause.ends_with("locked_until > $3"), "{clause}");
        assert_eq!(args[0], Value::from(tenant));
        assert_eq!(args[1], Value::Text("%50\\%\\_a\\\\%".into()));
        assert!(matches!(args[2], Value::Int(_)));
        let (clause, args) = user_filter(&UserQuery::default(), tenant);
        assert_eq!((clause.as_str(), args.len()), ("tenant_id = $1", 1));
    }
}
