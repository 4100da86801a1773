//! `${VAR}` and `${VAR:-default}` substitution in config string values.
//!
//! Substitution runs on each parsed string value, never on the raw file, so that TOML quoting
//! cannot be broken by a value and every diagnostic keeps the line and column of the value.
//! `$$` is a literal `$`; a `$` followed by anything else is kept as it is. Messages name the
//! variable but never echo a value or a default, since either may be a secret.

/// Replaces every `${NAME}` / `${NAME:-default}` in `input` from `env`.
///
/// `${NAME:-default}` takes the default when `NAME` is unset or empty (as in a POSIX shell);
/// `${NAME}` with `NAME` unset is an error. Returns every problem in the value.
pub fn substitute(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(r#"unterminated "${" (write "$$" for a literal "$")"#.to_owned());
                rest = "";
                break;
            };
            let inner = &body[..close];
            rest = &body[close + 1..];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                errors.push(
                    r#"malformed "${...}": expected ${NAME} or ${NAME:-default}, NAME of letters, digits and "_""#
                        .to_owned(),
                );
                continue;
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => errors.push(format!(
                    "environment variable {name} is not set (use ${{{name}:-default}} to give a default)"
                )),
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            "PW" => Some("hunter2".into()),
            _ => None,
        }
    }

    fn sub(s: &str) -> Result<String, Vec<String>> {
        substitute(s, &env)
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(sub("${HOST}").unwrap(), "kafka:9092");
        assert_eq!(sub("x-${HOST}-y").unwrap(), "x-kafka:9092-y");
        assert_eq!(sub("${NOPE:-localhost:9092}").unwrap(), "localhost:9092");
        assert_eq!(sub("${HOST:-other}").unwrap(), "kafka:9092");
        assert_eq!(sub("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(sub("${EMPTY}").unwrap(), "");
        assert_eq!(sub("${NOPE:-}").unwrap(), "");
        assert_eq!(sub("${HOST}${HOST}").unwrap(), "kafka:9092kafka:9092");
        assert_eq!(sub("no variables").unwrap(), "no variables");
    }

    #[test]
    fn dollars_escape_and_stay_literal() {
        assert_eq!(sub("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(sub("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(sub("$1 and $x").unwrap(), "$1 and $x");
        assert_eq!(sub("$$$$").unwrap(), "$$");
        // A substituted value is not substituted again.
        let env2 = |_: &str| Some("${HOST}".to_owned());
        assert_eq!(substitute("${A}", &env2).unwrap(), "${HOST}");
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        assert_eq!(
            sub("${KAFKA_BROKERS}").unwrap_err(),
            ["environment variable KAFKA_BROKERS is not set (use ${KAFKA_BROKERS:-default} to give a default)"]
        );
        assert_eq!(sub("${A}/${B}").unwrap_err().len(), 2);
    }

    #[test]
    fn malformed_references_never_echo_the_text() {
        let e = sub("${PW:hunter2}").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("malformed"));
        assert!(!e[0].contains("hunter2"));
        assert!(sub("${}").unwrap_err()[0].starts_with("malformed"));
        assert!(sub("${1X}").unwrap_err()[0].starts_with("malformed"));
        assert!(sub("abc ${HOST").unwrap_err()[0].starts_with("unterminated"));
    }
}
