//! Helpers the pipeline's unit tests share.

use http::{HeaderMap, HeaderName};

/// A header map with these (name, value) pairs, repeated names appended.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}
