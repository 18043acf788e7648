//! A TCP proxy in front of each replica, so that tests can cut the links
//! between replicas (`TestCluster::partition`) and restore them (`heal`).
//!
//! Every replica advertises its proxy's address to the others and opens its
//! own connections to them from a loopback address of its own
//! (`--source-ip 127.0.0.N`), so a proxy can tell which replica a
//! connection comes from. A blocked source is refused at accept, and its
//! open connections are cut at once. Clients (tests) connect from
//! 127.0.0.1 and are never blocked.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    blocked: HashSet<IpAddr>,
    /// Open connections by source address, to cut them when blocking.
    conns: HashMap<IpAddr, Vec<JoinHandle<()>>>,
}

/// One proxy: listens on `addr`, forwards to `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, from)) = listener.accept().await else {
                    continue;
                };
                let mut s = st.lock().unwrap();
                if s.blocked.contains(&from.ip()) {
                    drop(inbound);
                    continue;
                }
                let conn = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let list = s.conns.entry(from.ip()).or_default();
                list.retain(|h| !h.is_finished());
                list.push(conn);
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// Refuses connections from `ip` and cuts the open ones.
    pub fn block(&self, ip: IpAddr) {
        let mut s = self.state.lock().unwrap();
        s.blocked.insert(ip);
        for h in s.conns.remove(&ip).unwrap_or_default() {
            h.abort();
        }
    }

    /// Lets every source through again.
    pub fn unblock_all(&self) {
        self.state.lock().unwrap().blocked.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let mut s = self.state.lock().unwrap();
        for (_, hs) in s.conns.drain() {
            for h in hs {
                h.abort();
            }
        }
    }
}

/// The loopback address replica `id` connects from.
pub fn source_ip(id: u64) -> IpAddr {
    assert!(id < 200, "replica ids up to 199 have a loopback address");
    IpAddr::from([127, 0, 0, 10 + id as u8])
}
