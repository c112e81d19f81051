//! `/files/<sweep>/...`: the files of the run layout (figures, the sweep
//! report, metrics), and nothing outside it. A path is refused before it
//! touches the disk when any component is empty, `.`, `..`, hidden or holds a
//! backslash or NUL (the router has already decoded `%2e%2e` into `..`);
//! what remains is resolved (symlinks followed) and must still lie inside the
//! state directory. Only regular files are served, with a policy that allows
//! no script at all: a report is HTML with inline styles and SVG, nothing more.

use std::path::{Component, Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The policy of a served file: styles inline (the report's), images from
/// here, and nothing that runs.
const FILE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn serve(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    let Some(file) = confine(&state.shared.state_dir, &path) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(FILE_CSP),
            );
            response
        }
        Err(_) => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The file `relative` names inside `root`, or None when it is not a plain
/// file there.
pub fn confine(root: &FsPath, relative: &str) -> Option<PathBuf> {
    let relative = FsPath::new(relative);
    let mut depth = 0;
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return None;
        };
        let part = part.to_str()?;
        if part.is_empty() || part.starts_with('.') || part.contains(['\\', '\0']) {
            return None;
        }
        depth += 1;
    }
    // `<sweep>/<file>` at least: the database beside the sweeps is not served.
    if depth < 2 {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let resolved = root.join(relative).canonicalize().ok()?;
    (resolved.starts_with(&root) && resolved.is_file()).then_some(resolved)
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("md" | "txt" | "log" | "yaml" | "csv") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_files_inside_the_root_are_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("runs");
        std::fs::create_dir_all(root.join("s/base/seed_1")).expect("mkdir");
        std::fs::write(root.join("s/base/seed_1/metrics.json"), "{}").expect("write");
        std::fs::write(root.join("coordinator.sqlite"), "db").expect("write");
        std::fs::write(dir.path().join("secret"), "x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("s/link")).expect("link");

        assert!(confine(&root, "s/base/seed_1/metrics.json").is_some());
        for refused in [
            "s/../../secret",
            "s/base/../../secret",
            "../secret",
            "/etc/passwd",
            "s//base",
            "coordinator.sqlite",
            "s/.hidden",
            "s/link",
            "s/base/seed_1",
            "s\\..\\secret/x",
        ] {
            assert!(confine(&root, refused).is_none(), "{refused} was served");
        }
    }
}
