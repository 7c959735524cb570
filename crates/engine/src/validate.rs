//! Parse, don't validate: the values a request carries become these types through a
//! fallible constructor whose error says what was wrong and how to fix it.

use std::fmt;

/// Longest URL accepted in any URL field.
pub const MAX_URL_LEN: usize = 2000;
/// Bounds of `max_steps`.
pub const MAX_STEPS_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;

/// An absolute `http` or `https` URL of at most [`MAX_URL_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(url::Url);

/// Why a URL was refused; the text completes "`field` …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must be at most {MAX_URL_LEN} characters long (got {0})")]
    TooLong(usize),
    #[error("must be an absolute URL such as https://example.com/ (got a relative or empty one)")]
    Relative,
    #[error("must use http or https (got {0}:)")]
    Scheme(String),
    #[error("is not a valid URL: {0}")]
    Invalid(String),
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let len = s.chars().count();
        if len > MAX_URL_LEN {
            return Err(UrlError::TooLong(len));
        }
        let parsed = match url::Url::parse(s) {
            Ok(u) => u,
            Err(url::ParseError::RelativeUrlWithoutBase) => return Err(UrlError::Relative),
            Err(e) => return Err(UrlError::Invalid(e.to_string())),
        };
        match parsed.scheme() {
            "http" | "https" => {}
            other => return Err(UrlError::Scheme(other.to_owned())),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::Invalid("it has no host".into()));
        }
        Ok(Self(parsed))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most actions one task may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxSteps(u32);

impl MaxSteps {
    pub fn new(n: i64) -> Result<Self, String> {
        if n < i64::from(*MAX_STEPS_RANGE.start()) || n > i64::from(*MAX_STEPS_RANGE.end()) {
            return Err(format!(
                "must be between {} and {} (got {n})",
                MAX_STEPS_RANGE.start(),
                MAX_STEPS_RANGE.end()
            ));
        }
        Ok(Self(n as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxSteps {
    fn default() -> Self {
        Self(100)
    }
}

/// What to save when a session is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMode {
    #[default]
    None,
    Memory,
    Filesystem,
}

impl SnapshotMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "memory" => Ok(Self::Memory),
            "filesystem" => Ok(Self::Filesystem),
            other => Err(format!("must be one of none, memory, filesystem (got {other:?})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_are_accepted_and_everything_else_says_why_not() {
        assert!(HttpUrl::parse("https://example.com/a?b=c").is_ok());
        assert!(HttpUrl::parse("http://127.0.0.1:8080/").is_ok());
        assert_eq!(HttpUrl::parse("ftp://example.com/"), Err(UrlError::Scheme("ftp".into())));
        assert_eq!(HttpUrl::parse("/relative/path"), Err(UrlError::Relative));
        assert_eq!(HttpUrl::parse(""), Err(UrlError::Relative));
        assert_eq!(HttpUrl::parse("javascript:alert(1)"), Err(UrlError::Scheme("javascript".into())));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(HttpUrl::parse(&long), Err(UrlError::TooLong(long.len())));
        assert!(matches!(HttpUrl::parse("http://"), Err(UrlError::Invalid(_))));
    }

    #[test]
    fn max_steps_must_lie_between_one_and_a_thousand() {
        assert_eq!(MaxSteps::new(1).unwrap().get(), 1);
        assert_eq!(MaxSteps::new(1000).unwrap().get(), 1000);
        assert!(MaxSteps::new(0).unwrap_err().contains("between 1 and 1000"));
        assert!(MaxSteps::new(1001).is_err());
    }

    #[test]
    fn snapshot_modes_parse_by_their_wire_names() {
        assert_eq!(SnapshotMode::parse("memory"), Ok(SnapshotMode::Memory));
        assert!(SnapshotMode::parse("disk").unwrap_err().contains("none, memory, filesystem"));
    }
}
