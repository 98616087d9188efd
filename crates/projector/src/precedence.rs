//! The precedence of topics that share a payload timestamp: a directed acyclic graph declared
//! in one place, turned into ranks by a topological sort. An edge `a -> b` means "at the same
//! instant, `a` happened before `b`". A cycle is a start-up error.

use std::collections::HashMap;

use petgraph::algo::toposort;
use petgraph::graphmap::DiGraphMap;

/// "At the same instant, the first happened before the second."
pub const DEFAULT_PRECEDENCE: &[(&str, &str)] = &[
    ("call.received", "call.answered"),
    ("call.triggered", "call.answered"),
    ("call.answered", "call.completed"),
    ("call.completed", "summary.updated"),
    ("call.received", "tag.added"),
    ("call.triggered", "tag.added"),
    ("call.received", "tag.removed"),
    ("call.triggered", "tag.removed"),
];

/// The declared precedence has a cycle, so no order satisfies it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the topic precedence graph has a cycle through {topic}")]
pub struct PrecedenceCycle {
    /// A topic on the cycle.
    pub topic: String,
}

/// Ranks of topics for breaking timestamp ties; lower goes first.
#[derive(Clone, Debug)]
pub struct Precedence {
    ranks: HashMap<String, u32>,
}

impl Precedence {
    /// Builds ranks from `edges`, each `(before, after)`.
    pub fn from_edges(edges: &[(&str, &str)]) -> Result<Self, PrecedenceCycle> {
        let graph: DiGraphMap<&str, ()> = edges.iter().copied().collect();
        let order = toposort(&graph, None).map_err(|cycle| PrecedenceCycle {
            topic: cycle.node_id().to_owned(),
        })?;
        let ranks = order
            .into_iter()
            .zip(0..)
            .map(|(topic, rank)| (topic.to_owned(), rank))
            .collect();
        Ok(Self { ranks })
    }

    /// The rank of `topic`. Topics the graph does not name rank after every named one (ties
    /// among them are broken by webhook-id).
    pub fn rank(&self, topic: &str) -> u32 {
        self.ranks
            .get(topic)
            .copied()
            .unwrap_or(u32::try_from(self.ranks.len()).unwrap_or(u32::MAX))
    }

    /// The ranks as JSON, `[[rank, topic], ...]` in rank order (ties by topic): the whole of
    /// what the fold takes from the graph, so two graphs with the same text order events alike.
    pub fn canonical_text(&self) -> String {
        serde_json::to_string(&self.ranked()).expect("strings and numbers serialize")
    }

    /// The topics the graph names with their ranks, in rank order (ties by topic).
    pub fn ranked(&self) -> Vec<(u32, &str)> {
        let mut ranked: Vec<(u32, &str)> = self
            .ranks
            .iter()
            .map(|(topic, rank)| (*rank, topic.as_str()))
            .collect();
        ranked.sort_unstable();
        ranked
    }
}

impl Default for Precedence {
    /// The declared default order of call topics.
    fn default() -> Self {
        Self::from_edges(DEFAULT_PRECEDENCE).expect("the default precedence graph is acyclic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_edge_orders_its_topics() {
        let precedence = Precedence::default();
        for (before, after) in DEFAULT_PRECEDENCE {
            assert!(
                precedence.rank(before) < precedence.rank(after),
                "{before} -> {after}"
            );
        }
    }

    #[test]
    fn unknown_topics_rank_after_known_ones() {
        let precedence = Precedence::default();
        assert!(precedence.rank("voicemail.new") > precedence.rank("summary.updated"));
    }

    #[test]
    fn a_cycle_is_refused() {
        let error =
            Precedence::from_edges(&[("a", "b"), ("b", "c"), ("c", "a")]).expect_err("cycle");
        assert!(["a", "b", "c"].contains(&error.topic.as_str()), "{error}");
    }
}
