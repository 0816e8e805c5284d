//! Random sequences of append / overlapping append / hard state / snapshot / compaction / reopen give the
//! same visible log and hard state as a simple model.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{entries_for, snapshot, snapshot_point, Model, Op};
use proptest::prelude::*;
use raftkv_wal::sim_fs::SimFs;
use raftkv_wal::{HardState, Wal, WalOptions};

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..6, 1u64..9, 0usize..60).prop_map(|(back, count, size)| Op::Append { back, count, size }),
        2 => (0u64..4, 0u64..50).prop_map(|(vote, commit)| Op::SetHardState { vote, commit }),
        5 => Just(Op::Sync),
        2 => (0u64..6, any::<bool>()).prop_map(|(back, conflicting)| Op::Snapshot { back, conflicting }),
        2 => (0u64..4).prop_map(|back| Op::Compact { back }),
        1 => Just(Op::Reopen),
    ]
}

/// With `defer_deletes`, the garbage is never deleted: recovery must ignore what compaction left.
fn run(ops: &[Op], segment_bytes: u64, defer_deletes: bool) {
    let fs = Arc::new(SimFs::new());
    let dir = Path::new("/data");
    let options = WalOptions {
        segment_bytes,
        defer_deletes,
    };
    let (mut wal, _, _) = Wal::open_with_fs(fs.clone(), dir, options.clone()).unwrap();
    let mut model = Model::default();
    let mut term = 1;
    for op in ops {
        match *op {
            Op::Append { back, count, size } => {
                term += 1;
                let entries = entries_for(&model, back, count, size, term);
                wal.append(&entries).unwrap();
                model.append(&entries);
            }
            Op::SetHardState { vote, commit } => {
                let hard_state = HardState {
                    term,
                    vote: (vote > 0).then_some(vote),
                    commit,
                };
                wal.set_hard_state(hard_state).unwrap();
                model.hard_state = hard_state;
            }
            Op::Sync => wal.sync().unwrap(),
            Op::Snapshot { back, conflicting } => {
                term += 1;
                let (index, snap_term) = snapshot_point(&model, back, conflicting, term);
                wal.save_snapshot(&snapshot(index, snap_term)).unwrap();
                model.save_snapshot(index, snap_term);
            }
            Op::Compact { back } => {
                let index = model.snapshot.0.saturating_sub(back);
                wal.compact(index).unwrap();
                model.compact(index);
            }
            Op::Reopen => {
                wal.sync().unwrap();
                drop(wal);
                let (reopened, initial, _) =
                    Wal::open_with_fs(fs.clone(), dir, options.clone()).unwrap();
                wal = reopened;
                model = model.reopened();
                assert_eq!(
                    Model::from_initial(&initial),
                    model,
                    "initial state after reopen"
                );
            }
        }
        model.check(&wal);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn storage_behaves_like_the_model(
        ops in proptest::collection::vec(op_strategy(), 1..80),
        small in any::<bool>(),
        defer_deletes in any::<bool>(),
    ) {
        run(&ops, if small { 200 } else { 64 * 1024 }, defer_deletes);
    }
}
