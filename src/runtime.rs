//! Compute devices and threads.

use burn::tensor::Device;

/// The CPU device used for inference and evaluation (burn's `flex` backend).
pub fn cpu() -> Device {
    Device::flex()
}

/// The CPU device with autodiff, used for training.
pub fn cpu_autodiff() -> Device {
    Device::flex().autodiff()
}

/// Sets the number of worker threads for burn's CPU kernels (rayon's global pool). Has an
/// effect only before the first parallel operation; later calls are ignored.
pub fn init_threads(threads: Option<usize>) {
    if let Some(n) = threads.filter(|&n| n > 0) {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

/// Threads the CPU kernels use.
pub fn threads() -> usize {
    rayon::current_num_threads()
}
