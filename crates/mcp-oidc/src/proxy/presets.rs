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
}

/// The known presets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "keycloak",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: false,
        setup: "Clients > Create client: OpenID Connect, Client authentication ON, Standard flow ON, Valid redirect URIs = {base_url}/auth/callback. Issuer: https://HOST/realms/REALM.",
    },
    Preset {
        name: "auth0",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: true,
        setup: "Applications > Create Application: Regular Web Application; Allowed Callback URLs = {base_url}/auth/callback; Advanced > Grant Types: Authorization Code, Refresh Token. Issuer: https://TENANT.auth0.com/ (trailing slash). Set `audience` in upstream_extra_params only if you also want an Auth0 API token.",
    },
    Preset {
        name: "okta",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: false,
        setup: "Applications > Create App Integration: OIDC, Web Application; Sign-in redirect URI = {base_url}/auth/callback; Grant types: Authorization Code, Refresh Token. Issuer: https://ORG.okta.com/oauth2/default.",
    },
    Preset {
        name: "entra",
        scopes: &["openid", "profile", "email", "offline_access"],
        extra_authorize_params: &[],
        use_userinfo: false,
        setup: "App registrations > New registration: Web redirect URI = {base_url}/auth/callback; Certificates & secrets > New client secret. Issuer: https://login.microsoftonline.com/TENANT_ID/v2.0.",
    },
    Preset {
        name: "google",
        scopes: &["openid", "profile", "email"],
        extra_authorize_params: &[("access_type", "offline"), ("prompt", "consent")],
        use_userinfo: false,
        setup: "Google Cloud console > APIs & Services > Credentials > Create OAuth client ID: Web application; Authorized redirect URI = {base_url}/auth/callback. Issuer: https://accounts.google.com.",
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}
