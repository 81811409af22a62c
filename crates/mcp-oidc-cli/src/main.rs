use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mcp_oidc::server::shutdown_signal;
use mcp_oidc_cli::config::Settings;
use mcp_oidc_cli::{dev, run, token_cmd};
use mcp_oidc_mock::{MockArgs, MockProvider};
use tracing_subscriber::EnvFilter;

/// OIDC / OAuth 2.1 authorization for MCP servers.
#[derive(Parser)]
#[command(name = "mcp-oidc", version, about)]
struct Cli {
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        env = "MCP_OIDC_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the protected demo MCP server against an OIDC provider.
    Serve {
        /// A TOML configuration file (keys as in the flags, with underscores).
        #[arg(long, short = 'c', env = "MCP_OIDC_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Run the mock OpenID provider and the protected demo server together.
    Dev(dev::DevArgs),
    /// Run the mock OpenID provider alone (compatible with oidc-provider-mock).
    MockIdp(MockArgs),
    /// Print an access token obtained with the authorization-code + PKCE flow.
    Token(token_cmd::TokenArgs),
    /// Validate a configuration and check that the provider is reachable.
    Check {
        /// A TOML configuration file.
        #[arg(long, short = 'c', env = "MCP_OIDC_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

fn init_logging(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(config: Option<PathBuf>, flags: &Settings) -> Result<Settings, mcp_oidc::ConfigError> {
    let file = match config {
        Some(path) => Settings::from_file(&path)?,
        None => Settings::default(),
    };
    Ok(file.overlay(flags))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match run_command(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, settings } => {
            let settings = load(config, &settings)?;
            let resolved = settings.resolve()?;
            let listener = tokio::net::TcpListener::bind(&resolved.bind)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot listen on {}: {e} (set `bind`)", resolved.bind)
                })?;
            tracing::info!(
                mcp = %resolved.resource.resource(),
                listen = %resolved.bind,
                issuer = ?resolved.resource.authorization_servers,
                "serving the protected MCP server"
            );
            run::serve_demo(resolved, listener, shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Dev(args) => dev::run(args, shutdown_signal()).await,
        Command::MockIdp(args) => {
            let addr = args.bind_addr();
            let provider = MockProvider::new(args.into_config()?)?;
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            tracing::info!(%addr, "mock OpenID provider listening");
            provider.serve(listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Token(args) => {
            println!("{}", token_cmd::run(&args).await?);
            Ok(())
        }
        Command::Check { config, settings } => {
            let settings = load(config, &settings)?;
            let resolved = settings.resolve()?;
            println!("configuration: ok");
            println!("  resource:  {}", resolved.resource.resource());
            println!(
                "  issuer:    {}",
                resolved.resource.authorization_servers.join(", ")
            );
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?;
            let meta = mcp_oidc::token::discover(&http, &resolved.discovery_url)
                .await
                .map_err(|e| anyhow::anyhow!("provider discovery failed: {e}"))?;
            println!("  discovery: ok ({})", meta.issuer);
            if let Some(jwt) = &resolved.jwt {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !jwt.keys_loaded() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if !jwt.keys_loaded() {
                    anyhow::bail!(
                        "the provider's signing keys could not be loaded (see the log above)"
                    );
                }
                println!("  jwks:      ok");
            }
            if meta.issuer.trim_end_matches('/')
                != resolved
                    .resource
                    .authorization_servers
                    .first()
                    .map(String::as_str)
                    .unwrap_or("")
            {
                anyhow::bail!(
                    "the provider calls itself `{}` but `issuer` is `{}`: tokens would be refused; set issuer to the provider's value",
                    meta.issuer,
                    resolved.resource.authorization_servers.join(", ")
                );
            }
            println!("all checks passed");
            Ok(())
        }
    }
}
