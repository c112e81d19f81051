//! The client half of authentication: an interceptor that adds
//! `authorization: Bearer <token>` to every request of a tonic client. Workers
//! and sweepctl share it; the coordinator's check lives in its `auth` module.

use sweep_core::token::Token;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key (an HTTP header) that carries the token.
pub const AUTHORIZATION: &str = "authorization";

/// Adds the bearer token to each request; without a token it adds nothing,
/// which is what a loopback coordinator without tokens expects.
#[derive(Clone, Default)]
pub struct BearerInterceptor {
    /// The whole header value, built once. `None`: send no header.
    header: Option<MetadataValue<Ascii>>,
}

impl BearerInterceptor {
    pub fn new(token: Option<&Token>) -> Self {
        // A `Token` holds printable ASCII only, so the header is always valid;
        // should that ever change, sending no header makes the server answer
        // `unauthenticated`, which is the honest outcome.
        let header = token.and_then(|token| format!("Bearer {}", token.expose()).parse().ok());
        BearerInterceptor { header }
    }
}

impl std::fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.header.is_some() {
            "Some(***)"
        } else {
            "None"
        };
        f.debug_struct("BearerInterceptor")
            .field("header", &shown)
            .finish()
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_header_only_with_a_token() {
        let token = Token::new("0123456789abcdef0123", "test").unwrap();
        let mut with = BearerInterceptor::new(Some(&token));
        let request = with.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get(AUTHORIZATION).unwrap(),
            "Bearer 0123456789abcdef0123"
        );
        assert!(!format!("{with:?}").contains("0123456789"));

        let mut without = BearerInterceptor::new(None);
        let request = without.call(Request::new(())).unwrap();
        assert!(request.metadata().get(AUTHORIZATION).is_none());
    }
}
