//! A client for the schema registry's REST API (the Confluent protocol, which other registries
//! serve too): writer schemas by id and a subject's latest schema.
//!
//! Only the two read calls a consumer needs are made:
//! `GET /schemas/ids/{id}` → `{"schema": "<schema JSON as a string>"}` and
//! `GET /subjects/{subject}/versions/latest` → `{"subject", "version", "id", "schema"}`.
//! A non-Avro schema carries `"schemaType"` (`PROTOBUF`, `JSON`); Avro's may omit it.

use std::time::Duration;

use serde_json::Value;

use crate::source::ConnectorError;

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A schema registry reached over HTTP(S), optionally with basic authentication.
#[derive(Clone)]
pub struct SchemaRegistry {
    base: url::Url,
    client: reqwest::Client,
    user: Option<(String, Option<String>)>,
}

impl std::fmt::Debug for SchemaRegistry {
    // The password never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.base.as_str())
            .finish()
    }
}

/// A subject's latest registered schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestSchema {
    pub id: u32,
    pub version: i64,
    pub schema: String,
}

impl SchemaRegistry {
    /// A client for the registry at `url` (http or https).
    pub fn new(
        url: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Self, ConnectorError> {
        let invalid = |reason: String| ConnectorError::InvalidOption {
            option: "schema_registry_url".to_string(),
            value: url.to_string(),
            reason,
        };
        let mut base = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("use an http:// or https:// URL".to_string()));
        }
        if !base.path().ends_with('/') {
            // So that joining "schemas/ids/1" keeps a path prefix such as /registry.
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        if password.is_some() && username.is_none() {
            return Err(ConnectorError::MissingOption {
                option: "schema_registry.username".to_string(),
                connector: "kafka (schema_registry.password is set)".to_string(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            base,
            client,
            user: username.map(|u| (u, password)),
        })
    }

    /// The registry's URL, for messages.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    fn error(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::SchemaRegistry {
            url: self.base.to_string(),
            message: message.into(),
        }
    }

    /// GETs `path`; `None` when the registry answers 404 (no such id or subject).
    async fn get(&self, path: &str) -> Result<Option<Value>, ConnectorError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.error(format!("bad request path {path}: {e}")))?;
        let mut request = self
            .client
            .get(url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some((user, password)) = &self.user {
            request = request.basic_auth(user, password.as_ref());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.error(format!("GET {path}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.error(format!("GET {path}: {e}")))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(self.error(format!("GET {path}: HTTP {status}: {detail}")));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| self.error(format!("GET {path}: the answer is not JSON: {e}")))
    }

    fn schema_text(&self, what: &str, answer: &Value) -> Result<String, ConnectorError> {
        if let Some(kind) = answer.get("schemaType").and_then(Value::as_str) {
            if !kind.eq_ignore_ascii_case("AVRO") {
                return Err(self.error(format!("{what} is a {kind} schema, not Avro")));
            }
        }
        answer
            .get("schema")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.error(format!("{what}: the answer has no \"schema\" string")))
    }

    /// The writer schema registered under `id`; `None` when the registry does not know it.
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<String>, ConnectorError> {
        match self.get(&format!("schemas/ids/{id}")).await? {
            None => Ok(None),
            Some(answer) => Ok(Some(self.schema_text(&format!("schema id {id}"), &answer)?)),
        }
    }

    /// The latest schema of `subject`; `None` when the subject has none.
    pub async fn latest(&self, subject: &str) -> Result<Option<LatestSchema>, ConnectorError> {
        let path = format!("subjects/{}/versions/latest", encode_segment(subject));
        let Some(answer) = self.get(&path).await? else {
            return Ok(None);
        };
        let what = format!("the latest schema of subject '{subject}'");
        let schema = self.schema_text(&what, &answer)?;
        let id = answer
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.error(format!("{what}: the answer has no schema id")))?;
        let version = answer.get("version").and_then(Value::as_i64).unwrap_or(0);
        Ok(Some(LatestSchema {
            id,
            version,
            schema,
        }))
    }
}

/// Percent-encodes a path segment (subject names may hold any character).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_percent_encoded_and_urls_checked() {
        assert_eq!(encode_segment("orders-value"), "orders-value");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        let err = SchemaRegistry::new("ftp://x", None, None).unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
        let err = SchemaRegistry::new("http://x", None, Some("p".into())).unwrap_err();
        assert!(
            err.to_string().contains("schema_registry.username"),
            "{err}"
        );
        let registry = SchemaRegistry::new("http://h:8081/prefix", None, None).unwrap();
        assert_eq!(registry.url(), "http://h:8081/prefix/");
    }
}
