//! Who may look at the dashboard. With an admin token configured, every
//! request but the login form and the static assets needs either
//! `Authorization: Bearer <admin token>` (scripts, the API) or the session
//! cookie that the login form sets (browsers). The cookie holds a digest of
//! the token and a secret drawn at start, never the token: it is HttpOnly,
//! SameSite=Strict (so other sites cannot make a browser use it) and Secure
//! under TLS; a restart of the coordinator signs everyone out.
//!
//! Every answer also carries the security headers: a Content-Security-Policy
//! that allows only this server's own script and styles, no framing, no
//! sniffing, no referrer.

use axum::Form;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use sweep_core::token::{Token, TokenDigest};

use super::AppState;
use super::pages;
use crate::error::{CoordinatorError, Result};

const COOKIE: &str = "sweep_session";

/// The policy of every page: the page script and stylesheet from here, no
/// inline script, images from here (figures) or data: URLs.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

pub struct Access {
    token: TokenDigest,
    /// The cookie value of a signed-in browser, and its digest (what an
    /// offered cookie is compared with).
    session: String,
    session_digest: TokenDigest,
}

impl Access {
    pub fn new(token: &Token) -> Result<Self> {
        let mut secret = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut secret)
            .map_err(|_| CoordinatorError::Internal("no random numbers for the session".into()))?;
        let mut hasher = Sha256::new();
        hasher.update(secret);
        hasher.update(token.expose().as_bytes());
        let session = hex::encode(hasher.finalize());
        Ok(Access {
            token: token.digest(),
            session_digest: TokenDigest::of(session.as_bytes()),
            session,
        })
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|offered| TokenDigest::of(offered.trim().as_bytes()).ct_eq(&self.token));
        bearer || self.has_session(headers)
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|value| TokenDigest::of(value.as_bytes()).ct_eq(&self.session_digest))
    }
}

/// The middleware in front of every route.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = path == "/login" || path.starts_with("/assets/");
    let mut response = match &state.access {
        Some(access) if !open && !access.allows(request.headers()) => {
            if path.starts_with("/api/") {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({
                        "error": "this dashboard needs the admin token: Authorization: Bearer <token>"
                    })),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            } else if request.method() == Method::GET {
                Redirect::to("/login").into_response()
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }
        }
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(PAGE_CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

pub async fn login_form(State(state): State<AppState>) -> Response {
    if state.access.is_none() {
        return Redirect::to("/").into_response();
    }
    pages::login(None).into_response()
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let Some(access) = &state.access else {
        return Redirect::to("/").into_response();
    };
    if !TokenDigest::of(form.token.trim().as_bytes()).ct_eq(&access.token) {
        tracing::warn!("dashboard login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            pages::login(Some("That is not the admin token.")),
        )
            .into_response();
    }
    let secure = if state.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        access.session
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
