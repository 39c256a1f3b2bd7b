//! The modules of `vm` form a line (see the `vm` module docs): each
//! imports only modules before it, so there is no import cycle. Checked
//! here against the sources, and against the picture in `vm/mod.rs`.

use std::collections::BTreeSet;

/// The line, first to last, with each module's source.
const LINE: &[(&str, &str)] = &[
    ("ids", include_str!("../ids.rs")),
    ("value", include_str!("../value.rs")),
    ("error", include_str!("../error.rs")),
    ("trace", include_str!("../trace.rs")),
    ("program", include_str!("../program.rs")),
    ("registry", include_str!("../registry.rs")),
    ("directory", include_str!("../directory.rs")),
    ("turns", include_str!("../turns.rs")),
    ("world", include_str!("../world.rs")),
    ("tx", include_str!("../tx.rs")),
    ("output", include_str!("../output.rs")),
    ("exec", include_str!("../exec.rs")),
    ("deadlock", include_str!("../deadlock.rs")),
    ("interp", include_str!("../interp.rs")),
];

const MOD_RS: &str = include_str!("../mod.rs");

/// What `src` names through `super::` or `crate::vm::` in its code: the
/// first path segment of each such path, including each item of a
/// `super::{a::X, b::Y}` group. Comments, macros' `$crate::` paths and
/// the file's own `#[cfg(test)] mod tests` are skipped.
fn names(src: &str) -> BTreeSet<String> {
    let src = src.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let mut found = BTreeSet::new();
    for prefix in ["super::", "crate::vm::"] {
        for (at, _) in code.match_indices(prefix) {
            // `$crate::vm::X` in a macro is the public path its callers
            // expand, not an import of this module.
            if code[..at].ends_with('$') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            match rest.strip_prefix('{') {
                Some(group) => found.extend(group_heads(group)),
                None => {
                    found.insert(head(rest));
                }
            }
        }
    }
    found
}

/// The first path segment of `path` (`*` for a glob).
fn head(path: &str) -> String {
    let path = path.trim_start();
    if path.starts_with('*') {
        return "*".into();
    }
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first segment of each item of a `{...}` group (`group` starts just
/// after the `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = 0;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(head(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(head(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    heads.retain(|h| !h.is_empty());
    heads
}

fn position(module: &str) -> Option<usize> {
    LINE.iter().position(|(m, _)| *m == module)
}

#[test]
fn every_module_of_vm_is_in_the_line() {
    let declared: BTreeSet<&str> = MOD_RS
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ").unwrap_or(l.trim());
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .filter(|m| *m != "tests")
        .collect();
    let line: BTreeSet<&str> = LINE.iter().map(|(m, _)| *m).collect();
    assert_eq!(declared, line, "vm/mod.rs declares modules the line lacks");
}

#[test]
fn each_module_imports_only_modules_before_it() {
    let mut wrong = Vec::new();
    for (i, (module, src)) in LINE.iter().enumerate() {
        for name in names(src) {
            match position(&name) {
                Some(j) if j < i => {}
                Some(_) => wrong.push(format!("{module} imports {name}, which comes later")),
                None => wrong.push(format!(
                    "{module} names super::{name}: import items from the module defining them"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the vm modules are not a line:\n{}",
        wrong.join("\n")
    );
}

/// The who-imports-whom matrix in the `vm` module docs, as
/// (module, modules it imports).
fn pictured() -> Vec<(String, BTreeSet<String>)> {
    let doc: Vec<&str> = MOD_RS
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let top = doc
        .iter()
        .position(|l| l.trim_start().starts_with("ids val"))
        .expect("the vm docs draw the import matrix");
    let header = doc[top];
    // Column j starts where the j-th abbreviation does.
    let columns: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    doc[top + 1..]
        .iter()
        .take_while(|l| !l.starts_with("```"))
        .map(|row| {
            let module = row.split_whitespace().next().unwrap_or("").to_string();
            let imports = columns
                .iter()
                .enumerate()
                .filter(|&(_, &at)| row.as_bytes().get(at) == Some(&b'x'))
                .map(|(j, _)| LINE[j].0.to_string())
                .collect();
            (module, imports)
        })
        .collect()
}

#[test]
fn the_picture_in_the_docs_is_true() {
    let actual: Vec<(String, BTreeSet<String>)> = LINE
        .iter()
        .map(|(m, src)| (m.to_string(), names(src)))
        .collect();
    assert_eq!(
        pictured(),
        actual,
        "redraw the import matrix in the vm module docs"
    );
}

#[test]
fn the_checker_sees_groups_globs_and_crate_paths() {
    let src = "use super::{a::X, b::{Y, Z}};\nuse super::*;\n// use super::c;\n\
               fn f() { crate::vm::d::g(); }\nmacro_rules! m { () => { $crate::vm::Val }; }\n#[cfg(test)]\nmod tests {\n    use super::e;\n}\n";
    let want: BTreeSet<String> = ["a", "b", "*", "d"].map(String::from).into();
    assert_eq!(names(src), want);
}
