//! Free TCP ports from the OS.
//!
//! A port is found by binding `127.0.0.1:0` and dropping the listener, so
//! another process could take it before the replica binds it; the window is
//! short and the OS hands ephemeral ports out in rotation. Within one test
//! process no port is handed out twice.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn claim(ports: &[u16]) -> bool {
    let mut g = HANDED_OUT.lock().unwrap();
    let set = g.get_or_insert_with(HashSet::new);
    if ports.iter().any(|p| set.contains(p)) {
        return false;
    }
    set.extend(ports.iter().copied());
    true
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if claim(&[port]) {
            return port;
        }
    }
    panic!("no free port found");
}

/// The first of `n` consecutive ports that are all free right now, and so
/// are the same `n` ports at each of `offsets` above them (for `arbor-node
/// dev --base-port P`: client ports P..P+3, peer ports +100, metrics +200).
pub fn free_port_ranges(n: u16, offsets: &[u16]) -> u16 {
    for _ in 0..1000 {
        let first = free_port();
        let top = offsets.iter().max().copied().unwrap_or(0);
        if first.checked_add(n + top).is_none() {
            continue;
        }
        let rest: Vec<u16> = std::iter::once(0)
            .chain(offsets.iter().copied())
            .flat_map(|o| (0..n).map(move |i| first + o + i))
            .filter(|p| *p != first)
            .collect();
        // Hold every listener at once so the check is for the whole range.
        let held: Vec<TcpListener> = rest
            .iter()
            .filter_map(|p| TcpListener::bind(("127.0.0.1", *p)).ok())
            .collect();
        if held.len() == rest.len() && claim(&rest) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports (and at {offsets:?} above them) found");
}

/// The first of `n` consecutive ports that are all free right now.
pub fn free_port_range(n: u16) -> u16 {
    free_port_ranges(n, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let a = free_port();
        let b = free_port_range(3);
        assert_ne!(a, b);
        assert!(![b, b + 1, b + 2].contains(&a));
        for p in [b, b + 1, b + 2] {
            TcpListener::bind(("127.0.0.1", p)).expect("range port is free");
        }
    }
}
