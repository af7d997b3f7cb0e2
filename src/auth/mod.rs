//! The `/auth` routes the sidecar answers itself (SPEC §6). [`routes`] holds
//! the one route table and dispatches to the handlers of [`session`],
//! [`account`], [`mfa`], [`passkeys`], [`api_keys`], [`admin`], [`forward_auth`] and
//! [`openapi`]; handlers take typed bodies and give typed replies ([`call`]),
//! the user and token views live in [`views`].

pub mod account;
pub mod admin;
pub mod api_keys;
pub mod call;
pub mod forward_auth;
pub mod issue;
pub mod mfa;
pub mod oidc;
pub mod openapi;
pub mod passkeys;
pub mod routes;
pub mod session;
pub mod validate;
pub mod views;

pub use call::parse_body;
pub use routes::handle;
