//! Text rendering of a plan's report (the CLI prints it).

use hecc_passes::report::Report;
use std::fmt::Write;

fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn opt_level(l: Option<u32>) -> String {
    l.map_or("-".into(), |l| l.to_string())
}

/// Renders `r` as the table `hecc report` prints.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let p = &r.params;
    let _ = writeln!(
        s,
        "model {}  layout {}  batch {}  rescale {}  activation {}",
        r.model,
        r.layout,
        r.batch,
        r.rescale_policy.name(),
        r.activation
    );
    let _ = writeln!(
        s,
        "params N=2^{} ({} slots)  q0 {} bits  {} x {}-bit scale primes  {} special primes of {} bits  dnum {}  log2(QP) {}{}  security {}",
        p.log_n,
        1u64 << (p.log_n - 1),
        p.q0_bits,
        p.scale_bits.len(),
        p.scale_bits.first().copied().unwrap_or(0),
        p.special_bits.len(),
        p.special_bits.first().copied().unwrap_or(0),
        p.dnum,
        p.log_qp,
        p.bound.map_or(String::new(), |b| format!(" <= {b}")),
        p.security.name()
    );
    let _ = writeln!(s, "depth {} levels  {} HE nodes", r.depth, r.nodes);
    let _ = writeln!(s);
    // The bootstrap column, only for plans that bootstrap.
    let boots = r.totals.bootstraps > 0;
    let boot_col = |n: u64| {
        if boots {
            format!(" {n:>6}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        s,
        "{:<20} {:<16} {:>5} {:>5} {:>5} {:>9} {:>11} {:>9} {:>7} {:>8} {:>6}{} {:>9} {:>10}{}",
        "layer",
        "op",
        "l_in",
        "l_out",
        "depth",
        "ct*ct",
        "ct*scalar",
        "add",
        "relin",
        "rescale",
        "rot",
        if boots { "   boot" } else { "" },
        "cts",
        "memory",
        if r.est_seconds.is_some() {
            "   est. s"
        } else {
            ""
        }
    );
    for l in &r.layers {
        let _ =
            writeln!(
            s,
            "{:<20} {:<16} {:>5} {:>5} {:>5} {:>9} {:>11} {:>9} {:>7} {:>8} {:>6}{} {:>9} {:>10}{}",
            l.name,
            format!("{} {:?}", l.op, l.shape).chars().take(16).collect::<String>(),
            opt_level(l.level_in),
            opt_level(l.level_out),
            l.depth,
            l.ops.ct_mults,
            l.ops.scalar_mults + l.ops.pt_mults,
            l.ops.additions,
            l.ops.relins,
            l.ops.rescales,
            l.ops.rotations,
            boot_col(l.ops.bootstraps),
            l.ciphertexts,
            bytes(l.bytes),
            l.est_seconds.map_or(String::new(), |t| format!(" {t:>9.3}"))
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        s,
        "{:<20} {:<16} {:>5} {:>5} {:>5} {:>9} {:>11} {:>9} {:>7} {:>8} {:>6}{}",
        "total",
        "",
        "",
        "",
        r.depth,
        t.ct_mults,
        t.scalar_mults + t.pt_mults,
        t.additions,
        t.relins,
        t.rescales,
        t.rotations,
        boot_col(t.bootstraps)
    );
    let _ = writeln!(s);
    let k = &r.keys;
    let whole_chain = k.relin_key * k.rotation_steps.len() as u64;
    let capped = if k.galois_keys < whole_chain {
        format!(
            "; each made for the levels its step is used at, {} over the whole chain",
            bytes(whole_chain)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "keys: public {}  relinearization {}  rotation: {} steps {:?} ({}{capped})",
        bytes(k.public_key),
        bytes(k.relin_key),
        k.rotation_steps.len(),
        k.rotation_steps,
        bytes(k.galois_keys)
    );
    if let Some(b) = &k.bootstrap {
        let _ = writeln!(
            s,
            "bootstrapping keys: {} more rotation steps and conjugation ({}), encapsulation ({}); \
             {} key switches and {} hoisted rotations per bootstrap; {} in memory with the circuit's keys",
            b.extra_rotation_steps.len(),
            bytes(b.galois_keys),
            bytes(b.encapsulation_keys),
            b.key_switches,
            b.hoisted_rotations,
            bytes(k.resident_bytes())
        );
    }
    if let (Some(b), true) = (&p.bootstrap, boots) {
        let share = match (r.est_bootstrap_seconds, r.est_seconds) {
            (Some(bs), Some(t)) if t > 0.0 => {
                format!(
                    "; est. {bs:.2} s, {:.0} % of the estimated time",
                    100.0 * bs / t
                )
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "bootstraps: {} ({} levels between, {} levels each, {} slots, values within +-{}){share}",
            r.totals.bootstraps,
            b.network_levels,
            b.depth(),
            b.slots,
            b.message_bound
        );
        if let Some(pl) = &r.bootstrap_placement {
            let _ = writeln!(
                s,
                "bootstrap placement: {} kept; greedy (refresh when out of levels) {}, planned (cuts at depths {:?}) {}{}",
                pl.chosen,
                pl.greedy.map_or("-".to_string(), |n| n.to_string()),
                pl.cuts,
                pl.planned.map_or("-".to_string(), |n| n.to_string()),
                pl.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            );
        }
    }
    if let Some(t) = k.rotation_tradeoff.as_ref().filter(|t| t.rotations > 0) {
        let _ = writeln!(
            s,
            "rotation keys over the whole chain: exact {} keys ({}), {} rotations | power-of-two {} keys ({}), {} key switches (+{} composed)",
            t.exact.keys.len(),
            bytes(t.exact.key_bytes),
            t.rotations,
            t.power_of_two.keys.len(),
            bytes(t.power_of_two.key_bytes),
            t.power_of_two.key_switches,
            t.power_of_two.extra_rotations
        );
    }
    match &r.schedule {
        // The figures the run will hold: the chosen schedule's, not an unscheduled order's.
        Some(m) => {
            let _ = writeln!(
                s,
                "memory: peak {} live values ({}) in the {} schedule, {} with keys{}; \
                 the topological order would hold {} ({})",
                m.peak.values,
                bytes(m.peak.bytes),
                m.strategy,
                bytes(m.total_bytes),
                m.budget
                    .map(|b| format!(" (budget {})", bytes(b)))
                    .unwrap_or_default(),
                m.topological.values,
                bytes(m.topological.bytes),
            );
            if let Some(sp) = &m.split {
                let _ = writeln!(
                    s,
                    "memory: {} dense-layer macs split into partial sums of at most {} operands \
                     ({} nodes added; the same ciphertexts, fewer operands alive at once)",
                    sp.macs, sp.chunk, sp.added,
                );
            }
            if let Some(sp) = &m.spill {
                let _ = writeln!(
                    s,
                    "spill: with live values kept within {} (hecc run --spill-budget) the run holds \
                     at most {} of them ({} with keys), writes {} values ({}, at most {} on disk at \
                     once) and reads back {}; its largest step alone needs {}",
                    bytes(sp.budget),
                    bytes(sp.held_bytes),
                    bytes(sp.held_bytes + m.key_bytes),
                    sp.values_written,
                    bytes(sp.written_bytes),
                    bytes(sp.disk_bytes),
                    bytes(sp.read_bytes),
                    bytes(sp.floor_bytes),
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "peak live values (topological order): {} ({})",
                r.peak_ciphertexts,
                bytes(r.peak_ciphertext_bytes)
            );
        }
    }
    if let Some(f) = r
        .fusion
        .as_ref()
        .filter(|_| r.layout == hecc_passes::layout::PackingLayout::Channel)
    {
        let _ = writeln!(
            s,
            "fusion: depth {} with [{}]; the channel lowering carries affine factors to the next product either way",
            f.depth,
            f.passes.join(", "),
        );
    } else if let Some(f) = &r.fusion {
        let _ = writeln!(
            s,
            "fusion: depth {} with [{}], {} without (no fusion passes, affine factors materialised): {} level(s) saved",
            f.depth,
            f.passes.join(", "),
            f.depth_unfused,
            f.depth_unfused.saturating_sub(f.depth)
        );
    }
    for a in &r.activation_ranges {
        let _ = if a.calibrated {
            writeln!(
                s,
                "activation range: {} ({}) calibrated [{:.4}, {:.4}], bound {:.4} -> B = {:.4}",
                a.node, a.op, a.min, a.max, a.bound, a.range
            )
        } else {
            writeln!(
                s,
                "activation range: {} ({}) B = {:.4} (one range for all, not calibrated)",
                a.node, a.op, a.range
            )
        };
    }
    match (r.est_seconds, &r.cost_table) {
        (Some(t), Some(src)) => {
            let _ = writeln!(
                s,
                "estimated time: {t:.2} s total, {:.3} ms per image (cost table: {src})",
                t * 1e3 / f64::from(r.batch.max(1))
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "estimated time: no cost table (run `hecc calibrate` and pass --costs)"
            );
        }
    }
    s
}

/// An error's message, its causes and its help, on one line: for answers that cannot carry a
/// rendered diagnostic (an HTTP error body, a Python exception).
pub fn error_line(e: &miette::Report) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    if let Some(h) = e.help() {
        s.push_str(&format!(" ({h})"));
    }
    s
}
