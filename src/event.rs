//! The event that flows through the pipeline: one NFLOG message, decoded and attributed.
//!
//! It borrows the receive buffer ([`NflogMsg`]) and copies the small, fixed-size parts (decoded
//! headers, interface names), so building one does not allocate.

use std::sync::Arc;

use crate::attribute::Attribution;
use crate::decode::Packet;
use crate::source::nflog::NflogMsg;

/// An interface name (at most `IFNAMSIZ` bytes), stored inline, with what the renderers
/// would otherwise check on every line (names are made once per interface, rendered per
/// message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfName {
    len: u8,
    bytes: [u8; 16],
    /// It holds a control byte (syslogemu escapes it).
    control: bool,
    /// It is not a JSON string as it is (see `render::json_plain`).
    json_escape: bool,
}

impl IfName {
    pub fn new(name: &[u8]) -> Self {
        let mut bytes = [0u8; 16];
        let len = name.len().min(16);
        bytes[..len].copy_from_slice(&name[..len]);
        let name = &bytes[..len];
        IfName {
            len: len as u8,
            control: crate::render::has_control(name),
            json_escape: !crate::render::json_plain(name),
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Whether the name holds a control byte.
    pub fn has_control(&self) -> bool {
        self.control
    }

    /// Whether the name is printable ASCII without `"` and `\`.
    pub fn json_plain(&self) -> bool {
        !self.json_escape
    }
}

/// Wall-clock time of an event, as ulogd2 chooses it: the kernel's packet timestamp when it
/// sent one, otherwise the time the daemon received the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub usec: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            sec: d.as_secs() as i64,
            usec: d.subsec_micros(),
        }
    }
}

/// One message, ready to render.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub msg: NflogMsg<'a>,
    pub packet: Packet,
    pub time: Timestamp,
    pub indev: IfName,
    pub outdev: IfName,
    pub attribution: Attribution<'a>,
    /// Kubernetes context, when the daemon watches the API.
    pub context: Option<Arc<crate::attribute::KubeContext>>,
    /// How many NFLOG messages of this packet the event stands for (1 for a single message).
    pub count: u32,
}

/// The policy an event reports, chosen by one rule for every output (JSON, syslog structured
/// data, `nflog-tail`): the API's answer when it resolved exactly one policy; else the policy
/// the `DROP by policy` prefix names (possibly truncated by kube-router); else, when several
/// candidates share no name, their namespace alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedPolicy<'a> {
    pub namespace: &'a [u8],
    /// `None` when only the namespace is known.
    pub name: Option<&'a [u8]>,
}

impl Event<'_> {
    pub fn reported_policy(&self) -> Option<ReportedPolicy<'_>> {
        let a = &self.attribution;
        match self.context.as_deref() {
            Some(c) if c.resolved && c.policies.len() == 1 => Some(ReportedPolicy {
                namespace: c.policies[0].namespace.as_bytes(),
                name: Some(c.policies[0].name.as_bytes()),
            }),
            _ if a.source == crate::attribute::PolicySource::PolicyRule => Some(ReportedPolicy {
                namespace: a.namespace,
                name: Some(a.name),
            }),
            Some(c) if !c.policies.is_empty() => Some(ReportedPolicy {
                namespace: c.policies[0].namespace.as_bytes(),
                name: None,
            }),
            _ => None,
        }
    }
}
