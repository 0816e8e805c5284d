//! The API on a real temporary directory: durability across reopen, the lock, snapshots, compaction, damage.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use raftkv_raft::{EntryKind, Membership, SnapshotMeta};
use raftkv_wal::{Entry, HardState, Snapshot, Wal, WalError, WalOptions};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("entry {index} of term {term}")),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 300,
        ..WalOptions::default()
    }
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: Membership::new(vec![1, 2, 3]),
        },
        data: Bytes::from(format!("state at {index}")),
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[test]
fn fresh_directory_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, initial, stats) = Wal::open(&dir.path().join("data"), WalOptions::default()).unwrap();
    assert_eq!(initial.hard_state, HardState::default());
    assert!(initial.snapshot.is_none() && initial.entries.is_empty());
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    assert_eq!(stats.entries, 0);
}

#[test]
fn synced_entries_and_hard_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hard_state = HardState {
        term: 3,
        vote: Some(2),
        commit: 40,
    };
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=50, 1)).unwrap();
        wal.set_hard_state(hard_state).unwrap();
        wal.sync().unwrap();
        // Not synced: may or may not survive, but must not break recovery.
        wal.append(&entries(51..=52, 1)).unwrap();
    }
    assert!(
        segment_files(dir.path()).len() > 5,
        "small segments must roll"
    );
    let (wal, initial, stats) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.hard_state, hard_state);
    assert_eq!(initial.entries, entries(1..=50, 1));
    assert_eq!(wal.entries(10, 13).unwrap(), entries(10..=12, 1));
    assert_eq!(stats.entries, 50);
    assert_eq!(stats.segments, segment_files(dir.path()).len());
}

#[test]
fn a_second_open_of_the_same_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let error = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(error, WalError::Locked(ref path) if path == &dir.path().join("LOCK")),
        "{error}"
    );
    assert!(error.to_string().contains("already in use"), "{error}");
    drop(wal);
    Wal::open(dir.path(), WalOptions::default()).expect("the lock is released on drop");
}

#[test]
fn a_conflicting_suffix_is_replaced_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=30, 1)).unwrap();
        wal.sync().unwrap();
        wal.append(&entries(20..=25, 2)).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.last_index(), 25);
    }
    let (_, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let mut expected = entries(1..=19, 1);
    expected.extend(entries(20..=25, 2));
    assert_eq!(initial.entries, expected);
}

#[test]
fn bad_appends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(
        wal.append(&[entry(2, 1)]),
        Err(WalError::InvalidRequest(_))
    ));
    assert!(matches!(
        wal.append(&[entry(1, 1), entry(3, 1)]),
        Err(WalError::InvalidRequest(_))
    ));
    assert_eq!(wal.last_index(), 0);
}

#[test]
fn snapshot_then_compaction_removes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=100, 1)).unwrap();
        wal.sync().unwrap();
        let before = segment_files(dir.path()).len();
        let usage = wal.disk_usage();
        wal.save_snapshot(&snapshot(80, 1)).unwrap();
        assert_eq!(wal.last_index(), 100, "a matching snapshot keeps the log");
        assert!(matches!(wal.compact(81), Err(WalError::InvalidRequest(_))));
        wal.compact(80).unwrap();
        assert!(segment_files(dir.path()).len() < before / 3);
        assert!(wal.disk_usage() < usage);
        assert!(matches!(
            wal.entries(80, 82),
            Err(WalError::Compacted {
                index: 80,
                first: 81
            })
        ));
        assert_eq!(wal.entries(81, 83).unwrap(), entries(81..=82, 1));
        assert!(matches!(
            wal.entries(100, 102),
            Err(WalError::Unavailable { .. })
        ));
    }
    let (wal, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(80, 1)));
    assert_eq!(initial.entries, entries(81..=100, 1));
    assert_eq!(wal.first_index(), 81);
    assert_eq!(wal.term(80).unwrap(), 1);
}

#[test]
fn an_installed_snapshot_that_does_not_match_resets_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=40, 1)).unwrap();
        wal.sync().unwrap();
        wal.save_snapshot(&snapshot(30, 2)).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (31, 30));
        assert_eq!(segment_files(dir.path()).len(), 1);
        wal.append(&entries(31..=35, 2)).unwrap();
        wal.sync().unwrap();
    }
    let (_, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.snapshot.unwrap().meta.index, 30);
    assert_eq!(initial.entries, entries(31..=35, 2));
}

/// Where the newest segment's records end: the rest of the pre-allocated file is zeros. (Every test
/// record ends in a non-zero byte.)
fn used_len(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    bytes.iter().rposition(|&b| b != 0).unwrap() + 1
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset as u64)).unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn a_torn_final_write_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: 64 * 1024,
        ..WalOptions::default()
    };
    {
        let (mut wal, _, _) = Wal::open(dir.path(), options.clone()).unwrap();
        wal.append(&entries(1..=10, 1)).unwrap();
        wal.sync().unwrap();
    }
    let segment = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    assert_eq!(len, 64 * 1024, "the newest segment is pre-allocated");
    let used = used_len(&segment);
    // Half of a record's header, where the next write goes, as a crash during it could leave.
    write_at(&segment, used, &[7, 7, 7, 7, 9]);
    let (_, initial, stats) = Wal::open(dir.path(), options).unwrap();
    assert_eq!(initial.entries, entries(1..=10, 1));
    assert_eq!(stats.truncated_torn_bytes, 5);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
    assert_eq!(used_len(&segment), used, "the torn bytes are zeroed");
}

#[test]
fn a_damaged_old_record_stops_the_node_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.append(&entries(1..=10, 1)).unwrap();
        wal.sync().unwrap();
    }
    let segment = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segment);
            assert!(offset <= 100 && offset > 32, "offset {offset}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_snapshot_written_off_thread_is_adopted_and_compacts_like_save_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=100, 1)).unwrap();
        wal.sync().unwrap();
        let writer = wal.snapshot_writer();
        let written = std::thread::spawn(move || writer.write(&snapshot(80, 1)).unwrap())
            .join()
            .unwrap();
        // The log goes on while the file is written elsewhere.
        wal.append(&entries(101..=110, 1)).unwrap();
        wal.adopt_snapshot(written).unwrap();
        wal.compact(80).unwrap();
        assert_eq!(wal.first_index(), 81);
        assert_eq!(wal.last_index(), 110);
        // A file older than the adopted snapshot is dropped, not adopted.
        let stale = wal.snapshot_writer().write(&snapshot(50, 1)).unwrap();
        wal.adopt_snapshot(stale).unwrap();
    }
    let (_, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(80, 1)));
    assert_eq!(initial.entries, entries(81..=110, 1));
}

#[test]
fn a_written_but_never_adopted_snapshot_is_recovered_as_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=100, 1)).unwrap();
        wal.sync().unwrap();
        let _written = wal.snapshot_writer().write(&snapshot(80, 1)).unwrap();
        // The node dies before the log adopts it.
    }
    let (_, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(80, 1)));
    assert_eq!(initial.entries, entries(81..=100, 1));
}

/// Found end to end: a node's own snapshot was still being written when the leader's newer snapshot
/// was installed, which removed every other snapshot file; adopting the stale one must not fail on the
/// file being gone already.
#[test]
fn a_stale_written_snapshot_removed_by_a_newer_install_is_dropped_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
    wal.append(&entries(1..=100, 1)).unwrap();
    wal.sync().unwrap();
    let stale = wal.snapshot_writer().write(&snapshot(50, 1)).unwrap();
    wal.save_snapshot(&snapshot(200, 2)).unwrap();
    wal.adopt_snapshot(stale).unwrap();
    wal.append(&[entry(201, 2)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(200, 2)));
    assert_eq!(initial.entries, vec![entry(201, 2)]);
}

/// Found by the whole-node simulator (seed 242): a node's next snapshot was written before the disk
/// thread adopted the previous one, and adopting the older one removed every other snapshot file, the
/// newer one included; adopting the newer one then compacted the log with no snapshot file left, and
/// the node could not recover ("the log starts at index 41 but the newest snapshot ends at 0").
#[test]
fn adopting_a_snapshot_keeps_a_newer_one_written_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=100, 1)).unwrap();
        wal.sync().unwrap();
        let older = wal.snapshot_writer().write(&snapshot(40, 1)).unwrap();
        let newer = wal.snapshot_writer().write(&snapshot(80, 1)).unwrap();
        wal.adopt_snapshot(older).unwrap();
        wal.compact(40).unwrap();
        wal.adopt_snapshot(newer).unwrap();
        wal.compact(80).unwrap();
        wal.sync().unwrap();
    }
    let (_, initial, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(80, 1)));
    assert_eq!(initial.entries, entries(81..=100, 1));
}

#[test]
fn deferred_deletes_are_handed_out_and_recovery_ignores_them_if_never_done() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        defer_deletes: true,
        ..small_segments()
    };
    {
        let (mut wal, _, _) = Wal::open(dir.path(), options.clone()).unwrap();
        wal.append(&entries(1..=100, 1)).unwrap();
        wal.sync().unwrap();
        let before = segment_files(dir.path()).len();
        wal.save_snapshot(&snapshot(60, 1)).unwrap();
        wal.save_snapshot(&snapshot(80, 1)).unwrap();
        wal.compact(80).unwrap();
        let garbage = wal.take_garbage();
        assert!(
            garbage.len() > before / 2,
            "compacted segments and the older snapshot"
        );
        assert_eq!(
            segment_files(dir.path()).len(),
            before,
            "nothing deleted yet"
        );
        assert!(wal.take_garbage().is_empty());
        // The caller never deletes them (a crash): recovery must not care.
    }
    let (_, initial, _) = Wal::open(dir.path(), options).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(80, 1)));
    assert_eq!(initial.entries, entries(81..=100, 1));
}

fn small_preallocated() -> WalOptions {
    WalOptions {
        segment_bytes: 1024,
        ..WalOptions::default()
    }
}

/// Several segments: the older ones hold exactly their records, the newest is pre-allocated.
fn write_several_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let (mut wal, _, _) = Wal::open(dir, small_preallocated()).unwrap();
    for chunk in 0..10 {
        wal.append(&entries(chunk * 10 + 1..=chunk * 10 + 10, 1))
            .unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let segments = segment_files(dir);
    assert!(segments.len() >= 4, "{segments:?}");
    segments
}

#[test]
fn only_the_newest_segment_is_preallocated_and_the_spare_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_several_segments(dir.path());
    let (newest, older) = segments.split_last().unwrap();
    for segment in older {
        let len = std::fs::metadata(segment).unwrap().len() as usize;
        assert_eq!(
            len,
            used_len(segment),
            "{} is cut to its records",
            segment.display()
        );
        assert!(len <= 1024 + 100);
    }
    assert_eq!(std::fs::metadata(newest).unwrap().len(), 1024);
    assert!(used_len(newest) < 1024);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "dropping the Wal removes its spare: {leftovers:?}"
    );
    let (mut wal, initial, _) = Wal::open(dir.path(), small_preallocated()).unwrap();
    assert_eq!(initial.entries, entries(1..=100, 1));
    wal.append(&entries(101..=150, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, initial, _) = Wal::open(dir.path(), small_preallocated()).unwrap();
    assert_eq!(initial.entries, entries(1..=150, 1));
}

#[test]
fn a_zero_tail_or_garbage_after_the_records_of_an_older_segment_is_corrupt() {
    for garbage in [
        &[0u8; 100][..],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
        &[3; 7][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_several_segments(dir.path());
        let old = &segments[1];
        let len = std::fs::metadata(old).unwrap().len() as usize;
        write_at(old, len, garbage);
        match Wal::open(dir.path(), small_preallocated()) {
            Err(WalError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(&file, old, "{reason}");
                assert_eq!(offset, len as u64, "{reason}");
                if garbage.iter().all(|&b| b == 0) {
                    assert!(reason.contains("zero-filled tail"), "{reason}");
                }
            }
            other => panic!("garbage {garbage:?}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn leftover_spare_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    write_several_segments(dir.path());
    let spares = [
        dir.path().join("next-segment.wal.tmp"),
        dir.path().join("0000000000000063-0000000000000400.wal.tmp"),
    ];
    for spare in &spares {
        std::fs::write(spare, [0x55u8; 3000]).unwrap();
    }
    let (mut wal, initial, _) = Wal::open(dir.path(), small_preallocated()).unwrap();
    assert_eq!(initial.entries, entries(1..=100, 1));
    for spare in &spares {
        assert!(!spare.exists(), "{} is removed", spare.display());
    }
    // Rolling works as usual afterwards.
    wal.append(&entries(101..=200, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, initial, _) = Wal::open(dir.path(), small_preallocated()).unwrap();
    assert_eq!(initial.entries, entries(1..=200, 1));
}

/// A record as `record.rs` frames it, for hand-made damage.
fn encode_entry_record(index: u64, term: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&index.to_le_bytes());
    payload.extend_from_slice(&term.to_le_bytes());
    payload.push(0);
    payload.extend_from_slice(data);
    let mut body = Vec::new();
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    body.push(1);
    body.extend_from_slice(&payload);
    let mut record = crc32c::crc32c(&body).to_le_bytes().to_vec();
    record.extend_from_slice(&body);
    record
}

/// The torn record's payload holds a complete, valid record (entry data is arbitrary bytes). If recovery
/// only cut the log back logically, the next, shorter record written over the torn one would leave that
/// embedded record right behind it, and the next recovery would read it as a real entry.
#[test]
fn a_torn_tail_overwritten_after_reopen_never_resurrects_stale_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: 64 * 1024,
        ..WalOptions::default()
    };
    {
        let (mut wal, _, _) = Wal::open(dir.path(), options.clone()).unwrap();
        wal.append(&entries(1..=5, 1)).unwrap();
        wal.sync().unwrap();
    }
    let segment = segment_files(dir.path()).pop().unwrap();
    let used = used_len(&segment);
    let embedded = encode_entry_record(7, 1, b"never written by the log");
    let mut data = embedded.clone();
    data.extend_from_slice(&[0xEE; 20]);
    let torn = encode_entry_record(6, 1, &data);
    // All but the last byte reached the disk.
    write_at(&segment, used, &torn[..torn.len() - 1]);
    let (mut wal, initial, stats) = Wal::open(dir.path(), options.clone()).unwrap();
    assert_eq!(initial.entries, entries(1..=5, 1));
    assert_eq!(stats.truncated_torn_bytes, torn.len() as u64 - 1);
    // An entry with no data takes 26 bytes: exactly up to where the embedded record began.
    let replacement = Entry {
        index: 6,
        term: 2,
        kind: EntryKind::Normal,
        data: Bytes::new(),
    };
    wal.append(std::slice::from_ref(&replacement)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, initial, _) = Wal::open(dir.path(), options).unwrap();
    let mut expected = entries(1..=5, 1);
    expected.push(replacement);
    assert_eq!(initial.entries, expected);
    assert_eq!(wal.last_index(), 6);
}

#[test]
fn a_segment_of_an_older_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(b"RAFTKVWL");
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&1u64.to_le_bytes());
    header.extend_from_slice(&1u64.to_le_bytes());
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header.extend_from_slice(&encode_entry_record(1, 1, b"v1"));
    let path = dir.path().join("0000000000000001-0000000000000001.wal");
    std::fs::write(&path, &header).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(error @ WalError::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(message.contains("format version 1"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Deferred deletes that never happened (the caller crashed first) must not resurface as stale log
/// entries once a later snapshot install has removed the newer segments that overwrote them.
#[test]
fn an_install_after_undeleted_garbage_keeps_the_entries_appended_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        defer_deletes: true,
        ..small_segments()
    };
    {
        let (mut wal, _, _) = Wal::open(dir.path(), options.clone()).unwrap();
        wal.append(&entries(1..=50, 1)).unwrap();
        wal.sync().unwrap();
        // A new leader overwrites 40.. with term 2.
        wal.append(&entries(40..=60, 2)).unwrap();
        wal.sync().unwrap();
        // Compaction leaves the overwritten segment (stale 46..=50) as garbage but the overwriting
        // one (40..) live.
        wal.save_snapshot(&snapshot(41, 2)).unwrap();
        wal.compact(41).unwrap();
        let _never_deleted = wal.take_garbage();
        // The leader's snapshot at 48 with another term: the log restarts after it.
        wal.save_snapshot(&snapshot(48, 3)).unwrap();
        wal.append(&entries(49..=52, 3)).unwrap();
        wal.sync().unwrap();
    }
    let (_, initial, _) = Wal::open(dir.path(), options).unwrap();
    assert_eq!(initial.snapshot, Some(snapshot(48, 3)));
    assert_eq!(
        initial.entries,
        entries(49..=52, 3),
        "durable entries after the install survive"
    );
}

/// The janitor's error path: a deletion that fails keeps its file and every newer one waiting (a
/// crash must leave a suffix of the segment chain); once the disk recovers, they go in order.
#[test]
fn ordered_deletions_stop_at_the_first_failure_and_resume_in_order() {
    use raftkv_wal::fs::Fs;
    use raftkv_wal::sim_fs::SimFs;
    use raftkv_wal::OrderedDeletions;
    let fs = SimFs::new();
    let dir = Path::new("/data");
    fs.create_dir_all(dir).unwrap();
    let names = ["a.wal", "b.wal", "c.wal"];
    for name in names {
        let mut file = fs.create(&dir.join(name)).unwrap();
        file.write_all(b"x").unwrap();
        file.sync_data().unwrap();
    }
    fs.sync_dir(dir).unwrap();
    let mut deletions = OrderedDeletions::default();
    deletions.push(vec![dir.join("a.wal"), dir.join("b.wal")]);
    deletions.push(vec![dir.join("c.wal")]);
    fs.fail_after(1);
    assert!(deletions.run(&fs).is_err());
    assert_eq!(
        deletions.len(),
        3,
        "nothing after the failed file was deleted"
    );
    fs.crash(7);
    let left = fs.list_dir(dir).unwrap();
    assert!(
        names.iter().all(|n| left.contains(&n.to_string())),
        "{left:?}"
    );
    deletions.run(&fs).unwrap();
    assert!(deletions.is_empty());
    let left = fs.list_dir(dir).unwrap();
    assert!(
        names.iter().all(|n| !left.contains(&n.to_string())),
        "{left:?}"
    );
}
