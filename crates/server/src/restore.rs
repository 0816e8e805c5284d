//! Starting a node from a backup: `raftkv restore` turns an empty data directory into one that holds
//! the backup as its snapshot, so that `raftkv server` starts with that state.
//!
//! Every node of the new cluster is restored from the same file (the same snapshot at the same index
//! and term on each), so the cluster starts in agreement and its log goes on after the backup's index:
//! versions keep increasing past every version a client saw before the backup, and the replicated clock
//! carries on from the backup's, so expired keys stay expired.

use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use raftkv_kv::backup::{check_backup, BackupHeader};
use raftkv_raft::{HardState, Membership, Snapshot, SnapshotMeta};
use raftkv_wal::Wal;

use crate::config::ClusterConfig;

/// Restores node `id` of `config` from the backup in `file`: checks the file (its checksum, the
/// image's, and that they agree; the node decodes every entry when it starts, as it does any
/// snapshot), refuses a data directory that holds anything, then writes the snapshot and a hard state
/// committing it.
pub fn restore_node(config: &ClusterConfig, id: u64, file: &Bytes) -> anyhow::Result<BackupHeader> {
    let node = config
        .node(id)
        .with_context(|| format!("node {id} is not in the config"))?;
    let (header, image) = check_backup(file).context("the backup cannot be used")?;
    if header.term == 0 || header.index == 0 {
        bail!(
            "the backup has index {} and term {}: nothing to restore",
            header.index,
            header.term
        );
    }
    let dir = &node.data_dir;
    ensure_empty(dir)?;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: header.index,
            term: header.term,
            membership: Membership::new(config.node_ids()),
        },
        data: file.slice(image),
    };
    let written = (|| {
        let (mut wal, _, _) = Wal::open(dir, crate::wal_options())
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        wal.save_snapshot(&snapshot)
            .context("cannot write the snapshot")?;
        wal.set_hard_state(HardState {
            term: header.term,
            vote: None,
            commit: header.index,
        })
        .context("cannot write the hard state")?;
        wal.sync().context("cannot sync the data directory")
    })();
    if let Err(err) = written {
        // It was empty or absent: leave it so, and a second attempt can succeed.
        let _ = std::fs::remove_dir_all(dir);
        return Err(err);
    }
    Ok(header)
}

/// A data directory may be restored into only if it does not exist or is empty: restoring over a
/// node's data would throw away what it has.
fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "data directory {} is not empty; restore only into a new, empty directory",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// What an offline copy of a data directory holds.
pub struct OfflineCopy {
    pub file: Vec<u8>,
    pub header: BackupHeader,
    /// The node's durable commit index, and the last index in its log (which the copy may go up to).
    pub commit: u64,
    pub last: u64,
}

/// A stopped node's state rebuilt from its data directory: its snapshot plus its log applied to it.
struct Recovered {
    wal: Wal,
    store: raftkv_kv::Store,
    /// The term of the last entry applied.
    term: u64,
    hard_state: HardState,
    last: u64,
}

/// Opens a stopped node's data directory (as a restart would) and applies its log to its snapshot, up
/// to its commit index (`committed_only`) or to the end of its log. The end of the log may hold writes
/// acknowledged by a leader that this node never learned were committed (the usual case on a
/// follower), and also writes that were never acknowledged.
fn recover(dir: &Path, committed_only: bool) -> anyhow::Result<Recovered> {
    if std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none()) {
        bail!("{} holds no node data", dir.display());
    }
    let (wal, initial, _) = Wal::open(dir, crate::wal_options())
        .with_context(|| format!("cannot open {} (is its node still running?)", dir.display()))?;
    let (mut store, mut term) = match &initial.snapshot {
        Some(snapshot) => (
            raftkv_kv::Store::restore(&snapshot.data).context("the node's snapshot")?,
            snapshot.meta.term,
        ),
        None => (raftkv_kv::Store::new(), 0),
    };
    let hard_state = initial.hard_state;
    let last = initial
        .entries
        .last()
        .map_or(store.applied_index(), |e| e.index);
    let limit = if committed_only {
        hard_state.commit
    } else {
        last
    };
    for entry in &initial.entries {
        if entry.index <= store.applied_index() {
            continue;
        }
        if entry.index > limit {
            break;
        }
        match entry.kind {
            raftkv_raft::EntryKind::Noop | raftkv_raft::EntryKind::Config => {
                store.skip_index(entry.index)
            }
            raftkv_raft::EntryKind::Normal => {
                let proposal = raftkv_kv::Proposal::decode(&entry.data)
                    .with_context(|| format!("log entry {} does not decode", entry.index))?;
                store.apply_proposal(entry.index, &proposal);
            }
        }
        term = entry.term;
    }
    if store.applied_index() == 0 {
        bail!("{} holds no entries to recover", dir.display());
    }
    Ok(Recovered {
        wal,
        store,
        term,
        hard_state,
        last,
    })
}

/// A backup made from a stopped node's data directory (see [`recover`]), for disaster recovery when a
/// majority is lost.
pub fn backup_data_dir(
    dir: &Path,
    cluster_id: &str,
    committed_only: bool,
    created_ms: u64,
) -> anyhow::Result<OfflineCopy> {
    let recovered = recover(dir, committed_only)?;
    let mut file = Vec::new();
    raftkv_kv::backup::write_backup(
        &recovered.store,
        recovered.term,
        cluster_id,
        created_ms,
        &mut file,
    );
    let header = raftkv_kv::backup::read_header_prefix(&file)?;
    Ok(OfflineCopy {
        file,
        header,
        commit: recovered.hard_state.commit,
        last: recovered.last,
    })
}

/// `raftkv server --force-new-cluster`: makes node `id`'s data directory that of a one-voter cluster
/// holding everything in its log. The node's state (snapshot plus whole log, see [`recover`]) becomes
/// a snapshot whose membership is this node alone, committed; the membership in a snapshot outranks the
/// cluster file, so the node stays a one-node cluster on later restarts too. Returns the snapshot's
/// index.
pub fn force_new_cluster(dir: &Path, id: u64) -> anyhow::Result<u64> {
    let Recovered {
        mut wal,
        store,
        term,
        hard_state,
        ..
    } = recover(dir, false)?;
    let index = store.applied_index();
    let mut image = Vec::new();
    store.snapshot(&mut image);
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: Membership::new(vec![id]),
        },
        data: Bytes::from(image),
    };
    wal.save_snapshot(&snapshot)
        .context("cannot write the snapshot")?;
    wal.set_hard_state(HardState {
        term: hard_state.term.max(term),
        vote: hard_state.vote,
        commit: index,
    })
    .context("cannot write the hard state")?;
    wal.sync().context("cannot sync the data directory")?;
    Ok(index)
}
