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
    // After upstream's rule, so a free-form group is reported as upstream reports it.
    if let Some(name) = misplaced(endpoint) {
        return Err((
            "jwks_public_endpoint",
            format!(
                "placeholder {{{{{name}}}}} must fill a whole host label, path segment or query \
                 value (e.g. https://{{{{tenant}}}}.idp.example/keys or \
                 https://idp.example/{{{{tenant}}}}/keys)"
            ),
        ));
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

/// The first placeholder that is not a whole host label (`://` or `.` before it, `.`, `:` or
/// `/` after), a whole path segment (`/` before, `/`, `?`, `#` or the end after) or a whole
/// query value (`=` before, `&`, `#` or the end after). Anywhere else (the scheme, userinfo,
/// port, or part of a label or segment) a value would combine with the text around it into
/// something the operator did not write.
fn misplaced(template: &str) -> Option<&str> {
    let authority_start = template.find("://").map_or(0, |i| i + 3);
    let authority_end = template[authority_start..]
        .find(['/', '?', '#'])
        .map_or(template.len(), |i| authority_start + i);
    let query_start = template.find('?').unwrap_or(template.len());
    let mut from = 0;
    while let Some(open) = template[from..].find("{{").map(|i| from + i) {
        let close = template[open + 2..].find("}}").map(|i| open + 2 + i)?;
        let name = template[open + 2..close].trim();
        let before = &template[..open];
        let after = &template[close + 2..];
        let whole = if open < authority_start {
            false // the scheme
        } else if open < authority_end {
            let in_port_or_userinfo = template[authority_start..open].contains([':', '@']);
            (open == authority_start || before.ends_with('.'))
                && !in_port_or_userinfo
                && (after.is_empty() || after.starts_with(['.', ':', '/', '?', '#']))
        } else if open < query_start {
            before.ends_with('/') && (after.is_empty() || after.starts_with(['/', '?', '#']))
        } else {
            before.ends_with('=') && (after.is_empty() || after.starts_with(['&', '#']))
        };
        if !whole {
            return Some(name);
        }
        from = close + 2;
    }
    None
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

    #[test]
    fn placeholders_fill_whole_labels_segments_or_query_values_only() {
        let list = r"(?P<t>acme|globex)";
        for fine in [
            "https://{{t}}.idp.example/keys",
            "https://{{t}}/keys",
            "https://idp.{{t}}.example:8443/keys",
            "https://idp.example/{{t}}/keys",
            "https://idp.example/keys/{{ t }}",
            "https://idp.example/keys?tenant={{t}}&v=1",
        ] {
            assert_eq!(check(fine, list, ""), Ok(()), "{fine}");
        }
        for wrong in [
            "https://idp.example:{{t}}/keys",
            "https://{{t}}@idp.example/keys",
            "{{t}}://idp.example/keys",
            "https://idp-{{t}}.example/keys",
            "https://idp.example/keys-{{t}}",
            "https://idp.example/{{t}}.json",
            "https://idp.example/keys?{{t}}",
        ] {
            let err = check(wrong, list, "").unwrap_err();
            assert_eq!(err.0, "jwks_public_endpoint", "{wrong}");
        }
    }
}
