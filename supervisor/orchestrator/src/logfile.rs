//! Log files rotated by size: once `NAME.log` would grow past its bound it becomes
//! `NAME.log.1` (`.1` becomes `.2`, and so on; the oldest is dropped) and a new `NAME.log` is
//! begun, so one log takes at most `max_size` times `max_files` of disk whatever is logged
//! (every refused viewer is a line).
//!
//! Why not a kept crate: tracing-appender rotates by time only, which bounds nothing when a
//! flood of refusals comes within the hour; the size-rotating crates write whatever bytes
//! they are given, splitting a line between two files. Here a line is never split (a file
//! holds whole lines, and is over its bound only when one line alone is), the same writer
//! takes the supervisor's own tracing output and its children's piped output, and the
//! supervisor's stdout and stderr can follow the current file (a panic message lands where
//! the log goes on).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line copied from a child whole; a longer one is cut into pieces this long, so
/// a child printing without newlines cannot make the supervisor buffer without end.
pub const MAX_LINE: usize = 64 << 10;

/// How a log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file is rotated before it would pass this many bytes.
    pub max_size: u64,
    /// Files kept, the one being written included (at least 1: with 1, a full file is
    /// started over).
    pub max_files: u32,
}

/// One log file and its rotated predecessors.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    size: u64,
    /// Point this process's stdout and stderr at each new file.
    stdio: bool,
}

impl LogFile {
    /// Opens (appends to) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<LogFile> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            rotation: Rotation {
                max_size: rotation.max_size.max(1),
                max_files: rotation.max_files.max(1),
            },
            file,
            size,
            stdio: false,
        })
    }

    /// Points this process's stdout and stderr at the log now and at every new file after a
    /// rotation, so what is printed outside the logger (a panic) follows the log.
    pub fn with_stdio(mut self) -> io::Result<LogFile> {
        self.stdio = true;
        self.redirect_stdio()?;
        Ok(self)
    }

    /// The path of the file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `buf`, rotating first whenever the next whole line would take the file past
    /// its bound. A line longer than the bound goes alone into a file of its own.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let room = usize::try_from(self.rotation.max_size.saturating_sub(self.size))
                .unwrap_or(usize::MAX);
            let mut cut = if rest.len() <= room {
                rest.len()
            } else {
                rest[..room]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1)
            };
            if cut == 0 {
                if self.size > 0 {
                    self.rotate()?;
                    continue;
                }
                cut = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
            }
            self.file.write_all(&rest[..cut])?;
            self.size += cut as u64;
            rest = &rest[cut..];
        }
        Ok(())
    }

    /// `NAME.log.N` for N of 1 and up; `NAME.log` itself for 0.
    pub fn rotated(&self, n: u32) -> PathBuf {
        rotated(&self.path, n)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let last = self.rotation.max_files - 1;
        if last == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            match std::fs::remove_file(self.rotated(last)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (0..last).rev() {
                match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        self.file = open(&self.path)?;
        self.size = 0;
        if self.stdio {
            self.redirect_stdio()?;
        }
        Ok(())
    }

    fn redirect_stdio(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        for fd in [io::stdout().as_raw_fd(), io::stderr().as_raw_fd()] {
            nix::unistd::dup2(self.file.as_raw_fd(), fd)?;
        }
        Ok(())
    }
}

/// The `n`th rotated file of the log at `path` (`NAME.log.N`); `path` itself for 0.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A log shared by several writers: the tracing subscriber (through `&Log: Write`, so an
/// `Arc<Log>` is its writer) and the copies of a child's stdout and stderr.
#[derive(Debug)]
pub struct Log(Mutex<LogFile>);

impl Log {
    /// Shares `file`.
    pub fn new(file: LogFile) -> Arc<Log> {
        Arc::new(Log(Mutex::new(file)))
    }

    /// Appends `buf` (see [`LogFile::write`]).
    pub fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
}

impl Write for &Log {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `from` (a child's stdout or stderr) into `log` until it ends, a whole line at a
/// time where lines are at most [`MAX_LINE`] long.
pub async fn copy_lines(mut from: impl AsyncRead + Unpin, log: Arc<Log>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        let whole = match pending.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if pending.len() >= MAX_LINE => pending.len(),
            None => continue,
        };
        if let Err(error) = log.append(&pending[..whole]) {
            tracing::warn!(%error, "writing a service log failed");
        }
        pending.drain(..whole);
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        let _ = log.append(&pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(log: &LogFile, n: u32) -> Vec<Option<u64>> {
        (0..n)
            .map(|i| std::fs::metadata(log.rotated(i)).ok().map(|m| m.len()))
            .collect()
    }

    #[test]
    fn files_rotate_at_the_bound_with_whole_lines_and_the_oldest_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay-1.log");
        let rotation = Rotation {
            max_size: 100,
            max_files: 3,
        };
        let mut log = LogFile::open(&path, rotation).expect("open");
        // 30-byte lines: three fit in 100 bytes, the fourth starts a new file.
        let line = |i: u32| format!("{i:>5} refused: no capacity...\n");
        assert_eq!(line(1).len(), 30);
        for i in 0..3 {
            log.write(line(i).as_bytes()).expect("write");
        }
        assert_eq!(sizes(&log, 4), [Some(90), None, None, None]);
        log.write(line(3).as_bytes()).expect("write");
        assert_eq!(sizes(&log, 4), [Some(30), Some(90), None, None]);
        // Many lines in one write are split between files at line ends.
        let many: String = (4..20).map(line).collect();
        log.write(many.as_bytes()).expect("write");
        assert_eq!(sizes(&log, 4), [Some(60), Some(90), Some(90), None]);
        let read = |n| std::fs::read_to_string(log.rotated(n)).expect("read");
        assert_eq!(read(0), (18..20).map(line).collect::<String>());
        assert_eq!(read(1), (15..18).map(line).collect::<String>());
        assert_eq!(read(2), (12..15).map(line).collect::<String>());
    }

    #[test]
    fn a_line_longer_than_the_bound_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.log");
        let rotation = Rotation {
            max_size: 10,
            max_files: 2,
        };
        let mut log = LogFile::open(&path, rotation).expect("open");
        log.write(b"short\n").expect("write");
        log.write(b"a line of thirty bytes.......\nend\n")
            .expect("write");
        assert_eq!(
            std::fs::read_to_string(log.rotated(1)).expect("read"),
            "a line of thirty bytes.......\n"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "end\n");
    }

    #[test]
    fn one_file_kept_starts_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("control.log");
        let rotation = Rotation {
            max_size: 8,
            max_files: 1,
        };
        let mut log = LogFile::open(&path, rotation).expect("open");
        log.write(b"one\ntwo\nthree\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "three\n");
        assert!(!log.rotated(1).exists());
    }

    #[test]
    fn an_existing_log_counts_towards_the_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ingest.log");
        std::fs::write(&path, "0123456789\n").expect("write");
        let rotation = Rotation {
            max_size: 16,
            max_files: 2,
        };
        let mut log = LogFile::open(&path, rotation).expect("open");
        log.write(b"abcdefgh\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "abcdefgh\n");
        assert_eq!(
            std::fs::read_to_string(log.rotated(1)).expect("read"),
            "0123456789\n"
        );
    }

    #[tokio::test]
    async fn a_childs_output_is_copied_by_whole_lines_and_long_lines_are_cut() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay-2.log");
        let rotation = Rotation {
            max_size: 1 << 20,
            max_files: 2,
        };
        let log = Log::new(LogFile::open(&path, rotation).expect("open"));
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"first\nsec".to_vec();
        input.extend_from_slice(b"ond\n");
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nno newline at the end");
        copy_lines(&input[..], log.clone()).await;
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], "second");
        assert_eq!(lines.last(), Some(&"no newline at the end"));
        let xs: usize = lines
            .iter()
            .filter(|l| l.starts_with('x'))
            .map(|l| l.len())
            .sum();
        assert_eq!(xs, MAX_LINE + 10);
    }
}
