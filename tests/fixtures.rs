//! The Mirakl spec files the tests read are copies of `../shared/mirakl/`; they must not drift.

use std::path::Path;

#[test]
fn mirakl_fixtures_match_the_shared_originals() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/mirakl");
    if !shared.is_dir() {
        eprintln!("../shared/mirakl is not beside this checkout: nothing to compare");
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mirakl");
    for file in ["openapi-orders-subset.json", "or11-response-example.json"] {
        let original = std::fs::read(shared.join(file)).expect("read the shared file");
        let copy = std::fs::read(fixtures.join(file)).expect("read the fixture");
        assert!(
            original == copy,
            "tests/fixtures/mirakl/{file} differs from ../shared/mirakl/{file}: copy it again"
        );
    }
}
