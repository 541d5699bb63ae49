//! The view's own state (which screen, what is selected, paused) and what each key does
//! to it. Pure: the event loop feeds keys in and acts on the [`Action`] that comes out.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::Model;

/// Which screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A latency graph with a stats row per target.
    Graph,
    /// The server browser: one row per server, sorted by latency.
    Browser,
}

/// The state of the view.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    /// Which screen.
    pub mode: Mode,
    /// Pinging and the clock are stopped.
    pub paused: bool,
    /// The selected target (an index into the model's entries, so the selection follows
    /// the server when the rows are re-sorted).
    pub selected: usize,
    /// The details of the selected server are shown (browser).
    pub detail: bool,
    /// Lines scrolled in the details.
    pub detail_scroll: u16,
    /// Seconds of time the graph shows.
    pub window: f64,
    /// Seconds between pings of a target (shown in the title).
    pub interval: f64,
}

impl View {
    /// A view that starts in `mode`.
    pub(crate) fn new(mode: Mode, interval: f64, window: f64) -> View {
        View {
            mode,
            paused: false,
            selected: 0,
            detail: false,
            detail_scroll: 0,
            window,
            interval,
        }
    }
}

/// What the event loop has to do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing changed.
    Nothing,
    /// Draw again.
    Redraw,
    /// Pause or resume pinging (the view's `paused` already says which), and draw again.
    Pause,
    /// Leave.
    Quit,
}

impl View {
    /// Applies a key to the view.
    pub(crate) fn on_key(&mut self, key: KeyEvent, model: &Model) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => Action::Quit,
            KeyCode::Char('q') | KeyCode::Char('Q') => Action::Quit,
            // Esc first closes the details, then quits.
            KeyCode::Esc if self.detail => {
                self.detail = false;
                Action::Redraw
            }
            KeyCode::Esc => Action::Quit,
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                Action::Pause
            }
            KeyCode::Tab => {
                self.mode = match self.mode {
                    Mode::Graph => Mode::Browser,
                    Mode::Browser => Mode::Graph,
                };
                self.detail = false;
                Action::Redraw
            }
            KeyCode::Enter if self.mode == Mode::Browser => {
                self.detail = !self.detail;
                self.detail_scroll = 0;
                Action::Redraw
            }
            KeyCode::Backspace if self.detail => {
                self.detail = false;
                Action::Redraw
            }
            KeyCode::Up | KeyCode::Char('k') if self.detail => {
                self.detail_scroll = self.detail_scroll.saturating_sub(1);
                Action::Redraw
            }
            KeyCode::Down | KeyCode::Char('j') if self.detail => {
                self.detail_scroll = self.detail_scroll.saturating_add(1);
                Action::Redraw
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(model, -1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(model, 1),
            KeyCode::Home => self.move_selection(model, isize::MIN),
            KeyCode::End => self.move_selection(model, isize::MAX),
            _ => Action::Nothing,
        }
    }

    /// Moves the selection `by` rows in the current (latency) order, stopping at the ends.
    fn move_selection(&mut self, model: &Model, by: isize) -> Action {
        let order = model.by_latency();
        if order.is_empty() {
            return Action::Nothing;
        }
        let at = order.iter().position(|&i| i == self.selected).unwrap_or(0);
        let to = at.saturating_add_signed(by).min(order.len() - 1);
        self.selected = order[to];
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::model::{Outcome, Sample, Update};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn model() -> Model {
        let mut m = Model::new(["a", "b", "c"]);
        for (index, rtt_ms) in [(0, 3.0), (1, 1.0), (2, 2.0)] {
            m.push(Update {
                index,
                sample: Sample {
                    at: 0.0,
                    outcome: Outcome::Reply { rtt_ms },
                },
                addr: None,
                data: None,
                error: None,
            });
        }
        m
    }

    #[test]
    fn quit_keys() {
        let m = model();
        let mut v = View::new(Mode::Graph, 1.0, 60.0);
        assert_eq!(v.on_key(key(KeyCode::Char('q')), &m), Action::Quit);
        assert_eq!(v.on_key(key(KeyCode::Esc), &m), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(v.on_key(ctrl_c, &m), Action::Quit);
        assert_eq!(v.on_key(key(KeyCode::Char('c')), &m), Action::Nothing);
        let mut release = key(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(v.on_key(release, &m), Action::Nothing);
    }

    #[test]
    fn pause_toggles() {
        let m = model();
        let mut v = View::new(Mode::Graph, 1.0, 60.0);
        assert_eq!(v.on_key(key(KeyCode::Char('p')), &m), Action::Pause);
        assert!(v.paused);
        assert_eq!(v.on_key(key(KeyCode::Char('p')), &m), Action::Pause);
        assert!(!v.paused);
    }

    #[test]
    fn arrows_follow_the_latency_order_and_enter_opens_details() {
        let m = model();
        // Order by latency: b (1 ms), c (2 ms), a (3 ms).
        let mut v = View::new(Mode::Browser, 1.0, 60.0);
        v.selected = 1;
        assert_eq!(v.on_key(key(KeyCode::Down), &m), Action::Redraw);
        assert_eq!(v.selected, 2);
        v.on_key(key(KeyCode::Down), &m);
        assert_eq!(v.selected, 0);
        v.on_key(key(KeyCode::Down), &m);
        assert_eq!(v.selected, 0, "stops at the last row");
        v.on_key(key(KeyCode::Home), &m);
        assert_eq!(v.selected, 1);
        v.on_key(key(KeyCode::Up), &m);
        assert_eq!(v.selected, 1, "stops at the first row");

        assert_eq!(v.on_key(key(KeyCode::Enter), &m), Action::Redraw);
        assert!(v.detail);
        v.on_key(key(KeyCode::Down), &m);
        assert_eq!(
            (v.selected, v.detail_scroll),
            (1, 1),
            "arrows scroll the details"
        );
        // Esc closes the details before it quits.
        assert_eq!(v.on_key(key(KeyCode::Esc), &m), Action::Redraw);
        assert!(!v.detail);
        assert_eq!(v.on_key(key(KeyCode::Esc), &m), Action::Quit);
    }

    #[test]
    fn tab_switches_the_screen_and_enter_is_for_the_browser() {
        let m = model();
        let mut v = View::new(Mode::Graph, 1.0, 60.0);
        assert_eq!(v.on_key(key(KeyCode::Enter), &m), Action::Nothing);
        assert!(!v.detail);
        v.on_key(key(KeyCode::Tab), &m);
        assert_eq!(v.mode, Mode::Browser);
        v.on_key(key(KeyCode::Tab), &m);
        assert_eq!(v.mode, Mode::Graph);
        let empty = Model::default();
        assert_eq!(v.on_key(key(KeyCode::Down), &empty), Action::Nothing);
    }
}
