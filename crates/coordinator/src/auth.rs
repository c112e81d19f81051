//! Who may call what. Workers reach the coordinator over networks nobody
//! controls (Colab, rented GPU boxes), so every RPC carries a bearer token in
//! its `authorization` metadata, and the token's role decides which methods it
//! opens:
//!
//! - a **worker** token opens the methods a worker needs to run jobs
//!   ([`WORKER_METHODS`]): register, lease, heartbeat, report, upload and
//!   download artifacts, complete, fetch the dataset, record an attempt's
//!   provenance;
//! - an **admin** token opens everything, including submitting and cancelling
//!   sweeps and reading results ([`ADMIN_METHODS`] and any method added later:
//!   what is not listed as a worker method needs admin).
//!
//! No token or a wrong one is answered `unauthenticated`; a worker token on an
//! admin method `permission_denied`. The gRPC health service stays open, for
//! load balancers and orchestrators that hold no token.
//!
//! The check is [`RequireAuth`], a wrapper around the generated server that
//! sees the HTTP/2 request (and so the method path, which a tonic interceptor
//! does not) and answers before the request body is even read. Only SHA-256
//! digests of the tokens are kept, compared in constant time.
//!
//! Without any token the coordinator runs open, which [`check_exposure`]
//! allows only on a loopback address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use sweep_core::token::{HOW_TO_CREATE, Token, TokenDigest};
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap};
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

/// Path prefix of the coordinator's methods (`/<package>.<Service>/`).
pub const COORDINATOR_PREFIX: &str = "/sweep.v1.Coordinator/";

/// Path prefix of the standard gRPC health service, open to everyone.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The methods a worker token opens.
pub const WORKER_METHODS: [&str; 10] = [
    "RegisterWorker",
    "LeaseJob",
    "Heartbeat",
    "ReportEpoch",
    "UploadArtifact",
    "DownloadArtifact",
    "CompleteJob",
    "FetchDataset",
    "AppendJobLog",
    "RecordAttempt",
];

/// The methods of today's protocol that only an admin token opens; listed for
/// tests and documentation, since any method missing from [`WORKER_METHODS`]
/// needs admin anyway.
pub const ADMIN_METHODS: [&str; 9] = [
    "SubmitSweep",
    "GetStatus",
    "WatchStatus",
    "GetResults",
    "Cancel",
    "Retry",
    "ListWorkers",
    "GetJobLogs",
    "GetProvenance",
];

/// What a token may do. Ordered: a higher role may do all a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Worker,
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::Admin => "admin",
        })
    }
}

/// What a request path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health checks).
    Open,
    /// A token of at least this role.
    Requires(Role),
}

/// Maps a gRPC method path to what it needs; deny by default, so a method
/// added to the protocol later is admin-only until listed as a worker method.
pub fn required_access(path: &str) -> Access {
    if path.starts_with(HEALTH_PREFIX) {
        return Access::Open;
    }
    match path.strip_prefix(COORDINATOR_PREFIX) {
        Some(method) if WORKER_METHODS.contains(&method) => Access::Requires(Role::Worker),
        _ => Access::Requires(Role::Admin),
    }
}

/// Why a request was turned away. Messages never contain a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <token>` metadata")]
    MissingToken,
    #[error("malformed authorization metadata: expected `Bearer <token>`")]
    Malformed,
    #[error("invalid token")]
    WrongToken,
    #[error("a {role} token may not call {method}")]
    Forbidden { role: Role, method: String },
}

/// Why the coordinator cannot start with the tokens (or lack of them) given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthSetupError {
    #[error(
        "a worker token was given but no admin token: nobody could submit or cancel a sweep; \
         give --admin-token-file (or $SWEEP_ADMIN_TOKEN) too; {HOW_TO_CREATE}"
    )]
    MissingAdminToken,
    #[error(
        "the worker and admin tokens are the same; they must differ so that a worker cannot act as admin"
    )]
    SameToken,
    #[error(
        "refusing to listen on {addr} without tokens: anyone who reaches it could submit jobs \
         and read results. Give --worker-token-file and --admin-token-file (or $SWEEP_WORKER_TOKEN \
         and $SWEEP_ADMIN_TOKEN); {HOW_TO_CREATE}. Or listen on 127.0.0.1."
    )]
    Exposed { addr: SocketAddr },
}

/// The digests of the configured tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// `None`: workers use the admin token.
    worker: Option<TokenDigest>,
    admin: TokenDigest,
}

impl Authenticator {
    /// `Ok(None)` when no token is configured: the coordinator runs open
    /// (allowed on loopback only, see [`check_exposure`]). A worker token
    /// alone is refused (nobody could administer the sweep), as are two equal
    /// tokens (a worker would be an admin).
    pub fn new(
        worker: Option<&Token>,
        admin: Option<&Token>,
    ) -> Result<Option<Self>, AuthSetupError> {
        match (worker, admin) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(AuthSetupError::MissingAdminToken),
            (Some(worker), Some(admin)) if worker.digest().ct_eq(&admin.digest()) => {
                Err(AuthSetupError::SameToken)
            }
            (worker, Some(admin)) => Ok(Some(Authenticator {
                worker: worker.map(Token::digest),
                admin: admin.digest(),
            })),
        }
    }

    /// The role of the token in `headers`, if it may call `path`; `None` for
    /// open paths, which need no token.
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<Option<Role>, AuthError> {
        let required = match required_access(path) {
            Access::Open => return Ok(None),
            Access::Requires(role) => role,
        };
        let presented = TokenDigest::of(bearer_token(headers)?.as_bytes());
        // Both comparisons always run, so the time taken does not tell which
        // role (if any) a guess came close to.
        let is_admin = self.admin.ct_eq(&presented);
        let is_worker = self.worker.is_some_and(|worker| worker.ct_eq(&presented));
        let role = match (is_admin, is_worker) {
            (true, _) => Role::Admin,
            (false, true) => Role::Worker,
            (false, false) => return Err(AuthError::WrongToken),
        };
        if role < required {
            return Err(AuthError::Forbidden {
                role,
                method: method_name(path),
            });
        }
        Ok(Some(role))
    }
}

/// The token of an `authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 7235); the token itself is not.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// The method part of a path, bounded so that a hostile path cannot make the
/// error message (and the log line) arbitrarily long.
fn method_name(path: &str) -> String {
    const MAX: usize = 64;
    let method = path.strip_prefix(COORDINATOR_PREFIX).unwrap_or(path);
    method.chars().take(MAX).collect()
}

/// Refuses to serve without tokens on anything but a loopback address.
pub fn check_exposure(
    addr: SocketAddr,
    auth: Option<&Authenticator>,
) -> Result<(), AuthSetupError> {
    if auth.is_none() && !addr.ip().is_loopback() {
        return Err(AuthSetupError::Exposed { addr });
    }
    Ok(())
}

/// Wraps a generated gRPC server so that each request is checked before it
/// reaches a handler. The role found is put in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequireAuth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> RequireAuth<S> {
    pub fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        RequireAuth { inner, auth }
    }
}

impl<S: NamedService> NamedService for RequireAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for RequireAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.auth.check(request.uri().path(), request.headers()) {
            Ok(role) => {
                if let Some(role) = role {
                    request.extensions_mut().insert(role);
                }
                // The clone is the one made ready for this call (tower's rule:
                // call the instance that poll_ready was called on).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(request))
            }
            Err(err) => {
                match &err {
                    // Anyone can send these; keep them out of the default log.
                    AuthError::MissingToken | AuthError::Malformed | AuthError::WrongToken => {
                        tracing::debug!(path = %method_name(request.uri().path()), reason = %err, "unauthenticated request")
                    }
                    AuthError::Forbidden { .. } => tracing::warn!(reason = %err, "request denied"),
                }
                let status = tonic::Status::from(crate::error::CoordinatorError::from(err));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const WORKER: &str = "worker-token-0123456789abcdef";
    const ADMIN: &str = "admin-token-0123456789abcdef";

    fn tokens() -> (Token, Token) {
        (
            Token::new(WORKER, "w").unwrap(),
            Token::new(ADMIN, "a").unwrap(),
        )
    }

    fn auth() -> Authenticator {
        let (worker, admin) = tokens();
        Authenticator::new(Some(&worker), Some(&admin))
            .unwrap()
            .unwrap()
    }

    fn headers(value: Option<&[u8]>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(value) = value {
            map.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn bearer(token: &str) -> HeaderMap {
        headers(Some(format!("Bearer {token}").as_bytes()))
    }

    #[test]
    fn refusals_keep_the_words_sweepctl_reads_its_hints_from() {
        // sweepctl's client.rs picks its advice by these words.
        assert!(AuthError::MissingToken.to_string().contains("missing"));
        let forbidden = AuthError::Forbidden {
            role: Role::Worker,
            method: "GetStatus".into(),
        };
        assert!(forbidden.to_string().contains("worker token"));
    }

    fn path(method: &str) -> String {
        format!("{COORDINATOR_PREFIX}{method}")
    }

    #[test]
    fn maps_every_method_to_its_role() {
        for method in WORKER_METHODS {
            assert_eq!(
                required_access(&path(method)),
                Access::Requires(Role::Worker),
                "{method}"
            );
        }
        for method in ADMIN_METHODS {
            assert_eq!(
                required_access(&path(method)),
                Access::Requires(Role::Admin),
                "{method}"
            );
        }
        // Deny by default: unknown methods, other services, odd paths.
        for odd in [
            path("DropEverything"),
            path(""),
            path("LeaseJob/x"),
            "/".into(),
            String::new(),
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into(),
            "/sweep.v1.Coordinator".into(),
            "/other.Coordinator/LeaseJob".into(),
        ] {
            assert_eq!(
                required_access(&odd),
                Access::Requires(Role::Admin),
                "{odd:?}"
            );
        }
        assert_eq!(
            required_access("/grpc.health.v1.Health/Check"),
            Access::Open
        );
        assert_eq!(
            required_access("/grpc.health.v1.Health/Watch"),
            Access::Open
        );
    }

    #[test]
    fn health_needs_no_token() {
        assert_eq!(
            auth().check("/grpc.health.v1.Health/Check", &headers(None)),
            Ok(None)
        );
    }

    #[test]
    fn no_token_or_a_malformed_header_is_unauthenticated() {
        let auth = auth();
        let lease = path("LeaseJob");
        assert_eq!(
            auth.check(&lease, &headers(None)),
            Err(AuthError::MissingToken)
        );
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer   ",
            b"Basic d29ya2VyOnNlY3JldA==",
            WORKER.as_bytes(),
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(
                auth.check(&lease, &headers(Some(bad))),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_wrong_token_is_unauthenticated() {
        let auth = auth();
        for wrong in [
            "worker-token-0123456789abcdeX",
            "worker-token-0123456789abcde",
            "x",
            &format!("{WORKER}{ADMIN}"),
        ] {
            assert_eq!(
                auth.check(&path("LeaseJob"), &bearer(wrong)),
                Err(AuthError::WrongToken),
                "{wrong}"
            );
            assert_eq!(
                auth.check(&path("SubmitSweep"), &bearer(wrong)),
                Err(AuthError::WrongToken),
                "{wrong}"
            );
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let headers = headers(Some(format!("bEaReR {WORKER}").as_bytes()));
        assert_eq!(
            auth().check(&path("Heartbeat"), &headers),
            Ok(Some(Role::Worker))
        );
    }

    #[test]
    fn a_worker_token_opens_worker_methods_only() {
        let auth = auth();
        for method in WORKER_METHODS {
            assert_eq!(
                auth.check(&path(method), &bearer(WORKER)),
                Ok(Some(Role::Worker)),
                "{method}"
            );
        }
        for method in ADMIN_METHODS.iter().copied().chain(["Unknown"]) {
            assert_eq!(
                auth.check(&path(method), &bearer(WORKER)),
                Err(AuthError::Forbidden {
                    role: Role::Worker,
                    method: method.to_string()
                }),
                "{method}"
            );
        }
    }

    #[test]
    fn an_admin_token_opens_everything() {
        let auth = auth();
        for method in WORKER_METHODS.iter().chain(ADMIN_METHODS.iter()) {
            assert_eq!(
                auth.check(&path(method), &bearer(ADMIN)),
                Ok(Some(Role::Admin)),
                "{method}"
            );
        }
    }

    #[test]
    fn without_a_worker_token_workers_use_the_admin_token() {
        let (_, admin) = tokens();
        let auth = Authenticator::new(None, Some(&admin)).unwrap().unwrap();
        assert_eq!(
            auth.check(&path("LeaseJob"), &bearer(ADMIN)),
            Ok(Some(Role::Admin))
        );
        assert_eq!(
            auth.check(&path("LeaseJob"), &bearer(WORKER)),
            Err(AuthError::WrongToken)
        );
    }

    #[test]
    fn setup_needs_both_tokens_or_none_and_distinct_ones() {
        let (worker, admin) = tokens();
        assert!(Authenticator::new(None, None).unwrap().is_none());
        assert_eq!(
            Authenticator::new(Some(&worker), None).unwrap_err(),
            AuthSetupError::MissingAdminToken
        );
        assert_eq!(
            Authenticator::new(Some(&admin), Some(&admin)).unwrap_err(),
            AuthSetupError::SameToken
        );
    }

    #[test]
    fn open_only_on_loopback() {
        let auth = auth();
        let loopback: [SocketAddr; 2] = [
            "127.0.0.1:50051".parse().unwrap(),
            "[::1]:50051".parse().unwrap(),
        ];
        let exposed: [SocketAddr; 3] = [
            "0.0.0.0:50051".parse().unwrap(),
            "[::]:50051".parse().unwrap(),
            "10.1.2.3:50051".parse().unwrap(),
        ];
        for addr in loopback {
            assert_eq!(check_exposure(addr, None), Ok(()), "{addr}");
        }
        for addr in exposed {
            let err = check_exposure(addr, None).unwrap_err();
            assert!(err.to_string().contains("head -c 32 /dev/urandom"), "{err}");
            assert_eq!(check_exposure(addr, Some(&auth)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_a_token() {
        let auth = auth();
        let shown = format!("{auth:?}");
        assert!(!shown.contains(WORKER) && !shown.contains(ADMIN), "{shown}");
        let err = auth
            .check(&path("SubmitSweep"), &bearer(WORKER))
            .unwrap_err();
        assert!(!err.to_string().contains(WORKER));
        let long = format!("{COORDINATOR_PREFIX}{}", "A".repeat(10_000));
        let err = auth.check(&long, &bearer(WORKER)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    /// The wrapper answers with the right gRPC status before the inner
    /// service runs, and passes allowed requests through with the role.
    #[tokio::test]
    async fn the_wrapper_answers_before_the_handler() {
        #[derive(Clone)]
        struct Inner(Arc<std::sync::atomic::AtomicUsize>);
        impl Service<http::Request<()>> for Inner {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = BoxFuture<Self::Response, Infallible>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, request: http::Request<()>) -> Self::Future {
                assert!(
                    request.extensions().get::<Role>().is_some()
                        || request.uri().path().starts_with(HEALTH_PREFIX)
                );
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async { Ok(http::Response::new(Body::empty())) })
            }
        }

        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut service = RequireAuth::new(Inner(Arc::clone(&calls)), Arc::new(auth()));
        let send = |path: String, token: Option<&str>| {
            let mut request = http::Request::builder().uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            request.body(()).unwrap()
        };
        let code = |response: http::Response<Body>| {
            tonic::Status::from_header_map(response.headers()).map(|status| status.code())
        };

        let response = service.call(send(path("LeaseJob"), None)).await.unwrap();
        assert_eq!(code(response), Some(tonic::Code::Unauthenticated));
        let response = service
            .call(send(path("SubmitSweep"), Some(WORKER)))
            .await
            .unwrap();
        assert_eq!(code(response), Some(tonic::Code::PermissionDenied));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        let response = service
            .call(send(path("LeaseJob"), Some(WORKER)))
            .await
            .unwrap();
        assert_eq!(code(response), None);
        let response = service
            .call(send("/grpc.health.v1.Health/Check".into(), None))
            .await
            .unwrap();
        assert_eq!(code(response), None);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
