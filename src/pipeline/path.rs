//! Path normalisation (SPEC §14, §15) before any route policy is matched:
//! percent-encoded unreserved characters decoded, `.`/`..` resolved,
//! duplicate slashes merged; escaping the root, an encoded `/` or NUL, a
//! backslash, a decoding that is not UTF-8 and a `;` parameter on an empty,
//! `.` or `..` segment are refused. [`readings`] gives the other readings an
//! upstream may make of the result (parameters dropped, case folded).

use std::borrow::Cow;

use crate::error::Error;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters in one segment; keeps other escapes
/// (upper-cased). An encoded `/`, `\` or NUL, or a broken escape, is an error.
fn decode_segment(seg: &str) -> Result<String, Error> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(Error::invalid(
                    "path",
                    "malformed percent-encoding in the path",
                ));
            };
            let v = h * 16 + l;
            if v == b'/' || v == b'\\' || v == 0 {
                return Err(Error::invalid("path", "encoded slash or NUL in the path"));
            }
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else if b == 0 || b == b'\\' {
            return Err(Error::invalid("path", "backslash or NUL in the path"));
        } else {
            out.push(b as char);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether `path` is already in normal form: absolute ASCII without `%`,
/// `;`, `\\`, NUL, empty (`//`), `.` or `..` segments. Most requests are, and
/// then [`normalize`] borrows instead of rebuilding the path.
fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|c| c.is_ascii() && !matches!(c, b'%' | b';' | b'\\' | 0))
        && !path.contains("//")
        && path[1..].split('/').all(|seg| seg != "." && seg != "..")
}

/// The normalised form of `path` (which must start with `/`); borrowed when
/// `path` is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Error> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    rebuild(path).map(Cow::Owned)
}

fn rebuild(path: &str) -> Result<String, Error> {
    if !path.starts_with('/') || !path.is_ascii() {
        return Err(Error::invalid(
            "path",
            "the path must be an absolute ASCII path",
        ));
    }
    // every escape decoded must spell UTF-8: `%C0%AE` (an overlong `.`) or
    // `%FF` would be read differently by different upstreams
    if percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_err()
    {
        return Err(Error::invalid(
            "path",
            "the percent-decoded path is not valid UTF-8",
        ));
    }
    let mut stack: Vec<String> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, raw) in segments.iter().enumerate().skip(1) {
        let seg = decode_segment(raw)?;
        // `/public/..;/admin`: Tomcat, Jetty and Spring drop `;x` and then resolve the dots
        if let Some((name, _)) = seg.split_once(';')
            && matches!(name, "" | "." | "..")
        {
            return Err(Error::invalid(
                "path",
                "a `;` parameter on an empty, `.` or `..` path segment",
            ));
        }
        match seg.as_str() {
            "" => {
                if i == last {
                    trailing_slash = true;
                }
            }
            "." => {
                if i == last {
                    trailing_slash = true;
                }
            }
            ".." => {
                if stack.pop().is_none() {
                    return Err(Error::invalid("path", "the path escapes the root"));
                }
                if i == last {
                    trailing_slash = true;
                }
            }
            _ => stack.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// The readings of a normalised path an upstream may make (SPEC §15): as
/// sent, with each segment's `;…` parameters removed, and each of those
/// lower-cased. The first is `path` itself; duplicates are left out, so a
/// lower-case path without `;` has one reading.
pub fn readings(path: &str) -> Readings<'_> {
    let mut out = Readings {
        sent: path,
        other: [None, None, None],
    };
    let stripped = path.contains(';').then(|| strip_params(path));
    let mut push = |r: String| {
        if r != path
            && !out.other.iter().flatten().any(|o| *o == r)
            && let Some(slot) = out.other.iter_mut().find(|s| s.is_none())
        {
            *slot = Some(r);
        }
    };
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        push(path.to_ascii_lowercase());
    }
    if let Some(stripped) = stripped {
        if stripped.bytes().any(|b| b.is_ascii_uppercase()) {
            push(stripped.to_ascii_lowercase());
        }
        push(stripped);
    }
    out
}

/// The readings of one path; see [`readings`].
pub struct Readings<'a> {
    pub sent: &'a str,
    other: [Option<String>; 3],
}

impl Readings<'_> {
    /// The readings other than the path as sent.
    pub fn others(&self) -> impl Iterator<Item = &str> {
        self.other.iter().flatten().map(String::as_str)
    }
}

/// `path` with the `;…` part of every segment removed.
fn strip_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split_once(';').map_or(seg, |(name, _)| name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{normalize, readings};

    fn all(path: &str) -> Vec<String> {
        let r = readings(path);
        std::iter::once(r.sent.to_string())
            .chain(r.others().map(str::to_string))
            .collect()
    }

    #[test]
    fn readings_drop_parameters_and_fold_case() {
        assert_eq!(all("/a/b"), ["/a/b"]);
        assert_eq!(all("/A/b"), ["/A/b", "/a/b"]);
        assert_eq!(all("/a;x/b;y=1"), ["/a;x/b;y=1", "/a/b"]);
        assert_eq!(
            all("/Admin;x/b"),
            ["/Admin;x/b", "/admin;x/b", "/admin/b", "/Admin/b"]
        );
    }

    #[test]
    fn parameters_on_dot_and_empty_segments_are_refused() {
        for p in [
            "/public/..;/admin",
            "/public/.;/admin",
            "/a/;x/b",
            "/public/%2e%2e;x/admin",
            "/;",
        ] {
            assert!(normalize(p).is_err(), "{p} must be refused");
        }
        assert_eq!(normalize("/a;v=1/b").unwrap(), "/a;v=1/b");
        assert_eq!(normalize("/a/..;x").ok(), None);
        assert_eq!(normalize("/a/b..;x/c").unwrap(), "/a/b..;x/c");
    }

    #[test]
    fn decodings_that_are_not_utf8_are_refused() {
        for p in ["/%C0%AE%C0%AE/admin", "/a/%FF", "/a/%c0%af", "/%E2%82"] {
            assert!(normalize(p).is_err(), "{p} must be refused");
        }
        assert_eq!(normalize("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn normal_paths_are_unchanged() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/api/orders/42", "/x%20y"] {
            assert_eq!(normalize(p).unwrap(), p);
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_normalisation() {
        for p in [
            "/", "/a", "/a/", "/a/b.c/d", "/.a/..b/", "/a.", "/..a", "//", "/./", "/a/.", "/a/..",
            "/a//b", "/%41", "/a\\b", "/a/./b", "a", "",
        ] {
            if super::is_normal(p) {
                assert_eq!(super::rebuild(p).unwrap(), p);
                assert!(matches!(normalize(p), Ok(std::borrow::Cow::Borrowed(_))));
            } else {
                assert_ne!(super::rebuild(p).ok().as_deref(), Some(p), "{p}");
            }
        }
    }

    #[test]
    fn dots_and_duplicate_slashes_are_resolved() {
        assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize("//a///b/./c/").unwrap(), "/a/b/c/");
        assert_eq!(normalize("/a/b/..").unwrap(), "/a/");
        assert_eq!(normalize("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize("/%7Euser/%41").unwrap(), "/~user/A");
        assert_eq!(normalize("/a%3fb").unwrap(), "/a%3Fb");
    }

    #[test]
    fn escapes_and_smuggling_are_refused() {
        for p in [
            "/..", "/a/../..", "/a%2Fb", "/a%2fb", "/a%00", "/a%5cb", "/a%zz", "/a%4", "a", "/a\\b",
        ] {
            assert!(normalize(p).is_err(), "{p} must be refused");
        }
    }
}
