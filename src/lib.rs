//! consentry: a privacy and consent compliance gateway for CRM HTTP APIs.

pub mod demo;
pub mod transform;
