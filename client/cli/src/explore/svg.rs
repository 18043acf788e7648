//! The custody bar: who held an order's goods when, as an inline SVG.
//!
//! One lane, left to right in ledger time. Each interval's width grows with
//! its duration but never falls below an even share of half the bar, so an
//! interval of a few milliseconds stays readable next to one of days; the
//! times at the boundaries are written under the bar. The carrier's window
//! (custody from the shipping milestone on) is hatched; a handoff is a
//! marker on the boundary where it happened. Every string is escaped by maud.

use maud::{html, Markup};

use crate::output::utc;
use crate::trace::Interval;

const WIDTH: f64 = 960.0;
const BAR_Y: f64 = 28.0;
const BAR_H: f64 = 44.0;
const HEIGHT: f64 = 132.0;

/// Colours of the holders, in the order they first held the goods.
const PALETTE: [&str; 7] = [
    "#4e79a7", "#59a14f", "#b07aa1", "#e15759", "#76b7b2", "#9c755f", "#edc948",
];

/// The colour of `holder`: by when it first appears in `custody`, so that
/// successive holders differ.
fn colour(custody: &[Interval], holder: &str) -> &'static str {
    let mut seen: Vec<&str> = Vec::new();
    for i in custody {
        if !seen.contains(&i.holder.as_str()) {
            seen.push(&i.holder);
        }
    }
    let n = seen.iter().position(|h| *h == holder).unwrap_or(0);
    PALETTE[n % PALETTE.len()]
}

/// Whether the interval is a carrier's (it began with the shipping milestone).
pub fn is_carrier(i: &Interval) -> bool {
    i.started_by.starts_with("shipped by")
}

/// Pixel spans (x, width) of the intervals, `now_ms` closing an open one.
fn spans(custody: &[Interval], now_ms: u64) -> Vec<(f64, f64)> {
    let n = custody.len() as f64;
    let ends: Vec<u64> = custody
        .iter()
        .map(|i| i.to.map(|t| t.1).unwrap_or(now_ms).max(i.from_ms))
        .collect();
    let total: f64 = custody
        .iter()
        .zip(&ends)
        .map(|(i, e)| (e - i.from_ms) as f64)
        .sum();
    let mut x = 0.0;
    custody
        .iter()
        .zip(&ends)
        .map(|(i, e)| {
            let share = if total > 0.0 {
                (e - i.from_ms) as f64 / total
            } else {
                1.0 / n
            };
            let w = WIDTH * (0.5 / n + 0.5 * share);
            let s = (x, w);
            x += w;
            s
        })
        .collect()
}

/// The bar for `custody` (oldest first); `now_ms` is where an open interval ends.
pub fn custody_bar(custody: &[Interval], now_ms: u64) -> Markup {
    if custody.is_empty() {
        return html! { p.muted { "Nobody has held this order yet." } };
    }
    let spans = spans(custody, now_ms);
    html! {
        svg.custody xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            width="100%" role="img" aria-label="custody over time" {
            defs {
                pattern #hatch patternUnits="userSpaceOnUse" width="8" height="8" patternTransform="rotate(45)" {
                    rect width="8" height="8" fill="#f28e2b" {}
                    line x1="0" y1="0" x2="0" y2="8" stroke="#ffffff" stroke-width="3" {}
                }
            }
            text x="0" y="16" class="axis" { "custody (ledger time →)" }
            @for (i, (x, w)) in custody.iter().zip(spans.iter().copied()) {
                @let carrier = is_carrier(i);
                @let to_seq = i.to.map(|t| t.0.to_string()).unwrap_or_else(|| "open".into());
                @let until = i.to.map(|t| utc(t.1)).unwrap_or_else(|| "now (still held)".into());
                g.interval data-holder=(i.holder) data-from-seq=(i.from_seq) data-to-seq=(to_seq)
                    data-carrier=(carrier) {
                    title { (i.holder) " held it from " (utc(i.from_ms)) " (seq " (i.from_seq) ", "
                        (i.started_by) ") to " (until)
                        @if let Some(t) = i.to { " (seq " (t.0) ", " (i.ended_by) ")" } }
                    rect x=(format!("{x:.1}")) y=(BAR_Y) width=(format!("{:.1}", (w - 2.0).max(1.0)))
                        height=(BAR_H) rx="4"
                        fill=(if carrier { "url(#hatch)" } else { colour(custody, &i.holder) })
                        stroke=(if i.to.is_none() { "#333" } else { "none" })
                        stroke-dasharray=(if i.to.is_none() { "6 3" } else { "" }) {}
                    text x=(format!("{:.1}", x + 6.0)) y=(BAR_Y + 18.0) class="holder" { (i.holder) }
                    text x=(format!("{:.1}", x + 6.0)) y=(BAR_Y + 34.0) class="sub" {
                        @if carrier { "carrier window" } @else if i.started_by.starts_with("accepted handoff") { "handoff in" } @else { (i.started_by.split(" (").next().unwrap_or_default()) }
                    }
                    text x=(format!("{x:.1}")) y=(BAR_Y + BAR_H + 16.0) class="tick" { "seq " (i.from_seq) }
                    text x=(format!("{x:.1}")) y=(BAR_Y + BAR_H + 30.0) class="tick" { (utc(i.from_ms)) }
                    @if i.ended_by.starts_with("handed off") {
                        path.handoff d=(format!("M{:.1} {} l-6 -10 h12 z", x + w - 1.0, BAR_Y - 2.0)) fill="#222" {}
                        text x=(format!("{:.1}", x + w - 1.0)) y=(BAR_Y + BAR_H + 46.0) class="tick handoff" text-anchor="middle" { "handoff" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(holder: &str, from: u64, to: Option<u64>, started_by: &str) -> Interval {
        Interval {
            holder: holder.into(),
            from_seq: from,
            from_ms: from * 1000,
            started_by: started_by.into(),
            to: to.map(|t| (t, t * 1000)),
            ended_by: if to.is_some() {
                "handed off to x (offer seq 1)".into()
            } else {
                String::new()
            },
            notes: vec![],
        }
    }

    #[test]
    fn spans_fill_the_bar_and_keep_short_intervals_visible() {
        let c = vec![
            iv("a", 1, Some(2), "claim"),
            iv("b", 2, Some(1000), "accepted handoff from a (offer seq 2)"),
            iv("sf", 1000, None, "shipped by b, tracking T"),
        ];
        let s = spans(&c, 2_000_000);
        let total: f64 = s.iter().map(|s| s.1).sum();
        assert!((total - WIDTH).abs() < 0.01, "{s:?}");
        assert!(s.iter().all(|s| s.1 >= WIDTH * 0.5 / 3.0 - 0.01), "{s:?}");
        let svg = custody_bar(&c, 2_000_000).into_string();
        assert_eq!(svg.matches("<g class=\"interval\"").count(), 3, "{svg}");
        assert!(svg.contains("carrier window") && svg.contains("url(#hatch)"));
        assert!(svg.contains("data-to-seq=\"open\""));
    }

    #[test]
    fn a_hostile_holder_is_text() {
        let c = vec![iv("<script>alert(1)</script>", 1, None, "claim")];
        let svg = custody_bar(&c, 5000).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
    }
}
