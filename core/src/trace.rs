//! W3C Trace Context (`traceparent`) as the request id of every process.
//!
//! A request's id *is* its trace id: 32 lowercase hex digits that the search
//! API takes from the caller's `traceparent` (or `x-request-id`) or makes up,
//! sends to the dispatcher in `traceparent`, and the dispatcher puts in each
//! frame's rows (`request_id`, a `u128`) and its `trace_context`. So one id
//! finds a request in the logs of the search API, the dispatcher and every
//! stage, and in any tracing backend the spans are exported to.

use rand::RngExt;
use std::fmt;

/// The header that carries a [`TraceParent`] between processes.
pub const TRACEPARENT: &str = "traceparent";

/// One position in a trace: the trace's id, the span that sent it, and
/// whether the caller samples it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace, with random ids (never the all-zero ids W3C forbids).
    pub fn new_root() -> TraceParent {
        let mut rng = rand::rng();
        TraceParent {
            trace_id: rng.random_range(1..=u128::MAX),
            parent_id: rng.random_range(1..=u64::MAX),
            sampled: true,
        }
    }

    /// The same trace, sent on by a new span of this process.
    pub fn child(self) -> TraceParent {
        TraceParent {
            parent_id: rand::rng().random_range(1..=u64::MAX),
            ..self
        }
    }

    /// Reads a `traceparent` value. Anything W3C says to ignore (another
    /// length or case, all-zero ids, version `ff`) is `None`; a later
    /// version's extra fields are allowed, as the spec asks.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut fields = value.trim().split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let parent_id = fields.next()?;
        let flags = fields.next()?;
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && fields.next().is_some())
        {
            return None;
        }
        if !(lower_hex(trace_id, 32) && lower_hex(parent_id, 16) && lower_hex(flags, 2)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
        let parent_id = u64::from_str_radix(parent_id, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && parent_id != 0).then_some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The request id this trace gives: its trace id in hex.
    pub fn request_id(&self) -> RequestId {
        RequestId(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

/// A request's id as every log line shows it: 32 lowercase hex digits, the
/// W3C trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u128);

impl RequestId {
    /// Reads an id in the form [`fmt::Display`] writes (`x-request-id`).
    pub fn parse(value: &str) -> Option<RequestId> {
        let value = value.trim();
        let lower_hex = value.len() == 32
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let id = u128::from_str_radix(value, 16).ok().filter(|_| lower_hex)?;
        (id != 0).then_some(RequestId(id))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Request ids as one log field: `id,id,…`, so a search for one id finds a
/// line about a batch that carried it.
pub fn request_ids(ids: impl IntoIterator<Item = u128>) -> String {
    let mut out = String::new();
    for id in ids {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&RequestId(id).to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_reads_and_writes_back_the_same() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.parent_id, 0x00f067aa0ba902b7);
        assert!(parent.sampled);
        assert_eq!(parent.to_string(), EXAMPLE);
        assert_eq!(
            parent.request_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn what_w3c_says_to_ignore_is_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let parent = TraceParent::parse(later).unwrap();
        assert!(!parent.sampled);
        assert!(parent.to_string().starts_with("00-"));
    }

    #[test]
    fn a_child_keeps_the_trace_with_a_new_span() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.parent_id, 0);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn request_ids_read_back_and_refuse_other_forms() {
        let id = RequestId(0x0f);
        assert_eq!(id.to_string(), "0000000000000000000000000000000f");
        assert_eq!(RequestId::parse(&id.to_string()), Some(id));
        for bad in [
            "abc",
            "00000000000000000000000000000000",
            "+000000000000000000000000000000f",
        ] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            request_ids([1, 2]),
            "00000000000000000000000000000001,00000000000000000000000000000002"
        );
    }
}
