//! What a SQLite target's commits wrote to its WAL, by B-tree: the frames in the WAL file when a
//! round ends (those written since the WAL last started over), each named by the table or index
//! whose page it holds, as SQLite's `dbstat` table gives them. Each commit writes every page it
//! changed to the WAL, and a checkpoint copies each again, so pages per commit are where most of
//! a SQLite target's bytes and CPU per request go; this tells which structures they belong to.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// Bytes of the WAL file's header.
const WAL_HEADER_BYTES: usize = 32;
/// Bytes of each frame's header, before the page it carries.
const FRAME_HEADER_BYTES: usize = 24;
/// How the WAL header spells a page size of 65536, which does not fit its 16 bits.
const LARGEST_PAGE_SIZE_SPELLED: usize = 1;

/// The frames of one WAL, counted by the B-tree their page belongs to.
#[derive(Debug)]
pub struct WalPages {
    /// Committed transactions in the WAL.
    pub commits: usize,
    /// Frames (pages written) of those transactions.
    pub frames: usize,
    /// Frames by table or index name, most first. Pages in no B-tree (free pages) are counted
    /// under `(free)`.
    pub by_btree: Vec<(String, usize)>,
}

impl WalPages {
    /// Reads the committed frames of `wal`, the WAL file of `database`, and names each one's
    /// page from the database, opened read-only beside whatever process writes it.
    pub fn read(database: &Path, wal: &Path) -> anyhow::Result<Self> {
        let frame_pages = committed_frame_pages(&std::fs::read(wal)?);
        let connection = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let owners: HashMap<u32, String> = connection
            .prepare("SELECT pageno, name FROM dbstat")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for page in &frame_pages.pages {
            let owner = owners.get(page).map_or("(free)", String::as_str);
            *counts.entry(owner).or_default() += 1;
        }
        let mut by_btree: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(name, frames)| (name.to_owned(), frames))
            .collect();
        by_btree.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(Self {
            commits: frame_pages.commits,
            frames: frame_pages.pages.len(),
            by_btree,
        })
    }

    /// Pages written per commit.
    pub fn per_commit(&self) -> f64 {
        self.frames as f64 / self.commits.max(1) as f64
    }

    /// `frames` as a percentage of all the frames.
    pub fn share(&self, frames: usize) -> f64 {
        100.0 * frames as f64 / self.frames.max(1) as f64
    }
}

/// The page numbers of a WAL's committed frames, in order, and how many commits they make.
struct FramePages {
    pages: Vec<u32>,
    commits: usize,
}

fn big_endian(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("four bytes"))
}

/// The frames of the WAL's current generation (those whose salt is the header's) up to its last
/// commit. Frames past the first with another salt are left from before the WAL started over.
fn committed_frame_pages(wal: &[u8]) -> FramePages {
    let mut frame_pages = FramePages {
        pages: Vec::new(),
        commits: 0,
    };
    let Some(header) = wal.get(..WAL_HEADER_BYTES) else {
        return frame_pages;
    };
    let page_size = match big_endian(&header[8..12]) as usize {
        LARGEST_PAGE_SIZE_SPELLED => 65_536,
        size => size,
    };
    let salt = &header[16..24];
    let mut uncommitted = 0;
    for frame in wal[WAL_HEADER_BYTES..].chunks_exact(FRAME_HEADER_BYTES + page_size) {
        if &frame[8..16] != salt {
            break;
        }
        frame_pages.pages.push(big_endian(&frame[0..4]));
        uncommitted += 1;
        // A commit frame holds the database's size in pages after the commit; others hold 0.
        if big_endian(&frame[4..8]) != 0 {
            frame_pages.commits += 1;
            uncommitted = 0;
        }
    }
    frame_pages
        .pages
        .truncate(frame_pages.pages.len() - uncommitted);
    frame_pages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table and its index written by a few commits: every frame is found, and named.
    #[test]
    fn the_frames_of_a_live_wal_are_counted_by_the_b_tree_they_belong_to() {
        let folder = std::env::temp_dir().join(format!("wal-pages-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("a folder");
        let database = folder.join("pages.db");
        let _ = std::fs::remove_file(&database);
        let writer = Connection::open(&database).expect("opens");
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE rows (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB);",
            )
            .expect("a schema");
        for commit in 0..5 {
            writer
                .execute(
                    "INSERT INTO rows (key, body) VALUES (?1, zeroblob(100))",
                    [format!("key-{commit}")],
                )
                .expect("a commit");
        }
        let pages = WalPages::read(&database, &folder.join("pages.db-wal")).expect("reads");
        // The schema's commit writes page 1 and the roots of the table and its index; each
        // insert, one page of each.
        assert_eq!(pages.commits, 6);
        assert_eq!(pages.frames, 13);
        let expected = [
            ("rows", 6),
            ("sqlite_autoindex_rows_1", 6),
            ("sqlite_schema", 1),
        ];
        let expected: Vec<(String, usize)> = expected
            .iter()
            .map(|(btree, frames)| (btree.to_string(), *frames))
            .collect();
        assert_eq!(pages.by_btree, expected);
        drop(writer);
        let _ = std::fs::remove_dir_all(&folder);
    }

    #[test]
    fn frames_after_the_last_commit_or_from_an_older_generation_are_not_counted() {
        let page_size = 512usize;
        let mut wal = vec![0u8; WAL_HEADER_BYTES];
        wal[8..12].copy_from_slice(&(page_size as u32).to_be_bytes());
        wal[16..24].copy_from_slice(b"saltsalt");
        let frame = |page: u32, size_after_commit: u32, salt: &[u8; 8]| {
            let mut frame = vec![0u8; FRAME_HEADER_BYTES + page_size];
            frame[0..4].copy_from_slice(&page.to_be_bytes());
            frame[4..8].copy_from_slice(&size_after_commit.to_be_bytes());
            frame[8..16].copy_from_slice(salt);
            frame
        };
        wal.extend(frame(3, 0, b"saltsalt"));
        wal.extend(frame(4, 9, b"saltsalt"));
        wal.extend(frame(5, 0, b"saltsalt"));
        wal.extend(frame(6, 9, b"oldsalt!"));
        let frame_pages = committed_frame_pages(&wal);
        assert_eq!(frame_pages.pages, vec![3, 4]);
        assert_eq!(frame_pages.commits, 1);
    }
}
