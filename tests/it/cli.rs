//! The command line (SPEC §2, §4, §14): config check, migrate, tenants, users,
//! the bootstrap admin.

use serde_json::json;

use crate::harness::*;

#[test]
fn config_check_accepts_a_valid_file_and_masks_secrets() {
    let sc = Sidecar::new(Opts::new().set_str(
        "database",
        "url",
        "postgres://portcullis:hunter2@127.0.0.1:1/portcullis",
    ));
    let out = sc.cli(&["config", "check"], None);
    assert!(out.success(), "{}", out.describe());
    // the effective config is printed ...
    let listen = format!("127.0.0.1:{}", sc.proxy_port);
    assert!(
        out.stdout.contains(&listen),
        "effective config lacks proxy.listen: {}",
        out.describe()
    );
    assert!(
        out.stdout.contains(&sc.upstream),
        "effective config lacks upstream.address: {}",
        out.describe()
    );
    // ... with the secret masked
    assert!(
        !out.stdout.contains("hunter2"),
        "config check prints a secret: {}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("hunter2"),
        "config check prints a secret: {}",
        out.describe()
    );
}

#[test]
fn config_check_does_not_create_the_store() {
    let sc = Sidecar::new(Opts::new());
    let out = sc.cli(&["config", "check"], None);
    assert!(out.success(), "{}", out.describe());
    assert!(
        !sc.db_path.exists(),
        "config check touched the store: {}",
        sc.db_path.display()
    );
}

#[test]
fn config_check_rejects_an_unknown_key_naming_it_and_its_line() {
    let sc = Sidecar::new(Opts::new().set_str("proxy", "listn", "x"));
    let line_no = sc
        .config_text()
        .lines()
        .position(|l| l.starts_with("listn"))
        .expect("listn line")
        + 1;
    let out = sc.cli(&["config", "check"], None);
    assert!(
        !out.success(),
        "an unknown key was accepted: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("listn"),
        "the error does not name the key: {}",
        out.describe()
    );
    let mentions_line = [
        format!("line {line_no}"),
        format!(":{line_no}:"),
        format!("{line_no} |"),
        format!("line: {line_no}"),
    ]
    .iter()
    .any(|s| out.stderr.contains(s.as_str()));
    assert!(
        mentions_line,
        "the error does not give line {line_no}: {}",
        out.describe()
    );
    // serve refuses it too
    let sc2 = Sidecar::new(Opts::new().set_str("upstream", "adress", "127.0.0.1:1"));
    let out = sc2.cli(&["serve"], None);
    assert!(
        !out.success(),
        "serve started with an unknown key: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("adress") || out.stdout.contains("adress"),
        "serve does not name the unknown key: {}",
        out.describe()
    );
}

#[test]
fn config_check_rejects_an_unknown_section() {
    let sc = Sidecar::new(Opts::new().raw_toml("[proxxy]\nlisten = \"127.0.0.1:1\"\n"));
    let out = sc.cli(&["config", "check"], None);
    assert!(
        !out.success(),
        "an unknown section was accepted: {}",
        out.describe()
    );
    assert!(out.stderr.contains("proxxy"), "{}", out.describe());
}

#[test]
fn an_environment_variable_overrides_the_file() {
    let sc = Sidecar::new(Opts::new());
    let out = sc.cli_env(
        &["config", "check"],
        None,
        &[("PORTCULLIS_UPSTREAM__ADDRESS", "127.0.0.1:5999")],
    );
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stdout.contains("127.0.0.1:5999"),
        "the override is not in the effective config: {}",
        out.describe()
    );
    assert!(
        !out.stdout.contains(&sc.upstream),
        "the file's upstream.address is still printed: {}",
        out.describe()
    );
}

#[test]
fn migrate_creates_the_store() {
    let sc = Sidecar::new(Opts::new().db_path(
        &std::env::temp_dir().join(format!("portcullis-it-{}/nested/db.sqlite", rand_hex(10))),
    ));
    let out = sc.cli(&["migrate"], None);
    assert!(out.success(), "{}", out.describe());
    assert!(
        sc.db_path.exists(),
        "migrate did not create {}",
        sc.db_path.display()
    );
    // idempotent
    let out = sc.cli(&["migrate"], None);
    assert!(out.success(), "a second migrate failed: {}", out.describe());
    if let Some(dir) = sc.db_path.parent().and_then(|p| p.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_tenant_created_by_the_cli_is_used_by_the_running_sidecar() {
    let sc = Sidecar::start(Opts::new());
    let out = sc.cli(&["tenant", "create", "acme"], None);
    assert!(out.success(), "{}", out.describe());
    let ids = find_uuids(&out.stdout);
    assert!(
        !ids.is_empty(),
        "tenant create printed no id: {}",
        out.describe()
    );
    let acme_id = ids[0].clone();

    let list = sc.cli(&["tenant", "list"], None);
    assert!(list.success(), "{}", list.describe());
    assert!(
        list.stdout.contains("acme"),
        "tenant list lacks acme: {}",
        list.describe()
    );
    assert!(
        list.stdout.contains(&acme_id),
        "tenant list lacks its id: {}",
        list.describe()
    );
    assert!(
        list.stdout.contains("default"),
        "tenant list lacks the default tenant: {}",
        list.describe()
    );

    // the running sidecar knows it at once; one email, two tenants, two users
    let email = unique_email("both");
    let a = sc.new_user_with(Some(&email), json!({}), None);
    let b = sc.new_user_with(Some(&email), json!({}), Some("acme"));
    assert_ne!(a.id, b.id);
    assert_ne!(a.tenant_id, b.tenant_id);
    assert_eq!(b.tenant_id, acme_id);
    assert_eq!(jwt_claims(&b.access)["tid"], acme_id.as_str());

    // each tenant knows only its own user
    let r = sc.login(&email, &a.password);
    assert_eq!(assert_status(&r, 200)["user"]["id"], a.id.as_str());
    assert_error(&sc.login(&email, &b.password), 401, "INVALID_CREDENTIALS");
    let r = sc.login_in(&email, &b.password, Some(&acme_id));
    assert_eq!(assert_status(&r, 200)["user"]["id"], b.id.as_str());
    assert_error(
        &sc.login_in(&email, &a.password, Some("acme")),
        401,
        "INVALID_CREDENTIALS",
    );
    // unique inside a tenant still
    let r = sc.register_with(
        json!({"email": email.to_uppercase(), "password": strong_password()}),
        Some("acme"),
    );
    assert_error(&r, 409, "EMAIL_EXISTS");
    // the credential carries its tenant upstream
    let r = sc.get("/api/tenant-b", Some(&b.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["headers"]["x-auth-tenant-id"], acme_id.as_str());
    // a duplicate tenant name is refused
    let dup = sc.cli(&["tenant", "create", "acme"], None);
    assert!(
        !dup.success(),
        "a second tenant named acme was created: {}",
        dup.describe()
    );
}

#[test]
fn user_create_reads_the_password_from_stdin_and_grants_roles() {
    let sc = Sidecar::start(Opts::new());
    let email = unique_email("ops");
    let password = strong_password();
    let out = sc.cli(
        &[
            "user", "create", "--tenant", "default", "--email", &email, "--role", "admin",
        ],
        Some(&format!("{password}\n")),
    );
    assert!(out.success(), "{}", out.describe());
    assert!(
        !out.stdout.contains(&password) && !out.stderr.contains(&password),
        "the password was echoed: {}",
        out.describe()
    );
    let ids = find_uuids(&out.stdout);
    assert!(
        !ids.is_empty(),
        "user create printed no id: {}",
        out.describe()
    );

    let r = sc.login(&email, &password);
    let body = assert_status(&r, 200);
    check_token_response(&body);
    let user_id = body["user"]["id"].as_str().unwrap().to_string();
    assert!(
        ids.contains(&user_id),
        "printed ids {ids:?} do not include the user {user_id}"
    );
    assert!(
        str_list(&body["user"]["roles"]).contains(&"admin".to_string()),
        "{}",
        r.describe()
    );
    let access = body["accessToken"].as_str().unwrap();
    let r = sc.get("/admin-area/x", Some(access));
    assert_eq!(r.status, 200, "{}", r.describe());

    // a weak password and a taken email are refused
    let out = sc.cli(
        &[
            "user",
            "create",
            "--tenant",
            "default",
            "--email",
            &unique_email("weak"),
            "--role",
            "member",
        ],
        Some("short\n"),
    );
    assert!(
        !out.success(),
        "a weak password was accepted: {}",
        out.describe()
    );
    let out = sc.cli(
        &[
            "user", "create", "--tenant", "default", "--email", &email, "--role", "member",
        ],
        Some(&format!("{}\n", strong_password())),
    );
    assert!(
        !out.success(),
        "a duplicate email was accepted: {}",
        out.describe()
    );
}

#[test]
fn the_bootstrap_admin_logs_in_with_role_admin() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    check_user_object(&admin.user);
    assert_eq!(admin.user["email"], admin.email.as_str());
    assert!(
        str_list(&admin.user["permissions"]).contains(&"*".to_string()),
        "{}",
        admin.user
    );
    let claims = jwt_claims(&admin.access);
    assert!(
        str_list(&claims["roles"]).contains(&"admin".to_string()),
        "{claims}"
    );
    let r = sc.get("/admin-area/x", Some(&admin.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    // the admin belongs to the default tenant
    let r = sc.login_in(&admin.email, &admin.password, Some("default"));
    assert_eq!(
        assert_status(&r, 200)["user"]["tenantId"],
        admin.tenant_id.as_str()
    );
}

#[test]
fn the_bootstrap_admin_is_created_only_when_the_tenant_has_no_users() {
    let mut sc = Sidecar::start(Opts::new());
    let first = sc.admin_user();
    let (email2, password2) = (unique_email("admin2"), strong_password());
    sc.set_env("PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL", &email2);
    sc.set_env("PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD", &password2);
    sc.restart();
    assert_error(&sc.login(&email2, &password2), 401, "INVALID_CREDENTIALS");
    assert_status(&sc.login(&first.email, &first.password), 200);
}
