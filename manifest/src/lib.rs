//! `kortix.toml`: parse, validate, normalize, write back, and hash.
