//! The interactive view's state: one owner, changed only by [`UiState::push`] (a new item from
//! the source) and [`UiState::key`] (a key press), read by the drawing code. No I/O and no clock
//! here: callers pass `now`, so tests drive it exactly.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::super::filter::Filter;
use super::super::output::{control_text, sanitize, Compact};
use super::super::record::{Item, Record};

/// Events kept for the list and the tables.
pub const CAPACITY: usize = 50_000;
/// The window over which rates are computed.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// One received event.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: Instant,
    pub record: Record,
    pub compact: Compact,
}

/// The "top" tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Policies,
    Sources,
    Ports,
}

impl Table {
    pub fn title(self) -> &'static str {
        match self {
            Table::Policies => "Top policies",
            Table::Sources => "Top sources (pod, node or IP)",
            Table::Ports => "Top destination ports",
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            Table::Policies => "POLICY",
            Table::Sources => "SOURCE",
            Table::Ports => "PORT",
        }
    }

    fn next(self) -> Table {
        match self {
            Table::Policies => Table::Sources,
            Table::Sources => Table::Ports,
            Table::Ports => Table::Policies,
        }
    }

    /// The row an entry counts in.
    fn key(self, e: &Entry) -> String {
        let r = &e.record;
        match self {
            Table::Policies => e.compact.policy.clone(),
            Table::Sources => match (&r.src, &r.src_node) {
                (Some(p), _) => sanitize(&format!("{}/{}", p.namespace, p.pod)).into_owned(),
                (None, Some(node)) => sanitize(&format!("node {node}")).into_owned(),
                _ => r.src_ip.map_or_else(|| "?".into(), |a| a.to_string()),
            },
            Table::Ports => {
                let proto = sanitize(r.protocol.as_deref().unwrap_or("?")).into_owned();
                match (r.dest_port, r.icmp) {
                    (Some(p), _) => format!("{proto}/{p}"),
                    (None, Some((t, c))) => format!("{proto} {t}/{c}"),
                    _ => proto,
                }
            }
        }
    }
}

/// One row of a top table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    pub key: String,
    pub count: u64,
    /// Events per second over the last [`RATE_WINDOW`].
    pub rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Editing the filter line; `error` is why the last Enter was refused.
    Filter {
        input: String,
        /// Byte offset of the cursor in `input` (on a character boundary).
        cursor: usize,
        error: Option<String>,
    },
}

/// Where the events come from, for the status word in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// A live source (the daemon, the NFLOG group): `LIVE`.
    Live,
    /// A file being read: `REPLAY`.
    Replay,
    /// The source ended (end of file, or an error the status line shows): `END`.
    Ended,
}

#[derive(Debug)]
pub struct UiState {
    pub source: String,
    entries: VecDeque<Entry>,
    /// Events that arrived while paused, shown on resume.
    held: VecDeque<Entry>,
    pub paused: bool,
    pub filter: Filter,
    pub mode: Mode,
    pub feed: Feed,
    pub table: Table,
    /// Lines scrolled up from the newest event (0: follow).
    pub scroll: usize,
    pub lost: u64,
    pub suppressed: u64,
    /// The latest notice (reconnects, end of file, …).
    pub status: Option<String>,
    pub quit: bool,
}

impl UiState {
    pub fn new(source: &str, filter: Filter) -> Self {
        UiState {
            source: sanitize(source).into_owned(),
            entries: VecDeque::new(),
            held: VecDeque::new(),
            paused: false,
            filter,
            mode: Mode::Normal,
            feed: Feed::Live,
            table: Table::Policies,
            scroll: 0,
            lost: 0,
            suppressed: 0,
            status: None,
            quit: false,
        }
    }

    /// The events come from a file: the header says `REPLAY`, not `LIVE`.
    pub fn replay(mut self) -> Self {
        self.feed = Feed::Replay;
        self
    }

    /// The source ended: `why` is its error, `None` at the end of a file.
    pub fn end(&mut self, why: Option<String>, now: Instant) {
        self.feed = Feed::Ended;
        let text = why.unwrap_or_else(|| "end of input".into());
        self.push(Item::Notice(text), now);
    }

    /// Takes one item from the source.
    pub fn push(&mut self, item: Item, now: Instant) {
        match item {
            Item::Event(record) => {
                let entry = Entry {
                    at: now,
                    compact: Compact::of(&record),
                    record: *record,
                };
                let q = if self.paused {
                    &mut self.held
                } else {
                    &mut self.entries
                };
                if q.len() == CAPACITY {
                    q.pop_front();
                }
                q.push_back(entry);
            }
            Item::Lost(n) => {
                self.lost += n;
                self.status = control_text(&Item::Lost(n));
            }
            Item::Suppressed { count, .. } => self.suppressed += count,
            other => self.status = control_text(&other),
        }
    }

    /// Events the filter lets through, oldest first.
    pub fn visible(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| self.filter.matches(&e.record))
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The current table's rows, most events first.
    pub fn top(&self, now: Instant) -> Vec<TopRow> {
        let mut rows: HashMap<String, (u64, u64)> = HashMap::new();
        for e in self.visible() {
            let row = rows.entry(self.table.key(e)).or_default();
            row.0 += 1;
            if now.saturating_duration_since(e.at) < RATE_WINDOW {
                row.1 += 1;
            }
        }
        let mut rows: Vec<TopRow> = rows
            .into_iter()
            .map(|(key, (count, recent))| TopRow {
                key,
                count,
                rate: recent as f64 / RATE_WINDOW.as_secs_f64(),
            })
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        rows
    }

    /// Handles a key press.
    pub fn key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        match &mut self.mode {
            // Control and Alt chords are no commands of the list (Ctrl-P is not `p`).
            Mode::Normal
                if key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {}
            Mode::Normal => self.normal_key(key.code),
            Mode::Filter {
                input,
                cursor,
                error,
            } => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => match Filter::parse(input) {
                    Ok(f) => {
                        self.filter = f;
                        self.scroll = 0;
                        self.mode = Mode::Normal;
                    }
                    Err(e) => *error = Some(e),
                },
                code => {
                    if edit(input, cursor, code, key.modifiers) {
                        *error = None;
                    }
                }
            },
        }
    }

    fn normal_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('/') => {
                let input = self.filter.to_string();
                self.mode = Mode::Filter {
                    cursor: input.len(),
                    input,
                    error: None,
                }
            }
            KeyCode::Char('c') => self.clear(),
            KeyCode::Char('t') | KeyCode::Tab => self.table = self.table.next(),
            KeyCode::Up | KeyCode::Char('k') => self.scroll += 1,
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageUp => self.scroll += 20,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(20),
            KeyCode::End | KeyCode::Char('G') => self.scroll = 0,
            _ => {}
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            for e in self.held.drain(..) {
                if self.entries.len() == CAPACITY {
                    self.entries.pop_front();
                }
                self.entries.push_back(e);
            }
        }
    }

    /// Forgets every event and counter (the filter stays).
    ///
    /// The status line says why the source ended, so it stays once the feed has ended.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.held.clear();
        self.lost = 0;
        self.suppressed = 0;
        self.scroll = 0;
        if self.feed != Feed::Ended {
            self.status = None;
        }
    }
}

/// One key of the filter line editor, as readline (emacs mode) takes it: Ctrl-A/Home and
/// Ctrl-E/End move to the start and end, Ctrl-B/Left and Ctrl-F/Right by a character, Ctrl-U
/// deletes to the start, Ctrl-K to the end, Ctrl-W the word before the cursor (up to a space),
/// Backspace/Ctrl-H the character before it, Delete/Ctrl-D the one under it. Other chords and
/// control characters are ignored: never typed as text. Returns whether the text changed.
pub fn edit(input: &mut String, cursor: &mut usize, code: KeyCode, mods: KeyModifiers) -> bool {
    *cursor = (*cursor).min(input.len());
    while !input.is_char_boundary(*cursor) {
        *cursor -= 1;
    }
    let prev = |s: &str, at: usize| {
        s[..at]
            .chars()
            .next_back()
            .map_or(at, |c| at - c.len_utf8())
    };
    let next = |s: &str, at: usize| s[at..].chars().next().map_or(at, |c| at + c.len_utf8());
    let ctrl = mods.contains(KeyModifiers::CONTROL);
    if mods.contains(KeyModifiers::ALT) {
        return false;
    }
    match (code, ctrl) {
        (KeyCode::Char('a'), true) | (KeyCode::Home, _) => *cursor = 0,
        (KeyCode::Char('e'), true) | (KeyCode::End, _) => *cursor = input.len(),
        (KeyCode::Char('b'), true) | (KeyCode::Left, _) => *cursor = prev(input, *cursor),
        (KeyCode::Char('f'), true) | (KeyCode::Right, _) => *cursor = next(input, *cursor),
        (KeyCode::Char('u'), true) => {
            input.replace_range(..*cursor, "");
            *cursor = 0;
            return true;
        }
        (KeyCode::Char('k'), true) => {
            input.truncate(*cursor);
            return true;
        }
        (KeyCode::Char('w'), true) => {
            // unix-word-rubout: the spaces before the cursor, then the word before them.
            let head = &input[..*cursor];
            let word_end = head.trim_end_matches(' ').len();
            let start = head[..word_end].rfind(' ').map_or(0, |i| i + 1);
            input.replace_range(start..*cursor, "");
            *cursor = start;
            return true;
        }
        (KeyCode::Char('h'), true) | (KeyCode::Backspace, _) => {
            let at = prev(input, *cursor);
            input.replace_range(at..*cursor, "");
            *cursor = at;
            return true;
        }
        (KeyCode::Char('d'), true) | (KeyCode::Delete, _) => {
            let end = next(input, *cursor);
            input.replace_range(*cursor..end, "");
            return true;
        }
        (KeyCode::Char(c), false) if !c.is_control() => {
            input.insert(*cursor, c);
            *cursor += c.len_utf8();
            return true;
        }
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn rec(port: u16, ns: &str, name: &str) -> Item {
        let line = format!(
            "Nov 27 20:59:32 h DROP by policy {ns}/{name} IN= OUT=lo MAC= SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=40000 DPT={port} SEQ=1 ACK=0 WINDOW=1024 SYN URGP=0 MARK=0x0 "
        );
        Item::Event(Box::new(Record::from_syslogemu(&line).unwrap()))
    }

    fn press(s: &mut UiState, code: KeyCode) {
        s.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn type_str(s: &mut UiState, text: &str) {
        for c in text.chars() {
            press(s, KeyCode::Char(c));
        }
    }

    #[test]
    fn counts_and_rates() {
        let t0 = Instant::now();
        let mut s = UiState::new("test", Filter::default());
        for _ in 0..3 {
            s.push(rec(5432, "db", "deny"), t0);
        }
        s.push(rec(53, "kube-system", "dns"), t0 + Duration::from_secs(20));
        let top = s.top(t0 + Duration::from_secs(21));
        assert_eq!(
            top[0],
            TopRow {
                key: "db/deny".into(),
                count: 3,
                rate: 0.0
            }
        );
        assert_eq!(
            top[1],
            TopRow {
                key: "kube-system/dns".into(),
                count: 1,
                rate: 0.1
            }
        );
        press(&mut s, KeyCode::Char('t'));
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.table, Table::Ports);
        assert_eq!(s.top(t0)[0].key, "tcp/5432");
    }

    #[test]
    fn pause_holds_events_until_resume() {
        let t0 = Instant::now();
        let mut s = UiState::new("test", Filter::default());
        s.push(rec(1, "a", "b"), t0);
        press(&mut s, KeyCode::Char(' '));
        s.push(rec(2, "a", "b"), t0);
        assert_eq!((s.visible().count(), s.held()), (1, 1));
        press(&mut s, KeyCode::Char('p'));
        assert_eq!((s.visible().count(), s.held()), (2, 0));
        press(&mut s, KeyCode::Char('c'));
        assert_eq!(s.visible().count(), 0);
    }

    fn ctrl(s: &mut UiState, c: char) {
        s.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
    }

    fn editing(s: &UiState) -> (&str, usize) {
        match &s.mode {
            Mode::Filter { input, cursor, .. } => (input.as_str(), *cursor),
            Mode::Normal => panic!("not editing"),
        }
    }

    #[test]
    fn filter_line_keys_work_as_in_readline() {
        let mut s = UiState::new("test", Filter::default());
        press(&mut s, KeyCode::Char('/'));
        type_str(&mut s, "port=53 ns=kube-system");
        ctrl(&mut s, 'w');
        assert_eq!(editing(&s), ("port=53 ", 8));
        ctrl(&mut s, 'w');
        assert_eq!(editing(&s), ("", 0));
        type_str(&mut s, "ns=db");
        ctrl(&mut s, 'a');
        assert_eq!(editing(&s), ("ns=db", 0));
        type_str(&mut s, "port=1 ");
        assert_eq!(editing(&s), ("port=1 ns=db", 7));
        ctrl(&mut s, 'u');
        assert_eq!(editing(&s), ("ns=db", 0));
        ctrl(&mut s, 'e');
        press(&mut s, KeyCode::Left);
        press(&mut s, KeyCode::Backspace);
        assert_eq!(editing(&s), ("ns=b", 3));
        ctrl(&mut s, 'k');
        assert_eq!(editing(&s), ("ns=", 3));
        press(&mut s, KeyCode::Home);
        press(&mut s, KeyCode::Delete);
        press(&mut s, KeyCode::End);
        assert_eq!(editing(&s), ("s=", 2));
        // No other chord or control character is ever typed as text.
        for c in ['x', 'l', 'p', 'v', 'z'] {
            ctrl(&mut s, c);
        }
        s.key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT));
        press(&mut s, KeyCode::Char('\u{1b}'));
        press(&mut s, KeyCode::Char('\t'));
        assert_eq!(editing(&s), ("s=", 2));
        // Multi-byte characters move and delete whole.
        type_str(&mut s, "é");
        press(&mut s, KeyCode::Left);
        assert_eq!(editing(&s), ("s=é", 2));
        press(&mut s, KeyCode::Delete);
        assert_eq!(editing(&s), ("s=", 2));
        // In the list, chords are not commands: Ctrl-P does not pause, Ctrl-Q does not quit.
        press(&mut s, KeyCode::Esc);
        ctrl(&mut s, 'p');
        ctrl(&mut s, 'q');
        assert!(!s.paused && !s.quit);
        ctrl(&mut s, 'c');
        assert!(s.quit);
    }

    #[test]
    fn replay_and_end_of_the_feed() {
        let t0 = Instant::now();
        let mut s = UiState::new("file: x.log", Filter::default());
        assert_eq!(s.feed, Feed::Live);
        s = s.replay();
        assert_eq!(s.feed, Feed::Replay);
        s.push(rec(1, "a", "b"), t0);
        s.end(None, t0);
        assert_eq!(s.feed, Feed::Ended);
        assert_eq!(s.status.as_deref(), Some("end of input"));
        press(&mut s, KeyCode::Char('c'));
        assert_eq!(s.status.as_deref(), Some("end of input"));
    }

    #[test]
    fn filter_editing() {
        let t0 = Instant::now();
        let mut s = UiState::new("test", Filter::default());
        s.push(rec(5432, "db", "deny"), t0);
        s.push(rec(53, "kube-system", "dns"), t0);
        press(&mut s, KeyCode::Char('/'));
        type_str(&mut s, "port=nope");
        press(&mut s, KeyCode::Enter);
        assert!(matches!(&s.mode, Mode::Filter { error: Some(e), .. } if e.contains("not a port")));
        for _ in 0..4 {
            press(&mut s, KeyCode::Backspace);
        }
        type_str(&mut s, "53");
        press(&mut s, KeyCode::Enter);
        assert_eq!(s.mode, Mode::Normal);
        assert_eq!(s.visible().count(), 1);
        assert_eq!(s.top(t0)[0].key, "kube-system/dns");
        // Esc while editing cancels; Esc or q in the list quits.
        press(&mut s, KeyCode::Char('/'));
        press(&mut s, KeyCode::Esc);
        assert!(!s.quit && s.filter.ports == vec![53]);
        press(&mut s, KeyCode::Char('q'));
        assert!(s.quit);
    }
}
