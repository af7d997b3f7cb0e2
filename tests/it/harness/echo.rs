//! The echo upstream: answers with the request it got, and records it.

use super::*;

// --------------------------------------------------------------------------
// echo upstream
// --------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Record {
    pub method: String,
    pub path: String,
    pub query: String,
    /// lower-cased names, in order received (names as sent otherwise, so an
    /// underscore spelling stays visible)
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Record {
    /// The values of that header joined by ", " (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with 200 and a JSON
/// echo `{method, path, query, headers, body}` and records it. `/slow…` paths
/// (and any path ending in `/slow`) sleep `?delay=SECONDS` (default 2) first.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("echo upstream bind"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("echo upstream has an IP address");
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (srv, recs, stp) = (server.clone(), records.clone(), stop.clone());
        let thread = thread::spawn(move || {
            loop {
                let req = match srv.recv() {
                    Ok(r) => r,
                    Err(_) => {
                        if stp.load(Ordering::SeqCst) {
                            return;
                        }
                        continue;
                    }
                };
                if stp.load(Ordering::SeqCst) {
                    return;
                }
                let recs = recs.clone();
                thread::spawn(move || Self::handle(req, recs));
            }
        });
        EchoUpstream {
            addr,
            records,
            server,
            stop,
            thread: Some(thread),
        }
    }

    fn handle(mut req: tiny_http::Request, records: Arc<Mutex<Vec<Record>>>) {
        let url = req.url().to_string();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (url.clone(), String::new()),
        };
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let _ = req.as_reader().read_to_end(&mut body);
        let record = Record {
            method: req.method().as_str().to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).to_string(),
        };
        records.lock().unwrap().push(record.clone());
        if path.starts_with("/slow") || path.ends_with("/slow") {
            let delay = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("delay="))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(2.0);
            thread::sleep(Duration::from_secs_f64(delay.clamp(0.0, 30.0)));
        }
        let mut hmap = serde_json::Map::new();
        for (n, v) in &headers {
            match hmap.get_mut(n) {
                Some(Value::String(old)) => {
                    old.push_str(", ");
                    old.push_str(v);
                }
                _ => {
                    hmap.insert(n.clone(), Value::String(v.clone()));
                }
            }
        }
        let payload = json!({
            "method": record.method,
            "path": record.path,
            "query": record.query,
            "headers": hmap,
            "body": record.body,
        })
        .to_string();
        let resp = tiny_http::Response::from_string(payload).with_header(
            tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap(),
        );
        let _ = req.respond(resp);
    }

    /// `127.0.0.1:PORT`
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn find(&self, pred: impl Fn(&Record) -> bool) -> Vec<Record> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(r))
            .cloned()
            .collect()
    }

    /// Requests the upstream received on exactly this path.
    pub fn for_path(&self, path: &str) -> Vec<Record> {
        self.find(|r| r.path == path)
    }

    /// Requests whose path starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<Record> {
        self.find(|r| r.path.starts_with(prefix))
    }

    /// Polls for a matching request; returns the latest one.
    pub fn wait_for(&self, pred: impl Fn(&Record) -> bool, timeout: Duration) -> Option<Record> {
        poll_until(timeout, || self.find(&pred).pop())
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
