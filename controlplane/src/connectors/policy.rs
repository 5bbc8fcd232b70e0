//! The effective action of a tool: the first `[[connectors.policies]]` rule whose glob
//! matches the tool's name, else `always_run` for reads and `require_approval` for the rest.

use kortix_manifest::{Policy, PolicyAction};

use super::tools::Risk;

pub fn effective(policies: &[Policy], tool: &str, risk: Risk) -> PolicyAction {
    policies
        .iter()
        .find(|p| glob_matches(&p.pattern, tool))
        .map(|p| p.action)
        .unwrap_or(match risk {
            Risk::Read => PolicyAction::AlwaysRun,
            Risk::Write | Risk::Destructive => PolicyAction::RequireApproval,
        })
}

/// `*` matches any run of characters (also none), `?` exactly one; everything else itself.
/// Iterative with one backtrack point, so a pattern of many stars stays linear-ish.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, action: PolicyAction) -> Policy {
        Policy {
            pattern: pattern.into(),
            action,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("delete_*", "delete_pet"));
        assert!(!glob_matches("delete_*", "get_pet"));
        assert!(glob_matches("get_?et", "get_pet"));
        assert!(glob_matches("*_pet*", "list_pets"));
        assert!(!glob_matches("a*b", "ac"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn first_match_wins_and_defaults_follow_risk() {
        let rules = [
            rule("delete_*", PolicyAction::Block),
            rule("*", PolicyAction::AlwaysRun),
        ];
        assert_eq!(
            effective(&rules, "delete_pet", Risk::Read),
            PolicyAction::Block
        );
        assert_eq!(
            effective(&rules, "add_pet", Risk::Write),
            PolicyAction::AlwaysRun
        );
        assert_eq!(
            effective(&[], "get_pet", Risk::Read),
            PolicyAction::AlwaysRun
        );
        assert_eq!(
            effective(&[], "add_pet", Risk::Write),
            PolicyAction::RequireApproval
        );
        assert_eq!(
            effective(&[], "drop", Risk::Destructive),
            PolicyAction::RequireApproval
        );
    }
}
