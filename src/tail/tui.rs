//! `-i`: the full-screen live view (ratatui + crossterm).
//!
//! Shaped as bottom and bandwhich are: the source runs on its own thread and sends items over a
//! bounded channel; the main thread owns one [`UiState`], feeds it items and key presses, and
//! draws it ([`draw`]) every 200 ms.
//!
//! The terminal is restored (raw mode off, the normal screen back, the cursor shown) on every
//! way out: `q`, an error, a panic on any thread (the panic hook restores, reports and exits
//! with 101), and SIGINT, SIGTERM or SIGHUP. Those signals are blocked in every thread of the
//! view and taken by one thread with `sigwait`; the main loop sees the request within a frame,
//! restores the terminal and then dies of the same signal, so its parent sees the conventional
//! status (130, 143, 129 in a shell). Should the main loop not get there within two seconds,
//! the signal thread restores the terminal and ends the process itself.

mod draw;
mod state;

pub use draw::draw;
pub use state::{Entry, Mode, Table, TopRow, UiState};

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};
use crossterm::{cursor, execute, terminal};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use super::record::Item;
use super::{pcap, Error, Options, Source, SourceSpec};

/// What the source thread sends.
enum Msg {
    Item(Item),
    End(Option<String>),
}

/// The signals that end the view after restoring the terminal.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The stop signal received (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

/// Runs the view until `q` (or a stop signal, after which the process does not return).
pub fn run(source: Box<dyn Source>, opts: &Options) -> Result<(), Error> {
    let mut writer = match &opts.write {
        Some(path) => Some(pcap::Writer::create(path)?),
        None => None,
    };
    let mut state = UiState::new(&label(&opts.source), opts.filter.clone());
    if matches!(opts.source, SourceSpec::File(_)) {
        state = state.replay();
    }
    // Before any thread starts, so that every thread inherits the mask.
    catch_stop_signals();
    install_panic_hook();
    let rx = spawn_source(source);
    let mut terminal = init_terminal().map_err(|e| {
        restore_terminal();
        Error::Terminal(e)
    })?;
    let result = event_loop(&mut terminal, &rx, &mut state, &mut writer);
    restore_terminal();
    let _ = terminal.show_cursor();
    let sig = STOP.load(Ordering::SeqCst);
    if sig != 0 {
        die_of(sig);
    }
    result
}

fn init_terminal() -> io::Result<Terminal<CrosstermBackend<io::Stdout>>> {
    terminal::enable_raw_mode()?;
    execute!(io::stdout(), terminal::EnterAlternateScreen)?;
    Terminal::new(CrosstermBackend::new(io::stdout()))
}

/// Raw mode off, the normal screen back, the cursor shown. Safe to call more than once and
/// from any thread; errors are ignored (there is nothing better to do with them on the way out).
pub fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// A panic anywhere (the source thread too) restores the terminal, reports, and ends the
/// process: the view cannot go on without its source, and must not leave the terminal raw.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
        std::process::exit(101);
    }));
}

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the stop signals in this thread (and so in every thread it starts afterwards) and
/// starts the thread that waits for them.
fn catch_stop_signals() {
    let set = stop_set();
    // SAFETY: a valid, initialised set; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    std::thread::spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` and `sig` are valid for the call.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        STOP.store(sig, Ordering::SeqCst);
        // The main loop normally restores and exits within a frame; if it is stuck, do it here.
        std::thread::sleep(Duration::from_secs(2));
        restore_terminal();
        die_of(sig);
    });
}

/// Ends the process as the signal's default action would, so the parent sees the signal; exits
/// with 128 + the signal's number should it survive that.
fn die_of(sig: libc::c_int) -> ! {
    let mut set = stop_set();
    // SAFETY: plain libc calls on valid arguments; the default action of these signals ends
    // the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
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
    terminal: &mut Terminal<CrosstermBackend<io::Stdout>>,
    rx: &Receiver<Msg>,
    state: &mut UiState,
    writer: &mut Option<pcap::Writer>,
) -> Result<(), Error> {
    let mut source_open = true;
    while !state.quit && STOP.load(Ordering::SeqCst) == 0 {
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
                state.end(why, now);
                return Ok(false);
            }
            Err(TryRecvError::Empty) => return Ok(true),
            Err(TryRecvError::Disconnected) => return Ok(false),
        }
    }
    Ok(true)
}
