//! A durable node's objects on disk: one [redb](https://docs.rs/redb)
//! file, `DIR/avm.redb`.
//!
//! ```text
//!   table meta     "format"       -> u32 BE   (STORE_FORMAT)
//!                  "identity"     -> {"machine":"beta","prefix":9002}
//!                  "next_counter" -> u64 BE   (no id at or past it was minted)
//!   table objects  ObjectId u64   -> record   (see `record`)
//! ```
//!
//! Invariants:
//! - A file holds one node's objects: `identity` is written when the file
//!   is created and never changes. Opening it under another name, or with
//!   an explicit prefix other than the stored one, is refused.
//! - Each [`Store::commit`] is one redb write transaction with immediate
//!   durability: when it returns `Ok`, every batch in it is on disk (redb
//!   fsyncs before it returns), and a crash leaves all of them or none.
//! - `next_counter` only grows: a restarted node mints past every id the
//!   file has seen.
//!
//! Choosing redb over fjall and a log of our own is measured in
//! BENCHMARKS.md ("Durable objects").

pub mod record;

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::vm::{ObjectId, ObjectRecord};

/// The schema this build writes; a file with a larger one is refused.
pub const STORE_FORMAT: u32 = 1;

/// The file inside the data directory.
pub const FILE_NAME: &str = "avm.redb";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");

/// Who a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub machine: String,
    pub prefix: u16,
}

/// Why the store could not be opened, read or written. Each names the
/// file; none is ever a panic.
#[derive(Debug)]
pub enum StoreError {
    /// Another process has the file open.
    InUse { file: PathBuf },
    /// The file belongs to another node.
    OtherIdentity {
        file: PathBuf,
        stored: Identity,
        asked: Identity,
    },
    /// In a format this build cannot read: a newer avm's, or a redb file
    /// format this redb does not open.
    Format { file: PathBuf, detail: String },
    /// Damaged: checksums, structure or a record do not hold.
    Corrupt { file: PathBuf, detail: String },
    /// Intact, but holding an object this node cannot take back (its
    /// behavior is not registered here, say).
    Unrestorable { file: PathBuf, detail: String },
    /// The disk or the file system refused (full, read-only, permissions).
    Io {
        file: PathBuf,
        doing: &'static str,
        detail: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InUse { file } => write!(
                f,
                "store {} is in use by another avm node (one node per data dir)",
                file.display()
            ),
            StoreError::OtherIdentity {
                file,
                stored,
                asked,
            } => {
                write!(
                    f,
                    "store {} belongs to node {} (prefix {}), not {} (prefix {}): ",
                    file.display(),
                    stored.machine,
                    stored.prefix,
                    asked.machine,
                    asked.prefix,
                )?;
                if stored.machine == asked.machine {
                    write!(f, "start with --node-prefix {}", stored.prefix)?;
                } else if stored.prefix == asked.prefix {
                    write!(f, "start with --name {}", stored.machine)?;
                } else {
                    write!(
                        f,
                        "start with --name {} --node-prefix {}",
                        stored.machine, stored.prefix
                    )?;
                }
                f.write_str(", or use another --data-dir")
            }
            StoreError::Format { file, detail } => write!(
                f,
                "store {} is in a format this build cannot read ({detail}); run the avm \
                 that wrote it, or restore a backup",
                file.display()
            ),
            StoreError::Corrupt { file, detail } => write!(
                f,
                "store {} is corrupt ({detail}); restore it from a backup, or delete it \
                 to start empty (its objects are then lost)",
                file.display()
            ),
            StoreError::Unrestorable { file, detail } => write!(
                f,
                "store {} is intact, but this node cannot restore it: {detail}",
                file.display()
            ),
            StoreError::Io {
                file,
                doing,
                detail,
            } => write!(f, "store {}: cannot {doing}: {detail}", file.display()),
        }
    }
}

impl std::error::Error for StoreError {}

/// The changes of one batch of interpreter work, encoded: what a group
/// commit writes. Records share one buffer, so a batch is two allocations
/// however many objects it holds.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// (object, its record's end in `bytes`); starts follow the previous end.
    puts: Vec<(u64, usize)>,
    deletes: Vec<u64>,
    next_counter: u64,
}

impl Batch {
    /// Adds `id`'s current record, or its deletion when `record` is `None`.
    pub fn add(&mut self, id: ObjectId, record: Option<ObjectRecord<'_>>) -> Result<(), String> {
        match record {
            Some(record) => {
                let start = self.bytes.len();
                if let Err(e) = record::encode(&record, &mut self.bytes) {
                    self.bytes.truncate(start);
                    return Err(format!("object {id}: {e}"));
                }
                self.puts.push((id.0, self.bytes.len()));
            }
            None => self.deletes.push(id.0),
        }
        Ok(())
    }

    /// Records that ids up to `next` (exclusive) have been minted.
    pub fn set_next_counter(&mut self, next: u64) {
        self.next_counter = self.next_counter.max(next);
    }

    /// Objects written or deleted.
    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// Hands `f` the raw id of every object written or deleted.
    pub fn ids(&self, mut f: impl FnMut(u64)) {
        self.puts.iter().for_each(|&(id, _)| f(id));
        self.deletes.iter().for_each(|&id| f(id));
    }

    /// Heap bytes the batch's buffers hold, empty or not.
    pub fn capacity_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.puts.capacity() * std::mem::size_of::<(u64, usize)>()
            + self.deletes.capacity() * std::mem::size_of::<u64>()
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.puts.clear();
        self.deletes.clear();
        self.next_counter = 0;
    }

    fn records(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut start = 0;
        self.puts.iter().map(move |&(id, end)| {
            let bytes = &self.bytes[start..end];
            start = end;
            (id, bytes)
        })
    }
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    /// `None` only between a failed write and a successful reopen.
    db: Option<Database>,
    file: PathBuf,
    identity: Identity,
    next_counter: u64,
}

impl Store {
    /// Opens `dir`'s store, creating the directory and the file when
    /// absent. `machine` must match the stored identity; `prefix` too
    /// when it is given (`None` keeps the stored one, or takes
    /// `default_prefix` for a new file).
    pub fn open(
        dir: &Path,
        machine: &str,
        prefix: Option<u16>,
        default_prefix: u16,
    ) -> Result<Store, StoreError> {
        let file = dir.join(FILE_NAME);
        let io = |doing: &'static str| {
            let file = file.clone();
            move |e: std::io::Error| StoreError::Io {
                file,
                doing,
                detail: e.to_string(),
            }
        };
        if dir.exists() && !dir.is_dir() {
            // create_dir_all would say only "File exists".
            return Err(io("use the data directory")(std::io::Error::other(
                format!(
                    "{} is a file, not a directory: give --data-dir a directory",
                    dir.display()
                ),
            )));
        }
        // The directories this creates, deepest last: each is named by an
        // entry in its parent, which needs its own sync.
        let created: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .collect();
        std::fs::create_dir_all(dir).map_err(io("create the data directory"))?;
        for made in created.iter().rev() {
            let parent = match made.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io("sync the directory holding the data directory"))?;
        }
        let new_file = !file.exists();
        let db = guarded(&file, || {
            Database::create(&file).map_err(|e| classify(&file, "open", e.into()))
        })?;
        if new_file {
            // redb syncs the file, not the directory entry that names it:
            // without this, a power cut could lose the whole new store.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync the data directory"))?;
        }
        let asked = Identity {
            machine: machine.to_string(),
            prefix: prefix.unwrap_or(default_prefix),
        };
        let mut store = Store {
            db: Some(db),
            file,
            identity: asked.clone(),
            next_counter: 1,
        };
        let meta = guarded(&store.file.clone(), || store.read_meta())?;
        match meta {
            Some((stored, next_counter)) => {
                let same_prefix = prefix.is_none_or(|p| p == stored.prefix);
                if stored.machine != asked.machine || !same_prefix {
                    return Err(StoreError::OtherIdentity {
                        file: store.file,
                        stored,
                        asked,
                    });
                }
                store.identity = stored;
                store.next_counter = next_counter;
            }
            None => store.write_new_meta()?,
        }
        Ok(store)
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Io {
            file: self.file.clone(),
            doing: "use it",
            detail: "closed after a failed write, and not yet reopened".into(),
        })
    }

    /// Whose store this is (the stored identity once it exists).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The smallest counter no stored life has minted.
    pub fn next_counter(&self) -> u64 {
        self.next_counter
    }

    /// The store's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Hands every stored object to `restore`, in id order; stops at the
    /// first record that does not decode or that `restore` refuses, naming
    /// the object. Answers how many objects were loaded.
    pub fn load(
        &self,
        restore: impl FnMut(ObjectId, ObjectRecord<'_>) -> Result<(), String>,
    ) -> Result<usize, StoreError> {
        guarded(&self.file, || self.load_unguarded(restore))
    }

    fn load_unguarded(
        &self,
        mut restore: impl FnMut(ObjectId, ObjectRecord<'_>) -> Result<(), String>,
    ) -> Result<usize, StoreError> {
        let err = |e: redb::Error| classify(&self.file, "read objects", e);
        let read = self.db()?.begin_read().map_err(|e| err(e.into()))?;
        let table = match read.open_table(OBJECTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(err(e.into())),
        };
        let mut loaded = 0;
        for entry in table.iter().map_err(|e| err(e.into()))? {
            let (id, bytes) = entry.map_err(|e| err(e.into()))?;
            let id = ObjectId(id.value());
            let corrupt = |detail: String| StoreError::Corrupt {
                file: self.file.clone(),
                detail: format!("object {id}: {detail}"),
            };
            // A newer avm's record: not damage, and not to be deleted.
            if let Some(&format) = bytes
                .value()
                .first()
                .filter(|&&f| f > record::RECORD_FORMAT)
            {
                return Err(StoreError::Format {
                    file: self.file.clone(),
                    detail: format!(
                        "object {id}: record format {format}, newer than {}",
                        record::RECORD_FORMAT
                    ),
                });
            }
            let decoded = record::decode(bytes.value()).map_err(corrupt)?;
            restore(id, decoded.as_record()).map_err(|detail| StoreError::Unrestorable {
                file: self.file.clone(),
                detail: format!("object {id}: {detail}"),
            })?;
            loaded += 1;
        }
        Ok(loaded)
    }

    /// Writes `batches`, in order, as one durable transaction: on `Ok`
    /// they are on disk; on `Err` none of them is. After a failed write
    /// redb refuses every later one until the file is opened again (it no
    /// longer trusts its view of the file), so a failure reopens it: once
    /// the disk has room again, writes succeed again.
    pub fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        if self.db.is_none() {
            self.reopen()?;
        }
        // A panic in redb (a damaged file, say) is a failed write like
        // any other: the store thread lives on, and so do the answers
        // waiting for it.
        let file = self.file.clone();
        let result =
            crate::quiet_panic::catch(|| self.commit_once(batches)).unwrap_or_else(|why| {
                // Not `Corrupt`: its advice (delete the file) is not for the
                // remote caller whose answer this reason becomes.
                Err(StoreError::Io {
                    file,
                    doing: "write",
                    detail: format!("redb panicked: {why}"),
                })
            });
        if result.is_err() {
            if let Err(e) = self.reopen() {
                log::warn!("{e}; the next write tries again");
            }
        }
        result
    }

    /// Closes and opens the file again (redb repairs it if needed).
    fn reopen(&mut self) -> Result<(), StoreError> {
        let file = self.file.clone();
        // The old handle holds the file's lock: it must go first.
        self.db = None;
        let db = guarded(&file, || {
            Database::create(&file).map_err(|e| classify(&file, "reopen", e.into()))
        })?;
        self.db = Some(db);
        Ok(())
    }

    fn commit_once(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let err = |e: redb::Error| classify(&self.file, "write", e);
        let write = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        let mut next_counter = self.next_counter;
        {
            let mut objects = write.open_table(OBJECTS).map_err(|e| err(e.into()))?;
            for batch in batches {
                for (id, bytes) in batch.records() {
                    objects.insert(id, bytes).map_err(|e| err(e.into()))?;
                }
                for id in &batch.deletes {
                    objects.remove(id).map_err(|e| err(e.into()))?;
                }
                next_counter = next_counter.max(batch.next_counter);
            }
            if next_counter != self.next_counter {
                let mut meta = write.open_table(META).map_err(|e| err(e.into()))?;
                meta.insert("next_counter", &next_counter.to_be_bytes()[..])
                    .map_err(|e| err(e.into()))?;
            }
        }
        write.commit().map_err(|e| err(e.into()))?;
        self.next_counter = next_counter;
        Ok(())
    }

    /// (identity, next_counter) of an existing store; `None` for a new one.
    fn read_meta(&self) -> Result<Option<(Identity, u64)>, StoreError> {
        let err = |e: redb::Error| classify(&self.file, "read its identity", e);
        let corrupt = |detail: &str| StoreError::Corrupt {
            file: self.file.clone(),
            detail: detail.to_string(),
        };
        let read = self.db()?.begin_read().map_err(|e| err(e.into()))?;
        let meta = match read.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta
                .get(key)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value().to_vec()))
        };
        let format = get("format")?.ok_or_else(|| corrupt("no format in meta"))?;
        let format = u32::from_be_bytes(
            format
                .try_into()
                .map_err(|_| corrupt("format is not 4 bytes"))?,
        );
        if format > STORE_FORMAT {
            return Err(StoreError::Format {
                file: self.file.clone(),
                detail: format!("store format {format}, newer than {STORE_FORMAT}"),
            });
        }
        let identity = get("identity")?.ok_or_else(|| corrupt("no identity in meta"))?;
        let identity: Identity =
            serde_json::from_slice(&identity).map_err(|_| corrupt("identity is not JSON"))?;
        let next = match get("next_counter")? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| corrupt("next_counter is not 8 bytes"))?,
            ),
            None => 1,
        };
        Ok(Some((identity, next)))
    }

    fn write_new_meta(&mut self) -> Result<(), StoreError> {
        let err = |e: redb::Error| classify(&self.file, "write its identity", e);
        let write = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = write.open_table(META).map_err(|e| err(e.into()))?;
            let identity = serde_json::to_vec(&self.identity).expect("plain struct");
            let format = STORE_FORMAT.to_be_bytes();
            for (key, value) in [("format", &format[..]), ("identity", &identity[..])] {
                meta.insert(key, value).map_err(|e| err(e.into()))?;
            }
            write.open_table(OBJECTS).map_err(|e| err(e.into()))?;
        }
        write.commit().map_err(|e| err(e.into()))
    }
}

/// Runs `read` (redb reading a file that may be damaged), turning a panic
/// into [`StoreError::Corrupt`]: redb trusts a cleanly closed file, and
/// some damage reaches an `unreachable!()` inside it rather than an
/// error. The panic is reported as that error, not printed.
fn guarded<T>(file: &Path, read: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    crate::quiet_panic::catch(read).unwrap_or_else(|why| {
        Err(StoreError::Corrupt {
            file: file.to_path_buf(),
            detail: format!("redb gave up on it: {why}"),
        })
    })
}

/// Sorts a redb error into what an operator does about it.
fn classify(file: &Path, doing: &'static str, e: redb::Error) -> StoreError {
    let file = file.to_path_buf();
    match e {
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse { file },
        redb::Error::UpgradeRequired(v) => StoreError::Format {
            file,
            detail: format!("redb file format {v}"),
        },
        redb::Error::Corrupted(detail) => StoreError::Corrupt { file, detail },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                file,
                detail: io.to_string(),
            }
        }
        // redb read past the end of a file cut short (its header, say).
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::Corrupt {
                file,
                detail: format!("it ends early, truncated? ({io})"),
            }
        }
        redb::Error::Io(io) => StoreError::Io {
            file,
            doing,
            detail: io.to_string(),
        },
        other => StoreError::Io {
            file,
            doing,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{ControllerId, Val};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "avm-store-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record<'a>(state: &'a [Val]) -> ObjectRecord<'a> {
        ObjectRecord {
            behavior: "cell",
            controller: Some(ControllerId(4)),
            version: 3,
            state,
            epoch: 0,
            leaving: None,
        }
    }

    fn load_all(store: &Store) -> Vec<(u64, Vec<Val>)> {
        let mut seen = Vec::new();
        store
            .load(|id, r| {
                seen.push((id.0, r.state.to_vec()));
                Ok(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn committed_batches_are_there_after_reopening() {
        let dir = TempDir::new("reopen");
        let mut store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        assert_eq!(store.identity().prefix, 9002);
        let mut first = Batch::default();
        first
            .add(ObjectId(1), Some(record(&[Val::Nat(1)])))
            .unwrap();
        first
            .add(ObjectId(2), Some(record(&[Val::Nat(2)])))
            .unwrap();
        first.set_next_counter(3);
        let mut second = Batch::default();
        second
            .add(ObjectId(1), Some(record(&[Val::Nat(10)])))
            .unwrap();
        second.add(ObjectId(2), None).unwrap();
        store.commit(&[first, second]).unwrap();
        drop(store);

        // Reopened without a prefix, on another default: the stored one wins.
        let store = Store::open(&dir.0, "beta", None, 40000).unwrap();
        assert_eq!(store.identity().prefix, 9002);
        assert_eq!(store.next_counter(), 3);
        assert_eq!(load_all(&store), vec![(1, vec![Val::Nat(10)])]);
    }

    /// A data directory that is a file is named as such (it was "cannot
    /// create the data directory: File exists").
    #[test]
    fn a_data_directory_that_is_a_file_says_so() {
        let dir = TempDir::new("a-file");
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file, "beta", None, 9002).unwrap_err();
        assert!(e.to_string().contains("is a file, not a directory"), "{e}");
    }

    #[test]
    fn another_name_or_prefix_is_refused_naming_the_owner() {
        let dir = TempDir::new("identity");
        drop(Store::open(&dir.0, "beta", Some(7), 9002).unwrap());
        let e = Store::open(&dir.0, "alpha", None, 9002).unwrap_err();
        assert!(matches!(e, StoreError::OtherIdentity { .. }), "{e}");
        assert!(e.to_string().contains("belongs to node beta"), "{e}");
        assert!(e.to_string().contains("start with --name beta"), "{e}");
        let e = Store::open(&dir.0, "beta", Some(8), 9002).unwrap_err();
        assert!(matches!(e, StoreError::OtherIdentity { .. }), "{e}");
        assert!(e.to_string().contains("start with --node-prefix 7"), "{e}");
        assert!(Store::open(&dir.0, "beta", Some(7), 1).is_ok());
    }

    /// An object the node refuses (its behavior is not registered) is
    /// not damage: the error says the file is intact, not to delete it.
    #[test]
    fn an_object_the_node_refuses_is_not_called_corrupt() {
        let dir = TempDir::new("refused");
        let mut store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let mut batch = Batch::default();
        batch.add(ObjectId(1), Some(record(&[]))).unwrap();
        store.commit(&[batch]).unwrap();
        let e = store
            .load(|_, _| Err("unknown behavior: cell".into()))
            .unwrap_err();
        assert!(matches!(e, StoreError::Unrestorable { .. }), "{e}");
        let message = e.to_string();
        assert!(message.contains("is intact"), "{message}");
        assert!(!message.contains("delete"), "{message}");
        assert!(message.contains("unknown behavior: cell"), "{message}");
    }

    #[test]
    fn a_second_node_on_the_same_dir_is_refused() {
        let dir = TempDir::new("in-use");
        let _first = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let e = Store::open(&dir.0, "beta", None, 9002).unwrap_err();
        assert!(matches!(e, StoreError::InUse { .. }), "{e}");
    }

    #[test]
    fn a_newer_store_format_is_refused() {
        let dir = TempDir::new("newer");
        let store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let write = store.db().unwrap().begin_write().unwrap();
        write
            .open_table(META)
            .unwrap()
            .insert("format", &(STORE_FORMAT + 1).to_be_bytes()[..])
            .unwrap();
        write.commit().unwrap();
        drop(store);
        let e = Store::open(&dir.0, "beta", None, 9002).unwrap_err();
        assert!(matches!(e, StoreError::Format { .. }), "{e}");
        assert!(e.to_string().contains("format 2, newer than 1"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_an_error() {
        let dir = TempDir::new("garbage");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let e = Store::open(&dir.0, "beta", None, 9002).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn a_truncated_store_is_an_error_at_open_or_load_never_a_panic() {
        let dir = TempDir::new("truncated");
        let mut store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let state = vec![Val::str("x".repeat(200))];
        for chunk in 0..20u64 {
            let mut batch = Batch::default();
            for i in 0..100 {
                batch
                    .add(ObjectId(chunk * 100 + i + 1), Some(record(&state)))
                    .unwrap();
            }
            store.commit(&[batch]).unwrap();
        }
        drop(store);
        let file = dir.0.join(FILE_NAME);
        let full = std::fs::read(&file).unwrap();
        for keep in [full.len() / 2, full.len() / 4, 4096, 100, 9] {
            std::fs::write(&file, &full[..keep]).unwrap();
            let outcome =
                Store::open(&dir.0, "beta", None, 9002).and_then(|s| s.load(|_, _| Ok(())));
            match outcome {
                // Corrupt, so that the message says what to do about it.
                Err(StoreError::Corrupt { .. }) => {}
                Err(e) => panic!("truncated to {keep}: unexpected {e}"),
                Ok(n) => panic!("truncated to {keep} of {}: loaded {n} objects", full.len()),
            }
        }
    }

    #[test]
    fn a_scribbled_store_is_an_error_never_a_panic() {
        let dir = TempDir::new("scribbled");
        let mut store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let mut batch = Batch::default();
        for i in 0..4 {
            batch
                .add(ObjectId(i + 1), Some(record(&[Val::Nat(i)])))
                .unwrap();
        }
        store.commit(&[batch]).unwrap();
        drop(store);
        let file = dir.0.join(FILE_NAME);
        let mut bytes = std::fs::read(&file).unwrap();
        for b in bytes.iter_mut().skip(4096) {
            *b = 0xa5;
        }
        std::fs::write(&file, &bytes).unwrap();
        let outcome = Store::open(&dir.0, "beta", None, 9002).and_then(|s| s.load(|_, _| Ok(())));
        assert!(
            matches!(outcome, Err(StoreError::Corrupt { .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_record_that_does_not_decode_names_its_object() {
        let dir = TempDir::new("bad-record");
        let store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let write = store.db().unwrap().begin_write().unwrap();
        write
            .open_table(OBJECTS)
            .unwrap()
            .insert(5, &b"\x01short"[..])
            .unwrap();
        write.commit().unwrap();
        let e = store.load(|_, _| Ok(())).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("object 5:"), "{e}");
    }

    /// A record a newer avm wrote is a format this build cannot read, not
    /// damage: the error says to run that avm, not to delete the store.
    #[test]
    fn a_record_from_a_newer_avm_is_a_format_error() {
        let dir = TempDir::new("newer-record");
        let store = Store::open(&dir.0, "beta", None, 9002).unwrap();
        let write = store.db().unwrap().begin_write().unwrap();
        let newer = [record::RECORD_FORMAT + 1, 0, 0, 0, 0, 0];
        write
            .open_table(OBJECTS)
            .unwrap()
            .insert(5, &newer[..])
            .unwrap();
        write.commit().unwrap();
        let e = store.load(|_, _| Ok(())).unwrap_err();
        assert!(matches!(e, StoreError::Format { .. }), "{e}");
        assert!(e.to_string().contains("run the avm that wrote it"), "{e}");
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_io_error() {
        let dir = TempDir::new("not-a-dir");
        std::fs::write(&dir.0, b"a file where the directory should be").unwrap();
        let e = Store::open(&dir.0.join("data"), "beta", None, 9002).unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        let _ = std::fs::remove_file(&dir.0);
    }
}
