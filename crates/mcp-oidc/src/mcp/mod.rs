//! rmcp glue: handing the verified caller to every tool, and per-tool authorization.
//!
//! Wrap any rmcp [`ServerHandler`] in [`Authenticated`] and its tools receive the caller
//! with no boilerplate, either as a tool parameter:
//!
//! ```text
//! #[tool(description = "Who am I?")]
//! async fn whoami(&self, Extension(token): Extension<AccessToken>) -> String {
//!     token.subject().to_string()
//! }
//! ```
//!
//! or from anywhere inside the call with [`current_token`]. Tools with a rule in
//! [`ToolPolicies`] are hidden from `tools/list` for callers who may not use them.

mod hibernation;
mod policy;
mod service;

use std::borrow::Cow;
use std::future::Future;

use rmcp::model::*;
use rmcp::service::{NotificationContext, RequestContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData as McpError, ServerHandler};

pub(crate) use hibernation::HibernatingSessions;
pub use policy::{Decision, ToolPolicies, ToolRequirement};
pub use service::SharedMcpService;

use crate::token::AccessToken;

tokio::task_local! {
    static CURRENT: AccessToken;
}

/// The caller of the MCP request being handled, when called inside a handler of an
/// [`Authenticated`] server (the equivalent of FastMCP's `get_access_token()`).
pub fn current_token() -> Option<AccessToken> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Wraps an rmcp [`ServerHandler`] so that each request's [`AccessToken`] is
/// - in the rmcp context's extensions (so `Extension<AccessToken>` works as a tool
///   parameter), and
/// - available through [`current_token`] for the duration of the handler,
///
/// and so that [`ToolPolicies`] filter `tools/list` and guard `tools/call`.
#[derive(Clone, Debug)]
pub struct Authenticated<H> {
    inner: H,
    policies: ToolPolicies,
}

impl<H> Authenticated<H> {
    /// Wraps `inner` with no per-tool rules.
    pub fn new(inner: H) -> Self {
        Self {
            inner,
            policies: ToolPolicies::default(),
        }
    }

    /// Wraps `inner` with per-tool rules.
    pub fn with_policies(inner: H, policies: ToolPolicies) -> Self {
        Self { inner, policies }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

/// Moves the token the HTTP layer stored in the request parts into rmcp's own extensions.
fn lift(context: &mut RequestContext<RoleServer>) -> Option<AccessToken> {
    let token = context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<AccessToken>())
        .cloned()?;
    context.extensions.insert(token.clone());
    Some(token)
}

async fn scoped<F: Future>(token: Option<AccessToken>, f: F) -> F::Output {
    match token {
        Some(t) => CURRENT.scope(t, f).await,
        None => f.await,
    }
}

macro_rules! forward_with_context {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ;)*) => {
        $(
            async fn $name(&self, $($arg: $ty,)* mut context: RequestContext<RoleServer>) -> Result<$ret, McpError> {
                let token = lift(&mut context);
                scoped(token, self.inner.$name($($arg,)* context)).await
            }
        )*
    };
}

// Deprecated methods (logging, legacy subscriptions) are forwarded too, so that a wrapped
// server keeps serving older clients exactly as before.
#[allow(deprecated)]
impl<H: ServerHandler> ServerHandler for Authenticated<H> {
    forward_with_context! {
        ping() -> ();
        initialize(request: InitializeRequestParams) -> InitializeResult;
        discover() -> DiscoverResult;
        complete(request: CompleteRequestParams) -> CompleteResult;
        set_level(request: SetLevelRequestParams) -> ();
        get_prompt(request: GetPromptRequestParams) -> GetPromptResponse;
        list_prompts(request: Option<PaginatedRequestParams>) -> ListPromptsResult;
        list_resources(request: Option<PaginatedRequestParams>) -> ListResourcesResult;
        list_resource_templates(request: Option<PaginatedRequestParams>) -> ListResourceTemplatesResult;
        read_resource(request: ReadResourceRequestParams) -> ReadResourceResponse;
        subscribe(request: SubscribeRequestParams) -> ();
        unsubscribe(request: UnsubscribeRequestParams) -> ();
        on_custom_request(request: CustomRequest) -> CustomResult;
        get_task(request: GetTaskParams) -> GetTaskResult;
        update_task(request: UpdateTaskParams) -> ();
        cancel_task(request: CancelTaskParams) -> ();
        list_skills(request: Option<PaginatedRequestParams>) -> ListSkillsResult;
        get_skill(request: GetSkillRequestParams) -> GetSkillResult;
        read_resource_directory(request: ReadResourceDirectoryRequestParams) -> ReadResourceDirectoryResult;
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let token = lift(&mut context);
        if self.policies.get(&request.name).is_some() {
            // The HTTP layer normally refuses these with a 403 step-up before they get here;
            // this check keeps the rule when the handler is served without that layer.
            let allowed = token
                .as_ref()
                .is_some_and(|t| self.policies.allows(&request.name, t));
            if !allowed {
                return Err(McpError::invalid_params(
                    format!("the caller may not use the tool `{}`", request.name),
                    None,
                ));
            }
        }
        scoped(token, self.inner.call_tool(request, context)).await
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        mut context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let token = lift(&mut context);
        let mut result = scoped(token.clone(), self.inner.list_tools(request, context)).await?;
        if !self.policies.is_empty() {
            result.tools.retain(|tool| match &token {
                Some(t) => self.policies.allows(&tool.name, t),
                None => self.policies.get(&tool.name).is_none(),
            });
        }
        Ok(result)
    }

    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, McpError> {
        self.inner.negotiate_initialize(request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.inner.supported_protocol_versions()
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.inner.accepted_subscription_filter(requested)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        self.inner.listen(context).await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.get_tool(name)
    }

    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        self.inner.on_cancelled(notification, context).await
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        self.inner.on_progress(notification, context).await
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.inner.on_initialized(context).await
    }

    async fn on_roots_list_changed(&self, context: NotificationContext<RoleServer>) {
        self.inner.on_roots_list_changed(context).await
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) {
        self.inner
            .on_custom_notification(notification, context)
            .await
    }

    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }
}
