//! CORS (Fetch standard, "CORS protocol") for HTTP callers: preflight
//! `OPTIONS` answered by the gateway without touching a backend, and the
//! `Access-Control-*` headers on actual responses.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

pub(crate) use crate::config::cors::CorsConfig;
use crate::respond::{ResponseBody, empty};

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

impl Cors {
    /// Compiles `[cors]`; errors name the field.
    pub fn new(cfg: &CorsConfig) -> Result<Self, balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        let value = |field: &str, v: String| {
            HeaderValue::try_from(v)
                .map_err(|_| E::new(format!("cors.{field}"), "not a valid header value"))
        };
        if cfg.allowed_origins.is_empty() {
            return Err(E::new(
                "cors.allowed_origins",
                "list at least one origin, or \"*\"",
            ));
        }
        let any_origin = cfg.allowed_origins.iter().any(|o| o == "*");
        if any_origin && cfg.allow_credentials {
            // Browsers refuse `*` with credentials; echoing every origin
            // instead would let any site act with the user's cookies.
            return Err(E::new(
                "cors.allow_credentials",
                "cannot be true with \"*\" in allowed_origins: list the origins allowed to send credentials",
            ));
        }
        let origins = cfg
            .allowed_origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| value("allowed_origins", o.trim_end_matches('/').to_string()))
            .collect::<Result<_, _>>()?;
        let headers = if cfg.allowed_headers.iter().any(|h| h == "*") {
            None
        } else {
            Some(value("allowed_headers", cfg.allowed_headers.join(", "))?)
        };
        let exposed = if cfg.exposed_headers.is_empty() {
            None
        } else {
            Some(value("exposed_headers", cfg.exposed_headers.join(", "))?)
        };
        Ok(Self {
            any_origin,
            origins,
            methods: value("allowed_methods", cfg.allowed_methods.join(", "))?,
            headers,
            exposed,
            max_age: HeaderValue::from(cfg.max_age_secs),
            credentials: cfg.allow_credentials,
        })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    fn allow_origin(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        // `any_origin` never comes with `credentials` (refused in `new`).
        if self.any_origin {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The answer to a preflight request, or None when `headers` are not a
    /// preflight (no `Origin` or no `Access-Control-Request-Method`).
    pub fn preflight(&self, headers: &HeaderMap) -> Option<Response<ResponseBody>> {
        let origin = headers.get(header::ORIGIN)?;
        headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(empty());
        if !self.allows(origin) {
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return Some(resp);
        }
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.allow_origin(origin, h);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let allowed_headers = match &self.headers {
            Some(v) => Some(v.clone()),
            None => headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(v) = allowed_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        Some(resp)
    }

    /// Adds the CORS headers of an actual response for `origin`.
    pub fn apply(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        if !self.allows(origin) {
            return;
        }
        self.allow_origin(origin, h);
        if let Some(e) = &self.exposed {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cors::{DEFAULT_MAX_AGE_SECS, default_headers, default_methods};

    fn cfg(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            allowed_methods: default_methods(),
            allowed_headers: default_headers(),
            exposed_headers: vec![],
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            allow_credentials: credentials,
        }
    }

    #[test]
    fn any_origin_with_credentials_is_refused() {
        let err = Cors::new(&cfg(&["https://a.example", "*"], true)).expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("cors.allow_credentials: cannot be true"),
            "{err}"
        );
        assert!(Cors::new(&cfg(&["*"], false)).is_ok());
        assert!(Cors::new(&cfg(&["https://a.example"], true)).is_ok());
    }
}
