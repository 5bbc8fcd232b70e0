//! The content of one side of a changed file, as the diff machinery sees it.

use gix::objs::tree::EntryKind;

use super::{
    diff::Side,
    error::{ChangesError, GitContext},
};

/// git looks for a NUL byte in this many leading bytes to decide a file is binary.
const FIRST_FEW_BYTES: usize = 8000;

/// Larger blobs are not line-diffed but reported as binary, as git does above
/// `core.bigFileThreshold`; this bounds the memory a single diff can take.
pub(crate) const MAX_TEXT_DIFF_BYTES: u64 = 50 * 1024 * 1024;

/// One side's bytes; `data` is empty when the side is absent or too large to diff.
pub(crate) struct Content {
    pub data: Vec<u8>,
    pub binary: bool,
}

pub(crate) fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(FIRST_FEW_BYTES)].contains(&0)
}

/// Loads a side for diffing. Submodules diff as the line git shows for them.
pub(crate) fn load(repo: &gix::Repository, side: Option<&Side>) -> Result<Content, ChangesError> {
    let Some(side) = side else {
        return Ok(Content {
            data: Vec::new(),
            binary: false,
        });
    };
    if side.mode.kind() == EntryKind::Commit {
        return Ok(Content {
            data: format!("Subproject commit {}\n", side.id).into_bytes(),
            binary: false,
        });
    }
    let action = || format!("reading blob {} at {}", side.id, side.path);
    let header = repo.find_header(side.id).ctx(repo, action)?;
    if header.size() > MAX_TEXT_DIFF_BYTES {
        return Ok(Content {
            data: Vec::new(),
            binary: true,
        });
    }
    let blob = repo.find_blob(side.id).ctx(repo, action)?;
    let data = blob.detach().data;
    let binary = is_binary(&data);
    Ok(Content { data, binary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_means_nul_in_the_first_8000_bytes() {
        assert!(!is_binary(b""));
        assert!(!is_binary(b"plain text\n"));
        assert!(is_binary(b"PNG\0\x01"));
        let mut late = vec![b'a'; FIRST_FEW_BYTES];
        late.push(0);
        assert!(
            !is_binary(&late),
            "a NUL after the first 8000 bytes is not looked at"
        );
        late[FIRST_FEW_BYTES - 1] = 0;
        assert!(is_binary(&late));
    }
}
