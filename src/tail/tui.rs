//! `-i`: the full-screen live view (ratatui + crossterm).
//!
//! Shaped as bottom and bandwhich are: the source runs on its own thread and sends items over a
//! bounded channel; the main thread owns one [`UiState`], feeds it items and key presses, and
//! draws it ([`draw`]) every 200 ms. The terminal is restored on exit, on error, and (through
//! ratatui's panic hook) on panic.

mod draw;
mod state;

pub use draw::draw;
pub use state::{Entry, Mode, Table, TopRow, UiState};

use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};

use super::record::Item;
use super::{pcap, Error, Options, Source, SourceSpec};

/// What the source thread sends.
enum Msg {
    Item(Item),
    End(Option<String>),
}

/// Runs the view until `q`.
pub fn run(source: Box<dyn Source>, opts: &Options) -> Result<(), Error> {
    let rx = spawn_source(source);
    let mut writer = match &opts.write {
        Some(path) => Some(pcap::Writer::create(path)?),
        None => None,
    };
    let mut state = UiState::new(&label(&opts.source), opts.filter.clone());
    let mut terminal = ratatui::try_init().map_err(Error::Terminal)?;
    let result = event_loop(&mut terminal, &rx, &mut state, &mut writer);
    ratatui::try_restore().map_err(Error::Terminal)?;
    result
}

fn label(source: &SourceSpec) -> String {
    match source {
        SourceSpec::Daemon { path, .. } => format!("daemon: {}", path.display()),
        SourceSpec::Direct { group } => format!("direct: NFLOG group {group}"),
        SourceSpec::File(path) => format!("file: {}", path.display()),
    }
}

fn spawn_source(mut source: Box<dyn Source>) -> Receiver<Msg> {
    let (tx, rx) = mpsc::sync_channel(4096);
    std::thread::spawn(move || loop {
        let msg = match source.next_item() {
            Ok(Some(item)) => Msg::Item(item),
            Ok(None) => Msg::End(None),
            Err(e) => Msg::End(Some(e.to_string())),
        };
        let end = matches!(msg, Msg::End(_));
        if tx.send(msg).is_err() || end {
            return;
        }
    });
    rx
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    rx: &Receiver<Msg>,
    state: &mut UiState,
    writer: &mut Option<pcap::Writer>,
) -> Result<(), Error> {
    let mut source_open = true;
    while !state.quit {
        terminal
            .draw(|f| draw(f, state, Instant::now()))
            .map_err(Error::Terminal)?;
        if event::poll(Duration::from_millis(200)).map_err(Error::Terminal)? {
            if let Event::Key(key) = event::read().map_err(Error::Terminal)? {
                state.key(key);
            }
        }
        if source_open {
            source_open = drain(rx, state, writer)?;
        }
    }
    Ok(())
}

/// Moves what the source sent into the state; `false` once the source ended.
fn drain(
    rx: &Receiver<Msg>,
    state: &mut UiState,
    writer: &mut Option<pcap::Writer>,
) -> Result<bool, Error> {
    let now = Instant::now();
    // Bounded per frame so a flood cannot freeze the keyboard.
    for _ in 0..20_000 {
        match rx.try_recv() {
            Ok(Msg::Item(item)) => {
                if let (Some(w), Item::Event(r)) = (writer.as_mut(), &item) {
                    if state.filter.matches(r) {
                        w.write(r)?;
                    }
                }
                state.push(item, now);
            }
            Ok(Msg::End(why)) => {
                let text = why.unwrap_or_else(|| "end of input".into());
                state.push(Item::Notice(text), now);
                return Ok(false);
            }
            Err(TryRecvError::Empty) => return Ok(true),
            Err(TryRecvError::Disconnected) => return Ok(false),
        }
    }
    Ok(true)
}
