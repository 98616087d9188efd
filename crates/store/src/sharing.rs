//! Whether a process other than this one has a SQLite database open, so that a rebuild leaves
//! the write lock free between its swap batches only when another process may be waiting for it.
//!
//! Every process that has mapped a database's wal-index (at its first transaction in WAL mode)
//! holds a read lock on byte 128 of the database's `-shm` file (the wal-index's "dead man
//! switch", SQLite's `walformat.html`) until its last connection closes; and a writer maps the
//! wal-index before it ever waits for the write lock. So the kernel is asked (`fcntl(F_GETLK)`)
//! whether a write lock on that byte would conflict with another process's lock: it answers
//! for every process of this machine's kernel, whatever its PID namespace, and never counts
//! this process's own locks (a process on another machine, through a network file system, is
//! not seen; SQLite's WAL mode does not support that anyway). The descriptor it is asked
//! through stays open (see `kept_open`). Whatever cannot be asked counts as shared.

use std::path::Path;

use rustix::process::{Flock, FlockOffsetType, FlockType, fcntl_getlk};

use crate::kept_open::kept_open;

/// The byte of the `-shm` file every process with the wal-index mapped holds a read lock on.
const DEAD_MAN_SWITCH: u64 = 128;

/// Whether a process other than this one has `database` (a SQLite file in WAL mode) open, or
/// may have: also when its `-shm` file cannot be opened or its locks cannot be asked about.
pub(crate) fn opened_by_another_process(database: &Path) -> bool {
    let mut shm = database.as_os_str().to_owned();
    shm.push("-shm");
    let Ok(file) = kept_open(Path::new(&shm)) else {
        return true;
    };
    let write_lock = Flock {
        start: DEAD_MAN_SWITCH,
        length: 1,
        pid: None,
        typ: FlockType::WriteLock,
        offset_type: FlockOffsetType::Set,
    };
    // A conflicting lock of an open file description is reported with pid -1, which rustix's
    // checks of debug builds reject with a panic: that too answers "shared".
    let answer = std::panic::catch_unwind(|| fcntl_getlk(&*file, &write_lock));
    !matches!(answer, Ok(Ok(None)))
}
