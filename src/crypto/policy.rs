//! Password rules (SPEC §10): length between the configured minimum and 128
//! characters, not the email, not in the bundled list of common passwords
//! (Django's 20k list, see `common_passwords.LICENSE`).

use std::collections::HashSet;
use std::sync::LazyLock;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common_passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

pub const MAX_PASSWORD_CHARS: usize = 128;

/// Why a password is refused, or Ok.
pub fn check_password(password: &str, email: &str, min_len: usize) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < min_len {
        return Err(format!("must be at least {min_len} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if password.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if password.trim().eq_ignore_ascii_case(email.trim()) {
        return Err("must not be the email address".into());
    }
    if is_common(password) {
        return Err("is too common".into());
    }
    Ok(())
}

fn is_common(password: &str) -> bool {
    COMMON.contains(password.trim().to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_large_enough() {
        assert!(COMMON.len() >= 10_000, "{}", COMMON.len());
    }

    #[test]
    fn rules() {
        let email = "jane@example.com";
        assert!(check_password("Vx-1f2e3d4c5b6a-Qz9!", email, 8).is_ok());
        assert!(check_password("Ab1!xyz", email, 8).is_err());
        assert!(check_password(&"a".repeat(129), email, 8).is_err());
        assert!(check_password("JANE@example.com", email, 8).is_err());
        assert!(check_password("Password123", email, 8).is_err());
        assert!(check_password("qwertyuiop", email, 8).is_err());
        assert!(check_password("abc\0defghi", email, 8).is_err());
    }
}
