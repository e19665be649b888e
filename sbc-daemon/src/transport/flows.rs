//! The connection table (flows): every open stream connection, inbound or outbound, with the
//! channel that feeds its writer task. Requests to a peer reuse an open connection to that
//! peer's address (RFC 3261 18.1.1 / 18.2.2); responses go back over the connection the
//! request came on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ConnId, ListenerId, TransmitToken, Transport};

/// A message queued for a connection's writer.
#[derive(Debug)]
pub struct Outgoing {
    pub payload: Bytes,
    pub token: Option<TransmitToken>,
}

#[derive(Debug, Clone)]
pub struct FlowHandle {
    pub id: ConnId,
    pub listener: ListenerId,
    pub transport: Transport,
    pub remote: SocketAddr,
    pub tx: mpsc::UnboundedSender<Outgoing>,
    /// A TLS connection the SBC opened toward this trunk (its certificate was checked for
    /// that trunk's name); None for accepted connections and other transports.
    pub tls_trunk: Option<Arc<str>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    by_id: HashMap<ConnId, FlowHandle>,
    by_peer: HashMap<(Transport, SocketAddr), ConnId>,
}

/// Thread-safe connection table.
#[derive(Default)]
pub struct FlowTable {
    inner: Mutex<Inner>,
}

impl FlowTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned table only means a task panicked while holding it; the map is still
        // consistent (every mutation is a single insert/remove).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection and returns its handle and the receiver for its writer.
    pub fn register(
        &self,
        listener: ListenerId,
        transport: Transport,
        remote: SocketAddr,
    ) -> (FlowHandle, mpsc::UnboundedReceiver<Outgoing>) {
        self.register_with(listener, transport, remote, None)
    }

    /// Registers a TLS connection the SBC opens toward `trunk`.
    pub fn register_tls_to_trunk(
        &self,
        listener: ListenerId,
        remote: SocketAddr,
        trunk: &str,
    ) -> (FlowHandle, mpsc::UnboundedReceiver<Outgoing>) {
        self.register_with(listener, Transport::Tls, remote, Some(Arc::from(trunk)))
    }

    fn register_with(
        &self,
        listener: ListenerId,
        transport: Transport,
        remote: SocketAddr,
        tls_trunk: Option<Arc<str>>,
    ) -> (FlowHandle, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.next += 1;
        let id = ConnId(inner.next);
        let handle = FlowHandle {
            id,
            listener,
            transport,
            remote,
            tx,
            tls_trunk,
        };
        inner.by_id.insert(id, handle.clone());
        inner.by_peer.insert((transport, remote), id);
        (handle, rx)
    }

    pub fn get(&self, id: ConnId) -> Option<FlowHandle> {
        self.lock().by_id.get(&id).cloned()
    }

    /// An open (or opening) connection to `remote` over `transport`.
    pub fn find_peer(&self, transport: Transport, remote: SocketAddr) -> Option<FlowHandle> {
        let inner = self.lock();
        let id = inner.by_peer.get(&(transport, remote))?;
        inner.by_id.get(id).cloned()
    }

    pub fn remove(&self, id: ConnId) {
        let mut inner = self.lock();
        if let Some(h) = inner.by_id.remove(&id) {
            if inner.by_peer.get(&(h.transport, h.remote)) == Some(&id) {
                inner.by_peer.remove(&(h.transport, h.remote));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_found_and_removed() {
        let t = FlowTable::default();
        let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let (h, _rx) = t.register(ListenerId(0), Transport::Tcp, a);
        assert_eq!(t.find_peer(Transport::Tcp, a).map(|f| f.id), Some(h.id));
        assert!(t.find_peer(Transport::Tls, a).is_none());
        let (h2, _rx2) = t.register(ListenerId(0), Transport::Tcp, a);
        // The newest connection to a peer is the one reused.
        assert_eq!(t.find_peer(Transport::Tcp, a).map(|f| f.id), Some(h2.id));
        t.remove(h.id);
        assert_eq!(t.find_peer(Transport::Tcp, a).map(|f| f.id), Some(h2.id));
        t.remove(h2.id);
        assert!(t.find_peer(Transport::Tcp, a).is_none());
        assert!(t.is_empty());
    }
}
