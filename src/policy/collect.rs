//! Data minimisation on writes: what a purpose may collect.
//!
//! A write (POST, PUT, PATCH) to a resource runs its body through the
//! resource's request program with the rule's `collect` table: fields of
//! categories the purpose may see in some form (allow, mask, hash) pass
//! unchanged; the others are removed, or the request is refused, as the
//! rule's `minimise` says. Pure: the proxy and `policy test` share it.

use std::sync::Arc;

use super::{Minimise, Resource, Rule};
use crate::transform::{Gate, Limits, TransformError, rewrite_with};

/// Why a write body cannot go to the CRM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectError {
    #[error("the body carries data the purpose may not collect")]
    NotCollectable,
    #[error("{0}")]
    Transform(TransformError),
}

/// The body the CRM receives, and how many values were taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub body: Vec<u8>,
    pub removed: u64,
    /// Values written as tokens.
    pub sealed: u64,
}

/// Applies `rule`'s collection limits to a write body, and turns values of
/// encrypted categories into tokens with `gate`'s keys (`gate` keeps every
/// record). A resource without write methods, or a rule without a collect
/// table, passes it unchanged.
pub fn collect(
    resource: &Resource,
    rule: &Rule,
    body: &[u8],
    limits: Limits,
    mut gate: impl Gate,
) -> Result<Collected, CollectError> {
    let (Some(program), Some(table)) = (&resource.request_program, &rule.collect) else {
        return Ok(Collected {
            body: body.to_vec(),
            removed: 0,
            sealed: 0,
        });
    };
    let mut out = Vec::with_capacity(body.len() + 64);
    let stats = rewrite_with(
        program,
        &Arc::clone(table),
        limits,
        body,
        &mut gate,
        &mut out,
    )
    .map_err(CollectError::Transform)?;
    let removed = stats.removed + stats.redacted + stats.detected;
    if removed > 0 && rule.minimise == Minimise::Refuse {
        return Err(CollectError::NotCollectable);
    }
    Ok(Collected {
        body: out,
        removed,
        sealed: stats.sealed,
    })
}

/// The categories `rule` may collect on `resource`, for error messages.
pub fn collectable(resource: &Resource, rule: &Rule) -> Vec<String> {
    let (Some(program), Some(table)) = (&resource.request_program, &rule.collect) else {
        return Vec::new();
    };
    let mut out: Vec<String> = program
        .fields
        .iter()
        .zip(&table.fields)
        .filter(|(_, a)| **a == crate::transform::Action::Allow)
        .map(|(f, _)| program.categories[f.category as usize].to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}
