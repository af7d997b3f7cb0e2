//! The store suite: every test is an `async fn suite_*(s: &dyn Store)` run
//! against SQLite always and against PostgreSQL when one is reachable
//! (`PORTCULLIS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each time on a fresh
//! database that is dropped afterwards, so the backends cannot drift apart.

use std::sync::Arc;

use uuid::Uuid;

use super::*;

pub(crate) fn new_user(tenant: Uuid, email: &str) -> NewUser {
    NewUser {
        tenant_id: tenant,
        email: email.into(),
        password_hash: Some("$argon2id$x".into()),
        first_name: Some("Jane".into()),
        family_name: None,
        name: None,
        email_verified: false,
        roles: vec!["member".into()],
    }
}

fn new_key(tenant: Uuid, user: Uuid, hash: &str, expires_at: Option<i64>) -> NewApiKey {
    NewApiKey {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        user_id: user,
        name: "ci".into(),
        description: None,
        key_prefix: "sk_live_abcd".into(),
        key_hash: hash.into(),
        scopes: Some(vec!["profile:read".into()]),
        created_at: now(),
        expires_at,
    }
}

async fn suite_tenants_get_built_in_roles_and_users_resolve_permissions(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    assert_eq!(s.ensure_tenant("default").await.unwrap().id, t.id);
    assert!(matches!(
        s.create_tenant("default", "again").await,
        Err(StoreError::Conflict(_))
    ));
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    assert_eq!(u.roles, vec!["member"]);
    assert_eq!(
        u.permissions,
        vec!["apikey:manage", "profile:read", "profile:write"]
    );
    assert!(matches!(
        s.create_user(new_user(t.id, "a@example.com")).await,
        Err(StoreError::Conflict(_))
    ));
    let mut bad = new_user(t.id, "b@example.com");
    bad.roles = vec!["nope".into()];
    assert!(matches!(
        s.create_user(bad).await,
        Err(StoreError::NotFound(_))
    ));
    // the failed insert left nothing behind
    assert!(
        s.user_by_email(t.id, "b@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.count_users(t.id).await.unwrap(), 1);
    assert_eq!(
        s.user_by_email(t.id, "A@Example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        u.id
    );
}

async fn suite_refresh_rotation_and_reuse(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    let sid = Uuid::now_v7();
    s.create_session(NewSession {
        id: sid,
        tenant_id: t.id,
        user_id: u.id,
        amr: vec!["pwd".into()],
        refresh_hash: "h1".into(),
        refresh_expires_at: now() + 100,
        ip: None,
        user_agent: None,
    })
    .await
    .unwrap();
    let n = now();
    // the rotation hands back the session's user, read in its transaction
    match s
        .rotate_refresh_token("h1", "h2", n + 100, n)
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated { session, user } => {
            let user = user.expect("the session's user");
            assert_eq!(user.id, session.user_id);
            assert_eq!(user.roles, vec!["member".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.rotate_refresh_token("h1", "h3", n + 100, n)
            .await
            .unwrap(),
        RefreshOutcome::Reused { .. }
    ));
    // the whole session is dead now, the newest token too
    assert!(matches!(
        s.rotate_refresh_token("h2", "h4", n + 100, n)
            .await
            .unwrap(),
        RefreshOutcome::Revoked
    ));
    assert!(s.session(sid).await.unwrap().unwrap().revoked_at.is_some());
    assert!(matches!(
        s.rotate_refresh_token("zz", "h5", n + 100, n)
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    ));
}

async fn suite_sessions_are_revoked_one_or_all_but_one(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = Uuid::now_v7();
        s.create_session(NewSession {
            id,
            tenant_id: t.id,
            user_id: u.id,
            amr: vec!["pwd".into()],
            refresh_hash: format!("r{i}"),
            refresh_expires_at: now() + 100,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
        })
        .await
        .unwrap();
        ids.push(id);
    }
    assert_eq!(
        s.session_of_refresh_token("r1").await.unwrap().unwrap().id,
        ids[1]
    );
    assert!(s.revoke_session(ids[0], "logout").await.unwrap());
    assert!(!s.revoke_session(ids[0], "logout").await.unwrap());
    let mut revoked = s
        .revoke_user_sessions(u.id, Some(ids[2]), "password_changed")
        .await
        .unwrap();
    revoked.sort();
    assert_eq!(revoked, vec![ids[1]]);
    assert!(
        s.session(ids[2])
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert_eq!(
        s.revoke_user_sessions(u.id, None, "x").await.unwrap(),
        vec![ids[2]]
    );
    // an expired refresh token
    let id = Uuid::now_v7();
    s.create_session(NewSession {
        id,
        tenant_id: t.id,
        user_id: u.id,
        amr: vec![],
        refresh_hash: "old".into(),
        refresh_expires_at: now() - 1,
        ip: None,
        user_agent: None,
    })
    .await
    .unwrap();
    assert!(matches!(
        s.rotate_refresh_token("old", "new", now() + 100, now())
            .await
            .unwrap(),
        RefreshOutcome::Expired
    ));
}

async fn suite_concurrent_rotation_has_one_winner(s: Arc<dyn Store>) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    s.create_session(NewSession {
        id: Uuid::now_v7(),
        tenant_id: t.id,
        user_id: u.id,
        amr: vec![],
        refresh_hash: "h".into(),
        refresh_expires_at: now() + 100,
        ip: None,
        user_agent: None,
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let n = now();
            s.rotate_refresh_token("h", &format!("n{i}"), n + 100, n)
                .await
                .unwrap()
        }));
    }
    let mut rotated = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), RefreshOutcome::Rotated { .. }) {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);
}

async fn suite_signing_keys_rotate(s: &dyn Store) {
    assert!(s.signing_keys().await.unwrap().is_empty());
    let key = |kid: &str, at| SigningKeyRecord {
        kid: kid.into(),
        algorithm: "EdDSA".into(),
        private_der: vec![1, 2, 3, 0, 255],
        created_at: at,
        retired_at: None,
    };
    s.rotate_signing_key(key("k1", 100), 100).await.unwrap();
    s.rotate_signing_key(key("k2", 100), 200).await.unwrap();
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, "k2");
    assert_eq!(keys[0].retired_at, None);
    assert_eq!(keys[0].private_der, vec![1, 2, 3, 0, 255]);
    assert_eq!(keys[1].retired_at, Some(200));
}

async fn suite_profile_password_and_admin_updates(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    s.create_user(new_user(t.id, "b@example.com"))
        .await
        .unwrap();
    let v = s.set_email_verified(t.id, u.id).await.unwrap();
    assert!(v.email_verified);
    let p = s
        .update_profile(
            t.id,
            u.id,
            ProfileUpdate {
                family_name: Some("Doe".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.first_name.as_deref(), Some("Jane"));
    assert_eq!(p.family_name.as_deref(), Some("Doe"));
    assert!(p.email_verified);
    let p = s
        .update_profile(
            t.id,
            u.id,
            ProfileUpdate {
                email: Some("c@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!p.email_verified);
    assert!(matches!(
        s.update_profile(
            t.id,
            u.id,
            ProfileUpdate {
                email: Some("b@example.com".into()),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    s.set_password(t.id, u.id, "$new").await.unwrap();
    assert!(matches!(
        s.set_password(t.id, Uuid::now_v7(), "$x").await,
        Err(StoreError::NotFound(_))
    ));
    let got = s.user_by_id(t.id, u.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash.as_deref(), Some("$new"));

    // roles
    s.create_role(
        t.id,
        Role {
            name: "editor".into(),
            permissions: vec!["docs:write".into()],
            built_in: false,
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        s.create_role(
            t.id,
            Role {
                name: "editor".into(),
                permissions: vec![],
                built_in: false
            }
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<_> = s
        .list_roles(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["admin", "member", "editor"]);
    let r = s
        .update_role(t.id, "editor", vec!["docs:read".into()])
        .await
        .unwrap();
    assert_eq!(r.permissions, vec!["docs:read"]);
    assert!(matches!(
        s.update_role(t.id, "nope", vec![]).await,
        Err(StoreError::NotFound(_))
    ));
    let a = s
        .admin_update_user(
            t.id,
            u.id,
            AdminUserUpdate {
                roles: Some(vec!["editor".into(), "member".into()]),
                status: Some(UserStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.roles, vec!["editor", "member"]);
    assert!(a.permissions.contains(&"docs:read".to_string()));
    assert_eq!(a.status, UserStatus::Disabled);
    assert!(matches!(
        s.admin_update_user(
            t.id,
            u.id,
            AdminUserUpdate {
                roles: Some(vec!["ghost".into()]),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!s.delete_role(t.id, "admin").await.unwrap());
    assert!(s.delete_role(t.id, "editor").await.unwrap());
    let a = s.user_by_id(t.id, u.id).await.unwrap().unwrap();
    assert_eq!(a.roles, vec!["member"]);

    // listing
    let (page, total) = s
        .list_users(
            t.id,
            UserQuery {
                q: Some("EXAMPLE".into()),
                status: None,
                page: 1,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 2));
    let (page, total) = s
        .list_users(
            t.id,
            UserQuery {
                q: None,
                status: Some("disabled".into()),
                page: 1,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!((page[0].id, total), (u.id, 1));
    let (_, total) = s
        .list_users(
            t.id,
            UserQuery {
                q: Some("50%_".into()),
                status: None,
                page: 1,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 0);

    assert!(s.delete_user(t.id, u.id).await.unwrap());
    assert!(!s.delete_user(t.id, u.id).await.unwrap());
    assert_eq!(s.count_users(t.id).await.unwrap(), 1);
}

async fn suite_lockout_counts_failures_in_the_window(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    assert_eq!(
        s.record_login_failure(u.id, 1000, 60, 3, 300)
            .await
            .unwrap(),
        None
    );
    // outside the window: forgotten
    assert_eq!(
        s.record_login_failure(u.id, 1100, 60, 3, 300)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.record_login_failure(u.id, 1101, 60, 3, 300)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.record_login_failure(u.id, 1102, 60, 3, 300)
            .await
            .unwrap(),
        Some(1402)
    );
    let got = s.user_by_id(t.id, u.id).await.unwrap().unwrap();
    assert_eq!(got.locked_until, Some(1402));
    s.clear_login_failures(u.id).await.unwrap();
    let got = s.user_by_id(t.id, u.id).await.unwrap().unwrap();
    assert_eq!(got.locked_until, None);
}

async fn suite_mfa_enrolment_steps_and_codes(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    assert!(s.mfa(u.id).await.unwrap().is_none());
    s.begin_mfa(u.id, "b32:AAAA", vec!["c1".into(), "c2".into()])
        .await
        .unwrap();
    s.begin_mfa(u.id, "b32:BBBB", vec!["c3".into(), "c4".into()])
        .await
        .unwrap();
    let m = s.mfa(u.id).await.unwrap().unwrap();
    assert_eq!((m.secret.as_str(), m.confirmed), ("b32:BBBB", false));
    assert!(!s.has_sealed_mfa_secrets().await.unwrap());
    assert!(s.accept_totp_step(u.id, 10, true).await.unwrap());
    assert!(!s.accept_totp_step(u.id, 10, false).await.unwrap());
    assert!(s.accept_totp_step(u.id, 11, false).await.unwrap());
    let m = s.mfa(u.id).await.unwrap().unwrap();
    assert_eq!((m.confirmed, m.last_step), (true, Some(11)));
    assert!(s.user_by_id(t.id, u.id).await.unwrap().unwrap().mfa_enabled);
    assert!(matches!(
        s.begin_mfa(u.id, "b32:CCCC", vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let codes = s.unused_backup_codes(u.id).await.unwrap();
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[0].code_hash, "c3");
    assert!(s.use_backup_code(u.id, codes[0].id).await.unwrap());
    assert!(!s.use_backup_code(u.id, codes[0].id).await.unwrap());
    assert_eq!(s.unused_backup_codes(u.id).await.unwrap().len(), 1);
    s.replace_backup_codes(u.id, vec!["c5".into(), "c6".into(), "c7".into()])
        .await
        .unwrap();
    assert_eq!(s.unused_backup_codes(u.id).await.unwrap().len(), 3);
    s.disable_mfa(u.id).await.unwrap();
    assert!(s.mfa(u.id).await.unwrap().is_none());
    assert!(s.unused_backup_codes(u.id).await.unwrap().is_empty());
    assert!(!s.user_by_id(t.id, u.id).await.unwrap().unwrap().mfa_enabled);
    s.begin_mfa(u.id, "aes256gcm:xyz", vec![]).await.unwrap();
    assert!(s.has_sealed_mfa_secrets().await.unwrap());

    // login tokens
    s.create_mfa_token("m1", u.id, t.id, now() + 60)
        .await
        .unwrap();
    let tok = s.mfa_token("m1").await.unwrap().unwrap();
    assert_eq!((tok.user_id, tok.failures, tok.used), (u.id, 0, false));
    assert_eq!(s.mfa_token_failure("m1").await.unwrap(), 1);
    assert_eq!(s.mfa_token_failure("m1").await.unwrap(), 2);
    assert_eq!(s.mfa_token_failure("nope").await.unwrap(), u32::MAX);
    assert!(s.consume_mfa_token("m1", now()).await.unwrap());
    assert!(!s.consume_mfa_token("m1", now()).await.unwrap());
    assert!(s.mfa_token("m1").await.unwrap().unwrap().used);
    assert!(s.mfa_token("nope").await.unwrap().is_none());
}

async fn suite_one_time_tokens_and_audit(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    s.create_one_time_token("o1", OneTimeKind::PasswordReset, u.id, t.id, now() + 60)
        .await
        .unwrap();
    assert!(
        s.one_time_token("o1", OneTimeKind::Invite)
            .await
            .unwrap()
            .is_none()
    );
    let o = s
        .one_time_token("o1", OneTimeKind::PasswordReset)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.user_id, o.used), (u.id, false));
    assert!(s.consume_one_time_token("o1", now()).await.unwrap());
    assert!(!s.consume_one_time_token("o1", now()).await.unwrap());

    for (i, kind) in ["login", "logout", "login"].iter().enumerate() {
        s.record_audit(AuditEvent {
            id: Uuid::now_v7(),
            tenant_id: Some(t.id),
            at: 1000 + i as i64,
            kind: kind.to_string(),
            user_id: if i == 1 { None } else { Some(u.id) },
            ip: Some("10.0.0.1".into()),
            user_agent: None,
            outcome: "success".into(),
            details: serde_json::json!({ "n": i }),
        })
        .await
        .unwrap();
    }
    let all = s.audit_events_of(t.id, None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].details, serde_json::json!({ "n": 2 }));
    let mine = s.audit_events_of(t.id, Some(u.id), 1).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].at, 1002);
}

async fn suite_api_keys_are_found_by_hash_listed_per_owner_and_revoked_by_their_owner_only(
    s: &dyn Store,
) {
    let t = s.ensure_tenant("default").await.unwrap();
    let owner = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    let other = s
        .create_user(new_user(t.id, "b@example.com"))
        .await
        .unwrap();
    let k = s
        .create_api_key(new_key(t.id, owner.id, "h1", None))
        .await
        .unwrap();
    let mut unscoped = new_key(t.id, owner.id, "h2", Some(now() - 10));
    unscoped.scopes = None;
    s.create_api_key(unscoped).await.unwrap();
    assert!(matches!(
        s.create_api_key(new_key(t.id, owner.id, "h1", None)).await,
        Err(StoreError::Conflict(_))
    ));

    let found = s.api_key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(found.key, k);
    assert_eq!(found.owner.id, owner.id);
    assert_eq!(found.owner.roles, vec!["member"]);
    let expired = s.api_key_by_hash("h2").await.unwrap().unwrap();
    assert_eq!(expired.key.scopes, None);
    assert!(expired.key.expires_at.unwrap() < now());
    assert!(s.api_key_by_hash("nope").await.unwrap().is_none());

    assert_eq!(s.api_keys_of_user(t.id, owner.id).await.unwrap().len(), 2);
    assert!(s.api_keys_of_user(t.id, other.id).await.unwrap().is_empty());
    assert!(!s.revoke_api_key(t.id, other.id, k.id).await.unwrap());
    assert!(s.revoke_api_key(t.id, owner.id, k.id).await.unwrap());
    assert!(!s.revoke_api_key(t.id, owner.id, k.id).await.unwrap());
    let listed = s.api_keys_of_user(t.id, owner.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_ne!(listed[0].id, k.id);
    // a revoked key is still found, so the authenticator can refuse it
    let revoked = s.api_key_by_hash("h1").await.unwrap().unwrap();
    assert!(revoked.key.revoked_at.is_some());
}

async fn suite_api_key_use_is_recorded_in_batches_and_never_moves_back(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    let k = s
        .create_api_key(new_key(t.id, u.id, "h1", None))
        .await
        .unwrap();
    s.record_api_key_use(vec![(k.id, 1000), (Uuid::now_v7(), 5)])
        .await
        .unwrap();
    s.record_api_key_use(vec![(k.id, 900)]).await.unwrap();
    s.record_api_key_use(vec![]).await.unwrap();
    let found = s.api_key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(found.key.last_used_at, Some(1000));
}

async fn suite_a_disabled_owner_shows_on_the_key_and_a_deleted_owner_takes_its_keys(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "a@example.com"))
        .await
        .unwrap();
    s.create_api_key(new_key(t.id, u.id, "h1", None))
        .await
        .unwrap();
    s.admin_update_user(
        t.id,
        u.id,
        AdminUserUpdate {
            status: Some(UserStatus::Disabled),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let found = s.api_key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(found.owner.status, UserStatus::Disabled);
    assert!(s.delete_user(t.id, u.id).await.unwrap());
    assert!(s.api_key_by_hash("h1").await.unwrap().is_none());
}

async fn suite_tenants_are_listed_and_found(s: &dyn Store) {
    let a = s.create_tenant("acme", "Acme").await.unwrap();
    let b = s.ensure_tenant("beta").await.unwrap();
    assert_eq!(b.name, "beta");
    assert_eq!(s.tenant_by_id(a.id).await.unwrap().unwrap(), a);
    assert_eq!(s.tenant_by_slug("beta").await.unwrap().unwrap(), b);
    assert!(s.tenant_by_slug("nope").await.unwrap().is_none());
    assert_eq!(s.list_tenants().await.unwrap().len(), 2);
    s.ping().await.unwrap();
}

async fn suite_external_logins_codes_and_linked_identities(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "ext@example.com"))
        .await
        .unwrap();
    let login = OidcLogin {
        state_hash: "st".into(),
        provider: "idp".into(),
        tenant_id: t.id,
        nonce: "n".into(),
        verifier: "v".into(),
        redirect_uri: "https://app.example/cb".into(),
        app_state: "".into(),
        binding_hash: "b".into(),
        expires_at: now() + 60,
    };
    s.create_oidc_login(login.clone()).await.unwrap();
    // taken once: a replayed state finds nothing
    assert_eq!(s.take_oidc_login("st").await.unwrap(), Some(login));
    assert_eq!(s.take_oidc_login("st").await.unwrap(), None);
    let code = OidcCode {
        hash: "c".into(),
        user_id: u.id,
        tenant_id: t.id,
        provider: "idp".into(),
        expires_at: now() + 60,
    };
    s.create_oidc_code(code.clone()).await.unwrap();
    assert_eq!(s.take_oidc_code("c").await.unwrap(), Some(code));
    assert_eq!(s.take_oidc_code("c").await.unwrap(), None);

    assert_eq!(s.linked_user(t.id, "idp", "sub-1").await.unwrap(), None);
    let link = UserIdentity {
        id: Uuid::now_v7(),
        tenant_id: t.id,
        user_id: u.id,
        provider: "idp".into(),
        subject: "sub-1".into(),
        email: "ext@example.com".into(),
        created_at: 100,
        last_login_at: 100,
    };
    s.link_identity(link.clone()).await.unwrap();
    // a second login updates the link, it does not add one
    s.link_identity(UserIdentity {
        id: Uuid::now_v7(),
        last_login_at: 200,
        ..link.clone()
    })
    .await
    .unwrap();
    assert_eq!(
        s.linked_user(t.id, "idp", "sub-1").await.unwrap(),
        Some(u.id)
    );
    let listed = s.identities_of_user(t.id, u.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, link.id);
    assert_eq!(listed[0].last_login_at, 200);
    let other = s.ensure_tenant("other").await.unwrap();
    assert!(!s.unlink_identity(other.id, link.id).await.unwrap());
    assert!(s.unlink_identity(t.id, link.id).await.unwrap());
    assert_eq!(s.linked_user(t.id, "idp", "sub-1").await.unwrap(), None);
}

async fn suite_passkeys_and_their_ceremonies(s: &dyn Store) {
    let t = s.ensure_tenant("default").await.unwrap();
    let u = s
        .create_user(new_user(t.id, "pk@example.com"))
        .await
        .unwrap();
    let c = PasskeyChallenge {
        challenge: "00ff".into(),
        ceremony: "register".into(),
        tenant_id: t.id,
        user_id: Some(u.id),
        binding: Some("session".into()),
        state: vec![1, 2, 3],
        expires_at: now() + 60,
    };
    s.create_passkey_challenge(c.clone()).await.unwrap();
    // taken once: a replayed challenge finds nothing
    assert_eq!(
        s.take_passkey_challenge("00ff").await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(s.take_passkey_challenge("00ff").await.unwrap(), None);
    // an expired ceremony is purged when the next one is kept
    s.create_passkey_challenge(PasskeyChallenge {
        challenge: "old".into(),
        expires_at: now() - 1,
        ..c.clone()
    })
    .await
    .unwrap();
    s.create_passkey_challenge(PasskeyChallenge {
        challenge: "new".into(),
        ..c.clone()
    })
    .await
    .unwrap();
    assert_eq!(s.take_passkey_challenge("old").await.unwrap(), None);

    let pk = Passkey {
        id: Uuid::now_v7(),
        tenant_id: t.id,
        user_id: u.id,
        credential_id: vec![9, 8, 7],
        public_key: vec![0; 40],
        state: vec![0; 7],
        transports: vec!["usb".into(), "nfc".into()],
        name: "Key".into(),
        created_at: 100,
        last_used_at: None,
    };
    s.create_passkey(pk.clone()).await.unwrap();
    // one credential id is one passkey, whoever registers it
    assert!(matches!(
        s.create_passkey(Passkey {
            id: Uuid::now_v7(),
            ..pk.clone()
        })
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.passkeys_of_user(t.id, u.id).await.unwrap(),
        vec![pk.clone()]
    );
    assert_eq!(
        s.passkey_by_credential_id(&[9, 8, 7]).await.unwrap(),
        Some(pk.clone())
    );
    // a use is recorded only over the state it was checked against
    let used = vec![0, 0, 0, 5, 0, 0, 0];
    assert!(
        s.record_passkey_use(pk.id, &pk.state, &used, 200)
            .await
            .unwrap()
    );
    assert!(
        !s.record_passkey_use(pk.id, &pk.state, &used, 300)
            .await
            .unwrap()
    );
    let now_stored = s
        .passkey_by_credential_id(&[9, 8, 7])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (now_stored.state, now_stored.last_used_at),
        (used, Some(200))
    );
    let other = s.ensure_tenant("other").await.unwrap();
    assert_eq!(
        s.rename_passkey(other.id, u.id, pk.id, "x").await.unwrap(),
        None
    );
    let renamed = s
        .rename_passkey(t.id, u.id, pk.id, "Laptop")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "Laptop");
    assert!(!s.delete_passkey(other.id, u.id, pk.id).await.unwrap());
    assert!(s.delete_passkey(t.id, u.id, pk.id).await.unwrap());
    assert!(s.passkeys_of_user(t.id, u.id).await.unwrap().is_empty());
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite::SqliteStore::open(&dir.path().join("sub/p.db"))
        .await
        .unwrap();
    (dir, Arc::new(s))
}

/// The PostgreSQL server the suite may use: `PORTCULLIS_TEST_POSTGRES_URL`
/// or the local one, when it answers.
pub(crate) async fn postgres_admin() -> Option<(tokio_postgres::Client, String)> {
    let url = std::env::var("PORTCULLIS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    let why = match tokio::time::timeout(std::time::Duration::from_secs(2), connect).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            note_component("ran");
            return Some((client, url));
        }
        Ok(Err(e)) => format!("PostgreSQL at {url}: {e}"),
        Err(_) => format!("PostgreSQL at {url}: no answer within 2 s"),
    };
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set and the PostgreSQL store suite cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
    note_component(&format!("skipped: {why}"));
    None
}

/// Notes for the summary at the end of `make test` (`.ci/components`)
/// whether the PostgreSQL store suite ran (`target/components/postgres-store`,
/// or `$PORTCULLIS_COMPONENT_REPORT`).
fn note_component(line: &str) {
    use std::io::Write;
    let dir = std::env::var_os("PORTCULLIS_COMPONENT_REPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/components")
        });
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("postgres-store"))
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// Runs `f` on a fresh PostgreSQL database, dropped afterwards (even when `f` panics).
async fn with_postgres<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn Store>, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some((admin, url)) = postgres_admin().await else {
        return;
    };
    let db = format!("portcullis_test_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.dbname(&db);
    let db_url = format!(
        "postgres://{}@{}:{}/{db}",
        cfg.get_user().unwrap_or("postgres"),
        match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[allow(unreachable_patterns)]
            _ => "127.0.0.1".into(),
        },
        cfg.get_ports().first().copied().unwrap_or(5432)
    );
    let result = match postgres::PgStore::open(&db_url).await {
        Ok(store) => {
            // as `store::open` builds it: every call bounded by the deadline (DEFAULT_TIMEOUT)
            let store: Arc<dyn Store> = Arc::new(store);
            let r = tokio::spawn(f(store.clone(), db_url)).await;
            store.close().await.unwrap();
            r.map_err(|e| e.into_panic())
        }
        Err(e) => Err(Box::new(format!("opening {db}: {e}")) as Box<dyn std::any::Any + Send>),
    };
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, s) = super::sqlite().await;
                    super::$name(s.as_ref()).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::with_postgres(|s, _| async move { super::$name(s.as_ref()).await }).await;
                }
            )*
        }
    };
}

both_backends!(
    suite_tenants_get_built_in_roles_and_users_resolve_permissions,
    suite_refresh_rotation_and_reuse,
    suite_sessions_are_revoked_one_or_all_but_one,
    suite_signing_keys_rotate,
    suite_profile_password_and_admin_updates,
    suite_lockout_counts_failures_in_the_window,
    suite_mfa_enrolment_steps_and_codes,
    suite_one_time_tokens_and_audit,
    suite_api_keys_are_found_by_hash_listed_per_owner_and_revoked_by_their_owner_only,
    suite_api_key_use_is_recorded_in_batches_and_never_moves_back,
    suite_a_disabled_owner_shows_on_the_key_and_a_deleted_owner_takes_its_keys,
    suite_tenants_are_listed_and_found,
    suite_external_logins_codes_and_linked_identities,
    suite_passkeys_and_their_ceremonies,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_rotation_has_one_winner() {
    let (_dir, s) = sqlite().await;
    suite_concurrent_rotation_has_one_winner(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_rotation_has_one_winner() {
    with_postgres(|s, _| suite_concurrent_rotation_has_one_winner(s)).await;
}

/// A call abandoned at its deadline inside a transaction (row lock held)
/// leaves nothing behind: the next call on that row is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_call_dropped_in_a_transaction_leaves_no_lock_behind() {
    use super::sql::{Backend, Conn};
    with_postgres(|s, url| async move {
        let t = s.ensure_tenant("default").await.unwrap();
        let u = s
            .create_user(new_user(t.id, "a@example.com"))
            .await
            .unwrap();
        let short =
            postgres::PgStore::open_with_timeout(&url, std::time::Duration::from_millis(300))
                .await
                .unwrap();
        let id = u.id;
        let e = short
            .backend
            .run("hang", move |c| {
                Box::pin(async move {
                    c.begin(true).await?;
                    c.query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[id.into()])
                        .await?;
                    std::future::pending::<StoreResult<()>>().await
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("hang"), "{e}");
        // `record_login_failure` locks the same row first
        assert_eq!(
            s.record_login_failure(id, now(), 60, 5, 60).await.unwrap(),
            None
        );
        short.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_migrate_once_and_hear_each_other() {
    with_postgres(|a, url| async move {
        // three more replicas open the migrated database at the same time
        let opened = futures_join(&url).await;
        let b = opened[0].clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = {
            let b = b.clone();
            tokio::spawn(async move { b.listen(tx).await })
        };
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(first, Some(StoreEvent::Resync));
        let ev = StoreEvent::Sessions {
            ids: vec![Uuid::now_v7()],
        };
        a.publish(&ev).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(ev));
        drop(rx);
        listener.abort();
    })
    .await;
}

async fn futures_join(url: &str) -> Vec<Arc<dyn Store>> {
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            postgres::PgStore::open(&url).await.unwrap()
        }));
    }
    let mut out: Vec<Arc<dyn Store>> = Vec::new();
    for t in tasks {
        out.push(Arc::new(t.await.unwrap()));
    }
    out
}
