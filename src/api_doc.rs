//! Routes are registered through [`ApiRouter`], which records each one for
//! `/openapi.json` as it adds it to the axum router: the spec cannot drift from the routes.
//! A route's [`Access`] is also what guards it: the handler of a route that needs a token
//! runs only after the policy admitted the caller, and receives the decision.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use synchub_protocol::ErrorResponse;

use crate::app::AppState;
use crate::auth::policy::{self, Actor, Kind, Need};
use crate::error::ApiError;
use crate::extract::PathArgs;

#[derive(Clone, Copy, Debug)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Patch => MethodFilter::PATCH,
            Method::Delete => MethodFilter::DELETE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// No token (operations, signed object URLs).
    Public,
    /// The WebSocket: its token comes with the upgrade or in its first frame, and each join
    /// and write is decided by the same policy as the HTTP routes.
    Socket,
    /// A bearer token the policy admits for this need.
    Token(Need),
}

impl From<Need> for Access {
    fn from(need: Need) -> Self {
        Access::Token(need)
    }
}

impl Access {
    /// The OpenAPI security requirement: any one of these token kinds.
    fn security(self) -> Value {
        let kinds: &[Kind] = match self {
            Access::Public => &[],
            Access::Socket => &[Kind::User, Kind::Service, Kind::Container],
            Access::Token(need) => need.admits(),
        };
        let scheme = |kind: &Kind| match kind {
            Kind::User => json!({"userToken": []}),
            Kind::Service => json!({"serviceToken": []}),
            Kind::Container => json!({"containerToken": []}),
        };
        Value::Array(kinds.iter().map(scheme).collect())
    }
}

/// A handler behind its route's need: it runs only with the policy's decision for the
/// request's caller and scope, which it receives as an [`Actor`]. Refusals happen in
/// the contract's order: the token (401), the URL (400 undecodable, 404 not an id), then
/// the policy (403, or 404 outside the caller's scope).
#[derive(Clone)]
struct Guarded<H> {
    handler: H,
    need: Need,
}

impl<H, T> Handler<T, AppState> for Guarded<H>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, state: AppState) -> Self::Future {
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            match decide(&mut parts, &state, self.need).await {
                Ok(actor) => {
                    parts.extensions.insert(actor);
                    self.handler.call(Request::from_parts(parts, body), state).await
                }
                Err(err) => err.into_response(),
            }
        })
    }
}

async fn decide(parts: &mut axum::http::request::Parts, state: &AppState, need: Need) -> Result<Actor, ApiError> {
    let principal = state.auth.caller(&parts.headers).await?;
    crate::access::record_actor(&parts.extensions, &principal);
    let PathArgs(params) = PathArgs::<HashMap<String, String>>::from_request_parts(parts, state).await?;
    let scope = need.scope().parse(params.get("id").map(String::as_str))?;
    policy::decide(&principal, need, scope)
}

/// Writes a type's schema into the generator's definitions and answers a reference to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A route's success answer, as documented.
#[derive(Clone, Copy, Default)]
pub enum Answer {
    /// Some JSON object (only the operational routes, whose bodies are free-form).
    #[default]
    Object,
    /// JSON of this schema (from the protocol crate's types).
    Json(SchemaFn),
    /// 204, no body.
    NoContent,
    /// A body in one of these media types (text or bytes), never JSON.
    Media(&'static [&'static str]),
    /// A WebSocket upgrade: 101, then frames.
    Upgrade,
    /// JSON of this schema, or with `Accept: application/octet-stream` the bytes (or a 307
    /// to them): binary files (CONTRACT section 13).
    JsonOrBytes(SchemaFn),
    /// A 307 to a signed URL of the bytes.
    Redirect,
}

impl Answer {
    fn responses(self, generator: &mut SchemaGenerator) -> Value {
        let json = |schema: Value| json!({"application/json": {"schema": schema}});
        let mut responses = match self {
            Answer::Object => json!({"2XX": {"description": "Success", "content": json(json!({"type": "object"}))}}),
            Answer::Json(schema) => {
                json!({"2XX": {"description": "Success", "content": json(schema(generator).to_value())}})
            }
            Answer::NoContent => json!({"204": {"description": "Done, no body"}}),
            Answer::Media(types) => {
                let content: Map<String, Value> =
                    types.iter().map(|media| (media.to_string(), json!({"schema": {"type": "string"}}))).collect();
                json!({"2XX": {"description": "Success", "content": content}})
            }
            Answer::Upgrade => json!({"101": {"description": "Switching Protocols: the WebSocket (docs/API.md)"}}),
            Answer::JsonOrBytes(schema) => json!({
                "2XX": {"description": "Success", "content": {
                    "application/json": {"schema": schema(generator).to_value()},
                    "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
                "307": {"description": "Accept: application/octet-stream of a binary file: a signed URL of its bytes"}}),
            Answer::Redirect => json!({"307": {"description": "A signed, expiring URL of the bytes (Location)"}}),
        };
        let error = generator.subschema_for::<ErrorResponse>().to_value();
        responses["default"] = json!({"description": "Error", "content": json(error)});
        responses
    }
}

struct RouteDoc {
    method: Method,
    path: &'static str,
    summary: &'static str,
    access: Access,
    answer: Answer,
    /// The body's schema, and whether the body is required.
    body: Option<(SchemaFn, bool)>,
    /// A required body of this media type that is not JSON (bytes).
    media_body: Option<&'static [&'static str]>,
    /// The body may also be raw bytes (`application/octet-stream`).
    bytes_body: bool,
    query: Option<SchemaFn>,
}

#[derive(Default)]
pub struct ApiRouter {
    /// One method router per registered route, merged per path at the end.
    routes: Vec<(&'static str, MethodRouter<AppState>)>,
    docs: Vec<RouteDoc>,
}

impl ApiRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; with [`Access::Token`] its handler is guarded by the policy.
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: impl Into<Access>,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let access = access.into();
        let methods = match access {
            Access::Token(need) => MethodRouter::new().on(method.filter(), Guarded { handler, need }),
            Access::Public | Access::Socket => MethodRouter::new().on(method.filter(), handler),
        };
        self.routes.push((path, methods));
        self.docs.push(RouteDoc {
            method,
            path,
            summary,
            access,
            answer: Answer::default(),
            body: None,
            media_body: None,
            bytes_body: false,
            query: None,
        });
        self
    }

    /// Documents a route another registration serves (a path the `{*path}` wildcard of an
    /// earlier route also matches, told apart by its handler).
    pub fn documents(
        mut self,
        method: Method,
        path: &'static str,
        access: impl Into<Access>,
        summary: &'static str,
    ) -> Self {
        self.docs.push(RouteDoc {
            method,
            path,
            summary,
            access: access.into(),
            answer: Answer::default(),
            body: None,
            query: None,
            bytes_body: false,
            media_body: None,
        });
        self
    }

    fn last(&mut self) -> &mut RouteDoc {
        self.docs.last_mut().expect("documented after a route is added")
    }

    /// The answers of the route registered last carry a token or a signed URL: no cache
    /// may keep them.
    pub fn no_store(mut self) -> Self {
        let (path, methods) = self.routes.pop().expect("no_store after a route is added");
        let methods = methods.route_layer(axum::middleware::map_response(no_store));
        self.routes.push((path, methods));
        self
    }

    /// Documents the success answer of the route registered last (some JSON object unless
    /// said otherwise here).
    pub fn answers(mut self, answer: Answer) -> Self {
        self.last().answer = answer;
        self
    }

    /// The route registered last answers a JSON `T`.
    pub fn answers_json<T: JsonSchema>(self) -> Self {
        self.answers(Answer::Json(schema_of::<T>))
    }

    /// The route registered last takes a JSON body `T`.
    pub fn body<T: JsonSchema>(mut self) -> Self {
        self.last().body = Some((schema_of::<T>, true));
        self
    }

    /// The route registered last also takes raw bytes (`application/octet-stream`).
    pub fn or_bytes_body(mut self) -> Self {
        self.last().bytes_body = true;
        self
    }

    /// The route registered last takes a JSON body `T`, or none at all.
    pub fn optional_body<T: JsonSchema>(mut self) -> Self {
        self.last().body = Some((schema_of::<T>, false));
        self
    }

    /// The route registered last takes a required body of any of these (non-JSON) media types.
    pub fn media_body(mut self, media: &'static [&'static str]) -> Self {
        self.last().media_body = Some(media);
        self
    }

    /// The route registered last reads its query string into `T` (each field a parameter).
    pub fn query<T: JsonSchema>(mut self) -> Self {
        self.last().query = Some(T::json_schema);
        self
    }

    /// The axum router and the OpenAPI 3 document of everything registered.
    pub fn finish(self) -> (Router<AppState>, Value) {
        let spec = openapi(&self.docs);
        let mut paths: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
        for (path, methods) in self.routes {
            let merged = match paths.remove(path) {
                Some(earlier) => earlier.merge(methods),
                None => methods,
            };
            paths.insert(path, merged);
        }
        let router = paths.into_iter().fold(Router::new(), |router, (path, methods)| router.route(path, methods));
        (router, spec)
    }
}

async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

/// The query parameters of a query type's object schema: one per property, required when
/// the type requires it. A parameter that is left out is the "absent" of an optional field,
/// so its schema is the field's schema without `null`.
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = without_null(property.clone());
            let description = property.as_object_mut().and_then(|p| p.remove("description"));
            let mut parameter =
                json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": property});
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// `Option<T>`'s schema without its `null` alternative.
fn without_null(mut schema: Value) -> Value {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            schema["type"] = only.clone();
        }
        return schema;
    }
    let inner = schema.get("anyOf").and_then(Value::as_array).and_then(|alternatives| {
        let rest: Vec<&Value> = alternatives.iter().filter(|a| a.get("type") != Some(&json!("null"))).collect();
        (rest.len() == 1).then(|| rest[0].clone())
    });
    match inner {
        Some(mut inner) => {
            if let (Some(description), Some(fields)) = (schema.get("description"), inner.as_object_mut()) {
                fields.insert("description".into(), description.clone());
            }
            inner
        }
        None => schema,
    }
}

fn openapi(docs: &[RouteDoc]) -> Value {
    // OpenAPI 3.1 takes JSON Schema 2020-12; the types' definitions go to components.
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for doc in docs {
        let api_path = doc.path.replace("{*", "{");
        let mut parameters: Vec<Value> = api_path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(query) = doc.query {
            parameters.extend(query_parameters(&query(&mut generator)));
        }
        let mut operation = json!({
            "summary": doc.summary,
            "operationId": format!("{}_{}", doc.method.name(), operation_name(&api_path)),
            "parameters": parameters,
            "responses": doc.answer.responses(&mut generator),
        });
        operation["security"] = doc.access.security();
        if let Some((body, required)) = doc.body {
            operation["requestBody"] = json!({"required": required,
                "content": {"application/json": {"schema": body(&mut generator).to_value()}}});
            if doc.bytes_body {
                operation["requestBody"]["content"]["application/octet-stream"] =
                    json!({"schema": {"type": "string", "contentMediaType": "application/octet-stream"}});
            }
        }
        if let Some(media) = doc.media_body {
            let content: serde_json::Map<String, Value> = media
                .iter()
                .map(|media| (media.to_string(), json!({"schema": {"type": "string", "contentMediaType": media}})))
                .collect();
            operation["requestBody"] = json!({"required": true, "content": content});
        }
        paths.entry(api_path).or_default().insert(doc.method.name().to_string(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "synchub", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Realtime file-sync hub. The WebSocket protocol is at GET /v1/realtime (see docs/API.md)."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "serviceToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "containerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": generator.take_definitions(true),
        }
    })
}

fn operation_name(path: &str) -> String {
    path.trim_start_matches('/').replace(['/', ':', '-'], "_").replace(['{', '}'], "")
}
