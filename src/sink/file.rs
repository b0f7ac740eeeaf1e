//! Appending to a file, reopened on SIGHUP so logrotate's rename-and-signal works; with
//! copytruncate, `O_APPEND` makes writes land at the new end of the truncated file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use super::Output;

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
    fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(Self::open_path(&self.path)?);
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("file not open"))?;
        // A partial write on a full disk leaves a cut line behind; finish it with a newline
        // when space returns is not possible to know, so write whole chunks and report the
        // chunk's lines as lost on error.
        file.write_all(data)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        self.file = Some(Self::open_path(&self.path)?);
        Ok(())
    }
}
