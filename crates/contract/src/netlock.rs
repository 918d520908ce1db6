//! How a gVisor agent pod on Kubernetes asks its node for netlock's lock (docs/design.md
//! section 9.5): the backend writes the endpoints into the pod's annotation
//! [`ANNOTATION`] ([`annotation`]), and the node's chained CNI plugin (`bottle sidecar
//! cni`) reads them back with netlock's own endpoint parser and writes the table.

use std::net::SocketAddrV4;

/// The pod annotation that asks for the lock: its endpoints, `ADDR:PORT` separated by
/// spaces.
pub const ANNOTATION: &str = "bottle.netlock";

/// The label (value [`BY_CNI`]) with which the operator says that every node of a
/// RuntimeClass chains the plugin; only then does the backend offer gVisor.
pub const RUNTIME_CLASS_LABEL: &str = "bottle.netlock";

/// [`RUNTIME_CLASS_LABEL`]'s value.
pub const BY_CNI: &str = "cni";

/// The annotation's value for `endpoints`.
pub fn annotation(endpoints: impl IntoIterator<Item = SocketAddrV4>) -> String {
    endpoints
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
