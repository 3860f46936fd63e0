//! Compute devices and threads: the one place a backend becomes a burn [`Device`].
//!
//! Training, distillation and their per-epoch evaluation run on the [`Backend`] a command
//! chose (`--backend`, or the `backend` key of its config); everything else (pruning, BN
//! folding, ONNX export, the teacher cache's readers) uses [`cpu`]. Weights move between
//! devices through burn's records, so a checkpoint does not depend on the backend that wrote
//! it.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// The CPU device used for inference and evaluation (burn's `flex` backend).
pub fn cpu() -> Device {
    Device::flex()
}

/// The CPU device with autodiff, used for training.
pub fn cpu_autodiff() -> Device {
    Device::flex().autodiff()
}

/// Where training runs: a burn backend. `Cpu` is always built; `Wgpu` needs the cargo
/// feature of the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// burn's `flex` backend on the CPU threads (`--threads`).
    #[default]
    Cpu,
    /// burn's wgpu backend: Vulkan on Linux and Windows, Metal on macOS (cargo feature `wgpu`).
    Wgpu,
}

/// Why a backend cannot be used in this process.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The binary was built without the backend's cargo feature.
    #[error(
        "backend '{0}': this build has no {0} support; rebuild distill-edge with `--features {0}`"
    )]
    NotBuilt(Backend),
    /// The feature is built but the machine offers no device for it.
    #[error("backend '{backend}': {message}")]
    NoDevice {
        /// The backend asked for.
        backend: Backend,
        /// What was missing.
        message: String,
    },
}

impl Backend {
    /// Every backend, in the order `--help` lists them.
    pub const ALL: [Backend; 2] = [Backend::Cpu, Backend::Wgpu];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_built(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backend's device without autodiff (inference, the teacher, evaluation). The first
    /// call for a GPU backend opens the device; an error says in one line why there is none.
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            Self::Cpu => Ok(cpu()),
            Self::Wgpu => wgpu_device(),
        }
    }

    /// The backend's device with autodiff, for training.
    pub fn autodiff_device(self) -> Result<Device, BackendError> {
        self.device().map(Device::autodiff)
    }

    /// `n` autodiff devices for data-parallel training (`--devices`): for `n` = 1,
    /// [`Self::autodiff_device`]; on `wgpu` the first `n` adapters burn enumerates, fewer
    /// than `n` being an error. On `cpu` they are `n` replicas of the one CPU device:
    /// no faster (they share the cores), but the same arithmetic as `n` GPUs, so a
    /// multi-device run can be checked on a machine without them.
    pub fn autodiff_devices(self, n: usize) -> Result<Vec<Device>, BackendError> {
        if n == 0 {
            return Err(BackendError::NoDevice {
                backend: self,
                message: "0 devices asked for (--devices, or the config key `devices`); \
                          expected 1 or more"
                    .into(),
            });
        }
        let first = self.autodiff_device()?;
        if n == 1 {
            return Ok(vec![first]);
        }
        match self {
            Self::Cpu => Ok(vec![first; n]),
            Self::Wgpu => {
                let found = wgpu_adapters()?;
                if found.len() < n {
                    return Err(BackendError::NoDevice {
                        backend: self,
                        message: format!(
                            "{n} devices asked for (--devices), this machine has {}",
                            found.len()
                        ),
                    });
                }
                Ok(found.into_iter().take(n).map(Device::autodiff).collect())
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend '{s}': expected cpu or wgpu"))
    }
}

/// Read by name, so a config's error says what the value is: `unknown backend 'gpu': …`.
impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The wgpu device, initialised once per process (burn refuses a second initialisation of
/// the same adapter selector, so the answer, device or error, is kept).
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, BackendError> {
    static DEVICE: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options().init().map_err(|e| {
                format!(
                    "no usable GPU adapter ({e}); on Linux this needs a Vulkan driver \
                     (e.g. Debian's mesa-vulkan-drivers) and its loader libvulkan1"
                )
            })
        })
        .clone()
        .map_err(|message| BackendError::NoDevice {
            backend: Backend::Wgpu,
            message,
        })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, BackendError> {
    Err(BackendError::NotBuilt(Backend::Wgpu))
}

/// Every wgpu adapter burn finds, in its order.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> Result<Vec<Device>, BackendError> {
    Ok(Device::enumerate(burn::tensor::DeviceType::Wgpu)
        .into_iter()
        .collect())
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_adapters() -> Result<Vec<Device>, BackendError> {
    Err(BackendError::NotBuilt(Backend::Wgpu))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_command_line_and_toml() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
            #[derive(Serialize, Deserialize)]
            struct Doc {
                backend: Backend,
            }
            let text = toml::to_string(&Doc { backend: b }).unwrap();
            assert_eq!(text.trim(), format!("backend = \"{b}\""));
            assert_eq!(toml::from_str::<Doc>(&text).unwrap().backend, b);
        }
        let e = "cuda".parse::<Backend>().unwrap_err();
        assert_eq!(e, "unknown backend 'cuda': expected cpu or wgpu");
    }

    #[test]
    fn a_backend_not_built_is_a_one_line_error_naming_the_feature() {
        if !Backend::Wgpu.is_built() {
            let e = Backend::Wgpu.device().unwrap_err().to_string();
            assert_eq!(
                e,
                "backend 'wgpu': this build has no wgpu support; rebuild distill-edge with `--features wgpu`"
            );
        }
        assert!(Backend::Cpu.device().is_ok());
    }
}
