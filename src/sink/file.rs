//! Appending to a file, reopened on SIGHUP so logrotate's rename-and-signal works; with
//! copytruncate, `O_APPEND` makes writes land at the new end of the truncated file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;

use super::{whole_lines, write_counting, Output, WriteError};

pub struct FileOutput {
    path: PathBuf,
    file: Option<File>,
}

impl FileOutput {
    /// Opens (creating the directory and the file) at start, so a bad path fails early.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = Self::open_path(&path)?;
        Ok(FileOutput {
            path,
            file: Some(file),
        })
    }

    fn open_path(path: &PathBuf) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        OpenOptions::new().create(true).append(true).open(path)
    }
}

impl Output for FileOutput {
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if self.file.is_none() {
            self.file = Some(Self::open_path(&self.path).map_err(WriteError::new)?);
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| WriteError::new(io::Error::other("file not open")))?;
        write_counting(file, data).map_err(|(err, n)| {
            // A full disk can take part of a line. Cut it off again so the next line, written
            // when space returns, does not get glued to a fragment.
            let complete = whole_lines(data, n);
            if n > complete {
                if let Ok(len) = file.metadata().map(|m| m.len()) {
                    let _ = file.set_len(len.saturating_sub((n - complete) as u64));
                }
            }
            WriteError { err, complete }
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        self.file = Some(Self::open_path(&self.path)?);
        Ok(())
    }
}
