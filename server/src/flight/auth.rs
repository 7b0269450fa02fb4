//! Flight authentication: HTTP Basic user name and password, exchanged for a bearer token.
//!
//! The users are the configuration's `[[auth.users]]`, the same as pgwire's. A client
//! authenticates with a `Handshake` call carrying `authorization: Basic …` and receives a
//! random token in the `authorization: Bearer …` response header (and the response payload);
//! every other call carries that header. A call may also carry Basic credentials directly, as
//! ADBC does on its first call: it is then answered with a new token the same way.

use std::collections::HashMap;

use base64::Engine as _;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::config::User;

/// What the `authorization` header of a call holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    Missing,
    Basic { user: String, password: String },
    Bearer(String),
}

/// Reads the `authorization` header.
pub fn credentials(metadata: &MetadataMap) -> Result<Credentials, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(Credentials::Missing);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not ASCII"))?
        .trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Status::unauthenticated(format!(
            "unsupported authorization scheme \"{scheme}\": use Basic (user and password) or Bearer (a token from Handshake)"
        )));
    }
    // Go's Flight client (ADBC) sends base64 without padding, others with it.
    let base64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = base64
        .decode(rest)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            Status::unauthenticated("Basic credentials are not valid base64 of UTF-8 text")
        })?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("Basic credentials must be \"user:password\""))?;
    Ok(Credentials::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// The users allowed to connect.
pub struct Users {
    passwords: HashMap<String, String>,
}

impl Users {
    /// `None` when no users are configured: authentication is off.
    pub fn new(users: &[User]) -> Option<Self> {
        (!users.is_empty()).then(|| Self {
            passwords: users
                .iter()
                .map(|u| (u.name.clone(), u.password.clone()))
                .collect(),
        })
    }

    /// Whether `password` is `user`'s. An unknown user is compared against a password nobody
    /// has, so both failures take the same path.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (expected, known) = match self.passwords.get(user) {
            Some(expected) => (expected.as_str(), true),
            None => ("\u{0}no such user\u{0}", false),
        };
        constant_time_eq(expected.as_bytes(), password.as_bytes()) && known
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        let expected = a.get(i % a.len().max(1)).copied().unwrap_or(0);
        difference |= usize::from(expected ^ byte);
    }
    difference == 0
}

/// The error every failed authentication returns.
pub fn refused() -> Status {
    Status::unauthenticated(REFUSED)
}

const REFUSED: &str = "invalid user name or password";

/// Whether `status` is [`refused`]: a wrong user name or password (not a missing or expired
/// token), which the failed-login delay applies to.
pub fn is_refused(status: &Status) -> bool {
    status.code() == tonic::Code::Unauthenticated && status.message() == REFUSED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn basic_and_bearer_headers_are_read() {
        // "alice:s3cret"
        let basic = credentials(&metadata("Basic YWxpY2U6czNjcmV0")).unwrap();
        assert_eq!(
            basic,
            Credentials::Basic {
                user: "alice".to_string(),
                password: "s3cret".to_string()
            }
        );
        // "alice:nope", with and without base64 padding.
        for encoded in ["YWxpY2U6bm9wZQ==", "YWxpY2U6bm9wZQ"] {
            let basic = credentials(&metadata(&format!("Basic {encoded}"))).unwrap();
            assert!(
                matches!(basic, Credentials::Basic { ref password, .. } if password == "nope"),
                "{basic:?}"
            );
        }
        assert_eq!(
            credentials(&metadata("Bearer abc")).unwrap(),
            Credentials::Bearer("abc".to_string())
        );
        assert_eq!(
            credentials(&MetadataMap::new()).unwrap(),
            Credentials::Missing
        );
        assert!(credentials(&metadata("Basic !!!")).is_err());
        assert!(credentials(&metadata("Digest x")).is_err());
    }

    #[test]
    fn only_the_right_password_is_accepted() {
        let users = Users::new(&[User {
            name: "alice".to_string(),
            password: "s3cret".to_string(),
        }])
        .unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "s3cre"));
        assert!(!users.verify("alice", "s3cret!"));
        assert!(!users.verify("bob", "s3cret"));
        assert!(Users::new(&[]).is_none());
    }
}
