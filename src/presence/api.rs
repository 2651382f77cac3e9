//! Presence as the hub offers it: `hub.presence(group)`,
//! `hub.presence_page(group, cursor, limit)`, `hub.presence_users(group)`,
//! `hub.presence_stats(group)`. Above the hub; the backend's
//! [`PresenceStore`](crate::backend::PresenceStore) answers. Only groups
//! that `Config::presence` names keep presence; the others read empty.

use crate::backend::error::BackendError;
use crate::backend::member::{
    Cursor, MAX_MEMBER_PAGE, Member, MemberPage, PresenceStats, UserCount,
};
use crate::group::GroupName;
use crate::hub::Hub;

impl Hub {
    /// Every member of `group` on every node, in the order of their ids
    /// (read page by page; for a large group prefer
    /// [`presence_page`](Hub::presence_page)).
    pub async fn presence(&self, group: &GroupName) -> Result<Vec<Member>, BackendError> {
        let mut members = Vec::new();
        let mut cursor = Cursor::start();
        loop {
            let page = self.presence_page(group, &cursor, MAX_MEMBER_PAGE).await?;
            members.extend(page.members);
            match page.next {
                Some(next) => cursor = next,
                None => return Ok(members),
            }
        }
    }

    /// One page of `group`'s members after `cursor` (at most `limit`, at
    /// most [`MAX_MEMBER_PAGE`]), with the group's counts. A member
    /// present throughout a paging is on exactly one page.
    pub async fn presence_page(
        &self,
        group: &GroupName,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<MemberPage, BackendError> {
        if !self.config().presence.matches(group) {
            return Ok(MemberPage::default());
        }
        self.presence_store().members(group, cursor, limit).await
    }

    /// The distinct users (`sub`) of `group` with their sessions, sorted.
    pub async fn presence_users(&self, group: &GroupName) -> Result<Vec<UserCount>, BackendError> {
        if !self.config().presence.matches(group) {
            return Ok(Vec::new());
        }
        self.presence_store().users(group).await
    }

    /// How many members and distinct users `group` has, cluster-wide,
    /// without reading its members.
    pub async fn presence_stats(&self, group: &GroupName) -> Result<PresenceStats, BackendError> {
        if !self.config().presence.matches(group) {
            return Ok(PresenceStats::default());
        }
        self.presence_store().stats(group).await
    }
}
