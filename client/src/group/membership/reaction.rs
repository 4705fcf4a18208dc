//! What a member does about each error code of JoinGroup, SyncGroup and
//! Heartbeat, following Kafka's consumer (`AbstractCoordinator`): a pure
//! table, so that every case is unit-tested.

use skiff_protocol::ErrorCode;

/// The group API that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupApi {
    Join,
    Sync,
    Heartbeat,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// Success: go on.
    Proceed,
    /// KIP-394: join again at once with the member id the coordinator gave.
    JoinWithGivenId,
    /// The group is rebalancing: join (again), keeping owned partitions.
    Rejoin,
    /// This membership is over (another member may own our partitions
    /// already): drop the partitions as lost, then join again, as a new
    /// member if the coordinator forgot our id.
    LoseAndRejoin { reset_member_id: bool },
    /// The coordinator moved or went away: look it up again, then retry.
    Rediscover,
    /// The coordinator is still loading the group: retry after a backoff.
    RetryLater,
    /// Nothing a retry can fix (fenced static member, bad configuration,
    /// no authorization): the membership ends with this error.
    Fatal,
}

pub(crate) fn react(api: GroupApi, code: ErrorCode) -> Reaction {
    match code {
        ErrorCode::None => Reaction::Proceed,
        ErrorCode::MemberIdRequired if api == GroupApi::Join => Reaction::JoinWithGivenId,
        ErrorCode::RebalanceInProgress => Reaction::Rejoin,
        ErrorCode::IllegalGeneration => Reaction::LoseAndRejoin {
            reset_member_id: false,
        },
        ErrorCode::UnknownMemberId => Reaction::LoseAndRejoin {
            reset_member_id: true,
        },
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => Reaction::Rediscover,
        ErrorCode::CoordinatorLoadInProgress => Reaction::RetryLater,
        ErrorCode::FencedInstanceId => Reaction::Fatal,
        // A heartbeat is retried: the session timeout decides membership.
        _ if api == GroupApi::Heartbeat => Reaction::RetryLater,
        // INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT,
        // GROUP_AUTHORIZATION_FAILED, GROUP_MAX_SIZE_REACHED, …
        _ => Reaction::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APIS: [GroupApi; 3] = [GroupApi::Join, GroupApi::Sync, GroupApi::Heartbeat];

    /// Rebalances, lost memberships and coordinator trouble lead to the same
    /// reaction whichever API reported them.
    #[test]
    fn shared_codes_react_alike_on_every_api() {
        for api in APIS {
            assert_eq!(react(api, ErrorCode::None), Reaction::Proceed);
            assert_eq!(react(api, ErrorCode::RebalanceInProgress), Reaction::Rejoin);
            assert_eq!(
                react(api, ErrorCode::IllegalGeneration),
                Reaction::LoseAndRejoin {
                    reset_member_id: false
                }
            );
            assert_eq!(
                react(api, ErrorCode::UnknownMemberId),
                Reaction::LoseAndRejoin {
                    reset_member_id: true
                }
            );
            assert_eq!(react(api, ErrorCode::NotCoordinator), Reaction::Rediscover);
            assert_eq!(
                react(api, ErrorCode::CoordinatorNotAvailable),
                Reaction::Rediscover
            );
            assert_eq!(
                react(api, ErrorCode::CoordinatorLoadInProgress),
                Reaction::RetryLater
            );
            assert_eq!(react(api, ErrorCode::FencedInstanceId), Reaction::Fatal);
        }
    }

    /// MEMBER_ID_REQUIRED only means "join again with this id" on JoinGroup.
    #[test]
    fn member_id_required_is_a_join_answer() {
        assert_eq!(
            react(GroupApi::Join, ErrorCode::MemberIdRequired),
            Reaction::JoinWithGivenId
        );
        assert_eq!(
            react(GroupApi::Sync, ErrorCode::MemberIdRequired),
            Reaction::Fatal
        );
    }

    /// Configuration and authorization errors end a join; a heartbeat
    /// error of that kind is retried until the session decides.
    #[test]
    fn other_errors_are_fatal_except_for_heartbeats() {
        for code in [
            ErrorCode::InconsistentGroupProtocol,
            ErrorCode::InvalidSessionTimeout,
            ErrorCode::GroupAuthorizationFailed,
            ErrorCode::GroupMaxSizeReached,
        ] {
            assert_eq!(react(GroupApi::Join, code), Reaction::Fatal, "{code:?}");
            assert_eq!(react(GroupApi::Sync, code), Reaction::Fatal, "{code:?}");
            assert_eq!(
                react(GroupApi::Heartbeat, code),
                Reaction::RetryLater,
                "{code:?}"
            );
        }
    }
}
