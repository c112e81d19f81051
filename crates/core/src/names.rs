//! Names that arrive from configs or over the network and end up as path
//! components (sweep, variant and artifact names). Validating them in one place
//! keeps every file the coordinator writes inside its state directory.

/// Longest accepted name, in bytes: well under every file system's limit.
pub const MAX_NAME_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {name:?} is longer than {MAX_NAME_LEN} bytes")]
    TooLong { what: &'static str, name: String },
    #[error(
        "{what} {name:?} may only contain letters, digits, '-', '_' and '.', and may neither start with '.' nor contain '..'"
    )]
    BadCharacters { what: &'static str, name: String },
}

/// Checks that `name` is safe as a single path component: ASCII letters,
/// digits, `-`, `_` and `.`, not starting with `.` (which also rules out `..`)
/// and not containing `..` anywhere, so that no later joining or trimming of
/// names can ever produce a parent-directory step.
pub fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            name: name.chars().take(MAX_NAME_LEN).collect(),
        });
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok_chars || name.starts_with('.') || name.contains("..") {
        return Err(NameError::BadCharacters {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["baseline", "no_dropout", "seed-42", "best.safetensors"] {
            assert_eq!(validate("name", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_names_that_could_escape_a_directory() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "",
            "..",
            ".",
            "../x",
            "a/b",
            "/etc",
            "a\\b",
            "a\0b",
            ".hidden",
            "a..",
            "a..b",
            long.as_str(),
            "é",
        ] {
            assert!(validate("name", name).is_err(), "{name:?} was accepted");
        }
    }
}
