//! The sidecar process: config, ports, start and stop, logs, the CLI, and
//! the `/auth` flows the tests build on.

use super::*;

// --------------------------------------------------------------------------
// the sidecar
// --------------------------------------------------------------------------

/// How to start a sidecar. Values of `set` are TOML literals
/// (`"\"closed\""`, `"true"`, `"[\"a\"]"`).
#[derive(Clone)]
pub struct Opts {
    overrides: Vec<(String, String, String)>,
    routes: Option<Vec<String>>,
    env: Vec<(String, String)>,
    upstream: Option<String>,
    db_path: Option<PathBuf>,
    bootstrap_admin: bool,
    raw_toml: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            overrides: Vec::new(),
            routes: None,
            env: Vec::new(),
            upstream: None,
            db_path: None,
            bootstrap_admin: true,
            raw_toml: String::new(),
        }
    }
}

impl Opts {
    pub fn new() -> Opts {
        Opts::default()
    }

    /// Sets `[section] key = value` (value is a TOML literal), replacing a default.
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Opts {
        self.overrides
            .push((section.to_string(), key.to_string(), value.to_string()));
        self
    }

    /// Sets `[section] key = "value"`.
    pub fn set_str(self, section: &str, key: &str, value: &str) -> Opts {
        let lit = toml_str(value);
        self.set(section, key, &lit)
    }

    /// Replaces the default `[[routes]]`; each entry is the body of one table.
    pub fn routes(mut self, routes: &[&str]) -> Opts {
        self.routes = Some(routes.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Extra environment variable for the sidecar (and its CLI calls).
    pub fn env(mut self, key: &str, value: &str) -> Opts {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Upstream address instead of the instance's echo server.
    pub fn upstream(mut self, address: &str) -> Opts {
        self.upstream = Some(address.to_string());
        self
    }

    /// An existing (or wanted) SQLite file instead of a new one in the tempdir.
    pub fn db_path(mut self, path: &Path) -> Opts {
        self.db_path = Some(path.to_path_buf());
        self
    }

    /// No PORTCULLIS_BOOTSTRAP_ADMIN_* variables.
    pub fn no_bootstrap_admin(mut self) -> Opts {
        self.bootstrap_admin = false;
        self
    }

    /// TOML text appended verbatim after the generated sections (for sections
    /// the generator does not write; a section it writes must use `set`).
    pub fn raw_toml(mut self, text: &str) -> Opts {
        self.raw_toml.push_str(text);
        self.raw_toml.push('\n');
        self
    }
}

/// A TOML basic string literal.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A user that logged in (register or login).
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
    pub id: String,
    pub tenant_id: String,
    pub access: String,
    pub refresh: String,
    pub user: Value,
    /// X-Tenant-ID used for its public /auth calls
    pub tenant: Option<String>,
}

/// Output of a CLI call.
#[derive(Debug)]
pub struct CliOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl CliOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// A running (or configured) `portcullis serve`. Dropping it kills the process.
pub struct Sidecar {
    pub echo: EchoUpstream,
    dir: Option<tempfile::TempDir>,
    pub workdir: PathBuf,
    pub config_path: PathBuf,
    pub db_path: PathBuf,
    pub upstream: String,
    sections: Vec<(String, Vec<(String, String)>)>,
    routes: Vec<String>,
    raw_toml: String,
    env: Vec<(String, String)>,
    pub proxy_port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    client: reqwest::blocking::Client,
    probe: reqwest::blocking::Client,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
}

fn http_client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

impl Sidecar {
    /// Writes the config (fresh ports, a new tempdir, an echo upstream) without
    /// starting the process.
    pub fn new(opts: Opts) -> Sidecar {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-it-")
            .tempdir()
            .expect("tempdir");
        let workdir = dir.path().to_path_buf();
        let echo = EchoUpstream::start();
        let upstream = opts.upstream.clone().unwrap_or_else(|| echo.address());
        let db_path = opts
            .db_path
            .clone()
            .unwrap_or_else(|| workdir.join("portcullis.db"));
        let config_path = workdir.join("portcullis.toml");

        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut put = |section: &str, key: &str, value: String| {
            let idx = match sections.iter().position(|(s, _)| s == section) {
                Some(i) => i,
                None => {
                    sections.push((section.to_string(), Vec::new()));
                    sections.len() - 1
                }
            };
            let entries = &mut sections[idx].1;
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(e) => e.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        };
        put("server", "grace_period_seconds", "1".into());
        put("proxy", "listen", toml_str("127.0.0.1:0"));
        put("admin", "listen", toml_str("127.0.0.1:0"));
        put("upstream", "address", toml_str(&upstream));
        put(
            "database",
            "url",
            toml_str(&format!("sqlite://{}", db_path.display())),
        );
        put("rate_limit", "per_ip_per_minute", "0".into());
        put("rate_limit", "login_per_account_per_minute", "0".into());
        put("log", "format", toml_str("json"));
        put("log", "level", toml_str("info"));
        for (s, k, v) in &opts.overrides {
            put(s, k, v.clone());
        }

        let mut env = Vec::new();
        let (admin_email, admin_password) = if opts.bootstrap_admin {
            let e = unique_email("admin");
            let p = strong_password();
            env.push(("PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL".to_string(), e.clone()));
            env.push(("PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD".to_string(), p.clone()));
            (Some(e), Some(p))
        } else {
            (None, None)
        };
        env.extend(opts.env.iter().cloned());

        let routes = opts
            .routes
            .clone()
            .unwrap_or_else(|| DEFAULT_ROUTES.iter().map(|s| s.to_string()).collect());

        let mut sc = Sidecar {
            echo,
            dir: Some(dir),
            workdir,
            config_path,
            db_path,
            upstream,
            sections,
            routes,
            raw_toml: opts.raw_toml.clone(),
            env,
            proxy_port: 0,
            admin_port: 0,
            child: None,
            client: http_client(HTTP_TIMEOUT),
            probe: http_client(Duration::from_secs(2)),
            admin_email,
            admin_password,
        };
        sc.assign_ports();
        sc
    }

    /// Configures and starts an instance; returns once it is ready.
    pub fn start(opts: Opts) -> Sidecar {
        let mut sc = Sidecar::new(opts);
        sc.launch();
        sc
    }

    /// Sets `[section] key = value` (a TOML literal) in the config file; takes
    /// effect at the next launch.
    pub fn set_config(&mut self, section: &str, key: &str, value: &str) {
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[idx].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => entries.push((key.to_string(), value.to_string())),
        }
        self.write_config();
    }

    /// Sets (or replaces) an environment variable of the next launch and CLI calls.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    fn assign_ports(&mut self) {
        self.proxy_port = free_port();
        self.admin_port = free_port();
        let (p, a) = (self.proxy_port, self.admin_port);
        for (s, entries) in self.sections.iter_mut() {
            for (k, v) in entries.iter_mut() {
                if k == "listen" && s == "proxy" {
                    *v = toml_str(&format!("127.0.0.1:{p}"));
                }
                if k == "listen" && s == "admin" {
                    *v = toml_str(&format!("127.0.0.1:{a}"));
                }
            }
        }
        self.write_config();
    }

    /// The config file text.
    pub fn config_text(&self) -> String {
        let mut out = String::new();
        for (name, entries) in &self.sections {
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        if !self.raw_toml.is_empty() {
            out.push_str(&self.raw_toml);
            out.push('\n');
        }
        for r in &self.routes {
            out.push_str("[[routes]]\n");
            out.push_str(r.trim());
            out.push_str("\n\n");
        }
        out
    }

    fn write_config(&self) {
        std::fs::write(&self.config_path, self.config_text()).expect("write config");
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.workdir.join("stdout.log")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.workdir.join("stderr.log")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(&self.workdir);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("PORTCULLIS_") || k == "RUST_LOG" {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stdout_path())
            .unwrap();
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .unwrap();
        let mut cmd = self.command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the child dies with the test
            // thread that started it if the test process is killed.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        self.child = Some(child);
    }

    /// Starts the process (again) on the same config and store; waits for ready.
    pub fn launch(&mut self) {
        for attempt in 0..3 {
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(why) => {
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                        .is_some();
                    let logs = self.logs().to_ascii_lowercase();
                    let port_clash = logs.contains("address already in use")
                        || logs.contains("address in use")
                        || logs.contains("eaddrinuse")
                        || logs.contains("os error 98");
                    if attempt < 2 && exited && port_clash {
                        // a port picked as free was taken before the sidecar bound it
                        let _ = std::fs::write(self.stderr_path(), b"");
                        let _ = std::fs::write(self.stdout_path(), b"");
                        self.assign_ports();
                        continue;
                    }
                    self.kill();
                    panic!(
                        "portcullis did not become ready: {why}\n--- config ---\n{}\n{}",
                        self.config_text(),
                        self.tails()
                    );
                }
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("process exited with {status} before ready"));
            }
            match self.probe.get(self.admin_url("/readyz")).send() {
                Ok(r) if r.status().as_u16() == 200 => {
                    let addr: SocketAddr = ([127, 0, 0, 1], self.proxy_port).into();
                    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                        return Ok(());
                    }
                    last = "/readyz 200 but the proxy port refuses connections".into();
                }
                Ok(r) => last = format!("/readyz answered {}", r.status()),
                Err(e) => last = format!("/readyz: {e}"),
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?} (last: {last})"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&mut self) {
        if self.is_running()
            && let Some(pid) = self.pid()
        {
            signal(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `timeout` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, wait up to 15 s (then SIGKILL); returns the exit status, or
    /// None when it had to be killed or was never started.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.terminate();
        match self.wait_exit(STOP_WAIT) {
            Some(st) => Some(st),
            None => {
                self.kill();
                None
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// stop() then launch() on the same config and store.
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(
            st.is_some(),
            "portcullis did not exit within {STOP_WAIT:?} of SIGTERM\n{}",
            self.tails()
        );
        self.launch();
    }

    /// stdout and stderr of every run so far.
    pub fn logs(&self) -> String {
        let mut s = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        s.push('\n');
        s.push_str(&std::fs::read_to_string(self.stderr_path()).unwrap_or_default());
        s
    }

    pub fn tails(&self) -> String {
        let out = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        let err = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        format!(
            "--- portcullis stdout (tail) ---\n{}\n--- portcullis stderr (tail) ---\n{}",
            tail(&out, 40),
            tail(&err, 40)
        )
    }

    // ---- CLI -------------------------------------------------------------

    /// Runs `portcullis ARGS… --config FILE` with the instance's environment.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOut {
        self.cli_env(args, stdin, &[])
    }

    /// Like `cli`, with extra environment variables.
    pub fn cli_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> CliOut {
        let n = rand_hex(8);
        let out_path = self.workdir.join(format!("cli-{n}.out"));
        let err_path = self.workdir.join(format!("cli-{n}.err"));
        let mut cmd = self.command();
        cmd.args(args).arg("--config").arg(&self.config_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let what = format!(
            "portcullis {} --config {}",
            args.join(" "),
            self.config_path.display()
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let _ = pipe.write_all(input.as_bytes());
            drop(pipe);
        }
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {CLI_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        CliOut {
            status,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            what,
        }
    }

    // ---- HTTP ------------------------------------------------------------

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// A request to the proxy listener.
    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req::new(&self.client, method, self.url(path))
    }

    /// A request to the admin listener.
    pub fn admin_req(&self, method: &str, path: &str) -> Req<'_> {
        Req::new(&self.client, method, self.admin_url(path))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("GET", path).bearer_opt(token).send()
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.req("POST", path).bearer_opt(token).json(body).send()
    }

    pub fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.req("PATCH", path).bearer_opt(token).json(body).send()
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("DELETE", path).bearer_opt(token).send()
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        self.admin_req("GET", path).send()
    }

    /// Raw request to the proxy listener (target sent exactly as given).
    pub fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        raw_http(self.proxy_port, method, target, headers, RawBody::None)
    }

    // ---- /auth flows -----------------------------------------------------

    pub fn register(&self, email: &str, password: &str) -> Resp {
        self.register_with(json!({"email": email, "password": password}), None)
    }

    /// POST /auth/register with this body (and X-Tenant-ID when given).
    pub fn register_with(&self, body: Value, tenant: Option<&str>) -> Resp {
        self.req("POST", "/auth/register")
            .tenant_opt(tenant)
            .json(&body)
            .send()
    }

    pub fn login(&self, email: &str, password: &str) -> Resp {
        self.login_in(email, password, None)
    }

    pub fn login_in(&self, email: &str, password: &str, tenant: Option<&str>) -> Resp {
        self.req("POST", "/auth/login")
            .tenant_opt(tenant)
            .json(&json!({"email": email, "password": password}))
            .send()
    }

    /// Registers a new member of the default tenant.
    pub fn new_user(&self) -> User {
        self.new_user_with(None, json!({}), None)
    }

    /// Registers a user (extra body fields merged in) and returns it logged in.
    #[track_caller]
    pub fn new_user_with(&self, email: Option<&str>, extra: Value, tenant: Option<&str>) -> User {
        let email = email
            .map(str::to_string)
            .unwrap_or_else(|| unique_email("user"));
        let password = strong_password();
        let mut body = json!({"email": email, "password": password});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let r = self.register_with(body, tenant);
        let b = assert_status(&r, 201);
        assert!(
            b["accessToken"].is_string(),
            "register did not log in: {}",
            r.describe()
        );
        User {
            email,
            password,
            id: b["user"]["id"].as_str().unwrap_or_default().to_string(),
            tenant_id: b["user"]["tenantId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            access: b["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh: b["refreshToken"].as_str().unwrap_or_default().to_string(),
            user: b["user"].clone(),
            tenant: tenant.map(str::to_string),
        }
    }

    /// Logs the user in again (a new session); returns the token response.
    #[track_caller]
    pub fn login_tokens(&self, user: &User) -> Value {
        let r = self.login_in(&user.email, &user.password, user.tenant.as_deref());
        let b = assert_status(&r, 200);
        assert!(
            b["accessToken"].is_string() && b.get("mfaRequired").is_none_or(|v| v == false),
            "login did not return tokens: {}",
            r.describe()
        );
        b
    }

    /// Logs the user in again and returns it with the new session's tokens.
    #[track_caller]
    pub fn relogin(&self, user: &User) -> User {
        let b = self.login_tokens(user);
        User {
            access: b["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh: b["refreshToken"].as_str().unwrap_or_default().to_string(),
            user: b["user"].clone(),
            ..user.clone()
        }
    }

    /// Logs in the bootstrap admin (asserting it has the role admin).
    #[track_caller]
    pub fn admin_user(&self) -> User {
        let email = self
            .admin_email
            .clone()
            .expect("this instance was started without a bootstrap admin");
        let password = self.admin_password.clone().unwrap();
        let r = self.login(&email, &password);
        let b = assert_status(&r, 200);
        assert!(b["accessToken"].is_string(), "{}", r.describe());
        assert!(
            str_list(&b["user"]["roles"]).contains(&"admin".to_string()),
            "bootstrap admin lacks role admin: {}",
            r.describe()
        );
        User {
            email,
            password,
            id: b["user"]["id"].as_str().unwrap_or_default().to_string(),
            tenant_id: b["user"]["tenantId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            access: b["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh: b["refreshToken"].as_str().unwrap_or_default().to_string(),
            user: b["user"].clone(),
            tenant: None,
        }
    }

    /// The keys of GET /.well-known/jwks.json.
    #[track_caller]
    pub fn jwks(&self) -> Vec<Value> {
        let r = self.get("/.well-known/jwks.json", None);
        let b = assert_status(&r, 200);
        let keys = b["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("JWKS without keys[]: {}", r.describe()))
            .clone();
        assert!(!keys.is_empty(), "JWKS lists no key: {}", r.describe());
        keys
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "\n=== portcullis instance (proxy 127.0.0.1:{}, admin 127.0.0.1:{}) ===\n--- config {} ---\n{}\n{}",
                self.proxy_port,
                self.admin_port,
                self.config_path.display(),
                self.config_text(),
                self.tails()
            );
            if std::env::var_os("PORTCULLIS_TEST_KEEP").is_some()
                && let Some(d) = self.dir.as_mut()
            {
                d.disable_cleanup(true);
                eprintln!("(kept {})", d.path().display());
            }
        }
    }
}

// --------------------------------------------------------------------------
// added for tests/it/mfa.rs: starts expected to fail, and unsetting a key
// --------------------------------------------------------------------------

impl Sidecar {
    /// Starts the process on the current config and store WITHOUT waiting for
    /// ready (for starts that are expected to fail); pair with `wait_exit`.
    pub fn launch_no_wait(&mut self) {
        self.spawn();
    }

    /// Removes `[section] key` from the config file, so that its default
    /// applies at the next launch.
    pub fn unset_config(&mut self, section: &str, key: &str) {
        if let Some((_, entries)) = self.sections.iter_mut().find(|(s, _)| s == section) {
            entries.retain(|(k, _)| k != key);
        }
        self.write_config();
    }
}
