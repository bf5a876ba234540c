//! Keys and the one-line text input of `perstack start`.
//!
//! Owns the key map (Perstack's keys: ↑/↓, Enter, `b`/Esc, `i`, `h`, `n`, `c`, `e`, `q`,
//! Ctrl-C) and the line editor the query, follow-up and answer inputs share. Pure: no terminal
//! access; the session feeds it crossterm's key events.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key means outside text input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// ↑.
    Up,
    /// ↓.
    Down,
    /// Enter: select or resume.
    Enter,
    /// `b` or Esc: back.
    Back,
    /// `i`: input mode.
    Input,
    /// `h`: job history.
    History,
    /// `n`: new run.
    New,
    /// `c`: checkpoints.
    Checkpoints,
    /// `e`: events.
    Events,
    /// `q`: quit.
    Quit,
    /// Ctrl-C: cancel the job, or quit when none runs. In raw mode the terminal sends it as a
    /// key, not as SIGINT.
    Interrupt,
    /// Anything else.
    Other,
}

impl Key {
    /// The meaning of `event` outside text input (`None` for key releases).
    pub(crate) fn of(event: &KeyEvent) -> Option<Key> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        if is_interrupt(event) {
            return Some(Key::Interrupt);
        }
        Some(match event.code {
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc | KeyCode::Char('b') => Key::Back,
            KeyCode::Char('i') => Key::Input,
            KeyCode::Char('h') => Key::History,
            KeyCode::Char('n') => Key::New,
            KeyCode::Char('c') => Key::Checkpoints,
            KeyCode::Char('e') => Key::Events,
            KeyCode::Char('q') => Key::Quit,
            _ => Key::Other,
        })
    }
}

/// Whether `event` is Ctrl-C.
pub(crate) fn is_interrupt(event: &KeyEvent) -> bool {
    event.modifiers.contains(KeyModifiers::CONTROL) && event.code == KeyCode::Char('c')
}

/// What a key did to a [`LineInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    /// The text changed or the key was ignored.
    Editing,
    /// Enter: the text, taken out.
    Submit(String),
    /// Esc: input abandoned.
    Cancel,
}

/// A one-line text input. At most [`LineInput::CAP`] characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LineInput {
    text: String,
}

impl LineInput {
    /// Characters an input holds; more are ignored (a pasted file would not fit a line).
    pub(crate) const CAP: usize = 4096;

    /// Apply `event`.
    pub(crate) fn key(&mut self, event: &KeyEvent) -> Edit {
        if event.kind == KeyEventKind::Release {
            return Edit::Editing;
        }
        match event.code {
            KeyCode::Enter => Edit::Submit(std::mem::take(&mut self.text)),
            KeyCode::Esc => Edit::Cancel,
            KeyCode::Backspace => {
                self.text.pop();
                Edit::Editing
            }
            KeyCode::Char(c)
                if !event.modifiers.contains(KeyModifiers::CONTROL)
                    && self.text.chars().count() < Self::CAP =>
            {
                self.text.push(c);
                Edit::Editing
            }
            _ => Edit::Editing,
        }
    }

    /// The text typed so far.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn perstack_keys_map_to_their_meanings() {
        assert_eq!(Key::of(&key(KeyCode::Up)), Some(Key::Up));
        assert_eq!(Key::of(&key(KeyCode::Esc)), Some(Key::Back));
        assert_eq!(Key::of(&key(KeyCode::Char('b'))), Some(Key::Back));
        assert_eq!(Key::of(&key(KeyCode::Char('c'))), Some(Key::Checkpoints));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(Key::of(&ctrl_c), Some(Key::Interrupt));
        assert_eq!(Key::of(&key(KeyCode::Char('z'))), Some(Key::Other));
    }

    #[test]
    fn the_line_input_edits_submits_and_cancels() {
        let mut input = LineInput::default();
        for c in "hix".chars() {
            assert_eq!(input.key(&key(KeyCode::Char(c))), Edit::Editing);
        }
        input.key(&key(KeyCode::Backspace));
        assert_eq!(input.text(), "hi");
        assert_eq!(input.key(&key(KeyCode::Enter)), Edit::Submit("hi".into()));
        assert_eq!(input.text(), "");
        assert_eq!(input.key(&key(KeyCode::Esc)), Edit::Cancel);
    }
}
