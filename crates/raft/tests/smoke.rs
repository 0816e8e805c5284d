mod harness;
use bytes::Bytes;
use harness::*;

#[test]
fn three_nodes_elect_and_commit() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    for i in 0..10 {
        c.node(leader)
            .propose(Bytes::from(format!("v{i}")))
            .unwrap();
    }
    c.settle();
    c.tick_all(3);
    for id in 1..=3 {
        assert_eq!(c.applied_data(id).len(), 10, "node {id}");
    }
}
