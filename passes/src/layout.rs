//! The packing layouts a plan can use, as a type (plans and reports name them in lowercase).

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a compiled circuit packs a batch of images into ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackingLayout {
    /// Slot `i` of every ciphertext holds image `i`; one ciphertext per tensor element.
    Batch,
    /// One ciphertext per channel, images side by side in the slots.
    Channel,
}

impl PackingLayout {
    /// Every layout, in the order `auto` compares them.
    pub const ALL: [PackingLayout; 2] = [PackingLayout::Batch, PackingLayout::Channel];

    /// Lowercase name (`batch`, `channel`), as written in plans and reports.
    pub fn name(self) -> &'static str {
        match self {
            PackingLayout::Batch => "batch",
            PackingLayout::Channel => "channel",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<PackingLayout> {
        PackingLayout::ALL.into_iter().find(|l| l.name() == s)
    }
}

impl fmt::Display for PackingLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialize_lowercase() {
        for l in PackingLayout::ALL {
            assert_eq!(PackingLayout::parse(l.name()), Some(l));
            let json = serde_json::to_string(&l).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", l.name()));
        }
        assert_eq!(PackingLayout::parse("Batch"), None);
        assert!(serde_json::from_str::<PackingLayout>("\"diagonal\"").is_err());
    }
}
