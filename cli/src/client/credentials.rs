//! Where the bearer token comes from: `--token`/`KORTIX_TOKEN`, then the token `kortix login`
//! saved for the URL, then `<data-dir>/admin.token` when the URL points at this machine.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::CliError;

/// Largest credentials or token file we read; anything bigger is not ours.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Saved logins, keyed by normalized control plane URL.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    #[serde(default)]
    pub servers: BTreeMap<String, SavedLogin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedLogin {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Where the token that will be sent came from (shown by `login` and in messages).
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    Flag,
    SavedLogin(PathBuf),
    AdminFile(PathBuf),
}

/// `$XDG_CONFIG_HOME/kortix/credentials.toml`, else `~/.config/kortix/credentials.toml`.
pub fn credentials_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home_dir()?.join(".config"),
    };
    Some(base.join("kortix").join("credentials.toml"))
}

/// `--data-dir`/`KORTIX_DATA_DIR` when given, else `~/.kortix`.
pub fn data_dir(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(dir) => Some(dir.to_path_buf()),
        None => Some(home_dir()?.join(".kortix")),
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The key a login is saved under: scheme and host lower-cased, no trailing slash.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase(),
                path
            )
        }
        None => url.to_owned(),
    }
}

/// True when the URL's host is this machine, so the local server's admin token applies.
pub fn is_loopback_url(url: &str) -> bool {
    let Some((_, rest)) = url.trim().split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Picks the token for `url`. `Ok(None)` means none is known: calls go out unauthenticated
/// and the server's UNAUTHENTICATED answer tells the user what to do.
pub fn resolve_token(
    flag: Option<&str>,
    url: &str,
    data_dir_flag: Option<&Path>,
) -> Result<Option<(String, TokenSource)>, CliError> {
    if let Some(token) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some((token.to_owned(), TokenSource::Flag)));
    }
    if let Some(path) = credentials_path() {
        let creds = load(&path)?;
        if let Some(login) = creds.servers.get(&normalize_url(url)) {
            return Ok(Some((login.token.clone(), TokenSource::SavedLogin(path))));
        }
    }
    if is_loopback_url(url)
        && let Some(dir) = data_dir(data_dir_flag)
    {
        let path = dir.join("admin.token");
        if let Some(token) = read_token_file(&path)? {
            return Ok(Some((token, TokenSource::AdminFile(path))));
        }
    }
    Ok(None)
}

/// A token file's contents, trimmed; `None` when it does not exist.
fn read_token_file(path: &Path) -> Result<Option<String>, CliError> {
    match read_bounded(path)? {
        None => Ok(None),
        Some(text) => {
            let token = text.trim();
            Ok((!token.is_empty()).then(|| token.to_owned()))
        }
    }
}

/// The saved logins; an absent file is an empty set.
pub fn load(path: &Path) -> Result<Credentials, CliError> {
    let Some(text) = read_bounded(path)? else {
        return Ok(Credentials::default());
    };
    toml::from_str(&text).map_err(|e: toml::de::Error| CliError::File {
        path: path.to_path_buf(),
        action: "parse",
        detail: kortix_manifest::toml_syntax(&text, e.message(), e.span()),
    })
}

/// Writes the logins atomically (temp file + rename) with mode 0600 in a 0700 directory.
pub fn save(path: &Path, creds: &Credentials) -> Result<(), CliError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::file(dir, "create", &e))?;
    }
    let text = toml::to_string(creds).map_err(|e| CliError::file(path, "encode", &e))?;
    let tmp = path.with_extension(format!("toml.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above only applies to new files; a stale temp file keeps its own.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CliError::file(path, "write", &e)
    })
}

fn read_bounded(path: &Path) -> Result<Option<String>, CliError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::file(path, "read", &e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(CliError::File {
            path: path.to_path_buf(),
            action: "read",
            detail: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    fs::read_to_string(path)
        .map(Some)
        .map_err(|e| CliError::file(path, "read", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_trailing_slash() {
        assert_eq!(
            normalize_url("HTTP://Example.COM:8008/"),
            "http://example.com:8008"
        );
        assert_eq!(normalize_url("https://h/base/"), "https://h/base");
    }

    #[test]
    fn recognizes_loopback_hosts() {
        for url in [
            "http://127.0.0.1:8008",
            "http://127.1.2.3",
            "http://localhost:1",
            "http://[::1]:8008/",
            "https://LOCALHOST",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:8008",
            "https://kortix.example.com",
            "http://[2001:db8::1]:80",
            "localhost",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kortix").join("credentials.toml");
        let mut creds = Credentials::default();
        creds.servers.insert(
            "http://127.0.0.1:8008".into(),
            SavedLogin {
                token: "kx_abc".into(),
                account: Some("alice".into()),
            },
        );
        save(&path, &creds).expect("save");
        assert_eq!(load(&path).expect("load"), creds);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("parent"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn missing_file_is_empty_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials.toml");
        assert_eq!(load(&path).expect("load"), Credentials::default());
        fs::write(&path, "servers = 3").expect("write");
        let err = load(&path).expect_err("garbage");
        assert!(err.to_string().starts_with("cannot parse "), "{err}");
        fs::write(&path, "[servers.\"x\"]\ntoken = \n").expect("write");
        let err = load(&path).expect_err("not TOML").to_string();
        assert!(err.contains(": line 2, column 9: "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn admin_token_file_is_trimmed_and_empty_means_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.token");
        assert_eq!(read_token_file(&path).expect("absent"), None);
        fs::write(&path, "kx_admin\n").expect("write");
        assert_eq!(
            read_token_file(&path).expect("read"),
            Some("kx_admin".into())
        );
        fs::write(&path, "  \n").expect("write");
        assert_eq!(read_token_file(&path).expect("read"), None);
    }

    #[test]
    fn flag_wins_over_everything() {
        let (token, source) = resolve_token(Some(" kx_flag "), "http://127.0.0.1:1", None)
            .expect("resolve")
            .expect("some");
        assert_eq!(token, "kx_flag");
        assert_eq!(source, TokenSource::Flag);
    }
}
