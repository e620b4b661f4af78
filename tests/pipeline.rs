//! One compile pipeline for both layouts: the channel layout goes through the pass manager like
//! the batch layout (custom `--passes`, `--dump-after`, `--time-passes`, the level and scale
//! checkers), and the CLI prints what the manager recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

mod common;

use common::root;
use hecc::compile::{compile, CompileOptions, LayoutChoice};
use hecc_passes::he::RescalePolicy;
use hecc_passes::layout::PackingLayout;

fn opts(layout: LayoutChoice) -> CompileOptions {
    CompileOptions {
        layout,
        ..Default::default()
    }
}

#[test]
fn both_layouts_record_dumps_and_timings_through_the_manager() {
    let model = root().join("models/lenet5.yaml");
    for (choice, layout) in [
        (LayoutChoice::Batch, PackingLayout::Batch),
        (LayoutChoice::Channel, PackingLayout::Channel),
    ] {
        let mut o = opts(choice);
        o.dump_after = vec!["fuse-activation-batch-norm".into(), "check-scales".into()];
        o.time_passes = true;
        let c = compile(&model, &o).unwrap_or_else(|e| panic!("{layout}: {e:?}"));
        assert_eq!(c.plan.layout, layout);
        let dumped: Vec<&str> = c.log.dumps.iter().map(|d| d.pass).collect();
        assert_eq!(
            dumped,
            ["fuse-activation-batch-norm", "check-scales"],
            "{layout}: dumps in pipeline order"
        );
        // The tensor dump is the fused graph; the HE dump is the managed circuit of the plan.
        assert!(c.log.dumps[0].text.contains("quadratic"), "{layout}");
        let mut he = hecc_ir::text::parse_module(&c.log.dumps[1].text)
            .unwrap_or_else(|e| panic!("{layout}: the HE dump parses: {e}"));
        // Dense layers split for memory after the passes: the plan's circuit is the dump's,
        // split the same way.
        let sched = c.plan.report.schedule.as_ref().expect("schedule");
        if let Some(sp) = &sched.split {
            let st = hecc_passes::he::split_wide_macs(&mut he, sp.chunk as usize).unwrap();
            assert_eq!(st.macs as u64, sp.macs, "{layout}");
        }
        assert_eq!(
            he.to_string(),
            c.plan.circuit.to_string(),
            "{layout}: dump = plan circuit"
        );
        let timed: Vec<&str> = c.log.timings.iter().map(|t| t.pass.as_str()).collect();
        // The final lowering: its own, or the last parameter probe's when that was at the
        // final slot count.
        let lower = format!("(lower-{layout}");
        for want in [
            "fold-batch-norm",
            "fuse-activation-batch-norm",
            lower.as_str(),
            "rescale-waterline",
            "check-levels",
            "check-scales",
            "(schedule)",
        ] {
            assert!(
                timed.iter().any(|t| t.starts_with(want)),
                "{layout}: `{want}` timed in {timed:?}"
            );
        }
        let pos = |n: &str| timed.iter().position(|t| t.starts_with(n)).unwrap();
        assert!(pos("fuse-activation-batch-norm") < pos(&lower));
        assert!(pos(&lower) < pos("rescale-waterline"));
        assert!(c.log.timings.iter().all(|t| t.seconds >= 0.0));
        let f = c.plan.report.fusion.as_ref().expect("fusion summary");
        assert_eq!(f.depth, c.plan.report.depth, "{layout}");
    }
}

#[test]
fn channel_layout_takes_a_custom_pass_list() {
    let model = root().join("models/cryptonets.yaml");
    let mut o = opts(LayoutChoice::Channel);
    o.passes = Some("dce,cse,rescale-always,check-levels,check-scales".into());
    o.time_passes = true;
    let c = compile(&model, &o).unwrap();
    assert_eq!(c.plan.rescale_policy, RescalePolicy::Always);
    assert_eq!(c.plan.report.rescale_policy, RescalePolicy::Always);
    let timed: Vec<&str> = c.log.timings.iter().map(|t| t.pass.as_str()).collect();
    for want in ["dce", "cse", "rescale-always", "check-scales"] {
        assert!(timed.contains(&want), "`{want}` in {timed:?}");
    }
    // The waterline default gives the same or a shallower circuit.
    let w = compile(&model, &opts(LayoutChoice::Channel)).unwrap();
    assert_eq!(w.plan.rescale_policy, RescalePolicy::Waterline);
    assert!(w.plan.report.depth <= c.plan.report.depth);

    // A pass list without a rescale pass is refused in this layout too.
    o.passes = Some("dce,cse".into());
    let e = compile(&model, &o).err().expect("refused");
    assert!(format!("{e}").contains("no rescale pass"), "{e}");
    // Unknown dump names are refused before any work.
    let mut o = opts(LayoutChoice::Channel);
    o.dump_after = vec!["not-a-pass".into()];
    let e = compile(&model, &o).err().expect("refused");
    assert!(format!("{e}").contains("unknown pass `not-a-pass`"), "{e}");
}

#[test]
fn cli_prints_channel_dumps_and_timings() {
    let dir = std::env::temp_dir().join(format!("hecc-pipeline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args(["compile", "--layout", "channel", "--time-passes"])
        .args(["--dump-after", "rescale-waterline"])
        .arg(root().join("models/cryptonets.yaml"))
        .arg("-o")
        .arg(&plan)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("// ----- IR after rescale-waterline -----"),
        "{stdout}"
    );
    assert!(stdout.contains("layout channel"), "{stdout}");
    assert!(stdout.contains("pass timings:"), "{stdout}");
    assert!(stdout.contains("(lower-channel"), "{stdout}");
    assert!(stdout.contains("check-scales"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--layout auto` weighs bootstraps: ResNet-20 is too deep for one chain, and its estimate
/// counts the bootstraps each layout needs (the batch layout one per feature element, the
/// channel layout one per ciphertext after packing strided stages); CryptoNets needs none.
#[test]
fn auto_layout_counts_bootstraps_of_deep_models() {
    use hecc::compile::pipeline::{choose_layout, estimate_layouts};
    let load = |name: &str| hecc_ir::front::load_model(&root().join("models").join(name)).unwrap();
    let (b, c) = estimate_layouts(&load("cryptonets.yaml")).unwrap();
    assert_eq!((b.bootstraps, c.bootstraps), (0.0, 0.0));
    let g = load("resnet20.yaml");
    let (b, c) = estimate_layouts(&g).unwrap();
    assert!(b.bootstraps > 0.0 && c.bootstraps > 0.0, "{b:?} {c:?}");
    // 19 ReLUs of 8 levels: in the channel layout over 16 ciphertexts at 32x32 (7 ReLUs), 8 at
    // 16x16 (4 channels each, 6 ReLUs) and 4 at 8x8 (16 each, 6 ReLUs); convolutions add a little.
    let per_relu = 8.0 / 10.0;
    let want_channel = per_relu * (7.0 * 16.0 + 6.0 * 8.0 + 6.0 * 4.0);
    assert!(
        c.bootstraps >= want_channel && c.bootstraps < 1.5 * want_channel,
        "channel {} vs {want_channel}",
        c.bootstraps
    );
    assert!(b.bootstraps > 50.0 * c.bootstraps, "{b:?} {c:?}");
    // Within 24 GB, a batch-layout feature map (16,384 ciphertexts) does not fit.
    let mut o = opts(LayoutChoice::Auto);
    o.memory_budget = Some(24 << 30);
    let (pick, why) = choose_layout(&g, &o);
    assert_eq!(pick, PackingLayout::Channel, "{why}");
    assert!(why.contains("bootstraps per run"), "{why}");
}
