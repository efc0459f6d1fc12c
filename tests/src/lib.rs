//! Helpers for the integration tests live next to them.
