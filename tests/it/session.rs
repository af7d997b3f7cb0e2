//! Profile, refresh rotation, logout and password change (SPEC §6, §14).

use serde_json::json;

use crate::harness::*;

const REFRESH_DEAD: &[&str] = &["INVALID_TOKEN", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED"];

#[test]
fn get_me_returns_the_user_of_the_bearer_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user_with(
        None,
        json!({"firstName": "Ada", "familyName": "Lovelace"}),
        None,
    );
    let r = sc.get("/auth/me", Some(&user.access));
    let me = assert_status(&r, 200);
    check_user_object(&me);
    assert_eq!(me["id"], user.id.as_str());
    assert_eq!(me["email"], user.email.as_str());
    assert_eq!(me["tenantId"], user.tenant_id.as_str());
    assert_eq!(me["firstName"], "Ada");
    assert_eq!(me["familyName"], "Lovelace");
    assert_eq!(me["roles"], json!(["member"]));
}

#[test]
fn get_me_without_credential_is_401_unauthenticated_and_with_garbage_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.get("/auth/me", None);
    assert_error(&r, 401, "UNAUTHENTICATED");
    assert_error(&sc.get("/auth/me", Some("not.a.jwt")), 401, "INVALID_TOKEN");
    assert_error(&sc.get("/auth/me", Some("garbage")), 401, "INVALID_TOKEN");
    let r = sc
        .req("GET", "/auth/me")
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send();
    assert!(
        r.status == 401,
        "a Basic credential is not a Bearer token: {}",
        r.describe()
    );
    assert_error_shape(&r, 401);
}

#[test]
fn patch_me_changes_the_names() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user_with(
        None,
        json!({"firstName": "Jane", "familyName": "Doe"}),
        None,
    );
    let r = sc.patch(
        "/auth/me",
        Some(&user.access),
        &json!({"firstName": "Janet", "familyName": "Smith", "name": "Janet Smith"}),
    );
    let body = assert_status(&r, 200);
    check_user_object(&body);
    assert_eq!(body["firstName"], "Janet");
    assert_eq!(body["familyName"], "Smith");
    assert_eq!(body["name"], "Janet Smith");
    assert_eq!(body["id"], user.id.as_str());
    let created = parse_time(body["createdAt"].as_str().unwrap());
    let updated = parse_time(body["updatedAt"].as_str().unwrap());
    assert!(updated >= created, "updatedAt before createdAt: {body}");
    assert!(
        updated >= parse_time(user.user["updatedAt"].as_str().unwrap()),
        "updatedAt went backwards: {body}"
    );
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["firstName"], "Janet");
    assert_eq!(me["familyName"], "Smith");
    assert_eq!(me["name"], "Janet Smith");
}

#[test]
fn patch_me_to_a_taken_email_is_409_email_exists_and_changes_nothing() {
    let sc = Sidecar::start(Opts::new());
    let first = sc.new_user();
    let second = sc.new_user_with(None, json!({"firstName": "Bob"}), None);
    let r = sc.patch(
        "/auth/me",
        Some(&second.access),
        &json!({"email": first.email.to_uppercase(), "firstName": "Mallory"}),
    );
    assert_error(&r, 409, "EMAIL_EXISTS");
    let me = assert_status(&sc.get("/auth/me", Some(&second.access)), 200);
    assert_eq!(me["email"], second.email.as_str());
    assert_eq!(me["firstName"], "Bob", "a refused PATCH changed the user");
    // both can still log in with their own email
    assert_status(&sc.login(&first.email, &first.password), 200);
    let r = sc.login(&second.email, &second.password);
    assert_eq!(assert_status(&r, 200)["user"]["id"], second.id.as_str());
}

#[test]
fn patch_me_changes_the_email_lower_cased() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let new_email = unique_email("moved");
    let r = sc.patch(
        "/auth/me",
        Some(&user.access),
        &json!({"email": new_email.to_uppercase()}),
    );
    assert_eq!(assert_status(&r, 200)["email"], new_email.as_str());
    let r = sc.login(&new_email, &user.password);
    assert_eq!(assert_status(&r, 200)["user"]["id"], user.id.as_str());
    assert_error(
        &sc.login(&user.email, &user.password),
        401,
        "INVALID_CREDENTIALS",
    );
}

#[test]
fn patch_me_ignores_privileged_fields() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.patch(
        "/auth/me",
        Some(&user.access),
        &json!({
            "roles": ["admin"],
            "permissions": ["*"],
            "status": "disabled",
            "tenantId": "6f1c1a52-5c57-4a8e-9a8e-0b8f0d6c2f11",
            "emailVerified": true,
            "firstName": "Eve",
        }),
    );
    let body = assert_status(&r, 200);
    assert_eq!(body["firstName"], "Eve");
    assert_eq!(body["roles"], json!(["member"]), "{body}");
    assert_eq!(body["status"], "active", "{body}");
    assert_eq!(body["emailVerified"], false, "{body}");
    assert_eq!(body["tenantId"], user.tenant_id.as_str(), "{body}");
    // a fresh session has no new privilege either
    let again = sc.relogin(&user);
    assert_eq!(again.user["roles"], json!(["member"]));
    assert_error(
        &sc.get("/admin-area/x", Some(&again.access)),
        403,
        "FORBIDDEN",
    );
    let r = sc.get("/api/after-patch", Some(&again.access));
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn refresh_rotates_the_refresh_token_and_the_new_access_token_works() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    let body = assert_status(&r, 200);
    check_token_response(&body);
    let new_refresh = body["refreshToken"].as_str().unwrap();
    let new_access = body["accessToken"].as_str().unwrap();
    assert_ne!(new_refresh, user.refresh, "refresh must rotate");
    assert_eq!(body["user"]["id"], user.id.as_str());
    // the same session continues
    assert_eq!(
        jwt_claims(new_access)["sid"],
        jwt_claims(&user.access)["sid"]
    );
    let r = sc.get("/api/after-refresh", Some(new_access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["headers"]["x-auth-user-id"],
        user.id.as_str(),
        "{}",
        r.describe()
    );
    // and the rotated one can rotate again
    let r = sc.post("/auth/refresh", None, &json!({"refreshToken": new_refresh}));
    let third = assert_status(&r, 200);
    assert_ne!(third["refreshToken"], new_refresh);
}

#[test]
fn refresh_reuse_revokes_the_session() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let other = sc.new_user();
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    let body = assert_status(&r, 200);
    let new_refresh = body["refreshToken"].as_str().unwrap().to_string();
    let new_access = body["accessToken"].as_str().unwrap().to_string();
    // warm the credential cache
    assert_eq!(sc.get("/api/reuse-warm", Some(&new_access)).status, 200);

    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_error(&r, 401, "REFRESH_TOKEN_REUSED");

    // the whole rotation family is dead
    let r = sc.post("/auth/refresh", None, &json!({"refreshToken": new_refresh}));
    assert_error_any(&r, 401, REFRESH_DEAD);
    let path = format!("/api/reuse-after-{}", rand_hex(8));
    assert_error(&sc.get(&path, Some(&new_access)), 401, "TOKEN_REVOKED");
    assert_error(&sc.get(&path, Some(&user.access)), 401, "TOKEN_REVOKED");
    assert!(
        sc.echo.for_path(&path).is_empty(),
        "a revoked token reached the upstream"
    );
    assert_error(&sc.get("/auth/me", Some(&new_access)), 401, "TOKEN_REVOKED");
    // another user's session is untouched
    let r = sc.get(&path, Some(&other.access));
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn unknown_refresh_token_is_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": format!("rt_{}", "A".repeat(43))}),
    );
    assert_error(&r, 401, "INVALID_TOKEN");
    let r = sc.post("/auth/refresh", None, &json!({"refreshToken": "nonsense"}));
    assert_error(&r, 401, "INVALID_TOKEN");
    // an access token is not a refresh token
    let user = sc.new_user();
    let r = sc.post("/auth/refresh", None, &json!({"refreshToken": user.access}));
    assert_error(&r, 401, "INVALID_TOKEN");
}

#[test]
fn logout_revokes_the_session_at_once_on_the_proxy_path() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let other_session = sc.relogin(&user);
    // warm any credential cache first
    for _ in 0..2 {
        let r = sc.get("/api/before-logout", Some(&user.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let r = sc.post(
        "/auth/logout",
        Some(&user.access),
        &json!({"refreshToken": user.refresh}),
    );
    let body = assert_status(&r, 200);
    assert_eq!(
        body["message"],
        "Logged out successfully",
        "{}",
        r.describe()
    );

    assert_error(
        &sc.get("/api/after-logout", Some(&user.access)),
        401,
        "TOKEN_REVOKED",
    );
    assert!(
        sc.echo.for_path("/api/after-logout").is_empty(),
        "a revoked token reached the upstream"
    );
    assert_error(
        &sc.get("/auth/me", Some(&user.access)),
        401,
        "TOKEN_REVOKED",
    );
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_error_any(&r, 401, REFRESH_DEAD);
    // only that session: the user's other session still works
    let r = sc.get("/api/after-logout", Some(&other_session.access));
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn logout_without_a_refresh_token_in_the_body_still_kills_the_session() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.req("POST", "/auth/logout").bearer(&user.access).send();
    assert_status(&r, 200);
    assert_error(
        &sc.get("/api/after-logout", Some(&user.access)),
        401,
        "TOKEN_REVOKED",
    );
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_error_any(&r, 401, REFRESH_DEAD);
}

#[test]
fn logout_without_bearer_is_401_unauthenticated() {
    let sc = Sidecar::start(Opts::new());
    assert_error(
        &sc.post("/auth/logout", None, &json!({})),
        401,
        "UNAUTHENTICATED",
    );
    assert_error(
        &sc.post("/auth/logout-all", None, &json!({})),
        401,
        "UNAUTHENTICATED",
    );
    assert_error(
        &sc.post("/auth/logout", Some("x.y.z"), &json!({})),
        401,
        "INVALID_TOKEN",
    );
}

#[test]
fn logout_all_revokes_every_session_of_the_user_only() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let second = sc.relogin(&user);
    let other = sc.new_user();
    for t in [&user.access, &second.access, &other.access] {
        assert_eq!(sc.get("/api/warm", Some(t)).status, 200);
    }
    let r = sc.post("/auth/logout-all", Some(&user.access), &json!({}));
    assert_status(&r, 200);
    assert_error(
        &sc.get("/api/after-logout-all", Some(&user.access)),
        401,
        "TOKEN_REVOKED",
    );
    assert_error(
        &sc.get("/api/after-logout-all", Some(&second.access)),
        401,
        "TOKEN_REVOKED",
    );
    assert_eq!(
        sc.echo.for_path("/api/after-logout-all").len(),
        0,
        "a revoked token reached the upstream"
    );
    for rt in [&user.refresh, &second.refresh] {
        let r = sc.post("/auth/refresh", None, &json!({"refreshToken": rt}));
        assert_error_any(&r, 401, REFRESH_DEAD);
    }
    let r = sc.get("/api/after-logout-all", Some(&other.access));
    assert_eq!(
        r.status,
        200,
        "another user was logged out: {}",
        r.describe()
    );
    // the user can sign in again
    let again = sc.relogin(&user);
    assert_eq!(sc.get("/api/again", Some(&again.access)).status, 200);
}

#[test]
fn change_password_checks_the_current_one_and_revokes_the_other_sessions() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let other_session = sc.relogin(&user);
    assert_eq!(sc.get("/api/warm", Some(&other_session.access)).status, 200);
    let new = strong_password();

    let r = sc.post(
        "/auth/change-password",
        Some(&user.access),
        &json!({"currentPassword": format!("{}x", user.password), "newPassword": new}),
    );
    assert_error(&r, 401, "INVALID_CREDENTIALS");
    let r = sc.post(
        "/auth/change-password",
        Some(&user.access),
        &json!({"currentPassword": user.password, "newPassword": "short"}),
    );
    assert_error(&r, 400, "WEAK_PASSWORD");
    let r = sc.post(
        "/auth/change-password",
        Some(&user.access),
        &json!({"currentPassword": user.password, "newPassword": "password123"}),
    );
    assert_error(&r, 400, "WEAK_PASSWORD");
    // the refused attempts changed nothing
    assert_eq!(sc.get("/api/warm", Some(&other_session.access)).status, 200);

    let r = sc.post(
        "/auth/change-password",
        Some(&user.access),
        &json!({"currentPassword": user.password, "newPassword": new}),
    );
    assert_status(&r, 200);
    assert_error(
        &sc.login(&user.email, &user.password),
        401,
        "INVALID_CREDENTIALS",
    );
    assert_status(&sc.login(&user.email, &new), 200);
    // the session that changed the password stays signed in ...
    let r = sc.get("/api/after-password-change", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    // ... every other one is revoked
    assert_error(
        &sc.get("/api/after-password-change-2", Some(&other_session.access)),
        401,
        "TOKEN_REVOKED",
    );
    assert!(sc.echo.for_path("/api/after-password-change-2").is_empty());
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": other_session.refresh}),
    );
    assert_error_any(&r, 401, REFRESH_DEAD);
}
