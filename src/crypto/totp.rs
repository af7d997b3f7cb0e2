//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s) through totp-rs: new secrets, the
//! otpauth URL of SPEC §9 with its QR code as a PNG data URI, code checks that
//! return the matched time step (the caller stores it against replay), and
//! 8-digit backup codes.

use rand::RngExt;
use totp_rs::{Algorithm, Secret, Totp};

pub const PERIOD: u64 = 30;
pub const DIGITS: u8 = 6;

/// A new random 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 20];
    rand::fill(&mut bytes[..]);
    bytes
}

pub fn base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

fn totp(secret: &[u8], skew: u8, issuer: &str, account: &str) -> Option<Totp> {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(skew as u16)
        .with_step_duration(PERIOD)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(issuer.replace(':', "")))
        .with_account_name(account.replace(':', ""))
        .build()
        .ok()
}

/// `otpauth://totp/<issuer>:<email>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
pub fn otpauth_url(secret: &[u8], issuer: &str, email: &str) -> Option<String> {
    let url = totp(secret, 1, issuer, email)?.to_url().ok()?;
    // totp-rs leaves out parameters at their default; SPEC spells them out
    Some(format!(
        "{url}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}"
    ))
}

/// The otpauth URL as a QR code: `data:image/png;base64,…`.
pub fn qr_data_uri(url: &str) -> Option<String> {
    qrcodegen_image::draw_base64(url)
        .ok()
        .map(|b64| format!("data:image/png;base64,{b64}"))
}

/// The time step `code` matches at unix time `at` (± `skew` steps), if any.
pub fn check(secret: &[u8], code: &str, at: u64, skew: u8) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, skew, "x", "x")?.check(code, at)
}

/// Whether `code` looks like a backup code (8 digits) rather than a TOTP.
pub fn is_backup_code_shape(code: &str) -> bool {
    let code = code.trim();
    code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Ten distinct single-use 8-digit backup codes.
pub fn new_backup_codes() -> Vec<String> {
    let mut rng = rand::rng();
    let mut codes: Vec<String> = Vec::with_capacity(10);
    while codes.len() < 10 {
        let code = format!("{:08}", rng.random_range(0..100_000_000u32));
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8-digit codes; we compare the last 6).
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (t, full) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
        ] {
            let six = &full[2..];
            let step = check(secret, six, t, 0).unwrap_or_else(|| panic!("t={t}"));
            assert_eq!(step, t / PERIOD);
        }
    }

    #[test]
    fn skew_is_one_step_each_way() {
        let secret = new_secret();
        let t = 1_700_000_000u64;
        let code = totp(&secret, 0, "x", "x")
            .unwrap()
            .generate(t - PERIOD)
            .to_string();
        assert_eq!(check(&secret, &code, t, 1), Some(t / PERIOD - 1));
        assert_eq!(check(&secret, &code, t + 2 * PERIOD, 1), None);
        assert_eq!(check(&secret, "12345", t, 1), None);
        assert_eq!(check(&secret, "abcdef", t, 1), None);
    }

    #[test]
    fn url_and_qr() {
        let secret = new_secret();
        let url = otpauth_url(&secret, "portcullis", "jane@example.com").unwrap();
        assert!(
            url.starts_with("otpauth://totp/portcullis:jane%40example.com?"),
            "{url}"
        );
        for part in [
            "issuer=portcullis",
            "algorithm=SHA1",
            "digits=6",
            "period=30",
            &format!("secret={}", base32(&secret)),
        ] {
            assert!(url.contains(part), "{url} lacks {part}");
        }
        let qr = qr_data_uri(&url).unwrap();
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(qr.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn backup_codes_are_ten_distinct_eight_digit_codes() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), 10);
        assert!(codes.iter().all(|c| is_backup_code_shape(c)));
        let set: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(set.len(), 10);
    }
}
