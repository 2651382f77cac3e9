//! The OpenAPI 3.1 description of everything the full router serves,
//! served at `GET /api/openapi.json`.
//!
//! It is generated, not written: each handler carries a
//! `#[utoipa::path(...)]` annotation (method, path, parameters, every
//! response with its body type), the bodies are the handlers' own types
//! (`bodies.rs`, [`ErrorBody`]), and the router is a
//! [`utoipa_axum::router::OpenApiRouter`] that only takes routes as
//! `.routes(routes!(handler))`: adding a route *is* adding its
//! description, in one place, and a route cannot be served undescribed.
//! What applies to many operations at once is added here, after the
//! routes are collected, from the same facts the router is built from:
//! the API key's security requirement and its 401 on exactly the routes
//! behind the key.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, SecurityRequirement};
use utoipa::{PartialSchema, ToSchema};

use crate::http_error::ErrorBody;

/// The security scheme's name in the description.
const API_KEY: &str = "api_key";

/// The description as served: built once, with the router.
#[derive(Clone)]
pub(crate) struct Spec(pub Arc<OpenApi>);

/// `GET /api/openapi.json`: this description (no key needed: it only
/// describes).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "This OpenAPI 3.1 description", content_type = "application/json", body = Object),
    ),
)]
pub(crate) async fn openapi_json(Extension(spec): Extension<Spec>) -> Response {
    Json(spec.0.as_ref()).into_response()
}

/// Every operation of `spec` (each path, each method).
fn operations(spec: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    spec.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// Marks every operation of `spec` as needing the API key, with the 401
/// (no or a wrong key) and 403 it may then answer: called on the routes
/// that `require_api_key` guards, and only on them.
pub(crate) fn behind_api_key(spec: &mut OpenApi) {
    for operation in operations(spec) {
        operation
            .security
            .get_or_insert_with(Vec::new)
            .push(SecurityRequirement::new::<_, _, &str>(API_KEY, []));
        let responses = &mut operation.responses.responses;
        responses.entry("401".into()).or_insert_with(|| {
            ErrorBody::described(
                "No API key, or not one of the node's (`api_key_missing`, `api_key_invalid`)",
            )
            .into()
        });
    }
}

/// The finished description: title and version, the security scheme and
/// the shared error schema.
pub(crate) fn finish(mut spec: OpenApi) -> OpenApi {
    spec.openapi = utoipa::openapi::OpenApiVersion::Version31;
    spec.info = InfoBuilder::new()
        .title("groupcast")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The HTTP API of a groupcast node: publish to groups, read their history, members \
             and users, the cluster's nodes and workers, health and metrics. Every error is \
             JSON (`ErrorBody`). Routes behind the API key (`--api-keys`) need \
             `Authorization: Bearer <key>`; with no keys configured they are open.",
        ))
        .build();
    let components = spec
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    components.security_schemes.insert(
        API_KEY.to_string(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key of `--api-keys`, as a bearer token"))
                .build(),
        ),
    );
    spec
}
