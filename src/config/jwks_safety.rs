//! Upstream 6.7's JWKS endpoint safety rule (CVE-2026-32301 class): a `{{name}}` placeholder of
//! `jwks_public_endpoint` is filled from an unverified token claim, so the regex group that
//! feeds it must be an explicit list of fixed strings (`(?P<tenant>acme|globex)`), else a
//! forged token picks the host, port or path Rotor fetches keys from. The check reads the
//! regexes' syntax tree as written (no simplification), and, as upstream, refuses character
//! classes anywhere in a pattern that feeds the template.
//!
//! Owns: the rule. Must not: compile regexes for matching or touch the network.

use regex_syntax::ast::{self, Ast, GroupKind};

/// Why a token section's JWKS template is unsafe: the key at fault and the message.
pub(super) type Unsafe = (&'static str, String);

/// Checks the groups of `issuer_regex` and `audience_regex` that fill the template's
/// placeholders.
pub(super) fn check(endpoint: &str, issuer: &str, audience: &str) -> Result<(), Unsafe> {
    let names: Vec<&str> = placeholders(endpoint).collect();
    if names.is_empty() {
        return Ok(());
    }
    for (key, pattern) in [("issuer_regex", issuer), ("audience_regex", audience)] {
        if pattern.is_empty() {
            continue;
        }
        // Invalid patterns are reported by the regex check itself.
        let Ok(tree) = ast::parse::Parser::new().parse(pattern) else { continue };
        if has_class(&tree) {
            return Err((
                key,
                "contains a character class, which is not allowed when jwks_public_endpoint \
                 has placeholders: use an explicit list of allowed values (e.g. \
                 value1|value2|value3)"
                    .to_owned(),
            ));
        }
        let mut groups = Vec::new();
        named_groups(&tree, &mut groups);
        for (name, group) in groups {
            if names.contains(&name) && !fixed(group) {
                return Err((
                    key,
                    format!(
                        "named group {name:?} fills jwks_public_endpoint: only an explicit \
                         list of allowed values is permitted (e.g. value1|value2|value3)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Names inside `{{...}}`, spaces trimmed, as the JWKS verifier fills them.
pub(super) fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|after| after.split_once("}}"))
        .map(|(name, _)| name.trim())
}

/// Every named group with the tree it matches.
fn named_groups<'a>(tree: &'a Ast, out: &mut Vec<(&'a str, &'a Ast)>) {
    match tree {
        Ast::Group(g) => {
            if let GroupKind::CaptureName { name, .. } = &g.kind {
                out.push((name.name.as_str(), &g.ast));
            }
            named_groups(&g.ast, out);
        }
        Ast::Alternation(a) => a.asts.iter().for_each(|t| named_groups(t, out)),
        Ast::Concat(c) => c.asts.iter().for_each(|t| named_groups(t, out)),
        Ast::Repetition(r) => named_groups(&r.ast, out),
        _ => {}
    }
}

/// Whether the tree matches only a finite set of fixed strings: literals, concatenations,
/// alternations and groups of them (no wildcard, class, repetition, flag or anchor).
fn fixed(tree: &Ast) -> bool {
    match tree {
        Ast::Empty(_) | Ast::Literal(_) => true,
        Ast::Group(g) => {
            !matches!(g.kind, GroupKind::NonCapturing(ref f) if !f.items.is_empty())
                && fixed(&g.ast)
        }
        Ast::Alternation(a) => a.asts.iter().all(fixed),
        Ast::Concat(c) => c.asts.iter().all(fixed),
        _ => false,
    }
}

fn has_class(tree: &Ast) -> bool {
    match tree {
        Ast::ClassUnicode(_) | Ast::ClassPerl(_) | Ast::ClassBracketed(_) => true,
        Ast::Group(g) => has_class(&g.ast),
        Ast::Alternation(a) => a.asts.iter().any(has_class),
        Ast::Concat(c) => c.asts.iter().any(has_class),
        Ast::Repetition(r) => has_class(&r.ast),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    const URL: &str = "https://{{tenant}}.auth.example/keys";

    #[test]
    fn only_explicit_lists_may_fill_placeholders() {
        for safe in [
            r"^https://(?P<tenant>acme|globex)\.example$",
            r"(?P<tenant>acme)",
            r"(?P<tenant>(?:eu|us)-(acme|globex))",
            r"^.*(?P<tenant>acme|globex)$", // a wildcard outside the group is fine
        ] {
            assert_eq!(check(URL, safe, ""), Ok(()), "{safe}");
        }
        for unsafe_ in [
            r"(?P<tenant>.+)",
            r"(?P<tenant>[a-z]+)",
            r"(?P<tenant>\w+)",
            r"(?P<tenant>acme|\d)",
            r"(?P<tenant>acme|.)",
            r"(?P<tenant>acme+)",
            r"(?P<tenant>(?i)acme)",
            r"(?P<tenant>(?i:acme))",
            r"(?P<other>acme)[0-9]", // a class anywhere in a pattern feeding the template
        ] {
            let err = check(URL, unsafe_, "").unwrap_err();
            assert_eq!(err.0, "issuer_regex", "{unsafe_}");
        }
        let err = check(URL, "", r"(?P<tenant>\S+)").unwrap_err();
        assert_eq!(err.0, "audience_regex");
        // Without placeholders any pattern goes.
        assert_eq!(check("https://auth.example/keys", r"(?P<tenant>.+)", ""), Ok(()));
    }
}
