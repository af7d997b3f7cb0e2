//! Tenancy (SPEC §4): which tenant a request belongs to. Public `/auth`
//! requests name it with `X-Tenant-ID` (UUID or slug, default tenant when
//! absent); authenticated ones carry it in the credential and a disagreeing
//! header is 403. Tenants are cached; a miss reads the store, so a tenant the
//! CLI creates is seen by a running sidecar.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use crate::config::TenancySection;
use crate::error::Error;
use crate::store::{Store, Tenant};

pub const TENANT_HEADER: &str = "x-tenant-id";

pub struct TenantDirectory {
    store: Arc<dyn Store>,
    cache: Cache<String, Tenant>,
    cfg: TenancySection,
}

/// A slug is 1–63 characters of lower-case letters, digits, `-` and `_`.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl TenantDirectory {
    pub fn new(store: Arc<dyn Store>, cfg: TenancySection, ttl: Duration) -> Self {
        TenantDirectory {
            store,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            cfg,
        }
    }

    /// Forgets every cached tenant.
    pub fn flush(&self) {
        self.cache.invalidate_all();
    }

    /// The tenant named by `ident` (UUID or slug), if it exists.
    pub async fn lookup(&self, ident: &str) -> Result<Option<Tenant>, Error> {
        let ident = ident.trim();
        if let Some(t) = self.cache.get(ident) {
            return Ok(Some(t));
        }
        let found = if let Ok(id) = Uuid::parse_str(ident) {
            self.store.tenant_by_id(id).await?
        } else if valid_slug(&ident.to_ascii_lowercase()) {
            self.store
                .tenant_by_slug(&ident.to_ascii_lowercase())
                .await?
        } else {
            None
        };
        if let Some(t) = &found {
            self.cache.insert(ident.to_string(), t.clone());
        }
        Ok(found)
    }

    /// The tenant of a public request: the header's, else the default one.
    pub async fn resolve(&self, header: Option<&str>) -> Result<Tenant, Error> {
        let ident = match header.map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) => h.to_string(),
            None if self.cfg.require_header => return Err(Error::TenantRequired),
            None => self.cfg.default_tenant.clone(),
        };
        self.lookup(&ident).await?.ok_or(Error::TenantNotFound)
    }

    /// An `X-Tenant-ID` on an authenticated request must name the credential's tenant.
    pub async fn check_matches(&self, header: Option<&str>, tenant_id: Uuid) -> Result<(), Error> {
        let Some(ident) = header.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(());
        };
        if let Ok(id) = Uuid::parse_str(ident) {
            return if id == tenant_id {
                Ok(())
            } else {
                Err(Error::TenantMismatch)
            };
        }
        match self.lookup(ident).await? {
            Some(t) if t.id == tenant_id => Ok(()),
            _ => Err(Error::TenantMismatch),
        }
    }
}
