#[test]
#[ignore]
fn probe_compile_cryptonets() {
    let opts = hecc::compile::CompileOptions {
        layout: "batch".into(),
        ..Default::default()
    };
    let c = hecc::compile::compile(std::path::Path::new("models/cryptonets.yaml"), &opts).unwrap();
    std::fs::write("/tmp/cn.he", &c.plan.circuit).unwrap();
    eprintln!("{}", hecc::report_text::render(&c.plan.report));
    let c = hecc::compile::compile(std::path::Path::new("models/lenet5.yaml"), &opts).unwrap();
    eprintln!("{}", hecc::report_text::render(&c.plan.report));
}
