//! Which groups keep a history, and how much of it.
//!
//! `--history 'task/*=1000:24h'` keeps the last 1,000 messages of every
//! group matching `task/*`, and lets a group's history expire 24 hours after
//! its last publish. Rules are tried in order; the first whose pattern
//! matches decides. A group that matches no rule has no history and costs
//! exactly what it did before: plain PUBLISH, no stream, no script.
//!
//! Patterns are the token claims' ([`crate::auth::GroupPattern`]: `*`
//! within one segment, `**` across segments), with one addition: a rule
//! whose pattern is `*` alone matches every group, as `**` does — it is
//! what people write for "everything".

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::auth::GroupPattern;
use crate::group::GroupName;

/// The most messages one group may keep.
pub const MAX_HISTORY_SIZE: u64 = 1_000_000;

/// How much history one group keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// The last this many messages (1 to [`MAX_HISTORY_SIZE`]).
    pub size: u64,
    /// Gone this long after the group's last publish.
    pub ttl: Duration,
}

/// One `PATTERN=SIZE:TTL` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    pattern: Option<GroupPattern>,
    text: String,
    /// What a matching group keeps.
    pub limits: HistoryLimits,
}

impl HistoryRule {
    /// The rule's pattern; `None` for `*` alone (every group).
    pub fn pattern(&self) -> Option<&GroupPattern> {
        self.pattern.as_ref()
    }

    /// Whether the rule applies to `group`.
    pub fn matches(&self, group: &GroupName) -> bool {
        match &self.pattern {
            None => true, // `*` alone: every group
            Some(pattern) => pattern.matches(group),
        }
    }
}

/// Why a history rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid history rule {rule:?}: {reason} (expected PATTERN=SIZE:TTL, e.g. 'task/*=1000:24h')"
)]
pub struct HistoryRuleError {
    rule: String,
    reason: String,
}

impl FromStr for HistoryRule {
    type Err = HistoryRuleError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| HistoryRuleError {
            rule: rule.to_string(),
            reason,
        };
        let (pattern, limits) = rule
            .rsplit_once('=')
            .ok_or_else(|| fail("no '=' between the pattern and the limits".into()))?;
        let (size, ttl) = limits
            .split_once(':')
            .ok_or_else(|| fail("no ':' between the size and the TTL".into()))?;
        let size: u64 = size
            .trim()
            .parse()
            .map_err(|_| fail(format!("the size {size:?} is not a whole number")))?;
        if size == 0 || size > MAX_HISTORY_SIZE {
            return Err(fail(format!(
                "the size must be between 1 and {MAX_HISTORY_SIZE}"
            )));
        }
        let ttl = humantime::parse_duration(ttl.trim())
            .map_err(|e| fail(format!("the TTL {ttl:?}: {e}")))?;
        if ttl < Duration::from_secs(1) {
            return Err(fail("the TTL must be at least 1s".into()));
        }
        let pattern = pattern.trim();
        let compiled = if pattern == "*" {
            None
        } else {
            Some(GroupPattern::new(pattern).map_err(|e| fail(e.to_string()))?)
        };
        Ok(HistoryRule {
            pattern: compiled,
            text: pattern.to_string(),
            limits: HistoryLimits { size, ttl },
        })
    }
}

impl fmt::Display for HistoryRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}:{}",
            self.text,
            self.limits.size,
            humantime::format_duration(self.limits.ttl)
        )
    }
}

/// Every rule, in order. The default has none: no group keeps history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPolicy {
    rules: Vec<HistoryRule>,
}

impl HistoryPolicy {
    /// A policy of `rules`, tried in order.
    pub fn new(rules: impl IntoIterator<Item = HistoryRule>) -> Self {
        HistoryPolicy {
            rules: rules.into_iter().collect(),
        }
    }

    /// Parses `PATTERN=SIZE:TTL` rules.
    pub fn parse<S: AsRef<str>>(
        rules: impl IntoIterator<Item = S>,
    ) -> Result<Self, HistoryRuleError> {
        rules
            .into_iter()
            .map(|rule| rule.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(HistoryPolicy::new)
    }

    /// What `group` keeps, if it keeps history.
    pub fn for_group(&self, group: &GroupName) -> Option<HistoryLimits> {
        self.rules
            .iter()
            .find(|rule| rule.matches(group))
            .map(|rule| rule.limits)
    }

    /// Whether no group keeps history.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[HistoryRule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupName {
        GroupName::new(name).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = HistoryPolicy::parse(["task/*=1000:24h", "*=10:1m"]).unwrap();
        assert_eq!(
            policy.for_group(&group("task/42")),
            Some(HistoryLimits {
                size: 1000,
                ttl: Duration::from_secs(86_400)
            })
        );
        assert_eq!(policy.for_group(&group("chat/x")).unwrap().size, 10);
        assert_eq!(policy.for_group(&group("task")).unwrap().size, 10);
        assert_eq!(policy.rules()[0].to_string(), "task/*=1000:1day");
    }

    #[test]
    fn without_rules_no_group_keeps_history() {
        let policy = HistoryPolicy::default();
        assert!(policy.is_empty());
        assert_eq!(policy.for_group(&group("anything")), None);
        let only_tasks = HistoryPolicy::parse(["task/**=5:10s"]).unwrap();
        assert_eq!(only_tasks.for_group(&group("chat")), None);
        assert!(only_tasks.for_group(&group("task/1/logs")).is_some());
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, says) in [
            ("task/*", "no '='"),
            ("task/*=1000", "no ':'"),
            ("task/*=many:1h", "not a whole number"),
            ("task/*=0:1h", "between 1 and"),
            ("task/*=10:soon", "TTL"),
            ("task/*=10:100ms", "at least 1s"),
            ("task//x=10:1h", "invalid history rule"),
        ] {
            let error = rule.parse::<HistoryRule>().unwrap_err().to_string();
            assert!(error.contains(says), "{rule}: {error}");
        }
    }
}
