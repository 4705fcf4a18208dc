//! skiffd (the full binary is enabled once the storage engine lands).
fn main() {}
