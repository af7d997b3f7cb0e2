//! The store's decisions, written once above the SQL of both backends: pure
//! functions of what a statement read, unit-tested without a database.
//! Decisions that must be atomic across replicas stay in one conditional
//! statement in [`super::sql`] (a token is used by `... WHERE used_at IS NULL`).

use super::Session;

/// A presented refresh token as stored, with its session.
pub struct Presented {
    pub session: Session,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What presenting a refresh token decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    Unknown,
    /// The session was revoked before: nothing changes.
    Revoked,
    /// The token had been rotated already: revoke the session.
    Reused,
    Expired,
    /// Live: mark it used and store its successor.
    Rotate,
}

/// Revocation comes first (a revoked session's tokens are dead whatever
/// their state), then reuse (which revokes), then expiry.
pub fn refresh(found: Option<&Presented>, at: i64) -> Refresh {
    match found {
        None => Refresh::Unknown,
        Some(p) if p.session.revoked_at.is_some() => Refresh::Revoked,
        Some(p) if p.used_at.is_some() => Refresh::Reused,
        Some(p) if p.expires_at <= at => Refresh::Expired,
        Some(_) => Refresh::Rotate,
    }
}

/// Failures at or before this time have left the lockout window.
pub fn window_start(at: i64, window: i64) -> i64 {
    at - window
}

/// The lock's end when `recent` failures (this one included) within the
/// window reach `max`; `max == 0` never locks.
pub fn lock_until(recent: i64, max: u32, at: i64, lock_for: i64) -> Option<i64> {
    (max > 0 && recent >= i64::from(max)).then_some(at + lock_for)
}

/// Single-use tokens stay this long after expiry (an old link answers
/// "expired" rather than "unknown"), then are purged.
pub const ONE_TIME_TOKEN_KEPT: i64 = 86_400;
/// MFA login tokens stay this long after expiry.
pub const MFA_TOKEN_KEPT: i64 = 3600;

/// Wrong codes counted on an MFA token; an unknown token counts as exhausted.
pub fn mfa_failures(counted: Option<i64>) -> u32 {
    counted.map_or(u32::MAX, |n| n.clamp(0, i64::from(u32::MAX)) as u32)
}

/// A new enrolment may replace an unconfirmed one, never a confirmed one.
pub fn may_begin_mfa(confirmed: Option<bool>) -> bool {
    confirmed != Some(true)
}

/// A conditional use (`... WHERE used_at IS NULL`) that changed a row is
/// the first and only use.
pub fn first_use(rows_changed: u64) -> bool {
    rows_changed > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn presented(revoked: bool, expires_at: i64, used_at: Option<i64>) -> Presented {
        Presented {
            session: Session {
                id: Uuid::now_v7(),
                tenant_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                amr: vec!["pwd".into()],
                created_at: 0,
                revoked_at: revoked.then_some(5),
            },
            expires_at,
            used_at,
        }
    }

    #[test]
    fn refresh_decisions_in_order_of_precedence() {
        assert_eq!(refresh(None, 10), Refresh::Unknown);
        // revoked wins over reuse and expiry
        assert_eq!(
            refresh(Some(&presented(true, 0, Some(1))), 10),
            Refresh::Revoked
        );
        // reuse wins over expiry: an expired, rotated token still revokes
        assert_eq!(
            refresh(Some(&presented(false, 0, Some(1))), 10),
            Refresh::Reused
        );
        assert_eq!(
            refresh(Some(&presented(false, 10, None)), 10),
            Refresh::Expired
        );
        assert_eq!(
            refresh(Some(&presented(false, 11, None)), 10),
            Refresh::Rotate
        );
    }

    #[test]
    fn lockout_locks_at_max_failures_in_the_window() {
        assert_eq!(window_start(100, 30), 70);
        assert_eq!(lock_until(2, 3, 100, 60), None);
        assert_eq!(lock_until(3, 3, 100, 60), Some(160));
        assert_eq!(lock_until(4, 3, 100, 60), Some(160));
        // max 0: lockout off
        assert_eq!(lock_until(100, 0, 100, 60), None);
    }

    #[test]
    fn mfa_token_and_enrolment_rules() {
        assert_eq!(mfa_failures(None), u32::MAX);
        assert_eq!(mfa_failures(Some(2)), 2);
        assert_eq!(mfa_failures(Some(-1)), 0);
        assert!(may_begin_mfa(None));
        assert!(may_begin_mfa(Some(false)));
        assert!(!may_begin_mfa(Some(true)));
        assert!(first_use(1));
        assert!(!first_use(0));
    }
}
