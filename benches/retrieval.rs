//! Retrieval metrics at Fashion-MNIST size: 10000 queries against a 60000-image database of
//! 128-dimensional embeddings, cosine and L2 at once (`eval::retrieval::evaluate_both`).
//!
//! `cargo bench --bench retrieval -- [--threads N] [--queries 10000] [--database 60000]
//! [--dim 128]` prints one JSON object on stdout.

use std::time::Instant;

use distill_edge::eval::retrieval::evaluate_both;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64: deterministic data without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Roughly uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs benches once in test mode (without `--bench`).
    if !args.iter().any(|a| a == "--bench") {
        println!("retrieval: skipped (run it with cargo bench)");
        return;
    }
    let threads = arg(&args, "--threads", 0);
    let n_q = arg(&args, "--queries", 10_000);
    let n_db = arg(&args, "--database", 60_000);
    let dim = arg(&args, "--dim", 128);
    distill_edge::runtime::init_threads((threads > 0).then_some(threads));

    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    // Class-dependent means so the metrics are not trivially at chance.
    let centres: Vec<f32> = (0..10 * dim).map(|_| rng.unit()).collect();
    let mut make = |n: usize| {
        let labels: Vec<u16> = (0..n).map(|_| rng.below(10) as u16).collect();
        let values: Vec<f32> = labels
            .iter()
            .flat_map(|&l| {
                let c = usize::from(l) * dim;
                (0..dim)
                    .map(|j| centres[c + j] + 2.0 * rng.unit())
                    .collect::<Vec<f32>>()
            })
            .collect();
        (values, labels)
    };
    let (db, db_labels) = make(n_db);
    let (queries, query_labels) = make(n_q);

    let start = Instant::now();
    let [cos, l2] = evaluate_both(&db, &db_labels, &queries, &query_labels, dim, 100)
        .expect("valid retrieval inputs");
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(cos.queries, n_q);
    assert!(
        cos.map > 0.1 && l2.map > 0.1,
        "metrics at chance: {cos:?} {l2:?}"
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "retrieval",
            "queries": n_q,
            "database": n_db,
            "dim": dim,
            "threads": rayon::current_num_threads(),
            "seconds": seconds,
            "map_cosine": cos.map,
            "map_l2": l2.map,
            "precision_at_100_cosine": cos.precision_at_k,
        })
    );
}
