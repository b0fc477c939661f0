//! consentry: a privacy and consent compliance gateway for CRM HTTP APIs.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consent;
pub mod demo;
pub mod diag;
pub mod keys;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transform;
