//! Domain services below the request paths: the audit trail ([`audit`]),
//! account lockout ([`lockout`]) and the rate limits ([`rate_limit`]: in
//! memory, or shared by the replicas in Redis). Both the `/auth` handlers
//! and the proxy's step-up call them; they know the store, Redis and the
//! config, never a request path.

pub mod audit;
pub mod lockout;
pub mod rate_limit;
