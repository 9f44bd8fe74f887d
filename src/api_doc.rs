//! Routes are registered through [`ApiRouter`], which records each one for
//! `/openapi.json` as it adds it to the axum router: the spec cannot drift from the routes.

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use serde_json::{Map, Value, json};

use crate::app::AppState;

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
    Public,
    User,
    Service,
    /// User, service or container token, as the route decides.
    Bearer,
}

/// A route's success answer, as documented.
#[derive(Clone, Copy, Debug, Default)]
pub enum Answer {
    /// A JSON object.
    #[default]
    Object,
    /// A JSON array of objects.
    Array,
    /// A body in one of these media types (text or bytes), never JSON.
    Media(&'static [&'static str]),
    /// A WebSocket upgrade: 101, then frames.
    Upgrade,
}

impl Answer {
    fn responses(self) -> Value {
        let json = |schema: Value| json!({"application/json": {"schema": schema}});
        let success = match self {
            Answer::Object => json!({"2XX": {"description": "Success", "content": json(json!({"type": "object"}))}}),
            Answer::Array => json!({"2XX": {"description": "Success",
                "content": json(json!({"type": "array", "items": {"type": "object"}}))}}),
            Answer::Media(types) => {
                let content: Map<String, Value> =
                    types.iter().map(|media| (media.to_string(), json!({"schema": {"type": "string"}}))).collect();
                json!({"2XX": {"description": "Success", "content": content}})
            }
            Answer::Upgrade => json!({"101": {"description": "Switching Protocols: the WebSocket (docs/API.md)"}}),
        };
        let mut responses = success;
        responses["default"] =
            json!({"description": "Error", "content": json(json!({"$ref": "#/components/schemas/Error"}))});
        responses
    }
}

struct RouteDoc {
    method: Method,
    path: &'static str,
    summary: &'static str,
    access: Access,
    answer: Answer,
}

#[derive(Default)]
pub struct ApiRouter {
    routes: BTreeMap<&'static str, MethodRouter<AppState>>,
    docs: Vec<RouteDoc>,
}

impl ApiRouter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let entry = self.routes.remove(path).unwrap_or_default();
        self.routes.insert(path, entry.on(method.filter(), handler));
        self.docs.push(RouteDoc { method, path, summary, access, answer: Answer::default() });
        self
    }

    /// Documents the success answer of the route registered last (a JSON object unless
    /// said otherwise here).
    pub fn answers(mut self, answer: Answer) -> Self {
        if let Some(doc) = self.docs.last_mut() {
            doc.answer = answer;
        }
        self
    }

    /// The axum router and the OpenAPI 3 document of everything registered.
    pub fn finish(self) -> (Router<AppState>, Value) {
        let spec = openapi(&self.docs);
        let router = self.routes.into_iter().fold(Router::new(), |router, (path, methods)| router.route(path, methods));
        (router, spec)
    }
}

fn openapi(docs: &[RouteDoc]) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for doc in docs {
        let api_path = doc.path.replace("{*", "{");
        let parameters: Vec<Value> = api_path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": doc.summary,
            "operationId": format!("{}_{}", doc.method.name(), operation_name(&api_path)),
            "parameters": parameters,
            "responses": doc.answer.responses(),
        });
        let security = match doc.access {
            Access::Public => json!([]),
            Access::User => json!([{"userToken": []}]),
            Access::Service => json!([{"serviceToken": []}]),
            Access::Bearer => {
                json!([{"userToken": []}, {"serviceToken": []}, {"containerToken": []}])
            }
        };
        operation["security"] = security;
        if matches!(doc.method, Method::Post | Method::Put | Method::Patch) {
            operation["requestBody"] = json!({"content": {"application/json": {"schema": {"type": "object"}}}});
        }
        paths.entry(api_path).or_default().insert(doc.method.name().to_string(), operation);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "synchub", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Realtime file-sync hub. The WebSocket protocol is at GET /v1/realtime (see docs/API.md)."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "serviceToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "containerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    "additionalProperties": true}}}
            }
        }
    })
}

fn operation_name(path: &str) -> String {
    path.trim_start_matches('/').replace(['/', ':', '-'], "_").replace(['{', '}'], "")
}
