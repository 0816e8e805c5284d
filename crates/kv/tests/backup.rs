//! The backup file format: a round trip, and every kind of damage refused.

use bytes::Bytes;
use raftkv_kv::backup::{
    check_backup, read_backup, read_backup_header, read_header_prefix, write_backup, BackupError,
};
use raftkv_kv::{Command, Store};

fn store_with(keys: u64) -> Store {
    let mut store = Store::new();
    for i in 0..keys {
        store.apply(
            i + 1,
            1_000 + i,
            &Command::Set {
                key: Bytes::from(format!("key{i}")),
                exptime: if i % 2 == 0 { 0 } else { 60 },
                value: Bytes::from(vec![b'v'; i as usize % 300]),
            },
        );
    }
    store
}

fn backup_of(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    write_backup(store, 7, "cluster one", 42, &mut out);
    out
}

#[test]
fn a_backup_round_trips_with_its_header() {
    let store = store_with(500);
    let file = backup_of(&store);
    let (header, restored) = read_backup(&file).unwrap();
    assert_eq!(header.index, 500);
    assert_eq!(header.term, 7);
    assert_eq!(header.keys, 500);
    assert_eq!(header.cluster_id, "cluster one");
    assert_eq!(header.created_ms, 42);
    assert_eq!(restored.digest(), store.digest());
    assert_eq!(read_header_prefix(&file[..100]).unwrap(), header);
    let (checked, image) = check_backup(&file).unwrap();
    assert_eq!(checked, header);
    assert_eq!(
        Store::restore(&file[image]).unwrap().digest(),
        store.digest()
    );
}

#[test]
fn damage_of_every_kind_is_refused() {
    let file = backup_of(&store_with(50));
    for len in [0, 5, 9, 10, 40, file.len() / 2, file.len() - 1] {
        assert!(read_backup(&file[..len]).is_err(), "truncated to {len}");
        assert!(check_backup(&file[..len]).is_err(), "truncated to {len}");
    }
    for at in (0..file.len()).step_by(7) {
        let mut flipped = file.clone();
        flipped[at] ^= 0x04;
        assert!(read_backup(&flipped).is_err(), "bit flipped at {at}");
        assert!(check_backup(&flipped).is_err(), "bit flipped at {at}");
    }
    let mut newer = file.clone();
    newer[9] = 2;
    assert_eq!(
        read_backup_header(&newer).unwrap_err(),
        BackupError::NewerFormat(2)
    );
    assert_eq!(
        read_backup_header(b"RKVS not a backup").unwrap_err(),
        BackupError::NotABackup
    );
    let mut extra = file.clone();
    extra.insert(file.len() - 4, 0);
    assert!(read_backup(&extra).is_err());
}
