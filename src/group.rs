//! Group names: what a client may put after `/ws/`.
//!
//! A group name travels in URLs, Redis channel names, JSON and log lines, so
//! it is validated once, at the edge, and carried as a [`GroupName`] from
//! then on. The rules:
//!
//! * 1 to [`MAX_GROUP_LEN`] bytes of UTF-8;
//! * no control characters and no whitespace;
//! * `/` separates segments (`task/42`), so a name does not start or end
//!   with `/`, and has no empty (`a//b`), `.` or `..` segment.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest group name accepted, in bytes.
pub const MAX_GROUP_LEN: usize = 200;

/// Why a string is not a valid group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupNameError {
    #[error("group name is empty")]
    Empty,
    /// No group was given: [`Session::group`](crate::Session::group) of a
    /// connection opened without one (`/ws`).
    #[error(
        "no group: the session connected without one (/ws) and holds only what it subscribed to"
    )]
    Missing,
    #[error("group name is {len} bytes long; the limit is {MAX_GROUP_LEN}")]
    TooLong { len: usize },
    #[error("group name contains a control character at byte {at}")]
    ControlCharacter { at: usize },
    #[error("group name contains whitespace at byte {at}")]
    Whitespace { at: usize },
    #[error(
        "group name has an empty, '.' or '..' segment (names are segments separated by single '/')"
    )]
    BadSegment,
}

/// A validated group name. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct GroupName(Arc<str>);

impl GroupName {
    /// Validates `name` against the rules in the module docs.
    pub fn new(name: &str) -> Result<Self, GroupNameError> {
        validate(name)?;
        Ok(GroupName(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), GroupNameError> {
    if name.is_empty() {
        return Err(GroupNameError::Empty);
    }
    if name.len() > MAX_GROUP_LEN {
        return Err(GroupNameError::TooLong { len: name.len() });
    }
    for (at, c) in name.char_indices() {
        if c.is_control() {
            return Err(GroupNameError::ControlCharacter { at });
        }
        if c.is_whitespace() {
            return Err(GroupNameError::Whitespace { at });
        }
    }
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(GroupNameError::BadSegment);
    }
    Ok(())
}

impl TryFrom<&str> for GroupName {
    type Error = GroupNameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        GroupName::new(s)
    }
}

impl TryFrom<String> for GroupName {
    type Error = GroupNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        GroupName::new(&s)
    }
}

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GroupName::new(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for GroupName {
    type Err = GroupNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GroupName::new(s)
    }
}

impl AsRef<str> for GroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for GroupName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Anything that names a group: `&str`, `String`, a [`GroupName`], or a
/// session's group (`Option<&GroupName>`).
pub trait IntoGroupName {
    /// Validates and converts.
    fn into_group_name(self) -> Result<GroupName, GroupNameError>;
}

impl IntoGroupName for GroupName {
    fn into_group_name(self) -> Result<GroupName, GroupNameError> {
        Ok(self)
    }
}
impl IntoGroupName for &GroupName {
    fn into_group_name(self) -> Result<GroupName, GroupNameError> {
        Ok(self.clone())
    }
}
/// [`Session::group`](crate::Session::group) as it is, so that melody's
/// `hub.to(session.group())` reads as before; `None` (a connection without
/// a group of its own) is [`GroupNameError::Missing`].
impl IntoGroupName for Option<&GroupName> {
    fn into_group_name(self) -> Result<GroupName, GroupNameError> {
        self.cloned().ok_or(GroupNameError::Missing)
    }
}
impl IntoGroupName for &str {
    fn into_group_name(self) -> Result<GroupName, GroupNameError> {
        GroupName::new(self)
    }
}
impl IntoGroupName for String {
    fn into_group_name(self) -> Result<GroupName, GroupNameError> {
        GroupName::new(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        for ok in ["ticker_ws", "task/42", "a.b-c:d", "日本語", "x"] {
            assert!(GroupName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(GroupName::new(""), Err(GroupNameError::Empty));
        assert!(matches!(
            GroupName::new(&"a".repeat(201)),
            Err(GroupNameError::TooLong { len: 201 })
        ));
        assert_eq!(
            GroupName::new("a\u{7}b"),
            Err(GroupNameError::ControlCharacter { at: 1 })
        );
        assert_eq!(
            GroupName::new("a b"),
            Err(GroupNameError::Whitespace { at: 1 })
        );
        for bad in ["/a", "a/", "a//b", "a/./b", "../x", "a/.."] {
            assert_eq!(
                GroupName::new(bad),
                Err(GroupNameError::BadSegment),
                "{bad}"
            );
        }
    }
}
