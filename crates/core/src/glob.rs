//! The one wildcard match every pattern in the configuration uses (guardrail tables, masking
//! columns, OIDC claim values): `*` matches any run of characters, none included, `?` exactly
//! one; everything else matches itself. Case-sensitive: a caller that ignores case folds
//! both sides first.

/// Whether `text` matches `pattern` as a whole.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Greedy, with one backtrack point (the last `*`): a later `*` makes every earlier
    // choice final, so patterns of any length match in time linear in pattern × text at
    // worst, never exponential.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((at_star, from)) = star {
            // Let the last `*` take one more character, and try again after it.
            p = at_star + 1;
            t = from + 1;
            star = Some((at_star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn stars_and_question_marks() {
        for (pattern, text, matches) in [
            ("public.secret*", "public.secrets", true),
            ("*.ssn_vault", "hr.ssn_vault", true),
            ("*", "anything", true),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "axxc", false),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("refs/heads/*", "refs/heads/feature/x", true),
            ("refs/heads/*", "refs/tags/v1", false),
            ("acme/*-api", "acme/payments-api", true),
            ("acme/*-api", "acme/payments-api-old", false),
            ("api_?ey", "api_key", true),
            ("api_?ey", "api_ey", false),
            ("caf?", "café", true),
            ("Public.T", "public.t", false),
        ] {
            assert_eq!(glob_match(pattern, text), matches, "{pattern:?} ~ {text:?}");
        }
    }
}
