//! `cargo xtask bench-qsimd --profile NET`: the engine's time per op at
//! batch 1 (median of repeated passes), exact and int8 on every ISA, with
//! the process's rayon thread count; per op, then per kind of op.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use dgms_qsimd::engine::Precision;
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::Engine;

use super::e2e;
use super::layers::isas;

/// Timed passes per implementation (after as many warm-up passes).
const PASSES: usize = 30;

pub fn run(dir: &Path, net: &str) -> Result<()> {
    if !e2e::NETWORKS.contains(&net) {
        bail!("--profile {net}: one of {:?}", e2e::NETWORKS);
    }
    if !e2e::packed_path(dir, net).is_file() {
        e2e::prepare(dir, &[net])?;
    }
    let packed = PackedModel::read(e2e::packed_path(dir, net))?;
    let input = e2e::input(1);
    let mut names: Vec<(String, String)> = Vec::new();
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for precision in [Precision::Exact, Precision::Int8] {
        for isa in isas(false) {
            let mut engine = Engine::with_precision(&packed, isa, precision)?;
            let mut per_op: Vec<Vec<f64>> = Vec::new();
            for pass in 0..2 * PASSES {
                let times = engine.profile(&input, 1)?;
                if names.is_empty() {
                    names = times
                        .iter()
                        .map(|t| (t.name.clone(), t.kind.clone()))
                        .collect();
                }
                if pass >= PASSES {
                    per_op.resize(times.len(), Vec::new());
                    for (v, t) in per_op.iter_mut().zip(&times) {
                        v.push(t.ms);
                    }
                }
            }
            columns.push((
                format!("{precision}-{isa}"),
                per_op.into_iter().map(median).collect(),
            ));
        }
    }
    println!(
        "{net}, batch 1, {} thread(s): median ms per op over {PASSES} passes",
        rayon::current_num_threads()
    );
    print!("{:<32} {:<14}", "op", "kind");
    columns.iter().for_each(|(c, _)| print!(" {c:>14}"));
    println!();
    for (i, (name, kind)) in names.iter().enumerate() {
        print!("{name:<32} {kind:<14}");
        columns.iter().for_each(|(_, v)| print!(" {:>14.3}", v[i]));
        println!();
    }
    println!("\nper kind of op:");
    let mut kinds: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, kind)) in names.iter().enumerate() {
        kinds.entry(kind).or_default().push(i);
    }
    for (kind, ops) in kinds
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain([("total".to_string(), (0..names.len()).collect::<Vec<_>>())])
    {
        print!("{:<32} {:<14}", kind, format!("{} ops", ops.len()));
        for (_, v) in &columns {
            print!(" {:>14.3}", ops.iter().map(|&i| v[i]).sum::<f64>());
        }
        println!();
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
