//! Crash tests on the simulated file system: the machine dies at a random write, sync, creation, rename or
//! removal; un-synced bytes are lost or torn at random. After reopening, the state must be one the storage
//! could legitimately be in: everything reported durable is there, and nothing that was never written is.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{entries_for, entry, snapshot, snapshot_point, Model, Op, Rng};
use raftkv_wal::sim_fs::SimFs;
use raftkv_wal::{HardState, Wal, WalError, WalOptions};

const DIR: &str = "/data";

fn open(fs: &Arc<SimFs>, options: &WalOptions) -> (Wal, Model) {
    let (wal, initial, _) = Wal::open_with_fs(fs.clone(), Path::new(DIR), options.clone())
        .unwrap_or_else(|error| panic!("reopen after crash failed: {error}"));
    (wal, Model::from_initial(&initial))
}

/// Runs random operations, killing the machine after a random number of mutations, several times over.
fn crash_run(seed: u64) {
    let mut rng = Rng(seed);
    let fs = Arc::new(SimFs::new());
    let options = WalOptions {
        segment_bytes: [150, 400, 4096][rng.below(3) as usize],
        // Deferred deletes are never carried out here: a crash may always leave them undone.
        defer_deletes: rng.below(2) == 0,
    };
    let (mut wal, mut durable) = open(&fs, &options);
    let mut current = durable.clone();
    // States a torn write of the un-synced records could leave, in write order.
    let mut in_flight: Vec<Model> = Vec::new();
    let mut term = 1;
    for _crash in 0..4 {
        fs.fail_after(1 + rng.below(60));
        let mut outcome: Result<(), WalError> = Ok(());
        while outcome.is_ok() {
            let op = rng.op();
            if verbose() {
                eprintln!("{op:?} -> wal {}..={}", wal.first_index(), wal.last_index());
            }
            outcome = match op {
                Op::Append { back, count, size } => {
                    term += 1;
                    let entries = entries_for(&current, back, count, size, term);
                    // The hard state is written after the entries of its sync, so a torn write may keep
                    // entries without it.
                    let torn_states = current.append(&entries).into_iter().map(|mut state| {
                        state.hard_state = durable.hard_state;
                        state
                    });
                    wal.append(&entries).map(|()| in_flight.extend(torn_states))
                }
                Op::SetHardState { vote, commit } => {
                    let hard_state = HardState {
                        term,
                        vote: (vote > 0).then_some(vote),
                        commit,
                    };
                    wal.set_hard_state(hard_state)
                        .map(|()| current.hard_state = hard_state)
                }
                Op::Sync | Op::Reopen => {
                    if current.hard_state != durable.hard_state {
                        in_flight.push(current.clone());
                    }
                    wal.sync().map(|()| {
                        durable = current.clone();
                        in_flight.clear();
                    })
                }
                Op::Snapshot { back, conflicting } => {
                    term += 1;
                    let (index, snap_term) = snapshot_point(&current, back, conflicting, term);
                    let mut after = current.clone();
                    after.save_snapshot(index, snap_term);
                    // Buffered records are synced first, so the snapshot's "before" is the current state.
                    if current.hard_state != durable.hard_state {
                        in_flight.push(current.clone());
                    }
                    in_flight.push(current.clone());
                    in_flight.push(after.clone());
                    wal.save_snapshot(&snapshot(index, snap_term)).map(|()| {
                        current = after;
                        durable = current.clone();
                        in_flight.clear();
                    })
                }
                Op::Compact { back } => {
                    let index = current.snapshot.0.saturating_sub(back);
                    let mut after = current.clone();
                    after.compact(index);
                    wal.compact(index).map(|()| current = after)
                }
            };
            if outcome.is_ok() {
                current.check(&wal);
            }
        }
        assert!(
            fs.is_dead(),
            "seed {seed}: an operation failed without a crash: {outcome:?}"
        );
        drop(wal);
        if verbose() {
            eprintln!(
                "before crash: {:?}",
                fs.list_dir(Path::new(DIR)).unwrap_or_default()
            );
        }
        fs.crash(rng.next());
        if verbose() {
            eprintln!("after crash: {:?}", fs.list_dir(Path::new(DIR)).unwrap());
        }
        let (reopened, recovered) = open(&fs, &options);
        let candidates: Vec<Model> = std::iter::once(&durable)
            .chain(&in_flight)
            .map(Model::reopened)
            .collect();
        assert!(
            candidates.contains(&recovered),
            "seed {seed}: recovered\n{}\nwhich is none of the states the storage could be in:\n{}",
            recovered.summary(),
            candidates
                .iter()
                .map(Model::summary)
                .collect::<Vec<_>>()
                .join("\n")
        );
        wal = reopened;
        recovered.check(&wal);
        durable = recovered.clone();
        current = recovered;
        in_flight.clear();
    }
}

fn verbose() -> bool {
    std::env::var_os("CRASH_SEED").is_some()
}

#[test]
fn every_crash_point_recovers_a_legitimate_state() {
    if let Some(seed) = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return crash_run(seed);
    }
    let runs = std::env::var("CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    // 8255 and 17967 once recovered stale entries: compaction and snapshot installs removed segments
    // in an order a crash could partly undo (an older segment back, a newer one that overwrote it gone).
    for seed in (0..runs).chain([8255, 17967]) {
        crash_run(seed);
    }
}

/// Flips one bit of a durable record anywhere but the final record: open must refuse, naming the file and an
/// offset at or before the flipped byte.
#[test]
fn bit_flips_in_old_records_are_detected() {
    let options = WalOptions {
        segment_bytes: 400,
        ..WalOptions::default()
    };
    let mut rng = Rng(7);
    for round in 0..200 {
        let fs = Arc::new(SimFs::new());
        let (mut wal, _) = open(&fs, &options);
        let entries = entries_for(&Model::default(), 0, 40, 20, 1);
        wal.append(&entries).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let mut segments: Vec<String> = fs.list_dir(Path::new(DIR)).unwrap();
        segments.retain(|name| name.ends_with(".wal"));
        segments.sort();
        // Not the newest segment: its last record is allowed to be torn.
        let name = &segments[rng.below(segments.len() as u64 - 1) as usize];
        let path = Path::new(DIR).join(name);
        let len = fs.file_len(&path).unwrap();
        let offset = rng.below(len);
        fs.flip_bit(&path, offset, rng.below(8) as u8);
        match Wal::open_with_fs(fs.clone(), Path::new(DIR), options.clone()) {
            Err(WalError::Corrupt {
                file,
                offset: reported,
                reason,
            }) => {
                assert_eq!(file, path, "round {round}: {reason}");
                assert!(
                    reported <= offset,
                    "round {round}: reported {reported}, flipped {offset}: {reason}"
                );
            }
            other => panic!("round {round}: flip at {name}:{offset} gave {other:?}"),
        }
    }
}

/// Un-synced records written into a pre-allocated segment are lost or torn by the crash: what is recovered
/// is a prefix of them, byte for byte, after everything synced; and the log goes on from there (the torn
/// remains never show up later).
#[test]
fn unsynced_writes_into_a_preallocated_segment_recover_a_prefix() {
    let options = WalOptions {
        segment_bytes: 64 * 1024,
        ..WalOptions::default()
    };
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..300 {
        let fs = Arc::new(SimFs::new());
        let (mut wal, _) = open(&fs, &options);
        let synced: Vec<_> = (1..=10).map(|i| entry(i, 1, 40)).collect();
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        let unsynced: Vec<_> = (11..=30).map(|i| entry(i, 1, 40 + i as usize)).collect();
        wal.append(&unsynced).unwrap();
        // The write happens; the fdatasync after it is where the machine dies.
        fs.fail_after(2);
        assert!(wal.sync().is_err());
        drop(wal);
        fs.crash(seed);
        let (mut wal, recovered) = open(&fs, &options);
        let kept = recovered.entries.len();
        assert!(kept >= 10, "seed {seed}: synced entries lost");
        let mut written = synced.clone();
        written.extend(unsynced.iter().cloned());
        assert_eq!(recovered.entries, written[..kept], "seed {seed}");
        outcomes.insert(kept);
        // Go on with other entries over the torn remains, then reopen.
        let next: Vec<_> = (kept as u64 + 1..=kept as u64 + 3)
            .map(|i| entry(i, 2, 3))
            .collect();
        wal.append(&next).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, reopened) = open(&fs, &options);
        let mut expected = written[..kept].to_vec();
        expected.extend(next);
        assert_eq!(reopened.entries, expected, "seed {seed}");
    }
    assert!(
        outcomes.len() > 5,
        "the crashes should keep varied prefixes: {outcomes:?}"
    );
}

/// The spare segment is prepared once the newest one is half full, renamed into place on the roll, and a
/// crash at any point of that leaves a directory that opens (a spare left behind is removed).
#[test]
fn the_spare_segment_is_prepared_ahead_and_a_leftover_one_is_removed() {
    let mut survived = 0;
    for seed in 0..20 {
        survived += u32::from(spare_segment_run(seed));
    }
    assert!(survived > 0, "no crash kept the spare");
}

/// Whether the spare survived the crash.
fn spare_segment_run(seed: u64) -> bool {
    let options = WalOptions {
        segment_bytes: 1000,
        ..WalOptions::default()
    };
    let spare = Path::new(DIR).join("next-segment.wal.tmp");
    let fs = Arc::new(SimFs::new());
    let (mut wal, _) = open(&fs, &options);
    let mut index = 1;
    let mut segment_lens = Vec::new();
    while fs.file_len(&spare).is_err() {
        wal.append(&[entry(index, 1, 50)]).unwrap();
        wal.sync().unwrap();
        index += 1;
    }
    assert_eq!(fs.file_len(&spare).unwrap(), 1000);
    assert!(fs.read(&spare).unwrap().iter().all(|&b| b == 0));
    while fs.file_len(&spare).is_ok() {
        wal.append(&[entry(index, 1, 50)]).unwrap();
        wal.sync().unwrap();
        index += 1;
    }
    let mut names = fs.list_dir(Path::new(DIR)).unwrap();
    names.retain(|name| name.ends_with(".wal"));
    names.sort();
    assert_eq!(
        names.len(),
        2,
        "the roll renamed the spare into place: {names:?}"
    );
    for name in &names {
        segment_lens.push(fs.file_len(&Path::new(DIR).join(name)).unwrap());
    }
    assert!(
        segment_lens[0] < 1000,
        "the finished segment is cut to its records: {segment_lens:?}"
    );
    assert_eq!(
        segment_lens[1], 1000,
        "the new one is pre-allocated: {segment_lens:?}"
    );
    // Fill past half again, so that a spare exists, and die.
    while fs.file_len(&spare).is_err() {
        wal.append(&[entry(index, 1, 50)]).unwrap();
        wal.sync().unwrap();
        index += 1;
    }
    fs.fail_after(1);
    wal.append(&[entry(index, 1, 50)]).unwrap();
    assert!(wal.sync().is_err());
    drop(wal);
    fs.crash(seed);
    let survived = fs.file_len(&spare).is_ok();
    let (_, recovered) = open(&fs, &options);
    assert!(
        fs.file_len(&spare).is_err(),
        "a leftover spare is removed at open"
    );
    assert_eq!(recovered.last(), index - 1);
    survived
}

use raftkv_wal::fs::Fs;
