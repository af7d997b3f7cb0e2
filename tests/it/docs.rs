//! The operator documentation in `docs/` stays true: every configuration key
//! (with its default), every metric, every error code, every `/auth` route
//! and every command of the binary is in it, nothing it lists is gone, and
//! neither it nor README.md points outside the repository.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs the binary with `args` in a clean environment; stdout.
fn run(args: &[&str]) -> String {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis");
    assert!(
        out.status.success(),
        "portcullis {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The cells of the table row whose first cell is `` `key` ``.
fn row<'a>(doc: &'a str, key: &str) -> Option<Vec<&'a str>> {
    let first = format!("| `{key}` |");
    doc.lines().find(|l| l.starts_with(&first)).map(|l| {
        l.trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect::<Vec<_>>()
    })
}

/// Every `` `section.key` `` that starts a table row of the document.
fn documented_keys(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|k| k.contains('.') && !k.contains(' '))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_config_key_is_documented_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[[routes]]\nname = \"r\"\npath = \"/r/**\"\n\n[[issuers]]\nissuer = \"https://idp.example\"\naudiences = [\"api\"]\n",
    )
    .unwrap();
    let effective: toml::Table = run(&["config", "check", "--config", file.to_str().unwrap()])
        .parse()
        .expect("config check prints TOML");
    let doc = read("docs/configuration.md");

    let mut keys = BTreeSet::new();
    for (section, value) in &effective {
        // the arrays of tables: their keys, with defaults but for the required ones
        if section == "routes" || section == "issuers" {
            let entry = value.as_array().unwrap()[0].as_table().unwrap();
            for (key, default) in entry {
                let name = format!("{section}[].{key}");
                let cells = row(&doc, &name)
                    .unwrap_or_else(|| panic!("docs/configuration.md lacks {name}"));
                if !["name", "path", "issuer", "audiences"].contains(&key.as_str())
                    || (section == "issuers" && key == "name")
                {
                    assert_eq!(cells[1], format!("`{default}`"), "default of {name}");
                }
                keys.insert(name);
            }
            continue;
        }
        for (key, default) in value.as_table().unwrap() {
            let name = format!("{section}.{key}");
            let cells =
                row(&doc, &name).unwrap_or_else(|| panic!("docs/configuration.md lacks {name}"));
            assert_eq!(cells[1], format!("`{default}`"), "default of {name}");
            assert!(
                cells.len() >= 3 && !cells[2].is_empty(),
                "{name} has no meaning"
            );
            keys.insert(name);
        }
    }
    let stale: Vec<_> = documented_keys(&doc).difference(&keys).cloned().collect();
    assert!(
        stale.is_empty(),
        "documented keys that do not exist: {stale:?}"
    );
    // the commented default file lists every key too
    let shipped = read("config/portcullis.toml");
    for key in keys
        .iter()
        .filter(|k| !k.starts_with("routes[]") && !k.starts_with("issuers[]"))
    {
        let field = key.split('.').nth(1).unwrap();
        assert!(
            shipped.contains(&format!("\n{field} = ")),
            "config/portcullis.toml lacks {key}"
        );
    }
}

#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    // families with labels show once a series exists: traffic of every kind
    // (the upstream is down, so the upstream error counter moves too)
    // and an external issuer whose keys cannot be fetched, shown one token
    let issuer = format!("http://{}/idp", dead_address());
    let sc = Sidecar::start(Opts::new().upstream(&dead_address()).raw_toml(&format!(
        "[[issuers]]\nissuer = {}\njwks_url = {}\naudiences = [\"api\"]\nfetch_timeout_ms = 500\n\
         client_id = \"rp\"\ncallback_url = \"http://127.0.0.1/auth/oidc/oidc/callback\"\n\
         redirect_uris = [\"http://127.0.0.1/app\"]\n",
        toml_str(&issuer),
        toml_str(&format!("{issuer}/jwks"))
    )));
    let user = sc.new_user();
    assert_status(&sc.login(&user.email, &user.password), 200);
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({ "refreshToken": user.refresh }),
    );
    assert_status(&r, 200);
    sc.get("/api/x", Some(&user.access));
    sc.get("/public/x", None);
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let external = format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "RS256", "typ": "at+jwt", "kid": "k1"})),
        b64(json!({"iss": issuer, "sub": "s", "aud": "api", "exp": 4102444800u64}))
    );
    assert_status(&sc.get("/api/x", Some(&external)), 401);
    // and a login callback nobody started
    assert_status(&sc.get("/auth/oidc/oidc/callback?state=nobody", None), 401);
    // a passkey login finished without a credential (counted as rejected)
    assert_status(
        &sc.post("/auth/passkeys/login/finish", None, &json!({})),
        400,
    );
    let scrape = sc.admin_get("/metrics").body;
    let live: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with("portcullis_"))
        .map(str::to_string)
        .collect();
    assert!(live.len() >= 10, "{live:?}");
    let doc = read("docs/observability.md");
    for name in &live {
        assert!(
            row(&doc, name).is_some(),
            "docs/observability.md lacks a row for {name}"
        );
    }
    let mentioned: BTreeSet<String> = doc
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("portcullis_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .fold(w, |w, s| w.strip_suffix(s).unwrap_or(w))
                .to_string()
        })
        .collect();
    let stale: Vec<_> = mentioned.difference(&live).collect();
    assert!(
        stale.is_empty(),
        "documented metrics that do not exist: {stale:?}"
    );
    assert!(scrape.contains("\nprocess_") && doc.contains("`process_*`"));
}

#[test]
fn every_error_code_is_documented_and_every_documented_code_exists() {
    let source = read("src/error.rs");
    let body = source
        .split("pub fn code(&self)")
        .nth(1)
        .and_then(|s| s.split("pub fn message").next())
        .expect("Error::code in src/error.rs");
    let codes: BTreeSet<String> = body
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
        .map(str::to_string)
        .collect();
    assert!(codes.len() >= 30, "{codes:?}");
    let doc = read("docs/http-api.md");
    let table = doc
        .split("## Error codes")
        .nth(1)
        .expect("docs/http-api.md has an Error codes section");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.split(" | `").nth(1))
        .filter_map(|c| c.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        documented, codes,
        "the error table of docs/http-api.md and Error::code differ"
    );
    // and the Error schema of openapi.json (schemathesis checks answers against it)
    let openapi: serde_json::Value = serde_json::from_str(&read("openapi.json")).unwrap();
    let listed: BTreeSet<String> = openapi["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("openapi.json's Error has an enum of codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    assert_eq!(
        listed, codes,
        "openapi.json's Error codes and Error::code differ"
    );
}

#[test]
fn every_auth_route_is_documented() {
    let openapi: serde_json::Value = serde_json::from_str(&read("openapi.json")).unwrap();
    let doc = read("docs/http-api.md");
    let mut n = 0;
    for (path, ops) in openapi["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let route = format!("{} {path}", method.to_ascii_uppercase());
            assert!(
                doc.contains(&format!("`{route}`")) || doc.contains(&format!("`{route}?")),
                "docs/http-api.md lacks {route}"
            );
            n += 1;
        }
    }
    assert!(n >= 30);
}

/// The subcommands `portcullis ARGS --help` lists.
fn subcommands(args: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.push("--help");
    let help = run(&all);
    help.split("Commands:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_is_documented() {
    let doc = read("docs/cli.md");
    let top = subcommands(&[]);
    assert!(top.len() >= 7, "{top:?}");
    for command in &top {
        let nested = subcommands(&[command]);
        if nested.is_empty() {
            assert!(
                doc.contains(&format!("portcullis {command}")),
                "docs/cli.md lacks `portcullis {command}`"
            );
        }
        for sub in nested {
            assert!(
                doc.contains(&format!("portcullis {command} {sub}")),
                "docs/cli.md lacks `portcullis {command} {sub}`"
            );
        }
    }
}

/// Relative link targets of a markdown text (`[text](target)`).
fn link_targets(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        .filter(|t| !t.is_empty() && !t.starts_with('#') && !t.contains("://"))
        .filter(|t| !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn readme_and_docs_point_only_inside_the_repository() {
    let root = repo().canonicalize().unwrap();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            !text.contains("../shared"),
            "{name} points at ../shared, outside the repository"
        );
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap();
            let resolved = file.parent().unwrap().join(path);
            let resolved = resolved
                .canonicalize()
                .unwrap_or_else(|e| panic!("{name}: link {target} leads nowhere: {e}"));
            assert!(
                resolved.starts_with(&root),
                "{name}: link {target} leaves the repository"
            );
        }
    }
}

#[test]
fn the_docs_index_lists_every_document() {
    let index = read("docs/README.md");
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "README.md" {
            assert!(
                index.contains(&format!("({name})")),
                "docs/README.md lacks {name}"
            );
        }
    }
}
