//! The one error type of portcullis. Every variant is one of SPEC §5's error
//! codes; [`Error::status`], [`Error::code`] and [`Error::message`] map it to
//! HTTP in a single `match`, and [`Error::render`] is the only place that
//! formats the JSON error body.

use serde_json::json;

use crate::http_types::HttpResponse;

/// An error answered to a client, named after SPEC's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {reason}")]
    InvalidRequest {
        field: Option<String>,
        reason: String,
    },
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error("email exists")]
    EmailExists,
    #[error("registration closed")]
    RegistrationClosed,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("account locked")]
    AccountLocked { retry_after: u64 },
    #[error("account disabled")]
    AccountDisabled,
    #[error("account not verified")]
    AccountNotVerified,
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
    #[error("unauthenticated")]
    Unauthenticated,
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("token revoked")]
    TokenRevoked,
    /// An API key that is unknown, revoked, expired, or whose owner is disabled.
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("refresh token reused")]
    RefreshTokenReused,
    #[error("forbidden")]
    Forbidden,
    #[error("invalid MFA code")]
    InvalidMfaCode,
    #[error("MFA already enabled")]
    MfaAlreadyEnabled,
    #[error("OTP required")]
    OtpRequired,
    #[error("invalid OTP")]
    InvalidOtp,
    #[error("MFA not enrolled")]
    MfaNotEnrolled,
    #[error("tenant required")]
    TenantRequired,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("tenant mismatch")]
    TenantMismatch,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    #[error("upstream timeout")]
    UpstreamTimeout,
    #[error("busy")]
    Busy { retry_after: u64 },
    #[error("store unavailable")]
    StoreUnavailable,
    /// A login through an external provider that did not prove who the user
    /// is (the reason is answered: it holds no secret).
    #[error("external login failed: {0}")]
    ExternalLoginFailed(String),
    /// An external provider did not answer (discovery, token endpoint, keys).
    #[error("provider unavailable")]
    ProviderUnavailable,
    /// A passkey ceremony's answer was not accepted (the reason is answered:
    /// it holds no secret).
    #[error("passkey rejected: {0}")]
    PasskeyRejected(String),
    /// The route needs the token of a session begun with a passkey.
    #[error("passkey required")]
    PasskeyRequired,
    /// Something went wrong inside; the details are logged, never answered.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// A 400 `INVALID_REQUEST` about one field.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: Some(field.to_string()),
            reason: reason.into(),
        }
    }

    /// A 400 `INVALID_REQUEST` about the request as a whole.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: None,
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> u16 {
        use Error::*;
        match self {
            InvalidRequest { .. } | WeakPassword(_) | TenantRequired | PasskeyRejected(_) => 400,
            InvalidCredentials
            | Unauthenticated
            | InvalidToken
            | TokenExpired
            | TokenRevoked
            | RefreshTokenReused
            | InvalidMfaCode
            | OtpRequired
            | InvalidOtp
            | InvalidApiKey
            | PasskeyRequired
            | ExternalLoginFailed(_) => 401,
            RegistrationClosed | AccountDisabled | AccountNotVerified | Forbidden
            | TenantMismatch | MfaNotEnrolled => 403,
            TenantNotFound | NotFound => 404,
            MethodNotAllowed { .. } => 405,
            EmailExists | MfaAlreadyEnabled => 409,
            PayloadTooLarge => 413,
            AccountLocked { .. } => 423,
            RateLimited { .. } => 429,
            Internal => 500,
            UpstreamUnavailable => 502,
            Busy { .. } | StoreUnavailable | ProviderUnavailable => 503,
            UpstreamTimeout => 504,
        }
    }

    pub fn code(&self) -> &'static str {
        use Error::*;
        match self {
            InvalidRequest { .. } => "INVALID_REQUEST",
            WeakPassword(_) => "WEAK_PASSWORD",
            EmailExists => "EMAIL_EXISTS",
            RegistrationClosed => "REGISTRATION_CLOSED",
            InvalidCredentials => "INVALID_CREDENTIALS",
            AccountLocked { .. } => "ACCOUNT_LOCKED",
            AccountDisabled => "ACCOUNT_DISABLED",
            AccountNotVerified => "ACCOUNT_NOT_VERIFIED",
            RateLimited { .. } => "RATE_LIMITED",
            Unauthenticated => "UNAUTHENTICATED",
            InvalidToken => "INVALID_TOKEN",
            TokenExpired => "TOKEN_EXPIRED",
            TokenRevoked => "TOKEN_REVOKED",
            InvalidApiKey => "INVALID_API_KEY",
            RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Forbidden => "FORBIDDEN",
            InvalidMfaCode => "INVALID_MFA_CODE",
            MfaAlreadyEnabled => "MFA_ALREADY_ENABLED",
            OtpRequired => "OTP_REQUIRED",
            InvalidOtp => "INVALID_OTP",
            MfaNotEnrolled => "MFA_NOT_ENROLLED",
            TenantRequired => "TENANT_REQUIRED",
            TenantNotFound => "TENANT_NOT_FOUND",
            TenantMismatch => "TENANT_MISMATCH",
            NotFound => "NOT_FOUND",
            MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Busy { .. } => "BUSY",
            StoreUnavailable => "STORE_UNAVAILABLE",
            ExternalLoginFailed(_) => "EXTERNAL_LOGIN_FAILED",
            ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            PasskeyRejected(_) => "PASSKEY_REJECTED",
            PasskeyRequired => "PASSKEY_REQUIRED",
            Internal => "INTERNAL_ERROR",
        }
    }

    pub fn message(&self) -> String {
        use Error::*;
        match self {
            InvalidRequest { reason, .. } => reason.clone(),
            WeakPassword(reason) => format!("Password is too weak: {reason}"),
            EmailExists => "An account with this email already exists".into(),
            RegistrationClosed => "Registration is closed".into(),
            InvalidCredentials => "Wrong email or password".into(),
            AccountLocked { .. } => "Account is temporarily locked".into(),
            AccountDisabled => "Account is disabled".into(),
            AccountNotVerified => "Email address is not verified".into(),
            RateLimited { .. } => "Too many requests".into(),
            Unauthenticated => "Authentication required".into(),
            InvalidToken => "Invalid token".into(),
            TokenExpired => "Token expired".into(),
            TokenRevoked => "Token revoked".into(),
            InvalidApiKey => "Invalid API key".into(),
            RefreshTokenReused => {
                "Refresh token was already used; the session has been revoked".into()
            }
            Forbidden => "Not allowed".into(),
            InvalidMfaCode => "Invalid verification code".into(),
            MfaAlreadyEnabled => "MFA is already enabled".into(),
            OtpRequired => "A one-time password is required for this route".into(),
            InvalidOtp => "Invalid one-time password".into(),
            MfaNotEnrolled => "This route needs MFA; enrol first".into(),
            TenantRequired => "X-Tenant-ID header is required".into(),
            TenantNotFound => "Unknown tenant".into(),
            TenantMismatch => "X-Tenant-ID does not match the credential's tenant".into(),
            NotFound => "Not found".into(),
            MethodNotAllowed { .. } => "Method not allowed".into(),
            PayloadTooLarge => "Request body too large".into(),
            UpstreamUnavailable => "Upstream unavailable".into(),
            UpstreamTimeout => "Upstream timed out".into(),
            Busy { .. } => "Server busy, retry later".into(),
            StoreUnavailable => "Store unavailable".into(),
            ExternalLoginFailed(reason) => {
                format!("Login with the external provider failed: {reason}")
            }
            ProviderUnavailable => "The identity provider did not answer".into(),
            PasskeyRejected(reason) => format!("The passkey was not accepted: {reason}"),
            PasskeyRequired => "This route needs a session begun with a passkey".into(),
            Internal => "Internal error".into(),
        }
    }

    /// Headers that go with the error: `WWW-Authenticate` on 401s, `Retry-After`
    /// where a client should wait, `Allow` on 405.
    fn headers(&self) -> Vec<(&'static str, String)> {
        use Error::*;
        match self {
            Unauthenticated => vec![("www-authenticate", "Bearer".into())],
            InvalidToken | TokenExpired | TokenRevoked | InvalidApiKey => vec![(
                "www-authenticate",
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.message()
                ),
            )],
            AccountLocked { retry_after } | RateLimited { retry_after } | Busy { retry_after } => {
                vec![("retry-after", retry_after.max(&1).to_string())]
            }
            MethodNotAllowed { allow } => vec![("allow", (*allow).to_string())],
            _ => Vec::new(),
        }
    }

    /// The HTTP answer for this error: SPEC §5's JSON body and headers.
    pub fn render(&self, request_id: &str) -> HttpResponse {
        let mut error = json!({
            "code": self.code(),
            "message": self.message(),
            "requestId": request_id,
        });
        if let Error::InvalidRequest {
            field: Some(field),
            reason,
        } = self
        {
            error["details"] = json!({ "field": field, "reason": reason });
        }
        let mut response = HttpResponse::json(self.status(), &json!({ "error": error }));
        response
            .headers
            .extend(self.headers().into_iter().map(|(k, v)| (k.into(), v)));
        response
    }

    /// The gRPC status code of this error: what a gRPC client reads instead
    /// of an HTTP status (UNAUTHENTICATED for 401, PERMISSION_DENIED for 403, …).
    pub fn grpc_status(&self) -> u8 {
        match self.status() {
            400 => 3,        // INVALID_ARGUMENT
            401 => 16,       // UNAUTHENTICATED
            403 | 423 => 7,  // PERMISSION_DENIED
            404 | 405 => 12, // UNIMPLEMENTED
            409 => 6,        // ALREADY_EXISTS
            413 | 429 => 8,  // RESOURCE_EXHAUSTED
            502..=504 => 14, // UNAVAILABLE
            _ => 13,         // INTERNAL
        }
    }

    /// The error as a gRPC client understands it (a "Trailers-Only"
    /// response): HTTP 200 with `grpc-status` and a `grpc-message` that
    /// carries SPEC's error code and message, and no body.
    pub fn render_grpc(&self) -> HttpResponse {
        let message = format!("{}: {}", self.code(), self.message());
        // grpc-message is percent-encoded (gRPC over HTTP/2, "Responses")
        let encoded =
            percent_encoding::utf8_percent_encode(&message, GRPC_MESSAGE_ESCAPES).to_string();
        let mut response = HttpResponse::text(200, "application/grpc", bytes::Bytes::new())
            .with_header("grpc-status", self.grpc_status().to_string())
            .with_header("grpc-message", encoded);
        response
            .headers
            .extend(self.headers().into_iter().map(|(k, v)| (k.into(), v)));
        response
    }
}

/// Bytes a `grpc-message` value percent-encodes: controls, `%` and non-ASCII.
const GRPC_MESSAGE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Whether a request is a gRPC call (`content-type: application/grpc…`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        })
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(msg) => {
                tracing::error!(error = %msg, "store unavailable");
                Error::StoreUnavailable
            }
            other => {
                tracing::error!(error = %other, "store error");
                Error::Internal
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_carry_details() {
        let r = Error::invalid("email", "not an email").render("rid-1");
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");
        assert_eq!(v["error"]["details"]["field"], "email");
        assert_eq!(v["error"]["requestId"], "rid-1");
    }

    #[test]
    fn unauthenticated_asks_for_bearer() {
        let r = Error::Unauthenticated.render("x");
        assert_eq!(r.status, 401);
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "www-authenticate" && v == "Bearer")
        );
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let r = Error::Busy { retry_after: 0 }.render("x");
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "retry-after" && v == "1")
        );
    }

    #[test]
    fn grpc_refusals_carry_a_grpc_status_and_the_spec_code() {
        assert_eq!(Error::Unauthenticated.grpc_status(), 16);
        assert_eq!(Error::InvalidToken.grpc_status(), 16);
        assert_eq!(Error::Forbidden.grpc_status(), 7);
        assert_eq!(Error::UpstreamUnavailable.grpc_status(), 14);
        assert_eq!(Error::UpstreamTimeout.grpc_status(), 14);
        assert_eq!(Error::RateLimited { retry_after: 1 }.grpc_status(), 8);
        assert_eq!(Error::Internal.grpc_status(), 13);
        let r = Error::invalid("x", "50% ünicode").render_grpc();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("content-type"), Some("application/grpc"));
        assert_eq!(get("grpc-status"), Some("3"));
        let message = get("grpc-message").unwrap();
        assert!(message.starts_with("INVALID_REQUEST:"), "{message}");
        assert!(message.is_ascii() && message.contains("%25"), "{message}");
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        let mut h = http::HeaderMap::new();
        assert!(!is_grpc(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        assert!(is_grpc(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "Application/GRPC".parse().unwrap(),
        );
        assert!(is_grpc(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert!(!is_grpc(&h));
    }
}
