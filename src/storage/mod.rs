//! Storage back ends for the domains' store interfaces. SQLite is the
//! default: one file, nothing else to install.

pub mod sqlite;
