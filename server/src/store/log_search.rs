//! The `q` of `/api/v1/logs`: what a user types in the search box, turned into
//! an FTS5 query that cannot fail, plus substring checks, and the same test in
//! memory for the live tail.
//!
//! Grammar (documented in docs/logs.md): words separated by spaces are ANDed;
//! `"a phrase"` keeps its spaces; `word*` is a prefix; `-word` excludes lines
//! containing it. Nothing the user types reaches FTS5's own syntax: each
//! token is quoted, so `AND`, `NEAR(`, `"`, `:` or `*` inside a word are text.
//!
//! The full-text index keeps no positions (`detail=none`, for ingest speed),
//! so a term that spans several tokens (`"Failed password"`, `10.0.2.2`,
//! `pam_unix(sshd:auth)`) is looked up by its tokens and then confirmed as a
//! case-insensitive substring of the candidate lines.

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most terms in one query.
pub const MAX_TERMS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("search text of {0} bytes is too long (at most {MAX_QUERY_BYTES})")]
    TooLong(usize),
    #[error("search has {0} terms (at most {MAX_TERMS})")]
    TooManyTerms(usize),
}

/// A parsed search. Empty queries parse to `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Search {
    /// Tokens every matching line holds (lowercase), each with "prefix".
    tokens: Vec<(String, bool)>,
    /// Lowercase (ASCII) substrings every matching line contains.
    contains: Vec<String>,
    /// Lowercase (ASCII) substrings no matching line contains.
    excludes: Vec<String>,
}

impl Search {
    pub fn parse(q: &str) -> Result<Option<Search>, SearchError> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(SearchError::TooLong(q.len()));
        }
        let terms = split_terms(q);
        if terms.len() > MAX_TERMS {
            return Err(SearchError::TooManyTerms(terms.len()));
        }
        let mut s = Search::default();
        for t in terms {
            if t.exclude {
                s.excludes.push(t.text.to_ascii_lowercase());
                continue;
            }
            let toks = tokens(&t.text);
            let n = toks.len();
            for (i, tok) in toks.into_iter().enumerate() {
                let prefix = t.prefix && i + 1 == n;
                if !s.tokens.iter().any(|(x, p)| *x == tok && *p == prefix) {
                    s.tokens.push((tok, prefix));
                }
            }
            // A single whole token is exactly what the index answers; anything
            // else (several tokens, punctuation) is confirmed on the text.
            let whole_token = n == 1 && t.text.chars().all(char::is_alphanumeric);
            if !whole_token {
                s.contains.push(t.text.to_ascii_lowercase());
            }
        }
        if s.tokens.is_empty() && s.contains.is_empty() && s.excludes.is_empty() {
            return Ok(None);
        }
        Ok(Some(s))
    }

    /// The FTS5 MATCH expression, `None` when no term has an indexed token
    /// (the query then scans).
    pub fn fts_match(&self) -> Option<String> {
        if self.tokens.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .tokens
            .iter()
            // Tokens are alphanumeric only, so they never hold a `"`.
            .map(|(t, prefix)| format!("\"{t}\"{}", if *prefix { "*" } else { "" }))
            .collect();
        Some(parts.join(" AND "))
    }

    /// Substrings (lowercase ASCII) the message must contain, for
    /// `instr(lower(message), ?) > 0`.
    pub fn contains(&self) -> &[String] {
        &self.contains
    }

    /// Substrings (lowercase ASCII) the message must not contain.
    pub fn excludes(&self) -> &[String] {
        &self.excludes
    }

    /// The same test in memory: the live tail, and the confirmation of each
    /// record of the blocks the index names. Allocates nothing for ASCII
    /// text (it runs for every record of a candidate block).
    pub fn matches(&self, message: &str) -> bool {
        self.tokens
            .iter()
            .all(|(t, prefix)| has_token(message, t, *prefix))
            && self.contains.iter().all(|c| contains_ci(message, c))
            && !self.excludes.iter().any(|c| contains_ci(message, c))
    }
}

/// Whether `hay` contains `needle` (ASCII-lowercased) when ASCII case is
/// ignored: `hay.to_ascii_lowercase().contains(needle)` without the copy.
fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let Some(&first) = n.first() else {
        return true;
    };
    if n.len() > h.len() {
        return false;
    }
    let upper = first.to_ascii_uppercase();
    (0..=h.len() - n.len())
        .any(|i| (h[i] == first || h[i] == upper) && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Whether `text` holds the token `t` (lowercase), whole or, with `prefix`,
/// as the start of one: the same as looking `t` up in [`tokens`]`(text)`.
fn has_token(text: &str, t: &str, prefix: bool) -> bool {
    // Most records of a candidate block do not hold the word at all.
    if t.is_ascii() && text.is_ascii() && !contains_ci(text, t) {
        return false;
    }
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .any(|w| {
            if w.is_ascii() {
                if prefix {
                    w.len() >= t.len() && w.as_bytes()[..t.len()].eq_ignore_ascii_case(t.as_bytes())
                } else {
                    w.eq_ignore_ascii_case(t)
                }
            } else {
                let l = w.to_lowercase();
                if prefix {
                    l.starts_with(t)
                } else {
                    l == t
                }
            }
        })
}

#[derive(Debug, PartialEq)]
struct Term {
    text: String,
    prefix: bool,
    exclude: bool,
}

/// Splits on whitespace, keeping `"quoted phrases"` whole (an unclosed quote
/// runs to the end).
fn split_terms(q: &str) -> Vec<Term> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut exclude = false;
        if first == '-' {
            chars.next();
            exclude = true;
        }
        let mut text = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                text.push(c);
                chars.next();
            }
        }
        let prefix = !quoted && text.len() > 1 && text.ends_with('*');
        if prefix {
            text.pop();
        }
        if text.trim().is_empty() {
            continue;
        }
        out.push(Term {
            text,
            prefix,
            exclude,
        });
    }
    out
}

/// Lowercase runs of letters and digits: what FTS5's `unicode61` tokenizer
/// indexes (it also drops diacritics, which only widens what it finds).
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(q: &str) -> Search {
        Search::parse(q).unwrap().unwrap()
    }

    #[test]
    fn words_are_quoted_tokens() {
        assert_eq!(s("Failed").fts_match().unwrap(), "\"failed\"");
        assert!(s("Failed").contains().is_empty());
        let p = s("\"Failed password\" root");
        assert_eq!(
            p.fts_match().unwrap(),
            "\"failed\" AND \"password\" AND \"root\""
        );
        assert_eq!(p.contains(), ["failed password"]);
    }

    #[test]
    fn fts_syntax_in_input_is_text() {
        for q in [
            "AND",
            "OR x",
            "NEAR(a b)",
            "a:b",
            "\"",
            "*",
            "^x",
            "col:val",
            "(",
            "'; DROP",
        ] {
            if let Some(s) = Search::parse(q).unwrap() {
                if let Some(m) = s.fts_match() {
                    // Only quoted alphanumeric tokens joined by AND.
                    for part in m.split(" AND ") {
                        let inner = part.trim_end_matches('*');
                        assert!(inner.starts_with('"') && inner.ends_with('"'), "{q}: {m}");
                        assert!(inner[1..inner.len() - 1].chars().all(char::is_alphanumeric));
                    }
                }
            }
        }
        assert_eq!(Search::parse("   ").unwrap(), None);
        assert_eq!(Search::parse("\"\"").unwrap(), None);
    }

    #[test]
    fn prefix_exclusion_and_punctuation() {
        let p = s("pass* -invalid 10.0.2.2");
        assert_eq!(
            p.fts_match().unwrap(),
            "\"pass\"* AND \"10\" AND \"0\" AND \"2\""
        );
        assert_eq!(p.contains(), ["10.0.2.2"]);
        assert_eq!(p.excludes(), ["invalid"]);
        assert!(p.matches("Accepted password for x from 10.0.2.2 port 1"));
        assert!(!p.matches("Invalid user; password from 10.0.2.2"));
        assert!(!p.matches("password from 10.0.2.3"));
        let only_punct = s("::");
        assert_eq!(only_punct.fts_match(), None);
        assert!(only_punct.matches("a::b"));
    }

    #[test]
    fn limits() {
        assert!(matches!(
            Search::parse(&"x".repeat(2000)),
            Err(SearchError::TooLong(_))
        ));
        assert!(matches!(
            Search::parse(&"a ".repeat(40)),
            Err(SearchError::TooManyTerms(40))
        ));
    }

    #[test]
    fn in_memory_match_is_word_based_and_case_insensitive() {
        let p = s("ERROR");
        assert!(p.matches("an error occurred"));
        assert!(p.matches("AN ERROR"));
        assert!(!p.matches("errors occurred"));
        assert!(!p.matches("terror"));
        assert!(s("err*").matches("errors occurred"));
        assert!(s("err*").matches("x ERRORS"));
        assert!(!s("err*").matches("terrors"));
        // Non-ASCII words are lowercased the Unicode way, like the index.
        assert!(s("émile").matches("ÉMILE was here"));
        assert!(s("straße*").matches("STRAßEN"));
        assert!(!s("émile").matches("emile"));
    }

    /// The allocation-free test agrees with the plain definition
    /// (`tokens` of the text, `to_ascii_lowercase` substrings).
    #[test]
    fn the_fast_match_agrees_with_the_definition() {
        let texts = [
            "Failed password for root from 10.0.2.2 port 22 ssh2",
            "pam_unix(sshd:auth): authentication failure; rhost=10.0.2.3",
            "ÉCHEC du mot de passe pour Émile",
            "",
            "a::b PASS passwords",
        ];
        let queries = [
            "password",
            "pass*",
            "PASSWORD -root",
            "\"failed password\" root",
            "10.0.2.2",
            "pam_unix(sshd:auth)",
            "émile",
            "é*",
            "échec -émile",
            "::",
            "-x",
            "a",
            "b*",
        ];
        for q in queries {
            let p = s(q);
            for t in texts {
                let have = tokens(t);
                let lower = t.to_ascii_lowercase();
                let want = p.tokens.iter().all(|(tok, prefix)| {
                    have.iter().any(|h| {
                        if *prefix {
                            h.starts_with(tok.as_str())
                        } else {
                            h == tok
                        }
                    })
                }) && p.contains.iter().all(|c| lower.contains(c.as_str()))
                    && !p.excludes.iter().any(|c| lower.contains(c.as_str()));
                assert_eq!(p.matches(t), want, "{q:?} on {t:?}");
            }
        }
    }
}
