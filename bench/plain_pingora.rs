//! The benchmark's reference case 9: the smallest pingora proxy that does
//! what portcullis' proxy path does minus portcullis (no auth, no headers, no
//! logs, no metrics), with the same allocator, one thread, no modules and a
//! prebuilt upstream peer. Its CPU per request is the pingora engine's floor,
//! so case 4 minus case 9 is what portcullis itself adds to a request.
//!
//!   cargo build --release --example plain_pingora
//!   target/release/examples/plain_pingora 127.0.0.1:8081 127.0.0.1:8080

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: portcullis::alloc::SidecarAlloc = portcullis::alloc::SidecarAlloc;

struct Plain {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Plain {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    portcullis::alloc::SidecarAlloc::init();
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: plain_pingora <listen addr> <upstream addr>");
        std::process::exit(2);
    };
    let addr: std::net::SocketAddr = upstream.parse().unwrap_or_else(|e| {
        eprintln!("plain_pingora: upstream `{upstream}`: {e}");
        std::process::exit(2);
    });
    let run_dir = std::env::temp_dir().join(format!("plain-pingora-{}", std::process::id()));
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: run_dir.join("pid").display().to_string(),
        upgrade_sock: run_dir.join("upgrade.sock").display().to_string(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Plain {
            peer: HttpPeer::new(addr, false, String::new()),
        },
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
