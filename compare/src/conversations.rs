//! The figures of a conversation run (`loadgen --conn-msgs`) that compare
//! uses, read from the `conversations` object of loadgen's result file.
//!
//! loadgen owns these numbers (`loadgen::conversation::Conversations`, on
//! branch h-conv until it reaches main); this is a read-only view of the
//! fields compare needs, with loadgen's names, so that compare builds
//! against a main without it. Once it is in main, [`read`] becomes
//! `loadgen::result::read(path)?.conversations` and this view goes.

use std::path::Path;

use serde::Deserialize;

/// Percentiles of a conversation histogram, µs (loadgen's `Latency`, in part).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
pub struct ConvLatency {
    pub p50: f64,
    pub p99: f64,
}

/// What compare reads of loadgen's `conversations` object.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ConvFigures {
    /// Echoes per conversation (`--conn-msgs`).
    pub msgs_per_conn: u64,
    /// Conversations completed in the measured phase.
    pub completed: u64,
    /// Completed conversations per second of the measured phase.
    pub per_s: f64,
    /// Open loop: the requested rate of new conversations.
    #[serde(default)]
    pub requested_per_s: Option<f64>,
    /// From `connect` to established.
    pub connect_us: ConvLatency,
    /// From the conversation's (intended) start to its last echo checked.
    pub conversation_us: ConvLatency,
    /// Failed conversations, by kind (summed here).
    #[serde(default, deserialize_with = "failed_total")]
    pub failed: u64,
    /// loadgen's CPU per completed conversation, µs.
    #[serde(default)]
    pub loadgen_cpu_us_per_conn: Option<f64>,
}

/// The sum of loadgen's `failed` object's counts.
fn failed_total<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let kinds = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
    Ok(kinds.values().sum())
}

#[derive(Deserialize)]
struct WithConversations {
    #[serde(default)]
    conversations: Option<ConvFigures>,
}

/// The `conversations` object of the result file at `path`; `None` when
/// the file does not read or the run had none.
pub fn read(path: &Path) -> Option<ConvFigures> {
    let text = std::fs::read_to_string(path).ok()?;
    parse(&text)
}

/// [`read`] of a file's text.
pub fn parse(text: &str) -> Option<ConvFigures> {
    serde_json::from_str::<WithConversations>(text).ok()?.conversations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loadgen_s_conversations_object() {
        let text = r#"{"messages": 5, "conversations": {"msgs_per_conn": 10, "completed": 1200,
            "per_s": 800.5, "connect_us": {"min": 1, "mean": 2, "p50": 20.0, "p99": 90.0, "max": 99},
            "connect_histogram": "x", "conversation_us": {"p50": 150.0, "p99": 700.0},
            "conversation_histogram": "y", "failed": {"refused": 1, "reset": 2, "not_accepted": 0,
            "unanswered": 0, "out_of_ports": 0, "not_started": 3, "other": 0},
            "loadgen_cpu_us_per_conn": 41.5, "closes_first": "loadgen"}}"#;
        let c = parse(text).unwrap();
        assert_eq!((c.msgs_per_conn, c.completed, c.failed), (10, 1200, 6));
        assert_eq!((c.connect_us.p50, c.conversation_us.p99), (20.0, 700.0));
        assert_eq!(c.loadgen_cpu_us_per_conn, Some(41.5));
        assert_eq!(parse(r#"{"messages": 5}"#), None);
    }
}
