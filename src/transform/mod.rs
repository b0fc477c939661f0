//! The JSON rewriter: the core of consentry.
//!
//! A response body streams through `Rewriter`, which follows the automata a
//! resource's selectors compile to (`automaton`, `selector`), validates strict
//! JSON (`lex`), and rewrites exactly the values the purpose's `ActionTable`
//! does not allow (`actions`, `detect`). Everything in this module is pure:
//! no I/O, no logging, no knowledge of HTTP. It never logs or returns the
//! values it rewrites.

pub mod actions;
pub mod automaton;
pub mod detect;
pub mod lex;
pub mod program;
pub mod rewrite;
pub mod selector;

pub use automaton::{Dfa, Mark};
pub use detect::{Detector, DetectorSet};
pub use lex::Malformed;
pub use program::{
    Action, ActionTable, FieldSpec, HashKey, Mask, Program, Render, Resolved, Seal, Unlisted,
};
pub use rewrite::{
    CATEGORY_ACTIONS, Gate, Limits, RecordOutcome, Rewriter, Stats, Subject, TransformError,
    rewrite_all, rewrite_into, rewrite_with,
};
pub use selector::{Selector, SelectorError};

#[cfg(test)]
mod tests;
