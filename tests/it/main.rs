//! Integration tests: real listeners on 127.0.0.1, port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

mod harness;

mod audit;
mod consent;
mod durability;
mod encryption;
mod failclosed;
mod policies;
mod proxy;
mod serving;
mod streaming;
mod subjects;
mod tls;
mod transform_props;
