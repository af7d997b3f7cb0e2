//! The command line of SPEC §2: `serve`, `demo`, `migrate`, `config check`,
//! `tenant create|list`, `user create`, `keys rotate|list` (and a hidden
//! `echo`). Each command reuses the same code paths as the HTTP API and
//! prints what it created, ids included, on stdout.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{AuthMode, Config, JwtAlgorithm, LogFormat, RouteConfig, mask_url};
use crate::tenancy::valid_slug;
use crate::tokens::keys::{algorithm_of, new_key_record};
use crate::{server, store};

const DEFAULT_CONFIG: &str = "config/portcullis.toml";

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "Authentication sidecar on pingora"
)]
pub struct Cli {
    /// Configuration file (default: config/portcullis.toml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the sidecar.
    Serve,
    /// Run the sidecar with a built-in echo upstream and a temporary SQLite db.
    Demo,
    /// Create or upgrade the store's schema.
    Migrate,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Run only the echo upstream (for examples and benchmarks).
    #[command(hide = true)]
    Echo {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate the file and print the effective config with secrets masked.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum TenantAction {
    /// Create a tenant; NAME is its slug.
    Create {
        name: String,
        /// Display name (default: the slug).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List tenants.
    List,
}

#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Create a user; the password is read from stdin.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Role to grant (repeatable; default: accounts.default_roles).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Generate a new signing key; the old ones stay published until their tokens expire.
    Rotate,
    /// List signing keys.
    List,
}

/// An error for the operator; main prints it and exits non-zero.
pub type CliResult = Result<(), String>;

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(Some(p)).map_err(|e| e.to_string()),
        None if Path::new(DEFAULT_CONFIG).exists() => {
            Config::load(Some(Path::new(DEFAULT_CONFIG))).map_err(|e| e.to_string())
        }
        None => Config::load(None).map_err(|e| e.to_string()),
    }
}

fn init_logging(config: &Config, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let level = if config.log.level.is_empty() {
        default_level
    } else {
        config.log.level.as_str()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // SIGHUP sets log.level again through a reload handle (src/reload.rs)
    let _ = match config.log.format {
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            crate::reload::set_level_setter(Box::new(move |level| {
                let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
        LogFormat::Pretty => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            crate::reload::set_level_setter(Box::new(move |level| {
                let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
    };
}

/// Builds the application and finishes its start-up: the bootstrap admin
/// from `PORTCULLIS_BOOTSTRAP_ADMIN_*` (an `/auth` concern, so done here, above
/// both), then ready.
async fn start_app(config: Config, log_tokens: bool) -> Result<Arc<App>, String> {
    let app = App::init(config, log_tokens).await?;
    crate::auth::account::bootstrap_admin_from_env(&app).await?;
    app.set_ready();
    Ok(app)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

pub fn run(cli: Cli) -> CliResult {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Serve => {
            let config = load_config(config_path)?;
            crate::reload::remember_config_path(match config_path {
                Some(p) => Some(p),
                None if Path::new(DEFAULT_CONFIG).exists() => Some(Path::new(DEFAULT_CONFIG)),
                None => None,
            });
            init_logging(&config, "info");
            let app = runtime()?.block_on(start_app(config, false))?;
            server::run(app, None)
        }
        Command::Demo => demo(config_path),
        Command::Echo { listen } => echo(&listen),
        Command::Migrate => {
            let config = load_config(config_path)?;
            runtime()?.block_on(async {
                let store = store::open(&config).await?;
                store.close().await.map_err(|e| e.to_string())?;
                println!("migrated {}", mask_url(&config.database.url));
                Ok(())
            })
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let config = load_config(config_path)?;
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            println!("{}", config.render_masked());
            Ok(())
        }
        Command::Tenant { action } => tenant(load_config(config_path)?, action),
        Command::User { action } => user(load_config(config_path)?, action),
        Command::Keys { action } => keys(load_config(config_path)?, action),
    }
}

fn tenant(config: Config, action: TenantAction) -> CliResult {
    runtime()?.block_on(async {
        let store = store::open(&config).await?;
        match action {
            TenantAction::Create { name, display_name } => {
                let slug = name.trim().to_ascii_lowercase();
                if !valid_slug(&slug) || uuid::Uuid::parse_str(&slug).is_ok() {
                    return Err(format!(
                        "tenant name `{name}`: use 1-63 lower-case letters, digits, - or _"
                    ));
                }
                let t = store
                    .create_tenant(&slug, display_name.as_deref().unwrap_or(&slug))
                    .await
                    .map_err(|e| match e {
                        store::StoreError::Conflict(_) => format!("tenant `{slug}` already exists"),
                        other => other.to_string(),
                    })?;
                println!("created tenant {} id={}", t.slug, t.id);
            }
            TenantAction::List => {
                println!("{:<36}  {:<24}  {:<24}  created", "id", "slug", "name");
                for t in store.list_tenants().await.map_err(|e| e.to_string())? {
                    println!(
                        "{:<36}  {:<24}  {:<24}  {}",
                        t.id,
                        t.slug,
                        t.name,
                        crate::auth::views::rfc3339(t.created_at)
                    );
                }
            }
        }
        store.close().await.map_err(|e| e.to_string())
    })
}

fn user(config: Config, action: UserAction) -> CliResult {
    let UserAction::Create {
        tenant,
        email,
        roles,
    } = action;
    let password = read_password()?;
    runtime()?.block_on(async {
        let roles = if roles.is_empty() {
            config.accounts.default_roles.clone()
        } else {
            roles
        };
        let app = start_app(config, false).await?;
        let t = app
            .tenants
            .lookup(&tenant)
            .await
            .map_err(|e| e.message())?
            .ok_or_else(|| format!("unknown tenant `{tenant}`"))?;
        let user =
            crate::auth::account::create_user_with_password(&app, t.id, &email, &password, roles)
                .await?;
        println!(
            "created user {} id={} tenant={} roles={}",
            user.email,
            user.id,
            t.slug,
            user.roles.join(",")
        );
        app.store.close().await.map_err(|e| e.to_string())
    })
}

/// The first line of stdin (a prompt on a terminal shows nothing typed back is
/// out of scope: pipe the password in).
fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(
            "no password on stdin (pipe it in: echo \"$PASSWORD\" | portcullis user create …)"
                .into(),
        );
    }
    Ok(password)
}

fn keys(config: Config, action: KeysAction) -> CliResult {
    runtime()?.block_on(async {
        let store = store::open(&config).await?;
        match action {
            KeysAction::Rotate => {
                if config.jwt.algorithm == JwtAlgorithm::HS256 || !config.jwt.private_key_file.is_empty() {
                    return Err("the signing key comes from a file (jwt.private_key_file / hs256_secret_file): rotate it there".into());
                }
                let record = new_key_record(algorithm_of(config.jwt.algorithm))?;
                let kid = record.kid.clone();
                store
                    .rotate_signing_key(record, crate::vocab::now())
                    .await
                    .map_err(|e| e.to_string())?;
                // replicas sharing the store reload their keys at once
                if let Err(e) = store.publish(&store::StoreEvent::KeysRotated).await {
                    eprintln!("warning: could not tell running replicas about the new key ({e}); they pick it up within 30 s");
                }
                println!("rotated: new signing key kid={kid} algorithm={:?}", config.jwt.algorithm);
            }
            KeysAction::List => {
                let keep = (config.jwt.access_ttl_seconds + config.jwt.leeway_seconds) as i64;
                let now = crate::vocab::now();
                println!("{:<44}  {:<6}  {:<9}  created", "kid", "alg", "state");
                for k in store.signing_keys().await.map_err(|e| e.to_string())? {
                    let state = match k.retired_at {
                        None => "current",
                        Some(t) if t + keep >= now => "previous",
                        Some(_) => "expired",
                    };
                    println!(
                        "{:<44}  {:<6}  {:<9}  {}",
                        k.kid,
                        k.algorithm,
                        state,
                        crate::auth::views::rfc3339(k.created_at)
                    );
                }
            }
        }
        store.close().await.map_err(|e| e.to_string())
    })
}

fn echo(listen: &str) -> CliResult {
    use pingora::server::Server;
    use pingora::server::configuration::ServerConf;
    let conf = ServerConf {
        threads: 1,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::services::listening::Service::new("echo".into(), crate::echo::EchoApp);
    svc.add_tcp(listen);
    server.add_service(svc);
    println!("echo upstream on http://{listen}");
    server.run(pingora::server::RunArgs::default());
    Ok(())
}

fn free_loopback_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn demo(config_path: Option<&Path>) -> CliResult {
    let mut config = load_config(config_path)?;
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("demo folder: {e}"))?;
    config.database.url = format!("sqlite://{}", dir.join("portcullis.db").display());
    let echo = format!("127.0.0.1:{}", free_loopback_port()?);
    config.upstream.address = echo.clone();
    for listen in [&mut config.proxy.listen, &mut config.admin.listen] {
        if let Some(port) = listen.strip_prefix("0.0.0.0:") {
            *listen = format!("127.0.0.1:{port}");
        }
    }
    if config.routes.is_empty() {
        config.routes.push(RouteConfig {
            name: "public".into(),
            path: "/public/**".into(),
            methods: Vec::new(),
            auth: AuthMode::Public,
            permissions: Vec::new(),
            roles: Vec::new(),
            require_otp: false,
            require_passkey: false,
            credentials: vec![
                crate::vocab::CredentialKind::Jwt,
                crate::vocab::CredentialKind::ApiKey,
                crate::vocab::CredentialKind::Oidc,
            ],
        });
    }
    config.log.format = LogFormat::Pretty;
    init_logging(&config, "info");
    let app: Arc<App> = runtime()?.block_on(start_app(config.clone(), true))?;
    print_walkthrough(&config, &echo, &dir);
    server::run(app, Some(echo))
}

fn print_walkthrough(config: &Config, echo: &str, dir: &Path) {
    let base = format!("http://{}", config.proxy.listen);
    let admin = format!("http://{}", config.admin.listen);
    println!(
        r#"
portcullis demo
  proxy     {base}   (/auth/** answered here, everything else checked and sent upstream)
  admin     {admin}  (/metrics /healthz /readyz)
  upstream  http://{echo}  (built-in echo: answers with the request it got)
  database  {db}

Try it (in another terminal):

  # 1. register (logs you in)
  curl -s {base}/auth/register -H 'content-type: application/json' \
       -d '{{"email":"jane@example.com","password":"correct-horse-battery"}}'

  # 2. log in and keep the tokens
  TOKENS=$(curl -s {base}/auth/login -H 'content-type: application/json' \
       -d '{{"email":"jane@example.com","password":"correct-horse-battery"}}')
  ACCESS=$(echo "$TOKENS" | python3 -c 'import sys,json;print(json.load(sys.stdin)["accessToken"])')
  REFRESH=$(echo "$TOKENS" | python3 -c 'import sys,json;print(json.load(sys.stdin)["refreshToken"])')

  # 3. a proxied request: the echo shows the X-Auth-* identity headers it received
  curl -s {base}/api/hello -H "Authorization: Bearer $ACCESS"
  curl -s {base}/api/hello          # 401 UNAUTHENTICATED
  curl -s {base}/public/status      # public route, no credential needed

  # 4. refresh (rotation: the old refresh token dies), then log out
  curl -s {base}/auth/refresh -H 'content-type: application/json' -d "{{\"refreshToken\":\"$REFRESH\"}}"
  curl -s -X POST {base}/auth/logout -H "Authorization: Bearer $ACCESS"
  curl -s {base}/api/hello -H "Authorization: Bearer $ACCESS"   # 401 TOKEN_REVOKED

  # metrics
  curl -s {admin}/metrics | grep ^portcullis_

Next steps:
  PORTCULLIS_URL={base} examples/curl-walkthrough.sh   # all of the above, checked
  PORTCULLIS_URL={base} python3 examples/walkthrough.py # MFA + API key (pip install requests pyotp)
  curl -s {base}/auth/openapi.json                       # every /auth route (OpenAPI 3.1)
  config/portcullis.toml documents every key; README.md "Deployment" covers Docker,
  Kubernetes, key rotation, SIGHUP reload and backups.
Ctrl-C stops the demo.
"#,
        db = dir.join("portcullis.db").display()
    );
}
