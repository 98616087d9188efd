//! The fingerprint of the linking rules and the precedence graph in effect, which every
//! projection records, and the comparison of it with the store's projections that services
//! (at start and on `/readyz`) and `callfold config check` report.

use callfold_ingest::LinkingRules;
use callfold_projector::Precedence;
use callfold_store::{ConfigFingerprint, ProjectionsBuiltWith, Store, StoreError};
use sha2::{Digest, Sha256};

/// The fingerprint of a configuration's linking rules and precedence graph: SHA-256, as hex,
/// over their canonical texts, so it changes exactly when linking or the fold's order would.
pub fn fingerprint(linking_rules: &LinkingRules, precedence: &Precedence) -> ConfigFingerprint {
    let canonical = format!(
        "linking_rules {}\nprecedence {}\n",
        linking_rules.canonical_text(),
        precedence.canonical_text()
    );
    let digest = Sha256::digest(canonical.as_bytes());
    ConfigFingerprint::new(
        digest
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>(),
    )
}

/// What an operator is told when some projections were folded with another configuration.
pub const REBUILD_ADVICE: &str = "projections in the store were folded with other linking rules \
     or another precedence graph than this process's; run `callfold rebuild` to refold them all \
     with this configuration";

/// The configuration another projection was folded with, when one was: its fingerprint, or
/// `unrecorded` for projections folded before configurations were recorded.
pub async fn other_configuration(
    store: &Store,
    this: &ConfigFingerprint,
) -> Result<Option<String>, StoreError> {
    Ok(match store.projections_built_with(this).await? {
        ProjectionsBuiltWith::That => None,
        ProjectionsBuiltWith::Another(Some(other)) => Some(other.to_string()),
        ProjectionsBuiltWith::Another(None) => Some("unrecorded".to_owned()),
    })
}
