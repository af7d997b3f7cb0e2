//! `GET /auth/openapi.json`: the OpenAPI 3.1 document of every route the
//! sidecar answers itself. The document is `openapi.json` at the top of the
//! repository, embedded at build time; the route table's test
//! (`auth::routes`) keeps the two in agreement.

use crate::http_types::HttpResponse;

/// The committed `openapi.json`.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// The answer to `GET`/`HEAD /auth/openapi.json`: the document as committed
/// (not a typed reply: it is served byte for byte).
pub fn response() -> HttpResponse {
    HttpResponse::text(200, "application/json", DOCUMENT)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::DOCUMENT;

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    #[test]
    fn document_is_openapi_3_1_with_an_error_schema() {
        let d = doc();
        assert_eq!(d["openapi"], "3.1.0");
        let err = &d["components"]["schemas"]["Error"];
        assert_eq!(err["required"][0], "error");
        let codes = err["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap();
        assert!(codes.iter().any(|c| c == "INVALID_CREDENTIALS"));
        // every operation documents its errors with the shared error shape
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert_eq!(
                    op["responses"]["default"]["$ref"], "#/components/responses/Error",
                    "{method} {path}"
                );
            }
        }
    }

    /// Every `$ref` resolves inside the document.
    #[test]
    fn references_resolve() {
        fn walk(v: &Value, root: &Value) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let ptr = r.strip_prefix('#').expect("local ref");
                        assert!(root.pointer(ptr).is_some(), "dangling $ref {r}");
                    }
                    m.values().for_each(|x| walk(x, root));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, root)),
                _ => {}
            }
        }
        let d = doc();
        walk(&d, &d);
    }
}
