//! `consentry demo`: a sample CRM and the gateway in front of it.

pub mod data;
