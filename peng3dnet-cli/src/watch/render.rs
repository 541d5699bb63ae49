//! Drawing: a pure function of the model, the view and the time, onto a ratatui frame.
//!
//! Two screens:
//! - the graph: a braille line of latency over time per target (in its colour), its
//!   timeouts (`×`) and errors (`!`) marked on the time axis below, and a stats row per
//!   target that is also the legend;
//! - the browser: one row per server (name, target, motd, clients, latency, a sparkline
//!   of its latest results, state), sorted by latency, with a details pop-up.
//!
//! Every string that comes from a server or a file goes through [`clean`] first.

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{self, Canvas};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::model::{clean, Entry, Model, Outcome, State};
use super::view::{Mode, View};
use crate::output;

/// The smallest screen drawn; smaller gets a message instead.
pub(crate) const MIN_WIDTH: u16 = 30;
/// See [`MIN_WIDTH`].
pub(crate) const MIN_HEIGHT: u16 = 6;

/// The targets' colours, in the order given (repeating after the last).
const PALETTE: [Color; 10] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::LightBlue,
    Color::LightRed,
    Color::White,
    Color::LightYellow,
    Color::LightMagenta,
    Color::LightGreen,
];

/// Mark of a timeout on the time axis and in sparklines.
const TIMEOUT_MARK: char = '×';
/// Mark of another failure.
const ERROR_MARK: char = '!';
/// Results shown in a browser row's sparkline.
const SPARK_LEN: usize = 16;
/// Longest server string drawn in a table cell (the details show up to [`DETAIL_MAX`]).
const CELL_MAX: usize = 200;
/// Longest line drawn in the details.
const DETAIL_MAX: usize = 2000;

/// The colour of the target at `index`.
pub(crate) fn color(index: usize) -> Color {
    PALETTE[index % PALETTE.len()]
}

/// Draws the whole screen. `now` is the time shown, in seconds since the watch started.
pub(crate) fn draw(frame: &mut Frame, model: &Model, view: &View, now: f64) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small ({}x{}; {MIN_WIDTH}x{MIN_HEIGHT} needed), q quits",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [title, body, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(model, view), title);
    match view.mode {
        Mode::Graph => draw_graph(frame, model, view, now, body),
        Mode::Browser => draw_browser(frame, model, view, body),
    }
    frame.render_widget(keys_line(view), keys);
}

fn title_line<'a>(model: &Model, view: &View) -> Line<'a> {
    let up = model
        .entries
        .iter()
        .filter(|e| e.state() == State::Up)
        .count();
    let mut spans = vec![
        Span::styled("peng3dnet watch", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {} target{}, {up} up, every {}s",
            model.entries.len(),
            if model.entries.len() == 1 { "" } else { "s" },
            number(view.interval)
        )),
    ];
    if view.mode == Mode::Graph {
        spans.push(Span::raw(format!(", last {}s", number(view.window))));
    }
    if view.paused {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            " PAUSED ",
            Style::new().add_modifier(Modifier::REVERSED),
        ));
    }
    Line::from(spans)
}

fn keys_line<'a>(view: &View) -> Line<'a> {
    let text = match (view.mode, view.detail) {
        (Mode::Browser, true) => "↑↓ scroll  Esc/Enter close  p pause  q quit",
        (Mode::Browser, false) => "↑↓ select  Enter details  p pause  Tab graph  q quit",
        (Mode::Graph, _) => "p pause  Tab server list  q quit",
    };
    Line::styled(text, Style::new().fg(Color::DarkGray))
}

/// A number of seconds or milliseconds without needless digits: `1`, `0.2`, `0.25`.
fn number(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// A round trip in ms as `ping` prints it (three significant digits), `-` when absent.
pub(crate) fn ms_text(ms: Option<f64>) -> String {
    ms.and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .map_or_else(|| "-".into(), output::format_rtt)
}

/// Loss with one decimal: `0.0%`, `33.3%`.
fn loss_text(entry: &Entry) -> String {
    if entry.stats.sent == 0 {
        "-".into()
    } else {
        format!("{:.1}%", entry.stats.loss_percent())
    }
}

fn state_style(state: State) -> Style {
    match state {
        State::Waiting => Style::new().fg(Color::DarkGray),
        State::Up => Style::new().fg(Color::Green),
        State::Timeout => Style::new().fg(Color::Yellow),
        State::Error(_) => Style::new().fg(Color::Red),
    }
}

/// The smallest of 1, 2, 5 times a power of ten at or above `x`.
fn nice_ceiling(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(x.log10().floor());
    let f = x / power;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// The terminal column (from the left of a `width`-column braille canvas) of time `t` in
/// `[left, left + span]`, computed as the canvas maps x to dots.
fn column(t: f64, left: f64, span: f64, width: u16) -> Option<u16> {
    if !(left..=left + span).contains(&t) || span <= 0.0 || width == 0 {
        return None;
    }
    let dots = f64::from(width) * 2.0;
    let dot = ((t - left) * (dots - 1.0) / span) as u16;
    Some((dot / 2).min(width - 1))
}

fn draw_graph(frame: &mut Frame, model: &Model, view: &View, now: f64, area: Rect) {
    // The stats table takes a row per target plus its header, at most half the body.
    let wanted = u16::try_from(model.entries.len() + 1).unwrap_or(u16::MAX);
    let table_height = wanted.min(area.height / 2).max(1);
    let [chart, stats] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(table_height)]).areas(area);
    draw_chart(frame, model, view, now, chart);
    draw_stats(frame, model, stats);
}

fn draw_chart(frame: &mut Frame, model: &Model, view: &View, now: f64, area: Rect) {
    let left = now - view.window;
    let visible = |e: &Entry| {
        e.samples
            .iter()
            .filter(|s| s.at >= left && s.at <= now)
            .cloned()
            .collect::<Vec<_>>()
    };
    let windows: Vec<_> = model.entries.iter().map(visible).collect();
    let highest = windows
        .iter()
        .flatten()
        .filter_map(|s| s.outcome.rtt_ms())
        .fold(0.0f64, f64::max);
    let top = nice_ceiling((highest * 1.1).max(0.01));
    let labels = [
        format!("{} ms", number(top)),
        number(top / 2.0),
        "0".to_owned(),
    ];
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u16 + 1;
    if area.height < 3 || area.width <= label_width + 2 {
        return;
    }
    let plot = Rect {
        x: area.x + label_width,
        y: area.y,
        width: area.width - label_width,
        height: area.height - 2,
    };
    let axis_y = area.y + area.height - 2;
    let ticks_y = area.y + area.height - 1;

    // Y labels: top, middle, bottom of the plot.
    let label_rows = [
        plot.y,
        plot.y + (plot.height - 1) / 2,
        plot.y + plot.height - 1,
    ];
    for (label, row) in labels.iter().zip(label_rows) {
        let cell = Rect::new(area.x, row, label_width - 1, 1);
        frame.render_widget(
            Line::styled(label.clone(), Style::new().fg(Color::DarkGray)).right_aligned(),
            cell,
        );
    }

    let canvas = Canvas::default()
        .marker(Marker::Braille)
        .x_bounds([left, now])
        .y_bounds([0.0, top])
        .paint(|ctx| {
            for (index, samples) in windows.iter().enumerate() {
                let colour = color(index);
                let mut previous: Option<(f64, f64)> = None;
                for sample in samples {
                    match sample.outcome.rtt_ms() {
                        Some(rtt) => {
                            let point = (sample.at, rtt.min(top));
                            if let Some((x1, y1)) = previous {
                                ctx.draw(&canvas::Line::new(x1, y1, point.0, point.1, colour));
                            } else {
                                ctx.draw(&canvas::Points {
                                    coords: &[point],
                                    color: colour,
                                });
                            }
                            previous = Some(point);
                        }
                        // A failure breaks the line.
                        None => previous = None,
                    }
                }
            }
        });
    frame.render_widget(canvas, plot);

    // The time axis, with the failures marked where they happened (later targets drawn
    // over earlier ones in the same column).
    let mut axis: Vec<Span> = (0..plot.width)
        .map(|_| Span::styled("─", Style::new().fg(Color::DarkGray)))
        .collect();
    for (index, samples) in windows.iter().enumerate() {
        for sample in samples {
            let mark = match sample.outcome {
                Outcome::Reply { .. } => continue,
                Outcome::Timeout => TIMEOUT_MARK,
                Outcome::Error { .. } => ERROR_MARK,
            };
            if let Some(col) = column(sample.at, left, view.window, plot.width) {
                axis[usize::from(col)] = Span::styled(
                    mark.to_string(),
                    Style::new().fg(color(index)).add_modifier(Modifier::BOLD),
                );
            }
        }
    }
    frame.render_widget(Line::from(axis), Rect::new(plot.x, axis_y, plot.width, 1));

    let ticks = Rect::new(plot.x, ticks_y, plot.width, 1);
    let grey = Style::new().fg(Color::DarkGray);
    frame.render_widget(
        Line::styled(format!("-{}s", number(view.window)), grey),
        ticks,
    );
    if plot.width >= 24 {
        frame.render_widget(
            Line::styled(format!("-{}s", number(view.window / 2.0)), grey).centered(),
            ticks,
        );
    }
    frame.render_widget(Line::styled("now", grey).right_aligned(), ticks);
}

fn draw_stats(frame: &mut Frame, model: &Model, area: Rect) {
    let header = Row::new(
        [
            "target", "last ms", "min", "avg", "max", "jitter", "p95", "loss",
        ]
        .map(|h| Cell::from(h).style(Style::new().add_modifier(Modifier::BOLD))),
    );
    let rows = model.entries.iter().enumerate().map(|(index, e)| {
        let s = &e.stats;
        let name = Line::from(vec![
            Span::styled("━━ ", Style::new().fg(color(index))),
            Span::styled(clean(&e.name, CELL_MAX), Style::new().fg(color(index))),
        ]);
        let state = e.state();
        let last = match state {
            State::Up => ms_text(s.last),
            State::Waiting => "…".into(),
            other => other.word().to_owned(),
        };
        Row::new(vec![
            Cell::from(name),
            Cell::from(last).style(state_style(state)),
            Cell::from(ms_text(s.min)),
            Cell::from(ms_text(s.avg)),
            Cell::from(ms_text(s.max)),
            Cell::from(ms_text(s.jitter)),
            Cell::from(ms_text(s.p95)),
            Cell::from(loss_text(e)),
        ])
    });
    let widths = [
        Constraint::Min(10),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    frame.render_widget(Table::new(rows, widths).header(header), area);
}

/// A sparkline of the latest results: `▁`..`█` scaled to the highest of them, failures
/// marked as on the time axis.
fn sparkline<'a>(entry: &Entry) -> Line<'a> {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = entry.samples.len().saturating_sub(SPARK_LEN);
    let recent: Vec<_> = entry.samples.iter().skip(skip).collect();
    let highest = recent
        .iter()
        .filter_map(|s| s.outcome.rtt_ms())
        .fold(0.0f64, f64::max);
    let spans = recent.iter().map(|s| match s.outcome {
        Outcome::Reply { rtt_ms } => {
            let level = if highest > 0.0 {
                ((rtt_ms / highest) * 7.0).round().clamp(0.0, 7.0) as usize
            } else {
                0
            };
            Span::styled(BARS[level].to_string(), Style::new().fg(Color::Green))
        }
        Outcome::Timeout => Span::styled(TIMEOUT_MARK.to_string(), Style::new().fg(Color::Yellow)),
        Outcome::Error { .. } => Span::styled(ERROR_MARK.to_string(), Style::new().fg(Color::Red)),
    });
    Line::from(spans.collect::<Vec<_>>())
}

/// `clients` of the server's data, with `/max` when the server gives its most clients
/// (under any of the keys `status` reads too).
fn clients_text(entry: &Entry) -> String {
    let max = peng3dnet::ping::MAX_CLIENTS_KEYS
        .iter()
        .find_map(|k| entry.field(k));
    match (entry.field("clients"), max) {
        (Some(c), Some(m)) => clean(&format!("{c}/{m}"), 20),
        (Some(c), None) => clean(&c, 20),
        (None, _) => "-".into(),
    }
}

/// The server's `name`, cleaned; `-` when it gave none.
fn server_name(entry: &Entry) -> String {
    entry
        .field("name")
        .map_or_else(|| "-".into(), |n| clean(&n, CELL_MAX))
}

fn draw_browser(frame: &mut Frame, model: &Model, view: &View, area: Rect) {
    let order = model.by_latency();
    let header = Row::new(
        [
            "", "server", "target", "motd", "clients", "latency", "history", "state",
        ]
        .map(|h| Cell::from(h).style(Style::new().add_modifier(Modifier::BOLD))),
    );
    let rows = order.iter().map(|&index| {
        let e = &model.entries[index];
        let state = e.state();
        let glyph = match state {
            State::Waiting => "…",
            State::Up => "●",
            State::Timeout => "×",
            State::Error(_) => "!",
        };
        let latency = match state {
            State::Up => format!("{} ms", ms_text(e.current_rtt())),
            _ => "-".into(),
        };
        Row::new(vec![
            Cell::from(glyph).style(state_style(state)),
            Cell::from(server_name(e)),
            Cell::from(clean(&e.name, CELL_MAX)),
            Cell::from(
                e.field("motd")
                    .map_or_else(String::new, |m| clean(&m, CELL_MAX)),
            ),
            Cell::from(clients_text(e)),
            Cell::from(latency),
            Cell::from(sparkline(e)),
            Cell::from(state.word()).style(state_style(state)),
        ])
    });
    // Name and target columns as wide as their longest entry, within bounds; the motd
    // takes what is left.
    let widest = |text: &dyn Fn(&Entry) -> String, min: usize, max: usize| {
        let w = model
            .entries
            .iter()
            .map(|e| Line::from(text(e)).width())
            .max()
            .unwrap_or(0);
        u16::try_from(w.clamp(min, max)).unwrap_or(u16::MAX)
    };
    let name_width = widest(&server_name, 6, 24);
    let target_width = widest(&|e| clean(&e.name, CELL_MAX), 6, 32);
    let widths = [
        Constraint::Length(1),
        Constraint::Length(name_width),
        Constraint::Length(target_width),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(SPARK_LEN as u16),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state =
        TableState::default().with_selected(order.iter().position(|&i| i == view.selected));
    frame.render_stateful_widget(table, area, &mut state);

    if view.detail {
        if let Some(entry) = model.entries.get(view.selected) {
            draw_detail(frame, entry, view, area);
        }
    }
}

/// The lines of the details pop-up of a server.
pub(crate) fn detail_lines(entry: &Entry) -> Vec<String> {
    let s = &entry.stats;
    let state = entry.state();
    let mut lines = vec![
        format!("target:  {}", clean(&entry.name, DETAIL_MAX)),
        format!(
            "address: {}",
            entry.addr.map_or_else(|| "-".into(), |a| a.to_string())
        ),
        format!("state:   {}", state.word()),
    ];
    if state != State::Up {
        if let Some(message) = &entry.last_error {
            lines.push(format!("error:   {}", clean(message, DETAIL_MAX)));
        }
    }
    lines.push(format!(
        "latency: {} ms (min {}, avg {}, max {})",
        ms_text(s.last),
        ms_text(s.min),
        ms_text(s.avg),
        ms_text(s.max),
    ));
    lines.push(format!(
        "jitter:  {} ms, p95 {} ms",
        ms_text(s.jitter),
        ms_text(s.p95)
    ));
    lines.push(format!("loss:    {} of {} pings", loss_text(entry), s.sent));
    lines.push(String::new());
    match &entry.data {
        Some(data) => {
            lines.push("data:".into());
            lines.extend(
                output::pretty(data, 2)
                    .lines()
                    .map(|line| clean(line, DETAIL_MAX)),
            );
        }
        None => lines.push("no data yet".into()),
    }
    lines
}

fn draw_detail(frame: &mut Frame, entry: &Entry, view: &View, area: Rect) {
    let popup = Rect {
        x: area.x + area.width / 10,
        y: area.y + area.height / 10,
        width: area.width - area.width / 5,
        height: area.height - area.height / 5,
    };
    let text: Vec<Line> = detail_lines(entry).into_iter().map(Line::from).collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text)
            .block(Block::bordered().title(format!(" {} ", clean(&entry.name, CELL_MAX))))
            .wrap(Wrap { trim: false })
            .scroll((view.detail_scroll, 0)),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::model::{Sample, Update};
    use peng3dnet::value::map;
    use peng3dnet::Value;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// The screen as text lines (wide characters take their cell, the next is skipped).
    fn screen(model: &Model, view: &View, now: f64, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, model, view, now)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer.cell((x, y)).map_or(" ", |c| c.symbol()).to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    fn push(m: &mut Model, index: usize, at: f64, outcome: Outcome) {
        m.push(Update {
            index,
            sample: Sample { at, outcome },
            addr: None,
            data: None,
            error: None,
        });
    }

    /// Two targets over 10 s: "alpha" answers about 1 ms and times out at 5 s, "beta"
    /// answers 2-4 ms and is refused at 8 s.
    fn two_targets() -> Model {
        let mut m = Model::new(["alpha:8080", "beta:9000"]);
        for i in 0..10 {
            let at = f64::from(i);
            if i == 5 {
                push(&mut m, 0, at, Outcome::Timeout);
            } else {
                push(
                    &mut m,
                    0,
                    at,
                    Outcome::Reply {
                        rtt_ms: 1.0 + f64::from(i % 2) * 0.2,
                    },
                );
            }
            if i == 8 {
                push(&mut m, 1, at, Outcome::Error { kind: "refused" });
            } else {
                push(
                    &mut m,
                    1,
                    at,
                    Outcome::Reply {
                        rtt_ms: 2.0 + f64::from(i % 3),
                    },
                );
            }
        }
        m
    }

    fn row_with<'a>(lines: &'a [String], text: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?} in\n{}", lines.join("\n")))
    }

    #[test]
    fn graph_shows_lines_stats_and_failures_on_the_time_axis() {
        let m = two_targets();
        let view = View::new(Mode::Graph, 1.0, 10.0);
        let lines = screen(&m, &view, 9.5, 80, 20);
        let text = lines.join("\n");
        assert!(
            lines[0].contains("peng3dnet watch  2 targets, 2 up, every 1s, last 10s"),
            "{text}"
        );
        let braille = |c: char| ('\u{2801}'..='\u{28ff}').contains(&c);
        assert!(text.chars().any(braille), "no braille line:\n{text}");
        // The y axis: the highest round trip is 4 ms, so the top is 5 ms.
        assert!(row_with(&lines, "5 ms").starts_with("5 ms"), "{text}");
        // Stats rows, as the legend: alpha 1.0/1.2 ms (timeout at 5 s: 10% loss); last
        // 1.20, min 1.00, avg 9.8/9, jitter 1.4/8 (eight successive pairs).
        let alpha = row_with(&lines, "━━ alpha:8080");
        for figure in ["1.20", "1.00", "1.09", "0.175", "10.0%"] {
            assert!(alpha.contains(figure), "{figure} not in {alpha:?}");
        }
        let beta = row_with(&lines, "━━ beta:9000");
        assert!(beta.contains("4.00") && beta.contains("10.0%"), "{beta:?}");
        // The time axis carries one timeout and one error mark.
        let axis = row_with(&lines, "─");
        assert_eq!(axis.matches('×').count(), 1, "{axis:?}");
        assert_eq!(axis.matches('!').count(), 1, "{axis:?}");
        assert!(
            axis.find('×') < axis.find('!'),
            "the timeout came first: {axis:?}"
        );
        assert!(
            row_with(&lines, "now").trim_start().starts_with("-10s"),
            "{text}"
        );
    }

    #[test]
    fn the_graph_only_shows_the_window() {
        let m = two_targets();
        // Only the last 3 s: the timeout at 5 s is out of view, the error at 8 s in it.
        let view = View::new(Mode::Graph, 1.0, 3.0);
        let lines = screen(&m, &view, 9.0, 80, 20);
        let axis = row_with(&lines, "─");
        assert_eq!(axis.matches('×').count(), 0, "{axis:?}");
        assert_eq!(axis.matches('!').count(), 1, "{axis:?}");
    }

    #[test]
    fn failure_marks_sit_where_they_happened() {
        // A timeout at the left edge, one in the middle, one at now.
        let mut m = Model::new(["t"]);
        for at in [0.0, 5.0, 10.0] {
            push(&mut m, 0, at, Outcome::Timeout);
        }
        let view = View::new(Mode::Graph, 1.0, 10.0);
        let lines = screen(&m, &view, 10.0, 60, 12);
        let axis = row_with(&lines, "─");
        let label_width = axis.chars().position(|c| c == '×' || c == '─').unwrap();
        let marks: Vec<usize> = axis
            .chars()
            .enumerate()
            .filter(|(_, c)| *c == '×')
            .map(|(i, _)| i - label_width)
            .collect();
        let plot_width = 60 - label_width;
        assert_eq!(
            marks,
            vec![0, (plot_width - 1) / 2, plot_width - 1],
            "{axis:?}"
        );
        // Nothing answered: the stats row says so.
        let row = row_with(&lines, "━━ t");
        assert!(row.contains("timeout") && row.contains("100.0%"), "{row:?}");
    }

    #[test]
    fn many_targets_in_the_browser_sorted_by_latency() {
        let n = 30;
        let names: Vec<String> = (0..n).map(|i| format!("host{i:02}:8080")).collect();
        let mut m = Model::new(names);
        for i in 0..n {
            let outcome = if i % 10 == 3 {
                Outcome::Timeout
            } else {
                // Slower as i grows, but host29 is the fastest.
                let rtt_ms = if i == 29 { 0.05 } else { 1.0 + i as f64 };
                Outcome::Reply { rtt_ms }
            };
            push(&mut m, i, 0.0, outcome);
            m.entries[i].data = Some(map([
                ("name", Value::from(format!("server {i}"))),
                ("motd", "welcome".into()),
                ("clients", Value::from(i)),
                // Both spellings servers use; `status` read both, `watch` only one.
                (
                    if i % 2 == 0 {
                        "maxplayers"
                    } else {
                        "maxclients"
                    },
                    64.into(),
                ),
            ]));
        }
        let mut view = View::new(Mode::Browser, 1.0, 60.0);
        view.selected = 29;
        let lines = screen(&m, &view, 1.0, 100, 40);
        let text = lines.join("\n");
        assert!(lines[0].contains("30 targets, 27 up"), "{text}");
        let first = lines[2].as_str();
        assert!(
            first.contains("server 29") && first.contains("0.050 ms"),
            "{text}"
        );
        assert!(
            first.contains("29/64") && first.contains("welcome"),
            "{first:?}"
        );
        assert!(
            lines[3].contains("server 0 ") && lines[3].contains("1.00 ms"),
            "{text}"
        );
        // Timeouts sort last.
        let pos = |name: &str| lines.iter().position(|l| l.contains(name));
        assert!(pos("host03:8080") > pos("host28:8080"), "{text}");
        assert!(row_with(&lines, "host13:8080").contains("timeout"));
        // A tiny terminal still scrolls to the selection, not panicking.
        view.selected = 23;
        let small = screen(&m, &view, 1.0, 60, 8);
        assert!(
            small.iter().any(|l| l.contains("host23")),
            "{}",
            small.join("\n")
        );
    }

    #[test]
    fn details_show_the_servers_data() {
        let mut m = two_targets();
        m.entries[1].data = Some(map([
            ("name", "beta server".into()),
            ("motd", "hello\u{1b}[2J".into()),
            ("peng3dnet", map([("version", "0.1.3a0".into())])),
        ]));
        m.entries[1].addr = Some("127.0.0.1:9000".parse().unwrap());
        let mut view = View::new(Mode::Browser, 1.0, 60.0);
        view.selected = 1;
        view.detail = true;
        let lines = screen(&m, &view, 10.0, 100, 30);
        let text = lines.join("\n");
        for want in [
            "address: 127.0.0.1:9000",
            "motd: hello\\x1b[2J",
            "peng3dnet:",
            "version: 0.1.3a0",
            "loss:    10.0% of 10 pings",
            "latency: 2.00 ms (min 2.00, avg 2.78, max 4.00)",
            "jitter:  1.25 ms, p95 4.00 ms",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn browser_columns_fit_names_and_targets() {
        let mut m = Model::new(["127.0.0.1:8081", "[::1]:8082"]);
        push(&mut m, 0, 0.0, Outcome::Reply { rtt_ms: 0.5 });
        m.entries[0].data = Some(map([
            ("name", "the arena server".into()),
            ("motd", "ranked 5v5 all day, every day, join us".into()),
        ]));
        let view = View::new(Mode::Browser, 1.0, 60.0);
        let lines = screen(&m, &view, 1.0, 88, 8);
        let row = row_with(&lines, "the arena server");
        assert!(row.contains("127.0.0.1:8081 "), "{row:?}");
        assert!(row.contains("0.500 ms"), "{row:?}");
        assert!(row_with(&lines, "[::1]:8082").contains("waiting"));
    }

    #[test]
    fn hostile_server_strings_reach_the_screen_escaped() {
        let mut m = Model::new(["evil:8080"]);
        push(&mut m, 0, 0.0, Outcome::Reply { rtt_ms: 1.0 });
        m.entries[0].data = Some(map([
            ("name", "\u{1b}]0;owned\u{7}x".into()),
            ("motd", "\u{1b}[31mred\u{9b}0m\r\nline".into()),
        ]));
        let view = View::new(Mode::Browser, 1.0, 60.0);
        let lines = screen(&m, &view, 1.0, 200, 10);
        let text = lines.join("\n");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\x1b]0;owned\\x07x"), "{text}");
        assert!(
            text.contains("\\x1b[31mred\\u{9b}0m\\x0d\\x0aline"),
            "{text}"
        );
    }

    #[test]
    fn tiny_terminals_get_a_message_and_no_panic() {
        let m = two_targets();
        for mode in [Mode::Graph, Mode::Browser] {
            let mut view = View::new(mode, 1.0, 60.0);
            view.detail = true;
            for (w, h) in [(0, 0), (1, 1), (10, 3), (29, 20), (80, 5)] {
                let lines = screen(&m, &view, 9.0, w, h);
                if w >= 10 {
                    assert!(lines.join(" ").contains("terminal"), "{w}x{h}: {lines:?}");
                }
            }
            // Just big enough: drawn, no panic.
            let lines = screen(&m, &view, 9.0, MIN_WIDTH, MIN_HEIGHT);
            assert!(lines[0].starts_with("peng3dnet watch"), "{lines:?}");
        }
    }

    #[test]
    fn pause_shows_and_waiting_targets_have_no_figures() {
        let m = Model::new(["fresh:8080"]);
        let mut view = View::new(Mode::Graph, 0.2, 12.0);
        view.paused = true;
        let lines = screen(&m, &view, 0.0, 80, 12);
        assert!(
            lines[0].contains("PAUSED") && lines[0].contains("every 0.2s"),
            "{lines:?}"
        );
        let row = row_with(&lines, "━━ fresh:8080");
        assert!(row.contains('…') && !row.contains('%'), "{row:?}");
    }

    #[test]
    fn sparkline_scales_and_marks_failures() {
        let mut m = Model::new(["s"]);
        for (i, rtt) in [1.0, 2.0, 4.0, 8.0].into_iter().enumerate() {
            push(&mut m, 0, i as f64, Outcome::Reply { rtt_ms: rtt });
        }
        push(&mut m, 0, 4.0, Outcome::Timeout);
        push(&mut m, 0, 5.0, Outcome::Error { kind: "closed" });
        let line = sparkline(&m.entries[0]);
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(text, "▂▃▅█×!");
    }

    #[test]
    fn axis_arithmetic() {
        assert_eq!(nice_ceiling(0.13), 0.2);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(60.0), "60");
        assert_eq!(number(0.0), "0");
        assert_eq!(column(0.0, 0.0, 10.0, 10), Some(0));
        assert_eq!(column(10.0, 0.0, 10.0, 10), Some(9));
        assert_eq!(column(10.1, 0.0, 10.0, 10), None);
        assert_eq!(column(1.0, 0.0, 0.0, 10), None);
        assert_eq!(ms_text(Some(0.1234)), "0.123");
        assert_eq!(ms_text(None), "-");
        assert_eq!(ms_text(Some(f64::NAN)), "-");
    }
}
