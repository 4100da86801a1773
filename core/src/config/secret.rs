//! Secret values of the config (passwords, keys, tokens) and the rule that says which
//! librdkafka properties are secret.
//!
//! A [`SecretString`] prints as `***` in both `Debug` and `Display`, so a config can be logged
//! or put in an error with `{:?}` without leaking; the one place that hands the value to a
//! client library calls [`SecretString::expose`] explicitly, which is easy to grep for.

use std::fmt;

/// What a secret prints as.
pub const REDACTED: &str = "***";

/// A string that never shows its value in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must hand it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.pem`,
/// `sasl.jaas.config`, `sasl.oauthbearer.config`, ...). Errs on the side of hiding: a
/// property that merely names a key file is hidden too, which costs nothing.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key",
        "sasl.jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|marker| name.contains(marker))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_properties_are_recognised() {
        for name in [
            "sasl.password",
            "ssl.key.pem",
            "ssl.key.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "SASL.PASSWORD",
            "some.token.value",
        ] {
            assert!(is_secret_property(name), "{name} should be secret");
        }
        for name in [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "client.id",
            "session.timeout.ms",
        ] {
            assert!(!is_secret_property(name), "{name} should not be secret");
        }
    }
}
