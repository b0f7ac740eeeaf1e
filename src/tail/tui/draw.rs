//! Drawing the interactive view from a [`UiState`]; nothing here changes state.

use std::time::Instant;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::super::output::sanitize;
use super::state::{Entry, Feed, Mode, UiState};

pub fn draw(f: &mut Frame<'_>, s: &UiState, now: Instant) {
    let [header, events, table, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(12),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header_line(s)), header);
    draw_events(f, s, events);
    draw_table(f, s, table, now);
    f.render_widget(Paragraph::new(footer_line(s)), footer);
}

fn header_line(s: &UiState) -> Line<'static> {
    let shown = s.visible().count();
    let mut spans = vec![
        Span::styled(
            " nflog-tail ",
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(format!(" {}  {shown} events", s.source)),
    ];
    if s.paused {
        spans.push(Span::styled(
            format!("  PAUSED ({} new)", s.held()),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    } else {
        let (word, color) = match s.feed {
            Feed::Live => ("  LIVE", Color::Green),
            Feed::Replay => ("  REPLAY", Color::Cyan),
            Feed::Ended => ("  END", Color::Yellow),
        };
        spans.push(Span::styled(word, Style::new().fg(color)));
    }
    if !s.filter.is_empty() {
        spans.push(Span::styled(
            format!("  filter: {}", s.filter),
            Style::new().fg(Color::Cyan),
        ));
    }
    if s.lost > 0 {
        spans.push(Span::styled(
            format!("  lost {}", s.lost),
            Style::new().fg(Color::Red),
        ));
    }
    if s.suppressed > 0 {
        spans.push(Span::raw(format!("  rate-limited {}", s.suppressed)));
    }
    Line::from(spans)
}

fn event_line(e: &Entry) -> Line<'_> {
    let c = &e.compact;
    let mut spans = vec![
        Span::styled(c.time.as_str(), Style::new().add_modifier(Modifier::DIM)),
        Span::raw(" "),
        Span::styled(
            c.policy.as_str(),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Span::raw(" "),
        Span::styled(c.src.as_str(), Style::new().fg(Color::Cyan)),
        Span::raw(" → "),
        Span::styled(c.dest.as_str(), Style::new().fg(Color::Magenta)),
        Span::raw(" "),
        Span::styled(c.proto.as_str(), Style::new().fg(Color::Green)),
    ];
    if !c.direction.is_empty() {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            c.direction.as_str(),
            Style::new().fg(Color::Blue),
        ));
    }
    Line::from(spans)
}

fn draw_events(f: &mut Frame<'_>, s: &UiState, area: Rect) {
    let rows = area.height.saturating_sub(2) as usize;
    let visible: Vec<&Entry> = s.visible().collect();
    let end = visible
        .len()
        .saturating_sub(s.scroll.min(visible.len().saturating_sub(rows)));
    let start = end.saturating_sub(rows);
    let lines: Vec<Line<'_>> = visible[start..end].iter().map(|e| event_line(e)).collect();
    let title = if s.scroll > 0 {
        format!(
            " Events (scrolled up {}; End to follow) ",
            visible.len() - end
        )
    } else {
        " Events ".to_string()
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_table(f: &mut Frame<'_>, s: &UiState, area: Rect, now: Instant) {
    let rows: Vec<Row<'_>> = s
        .top(now)
        .into_iter()
        .take(area.height.saturating_sub(3) as usize)
        .map(|r| Row::new(vec![r.key, r.count.to_string(), format!("{:.1}", r.rate)]))
        .collect();
    let header = Row::new(vec![s.table.column(), "COUNT", "RATE/s"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(10),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(Block::bordered().title(format!(" {} (t: next table) ", s.table.title())));
    f.render_widget(table, area);
}

fn footer_line(s: &UiState) -> Line<'_> {
    match &s.mode {
        Mode::Filter {
            input,
            cursor,
            error,
        } => {
            // The cursor is the character under it in reverse video, or a block at the end.
            let at = (*cursor).min(input.len());
            let at = (0..=at)
                .rev()
                .find(|&i| input.is_char_boundary(i))
                .unwrap_or(0);
            let (before, rest) = input.split_at(at);
            let mut chars = rest.chars();
            let under = chars.next();
            let mut spans = vec![
                Span::styled(" filter: ", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(sanitize(before).into_owned()),
            ];
            match under {
                Some(c) => {
                    spans.push(Span::styled(
                        sanitize(&c.to_string()).into_owned(),
                        Style::new().add_modifier(Modifier::REVERSED),
                    ));
                    spans.push(Span::raw(sanitize(chars.as_str()).into_owned()));
                }
                None => spans.push(Span::styled(
                    "█",
                    Style::new().add_modifier(Modifier::SLOW_BLINK),
                )),
            }
            match error {
                Some(e) => spans.push(Span::styled(format!("   {e}"), Style::new().fg(Color::Red))),
                None => spans.push(Span::styled(
                    "   Enter apply · Esc cancel · e.g. port=5432 ns=default",
                    Style::new().add_modifier(Modifier::DIM),
                )),
            }
            Line::from(spans)
        }
        Mode::Normal => {
            let keys = " q quit · p/space pause · / filter · c clear · t/Tab table · ↑↓ scroll";
            let mut spans = vec![Span::styled(keys, Style::new().add_modifier(Modifier::DIM))];
            if let Some(status) = &s.status {
                spans.push(Span::styled(
                    format!("   {status}"),
                    Style::new().fg(Color::Yellow),
                ));
            }
            Line::from(spans)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::super::super::filter::Filter;
    use super::super::super::record::{Item, Record};
    use super::*;

    fn rec(port: u16, ns: &str, name: &str, prefix_extra: &str) -> Item {
        let line = format!(
            "Nov 27 20:59:32 h DROP by policy {ns}/{name}{prefix_extra} IN= OUT=lo MAC= SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=40000 DPT={port} SEQ=1 ACK=0 WINDOW=1024 SYN URGP=0 MARK=0x0 "
        );
        Item::Event(Box::new(Record::from_syslogemu(&line).unwrap()))
    }

    fn screen(s: &UiState, now: Instant) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
        t.draw(|f| draw(f, s, now)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shows_events_and_top_table() {
        let t0 = Instant::now();
        let mut s = UiState::new("direct: NFLOG group 100", Filter::default());
        for _ in 0..3 {
            s.push(rec(5432, "db", "deny-db", ""), t0);
        }
        s.push(rec(53, "kube-system", "dns", ""), t0);
        let text = screen(&s, t0 + Duration::from_secs(1));
        assert!(
            text.contains("direct: NFLOG group 100  4 events  LIVE"),
            "{text}"
        );
        assert!(
            text.contains("20:59:32 db/deny-db 10.0.0.1:40000 → 10.0.0.2:5432 TCP SYN"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.contains("│db/deny-db"))
            .expect(&text);
        assert!(row.contains("3") && row.contains("0.3"), "{row}");
        assert!(text.contains("q quit · p/space pause"), "{text}");

        s.key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE));
        for c in "port=53".chars() {
            s.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        assert!(screen(&s, t0).contains(" filter: port=53█"));
        s.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        let text = screen(&s, t0);
        assert!(text.contains("1 events  LIVE  filter: port=53"), "{text}");
        assert!(!text.contains("db/deny-db"), "{text}");
    }

    #[test]
    fn replay_status_and_the_cursor() {
        let t0 = Instant::now();
        let mut s = UiState::new("file: x.log", Filter::default()).replay();
        s.push(rec(1, "a", "b", ""), t0);
        let text = screen(&s, t0);
        assert!(text.contains("file: x.log  1 events  REPLAY"), "{text}");
        assert!(!text.contains("LIVE"), "{text}");
        s.end(None, t0);
        let text = screen(&s, t0);
        assert!(text.contains("1 events  END"), "{text}");
        assert!(text.contains("end of input"), "{text}");
        // The cursor in the middle of the filter line: the text around it is all there.
        s.key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE));
        for c in "port=53".chars() {
            s.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        s.key(KeyEvent::new(KeyCode::Left, KeyModifiers::NONE));
        assert!(screen(&s, t0).contains(" filter: port=53   Enter apply"));
        s.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        assert!(screen(&s, t0).contains(" filter: 3   Enter apply"));
    }

    #[test]
    fn hostile_prefixes_are_drawn_escaped() {
        let t0 = Instant::now();
        let mut s = UiState::new("x", Filter::default());
        s.push(rec(1, "a", "b\u{1b}[2J", ""), t0);
        let text = screen(&s, t0);
        assert!(text.contains(r"a/b\x1b[2J"), "{text}");
    }
}
