//! Callbacks (bpf_loop, bpf_for_each_map_elem): bpfkit explores the
//! callback as the kernel does (entered from the helper call, back to it
//! until the states there converge), so on the accepted programs of the
//! `callbacks` and `c_callbacks` corpus themes it processes as many
//! instructions as the running kernel (within 10%; equal when written).
//! Skipped where `bpf()` is refused.

#[path = "verdicts/corpus.rs"]
mod corpus;

#[test]
fn callbacks_processed_insns_match_the_kernel() {
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("skipped: bpf() is not usable here: {e}");
        return;
    }
    let mut checked = 0;
    for case in corpus::all()
        .into_iter()
        .filter(|c| c.theme == "callbacks" || c.theme == "c_callbacks")
    {
        let l = case.load().unwrap();
        let ours = bpfkit_verifier::verify(
            &l.prog,
            case.prog_type,
            &l.maps,
            &bpfkit_verifier::Options::default(),
        );
        let (ok, log) = corpus::kernel_load_raw(case.prog_type, false, &l, 4).unwrap();
        if !ok {
            continue;
        }
        let kernel: u64 = log
            .lines()
            .find_map(|x| x.strip_prefix("processed "))
            .and_then(|x| x.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("the kernel's statistics line");
        let ratio = ours.insns_processed as f64 / kernel as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{}: bpfkit processed {} insns, the kernel {kernel}",
            case.name,
            ours.insns_processed
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} accepted callback programs");
}
