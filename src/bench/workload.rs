//! Workloads (`--op`) and keys: parsing the workload, spreading the load and the key space over
//! the connections, and the source of each request's key.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    Set,
    Get,
    Getm,
    Cas,
    Mix {
        reads: u32,
        writes: u32,
    },
    /// Verified exactly-once increments (see `incr.rs`); driven by the client library, not the workers.
    Incr,
    /// `stale <max_lag> get`, with the connections spread over every node, not only the leader.
    StaleGet {
        max_lag: u64,
    },
}

impl Workload {
    pub(super) fn needs_preload(self) -> bool {
        self != Workload::Set
    }

    /// Whether every node serves it (so connections go to every node, not only the leader).
    pub(super) fn any_node(self) -> bool {
        matches!(self, Workload::StaleGet { .. })
    }

    pub(super) fn name(self) -> String {
        match self {
            Workload::Set => "set".into(),
            Workload::Get => "get".into(),
            Workload::Getm => "getm".into(),
            Workload::Cas => "cas".into(),
            Workload::Mix { reads, writes } => format!("mix:{reads}:{writes}"),
            Workload::Incr => "incr".into(),
            Workload::StaleGet { max_lag } => format!("stale-get:{max_lag}"),
        }
    }
}

pub(super) fn parse_workload(text: &str) -> Result<Workload, String> {
    Ok(match text {
        "set" => Workload::Set,
        "get" => Workload::Get,
        "getm" => Workload::Getm,
        "cas" => Workload::Cas,
        "incr" => Workload::Incr,
        _ if text.starts_with("stale-get:") => {
            let max_lag = text["stale-get:".len()..]
                .parse()
                .map_err(|_| "stale-get:N needs N, the most entries a node may lag")?;
            Workload::StaleGet { max_lag }
        }
        _ => {
            let ratio = text
                .strip_prefix("mix:")
                .ok_or("expected set, get, getm, cas, incr, stale-get:N or mix:R:W")?;
            let (reads, writes) = ratio
                .split_once(':')
                .ok_or("expected mix:R:W, e.g. mix:9:1")?;
            let reads: u32 = reads.parse().map_err(|_| "R in mix:R:W must be a number")?;
            let writes: u32 = writes
                .parse()
                .map_err(|_| "W in mix:R:W must be a number")?;
            if reads.checked_add(writes).is_none_or(|total| total == 0) {
                return Err("mix:R:W needs R + W between 1 and 2^32".into());
            }
            Workload::Mix { reads, writes }
        }
    })
}

/// Splits `total` into `parts` nearly equal shares.
pub(super) fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// Splits the key space `0..keys` into `parts` consecutive, nearly equal ranges.
pub(super) fn partition(keys: u64, parts: usize) -> Vec<std::ops::Range<u64>> {
    let mut start = 0;
    spread(keys as usize, parts)
        .into_iter()
        .map(|len| {
            let range = start..start + len as u64;
            start = range.end;
            range
        })
        .collect()
}

/// Which key each request uses.
pub(super) enum KeySource {
    Random {
        keys: u64,
        state: u64,
    },
    /// Every key of a range once: the preload.
    Sequential {
        next: u64,
        end: u64,
    },
    /// Round robin over this worker's own keys, tracking each one's version.
    Cas {
        start: u64,
        cursor: usize,
        versions: Vec<u64>,
    },
}

impl KeySource {
    pub(super) fn random(state: &mut u64) -> u64 {
        // xorshift64*: good enough to spread keys, and far cheaper than a cryptographic generator.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next key, and for cas the version it is expected to have; `None` once a preload range
    /// is used up.
    pub(super) fn next(&mut self) -> Option<(u64, u64)> {
        match self {
            KeySource::Random { keys, state } => Some((KeySource::random(state) % *keys, 0)),
            KeySource::Sequential { next, end } => {
                if *next >= *end {
                    return None;
                }
                *next += 1;
                Some((*next - 1, 0))
            }
            KeySource::Cas {
                start,
                cursor,
                versions,
            } => {
                let index = *cursor;
                *cursor = (*cursor + 1) % versions.len().max(1);
                Some((
                    *start + index as u64,
                    versions.get(index).copied().unwrap_or(0),
                ))
            }
        }
    }

    /// True once a preload range has been fully issued; the other sources never run out.
    pub(super) fn exhausted(&self) -> bool {
        matches!(self, KeySource::Sequential { next, end } if next >= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workloads() {
        assert_eq!(
            parse_workload("mix:9:1"),
            Ok(Workload::Mix {
                reads: 9,
                writes: 1
            })
        );
        assert_eq!(parse_workload("getm"), Ok(Workload::Getm));
        assert!(parse_workload("mix:0:0").is_err());
        assert!(parse_workload("mix:a:1").is_err());
        assert!(parse_workload("put").is_err());
    }

    #[test]
    fn spreads_and_partitions_evenly() {
        assert_eq!(spread(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(partition(10, 3), vec![0..4, 4..7, 7..10]);
    }
}
