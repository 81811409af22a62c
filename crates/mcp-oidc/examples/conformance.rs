//! The MCP conformance suite's fixture server (`@modelcontextprotocol/conformance server`),
//! built on rmcp and served through [`McpOidc`], so the suite can check that the
//! authorization layer changes nothing a client can observe.
//!
//! ```text
//! conformance --port 3001                                   # auth off, MCP at /mcp
//! conformance --port 3001 --auth-issuer http://localhost:9400 [--auth-audience AUD]
//! ```
//!
//! Tools, resources and prompts carry the names and contents the suite asks for
//! (`test_simple_text`, `test://static-text`, `test_simple_prompt`, ...).

#![allow(deprecated)] // the suite exercises logging and sampling, deprecated by SEP-2577

use std::sync::Arc;

use mcp_oidc::McpOidc;
use mcp_oidc::resource::ProtectedResource;
use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource, StaticTokenVerifier};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientResult, CompleteRequestParams,
    CompleteResult, ContentBlock, CreateMessageRequestParams, ElicitRequest, ElicitRequestParams,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, JsonObject,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam, Prompt,
    PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities,
    ServerConfig, ServerRequest, SetLevelRequestParams, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{Value, json};

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV file holding one silent 8 kHz sample.
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQIAAACAgA==";

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value).map_err(|e| McpError::internal_error(e.to_string(), None))
}

fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn no_args() -> Arc<JsonObject> {
    object(json!({"type": "object", "properties": {}}))
}

fn string_args(names: &[&str]) -> Arc<JsonObject> {
    let props: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| ((*n).to_owned(), json!({"type": "string"})))
        .collect();
    object(json!({"type": "object", "properties": props, "required": names}))
}

fn arg(args: &Option<JsonObject>, name: &str) -> String {
    args.as_ref()
        .and_then(|a| a.get(name))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new("test_simple_text", "Returns simple text content", no_args()),
        Tool::new("test_image_content", "Returns image content", no_args()),
        Tool::new("test_audio_content", "Returns audio content", no_args()),
        Tool::new(
            "test_embedded_resource",
            "Returns an embedded resource",
            no_args(),
        ),
        Tool::new(
            "test_multiple_content_types",
            "Returns text, image and resource content",
            no_args(),
        ),
        Tool::new(
            "test_tool_with_logging",
            "Sends log messages while it runs",
            no_args(),
        ),
        Tool::new(
            "test_tool_with_progress",
            "Reports progress while it runs",
            no_args(),
        ),
        Tool::new(
            "test_error_handling",
            "Always fails with a tool error",
            no_args(),
        ),
        Tool::new(
            "test_sampling",
            "Asks the client's LLM to complete a prompt",
            string_args(&["prompt"]),
        ),
        Tool::new(
            "test_elicitation",
            "Asks the user for their details",
            string_args(&["message"]),
        ),
        Tool::new(
            "test_elicitation_sep1034_defaults",
            "Elicitation whose fields carry default values (SEP-1034)",
            no_args(),
        ),
        Tool::new(
            "test_elicitation_sep1330_enums",
            "Elicitation with every kind of enum field (SEP-1330)",
            no_args(),
        ),
        Tool::new(
            "test_reconnection",
            "Takes a moment, for SSE polling tests",
            no_args(),
        ),
        Tool::new(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            object(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                    }
                },
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false
            })),
        ),
    ]
}

/// The fixture server.
#[derive(Clone, Default)]
struct Conformance;

impl Conformance {
    async fn elicit(
        &self,
        context: &RequestContext<RoleServer>,
        params: Value,
    ) -> Result<Value, McpError> {
        let params: ElicitRequestParams = from_json(params)?;
        let result = context
            .peer
            .send_request(ServerRequest::ElicitRequest(ElicitRequest::new(params)))
            .await
            .map_err(|e| McpError::internal_error(format!("elicitation failed: {e}"), None))?;
        match result {
            ClientResult::ElicitResult(r) => {
                serde_json::to_value(r).map_err(|e| McpError::internal_error(e.to_string(), None))
            }
            other => Err(McpError::internal_error(
                format!("unexpected elicitation answer: {other:?}"),
                None,
            )),
        }
    }
}

#[allow(deprecated)]
impl ServerHandler for Conformance {
    fn get_info(&self) -> ServerConfig {
        let capabilities: ServerCapabilities = serde_json::from_value(json!({
            "logging": {},
            "completions": {},
            "prompts": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
            "tools": {"listChanged": false}
        }))
        .unwrap_or_default();
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            "mcp-oidc-conformance",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = &request.arguments;
        let result = match request.name.as_ref() {
            "test_simple_text" => CallToolResult::success(vec![ContentBlock::text(
                "This is a simple text response for testing.",
            )]),
            "test_image_content" => {
                CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")])
            }
            "test_audio_content" => {
                CallToolResult::success(vec![ContentBlock::audio(WAV, "audio/wav")])
            }
            "test_embedded_resource" => CallToolResult::success(vec![ContentBlock::resource(
                ResourceContents::text(
                    "This is an embedded resource content.",
                    "test://embedded-resource",
                )
                .with_mime_type("text/plain"),
            )]),
            "test_multiple_content_types" => CallToolResult::success(vec![
                ContentBlock::text("Multiple content types test:"),
                ContentBlock::image(PNG, "image/png"),
                ContentBlock::resource(
                    ResourceContents::text(
                        r#"{"test":"data","value":123}"#,
                        "test://mixed-content-resource",
                    )
                    .with_mime_type("application/json"),
                ),
            ]),
            "test_tool_with_logging" => {
                for (i, message) in [
                    "Tool execution started",
                    "Tool processing data",
                    "Tool execution completed",
                ]
                .into_iter()
                .enumerate()
                {
                    let param: LoggingMessageNotificationParam = from_json(json!({
                        "level": "info",
                        "logger": "conformance",
                        "data": message
                    }))?;
                    context
                        .peer
                        .notify_logging_message(param)
                        .await
                        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                    if i < 2 {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
                CallToolResult::success(vec![ContentBlock::text(
                    "Tool with logging executed successfully",
                )])
            }
            "test_tool_with_progress" => {
                let token = request
                    .meta
                    .as_ref()
                    .and_then(|m| m.get_progress_token())
                    .or_else(|| context.meta.get_progress_token());
                if let Some(token) = token {
                    for progress in [0, 50, 100] {
                        let param: ProgressNotificationParam = from_json(json!({
                            "progressToken": token,
                            "progress": progress,
                            "total": 100,
                            "message": format!("Completed step {progress} of 100")
                        }))?;
                        context
                            .peer
                            .notify_progress(param)
                            .await
                            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
                CallToolResult::success(vec![ContentBlock::text(
                    "Tool with progress executed successfully",
                )])
            }
            "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
                "This tool intentionally returns an error for testing",
            )]),
            "test_sampling" => {
                let params: CreateMessageRequestParams = from_json(json!({
                    "messages": [{"role": "user", "content": {"type": "text", "text": arg(args, "prompt")}}],
                    "maxTokens": 100
                }))?;
                let answer =
                    context.peer.create_message(params).await.map_err(|e| {
                        McpError::internal_error(format!("sampling failed: {e}"), None)
                    })?;
                let answer = serde_json::to_value(answer).unwrap_or_default();
                let text = answer
                    .pointer("/content/text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| answer["content"].to_string());
                CallToolResult::success(vec![ContentBlock::text(format!("LLM response: {text}"))])
            }
            "test_elicitation" => {
                let answer = self
                    .elicit(
                        &context,
                        json!({
                            "message": arg(args, "message"),
                            "requestedSchema": {
                                "type": "object",
                                "properties": {
                                    "username": {"type": "string", "description": "User's response"},
                                    "email": {"type": "string", "description": "User's email address"}
                                },
                                "required": ["username", "email"]
                            }
                        }),
                    )
                    .await?;
                CallToolResult::success(vec![ContentBlock::text(format!(
                    "User response: action={}, content={}",
                    answer["action"].as_str().unwrap_or("?"),
                    answer.get("content").cloned().unwrap_or(Value::Null)
                ))])
            }
            "test_elicitation_sep1034_defaults" => {
                let answer = self
                    .elicit(
                        &context,
                        json!({
                            "message": "Please review and update the form fields with defaults",
                            "requestedSchema": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                                    "age": {"type": "integer", "description": "User age", "default": 30},
                                    "score": {"type": "number", "description": "User score", "default": 95.5},
                                    "status": {
                                        "type": "string",
                                        "description": "User status",
                                        "enum": ["active", "inactive", "pending"],
                                        "default": "active"
                                    },
                                    "verified": {"type": "boolean", "description": "Verification status", "default": true}
                                }
                            }
                        }),
                    )
                    .await?;
                CallToolResult::success(vec![ContentBlock::text(format!(
                    "Elicitation completed: action={}, content={}",
                    answer["action"].as_str().unwrap_or("?"),
                    answer.get("content").cloned().unwrap_or(Value::Null)
                ))])
            }
            "test_elicitation_sep1330_enums" => {
                let answer = self
                    .elicit(
                        &context,
                        json!({
                            "message": "Please choose among the options",
                            "requestedSchema": {
                                "type": "object",
                                "properties": {
                                    "untitledSingle": {
                                        "type": "string",
                                        "description": "Pick one",
                                        "enum": ["option1", "option2", "option3"]
                                    },
                                    "titledSingle": {
                                        "type": "string",
                                        "description": "Pick one (titled)",
                                        "oneOf": [
                                            {"const": "value1", "title": "First option"},
                                            {"const": "value2", "title": "Second option"},
                                            {"const": "value3", "title": "Third option"}
                                        ]
                                    },
                                    "legacyEnum": {
                                        "type": "string",
                                        "description": "Pick one (legacy titles)",
                                        "enum": ["opt1", "opt2", "opt3"],
                                        "enumNames": ["Option One", "Option Two", "Option Three"]
                                    },
                                    "untitledMulti": {
                                        "type": "array",
                                        "description": "Pick several",
                                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]}
                                    },
                                    "titledMulti": {
                                        "type": "array",
                                        "description": "Pick several (titled)",
                                        "items": {
                                            "anyOf": [
                                                {"const": "value1", "title": "First choice"},
                                                {"const": "value2", "title": "Second choice"},
                                                {"const": "value3", "title": "Third choice"}
                                            ]
                                        }
                                    }
                                }
                            }
                        }),
                    )
                    .await?;
                CallToolResult::success(vec![ContentBlock::text(format!(
                    "Elicitation completed: action={}, content={}",
                    answer["action"].as_str().unwrap_or("?"),
                    answer.get("content").cloned().unwrap_or(Value::Null)
                ))])
            }
            "test_reconnection" => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                CallToolResult::success(vec![ContentBlock::text("Reconnection test completed")])
            }
            "json_schema_2020_12_tool" => {
                CallToolResult::success(vec![ContentBlock::text(format!(
                    "Received: {}",
                    Value::Object(args.clone().unwrap_or_default())
                ))])
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("test://static-text", "static-text")
                .with_description("A static text resource")
                .with_mime_type("text/plain"),
            Resource::new("test://static-binary", "static-binary")
                .with_description("A static binary resource (a PNG image)")
                .with_mime_type("image/png"),
            Resource::new("test://watched-resource", "watched-resource")
                .with_description("A resource clients may subscribe to")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("test://template/{id}/data", "template-data")
                .with_description("Data for any id")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.as_str();
        let contents = match uri {
            "test://static-text" => {
                ResourceContents::text("This is the content of the static text resource.", uri)
                    .with_mime_type("text/plain")
            }
            "test://static-binary" => ResourceContents::blob(PNG, uri).with_mime_type("image/png"),
            "test://watched-resource" => {
                ResourceContents::text("Watched resource content", uri).with_mime_type("text/plain")
            }
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(id) => ResourceContents::text(
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                        .to_string(),
                    uri,
                )
                .with_mime_type("application/json"),
                None => {
                    return Err(McpError::resource_not_found(
                        format!("no resource {uri}"),
                        None,
                    ));
                }
            },
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn subscribe(
        &self,
        _request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let prefix = request.argument.value.to_lowercase();
        let values: Vec<&str> = ["paris", "park", "party"]
            .into_iter()
            .filter(|v| v.starts_with(&prefix))
            .collect();
        from_json(json!({
            "completion": {"values": values, "total": values.len(), "hasMore": false}
        }))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let required = |name: &str, description: &str| {
            PromptArgument::new(name)
                .with_description(description)
                .with_required(true)
        };
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "test_simple_prompt",
                Some("A simple prompt without arguments"),
                None,
            ),
            Prompt::new(
                "test_prompt_with_arguments",
                Some("A prompt with arguments"),
                Some(vec![
                    required("arg1", "First test argument"),
                    required("arg2", "Second test argument"),
                ]),
            ),
            Prompt::new(
                "test_prompt_with_embedded_resource",
                Some("A prompt with an embedded resource"),
                Some(vec![required(
                    "resourceUri",
                    "URI of the resource to embed",
                )]),
            ),
            Prompt::new(
                "test_prompt_with_image",
                Some("A prompt with image content"),
                None,
            ),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let args = &request.arguments;
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "This is a simple prompt for testing.",
            )],
            "test_prompt_with_arguments" => vec![PromptMessage::new_text(
                Role::User,
                format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    arg(args, "arg1"),
                    arg(args, "arg2")
                ),
            )],
            "test_prompt_with_embedded_resource" => vec![
                PromptMessage::new(
                    Role::User,
                    ContentBlock::resource(
                        ResourceContents::text(
                            "Embedded resource content for testing.",
                            arg(args, "resourceUri"),
                        )
                        .with_mime_type("text/plain"),
                    ),
                ),
                PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
            ],
            "test_prompt_with_image" => vec![
                PromptMessage::new(Role::User, ContentBlock::image(PNG, "image/png")),
                PromptMessage::new_text(Role::User, "Please analyze the image above."),
            ],
            other => {
                return Err(McpError::invalid_params(format!("no prompt {other}"), None));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }
}

struct Args {
    port: u16,
    auth_issuer: Option<String>,
    auth_audience: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 3001,
        auth_issuer: None,
        auth_audience: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--auth-issuer" => args.auth_issuer = Some(value()?),
            "--auth-audience" => args.auth_audience = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: conformance [--port PORT] [--auth-issuer URL [--auth-audience AUD]]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rmcp=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args().map_err(|e| {
        eprintln!("{e}");
        e
    })?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let port = listener.local_addr()?.port();
    let mut resource = ProtectedResource::new(&format!("http://localhost:{port}"), "/mcp")?;
    let server = match &args.auth_issuer {
        Some(issuer) => {
            resource.authorization_servers = vec![issuer.clone()];
            let audience = args
                .auth_audience
                .clone()
                .unwrap_or_else(|| resource.resource().to_owned());
            let verifier = JwtVerifier::new(JwtConfig::new(
                issuer.as_str(),
                KeySource::Discovery(issuer.clone()),
                AudiencePolicy::OneOf(vec![audience.into()]),
            ))?;
            McpOidc::new(resource, verifier)
        }
        None => McpOidc::new(
            resource,
            StaticTokenVerifier::new("http://localhost", Vec::new()),
        )
        .without_auth_for_testing(),
    };
    let auth = if args.auth_issuer.is_some() {
        "on"
    } else {
        "off"
    };
    let app = server.router(Conformance::default);
    println!("conformance server listening on http://localhost:{port}/mcp (auth {auth})");
    mcp_oidc::serve(listener, app, mcp_oidc::server::shutdown_signal()).await?;
    Ok(())
}
