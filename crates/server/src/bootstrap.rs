//! A new cluster's first membership: written into the log of every node that starts from an empty data
//! directory without `--join`, so that from then on the membership in the log, not the cluster file, is
//! the truth (see `raftkv_replica::bootstrap_entry`).

use raftkv_raft::{InitialState, Membership};
use raftkv_replica::{bootstrap_entry, AddressBook, MemberAddrs};
use raftkv_wal::{Wal, WalError};
use tracing::{info, warn};

use crate::config::ClusterConfig;

/// Every node of the cluster file with its addresses.
pub(crate) fn address_book(config: &ClusterConfig) -> AddressBook {
    let members = config
        .nodes
        .iter()
        .map(|node| {
            let addrs = MemberAddrs {
                client: node.client_addr.clone(),
                peer: node.peer_addr.clone(),
            };
            (node.id, addrs)
        })
        .collect();
    AddressBook { members }
}

/// Whether the data directory held nothing at all.
pub(crate) fn is_fresh(initial: &InitialState) -> bool {
    initial.snapshot.is_none()
        && initial.entries.is_empty()
        && initial.hard_state == Default::default()
}

/// Writes the bootstrap entry and its hard state durably, and adds them to what the node starts from.
pub(crate) fn write(
    wal: &mut Wal,
    initial: &mut InitialState,
    book: &AddressBook,
) -> Result<(), WalError> {
    let (entry, hard_state) = bootstrap_entry(book);
    wal.append(std::slice::from_ref(&entry))?;
    wal.set_hard_state(hard_state)?;
    wal.sync()?;
    info!(
        voters = ?book.members.keys().collect::<Vec<_>>(),
        "new cluster: its membership is now in the log"
    );
    initial.entries.push(entry);
    initial.hard_state = hard_state;
    Ok(())
}

/// Logs it when the cluster file lists other nodes than the membership in the log: the log wins.
pub(crate) fn report_file_disagreement(config: &ClusterConfig, membership: &Membership) {
    let in_file = config.node_ids();
    let mut in_log: Vec<u64> = membership.members().collect();
    in_log.sort_unstable();
    if !in_log.is_empty() && in_log != in_file {
        warn!(
            file = ?in_file,
            voters = ?membership.voters,
            learners = ?membership.learners,
            "the cluster file lists other nodes than the membership in the log; ignoring the file's \
             node list (the log is the truth after bootstrap; change membership with raftkv members)"
        );
    }
}
