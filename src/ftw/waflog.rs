//! The WAF's log as the harness sees it: an append-only file read incrementally from a
//! remembered offset (whole lines only; a file that shrank is read again from the
//! start), and the rule ids of ModSecurity error-log lines (`[id "942100"]`).

use regex::bytes::Regex;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Reads lines appended to a log file since the last call.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogReader {
    /// A reader that will return only what is appended from now on (a file that does not
    /// exist yet is read from its start once it appears).
    pub fn at_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogReader {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
        }
    }

    /// A reader that will return the whole file.
    pub fn at_start(path: &Path) -> Self {
        LogReader {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines appended since the last call, without their line ends. A
    /// missing file yields nothing.
    pub fn read_new_lines(&mut self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        file.take(len - self.offset).read_to_end(&mut fresh)?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(off) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let end = start + off;
            let line = &self.partial[start..end];
            lines.push(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
            start = end + 1;
        }
        self.partial.drain(..start);
        Ok(lines)
    }
}

fn id_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r#"\[id "(\d+)"\]"#).expect("a valid constant regex"))
}

/// The rule ids named by `[id "NNN"]` in the lines, sorted and without repeats.
pub fn rule_ids<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
    let mut ids: Vec<u32> = lines
        .into_iter()
        .flat_map(|line| id_regex().captures_iter(line))
        .filter_map(|c| c.get(1))
        .filter_map(|m| std::str::from_utf8(m.as_bytes()).ok()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether a line is the log line of the marker with this id (case-insensitively, as
/// go-ftw compares).
pub fn is_marker_line(line: &[u8], marker_id: &str) -> bool {
    let id = marker_id.as_bytes();
    !id.is_empty()
        && line.len() >= id.len()
        && line.windows(id.len()).any(|w| w.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_incrementally_whole_lines_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("error.log");
        let mut r = LogReader::at_end(&path);
        assert!(r.read_new_lines().expect("missing is fine").is_empty());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"one\r\ntwo\nthr").expect("write");
        assert_eq!(
            r.read_new_lines().expect("read"),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        f.write_all(b"ee\n").expect("write");
        assert_eq!(r.read_new_lines().expect("read"), vec![b"three".to_vec()]);
        assert!(r.read_new_lines().expect("read").is_empty());
        let mut r2 = LogReader::at_end(&path);
        f.write_all(b"four\n").expect("write");
        assert_eq!(r2.read_new_lines().expect("read"), vec![b"four".to_vec()]);
        std::fs::write(&path, b"new\n").expect("truncate");
        assert_eq!(r2.read_new_lines().expect("read"), vec![b"new".to_vec()]);
    }

    #[test]
    fn ids_and_markers() {
        let lines: Vec<&[u8]> = vec![
            br#"[client 1] ModSecurity: Warning. [id "942100"] [msg "SQLi"] [id "942100"]"#,
            br#"[id "920350"] [data "[id \"5\"]"]"#,
            b"nothing here [id 7]",
        ];
        assert_eq!(rule_ids(lines), vec![920350, 942100]);
        assert!(is_marker_line(b"[msg \"X-CRS-Test ABCdef\"]", "abcDEF"));
        assert!(!is_marker_line(b"[msg \"X-CRS-Test abc\"]", "abcdef"));
        assert!(!is_marker_line(b"anything", ""));
    }
}
