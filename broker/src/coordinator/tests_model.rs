//! Model test: random sequences of JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, restarts and clock advances from 1–4 well-behaved clients
//! (two static, two dynamic), with the coordinator's invariants checked
//! after every step and every parked request answered exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use skiff_protocol::ErrorCode;

use super::tests_lifecycle::{coordinator_with, static_join};
use super::tests_membership::{coordinator, heartbeat, join, sync, GROUP};
use super::*;

const CLIENTS: usize = 4;

/// Clients 0 and 1 are static members.
fn instance(client: usize) -> Option<String> {
    (client < 2).then(|| format!("i{client}"))
}

/// The assignment a member gets: its instance id if static (a restarted
/// static member keeps its assignment under a new member id), else its
/// member id.
fn label(member_id: &str, group_instance_id: Option<&str>) -> Bytes {
    Bytes::from(group_instance_id.unwrap_or(member_id).to_owned())
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    /// A rejoin with a new subscription, forcing a rebalance.
    Resubscribe(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    /// The client's process restarts: it forgets its member id.
    Restart(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    prop_oneof![
        3 => client.clone().prop_map(Op::Join),
        1 => client.clone().prop_map(Op::Resubscribe),
        3 => client.clone().prop_map(Op::Sync),
        2 => client.clone().prop_map(Op::Heartbeat),
        1 => client.clone().prop_map(Op::Leave),
        1 => client.prop_map(Op::Restart),
        3 => (1i64..15_000).prop_map(Op::Advance),
    ]
}

/// What one client knows, as a real consumer would.
#[derive(Debug, Default, Clone)]
struct Client {
    member_id: String,
    generation_id: i32,
    /// What to assign, when this client leads `generation_id`.
    to_assign: Vec<(String, Bytes)>,
}

struct Model {
    c: GroupCoordinator,
    now_ms: i64,
    next_reply: ReplyId,
    /// Parked requests not answered yet: the client and its incarnation
    /// (a restarted or departed client's answers reach nobody).
    outstanding: HashMap<ReplyId, (usize, u32)>,
    clients: Vec<Client>,
    incarnations: Vec<u32>,
    generation_seen: i32,
    session_timeout_ms: i32,
}

impl Model {
    fn new(c: GroupCoordinator) -> Model {
        Model {
            c,
            now_ms: 0,
            next_reply: 1,
            outstanding: HashMap::new(),
            clients: vec![Client::default(); CLIENTS],
            incarnations: vec![0; CLIENTS],
            generation_seen: 0,
            session_timeout_ms: 10_000,
        }
    }

    fn join_request(&self, client: usize, subscription: &str) -> JoinRequest {
        let name = format!("c{client}");
        let member_id = &self.clients[client].member_id;
        let mut request = match instance(client) {
            Some(instance) => static_join(member_id, &name, &instance),
            None => join(member_id, &name),
        };
        request.protocols[0].metadata = Bytes::from(format!("{name}-{subscription}"));
        request.session_timeout_ms = self.session_timeout_ms;
        request.rebalance_timeout_ms = 2 * self.session_timeout_ms;
        request
    }

    fn park(&mut self, client: usize) -> ReplyId {
        let reply = self.next_reply;
        self.next_reply += 1;
        self.outstanding
            .insert(reply, (client, self.incarnations[client]));
        reply
    }

    fn forget(&mut self, client: usize) {
        self.clients[client] = Client::default();
        self.incarnations[client] += 1;
    }

    fn apply(&mut self, op: &Op) {
        let out = match *op {
            Op::Join(client) | Op::Resubscribe(client) => {
                let subscription = if matches!(op, Op::Join(_)) {
                    "t"
                } else {
                    "t-and-u"
                };
                let request = self.join_request(client, subscription);
                let reply = self.park(client);
                self.c.join_group(self.now_ms, reply, request)
            }
            Op::Sync(client) => {
                let known = self.clients[client].clone();
                let mut request = sync(&known.member_id, known.generation_id, known.to_assign);
                request.group_instance_id = instance(client);
                let reply = self.park(client);
                self.c.sync_group(self.now_ms, reply, request)
            }
            Op::Heartbeat(client) => {
                let known = &self.clients[client];
                let mut request = heartbeat(&known.member_id, known.generation_id);
                request.group_instance_id = instance(client);
                self.c.heartbeat(self.now_ms, &request);
                Vec::new()
            }
            Op::Leave(client) => {
                let leaving = LeavingMember {
                    member_id: self.clients[client].member_id.clone(),
                    group_instance_id: instance(client),
                };
                let (_, out) = self.c.leave_group(self.now_ms, GROUP, &[leaving]);
                self.forget(client);
                out
            }
            Op::Restart(client) => {
                self.forget(client);
                Vec::new()
            }
            Op::Advance(ms) => {
                self.now_ms += ms;
                self.c.tick(self.now_ms)
            }
        };
        self.deliver(&out);
        self.check();
    }

    fn deliver(&mut self, out: &[Output]) {
        for output in out {
            match output {
                Output::Join { reply, response } => {
                    let Some(client) = self.answered(*reply) else {
                        continue;
                    };
                    let generation = self.c.generation(GROUP);
                    let known = &mut self.clients[client];
                    match response.error {
                        ErrorCode::None => {
                            assert_eq!(Some(response.generation_id), generation);
                            known.member_id = response.member_id.clone();
                            known.generation_id = response.generation_id;
                            let leads = response.leader == response.member_id;
                            known.to_assign = if leads && !response.skip_assignment {
                                let members = response.members.iter();
                                members
                                    .map(|m| {
                                        let instance = m.group_instance_id.as_deref();
                                        (m.member_id.clone(), label(&m.member_id, instance))
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            };
                        }
                        ErrorCode::MemberIdRequired => {
                            known.member_id = response.member_id.clone();
                        }
                        ErrorCode::UnknownMemberId | ErrorCode::FencedInstanceId => {
                            *known = Client::default();
                        }
                        _ => {}
                    }
                }
                Output::Sync { reply, response } => {
                    let Some(client) = self.answered(*reply) else {
                        continue;
                    };
                    if response.error == ErrorCode::None {
                        let member_id = &self.clients[client].member_id;
                        let expected = label(member_id, instance(client).as_deref());
                        assert_eq!(response.assignment, expected);
                    }
                }
                Output::Persist { group_id, .. } => assert_eq!(group_id, GROUP),
            }
        }
    }

    /// The client still waiting for `reply`, if it is still running.
    fn answered(&mut self, reply: ReplyId) -> Option<usize> {
        match self.outstanding.remove(&reply) {
            Some((client, incarnation)) => {
                (self.incarnations[client] == incarnation).then_some(client)
            }
            None => panic!("reply {reply} answered twice or never asked"),
        }
    }

    fn check(&mut self) {
        let Some(group) = self.c.groups.get(GROUP) else {
            return;
        };
        assert!(
            group.generation_id >= self.generation_seen,
            "generation went back"
        );
        self.generation_seen = group.generation_id;
        if let Some(leader) = &group.leader_id {
            assert!(group.has_member(leader), "leader {leader} is not a member");
        }
        let mut ids: Vec<&str> = group.members.iter().map(|m| m.member_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), group.members.len(), "duplicate member ids");
        for instance in ["i0", "i1"] {
            let holders = group
                .members
                .iter()
                .filter(|m| m.group_instance_id.as_deref() == Some(instance))
                .count();
            assert!(holders <= 1, "{instance} held {holders} times");
        }
        match group.state {
            GroupState::Stable => {
                assert!(group.leader_id.is_some());
                for member in &group.members {
                    let instance = member.group_instance_id.as_deref();
                    assert_eq!(member.assignment, label(&member.member_id, instance));
                    assert!(member.pending_join.is_none() && member.pending_sync.is_none());
                }
            }
            GroupState::Empty => assert!(group.members.is_empty()),
            GroupState::CompletingRebalance => assert!(group.leader_id.is_some()),
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        // Every parked request the group holds is one still unanswered.
        for member in &group.members {
            for reply in member.pending_join.iter().chain(member.pending_sync.iter()) {
                assert!(self.outstanding.contains_key(reply), "stray reply {reply}");
            }
        }
    }

    /// Silence: every timer fires, so every parked request is answered.
    fn drain(&mut self) {
        for _ in 0..6 {
            self.apply(&Op::Advance(120_000));
        }
        assert!(
            self.outstanding.is_empty(),
            "never answered: {:?}",
            self.outstanding
        );
        assert_ne!(self.c.group_state(GROUP), Some(GroupState::Stable));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_clients_keep_the_coordinator_consistent(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut model = Model::new(coordinator());
        for op in &ops {
            model.apply(op);
        }
        model.drain();
    }

    /// The same with room for only two members, no initial delay, and the
    /// shortest session timeout, so refusals and expiries are frequent.
    #[test]
    fn random_clients_in_a_small_fast_group(ops in proptest::collection::vec(op(), 1..80)) {
        let c = coordinator_with(CoordinatorConfig {
            group_members_max: 2,
            initial_rebalance_delay_ms: 0,
            session_timeout_min_ms: 1,
            ..CoordinatorConfig::default()
        });
        let mut model = Model::new(c);
        model.session_timeout_ms = 6_000;
        for op in &ops {
            model.apply(op);
            let members = model.c.groups.get(GROUP).map_or(0, |g| g.members.len());
            prop_assert!(members <= 2, "{members} members");
        }
        model.drain();
    }
}
