//! `${VAR}` and `${VAR:-default}` in configuration strings.
//!
//! Hand-written (about 30 lines) rather than a shell-expansion crate, which
//! would also rewrite `$` elsewhere, e.g. in JSONPath selectors. Only string
//! fields that can hold secrets or addresses are expanded, after parsing.

/// Expands `${NAME}` and `${NAME:-default}` using `lookup`. A lone `$` is kept.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("`${{{inner}}}` is not a variable reference"));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `expand` with the process environment.
pub fn expand_env(s: &str) -> Result<String, String> {
    expand(s, |n| std::env::var(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        (n == "TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn expands_references() {
        assert_eq!(expand("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cret");
        assert_eq!(expand("${MISSING:-x}/${TOKEN}", env).unwrap(), "x/s3cret");
        assert_eq!(expand("$.a and $5", env).unwrap(), "$.a and $5");
        assert!(expand("${MISSING}", env).unwrap_err().contains("MISSING"));
        assert!(expand("${TOKEN", env).is_err());
        assert!(expand("${1X}", env).is_err());
    }
}
