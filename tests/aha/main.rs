//! Integration tests through the public interface and the real binary, grouped by topic.

mod cli;
mod common;
mod engine_real;
mod engine_synth;
mod pull;
mod tokenizer;
mod tui;
