//! The cluster key file: the one secret a node reads from disk.
//!
//! `--cluster-key-file PATH` names one; without it a node uses
//! `$HOME/.avm/cluster-key` and, like Erlang's cookie, creates it on first
//! use, so nodes of one user on one machine share a key with no setup:
//!
//! ```text
//!  $HOME/.avm/               mode 0700, created if missing
//!  $HOME/.avm/cluster-key    mode 0600, 64 lowercase hex chars + "\n"
//! ```
//!
//! The key is the file's bytes up to its trailing whitespace: for a
//! created file, the 64 ASCII hex characters of 32 random bytes (they are
//! not decoded; any text of at least [`MIN_KEY_BYTES`] bytes works as a
//! key: a shorter one could be guessed, proof by proof). A key file that group
//! or others may read or write is refused, as ssh refuses a private key:
//! whoever can read it can join the cluster.
//!
//! Creation never exposes a half-written file: the key is written to a
//! private temporary file in the same directory, synced, then published
//! with a hard link, which fails if the name exists. When two nodes start
//! at once, the loser's link fails with `AlreadyExists` and it loads the
//! winner's complete file. (A plain `create_new` on the final name would
//! let the loser read it empty, between the winner's create and write.)

use std::env;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::protocol::auth;

pub use crate::protocol::auth::ClusterKey;

/// The largest key file accepted: a key is a line of text, and a path
/// named by mistake (a log, a device) should not be read whole.
pub const MAX_KEY_FILE: u64 = 4096;

/// The shortest key a key file may hold, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// How to make a key file, for error messages.
fn make_one(shown: &dyn std::fmt::Display) -> String {
    format!("make one with `(umask 077; head -c 32 /dev/urandom | base64 > {shown})`")
}

/// Random bytes in a created key (written as twice as many hex chars).
const CREATED_KEY_BYTES: usize = 32;

/// Reads a key file: refuses a file readable or writable by group or
/// others (`mode & 0o077 != 0`), saying how to fix it (`chmod 600 PATH`);
/// trims trailing whitespace (`\n`, `\r`, spaces); refuses a key under
/// [`MIN_KEY_BYTES`].
/// Every error names the path.
pub fn load(path: &Path) -> Result<ClusterKey, String> {
    let file = File::open(path).map_err(|e| {
        let shown = path.display().to_string();
        let hint = match e.kind() {
            ErrorKind::NotFound => format!("; {}", make_one(&shown)),
            _ => String::new(),
        };
        format!("cannot open cluster key file {shown}: {e}{hint}")
    })?;
    read_key(path, file)
}

/// `$HOME/.avm/cluster-key`. No `$HOME`: an error saying to pass
/// `--cluster-key-file`.
pub fn default_path() -> Result<PathBuf, String> {
    Ok(default_path_in(&home(env::var_os("HOME"))?))
}

/// `HOME/.avm/cluster-key`, for a given home directory.
pub fn default_path_in(home: &Path) -> PathBuf {
    home.join(".avm").join("cluster-key")
}

/// Loads [`default_path`], creating it (and its directory) on first use.
/// Returns the key, the path, and whether this call created the file.
pub fn load_or_create_default() -> Result<(ClusterKey, PathBuf, bool), String> {
    load_or_create_in(&home(env::var_os("HOME"))?)
}

/// [`load_or_create_default`] with `home` in place of `$HOME` (for tests,
/// and for embedders that keep nodes' files elsewhere).
pub fn load_or_create_in(home: &Path) -> Result<(ClusterKey, PathBuf, bool), String> {
    let path = default_path_in(home);
    let dir = home.join(".avm");
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create directory {} for the cluster key: {e} \
                 (or pass --cluster-key-file PATH)",
                dir.display()
            ))
        }
    }
    let (key, created) = create_or_load(&path)?;
    Ok((key, path, created))
}

/// Creates a key file at `path` holding a fresh random key (mode 0600), or,
/// if `path` already exists, loads it instead of overwriting it.
pub fn create(path: &Path) -> Result<ClusterKey, String> {
    create_or_load(path).map(|(key, _created)| key)
}

fn home(var: Option<OsString>) -> Result<PathBuf, String> {
    match var {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home)),
        _ => Err("$HOME is not set, so there is no default cluster key file \
                  ($HOME/.avm/cluster-key): pass --cluster-key-file PATH"
            .to_string()),
    }
}

/// The key at `path` and `false`, or a new key and `true` if this call
/// created the file.
fn create_or_load(path: &Path) -> Result<(ClusterKey, bool), String> {
    match File::open(path) {
        Ok(file) => return Ok((read_key(path, file)?, false)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot open cluster key file {}: {e}",
                path.display()
            ))
        }
    }
    let cannot = |e: &dyn std::fmt::Display| {
        format!("cannot create cluster key file {}: {e}", path.display())
    };
    let mut secret = [0; CREATED_KEY_BYTES];
    getrandom::getrandom(&mut secret).map_err(|e| cannot(&e))?;
    let text = auth::to_hex(&secret);
    let key = ClusterKey::from_bytes(text.as_bytes()).map_err(|e| cannot(&e))?;

    let tmp = temp_path(path).map_err(|e| cannot(&e))?;
    let published = write_private(&tmp, &text).and_then(|()| fs::hard_link(&tmp, path));
    // The temporary name is only a staging area: gone whether the link
    // worked, lost the race, or failed.
    let _ = fs::remove_file(&tmp);
    match published {
        Ok(()) => Ok((key, true)),
        // Another node created it first: use its key.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok((load(path)?, false)),
        Err(e) => Err(cannot(&e)),
    }
}

/// A fresh name beside `path` for staging a new key file.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut suffix = [0; 8];
    getrandom::getrandom(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        auth::to_hex(&suffix)
    ));
    Ok(path.with_file_name(tmp))
}

/// Writes `text` and a newline to a new file at `path`, mode 0600, synced.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Refuses a secret file (`noun` at `path`) that group or others may read
/// or write (`mode & 0o077 != 0`), as ssh refuses a private key, saying
/// what an exposed copy allows (`risk`) and the `chmod 600` that fixes it.
pub fn refuse_shared(
    meta: &fs::Metadata,
    noun: &str,
    path: &Path,
    risk: &str,
) -> Result<(), String> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let shown = path.display();
    Err(format!(
        "{noun} {shown} is readable or writable by group or others (mode {mode:04o}); \
         {risk}: run `chmod 600 {shown}`"
    ))
}

fn read_key(path: &Path, file: File) -> Result<ClusterKey, String> {
    let shown = path.display();
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read cluster key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cluster key file {shown} is not a regular file"));
    }
    refuse_shared(
        &meta,
        "cluster key file",
        path,
        "whoever reads it can join the cluster",
    )?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read cluster key file {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "cluster key file {shown} is longer than {MAX_KEY_FILE} bytes: is it the right file?"
        ));
    }
    let key = bytes.trim_ascii_end();
    if !key.is_empty() && key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "cluster key file {shown} holds a key of {} bytes, under the {MIN_KEY_BYTES} a key \
             needs not to be guessed: {}",
            key.len(),
            make_one(&shown)
        ));
    }
    ClusterKey::from_bytes(key)
        .map_err(|e| format!("cluster key file {shown}: {e}; {}", make_one(&shown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        /// Unique per test (`name`) and per test process (pid).
        fn new(name: &str) -> TempDir {
            let dir = env::temp_dir().join(format!("avm-key-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_then_load_gives_the_same_key() {
        let dir = TempDir::new("create-load");
        let path = dir.path("cluster-key");
        let created = create(&path).unwrap();
        let text = created.as_bytes();
        assert_eq!(text.len(), 2 * CREATED_KEY_BYTES);
        assert!(text.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(fs::read(&path).unwrap(), [text, b"\n"].concat());
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(load(&path).unwrap().as_bytes(), text);
        // Only the key file is left: the staging file is gone.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn created_keys_differ() {
        let dir = TempDir::new("differ");
        let a = create(&dir.path("a")).unwrap();
        let b = create(&dir.path("b")).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn load_refuses_a_file_others_can_read_or_write() {
        let dir = TempDir::new("mode");
        let path = dir.path("key");
        write_with_mode(&path, b"a secret of some length\n", 0o644);
        let err = load(&path).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("0644"), "{err}");
        for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o601] {
            write_with_mode(&path, b"a secret of some length\n", mode);
            assert!(load(&path).is_err(), "mode {mode:o} accepted");
        }
        for mode in [0o600, 0o400, 0o700] {
            write_with_mode(&path, b"a secret of some length\n", mode);
            assert_eq!(
                load(&path).unwrap().as_bytes(),
                b"a secret of some length",
                "mode {mode:o}"
            );
        }
    }

    #[test]
    fn load_refuses_an_empty_key() {
        let dir = TempDir::new("empty");
        let path = dir.path("key");
        for contents in [&b""[..], b"\n", b" \r\n  \n"] {
            write_with_mode(&path, contents, 0o600);
            let err = load(&path).unwrap_err();
            assert!(err.contains("empty"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("make one with"), "{err}");
        }
    }

    #[test]
    fn load_trims_trailing_whitespace_only() {
        let dir = TempDir::new("trim");
        let path = dir.path("key");
        write_with_mode(&path, b"abc def ghi jkl mno\r\n  \n", 0o600);
        assert_eq!(load(&path).unwrap().as_bytes(), b"abc def ghi jkl mno");
        write_with_mode(&path, b"  abc def ghi jkl", 0o600);
        assert_eq!(load(&path).unwrap().as_bytes(), b"  abc def ghi jkl");
    }

    /// `echo abc > key` is no key: under 16 bytes it is refused, saying
    /// how to make one.
    #[test]
    fn load_refuses_a_short_key() {
        let dir = TempDir::new("short");
        let path = dir.path("key");
        write_with_mode(&path, b"abc\n", 0o600);
        let err = load(&path).unwrap_err();
        assert!(
            err.contains("3 bytes") && err.contains("head -c 32"),
            "{err}"
        );
        write_with_mode(&path, &[b'k'; MIN_KEY_BYTES], 0o600);
        assert!(load(&path).is_ok());
    }

    #[test]
    fn load_refuses_an_oversized_file() {
        let dir = TempDir::new("oversized");
        let path = dir.path("key");
        write_with_mode(&path, &[b'k'; MAX_KEY_FILE as usize + 1], 0o600);
        let err = load(&path).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        write_with_mode(&path, &[b'k'; MAX_KEY_FILE as usize], 0o600);
        assert!(load(&path).is_ok());
    }

    #[test]
    fn create_on_an_existing_file_loads_it() {
        let dir = TempDir::new("existing");
        let path = dir.path("key");
        write_with_mode(&path, b"an existing key file\n", 0o600);
        assert_eq!(create(&path).unwrap().as_bytes(), b"an existing key file");
        assert_eq!(fs::read(&path).unwrap(), b"an existing key file\n");
        // And an existing file is still checked.
        write_with_mode(&path, b"an existing key file\n", 0o644);
        assert!(create(&path).unwrap_err().contains("chmod 600"));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = TempDir::new("missing");
        let path = dir.path("no-such-key");
        let err = load(&path).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("head -c 32 /dev/urandom"), "{err}");
    }

    #[test]
    fn default_path_is_under_dot_avm() {
        assert_eq!(
            default_path_in(Path::new("/home/u")),
            Path::new("/home/u/.avm/cluster-key")
        );
    }

    #[test]
    fn no_home_says_to_pass_a_key_file() {
        for var in [None, Some(OsString::new())] {
            let err = home(var).unwrap_err();
            assert!(err.contains("--cluster-key-file"), "{err}");
        }
        assert_eq!(home(Some("/h".into())).unwrap(), Path::new("/h"));
    }

    #[test]
    fn first_use_creates_the_directory_and_the_file() {
        let home = TempDir::new("first-use");
        let (key, path, created) = load_or_create_in(&home.0).unwrap();
        assert!(created);
        assert_eq!(path, home.0.join(".avm/cluster-key"));
        assert_eq!(mode_of(&home.0.join(".avm")), 0o700);
        assert_eq!(mode_of(&path), 0o600);
        let (again, path2, created2) = load_or_create_in(&home.0).unwrap();
        assert!(!created2);
        assert_eq!(path2, path);
        assert_eq!(again.as_bytes(), key.as_bytes());
    }

    #[test]
    fn existing_directory_is_kept() {
        let home = TempDir::new("existing-dir");
        fs::create_dir(home.0.join(".avm")).unwrap();
        fs::set_permissions(home.0.join(".avm"), fs::Permissions::from_mode(0o750)).unwrap();
        let (_, _, created) = load_or_create_in(&home.0).unwrap();
        assert!(created);
        assert_eq!(mode_of(&home.0.join(".avm")), 0o750);
    }

    #[test]
    fn racing_first_uses_agree_on_one_key() {
        const NODES: usize = 4;
        let home = TempDir::new("race");
        let start = Arc::new(Barrier::new(NODES));
        let runs: Vec<_> = (0..NODES)
            .map(|_| {
                let (home, start) = (home.0.clone(), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    load_or_create_in(&home).unwrap()
                })
            })
            .collect();
        let results: Vec<_> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, _, created)| *created).count(), 1);
        let first = results[0].0.as_bytes();
        assert!(results.iter().all(|(k, _, _)| k.as_bytes() == first));
        // No staging file left behind.
        assert_eq!(fs::read_dir(home.0.join(".avm")).unwrap().count(), 1);
    }
}
