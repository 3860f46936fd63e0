//! Models: specs (TOML) and the burn modules built from them.

pub mod batch_norm;
pub mod evaluate;
pub mod infer;
pub mod net;
pub mod spec;

pub use net::{ConvBlock, ConvNet, Features};
pub use spec::{Architecture, BlockKind, BlockSpec, ModelSpec, SpecError, WidthMultiplier};

/// Every float parameter and running statistic of `module`, concatenated in visiting order
/// (for exact comparisons of weights).
pub fn flatten_params<M: burn::module::Module>(module: &M) -> Vec<f32> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(
                param
                    .val()
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 parameters"),
            );
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}
