//! The admin API (SPEC §6 "Admin routes", §4 tenancy, §10 lockout and audit):
//! permissions, paging and search, create/invite, patch, disable, delete,
//! tenant isolation, unlock, MFA reset, roles and the audit log.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::accounts::{retry_after_secs, start_with_webhook, wait_hook};
use crate::harness::*;

const REFRESH_DEAD: &[&str] = &["INVALID_TOKEN", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED"];

fn user_path(id: &str) -> String {
    format!("/auth/admin/users/{id}")
}

/// `method path` with an optional bearer token and JSON body.
fn call(sc: &Sidecar, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
    let mut req = sc.req(method, path).bearer_opt(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send()
}

/// `GET /auth/admin/users?{query}` as `token`: the checked page object.
#[track_caller]
fn list_users(sc: &Sidecar, token: &str, query: &str) -> Value {
    let r = sc.get(&format!("/auth/admin/users?{query}"), Some(token));
    let page = assert_status(&r, 200);
    let items = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items[]: {}", r.describe()));
    for u in items {
        check_user_object(u);
    }
    assert!(page["totalItems"].is_u64(), "totalItems: {}", r.describe());
    assert!(page["page"].is_u64(), "page: {}", r.describe());
    assert!(page["limit"].is_u64(), "limit: {}", r.describe());
    page
}

/// The ids of a users page.
fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| u["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /auth/admin/users/{id}` as `token`, asserting 200.
#[track_caller]
fn get_user(sc: &Sidecar, token: &str, id: &str) -> Value {
    let r = sc.get(&user_path(id), Some(token));
    let u = assert_status(&r, 200);
    check_user_object(&u);
    assert_eq!(u["id"], id, "{}", r.describe());
    u
}

/// `PATCH /auth/admin/users/{id}` as `token`, asserting 200.
#[track_caller]
fn patch_user(sc: &Sidecar, token: &str, id: &str, body: Value) -> Value {
    let r = sc.patch(&user_path(id), Some(token), &body);
    let u = assert_status(&r, 200);
    check_user_object(&u);
    assert_eq!(u["id"], id, "{}", r.describe());
    u
}

/// The items of `GET /auth/admin/roles`.
#[track_caller]
fn roles(sc: &Sidecar, token: &str) -> Vec<Value> {
    let r = sc.get("/auth/admin/roles", Some(token));
    let b = assert_status(&r, 200);
    b["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items[]: {}", r.describe()))
        .clone()
}

fn role<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items.iter().find(|r| r["name"] == name)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The current TOTP code of a base32 secret (RFC 6238, SHA-1, 6 digits, 30 s).
fn totp_now(secret_b32: &str) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_b32)
        .unwrap_or_else(|e| panic!("secret is not base32 ({e:?}): {secret_b32:?}"));
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .expect("TOTP parameters")
        .generate_current()
        .to_string()
}

// --------------------------------------------------------------------------
// permissions
// --------------------------------------------------------------------------

#[test]
fn bootstrap_admin_has_role_admin_and_a_member_is_403_forbidden_on_every_admin_route() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    assert!(
        str_list(&admin.user["permissions"]).contains(&"*".to_string()),
        "{}",
        admin.user
    );
    let member = sc.new_user();
    let other = sc.new_user();
    let r = sc.post(
        "/auth/admin/roles",
        Some(&admin.access),
        &json!({"name": "ops", "permissions": ["ops:read"]}),
    );
    assert_status(&r, 201);
    let new_email = unique_email("sneaky");

    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/auth/admin/users".into(), None),
        ("GET", "/auth/admin/users?page=1&limit=10&q=a".into(), None),
        (
            "POST",
            "/auth/admin/users".into(),
            Some(json!({"email": new_email, "password": strong_password()})),
        ),
        ("GET", user_path(&other.id), None),
        (
            "PATCH",
            user_path(&other.id),
            Some(json!({"firstName": "Owned", "status": "disabled"})),
        ),
        (
            "PATCH",
            user_path(&member.id),
            Some(json!({"roles": ["admin"]})),
        ),
        ("DELETE", user_path(&other.id), None),
        (
            "POST",
            format!("{}/unlock", user_path(&other.id)),
            Some(json!({})),
        ),
        (
            "POST",
            format!("{}/mfa/reset", user_path(&other.id)),
            Some(json!({})),
        ),
        ("GET", "/auth/admin/roles".into(), None),
        (
            "POST",
            "/auth/admin/roles".into(),
            Some(json!({"name": "sneaky", "permissions": ["*"]})),
        ),
        (
            "PATCH",
            "/auth/admin/roles/ops".into(),
            Some(json!({"permissions": ["*"]})),
        ),
        ("DELETE", "/auth/admin/roles/ops".into(), None),
        ("GET", "/auth/admin/audit".into(), None),
        ("GET", "/auth/admin/audit?limit=10".into(), None),
    ];
    for (method, path, body) in &routes {
        let r = call(&sc, method, path, Some(&member.access), body.as_ref());
        assert_error(&r, 403, "FORBIDDEN");
        let r = call(&sc, method, path, None, body.as_ref());
        assert_error(&r, 401, "UNAUTHENTICATED");
        let r = call(&sc, method, path, Some("not.a.jwt"), body.as_ref());
        assert_error(&r, 401, "INVALID_TOKEN");
    }

    // nothing was changed by the refused calls
    let o = get_user(&sc, &admin.access, &other.id);
    assert_eq!(o["status"], "active", "{o}");
    assert_eq!(o["roles"], json!(["member"]), "{o}");
    assert!(o["firstName"] != "Owned", "{o}");
    let m = get_user(&sc, &admin.access, &member.id);
    assert_eq!(m["roles"], json!(["member"]), "{m}");
    let page = list_users(&sc, &admin.access, &format!("q={new_email}"));
    assert_eq!(page["totalItems"], 0, "a member created a user: {page}");
    let items = roles(&sc, &admin.access);
    assert!(role(&items, "sneaky").is_none(), "{items:?}");
    assert_eq!(
        role(&items, "ops").map(|r| r["permissions"].clone()),
        Some(json!(["ops:read"])),
        "{items:?}"
    );
    assert_status(&sc.login(&other.email, &other.password), 200);

    // and the admin passes the same routes' read side
    for path in [
        "/auth/admin/users",
        "/auth/admin/roles",
        "/auth/admin/audit",
    ] {
        let r = sc.get(path, Some(&admin.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }
}

// --------------------------------------------------------------------------
// users: list, search, create, invite
// --------------------------------------------------------------------------

#[test]
fn users_list_pages_with_total_items_and_validates_page_and_limit() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let mut expected: HashSet<String> = HashSet::from([admin.id.clone()]);
    for _ in 0..4 {
        expected.insert(sc.new_user().id);
    }

    let mut seen: Vec<String> = Vec::new();
    for (page, size) in [(1u64, 2usize), (2, 2), (3, 1)] {
        let p = list_users(&sc, &admin.access, &format!("page={page}&limit=2"));
        assert_eq!(p["totalItems"], 5, "{p}");
        assert_eq!(p["page"], page, "{p}");
        assert_eq!(p["limit"], 2, "{p}");
        let ids = ids_of(&p);
        assert_eq!(ids.len(), size, "page {page}: {p}");
        seen.extend(ids);
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 5, "pages overlap: {seen:?}");
    assert_eq!(unique, expected, "the pages do not list exactly the users");

    let p = list_users(&sc, &admin.access, "page=4&limit=2");
    assert_eq!(p["items"], json!([]), "{p}");
    assert_eq!(p["totalItems"], 5, "{p}");
    assert_eq!(p["page"], 4, "{p}");

    // defaults: page 1, limit 25
    let p = list_users(&sc, &admin.access, "");
    assert_eq!(p["page"], 1, "{p}");
    assert_eq!(p["limit"], 25, "{p}");
    assert_eq!(ids_of(&p).len(), 5, "{p}");
    let p = list_users(&sc, &admin.access, "limit=100");
    assert_eq!(p["limit"], 100, "{p}");

    let r = sc.get("/auth/admin/users?limit=101", Some(&admin.access));
    let err = assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(err["details"]["field"], "limit", "{}", r.describe());
    for query in ["limit=0", "page=0", "limit=abc", "page=abc", "limit=-1"] {
        let r = sc.get(&format!("/auth/admin/users?{query}"), Some(&admin.access));
        assert_error(&r, 400, "INVALID_REQUEST");
    }
}

#[test]
fn users_list_searches_email_and_first_name_and_filters_by_status() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let tag = rand_hex(10);
    let by_email = sc.new_user_with(Some(&format!("srch-{tag}@example.com")), json!({}), None);
    let first = format!("Zebulon{}", rand_hex(8));
    let by_name = sc.new_user_with(None, json!({"firstName": first}), None);
    let plain = sc.new_user();

    let p = list_users(&sc, &admin.access, &format!("q={tag}"));
    assert_eq!(ids_of(&p), vec![by_email.id.clone()], "{p}");
    assert_eq!(p["totalItems"], 1, "{p}");
    let p = list_users(&sc, &admin.access, &format!("q={first}"));
    assert_eq!(ids_of(&p), vec![by_name.id.clone()], "{p}");
    assert_eq!(p["totalItems"], 1, "{p}");
    let p = list_users(&sc, &admin.access, "q=example.com");
    assert_eq!(p["totalItems"], 4, "{p}");
    let p = list_users(&sc, &admin.access, &format!("q=no-match-{}", rand_hex(8)));
    assert_eq!(p["totalItems"], 0, "{p}");
    assert_eq!(p["items"], json!([]), "{p}");
    // q is a plain substring: SQL LIKE wildcards match only themselves
    for wildcard in ["%25", "_", "%25%25"] {
        let p = list_users(&sc, &admin.access, &format!("q={wildcard}"));
        assert_eq!(p["totalItems"], 0, "q={wildcard} matched: {p}");
    }

    let p = list_users(&sc, &admin.access, "status=disabled");
    assert_eq!(p["totalItems"], 0, "{p}");
    patch_user(&sc, &admin.access, &plain.id, json!({"status": "disabled"}));
    let p = list_users(&sc, &admin.access, "status=disabled");
    assert_eq!(ids_of(&p), vec![plain.id.clone()], "{p}");
    assert_eq!(p["totalItems"], 1, "{p}");
    assert_eq!(p["items"][0]["status"], "disabled", "{p}");
    let p = list_users(&sc, &admin.access, "status=active");
    assert_eq!(p["totalItems"], 3, "{p}");
    assert!(!ids_of(&p).contains(&plain.id), "{p}");
    // filters combine
    let p = list_users(&sc, &admin.access, &format!("status=disabled&q={tag}"));
    assert_eq!(p["totalItems"], 0, "{p}");

    let r = sc.get("/auth/admin/users?status=bogus", Some(&admin.access));
    let err = assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(err["details"]["field"], "status", "{}", r.describe());
}

#[test]
fn create_user_with_a_password_validates_it_and_the_user_can_log_in() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let email = unique_email("created");
    let password = strong_password();
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": email, "password": password, "firstName": "Grace", "familyName": "Hopper"}),
    );
    let u = assert_status(&r, 201);
    check_user_object(&u);
    assert_eq!(u["email"], email.as_str());
    assert_eq!(u["firstName"], "Grace");
    assert_eq!(u["familyName"], "Hopper");
    assert_eq!(u["roles"], json!(["member"]), "default roles: {u}");
    assert_eq!(u["status"], "active");
    assert_eq!(u["tenantId"], admin.tenant_id.as_str());
    assert!(
        u.get("inviteToken").is_none_or(Value::is_null),
        "a user with a password is not invited: {u}"
    );
    assert!(!r.body.contains(&password), "{}", r.describe());

    let r = sc.login(&email, &password);
    let b = assert_status(&r, 200);
    check_token_response(&b);
    assert_eq!(b["user"]["id"], u["id"]);

    // refusals
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": email.to_uppercase(), "password": strong_password()}),
    );
    assert_error(&r, 409, "EMAIL_EXISTS");
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": unique_email("weak"), "password": "password"}),
    );
    assert_error(&r, 400, "WEAK_PASSWORD");
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": unique_email("role"), "password": strong_password(), "roles": ["no-such-role"]}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": "not an email", "password": strong_password()}),
    );
    let err = assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(err["details"]["field"], "email", "{}", r.describe());
    // none of the refused users exists
    let p = list_users(&sc, &admin.access, "limit=100");
    assert_eq!(p["totalItems"], 2, "{p}");
}

#[test]
fn create_user_without_a_password_invites_by_webhook_and_accept_sets_it_once() {
    let sc = start_with_webhook(Opts::new());
    let admin = sc.admin_user();
    let email = unique_email("invited");
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": email, "firstName": "Ivy"}),
    );
    let u = assert_status(&r, 201);
    check_user_object(&u);
    assert_eq!(u["email"], email.as_str());
    let user_id = u["id"].as_str().unwrap().to_string();
    let token = u["inviteToken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no inviteToken: {}", r.describe()))
        .to_string();

    let hook = wait_hook(&sc, "user.invited", &email);
    assert_eq!(hook["token"], token.as_str(), "{hook}");
    assert_eq!(hook["userId"], user_id.as_str(), "{hook}");
    assert_eq!(hook["tenantId"], admin.tenant_id.as_str(), "{hook}");

    // no password yet: no login
    assert_error(
        &sc.login(&email, &strong_password()),
        401,
        "INVALID_CREDENTIALS",
    );

    // a weak password is refused and does not use the token up
    let r = sc.post(
        "/auth/invite/accept",
        None,
        &json!({"token": token, "password": "password"}),
    );
    assert_error(&r, 400, "WEAK_PASSWORD");
    let r = sc.post(
        "/auth/invite/accept",
        None,
        &json!({"token": "bogus-invite", "password": strong_password()}),
    );
    assert_error(&r, 401, "INVALID_TOKEN");

    let password = strong_password();
    let r = sc.post(
        "/auth/invite/accept",
        None,
        &json!({"token": token, "password": password}),
    );
    let accepted = assert_status(&r, 200);
    check_user_object(&accepted);
    assert_eq!(accepted["id"], user_id.as_str());
    assert_eq!(accepted["emailVerified"], true, "{accepted}");

    let r = sc.login(&email, &password);
    let b = assert_status(&r, 200);
    check_token_response(&b);
    assert_eq!(b["user"]["id"], user_id.as_str());
    assert_eq!(b["user"]["firstName"], "Ivy");

    // single use: a second accept neither succeeds nor changes the password
    let second = strong_password();
    let r = sc.post(
        "/auth/invite/accept",
        None,
        &json!({"token": token, "password": second}),
    );
    assert_error(&r, 401, "INVALID_TOKEN");
    assert_error(&sc.login(&email, &second), 401, "INVALID_CREDENTIALS");
    assert_status(&sc.login(&email, &password), 200);

    // the token and the password are in neither the audit log nor the log
    let r = sc.get("/auth/admin/audit?limit=100", Some(&admin.access));
    let audit = assert_status(&r, 200).to_string();
    let logs = sc.logs();
    for (what, secret) in [("invite token", &token), ("password", &password)] {
        assert!(
            !audit.contains(secret.as_str()),
            "audit holds the {what}: {audit}"
        );
        assert!(!logs.contains(secret.as_str()), "the log holds the {what}");
    }
}

// --------------------------------------------------------------------------
// users: get, patch, disable, delete
// --------------------------------------------------------------------------

#[test]
fn get_and_patch_change_names_and_roles_which_reach_the_proxy_with_the_next_token() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let member = sc.new_user_with(None, json!({"firstName": "Ann", "familyName": "Lee"}), None);

    let u = get_user(&sc, &admin.access, &member.id);
    assert_eq!(u["email"], member.email.as_str());
    assert_eq!(u["firstName"], "Ann");
    assert_eq!(u["familyName"], "Lee");
    assert_eq!(u["roles"], json!(["member"]));
    assert_error(
        &sc.get("/reports/x", Some(&member.access)),
        403,
        "FORBIDDEN",
    );

    let u = patch_user(
        &sc,
        &admin.access,
        &member.id,
        json!({"firstName": "Anna", "familyName": "Leigh"}),
    );
    assert_eq!(u["firstName"], "Anna");
    assert_eq!(u["familyName"], "Leigh");
    assert_eq!(u["roles"], json!(["member"]), "{u}");
    let u = get_user(&sc, &admin.access, &member.id);
    assert_eq!(u["firstName"], "Anna");
    assert_eq!(u["familyName"], "Leigh");

    let u = patch_user(
        &sc,
        &admin.access,
        &member.id,
        json!({"roles": ["member", "admin"]}),
    );
    assert_eq!(
        sorted(str_list(&u["roles"])),
        vec!["admin".to_string(), "member".to_string()],
        "{u}"
    );
    assert!(
        str_list(&u["permissions"]).contains(&"*".to_string()),
        "{u}"
    );
    assert_eq!(
        u["firstName"], "Anna",
        "a roles patch changed the names: {u}"
    );

    // a fresh login carries the new roles to the proxy path
    let fresh = sc.relogin(&member);
    assert!(
        str_list(&jwt_claims(&fresh.access)["roles"]).contains(&"admin".to_string()),
        "{}",
        fresh.access
    );
    let r = sc.get("/reports/x", Some(&fresh.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = sc.get("/admin-area/x", Some(&fresh.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    // so does a refresh of the session that existed before the change
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": member.refresh}),
    );
    let refreshed = assert_status(&r, 200);
    let r = sc.get("/reports/x", refreshed["accessToken"].as_str());
    assert_eq!(r.status, 200, "{}", r.describe());

    // an unknown role is refused and changes nothing
    let r = sc.patch(
        &user_path(&member.id),
        Some(&admin.access),
        &json!({"roles": ["no-such-role"], "firstName": "Changed"}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    let u = get_user(&sc, &admin.access, &member.id);
    assert_eq!(
        sorted(str_list(&u["roles"])),
        vec!["admin".to_string(), "member".to_string()],
        "{u}"
    );
    assert_eq!(
        u["firstName"], "Anna",
        "a refused patch changed the user: {u}"
    );

    // and back: the next token loses the access
    patch_user(&sc, &admin.access, &member.id, json!({"roles": ["member"]}));
    let again = sc.relogin(&member);
    assert_error(&sc.get("/reports/x", Some(&again.access)), 403, "FORBIDDEN");
}

#[test]
fn disabling_a_user_revokes_its_token_at_once_and_blocks_login_until_re_enabled() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let member = sc.new_user();
    let second = sc.relogin(&member);
    // verified and cached before the change
    for _ in 0..2 {
        let r = sc.get("/api/warm", Some(&member.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }

    let u = patch_user(
        &sc,
        &admin.access,
        &member.id,
        json!({"status": "disabled"}),
    );
    assert_eq!(u["status"], "disabled", "{u}");

    for s in [&member, &second] {
        assert_error(
            &sc.get("/api/after-disable", Some(&s.access)),
            401,
            "TOKEN_REVOKED",
        );
        assert_error(&sc.get("/auth/me", Some(&s.access)), 401, "TOKEN_REVOKED");
        let r = sc.post("/auth/refresh", None, &json!({"refreshToken": s.refresh}));
        assert_error_any(&r, 401, REFRESH_DEAD);
    }
    assert_error(
        &sc.login(&member.email, &member.password),
        403,
        "ACCOUNT_DISABLED",
    );
    assert_eq!(
        get_user(&sc, &admin.access, &member.id)["status"],
        "disabled"
    );

    let u = patch_user(&sc, &admin.access, &member.id, json!({"status": "active"}));
    assert_eq!(u["status"], "active", "{u}");
    let back = sc.relogin(&member);
    let r = sc.get("/api/after-enable", Some(&back.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    // the sessions of before stay dead
    assert_error(
        &sc.get("/api/after-enable", Some(&member.access)),
        401,
        "TOKEN_REVOKED",
    );

    // an admin cannot disable or delete themselves
    let r = sc.patch(
        &user_path(&admin.id),
        Some(&admin.access),
        &json!({"status": "disabled"}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    let r = sc.delete(&user_path(&admin.id), Some(&admin.access));
    assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(get_user(&sc, &admin.access, &admin.id)["status"], "active");
    assert_status(&sc.login(&admin.email, &admin.password), 200);

    // only active and disabled can be set
    for bad in [json!("bogus"), json!("locked"), json!(""), json!(5)] {
        let r = sc.patch(
            &user_path(&member.id),
            Some(&admin.access),
            &json!({"status": bad}),
        );
        assert_error(&r, 400, "INVALID_REQUEST");
    }
    assert_eq!(get_user(&sc, &admin.access, &member.id)["status"], "active");
}

#[test]
fn deleting_a_user_revokes_its_token_at_once_and_the_user_is_gone() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let member = sc.new_user();
    for _ in 0..2 {
        let r = sc.get("/api/warm", Some(&member.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }

    let r = sc.delete(&user_path(&member.id), Some(&admin.access));
    assert_status(&r, 200);

    let r = sc.get("/api/after-delete", Some(&member.access));
    assert_error_any(&r, 401, &["TOKEN_REVOKED", "INVALID_TOKEN"]);
    let r = sc.get("/auth/me", Some(&member.access));
    assert_error_any(&r, 401, &["TOKEN_REVOKED", "INVALID_TOKEN"]);
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": member.refresh}),
    );
    assert_error_any(&r, 401, REFRESH_DEAD);

    assert_error(
        &sc.get(&user_path(&member.id), Some(&admin.access)),
        404,
        "NOT_FOUND",
    );
    assert_error(
        &sc.delete(&user_path(&member.id), Some(&admin.access)),
        404,
        "NOT_FOUND",
    );
    assert_error(
        &sc.patch(
            &user_path(&member.id),
            Some(&admin.access),
            &json!({"firstName": "Ghost"}),
        ),
        404,
        "NOT_FOUND",
    );
    assert_error(
        &sc.login(&member.email, &member.password),
        401,
        "INVALID_CREDENTIALS",
    );
    let p = list_users(&sc, &admin.access, &format!("q={}", member.email));
    assert_eq!(p["totalItems"], 0, "{p}");

    // the email is free again, for a new user
    let again = sc.new_user_with(Some(&member.email), json!({}), None);
    assert_ne!(again.id, member.id);
}

// --------------------------------------------------------------------------
// tenancy
// --------------------------------------------------------------------------

#[test]
fn admin_routes_never_reach_users_of_another_tenant() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let out = sc.cli(&["tenant", "create", "acme"], None);
    assert!(out.success(), "{}", out.describe());
    let acme_id = find_uuids(&out.stdout)
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("tenant create printed no id: {}", out.describe()));
    let foreign = sc.new_user_with(None, json!({"firstName": "Acme"}), Some("acme"));
    assert_eq!(foreign.tenant_id, acme_id);
    let local = sc.new_user();

    let foreign_path = user_path(&foreign.id);
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", foreign_path.clone(), None),
        (
            "PATCH",
            foreign_path.clone(),
            Some(json!({"firstName": "Hacked", "status": "disabled", "roles": ["admin"]})),
        ),
        ("POST", format!("{foreign_path}/unlock"), Some(json!({}))),
        ("POST", format!("{foreign_path}/mfa/reset"), Some(json!({}))),
        ("DELETE", foreign_path.clone(), None),
    ];
    for (method, path, body) in &attempts {
        let r = call(&sc, method, path, Some(&admin.access), body.as_ref());
        assert_error(&r, 404, "NOT_FOUND");
    }
    // garbage and unknown ids
    for id in [
        "not-a-uuid".to_string(),
        uuid::Uuid::new_v4().to_string(),
        "00000000-0000-0000-0000-000000000000".to_string(),
    ] {
        let path = user_path(&id);
        for (method, path, body) in [
            ("GET", path.clone(), None),
            ("PATCH", path.clone(), Some(json!({"firstName": "X"}))),
            ("DELETE", path.clone(), None),
            ("POST", format!("{path}/unlock"), Some(json!({}))),
            ("POST", format!("{path}/mfa/reset"), Some(json!({}))),
        ] {
            let r = call(&sc, method, &path, Some(&admin.access), body.as_ref());
            assert_error(&r, 404, "NOT_FOUND");
        }
    }

    // the list shows only the caller's tenant
    let p = list_users(&sc, &admin.access, &format!("q={}", foreign.email));
    assert_eq!(p["totalItems"], 0, "{p}");
    let p = list_users(&sc, &admin.access, "limit=100");
    let ids = ids_of(&p);
    assert!(!ids.contains(&foreign.id), "{p}");
    assert_eq!(p["totalItems"], 2, "{p}");
    assert!(ids.contains(&local.id) && ids.contains(&admin.id), "{p}");
    // the audit log too
    let r = sc.get(
        &format!("/auth/admin/audit?userId={}", foreign.id),
        Some(&admin.access),
    );
    let b = assert_status(&r, 200);
    assert_eq!(b["items"], json!([]), "another tenant's events: {b}");

    // the foreign user is untouched
    let r = sc.login_in(&foreign.email, &foreign.password, Some("acme"));
    let b = assert_status(&r, 200);
    assert_eq!(b["user"]["id"], foreign.id.as_str());
    assert_eq!(b["user"]["firstName"], "Acme");
    assert_eq!(b["user"]["status"], "active");
    assert_eq!(b["user"]["roles"], json!(["member"]));
    let r = sc.get("/api/acme", Some(&foreign.access));
    assert_eq!(r.status, 200, "{}", r.describe());

    // a header naming another tenant on an admin call
    let r = sc
        .req("GET", "/auth/admin/users")
        .bearer(&admin.access)
        .tenant("acme")
        .send();
    assert_error(&r, 403, "TENANT_MISMATCH");
    let r = sc
        .req("GET", "/auth/admin/users")
        .bearer(&admin.access)
        .tenant("no-such-tenant")
        .send();
    assert_error(&r, 403, "TENANT_MISMATCH");
    let r = sc
        .req("GET", "/auth/admin/users")
        .bearer(&admin.access)
        .tenant("default")
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());

    // emails are unique per tenant only: the acme user's email is free here
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": foreign.email, "password": strong_password()}),
    );
    let twin = assert_status(&r, 201);
    assert_ne!(twin["id"], foreign.id.as_str());
    assert_eq!(twin["tenantId"], admin.tenant_id.as_str());

    // an admin of acme sees acme only
    let acme_admin_email = unique_email("acme-admin");
    let acme_admin_password = strong_password();
    let out = sc.cli(
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            &acme_admin_email,
            "--role",
            "admin",
        ],
        Some(&format!("{acme_admin_password}\n")),
    );
    assert!(out.success(), "{}", out.describe());
    let r = sc.login_in(&acme_admin_email, &acme_admin_password, Some("acme"));
    let acme_admin = assert_status(&r, 200)["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let p = list_users(&sc, &acme_admin, "limit=100");
    assert_eq!(p["totalItems"], 2, "{p}");
    assert!(ids_of(&p).contains(&foreign.id), "{p}");
    assert_error(
        &sc.get(&user_path(&local.id), Some(&acme_admin)),
        404,
        "NOT_FOUND",
    );
    assert_error(
        &sc.delete(&user_path(&admin.id), Some(&acme_admin)),
        404,
        "NOT_FOUND",
    );
    assert_status(&sc.login(&admin.email, &admin.password), 200);

    // roles belong to a tenant: acme has its own built-ins and custom roles
    let acme_roles = roles(&sc, &acme_admin);
    assert!(
        role(&acme_roles, "admin").is_some() && role(&acme_roles, "member").is_some(),
        "{acme_roles:?}"
    );
    let r = sc.post(
        "/auth/admin/roles",
        Some(&acme_admin),
        &json!({"name": "acme-only", "permissions": ["reports:read"]}),
    );
    assert_status(&r, 201);
    assert!(role(&roles(&sc, &admin.access), "acme-only").is_none());
    let r = sc.patch(
        "/auth/admin/roles/acme-only",
        Some(&admin.access),
        &json!({"permissions": ["*"]}),
    );
    assert_error(&r, 404, "NOT_FOUND");
    let r = sc.delete("/auth/admin/roles/acme-only", Some(&admin.access));
    assert_error(&r, 404, "NOT_FOUND");
    let r = sc.patch(
        &user_path(&local.id),
        Some(&admin.access),
        &json!({"roles": ["member", "acme-only"]}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(
        role(&roles(&sc, &acme_admin), "acme-only").map(|r| r["permissions"].clone()),
        Some(json!(["reports:read"]))
    );
}

// --------------------------------------------------------------------------
// lockout, MFA reset
// --------------------------------------------------------------------------

#[test]
fn a_locked_account_shows_as_locked_and_an_admin_unlock_lets_the_user_log_in_again() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3").set(
        "lockout",
        "lockout_seconds",
        "600",
    ));
    let admin = sc.admin_user();
    let member = sc.new_user();
    let wrong = format!("{}-wrong", member.password);
    for _ in 0..2 {
        assert_error(&sc.login(&member.email, &wrong), 401, "INVALID_CREDENTIALS");
    }
    // the failure that reaches max_failures may answer 401 or 423
    let r = sc.login(&member.email, &wrong);
    assert!([401, 423].contains(&r.status), "{}", r.describe());
    assert_error_any(&r, r.status, &["INVALID_CREDENTIALS", "ACCOUNT_LOCKED"]);
    let r = sc.login(&member.email, &member.password);
    assert_error(&r, 423, "ACCOUNT_LOCKED");
    let secs = retry_after_secs(&r);
    assert!(secs > 0 && secs <= 600, "Retry-After {secs}");

    let u = get_user(&sc, &admin.access, &member.id);
    assert_eq!(u["status"], "locked", "{u}");
    let p = list_users(&sc, &admin.access, "status=locked");
    assert_eq!(ids_of(&p), vec![member.id.clone()], "{p}");
    assert_eq!(p["items"][0]["status"], "locked", "{p}");
    let p = list_users(&sc, &admin.access, "status=active");
    assert!(!ids_of(&p).contains(&member.id), "{p}");

    let r = sc.post(
        &format!("{}/unlock", user_path(&member.id)),
        Some(&admin.access),
        &json!({}),
    );
    let u = assert_status(&r, 200);
    check_user_object(&u);
    assert_eq!(u["id"], member.id.as_str());
    assert_eq!(u["status"], "active", "{u}");
    let p = list_users(&sc, &admin.access, "status=locked");
    assert_eq!(p["totalItems"], 0, "{p}");

    // the unlock also forgot the failures: one more wrong password does not relock
    assert_error(&sc.login(&member.email, &wrong), 401, "INVALID_CREDENTIALS");
    let r = sc.login(&member.email, &member.password);
    check_token_response(&assert_status(&r, 200));
}

#[test]
fn mfa_reset_turns_mfa_off_and_login_returns_tokens_directly() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let member = sc.new_user();

    let r = sc.post("/auth/mfa/enable", Some(&member.access), &json!({}));
    let enrol = assert_status(&r, 200);
    let secret = enrol["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret: {}", r.describe()))
        .to_string();
    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&member.access),
        &json!({"code": totp_now(&secret)}),
    );
    let b = assert_status(&r, 200);
    assert_eq!(b["success"], true, "{}", r.describe());

    let r = sc.login(&member.email, &member.password);
    let b = assert_status(&r, 200);
    assert_eq!(b["mfaRequired"], true, "{}", r.describe());
    assert!(
        b["mfaToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("mfa_")),
        "{}",
        r.describe()
    );
    assert!(b.get("accessToken").is_none(), "{}", r.describe());
    assert_eq!(get_user(&sc, &admin.access, &member.id)["mfaEnabled"], true);

    let r = sc.post(
        &format!("{}/mfa/reset", user_path(&member.id)),
        Some(&admin.access),
        &json!({}),
    );
    let u = assert_status(&r, 200);
    check_user_object(&u);
    assert_eq!(u["id"], member.id.as_str());
    assert_eq!(u["mfaEnabled"], false, "{u}");
    assert_eq!(
        get_user(&sc, &admin.access, &member.id)["mfaEnabled"],
        false
    );

    let r = sc.login(&member.email, &member.password);
    let b = assert_status(&r, 200);
    check_token_response(&b);
    assert_eq!(b["user"]["mfaEnabled"], false);
    // the user can enrol again
    let r = sc.post("/auth/mfa/enable", b["accessToken"].as_str(), &json!({}));
    assert_status(&r, 200);
}

// --------------------------------------------------------------------------
// roles
// --------------------------------------------------------------------------

#[test]
fn roles_are_listed_created_assigned_patched_and_deleted_and_built_ins_are_protected() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let member = sc.new_user();

    let items = roles(&sc, &admin.access);
    let a = role(&items, "admin").unwrap_or_else(|| panic!("no admin role: {items:?}"));
    assert_eq!(a["permissions"], json!(["*"]), "{a}");
    assert_eq!(a["builtIn"], true, "{a}");
    let m = role(&items, "member").unwrap_or_else(|| panic!("no member role: {items:?}"));
    assert_eq!(
        sorted(str_list(&m["permissions"])),
        sorted(MEMBER_PERMISSIONS.iter().map(|s| s.to_string()).collect()),
        "{m}"
    );
    assert_eq!(m["builtIn"], true, "{m}");

    let r = sc.post(
        "/auth/admin/roles",
        Some(&admin.access),
        &json!({"name": "reporter", "permissions": ["reports:read"]}),
    );
    let created = assert_status(&r, 201);
    assert_eq!(created["name"], "reporter", "{created}");
    assert_eq!(created["permissions"], json!(["reports:read"]), "{created}");
    assert_eq!(created["builtIn"], false, "{created}");
    let items = roles(&sc, &admin.access);
    assert_eq!(
        role(&items, "reporter").map(|r| r["builtIn"].clone()),
        Some(json!(false)),
        "{items:?}"
    );

    // assigned to a member, it opens /reports/** with the next token
    assert_error(
        &sc.get("/reports/x", Some(&member.access)),
        403,
        "FORBIDDEN",
    );
    let u = patch_user(
        &sc,
        &admin.access,
        &member.id,
        json!({"roles": ["member", "reporter"]}),
    );
    assert!(
        str_list(&u["roles"]).contains(&"reporter".to_string()),
        "{u}"
    );
    assert!(
        str_list(&u["permissions"]).contains(&"reports:read".to_string()),
        "{u}"
    );
    let fresh = sc.relogin(&member);
    let r = sc.get("/reports/x", Some(&fresh.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_error(
        &sc.req("POST", "/payments/x").bearer(&fresh.access).send(),
        403,
        "FORBIDDEN",
    );

    // invalid permissions and names, duplicates
    for perms in [
        json!(["bad perm"]),
        json!(["x:"]),
        json!([":read"]),
        json!([""]),
        json!("reports:read"),
    ] {
        let r = sc.post(
            "/auth/admin/roles",
            Some(&admin.access),
            &json!({"name": format!("r{}", rand_hex(6)), "permissions": perms}),
        );
        assert_error(&r, 400, "INVALID_REQUEST");
    }
    for name in ["Bad Name", ""] {
        let r = sc.post(
            "/auth/admin/roles",
            Some(&admin.access),
            &json!({"name": name, "permissions": ["reports:read"]}),
        );
        assert_error(&r, 400, "INVALID_REQUEST");
    }
    for name in ["reporter", "member", "admin"] {
        let r = sc.post(
            "/auth/admin/roles",
            Some(&admin.access),
            &json!({"name": name, "permissions": ["x:y"]}),
        );
        assert_error(&r, 400, "INVALID_REQUEST");
    }
    let r = sc.patch(
        "/auth/admin/roles/reporter",
        Some(&admin.access),
        &json!({"permissions": ["bad perm"]}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");

    // patch the custom role: the next token has the new permissions
    let r = sc.patch(
        "/auth/admin/roles/reporter",
        Some(&admin.access),
        &json!({"permissions": ["reports:read", "payments:write"]}),
    );
    let patched = assert_status(&r, 200);
    assert_eq!(
        sorted(str_list(&patched["permissions"])),
        vec!["payments:write".to_string(), "reports:read".to_string()],
        "{patched}"
    );
    let fresh = sc.relogin(&member);
    let r = sc.req("POST", "/payments/x").bearer(&fresh.access).send();
    assert_eq!(r.status, 200, "{}", r.describe());

    // built-ins are protected
    let r = sc.patch(
        "/auth/admin/roles/admin",
        Some(&admin.access),
        &json!({"permissions": ["reports:read"]}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    for name in ["admin", "member"] {
        let r = sc.delete(&format!("/auth/admin/roles/{name}"), Some(&admin.access));
        assert_error(&r, 400, "INVALID_REQUEST");
    }
    let r = sc.delete("/auth/admin/roles/no-such-role", Some(&admin.access));
    assert_error(&r, 404, "NOT_FOUND");
    let r = sc.patch(
        "/auth/admin/roles/no-such-role",
        Some(&admin.access),
        &json!({"permissions": ["x:y"]}),
    );
    assert_error(&r, 404, "NOT_FOUND");
    let items = roles(&sc, &admin.access);
    assert_eq!(
        role(&items, "admin").map(|r| r["permissions"].clone()),
        Some(json!(["*"])),
        "{items:?}"
    );
    assert!(role(&items, "member").is_some(), "{items:?}");
    // the admin still is one
    let r = sc.get("/admin-area/x", Some(&sc.admin_user().access));
    assert_eq!(r.status, 200, "{}", r.describe());

    // delete the custom role: gone from the list and from its holders
    let r = sc.delete("/auth/admin/roles/reporter", Some(&admin.access));
    assert_status(&r, 200);
    let items = roles(&sc, &admin.access);
    assert!(role(&items, "reporter").is_none(), "{items:?}");
    assert!(role(&items, "admin").is_some() && role(&items, "member").is_some());
    let fresh = sc.relogin(&member);
    assert!(
        !str_list(&fresh.user["roles"]).contains(&"reporter".to_string()),
        "{}",
        fresh.user
    );
    assert_error(&sc.get("/reports/x", Some(&fresh.access)), 403, "FORBIDDEN");
    let r = sc.delete("/auth/admin/roles/reporter", Some(&admin.access));
    assert_error(&r, 404, "NOT_FOUND");
}

#[test]
fn a_custom_role_grants_exactly_the_admin_permissions_it_names_wildcards_included() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let staff = sc.new_user();
    let other = sc.new_user();
    for (name, perms) in [
        ("support", json!(["user:read"])),
        ("usermgr", json!(["user:*"])),
        ("auditor", json!(["audit:read"])),
    ] {
        let r = sc.post(
            "/auth/admin/roles",
            Some(&admin.access),
            &json!({"name": name, "permissions": perms}),
        );
        assert_status(&r, 201);
    }
    let other_path = user_path(&other.id);
    // (method, path, body, needed permission)
    let routes: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("GET", "/auth/admin/users".into(), None, "user:read"),
        ("GET", other_path.clone(), None, "user:read"),
        (
            "PATCH",
            other_path.clone(),
            Some(json!({"firstName": "Touched"})),
            "user:write",
        ),
        (
            "POST",
            format!("{other_path}/unlock"),
            Some(json!({})),
            "user:write",
        ),
        (
            "POST",
            format!("{other_path}/mfa/reset"),
            Some(json!({})),
            "user:write",
        ),
        ("GET", "/auth/admin/roles".into(), None, "role:read"),
        ("GET", "/auth/admin/audit".into(), None, "audit:read"),
    ];
    for (role_name, granted) in [
        ("support", &["user:read"][..]),
        ("usermgr", &["user:read", "user:write"][..]),
        ("auditor", &["audit:read"][..]),
    ] {
        patch_user(
            &sc,
            &admin.access,
            &staff.id,
            json!({"roles": ["member", role_name]}),
        );
        let token = sc.relogin(&staff).access;
        for (method, path, body, needed) in &routes {
            let r = call(&sc, method, path, Some(&token), body.as_ref());
            if granted.contains(needed) {
                assert_eq!(
                    r.status,
                    200,
                    "role {role_name} grants {needed}: {}",
                    r.describe()
                );
            } else {
                assert_error(&r, 403, "FORBIDDEN");
            }
        }
        // creating users needs user:write
        let r = sc.post(
            "/auth/admin/users",
            Some(&token),
            &json!({"email": unique_email("by-staff"), "password": strong_password()}),
        );
        if granted.contains(&"user:write") {
            assert_status(&r, 201);
        } else {
            assert_error(&r, 403, "FORBIDDEN");
        }
    }
}

#[test]
fn admin_routes_answer_405_for_a_wrong_method_and_404_for_an_unknown_path() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let id = admin.id.clone();
    for (method, path) in [
        ("PUT", "/auth/admin/users".to_string()),
        ("DELETE", "/auth/admin/users".to_string()),
        ("POST", user_path(&id)),
        ("GET", format!("{}/unlock", user_path(&id))),
        ("DELETE", format!("{}/mfa/reset", user_path(&id))),
        ("PUT", "/auth/admin/roles".to_string()),
        ("GET", "/auth/admin/roles/member".to_string()),
        ("POST", "/auth/admin/audit".to_string()),
    ] {
        let r = call(&sc, method, &path, Some(&admin.access), Some(&json!({})));
        assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    }
    for path in [
        "/auth/admin/nope".to_string(),
        "/auth/admin".to_string(),
        format!("{}/nope", user_path(&id)),
        "/auth/admin/roles/member/extra".to_string(),
    ] {
        let r = sc.get(&path, Some(&admin.access));
        assert_error(&r, 404, "NOT_FOUND");
    }
    assert!(
        sc.echo.with_prefix("/auth").is_empty(),
        "an admin request reached the upstream: {:?}",
        sc.echo.records()
    );
}

// --------------------------------------------------------------------------
// audit
// --------------------------------------------------------------------------

#[test]
fn audit_log_lists_login_events_filters_by_user_and_holds_no_secrets() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let member = sc.new_user();
    let wrong = format!("{}-wrong", member.password);
    let ua = format!("portcullis-it-audit/{}", rand_hex(6));

    let r = sc
        .req("POST", "/auth/login")
        .header("User-Agent", &ua)
        .json(&json!({"email": member.email, "password": wrong}))
        .send();
    assert_error(&r, 401, "INVALID_CREDENTIALS");
    let r = sc
        .req("POST", "/auth/login")
        .header("User-Agent", &ua)
        .json(&json!({"email": member.email, "password": member.password}))
        .send();
    let login = assert_status(&r, 200);
    let access = login["accessToken"].as_str().unwrap().to_string();
    let refresh = login["refreshToken"].as_str().unwrap().to_string();

    let r = sc.get("/auth/admin/audit?limit=50", Some(&admin.access));
    let all = assert_status(&r, 200);
    let items = all["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items[]: {}", r.describe()))
        .clone();
    assert!(!items.is_empty() && items.len() <= 50, "{}", r.describe());
    for e in &items {
        for f in [
            "id",
            "at",
            "type",
            "userId",
            "ip",
            "userAgent",
            "outcome",
            "details",
        ] {
            assert!(e.get(f).is_some(), "audit event lacks {f:?}: {e}");
        }
        assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "id: {e}");
        parse_time(e["at"].as_str().unwrap_or_default());
        assert!(
            e["type"].as_str().is_some_and(|s| !s.is_empty()),
            "type: {e}"
        );
        assert!(
            e["outcome"].as_str().is_some_and(|s| !s.is_empty()),
            "outcome: {e}"
        );
    }
    // the two logins of the member, with the client's address and user agent
    let logins: Vec<&Value> = items
        .iter()
        .filter(|e| {
            e["userId"] == member.id.as_str()
                && e["type"].as_str().unwrap_or_default().contains("login")
                && e["userAgent"] == ua.as_str()
        })
        .collect();
    assert!(
        logins.iter().any(|e| e["outcome"] == "success"),
        "no successful login event of the member: {items:?}"
    );
    assert!(
        logins.iter().any(|e| e["outcome"] != "success"),
        "no failed login event of the member: {items:?}"
    );
    for e in &logins {
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
    }

    // filtered by user
    let by_user = |sc: &Sidecar| -> Vec<Value> {
        let r = sc.get(
            &format!("/auth/admin/audit?limit=50&userId={}", member.id),
            Some(&admin.access),
        );
        let b = assert_status(&r, 200);
        b["items"].as_array().cloned().unwrap_or_default()
    };
    let mine = by_user(&sc);
    assert!(
        mine.iter().all(|e| e["userId"] == member.id.as_str()),
        "the userId filter lets other events through: {mine:?}"
    );
    assert!(mine.len() >= 2, "{mine:?}");
    assert!(
        mine.len() < items.len(),
        "the filter did not filter: {mine:?}"
    );
    // an admin action on the member is audited too
    patch_user(
        &sc,
        &admin.access,
        &member.id,
        json!({"firstName": "Audited"}),
    );
    let after = by_user(&sc);
    assert!(
        after.len() > mine.len(),
        "an admin change of the member left no audit event: {after:?}"
    );

    // no secrets anywhere
    let r = sc.get("/auth/admin/audit?limit=100", Some(&admin.access));
    let text = assert_status(&r, 200).to_string();
    for (what, secret) in [
        ("the password", member.password.as_str()),
        ("the wrong password", wrong.as_str()),
        ("the admin password", admin.password.as_str()),
        ("an access token", access.as_str()),
        ("the register access token", member.access.as_str()),
        ("the admin access token", admin.access.as_str()),
        ("a refresh token", refresh.as_str()),
        ("the register refresh token", member.refresh.as_str()),
    ] {
        assert!(!text.contains(secret), "the audit log holds {what}: {text}");
    }

    let r = sc.get("/auth/admin/audit?limit=1", Some(&admin.access));
    let b = assert_status(&r, 200);
    assert_eq!(b["items"].as_array().map(Vec::len), Some(1), "{b}");
    for query in ["limit=0", "limit=abc"] {
        let r = sc.get(&format!("/auth/admin/audit?{query}"), Some(&admin.access));
        assert_error(&r, 400, "INVALID_REQUEST");
    }
}

#[test]
fn security_events_of_a_user_all_reach_the_tenant_audit_log() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3").set(
        "lockout",
        "lockout_seconds",
        "600",
    ));
    let admin = sc.admin_user();
    let member = sc.new_user();
    let events = || -> Vec<Value> {
        let r = sc.get(
            &format!("/auth/admin/audit?limit=100&userId={}", member.id),
            Some(&admin.access),
        );
        let b = assert_status(&r, 200);
        b["items"].as_array().cloned().unwrap_or_default()
    };

    // password changed
    let before = events().len();
    let new_password = strong_password();
    let r = sc.post(
        "/auth/change-password",
        Some(&member.access),
        &json!({"currentPassword": member.password, "newPassword": new_password}),
    );
    assert_status(&r, 200);
    assert!(
        events().len() > before,
        "a password change left no audit event: {:?}",
        events()
    );

    // MFA turned on
    let r = sc.post("/auth/mfa/enable", Some(&member.access), &json!({}));
    let secret = assert_status(&r, 200)["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let before = events().len();
    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&member.access),
        &json!({"code": totp_now(&secret)}),
    );
    assert_status(&r, 200);
    assert!(
        events().len() > before,
        "turning MFA on left no audit event: {:?}",
        events()
    );

    // lockout
    for _ in 0..3 {
        let _ = sc.login(&member.email, "Wrong-password-123!");
    }
    assert_error(
        &sc.login(&member.email, &new_password),
        423,
        "ACCOUNT_LOCKED",
    );
    let after = events();
    assert!(
        after.iter().any(|e| {
            let t = format!("{} {}", e["type"], e["outcome"]).to_ascii_lowercase();
            t.contains("lock")
        }),
        "the lockout left no audit event: {after:?}"
    );

    // refresh token reuse detected
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": member.refresh}),
    );
    assert_status(&r, 200);
    let before = events().len();
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": member.refresh}),
    );
    assert_error(&r, 401, "REFRESH_TOKEN_REUSED");
    let after = events();
    assert!(
        after.len() > before,
        "refresh token reuse is not in the tenant's audit log ({} events before, {} after): {after:?}",
        before,
        after.len()
    );
}

#[test]
fn an_admin_can_grant_only_roles_within_their_own_permissions() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let manager = sc.new_user();
    let other = sc.new_user();
    let r = sc.post(
        "/auth/admin/roles",
        Some(&admin.access),
        &json!({"name": "usermgr", "permissions": ["user:*"]}),
    );
    assert_status(&r, 201);
    patch_user(
        &sc,
        &admin.access,
        &manager.id,
        json!({"roles": ["member", "usermgr"]}),
    );
    let token = sc.relogin(&manager).access;
    // neither themselves nor anyone else can be made an admin by a user manager
    for target in [&manager.id, &other.id] {
        let r = call(
            &sc,
            "PATCH",
            &user_path(target),
            Some(&token),
            Some(&json!({"roles": ["member", "admin"]})),
        );
        assert_error(&r, 403, "FORBIDDEN");
    }
    let r = sc.post(
        "/auth/admin/users",
        Some(&token),
        &json!({"email": unique_email("escalate"), "password": strong_password(), "roles": ["admin"]}),
    );
    assert_error(&r, 403, "FORBIDDEN");
    // roles within their permissions are fine
    let r = call(
        &sc,
        "PATCH",
        &user_path(&other.id),
        Some(&token),
        Some(&json!({"roles": ["member", "usermgr"]})),
    );
    assert_status(&r, 200);
    let me = get_user(&sc, &admin.access, &manager.id);
    assert_eq!(sorted(str_list(&me["roles"])), vec!["member", "usermgr"]);
}
