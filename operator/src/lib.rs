//! `setlist-operator`: reconciles `RecommenderCluster` resources into a
//! running Setlist. The only crate that knows Kubernetes: it reads the
//! slices' manifest (through `setlist-core`), computes every object a
//! cluster needs with a pure function, applies them, and reports status.

pub mod bench;
pub mod crd;
pub mod desired;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod replace;
pub mod status;
pub mod topics;

/// The CRD as YAML, as `setlist-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&crd::RecommenderCluster::crd()).expect("the CRD serialises")
}

#[cfg(test)]
mod tests {
    /// `crds/` holds what the types generate; a change to the types that
    /// is not regenerated there fails here.
    #[test]
    fn the_crd_in_crds_matches_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/recommenderclusters.setlist.dev.yaml"
        );
        let committed = std::fs::read_to_string(path).expect("crds/ holds the CRD");
        assert!(
            committed == super::crd_yaml(),
            "crds/recommenderclusters.setlist.dev.yaml is not what the types generate: run \
             `target/release/setlist-operator crd > crds/recommenderclusters.setlist.dev.yaml`"
        );
    }
}
