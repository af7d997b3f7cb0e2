//! portcullis: an authentication sidecar on Cloudflare's pingora. It answers
//! the `/auth` routes itself ([`auth`]), checks every other request through
//! the [`pipeline`] and forwards it upstream with identity headers ([`proxy`]).
//! The contract is `SPEC.md`; `README.md` says where this build departs from it.

pub mod alloc;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod echo;
pub mod error;
pub mod http_types;
pub mod listeners;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod pipeline;
pub mod proxy;
pub mod reload;
pub mod revocations;
pub mod server;
pub mod services;
pub mod store;
pub mod tenancy;
pub mod tls;
pub mod tokens;
pub mod vocab;
