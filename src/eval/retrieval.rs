//! Embedding retrieval evaluation, as in the InDistill / PKT reference evaluation.
//!
//! The database is the train-set embeddings and the queries are the test-set embeddings. For
//! each query the whole database is ranked by increasing distance (ties broken by increasing
//! database index) and a database item is relevant when its label equals the query's label.
//! Each ranking is scored with the 11-point interpolated average precision
//! ([`interpolated_ap_11`]) and with precision at `k` ([`precision_at_k`]); both are averaged over
//! the queries.
//!
//! The work is done in blocks of queries, in parallel with rayon: the `f32` dot products of a
//! block against the whole database are computed with a register-blocked kernel (each database
//! row is loaded once per block and used for four queries at a time), distances are derived from
//! them with precomputed norms, and each query's ranking is a stable radix sort of `u32` keys.
//! No `queries x database` matrix is ever held in memory.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest squared Euclidean norm accepted for an embedding row, `2^120`: it keeps every partial
/// sum of an `f32` dot product between two rows below `2^120`, far from `f32::MAX` (about
/// `2^128`), so no distance can overflow.
const MAX_SQUARED_NORM: f64 = (1u128 << 120) as f64;
/// Dot-product buffer allowed to one block of queries (each query needs `4 * database` bytes).
const BLOCK_BUDGET_BYTES: usize = 16 << 20;
/// Most and fewest queries in one block; the kernel handles four queries at a time.
const MAX_QUERY_BLOCK: usize = 64;
const MIN_QUERY_BLOCK: usize = 4;

/// Distance used to rank the database for a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distance {
    /// Cosine distance `1 - cos(q, d)`, in `[0, 2]`. The cosine similarity of a pair involving
    /// an all-zero vector is defined as 0, so such a pair is at distance exactly 1 (as far as
    /// an orthogonal vector).
    Cosine,
    /// Euclidean distance. Rankings use the squared distance `|q|^2 + |d|^2 - 2 q.d` (clamped
    /// at 0), which orders the database as the Euclidean distance does. As `q.d` is accumulated
    /// in `f32`, near-identical vectors are resolved only to about `1e-7 * |q| * |d|`.
    L2,
}

impl Distance {
    /// The name used in serialised form and in reports: `"cosine"` or `"l2"`.
    pub fn name(self) -> &'static str {
        match self {
            Distance::Cosine => "cosine",
            Distance::L2 => "l2",
        }
    }
}

impl fmt::Display for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Result of one retrieval evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Distance the database was ranked by.
    pub distance: Distance,
    /// Mean over the evaluated queries of the 11-point interpolated average precision, in
    /// `[0, 1]`.
    pub map: f64,
    /// Mean over the evaluated queries of the precision of the first `k` ranked items (`k`
    /// clipped to the database size), in `[0, 1]`.
    pub precision_at_k: f64,
    /// The `k` requested (not clipped).
    pub k: usize,
    /// Number of queries evaluated: queries whose label occurs nowhere in the database are
    /// skipped and not counted.
    pub queries: usize,
    /// Number of database items.
    pub database: usize,
}

/// Which set of embeddings an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingSet {
    /// The database (train-set) embeddings.
    Database,
    /// The query (test-set) embeddings.
    Queries,
}

impl fmt::Display for EmbeddingSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmbeddingSet::Database => "database",
            EmbeddingSet::Queries => "queries",
        })
    }
}

/// Why a retrieval evaluation could not be run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RetrievalError {
    /// The embedding dimension was 0.
    #[error("embedding dimension must be at least 1, found 0")]
    ZeroDim,
    /// `k` was 0.
    #[error("k for precision@k must be at least 1, found 0")]
    ZeroK,
    /// A set has no rows.
    #[error("{set} is empty: no embeddings and no labels")]
    Empty {
        /// The empty set.
        set: EmbeddingSet,
    },
    /// The number of values does not match `labels x dim` (a wrong `dim` or a wrong number of
    /// labels).
    #[error(
        "{set} embeddings: expected {expected} values ({rows} labels x dim {dim}), found {found}"
    )]
    Shape {
        /// The set with the wrong shape.
        set: EmbeddingSet,
        /// Number of labels given, i.e. rows expected.
        rows: usize,
        /// Embedding dimension given.
        dim: usize,
        /// `rows * dim` (saturating).
        expected: usize,
        /// Number of values given.
        found: usize,
    },
    /// An embedding value is NaN or infinite.
    #[error("{set} embedding row {row} has a non-finite value ({value}) at column {column}")]
    NonFinite {
        /// The set holding the row.
        set: EmbeddingSet,
        /// Row index (0-based).
        row: usize,
        /// Column index (0-based).
        column: usize,
        /// The offending value.
        value: f32,
    },
    /// An embedding row is so large that `f32` dot products could overflow.
    #[error(
        "{set} embedding row {row} has squared norm {squared_norm:e}, above the supported 2^120"
    )]
    TooLarge {
        /// The set holding the row.
        set: EmbeddingSet,
        /// Row index (0-based).
        row: usize,
        /// Squared Euclidean norm of the row.
        squared_norm: f64,
    },
    /// No query label occurs in the database, so no query can be evaluated.
    #[error("none of the {queries} queries has a label that occurs in the database")]
    NoRelevantQuery {
        /// Number of queries given.
        queries: usize,
    },
}

/// Average precision of one ranked list with 11-point interpolated precision.
///
/// `relevant[i]` tells whether the item at rank `i + 1` is relevant; `total_relevant` is the
/// number of relevant items in the whole database (the recall denominator, which may exceed the
/// number of `true` in a truncated list). With precision `P(i)` and recall `R(i)` after the first
/// `i` items, for each level `r` in `{0.0, 0.1, ..., 1.0}` the interpolated precision is the
/// largest `P(i)` over ranks `i >= 1` with `R(i) >= r` (0 if there is none), and the result is
/// the mean of these 11 values, in `[0, 1]`. Recall levels are compared exactly
/// (`R(i) >= t/10` iff `10 * hits >= t * total_relevant`). Returns 0 when `total_relevant` is 0.
pub fn interpolated_ap_11(relevant: &[bool], total_relevant: usize) -> f64 {
    let mut precisions = Vec::new();
    let mut hits = 0usize;
    for (i, &is_relevant) in relevant.iter().enumerate() {
        if is_relevant {
            hits += 1;
            precisions.push(hits as f64 / (i + 1) as f64);
        }
    }
    ap11_from_hit_precisions(&precisions, total_relevant)
}

/// Precision of the first `k` ranked items: the fraction of `relevant[..min(k, len)]` that is
/// `true`. `k` is clipped to the list length; returns 0 when `k` or the list is empty.
pub fn precision_at_k(relevant: &[bool], k: usize) -> f64 {
    let k = k.min(relevant.len());
    if k == 0 {
        return 0.0;
    }
    relevant[..k].iter().filter(|&&r| r).count() as f64 / k as f64
}

/// Ranks the database for every query by `distance` and returns the mean 11-point interpolated
/// AP and mean precision@`k`.
///
/// Embeddings are row-major `[n, dim]` with one label per row. Each query is ranked against the
/// whole database by increasing distance, ties broken by increasing database index; distances
/// are rounded to `f32` before ranking. Queries whose label has no item in the database are
/// skipped (the number evaluated is reported in [`RetrievalMetrics::queries`]).
///
/// Errors: `dim` or `k` is 0; values do not form one `dim`-wide row per label; a set is empty;
/// a value is NaN or infinite; a row's squared norm reaches `2^120`; no query can be evaluated.
///
/// Runs on the current rayon pool. Besides the inputs, each worker holds at most 16 MiB of
/// `f32` dot products (at least 4 queries' worth for a very large database) and 8 bytes per
/// database item for sorting; nothing of size `queries x database` is allocated.
pub fn evaluate(
    database: &[f32],
    database_labels: &[u16],
    queries: &[f32],
    query_labels: &[u16],
    dim: usize,
    distance: Distance,
    k: usize,
) -> Result<RetrievalMetrics, RetrievalError> {
    let inputs = Inputs::new(database, database_labels, queries, query_labels, dim, k)?;
    let [metrics] = inputs.run([distance]);
    Ok(metrics)
}

/// Same as [`evaluate`] for both distances at once, returning `[cosine, l2]`; the dot products,
/// which dominate the cost, are computed once and shared by both rankings.
pub fn evaluate_both(
    database: &[f32],
    database_labels: &[u16],
    queries: &[f32],
    query_labels: &[u16],
    dim: usize,
    k: usize,
) -> Result<[RetrievalMetrics; 2], RetrievalError> {
    let inputs = Inputs::new(database, database_labels, queries, query_labels, dim, k)?;
    Ok(inputs.run([Distance::Cosine, Distance::L2]))
}

/// One validated set of embeddings with its per-row norms.
struct Rows<'a> {
    values: &'a [f32],
    labels: &'a [u16],
    /// Squared Euclidean norm of each row, accumulated in `f64`.
    squared_norms: Vec<f64>,
    /// Euclidean norm of each row.
    norms: Vec<f64>,
}

impl<'a> Rows<'a> {
    fn new(
        set: EmbeddingSet,
        values: &'a [f32],
        labels: &'a [u16],
        dim: usize,
    ) -> Result<Self, RetrievalError> {
        if labels.len().checked_mul(dim) != Some(values.len()) {
            return Err(RetrievalError::Shape {
                set,
                rows: labels.len(),
                dim,
                expected: labels.len().saturating_mul(dim),
                found: values.len(),
            });
        }
        if labels.is_empty() {
            return Err(RetrievalError::Empty { set });
        }
        let mut squared_norms = Vec::with_capacity(labels.len());
        for (row, x) in values.chunks_exact(dim).enumerate() {
            let mut squared_norm = 0.0f64;
            for (column, &value) in x.iter().enumerate() {
                if !value.is_finite() {
                    return Err(RetrievalError::NonFinite {
                        set,
                        row,
                        column,
                        value,
                    });
                }
                squared_norm += f64::from(value) * f64::from(value);
            }
            if squared_norm >= MAX_SQUARED_NORM {
                return Err(RetrievalError::TooLarge {
                    set,
                    row,
                    squared_norm,
                });
            }
            squared_norms.push(squared_norm);
        }
        let norms = squared_norms.iter().map(|s| s.sqrt()).collect();
        Ok(Self {
            values,
            labels,
            squared_norms,
            norms,
        })
    }

    fn row(&self, i: usize, dim: usize) -> &'a [f32] {
        &self.values[i * dim..(i + 1) * dim]
    }
}

/// Validated inputs of one evaluation.
struct Inputs<'a> {
    database: Rows<'a>,
    queries: Rows<'a>,
    dim: usize,
    k: usize,
    /// Number of database items of each label (indexed by label).
    label_counts: Vec<usize>,
    /// Indices of the queries that have at least one relevant database item.
    evaluated: Vec<usize>,
}

/// Buffers reused by the blocks that one rayon job processes.
#[derive(Default)]
struct Workspace {
    dots: Vec<f32>,
    keys: Vec<u32>,
    scratch: Vec<u32>,
    precisions: Vec<f64>,
}

impl<'a> Inputs<'a> {
    fn new(
        database: &'a [f32],
        database_labels: &'a [u16],
        queries: &'a [f32],
        query_labels: &'a [u16],
        dim: usize,
        k: usize,
    ) -> Result<Self, RetrievalError> {
        if dim == 0 {
            return Err(RetrievalError::ZeroDim);
        }
        if k == 0 {
            return Err(RetrievalError::ZeroK);
        }
        let database = Rows::new(EmbeddingSet::Database, database, database_labels, dim)?;
        let queries = Rows::new(EmbeddingSet::Queries, queries, query_labels, dim)?;
        let mut label_counts = vec![0usize; usize::from(u16::MAX) + 1];
        for &label in database.labels {
            label_counts[usize::from(label)] += 1;
        }
        let evaluated: Vec<usize> = (0..queries.labels.len())
            .filter(|&q| label_counts[usize::from(queries.labels[q])] > 0)
            .collect();
        if evaluated.is_empty() {
            return Err(RetrievalError::NoRelevantQuery {
                queries: queries.labels.len(),
            });
        }
        Ok(Self {
            database,
            queries,
            dim,
            k,
            label_counts,
            evaluated,
        })
    }

    /// Evaluates every distance of `distances` over the same dot products.
    fn run<const N: usize>(&self, distances: [Distance; N]) -> [RetrievalMetrics; N] {
        let n_db = self.database.labels.len();
        let block = (BLOCK_BUDGET_BYTES / (4 * n_db)).clamp(MIN_QUERY_BLOCK, MAX_QUERY_BLOCK);
        // Per-query scores come back in query order and are summed sequentially, so the result
        // does not depend on how rayon splits the work.
        let scores: Vec<Vec<[(f64, f64); N]>> = self
            .evaluated
            .par_chunks(block)
            .map_init(Workspace::default, |ws, queries| {
                self.score_block(queries, &distances, ws)
            })
            .collect();
        let count = self.evaluated.len();
        std::array::from_fn(|i| {
            let (mut ap_sum, mut precision_sum) = (0.0, 0.0);
            for per_query in scores.iter().flatten() {
                ap_sum += per_query[i].0;
                precision_sum += per_query[i].1;
            }
            RetrievalMetrics {
                distance: distances[i],
                map: ap_sum / count as f64,
                precision_at_k: precision_sum / count as f64,
                k: self.k,
                queries: count,
                database: n_db,
            }
        })
    }

    /// (AP, precision@k) of each query of `block` for each distance.
    fn score_block<const N: usize>(
        &self,
        block: &[usize],
        distances: &[Distance; N],
        ws: &mut Workspace,
    ) -> Vec<[(f64, f64); N]> {
        let dim = self.dim;
        let db = &self.database;
        let n_db = db.labels.len();
        let query_rows: Vec<&[f32]> = block.iter().map(|&q| self.queries.row(q, dim)).collect();
        ws.dots.clear();
        ws.dots.resize(block.len() * n_db, 0.0);
        block_dots(db.values, dim, &query_rows, &mut ws.dots);

        let mut out = Vec::with_capacity(block.len());
        for (dots, &q) in ws.dots.chunks_exact(n_db).zip(block) {
            let label = self.queries.labels[q];
            let total_relevant = self.label_counts[usize::from(label)];
            let mut scores = [(0.0, 0.0); N];
            for (score, &distance) in scores.iter_mut().zip(distances) {
                ws.keys.clear();
                let relevant = db.labels.iter().map(|&l| u32::from(l == label));
                match distance {
                    Distance::Cosine => {
                        let qn = self.queries.norms[q];
                        ws.keys.extend(dots.iter().zip(&db.norms).zip(relevant).map(
                            |((&dot, &dn), rel)| {
                                (rank_key(cosine_distance(f64::from(dot), qn, dn)) << 1) | rel
                            },
                        ));
                    }
                    Distance::L2 => {
                        let qs = self.queries.squared_norms[q];
                        ws.keys
                            .extend(dots.iter().zip(&db.squared_norms).zip(relevant).map(
                                |((&dot, &ds), rel)| {
                                    (rank_key(squared_l2_distance(f64::from(dot), qs, ds)) << 1)
                                        | rel
                                },
                            ));
                    }
                }
                radix_sort_by_key(&mut ws.keys, &mut ws.scratch);
                *score = score_ranking(&ws.keys, total_relevant, self.k, &mut ws.precisions);
            }
            out.push(scores);
        }
        out
    }
}

/// `1 - q.d / (|q| |d|)`, with the similarity of a pair involving a zero vector taken as 0.
fn cosine_distance(dot: f64, query_norm: f64, database_norm: f64) -> f64 {
    if query_norm == 0.0 || database_norm == 0.0 {
        1.0
    } else {
        1.0 - dot / (query_norm * database_norm)
    }
}

/// `|q|^2 + |d|^2 - 2 q.d`; may be slightly negative through rounding (see [`rank_key`]).
fn squared_l2_distance(dot: f64, query_squared_norm: f64, database_squared_norm: f64) -> f64 {
    query_squared_norm + database_squared_norm - 2.0 * dot
}

/// Order-preserving `u32` key of a distance, below `2^31` so that a relevance bit fits beside it.
///
/// The distance is clamped at 0 (rounding can make a zero distance slightly negative), rounded
/// to `f32` and taken as its bit pattern, which orders non-negative floats like their values.
fn rank_key(distance: f64) -> u32 {
    // Validated inputs cannot produce NaN; should one appear anyway, rank it last, not first.
    if distance.is_nan() {
        return f32::INFINITY.to_bits();
    }
    let d = distance.max(0.0) as f32;
    // Folds -0.0 into +0.0 so that equal distances get equal keys.
    if d == 0.0 { 0 } else { d.to_bits() }
}

/// Stable LSD radix sort of packed `(rank_key << 1) | relevant` values by their upper 31 bits.
///
/// The input is in database-index order and the sort is stable, so equal distances stay in
/// increasing index order. `scratch` is a second buffer of the same length.
fn radix_sort_by_key(keys: &mut Vec<u32>, scratch: &mut Vec<u32>) {
    const RADIX: usize = 1 << 11;
    // (shift, mask): bits 1..12, 12..23, 23..32.
    const PASSES: [(u32, u32); 3] = [(1, 0x7ff), (12, 0x7ff), (23, 0x1ff)];
    let n = keys.len();
    let mut histograms = [[0usize; RADIX]; 3];
    for &x in keys.iter() {
        for (histogram, &(shift, mask)) in histograms.iter_mut().zip(&PASSES) {
            histogram[((x >> shift) & mask) as usize] += 1;
        }
    }
    scratch.clear();
    scratch.resize(n, 0);
    let mut sorted_in_keys = true;
    for (histogram, &(shift, mask)) in histograms.iter_mut().zip(&PASSES) {
        // A digit shared by every element leaves the order unchanged: skip the pass.
        if histogram.contains(&n) {
            continue;
        }
        let mut offset = 0;
        for count in histogram.iter_mut() {
            let c = *count;
            *count = offset;
            offset += c;
        }
        let (src, dst) = if sorted_in_keys {
            (&keys[..], &mut scratch[..])
        } else {
            (&scratch[..], &mut keys[..])
        };
        for &x in src {
            let slot = &mut histogram[((x >> shift) & mask) as usize];
            dst[*slot] = x;
            *slot += 1;
        }
        sorted_in_keys = !sorted_in_keys;
    }
    if !sorted_in_keys {
        std::mem::swap(keys, scratch);
    }
}

/// (11-point interpolated AP, precision@k) of a ranking given as packed keys whose lowest bit is
/// the relevance. `precisions` is a reusable buffer.
fn score_ranking(
    ranked: &[u32],
    total_relevant: usize,
    k: usize,
    precisions: &mut Vec<f64>,
) -> (f64, f64) {
    let k = k.min(ranked.len());
    let precision = if k == 0 {
        0.0
    } else {
        ranked[..k].iter().filter(|&&x| x & 1 == 1).count() as f64 / k as f64
    };
    precisions.clear();
    let mut hits = 0usize;
    for (i, &x) in ranked.iter().enumerate() {
        if x & 1 == 1 {
            hits += 1;
            precisions.push(hits as f64 / (i + 1) as f64);
            // Ranks after the last relevant item cannot raise any interpolated precision.
            if hits == total_relevant {
                break;
            }
        }
    }
    (
        ap11_from_hit_precisions(precisions, total_relevant),
        precision,
    )
}

/// 11-point interpolated AP from the precision at the rank of each relevant item, in rank order.
///
/// Precision only rises at a relevant item, so the largest precision over ranks with recall at
/// least `t/10` is the largest over relevant items `j` (1-based) with `10 j >= t R`.
fn ap11_from_hit_precisions(precisions: &[f64], total_relevant: usize) -> f64 {
    if total_relevant == 0 {
        return 0.0;
    }
    let mut sum = 0.0;
    let mut best = 0.0f64;
    // precisions[included..] have been folded into `best`.
    let mut included = precisions.len();
    for t in (0..=10u128).rev() {
        let first_hit = (t * total_relevant as u128).div_ceil(10).max(1);
        let first_index = usize::try_from(first_hit - 1).unwrap_or(usize::MAX);
        while included > first_index {
            included -= 1;
            best = best.max(precisions[included]);
        }
        sum += best;
    }
    sum / 11.0
}

/// Dot products of every database row with every query row, written to `out` as
/// `[query][database row]`.
fn block_dots(database: &[f32], dim: usize, queries: &[&[f32]], out: &mut [f32]) {
    let n_db = database.len() / dim;
    // Database rows are the outer loop so that each is read from memory once per block, while
    // the block's query rows stay in cache.
    for (j, d) in database.chunks_exact(dim).enumerate() {
        let mut first = 0;
        for group in queries.chunks(4) {
            if let &[q0, q1, q2, q3] = group {
                let dots = dot4(d, [q0, q1, q2, q3]);
                for (t, dot) in dots.into_iter().enumerate() {
                    out[(first + t) * n_db + j] = dot;
                }
            } else {
                for (t, q) in group.iter().enumerate() {
                    out[(first + t) * n_db + j] = dot(d, q);
                }
            }
            first += group.len();
        }
    }
}

/// `acc[l] += a[l] * b[l]` for the 8 lanes; written lane-wise so that it vectorises.
#[inline(always)]
fn multiply_add_8(acc: &mut [f32; 8], a: &[f32; 8], b: &[f32; 8]) {
    for ((s, x), y) in acc.iter_mut().zip(a).zip(b) {
        *s += x * y;
    }
}

/// Sum of the 8 lanes and the scalar tail, in a fixed order shared by [`dot`] and [`dot4`] so
/// that both give bit-identical results.
///
/// Kept out of line on purpose (it runs once per dot product, not per element): inlined, these
/// sums lead LLVM's SLP vectoriser to lay the loop of [`dot4`] out across the four queries (one
/// lane per query, a shuffle for every multiply, measured 2.5 times slower) and the loop of
/// [`dot`] out in half-width vectors. Taking the lanes by value keeps them in registers in
/// the loop.
#[inline(never)]
fn reduce_8(acc: [f32; 8], tail: f32) -> f32 {
    // Halves first (lane l with lane l + 4), matching a two-register layout of the lanes.
    let s = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    ((s[0] + s[2]) + (s[1] + s[3])) + tail
}

/// Dot product with 8 independent accumulators (vectorisable without reassociation).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a_chunks, a_tail) = a[..n].as_chunks::<8>();
    let (b_chunks, b_tail) = b[..n].as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        multiply_add_8(&mut acc, x, y);
    }
    let mut tail = 0.0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    reduce_8(acc, tail)
}

/// Dot products of `d` with four rows at once, so that each chunk of `d` is loaded once for four
/// multiply-adds. Each result equals `dot(d, q[i])` bit for bit.
#[inline]
fn dot4(d: &[f32], q: [&[f32]; 4]) -> [f32; 4] {
    let n = q.iter().fold(d.len(), |n, row| n.min(row.len()));
    let (d_chunks, d_tail) = d[..n].as_chunks::<8>();
    let [(c0, t0), (c1, t1), (c2, t2), (c3, t3)] = q.map(|row| row[..n].as_chunks::<8>());
    let (mut a0, mut a1, mut a2, mut a3) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    for ((((x, y0), y1), y2), y3) in d_chunks.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
        multiply_add_8(&mut a0, x, y0);
        multiply_add_8(&mut a1, x, y1);
        multiply_add_8(&mut a2, x, y2);
        multiply_add_8(&mut a3, x, y3);
    }
    let tail = |t: &[f32]| {
        let mut sum = 0.0f32;
        for (x, y) in d_tail.iter().zip(t) {
            sum += x * y;
        }
        sum
    };
    [
        reduce_8(a0, tail(t0)),
        reduce_8(a1, tail(t1)),
        reduce_8(a2, tail(t2)),
        reduce_8(a3, tail(t3)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < EPS
    }

    /// The 2-D database of the hand-computed examples: (point, label).
    ///
    /// ```text
    /// d0 = ( 1, 0) label 0      d3 = ( 2, 2) label 0
    /// d1 = ( 3, 1) label 1      d4 = (-1, 0) label 0
    /// d2 = ( 0, 2) label 1      d5 = ( 4, 0) label 1
    /// ```
    fn hand_database() -> (Vec<f32>, Vec<u16>) {
        (
            vec![1.0, 0.0, 3.0, 1.0, 0.0, 2.0, 2.0, 2.0, -1.0, 0.0, 4.0, 0.0],
            vec![0, 1, 1, 0, 0, 1],
        )
    }

    // Query q0 = (2, 0), label 0: relevant = {d0, d3, d4}, R = 3.
    //
    // L2^2: d0 1, d1 2, d2 8, d3 4, d4 9, d5 4 (tie d3/d5 -> index order).
    // rank item rel hits precision recall
    //  1   d0   R   1    1/1      1/3
    //  2   d1   .   1    1/2      1/3
    //  3   d3   R   2    2/3      2/3
    //  4   d5   .   2    2/4      2/3
    //  5   d2   .   2    2/5      2/3
    //  6   d4   R   3    3/6      3/3
    // interpolated: r = 0.0..0.3 -> 1 (x4); r = 0.4..0.6 -> max(2/3, 2/4, 2/5, 3/6) = 2/3 (x3);
    //               r = 0.7..1.0 -> 3/6 (x4).
    // AP = (4 * 1 + 3 * 2/3 + 4 * 1/2) / 11 = 8/11; P@3 = 2/3.
    const Q0_L2: [bool; 6] = [true, false, true, false, false, true];
    const Q0_L2_AP: f64 = 8.0 / 11.0;
    //
    // cosine distance: d0 0, d1 1 - 3/sqrt(10) = 0.051, d2 1, d3 1 - 1/sqrt(2) = 0.293, d4 2,
    // d5 0 (tie d0/d5 -> index order).
    // rank item rel hits precision recall
    //  1   d0   R   1    1/1      1/3
    //  2   d5   .   1    1/2      1/3
    //  3   d1   .   1    1/3      1/3
    //  4   d3   R   2    2/4      2/3
    //  5   d2   .   2    2/5      2/3
    //  6   d4   R   3    3/6      3/3
    // interpolated: 1 (x4), max(2/4, 2/5, 3/6) = 1/2 (x3), 1/2 (x4).
    // AP = (4 + 1.5 + 2) / 11 = 7.5/11; P@3 = 1/3.
    const Q0_COS: [bool; 6] = [true, false, false, true, false, true];
    const Q0_COS_AP: f64 = 7.5 / 11.0;

    // Query q1 = (0, 1), label 1: relevant = {d1, d2, d5}, R = 3.
    //
    // L2^2: d0 2, d1 9, d2 1, d3 5, d4 2, d5 17 (tie d0/d4 -> index order).
    // rank item rel hits precision recall
    //  1   d2   R   1    1/1      1/3
    //  2   d0   .   1    1/2      1/3
    //  3   d4   .   1    1/3      1/3
    //  4   d3   .   1    1/4      1/3
    //  5   d1   R   2    2/5      2/3
    //  6   d5   R   3    3/6      3/3
    // interpolated: 1 (x4); r = 0.4..0.6 -> max(2/5, 3/6) = 1/2 (x3, the interpolation lifts
    //               0.4 to 0.5); r = 0.7..1.0 -> 1/2 (x4).
    // AP = (4 + 1.5 + 2) / 11 = 7.5/11; P@3 = 1/3.
    const Q1_L2: [bool; 6] = [true, false, false, false, true, true];
    const Q1_L2_AP: f64 = 7.5 / 11.0;
    //
    // cosine distance: d0 1, d1 1 - 1/sqrt(10) = 0.684, d2 0, d3 0.293, d4 1, d5 1
    // (tie d0/d4/d5 -> index order).
    // rank item rel hits precision recall
    //  1   d2   R   1    1/1      1/3
    //  2   d3   .   1    1/2      1/3
    //  3   d1   R   2    2/3      2/3
    //  4   d0   .   2    2/4      2/3
    //  5   d4   .   2    2/5      2/3
    //  6   d5   R   3    3/6      3/3
    // interpolated: 1 (x4), 2/3 (x3), 1/2 (x4). AP = 8/11; P@3 = 2/3.
    const Q1_COS: [bool; 6] = [true, false, true, false, false, true];
    const Q1_COS_AP: f64 = 8.0 / 11.0;

    #[test]
    fn hand_computed_ranked_lists() {
        assert!(close(interpolated_ap_11(&Q0_L2, 3), Q0_L2_AP));
        assert!(close(interpolated_ap_11(&Q0_COS, 3), Q0_COS_AP));
        assert!(close(interpolated_ap_11(&Q1_L2, 3), Q1_L2_AP));
        assert!(close(interpolated_ap_11(&Q1_COS, 3), Q1_COS_AP));
        assert!(close(precision_at_k(&Q0_L2, 3), 2.0 / 3.0));
        assert!(close(precision_at_k(&Q0_COS, 3), 1.0 / 3.0));
        assert!(close(precision_at_k(&Q1_L2, 3), 1.0 / 3.0));
        assert!(close(precision_at_k(&Q1_COS, 3), 2.0 / 3.0));
    }

    #[test]
    fn hand_computed_evaluate_single_queries() {
        let (db, db_labels) = hand_database();
        let cases = [
            ([2.0f32, 0.0], 0u16, Distance::L2, Q0_L2_AP, 2.0 / 3.0),
            ([2.0, 0.0], 0, Distance::Cosine, Q0_COS_AP, 1.0 / 3.0),
            ([0.0, 1.0], 1, Distance::L2, Q1_L2_AP, 1.0 / 3.0),
            ([0.0, 1.0], 1, Distance::Cosine, Q1_COS_AP, 2.0 / 3.0),
        ];
        for (query, label, distance, ap, p3) in cases {
            let m = evaluate(&db, &db_labels, &query, &[label], 2, distance, 3).unwrap();
            assert!(close(m.map, ap), "{distance}: {m:?} vs {ap}");
            assert!(close(m.precision_at_k, p3), "{distance}: {m:?} vs {p3}");
            assert_eq!(
                (m.k, m.queries, m.database, m.distance),
                (3, 1, 6, distance)
            );
        }
    }

    #[test]
    fn hand_computed_evaluate_both_and_skipped_query() {
        let (db, db_labels) = hand_database();
        // The third query has label 7, absent from the database: skipped.
        let queries = [2.0f32, 0.0, 0.0, 1.0, 5.0, 5.0];
        let labels = [0u16, 1, 7];
        let [cos, l2] = evaluate_both(&db, &db_labels, &queries, &labels, 2, 3).unwrap();
        assert_eq!(
            (cos.distance, l2.distance),
            (Distance::Cosine, Distance::L2)
        );
        assert_eq!((cos.queries, l2.queries), (2, 2));
        assert!(close(cos.map, (Q0_COS_AP + Q1_COS_AP) / 2.0));
        assert!(close(l2.map, (Q0_L2_AP + Q1_L2_AP) / 2.0));
        assert!(close(cos.precision_at_k, 0.5));
        assert!(close(l2.precision_at_k, 0.5));
        let single = evaluate(&db, &db_labels, &queries, &labels, 2, Distance::L2, 3).unwrap();
        assert_eq!(single, l2);
    }

    #[test]
    fn k_larger_than_database_is_clipped() {
        assert!(close(precision_at_k(&[true, false, true], 10), 2.0 / 3.0));
        assert_eq!(precision_at_k(&[true], 0), 0.0);
        assert_eq!(precision_at_k(&[], 5), 0.0);
        // Every query then sees the whole database: 3 relevant of 6.
        let (db, db_labels) = hand_database();
        let [cos, l2] =
            evaluate_both(&db, &db_labels, &[2.0, 0.0, 0.0, 1.0], &[0, 1], 2, 100).unwrap();
        assert!(close(cos.precision_at_k, 0.5));
        assert!(close(l2.precision_at_k, 0.5));
        assert_eq!(l2.k, 100);
    }

    #[test]
    fn ap_edge_cases() {
        // Perfect ranking.
        assert!(close(
            interpolated_ap_11(&[true, true, false, false], 2),
            1.0
        ));
        // Single relevant item last of 4: precision 1/4 at recall 1, so all 11 levels are 1/4.
        assert!(close(
            interpolated_ap_11(&[false, false, false, true], 1),
            0.25
        ));
        // Truncated list: 1 of 2 relevant retrieved at rank 1. Recall reaches only 0.5:
        // levels 0.0..0.5 -> 1 (x6), 0.6..1.0 -> 0 (x5). AP = 6/11.
        assert!(close(interpolated_ap_11(&[true, false], 2), 6.0 / 11.0));
        // Exact recall boundary: R = 10, 3 hits at ranks 1..3 then 7 at ranks 5..11.
        // Recall 0.3 is reached at rank 3 (precision 1) -> level 0.3 gets 1, not a later value.
        let mut list = vec![true, true, true, false];
        list.extend([true; 7]);
        // levels 0.0..0.3 -> 1 (x4); 0.4..1.0 -> best precision at hits 4..10 = 10/11 (x7).
        assert!(close(
            interpolated_ap_11(&list, 10),
            (4.0 + 7.0 * 10.0 / 11.0) / 11.0
        ));
        assert_eq!(interpolated_ap_11(&[true], 0), 0.0);
        assert_eq!(interpolated_ap_11(&[], 3), 0.0);
        assert_eq!(interpolated_ap_11(&[false, false], 1), 0.0);
    }

    #[test]
    fn zero_vectors_are_at_cosine_distance_one() {
        // Query (0, 0): every database item is at cosine distance 1, so the ranking is the index
        // order. Relevant (label 0) at ranks 1, 4, 5 of d0..d5:
        // precisions 1, 2/4, 3/5 at recalls 1/3, 2/3, 1 -> AP = (4 + 3 * 0.6 + 4 * 0.6) / 11.
        let (db, db_labels) = hand_database();
        let m = evaluate(&db, &db_labels, &[0.0, 0.0], &[0], 2, Distance::Cosine, 1).unwrap();
        assert!(close(m.map, (4.0 + 7.0 * 0.6) / 11.0), "{m:?}");
        assert!(close(m.precision_at_k, 1.0));
        assert!(close(cosine_distance(0.0, 0.0, 3.0), 1.0));
    }

    #[test]
    fn errors() {
        let (db, db_labels) = hand_database();
        let q = [1.0f32, 0.0];
        let err = |r: Result<RetrievalMetrics, RetrievalError>| r.unwrap_err();
        // Dimension mismatch: 12 database values do not form 6 rows of 3.
        let e = err(evaluate(
            &db,
            &db_labels,
            &[1.0, 0.0, 0.0],
            &[0],
            3,
            Distance::L2,
            1,
        ));
        assert_eq!(
            e,
            RetrievalError::Shape {
                set: EmbeddingSet::Database,
                rows: 6,
                dim: 3,
                expected: 18,
                found: 12
            }
        );
        assert!(e.to_string().contains("expected 18"), "{e}");
        assert!(e.to_string().contains("found 12"), "{e}");
        // Query label count mismatch: 2 values of dim 2 but two labels.
        let e = err(evaluate(&db, &db_labels, &q, &[0, 1], 2, Distance::L2, 1));
        assert!(matches!(
            e,
            RetrievalError::Shape {
                set: EmbeddingSet::Queries,
                rows: 2,
                expected: 4,
                found: 2,
                ..
            }
        ));
        // Database label count mismatch.
        let e = err(evaluate(&db, &db_labels[..5], &q, &[0], 2, Distance::L2, 1));
        assert!(matches!(
            e,
            RetrievalError::Shape {
                set: EmbeddingSet::Database,
                ..
            }
        ));
        // NaN in a database row and infinity in a query row.
        let mut bad = db.clone();
        bad[7] = f32::NAN;
        let e = err(evaluate(&bad, &db_labels, &q, &[0], 2, Distance::Cosine, 1));
        assert!(matches!(
            e,
            RetrievalError::NonFinite {
                set: EmbeddingSet::Database,
                row: 3,
                column: 1,
                ..
            }
        ));
        assert!(e.to_string().contains("row 3"), "{e}");
        let e = err(evaluate(
            &db,
            &db_labels,
            &[0.0, f32::INFINITY],
            &[0],
            2,
            Distance::L2,
            1,
        ));
        assert!(matches!(
            e,
            RetrievalError::NonFinite {
                set: EmbeddingSet::Queries,
                row: 0,
                column: 1,
                ..
            }
        ));
        // Overflow-prone magnitude.
        let e = err(evaluate(
            &db,
            &db_labels,
            &[1e30, 0.0],
            &[0],
            2,
            Distance::L2,
            1,
        ));
        assert!(matches!(
            e,
            RetrievalError::TooLarge {
                set: EmbeddingSet::Queries,
                row: 0,
                ..
            }
        ));
        // Empty sets, zero dim, zero k, nothing to evaluate.
        assert_eq!(
            err(evaluate(&[], &[], &q, &[0], 2, Distance::L2, 1)),
            RetrievalError::Empty {
                set: EmbeddingSet::Database
            }
        );
        assert_eq!(
            err(evaluate(&db, &db_labels, &[], &[], 2, Distance::L2, 1)),
            RetrievalError::Empty {
                set: EmbeddingSet::Queries
            }
        );
        assert_eq!(
            err(evaluate(&db, &db_labels, &q, &[0], 0, Distance::L2, 1)),
            RetrievalError::ZeroDim
        );
        assert_eq!(
            err(evaluate(&db, &db_labels, &q, &[0], 2, Distance::L2, 0)),
            RetrievalError::ZeroK
        );
        assert_eq!(
            err(evaluate(&db, &db_labels, &q, &[9], 2, Distance::L2, 1)),
            RetrievalError::NoRelevantQuery { queries: 1 }
        );
        assert!(evaluate_both(&db, &db_labels, &q, &[9], 2, 1).is_err());
    }

    #[test]
    fn distance_serde_names() {
        assert_eq!(Distance::Cosine.to_string(), "cosine");
        assert_eq!(Distance::L2.to_string(), "l2");
    }

    /// Naive reference: every distance in `f64` with plain loops (L2 straight from the
    /// differences), rounded to `f32` (the precision `evaluate` ranks at), a comparison sort on
    /// (distance, index), and AP straight from the definition over every rank.
    fn reference(
        db: &[f32],
        db_labels: &[u16],
        queries: &[f32],
        query_labels: &[u16],
        dim: usize,
        distance: Distance,
        k: usize,
    ) -> Option<(f64, f64, usize)> {
        let (mut ap_sum, mut p_sum, mut count) = (0.0, 0.0, 0usize);
        for (q, &label) in queries.chunks(dim).zip(query_labels) {
            let total = db_labels.iter().filter(|&&l| l == label).count();
            if total == 0 {
                continue;
            }
            let mut ranked: Vec<(f32, usize)> = db
                .chunks(dim)
                .enumerate()
                .map(|(i, d)| {
                    let value = match distance {
                        Distance::L2 => q
                            .iter()
                            .zip(d)
                            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                            .sum::<f64>(),
                        Distance::Cosine => {
                            let dot: f64 = q
                                .iter()
                                .zip(d)
                                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                .sum();
                            let qn = q.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
                            let dn = d.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
                            if qn == 0.0 || dn == 0.0 {
                                1.0
                            } else {
                                1.0 - dot / (qn * dn)
                            }
                        }
                    };
                    (value.max(0.0) as f32, i)
                })
                .collect();
            ranked.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
            let relevant: Vec<bool> = ranked.iter().map(|&(_, i)| db_labels[i] == label).collect();
            // AP by the definition: for each level, max precision over all ranks with recall >= r.
            let mut ap = 0.0;
            for t in 0..=10 {
                let level = f64::from(t) / 10.0;
                let mut best = 0.0f64;
                let mut hits = 0;
                for (i, &r) in relevant.iter().enumerate() {
                    hits += usize::from(r);
                    if hits as f64 / total as f64 >= level {
                        best = best.max(hits as f64 / (i + 1) as f64);
                    }
                }
                ap += best;
            }
            ap_sum += ap / 11.0;
            let kk = k.min(relevant.len());
            p_sum += relevant[..kk].iter().filter(|&&r| r).count() as f64 / kk as f64;
            count += 1;
        }
        (count > 0).then(|| (ap_sum / count as f64, p_sum / count as f64, count))
    }

    fn check_against_reference(
        db: &[f32],
        db_labels: &[u16],
        queries: &[f32],
        query_labels: &[u16],
        dim: usize,
        k: usize,
    ) {
        let both = evaluate_both(db, db_labels, queries, query_labels, dim, k);
        for (i, distance) in [Distance::Cosine, Distance::L2].into_iter().enumerate() {
            let expected = reference(db, db_labels, queries, query_labels, dim, distance, k);
            let single = evaluate(db, db_labels, queries, query_labels, dim, distance, k);
            match (expected, &both) {
                (None, Err(RetrievalError::NoRelevantQuery { .. })) => {
                    assert!(single.is_err());
                }
                (Some((map, p, count)), Ok(both)) => {
                    let m = &both[i];
                    assert_eq!(m.distance, distance);
                    assert!(close(m.map, map), "{distance}: map {} vs {map}", m.map);
                    assert!(
                        close(m.precision_at_k, p),
                        "{distance}: p {} vs {p}",
                        m.precision_at_k
                    );
                    assert_eq!(m.queries, count);
                    assert_eq!(m.database, db_labels.len());
                    assert_eq!(single.as_ref().ok(), Some(m));
                }
                (expected, actual) => panic!("reference {expected:?}, evaluate {actual:?}"),
            }
        }
    }

    /// Small deterministic generator for test data (no extra dependency).
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Small integer coordinates make dot products exact and produce many exact ties
        /// (duplicate and scaled vectors, zero vectors), which must break by index.
        #[test]
        fn evaluate_matches_naive_reference(
            dim in 1usize..6,
            n_db in 1usize..14,
            n_q in 1usize..11,
            k in 1usize..16,
            seed in any::<u64>(),
        ) {
            let mut rng = XorShift(seed | 1);
            let db: Vec<f32> = (0..n_db * dim).map(|_| rng.below(5) as f32 - 2.0).collect();
            // Some queries copy database rows exactly, the rest are random.
            let mut queries = Vec::with_capacity(n_q * dim);
            for _ in 0..n_q {
                if rng.below(3) == 0 {
                    let row = rng.below(n_db as u64) as usize;
                    queries.extend_from_slice(&db[row * dim..(row + 1) * dim]);
                } else {
                    queries.extend((0..dim).map(|_| rng.below(7) as f32 - 3.0));
                }
            }
            let db_labels: Vec<u16> = (0..n_db).map(|_| rng.below(3) as u16).collect();
            let query_labels: Vec<u16> = (0..n_q).map(|_| rng.below(4) as u16).collect();
            check_against_reference(&db, &db_labels, &queries, &query_labels, dim, k);
        }

        #[test]
        fn ap_matches_definition(
            relevant in proptest::collection::vec(any::<bool>(), 0..40),
            extra in 0usize..5,
        ) {
            let hits = relevant.iter().filter(|&&r| r).count();
            let total = hits + extra;
            let mut expected = 0.0;
            if total > 0 {
                for t in 0..=10 {
                    let mut best = 0.0f64;
                    let mut h = 0;
                    for (i, &r) in relevant.iter().enumerate() {
                        h += usize::from(r);
                        if 10 * h >= t * total {
                            best = best.max(h as f64 / (i + 1) as f64);
                        }
                    }
                    expected += best / 11.0;
                }
            }
            let ap = interpolated_ap_11(&relevant, total);
            prop_assert!((ap - expected).abs() < EPS, "{} vs {}", ap, expected);
            prop_assert!((0.0..=1.0).contains(&ap));
        }
    }

    #[test]
    fn blocks_and_kernel_tails_match_reference() {
        // 150 queries span several blocks with a partial last group of four; dim 13 exercises
        // the scalar tail of the 8-lane kernel.
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (dim, n_db, n_q) = (13, 97, 150);
        let db: Vec<f32> = (0..n_db * dim).map(|_| rng.below(9) as f32 - 4.0).collect();
        let queries: Vec<f32> = (0..n_q * dim).map(|_| rng.below(9) as f32 - 4.0).collect();
        let db_labels: Vec<u16> = (0..n_db).map(|_| rng.below(5) as u16).collect();
        let query_labels: Vec<u16> = (0..n_q).map(|_| rng.below(6) as u16).collect();
        check_against_reference(&db, &db_labels, &queries, &query_labels, dim, 10);
    }

    #[test]
    fn dot4_equals_dot_bit_for_bit() {
        let mut rng = XorShift(42);
        for dim in [1, 7, 8, 9, 64, 129] {
            let rows: Vec<Vec<f32>> = (0..5)
                .map(|_| (0..dim).map(|_| rng.unit() * 3.0).collect())
                .collect();
            let four = dot4(&rows[0], [&rows[1], &rows[2], &rows[3], &rows[4]]);
            for (i, value) in four.into_iter().enumerate() {
                assert_eq!(value.to_bits(), dot(&rows[0], &rows[i + 1]).to_bits());
                let exact: f64 = rows[0]
                    .iter()
                    .zip(&rows[i + 1])
                    .map(|(&a, &b)| f64::from(a * b))
                    .sum();
                assert!((f64::from(value) - exact).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn radix_sort_is_stable_by_key() {
        let mut rng = XorShift(7);
        let mut keys: Vec<u32> = (0..5000)
            .map(|_| {
                let d = (rng.below(50) as f32) * 0.25;
                (rank_key(f64::from(d)) << 1) | (rng.below(2) as u32)
            })
            .collect();
        // Tag the original order in a side vector to check stability on equal keys.
        let mut expected: Vec<(u32, usize)> =
            keys.iter().enumerate().map(|(i, &x)| (x >> 1, i)).collect();
        expected.sort();
        let original = keys.clone();
        let mut scratch = Vec::new();
        radix_sort_by_key(&mut keys, &mut scratch);
        let want: Vec<u32> = expected.iter().map(|&(_, i)| original[i]).collect();
        assert_eq!(keys, want);
        assert_eq!(rank_key(-0.0), rank_key(0.0));
        assert_eq!(rank_key(-1e-9), 0);
        assert!(rank_key(f64::NAN) >= rank_key(1e300));
    }

    #[test]
    fn cosine_and_l2_agree_on_unit_vectors() {
        // For |q| = |d| = 1, |q - d|^2 = 2 - 2 cos = 2 * cosine distance: same ranking.
        // Axis-aligned and exactly representable unit vectors give identical rankings exactly.
        let db = [
            1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0, 0.6, 0.8, 0.8, -0.6, 0.0, -1.0,
        ];
        let db_labels = [0u16, 1, 0, 1, 0, 1];
        let queries = [0.6f32, 0.8, 1.0, 0.0, 0.0, -1.0];
        let query_labels = [0u16, 1, 0];
        let [cos, l2] = evaluate_both(&db, &db_labels, &queries, &query_labels, 2, 2).unwrap();
        assert!(close(cos.map, l2.map), "{cos:?} {l2:?}");
        assert!(close(cos.precision_at_k, l2.precision_at_k));

        // Random unit vectors under several labelings; the metrics must agree.
        let mut rng = XorShift(1234);
        let dim = 8;
        let normalise = |v: Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let db: Vec<f32> = (0..60)
            .flat_map(|_| normalise((0..dim).map(|_| rng.unit()).collect()))
            .collect();
        let queries: Vec<f32> = (0..12)
            .flat_map(|_| normalise((0..dim).map(|_| rng.unit()).collect()))
            .collect();
        for labels_seed in 1..6u64 {
            let mut lr = XorShift(labels_seed);
            let db_labels: Vec<u16> = (0..60).map(|_| lr.below(3) as u16).collect();
            let query_labels: Vec<u16> = (0..12).map(|_| lr.below(3) as u16).collect();
            let [cos, l2] =
                evaluate_both(&db, &db_labels, &queries, &query_labels, dim, 5).unwrap();
            assert!(close(cos.map, l2.map), "{cos:?} {l2:?}");
            assert!(
                close(cos.precision_at_k, l2.precision_at_k),
                "{cos:?} {l2:?}"
            );
        }
    }
}
