//! Descriptors of a SQLite database's own files (the database file, its `-shm` file) that this
//! process opens beside SQLite's connections, to sync the file or to ask who locks it: each
//! opened once per process and never closed. Closing any descriptor of a file releases every
//! POSIX lock the process holds on it, SQLite's included, and another process could then take
//! this one's connections for gone and delete the WAL under them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// A file by its device and inode numbers.
type FileId = (u64, u64);

/// The file at `path`, opened for reading the first time this process asks for it. A file
/// since put in its place (another inode) is opened anew; the descriptor of the one it replaced
/// stays open too.
pub(crate) fn kept_open(path: &Path) -> std::io::Result<Arc<File>> {
    static OPENED: OnceLock<Mutex<HashMap<FileId, Arc<File>>>> = OnceLock::new();
    let mut opened = OPENED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let named = std::fs::metadata(path)?;
    if let Some(file) = opened.get(&(named.dev(), named.ino())) {
        return Ok(Arc::clone(file));
    }
    let file = Arc::new(File::open(path)?);
    // Filed under the file it opened, which a replacement since the `metadata` above makes
    // another; and kept whatever the answer, so that no descriptor is ever closed.
    let own = match file.metadata() {
        Ok(metadata) => (metadata.dev(), metadata.ino()),
        Err(error) => {
            std::mem::forget(file);
            return Err(error);
        }
    };
    match opened.entry(own) {
        Entry::Occupied(kept) => {
            std::mem::forget(file);
            Ok(Arc::clone(kept.get()))
        }
        Entry::Vacant(slot) => Ok(Arc::clone(slot.insert(file))),
    }
}
