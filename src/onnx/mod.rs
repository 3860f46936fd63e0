//! ONNX: export from the trained burn module, protobuf editing, BN folding, int8 (QDQ and
//! operator form), calibration, InDistill taps of
//! foreign graphs by surgery.

pub mod calib;
pub mod export;
pub mod fold;
pub mod graph;
pub mod meta;
pub mod proto;
pub mod qdq;
pub mod qop;
pub mod surgery;
