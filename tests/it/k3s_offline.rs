//! Offline attribution: a capture of the K3s-shaped node's traffic plus a snapshot, replayed by
//! `nflog-tail -r`, attributes the same events as the live daemon did.
