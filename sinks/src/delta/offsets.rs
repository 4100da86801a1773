//! Naming of the per-partition progress that lives in each table's Delta log.

use std::fmt;

/// A Kafka topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: i32,
}

impl PartitionKey {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The Delta `txn` app id under which a pipeline records its progress on one partition.
pub fn app_id(pipeline: &str, p: &PartitionKey) -> String {
    format!("{pipeline}/{}/{}", p.topic, p.partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_names_pipeline_topic_partition() {
        assert_eq!(
            app_id("paystream", &PartitionKey::new("payments", 3)),
            "paystream/payments/3"
        );
    }
}
