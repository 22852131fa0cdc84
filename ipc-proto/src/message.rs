//! JSON-RPC 2.0 envelopes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorKind, RpcError};

/// A request id: JSON-RPC allows a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

/// A request as a client sends it. Its `Debug` masks token fields in `params` (a
/// `token.challenge` carries the rejected access token).
#[derive(Clone, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    pub id: RequestId,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl Request {
    pub fn new(id: i64, method: &str, params: Value) -> Self {
        Request {
            jsonrpc: "2.0".into(),
            id: RequestId::Number(id),
            method: method.into(),
            params,
        }
    }
}

/// A reply: exactly one of `result` or `error`. `id` is null only when the request's id
/// could not be read. Its `Debug` masks token fields in `result` (a `token.get` answer).
#[derive(Clone, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: RequestId, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            id: Some(id),
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: Option<RequestId>, error: RpcError) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("jsonrpc", &self.jsonrpc)
            .field("id", &self.id)
            .field("method", &self.method)
            .field("params", &Masked(&self.params))
            .finish()
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("jsonrpc", &self.jsonrpc)
            .field("id", &self.id)
            .field("result", &self.result.as_ref().map(Masked))
            .field("error", &self.error)
            .finish()
    }
}

/// Names of the protocol's fields that carry a token; `Debug` output shows `***` instead.
pub(crate) const TOKEN_FIELDS: &[&str] = &["access_token", "rejected_token", "refresh_token"];

/// A JSON value printed with every token field (at any depth) masked.
struct Masked<'a>(&'a Value);

impl std::fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn mask(v: &mut Value) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        if TOKEN_FIELDS.contains(&k.as_str()) && !v.is_null() {
                            *v = Value::String("***".into());
                        } else {
                            mask(v);
                        }
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(mask),
                _ => {}
            }
        }
        let mut copy = self.0.clone();
        mask(&mut copy);
        std::fmt::Debug::fmt(&copy, f)
    }
}

/// A successful reply written straight from its typed result, without building a
/// `serde_json::Value` first; it reads back as a `Response`.
#[derive(Serialize)]
pub struct Reply<'a, T: Serialize> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    result: &'a T,
}

impl<'a, T: Serialize> Reply<'a, T> {
    pub fn new(id: &'a RequestId, result: &'a T) -> Self {
        Reply {
            jsonrpc: "2.0",
            id,
            result,
        }
    }
}

/// A message from the daemon that answers no request (e.g. `login.pending` with the URL).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub jsonrpc: String,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

impl Notification {
    pub fn new(method: &str, params: Value) -> Self {
        Notification {
            jsonrpc: "2.0".into(),
            method: method.into(),
            params,
        }
    }
}

/// What a line from a client turned out to be.
#[derive(Debug)]
pub enum Incoming {
    Request(Request),
    /// A request-shaped object the daemon must answer with an error (id kept when readable).
    Invalid(Option<RequestId>, RpcError),
}

impl Incoming {
    /// Parses one frame (a line without its newline) into a request or an error to send back.
    pub fn parse(line: &[u8]) -> Incoming {
        // A well-formed request is read in one pass, straight into its type; only a line
        // that is not one is read again, as a JSON value, to say what is wrong with it and
        // answer with its id when it has one.
        if let Ok(request) = serde_json::from_slice::<Request>(line)
            && request.jsonrpc == "2.0"
        {
            return Incoming::Request(request);
        }
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return Incoming::Invalid(
                    None,
                    RpcError::new(ErrorKind::ParseError, format!("the line is not JSON: {e}")),
                );
            }
        };
        let id = value
            .get("id")
            .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
        if value.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Incoming::Invalid(
                id,
                RpcError::new(
                    ErrorKind::InvalidRequest,
                    "not a JSON-RPC 2.0 request: \"jsonrpc\" must be \"2.0\"",
                ),
            );
        }
        match serde_json::from_value::<Request>(value) {
            Ok(req) => Incoming::Request(req),
            Err(e) => Incoming::Invalid(
                id,
                RpcError::new(
                    ErrorKind::InvalidRequest,
                    format!("not a JSON-RPC 2.0 request: {e}"),
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_reply_reads_back_as_a_response() {
        let id = RequestId::String("r-1".into());
        let result = serde_json::json!({"access_token": "x", "expires_in": 5});
        let line = serde_json::to_vec(&Reply::new(&id, &result)).unwrap();
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.jsonrpc, "2.0");
        assert_eq!(back.id, Some(id));
        assert_eq!(back.result, Some(result));
        assert!(back.error.is_none());
    }

    #[test]
    fn parses_a_request() {
        match Incoming::parse(br#"{"jsonrpc":"2.0","id":7,"method":"status"}"#) {
            Incoming::Request(r) => {
                assert_eq!(r.id, RequestId::Number(7));
                assert_eq!(r.method, "status");
                assert!(r.params.is_null());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_reads_as_a_json_value_would() {
        // The one-pass read refuses a repeated field; the second read keeps the last, as
        // every reader of the line as a JSON value does.
        match Incoming::parse(br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"status"}"#) {
            Incoming::Request(r) => assert_eq!(r.id, RequestId::Number(2)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_parse_error_without_id() {
        match Incoming::parse(b"{nope") {
            Incoming::Invalid(None, e) => assert_eq!(e.code, -32700),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_method_keeps_the_id() {
        match Incoming::parse(br#"{"jsonrpc":"2.0","id":"a"}"#) {
            Incoming::Invalid(Some(RequestId::String(id)), e) => {
                assert_eq!(id, "a");
                assert_eq!(e.kind(), Some(ErrorKind::InvalidRequest));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_version_is_invalid() {
        assert!(matches!(
            Incoming::parse(br#"{"jsonrpc":"1.0","id":1,"method":"status"}"#),
            Incoming::Invalid(Some(_), _)
        ));
    }
}
