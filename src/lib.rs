//! consentry: a privacy and consent compliance gateway for CRM HTTP APIs.

pub mod cli;
pub mod config;
pub mod demo;
pub mod diag;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod transform;
