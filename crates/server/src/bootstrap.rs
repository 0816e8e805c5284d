//! A new cluster's first membership: written into the log of every node that starts from an empty data
//! directory without `--join`, so that from then on the membership in the log, not the cluster file, is
//! the truth (see `raftkv_replica::bootstrap_entry`).

use raftkv_raft::{InitialState, Membership};
use raftkv_replica::{AddressBook, MemberAddrs};
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
                resp: node.resp_addr.clone(),
            };
            (node.id, addrs)
        })
        .collect();
    AddressBook { members }
}

/// Writes the bootstrap entry for `book` (see [`raftkv_replica::write_bootstrap`]).
pub(crate) fn write(
    wal: &mut Wal,
    initial: &mut InitialState,
    book: &AddressBook,
) -> Result<(), WalError> {
    raftkv_replica::write_bootstrap(wal, initial, book)?;
    info!(
        voters = ?book.members.keys().collect::<Vec<_>>(),
        "new cluster: its membership is now in the log"
    );
    Ok(())
}

/// Logs it when the cluster file lists other nodes than the membership in the log: the log wins.
pub(crate) fn report_file_disagreement(config: &ClusterConfig, membership: &Membership) {
    let mut in_file = config.node_ids();
    in_file.sort_unstable();
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
