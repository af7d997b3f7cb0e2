//! Input rules for `/auth` bodies: emails (SPEC §14: ASCII addr-spec, local
//! part ≤ 64, labels ≤ 63, total ≤ 254, stored lower-cased) and display names.

use crate::error::Error;

pub const MAX_NAME_CHARS: usize = 100;

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// The lower-cased email, or 400 `INVALID_REQUEST` with `details.field = "email"`.
pub fn email(raw: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::invalid("email", format!("email {why}"));
    if raw.is_empty() {
        return Err(bad("is required"));
    }
    if raw.len() > 254 {
        return Err(bad("is longer than 254 characters"));
    }
    if !raw.is_ascii() {
        return Err(bad(
            "must be ASCII (use punycode for international domains)",
        ));
    }
    let Some((local, domain)) = raw.rsplit_once('@') else {
        return Err(bad("must contain @"));
    };
    if local.is_empty() || local.len() > 64 {
        return Err(bad("local part must be 1 to 64 characters"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad("local part has misplaced dots"));
    }
    if !local.bytes().all(|b| is_atext(b) || b == b'.') {
        return Err(bad("local part has characters that are not allowed"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("domain must have at least two labels"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad("domain is not valid"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("domain is not valid"));
    }
    Ok(raw.to_ascii_lowercase())
}

/// A display name: trimmed, at most 100 characters, no control characters;
/// empty means "not set".
pub fn name(field: &str, raw: Option<&str>) -> Result<Option<String>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let v = raw.trim();
    if v.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("{field} must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok((!v.is_empty()).then(|| v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_emails_are_lower_cased() {
        assert_eq!(
            email("Jane.Doe+x@Example.COM").unwrap(),
            "jane.doe+x@example.com"
        );
        assert!(email("a@xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn bad_emails_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let long_total = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        for e in [
            "",
            "not-an-email",
            "a b@example.com",
            "<a@example.com>",
            "a@example",
            "a@@example.com",
            "a@exa mple.com",
            ".a@example.com",
            "a..b@example.com",
            "jäne@example.com",
            "a@example.123",
            "a@-x.com",
            "a\r\n@example.com",
            &long_local,
            &long_label,
            &long_total,
        ] {
            match email(e) {
                Err(Error::InvalidRequest { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("email"))
                }
                other => panic!("{e:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            name("name", Some("  Jane ")).unwrap().as_deref(),
            Some("Jane")
        );
        assert_eq!(name("name", Some("")).unwrap(), None);
        assert!(name("name", Some("a\nb")).is_err());
        assert!(name("name", Some(&"x".repeat(101))).is_err());
    }
}
