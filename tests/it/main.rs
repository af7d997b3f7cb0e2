//! Black-box integration tests of portcullis (the contract is SPEC.md).
//!
//! Every test starts the real binary (`portcullis serve --config FILE`) with a
//! generated config, free ports on 127.0.0.1, its own temporary SQLite file and
//! an in-process echo server as the upstream, then talks HTTP to it. Nothing
//! here imports the `portcullis` library crate.
//!
//! The binary is `$PORTCULLIS_TEST_BIN` when set, else the one Cargo built for
//! this test target. With `PORTCULLIS_TEST_KEEP=1` the temporary directory
//! (config, database, logs) of an instance whose test failed is kept.

mod harness;
mod pg;

mod accounts;
mod admin;
mod api_keys;
mod attacks;
mod cli;
mod deploy;
mod docs;
mod durability;
mod edge;
mod failures;
mod input;
mod layers;
mod mfa;
mod nginx_forward_auth;
mod proxy;
mod redis_limits;
mod register_login;
mod replicas;
mod service;
mod session;
mod tokens;
