//! `google.api.http` rules (google/api/http.proto): reading the `MethodOptions`
//! extension (field 72295728), validating it against the request/response
//! messages, and the route table that matches HTTP requests to bindings.
//!
//! Only the rules are matched here; the default `POST /pkg.Service/Method`
//! route is the caller's business (via `Snapshot::method`).

use std::{collections::HashMap, fmt, sync::Arc};

use prost_reflect::{
    DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};

use crate::{
    error::DescriptorError,
    index::MethodInfo,
    json::DEFAULT_MAX_DEPTH,
    template::{PathTemplate, Rank, RequestPath},
};

/// Full name of the `MethodOptions` extension holding the rule.
pub(crate) const HTTP_EXTENSION: &str = "google.api.http";

/// What the HTTP request body maps to (`HttpRule.body`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodySpec {
    /// `body` omitted: the request has no body; fields come from path and query.
    None,
    /// `body: "*"`: the body is the whole request message (minus path-bound fields).
    Whole,
    /// `body: "field"`: the body is the value of this top-level field.
    Field(String),
}

/// One HTTP binding of a gRPC method: the rule itself or one of its
/// `additional_bindings`, compiled and validated against the method's messages.
#[derive(Clone, Debug)]
pub struct HttpBinding {
    /// HTTP method (`custom.kind` for custom rules).
    pub method: http::Method,
    /// The path template as written in the rule.
    pub pattern: String,
    /// Where the request body goes.
    pub body: BodySpec,
    /// Top-level response field to send instead of the whole response message.
    pub response_body: Option<String>,
    pub(crate) template: PathTemplate,
    /// Template variables with their resolved field numbers, in template order.
    pub(crate) path_fields: Vec<(String, Vec<u32>)>,
    /// Number of the `body` field when [`BodySpec::Field`].
    pub(crate) body_field: Option<u32>,
    /// Number of the `response_body` field.
    pub(crate) response_field: Option<u32>,
}

/// A successful match of an HTTP request against the rules of a snapshot.
#[derive(Clone, Debug)]
pub struct HttpMatch {
    /// The gRPC method to call.
    pub method: Arc<MethodInfo>,
    /// The binding that matched.
    pub binding: Arc<HttpBinding>,
    /// Values captured by the template variables: `(field path "a.b", percent-decoded value)`.
    pub path_params: Vec<(String, String)>,
}

// === impl HttpBinding ===

impl fmt::Display for HttpBinding {
    /// `GET /v1/{name=shelves/*}`, the form listed in `SetInfo::http_rules`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.pattern)
    }
}

/// Reads and validates the `google.api.http` rule of `method`, returning one
/// binding for the rule and one per additional binding (no rule: empty).
pub(crate) fn bindings_for(
    method: &MethodDescriptor,
    grpc_path: &str,
    extension: &ExtensionDescriptor,
) -> Result<Vec<HttpBinding>, DescriptorError> {
    let options = method.options();
    if !options.has_extension(extension) {
        return Ok(Vec::new());
    }
    let value = options.get_extension(extension);
    let Some(rule) = value.as_message() else {
        return Err(DescriptorError::invalid_rule(
            grpc_path,
            "google.api.http is not an HttpRule message",
        ));
    };
    let mut out = Vec::new();
    read_rule(rule, method, grpc_path, true, &mut out)?;
    Ok(out)
}

fn read_rule(
    rule: &DynamicMessage,
    method: &MethodDescriptor,
    grpc_path: &str,
    top_level: bool,
    out: &mut Vec<HttpBinding>,
) -> Result<(), DescriptorError> {
    let string_field = |name: &str| -> String {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut pattern = None;
    for (name, http_method) in [
        ("get", http::Method::GET),
        ("put", http::Method::PUT),
        ("post", http::Method::POST),
        ("delete", http::Method::DELETE),
        ("patch", http::Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            pattern = Some((http_method, string_field(name)));
        }
    }
    if rule.has_field_by_name("custom") {
        let custom = rule.get_field_by_name("custom");
        let custom = custom.as_ref().and_then(|v| v.as_message());
        let get = |name: &str| {
            custom
                .and_then(|c| c.get_field_by_name(name))
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let kind = get("kind");
        let http_method = http::Method::from_bytes(kind.as_bytes()).map_err(|_| {
            DescriptorError::invalid_rule(grpc_path, format!("invalid custom method `{kind}`"))
        })?;
        pattern = Some((http_method, get("path")));
    }

    let additional = rule.get_field_by_name("additional_bindings");
    let additional = additional
        .as_ref()
        .and_then(|v| v.as_list())
        .unwrap_or_default();
    if !top_level && !additional.is_empty() {
        return Err(DescriptorError::invalid_rule(
            grpc_path,
            "additional_bindings may not contain additional_bindings",
        ));
    }

    match pattern {
        Some((http_method, template)) => out.push(compile_binding(
            method,
            grpc_path,
            http_method,
            &template,
            &string_field("body"),
            &string_field("response_body"),
        )?),
        None if top_level => {} // only additional bindings, or an empty rule
        None => {
            return Err(DescriptorError::invalid_rule(
                grpc_path,
                "additional binding without a pattern",
            ));
        }
    }

    for binding in additional {
        let Some(binding) = binding.as_message() else {
            continue;
        };
        read_rule(binding, method, grpc_path, false, out)?;
    }
    Ok(())
}

fn compile_binding(
    method: &MethodDescriptor,
    grpc_path: &str,
    http_method: http::Method,
    pattern: &str,
    body: &str,
    response_body: &str,
) -> Result<HttpBinding, DescriptorError> {
    let template = PathTemplate::parse(pattern).map_err(|e| {
        DescriptorError::invalid_rule(grpc_path, format!("{http_method} {pattern}: {e}"))
    })?;
    let input = method.input();
    let output = method.output();
    let path_fields = template
        .variables()
        .map(|path| {
            resolve_path_field(&input, path)
                .map(|chain| (path.to_owned(), chain.iter().map(|f| f.number()).collect()))
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| {
            DescriptorError::invalid_rule(grpc_path, format!("{http_method} {pattern}: {e}"))
        })?;

    let top_level_field = |message: &MessageDescriptor, name: &str, what: &str| {
        message.get_field_by_name(name).ok_or_else(|| {
            DescriptorError::invalid_rule(
                grpc_path,
                format!(
                    "{what} `{name}` is not a field of `{}`",
                    message.full_name()
                ),
            )
        })
    };
    let (body, body_field) = match body {
        "" => (BodySpec::None, None),
        "*" => (BodySpec::Whole, None),
        name => (
            BodySpec::Field(name.to_owned()),
            Some(top_level_field(&input, name, "body")?.number()),
        ),
    };
    let (response_body, response_field) = match response_body {
        "" => (None, None),
        name => (
            Some(name.to_owned()),
            Some(top_level_field(&output, name, "response_body")?.number()),
        ),
    };
    Ok(HttpBinding {
        method: http_method,
        pattern: pattern.to_owned(),
        body,
        response_body,
        template,
        path_fields,
        body_field,
        response_field,
    })
}

/// Resolves a template variable's field path (proto field names): every
/// component but the last must be a singular message field, the last a
/// singular scalar or enum field.
fn resolve_path_field(
    message: &MessageDescriptor,
    path: &str,
) -> Result<Vec<FieldDescriptor>, String> {
    // Bounded like query parameters: the message built from it is as deep.
    if path.split('.').nth(DEFAULT_MAX_DEPTH).is_some() {
        return Err(format!(
            "variable `{path}` nests deeper than {DEFAULT_MAX_DEPTH} fields"
        ));
    }
    let mut chain = Vec::new();
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(name) = parts.next() {
        let field = current.get_field_by_name(name).ok_or_else(|| {
            format!(
                "variable `{path}`: `{name}` is not a field of `{}`",
                current.full_name()
            )
        })?;
        if field.is_list() || field.is_map() {
            return Err(format!("variable `{path}`: `{name}` is repeated"));
        }
        let last = parts.peek().is_none();
        match (field.kind(), last) {
            (Kind::Message(m), false) => current = m,
            (Kind::Message(_), true) => {
                return Err(format!(
                    "variable `{path}`: `{name}` is a message, not a scalar"
                ));
            }
            (_, false) => {
                return Err(format!(
                    "variable `{path}`: `{name}` is a scalar, not a message"
                ));
            }
            (_, true) => {}
        }
        chain.push(field);
    }
    Ok(chain)
}

/// Bindings grouped by HTTP method, then by the first literal segment, each
/// list sorted by specificity then declaration order.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    by_method: HashMap<http::Method, MethodRoutes>,
}

#[derive(Debug, Default)]
struct MethodRoutes {
    /// Templates starting with two literals, keyed by them (most REST APIs:
    /// `/v1/shelves/...`), so a lookup scans only their siblings.
    by_two: HashMap<String, HashMap<String, Vec<RouteEntry>>>,
    /// Other templates starting with a literal, keyed by it.
    by_first: HashMap<String, Vec<RouteEntry>>,
    /// Everything else (first segment is a wildcard or variable).
    rest: Vec<RouteEntry>,
}

#[derive(Debug)]
struct RouteEntry {
    rank: Rank,
    order: usize,
    method: Arc<MethodInfo>,
    binding: Arc<HttpBinding>,
}

/// Builds a [`RouteTable`], rejecting bindings that would match exactly the
/// same requests as an earlier one (same HTTP method, same template up to
/// variable names, same verb).
#[derive(Debug, Default)]
pub(crate) struct RouteTableBuilder {
    table: RouteTable,
    seen: HashMap<(http::Method, String), String>,
    order: usize,
}

// === impl RouteTableBuilder ===

impl RouteTableBuilder {
    pub(crate) fn add(
        &mut self,
        method: &Arc<MethodInfo>,
        binding: &Arc<HttpBinding>,
    ) -> Result<(), DescriptorError> {
        let key = (binding.method.clone(), binding.template.normalized());
        let description = format!(
            "{binding} ({} in set `{}`)",
            method.grpc_path, method.set_name
        );
        if let Some(other) = self.seen.get(&key) {
            return Err(DescriptorError::RouteCollision {
                rule: description,
                other: other.clone(),
            });
        }
        self.seen.insert(key, description);

        let entry = RouteEntry {
            rank: binding.template.rank(),
            order: self.order,
            method: method.clone(),
            binding: binding.clone(),
        };
        self.order += 1;
        let routes = self
            .table
            .by_method
            .entry(binding.method.clone())
            .or_default();
        if let Some((a, b)) = binding.template.first_two_literals() {
            routes
                .by_two
                .entry(a.to_owned())
                .or_default()
                .entry(b.to_owned())
                .or_default()
                .push(entry);
            return Ok(());
        }
        match binding.template.first_literal() {
            Some(first) => routes
                .by_first
                .entry(first.to_owned())
                .or_default()
                .push(entry),
            None => routes.rest.push(entry),
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> RouteTable {
        let sort = |v: &mut Vec<RouteEntry>| {
            v.sort_by(|a, b| (&a.rank, a.order).cmp(&(&b.rank, b.order)));
        };
        for routes in self.table.by_method.values_mut() {
            routes
                .by_two
                .values_mut()
                .flat_map(HashMap::values_mut)
                .for_each(sort);
            routes.by_first.values_mut().for_each(sort);
            sort(&mut routes.rest);
        }
        self.table
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// The most specific binding matching `method` and `path`.
    pub(crate) fn find(&self, method: &http::Method, path: &str) -> Option<HttpMatch> {
        let routes = self.by_method.get(method)?;
        let request = RequestPath::new(path)?;
        fn first_match<'e>(
            entries: &'e [RouteEntry],
            request: &RequestPath<'_>,
        ) -> Option<(&'e RouteEntry, Vec<(String, String)>)> {
            entries.iter().find_map(|e| {
                e.binding
                    .template
                    .matches(request)
                    .map(|params| (e, params))
            })
        }
        let two = routes
            .by_two
            .get(request.first())
            .and_then(|m| m.get(request.segment(1)));
        let candidates = [
            two.and_then(|v| first_match(v, &request)),
            routes
                .by_first
                .get(request.first())
                .and_then(|v| first_match(v, &request)),
            first_match(&routes.rest, &request),
        ];
        let (entry, path_params) = candidates
            .into_iter()
            .flatten()
            .min_by(|a, b| (&a.0.rank, a.0.order).cmp(&(&b.0.rank, b.0.order)))?;
        Some(HttpMatch {
            method: entry.method.clone(),
            binding: entry.binding.clone(),
            path_params,
        })
    }
}
