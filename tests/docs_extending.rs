//! docs/extending.md shows compiled code: each of its `rust` blocks is text of
//! examples/counting_writer.rs, which CI builds (`cargo clippy --all-targets`), and
//! together they are the whole example.

const DOC: &str = include_str!("../docs/extending.md");
const EXAMPLE: &str = include_str!("../examples/counting_writer.rs");

/// The bodies of the ```rust blocks of `markdown`.
fn rust_blocks(markdown: &str) -> Vec<&str> {
    markdown
        .split("```rust\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or(rest))
        .collect()
}

#[test]
fn extending_md_code_is_the_compiled_example() {
    let blocks = rust_blocks(DOC);
    assert_eq!(blocks.len(), 3, "docs/extending.md has 3 rust blocks");
    let mut from = 0;
    for block in &blocks {
        let at = EXAMPLE[from..].find(block).unwrap_or_else(|| {
            panic!(
                "docs/extending.md block is not (in order) in examples/counting_writer.rs:\n{block}"
            )
        });
        from += at + block.len();
    }
    // Everything of the example after its module doc is shown.
    let code = &EXAMPLE[EXAMPLE.find("use std::io;").expect("example imports")..];
    let shown: String = blocks.concat();
    let strip = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(strip(&shown), strip(code));
}
