//! distill-edge: train a teacher, distill a compact student with InDistill, export it to ONNX
//! and validate it on ARM boards.
//!
//! The binary is a thin layer over this library: [`cli`] holds the argument types,
//! [`commands`] one module per subcommand; everything else is reusable.

#![forbid(unsafe_code)]

pub mod board;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod exit;
pub mod fsutil;
pub mod hostcheck;
pub mod infer;
pub mod model;
pub mod onnx;
pub mod pipeline;
pub mod progress;
pub mod prune;
pub mod quantize;
pub mod report;
pub mod runtime;
pub mod table;
pub mod testing;
pub mod train;
