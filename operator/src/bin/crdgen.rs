//! Prints the `ChatCluster` CRD as YAML: `cargo run -p operator --bin crdgen > crds/chatcluster.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", operator::crd::crd_yaml()?);
    Ok(())
}
