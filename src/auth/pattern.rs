//! Group patterns: how a token (or `--anonymous-groups`) names the groups it
//! allows.
//!
//! Groups are `/`-separated paths (`task/42`, `chat/lobby`), so patterns
//! work on segments, like shell globs on file paths:
//!
//! | pattern | matches | does not match |
//! | --- | --- | --- |
//! | `chat` | `chat` | `chat/x`, `chatter` |
//! | `task/*` | `task/42` | `task`, `task/42/logs` |
//! | `task-*` | `task-1`, `task-` | `task/1` |
//! | `task/**` | `task/42`, `task/42/logs` | `task` |
//! | `**` | every group | |
//!
//! * `*` inside a segment matches any run of characters *within* that
//!   segment (never a `/`).
//! * `**` as a whole segment matches one or more whole segments.
//!
//! Why not let `*` cross `/`? Because the natural grant for live task logs
//! is `task/*` — "any one task" — and it should not silently also grant
//! `task/42/admin`. Whoever wants a whole subtree writes `**` and means it.
//!
//! A pattern obeys the same rules as a group name (see [`crate::group`]),
//! so a grant can never name something that is not a valid group. There is
//! no escape: a `*` in a grant is always a wildcard.
//!
//! Matching is a dynamic program over (pattern segment, name segment) and,
//! inside a segment, the classic greedy wildcard match: no backtracking
//! blow-up whatever a token contains.

use std::fmt;
use std::str::FromStr;

use crate::group::GroupName;

use super::error::AuthConfigError;

/// One compiled pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupPattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Segment {
    /// `**`: one or more whole segments.
    Any,
    /// A literal, possibly with `*` wildcards inside.
    Glob(String),
}

impl GroupPattern {
    /// Compiles `pattern`; it must be a valid group name.
    pub fn new(pattern: &str) -> Result<Self, AuthConfigError> {
        GroupName::new(pattern).map_err(|e| AuthConfigError::BadPattern {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        let segments = pattern
            .split('/')
            .map(|s| {
                if s == "**" {
                    Segment::Any
                } else {
                    Segment::Glob(s.to_string())
                }
            })
            .collect();
        Ok(GroupPattern {
            source: pattern.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `group` is one of the groups this pattern names.
    pub fn matches(&self, group: &GroupName) -> bool {
        let names: Vec<&str> = group.as_str().split('/').collect();
        let (p, n) = (self.segments.len(), names.len());
        // reach[i][j]: the first i pattern segments match the first j name
        // segments. Filled row by row; only the previous row is needed, but
        // group names are short (≤ 200 bytes) so clarity wins.
        // Indexing cannot panic: i ≤ p and j ≤ n index tables of p+1 and
        // n+1 entries, and i-1 < p, j-1 < n index segments and names.
        let mut reach = vec![vec![false; n + 1]; p + 1];
        reach[0][0] = true;
        for i in 1..=p {
            for j in 1..=n {
                reach[i][j] = match &self.segments[i - 1] {
                    // `**` takes this name segment, and either started here
                    // (reach[i-1][j-1]) or already took the one before.
                    Segment::Any => reach[i - 1][j - 1] || reach[i][j - 1],
                    Segment::Glob(glob) => reach[i - 1][j - 1] && glob_match(glob, names[j - 1]),
                };
            }
        }
        reach[p][n]
    }
}

/// Wildcard match of one segment: `*` is any run of characters. The greedy
/// algorithm remembers only the last `*`, which is enough for a single kind
/// of wildcard and runs in O(len(glob) × len(text)) at worst.
fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    // Where the last `*` was, and where in the text it began matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((star_gi, star_ti)) = star {
            // Let the last `*` swallow one more byte and retry after it.
            gi = star_gi + 1;
            ti = star_ti + 1;
            star = Some((star_gi, star_ti + 1));
        } else {
            return false;
        }
    }
    // Trailing stars match the empty rest. `gi ≤ g.len()`: it only grows
    // past an index that was checked to be in range.
    g[gi..].iter().all(|&b| b == b'*')
}

impl FromStr for GroupPattern {
    type Err = AuthConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GroupPattern::new(s)
    }
}

impl fmt::Debug for GroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for GroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A list of patterns: allows a group when any of them matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPatterns(Vec<GroupPattern>);

impl GroupPatterns {
    /// Compiles every pattern, failing on the first invalid one.
    pub fn parse<S: AsRef<str>>(
        patterns: impl IntoIterator<Item = S>,
    ) -> Result<Self, AuthConfigError> {
        patterns
            .into_iter()
            .map(|p| GroupPattern::new(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(GroupPatterns)
    }

    /// Whether any pattern matches `group`.
    pub fn matches(&self, group: &GroupName) -> bool {
        self.0.iter().any(|p| p.matches(group))
    }

    /// Whether the list is empty (allows nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns.
    pub fn iter(&self) -> impl Iterator<Item = &GroupPattern> {
        self.0.iter()
    }
}

impl From<Vec<GroupPattern>> for GroupPatterns {
    fn from(patterns: Vec<GroupPattern>) -> Self {
        GroupPatterns(patterns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, group: &str) -> bool {
        GroupPattern::new(pattern)
            .unwrap()
            .matches(&GroupName::new(group).unwrap())
    }

    #[test]
    fn exact_names_match_only_themselves() {
        assert!(m("chat", "chat"));
        assert!(!m("chat", "chatter"));
        assert!(!m("chat", "chat/x"));
        assert!(m("task/42", "task/42"));
    }

    #[test]
    fn a_star_stays_within_its_segment() {
        assert!(m("task/*", "task/42"));
        assert!(!m("task/*", "task"));
        assert!(!m("task/*", "task/42/logs"));
        assert!(m("task-*", "task-"));
        assert!(m("task-*", "task-17"));
        assert!(!m("task-*", "task/17"));
        assert!(m("*", "anything"));
        assert!(!m("*", "a/b"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*-log", "task-log"));
    }

    #[test]
    fn a_double_star_takes_whole_segments() {
        assert!(m("task/**", "task/42"));
        assert!(m("task/**", "task/42/logs"));
        assert!(!m("task/**", "task"));
        assert!(m("**", "a"));
        assert!(m("**", "a/b/c"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/z"));
        assert!(m("**/logs", "task/1/logs"));
    }

    #[test]
    fn patterns_are_valid_group_names() {
        assert!(GroupPattern::new("").is_err());
        assert!(GroupPattern::new("a//b").is_err());
        assert!(GroupPattern::new("a/../b").is_err());
        assert!(GroupPattern::new("with space").is_err());
    }

    #[test]
    fn a_hostile_pattern_is_still_fast() {
        // Exponential for a naive backtracking matcher.
        let glob = "*a".repeat(40);
        let text = "a".repeat(150) + "b";
        assert!(!m(&glob, &text));
        let pattern = vec!["**"; 60].join("/");
        let group = vec!["x"; 90].join("/") + "/";
        let group = group.trim_end_matches('/');
        assert!(m(&pattern, group));
    }

    #[test]
    fn a_list_allows_what_any_pattern_allows() {
        let list = GroupPatterns::parse(["chat", "task/*"]).unwrap();
        assert!(list.matches(&GroupName::new("chat").unwrap()));
        assert!(list.matches(&GroupName::new("task/1").unwrap()));
        assert!(!list.matches(&GroupName::new("admin").unwrap()));
        assert!(!GroupPatterns::default().matches(&GroupName::new("chat").unwrap()));
    }
}
