//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{cdp, environments, events, live, meta, sessions};

#[derive(OpenApi)]
#[openapi(
    info(title = "agentbox", description = "Agent Sessions API v1 (and agentbox extensions), served by agentbox."),
    paths(
        sessions::sessions_create,
        sessions::sessions_list,
        sessions::sessions_get,
        sessions::sessions_delete,
        sessions::sessions_delete_all,
        sessions::sessions_status,
        sessions::sessions_message,
        sessions::sessions_messages,
        events::sessions_events,
        cdp::sessions_cdp,
        cdp::sessions_cdp_version,
        live::sessions_live_tokens,
        sessions::sessions_webhook_deliveries,
        sessions::sessions_pause,
        sessions::sessions_resume,
        sessions::sessions_cancel,
        sessions::sessions_navigate,
        sessions::sessions_screenshot,
        environments::sessions_snapshot,
        environments::environments_list,
        environments::environments_get,
        environments::environments_delete,
        meta::models_list,
        meta::users_me,
        meta::health_get,
        meta::openapi_get,
        meta::metrics_get,
    ),
    modifiers(&BearerAuth),
    tags((name = "sessions"), (name = "tasks"), (name = "browser"), (name = "environments"), (name = "meta"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}
