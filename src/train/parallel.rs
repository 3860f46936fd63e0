//! Data-parallel training over several devices, with burn's own multi-device facilities:
//! each mini-batch is cut into one shard per device; every device runs a replica of the
//! network ([`Module::fork`]) on its shard, each shard's loss is weighted by its share of the
//! batch, the gradients are moved to the first device ([`GradientsParams::to_device`]) and
//! summed there ([`GradientsAccumulator`]), and one optimizer step updates the network, which
//! the replicas fork again for the next batch.
//!
//! The sum of the weighted shard gradients is the gradient of the whole batch's mean loss for
//! every loss that is a mean over images (cross-entropy, KD, the curriculum's MSE). Two things
//! depend on the batch as a whole and are computed per shard, as PyTorch's
//! `DistributedDataParallel` does without `SyncBatchNorm`: batch-norm statistics in training
//! mode, and PKT's pairwise similarities. burn keeps one running-statistics value shared by all
//! replicas and averages the replicas' updates; that needs each device to be driven by the same
//! thread at every step, so the replicas run on threads that live as long as the run (the first
//! device on the calling thread).

use std::ops::Range;
use std::sync::mpsc;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor};

use super::epoch::count_correct;
use super::supervised::Objective;
use crate::data::Dataset;
use crate::model::ConvNet;

/// Shards of a batch of `n` images over `parts` devices: contiguous ranges whose sizes differ
/// by at most one, larger ones first; empty ranges are left out (a batch smaller than the
/// number of devices uses fewer of them).
pub fn shards(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// What one step over all devices produced.
pub struct ParallelStep {
    /// The batch's loss: the shard losses weighted by their share of the batch.
    pub loss: f32,
    /// Correct top-1 predictions over the batch, when the objective computed logits.
    pub correct: Option<usize>,
    /// Gradients of the batch's loss on the first device; `None` when the loss is not finite.
    pub grads: Option<GradientsParams>,
}

/// One shard's part of a step.
struct ShardResult {
    loss: f32,
    correct: Option<usize>,
    grads: Option<GradientsParams>,
}

struct Job {
    model: ConvNet,
    x: Tensor<4>,
    y: Tensor<1, Int>,
    indices: Vec<usize>,
    weight: f32,
    epoch: usize,
}

/// The replicas of a run: the first device (driven by the caller's thread) and one worker
/// thread per further device. Built by [`with_replicas`].
pub struct Replicas<'a> {
    main: Device,
    objective: &'a dyn Objective,
    data: &'a Dataset,
    workers: Vec<(mpsc::Sender<Job>, mpsc::Receiver<ShardResult>)>,
}

/// Runs `f` with the replicas of `devices` (the first is where the network and its optimizer
/// live). With one device there are no threads and a step is the plain single-device step.
/// `data` is the training split (the labels behind the batch indices).
pub fn with_replicas<R>(
    devices: &[Device],
    objective: &dyn Objective,
    data: &Dataset,
    f: impl FnOnce(&Replicas<'_>) -> R,
) -> R {
    let main = devices.first().expect("at least one device").clone();
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for device in &devices[1..] {
            let (job_tx, job_rx) = mpsc::channel::<Job>();
            let (done_tx, done_rx) = mpsc::channel();
            let (device, main) = (device.clone(), main.clone());
            scope.spawn(move || {
                // Ends when the sender is dropped, at the end of `f`.
                for job in job_rx {
                    let replica = job.model.fork(&device);
                    let result = shard_step(
                        objective,
                        data,
                        &replica,
                        job.x.to_device(&device),
                        job.y.to_device(&device),
                        &job.indices,
                        job.weight,
                        job.epoch,
                        &main,
                    );
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            });
            workers.push((job_tx, done_rx));
        }
        f(&Replicas {
            main,
            objective,
            data,
            workers,
        })
    })
}

impl Replicas<'_> {
    /// Number of devices.
    fn len(&self) -> usize {
        self.workers.len() + 1
    }

    /// The loss, accuracy and gradients of one batch (`x`, `y` on the first device;
    /// `indices` its positions in the training split) for `model` (on the first device).
    pub fn step(
        &self,
        model: &ConvNet,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        indices: &[usize],
        epoch: usize,
    ) -> ParallelStep {
        let n = indices.len();
        let parts = shards(n, self.len());
        if parts.len() == 1 {
            let r = shard_step(
                self.objective,
                self.data,
                model,
                x,
                y,
                indices,
                1.0,
                epoch,
                &self.main,
            );
            return ParallelStep {
                loss: r.loss,
                correct: r.correct,
                grads: r.grads,
            };
        }
        let weight = |r: &Range<usize>| r.len() as f32 / n as f32;
        // Shards 1.. go to the workers first so that they run while this thread does shard 0.
        for (r, (tx, _)) in parts[1..].iter().zip(&self.workers) {
            tx.send(Job {
                model: model.clone(),
                x: x.clone().narrow(0, r.start, r.len()),
                y: y.clone().narrow(0, r.start, r.len()),
                indices: indices[r.clone()].to_vec(),
                weight: weight(r),
                epoch,
            })
            .expect("replica threads live as long as the run");
        }
        let r0 = &parts[0];
        let mut results = vec![shard_step(
            self.objective,
            self.data,
            model,
            x.narrow(0, r0.start, r0.len()),
            y.narrow(0, r0.start, r0.len()),
            &indices[r0.clone()],
            weight(r0),
            epoch,
            &self.main,
        )];
        for (_, rx) in self.workers.iter().take(parts.len() - 1) {
            results.push(rx.recv().expect("a replica thread panicked"));
        }
        let loss: f32 = results.iter().map(|r| r.loss).sum();
        let correct = results
            .iter()
            .map(|r| r.correct)
            .try_fold(0, |a, c| c.map(|c| a + c));
        let grads = if loss.is_finite() {
            let mut acc = GradientsAccumulator::<ConvNet>::new();
            for r in results {
                acc.accumulate(model, r.grads.expect("a finite shard loss has gradients"));
            }
            Some(acc.grads())
        } else {
            None
        };
        ParallelStep {
            loss,
            correct,
            grads,
        }
    }
}

/// Forward and backward of one shard on `model`'s device; the loss is scaled by `weight` (the
/// shard's share of the batch) and the gradients moved to `main`.
#[allow(clippy::too_many_arguments)]
fn shard_step(
    objective: &dyn Objective,
    data: &Dataset,
    model: &ConvNet,
    x: Tensor<4>,
    y: Tensor<1, Int>,
    indices: &[usize],
    weight: f32,
    epoch: usize,
    main: &Device,
) -> ShardResult {
    let (loss, logits) = objective.loss(model, x, y, indices, epoch);
    let value: f32 = loss.clone().into_scalar();
    if !value.is_finite() {
        return ShardResult {
            loss: value,
            correct: None,
            grads: None,
        };
    }
    let correct = logits.map(|l| count_correct(l.detach(), indices, data));
    let loss = if weight == 1.0 {
        loss
    } else {
        loss.mul_scalar(weight)
    };
    let grads = GradientsParams::from_grads(loss.backward(), model).to_device(main, model);
    ShardResult {
        loss: value * weight,
        correct,
        grads: Some(grads),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::module::{Module, ModuleVisitor, Param};

    use super::*;
    use crate::config::TrainSettings;
    use crate::data::Splits;
    use crate::data::prep::Normalization;
    use crate::data::synthetic::{SyntheticSpec, generate};
    use crate::model::infer::batch_tensors;
    use crate::model::{Architecture, ModelSpec};
    use crate::runtime;
    use crate::train::supervised::{CrossEntropy, JobIdentity, TrainOptions, fit};

    fn splits() -> Splits {
        generate(&SyntheticSpec {
            train: 100,
            test: 32,
            shape: crate::data::ImageShape::new(1, 28, 28),
            ..SyntheticSpec::default()
        })
        .unwrap()
    }

    fn arch(splits: &Splits, batch_norm: bool) -> Architecture {
        let mut spec = ModelSpec::resolve("cnn32-small", Path::new(".")).unwrap();
        for b in &mut spec.blocks {
            b.batch_norm = batch_norm;
        }
        spec.bind(splits.train.shape, splits.train.classes.len())
            .unwrap()
    }

    fn settings(epochs: usize) -> TrainSettings {
        let mut s: TrainSettings =
            toml::from_str("schedule = [{ epochs = 1, lr = 1e-3 }]\nbatch-size = 32").unwrap();
        s.schedule[0].epochs = epochs;
        s
    }

    /// Every parameter's gradient in `grads`, in the module's order, flattened.
    fn flat_grads(model: &ConvNet, grads: &GradientsParams) -> Vec<f32> {
        struct Collect<'a>(&'a GradientsParams, Vec<f32>);
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.0.get::<D>(param.id) {
                    self.1
                        .extend(g.into_data().try_into_vec::<f32>().expect("f32 gradient"));
                }
            }
        }
        let mut c = Collect(grads, Vec::new());
        model.visit(&mut c);
        c.1
    }

    /// One batch of `n` images as tensors on `device`.
    fn batch(
        splits: &Splits,
        from: usize,
        n: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<1, Int>) {
        let indices: Vec<usize> = (from..from + n).collect();
        let norm = Normalization::from_dataset(&splits.train);
        batch_tensors(
            &splits.train,
            &indices,
            &norm,
            None,
            &mut Vec::new(),
            device,
        )
    }

    /// Without batch norm the loss is a mean over images, so the weighted shard gradients of
    /// three replicas (shards of 11, 11 and 10 images) add up to the whole batch's gradient.
    #[test]
    fn replicas_add_up_to_the_whole_batch_gradient() {
        let splits = splits();
        let arch = arch(&splits, false);
        let device = runtime::cpu_autodiff();
        let model = ConvNet::new(&arch, &device);
        let settings = settings(1);
        let objective = CrossEntropy(&settings);
        let indices: Vec<usize> = (0..32).collect();
        let run = |n: usize| {
            let (x, y) = batch(&splits, 0, 32, &device);
            let devices = vec![device.clone(); n];
            with_replicas(&devices, &objective, &splits.train, |r| {
                assert_eq!(r.len(), n);
                r.step(&model, x, y, &indices, 1)
            })
        };
        let (one, three) = (run(1), run(3));
        assert!(
            (one.loss - three.loss).abs() < 1e-5,
            "{} vs {}",
            one.loss,
            three.loss
        );
        assert_eq!(one.correct, three.correct);
        let (a, b) = (
            flat_grads(&model, one.grads.as_ref().unwrap()),
            flat_grads(&model, three.grads.as_ref().unwrap()),
        );
        assert_eq!(a.len(), arch.trainable_params());
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "gradient {i}: {x} vs {y}");
        }
    }

    /// burn averages the replicas' running-statistics updates (each device driven by one
    /// thread for the whole run): with two equal shards and the weights held fixed, the first
    /// batch norm's running mean after two batches is the single-device one (its input does
    /// not depend on any batch statistics, and the mean of two halves' means is the batch's).
    /// Fresh threads at every step would leave the updates unaveraged until the end.
    #[test]
    fn replicas_share_running_statistics_as_one_device_would() {
        let splits = splits();
        let arch = arch(&splits, true);
        let device = runtime::cpu_autodiff();
        let settings = settings(1);
        let objective = CrossEntropy(&settings);
        // Tests run concurrently and draw from the device's one generator: both runs start
        // from copies of one network (through its record: a clone would share the running
        // statistics).
        let start = ConvNet::new(&arch, &device).into_record();
        let running_mean = |n: usize| {
            let model = ConvNet::new(&arch, &device).load_record(start.clone());
            let devices = vec![device.clone(); n];
            with_replicas(&devices, &objective, &splits.train, |r| {
                for b in 0..3 {
                    let (x, y) = batch(&splits, 32 * b, 32, &device);
                    let indices: Vec<usize> = (32 * b..32 * (b + 1)).collect();
                    // No optimizer step: the weights stay those of the start.
                    assert!(r.step(&model, x, y, &indices, 1).grads.is_some());
                }
            });
            let bn = model.blocks[0].bn.as_ref().expect("batch norm");
            bn.running_mean
                .value_sync()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let (one, two) = (running_mean(1), running_mean(2));
        assert!(
            one.iter().any(|v| v.abs() > 1e-3),
            "statistics moved: {one:?}"
        );
        for (c, (a, b)) in one.iter().zip(&two).enumerate() {
            assert!((a - b).abs() < 1e-5, "channel {c}: {a} vs {b}");
        }
    }

    /// `fit` with three replicas follows the single-device loss curve (no batch norm); the
    /// last batch of each epoch (4 images) is cut into shards of 2, 1 and 1.
    #[test]
    fn training_on_replicas_follows_the_single_device_curve() {
        let splits = splits();
        let arch = arch(&splits, false);
        let settings = settings(2);
        // One start for both runs (tests run concurrently and draw from one generator).
        let start = ConvNet::new(&arch, &runtime::cpu()).into_record();
        let run = |devices: usize| {
            let dir = tempfile::tempdir().unwrap();
            let mut reporter = crate::progress::Reporter::new(true);
            let init = ConvNet::new(&arch, &runtime::cpu()).load_record(start.clone());
            fit(
                &arch,
                &settings,
                &CrossEntropy(&settings),
                Some(init),
                &splits,
                &JobIdentity {
                    config_hash: "parallel-test",
                    dataset: "synthetic",
                    seed: 7,
                    kind: "train",
                    config_toml: "",
                },
                TrainOptions {
                    out_dir: dir.path(),
                    resume: false,
                    force: true,
                    reporter: &mut reporter,
                    backend: runtime::Backend::Cpu,
                    devices,
                },
            )
            .unwrap()
        };
        let (one, three) = (run(1), run(3));
        for (a, b) in one.epochs.iter().zip(&three.epochs) {
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(1.0);
            assert!(
                close(a.train_loss, b.train_loss),
                "{} vs {}",
                a.train_loss,
                b.train_loss
            );
            assert!(
                close(a.test_loss, b.test_loss),
                "{} vs {}",
                a.test_loss,
                b.test_loss
            );
        }
    }

    #[test]
    fn shards_cover_the_batch_in_order_with_sizes_within_one() {
        assert_eq!(shards(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(shards(8, 2), vec![0..4, 4..8]);
        assert_eq!(shards(5, 1), vec![0..5]);
        assert_eq!(shards(2, 4), vec![0..1, 1..2], "fewer images than devices");
        assert_eq!(shards(0, 2), Vec::<Range<usize>>::new());
        for n in 0..40 {
            for parts in 1..6 {
                let s = shards(n, parts);
                assert_eq!(s.iter().map(|r| r.len()).sum::<usize>(), n);
                assert!(s.windows(2).all(|w| w[0].end == w[1].start));
                let (lo, hi) = (
                    s.iter().map(|r| r.len()).min().unwrap_or(0),
                    s.iter().map(|r| r.len()).max().unwrap_or(0),
                );
                assert!(hi - lo <= 1, "n {n} parts {parts}: {s:?}");
            }
        }
    }
}
