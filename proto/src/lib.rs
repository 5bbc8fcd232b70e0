//! The Kortix wire protocol (`kortix.v1`). Generated code only; no logic.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("kortix.v1");

    /// Encoded `FileDescriptorSet` for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kortix_v1_descriptor");
}

/// Protocol version spoken by this build. Peers exchange it in `Enroll` and `Connect`;
/// a control plane accepts any agent whose major version it knows and ignores unknown fields.
pub const PROTOCOL_VERSION: u32 = 1;
