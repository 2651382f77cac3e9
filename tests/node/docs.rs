//! The README documents every setting of the binary: each flag and each
//! `GROUPCAST_*` variable that `groupcast --help` lists appears in the
//! README's configuration table (regenerate it with
//! `python3 scripts/config-table.py`).

use crate::common;

#[test]
fn the_readme_documents_every_flag_and_variable() {
    let output = common::node::command()
        .arg("--help")
        .output()
        .expect("run groupcast --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");

    let mut flags = Vec::new();
    let mut variables = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name != "help" && name != "version" {
                flags.push(format!("`--{name}`"));
            }
        }
        if let Some(rest) = line.strip_prefix("[env: ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            variables.push(format!("`{name}`"));
        }
    }
    assert!(flags.len() > 40, "parsed too few flags: {flags:?}");
    assert!(
        variables.len() > 40,
        "parsed too few variables: {variables:?}"
    );

    let missing: Vec<&String> = flags
        .iter()
        .chain(&variables)
        .filter(|name| !readme.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document {missing:?}; regenerate its table with \
         `python3 scripts/config-table.py target/debug/groupcast`"
    );
}
