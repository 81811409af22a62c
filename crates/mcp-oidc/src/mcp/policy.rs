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
}

impl ToolPolicies {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, tool: &str) -> &mut ToolRequirement {
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
        self.decide(tool, token) == Decision::Allow
    }

    /// Whether a JSON request `body` may call a tool that has a rule; `false` is certain.
    ///
    /// Without a backslash in the body no JSON string in it is escaped, so a string equal
    /// to a tool's name appears in the body byte for byte. This lets the bearer layer skip
    /// parsing the bodies that cannot concern a rule, which is most of them.
    pub(crate) fn may_concern(&self, body: &[u8]) -> bool {
        memchr::memchr(b'\\', body).is_some()
            || self
                .rules
                .keys()
                .any(|name| memchr::memmem::find(body, name.as_bytes()).is_some())
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
    }
}
