//! Bearer tokens: the secrets that workers and users present to the
//! coordinator. They live here, free of gRPC, because every process handles
//! them: the coordinator checks them, workers and sweepctl send them.
//!
//! A [`Token`] never prints its value (its `Debug` and `Display` show `***`),
//! so it cannot end up in a log line or an error message by accident. Tokens
//! come from a file or an environment variable, never only from a command-line
//! argument, which every user of the machine can read in `ps`. Comparison goes
//! through SHA-256 digests folded with XOR, so it takes the same time whatever
//! the length of the guess and wherever the first differing byte is.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Fewest bytes a token may have: 16 random bytes already resist guessing;
/// `head -c 32 /dev/urandom | base64` gives 44.
pub const MIN_TOKEN_LEN: usize = 16;

/// Most bytes a token may have: a header value, not a file.
pub const MAX_TOKEN_LEN: usize = 4096;

/// How to create a token; quoted by every error that asks for one.
pub const HOW_TO_CREATE: &str = "create one with `head -c 32 /dev/urandom | base64 > worker.token` \
     (and the same for admin.token), then `chmod 600` the file";

/// Which token a bad one should have been: the same message serves the
/// coordinator (which makes them) and its clients (which are given them).
const WHICH_TOKEN: &str = "a worker takes the coordinator's worker token file and sweepctl its \
     admin token file; for a new coordinator,";

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("{}: cannot read token file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `origin` names the file or the variable; never the value.
    #[error("{origin}: token is empty; {WHICH_TOKEN} {HOW_TO_CREATE}")]
    Empty { origin: String },
    #[error("{origin}: token is shorter than {MIN_TOKEN_LEN} bytes; {WHICH_TOKEN} {HOW_TO_CREATE}")]
    TooShort { origin: String },
    #[error("{origin}: token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong { origin: String },
    #[error(
        "{origin}: token may only contain printable ASCII without spaces (it travels in an HTTP header)"
    )]
    BadCharacters { origin: String },
}

/// A bearer token. Its value is reachable only through [`Token::expose`], so
/// that every place that handles the secret itself is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Checks and wraps a token; `source` names where it came from, for errors.
    /// Surrounding whitespace (the newline a shell leaves in a file) is removed.
    pub fn new(value: &str, source: &str) -> Result<Self, TokenError> {
        let value = value.trim();
        let origin = source.to_string();
        if value.is_empty() {
            return Err(TokenError::Empty { origin });
        }
        if value.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { origin });
        }
        if value.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { origin });
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacters { origin });
        }
        Ok(Token(value.to_string()))
    }

    /// Reads a token from a file.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(&text, &path.display().to_string())
    }

    /// The token from `file` if given, else from the environment variable
    /// `env_var` if set (and non-empty), else none.
    pub fn load(file: Option<&Path>, env_var: &str) -> Result<Option<Self>, TokenError> {
        Self::load_with(file, env_var, std::env::var(env_var).ok())
    }

    /// [`Token::load`] with the variable's value passed in, so that tests need
    /// not touch the process environment.
    pub fn load_with(
        file: Option<&Path>,
        env_var: &str,
        env_value: Option<String>,
    ) -> Result<Option<Self>, TokenError> {
        if let Some(path) = file {
            return Self::from_file(path).map(Some);
        }
        match env_value {
            Some(value) if !value.trim().is_empty() => {
                Self::new(&value, &format!("${env_var}")).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest that the coordinator keeps and compares against.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// SHA-256 of a token. Comparing digests instead of the tokens makes both
/// sides the same length, so the comparison leaks neither the length of the
/// secret nor how much of a guess was right.
#[derive(Clone, Copy)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(bytes: &[u8]) -> Self {
        TokenDigest(Sha256::digest(bytes).into())
    }

    /// Constant-time equality (`subtle`), so that timing tells nothing about
    /// how many bytes of a guess were right.
    pub fn ct_eq(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0Cg==";

    #[test]
    fn debug_and_display_hide_the_value() {
        let token = Token::new(GOOD, "test").unwrap();
        assert_eq!(format!("{token}"), "***");
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert!(!format!("{:?}", token.digest()).contains(GOOD));
        assert_eq!(token.expose(), GOOD);
    }

    #[test]
    fn trims_the_newline_a_file_ends_with() {
        let token = Token::new(&format!("  {GOOD}\n"), "test").unwrap();
        assert_eq!(token.expose(), GOOD);
    }

    #[test]
    fn rejects_empty_short_long_and_unprintable_tokens() {
        assert!(matches!(
            Token::new(" \n", "f"),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            Token::new("short", "f"),
            Err(TokenError::TooShort { .. })
        ));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            Token::new(&long, "f"),
            Err(TokenError::TooLong { .. })
        ));
        for bad in [
            "aaaaaaaa bbbbbbbbbb",
            "aaaaaaaaaaaaaaaa\0",
            "aaaaaaaaaaaaaaaaé",
            "aaaaaaaa\naaaaaaaaa",
        ] {
            assert!(
                matches!(Token::new(bad, "f"), Err(TokenError::BadCharacters { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_source_but_never_the_value() {
        let err = Token::new("tooshort-secret", "/etc/sweep/worker.token").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("/etc/sweep/worker.token"), "{message}");
        assert!(!message.contains("tooshort-secret"), "{message}");
        assert!(message.contains("head -c 32 /dev/urandom"), "{message}");
    }

    #[test]
    fn loads_from_file_before_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.token");
        std::fs::write(&path, format!("{GOOD}\n")).unwrap();
        let other = "from-the-environment-0123456789";
        let token = Token::load_with(Some(&path), "SWEEP_TOKEN", Some(other.into()))
            .unwrap()
            .unwrap();
        assert_eq!(token.expose(), GOOD);

        let token = Token::load_with(None, "SWEEP_TOKEN", Some(other.into()))
            .unwrap()
            .unwrap();
        assert_eq!(token.expose(), other);

        assert!(
            Token::load_with(None, "SWEEP_TOKEN", None)
                .unwrap()
                .is_none()
        );
        assert!(
            Token::load_with(None, "SWEEP_TOKEN", Some(String::new()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_missing_file_or_bad_env_value_is_an_error_naming_it() {
        let missing = Path::new("/nonexistent/worker.token");
        let err = Token::load_with(Some(missing), "SWEEP_TOKEN", None).unwrap_err();
        assert!(matches!(err, TokenError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/worker.token"));

        let err = Token::load_with(None, "SWEEP_TOKEN", Some("short".into())).unwrap_err();
        assert!(err.to_string().contains("$SWEEP_TOKEN"), "{err}");
    }

    #[test]
    fn digests_compare_equal_only_for_equal_tokens() {
        let a = Token::new(GOOD, "a").unwrap().digest();
        let b = Token::new(GOOD, "b").unwrap().digest();
        let c = Token::new(&format!("{GOOD}x"), "c").unwrap().digest();
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
        assert!(!TokenDigest::of(b"").ct_eq(&a));
    }
}
