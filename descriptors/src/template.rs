//! Path templates of `google.api.http` rules, as specified in
//! `google/api/http.proto`:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! Matching semantics (those of grpc-gateway and Envoy's transcoder):
//!
//! - `{name}` is `{name=*}`; `*` matches exactly one non-empty segment; `**`
//!   matches zero or more segments and may only be the last segment.
//! - When the template has a verb, the request path must end with `:<verb>`,
//!   which is stripped before the segments are matched. Without a verb a
//!   trailing `:xyz` is simply part of the last segment.
//! - Literals are compared with the raw (still percent-encoded) request segment.
//! - Variable values are percent-decoded. A variable bound to a single segment
//!   is decoded fully (`%2F` becomes `/`); a variable spanning several segments
//!   keeps `%2F`/`%2f` encoded, following the "reserved expansion" note in
//!   http.proto, so that `/` inside the value stays distinguishable from a
//!   segment separator. A value that is not UTF-8 after decoding does not match.

use std::fmt::Write as _;

/// One segment of a compiled template (variables are flattened into their segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Must equal the request segment.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Single,
    /// `**`: zero or more segments; only ever last.
    Multi,
}

/// A `{field.path=...}` binding over `segments[start..end]`.
#[derive(Clone, Debug)]
pub(crate) struct Variable {
    pub(crate) field_path: String,
    start: usize,
    end: usize,
}

/// A parsed path template, ready for matching.
#[derive(Clone, Debug)]
pub(crate) struct PathTemplate {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// Specificity of a template; smaller sorts first (is more specific).
///
/// A template with a verb beats one without; then segment by segment a
/// literal beats `*`, which beats `**`; a shorter template whose kinds are a
/// prefix of a longer one's beats it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    no_verb: bool,
    kinds: Vec<u8>,
}

/// A request path split into segments once, shared by all templates tried.
#[derive(Debug)]
pub(crate) struct RequestPath<'a> {
    /// The path without its leading `/` (and without any query).
    rest: &'a str,
    /// Byte ranges of the segments in `rest`.
    segments: Vec<(usize, usize)>,
}

// === impl PathTemplate ===

impl PathTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(format!("template `{template}` must start with '/'"));
        };
        let mut parser = Parser {
            input: rest,
            pos: 0,
            segments: Vec::new(),
            variables: Vec::new(),
        };
        parser.segments(false)?;
        let verb = match parser.peek() {
            None => None,
            Some(b':') => {
                let verb = &rest[parser.pos + 1..];
                if verb.is_empty() || !verb.bytes().all(is_literal_byte) {
                    return Err(format!("invalid verb `:{verb}`"));
                }
                Some(verb.to_owned())
            }
            Some(c) => {
                return Err(format!(
                    "unexpected `{}` at offset {}",
                    char::from(c),
                    parser.pos + 1
                ));
            }
        };
        let Parser {
            mut segments,
            mut variables,
            ..
        } = parser;
        // Kept for the snapshot's life, one per REST rule.
        segments.shrink_to_fit();
        variables.shrink_to_fit();
        if let Some(i) = segments.iter().position(|s| *s == Segment::Multi)
            && i + 1 != segments.len()
        {
            return Err("`**` may only be the last segment".to_owned());
        }
        for (i, v) in variables.iter().enumerate() {
            if variables[..i].iter().any(|o| o.field_path == v.field_path) {
                return Err(format!("field `{}` is bound twice", v.field_path));
            }
        }
        Ok(Self {
            segments,
            variables,
            verb,
        })
    }

    /// Field paths bound by variables, in template order.
    pub(crate) fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|v| v.field_path.as_str())
    }

    /// The template with variable names erased (`/v1/shelves/*:verb`): two
    /// templates with the same normal form match exactly the same paths.
    pub(crate) fn normalized(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Single => out.push('*'),
                Segment::Multi => out.push_str("**"),
            }
        }
        if let Some(verb) = &self.verb {
            let _ = write!(out, ":{verb}");
        }
        out
    }

    /// Sort key: more specific templates sort first.
    pub(crate) fn rank(&self) -> Rank {
        Rank {
            no_verb: self.verb.is_none(),
            kinds: self
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(_) => 0,
                    Segment::Single => 1,
                    Segment::Multi => 2,
                })
                .collect(),
        }
    }

    /// The first segment when it is a literal that a request's first segment
    /// must equal verbatim (used to index routes), else `None`.
    pub(crate) fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            // With a single segment and a verb, the request's first segment still
            // carries the `:verb` suffix, so it cannot be looked up verbatim.
            Some(Segment::Literal(l)) if self.segments.len() > 1 || self.verb.is_none() => Some(l),
            _ => None,
        }
    }

    /// The first two segments when both are literals that a request's first
    /// two segments must equal verbatim (a finer route index), else `None`.
    pub(crate) fn first_two_literals(&self) -> Option<(&str, &str)> {
        match self.segments.as_slice() {
            // The second segment must not be the one carrying the verb.
            [Segment::Literal(a), Segment::Literal(b), rest @ ..]
                if !rest.is_empty() || self.verb.is_none() =>
            {
                Some((a, b))
            }
            _ => None,
        }
    }

    /// Matches a split request path; on success returns the decoded variable
    /// values as `(field path, value)` pairs in template order.
    pub(crate) fn matches(&self, path: &RequestPath<'_>) -> Option<Vec<(String, String)>> {
        let n = path.segments.len();
        // End of the last segment once the verb (if any) is stripped.
        let last_end = match &self.verb {
            Some(verb) => {
                let stripped = path.rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
                stripped.len()
            }
            None => path.rest.len(),
        };
        // Byte range of request segment `i`, the verb cut off the last one.
        let seg_range = |i: usize| -> Option<(usize, usize)> {
            let &(s, e) = path.segments.get(i)?;
            Some(if i + 1 == n {
                (s, e.min(last_end))
            } else {
                (s, e)
            })
        };
        let seg = |i: usize| -> Option<&str> {
            let (s, e) = seg_range(i)?;
            path.rest.get(s..e)
        };

        for (k, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(l) => {
                    if seg(k)? != l {
                        return None;
                    }
                }
                Segment::Single => {
                    if seg(k)?.is_empty() {
                        return None;
                    }
                }
                Segment::Multi => break,
            }
        }
        let has_multi = self.segments.last() == Some(&Segment::Multi);
        if !has_multi && n != self.segments.len() {
            return None;
        }
        if has_multi && n + 1 < self.segments.len() {
            return None;
        }

        let mut params = Vec::with_capacity(self.variables.len());
        for var in &self.variables {
            let ends_in_multi =
                var.end > var.start && self.segments.get(var.end - 1) == Some(&Segment::Multi);
            // Request segments covered: [start, end) or [start, n) for a trailing `**`.
            let req_end = if ends_in_multi { n } else { var.end };
            let raw = if req_end > var.start {
                let (s, _) = seg_range(var.start)?;
                let (_, e) = seg_range(req_end - 1)?;
                path.rest.get(s..e)?
            } else {
                ""
            };
            let single = var.end - var.start == 1 && !ends_in_multi;
            let value = percent_decode(raw, !single, false)?;
            params.push((var.field_path.clone(), value));
        }
        Some(params)
    }
}

// === impl RequestPath ===

impl<'a> RequestPath<'a> {
    /// Splits `path` (anything after a `?` is ignored); `None` unless it starts with `/`.
    pub(crate) fn new(path: &'a str) -> Option<Self> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let rest = path.strip_prefix('/')?;
        let mut segments = Vec::with_capacity(8);
        let mut start = 0;
        for (i, b) in rest.bytes().enumerate() {
            if b == b'/' {
                segments.push((start, i));
                start = i + 1;
            }
        }
        segments.push((start, rest.len()));
        Some(Self { rest, segments })
    }

    /// The raw first segment (used for the route index).
    pub(crate) fn first(&self) -> &'a str {
        self.segment(0)
    }

    /// The raw segment at `i` ("" when absent).
    pub(crate) fn segment(&self, i: usize) -> &'a str {
        let rest: &'a str = self.rest;
        self.segments
            .get(i)
            .map_or("", |&(s, e)| rest.get(s..e).unwrap_or(""))
    }
}

// === parser ===

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.as_bytes().get(self.pos).copied()
    }

    fn segments(&mut self, in_variable: bool) -> Result<(), String> {
        loop {
            self.segment(in_variable)?;
            if self.peek() == Some(b'/') {
                self.pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), String> {
        let rest = &self.input[self.pos..];
        if rest.starts_with("**") {
            self.pos += 2;
            self.segments.push(Segment::Multi);
        } else if rest.starts_with('*') {
            self.pos += 1;
            self.segments.push(Segment::Single);
        } else if rest.starts_with('{') {
            if in_variable {
                return Err("variables cannot be nested".to_owned());
            }
            self.variable()?;
        } else {
            let len = rest.bytes().take_while(|&b| is_literal_byte(b)).count();
            if len == 0 {
                return Err(format!(
                    "empty or invalid segment at offset {}",
                    self.pos + 1
                ));
            }
            self.segments.push(Segment::Literal(rest[..len].to_owned()));
            self.pos += len;
        }
        match self.peek() {
            None | Some(b'/' | b':' | b'}') => Ok(()),
            Some(c) => Err(format!(
                "unexpected `{}` at offset {}",
                char::from(c),
                self.pos + 1
            )),
        }
    }

    fn variable(&mut self) -> Result<(), String> {
        self.pos += 1; // '{'
        let rest = &self.input[self.pos..];
        let len = rest
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            .count();
        let field_path = &rest[..len];
        let valid = !field_path.is_empty()
            && field_path.split('.').all(|ident| {
                ident
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            });
        if !valid {
            return Err(format!(
                "invalid field path in variable at offset {}",
                self.pos
            ));
        }
        self.pos += len;
        let start = self.segments.len();
        match self.peek() {
            Some(b'}') => self.segments.push(Segment::Single),
            Some(b'=') => {
                self.pos += 1;
                self.segments(true)?;
            }
            _ => return Err(format!("unterminated variable `{{{field_path}`")),
        }
        if self.peek() != Some(b'}') {
            return Err(format!("unterminated variable `{{{field_path}`"));
        }
        self.pos += 1;
        self.variables.push(Variable {
            field_path: field_path.to_owned(),
            start,
            end: self.segments.len(),
        });
        Ok(())
    }
}

/// Bytes allowed in a literal segment or verb: URL path characters except the
/// template syntax and `/`, `?`, `#`, `%` is allowed for pre-encoded literals.
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b';'
                | b'@'
        )
}

/// Percent-decodes `raw`. With `keep_slash`, `%2F`/`%2f` stay encoded; with
/// `plus_as_space` (query strings), `+` becomes a space. Malformed escapes are
/// kept verbatim. `None` when the result is not UTF-8.
pub(crate) fn percent_decode(raw: &str, keep_slash: bool, plus_as_space: bool) -> Option<String> {
    if !raw
        .bytes()
        .any(|b| b == b'%' || (plus_as_space && b == b'+'))
    {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                match hex {
                    Some(b'/') if keep_slash => {
                        out.extend_from_slice(&bytes[i..i + 3]);
                        i += 3;
                    }
                    Some(decoded) => {
                        out.push(decoded);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        let t = PathTemplate::parse(template).unwrap();
        t.matches(&RequestPath::new(path).unwrap())
    }

    fn p(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "v1/x",
            "/",
            "//",
            "/v1//x",
            "/v1/**/x",
            "/v1/{name=**}/x",
            "/v1/{a={b}}",
            "/v1/{a",
            "/v1/{a=x",
            "/v1/{}",
            "/v1/{1a}",
            "/v1/{a}/{a}",
            "/v1/x:",
            "/v1/x:a/b",
            "/v1/x?y",
            "/v1/x y",
            "/v1/*x",
            "/v1/{a}b",
        ] {
            assert!(
                PathTemplate::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn normal_form() {
        let n = |t: &str| PathTemplate::parse(t).unwrap().normalized();
        assert_eq!(n("/v1/{name=shelves/*}"), "/v1/shelves/*");
        assert_eq!(n("/v1/shelves/{id}"), "/v1/shelves/*");
        assert_eq!(n("/v1/{name=**}:undelete"), "/v1/**:undelete");
        assert_eq!(n("/v1/{a.b}/x"), "/v1/*/x");
    }

    #[test]
    fn matching_table() {
        assert_eq!(m("/v1/shelves", "/v1/shelves"), p(&[]));
        assert_eq!(m("/v1/shelves", "/v1/shelves/"), None);
        assert_eq!(m("/v1/shelves", "/v1/shelve"), None);
        assert_eq!(m("/v1/shelves", "/v1"), None);
        assert_eq!(m("/v1/*", "/v1/x"), p(&[]));
        assert_eq!(m("/v1/*", "/v1/"), None);
        assert_eq!(m("/v1/*", "/v1/x/y"), None);
        assert_eq!(m("/v1/{id}", "/v1/a%20b"), p(&[("id", "a b")]));
        assert_eq!(m("/v1/{id}", "/v1/a%2Fb"), p(&[("id", "a/b")]));
        assert_eq!(m("/v1/{a.b}", "/v1/7"), p(&[("a.b", "7")]));
        assert_eq!(
            m("/v1/{name=shelves/*}", "/v1/shelves/s1"),
            p(&[("name", "shelves/s1")])
        );
        assert_eq!(m("/v1/{name=shelves/*}", "/v1/books/s1"), None);
        assert_eq!(
            m("/v1/{name=shelves/*}", "/v1/shelves/s%2F1"),
            p(&[("name", "shelves/s%2F1")])
        );
        assert_eq!(
            m("/v1/{name=shelves/*}", "/v1/shelves/s%201"),
            p(&[("name", "shelves/s 1")])
        );
        assert_eq!(m("/v1/{name=**}", "/v1/a/b/c"), p(&[("name", "a/b/c")]));
        assert_eq!(m("/v1/{name=**}", "/v1"), p(&[("name", "")]));
        assert_eq!(m("/v1/{name=**}", "/v2/a"), None);
        assert_eq!(m("/v1/{name=**}", "/v1/"), p(&[("name", "")]));
        assert_eq!(m("/v1/x/**", "/v1/x"), p(&[]));
        assert_eq!(m("/v1/x/**", "/v1/x/a/b"), p(&[]));
        assert_eq!(
            m("/v1/{a}/{b=c/**}", "/v1/1/c/d/e"),
            p(&[("a", "1"), ("b", "c/d/e")])
        );
        // Verbs.
        assert_eq!(
            m("/v1/{name=shelves/*}:clear", "/v1/shelves/1:clear"),
            p(&[("name", "shelves/1")])
        );
        assert_eq!(m("/v1/{name=shelves/*}:clear", "/v1/shelves/1"), None);
        assert_eq!(m("/v1/{name=shelves/*}:clear", "/v1/shelves/1:other"), None);
        assert_eq!(m("/v1/{name=shelves/*}:clear", "/v1/shelves/:clear"), None);
        assert_eq!(
            m("/v1/{name=**}:undelete", "/v1/a:b/c:undelete"),
            p(&[("name", "a:b/c")])
        );
        assert_eq!(m("/v1:batch", "/v1:batch"), p(&[]));
        assert_eq!(m("/v1:batch", "/v1"), None);
        // Without a verb in the template, `:xyz` is part of the segment.
        assert_eq!(m("/v1/{id}", "/v1/x:clear"), p(&[("id", "x:clear")]));
        // Queries are ignored; bad UTF-8 does not match.
        assert_eq!(m("/v1/{id}", "/v1/x?y=1"), p(&[("id", "x")]));
        assert_eq!(m("/v1/{id}", "/v1/%FF"), None);
    }

    #[test]
    fn ranking() {
        let r = |t: &str| PathTemplate::parse(t).unwrap().rank();
        assert!(r("/v1/shelves") < r("/v1/*"));
        assert!(r("/v1/*") < r("/v1/**"));
        assert!(r("/v1/*") < r("/v1/*/**"));
        assert!(r("/v1/x/*") < r("/v1/*/x"));
        assert!(r("/v1/**:verb") < r("/v1/x/*"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(template in "[/a-z{}=*:.%_]{0,24}", path in "[/a-z*:%0-9F]{0,24}") {
            if let Ok(t) = PathTemplate::parse(&template) {
                let _ = t.normalized();
                let _ = t.rank();
                if let Some(request) = RequestPath::new(&path) {
                    let _ = t.matches(&request);
                }
            }
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a+b%2Fc", false, true).unwrap(), "a b/c");
        assert_eq!(percent_decode("a+b%2fc", true, false).unwrap(), "a+b%2fc");
        assert_eq!(percent_decode("%zz%4", false, false).unwrap(), "%zz%4");
        assert!(percent_decode("%C3%28", false, false).is_none());
        assert_eq!(percent_decode("%C3%A9", false, false).unwrap(), "é");
    }
}
