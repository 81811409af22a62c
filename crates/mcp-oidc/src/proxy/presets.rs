//! Settings for common identity providers, where they differ from plain OIDC.

/// A provider preset: what to configure upstream, and what the provider needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// Name used in configuration (`upstream_preset = "keycloak"`).
    pub name: &'static str,
    /// Scopes to request upstream.
    pub scopes: &'static [&'static str],
    /// Extra authorization parameters.
    pub extra_authorize_params: &'static [(&'static str, &'static str)],
    /// Whether to call userinfo for claims.
    pub use_userinfo: bool,
    /// The app settings to make at the provider.
    pub setup: &'static str,
    /// Fixed endpoints (authorization, token, userinfo) of a provider without discovery.
    pub endpoints: Option<(&'static str, &'static str, &'static str)>,
    /// The userinfo member naming the user when there is no `sub`.
    pub subject_claim: Option<&'static str>,
}

/// The known presets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "keycloak",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: false,
        endpoints: None,
        subject_claim: None,
        setup: "Clients > Create client: OpenID Connect, Client authentication ON, Standard flow ON, Valid redirect URIs = {base_url}/auth/callback. Issuer: https://HOST/realms/REALM.",
    },
    Preset {
        name: "auth0",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: true,
        endpoints: None,
        subject_claim: None,
        setup: "Applications > Create Application: Regular Web Application; Allowed Callback URLs = {base_url}/auth/callback; Advanced > Grant Types: Authorization Code, Refresh Token. Issuer: https://TENANT.auth0.com/ (trailing slash). Set `audience` in upstream_extra_params only if you also want an Auth0 API token.",
    },
    Preset {
        name: "okta",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: false,
        endpoints: None,
        subject_claim: None,
        setup: "Applications > Create App Integration: OIDC, Web Application; Sign-in redirect URI = {base_url}/auth/callback; Grant types: Authorization Code, Refresh Token. Issuer: https://ORG.okta.com/oauth2/default.",
    },
    Preset {
        name: "entra",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: false,
        endpoints: None,
        subject_claim: None,
        setup: "App registrations > New registration: Web redirect URI = {base_url}/auth/callback; Certificates & secrets > New client secret. Issuer: https://login.microsoftonline.com/TENANT_ID/v2.0.",
    },
    Preset {
        name: "google",
        scopes: &["openid", "profile", "email"],
        extra_authorize_params: &[("access_type", "offline"), ("prompt", "consent")],
        use_userinfo: false,
        endpoints: None,
        subject_claim: None,
        setup: "Google Cloud console > APIs & Services > Credentials > Create OAuth client ID: Web application; Authorized redirect URI = {base_url}/auth/callback. Issuer: https://accounts.google.com.",
    },
    Preset {
        name: "github",
        scopes: &["read:user", "user:email"],
        extra_authorize_params: &[],
        use_userinfo: true,
        endpoints: Some((
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            "https://api.github.com/user",
        )),
        subject_claim: Some("id"),
        setup: "Settings > Developer settings > OAuth Apps > New OAuth App: Authorization callback URL = {base_url}/auth/callback; generate a client secret. GitHub is plain OAuth 2.0 (no discovery, no ID token): the user is read from https://api.github.com/user, `id` becomes `sub`, `login` becomes `preferred_username`. Set issuer = \"https://github.com\".",
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}
