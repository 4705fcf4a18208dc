//! Consumer groups, client side: the embedded consumer protocol, the
//! partition assignors, and group membership (see [`crate::Consumer::subscribe`]).

pub mod admin;
pub mod assignor;
pub mod coordinator;
pub(crate) mod membership;
pub mod protocol;

pub use admin::{GroupDescription, GroupListing, MemberDescription};
pub use assignor::{assignor_by_name, Assignor, GroupMember, MemberAssignments, RebalanceProtocol};
pub use coordinator::{CommitIdentity, CommittedOffset, GroupCoordinator};
pub use protocol::{Assignment, Subscription};
