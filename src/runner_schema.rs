//! The formats shared with the on-device runner: the very file the runner compiles, so host
//! and device agree field by field.

#[path = "../runner/src/schema.rs"]
mod schema;

pub use schema::*;
