//! A log on this host: `NAME.log` and the files it was rotated into (`NAME.log.1` the
//! newest of those; see [`orchestrator::logfile`]).
//!
//! What is asked for first is read whole ([`open`]); then the file is followed by polling
//! ([`Follower::poll`]). Polling is simpler than inotify and as sure across rotation: the
//! open file is read to its end, whatever its name now; a file at the path with another
//! inode (rotated away, or made anew) is read next from its start; a file that shrank
//! (truncated in place) is read again from its start.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Line, Stamper, Window};
use orchestrator::logfile::{self, MAX_LINE};

/// Rotated files looked for at most (the supervisor keeps a few).
const MAX_FILES: u32 = 1000;

/// Which file a handle reads: device and inode.
type FileId = (u64, u64);

fn id(meta: &Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// The lines of the log at `path` that `window` asks for, oldest first, and a follower that
/// goes on from the end of what was read. A log that does not exist yet is empty, and
/// followed from its first line.
pub(super) fn open(path: &Path, window: Window) -> io::Result<(Vec<Line>, Follower)> {
    let mut follower = Follower {
        path: path.to_path_buf(),
        file: None,
        pending: Vec::new(),
        stamper: Stamper::default(),
    };
    // The file being written is read through the handle followed next: no line can fall
    // between what is read now and what is followed.
    let mut current = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut current)?;
            follower.file = Some(Open {
                id: id(&file.metadata()?),
                read: current.len() as u64,
                file,
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let whole = current
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    follower.pending = current.split_off(whole);

    // Rotated files, newest first, only as far back as the window reaches.
    let mut files = vec![current];
    let mut lines = files[0].iter().filter(|b| **b == b'\n').count();
    for n in 1..=MAX_FILES {
        let enough = window.tail.is_some_and(|tail| lines >= tail)
            || window.since.is_some_and(|since| {
                first_time(&files[files.len() - 1]).is_some_and(|first| first < since)
            });
        if enough {
            break;
        }
        match std::fs::read(logfile::rotated(path, n)) {
            Ok(mut bytes) => {
                if bytes.last().is_some_and(|b| *b != b'\n') {
                    bytes.push(b'\n');
                }
                lines += bytes.iter().filter(|b| **b == b'\n').count();
                files.push(bytes);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    let mut read = Vec::with_capacity(lines);
    for bytes in files.iter().rev() {
        read.extend(
            String::from_utf8_lossy(bytes)
                .lines()
                .map(|l| follower.stamper.line(l)),
        );
    }
    Ok((window.apply(read), follower))
}

/// The time of the first line of `bytes` that has one.
fn first_time(bytes: &[u8]) -> Option<std::time::SystemTime> {
    String::from_utf8_lossy(bytes)
        .lines()
        .find_map(super::render::timestamp)
}

/// The files of the log at `path` written after the one `old` names, which was rotated
/// away, oldest first: none after a single rotation (`old` is now `NAME.log.1`), the files
/// below its new name after several. Nothing when `old` is no longer among them.
fn rotated_since(path: &Path, old: FileId) -> Vec<Vec<u8>> {
    let renamed = (1..=MAX_FILES)
        .map_while(|n| std::fs::metadata(logfile::rotated(path, n)).ok())
        .position(|meta| id(&meta) == old);
    let Some(index) = renamed else {
        return Vec::new();
    };
    // `index` is 0 for `NAME.log.1`.
    (1..=index as u32)
        .rev()
        .filter_map(|n| std::fs::read(logfile::rotated(path, n)).ok())
        .collect()
}

/// A file open for following.
#[derive(Debug)]
struct Open {
    file: File,
    id: FileId,
    /// Bytes read from it so far.
    read: u64,
}

/// Follows one log across rotations: see the module's documentation.
#[derive(Debug)]
pub(super) struct Follower {
    path: PathBuf,
    file: Option<Open>,
    /// The start of a line whose end is not written yet.
    pending: Vec<u8>,
    stamper: Stamper,
}

impl Follower {
    /// The lines written since the last poll.
    pub(super) fn poll(&mut self) -> Vec<Line> {
        let mut out = Vec::new();
        // Each round reads one file to its end; a few cover rotations in quick succession.
        for _ in 0..4 {
            if let Some(open) = &mut self.file {
                let mut bytes = Vec::new();
                // A read that fails keeps what it got; the next poll tries again.
                let _ = open.file.read_to_end(&mut bytes);
                open.read += bytes.len() as u64;
                self.take(&bytes, &mut out);
            }
            // No file at the path: between a rotation's rename and the next file, or not
            // made yet.
            let Ok(meta) = std::fs::metadata(&self.path) else {
                break;
            };
            match &mut self.file {
                Some(open) if open.id == id(&meta) => {
                    if meta.len() >= open.read {
                        break;
                    }
                    // Truncated in place: it starts again.
                    if open.file.seek(SeekFrom::Start(0)).is_err() {
                        break;
                    }
                    open.read = 0;
                    self.pending.clear();
                }
                _ => {
                    // Rotated away (read to its end above) or made anew: the next file,
                    // after any written in between.
                    self.flush(&mut out);
                    let skipped = self
                        .file
                        .take()
                        .map(|old| rotated_since(&self.path, old.id))
                        .unwrap_or_default();
                    for bytes in skipped {
                        self.take(&bytes, &mut out);
                        self.flush(&mut out);
                    }
                    let Ok(file) = File::open(&self.path) else {
                        break;
                    };
                    let Ok(meta) = file.metadata() else {
                        break;
                    };
                    self.file = Some(Open {
                        file,
                        id: id(&meta),
                        read: 0,
                    });
                }
            }
        }
        out
    }

    /// Adds `bytes` to what is pending and moves its whole lines to `out` (a line longer
    /// than [`MAX_LINE`] is cut, as the log's writer cuts it).
    fn take(&mut self, bytes: &[u8], out: &mut Vec<Line>) {
        self.pending.extend_from_slice(bytes);
        let whole = match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if self.pending.len() >= MAX_LINE => self.pending.len(),
            None => return,
        };
        let Follower {
            pending, stamper, ..
        } = self;
        out.extend(
            String::from_utf8_lossy(&pending[..whole])
                .lines()
                .map(|l| stamper.line(l)),
        );
        pending.drain(..whole);
    }

    /// The rest of a file that ended without a line end.
    fn flush(&mut self, out: &mut Vec<Line>) {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            let bytes = std::mem::take(&mut self.pending);
            self.take(&bytes, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use orchestrator::logfile::{LogFile, Rotation};

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    fn stamped(i: u32) -> String {
        format!("2025-06-01T12:00:{i:02}.000000Z  INFO relay: line {i}\n")
    }

    #[test]
    fn the_last_lines_come_from_the_rotated_files_too_and_a_window_reads_no_further() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay-1.log");
        let rotation = Rotation {
            max_size: 3 * stamped(0).len() as u64,
            max_files: 3,
        };
        let mut log = LogFile::open(&path, rotation).expect("open");
        for i in 0..10 {
            log.write(stamped(i).as_bytes()).expect("write");
        }
        // Three lines a file: .2 holds 3-5, .1 6-8, the current file 9; 0-2 were dropped.
        let all = |w| open(&path, w).expect("read").0;
        let every = all(Window::default());
        assert_eq!(every.len(), 7, "{:?}", texts(&every));
        assert!(every[0].text.ends_with("line 3"), "{:?}", texts(&every));
        assert!(every[6].text.ends_with("line 9"));
        let last = all(Window {
            since: None,
            tail: Some(4),
        });
        assert_eq!(
            texts(&last)
                .iter()
                .map(|t| t.rsplit(' ').next().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["6", "7", "8", "9"]
        );
        let since = humantime::parse_rfc3339("2025-06-01T12:00:05Z").expect("time");
        let recent = all(Window {
            since: Some(since),
            tail: None,
        });
        assert_eq!(recent.len(), 5, "{:?}", texts(&recent));
        // A log not written yet is empty, and followed from its start.
        let (none, mut follower) =
            open(&dir.path().join("relay-2.log"), Window::default()).expect("no file is no error");
        assert!(none.is_empty());
        std::fs::write(dir.path().join("relay-2.log"), "first\n").expect("write");
        assert_eq!(texts(&follower.poll()), ["first"]);
    }

    #[test]
    fn following_goes_on_across_rotation_recreation_and_truncation_losing_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay-1.log");
        let rotation = Rotation {
            max_size: 100,
            max_files: 3,
        };
        let mut log = LogFile::open(&path, rotation).expect("open");
        log.write(b"before\nhalf a").expect("write");
        let (read, mut follower) = open(&path, Window::default()).expect("read");
        assert_eq!(texts(&read), ["before"]);
        assert!(follower.poll().is_empty());

        // The rest of the line, then enough to rotate twice between two polls.
        log.write(b" line\n").expect("write");
        let many: String = (0..12)
            .map(|i| format!("line {i:02} of twenty.\n"))
            .collect();
        log.write(many.as_bytes()).expect("write");
        let got = follower.poll();
        let mut want = vec!["half a line".to_string()];
        want.extend((0..12).map(|i| format!("line {i:02} of twenty.")));
        assert_eq!(texts(&got), want);

        // A file removed and made anew (a log deleted by hand, a restart elsewhere).
        drop(log);
        std::fs::remove_file(&path).expect("remove");
        let mut fresh = File::create(&path).expect("create");
        fresh.write_all(b"anew\n").expect("write");
        assert_eq!(texts(&follower.poll()), ["anew"]);

        // Truncated in place, then written again.
        fresh.set_len(0).expect("truncate");
        let mut again = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        again.write_all(b"x\n").expect("write");
        assert_eq!(texts(&follower.poll()), ["x"]);
        assert!(follower.poll().is_empty());
    }
}
