//! `perstack start`: the interactive terminal workbench, on ratatui and crossterm.
//!
//! The workbench is one more subscriber of the engine's event stream: it starts and continues
//! jobs through the same [`Engine`](crate::engine::Engine) as `perstack run` (same events and
//! checkpoints stored), with no stdout sink (stdout is the screen).
//!
//! | module        | owns                                                                 |
//! |---------------|----------------------------------------------------------------------|
//! | `view_model`  | events → the job's run tree, texts, tool calls, status panel (pure)  |
//! | `app`         | screens, cursors, input mode, keys → commands (pure)                 |
//! | `input`       | Perstack's key map and the line editor (pure)                        |
//! | `views`       | drawing each screen from `app` + `view_model` at a given time        |
//! | `terminal`    | raw mode and the alternate screen, restored on drop and on panic     |
//! | `session`     | the loop: keys, job outcomes, signals, draining events, redraws      |

pub(crate) mod app;
pub(crate) mod input;
pub(crate) mod session;
pub(crate) mod terminal;
#[cfg(test)]
mod testing;
pub(crate) mod view_model;
pub(crate) mod views;
