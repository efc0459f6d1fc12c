//! Deterministic synthetic mail corpora (placeholder: being written).
