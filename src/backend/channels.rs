//! Channel names: the one place that turns groups into channel names and
//! back.
//!
//! Every group has one channel, `<prefix><group>` (`group:ticker_ws` with
//! the default prefix); every node also listens to one cluster channel
//! (`groupcast:cluster`) for broadcasts to everyone and to lists of
//! sessions. Publishing, subscribing and reading incoming messages all go
//! through [`ChannelNames`], so a backend never formats a name itself and
//! the rules (the cluster channel cannot collide with a group's) are
//! checked once.

use crate::backend::inbound::Channel;
use crate::group::GroupName;

/// The default prefix of group channels.
pub const DEFAULT_GROUP_PREFIX: &str = "group:";
/// The default cluster channel.
pub const DEFAULT_CLUSTER_CHANNEL: &str = "groupcast:cluster";

/// How channels are named on the wire. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelNames {
    group_prefix: String,
    cluster: String,
}

impl Default for ChannelNames {
    fn default() -> Self {
        ChannelNames {
            group_prefix: DEFAULT_GROUP_PREFIX.to_string(),
            cluster: DEFAULT_CLUSTER_CHANNEL.to_string(),
        }
    }
}

/// Why a naming scheme was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNamesError {
    #[error("the cluster channel must not be empty")]
    EmptyCluster,
    /// A group could otherwise be named so that its channel is the
    /// cluster channel.
    #[error(
        "the cluster channel {cluster:?} must not start with the group channel prefix {prefix:?}"
    )]
    ClusterLooksLikeGroup { cluster: String, prefix: String },
}

impl ChannelNames {
    /// Group channels `<group_prefix><group>` and the cluster channel
    /// `cluster`.
    pub fn new(
        group_prefix: impl Into<String>,
        cluster: impl Into<String>,
    ) -> Result<Self, ChannelNamesError> {
        let names = ChannelNames {
            group_prefix: group_prefix.into(),
            cluster: cluster.into(),
        };
        if names.cluster.is_empty() {
            return Err(ChannelNamesError::EmptyCluster);
        }
        if names.cluster.starts_with(&names.group_prefix) {
            return Err(ChannelNamesError::ClusterLooksLikeGroup {
                cluster: names.cluster,
                prefix: names.group_prefix,
            });
        }
        Ok(names)
    }

    /// The prefix of group channels.
    pub fn group_prefix(&self) -> &str {
        &self.group_prefix
    }

    /// The channel of `group`.
    pub fn group(&self, group: &GroupName) -> String {
        let mut name = String::with_capacity(self.group_prefix.len() + group.as_str().len());
        name.push_str(&self.group_prefix);
        name.push_str(group.as_str());
        name
    }

    /// The cluster channel.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The wire name of `channel`.
    pub fn name(&self, channel: &Channel) -> String {
        match channel {
            Channel::Group(group) => self.group(group),
            Channel::Cluster => self.cluster.clone(),
        }
    }

    /// Which channel a wire name is: `None` for a name that is neither the
    /// cluster channel nor a valid group's channel.
    pub fn parse(&self, name: &str) -> Option<Channel> {
        if name == self.cluster {
            return Some(Channel::Cluster);
        }
        let group = name.strip_prefix(self.group_prefix.as_str())?;
        GroupName::new(group).ok().map(Channel::Group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_channels_round_trip() {
        let names = ChannelNames::default();
        let group = GroupName::new("task/42").unwrap();
        assert_eq!(names.group(&group), "group:task/42");
        assert_eq!(
            names.parse("group:task/42"),
            Some(Channel::Group(group.clone()))
        );
        assert_eq!(names.parse("groupcast:cluster"), Some(Channel::Cluster));
        assert_eq!(names.parse("other:thing"), None);
        assert_eq!(
            names.parse("group:"),
            None,
            "an empty group name is invalid"
        );
    }

    #[test]
    fn the_cluster_channel_cannot_collide_with_a_group() {
        assert_eq!(
            ChannelNames::new("group:", "group:all"),
            Err(ChannelNamesError::ClusterLooksLikeGroup {
                cluster: "group:all".into(),
                prefix: "group:".into()
            })
        );
        assert_eq!(
            ChannelNames::new("group:", ""),
            Err(ChannelNamesError::EmptyCluster)
        );
        assert!(ChannelNames::new("app1:", "app1-cluster").is_ok());
    }
}
