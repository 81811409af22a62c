//! Per-tool authorization: which tools a caller may see and call.

use std::collections::HashMap;
use std::sync::Arc;

use crate::token::AccessToken;
use crate::types::Scopes;

type Predicate = Arc<dyn Fn(&AccessToken) -> bool + Send + Sync>;

/// What a caller needs to use one tool.
#[derive(Clone)]
pub struct ToolRequirement {
    scopes: Scopes,
    predicate: Option<(Predicate, String)>,
}

impl ToolRequirement {
    /// Whether `token` meets this rule. Unlike [`ToolPolicies::decide`] it builds no
    /// refusal, so a yes-or-no question costs no scope sets; the bearer layer asks one on
    /// every request of a caller who lacks some rule's scopes.
    fn is_met_by(&self, token: &AccessToken) -> bool {
        token.scopes().contains_all(&self.scopes)
            && self.predicate.as_ref().is_none_or(|(p, _)| p(token))
    }
}

impl std::fmt::Debug for ToolRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRequirement")
            .field("scopes", &self.scopes)
            .field("predicate", &self.predicate.as_ref().map(|(_, d)| d))
            .finish()
    }
}

/// The outcome of checking a caller against a tool's requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The caller may use the tool.
    Allow,
    /// The caller lacks scopes: ask for `scope` (those needed plus those held).
    NeedScopes {
        /// Scopes to request on re-authorization.
        scope: Scopes,
        /// Which are missing.
        missing: Scopes,
    },
    /// The caller fails the tool's claim predicate.
    Forbidden(String),
}

/// The authorization rules of a server's tools. Tools without a rule are open to every
/// authenticated caller.
///
/// ```
/// use mcp_oidc::mcp::ToolPolicies;
///
/// let policies = ToolPolicies::new()
///     .require_scopes("write_note", ["mcp:write"])
///     .require_claim("admin_report", "role is admin", |t| t.claim_str("role") == Some("admin"));
/// assert!(policies.get("write_note").is_some());
/// ```
#[derive(Clone, Default, Debug)]
pub struct ToolPolicies {
    rules: Arc<HashMap<String, ToolRequirement>>,
    /// A searcher for each ruled tool's name, built once: building one costs more than
    /// searching a request body with it.
    names: Arc<[memchr::memmem::Finder<'static>]>,
}

impl ToolPolicies {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, tool: &str) -> &mut ToolRequirement {
        if !self.rules.contains_key(tool) {
            self.names = self
                .rules
                .keys()
                .map(String::as_str)
                .chain([tool])
                .map(|name| memchr::memmem::Finder::new(name.as_bytes()).into_owned())
                .collect();
        }
        Arc::make_mut(&mut self.rules)
            .entry(tool.to_owned())
            .or_insert_with(|| ToolRequirement {
                scopes: Scopes::new(),
                predicate: None,
            })
    }

    /// `tool` needs all of `scopes`. A call without them is refused with HTTP 403
    /// `insufficient_scope` naming the scopes, so the client can step up.
    pub fn require_scopes<'a>(
        mut self,
        tool: &str,
        scopes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let entry = self.entry(tool);
        for s in scopes {
            entry.scopes.insert(s.into());
        }
        self
    }

    /// `tool` needs the caller's token to satisfy `predicate` (described by `description`
    /// in refusals).
    pub fn require_claim(
        mut self,
        tool: &str,
        description: &str,
        predicate: impl Fn(&AccessToken) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.entry(tool).predicate = Some((Arc::new(predicate), description.to_owned()));
        self
    }

    /// The rule of `tool`, if any.
    pub fn get(&self, tool: &str) -> Option<&ToolRequirement> {
        self.rules.get(tool)
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Checks `token` against the rule of `tool`.
    pub fn decide(&self, tool: &str, token: &AccessToken) -> Decision {
        let Some(rule) = self.rules.get(tool) else {
            return Decision::Allow;
        };
        let missing = token.scopes().missing(&rule.scopes);
        if !missing.is_empty() {
            return Decision::NeedScopes {
                scope: rule.scopes.union(token.scopes()),
                missing,
            };
        }
        if let Some((predicate, description)) = &rule.predicate
            && !predicate(token)
        {
            return Decision::Forbidden(description.clone());
        }
        Decision::Allow
    }

    /// Whether `token` may see and call `tool`.
    pub fn allows(&self, tool: &str, token: &AccessToken) -> bool {
        self.rules
            .get(tool)
            .is_none_or(|rule| rule.is_met_by(token))
    }

    /// Whether `token` may use every tool that has a rule: then no request of its caller
    /// can be refused by one, and the bearer layer need not read the request bodies.
    pub(crate) fn allow_all(&self, token: &AccessToken) -> bool {
        self.rules.values().all(|rule| rule.is_met_by(token))
    }

    /// Whether a JSON request `body` may call a tool that has a rule; `false` is certain.
    ///
    /// Without a backslash in the body no JSON string in it is escaped, so a string equal
    /// to a tool's name appears in the body byte for byte. This lets the bearer layer skip
    /// parsing the bodies that cannot concern a rule, which is most of them.
    pub(crate) fn may_concern(&self, body: &[u8]) -> bool {
        memchr::memchr(b'\\', body).is_some()
            || self.names.iter().any(|name| name.find(body).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_naming_a_ruled_tool_or_escaping_anything_may_concern_a_rule() {
        let rules = ToolPolicies::new().require_scopes("write_note", ["mcp:write"]);
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#
            )
        };
        assert!(!rules.may_concern(call("process_data").as_bytes()));
        assert!(rules.may_concern(call("write_note").as_bytes()));
        // The same call with the name escaped: no literal match, but the backslash tells.
        assert!(rules.may_concern(call(r"write\u005fnote").as_bytes()));
        assert!(!ToolPolicies::new().may_concern(call("write_note").as_bytes()));
        // A rule added later is searched for too.
        let more = rules.require_scopes("purge", ["mcp:admin"]);
        assert!(more.may_concern(call("purge").as_bytes()));
        assert!(more.may_concern(call("write_note").as_bytes()));
    }

    fn caller(claims: serde_json::Value) -> AccessToken {
        let serde_json::Value::Object(claims) = claims else {
            panic!("claims must be an object")
        };
        AccessToken::from_claims(
            crate::types::BearerToken::new("t"),
            crate::token::TokenSource::Jwt,
            &crate::types::IssuerUrl::from("https://idp"),
            claims,
        )
        .unwrap()
    }

    #[test]
    fn allow_all_holds_only_for_a_caller_every_rule_lets_through() {
        let rules = ToolPolicies::new()
            .require_scopes("write_note", ["mcp:write"])
            .require_claim("report", "role is admin", |t| {
                t.claim_str("role") == Some("admin")
            });
        let full = caller(serde_json::json!({"sub": "a", "scope": "mcp:write", "role": "admin"}));
        let no_scope = caller(serde_json::json!({"sub": "a", "role": "admin"}));
        let no_role = caller(serde_json::json!({"sub": "a", "scope": "mcp:write"}));
        assert!(rules.allow_all(&full));
        assert!(!rules.allow_all(&no_scope));
        assert!(!rules.allow_all(&no_role));
        assert!(ToolPolicies::new().allow_all(&no_role));
        // The yes-or-no answer agrees with the full decision for every tool and caller.
        for token in [&full, &no_scope, &no_role] {
            for tool in ["write_note", "report", "unruled"] {
                assert_eq!(
                    rules.allows(tool, token),
                    rules.decide(tool, token) == Decision::Allow,
                    "{tool}"
                );
            }
        }
        assert!(!rules.allows("write_note", &no_scope));
        assert!(!rules.allows("report", &no_role));
        assert!(rules.allows("unruled", &no_role));
    }
}
