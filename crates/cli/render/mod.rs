//! What people read: aligned tables, SVG plots, and the exit code a check's outcome gives.

mod check;
mod inspect;
mod passes;
mod plot;
mod rewrite;
mod sensitivity;
mod shrink;
mod table;

pub use check::{check_exit_code, check_failed, print_notes, render_check};
pub use inspect::render_inspection;
pub use passes::{quoted_list, render_layers, render_totals, render_vocab};
pub use plot::{sensitivity_svg, steps_svg};
pub use rewrite::render_rewrite;
pub use sensitivity::{render_searched, render_sensitivity};
pub use shrink::render_shrink;
pub use table::{bytes, percent, shape, table};
