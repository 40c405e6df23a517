//! Kafka topic and consumer-group names: one function, so every component
//! and the operator agree on them.
//!
//! `setlist.<namespace>.<cluster>.<model-version>.stage-<k>` carries stage
//! k's input (the output shards read `stage-<N>` for N stages), `.results`
//! the shards' top-k back to the dispatchers, `.interactions` listener
//! events, `.dead-letter` the frames no node could use.

use std::fmt;

/// Kafka's own limit on a topic name.
pub const MAX_TOPIC_BYTES: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error(
        "{field} \"{value}\" may only hold letters, digits, '_' and '-' (Kafka topic names allow '.', but Setlist uses it as the separator)"
    )]
    BadCharacters { field: &'static str, value: String },
    #[error("{field} is empty; give it a value")]
    Empty { field: &'static str },
    #[error(
        "topic names for this cluster would be {found} bytes, over Kafka's limit of {MAX_TOPIC_BYTES}; shorten the namespace, cluster name or model version"
    )]
    TooLong { found: usize },
}

/// Which consumer of a stage topic a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    Stage(u32),
    OutputShard(u32),
}

impl fmt::Display for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consumer::Stage(k) => write!(f, "stage-{k}"),
            Consumer::OutputShard(s) => write!(f, "shard-{s}"),
        }
    }
}

fn check(field: &'static str, value: &str) -> Result<(), TopicError> {
    if value.is_empty() {
        return Err(TopicError::Empty { field });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TopicError::BadCharacters {
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

impl Topics {
    pub fn new(namespace: &str, cluster: &str, model_version: &str) -> Result<Topics, TopicError> {
        check("namespace", namespace)?;
        check("cluster", cluster)?;
        check("model version", model_version)?;
        let prefix = format!("setlist.{namespace}.{cluster}.{model_version}");
        // The longest name is `.dead-letter` or a stage topic with a large index.
        let longest = prefix.len()
            + ".stage-65535"
                .len()
                .max(".dead-letter".len())
                .max(".interactions".len());
        if longest > MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong { found: longest });
        }
        Ok(Topics { prefix })
    }

    /// Input of stage `k`; with N stages, `stage(N)` feeds the output shards.
    pub fn stage(&self, k: u32) -> String {
        format!("{}.stage-{k}", self.prefix)
    }

    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    pub fn interactions(&self) -> String {
        format!("{}.interactions", self.prefix)
    }

    pub fn dead_letter(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// The consumer group of a stage's or a shard's replicas: replicas of one
    /// part share its partitions; every shard reads all of the last topic.
    pub fn group(&self, consumer: Consumer) -> String {
        format!("{}.{consumer}", self.prefix)
    }

    /// The topic a consumer reads, given the number of stages.
    pub fn input_of(&self, consumer: Consumer, stages: u32) -> String {
        match consumer {
            Consumer::Stage(k) => self.stage(k),
            Consumer::OutputShard(_) => self.stage(stages),
        }
    }

    /// Every topic a pipeline of `stages` stages uses.
    pub fn all(&self, stages: u32) -> Vec<String> {
        let mut all: Vec<String> = (0..=stages).map(|k| self.stage(k)).collect();
        all.extend([self.results(), self.interactions(), self.dead_letter()]);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let t = Topics::new("prod", "radio", "m3f2a9c1b4d5e").unwrap();
        assert_eq!(t.stage(0), "setlist.prod.radio.m3f2a9c1b4d5e.stage-0");
        assert_eq!(t.results(), "setlist.prod.radio.m3f2a9c1b4d5e.results");
        assert_eq!(
            t.dead_letter(),
            "setlist.prod.radio.m3f2a9c1b4d5e.dead-letter"
        );
        assert_eq!(
            t.group(Consumer::OutputShard(1)),
            "setlist.prod.radio.m3f2a9c1b4d5e.shard-1"
        );
        assert_eq!(t.input_of(Consumer::OutputShard(1), 3), t.stage(3));
        assert_eq!(t.all(2).len(), 6);
    }

    #[test]
    fn bad_names_are_refused_with_the_field() {
        assert_eq!(
            Topics::new("prod.eu", "radio", "m1")
                .unwrap_err()
                .to_string(),
            "namespace \"prod.eu\" may only hold letters, digits, '_' and '-' (Kafka topic names allow '.', but Setlist uses it as the separator)"
        );
        assert_eq!(
            Topics::new("p", "", "m1").unwrap_err(),
            TopicError::Empty { field: "cluster" }
        );
        assert!(matches!(
            Topics::new("p", &"c".repeat(240), "m1").unwrap_err(),
            TopicError::TooLong { .. }
        ));
    }
}
