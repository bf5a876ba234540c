//! The terminal of `perstack start`: raw mode and the alternate screen while the workbench
//! runs, restored on every way out.
//!
//! Owns entering and leaving. [`TerminalGuard`] restores the terminal when dropped (normal exit,
//! an error, SIGTERM handled by the session); a panic hook installed by [`TerminalGuard::enter`]
//! restores it before the panic message is printed, so the message is readable. Never writes
//! anything else to stdout.

use std::io::{Stdout, Write};

use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal the workbench draws on.
pub(crate) type Screen = Terminal<CrosstermBackend<Stdout>>;

/// Raw mode and the alternate screen, undone on drop.
pub(crate) struct TerminalGuard {
    /// The drawing surface.
    pub screen: Screen,
}

impl TerminalGuard {
    /// Enter raw mode and the alternate screen, and make panics restore the terminal first.
    pub(crate) fn enter() -> std::io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode()?;
        let mut stdout = std::io::stdout();
        if let Err(e) = crossterm::execute!(stdout, EnterAlternateScreen) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(mut screen) => {
                let _ = screen.hide_cursor();
                let _ = screen.clear();
                Ok(TerminalGuard { screen })
            }
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.screen.show_cursor();
        restore();
    }
}

/// Leave the alternate screen and raw mode (idempotent; errors ignored: there is nowhere left
/// to report them).
fn restore() {
    let mut stdout = std::io::stdout();
    let _ = crossterm::execute!(stdout, LeaveAlternateScreen, crossterm::cursor::Show);
    let _ = disable_raw_mode();
    let _ = stdout.flush();
}
