//! Request extractors whose rejections all go through [`ApiError`]: the caller's user from
//! the bearer key, JSON bodies, query strings and session ids.

use std::sync::Arc;

use agentbox_engine::Engine;
use agentbox_store::UserRecord;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{ApiError, Code};

/// The authenticated caller.
pub struct AuthUser(pub UserRecord);

impl FromRequestParts<Arc<Engine>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, engine: &Arc<Engine>) -> Result<Self, ApiError> {
        user_from_headers(&parts.headers, engine).await.map(AuthUser)
    }
}

/// The user whose API key the `Authorization: Bearer` header carries.
pub async fn user_from_headers(headers: &axum::http::HeaderMap, engine: &Engine) -> Result<UserRecord, ApiError> {
    {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(Code::Unauthorized, "Missing Authorization header; send 'Authorization: Bearer <api key>'."));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::new(Code::Unauthorized, "The Authorization header must be 'Bearer <api key>'."))?;
        match engine.authenticate(key).await? {
            Some(user) => Ok(user),
            None => Err(ApiError::new(Code::Unauthorized, "The API key is unknown or revoked; check the key you send.")),
        }
    }
}

/// A JSON body. An empty body reads as `{}`; unknown fields are ignored; broken JSON and
/// wrong types are 422 with the field's path in `detail` and `errors[].loc`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::PayloadTooLarge, "The request body is larger than the 1 MiB limit.")
            } else {
                ApiError::new(Code::ValidationError, format!("The request body could not be read: {}", e.body_text()))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body into `T` with errors a client can act on.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => bytes,
        // serde would read `[1, 2]` as a struct by position; a body is an object.
        Some(_) if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() => {
            return Err(ApiError::field("body", "", "The request body must be a JSON object."));
        }
        Some(_) => bytes,
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let msg = plain_types(&strip_position(&inner.to_string()));
                match missing_field(&msg) {
                    Some(field) => ApiError::field("body", &field, "is required"),
                    None => ApiError::field("body", if path == "." { "" } else { &path }, msg),
                }
            }
            _ => ApiError::field("body", "", format!("The request body is not valid JSON: {inner}")),
        }
    })
}

/// serde's "missing field `url`" has no path (the field is absent); take the name from it.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// serde names Rust types ("expected i64"); clients know JSON types.
fn plain_types(msg: &str) -> String {
    ["i64", "u64", "u32", "i32", "u16", "u8", "usize"]
        .iter()
        .fold(msg.to_owned(), |m, t| m.replace(&format!("expected {t}"), "expected an integer"))
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A query string; bad values are 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => {
                let text = e.body_text();
                let text = text.trim_start_matches("Failed to deserialize query string: ");
                let (field, msg) = text.split_once(": ").unwrap_or(("", text));
                Err(ApiError::field("query", field, msg.to_owned()))
            }
        }
    }
}

/// The `{id}` of a session path. An id that is not a UUID names no session: the handler
/// gets `None` and answers as for an unknown id.
pub struct SessionId(pub Option<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("session"))?;
        Ok(SessionId(Uuid::parse_str(&raw).ok()))
    }
}

impl SessionId {
    /// The id, or a 404 for one that cannot name a session.
    pub fn require(self) -> Result<Uuid, ApiError> {
        self.0.ok_or_else(|| ApiError::not_found("session"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        url: String,
        n: Option<u32>,
    }

    #[test]
    fn a_wrong_type_names_the_field_without_a_line_number() {
        let err = parse_json::<Body>(br#"{"url": 5}"#).unwrap_err();
        let body = format!("{err:?}");
        assert!(body.contains("url: invalid type: integer `5`, expected a string"), "{body}");
        assert!(!body.contains("line 1"), "{body}");
    }

    #[test]
    fn a_missing_field_is_named_and_broken_json_says_so() {
        let err = parse_json::<Body>(br#"{"n": 1}"#).unwrap_err();
        assert!(format!("{err:?}").contains("\"url\""), "{err:?}");
        let err = parse_json::<Body>(b"{not json").unwrap_err();
        assert!(format!("{err:?}").contains("not valid JSON"), "{err:?}");
        assert_eq!(err.code(), Code::ValidationError);
    }

    #[test]
    fn unknown_fields_are_ignored_and_an_empty_body_reads_as_an_empty_object() {
        #[derive(serde::Deserialize)]
        struct Opt {
            #[allow(dead_code)]
            a: Option<u32>,
        }
        assert!(parse_json::<Opt>(br#"{"a": 1, "zzz": [1,2]}"#).is_ok());
        assert!(parse_json::<Opt>(b"").is_ok());
    }
}
